"""The session steps: analysis, invalidation of stale results, merge -> evaluate -> export."""
import numpy as np
import pytest

from recall_core import session as steps
from recall_core import workflow
from recall_core.errors import RecallError
from recall_core.models import ModelSpec
from recall_core.probes import load_probe_file


@pytest.fixture()
def session(tiny_family, probe_jsonl, tmp_path):
    s = steps.Session(cache_dir=tmp_path / "cache")
    steps.set_models(s, [ModelSpec("base", str(tiny_family["base"]), "base"),
                         ModelSpec("a", str(tiny_family["a"])),
                         ModelSpec("ref", str(tiny_family["ref"]), "reference")])
    steps.set_probes(s, load_probe_file(probe_jsonl))
    return s


def test_steps_in_order_and_clear_errors(session):
    with pytest.raises(RecallError, match="similarity: extract representations first"):
        steps.compute_similarity(session)
    steps.analyze(session)
    assert session.merged_models == ["a", "ref"] and session.reference == "ref" and session.base == "base"
    assert session.similarity.values.shape == (2, 4) and session.schedule.weights.shape == (5, 2)
    assert session.similarity.settings["samples"] == 16  # typical samples, not all 40 texts
    # changing a similarity knob keeps the representations but drops what depended on them
    kept = session.representations
    steps.set_settings(session, metric="cka")
    assert session.representations is kept and session.similarity is None and session.schedule is None
    steps.set_settings(session, pooling="last")
    assert session.representations == {}


def test_sessions_are_independent(tiny_family, probe_jsonl, tmp_path):
    one, two = steps.Session(), steps.Session()
    steps.set_models(one, [ModelSpec("a", str(tiny_family["a"])), ModelSpec("b", str(tiny_family["b"]))])
    assert two.models == [] and two.settings is not one.settings


def test_merge_evaluate_export(session, tmp_path):
    steps.analyze(session)
    models = workflow.run_merges(session, {"recall": {}, "average": {}})
    assert set(models) == {"recall", "average"}
    table = workflow.evaluate_session(session)
    assert table.models == ["base", "a", "ref", "recall", "average"]
    assert set(table.tasks) == {"add", "rev"}
    out = workflow.export_session(session, "recall", tmp_path / "merged")
    assert (out / "config.json").is_file() and (out / "plan.json").is_file() and (out / "mergekit.yaml").is_file()
    from recall_core.plan import load_plan

    plan = load_plan(out / "plan.json")
    np.testing.assert_allclose(plan.schedule.weights, session.schedule.weights)
    with pytest.raises(RecallError, match="exists"):
        workflow.export_session(session, "recall", tmp_path / "merged")

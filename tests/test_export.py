"""export_merge: a loadable Hugging Face folder, a parseable card, and atomic writes (no partial output)."""
import json

import numpy as np
import pytest
import torch
import yaml

from recall_core.errors import ExportError
from recall_core.evaluate import EvaluationTable, TaskScore
from recall_core.export import export_merge
from recall_core.merge import merged_model, streaming
from recall_core.models import ModelSpec
from recall_core.plan import MergePlan, load_plan
from recall_core.schedule import Schedule, schedule_rows

MERGED = ["a", "b", "ref"]
SMALL_SHARDS = 40_000  # bytes: the tiny models (~190 kB) then need several shards


def recall_plan(tiny_family, **kwargs) -> MergePlan:
    models = [ModelSpec("base", str(tiny_family["base"]), "base")]
    models += [ModelSpec(name, str(tiny_family[name]), "reference" if name == "ref" else "expert") for name in MERGED]
    weights = np.random.default_rng(0).dirichlet(np.ones(3), size=len(schedule_rows(3)))
    schedule = Schedule(schedule_rows(3), MERGED, weights, source="test schedule")
    return MergePlan(models, "recall", schedule=schedule, analysis={"metric": "rbf", "temperature": 0.5}, **kwargs)


def evaluation_table() -> EvaluationTable:
    scores = {m: {"add": TaskScore(4, 1.0 + i, 2.7, 0.25 * i)} for i, m in enumerate(["ref", "merged"])}
    return EvaluationTable(["ref", "merged"], ["add"], scores)


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.fixture(scope="module")
def exported(tiny_family, tmp_path_factory):
    """One export shared by the read-only tests (export is the slow part)."""
    plan = recall_plan(tiny_family)
    out = tmp_path_factory.mktemp("export") / "merged"
    return plan, export_merge(plan, out, evaluation=evaluation_table(), shard_bytes=SMALL_SHARDS)


def test_export_loads_and_gives_the_in_memory_logits(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plan, out = exported
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "README.md", "plan.json", "mergekit.yaml"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".*")), "a temporary folder was left behind"

    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    reference = merged_model(plan)
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["12+34=46", "rev abc=cba", "hello world"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ours, theirs = reference(**batch).logits, loaded(**batch).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # the merged model is not simply one of its inputs
    source = AutoModelForCausalLM.from_pretrained(plan.spec("ref").path, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (source(**batch).logits - theirs).abs().max() > 1e-4


def test_card_plan_and_yaml(exported):
    plan, out = exported
    readme = (out / "README.md").read_text()
    meta = front_matter(readme)
    assert meta["base_model"] == plan.spec("base").path
    assert {"merge", "recall"} <= set(meta["tags"]) and meta["library_name"] == "transformers"
    assert "| block_2 |" in readme and "| part | a | b | ref |" in readme  # the schedule table
    assert "| merged |" in readme and "## Evaluation" in readme  # the evaluation table
    assert load_plan(out / "plan.json").to_dict() == plan.to_dict()
    config = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert config["merge_method"] == "linear" and len(config["models"]) == 3
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"


def test_card_without_base_names_the_reference(tiny_family):
    from recall_core.card import model_card

    plan = MergePlan([ModelSpec(n, str(tiny_family[n])) for n in MERGED], "average", reference="b")
    meta = front_matter(model_card(plan))
    assert meta["base_model"] == str(tiny_family["b"]) and "average" in meta["tags"]


def test_bfloat16_export_says_so(tiny_family, tmp_path):
    from safetensors import safe_open

    plan = recall_plan(tiny_family, dtype="bfloat16")
    out = export_merge(plan, tmp_path / "bf16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(out / "model.safetensors", "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}
    assert yaml.safe_load((out / "mergekit.yaml").read_text())["out_dtype"] == "bfloat16"


def test_existing_folder_is_kept_without_force_and_replaced_with_it(tiny_family, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    plan = recall_plan(tiny_family)
    with pytest.raises(ExportError, match="already exists"):
        export_merge(plan, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]

    export_merge(plan, out, force=True)
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()
    assert siblings(out) == ["merged"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_in_the_middle_leaves_nothing(tiny_family, tmp_path, monkeypatch, error):
    real_header, calls = streaming.safetensors_header, []

    def failing_header(tensors):
        calls.append(len(tensors))
        if len(calls) == 2:  # the second shard
            raise error
        return real_header(tensors)

    monkeypatch.setattr(streaming, "safetensors_header", failing_header)
    out = tmp_path / "merged"
    expected = ExportError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        export_merge(recall_plan(tiny_family), out, shard_bytes=SMALL_SHARDS)
    assert len(calls) == 2  # it did fail in the middle, after a complete first shard
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_export_keeps_the_old_folder(tiny_family, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("recall_core.export.copy_tokenizer_files", interrupt)  # after all shards are written
    with pytest.raises(KeyboardInterrupt):
        export_merge(recall_plan(tiny_family), out, force=True)
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and siblings(out) == ["merged"]


def test_missing_parents_are_created_and_removed_on_failure(tiny_family, tmp_path, monkeypatch):
    monkeypatch.setattr("recall_core.export.copy_tokenizer_files", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O")))
    with pytest.raises(ExportError, match="could not write"):
        export_merge(recall_plan(tiny_family), tmp_path / "new" / "deeper" / "merged")
    assert list(tmp_path.iterdir()) == []

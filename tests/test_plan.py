"""MergePlan: JSON round trip, paths, and every validation error with a message that names the culprit."""
import json
import math

import numpy as np
import pytest

from recall_core.errors import IncompatibleModelsError, PlanError, ScheduleError
from recall_core.models import ModelSpec
from recall_core.plan import FORMAT, MergePlan, load_plan, save_plan, validate_plan
from recall_core.schedule import Schedule, recall_schedule, uniform_schedule

MERGED = ["a", "b", "ref"]  # tiny_family: 3 blocks, base + a, b, ref


def family_plan(tiny_family, method="recall", **kwargs) -> MergePlan:
    models = [ModelSpec("base", str(tiny_family["base"]), "base"), ModelSpec("a", str(tiny_family["a"])),
              ModelSpec("b", str(tiny_family["b"])), ModelSpec("ref", str(tiny_family["ref"]), "reference")]
    kwargs.setdefault("schedule", uniform_schedule(MERGED, 3))
    return MergePlan(models, method, **kwargs)


def test_round_trip_loses_nothing(tiny_family, tmp_path):
    sim = np.array([[0.9, 0.8, 0.7, 0.6], [0.95, 0.9, 0.5, 0.4], [1.0, 1.0, 1.0, 1.0]])
    schedule = recall_schedule(sim, MERGED, temperature=0.1)
    plan = family_plan(tiny_family, schedule=schedule, reference="ref",
                       method_params={"lambda": 0.5, "density": 0.3, "drop_rate": 0.2, "seed": 7,
                                      "weights": {"a": 0.5, "b": 2.0}},
                       analysis={"metric": "rbf", "temperature": 0.1, "clusters": 4, "pooling": "mean",
                                 "layer": np.int64(3)},
                       dtype="bfloat16")
    path = save_plan(plan, tmp_path / "plan.json")
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["base"] == "base" and data["analysis"]["layer"] == 3
    again = load_plan(path)
    assert again.to_dict() == plan.to_dict()
    assert again.merged_models == MERGED and again.base == "base" and again.reference == "ref"
    np.testing.assert_array_equal(again.schedule.weights, schedule.weights)  # exact floats through JSON
    assert again.schedule.source == schedule.source and again.dtype == "bfloat16"
    assert again.method_params["weights"] == {"a": 0.5, "b": 2.0}
    assert [(m.name, m.role) for m in again.models] == [(m.name, m.role) for m in plan.models]


def test_paths_are_stored_absolute_and_relative_ones_resolve_against_the_plan(tiny_family, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_family["a"].parent)
    plan = MergePlan([ModelSpec("a", "a"), ModelSpec("b", "b")], "average")
    stored = plan.to_dict()["models"]
    assert stored[0]["path"] == str(tiny_family["a"].resolve())
    assert all(entry["path"].startswith("/") for entry in stored)
    # a hand-written plan with paths relative to its own folder
    data = plan.to_dict()
    data["models"] = [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}]
    (tiny_family["a"].parent / "hand.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    loaded = load_plan(tiny_family["a"].parent / "hand.json")
    assert loaded.models[1].path == str(tiny_family["b"].resolve())


def test_base_and_reference_follow_roles(tiny_family):
    plan = family_plan(tiny_family)
    assert plan.base == "base" and plan.merged_models == MERGED
    assert plan.reference_name == "ref"
    no_roles = MergePlan([ModelSpec("x", "/nowhere/x"), ModelSpec("y", "/nowhere/y")], "average")
    assert no_roles.base is None and no_roles.reference_name == "y"


def test_params_fill_method_defaults(tiny_family):
    plan = family_plan(tiny_family, "ties", method_params={"density": 0.2, "weights": {"a": 3.0}})
    assert plan.params["density"] == 0.2 and plan.params["lambda"] == 1.0 and plan.params["normalize"] is True
    assert plan.model_weights() == {"a": 3.0, "b": 1.0, "ref": 1.0}
    dare = plan.with_method("dare")
    assert dare.params["drop_rate"] == 0.5 and dare.params["rescale"] is True and plan.method == "ties"


def test_valid_plan_returns_checkpoints(tiny_family):
    checkpoints = validate_plan(family_plan(tiny_family))
    assert list(checkpoints) == ["base", "a", "b", "ref"]
    assert "model.layers.2.mlp.up_proj.weight" in checkpoints["a"].names


@pytest.mark.parametrize("data, message", [
    ({"format": "something/2", "models": []}, "not a RECALL plan"),
    ({"format": FORMAT, "models": []}, "no models"),
    ({"format": FORMAT, "models": [{"name": "a"}]}, "model #1 needs a 'name' and a 'path'"),
])
def test_malformed_plan_json(data, message):
    with pytest.raises(PlanError, match=message):
        MergePlan.from_dict(data)


def test_unreadable_plan_file(tmp_path):
    with pytest.raises(PlanError, match="not found"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        load_plan(tmp_path / "bad.json")


def test_unknown_method_and_dtype(tiny_family):
    with pytest.raises(PlanError, match="unknown merge method 'slerp'.*recall, average"):
        validate_plan(family_plan(tiny_family, "slerp"))
    with pytest.raises(PlanError, match="unknown dtype 'int8'"):
        validate_plan(family_plan(tiny_family, dtype="int8"))


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare"])
def test_task_vector_methods_need_a_base(tiny_family, method):
    plan = MergePlan([ModelSpec("a", str(tiny_family["a"])), ModelSpec("b", str(tiny_family["b"]))], method)
    with pytest.raises(PlanError, match=f"^{method} needs a base model"):
        validate_plan(plan)


def test_recall_needs_a_schedule(tiny_family):
    with pytest.raises(PlanError, match="needs a schedule"):
        validate_plan(family_plan(tiny_family, schedule=None))


def test_schedule_models_must_match(tiny_family):
    schedule = uniform_schedule(["a", "b", "other"], 3)
    with pytest.raises(ScheduleError, match=r"schedule models \['a', 'b', 'other'\] do not match.*'ref'"):
        validate_plan(family_plan(tiny_family, schedule=schedule))
    # the base is not a schedule column
    with pytest.raises(ScheduleError, match="do not match"):
        validate_plan(family_plan(tiny_family, schedule=uniform_schedule(["base"] + MERGED, 3)))


def test_schedule_rows_must_match_blocks(tiny_family):
    with pytest.raises(ScheduleError, match="schedule has 4 rows but the models have 3 blocks"):
        validate_plan(family_plan(tiny_family, schedule=uniform_schedule(MERGED, 2)))


@pytest.mark.parametrize("value, message", [(math.nan, "must be a finite number, not nan"), (-0.5, "must not be negative")])
def test_bad_schedule_weight_names_row_and_model(tiny_family, value, message):
    schedule = uniform_schedule(MERGED, 3)
    weights = schedule.weights.copy()
    weights[schedule.rows.index("block_1"), 1] = value
    bad = Schedule(schedule.rows, schedule.models, weights)
    with pytest.raises(ScheduleError, match=f"row block_1, model b: weight {message}"):
        validate_plan(family_plan(tiny_family, schedule=bad))


def test_bad_baseline_weights_and_params(tiny_family):
    with pytest.raises(PlanError, match="weight of model b must not be negative"):
        validate_plan(family_plan(tiny_family, "task_arithmetic", method_params={"weights": {"b": -1}}))
    with pytest.raises(PlanError, match="weight of model a must be a finite number"):
        validate_plan(family_plan(tiny_family, "average", method_params={"weights": {"a": float("nan")}}))
    with pytest.raises(PlanError, match="weight given for 'base', which is not a merged model"):
        validate_plan(family_plan(tiny_family, "average", method_params={"weights": {"base": 1}}))
    with pytest.raises(PlanError, match="weights sum to 0"):
        validate_plan(family_plan(tiny_family, "average", method_params={"weights": {"a": 0, "b": 0, "ref": 0}}))
    with pytest.raises(PlanError, match=r"ties: density must be in \(0, 1\]"):
        validate_plan(family_plan(tiny_family, "ties", method_params={"density": 0}))
    with pytest.raises(PlanError, match=r"dare: drop_rate must be in \[0, 1\)"):
        validate_plan(family_plan(tiny_family, "dare", method_params={"drop_rate": 1.0}))
    with pytest.raises(PlanError, match="dare: seed must be an integer, not 'x'"):
        validate_plan(family_plan(tiny_family, "dare", method_params={"seed": "x"}))
    with pytest.raises(PlanError, match="ties: normalize must be true or false"):
        validate_plan(family_plan(tiny_family, "ties", method_params={"normalize": "yes"}))
    with pytest.raises(PlanError, match="lambda must be a finite number"):
        validate_plan(family_plan(tiny_family, "task_arithmetic", method_params={"lambda": "big"}))


def test_bad_model_names(tiny_family):
    plan = family_plan(tiny_family, reference="base")
    with pytest.raises(PlanError, match="reference model 'base' is not one of the merged models"):
        validate_plan(plan)
    plan = family_plan(tiny_family, base="nobody")
    with pytest.raises(PlanError, match="base model 'nobody' is not one of the plan's models"):
        validate_plan(plan)
    plan = family_plan(tiny_family)
    plan.models.append(ModelSpec("a", str(tiny_family["b"])))
    with pytest.raises(PlanError, match="model name 'a' appears more than once"):
        validate_plan(plan)


def test_incompatible_models_name_tensor_and_shapes(tiny_family, tmp_path):
    from recall_core.toy import make_tiny_model, save_model

    wide = save_model(make_tiny_model("llama", seed=5, n_blocks=3, hidden=48), tmp_path / "wide")
    plan = MergePlan([ModelSpec("a", str(tiny_family["a"])), ModelSpec("wide", str(wide))], "average")
    with pytest.raises(IncompatibleModelsError, match=r"tensor \S+ has shape \[96, 32\] in a but \[96, 48\] in wide"):
        validate_plan(plan)

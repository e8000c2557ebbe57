"""``merge`` and ``evaluate`` commands: headless re-runs of saved plans, and one-line errors (exit 2) for bad input."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recall_core.cli import evaluate_cmd, main
from recall_core.merge import merge_state_dicts
from recall_core.models import ModelSpec
from recall_core.plan import MergePlan, save_plan
from recall_core.schedule import Schedule, schedule_rows

MERGED = ["a", "b", "ref"]
ROOT = Path(__file__).resolve().parents[1]


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def run_merge(argv):
    """Through the dispatcher, which turns user errors into one line and exit 2 (Ctrl-C: 130)."""
    return main(["merge", "--quiet", *argv])


def specs(tiny_family, names=("base", *MERGED), base=True):
    return [ModelSpec(n, str(tiny_family[n]), "base" if base and n == "base" else "expert") for n in names]


def schedule(n_blocks=3, models=MERGED, seed=0):
    rows = schedule_rows(n_blocks)
    return Schedule(rows, list(models), np.random.default_rng(seed).dirichlet(np.ones(len(models)), size=len(rows)))


def write_plan(tmp_path, plan, edit=None) -> Path:
    """Save a plan; ``edit(dict)`` changes its JSON first (for inputs a MergePlan object would refuse)."""
    path = save_plan(plan, tmp_path / "plan.json")
    if edit:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return path


def load_folder(folder) -> dict:
    tensors = {}
    for file in Path(folder).glob("*.safetensors"):
        tensors.update(load_file(file))
    return tensors


def assert_same_tensors(ours: dict, folder):
    theirs = load_folder(folder)
    assert set(theirs) == set(ours)
    for name, tensor in ours.items():
        assert torch.equal(theirs[name], tensor), name


def assert_one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def odd_model(tiny_family, tmp_path_factory):
    """A Llama with the family's names but a narrower MLP: incompatible."""
    from recall_core.toy import make_tiny_model, save_model

    model = make_tiny_model("llama", seed=5, n_blocks=3, hidden=32, intermediate=48)
    return save_model(model, tmp_path_factory.mktemp("odd") / "odd")


def test_saved_plan_reruns_to_the_same_tensors(tiny_family, tmp_path, capsys):
    plan = MergePlan(specs(tiny_family), "recall", reference="ref", schedule=schedule())
    out = tmp_path / "merged"
    assert run_merge(["--plan", str(write_plan(tmp_path, plan)), "--out", str(out), "--shard-size", "50KB"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len(list(out.glob("*.safetensors"))) > 1
    assert_same_tensors(merge_state_dicts(plan), out)


def test_method_override_uses_the_same_models(tiny_family, tmp_path):
    plan = MergePlan(specs(tiny_family), "recall", reference="ref", schedule=schedule(),
                     method_params={"density": 0.3, "lambda": 0.8})
    out = tmp_path / "ties"
    assert run_merge(["--plan", str(write_plan(tmp_path, plan)), "--out", str(out), "--method", "ties"]) == 0
    ties = plan.with_method("ties")
    assert_same_tensors(merge_state_dicts(ties), out)
    assert json.loads((out / "plan.json").read_text())["method"] == "ties"


def test_incompatible_models_name_the_tensor_and_shapes(tiny_family, odd_model, tmp_path, capsys):
    models = specs(tiny_family, ("a", "b")) + [ModelSpec("odd", str(odd_model))]
    plan = MergePlan(models, "average")
    assert run_merge(["--plan", str(write_plan(tmp_path, plan)), "--out", str(tmp_path / "m")]) == 2
    assert_one_line_error(capsys, "tensor model.layers.0.mlp.", "[32, 64]", "[32, 48]", "odd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


@pytest.mark.parametrize("case, fragments", [
    ("rows", ["3 blocks", "rows"]),
    ("models", ["schedule models", "x"]),
    ("negative", ["row block_1", "model b", "negative"]),
    ("nan", ["row head", "model a", "finite"]),
])
def test_bad_schedule_is_refused(tiny_family, tmp_path, capsys, case, fragments):
    plan = MergePlan(specs(tiny_family), "recall", reference="ref", schedule=schedule())

    def edit(data):
        sched = data["schedule"]
        if case == "rows":  # a schedule made for 2 blocks
            sched["rows"] = schedule_rows(2)
            sched["weights"] = sched["weights"][:4]
        elif case == "models":
            sched["models"] = ["a", "b", "x"]
        elif case == "negative":
            sched["weights"][2][1] = -0.5
        else:
            sched["weights"][-1][0] = float("nan")

    assert run_merge(["--plan", str(write_plan(tmp_path, plan, edit)), "--out", str(tmp_path / "m")]) == 2
    assert_one_line_error(capsys, *fragments)
    assert not (tmp_path / "m").exists()


def test_task_arithmetic_without_a_base(tiny_family, tmp_path, capsys):
    plan = MergePlan(specs(tiny_family, MERGED, base=False), "average")
    path = write_plan(tmp_path, plan)
    assert run_merge(["--plan", str(path), "--out", str(tmp_path / "m"), "--method", "task_arithmetic"]) == 2
    assert_one_line_error(capsys, "task_arithmetic", "base")


def test_negative_baseline_weight(tiny_family, tmp_path, capsys):
    plan = MergePlan(specs(tiny_family), "task_arithmetic", method_params={"weights": {"a": -1.0}})
    assert run_merge(["--plan", str(write_plan(tmp_path, plan)), "--out", str(tmp_path / "m")]) == 2
    assert_one_line_error(capsys, "weight of model a", "negative")


def test_existing_output_needs_force(tiny_family, tmp_path, capsys):
    plan = MergePlan(specs(tiny_family), "average")
    path = write_plan(tmp_path, plan)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert run_merge(["--plan", str(path), "--out", str(out)]) == 2
    assert_one_line_error(capsys, "already exists", "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert run_merge(["--plan", str(path), "--out", str(out), "--force"]) == 0
    assert_same_tensors(merge_state_dicts(plan), out)


@pytest.mark.parametrize("argv, fragment", [
    (["--plan", "missing.json"], "plan file not found"),
    (["--plan", "PLAN", "--shard-size", "lots"], "--shard-size"),
])
def test_bad_arguments(tiny_family, tmp_path, capsys, argv, fragment):
    path = write_plan(tmp_path, MergePlan(specs(tiny_family), "average"))
    argv = [str(path) if a == "PLAN" else str(tmp_path / a) if a.endswith(".json") else a for a in argv]
    assert run_merge([*argv, "--out", str(tmp_path / "m")]) == 2
    assert_one_line_error(capsys, fragment)


def _python_m(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "recall_core", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_python_m_recall_core_merge(tiny_family, tmp_path):
    plan = MergePlan(specs(tiny_family), "recall", reference="ref", schedule=schedule(seed=3))
    path = write_plan(tmp_path, plan)
    done = _python_m("merge", "--plan", "plan.json", "--out", "merged", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_same_tensors(merge_state_dicts(plan), tmp_path / "merged")
    assert "%]" in done.stderr  # progress lines

    again = _python_m("merge", "--plan", str(path), "--out", "merged", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error: ") and len(again.stderr.strip().splitlines()) == 1
    assert "already exists" in again.stderr


def test_ctrl_c_exits_130_with_one_line(tiny_family, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("recall_core.export.export_merge", interrupted)
    path = write_plan(tmp_path, MergePlan(specs(tiny_family), "average"))
    assert run_merge(["--plan", str(path), "--out", str(tmp_path / "m")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted: outputs are written atomically, no partial output is left"


# ---- evaluate -----------------------------------------------------------------------------------------------

def test_evaluate_prints_a_table_and_writes_json(tiny_family, probe_jsonl, tmp_path, capsys):
    out = tmp_path / "scores" / "eval.json"
    args = parse(evaluate_cmd, ["--model", f"base={tiny_family['base']}", "--model", f"ref={tiny_family['ref']}",
                                "--probes", str(probe_jsonl), "--json", str(out), "--quiet"])
    assert evaluate_cmd.run(args) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| model | add | rev |")
    assert any(line.startswith("| ref |") for line in table.splitlines())
    data = json.loads(out.read_text())
    assert data["models"] == ["base", "ref"] and data["tasks"] == ["add", "rev"]
    assert set(data["scores"]["ref"]["add"]) >= {"loss", "perplexity", "accuracy"}


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "just-a-path"], "NAME=PATH"),
    (["--model", "x=/no/such/model"], "/no/such/model"),
    (["--model", "a=A", "--probes", "/no/such.jsonl"], "no/such.jsonl"),
])
def test_evaluate_bad_input(tiny_family, probe_jsonl, capsys, argv, fragment):
    argv = [a.replace("=A", f"={tiny_family['a']}") for a in argv]
    if "--probes" not in argv:
        argv += ["--probes", str(probe_jsonl)]
    assert main(["evaluate", *argv, "--quiet"]) == 2
    assert_one_line_error(capsys, fragment)


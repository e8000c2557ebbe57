"""`python -m recall_core analyze` end to end on tiny models, and its one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from recall_core.cli import main
from recall_core.plan import load_plan
from recall_core.schedule import Schedule


def models_args(family, names=("a", "b", "ref")):
    return [arg for name in names for arg in ("--model", f"{name}={family[name]}")]


def test_analyze_writes_similarity_plan_and_report(tiny_family, probe_jsonl, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["analyze", *models_args(tiny_family, ("base", "a", "b", "ref")), "--base", "base",
                 "--reference", "ref", "--probes", str(probe_jsonl), "--clusters", "8", "--temperature", "0.05",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rbf similarity to ref (8 samples)" in printed and "block_2" in printed

    sim = json.loads((out / "similarity.json").read_text())
    assert sim["metric"] == "rbf" and sim["models"] == ["a", "b", "ref"]
    values = np.array(sim["values"])
    assert values.shape == (3, 4)
    np.testing.assert_allclose(values[2], 1)
    np.testing.assert_allclose(values[:, :2], 1)  # a, b and ref share embeddings and block 0 exactly
    assert np.all(values[:2, 2:] < 1)

    plan = load_plan(out / "plan.json")
    assert plan.method == "recall" and plan.base == "base" and plan.reference_name == "ref"
    assert plan.schedule.models == ["a", "b", "ref"] and plan.analysis["temperature"] == 0.05
    np.testing.assert_allclose(plan.schedule.row("embed"), 1 / 3)
    assert plan.schedule.row("head")[2] > 0.4
    assert isinstance(plan.schedule, Schedule)

    page = (out / "report.html").read_text()
    assert page.count("* plotly.js v") == 1 and "Typical samples" in page and "Fusion schedule" in page


@pytest.mark.parametrize("args, message", [
    (["--model", "a=/no/such/folder", "--model", "b=/no/such/other"], "model folder not found: /no/such/folder"),
    (["--model", "justapath"], "--model expects NAME=PATH"),
    ([], "give --demo, or at least two --model"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_family, probe_jsonl, tmp_path, args, message):
    run = subprocess.run([sys.executable, "-m", "recall_core", "analyze", *args, "--probes", str(probe_jsonl),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {message}" or (message in run.stderr and run.stderr.count("\n") == 1)
    assert "Traceback" not in run.stderr


def test_incompatible_models_and_bad_probe_file(tiny_family, tmp_path, capsys):
    from recall_core.toy import make_tiny_model, save_model

    other = save_model(make_tiny_model("llama", n_blocks=2, hidden=32), tmp_path / "other")
    bad_probes = tmp_path / "bad.jsonl"
    bad_probes.write_text('{"text": "ok"}\n{oops}\n')
    good = tmp_path / "good.txt"
    good.write_text("one\ntwo\nthree\n")
    assert main(["analyze", "--model", f"a={tiny_family['a']}", "--model", f"o={other}", "--probes", str(good),
                 "--out", str(tmp_path / "o")]) == 2
    assert "incompatible models: tensor model.layers.2." in capsys.readouterr().err
    assert main(["analyze", *models_args(tiny_family), "--probes", str(bad_probes), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl, line 2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written on failure

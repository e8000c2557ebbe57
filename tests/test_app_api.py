"""The dashboard through its HTTP API (gradio_client), as a browser would drive it, one session per client.

Tiny models (built in seconds) cover the error paths and session isolation; one test walks the whole flow on
the demo workspace: load, extract, samples, similarity, schedule edit, merge and evaluate, generations, export.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def client(url: str) -> Client:
    return Client(url, verbose=False)


def value(output):
    """The value of an output that the app returned as a ``gr.update(...)``."""
    if isinstance(output, dict) and output.get("__type__") == "update":
        return output.get("value")
    return output


def figure(output) -> dict:
    """A gr.Plot output as the plotly figure dict."""
    assert output and output.get("type") == "plotly", output
    return json.loads(output["plot"])


def models_table(rows) -> dict:
    return {"headers": ["name", "path", "role"], "data": [list(r) for r in rows]}


def tiny_rows(family, names=("base", "a", "b", "ref")):
    roles = {"base": "base", "ref": "reference"}
    return [[n, str(family[n]), roles.get(n, "expert")] for n in names]


def is_error(status: str) -> bool:
    return status.startswith("⚠")


def is_ok(status: str) -> bool:
    return status.startswith("✓")


# ------------------------------------------------------------------------------------------ arguments

def test_model_argument_parsing():
    sys.path.insert(0, str(ROOT))
    import app

    spec = app.parse_model("math=/models/math:base")
    assert (spec.name, spec.path, spec.role) == ("math", "/models/math", "base")
    spec = app.parse_model("code=org/code-model")
    assert (spec.name, spec.path, spec.role) == ("code", "org/code-model", "expert")
    spec = app.parse_model("w=C:/models/w")  # a colon that is not a role stays in the path
    assert (spec.path, spec.role) == ("C:/models/w", "expert")
    with pytest.raises(Exception):
        app.parse_model("no-equals-sign")
    args = app.parse_args(["--model", "a=/x:reference", "--probes", "p.jsonl"])
    assert args.host == "127.0.0.1" and not args.share and args.model[0].role == "reference"


def test_app_script_rejects_a_bad_model_folder(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "RECALL_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "app.py", "--model", "x=/no/such/folder", "--port", "1"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    assert "model folder not found: /no/such/folder" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------- errors with tiny models

def test_user_errors_show_as_messages_and_the_session_keeps_working(app_url, tiny_family, probe_jsonl, tmp_path):
    from recall_core.toy import make_char_tokenizer, make_tiny_model, save_model

    c = client(app_url)
    # a step before its inputs exist
    assert "load models first" in c.predict(api_name="/extract")
    # a bad path, a bad role, an empty table
    status = c.predict(models_table([["x", "/no/such/folder", "expert"]]), api_name="/set_models")[-1]
    assert is_error(status) and "model folder not found: /no/such/folder" in status
    status = c.predict(models_table([["a", str(tiny_family["a"]), "boss"]]), api_name="/set_models")[-1]
    assert is_error(status) and "role must be one of" in status
    assert "empty" in c.predict(models_table([["", "", ""]]), api_name="/set_models")[-1]
    # incompatible models: the verdict names the first mismatching tensor
    wide = save_model(make_tiny_model("llama", seed=0, n_blocks=3, hidden=48), tmp_path / "wide", make_char_tokenizer())
    summary, verdict, _, status = c.predict(models_table(tiny_rows(tiny_family, ("a",)) + [["wide", str(wide), ""]]),
                                            api_name="/set_models")
    assert "Incompatible" in verdict and "tensor " in verdict and "has shape" in verdict
    assert is_error(status) and len(summary["data"]) == 2
    # a bad probe file names the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n', encoding="utf-8")
    status = c.predict([handle_file(str(bad))], None, api_name="/set_probes")[-1]
    assert is_error(status) and "bad.jsonl, line 2: not valid JSON" in status
    wrong_type = tmp_path / "probes.pdf"
    wrong_type.write_text("x", encoding="utf-8")
    # Gradio refuses other file types before the handler runs; the page shows its message
    with pytest.raises(Exception, match="Invalid file type"):
        c.predict([handle_file(str(wrong_type))], None, api_name="/set_probes")
    # extraction with incompatible models is refused with the reason
    c.predict([handle_file(str(probe_jsonl))], None, api_name="/set_probes")
    assert "incompatible" in c.predict(api_name="/extract")
    # ... and after all that the session still works
    summary, verdict, _, status = c.predict(models_table(tiny_rows(tiny_family)), api_name="/set_models")
    assert is_ok(status) and verdict.startswith("✓ compatible: 4 models")
    assert [row[0] for row in summary["data"]] == ["base", "a", "b", "ref"]
    assert summary["headers"][:7] == ["model", "role", "architecture", "blocks", "hidden size", "parameters", "dtype"]
    status = c.predict(api_name="/extract")
    assert is_ok(status) and "4 models × 4 hidden states × 40 texts" in status


def test_two_browser_sessions_do_not_share_models_or_results(app_url, tiny_family, probe_jsonl):
    first, second = client(app_url), client(app_url)
    first.predict(models_table(tiny_rows(tiny_family, ("a", "b", "ref"))), api_name="/set_models")
    first.predict([handle_file(str(probe_jsonl))], None, api_name="/set_probes")
    assert is_ok(first.predict(api_name="/extract"))
    # the second session has nothing
    assert "load models first" in second.predict(api_name="/extract")
    assert "Extract representations" in second.predict(None, 1, "task", api_name="/open_samples")[-1]
    second.predict(models_table(tiny_rows(tiny_family, ("base", "a"))), api_name="/set_models")
    # the first still has its own three models and its results
    views = first.predict(0, None, api_name="/open_similarity")
    assert [row[0] for row in views[1]["data"]] == ["a", "b", "ref"]
    assert is_ok(views[6])
    # and the second's extraction stops at its own missing probes
    assert "load a probe set first" in second.predict(api_name="/extract")


def test_schedule_presets_edits_and_bad_cells_on_tiny_models(app_url, tiny_family, probe_jsonl):
    c = client(app_url)
    c.predict(models_table(tiny_rows(tiny_family)), api_name="/set_models")
    c.predict([handle_file(str(probe_jsonl))], None, api_name="/set_probes")
    c.predict(api_name="/extract")
    table, _, spread, _ = c.predict(api_name="/open_schedule")[:4]
    assert table["headers"] == ["row", "a", "b", "ref"]  # the base is not merged by RECALL
    assert [r[0] for r in table["data"]] == ["embed", "block_0", "block_1", "block_2", "head"]
    assert "Spread" in spread
    sharp = c.predict(0.02, api_name="/schedule_tau")[0]
    assert max(sharp["data"][-1][1:]) > max(table["data"][-1][1:])  # lower tau: sharper rows
    table, _, _, status = c.predict("reference_above", 1.0, 1, api_name="/schedule_preset")
    assert table["data"][-1][1:] == [0, 0, 1] and is_ok(status)
    table["data"][0][1] = "oops"
    status = c.predict(table, api_name="/edit_schedule")[-1]
    assert is_error(status) and "row embed, model a: 'oops' is not a number" in status
    table["data"][0][1] = "-1"
    assert "must not be negative" in c.predict(table, api_name="/edit_schedule")[-1]
    table["data"][0][1:] = ["0", "0", "0"]
    assert "sum to 0" in c.predict(table, api_name="/edit_schedule")[-1]
    table["data"][0][1:] = ["2", "1", "1"]
    edited, _, _, status = c.predict(table, api_name="/edit_schedule")
    assert is_ok(status)
    assert edited["data"][0][1:] == [0.5, 0.25, 0.25]
    for row in edited["data"]:
        assert sum(row[1:]) == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------------------ the whole demo flow

def test_whole_demo_flow(app_url):
    c = client(app_url)
    models, probes_md, _, summary, verdict, status = c.predict(api_name="/load_demo")
    assert is_ok(status), status
    names = [row[0] for row in models["data"]]
    roles = {row[0]: row[2] for row in models["data"]}
    assert "base" in names and list(roles.values()).count("reference") == 1
    reference = next(n for n, r in roles.items() if r == "reference")
    merged = [n for n in names if roles[n] != "base"]
    assert verdict.startswith("✓ compatible") and len(summary["data"]) == len(names)
    assert "probe texts" in probes_md

    # extraction (cached by the load) and the sample map
    assert is_ok(c.predict(api_name="/extract"))
    model_update, layer_update, scatter, separability, status = c.predict(None, 1, "task", api_name="/open_samples")
    assert is_ok(status) and "UMAP" in status
    assert model_update["value"] == reference and layer_update["maximum"] >= 2
    fig = figure(scatter)
    assert any(t["name"] == "typical sample" for t in fig["data"])
    assert "customdata" in fig["data"][0]  # the texts shown on hover
    assert len(figure(separability)["data"]) == len(names)
    scatter, status = c.predict(merged[0], 2, "cluster", api_name="/samples")
    assert is_ok(status) and figure(scatter)["data"][0]["name"].startswith("cluster")

    # layer similarity: values in [0, 1], the reference's row is 1, fixed colour range
    opened = c.predict(0, None, api_name="/open_similarity")  # as a click on the tab does
    assert is_ok(opened[6]) and opened[2]["maximum"] >= 2
    outputs = c.predict("rbf", "median", "none", "mean", "typical", 16, False, 2, reference, api_name="/similarity")
    heatmap, values, _, pair, _, layers, status = outputs
    assert is_ok(status)
    rows = {row[0]: row[1:] for row in values["data"]}
    assert sorted(rows) == sorted(merged)
    for model, row in rows.items():
        assert all(0.0 <= v <= 1.0 for v in row)
    assert rows[reference] == [1.0] * len(rows[reference])
    trace = figure(heatmap)["data"][0]
    assert (trace["zmin"], trace["zmax"]) == (0, 1)
    assert figure(pair)["data"][0]["zmax"] == 1 and figure(layers)["data"][0]["type"] == "heatmap"
    pair, status = c.predict(1, api_name="/pair_view")
    assert len(figure(pair)["data"][0]["y"]) == len(merged)
    cka = c.predict("cka", "median", "none", "mean", "typical", 16, False, 2, reference, api_name="/similarity")[1]
    assert all(0.0 <= v <= 1.0 + 1e-6 for row in cka["data"] for v in row[1:])

    # fusion schedule: a sharper tau, an edit (rows renormalised), a bad cell
    table = c.predict(0.05, api_name="/schedule_tau")[0]
    assert table["headers"] == ["row"] + merged
    table["data"][1][1] = "3"
    edited, area, spread, status = c.predict(table, api_name="/edit_schedule")
    assert is_ok(status) and "Spread" in spread
    for row in edited["data"]:
        assert sum(row[1:]) == pytest.approx(1.0, abs=1e-3)
    assert len(figure(area)["data"]) == len(merged)
    bad = json.loads(json.dumps(edited))
    bad["data"][2][2] = "x"
    assert "is not a number" in c.predict(bad, api_name="/edit_schedule")[-1]

    # merge and evaluate: RECALL and two baselines; every model and merge, every task
    scores, forgetting, chart, status = c.predict(["recall", "average", "ties"], 1.0, 0.5, 0.5, 0, api_name="/merge")
    assert is_ok(status), status
    assert [row[0] for row in scores["data"]] == names + ["recall", "average", "ties"]
    tasks = [h[:-2] for h in scores["headers"] if h.endswith(" %") and h != "average %"]
    assert len(tasks) >= 2
    assert forgetting["headers"] == ["model"] + tasks
    for row in scores["data"]:
        assert all(v is None or 0 <= v <= 100 for v in row[2:-1])
    assert {t["name"] for t in figure(chart)["data"]} == set(names) | {"recall", "average", "ties"}

    # generations side by side
    prompts = c.predict("", api_name="/open_merge")[0]
    generations, status = c.predict(prompts, 8, api_name="/generate")
    assert is_ok(status)
    assert generations["headers"] == ["prompt", "expected"] + names + ["recall", "average", "ties"]
    assert len(generations["data"]) == len(prompts.splitlines())

    # export: zip, plan.json and mergekit.yaml
    assert value(c.predict("recall", api_name="/open_export")) == "recall"
    zip_path, plan_path, yaml_path, plan_text, yaml_text, card, status = c.predict(
        "recall", "demo merge", "", False, api_name="/export")
    assert is_ok(status), status
    with zipfile.ZipFile(value(zip_path)) as archive:
        files = {Path(n).name for n in archive.namelist()}
        top = {n.split("/")[0] for n in archive.namelist()}
    assert top == {"demo-merge"}
    assert any(f.startswith("model") and ".safetensors" in f for f in files)
    assert {"config.json", "README.md", "plan.json", "mergekit.yaml"} <= files
    assert any(f.startswith("tokenizer") for f in files)
    plan = json.loads(Path(value(plan_path)).read_text())
    assert plan["method"] == "recall" and plan["schedule"]["models"] == merged
    assert plan == json.loads(plan_text)
    assert "merge_method" in Path(value(yaml_path)).read_text() and yaml_text
    assert "recall" in card.lower()

"""The demo workspace: tasks, one real build (about a minute on 2 cores), the cache, determinism, the CLI."""
import argparse
import json
import time

import pytest

from recall_core import demo, tasks
from recall_core.errors import RecallError
from recall_core.models import load_model, load_tokenizer
from recall_core.threads import one_torch_thread
from recall_core.toy import DEFAULT_ALPHABET

# Measured on seeds 0, 1, 2 (see the manifest): experts 90-98 % (arithmetic) and 98-100 % (the others);
# the sequential model keeps 0-16 % of task A. The thresholds leave a margin.
EXPERT_MIN = 0.8
FORGETTING_MIN = 0.3


def test_tasks_are_deterministic_correct_and_in_the_alphabet():
    for task in tasks.GENERATORS:
        items = tasks.make_items(task, 40, seed=7)
        assert items == tasks.make_items(task, 40, seed=7)
        assert all(set(it.text + it.answer) <= set(DEFAULT_ALPHABET) for it in items)
        assert all(it.task == task and it.answer for it in items)
    assert tasks.make_items("arithmetic", 40, seed=7) != tasks.make_items("arithmetic", 40, seed=8)
    for it in tasks.make_items("arithmetic", 50, seed=1):
        a, b = it.text.rstrip("=").split("+")
        assert int(it.answer) == int(a) + int(b)
    for it in tasks.make_items("reverse", 50, seed=1):
        assert it.answer == it.text[len("rev "):-1][::-1]
    for it in tasks.make_items("sort", 50, seed=1):
        assert it.answer == "".join(sorted(it.text[len("sort "):-1]))
    for it in tasks.make_items("facts", 50, seed=1):
        assert tasks.FACTS[it.text[len("capital of "):-1]] == it.answer
    held = {it.text for it in tasks.make_items("sort", 30, seed=1)}
    assert not held & {it.text for it in tasks.make_items("sort", 300, seed=2, exclude=held)}
    with pytest.raises(RecallError):
        tasks.make_items("poetry", 3)


def test_an_interrupted_build_leaves_no_cache(tmp_path):
    def interrupt(fraction, message):
        if "training" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        demo.build_demo(cache_dir=tmp_path, seed=3, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    assert demo.load_demo(tmp_path, seed=3) is None


def test_build_demo(tmp_path, capsys):
    messages = []
    started = time.perf_counter()
    workspace = demo.build_demo(cache_dir=tmp_path, seed=0, progress=lambda f, m: messages.append((f, m)))
    build_seconds = time.perf_counter() - started
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(messages) > 20

    # Layout and roles.
    assert workspace.root == tmp_path / f"demo-{demo.VERSION}-seed0"
    roles = {spec.name: spec.role for spec in workspace.models}
    assert roles == {"base": "base", **{t: "expert" for t in tasks.TASKS}, "sequential": "reference"}
    assert [p.name for p in tmp_path.iterdir()] == [workspace.root.name]  # no partial folder left
    probes, held_out = workspace.probes(), workspace.eval_probes()
    assert probes.task_names == held_out.task_names == list(tasks.TASKS)
    assert len(probes) == 32 * len(tasks.TASKS) and len(held_out) == 50 * len(tasks.TASKS)
    assert all(item.answer for item in held_out.items)
    assert not {i.text for i in probes.by_task("sort").items} & {i.text for i in held_out.by_task("sort").items}

    # Every model is a real Hugging Face folder with a tokenizer that AutoTokenizer loads.
    from transformers import AutoTokenizer

    for spec in workspace.models:
        model = load_model(spec.path)
        assert model.config.model_type == "llama" and model.config.num_hidden_layers == 4
        tokenizer = AutoTokenizer.from_pretrained(spec.path)
        assert tokenizer("rev ab=")["input_ids"] == load_tokenizer(spec.path)("rev ab=")["input_ids"]
        assert tokenizer.decode(tokenizer("37+5=")["input_ids"], skip_special_tokens=True) == "37+5="

    # Accuracies measured at build time, on the held-out set.
    accuracy = {m["name"]: m["accuracy"] for m in workspace.manifest["models"]}
    for task in tasks.TASKS:
        assert accuracy[task][task] >= EXPERT_MIN, (task, accuracy[task])
        others = [accuracy[task][t] for t in tasks.TASKS if t != task]
        assert max(others) <= 0.5, (task, accuracy[task])
    task_a, task_b = workspace.manifest["sequence"]
    assert accuracy[task_a][task_a] - accuracy["sequential"][task_a] >= FORGETTING_MIN
    assert accuracy["sequential"][task_b] >= EXPERT_MIN

    # The manifest's figures are what the saved model really scores.
    from recall_core.evaluate import evaluate_model

    spec = workspace.model("sequential")
    with one_torch_thread():  # as in the build, so that not even a near tie can flip
        scores = evaluate_model(load_model(spec.path), load_tokenizer(spec.path), held_out, batch_size=100)
    assert {t: s.accuracy for t, s in scores.items()} == accuracy["sequential"]

    # Second call: from the cache, without training.
    started = time.perf_counter()
    again = demo.build_demo(cache_dir=tmp_path, seed=0)
    assert time.perf_counter() - started < 1.0
    assert again.manifest == workspace.manifest and again.models == workspace.models

    # Same seed, same weights: retrain the base alone and compare with the checksum of the build.
    base = demo.train_base(seed=0)
    recorded = {m["name"]: m["checksum"] for m in workspace.manifest["models"]}
    assert demo.state_checksum(base) == recorded["base"]
    assert demo.state_checksum(load_model(workspace.model("base").path)) == recorded["base"]
    assert len(set(recorded.values())) == len(recorded)

    # The CLI prints the table and the files (from the cache now).
    from recall_core.cli import demo_cmd

    parser = argparse.ArgumentParser()
    demo_cmd.add_arguments(parser)
    assert demo_cmd.run(parser.parse_args(["--cache-dir", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert str(workspace.probe_file) in out and str(workspace.eval_file) in out
    assert "sequential" in out and "reference" in out and "arithmetic" in out

    print(f"demo build: {build_seconds:.1f} s;", json.dumps(accuracy))

"""recall_core.evaluate on tiny random models (seconds): loss, padding, exact match, forgetting, round trip."""
import json
import math

import pytest
import torch

from recall_core import toy
from recall_core.errors import RecallError
from recall_core.evaluate import EvaluationTable, TaskScore, evaluate_model, evaluate_models, generate
from recall_core.probes import ProbeItem, ProbeSet

TEXTS = ["12+3=", "rev abcd=", "sort 93184=", "capital of Zorbia?", "a"]


@pytest.fixture(scope="module")
def model():
    return toy.make_tiny_model("llama", seed=3, n_blocks=2, hidden=32)


@pytest.fixture(scope="module")
def tokenizer():
    return toy.make_char_tokenizer()


def _one_task_per_text(texts, answers=None):
    answers = answers or [None] * len(texts)
    return ProbeSet([ProbeItem(t, f"t{i}", a) for i, (t, a) in enumerate(zip(texts, answers))])


def test_loss_equals_the_models_own_loss_for_one_text(model, tokenizer):
    text = "sort 93184=13489"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    score = evaluate_model(model, tokenizer, ProbeSet([ProbeItem(text, "sort")]))["sort"]
    assert score.n == 1 and score.accuracy is None
    assert score.loss == pytest.approx(expected, abs=1e-5)
    assert score.perplexity == pytest.approx(math.exp(expected), rel=1e-5)


def test_answer_is_scored_after_the_text(model, tokenizer):
    ids = tokenizer("12+3=15", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids, labels=ids).loss.item()
    score = evaluate_model(model, tokenizer, ProbeSet([ProbeItem("12+3=", "add", "15")]))["add"]
    assert score.loss == pytest.approx(expected, abs=1e-5)


def test_padding_does_not_change_per_text_loss(model, tokenizer):
    probes = _one_task_per_text(TEXTS)
    batched = evaluate_model(model, tokenizer, probes, batch_size=len(TEXTS))
    single = evaluate_model(model, tokenizer, probes, batch_size=1)
    assert len({len(t) for t in TEXTS}) > 1  # the batch really is padded
    for task in probes.task_names:
        assert batched[task].loss == pytest.approx(single[task].loss, abs=1e-5)


def test_task_loss_is_token_weighted(model, tokenizer):
    short, long = "a", "capital of Zorbia?"
    both = evaluate_model(model, tokenizer, ProbeSet([ProbeItem(short, "x"), ProbeItem(long, "x")]))["x"]
    parts = evaluate_model(model, tokenizer, _one_task_per_text([short, long]))
    n_short, n_long = len(short), len(long)  # predicted tokens: one per character after <s>
    expected = (parts["t0"].loss * n_short + parts["t1"].loss * n_long) / (n_short + n_long)
    assert both.loss == pytest.approx(expected, abs=1e-5)


def test_generation_is_the_same_batched_and_alone(model, tokenizer):
    batched = generate(model, tokenizer, TEXTS, max_new_tokens=6, batch_size=len(TEXTS))
    alone = [generate(model, tokenizer, [t], max_new_tokens=6)[0] for t in TEXTS]
    assert batched == alone
    assert all(len(out) <= 6 and "\n" not in out for out in batched)


def test_generation_stops_at_eos_and_newline(tokenizer):
    class Scripted(torch.nn.Module):
        """Emits a fixed token sequence whatever the input: 'a', 'b', then a stop token, then 'c'."""

        def __init__(self, stop_token):
            super().__init__()
            self.config = toy.make_tiny_config("llama")
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.script = [tokenizer.convert_tokens_to_ids(c) for c in "ab"] + [stop_token] + [
                tokenizer.convert_tokens_to_ids("c")]

        def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
            tail = torch.tensor(self.script[:max_new_tokens]).repeat(input_ids.shape[0], 1)
            return torch.cat([input_ids, tail], dim=1)

    for stop in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("\n")):
        assert generate(Scripted(stop), tokenizer, ["x=", "yy="], max_new_tokens=4) == ["ab", "ab"]


def test_exact_match_accuracy(model, tokenizer):
    prompts = TEXTS[:4]
    outputs = generate(model, tokenizer, prompts, max_new_tokens=6)
    right = ProbeSet([ProbeItem(p, "task", o) for p, o in zip(prompts, outputs)])
    wrong = ProbeSet([ProbeItem(p, "task", o + "#") for p, o in zip(prompts, outputs)])
    assert evaluate_model(model, tokenizer, right, max_new_tokens=6)["task"].accuracy == 1.0
    assert evaluate_model(model, tokenizer, wrong, max_new_tokens=6)["task"].accuracy == 0.0
    half = ProbeSet(right.items[:2] + wrong.items[2:])
    assert evaluate_model(model, tokenizer, half, max_new_tokens=6)["task"].accuracy == 0.5


def test_progress_reaches_one(model, tokenizer):
    seen = []
    evaluate_model(model, tokenizer, ProbeSet([ProbeItem("1+1=", "a", "2"), ProbeItem("x", "b")]),
                   progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0


def _table(acc, sources=None):
    """acc: {model: {task: accuracy}} -> EvaluationTable with made-up losses."""
    scores = {m: {t: TaskScore(10, 1.0, math.e, a) for t, a in row.items()} for m, row in acc.items()}
    tasks = list(next(iter(acc.values())))
    return EvaluationTable(list(acc), tasks, scores, sources or [])


def test_forgetting_average_and_rows():
    table = _table({
        "a": {"x": 0.9, "y": 0.1},
        "b": {"x": 0.2, "y": 0.8},
        "merged": {"x": 0.7, "y": 0.5},
    }, sources=["a", "b"])
    assert table.forgetting["merged"] == pytest.approx({"x": 0.2, "y": 0.3})
    assert table.forgetting["a"] == pytest.approx({"x": 0.0, "y": 0.7})
    assert table.worst_forgetting == pytest.approx({"a": 0.7, "b": 0.7, "merged": 0.3})
    assert table.average == pytest.approx({"a": 0.5, "b": 0.5, "merged": 0.6})
    rows = table.rows()
    assert [r["model"] for r in rows] == ["a", "b", "merged"]
    assert rows[2] == pytest.approx({"model": "merged", "x": 0.7, "y": 0.5, "average": 0.6, "worst forgetting": 0.3})
    markdown = table.to_markdown()
    assert "| merged | 70.0 | 50.0 | 60.0 | 30.0 |" in markdown
    # Default sources: every model, so the merge counts as a source of its own.
    assert _table({"a": {"x": 0.5}, "m": {"x": 0.8}}).forgetting["a"]["x"] == pytest.approx(0.3)


def test_loss_only_tasks_use_loss_for_average_and_forgetting():
    scores = {
        "a": {"x": TaskScore(5, 1.0, math.e), "y": TaskScore(5, 3.0, math.exp(3))},
        "b": {"x": TaskScore(5, 2.0, math.exp(2)), "y": TaskScore(5, 2.0, math.exp(2))},
    }
    table = EvaluationTable(["a", "b"], ["x", "y"], scores)
    assert not table.has_accuracy("x")
    assert table.average == pytest.approx({"a": -2.0, "b": -2.0})
    assert table.forgetting["a"] == pytest.approx({"x": 0.0, "y": 1.0})
    assert table.worst_forgetting["b"] == pytest.approx(1.0)
    assert table.rows()[0]["x (loss)"] == 1.0


def test_round_trip_through_json():
    scores = {"a": {"x": TaskScore(3, 1.0, math.e, 0.9), "y": TaskScore(3, 2.0, math.exp(2))},
              "b": {"x": TaskScore(3, 1.5, math.exp(1.5), 0.4), "y": TaskScore(3, 900.0, float("inf"))}}
    table = EvaluationTable(["a", "b"], ["x", "y"], scores, ["a"])
    assert table.forgetting["b"] == pytest.approx({"x": 0.5, "y": 898.0})
    data = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    again = EvaluationTable.from_dict(data)
    assert again.models == table.models and again.tasks == table.tasks and again.sources == table.sources
    assert again.scores == table.scores
    assert again.forgetting == table.forgetting and again.average == table.average
    with pytest.raises(RecallError):
        EvaluationTable.from_dict({"models": ["a"]})


def test_evaluate_models_loads_paths_and_takes_loaded_models(model, tokenizer, tmp_path):
    folder = toy.save_model(model, tmp_path / "saved", tokenizer)
    probes = ProbeSet([ProbeItem("12+3=", "add", "15"), ProbeItem("rev ab=", "rev", "ba")])
    seen = []
    table = evaluate_models({"from_disk": str(folder), "in_memory": model}, probes, tokenizer=tokenizer,
                            progress=lambda f, m: seen.append(f))
    assert table.models == ["from_disk", "in_memory"] and table.tasks == ["add", "rev"]
    for task in table.tasks:
        assert table.scores["from_disk"][task].loss == pytest.approx(table.scores["in_memory"][task].loss, abs=1e-6)
    assert seen[-1] == 1.0
    with pytest.raises(RecallError, match="tokenizer"):
        evaluate_models({"m": model}, probes)
    with pytest.raises(RecallError, match="source"):
        evaluate_models({"m": model}, probes, sources=["nope"], tokenizer=tokenizer)

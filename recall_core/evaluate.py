"""Evaluation: per-task loss, perplexity and greedy exact-match accuracy; forgetting against source models.

``evaluate_model`` scores one loaded model on a probe set; ``evaluate_models`` scores several (loading
them one at a time) and returns an :class:`EvaluationTable` with each model's average and, per task, its
drop against the best source model (forgetting).

Conventions:
- The scored text of an item is ``text + answer`` (the answer follows the prompt directly, as in the
  demo: "37+45=" + "82"); items without an answer are scored on ``text`` alone.
- Loss is the mean next-token cross-entropy over the real tokens of a task (padding masked,
  token-weighted across the task's items), exactly what the model's own ``labels=`` loss gives for one
  text; perplexity is ``exp(loss)``.
- Accuracy is greedy exact match: the continuation of ``text`` (cut at EOS or a newline), stripped,
  equals the answer, stripped. ``None`` for a task without answers.
"""
from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

from .errors import RecallError
from .probes import ProbeSet

Progress = Callable[[float, str], None] | None

DEFAULT_MAX_LENGTH = 512


@dataclass
class TaskScore:
    """One model on one task: ``n`` items, mean token loss, perplexity, exact-match accuracy (or None)."""

    n: int
    loss: float
    perplexity: float
    accuracy: float | None = None


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if value is not None:
            return int(value)
    return 0


def _max_length(model, max_length: int) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return min(max_length, int(limit)) if limit else max_length


def _encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    return [list(ids) for ids in encoded]


def _pad(rows: list[list[int]], pad_id: int, left: bool):
    """(input_ids, attention_mask), both (B, T) long tensors."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return "cpu"


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 32,
             max_length: int = DEFAULT_MAX_LENGTH) -> list[str]:
    """Greedy continuations of ``prompts`` (continuation only, cut at EOS or a newline).

    Batched with left padding, so every prompt's last token sits in the last column.
    """
    import torch

    if not prompts:
        return []
    pad_id = _pad_id(tokenizer)
    eos_id = tokenizer.eos_token_id
    device = _device(model)
    limit = _max_length(model, max_length)
    encoded = _encode(tokenizer, list(prompts), max(1, limit - max_new_tokens))
    outputs: list[str] = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            ids, mask = _pad(encoded[start:start + batch_size], pad_id, left=True)
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id,
            )[:, ids.shape[1]:].tolist()
            for row in generated:
                if eos_id is not None and eos_id in row:
                    row = row[: row.index(eos_id)]
                text = tokenizer.decode(row, skip_special_tokens=True)
                outputs.append(text.split("\n", 1)[0])
    return outputs


def _token_losses(model, tokenizer, texts: list[str], batch_size: int, max_length: int,
                  progress: Callable[[int], None] | None = None):
    """Per text: (sum of next-token losses, number of predicted tokens)."""
    import torch

    pad_id = _pad_id(tokenizer)
    device = _device(model)
    encoded = _encode(tokenizer, texts, _max_length(model, max_length))
    sums, counts = [], []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            ids, mask = _pad(encoded[start:start + batch_size], pad_id, left=False)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets = ids[:, 1:]
            real = mask[:, 1:].bool()
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            ).view(targets.shape)
            sums.extend((losses * real).sum(dim=1).tolist())
            counts.extend(real.sum(dim=1).tolist())
            if progress:
                progress(min(start + batch_size, len(encoded)))
    return sums, counts


def evaluate_model(model, tokenizer, probes: ProbeSet, batch_size: int = 32, progress: Progress = None,
                   max_new_tokens: int | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> dict[str, TaskScore]:
    """Loss, perplexity and exact-match accuracy of one loaded model, per task of ``probes``.

    Args:
        max_new_tokens: generation budget; default: the longest answer in tokens plus 4.

    Returns:
        task name -> :class:`TaskScore`, tasks in the probe set's order.
    """
    if len(probes) == 0:
        raise RecallError("the probe set is empty")
    model.eval()
    items = probes.items
    texts = [it.text + it.answer if it.answer is not None else it.text for it in items]
    n_answers = sum(it.answer is not None for it in items)
    total = len(items) + n_answers

    def report_loss(done: int):
        if progress:
            progress(done / total, f"loss {done}/{len(items)}")

    sums, counts = _token_losses(model, tokenizer, texts, batch_size, max_length, report_loss)

    continuations: dict[int, str] = {}
    answered = [i for i, it in enumerate(items) if it.answer is not None]
    if answered:
        if max_new_tokens is None:
            lengths = _encode(tokenizer, [items[i].answer for i in answered], max_length)
            max_new_tokens = max(len(ids) for ids in lengths) + 4
        for start in range(0, len(answered), batch_size):
            chunk = answered[start:start + batch_size]
            outs = generate(model, tokenizer, [items[i].text for i in chunk], max_new_tokens, batch_size, max_length)
            continuations.update(zip(chunk, outs))
            if progress:
                done = len(items) + start + len(chunk)
                progress(done / total, f"generation {start + len(chunk)}/{len(answered)}")

    scores: dict[str, TaskScore] = {}
    for task in probes.task_names:
        index = [i for i, it in enumerate(items) if it.task == task]
        n_tokens = sum(counts[i] for i in index)
        loss = sum(sums[i] for i in index) / n_tokens if n_tokens else float("nan")
        with_answer = [i for i in index if i in continuations]
        accuracy = None
        if with_answer:
            hits = sum(continuations[i].strip() == items[i].answer.strip() for i in with_answer)
            accuracy = hits / len(with_answer)
        scores[task] = TaskScore(n=len(index), loss=loss, perplexity=_safe_exp(loss), accuracy=accuracy)
    return scores


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


@dataclass
class EvaluationTable:
    """Scores of several models on the same tasks, with average and forgetting.

    Attributes:
        models: model names, in order.
        tasks: task names, in order.
        scores: ``scores[model][task]`` -> :class:`TaskScore`.
        sources: the source models forgetting is measured against (default: all models).
        average: per model, mean accuracy over tasks with answers, or minus the mean loss when no task has one.
        forgetting: ``forgetting[model][task]`` = best source accuracy minus the model's accuracy (positive =
            forgot); for a task without answers, the model's loss minus the best (lowest) source loss.
        worst_forgetting: per model, the largest forgetting over its tasks (accuracy tasks when there are any).
    """

    models: list[str]
    tasks: list[str]
    scores: dict[str, dict[str, TaskScore]]
    sources: list[str] = field(default_factory=list)
    average: dict[str, float] = field(default_factory=dict)
    forgetting: dict[str, dict[str, float]] = field(default_factory=dict)
    worst_forgetting: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.sources:
            self.sources = list(self.models)
        missing = [s for s in self.sources if s not in self.scores]
        if missing:
            raise RecallError(f"source model {missing[0]!r} is not among the evaluated models")
        self._summarise()

    def has_accuracy(self, task: str) -> bool:
        return any(self.scores[m][task].accuracy is not None for m in self.models)

    def _summarise(self) -> None:
        acc_tasks = [t for t in self.tasks if self.has_accuracy(t)]
        self.average, self.forgetting, self.worst_forgetting = {}, {}, {}
        for model in self.models:
            row = self.scores[model]
            if acc_tasks:
                self.average[model] = _mean([row[t].accuracy for t in acc_tasks])
            else:
                self.average[model] = -_mean([row[t].loss for t in self.tasks])
            self.forgetting[model] = {}
            for task in self.tasks:
                if task in acc_tasks:
                    best = max(_nz(self.scores[s][task].accuracy) for s in self.sources)
                    self.forgetting[model][task] = best - _nz(row[task].accuracy)
                else:
                    best = min(self.scores[s][task].loss for s in self.sources)
                    self.forgetting[model][task] = row[task].loss - best
            considered = acc_tasks or self.tasks
            self.worst_forgetting[model] = max(self.forgetting[model][t] for t in considered)

    def rows(self) -> list[dict]:
        """One dict per model for a UI table: ``model``, one column per task, ``average``, ``worst forgetting``.

        Task columns hold the accuracy (0..1) where the task has answers, else the loss (column ``task (loss)``).
        """
        out = []
        for model in self.models:
            row = {"model": model}
            for task in self.tasks:
                score = self.scores[model][task]
                if self.has_accuracy(task):
                    row[task] = score.accuracy
                else:
                    row[f"{task} (loss)"] = score.loss
            row["average"] = self.average[model]
            row["worst forgetting"] = self.worst_forgetting[model]
            out.append(row)
        return out

    def to_markdown(self) -> str:
        """A Markdown table: accuracies and forgetting in percent, losses with three decimals."""
        rows = self.rows()
        headers = list(rows[0]) if rows else ["model"]
        accuracy_like = any(self.has_accuracy(t) for t in self.tasks)

        def cell(key, value):
            if isinstance(value, str):
                return value
            if value is None:
                return "-"
            if key.endswith("(loss)") or not accuracy_like and key in ("average", "worst forgetting"):
                return f"{value:.3f}"
            return f"{100 * value:.1f}"

        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        for row in rows:
            lines.append("| " + " | ".join(cell(k, row[k]) for k in headers) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """JSON-safe (non-finite numbers become strings such as ``"inf"``)."""
        return {
            "models": list(self.models),
            "tasks": list(self.tasks),
            "sources": list(self.sources),
            "scores": {m: {t: _json_safe(asdict(s)) for t, s in row.items()} for m, row in self.scores.items()},
            "average": _json_safe(self.average),
            "forgetting": _json_safe(self.forgetting),
            "worst_forgetting": _json_safe(self.worst_forgetting),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluationTable":
        try:
            scores = {
                m: {t: TaskScore(**_from_json(s)) for t, s in row.items()} for m, row in data["scores"].items()
            }
            return cls(list(data["models"]), list(data["tasks"]), scores, list(data.get("sources") or []))
        except (KeyError, TypeError) as exc:
            raise RecallError(f"not an evaluation table: {exc}") from None


def evaluate_models(models: dict[str, object], probes: ProbeSet, sources: list[str] | None = None, tokenizer=None,
                    batch_size: int = 32, progress: Progress = None, **kwargs) -> EvaluationTable:
    """Evaluate several models on one probe set, one model in memory at a time.

    Args:
        models: name -> folder / hub id / :class:`~recall_core.models.ModelSpec` (loaded with its own
            tokenizer, freed after), or an already loaded model (scored with ``tokenizer``).
        sources: names of the source models forgetting is measured against (default: all).
        kwargs: passed to :func:`evaluate_model` (``max_new_tokens``, ``max_length``).
    """
    from .models import ModelSpec, load_model, load_tokenizer

    if not models:
        raise RecallError("no models to evaluate")
    unknown = [s for s in sources or [] if s not in models]
    if unknown:
        raise RecallError(f"source model {unknown[0]!r} is not among the evaluated models")
    scores: dict[str, dict[str, TaskScore]] = {}
    count = len(models)
    for index, (name, value) in enumerate(models.items()):
        def sub(fraction, message, _i=index, _name=name):
            if progress:
                progress((_i + fraction) / count, f"{_name}: {message}")

        if isinstance(value, (str, ModelSpec)) or hasattr(value, "__fspath__"):
            path = value.path if isinstance(value, ModelSpec) else str(value)
            sub(0.0, "loading")
            model, model_tokenizer = load_model(path), load_tokenizer(path)
            scores[name] = evaluate_model(model, model_tokenizer, probes, batch_size, sub, **kwargs)
            del model, model_tokenizer
            gc.collect()
        else:
            if tokenizer is None:
                raise RecallError(f"model {name!r} is already loaded: pass the tokenizer to score it with")
            scores[name] = evaluate_model(value, tokenizer, probes, batch_size, sub, **kwargs)
    if progress:
        progress(1.0, "evaluation done")
    return EvaluationTable(list(models), probes.task_names, scores, list(sources or []))


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def _nz(value):
    return 0.0 if value is None else value


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan"
    return value


def _from_json(value):
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value

"""Fusion schedules: one row of model weights per part of the model.

Rows are ``embed``, ``block_0`` ... ``block_{B-1}``, ``head``; columns are models. A valid schedule
has finite, non-negative weights and every row sums to 1.

The RECALL schedule is ``w[i, row] = softmax_i(s[i, l] / tau)`` where ``l`` is the hidden-state index
that belongs to the row: ``embed`` -> 0, ``block_b`` -> b + 1 (the block's output), ``head`` -> B (the
last block's output).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import ScheduleError
from .layers import EMBED, HEAD, schedule_rows

PRESETS = ("recall", "uniform", "linear_ramp", "reference_above")


@dataclass
class Schedule:
    """Weights ``(n_rows, n_models)``; ``rows`` and ``models`` name the axes.

    ``source`` says how it was made (``"recall tau=0.05"``, ``"uniform"``, ``"edited"``) for cards.
    """

    rows: list[str]
    models: list[str]
    weights: np.ndarray
    source: str = ""
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if self.weights.shape != (len(self.rows), len(self.models)):
            raise ScheduleError(
                f"schedule has {self.weights.shape} weights for {len(self.rows)} rows x {len(self.models)} models"
            )

    @property
    def n_blocks(self) -> int:
        return len(self.rows) - 2

    def row(self, name: str) -> np.ndarray:
        return self.weights[self.rows.index(name)]

    def weight_for(self, part: str | int) -> np.ndarray:
        """Weights ``(n_models,)`` for a tensor part: ``"embed"``, a block index or ``"head"``."""
        return self.weights[self.rows.index(part if isinstance(part, str) else f"block_{part}")]

    def spread(self) -> np.ndarray:
        """Per row, max weight / min weight (1 = uniform): how far each row is from uniform."""
        low = self.weights.min(axis=1)
        with np.errstate(divide="ignore"):
            return np.where(low > 0, self.weights.max(axis=1) / np.where(low > 0, low, 1), np.inf)

    def to_dict(self) -> dict:
        return {
            "rows": list(self.rows),
            "models": list(self.models),
            "weights": [[float(w) for w in row] for row in self.weights],
            "source": self.source,
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        try:
            weights = np.array(data["weights"], dtype=np.float64)
            schedule = cls(list(data["rows"]), list(data["models"]), weights, data.get("source", ""),
                           dict(data.get("settings", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ScheduleError(f"malformed schedule: {exc}") from None
        return validate(schedule)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Schedule":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ScheduleError(f"schedule is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def row_hidden_state_index(n_blocks: int) -> list[int]:
    """For each schedule row, the hidden-state index whose similarity sets its weights."""
    return [0] + [b + 1 for b in range(n_blocks)] + [n_blocks]


def recall_schedule(similarity: np.ndarray, models: list[str], temperature: float = 1.0) -> Schedule:
    """The RECALL schedule from a similarity matrix.

    Args:
        similarity: ``(n_models, n_blocks + 1)`` similarity of each model to the reference per
            hidden-state index (index 0 = embeddings).
        temperature: tau > 0; small values sharpen the weights towards the most similar model.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if not temperature > 0 or not math.isfinite(temperature):
        raise ScheduleError(f"temperature must be a positive number, not {temperature}")
    if similarity.ndim != 2 or similarity.shape[0] != len(models):
        raise ScheduleError(f"similarity must be (n_models, n_layers), got {similarity.shape} for {len(models)} models")
    n_blocks = similarity.shape[1] - 1
    logits = similarity[:, row_hidden_state_index(n_blocks)].T / temperature
    return Schedule(schedule_rows(n_blocks), list(models), softmax(logits, axis=1),
                    source=f"recall tau={temperature:g}", settings={"temperature": temperature})


def uniform_schedule(models: list[str], n_blocks: int) -> Schedule:
    rows = schedule_rows(n_blocks)
    return Schedule(rows, list(models), np.full((len(rows), len(models)), 1.0 / len(models)), source="uniform")


def linear_ramp_schedule(models: list[str], n_blocks: int, reference: str) -> Schedule:
    """Uniform at ``embed``, all weight on the reference at ``head``, linear in between."""
    rows = schedule_rows(n_blocks)
    uniform = np.full(len(models), 1.0 / len(models))
    onehot = np.eye(len(models))[_index(models, reference)]
    t = np.linspace(0.0, 1.0, len(rows))[:, None]
    return Schedule(rows, list(models), (1 - t) * uniform + t * onehot, source=f"linear ramp to {reference}")


def reference_above_schedule(models: list[str], n_blocks: int, reference: str, k: int) -> Schedule:
    """Uniform for ``embed`` and blocks below ``k``; the reference alone for blocks >= k and ``head``."""
    if not 0 <= k <= n_blocks:
        raise ScheduleError(f"k must be between 0 and {n_blocks}, not {k}")
    schedule = uniform_schedule(models, n_blocks)
    onehot = np.eye(len(models))[_index(models, reference)]
    for b in range(k, n_blocks):
        schedule.weights[schedule.rows.index(f"block_{b}")] = onehot
    schedule.weights[schedule.rows.index(HEAD)] = onehot
    schedule.source = f"reference {reference} only from block {k}"
    return schedule


def validate(schedule: Schedule, normalise: bool = True) -> Schedule:
    """Check every cell, then renormalise rows to sum to 1 (a new Schedule).

    Raises:
        ScheduleError: naming the row and model of the first NaN, infinite or negative cell, or the
            first row that sums to 0.
    """
    w = schedule.weights
    for r, row in enumerate(schedule.rows):
        for m, model in enumerate(schedule.models):
            value = w[r, m]
            if not np.isfinite(value):
                raise ScheduleError(f"row {row}, model {model}: weight must be a finite number, not {value}")
            if value < 0:
                raise ScheduleError(f"row {row}, model {model}: weight must not be negative ({value:g})")
        if w[r].sum() <= 0:
            raise ScheduleError(f"row {row}: weights sum to 0; give at least one model a positive weight")
    weights = w / w.sum(axis=1, keepdims=True) if normalise else w.copy()
    return Schedule(list(schedule.rows), list(schedule.models), weights, schedule.source, dict(schedule.settings))


def parse_cells(rows: list[str], models: list[str], cells) -> Schedule:
    """A schedule from a table of cells as an editor returns them (strings or numbers).

    Raises:
        ScheduleError: naming the row and model of a cell that is not a number.
    """
    cells = list(cells)
    if len(cells) != len(rows):
        raise ScheduleError(f"the table has {len(cells)} rows; expected {len(rows)} ({rows[0]} ... {rows[-1]})")
    weights = np.zeros((len(rows), len(models)))
    for r, (row, values) in enumerate(zip(rows, cells)):
        values = list(values)
        if len(values) != len(models):
            raise ScheduleError(f"row {row}: {len(values)} values for {len(models)} models")
        for m, (model, value) in enumerate(zip(models, values)):
            try:
                weights[r, m] = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
            except ValueError:
                raise ScheduleError(f"row {row}, model {model}: {str(value)!r} is not a number") from None
    return validate(Schedule(rows, list(models), weights, source="edited"))


def check_matches(schedule: Schedule, models: list[str], n_blocks: int) -> None:
    """Raise ScheduleError unless the schedule has exactly these models and the rows of n_blocks blocks."""
    if list(schedule.models) != list(models):
        raise ScheduleError(f"schedule models {schedule.models} do not match the models {list(models)}")
    expected = schedule_rows(n_blocks)
    if list(schedule.rows) != expected:
        raise ScheduleError(
            f"schedule has {len(schedule.rows)} rows but the models have {n_blocks} blocks "
            f"(expected rows {EMBED}, block_0 ... block_{n_blocks - 1}, {HEAD})"
        )


def _index(models: list[str], name: str) -> int:
    if name not in models:
        raise ScheduleError(f"reference {name!r} is not one of the models {models}")
    return models.index(name)

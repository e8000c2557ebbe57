"""The reproducible merge plan: which models, which method, which weights, which output dtype.

A :class:`MergePlan` is everything ``python -m recall_core merge --plan plan.json`` needs to rebuild
a merge headless. Its JSON form (``"format": "recall-plan/1"``) is documented in docs/ARCHITECTURE.md.

Models: ``models`` lists every model, the base included. The *merged* models are all models except
the base; they are the columns of the RECALL schedule and the inputs of every method. The base is only
used by methods that need one (task arithmetic, TIES, DARE).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import PlanError
from .models import ModelSpec
from .schedule import Schedule

FORMAT = "recall-plan/1"
METHOD_NAMES = ("recall", "average", "task_arithmetic", "ties", "dare")
DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass
class MergePlan:
    """A merge, fully specified.

    Attributes:
        models: every model, base included, in a fixed order.
        method: one of ``METHOD_NAMES``.
        reference: the reference model (RECALL's newest fine-tune); ``None`` = the model with role
            ``reference``, else the last merged model (see :attr:`reference_name`).
        base: name of the base model; ``None`` = the model with role ``base`` (if exactly one).
        schedule: the per-row weights of ``"recall"`` (rows ``embed``, ``block_i``, ``head``;
            columns = :attr:`merged_models`). Ignored by the other methods.
        method_params: overrides of the method's defaults (``lambda``, ``density``, ``drop_rate``,
            ``seed``, ``normalize``, ``rescale``, ``weights`` = ``{model: weight}`` for the baselines).
        analysis: the settings that produced the schedule (metric, temperature, clusters, pooling ...),
            kept for cards and reruns; the merge does not read them.
        dtype: output dtype; ``"auto"`` = each tensor's dtype in the reference checkpoint.
    """

    models: list[ModelSpec]
    method: str = "recall"
    reference: str | None = None
    base: str | None = None
    schedule: Schedule | None = None
    method_params: dict = field(default_factory=dict)
    analysis: dict = field(default_factory=dict)
    dtype: str = "float32"

    def __post_init__(self):
        self.models = [m if isinstance(m, ModelSpec) else ModelSpec(**m) for m in self.models]
        if self.base is None:
            bases = [m.name for m in self.models if m.role == "base"]
            if len(bases) == 1:
                self.base = bases[0]

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def merged_models(self) -> list[str]:
        """Names of the models that are merged: every model except the base."""
        return [m.name for m in self.models if m.name != self.base]

    @property
    def reference_name(self) -> str | None:
        """The reference model: ``reference``, else the model with role reference, else the last merged one."""
        if self.reference is not None:
            return self.reference
        merged = self.merged_models
        tagged = [m.name for m in self.models if m.role == "reference" and m.name in merged]
        return tagged[0] if tagged else (merged[-1] if merged else None)

    def spec(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise PlanError(f"the plan has no model named {name!r} (models: {', '.join(self.model_names)})")

    @property
    def params(self) -> dict:
        """The method's defaults updated with ``method_params`` (what the merge uses)."""
        from .merge.methods import METHODS

        method = METHODS.get(self.method)
        params = dict(method.defaults) if method else {}
        params.update(self.method_params)
        return params

    def model_weights(self) -> dict[str, float]:
        """Per merged model, the baseline weight (``method_params["weights"]``; 1.0 when not given)."""
        given = self.params.get("weights") or {}
        return {name: float(given.get(name, 1.0)) for name in self.merged_models}

    def with_method(self, method: str, **params) -> "MergePlan":
        """A copy with another method (and extra parameters); models and schedule are shared."""
        return replace(self, method=method, method_params={**self.method_params, **params})

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "models": [{"name": m.name, "path": _absolute(m.path), "role": m.role} for m in self.models],
            "reference": self.reference,
            "base": self.base,
            "method": self.method,
            "method_params": _jsonable(self.method_params),
            "schedule": self.schedule.to_dict() if self.schedule is not None else None,
            "analysis": _jsonable(self.analysis),
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, data: dict, root: str | os.PathLike | None = None) -> "MergePlan":
        """A plan from its JSON dict; relative model paths are taken relative to ``root`` if given.

        Raises:
            PlanError: wrong format, missing or malformed fields.
        """
        if not isinstance(data, dict):
            raise PlanError("a plan must be a JSON object")
        if data.get("format") != FORMAT:
            raise PlanError(f"not a RECALL plan: format is {data.get('format')!r}, expected {FORMAT!r}")
        if not isinstance(data.get("models"), list) or not data["models"]:
            raise PlanError("the plan lists no models")
        models = []
        for i, entry in enumerate(data["models"]):
            if not isinstance(entry, dict) or "name" not in entry or "path" not in entry:
                raise PlanError(f"plan model #{i + 1} needs a 'name' and a 'path'")
            path = str(entry["path"])
            if root is not None and not Path(path).is_absolute() and (Path(root) / path).exists():
                path = str((Path(root) / path).resolve())
            models.append(ModelSpec(str(entry["name"]), path, entry.get("role", "expert")))
        schedule = _schedule_from_dict(data["schedule"]) if data.get("schedule") else None
        for key in ("method_params", "analysis"):
            if not isinstance(data.get(key) or {}, dict):
                raise PlanError(f"plan field {key!r} must be an object")
        return cls(models=models, method=data.get("method", "recall"), reference=data.get("reference"),
                   base=data.get("base"), schedule=schedule, method_params=dict(data.get("method_params") or {}),
                   analysis=dict(data.get("analysis") or {}), dtype=data.get("dtype", "float32"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def save_plan(plan: MergePlan, path: str | os.PathLike) -> Path:
    """Write the plan as JSON (model paths absolute)."""
    path = Path(path)
    path.write_text(plan.to_json() + "\n", encoding="utf-8")
    return path


def load_plan(path: str | os.PathLike) -> MergePlan:
    """Read a plan JSON; relative model paths are resolved against the plan's folder.

    Raises:
        PlanError: missing file, invalid JSON or malformed plan.
    """
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"plan file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path} is not valid JSON: {exc}") from None
    return MergePlan.from_dict(data, root=path.parent)


def validate_plan(plan: MergePlan, checkpoints: dict | None = None) -> dict:
    """Check a plan against its models; return ``{name: Checkpoint}`` for every model of the plan.

    Args:
        checkpoints: already opened checkpoints by model name (missing ones are opened here).

    Raises:
        PlanError: unknown method or dtype, duplicate/unknown names, a method without its base,
            bad method parameters, a RECALL plan without a schedule.
        ScheduleError: schedule models or rows that do not match the models, NaN or negative weights.
        IncompatibleModelsError: models that differ in a tensor name or shape (named).
    """
    from .merge.methods import METHODS
    from .models import count_blocks, open_model_checkpoint, require_compatible, tensor_parts
    from .schedule import check_matches, validate

    if plan.method not in METHODS:
        raise PlanError(f"unknown merge method {plan.method!r}; choose one of {', '.join(METHOD_NAMES)}")
    if plan.dtype not in DTYPES:
        raise PlanError(f"unknown dtype {plan.dtype!r}; choose one of {', '.join(DTYPES)}")
    names = plan.model_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PlanError(f"model name {duplicates[0]!r} appears more than once in the plan")
    if plan.base is not None and plan.base not in names:
        raise PlanError(f"base model {plan.base!r} is not one of the plan's models ({', '.join(names)})")
    merged = plan.merged_models
    if not merged:
        raise PlanError("the plan has no model to merge besides the base")
    if plan.reference is not None and plan.reference not in merged:
        raise PlanError(f"reference model {plan.reference!r} is not one of the merged models ({', '.join(merged)})")
    method = METHODS[plan.method]
    if method.needs_base and plan.base is None:
        raise PlanError(f"{plan.method} needs a base model: give one model the role 'base'")
    _check_params(plan, method)

    checkpoints = dict(checkpoints or {})
    for spec in plan.models:
        if spec.name not in checkpoints:
            checkpoints[spec.name] = open_model_checkpoint(spec)
    checkpoints = {name: checkpoints[name] for name in names}
    require_compatible(checkpoints)

    if plan.method == "recall":
        if plan.schedule is None:
            raise PlanError("method 'recall' needs a schedule; compute or load one first")
        first = checkpoints[merged[0]]
        parts = tensor_parts(first)
        n_blocks = count_blocks(first.config) or 1 + max([p for p in parts.values() if isinstance(p, int)], default=-1)
        check_matches(plan.schedule, merged, n_blocks)
        validate(plan.schedule)
    return checkpoints


def _check_params(plan: MergePlan, method) -> None:
    params = plan.params
    for key in ("lambda", "density", "drop_rate"):
        if key in params and not _finite(params[key]):
            raise PlanError(f"{plan.method}: {key} must be a finite number, not {params[key]!r}")
    if not isinstance(params.get("seed", 0), numbers.Integral) or isinstance(params.get("seed", 0), bool):
        raise PlanError(f"{plan.method}: seed must be an integer, not {params['seed']!r}")
    for key in ("normalize", "rescale"):
        if key in params and not isinstance(params[key], bool):
            raise PlanError(f"{plan.method}: {key} must be true or false, not {params[key]!r}")
    if plan.method == "ties" and not 0 < float(params["density"]) <= 1:
        raise PlanError(f"ties: density must be in (0, 1], not {params['density']}")
    if plan.method == "dare" and not 0 <= float(params["drop_rate"]) < 1:
        raise PlanError(f"dare: drop_rate must be in [0, 1), not {params['drop_rate']}")
    weights = params.get("weights") or {}
    if not isinstance(weights, dict):
        raise PlanError(f"{plan.method}: weights must be an object {{model: weight}}")
    unknown = [name for name in weights if name not in plan.merged_models]
    if unknown:
        raise PlanError(f"{plan.method}: weight given for {unknown[0]!r}, which is not a merged model")
    if plan.method == "recall":
        return
    for name, value in plan.model_weights().items():
        if not _finite(value):
            raise PlanError(f"{plan.method}: weight of model {name} must be a finite number, not {value}")
        if value < 0:
            raise PlanError(f"{plan.method}: weight of model {name} must not be negative ({value:g})")
    if sum(plan.model_weights().values()) <= 0:
        raise PlanError(f"{plan.method}: the model weights sum to 0; give at least one model a positive weight")


def _schedule_from_dict(data) -> Schedule:
    """The stored schedule exactly (``Schedule.from_dict`` renormalises rows, changing the last bits);
    its cells are checked by :func:`validate_plan`."""
    from .errors import ScheduleError

    try:
        return Schedule(list(data["rows"]), list(data["models"]), data["weights"], data.get("source", ""),
                        dict(data.get("settings") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ScheduleError(f"malformed schedule in the plan: {exc}") from None


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _absolute(path: str) -> str:
    """A local path made absolute; a hub id (no such local path) kept as it is."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def _jsonable(value):
    """Plain JSON values (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


__all__ = ["FORMAT", "METHOD_NAMES", "DTYPES", "MergePlan", "save_plan", "load_plan", "validate_plan"]

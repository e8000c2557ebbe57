"""The mergekit configuration that reproduces a merge plan, tensor for tensor.

Semantics relied on (mergekit 0.1.5, checked against its source and by ``tests/test_mergekit_parity.py``):

- ``linear`` with ``normalize: true`` is ``sum_i w_i x_i / sum_i w_i``; per-model weights sit under each
  model's ``parameters``. RECALL and the uniform average are both ``linear``.
- A list value is a gradient: block ``b`` of ``n`` reads it at ``t = b / (n - 1)`` (``t = 1`` for one
  block), position ``t * (len - 1)`` with linear interpolation, so a list with one value per block
  gives every block exactly its own value.
- Tensors outside the blocks (embeddings before them, final norm and lm_head after them) are planned
  with ``t = 0``: without a filter they would all read the FIRST list value. Conditions
  ``[{filter: s, value: v}, ..., {value: default}]`` are tried in order and the first whose ``s`` is a
  substring of the tensor name wins, so every non-block tensor gets a filter with its full name.
  (mergekit matches its architecture's canonical names, which are the names transformers saves.)
- ``task_arithmetic``, ``ties`` and ``dare_linear`` need ``base_model``; ``weight`` is required for
  every other model; ``lambda`` scales the merged task vector; ``ties`` normalises by the weights of
  the sign-agreeing models by default, ``dare_linear`` rescales the kept deltas by default.
- ``dtype`` is the compute dtype (inputs are cast to it), ``out_dtype`` the saved one. The output
  config.json and a copied tokenizer come from ``base_model``, so ``linear`` merges name the
  reference as ``base_model`` (``linear`` ignores it otherwise).
- ``tokenizer_source`` is NOT emitted: it rebuilds the embedding matrices to the tokenizer's vocabulary
  size, which changes their shape whenever the model pads its vocabulary. Run with
  ``--copy-tokenizer`` (mergekit's default) instead.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import PlanError
from .layers import EMBED, HEAD, layer_map
from .merge.methods import get_method


HEADER = (
    "# mergekit configuration written by RECALL Studio (recall_core); method: {method}.\n"
    "# Reproduce the merge with mergekit 0.1.5 or later:\n"
    "#   mergekit-yaml mergekit.yaml OUTPUT_FOLDER --copy-tokenizer\n"
)
DARE_NOTE = (
    "# DARE drops deltas at random: mergekit draws its own masks (set --random-seed), so its result\n"
    "# matches recall_core's in distribution, not tensor for tensor.\n"
)


def to_mergekit_yaml(plan, tensor_names: list[str] | None = None, model_type: str | None = None) -> str:
    """A mergekit YAML configuration that reproduces ``plan``.

    Args:
        plan: a ``MergePlan``.
        tensor_names, model_type: the models' tensor names and ``config.model_type``; read from the
            reference model's headers when not given (RECALL needs them for its filters).

    Raises:
        PlanError: unknown method, a model the plan does not list, a recall plan without a schedule,
            or a method that needs a base model without one.
    """
    method = get_method(plan.method).name  # PlanError naming the choices for an unknown method
    config = to_mergekit_config(plan, tensor_names, model_type)
    text = HEADER.format(method=method) + (DARE_NOTE if method == "dare" else "")
    return text + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)


def to_mergekit_config(plan, tensor_names: list[str] | None = None, model_type: str | None = None) -> dict:
    """The configuration as a plain dict (what :func:`to_mergekit_yaml` dumps)."""
    merged = plan.merged_models
    if not merged:
        raise PlanError("the plan has no model to merge besides the base")
    reference = _path(plan, plan.reference_name)
    # recall_core merges in float32 and converts once to the output dtype; so does mergekit here.
    out_dtype = output_dtype_name(plan)
    dtypes = {"dtype": "float32", **({"out_dtype": out_dtype} if out_dtype != "float32" else {})}
    if plan.method == "recall":
        if plan.schedule is None:
            raise PlanError("method 'recall' needs a schedule; compute or load one first")
        if tensor_names is None:
            checkpoint = _reference_checkpoint(plan)
            tensor_names, model_type = checkpoint.names, checkpoint.model_type
        return {"merge_method": "linear", "base_model": reference, **dtypes, "parameters": {"normalize": True},
                "models": _recall_models(plan, tensor_names, model_type)}
    if plan.method == "average":
        weights = plan.model_weights()
        models = [{"model": _path(plan, name), "parameters": {"weight": weights[name]}} for name in merged]
        return {"merge_method": "linear", "base_model": reference, **dtypes, "parameters": {"normalize": True},
                "models": models}
    return _task_vector_config(plan, dtypes)


def recall_conditions(weights_by_part: dict, n_blocks: int, tensor_names: list[str],
                      model_type: str | None) -> list[dict] | list[float]:
    """One model's ``weight`` setting: filters for non-block tensors, then one value per block.

    Args:
        weights_by_part: ``{"embed": w, 0: w, 1: w, ..., "head": w}`` for this model.

    Filters are full tensor names. When one filter is a substring of another filtered name they are
    tried longest first: a name can only be a substring of a longer one, so every filtered tensor
    meets its own filter first. A block tensor whose name contains a filter (never seen in practice)
    gets a guard condition of its own with the block gradient.
    """
    gradient = [float(weights_by_part[b]) for b in range(n_blocks)]
    parts = layer_map(tensor_names, model_type)
    outside = {name: part for name, part in parts.items() if not isinstance(part, int)}
    guards = [name for name, part in parts.items() if isinstance(part, int)
              and any(f in name for f in outside)]
    order = sorted(outside, key=lambda name: outside[name] != EMBED)  # embeddings first, as in the model
    conditions = [(name, float(weights_by_part[outside[name]])) for name in order]
    conditions += [(name, gradient) for name in guards]
    if _shadowed([name for name, _ in conditions]):
        conditions.sort(key=lambda c: -len(c[0]))
    return [{"filter": name, "value": value} for name, value in conditions] + [{"value": gradient}]


def _shadowed(filters: list[str]) -> bool:
    """Would an earlier filter catch a later filter's tensor?"""
    return any(early in late for i, late in enumerate(filters) for early in filters[:i])


def _recall_models(plan, tensor_names: list[str], model_type: str | None) -> list[dict]:
    schedule = plan.schedule
    n_blocks = schedule.n_blocks
    models = []
    for column, name in enumerate(schedule.models):
        weights = {EMBED: schedule.row(EMBED)[column], HEAD: schedule.row(HEAD)[column]}
        weights.update({b: schedule.weight_for(b)[column] for b in range(n_blocks)})
        setting = recall_conditions(weights, n_blocks, tensor_names, model_type)
        models.append({"model": _path(plan, name), "parameters": {"weight": setting}})
    return models


def _task_vector_config(plan, dtypes: dict) -> dict:
    """task_arithmetic / ties / dare_linear: weighted task vectors against the base model."""
    if not plan.base:
        raise PlanError(f"{plan.method} needs a base model: give one model the role 'base'")
    params = plan.params
    per_model = {}
    if plan.method == "ties":
        per_model["density"] = float(params["density"])
    elif plan.method == "dare":
        per_model["density"] = 1.0 - float(params["drop_rate"])
    models = [{"model": _path(plan, name), "parameters": {"weight": weight, **per_model}}
              for name, weight in plan.model_weights().items()]
    # Spelled out rather than left to mergekit's per-method defaults.
    shared = {"lambda": float(params.get("lambda", 1.0)), "normalize": bool(params.get("normalize", False))}
    if plan.method in ("ties", "dare"):
        shared["rescale"] = bool(params.get("rescale", plan.method == "dare"))
    return {"merge_method": get_method(plan.method).mergekit_name, "base_model": _path(plan, plan.base), **dtypes,
            "parameters": shared, "models": models}


def output_dtype_name(plan) -> str:
    """The dtype the merge is saved in; for ``auto``, the reference's.

    A reference that mixes float dtypes under ``auto`` keeps them per tensor in recall_core, which
    mergekit's single ``out_dtype`` cannot express: float32 is announced then.
    """
    if plan.dtype != "auto":
        return str(plan.dtype or "float32")
    found = {_ST_NAMES[d] for d in _reference_checkpoint(plan).dtypes.values() if d in _ST_NAMES}
    return found.pop() if len(found) == 1 else "float32"


_ST_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def _path(plan, name: str) -> str:
    """The model's folder as an absolute path (a hub id stays as it is)."""
    path = plan.spec(name).path
    folder = Path(path).expanduser()
    return str(folder.resolve()) if folder.is_dir() else str(path)


def _reference_checkpoint(plan):
    from .models import open_model_checkpoint

    return open_model_checkpoint(plan.spec(plan.reference_name))

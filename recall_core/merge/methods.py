"""Merge methods: one tensor at a time, behind one interface.

Every method combines the same tensor of the merged models (and of the base, when it needs one) into
one float32 tensor. Semantics follow mergekit 0.1.5 so that the exported mergekit YAML reproduces a
merge (checked against mergekit/merge_methods/linear.py, generalized_task_arithmetic.py, registry.py
for the per-method defaults, and mergekit/sparsify.py; tests/test_merge.py runs mergekit's kernels):

- ``recall`` / ``average``: mergekit ``linear`` with ``normalize: true``: ``sum_i w_i t_i / sum_i w_i``.
- ``task_arithmetic``: ``base + lambda * sum_i w_i (t_i - base) [/ sum_i w_i if normalize]``;
  normalize is off by default (mergekit's default for this method).
- ``ties``: per model the task vector ``t_i - base`` trimmed to the ``density`` fraction of largest
  magnitudes (at least one element), times ``w_i``; sign election by the sign of the sum; the kept
  entries agreeing with the elected sign are summed and divided by the sum of the weights that
  agree there (normalize, on by default), times ``lambda``, added to the base.
- ``dare``: mergekit ``dare_linear``: each task vector keeps each entry with probability
  ``1 - drop_rate`` and, with ``rescale`` (default), is rescaled so that its L1 norm is unchanged
  (mergekit's rescale; about ``1 / (1 - drop_rate)``); then weighted sum as in task arithmetic.

A model whose weight is 0 contributes nothing in any method, so the engine does not even read it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

F32 = torch.float32
# Below these, mergekit treats a norm or a weight sum as zero.
_NORM_EPS = 1e-7
_DIVISOR_EPS = 1e-8

Kernel = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """A merge method.

    Attributes:
        name: the plan's method name.
        needs_base: whether ``merge`` needs the base tensor (task vectors).
        defaults: parameter defaults; ``MergePlan.params`` overrides them.
        mergekit_name: the mergekit ``merge_method`` with the same semantics.
        random: whether ``merge`` draws from the generator (DARE).
        elementwise: each output element depends only on the same element of the inputs, so the
            engine may merge a large tensor in flat chunks (TIES and DARE need whole tensors).
    """

    name: str
    needs_base: bool
    kernel: Kernel = field(repr=False)
    defaults: Mapping = field(default_factory=dict)
    mergekit_name: str = ""
    random: bool = False
    elementwise: bool = False
    description: str = ""

    def merge(self, tensors: Sequence[torch.Tensor], weights: torch.Tensor, base: torch.Tensor | None = None,
              params: Mapping | None = None, generator: torch.Generator | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
        """Merge one tensor.

        Args:
            tensors: one floating tensor per merged model, all of one shape ``S``. Items may be
                read from disk when accessed, so each is accessed once.
            weights: ``(n_models,)`` non-negative weights (any float dtype).
            base: the base model's tensor of shape ``S`` (methods with ``needs_base``).
            params: method parameters; missing ones take ``defaults``.
            generator: random source of ``random`` methods (seeded by the engine per tensor).
            out: optional float32 buffer of shape ``S`` for the result (``elementwise`` methods use it).

        Returns:
            float32 tensor of shape ``S`` (``out`` when given and used).
        """
        if len(tensors) != len(weights):
            raise ValueError(f"{len(tensors)} tensors but {len(weights)} weights")
        if self.needs_base and base is None:
            raise ValueError(f"{self.name} needs the base tensor")
        return self.kernel(tensors, [float(w) for w in weights], base, {**self.defaults, **(params or {})},
                           generator, out)


# ---- kernels: (tensors, weights as floats, base, params, generator, out) -> float32 tensor ----

def linear(tensors, weights, base, params, generator, out=None) -> torch.Tensor:
    """Weighted average ``sum_i w_i t_i / sum_i w_i`` (mergekit ``linear``, normalize on)."""
    first = True
    for tensor, weight in zip(tensors, weights):
        if first:  # into out or a new float32 tensor: the inputs stay untouched
            source = tensor if tensor.dtype == F32 else tensor.to(F32)
            out = torch.mul(source, weight) if out is None else torch.mul(source, weight, out=out)
            first = False
        else:
            out.add_(tensor, alpha=weight)
    if params.get("normalize", True):
        total = float(torch.tensor(weights, dtype=F32).sum())  # float32, as mergekit sums the weights
        if total != 1.0:  # dividing by exactly 1 changes nothing: skip the pass (schedule rows sum to 1)
            out.div_(total)
    return out


def task_arithmetic(tensors, weights, base, params, generator, out=None) -> torch.Tensor:
    """``base + lambda * sum_i w_i (t_i - base)``, optionally divided by ``sum_i w_i``."""
    base32 = base.to(F32)
    mixed = None
    for tensor, weight in zip(tensors, weights):
        if mixed is None:
            mixed = torch.sub(tensor, base32) if out is None else torch.sub(tensor, base32, out=out)
            mixed.mul_(weight)
        else:
            mixed.add_(torch.sub(tensor, base32), alpha=weight)
    return _finish(mixed, base32, sum(weights), params)


def dare(tensors, weights, base, params, generator, out=None) -> torch.Tensor:
    """mergekit ``dare_linear``: random drop of task-vector entries, L1 rescale, weighted sum."""
    base32 = base.to(F32)
    density = 1.0 - float(params["drop_rate"])
    mixed = None
    for tensor, weight in zip(tensors, weights):
        delta = torch.sub(tensor, base32)
        if density < 1:
            # the same draw as mergekit (bernoulli of a probability tensor), so a shared seed gives the same mask
            keep = torch.bernoulli(torch.full_like(delta, density), generator=generator)
            delta = _masked(delta, keep, bool(params.get("rescale", True)))
        mixed = delta.mul_(weight) if mixed is None else mixed.add_(delta, alpha=weight)
    return _finish(mixed, base32, sum(weights), params)


def ties(tensors, weights, base, params, generator, out=None) -> torch.Tensor:
    """TIES: magnitude trim per task vector, sign election by sum, disjoint (weighted) mean."""
    base32 = base.to(F32)
    density = float(params["density"])
    rescale = bool(params.get("rescale", False))
    deltas = []
    for tensor, weight in zip(tensors, weights):
        delta = torch.sub(tensor, base32)
        deltas.append(_magnitude_trim(delta, density, rescale).mul_(weight))
    total = deltas[0].clone()
    for delta in deltas[1:]:
        total.add_(delta)
    elected_positive = total >= 0  # a zero sum elects +
    del total
    mixed = torch.zeros_like(base32)
    divisor = torch.zeros_like(base32)
    for delta, weight in zip(deltas, weights):
        agrees = torch.where(elected_positive, delta > 0, delta < 0)  # sign 0 never agrees
        mixed.add_(delta * agrees)
        divisor.add_(agrees, alpha=weight)
    divisor[divisor == 0] = 1
    if params.get("normalize", True):
        mixed.div_(divisor)
    return _scale_and_add(mixed, base32, params)


def _finish(mixed, base32, total_weight, params) -> torch.Tensor:
    if params.get("normalize", False):
        mixed.div_(total_weight if abs(total_weight) >= _DIVISOR_EPS else 1.0)
    return _scale_and_add(mixed, base32, params)


def _scale_and_add(mixed, base32, params) -> torch.Tensor:
    scale = float(params.get("lambda", 1.0))
    if scale != 1:
        mixed.mul_(scale)
    return mixed.add_(base32)


def _masked(delta: torch.Tensor, keep: torch.Tensor, rescale: bool) -> torch.Tensor:
    """``delta * keep``; with ``rescale``, scaled back to the L1 norm of ``delta`` (unless either is ~0)."""
    masked = delta * keep
    if rescale:
        before, after = float(delta.abs().sum()), float(masked.abs().sum())
        if before >= _NORM_EPS and after >= _NORM_EPS:
            masked.mul_(before / after)
    return masked


def _magnitude_trim(delta: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (at least one)."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    # argsort like mergekit (not topk) so that ties between equal magnitudes break the same way
    order = torch.argsort(delta.abs().reshape(-1), descending=True)[:k]
    keep = torch.zeros(delta.numel(), dtype=delta.dtype)
    keep[order] = 1
    return _masked(delta, keep.reshape(delta.shape), rescale)


def _method(name, kernel, needs_base, mergekit_name, description, random=False, **defaults) -> MergeMethod:
    elementwise = kernel in (linear, task_arithmetic)
    return MergeMethod(name, needs_base, kernel, MappingProxyType(defaults), mergekit_name, random, elementwise,
                       description)


METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        _method("recall", linear, False, "linear",
                "RECALL: per-layer weighted average with the schedule's weights"),
        _method("average", linear, False, "linear",
                "uniform (or per-model weighted) average of all merged models", weights={}),
        _method("task_arithmetic", task_arithmetic, True, "task_arithmetic",
                "base + lambda * weighted sum of task vectors", weights={}, normalize=False, **{"lambda": 1.0}),
        _method("ties", ties, True, "ties",
                "TIES: trim task vectors to density, elect signs, disjoint mean", weights={}, density=0.5,
                normalize=True, rescale=False, **{"lambda": 1.0}),
        _method("dare", dare, True, "dare_linear",
                "DARE: drop task-vector entries at random, rescale, weighted sum", random=True, weights={},
                drop_rate=0.5, seed=0, normalize=False, rescale=True, **{"lambda": 1.0}),
    )
}


def get_method(name: str) -> MergeMethod:
    """The registered method of that name (``PlanError`` naming the choices otherwise)."""
    from ..errors import PlanError

    if name not in METHODS:
        raise PlanError(f"unknown merge method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["MergeMethod", "METHODS", "get_method", "linear", "task_arithmetic", "ties", "dare"]

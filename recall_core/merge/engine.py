"""The merge loop, shared by the in-memory merge and the streaming writer.

:class:`MergeRun` opens a validated plan's checkpoints, knows the output layout before merging
(names, shapes and dtypes come from the safetensors headers) and yields the merged tensors one at a
time, in the reference checkpoint's order. Two sinks consume it: :func:`merge_state_dicts` (a dict,
for previews and small models) and :func:`recall_core.merge.streaming.stream_merge` (shards on disk).

Per output tensor it reads that tensor of each merged model with a non-zero weight (plus the base's
when the method needs it), merges in float32 and converts once to the output dtype. Elementwise methods
(linear, task arithmetic) work through a large tensor in flat chunks held in buffers allocated once,
so memory does not grow with the largest tensor and no time goes to page-faulting fresh allocations;
TIES and DARE (global top-k, norm rescale) take whole tensors.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from math import prod

import numpy as np
import torch

from ..errors import IncompatibleModelsError, ModelLoadError
from ..models import resolve_model_path, tensor_parts
from ..plan import MergePlan, validate_plan
from ..threads import one_torch_thread
from .methods import METHODS
from .reader import ST_DTYPES, TensorReader

Progress = Callable[[float, str], None]
_OUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class OutputTensor:
    """One tensor of the merged model: name, shape, output dtype, and its schedule part."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    part: str | int  # "embed", block index, "head"

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


# Elementwise methods merge big tensors in flat chunks of this many elements, in reused buffers:
# memory stays bounded whatever the largest tensor, and reused pages cost no page faults. Small
# enough that a chunk's working set (~6 buffers) stays in cache, so a kernel's several elementwise
# passes do not each stream through RAM. Measured on 3 x 254 M bf16 params (2 cores): 2^22 -> 2^19
# halves the merge's CPU time when the ops run on one thread (see recall_core.threads).
CHUNK_ELEMENTS = 1 << 19  # 2 MiB per float32 buffer


class _LazyTensors(Sequence):
    """The float32 inputs of one merge call, read when indexed (so a kernel holds one or two at a time).

    Without buffers, item i is a new whole tensor. With ``start``/``buffers`` set, item i is the flat range ``[start, start + n)`` read into
    ``buffers[i % 2]``: it stays valid until item i + 2 is read (kernels read each item once).
    """

    def __init__(self, readers: list[TensorReader], name: str, start: int = 0, buffers=None, scratch=None):
        self._readers, self._name = readers, name
        self._start, self._buffers, self._scratch = start, buffers, scratch

    def __len__(self) -> int:
        return len(self._readers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        reader = self._readers[index]
        if self._buffers is None:
            return reader.get(self._name).to(torch.float32)
        return reader.read_float32(self._name, self._start, self._buffers[index % 2], self._scratch)


class _Buffers:
    """Reused flat buffers for chunked merging, allocated once at the size of the largest chunk.

    Output buffers (``acc``: float32 results, ``out``: converted results) come in pairs used in turn,
    so a piece stays valid while the next one is computed (the writer thread relies on it).
    """

    def __init__(self, n: int):
        self.inputs = [torch.empty(n, dtype=torch.float32) for _ in range(2)]
        self.base = torch.empty(n, dtype=torch.float32)
        self.scratch = torch.empty(n * 4, dtype=torch.uint8)  # raw bytes of non-float32 sources
        self.accs = [torch.empty(n, dtype=torch.float32) for _ in range(2)]
        self.outs = [torch.empty(n * 4, dtype=torch.uint8) for _ in range(2)]
        self.turn = 0

    def next_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (acc, out) pair for the next piece: not the pair of the previous piece."""
        self.turn ^= 1
        return self.accs[self.turn], self.outs[self.turn]

    @property
    def all(self) -> tuple[torch.Tensor, ...]:
        return (*self.inputs, self.base, self.scratch, *self.accs, *self.outs)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.all)

    def holds(self, tensor: torch.Tensor) -> bool:
        ptr = tensor.untyped_storage().data_ptr()
        return any(ptr == b.untyped_storage().data_ptr() for b in self.all)


class MergeRun:
    """One plan, validated and opened: its output layout and its merged tensors.

    Use as a context manager (it closes the files), or call :meth:`close`.

    Attributes:
        plan: the plan.
        checkpoints: ``{name: Checkpoint}`` of every model of the plan.
        layout: the output tensors, in the order :meth:`pieces` and :meth:`tensors` yield them.
    """

    def __init__(self, plan: MergePlan, checkpoints: dict | None = None):
        self.plan = plan
        self.checkpoints = validate_plan(plan, checkpoints)
        self.method = METHODS[plan.method]
        self.params = plan.params
        self.merged = plan.merged_models
        reference = self.checkpoints[plan.reference_name]
        self._parts = tensor_parts(reference)
        self.layout = [OutputTensor(name, tuple(reference.shapes[name]), self._out_dtype(reference, name),
                                    self._parts[name]) for name in reference.names]
        self._readers = {name: TensorReader(self.checkpoints[name]) for name in self.checkpoints}
        self._model_weights = np.array([plan.model_weights()[m] for m in self.merged]) if plan.method != "recall" else None
        self._schedule = None
        if plan.method == "recall":
            from ..schedule import validate

            self._schedule = validate(plan.schedule)  # rows sum to 1
        self.buffers: _Buffers | None = None

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.layout)

    def weights_for(self, part: str | int) -> np.ndarray:
        """``(n_merged,)`` weights of the merged models for a part (schedule row or baseline weights)."""
        if self._schedule is not None:
            return self._schedule.weight_for(part)
        return self._model_weights

    def pieces(self, progress: Progress | None = None) -> Iterator[tuple[OutputTensor, int, torch.Tensor]]:
        """The merge, as consecutive flat pieces: ``(OutputTensor, first element, 1-D piece)``.

        Tensors come in ``layout`` order; a tensor comes whole or, for elementwise methods, in chunks
        of ``CHUNK_ELEMENTS``. Pieces are in the output dtype. A piece may live in a reused buffer: it
        stays valid while the next piece is computed, until the one after is requested.
        """
        total, done = max(self.total_bytes, 1), 0
        with one_torch_thread() if self.method.elementwise else nullcontext():
            for info in self.layout:
                for start, piece in self._merge_pieces(info):
                    done += piece.numel() * piece.element_size()
                    if progress is not None:  # before the yield: a consumer stopping at the last piece sees 1.0
                        progress(done / total, f"merged {info.name}")
                    yield info, start, piece
                    del piece

    def tensors(self, progress: Progress | None = None) -> Iterator[tuple[OutputTensor, torch.Tensor]]:
        """Whole merged tensors ``(OutputTensor, tensor)`` in ``layout`` order, each a new tensor."""
        pieces = self.pieces(progress)
        for info, start, piece in pieces:
            yield info, self._assemble(info, start, piece, pieces)

    def merge_tensor(self, info: OutputTensor) -> torch.Tensor:
        """One merged tensor (a new tensor of ``info.shape`` and ``info.dtype``)."""
        pieces = ((info, start, piece) for start, piece in self._merge_pieces(info))
        _, start, piece = next(pieces)
        return self._assemble(info, start, piece, pieces)

    def _assemble(self, info: OutputTensor, start: int, piece: torch.Tensor, rest) -> torch.Tensor:
        """The whole tensor from its first piece and the following ones of ``rest``."""
        if piece.numel() == info.numel and not (self.buffers is not None and self.buffers.holds(piece)):
            return piece.reshape(info.shape)
        flat = torch.empty(info.numel, dtype=info.dtype)
        while True:
            flat[start:start + piece.numel()].copy_(piece)
            if start + piece.numel() == info.numel:
                return flat.reshape(info.shape)
            _, start, piece = next(rest)

    def _merge_pieces(self, info: OutputTensor) -> Iterator[tuple[int, torch.Tensor]]:
        if not self._is_float(info.name):
            yield 0, self._copy_buffer(info).reshape(-1)
            return
        weights = self.weights_for(info.part)
        used = [i for i, w in enumerate(weights) if w != 0]  # weight 0 contributes nothing: skip the read
        readers = [self._readers[self.merged[i]] for i in used]
        if not used:  # only possible for methods with a base (schedule rows and averages sum to > 0)
            yield 0, self._readers[self.plan.base].get(info.name).to(info.dtype).reshape(-1)
            return
        w = torch.as_tensor(weights[used])
        if not self.method.elementwise:
            base = self._readers[self.plan.base].get(info.name) if self.method.needs_base else None
            generator = self._generator(info.name) if self.method.random else None
            merged = self.method.merge(_LazyTensors(readers, info.name), w, base, self.params, generator)
            yield 0, merged.to(info.dtype).reshape(-1)
            return
        if info.numel == 0:
            yield 0, torch.empty(0, dtype=info.dtype)
            return
        buffers = self._buffers_for(info.numel)
        for start in range(0, info.numel, CHUNK_ELEMENTS):
            n = min(CHUNK_ELEMENTS, info.numel - start)
            inputs = _LazyTensors(readers, info.name, start, [b[:n] for b in buffers.inputs], buffers.scratch)
            base = None
            if self.method.needs_base:
                base = self._readers[self.plan.base].read_float32(info.name, start, buffers.base[:n], buffers.scratch)
            acc, out = buffers.next_output()
            merged = self.method.merge(inputs, w, base, self.params, None, out=acc[:n])
            if info.dtype != torch.float32:
                merged = out[:n * info.dtype.itemsize].view(info.dtype).copy_(merged)
            yield start, merged

    def _buffers_for(self, numel: int) -> _Buffers:
        if self.buffers is None:  # once, sized for the largest chunk of the whole merge
            largest = max([t.numel for t in self.layout if t.dtype.is_floating_point] + [numel])
            self.buffers = _Buffers(min(largest, CHUNK_ELEMENTS))
        return self.buffers

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()

    def __enter__(self) -> "MergeRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _out_dtype(self, reference, name: str) -> torch.dtype:
        source = ST_DTYPES.get(reference.dtypes[name])
        if source is None:
            raise ModelLoadError(f"tensor {name} has unsupported dtype {reference.dtypes[name]}")
        if not source.is_floating_point or self.plan.dtype == "auto":
            return source
        return _OUT_DTYPES[self.plan.dtype]

    def _is_float(self, name: str) -> bool:
        return all(ST_DTYPES.get(ckpt.dtypes[name], torch.int8).is_floating_point for ckpt in self.checkpoints.values())

    def _copy_buffer(self, info: OutputTensor) -> torch.Tensor:
        """Integer/bool tensors are not merged: copied when every model agrees (as mergekit does)."""
        names = self.merged + ([self.plan.base] if self.method.needs_base else [])
        first = self._readers[names[0]].get(info.name)
        for other in names[1:]:
            tensor = self._readers[other].get(info.name)
            if tensor.dtype != first.dtype or not torch.equal(tensor, first):
                raise IncompatibleModelsError(
                    f"tensor {info.name} is not floating point and differs between {names[0]} and {other}; "
                    "it cannot be merged")
        return first.contiguous()

    def _generator(self, name: str) -> torch.Generator:
        """A generator seeded by (seed, tensor name): reproducible and independent of tensor order."""
        key = f"{int(self.params.get('seed', 0))}:{name}".encode()
        return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)


def merge_state_dicts(plan: MergePlan, progress: Progress | None = None,
                      checkpoints: dict | None = None) -> dict[str, torch.Tensor]:
    """The merged weights in memory: ``{name: tensor}`` in the output dtype of the plan.

    For previews and small models; use :func:`stream_merge` to write large ones to disk.
    """
    with MergeRun(plan, checkpoints) as run:
        return {info.name: tensor for info, tensor in run.tensors(progress)}


def merged_model(plan: MergePlan, progress: Progress | None = None, checkpoints: dict | None = None,
                 dtype: torch.dtype | None = torch.float32):
    """The merged model, loaded: a transformers causal LM in eval mode on CPU.

    The architecture and config are the reference model's. ``dtype`` (float32 by default, like
    :func:`recall_core.models.load_model` on CPU) is applied after merging, so a bfloat16 plan
    gives the same values its exported folder loads to.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    state = merge_state_dicts(plan, progress, checkpoints)
    reference = plan.spec(plan.reference_name)
    folder = resolve_model_path(reference.path)
    try:
        config = AutoConfig.from_pretrained(folder)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not build the merged model from {folder}/config.json: {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    loaded = {t.data_ptr() for n, t in model.state_dict().items() if n in state}
    untied = [n for n in missing if model.state_dict()[n].data_ptr() not in loaded]
    if untied or unexpected:
        name = (untied or unexpected)[0]
        raise ModelLoadError(f"merged weights do not fit the {config.model_type} model: tensor {name} "
                             f"{'has no merged value' if untied else 'is not a parameter of the model'}")
    return model.eval()


__all__ = ["MergeRun", "OutputTensor", "merge_state_dicts", "merged_model"]

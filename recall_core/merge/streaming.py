"""Stream a merge to safetensors shards, one tensor at a time.

The output layout (names, shapes, dtypes) is known from the input headers before anything is merged,
so each shard's header is written first and every merged tensor's bytes are appended as soon as the
tensor exists. Peak memory is a few tensors (the inputs of one output tensor and its float32
accumulator), whatever the model and shard sizes.

Files follow the Hugging Face layout: ``model.safetensors`` for one shard, otherwise
``model-00001-of-0000N.safetensors`` ... plus ``model.safetensors.index.json``
(``{"metadata": {"total_size": bytes}, "weight_map": {name: file}}``).
"""
from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..errors import ExportError
from ..plan import MergePlan
from .engine import MergeRun, OutputTensor, Progress
from .reader import TORCH_TO_ST

DEFAULT_SHARD_BYTES = 2 * 1024**3
INDEX_NAME = "model.safetensors.index.json"


def plan_shards(layout: list[OutputTensor], shard_bytes: int) -> list[list[OutputTensor]]:
    """Group tensors into shards in order; a shard closes before it would exceed ``shard_bytes``.

    A tensor larger than ``shard_bytes`` gets a shard of its own.
    """
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for info in layout:
        if shards[-1] and size + info.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += info.nbytes
    return shards


def shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def safetensors_header(tensors: list[OutputTensor]) -> bytes:
    """The 8-byte length + JSON header of a safetensors file holding ``tensors`` in this order."""
    header, offset = {}, 0
    for info in tensors:
        header[info.name] = {"dtype": TORCH_TO_ST[info.dtype], "shape": list(info.shape),
                             "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data start stays 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(raw)) + raw


def write_tensor(fh, tensor: torch.Tensor) -> int:
    """Append a contiguous tensor's raw bytes (one write, no copy); returns the byte count."""
    if tensor.numel() == 0:
        return 0
    raw = tensor.contiguous().reshape(-1).view(torch.uint8)  # bf16 has no numpy dtype; bytes do
    return fh.write(raw.numpy())


class _ShardWriter:
    """Writes pieces into their shard files on one background thread, in order.

    At most one write is in flight: ``write`` waits for the previous one, so the merge computes the
    next piece while this one is written (pieces stay valid that long, see ``MergeRun.pieces``).
    """

    def __init__(self, paths: list[Path], headers: list[bytes]):
        self.paths, self.headers = paths, headers
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recall-shard-writer")
        self._pending = None
        self._file, self._index = None, -1

    def write(self, shard: int, piece: torch.Tensor) -> None:
        self._wait()
        self._pending = self._pool.submit(self._write, shard, piece)

    def _write(self, shard: int, piece: torch.Tensor) -> None:
        if shard != self._index:
            self._close_file()
            self._index = shard
            self._file = open(self.paths[shard], "wb")
            self._file.write(self.headers[shard])
        write_tensor(self._file, piece)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                pending.result()
            except OSError as exc:
                raise ExportError(f"cannot write {self.paths[max(self._index, 0)]}: {exc.strerror}") from None

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "_ShardWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self._wait()
            elif self._pending is not None:
                self._pending.exception()  # let the in-flight write end before closing its file
        finally:
            self._pool.shutdown(wait=True)
            self._close_file()


def stream_merge(plan: MergePlan, out_dir: str | os.PathLike, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 progress: Progress | None = None, checkpoints: dict | None = None) -> list[Path]:
    """Merge ``plan`` into safetensors shards under ``out_dir``; return the files written.

    Writes only weight files (and the index when there are several shards); the caller adds config,
    tokenizer and card, and handles atomicity (``out_dir`` is typically a temporary folder).

    Raises:
        PlanError, ScheduleError, IncompatibleModelsError: the plan does not fit its models.
        ExportError: ``out_dir`` cannot be written.
    """
    if shard_bytes <= 0:
        raise ExportError(f"shard size must be positive, not {shard_bytes}")
    out_dir = Path(out_dir)
    with MergeRun(plan, checkpoints) as run:
        shards = plan_shards(run.layout, shard_bytes)
        names = shard_names(len(shards))
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create {out_dir}: {exc.strerror}") from None
        shard_of = {info.name: i for i, shard in enumerate(shards) for info in shard}
        headers = [safetensors_header(shard) for shard in shards]
        paths = [out_dir / name for name in names]
        with _ShardWriter(paths, headers) as writer:
            for info, _, piece in run.pieces(progress):
                if piece.dtype != info.dtype:
                    raise RuntimeError(f"merge produced {piece.dtype} for {info.name}, expected {info.dtype}")
                writer.write(shard_of[info.name], piece)
                del piece
        for path, header, shard in zip(paths, headers, shards):
            expected = len(header) + sum(info.nbytes for info in shard)
            if path.stat().st_size != expected:  # a bug, not a user error: never hand out a corrupt shard
                raise RuntimeError(f"{path.name} has {path.stat().st_size} bytes, expected {expected}")
        written = list(paths)
        if len(shards) > 1:
            index = {"metadata": {"total_size": run.total_bytes},
                     "weight_map": {info.name: name for shard, name in zip(shards, names) for info in shard}}
            (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
            written.append(out_dir / INDEX_NAME)
    return written


__all__ = ["stream_merge", "plan_shards", "shard_names", "safetensors_header", "write_tensor", "DEFAULT_SHARD_BYTES"]

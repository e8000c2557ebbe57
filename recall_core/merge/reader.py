"""Read single tensors of a safetensors checkpoint with plain positioned reads.

``safe_open`` memory-maps every file: each page it touches stays in the process's resident set until
the file is closed, so merging three 10 GB models through it shows ~30 GB of RSS even though only a few
tensors are live. Here a tensor is read with ``os.preadv`` straight into a fresh tensor: the page cache
still speeds up repeated reads, but resident memory is only the tensors the merge holds.
Pickle checkpoints (allowed explicitly) go through :meth:`Checkpoint.get`.
"""
from __future__ import annotations

import os
import struct
import sys

import torch

from ..checkpoint import Checkpoint, read_safetensors_header
from ..errors import ModelLoadError

# safetensors dtype names <-> torch dtypes
ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
TORCH_TO_ST = {v: k for k, v in ST_DTYPES.items()}

# Linux returns at most this many bytes per read call.
_MAX_READ = 0x7FFFF000


class TensorReader:
    """``get(name) -> torch.Tensor`` for one checkpoint; a fresh, writable tensor on each call."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self._where: dict[str, tuple[str, int, int]] = {}  # name -> (file, start, end) in bytes
        self._fds: dict[str, int] = {}
        if checkpoint.is_pickle or sys.byteorder != "little":
            return
        for file in sorted(set(checkpoint.files.values())):
            with open(file, "rb") as fh:
                (header_len,) = struct.unpack("<Q", fh.read(8))
            for name, info in read_safetensors_header(file).items():
                start, end = info["data_offsets"]
                self._where[name] = (str(file), 8 + header_len + start, 8 + header_len + end)

    def get(self, name: str) -> torch.Tensor:
        if name not in self._where:
            return self.checkpoint.get(name)
        file, start, end = self._where[name]
        dtype = ST_DTYPES.get(self.checkpoint.dtypes[name])
        if dtype is None:
            raise ModelLoadError(f"{file}: tensor {name} has unsupported dtype {self.checkpoint.dtypes[name]}")
        raw = torch.empty(end - start, dtype=torch.uint8)
        if end > start:
            self._read_into(file, start, raw.numpy())
        return raw.view(dtype).reshape(self.checkpoint.shapes[name])

    def read_float32(self, name: str, start: int, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
        """Elements ``[start, start + len(out))`` of the flattened tensor, as float32, into ``out``.

        ``out`` is a 1-D float32 buffer; ``scratch`` a uint8 buffer of at least ``len(out) * itemsize``
        bytes for non-float32 sources. Reusing both across calls avoids a page fault per fresh page.
        """
        count = out.numel()
        if name not in self._where:
            return out.copy_(self.checkpoint.get(name).reshape(-1)[start:start + count])
        file, begin, _ = self._where[name]
        dtype = ST_DTYPES[self.checkpoint.dtypes[name]]
        if dtype == torch.float32:
            self._read_into(file, begin + start * 4, out.view(torch.uint8).numpy())
            return out
        raw = scratch[:count * dtype.itemsize]
        self._read_into(file, begin + start * dtype.itemsize, raw.numpy())
        return out.copy_(raw.view(dtype))

    def _read_into(self, file: str, offset: int, buffer) -> None:
        if not hasattr(os, "preadv"):  # Windows: plain seek + readinto
            with open(file, "rb") as fh:
                fh.seek(offset)
                if fh.readinto(buffer) != len(memoryview(buffer).cast("B")):
                    raise ModelLoadError(f"{file}: file ends inside a tensor (truncated download?)")
            return
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:done + _MAX_READ]], offset + done)
            if n <= 0:
                raise ModelLoadError(f"{file}: file ends inside a tensor (truncated download?)")
            done += n

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        self.close()

"""Lazy access to the weight files of a Hugging Face model folder.

A :class:`Checkpoint` reads the safetensors headers only; a tensor is read from disk when asked for,
so a merge or a compatibility check never holds a whole model in memory. Pickle checkpoints
(``pytorch_model*.bin``) are refused unless the caller allows them.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelLoadError

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"

# Bytes of each file that go into the fingerprint besides the header and size: enough to tell
# two fine-tunes apart without reading a 70B model.
_FINGERPRINT_SAMPLE = 1 << 20


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: ``{name: {"dtype", "shape", "data_offsets"}}``."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelLoadError(f"{path}: not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100 * 1024 * 1024:
            raise ModelLoadError(f"{path}: not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(fh.read(size))
        except ValueError as exc:
            raise ModelLoadError(f"{path}: corrupt safetensors header ({exc})") from None
    header.pop("__metadata__", None)
    return header


@dataclass
class Checkpoint:
    """The weights of one model folder, read lazily.

    Attributes:
        path: the model folder.
        files: tensor name -> file that holds it.
        shapes: tensor name -> shape.
        dtypes: tensor name -> safetensors dtype string (``"F32"``, ``"BF16"``, ...).
        config: ``config.json`` as a dict (empty when missing).
    """

    path: Path
    files: dict[str, Path]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    config: dict
    is_pickle: bool = False
    _handles: dict = field(default_factory=dict, repr=False)
    _pickle_state: dict | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    def get(self, name: str):
        """One tensor as a ``torch.Tensor`` (read from disk now)."""
        if self.is_pickle:
            return self._load_pickle()[name]
        file = self.files[name]
        handle = self._handles.get(file)
        if handle is None:
            from safetensors import safe_open

            handle = safe_open(str(file), framework="pt")
            self._handles[file] = handle
        return handle.get_tensor(name)

    def nbytes(self, name: str) -> int:
        size = 1
        for dim in self.shapes[name]:
            size *= dim
        return size * _DTYPE_BYTES.get(self.dtypes[name], 4)

    def close(self) -> None:
        self._handles.clear()
        self._pickle_state = None

    def fingerprint(self) -> str:
        """A short hash that changes when the weights change.

        It hashes each weight file's size, header and first and last MiB, so that it is cheap for
        any model size; two checkpoints that differ only inside the middle of a tensor of a file
        larger than 2 MiB would collide (fine-tunes change every tensor).
        """
        digest = hashlib.sha256()
        for file in sorted(set(self.files.values())):
            size = file.stat().st_size
            digest.update(f"{file.name}:{size}".encode())
            with open(file, "rb") as fh:
                digest.update(fh.read(_FINGERPRINT_SAMPLE))
                if size > 2 * _FINGERPRINT_SAMPLE:
                    fh.seek(size - _FINGERPRINT_SAMPLE)
                    digest.update(fh.read())
        digest.update(json.dumps(self.config, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]

    def _load_pickle(self) -> dict:
        if self._pickle_state is None:
            import torch

            state = {}
            for file in sorted(set(self.files.values())):
                state.update(torch.load(file, map_location="cpu", weights_only=True))
            self._pickle_state = state
        return self._pickle_state


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def open_checkpoint(path: str | os.PathLike, allow_pickle: bool = False) -> Checkpoint:
    """Open a local model folder's weights without loading them.

    Raises:
        ModelLoadError: no folder, no weights, or only pickle weights while ``allow_pickle`` is off.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    config = {}
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))

    safetensor_files = _safetensor_files(folder)
    if safetensor_files:
        files, shapes, dtypes = {}, {}, {}
        for file in safetensor_files:
            for name, info in read_safetensors_header(file).items():
                files[name] = file
                shapes[name] = tuple(info["shape"])
                dtypes[name] = info["dtype"]
        return Checkpoint(folder, files, shapes, dtypes, config)

    pickle_files = _pickle_files(folder)
    if pickle_files:
        if not allow_pickle:
            raise ModelLoadError(
                f"{folder} holds only pickle weights ({pickle_files[0].name}); pickle can run code when loaded. "
                "Convert it to safetensors, or allow pickle explicitly (it is then loaded with weights_only=True)."
            )
        import torch

        files, shapes, dtypes = {}, {}, {}
        for file in pickle_files:
            state = torch.load(file, map_location="cpu", weights_only=True)
            for name, tensor in state.items():
                files[name] = file
                shapes[name] = tuple(tensor.shape)
                dtypes[name] = _torch_dtype_name(tensor.dtype)
        return Checkpoint(folder, files, shapes, dtypes, config, is_pickle=True)

    raise ModelLoadError(f"{folder} has no weights (no *.safetensors or pytorch_model*.bin)")


def _safetensor_files(folder: Path) -> list[Path]:
    index = folder / SAFE_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({folder / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{folder}: shard listed in {SAFE_INDEX} is missing: {missing[0]}")
        return files
    if (folder / SAFE_SINGLE).is_file():
        return [folder / SAFE_SINGLE]
    return sorted(folder.glob("*.safetensors"))


def _pickle_files(folder: Path) -> list[Path]:
    index = folder / PICKLE_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted({folder / name for name in weight_map.values()})
    if (folder / PICKLE_SINGLE).is_file():
        return [folder / PICKLE_SINGLE]
    return []


def _torch_dtype_name(dtype) -> str:
    import torch

    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
            torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}.get(dtype, str(dtype))

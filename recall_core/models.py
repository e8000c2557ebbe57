"""Load, describe and compare Hugging Face causal language models.

A model is named by a local folder or a hub id. Folders are used as they are; hub ids are resolved
through the local Hugging Face cache (and downloaded only when the hub is reachable and offline mode
is off). ``trust_remote_code`` is off unless the caller turns it on.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint, open_checkpoint
from .errors import IncompatibleModelsError, ModelLoadError
from .layers import EMBED, HEAD, layer_map

ROLES = ("base", "expert", "reference")

# "org/name" or "name": anything else that is not a folder is a wrong path, not a hub id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


@dataclass
class ModelSpec:
    """A model the user named: a short display name, a folder or hub id, and a role."""

    name: str
    path: str
    role: str = "expert"

    def __post_init__(self):
        if self.role not in ROLES:
            raise ModelLoadError(f"model {self.name!r}: role must be one of {', '.join(ROLES)}, not {self.role!r}")


@dataclass
class ModelInfo:
    """What the summary table shows for one model."""

    name: str
    path: str
    architecture: str
    model_type: str
    n_blocks: int
    hidden_size: int
    n_parameters: int
    dtype: str

    def as_row(self) -> dict:
        return {
            "model": self.name,
            "architecture": self.architecture,
            "blocks": self.n_blocks,
            "hidden size": self.hidden_size,
            "parameters": f"{self.n_parameters / 1e6:.2f} M",
            "dtype": self.dtype,
        }


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def resolve_model_path(name_or_path: str) -> Path:
    """A local folder for a folder path or a hub id.

    Raises:
        ModelLoadError: the folder does not exist and the hub id is not cached (offline) or not found.
    """
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return folder.resolve()
    if not _HUB_ID.match(name_or_path):
        raise ModelLoadError(f"model folder not found: {name_or_path}")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=patterns, local_files_only=is_offline()))
    except Exception as exc:  # the hub raises many types; the user needs one clear line
        if is_offline():
            raise ModelLoadError(
                f"{name_or_path!r} is not a local folder and is not in the Hugging Face cache "
                "(offline mode: HF_HUB_OFFLINE=1). Download it first or give a folder path."
            ) from None
        raise ModelLoadError(f"could not fetch {name_or_path!r} from the Hugging Face hub: {type(exc).__name__}: {exc}") from None


def open_model_checkpoint(spec_or_path, allow_pickle: bool = False) -> Checkpoint:
    """The lazy :class:`Checkpoint` of a :class:`ModelSpec`, folder or hub id."""
    path = spec_or_path.path if isinstance(spec_or_path, ModelSpec) else str(spec_or_path)
    return open_checkpoint(resolve_model_path(path), allow_pickle=allow_pickle)


def preload_transformers() -> None:
    """Import the transformers classes recall_core uses, in the calling thread.

    transformers' lazy module is not safe to import from two threads at once (one of them fails with
    "cannot import name ..."); apps that start worker threads call this first.
    """
    from transformers import (  # noqa: F401
        AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast)


def load_model(path, dtype=None, device: str = "cpu", trust_remote_code: bool = False, allow_pickle: bool = False):
    """Load a causal LM for inference (``eval()`` mode).

    Args:
        path: folder or hub id.
        dtype: a torch dtype, or None for float32 (CPU) / the checkpoint's dtype (GPU).
        allow_pickle: permit ``pytorch_model.bin`` (loaded with ``weights_only=True``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    folder = resolve_model_path(str(path))
    checkpoint = open_checkpoint(folder, allow_pickle=allow_pickle)  # refuses pickle early, with a message
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=not checkpoint.is_pickle,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load {folder}: {exc}") from None
    return model.to(device).eval()


def load_tokenizer(path, trust_remote_code: bool = False):
    """The tokenizer saved with a model, with a pad token set (EOS when the tokenizer has none)."""
    from transformers import AutoTokenizer

    folder = resolve_model_path(str(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"no usable tokenizer in {folder}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def count_blocks(config: dict) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if key in config:
            return int(config[key])
    return 0


def hidden_size(config: dict) -> int:
    for key in ("hidden_size", "n_embd", "d_model"):
        if key in config:
            return int(config[key])
    return 0


def describe(name: str, checkpoint: Checkpoint) -> ModelInfo:
    """Architecture, blocks, hidden size, parameter count and dtype, from headers and config only."""
    config = checkpoint.config
    n_params = 0
    for shape in checkpoint.shapes.values():
        size = 1
        for dim in shape:
            size *= dim
        n_params += size
    dtypes = sorted({checkpoint.dtypes[n] for n in checkpoint.names})
    return ModelInfo(
        name=name,
        path=str(checkpoint.path),
        architecture=(config.get("architectures") or ["?"])[0],
        model_type=config.get("model_type", "?"),
        n_blocks=count_blocks(config),
        hidden_size=hidden_size(config),
        n_parameters=n_params,
        dtype="/".join(_DTYPE_NAMES.get(d, d) for d in dtypes),
    )


@dataclass
class CompatibilityReport:
    ok: bool
    message: str


def check_compatibility(checkpoints: dict[str, Checkpoint]) -> CompatibilityReport:
    """Do all models share parameter names and shapes? Names the first mismatch.

    Tensors that one model ties to another (``lm_head.weight`` absent when embeddings are tied) count
    as missing: merging them would silently differ between models.
    """
    if len(checkpoints) < 2:
        return CompatibilityReport(len(checkpoints) == 1, "load at least two models to compare them")
    (first_name, first), *others = checkpoints.items()
    for other_name, other in others:
        if first.model_type != other.model_type:
            return CompatibilityReport(
                False, f"{other_name} is {other.model_type!r} but {first_name} is {first.model_type!r}"
            )
        for name in first.names:
            if name not in other.shapes:
                return CompatibilityReport(False, f"tensor {name} is in {first_name} but missing from {other_name}")
            if first.shapes[name] != other.shapes[name]:
                return CompatibilityReport(
                    False,
                    f"tensor {name} has shape {list(first.shapes[name])} in {first_name} "
                    f"but {list(other.shapes[name])} in {other_name}",
                )
        extra = [n for n in other.names if n not in first.shapes]
        if extra:
            return CompatibilityReport(False, f"tensor {extra[0]} is in {other_name} but missing from {first_name}")
    n_blocks = count_blocks(first.config)
    return CompatibilityReport(
        True, f"compatible: {len(checkpoints)} models, {len(first.names)} tensors each, {n_blocks} blocks"
    )


def require_compatible(checkpoints: dict[str, Checkpoint]) -> None:
    report = check_compatibility(checkpoints)
    if not report.ok:
        raise IncompatibleModelsError(f"incompatible models: {report.message}")


def tensor_parts(checkpoint: Checkpoint) -> dict[str, str | int]:
    """Every tensor name -> ``"embed"``, block index or ``"head"``."""
    parts = layer_map(checkpoint.names, checkpoint.model_type)
    n_blocks = count_blocks(checkpoint.config)
    bad = [n for n, p in parts.items() if isinstance(p, int) and n_blocks and p >= n_blocks]
    if bad:
        raise ModelLoadError(f"{checkpoint.path}: tensor {bad[0]} names a block beyond the {n_blocks} in config.json")
    return parts


__all__ = [
    "EMBED", "HEAD", "ModelSpec", "ModelInfo", "CompatibilityReport", "resolve_model_path", "open_model_checkpoint",
    "load_model", "load_tokenizer", "describe", "check_compatibility", "require_compatible", "tensor_parts",
    "count_blocks", "hidden_size", "is_offline", "preload_transformers",
]

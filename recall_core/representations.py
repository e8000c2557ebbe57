"""Pooled hidden states per layer, with a disk cache.

For a model with B blocks, ``output_hidden_states=True`` gives B + 1 hidden states per text: index 0 is
the embedding output, index l the output of block l - 1. Each is pooled over the text's real tokens
(padding masked) to one vector, so one model gives an array ``(B + 1, n_texts, hidden)``.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import RecallError
from .models import ModelSpec, load_model, load_tokenizer, open_model_checkpoint
from .probes import ProbeSet

POOLINGS = ("mean", "mean_skip_first", "last")
CACHE_VERSION = "reps-v1"


@dataclass
class Representations:
    """Pooled hidden states of one model on one probe set.

    pooled: ``(n_layers, n_texts, hidden)`` float32, n_layers = blocks + 1.
    """

    model: str
    pooled: np.ndarray
    pooling: str
    fingerprint: str
    probe_hash: str
    from_cache: bool = False
    seconds: float = 0.0

    @property
    def n_layers(self) -> int:
        return self.pooled.shape[0]


def pool(hidden: "torch.Tensor", mask: "torch.Tensor", pooling: str = "mean") -> "torch.Tensor":
    """Pool ``hidden (n_layers, batch, seq, hidden)`` over real tokens -> ``(n_layers, batch, hidden)``.

    mask: ``(batch, seq)`` 1 for real tokens. Works for left or right padding.
    """
    import torch

    mask = mask.to(hidden.dtype)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)  # index of the last real token
        return hidden[:, torch.arange(hidden.shape[1]), last]
    if pooling == "mean_skip_first":
        first = (mask.cumsum(dim=1) == 1) & (mask > 0)
        # keep the first token when it is the only one, so no text pools to nothing
        only_one = mask.sum(dim=1, keepdim=True) <= 1
        mask = mask * ~(first & ~only_one)
    elif pooling != "mean":
        raise RecallError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    weights = mask / mask.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.einsum("lbsh,bs->lbh", hidden, weights)


def extract(model, tokenizer, texts: list[str], pooling: str = "mean", batch_size: int = 16,
            max_length: int = 256, progress=None) -> np.ndarray:
    """Pooled hidden states ``(n_layers, n_texts, hidden)`` float32 of a loaded model.

    Texts are sorted by length so batches carry little padding; the result is in input order.
    """
    import torch

    if pooling not in POOLINGS:
        raise RecallError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if not texts:
        raise RecallError("no probe texts to extract representations from")
    device = next(model.parameters()).device
    backbone = getattr(model, "base_model", model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = None
    done = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                              max_length=max_length).to(device)
            # the base model skips the LM head: its logits are not needed here
            outputs = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=True, use_cache=False)
            hidden = torch.stack(outputs.hidden_states)  # (L, b, s, h)
            pooled = pool(hidden.float(), batch["attention_mask"], pooling).cpu().numpy()
            if out is None:
                out = np.empty((pooled.shape[0], len(texts), pooled.shape[2]), dtype=np.float32)
            out[:, idx] = pooled
            done += len(idx)
            if progress:
                progress(done / len(texts), f"{done}/{len(texts)} texts")
    return out


def default_cache_dir() -> Path:
    """``$RECALL_CACHE_DIR``, else ``$XDG_CACHE_HOME/recall-studio``, else ``~/.cache/recall-studio``."""
    if os.environ.get("RECALL_CACHE_DIR"):
        return Path(os.environ["RECALL_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "recall-studio"


def cache_key(fingerprint: str, probe_hash: str, pooling: str, max_length: int) -> str:
    raw = json.dumps([CACHE_VERSION, fingerprint, probe_hash, pooling, max_length])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def extract_cached(spec: ModelSpec, probes: ProbeSet, pooling: str = "mean", cache_dir=None,
                   batch_size: int = 16, max_length: int = 256, device: str = "cpu", dtype=None,
                   trust_remote_code: bool = False, progress=None) -> Representations:
    """Representations of one model, from the disk cache when the same inputs were seen before.

    The cache key is (weights fingerprint, probe-set hash, pooling, max_length). The model is loaded,
    used and freed here, so callers that loop over models hold one model at a time.
    """
    started = time.perf_counter()
    checkpoint = open_model_checkpoint(spec)
    fingerprint = checkpoint.fingerprint()
    probe_hash = probes.content_hash()
    folder = Path(cache_dir) if cache_dir else default_cache_dir() / "representations"
    path = folder / f"{cache_key(fingerprint, probe_hash, pooling, max_length)}.npy"
    if path.is_file():
        pooled = np.load(path)
        if progress:
            progress(1.0, f"{spec.name}: from cache")
        return Representations(spec.name, pooled, pooling, fingerprint, probe_hash, True,
                               time.perf_counter() - started)

    if progress:
        progress(0.0, f"loading {spec.name}")
    model = load_model(checkpoint.path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(checkpoint.path, trust_remote_code=trust_remote_code)
    try:
        pooled = extract(model, tokenizer, probes.texts, pooling, batch_size, max_length,
                         progress=(lambda f, m: progress(f, f"{spec.name}: {m}")) if progress else None)
    finally:
        del model
        gc.collect()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, pooled)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return Representations(spec.name, pooled, pooling, fingerprint, probe_hash, False, time.perf_counter() - started)

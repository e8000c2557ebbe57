"""Per-layer similarity between models' pooled representations.

All functions take pooled representations ``(n_layers, n_samples, hidden)`` per model, computed on the
same samples in the same order (paired), and return plain arrays.

- ``rbf``: s = mean_x exp(-||a(x) - b(x)||^2 / (2 sigma_l^2)), sigma_l per layer (median pairwise distance).
- ``cka``: linear CKA over the sample axis.
- ``cosine``: mean paired cosine similarity.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import RecallError

METRICS = ("rbf", "cka", "cosine")
SCALINGS = ("none", "standardize", "l2")
SIGMA_MODES = ("median", "mean", "unit")


@dataclass
class SimilarityResult:
    """Similarity of each model to the reference per hidden-state index.

    values: ``(n_models, n_layers)``; the reference's row is 1.
    sigma: ``(n_layers,)`` RBF bandwidths, or None for other metrics.
    """

    metric: str
    models: list[str]
    reference: str
    values: np.ndarray
    sigma: np.ndarray | None = None
    settings: dict = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return ["embed"] + [f"block_{i}" for i in range(self.values.shape[1] - 1)]

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "reference": self.reference,
            "models": list(self.models),
            "layers": self.layer_names,
            "values": np.round(self.values, 6).tolist(),
            "sigma": None if self.sigma is None else np.round(self.sigma, 6).tolist(),
            "settings": self.settings,
        }


def scale_features(x: np.ndarray, scaling: str, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Scale ``x (n, hidden)``: ``none``; ``standardize`` per dimension (with the given (mean, std)); ``l2`` rows."""
    if scaling == "none":
        return x
    if scaling == "l2":
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    if scaling == "standardize":
        mean, std = stats if stats is not None else (x.mean(axis=0), x.std(axis=0))
        return (x - mean) / np.where(std > 1e-12, std, 1.0)
    raise RecallError(f"scaling must be one of {', '.join(SCALINGS)}, not {scaling!r}")


def median_pairwise_distance(x: np.ndarray) -> float:
    """Median Euclidean distance between all distinct rows of ``x (n, hidden)``."""
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    iu = np.triu_indices(len(x), k=1)
    return float(np.median(np.sqrt(d2[iu]))) if len(iu[0]) else 1.0


def rbf_similarity(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    """Mean over paired rows of exp(-||a - b||^2 / (2 sigma^2)); a, b ``(n, hidden)``."""
    d2 = np.sum((a.astype(np.float64) - b) ** 2, axis=1)
    return float(np.mean(np.exp(-d2 / (2.0 * sigma * sigma))))


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA between ``a (n, d1)`` and ``b (n, d2)`` over the sample axis (1 = same up to rotation and scale)."""
    a = a.astype(np.float64) - a.mean(axis=0)
    b = b.astype(np.float64) - b.mean(axis=0)
    cross = np.linalg.norm(a.T @ b) ** 2
    norm = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / norm) if norm > 0 else 0.0


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of paired rows of ``a`` and ``b`` ``(n, hidden)``."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)))


def _check(pooled: dict[str, np.ndarray]) -> tuple[int, int]:
    shapes = {name: x.shape for name, x in pooled.items()}
    first = next(iter(shapes.values()))
    for name, shape in shapes.items():
        if shape != first:
            raise RecallError(f"representations of {name} have shape {shape}, expected {first} (same layers and samples)")
    return first[0], first[1]


def _prepare(pooled: dict[str, np.ndarray], layer: int, scaling: str) -> dict[str, np.ndarray]:
    """Scaled ``(n, hidden)`` float64 matrices of one layer; standardisation statistics are shared by all models."""
    mats = {name: x[layer].astype(np.float64) for name, x in pooled.items()}
    stats = None
    if scaling == "standardize":
        stacked = np.concatenate(list(mats.values()))
        stats = (stacked.mean(axis=0), stacked.std(axis=0))
    return {name: scale_features(m, scaling, stats) for name, m in mats.items()}


def layer_sigma(mats: list[np.ndarray], mode: str = "median") -> float:
    """RBF bandwidth of one layer from all pooled vectors of all models.

    ``median``/``mean``: of the pairwise distances (the DESIGN default is median); ``unit``: 1.
    """
    if mode == "unit":
        return 1.0
    if mode not in SIGMA_MODES:
        raise RecallError(f"sigma mode must be one of {', '.join(SIGMA_MODES)}, not {mode!r}")
    x = np.concatenate(mats)
    if mode == "median":
        sigma = median_pairwise_distance(x)
    else:
        sq = np.sum(x * x, axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
        sigma = float(np.sqrt(d2[np.triu_indices(len(x), k=1)]).mean())
    return sigma if sigma > 1e-12 else 1.0


def pair_similarity(a: np.ndarray, b: np.ndarray, metric: str, sigma: float = 1.0) -> float:
    if metric == "rbf":
        return rbf_similarity(a, b, sigma)
    if metric == "cka":
        return linear_cka(a, b)
    if metric == "cosine":
        return cosine_similarity(a, b)
    raise RecallError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")


def similarity_to_reference(pooled: dict[str, np.ndarray], reference: str, metric: str = "rbf",
                            sigma_mode: str = "median", scaling: str = "none",
                            l2_normalize: bool = False) -> SimilarityResult:
    """Similarity of every model to ``reference`` per layer.

    Args:
        pooled: model name -> ``(n_layers, n_samples, hidden)``, paired samples.
        l2_normalize: for ``rbf``, L2-normalise vectors before distances (after ``scaling``).
    Returns:
        SimilarityResult with values ``(n_models, n_layers)`` in the order of ``pooled``.
    """
    if reference not in pooled:
        raise RecallError(f"reference {reference!r} has no representations (models: {', '.join(pooled)})")
    n_layers, _ = _check(pooled)
    names = list(pooled)
    values = np.ones((len(names), n_layers))
    sigmas = np.ones(n_layers) if metric == "rbf" else None
    for layer in range(n_layers):
        mats = _prepare(pooled, layer, scaling)
        if metric == "rbf" and l2_normalize:
            mats = {n: scale_features(m, "l2") for n, m in mats.items()}
        sigma = layer_sigma(list(mats.values()), sigma_mode) if metric == "rbf" else 1.0
        if sigmas is not None:
            sigmas[layer] = sigma
        for i, name in enumerate(names):
            if name != reference:
                values[i, layer] = pair_similarity(mats[name], mats[reference], metric, sigma)
    settings = {"sigma_mode": sigma_mode, "scaling": scaling, "l2_normalize": l2_normalize}
    return SimilarityResult(metric, names, reference, values, sigmas, settings)


def model_matrix(pooled: dict[str, np.ndarray], layer: int, metric: str = "rbf", sigma_mode: str = "median",
                 scaling: str = "none", l2_normalize: bool = False) -> np.ndarray:
    """Model x model similarity ``(n_models, n_models)`` at one layer (symmetric, diagonal 1)."""
    n_layers, _ = _check(pooled)
    if not -n_layers <= layer < n_layers:
        raise RecallError(f"layer {layer} out of range (0..{n_layers - 1})")
    mats = _prepare(pooled, layer, scaling)
    if metric == "rbf" and l2_normalize:
        mats = {n: scale_features(m, "l2") for n, m in mats.items()}
    sigma = layer_sigma(list(mats.values()), sigma_mode) if metric == "rbf" else 1.0
    names = list(pooled)
    out = np.ones((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            out[i, j] = out[j, i] = pair_similarity(mats[names[i]], mats[names[j]], metric, sigma)
    return out


def layer_matrix(pooled: np.ndarray) -> np.ndarray:
    """Layer x layer linear CKA ``(n_layers, n_layers)`` within one model's ``(n_layers, n, hidden)``."""
    n_layers = pooled.shape[0]
    out = np.ones((n_layers, n_layers))
    for i in range(n_layers):
        for j in range(i + 1, n_layers):
            out[i, j] = out[j, i] = linear_cka(pooled[i], pooled[j])
    return out

"""Typical samples (k-means on the reference's representations), 2-D projections and separability."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .errors import RecallError

UMAP_MIN_POINTS = 10


@dataclass
class TypicalSamples:
    """K-means clustering of probe texts.

    indices: ``(k,)`` probe-set index of the text nearest each centroid (the typical samples).
    labels: ``(n,)`` cluster of every text.
    layer: hidden-state index the clustering used.
    """

    indices: np.ndarray
    labels: np.ndarray
    layer: int

    @property
    def k(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict:
        return {"indices": self.indices.tolist(), "labels": self.labels.tolist(), "layer": self.layer}


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature of ``x (n, d)`` (constant features left at 0)."""
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


def typical_samples(x: np.ndarray, k: int = 16, seed: int = 0, layer: int = -1) -> TypicalSamples:
    """K-means with ``k`` clusters on standardised ``x (n, hidden)``; the text nearest each centroid.

    ``k`` is capped at the number of distinct points. Indices are sorted by cluster id.
    """
    from sklearn.cluster import KMeans

    n = len(x)
    if n == 0:
        raise RecallError("no samples to cluster")
    if k < 1:
        raise RecallError(f"number of clusters must be at least 1, not {k}")
    z = standardize(np.asarray(x, dtype=np.float64))
    k = min(k, n, len(np.unique(z.round(8), axis=0)))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(z)
    indices = np.empty(k, dtype=int)
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        distances = np.linalg.norm(z[members] - km.cluster_centers_[c], axis=1)
        indices[c] = members[np.argmin(distances)]
    return TypicalSamples(indices, km.labels_.astype(int), layer)


def project_2d(x: np.ndarray, seed: int = 0, method: str = "auto") -> tuple[np.ndarray, str]:
    """2-D coordinates ``(n, 2)`` of ``x (n, hidden)``, and the method used (``umap`` or ``pca``).

    ``auto`` uses UMAP from 10 points on and PCA below (UMAP needs neighbours to be meaningful).
    """
    z = standardize(np.asarray(x, dtype=np.float64))
    n = len(z)
    if method == "auto":
        method = "umap" if n >= UMAP_MIN_POINTS else "pca"
    if method == "pca" or n < 3:
        return _pca_2d(z), "pca"
    if method != "umap":
        raise RecallError(f"projection must be auto, umap or pca, not {method!r}")
    import warnings

    import umap

    warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # random_state implies 1 job
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed,
                        init="spectral" if n > 10 else "random")
    return reducer.fit_transform(z).astype(np.float64), "umap"


def _pca_2d(z: np.ndarray) -> np.ndarray:
    z = z - z.mean(axis=0)
    if len(z) < 2:
        return np.zeros((len(z), 2))
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def separability(pooled: np.ndarray, labels) -> np.ndarray:
    """Silhouette score of ``labels`` per layer of ``pooled (n_layers, n, hidden)`` -> ``(n_layers,)``.

    High values: the layer separates the groups (e.g. tasks). NaN when there are fewer than 2 groups.
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return np.full(pooled.shape[0], np.nan)
    return np.array([silhouette_score(standardize(layer), labels) for layer in pooled])


_warmed = threading.Event()


def warm_up_umap(background: bool = True) -> None:
    """Compile UMAP's numba kernels once (15-25 s cold) so the first real projection is fast."""
    def run():
        if not _warmed.is_set():
            project_2d(np.random.default_rng(0).normal(size=(40, 8)), method="umap")
            _warmed.set()

    if background:
        threading.Thread(target=run, name="umap-warm-up", daemon=True).start()
    else:
        run()

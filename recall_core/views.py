"""Views of an analysed session for the dashboard and reports: projections, separability, matrices.

Thin steps over the library, so that the UI only translates widget values into calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import RecallError
from .session import Session, compute_typical, require_ready, sample_indices


@dataclass
class SampleView:
    """A 2-D projection of one model's pooled representations at one hidden-state index."""

    model: str
    layer: int
    coords: np.ndarray          # (n, 2)
    method: str                 # umap | pca
    groups: list                # per text: its task or its cluster
    typical: np.ndarray         # probe indices of the typical samples
    texts: list[str]


def sample_view(session: Session, model: str, layer: int, color_by: str = "task") -> SampleView:
    """UMAP (PCA below 10 texts) of ``model`` at hidden-state ``layer``, coloured by task or cluster."""
    from .typical import project_2d

    require_ready(session, "samples")
    if model not in session.representations:
        raise RecallError(f"no representations for model {model!r} (models: {', '.join(session.representations)})")
    pooled = session.representations[model].pooled
    layer = int(layer)
    if not 0 <= layer < pooled.shape[0]:
        raise RecallError(f"layer {layer} out of range (0..{pooled.shape[0] - 1})")
    typical = session.typical or compute_typical(session)
    coords, method = project_2d(pooled[layer], seed=session.settings.seed)
    if color_by == "cluster":
        groups = [int(c) for c in typical.labels]
    elif color_by == "task":
        groups = list(session.probes.tasks)
    else:
        raise RecallError(f"colour by 'task' or 'cluster', not {color_by!r}")
    return SampleView(model, layer, coords, method, groups, np.asarray(typical.indices), session.probes.texts)


def separability_by_layer(session: Session) -> dict[str, np.ndarray]:
    """Per model, the silhouette of the probe tasks at every hidden-state index (NaN with one task)."""
    from .typical import separability

    require_ready(session, "separability")
    tasks = session.probes.tasks
    return {name: separability(r.pooled, tasks) for name, r in session.representations.items()}


def pair_matrix(session: Session, layer: int) -> tuple[list[str], np.ndarray]:
    """Model x model similarity at one hidden-state index, with the session's metric and samples."""
    from .similarity import model_matrix

    require_ready(session, "pair view")
    s = session.settings
    idx = sample_indices(session)
    names = session.merged_models
    pooled = {name: session.representations[name].pooled[:, idx] for name in names}
    return names, model_matrix(pooled, int(layer), metric=s.metric, sigma_mode=s.sigma_mode, scaling=s.scaling,
                               l2_normalize=s.l2_normalize)


def layer_similarity(session: Session, model: str) -> np.ndarray:
    """Layer x layer linear CKA within one model, on the session's samples."""
    from .similarity import layer_matrix

    require_ready(session, "layer view")
    if model not in session.representations:
        raise RecallError(f"no representations for model {model!r}")
    return layer_matrix(session.representations[model].pooled[:, sample_indices(session)])

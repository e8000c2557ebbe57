"""Typical samples, 2-D projection and separability."""
import numpy as np
import pytest

from recall_core.errors import RecallError
from recall_core.typical import project_2d, separability, typical_samples

rng = np.random.default_rng(1)


def blobs(k=4, per=10, d=6):
    centers = rng.normal(scale=10, size=(k, d))
    x = np.concatenate([c + rng.normal(size=(per, d)) for c in centers])
    return x, np.repeat(np.arange(k), per)


def test_typical_samples_one_per_cluster_nearest_centroid():
    x, truth = blobs()
    result = typical_samples(x, k=4, seed=0)
    assert result.k == 4 and len(result.labels) == 40
    # each typical sample lies in its own true blob
    assert sorted(truth[result.indices]) == [0, 1, 2, 3]
    for c, index in enumerate(result.indices):
        assert result.labels[index] == c


def test_k_is_capped_and_validated():
    x, _ = blobs(k=2, per=3)
    assert typical_samples(x, k=16).k == 6
    with pytest.raises(RecallError):
        typical_samples(x, k=0)


def test_projection_pca_below_ten_points_and_umap_above():
    x, _ = blobs(k=3, per=3)
    coords, method = project_2d(x)
    assert method == "pca" and coords.shape == (9, 2)
    x, truth = blobs(k=3, per=10)
    coords, method = project_2d(x, seed=0)
    assert method == "umap" and coords.shape == (30, 2) and np.isfinite(coords).all()
    again, _ = project_2d(x, seed=0)
    np.testing.assert_allclose(coords, again)
    # three points (UMAP's default init crashes on them) still project
    assert project_2d(x[:3])[0].shape == (3, 2)


def test_separability_tracks_structure():
    x, truth = blobs()
    noise = rng.normal(size=x.shape)
    scores = separability(np.stack([noise, x]), truth)
    assert scores[1] > 0.5 > scores[0]
    assert np.isnan(separability(np.stack([x]), np.zeros(len(x)))).all()

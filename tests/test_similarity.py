"""Similarity metrics, checked against direct computations and invariances."""
import numpy as np
import pytest

from recall_core.errors import RecallError
from recall_core.similarity import (layer_matrix, linear_cka, model_matrix, rbf_similarity,
                                    similarity_to_reference)

rng = np.random.default_rng(0)


def family(n_layers=4, n=20, h=16):
    ref = rng.normal(size=(n_layers, n, h))
    near = ref + 0.1 * rng.normal(size=ref.shape) * np.arange(n_layers)[:, None, None]  # drifts with depth
    far = rng.normal(size=ref.shape)
    return {"near": near, "far": far, "ref": ref}


def test_identical_models_are_one_everywhere():
    ref = rng.normal(size=(3, 12, 8))
    for metric in ("rbf", "cka", "cosine"):
        result = similarity_to_reference({"x": ref.copy(), "ref": ref}, "ref", metric=metric)
        np.testing.assert_allclose(result.values, 1.0, atol=1e-9)


def test_rbf_matches_the_formula():
    pooled = family()
    result = similarity_to_reference(pooled, "ref", metric="rbf")
    for layer in range(4):
        everything = np.concatenate([pooled[m][layer] for m in pooled])
        dists = [np.linalg.norm(everything[i] - everything[j])
                 for i in range(len(everything)) for j in range(i + 1, len(everything))]
        sigma = np.median(dists)
        for i, model in enumerate(["near", "far"]):
            d2 = ((pooled[model][layer] - pooled["ref"][layer]) ** 2).sum(axis=1)
            expected = np.mean(np.exp(-d2 / (2 * sigma ** 2)))
            assert result.values[i, layer] == pytest.approx(expected, rel=1e-9)
        assert result.sigma[layer] == pytest.approx(sigma, rel=1e-9)
    assert np.all(result.values[2] == 1)
    # the drifting model is less similar the deeper it gets, and more similar than an unrelated one
    assert np.all(np.diff(result.values[0]) < 0)
    assert np.all(result.values[0, 1:] > result.values[1, 1:])


def test_rbf_l2_option_and_direct_function():
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    assert rbf_similarity(a, b, 2.0) == pytest.approx(np.mean(np.exp(-((a - b) ** 2).sum(1) / 8.0)))
    pooled = {"x": 10 * rng.normal(size=(2, 6, 4)), "ref": rng.normal(size=(2, 6, 4))}
    plain = similarity_to_reference(pooled, "ref", l2_normalize=False)
    normed = similarity_to_reference(pooled, "ref", l2_normalize=True)
    assert not np.allclose(plain.values, normed.values)
    assert normed.settings["l2_normalize"] is True


def test_cka_invariances_and_unrelated_features():
    x = rng.normal(size=(50, 10))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, rng.normal(size=(50, 10))) < 0.5


def test_model_and_layer_matrices():
    pooled = family()
    mm = model_matrix(pooled, layer=2, metric="cka")
    assert mm.shape == (3, 3) and np.allclose(mm, mm.T) and np.allclose(np.diag(mm), 1)
    assert mm[0, 2] > mm[1, 2]
    lm = layer_matrix(pooled["ref"])
    assert lm.shape == (4, 4) and np.allclose(np.diag(lm), 1) and np.allclose(lm, lm.T)
    assert lm[0, 1] < 0.9  # independent random layers


def test_errors():
    pooled = family()
    with pytest.raises(RecallError, match="reference"):
        similarity_to_reference(pooled, "nope")
    with pytest.raises(RecallError, match="metric"):
        similarity_to_reference(pooled, "ref", metric="euclid")
    with pytest.raises(RecallError, match="shape"):
        similarity_to_reference({"a": np.zeros((2, 3, 4)), "ref": np.zeros((3, 3, 4))}, "ref")

"""Pooled hidden states: masking, pooling modes, batching, and the disk cache."""
import numpy as np
import pytest
import torch

from recall_core import representations as reps
from recall_core.errors import RecallError
from recall_core.models import ModelSpec, load_model, load_tokenizer
from recall_core.probes import from_texts

TEXTS = ["a", "hello there", "12+34=46", "sort 4132=1234", "rev abc=cba and more words here"]


def direct_pool(model, tokenizer, text, pooling):
    """One text alone (no padding at all), pooled by hand."""
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**ids, output_hidden_states=True).hidden_states
    stack = torch.stack(hidden)[:, 0]  # (L, seq, h)
    if pooling == "mean":
        return stack.mean(dim=1).numpy()
    if pooling == "mean_skip_first":
        return stack[:, 1:].mean(dim=1).numpy()
    return stack[:, -1].numpy()


@pytest.mark.parametrize("pooling", reps.POOLINGS)
def test_batched_pooling_equals_one_text_at_a_time(tiny_family, pooling):
    model, tokenizer = load_model(tiny_family["a"]), load_tokenizer(tiny_family["a"])
    pooled = reps.extract(model, tokenizer, TEXTS, pooling=pooling, batch_size=3)
    assert pooled.shape == (4, len(TEXTS), 32) and pooled.dtype == np.float32
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(pooled[:, i], direct_pool(model, tokenizer, text, pooling), atol=1e-5)


def test_left_padding_gives_the_same_result(tiny_family):
    model, tokenizer = load_model(tiny_family["a"]), load_tokenizer(tiny_family["a"])
    right = reps.extract(model, tokenizer, TEXTS, pooling="last", batch_size=5)
    tokenizer.padding_side = "left"
    left = reps.extract(model, tokenizer, TEXTS, pooling="last", batch_size=5)
    np.testing.assert_allclose(left, right, atol=1e-5)


def test_progress_and_bad_pooling(tiny_family):
    model, tokenizer = load_model(tiny_family["a"]), load_tokenizer(tiny_family["a"])
    seen = []
    reps.extract(model, tokenizer, TEXTS, batch_size=2, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and len(seen) == 3 and seen == sorted(seen)
    with pytest.raises(RecallError, match="pooling"):
        reps.extract(model, tokenizer, TEXTS, pooling="max")


def test_second_identical_analysis_reads_the_cache(tiny_family, tmp_path, monkeypatch):
    spec = ModelSpec("a", str(tiny_family["a"]))
    probes = from_texts(TEXTS)
    first = reps.extract_cached(spec, probes, cache_dir=tmp_path)
    assert not first.from_cache and len(list(tmp_path.glob("*.npy"))) == 1

    # a cache hit must not even load the model
    monkeypatch.setattr(reps, "load_model", lambda *a, **k: pytest.fail("model loaded despite cache"))
    second = reps.extract_cached(spec, probes, cache_dir=tmp_path)
    assert second.from_cache
    np.testing.assert_array_equal(first.pooled, second.pooled)

    # other probes, another model or another pooling are different keys
    monkeypatch.undo()
    other = reps.extract_cached(spec, from_texts(TEXTS[:3]), cache_dir=tmp_path)
    assert not other.from_cache
    assert not reps.extract_cached(ModelSpec("b", str(tiny_family["b"])), probes, cache_dir=tmp_path).from_cache
    assert not reps.extract_cached(spec, probes, pooling="last", cache_dir=tmp_path).from_cache
    assert len(list(tmp_path.glob("*.npy"))) == 4

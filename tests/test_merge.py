"""Merge methods against their formulas (and mergekit's kernels), schedule routing, streaming shards, memory."""
import json
import shutil
import weakref

import numpy as np
import pytest
import torch
from safetensors import safe_open

from recall_core.errors import IncompatibleModelsError
from recall_core.layers import classify, layout_for
from recall_core.merge import METHODS, MergeRun, merge_state_dicts, merged_model, stream_merge
from recall_core.merge import engine
from recall_core.merge.reader import TensorReader
from recall_core.models import ModelSpec
from recall_core.plan import MergePlan
from recall_core.schedule import Schedule, schedule_rows, uniform_schedule
from recall_core.toy import make_tiny_model, perturbed_copy, save_model

# ---------------------------------------------------------------- kernels vs formulas (numpy)


@pytest.fixture(scope="module")
def task_tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 24, generator=g)
    tensors = [base + 0.1 * torch.randn(40, 24, generator=g) for _ in range(3)]
    return base, tensors, [0.5, 1.0, 2.0]


def np_trim(delta: np.ndarray, density: float) -> np.ndarray:
    k = max(1, int(density * delta.size))
    threshold = np.sort(np.abs(delta).ravel())[::-1][k - 1]  # random data: no ties
    return np.where(np.abs(delta) >= threshold, delta, 0.0)


def test_linear_is_normalised_weighted_average(task_tensors):
    _, tensors, w = task_tensors
    expected = sum(wi * t.double().numpy() for wi, t in zip(w, tensors)) / sum(w)
    for name in ("recall", "average"):
        got = METHODS[name].merge(tensors, torch.tensor(w))
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    # bfloat16 inputs are merged in float32 (no bf16 rounding of the sum)
    bf = [t.bfloat16() for t in tensors]
    expected_bf = sum(wi * t.double().numpy() for wi, t in zip(w, bf)) / sum(w)
    np.testing.assert_allclose(METHODS["average"].merge(bf, torch.tensor(w)).numpy(), expected_bf, atol=1e-6)


@pytest.mark.parametrize("normalize, lam", [(False, 1.0), (False, 0.7), (True, 0.5)])
def test_task_arithmetic_formula(task_tensors, normalize, lam):
    base, tensors, w = task_tensors
    b = base.double().numpy()
    mixed = sum(wi * (t.double().numpy() - b) for wi, t in zip(w, tensors))
    if normalize:
        mixed /= sum(w)
    got = METHODS["task_arithmetic"].merge(tensors, torch.tensor(w), base, {"lambda": lam, "normalize": normalize})
    np.testing.assert_allclose(got.numpy(), b + lam * mixed, atol=1e-6)


@pytest.mark.parametrize("density, lam", [(0.3, 1.0), (0.7, 0.6), (1.0, 1.0)])
def test_ties_formula(task_tensors, density, lam):
    base, tensors, w = task_tensors
    b = base.double().numpy()
    deltas = [wi * np_trim(t.double().numpy() - b, density) for wi, t in zip(w, tensors)]
    elected = np.where(np.sum(deltas, axis=0) >= 0, 1.0, -1.0)
    agree = [np.sign(d) == elected for d in deltas]
    mixed = sum(d * a for d, a in zip(deltas, agree))
    divisor = sum(wi * a for wi, a in zip(w, agree))
    divisor[divisor == 0] = 1
    expected = b + lam * mixed / divisor
    got = METHODS["ties"].merge(tensors, torch.tensor(w), base, {"density": density, "lambda": lam})
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    kept = [(np.abs(d) > 0).mean() for d in deltas]
    assert all(abs(k - density) < 0.01 for k in kept)


def test_dare_formula_and_seeding(task_tensors):
    base, tensors, w = task_tensors
    params = {"drop_rate": 0.4, "lambda": 0.9}
    got = METHODS["dare"].merge(tensors, torch.tensor(w), base, params, torch.Generator().manual_seed(3))
    # the same masks, drawn from the same seed: keep with p = 1 - drop_rate, rescale to the L1 norm
    g = torch.Generator().manual_seed(3)
    b = base.double().numpy()
    mixed = 0
    for wi, t in zip(w, tensors):
        delta = t.double().numpy() - b
        keep = torch.bernoulli(torch.full(delta.shape, 0.6), generator=g).numpy()
        assert 0.5 < keep.mean() < 0.7
        kept = delta * keep
        mixed = mixed + wi * kept * np.abs(delta).sum() / np.abs(kept).sum()
    np.testing.assert_allclose(got.numpy(), b + 0.9 * mixed, atol=1e-5)
    again = METHODS["dare"].merge(tensors, torch.tensor(w), base, params, torch.Generator().manual_seed(3))
    other = METHODS["dare"].merge(tensors, torch.tensor(w), base, params, torch.Generator().manual_seed(4))
    assert torch.equal(got, again) and not torch.equal(got, other)
    # no drop = task arithmetic
    nodrop = METHODS["dare"].merge(tensors, torch.tensor(w), base, {"drop_rate": 0.0}, torch.Generator())
    ta = METHODS["task_arithmetic"].merge(tensors, torch.tensor(w), base)
    torch.testing.assert_close(nodrop, ta, rtol=0, atol=0)


def test_kernels_do_not_modify_inputs(task_tensors):
    base, tensors, w = task_tensors
    copies = [t.clone() for t in tensors], base.clone()
    for name, method in METHODS.items():
        method.merge(tensors, torch.tensor(w), base if method.needs_base else None, {}, torch.Generator())
    assert all(torch.equal(a, b) for a, b in zip(copies[0], tensors)) and torch.equal(copies[1], base)


# ---------------------------------------------------------------- kernels vs mergekit 0.1.5 itself


@pytest.mark.parametrize("ours, theirs, params", [
    ("average", "linear", {}),
    ("task_arithmetic", "task_arithmetic", {"lambda": 0.7}),
    ("ties", "ties", {"density": 0.3, "lambda": 0.8}),
    ("dare", "dare_linear", {"drop_rate": 0.4, "lambda": 0.9}),
])
def test_kernels_match_mergekit(task_tensors, ours, theirs, params):
    from mergekit.merge_methods.api import merge_tensors

    base, tensors, w = task_tensors
    mk_params = {"weight": w, **{k: v for k, v in params.items() if k != "drop_rate"}}
    if "drop_rate" in params:
        mk_params["density"] = 1 - params["drop_rate"]
    torch.manual_seed(11)  # mergekit's DARE draws from the global generator
    if METHODS[ours].needs_base:
        expected = merge_tensors([base] + tensors, theirs, parameters=mk_params, base_index=0)
    else:
        expected = merge_tensors(tensors, theirs, parameters={**mk_params, "normalize": True})
    got = METHODS[ours].merge(tensors, torch.tensor(w), base, params, torch.Generator().manual_seed(11))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- schedule rows reach the right tensors


def two_models(tmp_path, model_type):
    """Two independently initialised models (every tensor differs) and their folders."""
    a, b = make_tiny_model(model_type, seed=1), make_tiny_model(model_type, seed=2)
    return save_model(a, tmp_path / f"{model_type}_a"), save_model(b, tmp_path / f"{model_type}_b")


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_schedule_rows_route_to_their_tensors(tmp_path, model_type):
    folder_a, folder_b = two_models(tmp_path, model_type)
    rows = schedule_rows(2)
    table = {"embed": [1, 0], "block_0": [0.25, 0.75], "block_1": [1, 0], "head": [0, 1]}
    schedule = Schedule(rows, ["A", "B"], np.array([table[r] for r in rows], dtype=float))
    plan = MergePlan([ModelSpec("A", str(folder_a)), ModelSpec("B", str(folder_b))], "recall", schedule=schedule)
    merged = merge_state_dicts(plan)
    with MergeRun(plan) as run:
        ckpt_a, ckpt_b = run.checkpoints["A"], run.checkpoints["B"]
        layout = layout_for(model_type)
        seen = set()
        for name, tensor in merged.items():
            part = classify(name, layout)
            seen.add(part)
            ta, tb = ckpt_a.get(name), ckpt_b.get(name)
            expected = {"embed": ta, 0: 0.25 * ta + 0.75 * tb, 1: ta, "head": tb}[part]
            assert not torch.equal(ta, tb) or name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight",
                                                             "ln_f.weight", ".bias"))
            torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6, msg=name)
    assert seen == {"embed", 0, 1, "head"}


def test_zero_weight_models_are_not_read(tmp_path, monkeypatch):
    folder_a, folder_b = two_models(tmp_path, "llama")
    rows = schedule_rows(2)
    schedule = Schedule(rows, ["A", "B"], np.array([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2))
    plan = MergePlan([ModelSpec("A", str(folder_a)), ModelSpec("B", str(folder_b))], "recall", schedule=schedule)
    reads = []
    get, read_range = TensorReader.get, TensorReader.read_float32
    monkeypatch.setattr(TensorReader, "get", lambda self, name: reads.append(name) or get(self, name))
    monkeypatch.setattr(TensorReader, "read_float32",
                        lambda self, name, *args: reads.append(name) or read_range(self, name, *args))
    merged = merge_state_dicts(plan)
    assert sorted(reads) == sorted(merged)  # each tensor read from exactly one model


# ---------------------------------------------------------------- streaming output


@pytest.fixture(scope="module")
def family_plan(tiny_family):
    models = [ModelSpec("base", str(tiny_family["base"]), "base"), ModelSpec("a", str(tiny_family["a"])),
              ModelSpec("b", str(tiny_family["b"])), ModelSpec("ref", str(tiny_family["ref"]), "reference")]
    rows = schedule_rows(3)
    weights = np.linspace([0.5, 0.3, 0.2], [0.1, 0.1, 0.8], len(rows))
    return MergePlan(models, "recall", schedule=Schedule(rows, ["a", "b", "ref"], weights))


def read_folder(folder):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors = {}
    for file in sorted(set(index["weight_map"].values())):
        with safe_open(str(folder / file), framework="pt") as fh:
            for name in fh.keys():
                assert index["weight_map"][name] == file
                tensors[name] = fh.get_tensor(name)
    return index, tensors


@pytest.mark.parametrize("method", ["recall", "ties", "dare"])
def test_stream_merge_equals_in_memory_merge(family_plan, tmp_path, method):
    plan = family_plan.with_method(method)
    expected = merge_state_dicts(plan)
    files = stream_merge(plan, tmp_path / "out", shard_bytes=20_000)
    index, tensors = read_folder(tmp_path / "out")
    shards = [f for f in files if f.suffix == ".safetensors"]
    assert len(shards) >= 3 and files[-1].name == "model.safetensors.index.json"
    assert [f.name for f in shards] == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in expected.values())
    assert sorted(tensors) == sorted(expected)
    for name, tensor in expected.items():
        assert tensors[name].dtype == torch.float32 and torch.equal(tensors[name], tensor), name
    assert all(f.stat().st_size <= 20_000 + 4096 for f in shards)  # header + one tensor over at most


def test_streamed_folder_loads_and_matches_in_memory_model(family_plan, tiny_family, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    stream_merge(family_plan, out, shard_bytes=30_000)
    shutil.copy(tiny_family["ref"] / "config.json", out / "config.json")
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    in_memory = merged_model(family_plan)
    ids = torch.tensor([[1, 5, 9, 17, 30, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, in_memory(ids).logits, rtol=0, atol=0)
        reference = AutoModelForCausalLM.from_pretrained(tiny_family["ref"], dtype=torch.float32).eval()
        assert not torch.allclose(reference(ids).logits, in_memory(ids).logits)


def test_single_shard_and_bfloat16_output(family_plan, tmp_path):
    plan = family_plan.with_method("average")
    plan.dtype = "bfloat16"
    files = stream_merge(plan, tmp_path / "one")
    assert [f.name for f in files] == ["model.safetensors"]
    float_merge = merge_state_dicts(family_plan.with_method("average"))
    with safe_open(str(files[0]), framework="pt") as fh:
        assert sorted(fh.keys()) == sorted(float_merge)
        for name in fh.keys():
            tensor = fh.get_tensor(name)
            assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, float_merge[name].bfloat16()), name


def test_auto_dtype_follows_the_reference(tmp_path):
    base = make_tiny_model("llama", seed=0)
    a = save_model(perturbed_copy(base, 0.05, seed=1), tmp_path / "a")
    ref = save_model(perturbed_copy(base, 0.05, seed=2).to(torch.bfloat16), tmp_path / "ref")
    plan = MergePlan([ModelSpec("a", str(a)), ModelSpec("ref", str(ref), "reference")], "average", dtype="auto")
    merged = merge_state_dicts(plan)
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    plan.reference = "a"
    assert {t.dtype for t in merge_state_dicts(plan).values()} == {torch.float32}


def test_sharded_mixed_dtype_inputs_and_tied_embeddings(tmp_path):
    """Inputs split over several files, one of them bfloat16, with tied embeddings (no lm_head saved)."""
    base = make_tiny_model("llama", seed=0, tie_word_embeddings=True)
    a = save_model(perturbed_copy(base, 0.05, seed=1), tmp_path / "a", max_shard_size="20KB")
    b = save_model(perturbed_copy(base, 0.05, seed=2).to(torch.bfloat16), tmp_path / "b")
    plan = MergePlan([ModelSpec("a", str(a)), ModelSpec("b", str(b))], "average",
                     method_params={"weights": {"a": 1.0, "b": 3.0}})
    with MergeRun(plan) as run:
        assert len(set(run.checkpoints["a"].files.values())) > 1
        expected = {n: (run.checkpoints["a"].get(n).double() + 3 * run.checkpoints["b"].get(n).double()) / 4
                    for n in run.checkpoints["a"].names}
    merged = merge_state_dicts(plan)
    assert "lm_head.weight" not in merged and sorted(merged) == sorted(expected)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor.double(), expected[name], rtol=0, atol=1e-6)
    model = merged_model(plan)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(model.model.embed_tokens.weight, merged["model.embed_tokens.weight"])


def test_integer_buffers_are_copied_or_refused(tmp_path):
    from safetensors.torch import save_file

    folders = []
    for i, step in enumerate([3, 3, 4]):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
        save_file({"model.layers.0.w": torch.full((4,), float(i)), "model.step": torch.tensor([step])},
                  str(folder / "model.safetensors"))
        folders.append(folder)
    specs = [ModelSpec(f"m{i}", str(f)) for i, f in enumerate(folders)]
    merged = merge_state_dicts(MergePlan(specs[:2], "average"))
    assert merged["model.step"].dtype == torch.int64 and merged["model.step"].tolist() == [3]
    assert merged["model.layers.0.w"].tolist() == [0.5] * 4
    with pytest.raises(IncompatibleModelsError, match="tensor model.step is not floating point and differs between m0 and m2"):
        merge_state_dicts(MergePlan(specs, "average"))


def test_progress_reaches_one(family_plan, tmp_path):
    seen = []
    stream_merge(family_plan, tmp_path / "p", progress=lambda f, msg: seen.append((f, msg)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert "merged" in seen[0][1]


# ---------------------------------------------------------------- chunks and memory


@pytest.mark.parametrize("method", ["recall", "task_arithmetic"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunked_merge_equals_whole_tensor_merge(family_plan, tmp_path, monkeypatch, method, dtype):
    plan = family_plan.with_method(method)
    plan.dtype = dtype
    whole = merge_state_dicts(plan)
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 1000)  # every matrix of the tiny models spans several chunks
    chunked = merge_state_dicts(plan)
    stream_merge(plan, tmp_path / "out", shard_bytes=30_000)
    _, streamed = read_folder(tmp_path / "out")
    for name, tensor in whole.items():
        assert tensor.dtype == getattr(torch, dtype)
        assert torch.equal(chunked[name], tensor) and torch.equal(streamed[name], tensor), name


class LiveTensors:
    """Counts tensors that are alive at once (weakref finalizers), with their bytes."""

    def __init__(self):
        self.live, self.bytes, self.max_live, self.max_bytes = 0, 0, 0, 0

    def track(self, tensor):
        size = tensor.numel() * tensor.element_size()
        self.live += 1
        self.bytes += size
        self.max_live, self.max_bytes = max(self.max_live, self.live), max(self.max_bytes, self.bytes)
        weakref.finalize(tensor, self._gone, size)
        return tensor

    def _gone(self, size):
        self.live -= 1
        self.bytes -= size


@pytest.fixture(scope="module")
def deep_plan(tmp_path_factory):
    """Base + 3 models of 24 blocks (~1 MB each): the largest tensor is ~1% of the model."""
    root = tmp_path_factory.mktemp("deep")
    base = make_tiny_model("llama", seed=0, n_blocks=24)
    models = [ModelSpec("base", str(save_model(base, root / "base")), "base")]
    models += [ModelSpec(f"m{i}", str(save_model(perturbed_copy(base, 0.02, seed=i), root / f"m{i}"))) for i in range(3)]
    return MergePlan(models, "recall", schedule=uniform_schedule(["m0", "m1", "m2"], 24))


@pytest.mark.parametrize("method, chunk, max_whole_inputs", [
    ("recall", 1 << 22, 0), ("recall", 1000, 0), ("task_arithmetic", 1000, 0), ("ties", 1 << 22, 3)])
def test_stream_merge_holds_a_few_tensors_not_the_model(deep_plan, tmp_path, monkeypatch, method, chunk,
                                                       max_whole_inputs):
    """Tracked: whole input tensors (TIES reads whole tensors: the base + one or two models at a time),
    the reused chunk buffers, and the pieces handed to the writer (two at most). Together they stay a small fraction of
    one model, and no piece is retained. Kernel temporaries are not tracked (TIES keeps one trimmed
    task vector per model of the current tensor, as mergekit does)."""
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", chunk)
    inputs, pieces, buffers = LiveTensors(), LiveTensors(), []
    get = TensorReader.get
    monkeypatch.setattr(TensorReader, "get", lambda self, name: inputs.track(get(self, name)))
    init = engine._Buffers.__init__
    monkeypatch.setattr(engine._Buffers, "__init__", lambda self, n: buffers.append(self) or init(self, n))
    produce = MergeRun.pieces
    monkeypatch.setattr(MergeRun, "pieces", lambda self, progress=None: (
        (info, start, pieces.track(piece)) for info, start, piece in produce(self, progress)))
    plan = deep_plan.with_method(method)
    stream_merge(plan, tmp_path / "out", shard_bytes=10**9)  # one shard holding the whole model
    with MergeRun(plan) as run:
        largest, model_bytes = max(t.nbytes for t in run.layout), run.total_bytes
    assert len(buffers) <= 1  # allocated once, reused for every chunk
    buffer_bytes = buffers[0].nbytes if buffers else 0
    if buffers:
        assert buffers[0].accs[0].numel() == min(chunk, largest // 4)
    assert inputs.max_live <= max_whole_inputs and inputs.max_bytes <= max_whole_inputs * largest
    # each piece is written (on the writer thread while the next one is merged), then dropped
    assert pieces.max_live <= 2 and pieces.max_bytes <= 2 * largest
    assert inputs.max_bytes + pieces.max_bytes + buffer_bytes < model_bytes / 4
    assert inputs.live == 0 and pieces.live == 0

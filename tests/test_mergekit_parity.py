"""recall_core's merges against mergekit 0.1.5 running the YAML that recall_core exports.

The real ``mergekit-yaml`` command runs the RECALL merge of Llama models; the other cases use
mergekit's in-process ``run_merge``, the function the command calls (no process start: seconds saved). Every output
tensor must match recall_core's own merge to 1e-5 in float32, with the same set of tensor names.
"""
import glob
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from recall_core.layers import schedule_rows
from recall_core.merge import merge_state_dicts
from recall_core.mergekit_yaml import to_mergekit_yaml
from recall_core.models import ModelSpec
from recall_core.plan import MergePlan
from recall_core.schedule import Schedule

ATOL = 1e-5
MERGED = ["a", "b", "c"]


def _drifted(model, scale, seed):
    """A copy with noise on EVERY tensor (embeddings included), so every schedule row matters."""
    import copy

    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in clone.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return clone


def _family(root: Path, model_type: str, n_blocks: int) -> dict[str, Path]:
    from recall_core.toy import make_char_tokenizer, make_tiny_model, save_model

    tokenizer = make_char_tokenizer()
    base = make_tiny_model(model_type, seed=0, n_blocks=n_blocks, hidden=16, intermediate=32, heads=2)
    models = {"base": base, **{name: _drifted(base, 0.05, seed) for seed, name in enumerate(MERGED, 1)}}
    return {name: save_model(model, root / model_type / name, tokenizer) for name, model in models.items()}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _family(tmp_path_factory.mktemp("parity"), "llama", 4)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return _family(tmp_path_factory.mktemp("parity"), "gpt2", 3)


def _specs(folders):
    return [ModelSpec(name, str(path), "base" if name == "base" else "expert") for name, path in folders.items()]


def _recall_plan(folders, n_blocks, seed=0):
    """A schedule whose every row (embed, each block, head) is different."""
    rows = schedule_rows(n_blocks)
    weights = np.random.default_rng(seed).dirichlet(np.ones(len(MERGED)), size=len(rows))
    schedule = Schedule(rows, MERGED, weights, source="test")
    return MergePlan(_specs(folders), method="recall", reference="c", schedule=schedule)


def _mergekit_cli(config_text: str, work: Path) -> dict[str, torch.Tensor]:
    config, out = work / "mergekit.yaml", work / "out"
    config.write_text(config_text, encoding="utf-8")
    exe = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")
    result = subprocess.run([exe, str(config), str(out), "--copy-tokenizer", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return _load_folder(out)


def _mergekit_in_process(config_text: str, work: Path) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out = work / "out"
    config = MergeConfiguration.model_validate(yaml.safe_load(config_text))
    run_merge(config, str(out), options=MergeOptions(quiet=True, copy_tokenizer=False))
    return _load_folder(out)


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(glob.glob(str(folder / "*.safetensors"))):
        tensors.update(load_file(file))
    assert tensors, f"mergekit wrote no weights into {folder}"
    return tensors


def _assert_same(ours: dict, theirs: dict, atol: float = ATOL):
    assert set(ours) == set(theirs)
    worst = max((ours[n].float() - theirs[n].float()).abs().max().item() for n in ours)
    assert worst <= atol, f"max abs difference {worst:.3g} > {atol}"


def _assert_changed(ours: dict, folders: dict, name: str):
    """Guard against a vacuous match: the merge differs from every input on this tensor."""
    for model in MERGED:
        source = load_file(str(Path(folders[model]) / "model.safetensors"))[name]
        assert (ours[name] - source).abs().max() > 1e-3


def test_recall_llama_matches_mergekit_yaml_cli(llama, tmp_path):
    plan = _recall_plan(llama, 4)
    text = to_mergekit_yaml(plan)
    config = yaml.safe_load(text)
    assert config["merge_method"] == "linear" and config["parameters"] == {"normalize": True}
    assert [m["model"] for m in config["models"]] == [str(llama[n]) for n in MERGED]  # the base is not merged
    conditions = config["models"][0]["parameters"]["weight"]
    filters = [c["filter"] for c in conditions[:-1]]
    assert set(filters) == {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    assert len(conditions[-1]["value"]) == 4  # one value per block

    ours = merge_state_dicts(plan)
    _assert_same(ours, _mergekit_cli(text, tmp_path))
    for name in ("model.embed_tokens.weight", "model.layers.2.mlp.up_proj.weight", "lm_head.weight"):
        _assert_changed(ours, llama, name)


def test_recall_gpt2_matches_mergekit(gpt2, tmp_path):
    plan = _recall_plan(gpt2, 3, seed=1)
    text = to_mergekit_yaml(plan)
    filters = {c["filter"] for c in yaml.safe_load(text)["models"][1]["parameters"]["weight"][:-1]}
    assert filters == {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                       "transformer.ln_f.bias", "lm_head.weight"}
    _assert_same(merge_state_dicts(plan), _mergekit_in_process(text, tmp_path))


@pytest.mark.parametrize("method, params, dtype", [
    ("average", {}, "bfloat16"),
    ("average", {"weights": {"a": 1.0, "b": 3.0, "c": 0.5}}, "float32"),
    ("task_arithmetic", {"lambda": 0.7, "weights": {"a": 1.0, "b": 0.5, "c": 2.0}}, "float32"),
    ("ties", {"density": 0.4, "lambda": 1.3, "weights": {"a": 1.0, "b": 0.6, "c": 0.9}}, "float32"),
])
def test_baselines_match_mergekit(llama, tmp_path, method, params, dtype):
    plan = MergePlan(_specs(llama), method=method, reference="c", method_params=params, dtype=dtype)
    text = to_mergekit_yaml(plan)
    theirs = _mergekit_in_process(text, tmp_path)
    ours = merge_state_dicts(plan)
    if dtype == "bfloat16":
        assert {t.dtype for t in theirs.values()} == {t.dtype for t in ours.values()} == {torch.bfloat16}
        _assert_same(ours, theirs, atol=1e-2)  # one bfloat16 step near the largest weights
    else:
        _assert_same(ours, theirs)
    _assert_changed(ours, llama, "model.layers.1.self_attn.q_proj.weight")


def test_dare_yaml_drops_the_same_fraction(llama, tmp_path):
    """Random masks differ between tools; the kept fraction (1 - drop_rate) and the mapping must not."""
    folders = {"base": llama["base"], "a": llama["a"]}
    plan = MergePlan(_specs(folders), method="dare", reference="a", method_params={"drop_rate": 0.3, "seed": 0})
    config = yaml.safe_load(to_mergekit_yaml(plan))
    assert config["merge_method"] == "dare_linear" and config["models"][0]["parameters"]["density"] == pytest.approx(0.7)
    theirs, ours = _mergekit_in_process(to_mergekit_yaml(plan), tmp_path), merge_state_dicts(plan)
    base = load_file(str(llama["base"] / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    for merged in (theirs, ours):
        kept = (merged[name] != base[name]).float().mean().item()
        assert kept == pytest.approx(0.7, abs=0.05)

"""Loading, describing, layer maps and compatibility on tiny real checkpoints of six architectures."""
import time

import pytest
import torch

from recall_core.checkpoint import open_checkpoint
from recall_core.errors import ModelLoadError
from recall_core.layers import EMBED, HEAD
from recall_core.models import (ModelSpec, check_compatibility, describe, load_model, load_tokenizer,
                                resolve_model_path, tensor_parts)
from recall_core.toy import TINY_ARCHITECTURES, make_char_tokenizer, make_tiny_model, save_model

# What each architecture's layer map must say about a few of its tensor names.
EXPECTED_PARTS = {
    "llama": {"model.embed_tokens.weight": EMBED, "model.layers.1.mlp.up_proj.weight": 1,
              "model.norm.weight": HEAD, "lm_head.weight": HEAD},
    "mistral": {"model.embed_tokens.weight": EMBED, "model.layers.0.self_attn.q_proj.weight": 0,
                "lm_head.weight": HEAD},
    "qwen2": {"model.embed_tokens.weight": EMBED, "model.layers.1.self_attn.q_proj.bias": 1,
              "model.norm.weight": HEAD},
    "gpt2": {"transformer.wte.weight": EMBED, "transformer.wpe.weight": EMBED, "transformer.h.1.attn.c_attn.weight": 1,
             "transformer.ln_f.weight": HEAD},
    "gpt_neox": {"gpt_neox.embed_in.weight": EMBED, "gpt_neox.layers.0.attention.dense.weight": 0,
                 "gpt_neox.final_layer_norm.weight": HEAD, "embed_out.weight": HEAD},
    "opt": {"model.decoder.embed_tokens.weight": EMBED, "model.decoder.embed_positions.weight": EMBED,
            "model.decoder.layers.1.fc1.weight": 1, "model.decoder.final_layer_norm.weight": HEAD},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    tokenizer = make_char_tokenizer()
    return {arch: save_model(make_tiny_model(arch, n_blocks=2), root / arch, tokenizer) for arch in TINY_ARCHITECTURES}


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_load_describe_and_layer_map(saved, arch):
    folder = saved[arch]
    model = load_model(folder)
    tokenizer = load_tokenizer(folder)
    out = model(**tokenizer(["ab c"], return_tensors="pt"), output_hidden_states=True)
    assert len(out.hidden_states) == 3  # embeddings + 2 blocks

    ckpt = open_checkpoint(folder)
    info = describe(arch, ckpt)
    assert info.n_blocks == 2 and info.hidden_size == 32 and info.dtype == "float32"
    assert info.n_parameters == sum(p.numel() for p in model.parameters())
    assert info.architecture == type(model).__name__

    parts = tensor_parts(ckpt)
    for name, part in EXPECTED_PARTS[arch].items():
        if name in parts:
            assert parts[name] == part, name
    assert sum(1 for n in EXPECTED_PARTS[arch] if n in parts) >= 3
    # every block has tensors, and both ends of the model are there
    assert {p for p in parts.values() if isinstance(p, int)} == {0, 1}
    assert EMBED in parts.values() and HEAD in parts.values()


def test_sharded_and_bf16_checkpoint(tmp_path):
    model = make_tiny_model("llama", n_blocks=2, hidden=64, intermediate=128).to(torch.bfloat16)
    save_model(model, tmp_path / "m", max_shard_size="40KB")
    assert (tmp_path / "m" / "model.safetensors.index.json").is_file()
    ckpt = open_checkpoint(tmp_path / "m")
    assert len(set(ckpt.files.values())) > 1
    assert describe("m", ckpt).dtype == "bfloat16"
    name = "model.layers.1.mlp.down_proj.weight"
    assert torch.equal(ckpt.get(name), model.state_dict()[name])
    reloaded = load_model(tmp_path / "m", dtype=torch.bfloat16)
    assert torch.equal(reloaded.state_dict()[name], model.state_dict()[name])


def test_compatibility_names_first_mismatch(tmp_path):
    tok = make_char_tokenizer()
    a = save_model(make_tiny_model("llama", n_blocks=2, hidden=32), tmp_path / "a", tok)
    b = save_model(make_tiny_model("llama", n_blocks=2, hidden=32, seed=1), tmp_path / "b", tok)
    wide = save_model(make_tiny_model("llama", n_blocks=2, hidden=32, intermediate=96), tmp_path / "wide", tok)
    deep = save_model(make_tiny_model("llama", n_blocks=3, hidden=32), tmp_path / "deep", tok)
    ok = check_compatibility({"a": open_checkpoint(a), "b": open_checkpoint(b)})
    assert ok.ok and "2 blocks" in ok.message
    bad = check_compatibility({"a": open_checkpoint(a), "wide": open_checkpoint(wide)})
    assert not bad.ok
    assert "model.layers.0.mlp.down_proj.weight" in bad.message or "model.layers.0.mlp.gate_proj.weight" in bad.message
    assert "[32, 64]" in bad.message or "[64, 32]" in bad.message
    assert "96" in bad.message
    missing = check_compatibility({"deep": open_checkpoint(deep), "a": open_checkpoint(a)})
    assert not missing.ok and "model.layers.2." in missing.message and "missing from a" in missing.message


def test_pickle_refused_unless_allowed(tmp_path):
    model = make_tiny_model("llama", n_blocks=1)
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        open_checkpoint(folder)
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(folder)
    ckpt = open_checkpoint(folder, allow_pickle=True)
    assert ckpt.is_pickle and torch.equal(ckpt.get("lm_head.weight"), model.state_dict()["lm_head.weight"])


def test_missing_folder_and_offline_hub_id_fail_fast(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model_path(str(tmp_path / "nope"))
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        resolve_model_path("some-org/some-model-that-is-not-cached")
    assert time.perf_counter() - started < 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no weights"):
        open_checkpoint(tmp_path / "empty")


def test_trust_remote_code_is_off_by_default():
    import inspect

    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False
    assert inspect.signature(load_tokenizer).parameters["trust_remote_code"].default is False


def test_model_spec_rejects_unknown_role():
    with pytest.raises(ModelLoadError, match="role"):
        ModelSpec("x", "/tmp", role="teacher")


def test_fingerprint_changes_with_weights(tiny_family):
    fa = open_checkpoint(tiny_family["a"]).fingerprint()
    assert fa == open_checkpoint(tiny_family["a"]).fingerprint()
    assert fa != open_checkpoint(tiny_family["b"]).fingerprint()

"""Tiny models and a character tokenizer built offline, for the demo, the tests and the benchmarks.

Like ``sklearn.datasets.make_*``: small, deterministic, real Hugging Face objects saved with
``save_pretrained`` so they go through the same loading code as a user's checkpoints.
"""
from __future__ import annotations

import string
from pathlib import Path

# Printable ASCII without the characters that are rare in probe texts; enough for the demo tasks.
DEFAULT_ALPHABET = string.ascii_letters + string.digits + " +-*=?:.,;!'\"()[]<>/_#\n"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# Per architecture: config class name and the keyword names of its size settings.
_TINY_CONFIGS = {
    "llama": ("LlamaConfig", dict(num_hidden_layers="n", hidden_size="h", intermediate_size="i",
                                  num_attention_heads="a", num_key_value_heads="a", max_position_embeddings=128)),
    "mistral": ("MistralConfig", dict(num_hidden_layers="n", hidden_size="h", intermediate_size="i",
                                      num_attention_heads="a", num_key_value_heads="a", max_position_embeddings=128)),
    "qwen2": ("Qwen2Config", dict(num_hidden_layers="n", hidden_size="h", intermediate_size="i",
                                  num_attention_heads="a", num_key_value_heads="a", max_position_embeddings=128)),
    "gpt2": ("GPT2Config", dict(n_layer="n", n_embd="h", n_head="a", n_positions=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(num_hidden_layers="n", hidden_size="h", intermediate_size="i",
                                       num_attention_heads="a", max_position_embeddings=128)),
    "opt": ("OPTConfig", dict(num_hidden_layers="n", hidden_size="h", ffn_dim="i", num_attention_heads="a",
                              word_embed_proj_dim="h", max_position_embeddings=128)),
}
TINY_ARCHITECTURES = tuple(_TINY_CONFIGS)


def make_char_tokenizer(alphabet: str = DEFAULT_ALPHABET):
    """A character-level ``PreTrainedTokenizerFast`` (one token per character, ``<s>`` prepended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in dict.fromkeys(alphabet):
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        padding_side="right",
    )


def make_tiny_config(model_type: str = "llama", n_blocks: int = 2, hidden: int = 32, intermediate: int = 64,
                     heads: int = 4, vocab_size: int = 96, **overrides):
    """A transformers config for a tiny model of one of ``TINY_ARCHITECTURES``."""
    import transformers

    class_name, template = _TINY_CONFIGS[model_type]
    sizes = {"n": n_blocks, "h": hidden, "i": intermediate, "a": heads}
    kwargs = {key: sizes.get(value, value) if isinstance(value, str) else value for key, value in template.items()}
    kwargs.update(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    kwargs.update(overrides)
    return getattr(transformers, class_name)(**kwargs)


def make_tiny_model(model_type: str = "llama", seed: int = 0, **config_kwargs):
    """A randomly initialised causal LM (float32, eval mode), deterministic for ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = make_tiny_config(model_type, **config_kwargs)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def perturbed_copy(model, scale: float, seed: int, start_block: int = 0):
    """A copy of ``model`` with Gaussian noise of std ``scale`` added to the blocks from ``start_block`` on.

    A stand-in for a fine-tune: the earlier blocks stay identical, the later ones drift.
    """
    import copy

    import torch

    from .layers import classify, layout_for

    layout = layout_for(model.config.model_type)
    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in clone.named_parameters():
            part = classify(name, layout)
            if isinstance(part, int) and part >= start_block or part == "head" and scale > 0:
                param.add_(torch.randn(param.shape, generator=generator) * scale)
    return clone


def save_model(model, folder: Path, tokenizer=None, max_shard_size: str | None = None) -> Path:
    """``save_pretrained`` the model (safetensors) and a tokenizer beside it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    (tokenizer or make_char_tokenizer()).save_pretrained(folder)
    return folder

"""Which parameter belongs to which part of the model: ``embed``, a block index, or ``head``.

Architecture facts are data: one :class:`LayerLayout` per ``model_type``, each a set of regular
expressions. Names are matched with ``re.search`` so that an optional wrapper prefix (``model.``,
``transformer.``, ...) does not matter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

EMBED = "embed"
HEAD = "head"


@dataclass(frozen=True)
class LayerLayout:
    """Regexes that classify a parameter name.

    block: one capture group, the block index.
    embed: tensors that sit before the first block (token and position embeddings).
    Anything else (final norm, lm_head, projections after the last block) is ``head``.
    """

    block: str
    embed: tuple[str, ...]
    block_prefix: str  # how block tensors are named, for mergekit filters and messages


_DECODER_LAYERS = LayerLayout(
    block=r"(?:^|\.)layers\.(\d+)\.",
    embed=(r"(?:^|\.)embed_tokens\.",),
    block_prefix="model.layers.",
)

LAYOUTS: dict[str, LayerLayout] = {
    "llama": _DECODER_LAYERS,
    "mistral": _DECODER_LAYERS,
    "qwen2": _DECODER_LAYERS,
    "qwen3": _DECODER_LAYERS,
    "gemma": _DECODER_LAYERS,
    "gemma2": _DECODER_LAYERS,
    "phi3": _DECODER_LAYERS,
    "olmo": _DECODER_LAYERS,
    "olmo2": _DECODER_LAYERS,
    "gpt2": LayerLayout(
        block=r"(?:^|\.)h\.(\d+)\.",
        embed=(r"(?:^|\.)wte\.", r"(?:^|\.)wpe\."),
        block_prefix="transformer.h.",
    ),
    "gpt_neox": LayerLayout(
        block=r"(?:^|\.)layers\.(\d+)\.",
        embed=(r"(?:^|\.)embed_in\.",),
        block_prefix="gpt_neox.layers.",
    ),
    "opt": LayerLayout(
        block=r"(?:^|\.)layers\.(\d+)\.",
        embed=(r"(?:^|\.)embed_tokens\.", r"(?:^|\.)embed_positions\.", r"(?:^|\.)project_in\."),
        block_prefix="model.decoder.layers.",
    ),
}

# For architectures not listed above: the usual names for blocks and embeddings.
GENERIC_LAYOUT = LayerLayout(
    block=r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.",
    embed=(r"(?:^|\.)(?:embed_tokens|embed_in|wte|wpe|word_embeddings|embed_positions|position_embeddings)\.",),
    block_prefix="layers.",
)


def layout_for(model_type: str | None) -> LayerLayout:
    """The layout of a ``config.model_type``; the generic one for unknown types."""
    return LAYOUTS.get((model_type or "").lower(), GENERIC_LAYOUT)


def classify(name: str, layout: LayerLayout) -> str | int:
    """``"embed"``, the block index (int) or ``"head"`` for one parameter name."""
    match = re.search(layout.block, name)
    if match:
        return int(match.group(1))
    if any(re.search(pattern, name) for pattern in layout.embed):
        return EMBED
    return HEAD


def layer_map(names, model_type: str | None) -> dict[str, str | int]:
    """Map every parameter name to ``"embed"``, a block index or ``"head"``."""
    layout = layout_for(model_type)
    return {name: classify(name, layout) for name in names}


def schedule_row(part: str | int) -> str:
    """The schedule row name of a part: ``embed``, ``block_3``, ``head``."""
    return part if isinstance(part, str) else f"block_{part}"


def schedule_rows(n_blocks: int) -> list[str]:
    """Rows of a fusion schedule: ``embed``, ``block_0`` ... ``block_{n-1}``, ``head``."""
    return [EMBED] + [f"block_{i}" for i in range(n_blocks)] + [HEAD]

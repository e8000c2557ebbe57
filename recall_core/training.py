"""The demo's training loop: prompt/answer pairs, loss on the answer, AdamW, deterministic for a seed."""
from __future__ import annotations

import hashlib
import random
from typing import Callable

from .probes import ProbeItem
from .threads import one_torch_thread


def encode_items(items: list[ProbeItem], vocab: dict) -> list[tuple[list[int], list[int]]]:
    """(prompt ids with BOS, answer ids with EOS) per item; the same ids the saved tokenizer produces."""
    bos, eos = vocab["<s>"], vocab["</s>"]
    return [([bos] + [vocab[c] for c in it.text], [vocab[c] for c in it.answer] + [eos]) for it in items]


def collate(rows):
    """(input_ids, attention_mask, labels) with right padding; loss on the answer and EOS only."""
    import torch

    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)  # 0 = <pad>
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (prompt, answer) in enumerate(rows):
        seq = prompt + answer
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(prompt): len(seq)] = torch.tensor(answer)
    return ids, mask, labels


def train(model, pool, steps: int, lr: float, recipe, seed: int, progress: Callable[[float], None] | None = None):
    """Fine-tune ``model`` in place with AdamW on batches drawn from ``pool`` (encoded items).

    ``recipe`` gives ``batch_size`` and ``warmup`` (steps); training runs on one torch thread.

    Deterministic for ``seed``: the batches come from ``random.Random(seed)`` and dropout is off.
    """
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    # Linear warm-up, then linear decay to 10 %: stable with few steps.
    def factor(step):
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        return 1.0 - 0.9 * (step - recipe.warmup) / max(1, steps - recipe.warmup)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    with one_torch_thread():
        _steps(model, pool, optimizer, scheduler, steps, recipe, rng, progress)
    return model.eval()


def _steps(model, pool, optimizer, scheduler, steps, recipe, rng, progress):
    import torch

    model.train()
    for step in range(steps):
        batch = [pool[rng.randrange(len(pool))] for _ in range(recipe.batch_size)]
        ids, mask, labels = collate(batch)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if progress and (step % 25 == 0 or step == steps - 1):
            progress((step + 1) / steps)


def state_checksum(model) -> str:
    """sha256 of every parameter's bytes, in name order: equal checksums mean identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

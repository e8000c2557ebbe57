"""Demo tasks with exact-match answers: small seeded generators of :class:`~recall_core.probes.ProbeItem`.

Every prompt ends with ``=`` or ``?`` and the answer follows it directly ("37+5=" -> "42"). Only
characters of :data:`recall_core.toy.DEFAULT_ALPHABET` are used, so the demo's character tokenizer
encodes every item without unknown tokens.

Like ``sklearn.datasets.make_*``: ``make_items(task, n, seed)`` returns the same items for the same
arguments on any machine (Python's ``random.Random``, no global state).
"""
from __future__ import annotations

import random
import string
from typing import Callable

from .errors import RecallError
from .probes import ProbeItem, ProbeSet

# An invented fact table: country -> capital. Invented so that no pretrained knowledge helps, and
# fixed (not seeded) so that every seed asks about the same world.
FACTS = {
    "Zorbia": "Quel", "Tramland": "Oska", "Vellmar": "Duun", "Korrin": "Ptah", "Ashvale": "Miro",
    "Brindos": "Leth", "Carvon": "Ulmo", "Dresk": "Yanu", "Eloria": "Fenn", "Fyrland": "Gorm",
    "Gultam": "Hesk", "Hovia": "Ibar", "Istrel": "Jode", "Jamora": "Kuth", "Kelvaro": "Lisp",
    "Lunmark": "Nabo",
}

_LETTERS = string.ascii_lowercase


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    # Two digits plus one: learnable by a tiny model in a few hundred steps (two plus two is not).
    a, b = rng.randrange(100), rng.randrange(10)
    return f"{a}+{b}=", str(a + b)


def _reverse(rng: random.Random) -> tuple[str, str]:
    word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 5)))
    return f"rev {word}=", word[::-1]


def _sort(rng: random.Random) -> tuple[str, str]:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(3, 5)))
    return f"sort {digits}=", "".join(sorted(digits))


def _facts(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(FACTS))
    return f"capital of {country}?", FACTS[country]


def _copy(rng: random.Random) -> tuple[str, str]:
    pool = _LETTERS + string.digits
    word = "".join(rng.choice(pool) for _ in range(rng.randint(2, 5)))
    return f"copy {word}=", word


# name -> one-item generator. ``copy`` is the generic pre-training task of the demo's base model.
GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "arithmetic": _arithmetic,
    "reverse": _reverse,
    "sort": _sort,
    "facts": _facts,
    "copy": _copy,
}
TASKS = ("arithmetic", "reverse", "sort", "facts")  # the demo's expert tasks
# Tasks whose whole input space is small enough to be learnt by heart (eval items cannot be held out).
CLOSED_TASKS = ("facts",)


def make_items(task: str, n: int, seed: int = 0, exclude: set[str] | frozenset[str] = frozenset()) -> list[ProbeItem]:
    """``n`` items of ``task``, deterministic for ``seed``.

    Args:
        exclude: prompts to skip (held-out items of another split). Ignored for :data:`CLOSED_TASKS`.

    Raises:
        RecallError: unknown task.
    """
    if task not in GENERATORS:
        raise RecallError(f"unknown demo task {task!r} (known: {', '.join(GENERATORS)})")
    generate = GENERATORS[task]
    # The task name goes into the seed so that two tasks with one seed draw independent streams.
    rng = random.Random(f"{task}:{seed}")
    skip = frozenset() if task in CLOSED_TASKS else exclude
    items = []
    while len(items) < n:
        prompt, answer = generate(rng)
        if prompt not in skip:
            items.append(ProbeItem(text=prompt, task=task, answer=answer))
    return items


def make_probe_set(tasks=TASKS, n_per_task: int = 32, seed: int = 0) -> ProbeSet:
    """A probe set with ``n_per_task`` items of each task, task after task."""
    return ProbeSet([item for task in tasks for item in make_items(task, n_per_task, seed)])

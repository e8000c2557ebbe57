"""Argument helpers shared by the subcommands."""
from __future__ import annotations

from ..errors import RecallError
from ..models import ModelSpec


def parse_model_args(values: list[str], reference: str | None = None, base: str | None = None) -> list[ModelSpec]:
    """``["math=/models/math", ...]`` -> ModelSpecs; ``reference``/``base`` name the models with those roles."""
    specs = []
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise RecallError(f"--model expects NAME=PATH, got {value!r}")
        specs.append(ModelSpec(name.strip(), path.strip()))
    names = [s.name for s in specs]
    for flag, wanted, role in (("--reference", reference, "reference"), ("--base", base, "base")):
        if wanted is None:
            continue
        if wanted not in names:
            raise RecallError(f"{flag} {wanted!r} is not one of the models: {', '.join(names)}")
        specs[names.index(wanted)].role = role
    return specs


def print_table(rows: list[dict], stream=None) -> None:
    """A plain aligned text table of dict rows."""
    import sys

    stream = stream or sys.stdout
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_fmt(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)), file=stream)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)), file=stream)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)

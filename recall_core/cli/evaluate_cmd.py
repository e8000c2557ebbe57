"""``python -m recall_core evaluate``: score models on probe files and print a table.

    python -m recall_core evaluate --model base=./base --model merged=./merged --probes tasks.jsonl [--json scores.json]

Per task: accuracy (greedy exact match) where the probes carry answers, else the mean token loss;
per model the average and the worst drop against the best source model (forgetting).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import RecallError



def add_arguments(parser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a model folder or hub id with a display name; repeat for several models")
    parser.add_argument("--probes", nargs="+", action="extend", required=True, metavar="FILE",
                        help="probe files (.txt, .jsonl, .csv)")
    parser.add_argument("--sources", nargs="+", metavar="NAME",
                        help="models forgetting is measured against (default: all)")
    parser.add_argument("--json", metavar="OUT", help="also write the scores as JSON to this file")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args) -> int:
    """Evaluate and print a markdown table; returns 0. Bad input raises RecallError (the dispatcher: exit 2)."""
    from ..evaluate import evaluate_models
    from ..probes import load_probe_files
    from .merge_cmd import ProgressPrinter

    models = parse_models(args.model)
    if args.batch_size < 1:
        raise RecallError(f"--batch-size must be at least 1, not {args.batch_size}")
    probes = load_probe_files(args.probes)
    progress = None if args.quiet else ProgressPrinter()
    table = evaluate_models(models, probes, sources=args.sources, batch_size=args.batch_size, progress=progress)
    if args.json:
        write_json(table.to_dict(), Path(args.json))
    print(table.to_markdown(), end="")
    return 0


def parse_models(values: list[str]) -> dict[str, str]:
    """``["a=path", ...]`` -> ``{"a": "path"}``; names must be unique."""
    models = {}
    for value in values:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise RecallError(f"--model {value!r}: expected NAME=PATH, e.g. --model merged=./out")
        if name in models:
            raise RecallError(f"--model: the name {name!r} is given twice")
        models[name] = path
    return models


def write_json(data: dict, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise RecallError(f"could not write {path}: {exc.strerror or exc}") from None

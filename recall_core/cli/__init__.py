"""``python -m recall_core {demo,analyze,merge,evaluate}``.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``.
Errors a user can cause print one line on stderr and exit with code 2; Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import RecallError

# subcommand -> (module, one-line help)
COMMANDS = {
    "demo": ("demo_cmd", "build (or reuse from the cache) the built-in demo workspace"),
    "analyze": ("analyze_cmd", "extract representations, compare layers and write similarity.json, plan.json, report.html"),
    "merge": ("merge_cmd", "run a plan.json headless and export a Hugging Face folder"),
    "evaluate": ("evaluate_cmd", "score models on probe sets (loss, perplexity, exact match, forgetting)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (each pulls in torch or plotly: seconds)."""
    parser = argparse.ArgumentParser(prog="python -m recall_core",
                                     description="RECALL Studio: representation-aware, layer-wise model merging.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f".{module_name}", __name__)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except RecallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: outputs are written atomically, no partial output is left", file=sys.stderr)
        return 130

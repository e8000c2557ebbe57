"""``python -m recall_core demo``: build (or reuse from the cache) the built-in demo workspace.

    python -m recall_core demo [--cache-dir DIR] [--seed N] [--force]

Prints one row per model (name, role, folder, exact-match accuracy per task on the held-out set, as
measured when the workspace was built) and the paths of the probe and evaluation files.
"""
from __future__ import annotations

import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("--cache-dir", help="cache root (default: $RECALL_CACHE_DIR, $XDG_CACHE_HOME/recall-studio "
                                            "or ~/.cache/recall-studio)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0); one cached workspace per seed")
    parser.add_argument("--force", action="store_true", help="rebuild even when the workspace is in the cache")


def run(args) -> int:
    from ..demo import build_demo
    from .common import print_table

    started = time.perf_counter()
    last = [-1]

    def progress(fraction: float, message: str) -> None:
        percent = int(100 * fraction)
        if percent // 10 != last[0] // 10 or fraction >= 1.0:  # about ten lines per build, on stderr
            last[0] = percent
            print(f"[{percent:3d}%] {message}", file=sys.stderr, flush=True)

    workspace = build_demo(cache_dir=args.cache_dir, seed=args.seed, progress=progress, force=args.force)
    records = {m["name"]: m for m in workspace.manifest["models"]}
    rows = []
    for spec in workspace.models:
        row = {"model": spec.name, "role": spec.role}
        for task, accuracy in records[spec.name]["accuracy"].items():
            row[task] = "-" if accuracy is None else f"{100 * accuracy:.0f}%"
        row["path"] = spec.path
        rows.append(row)
    print_table(rows)
    print(f"probe set:       {workspace.probe_file}")
    print(f"evaluation set:  {workspace.eval_file}")
    built = workspace.manifest.get("build_seconds")
    print(f"workspace:       {workspace.root} (built in {built} s; this call {time.perf_counter() - started:.1f} s)")
    return 0

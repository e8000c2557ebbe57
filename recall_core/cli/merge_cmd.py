"""``python -m recall_core merge``: run a saved merge plan headless and export the result.

    python -m recall_core merge --plan plan.json --out merged [--method ties] [--force]

``--method`` merges the plan's models with another method (the schedule is used by ``recall`` only).
"""
from __future__ import annotations

import re
import sys

from ..errors import PlanError
from ..plan import METHOD_NAMES


def add_arguments(parser) -> None:
    parser.add_argument("--plan", required=True, metavar="PLAN.json", help="a plan written by analyze or the dashboard")
    parser.add_argument("--out", required=True, metavar="DIR", help="the Hugging Face model folder to write")
    parser.add_argument("--method", choices=METHOD_NAMES, help="merge the plan's models with this method instead")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists (after the new one is complete)")
    parser.add_argument("--shard-size", default="2GB", metavar="SIZE",
                        help="largest safetensors shard, e.g. 500MB or 5GB (default: 2GB)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args) -> int:
    """Merge and export; returns 0. Bad input raises RecallError (the dispatcher prints one line, exit 2)."""
    from ..export import export_merge
    from ..plan import load_plan

    shard_bytes = parse_size(args.shard_size)
    plan = load_plan(args.plan)
    if args.method and args.method != plan.method:
        plan = plan.with_method(args.method)  # validated with the plan, before anything is written
    progress = None if args.quiet else ProgressPrinter()
    folder = export_merge(plan, args.out, force=args.force, shard_bytes=shard_bytes, progress=progress)
    print(folder)
    return 0


def parse_size(text: str) -> int:
    """``"500MB"`` -> bytes (decimal units: KB, MB, GB; a bare number is bytes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise PlanError(f"--shard-size {text!r} is not a size such as 500MB or 2GB")
    unit = match.group(2).upper().rstrip("B")
    size = int(float(match.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[unit])
    if size <= 0:
        raise PlanError(f"--shard-size must be positive, not {text!r}")
    return size


class ProgressPrinter:
    """Prints a progress line on stderr at each new step and every 10 %, not once per tensor."""

    def __init__(self, stream=None):
        self.stream = stream
        self.last = None

    def __call__(self, fraction: float, message: str) -> None:
        key = ((message.split() or [""])[0], int(10 * fraction))
        if key != self.last:
            self.last = key
            print(f"[{100 * fraction:3.0f}%] {message}", file=self.stream or sys.stderr, flush=True)

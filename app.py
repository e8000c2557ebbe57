"""RECALL Studio: the dashboard.

    python app.py                                   # the built-in demo workspace (built once, then cached)
    python app.py --model base=./base:base --model math=./math --model code=./code:reference \\
                  --probes probes.jsonl             # your own models (NAME=PATH[:ROLE], ROLE = base|expert|reference)

Binds 127.0.0.1 unless --host says otherwise; no public share link unless --share.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

ROLES = ("base", "expert", "reference")


def parse_model(value: str):
    """``NAME=PATH[:ROLE]`` (role default: expert). A ``:`` that is part of the path (``C:\\x``) is kept."""
    from recall_core.models import ModelSpec

    if "=" not in value:
        raise argparse.ArgumentTypeError(f"--model {value!r}: expected NAME=PATH or NAME=PATH:ROLE")
    name, path = value.split("=", 1)
    role = "expert"
    head, sep, tail = path.rpartition(":")
    if sep and tail in ROLES:
        path, role = head, tail
    if not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"--model {value!r}: NAME and PATH must not be empty")
    return ModelSpec(name.strip(), path.strip(), role)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="RECALL Studio: the dashboard.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH[:ROLE]", type=parse_model,
                        help="a model folder or hub id with a short name and a role (base, expert or reference; "
                             "default expert); repeat for every model. Without --model: the demo workspace.")
    parser.add_argument("--probes", action="append", default=[], metavar="FILE",
                        help="probe file (.txt, .jsonl, .csv); repeatable")
    parser.add_argument("--eval", action="append", default=[], metavar="FILE",
                        help="held-out evaluation file with answers (default: the probe files); repeatable")
    parser.add_argument("--cache-dir", default=None, type=Path,
                        help="cache for the demo models and representations (default: $RECALL_CACHE_DIR or "
                             "~/.cache/recall-studio)")
    parser.add_argument("--share", action="store_true", help="create a public Gradio share link (off by default)")
    parser.add_argument("--no-autoload", action="store_true", help="demo: do not load the workspace when a page opens")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from components import LAUNCH_KWARGS, create_app
    from components.common import AppConfig, DemoLoader
    from recall_core import session as steps
    from recall_core.errors import RecallError
    from recall_core.models import preload_transformers
    from recall_core.probes import load_probe_files
    from recall_core.typical import warm_up_umap

    config = AppConfig(models=args.model, probe_files=args.probes, eval_files=args.eval, cache_dir=args.cache_dir,
                       autoload=not args.no_autoload)
    template = steps.Session(cache_dir=config.representation_cache)
    loader = DemoLoader(config.cache_dir, config.seed)
    try:
        if config.models:
            report = steps.set_models(template, config.models)
            if not report.ok:
                print(f"warning: incompatible models: {report.message}", file=sys.stderr)
        if config.probe_files:
            steps.set_probes(template, load_probe_files(config.probe_files),
                             load_probe_files(config.eval_files) if config.eval_files else None)
    except RecallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    app = create_app(config, template=template, loader=loader)
    preload_transformers()  # before any worker thread: transformers' first import is not thread-safe
    app.queue(default_concurrency_limit=2)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, footer_links=["api", "settings"],
               prevent_thread_lock=True, **LAUNCH_KWARGS)
    # numba's first compile of UMAP (about 10 s on 2 cores) runs in the background, starting once the page has
    # had time to load, so that the first Samples view does not pay for it
    warm_up = threading.Timer(3.0, warm_up_umap, kwargs={"background": False})
    warm_up.daemon = True
    warm_up.start()
    if config.demo:
        loader.start()  # builds the demo (first run) or opens its cache while the browser connects
    app.block_thread()  # until Ctrl-C, which closes the server
    return 0


if __name__ == "__main__":
    sys.exit(main())

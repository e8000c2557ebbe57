"""Responsiveness of the dashboard (prints figures; not a test).

    python bench/bench_dashboard.py [--cache-dir DIR] [--no-browser]

1. the demo workspace is built once (or found in the cache);
2. ``python app.py`` is started as a subprocess: time to the first HTTP 200, to an interactive page in chromium
   (the "Load demo workspace" button is there) and to the demo loaded and analysed in that page;
3. through the API, in a fresh session: time to the first UMAP view (numba's compile is hidden by the
   background warm-up that app.py starts), then the whole demo flow step by step:
   load -> extract -> similarity -> schedule edit -> merge and evaluate -> generations -> export.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def row(label: str, seconds: float, note: str = "") -> None:
    print(f"  {label:<44} {seconds:7.2f} s  {note}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="demo/representation cache (default: the user's)")
    parser.add_argument("--no-browser", action="store_true", help="skip the chromium measurement")
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    print("RECALL Studio dashboard benchmark", flush=True)
    started = time.perf_counter()
    from recall_core.demo import build_demo, demo_root

    cached = demo_root(args.cache_dir).is_dir()
    build_demo(cache_dir=args.cache_dir)
    row("demo workspace", time.perf_counter() - started, "(cached)" if cached else "(built now, first run only)")

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "app.py", "--port", str(port)]
    if args.cache_dir:
        command += ["--cache-dir", str(args.cache_dir)]
    launched = time.perf_counter()
    log = open(Path(tempfile.gettempdir()) / f"bench_dashboard_{port}.log", "w")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_http(url)
        except TimeoutError:
            print(Path(log.name).read_text()[-3000:])
            raise
        row("python app.py -> HTTP 200", time.perf_counter() - launched)
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        if not args.no_browser and Path(chromium).exists():
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(url)
                page.wait_for_selector("#load-demo", timeout=120_000)
                row("python app.py -> interactive page (chromium)", time.perf_counter() - launched)
                page.wait_for_function("document.querySelector('#models-status').innerText.includes('analysed')",
                                       timeout=600_000)
                row("python app.py -> demo loaded + analysed in page", time.perf_counter() - launched)
                browser.close()

        from gradio_client import Client

        client = Client(url, verbose=False)
        t = time.perf_counter()
        client.predict(api_name="/load_demo")
        row("API: load demo (+ analysis, cached)", time.perf_counter() - t)
        t = time.perf_counter()
        status = client.predict(None, 1, "task", api_name="/open_samples")[-1]
        row("API: first UMAP view", time.perf_counter() - t, f"({time.perf_counter() - launched:.1f} s after launch)")
        assert status.startswith("✓"), status
        t = time.perf_counter()
        client.predict(None, 2, "cluster", api_name="/samples")
        row("API: next UMAP view (another layer)", time.perf_counter() - t)

        print("whole demo flow through the API (new session):", flush=True)
        flow = Client(url, verbose=False)
        total = time.perf_counter()

        def step(label, *args, api_name):
            t = time.perf_counter()
            out = flow.predict(*args, api_name=api_name)
            outs = out if isinstance(out, (list, tuple)) else [out]
            status = next((o for o in outs if isinstance(o, str) and o[:1] in "✓⚠ℹ"), "")
            row(label, time.perf_counter() - t, "" if not status.startswith("⚠") else f"!! {status}")
            return out

        models = step("load", api_name="/load_demo")[0]
        reference = next(r[0] for r in models["data"] if r[2] == "reference")
        step("extract", api_name="/extract")
        step("open the similarity tab", 0, None, api_name="/open_similarity")
        step("similarity (rbf)", "rbf", "median", "none", "mean", "typical", 16, False, 2, reference,
             api_name="/similarity")
        table = step("schedule tau = 0.05", 0.05, api_name="/schedule_tau")[0]
        table["data"][1][1] = "2"
        step("schedule edit", table, api_name="/edit_schedule")
        step("merge + evaluate (recall, average, ties)", ["recall", "average", "ties"], 1.0, 0.5, 0.5, 0,
             api_name="/merge")
        prompts = flow.predict("", api_name="/open_merge")[0]
        step("generations", prompts, 8, api_name="/generate")
        step("export (zip, plan.json, mergekit.yaml)", "recall", "bench-merge", "", False, api_name="/export")
        row("whole flow", time.perf_counter() - total)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures: tiny real Hugging Face models built and saved in the test run (seconds)."""
import os

# Tests never reach a hub: without this a hub id fails only after ~26 s of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from recall_core.models import preload_transformers  # noqa: E402

# The app fixtures start threads (demo build, UMAP warm-up): import transformers here first.
preload_transformers()


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """Four tiny Llama models saved as safetensors with a tokenizer: a base and three drifted 'fine-tunes'.

    Returns {name: folder}. ``a`` and ``b`` drift from block 1 on, ``ref`` from block 2 on.
    """
    from recall_core.toy import make_char_tokenizer, make_tiny_model, perturbed_copy, save_model

    root = tmp_path_factory.mktemp("tiny_family")
    tokenizer = make_char_tokenizer()
    base = make_tiny_model("llama", seed=0, n_blocks=3, hidden=32)
    models = {
        "base": base,
        "a": perturbed_copy(base, 0.02, seed=1, start_block=1),
        "b": perturbed_copy(base, 0.03, seed=2, start_block=1),
        "ref": perturbed_copy(base, 0.02, seed=3, start_block=2),
    }
    return {name: save_model(model, root / name, tokenizer) for name, model in models.items()}


@pytest.fixture(scope="session")
def probe_jsonl(tmp_path_factory):
    """A small probe file with two tasks and answers."""
    import json

    path = tmp_path_factory.mktemp("probes") / "probes.jsonl"
    rows = [{"text": f"{a}+{b}=", "task": "add", "answer": str(a + b)} for a, b in zip(range(10, 30), range(5, 25))]
    rows += [{"text": f"rev {w}=", "task": "rev", "answer": w[::-1]} for w in
             ["abc", "hello", "world", "zebra", "kiwi", "mango", "pear", "plum", "fig", "lime", "date", "yuzu",
              "grape", "melon", "apple", "berry", "cherry", "lemon", "olive", "peach"]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# ---- dashboard (tests/test_app_api.py, tests/test_browser.py) ----------------------------------------------

@pytest.fixture(scope="session")
def demo_cache_dir(tmp_path_factory):
    """One demo cache for the whole run: ``$RECALL_TEST_CACHE`` when set (reused between runs), else a fresh
    folder, so that CI builds the demo exactly once per run."""
    from pathlib import Path

    given = os.environ.get("RECALL_TEST_CACHE")
    return Path(given) if given else tmp_path_factory.mktemp("recall_cache")


@pytest.fixture(scope="session")
def app_url(demo_cache_dir):
    """The dashboard on the demo workspace, served on 127.0.0.1 and a free port for the whole run.

    The demo is built (first run only) before any test uses the app; each test client gets its own session.
    """
    import socket

    from components import LAUNCH_KWARGS, create_app
    from components.common import AppConfig
    from recall_core.typical import warm_up_umap

    warm_up_umap(background=True)
    app = create_app(AppConfig(cache_dir=demo_cache_dir))
    app.recall_context.loader.start()
    # Wait for it: model initialisation draws from torch's global generator, which tests running beside the
    # build would also draw from, giving other weights than the seed's (and than the README's figures).
    app.recall_context.loader.get()
    app.queue(default_concurrency_limit=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                           **LAUNCH_KWARGS)
    yield url
    app.close()

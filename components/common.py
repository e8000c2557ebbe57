"""Helpers shared by the tabs: app configuration, the demo loader, error display and progress adapters.

Nothing here computes anything: handlers translate widget values into ``recall_core`` calls, and these
helpers turn the results and the errors into what the widgets show.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gradio as gr

from recall_core.models import preload_transformers
from recall_core.errors import RecallError

log = logging.getLogger("recall_studio")

# One heavy job at a time on the machine (extraction, merges, evaluation, export): they all load models
# and would only slow each other down on a small CPU.
HEAVY = dict(concurrency_id="heavy", concurrency_limit=1)


@dataclass
class AppConfig:
    """What the app opens on: the demo workspace, or the user's own models and probe files.

    models: ``ModelSpec`` list; empty means the demo workspace.
    probe_files: probe files for the analysis (optional with own models: upload them in the page).
    eval_files: held-out files for the evaluation (default: the probe files).
    cache_dir: root of the caches (demo models, representations); None = ``$RECALL_CACHE_DIR`` or
        ``~/.cache/recall-studio``.
    autoload: on page open, load the workspace (demo: load, extract and analyse; own models: load).
    """

    models: list = field(default_factory=list)
    probe_files: list[str] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)
    cache_dir: Path | None = None
    seed: int = 0
    autoload: bool = True

    @property
    def demo(self) -> bool:
        return not self.models

    @property
    def representation_cache(self) -> Path | None:
        return Path(self.cache_dir) / "representations" if self.cache_dir else None


class DemoLoader:
    """Builds (first time) or opens (cached) the demo workspace once per process, shared by all sessions.

    ``start()`` begins in a background thread (``python app.py`` calls it at launch so the build runs while
    the browser opens); ``get(progress)`` waits for it, forwarding the build's progress to the page.
    """

    def __init__(self, cache_dir=None, seed: int = 0):
        self.cache_dir = cache_dir
        self.seed = seed
        self.workspace = None
        self.error: BaseException | None = None
        self.fraction = 0.0
        self.message = "preparing the demo workspace"
        self.started_at: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self.workspace is None and (self._thread is None or not self._thread.is_alive()):
                preload_transformers()
                self.error = None
                self.started_at = time.perf_counter()
                self._thread = threading.Thread(target=self._build, name="demo-build", daemon=True)
                self._thread.start()

    def _report(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), message

    def _build(self) -> None:
        try:
            from recall_core.demo import build_demo

            self.workspace = build_demo(cache_dir=self.cache_dir, seed=self.seed, progress=self._report)
            log.info("demo workspace ready at %s (%.1f s)", self.workspace.root, time.perf_counter() - self.started_at)
        except BaseException as exc:  # noqa: BLE001 - shown to the user by get()
            log.error("demo build failed: %s", exc)
            self.error = exc

    def get(self, progress: Callable[[float, str], None] | None = None, poll: float = 0.25):
        """The workspace; builds it first if needed, reporting progress meanwhile."""
        if self.workspace is not None:
            return self.workspace
        self.start()
        thread = self._thread
        while thread is not None and thread.is_alive():
            if progress:
                progress(min(self.fraction, 0.999), f"building the demo workspace (first run only): {self.message}")
            thread.join(poll)
        if self.workspace is None:
            error = self.error or RecallError("the demo workspace could not be built")
            if isinstance(error, RecallError):
                raise error
            raise RecallError(f"the demo workspace could not be built: {type(error).__name__}: {error}")
        return self.workspace


# ---------------------------------------------------------------------------------------------- messages

def ok(message: str) -> str:
    return f"✓ {message}"


def info(message: str) -> str:
    return f"ℹ {message}"


def error_text(message: str) -> str:
    return f"⚠ **{message}**"


def user_message(exc: BaseException) -> str:
    """One line for the page: a RecallError's own message; anything else with its type, logged in full."""
    if isinstance(exc, RecallError):
        return str(exc)
    log.error("unexpected error\n%s", "".join(traceback.format_exception(exc)))
    return f"unexpected error: {type(exc).__name__}: {exc} (details in the server log)"


def guarded(n_outputs: int, status_index: int = -1):
    """Wrap a handler whose outputs end with (or contain at ``status_index``) a status Markdown.

    On an error the handler's other outputs are left as they are (``gr.skip()``: nothing the user typed or
    saw is lost), the status shows the message and a warning toast pops up. The app keeps working.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every error becomes a message in the page
                message = user_message(exc)
                gr.Warning(message, duration=6)
                outputs = [gr.skip()] * n_outputs
                outputs[status_index] = error_text(message)
                return tuple(outputs) if n_outputs > 1 else outputs[0]
        return wrapper
    return decorate


def progress_callback(progress: gr.Progress | None, lo: float = 0.0, hi: float = 1.0):
    """A ``recall_core`` progress callback ``(fraction, message)`` that drives a ``gr.Progress`` bar."""
    if progress is None:
        return None

    def report(fraction: float, message: str = "") -> None:
        try:
            progress(lo + (hi - lo) * max(0.0, min(1.0, float(fraction))), desc=message)
        except Exception:  # noqa: BLE001 - a progress bar must never break a job
            pass
    return report


def table(rows: list[dict], columns: list[str] | None = None) -> dict:
    """A ``gr.Dataframe`` value (headers + data) from dict rows, keeping column order."""
    columns = columns or (list(rows[0]) if rows else [])
    return {"headers": columns, "data": [[_cell(row.get(c)) for c in columns] for row in rows]}


def _cell(value):
    if isinstance(value, float):
        return round(value, 4)
    return "" if value is None else value


def empty_figure(message: str):
    """A blank plotly figure with a centred hint, for views that have nothing to show yet."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=260, template="plotly_white", margin=dict(l=20, r=20, t=20, b=20))
    return fig


def intro(text: str) -> gr.Markdown:
    """The one-line explanation at the top of every tab."""
    return gr.Markdown(text, elem_classes=["tab-intro"])

"""The RECALL Studio dashboard: one module per tab, assembled here into a ``gr.Blocks``.

``create_app(config)`` returns the Blocks; ``LAUNCH_KWARGS`` holds what belongs to ``launch()`` in Gradio 6
(theme, css). ``build_demo_app()`` is the Blocks on the demo workspace.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from recall_core.session import Session

from . import export_tab, merge_tab, models_tab, samples_tab, schedule_tab, similarity_tab
from .common import AppConfig, DemoLoader

TITLE = "RECALL Studio"

CSS = """
.gradio-container {max-width: 1480px !important; margin: 0 auto;}
.tab-intro p {margin: 0 0 4px 0; font-size: 0.95em;}
.status p {margin: 4px 0;}
#app-title h1 {margin-bottom: 0;}
"""

LAUNCH_KWARGS = dict(theme=gr.themes.Soft(primary_hue="indigo"), css=CSS)


@dataclass
class Context:
    """What every tab builder needs: the per-browser state, the app config and the shared demo loader."""

    state: gr.State
    config: AppConfig
    loader: DemoLoader
    template: Session
    tabs: dict = field(default_factory=dict)
    on_page_open: tuple | None = None


def create_app(config: AppConfig | None = None, template: Session | None = None,
               loader: DemoLoader | None = None) -> gr.Blocks:
    """The dashboard's Blocks.

    Args:
        config: what to open on (default: the demo workspace, loaded when a page opens).
        template: the initial session every browser session gets a deep copy of (e.g. with the user's models
            already set by ``app.py``); default: an empty session using the config's cache.
        loader: the shared demo loader (``app.py`` starts it in the background at launch).
    """
    config = config or AppConfig()
    loader = loader or DemoLoader(config.cache_dir, config.seed)
    template = template or Session(cache_dir=config.representation_cache)
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nRepresentation-aware, layer-wise merging of fine-tuned language models "
                    "(after RECALL, Wang et al., EMNLP 2025). Work through the tabs from left to right.",
                    elem_id="app-title")
        state = gr.State(template)
        ctx = Context(state=state, config=config, loader=loader, template=template)
        with gr.Tabs(elem_id="tabs"):
            models_tab.build(ctx)
            samples_tab.build(ctx)
            similarity_tab.build(ctx)
            schedule_tab.build(ctx)
            merge_tab.build(ctx)
            export_tab.build(ctx)
        if ctx.on_page_open is not None:
            fn, inputs, outputs, progress_on = ctx.on_page_open
            app.load(fn, inputs, outputs, api_name="open_workspace", show_progress_on=progress_on,
                     concurrency_id="heavy", concurrency_limit=1)
    app.recall_context = ctx  # for tests and the app script
    return app


def build_demo_app(cache_dir=None, autoload: bool = True) -> gr.Blocks:
    """The dashboard on the demo workspace."""
    return create_app(AppConfig(cache_dir=cache_dir, autoload=autoload))


__all__ = ["create_app", "build_demo_app", "AppConfig", "DemoLoader", "LAUNCH_KWARGS", "CSS", "TITLE"]

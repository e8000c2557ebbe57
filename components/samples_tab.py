"""Tab 2, Samples: a 2-D map of the probe texts as one model sees them at one layer, and how well each
layer separates the tasks."""
from __future__ import annotations

import gradio as gr

from recall_core import figures
from recall_core import views

from .common import empty_figure, guarded, info, intro, ok


def layer_label(index: int) -> str:
    return "embed (0)" if index == 0 else f"block_{index - 1} (hidden state {index})"


def stamp(session):
    """What the views of this tab depend on: when it is unchanged, reopening the tab recomputes nothing."""
    reps = tuple((n, r.fingerprint, r.probe_hash, r.pooling) for n, r in session.representations.items())
    s = session.settings
    return reps, s.clusters, s.cluster_layer, s.seed


def build(ctx) -> None:
    with gr.Tab("2 · Samples", id="samples") as tab:
        seen = gr.State(None)  # what the views show now: reopening the tab skips unchanged views
        intro("Each point is a probe text, placed by **UMAP** (PCA below 10 texts) of one model's pooled hidden "
              "states at one layer. Colour by task or by k-means cluster; black diamonds mark the **typical "
              "samples** the similarity is computed on. Hover a point to read its text. Below: how well each "
              "layer separates the tasks.")
        with gr.Row(equal_height=True):
            model = gr.Dropdown(label="model", choices=[], interactive=True, scale=2, elem_id="samples-model")
            layer = gr.Slider(label="layer (0 = embeddings, i = output of block i−1)",
                              minimum=0, maximum=1, step=1, value=1, interactive=True, scale=3,
                              elem_id="samples-layer")
            color = gr.Radio(label="colour by", choices=["task", "cluster"], value="task", scale=1,
                             elem_id="samples-color")
        status = gr.Markdown(info("Extract representations in tab 1 first."), elem_classes=["status"],
                             elem_id="samples-status")
        scatter = gr.Plot(label="samples", elem_id="samples-plot")
        separability = gr.Plot(label="separability by layer", elem_id="separability-plot")

    def scatter_figure(session, model_name, layer_index, color_by):
        view = views.sample_view(session, model_name, int(layer_index), color_by)
        title = f"{model_name} at {layer_label(view.layer)}: {view.method.upper()} of {len(view.texts)} texts"
        fig = figures.samples_scatter(view.coords, view.texts, view.groups, view.typical, color_by, title=title)
        return fig, ok(f"{view.method.upper()} of {len(view.texts)} texts; {len(view.typical)} typical samples "
                       f"(k-means on {session.reference}, hidden state {session.typical.layer}).")

    @guarded(3, status_index=1)
    def on_view(session, model_name, layer_index, color_by):
        fig, message = scatter_figure(session, model_name, layer_index, color_by)
        return fig, message, stamp(session)

    @guarded(6, status_index=4)
    def on_open(session, last, model_name, layer_index, color_by):
        if not session.representations:
            blank = empty_figure("Extract representations in tab 1 to see the samples.")
            return (gr.update(choices=[], value=None), gr.update(), blank, blank,
                    info("Extract representations in tab 1 first."), None)
        current = stamp(session)
        if last == current:
            return tuple(gr.skip() for _ in range(6))
        names = list(session.representations)
        model_name = model_name if model_name in names else session.reference
        n_layers = next(iter(session.representations.values())).n_layers
        layer_index = session.typical.layer if session.typical is not None else n_layers - 1
        fig, message = scatter_figure(session, model_name, layer_index, color_by)
        sep = views.separability_by_layer(session)
        layer_names = ["embed"] + [f"block_{i}" for i in range(n_layers - 1)]
        if len(session.probes.task_names) < 2:
            sep_fig = empty_figure("Separability needs at least two tasks in the probe set.")
        else:
            sep_fig = figures.separability_line(sep, layer_names)
        return (gr.update(choices=names, value=model_name),
                gr.update(minimum=0, maximum=n_layers - 1, value=layer_index),
                fig, sep_fig, message, current)

    outputs = [scatter, status, seen]
    model.input(on_view, [ctx.state, model, layer, color], outputs, api_name="samples", show_progress_on=[scatter])
    color.input(on_view, [ctx.state, model, layer, color], outputs, api_visibility="private",
                show_progress_on=[scatter])
    layer.release(on_view, [ctx.state, model, layer, color], outputs, api_visibility="private",
                  show_progress_on=[scatter])
    tab.select(on_open, [ctx.state, seen, model, layer, color], [model, layer, scatter, separability, status, seen], show_progress_on=[scatter, separability],
               api_name="open_samples")
    ctx.tabs["samples"] = tab


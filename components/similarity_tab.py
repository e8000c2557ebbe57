"""Tab 3, Layer similarity: how similar every model is to the reference at every layer, model-by-model at
one layer, and layer-by-layer within one model. All heatmaps share the colour range [0, 1]."""
from __future__ import annotations

import time

import gradio as gr

from recall_core import figures
from recall_core import session as steps
from recall_core import views
from recall_core.representations import POOLINGS
from recall_core.similarity import METRICS, SCALINGS, SIGMA_MODES

from .common import HEAVY, empty_figure, guarded, info, intro, ok, progress_callback, table

METRIC_CHOICES = [("RBF kernel (RECALL)", "rbf"), ("linear CKA", "cka"), ("cosine", "cosine")]
SIGMA_CHOICES = [("median distance", "median"), ("mean distance", "mean"), ("1 (raw)", "unit")]
SCALING_CHOICES = [("none", "none"), ("standardise per dimension", "standardize"), ("L2 per vector", "l2")]
POOLING_CHOICES = [("mean of all tokens", "mean"), ("mean, skip first token", "mean_skip_first"),
                   ("last token", "last")]
SAMPLES_CHOICES = [("typical samples (k-means)", "typical"), ("all probe texts", "all")]
assert {v for _, v in METRIC_CHOICES} == set(METRICS) and {v for _, v in SCALING_CHOICES} == set(SCALINGS)
assert {v for _, v in SIGMA_CHOICES} == set(SIGMA_MODES) and {v for _, v in POOLING_CHOICES} == set(POOLINGS)


def layer_names(n_layers: int) -> list[str]:
    return ["embed"] + [f"block_{i}" for i in range(n_layers - 1)]


def values_table(result) -> dict:
    names = result.layer_names
    rows = [{"model": m, **{layer: float(v) for layer, v in zip(names, result.values[i])}}
            for i, m in enumerate(result.models)]
    return table(rows, ["model"] + names)


def describe(session, seconds: float) -> str:
    sim = session.similarity
    s = session.settings
    sigma = f", σ = {s.sigma_mode} pairwise distance per layer" if sim.metric == "rbf" else ""
    return ok(f"{sim.metric} similarity to **{sim.reference}** on {sim.settings.get('samples', '?')} "
              f"{'typical samples' if s.similarity_on == 'typical' else 'probe texts'} ({s.pooling} pooling, "
              f"scaling {s.scaling}{sigma}) in {seconds:.1f} s. The RECALL schedule in tab 4 was updated.")


def stamp(session):
    sim = session.similarity
    return None if sim is None else (sim.metric, tuple(sim.models), sim.values.shape, hash(sim.values.tobytes()))


def build(ctx) -> None:
    s0 = ctx.template.settings
    with gr.Tab("3 · Layer similarity", id="similarity") as tab:
        seen = gr.State(None)  # what the views show now: reopening the tab skips unchanged views
        intro("How similar each model's representations are to the **reference** model's, layer by layer "
              "(1 = identical). Shallow layers usually agree, deep layers diverge: that is what the RECALL "
              "schedule uses. Change the metric or its options and press **Compute similarity**.")
        with gr.Row(equal_height=True):
            metric = gr.Radio(METRIC_CHOICES, value=s0.metric, label="metric", scale=2, elem_id="sim-metric")
            sigma = gr.Dropdown(SIGMA_CHOICES, value=s0.sigma_mode, label="σ (RBF bandwidth per layer)", scale=1)
            scaling = gr.Dropdown(SCALING_CHOICES, value=s0.scaling, label="feature scaling", scale=1)
            pooling = gr.Dropdown(POOLING_CHOICES, value=s0.pooling, label="pooling (re-extracts)", scale=1)
        with gr.Row():
            samples = gr.Radio(SAMPLES_CHOICES, value=s0.similarity_on, label="compare on", scale=2)
            clusters = gr.Slider(2, 64, value=s0.clusters, step=1, label="typical samples k (k-means clusters)",
                                 scale=2)
            l2 = gr.Checkbox(value=s0.l2_normalize, label="RBF on L2-normalised vectors", scale=1)
            compute = gr.Button("Compute similarity", variant="primary", scale=0, min_width=200,
                                elem_id="compute-similarity")
        status = gr.Markdown(info("Extract representations in tab 1 first."), elem_classes=["status"],
                             elem_id="similarity-status")
        heatmap = gr.Plot(label="similarity to the reference (models × layers)", elem_id="similarity-heatmap")
        with gr.Accordion("Similarity values", open=False):
            values = gr.Dataframe(value={"headers": ["model"], "data": []}, interactive=False, label="similarity to the reference", elem_id="similarity-values")
        with gr.Row():
            with gr.Column():
                pair_layer = gr.Slider(0, 1, value=1, step=1, label="pair view: layer (hidden-state index)",
                                       elem_id="pair-layer")
                pair = gr.Plot(label="model × model at one layer", elem_id="pair-heatmap")
            with gr.Column():
                layer_model = gr.Dropdown(choices=[], label="layer × layer view: model", elem_id="layer-model")
                layers = gr.Plot(label="layer × layer (linear CKA) within one model", elem_id="layer-heatmap")

    def pair_figure(session, layer_index):
        names, matrix = views.pair_matrix(session, int(layer_index))
        label = layer_names(session.similarity.values.shape[1])[int(layer_index)]
        return figures.heatmap(matrix, names, names, f"{session.settings.metric} similarity between models at {label}")

    def layer_figure(session, model_name):
        matrix = views.layer_similarity(session, model_name)
        names = layer_names(matrix.shape[0])
        return figures.heatmap(matrix, names, names, f"layer × layer linear CKA within {model_name}",
                               colorbar_title="CKA")

    def all_views(session, seconds, pair_index=None, model_name=None):
        sim = session.similarity
        n_layers = sim.values.shape[1]
        pair_index = n_layers - 1 if pair_index is None or pair_index >= n_layers else int(pair_index)
        names = session.merged_models
        model_name = model_name if model_name in names else session.reference
        main = figures.similarity_heatmap(sim.values, sim.models, sim.layer_names, sim.reference, sim.metric)
        return (main, values_table(sim), gr.update(maximum=n_layers - 1, value=pair_index),
                pair_figure(session, pair_index), gr.update(choices=names, value=model_name),
                layer_figure(session, model_name), describe(session, seconds), stamp(session))

    view_outputs = [heatmap, values, pair_layer, pair, layer_model, layers, status, seen]

    @guarded(len(view_outputs), status_index=6)
    def on_compute(session, metric_, sigma_, scaling_, pooling_, samples_, k, l2_, pair_index, model_name,
                   progress=gr.Progress()):
        started = time.perf_counter()
        steps.set_settings(session, metric=metric_, sigma_mode=sigma_, scaling=scaling_, pooling=pooling_,
                           similarity_on=samples_, clusters=int(k), l2_normalize=bool(l2_))
        if not session.representations:
            steps.require_ready(session, "extract")
            steps.extract_all(session, progress=progress_callback(progress, 0.0, 0.9))
        progress(0.92, desc="similarity")
        steps.compute_similarity(session)
        steps.compute_schedule(session)
        return all_views(session, time.perf_counter() - started, pair_index, model_name)

    @guarded(len(view_outputs) + 7, status_index=6)
    def on_open(session, last, pair_index, model_name):
        if not session.representations:
            blank = empty_figure("Extract representations in tab 1 to compare the layers.")
            return (blank, gr.skip(), gr.skip(), blank, gr.skip(), blank, info("Extract representations in tab 1 "
                    "first."), None) + (gr.skip(),) * 7
        if session.similarity is None:
            steps.compute_similarity(session)
        if stamp(session) == last:
            return (gr.skip(),) * (len(view_outputs) + 7)
        s = session.settings
        controls = (s.metric, s.sigma_mode, s.scaling, s.pooling, s.similarity_on, s.clusters, s.l2_normalize)
        return all_views(session, 0.0, pair_index, model_name) + controls

    @guarded(2)
    def on_pair(session, layer_index):
        if session.similarity is None:
            steps.compute_similarity(session)
        return pair_figure(session, layer_index), gr.skip()

    @guarded(2)
    def on_layer_model(session, model_name):
        return layer_figure(session, model_name), gr.skip()

    settings = [metric, sigma, scaling, pooling, samples, clusters, l2]
    compute.click(on_compute, [ctx.state, *settings, pair_layer, layer_model], view_outputs, api_name="similarity",
                  show_progress_on=[heatmap], **HEAVY)
    pair_layer.release(on_pair, [ctx.state, pair_layer], [pair, status], api_name="pair_view", show_progress_on=[pair])
    layer_model.input(on_layer_model, [ctx.state, layer_model], [layers, status], api_name="layer_view",
                      show_progress_on=[layers])
    tab.select(on_open, [ctx.state, seen, pair_layer, layer_model], view_outputs + settings, api_name="open_similarity",
               show_progress_on=[heatmap, pair, layers])
    ctx.tabs["similarity"] = tab

"""Pure plotly figure builders: arrays in, ``go.Figure`` out.

The dashboard and the CLI's HTML report use the same builders, so a figure looks the same in both.
Similarity heatmaps use a fixed colour range [0, 1] so that views can be compared.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

HEATMAP_SCALE = "Viridis"
MAX_LABELLED_CELLS = 24  # write values into cells only up to 24 x 24
HOVER_CHARS = 200
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
           "#EECA3B"]


def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01), height=height, margin=dict(l=60, r=20, t=50, b=50),
                      template="plotly_white", legend=dict(itemsizing="constant"))
    return fig


def _short(text: str) -> str:
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= HOVER_CHARS else text[: HOVER_CHARS - 1] + "…"


def samples_scatter(coords: np.ndarray, texts: list[str], groups: list, typical: np.ndarray | None = None,
                    color_by: str = "task", title: str = "Probe samples") -> go.Figure:
    """2-D scatter of samples ``coords (n, 2)`` coloured by ``groups`` (task or cluster), typical ones marked.

    Hover shows the group, the sample index and the text (cut to 200 characters).
    """
    coords = np.asarray(coords)
    groups = [str(g) for g in groups]
    typical_set = set(int(i) for i in (typical if typical is not None else []))
    fig = go.Figure()
    for k, group in enumerate(dict.fromkeys(groups)):
        idx = [i for i, g in enumerate(groups) if g == group]
        fig.add_trace(go.Scatter(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=f"{color_by} {group}",
            marker=dict(size=8, color=PALETTE[k % len(PALETTE)], opacity=0.75),
            customdata=[[group, i, _short(texts[i])] for i in idx],
            hovertemplate=f"{color_by} %{{customdata[0]}} · #%{{customdata[1]}}<br>%{{customdata[2]}}<extra></extra>",
        ))
    if typical_set:
        idx = sorted(typical_set)
        fig.add_trace(go.Scatter(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name="typical sample",
            marker=dict(size=15, symbol="diamond-open", color="black", line=dict(width=2)),
            customdata=[[groups[i], i, _short(texts[i])] for i in idx],
            hovertemplate="typical · %{customdata[0]} · #%{customdata[1]}<br>%{customdata[2]}<extra></extra>",
        ))
    fig.update_xaxes(showticklabels=False, title="")
    fig.update_yaxes(showticklabels=False, title="", scaleanchor="x", scaleratio=1)
    return _layout(fig, title, height=520)


def separability_line(values: dict[str, np.ndarray], layer_names: list[str],
                      title: str = "Task separability by layer (silhouette)") -> go.Figure:
    """One line per model of a per-layer score ``(n_layers,)``."""
    fig = go.Figure()
    for k, (name, v) in enumerate(values.items()):
        fig.add_trace(go.Scatter(x=layer_names, y=np.asarray(v), mode="lines+markers", name=name,
                                 line=dict(color=PALETTE[k % len(PALETTE)])))
    fig.update_yaxes(title="silhouette", range=[-0.2, 1])
    fig.update_xaxes(title="hidden state (embed = 0, block_i = output of block i)")
    return _layout(fig, title, height=360)


def heatmap(matrix: np.ndarray, x_labels: list[str], y_labels: list[str], title: str, zmin: float = 0.0,
            zmax: float = 1.0, colorbar_title: str = "similarity") -> go.Figure:
    """A heatmap ``matrix (len(y), len(x))`` with a fixed colour range; values in cells when small enough."""
    matrix = np.asarray(matrix, dtype=float)
    labelled = matrix.shape[0] <= MAX_LABELLED_CELLS and matrix.shape[1] <= MAX_LABELLED_CELLS
    fig = go.Figure(go.Heatmap(
        z=matrix, x=x_labels, y=y_labels, zmin=zmin, zmax=zmax, colorscale=HEATMAP_SCALE,
        colorbar=dict(title=colorbar_title),
        text=np.round(matrix, 3) if labelled else None, texttemplate="%{text}" if labelled else None,
        hovertemplate="%{y} · %{x}: %{z:.4f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=max(300, 60 + 34 * len(y_labels)))


def similarity_heatmap(values: np.ndarray, models: list[str], layer_names: list[str], reference: str,
                       metric: str) -> go.Figure:
    """Models x layers similarity to the reference, colour range [0, 1]."""
    return heatmap(values, layer_names, models, f"{metric} similarity to the reference ({reference}) by layer")


def schedule_area(rows: list[str], models: list[str], weights: np.ndarray,
                  title: str = "Fusion weights by depth") -> go.Figure:
    """Stacked area of the schedule weights ``(n_rows, n_models)`` along the rows (embed ... head)."""
    weights = np.asarray(weights)
    fig = go.Figure()
    for k, model in enumerate(models):
        fig.add_trace(go.Scatter(x=rows, y=weights[:, k], mode="lines", stackgroup="w", name=model,
                                 line=dict(width=0.5, color=PALETTE[k % len(PALETTE)]),
                                 hovertemplate=f"{model} · %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_yaxes(title="weight", range=[0, 1])
    fig.update_xaxes(title="part of the model (shallow → deep)")
    return _layout(fig, title, height=380)


def evaluation_bars(scores: dict[str, dict[str, float]], title: str = "Accuracy per task",
                    sources: list[str] | None = None) -> go.Figure:
    """Grouped bars: one group per task, one bar per model; ``scores[model][task]`` in [0, 1].

    Source models are drawn lighter than merges so forgetting stands out.
    """
    fig = go.Figure()
    sources = set(sources or [])
    for k, (model, per_task) in enumerate(scores.items()):
        tasks = list(per_task)
        fig.add_trace(go.Bar(x=tasks, y=[per_task[t] for t in tasks], name=model,
                             marker=dict(color=PALETTE[k % len(PALETTE)], opacity=0.45 if model in sources else 1.0,
                                         pattern_shape="/" if model in sources else ""),
                             hovertemplate=f"{model} · %{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="accuracy", range=[0, 1])
    return _layout(fig, title, height=400)


def report_html(title: str, sections: list[tuple[str, object]]) -> str:
    """A self-contained HTML page (plotly.js inlined once, so it opens offline).

    sections: (heading, content) where content is a go.Figure, an HTML string or a list of dict rows.
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    plotly_included = False
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, go.Figure):
            parts.append(content.to_html(full_html=False, include_plotlyjs=not plotly_included))
            plotly_included = True
        elif isinstance(content, list):
            parts.append(_table_html(content))
        else:
            parts.append(str(content))
    parts.append("</body></html>")
    return "\n".join(parts)


def _table_html(rows: list[dict]) -> str:
    if not rows:
        return "<p>(empty)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)

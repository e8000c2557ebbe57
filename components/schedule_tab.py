"""Tab 4, Fusion schedule: the weight of every model in every part of the merged model, from the RECALL
similarity (temperature τ), from a preset, or edited by hand."""
from __future__ import annotations

import math

import gradio as gr

from recall_core import figures
from recall_core import session as steps

from .common import empty_figure, guarded, info, intro, ok

PRESET_CHOICES = [("RECALL: softmax(similarity / τ)", "recall"), ("uniform (model soup)", "uniform"),
                  ("linear ramp: uniform → reference", "linear_ramp"),
                  ("reference only from block k", "reference_above")]
DECIMALS = 4


def table_value(schedule) -> dict:
    data = [[row] + [round(float(w), DECIMALS) for w in weights] for row, weights in zip(schedule.rows,
                                                                                         schedule.weights)]
    return {"headers": ["row"] + list(schedule.models), "data": data}


def spread_text(schedule) -> str:
    """How far the schedule is from uniform: max/min weight per row, shallowest, deepest and largest."""
    spread = schedule.spread()

    def fmt(value):
        return "∞" if not math.isfinite(value) else f"{value:.2f}"
    worst = max(range(len(spread)), key=lambda r: spread[r])
    return (f"**Spread** (max / min weight in a row; 1 = uniform): {schedule.rows[0]} {fmt(spread[0])}, "
            f"{schedule.rows[-1]} {fmt(spread[-1])}, largest {fmt(spread[worst])} at {schedule.rows[worst]}. "
            f"Source: *{schedule.source}*.")


def stamp(session):
    sch = session.schedule
    return None if sch is None else (tuple(sch.rows), tuple(sch.models), hash(sch.weights.tobytes()), sch.source)


def build(ctx) -> None:
    with gr.Tab("4 · Fusion schedule", id="schedule") as tab:
        seen = gr.State(None)  # what the views show now: reopening the tab skips unchanged views
        intro("The merge takes, for every part of the model (embeddings, each block, the head), a weighted average "
              "of the models with these weights (each row sums to 1). **RECALL** sets them from the similarity: "
              "a lower **τ** leans harder toward the models most like the reference. Pick a preset or edit a cell: "
              "rows are renormalised, and bad cells are reported below the table.")
        with gr.Row(equal_height=True):
            tau = gr.Slider(0.005, 2.0, value=ctx.template.settings.temperature, step=0.005,
                            label="τ (temperature; small = sharper)", scale=2, elem_id="tau")
            spread = gr.Markdown(info("No schedule yet."), elem_id="spread")
        with gr.Row():
            preset = gr.Radio(PRESET_CHOICES, value="recall", label="preset", scale=3, elem_id="preset")
            k = gr.Slider(0, 8, value=2, step=1, label="k: reference only from block k", scale=2)
            apply = gr.Button("Apply preset", scale=0, min_width=160, elem_id="apply-preset")
        status = gr.Markdown("", elem_classes=["status"], elem_id="schedule-status")
        weights = gr.Dataframe(value={"headers": ["row"], "data": [[""]]}, interactive=True, type="array",
                               static_columns=[0], label="weights (rows: parts of the model; columns: models); "
                               "double-click a cell to edit it", elem_id="schedule-table", max_height=560)
        area = gr.Plot(label="weights by depth", elem_id="schedule-plot")

    def views(session, message):
        sch = session.schedule
        return (table_value(sch), figures.schedule_area(sch.rows, sch.models, sch.weights), spread_text(sch),
                message, stamp(session))

    outputs = [weights, area, spread, status, seen]

    @guarded(len(outputs) + 3, status_index=3)
    def on_open(session, last):
        if not session.representations:
            return (gr.skip(), empty_figure("Extract representations in tab 1 to get a schedule."),
                    info("No schedule yet."), info("Extract representations in tab 1 first."), None,
                    gr.skip(), gr.skip(), gr.skip())
        if session.schedule is None:
            steps.compute_schedule(session)
        if stamp(session) == last:
            return (gr.skip(),) * (len(outputs) + 3)
        return views(session, "") + (session.settings.temperature, gr.update(maximum=session.n_blocks), gr.skip())

    @guarded(len(outputs) + 1, status_index=3)
    def on_tau(session, tau_value):
        steps.apply_preset(session, "recall", temperature=float(tau_value))
        return views(session, ok(f"RECALL schedule with τ = {float(tau_value):g}.")) + ("recall",)

    @guarded(len(outputs), status_index=3)
    def on_preset(session, preset_name, tau_value, k_value):
        steps.apply_preset(session, preset_name, k=int(k_value), temperature=float(tau_value))
        return views(session, ok(f"Preset applied: {session.schedule.source}."))

    @guarded(len(outputs), status_index=3)
    def on_edit(session, cells):
        rows = [list(r) for r in (cells or [])]
        steps.edit_schedule(session, [r[1:] for r in rows])
        return views(session, ok("Edit applied; every row renormalised to sum to 1."))

    tab.select(on_open, [ctx.state, seen], outputs + [tau, k, preset], api_name="open_schedule",
               show_progress_on=[area])
    tau.release(on_tau, [ctx.state, tau], outputs + [preset], api_name="schedule_tau", show_progress_on=[area])
    apply.click(on_preset, [ctx.state, preset, tau, k], outputs, api_name="schedule_preset", show_progress_on=[area])
    weights.input(on_edit, [ctx.state, weights], outputs, api_name="edit_schedule", show_progress_on=[area])
    ctx.tabs["schedule"] = tab

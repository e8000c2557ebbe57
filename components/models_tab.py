"""Tab 1, Models & probes: the demo workspace or the user's models with roles, probe files, the summary
table, the compatibility verdict, and the extraction of representations."""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from recall_core import session as steps
from recall_core.errors import ModelLoadError, ProbeFileError
from recall_core.models import ROLES, ModelSpec
from recall_core.probes import load_probe_files

from .common import HEAVY, error_text, guarded, info, intro, ok, progress_callback, table

MODEL_COLUMNS = ["name", "path", "role"]
SUMMARY_COLUMNS = ["model", "role", "architecture", "blocks", "hidden size", "parameters", "dtype", "path"]
PREVIEW_ROWS = 8


# ---------------------------------------------------------------------------------------- views of a session

def models_value(session) -> list[list[str]]:
    rows = [[m.name, m.path, m.role] for m in session.models]
    return rows or [["", "", "expert"]]


def summary_value(session) -> dict:
    rows = []
    for spec in session.models:
        info_ = session.infos.get(spec.name)
        row = info_.as_row() if info_ else {"model": spec.name}
        row.update(role=spec.role, path=spec.path)
        rows.append(row)
    return table(rows, SUMMARY_COLUMNS)


def verdict_text(session) -> str:
    report = session.compatibility
    if report is None:
        return info("Load models to check that they can be merged.")
    if report.ok:
        roles = f"reference: **{session.reference}**" + (f", base: **{session.base}**" if session.base else ", no base")
        return ok(f"{report.message}; {roles}")
    return error_text(f"Incompatible: {report.message}")


def probes_text(session) -> str:
    probes = session.probes
    if probes is None:
        return info("No probe set yet: upload probe files or use the built-in demo probes.")
    counts = ", ".join(f"{task} ({len(probes.by_task(task))})" for task in probes.task_names)
    line = f"**{len(probes)} probe texts**, {len(probes.task_names)} task(s): {counts}"
    if session.eval_probes is not None and session.eval_probes is not probes:
        line += f" · evaluation set: {len(session.eval_probes)} texts"
    elif session.eval_probes is None:
        line += " · evaluation set: the probe texts themselves"
    return line


def preview_value(session) -> dict:
    if session.probes is None:
        return table([], ["task", "text", "answer"])
    items = session.probes.items
    step = max(1, len(items) // PREVIEW_ROWS)
    rows = [{"task": it.task, "text": it.text, "answer": it.answer or ""} for it in items[::step][:PREVIEW_ROWS]]
    return table(rows, ["task", "text", "answer"])


def extraction_text(session) -> str:
    reps = session.representations
    if not reps:
        return ""
    first = next(iter(reps.values()))
    cached = sum(r.from_cache for r in reps.values())
    seconds = sum(r.seconds for r in reps.values())
    typical = f"; {session.typical.k} typical samples" if session.typical is not None else ""
    return (f"Representations of {len(reps)} models × {first.n_layers} hidden states × {first.pooled.shape[1]} texts "
            f"({first.pooling} pooling, {cached} from cache, {seconds:.1f} s){typical}. "
            "Next: the **Samples**, **Layer similarity** and **Fusion schedule** tabs.")


def initial_status(ctx) -> str:
    if ctx.template.models:
        return info(f"{len(ctx.template.models)} models from the command line. Next: **Extract representations**.")
    if ctx.config.demo and ctx.config.autoload:
        return info("Opening the demo workspace (the first run builds it: about a minute)…")
    return info("Load the demo workspace, or enter your models below.")


def _specs_from_rows(rows) -> list[ModelSpec]:
    specs = []
    for number, row in enumerate(rows or [], start=1):
        cells = [("" if c is None else str(c)).strip() for c in list(row) + ["", "", ""]][:3]
        name, path, role = cells
        if not name and not path:
            continue
        if not path:
            raise ModelLoadError(f"models table, row {number}: give a folder or hub id for {name!r}")
        name = name or Path(path).name
        role = (role or "expert").lower()
        if role not in ROLES:
            raise ModelLoadError(f"models table, row {number} ({name}): role must be one of {', '.join(ROLES)}, "
                                 f"not {role!r}")
        specs.append(ModelSpec(name, path, role))
    if not specs:
        raise ModelLoadError("the models table is empty: add one row per model (name, folder or hub id, role)")
    return specs


def _file_path(value) -> str:
    return value if isinstance(value, str) else getattr(value, "name", None) or value["path"]


# ------------------------------------------------------------------------------------------------- layout

def build(ctx) -> None:
    session0 = ctx.template
    with gr.Tab("1 · Models & probes", id="models") as tab:
        intro("Choose the models to merge and the probe texts to run them on, check that the models are "
              "compatible, then **extract representations** (pooled hidden states of every model, layer and text). "
              "The demo workspace does all of this in one click.")
        with gr.Row():
            load_demo = gr.Button("Load demo workspace", variant="primary", scale=0, min_width=230, elem_id="load-demo")
            extract = gr.Button("Extract representations", variant="primary", scale=0, min_width=230,
                                elem_id="extract")
            status = gr.Markdown(initial_status(ctx), elem_id="models-status", elem_classes=["status"])
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown("#### Models\nOne row per model: a short **name**, a local **folder** or hub id, and a "
                            "**role**: `base` (optional; needed by task arithmetic, TIES and DARE), `expert`, or "
                            "`reference` (the newest fine-tune; default: the last expert). Edit the cells, then "
                            "press **Check models**.")
                models = gr.Dataframe(value=models_value(session0), headers=MODEL_COLUMNS,
                                      datatype=["str", "str", "str"], type="array", interactive=True,
                                      row_count=max(3, len(session0.models)), column_count=3,
                                      column_widths=["16%", "66%", "18%"], wrap=True, elem_id="models-table",
                                      label="models (name · folder or hub id · role)")
                check = gr.Button("Check models", elem_id="check-models")
            with gr.Column(scale=2):
                gr.Markdown("#### Probe texts\n`.txt` (one text per line), `.jsonl` or `.csv` (`text`, optional "
                            "`task` and `answer`). The evaluation files are held-out texts with answers (optional).")
                probe_files = gr.File(label="probe files", file_count="multiple", file_types=[".txt", ".jsonl", ".csv"],
                                      height=110, elem_id="probe-files")
                eval_files = gr.File(label="evaluation files (optional)", file_count="multiple",
                                     file_types=[".txt", ".jsonl", ".csv"], height=110, elem_id="eval-files")
                builtin = gr.Button("Use built-in demo probes", size="sm", elem_id="demo-probes")
        probes_md = gr.Markdown(probes_text(session0), elem_id="probes-summary")
        with gr.Accordion("Probe preview", open=False):
            preview = gr.Dataframe(value=preview_value(session0), interactive=False, wrap=True, max_height=300,
                                   column_widths=["15%", "65%", "20%"])
        gr.Markdown("#### Summary")
        summary = gr.Dataframe(value=summary_value(session0), interactive=False, wrap=True, elem_id="summary-table",
                               column_widths=["11%", "9%", "15%", "7%", "9%", "10%", "8%", "31%"],
                               label="architecture, blocks, hidden size, parameters and dtype of every model")
        verdict = gr.Markdown(verdict_text(session0), elem_id="verdict")

    everything = [models, probes_md, preview, summary, verdict, status]

    # ----------------------------------------------------------------------------------------- handlers
    def show_all(session, message):
        return (models_value(session), probes_text(session), preview_value(session), summary_value(session),
                verdict_text(session), message)

    def open_demo(session, progress):
        """Load the demo's models and probes, and analyse them (representations are cached on disk)."""
        started = time.perf_counter()
        workspace = ctx.loader.get(progress_callback(progress, 0.0, 0.6))
        progress(0.6, desc="opening the demo models")
        steps.set_models(session, list(workspace.models))
        steps.set_probes(session, workspace.probes(), workspace.eval_probes())
        steps.analyze(session, progress=progress_callback(progress, 0.6, 1.0))
        return show_all(session, ok(f"Demo workspace loaded and analysed in {time.perf_counter() - started:.1f} s "
                                    f"({workspace.root}). " + extraction_text(session)))

    @guarded(len(everything))
    def on_load_demo(session, progress=gr.Progress()):
        return open_demo(session, progress)

    @guarded(4)
    def on_check_models(session, rows):
        specs = _specs_from_rows(rows)
        report = steps.set_models(session, specs)
        message = (ok(f"{len(specs)} models loaded. Next: probe texts, then **Extract representations**.")
                   if report.ok else error_text(f"Incompatible models: {report.message}"))
        if not report.ok:
            gr.Warning(f"Incompatible models: {report.message}")
        return summary_value(session), verdict_text(session), models_value(session), message

    @guarded(3)
    def on_set_probes(session, files, eval_list):
        if not files:
            raise ProbeFileError("choose one or more probe files (.txt, .jsonl, .csv)")
        probes = load_probe_files([_file_path(f) for f in files])
        evaluation = load_probe_files([_file_path(f) for f in eval_list]) if eval_list else None
        steps.set_probes(session, probes, evaluation)
        return (probes_text(session), preview_value(session),
                ok(f"{len(probes)} probe texts loaded. Next: **Extract representations**."))

    @guarded(3)
    def on_demo_probes(session, progress=gr.Progress()):
        workspace = ctx.loader.get(progress_callback(progress))
        steps.set_probes(session, workspace.probes(), workspace.eval_probes())
        return probes_text(session), preview_value(session), ok("Built-in demo probes loaded.")

    @guarded(1)
    def on_extract(session, progress=gr.Progress()):
        started = time.perf_counter()
        steps.analyze(session, progress=progress_callback(progress))
        return ok(f"Done in {time.perf_counter() - started:.1f} s. " + extraction_text(session))

    @guarded(len(everything))
    def on_page_open(session, progress=gr.Progress()):
        """Demo mode: load the demo and analyse it, so every tab shows something at once."""
        if not ctx.config.demo or not ctx.config.autoload or session.models:
            return tuple(gr.skip() for _ in everything)
        return open_demo(session, progress)

    # ----------------------------------------------------------------------------------------- events
    load_demo.click(on_load_demo, [ctx.state], everything, api_name="load_demo", show_progress_on=[models], **HEAVY)
    check.click(on_check_models, [ctx.state, models], [summary, verdict, models, status], api_name="set_models")
    probe_files.upload(on_set_probes, [ctx.state, probe_files, eval_files], [probes_md, preview, status],
                       api_name="set_probes")
    eval_files.upload(on_set_probes, [ctx.state, probe_files, eval_files], [probes_md, preview, status],
                      api_visibility="private")
    builtin.click(on_demo_probes, [ctx.state], [probes_md, preview, status], api_name="demo_probes",
                  show_progress_on=[models], **HEAVY)
    extract.click(on_extract, [ctx.state], [status], api_name="extract", show_progress_on=[summary], **HEAVY)
    ctx.on_page_open = (on_page_open, [ctx.state], everything, [models])
    ctx.tabs["models"] = tab

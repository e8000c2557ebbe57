"""Tab 6, Export: a merge as a Hugging Face model folder (zip download), its plan.json (re-run headless with
``python -m recall_core merge --plan plan.json``) and the mergekit YAML that reproduces it."""
from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from recall_core import workflow
from recall_core.errors import ExportError

from .common import HEAVY, guarded, info, intro, ok, progress_callback


def merge_choices(session) -> list[str]:
    merges = session.results.get("merges") if session.results else None
    names = list(merges or [])
    return names or ["recall"]


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", (name or "").strip()).strip(".-")
    if not name:
        raise ExportError("give the exported model a name (letters, digits, '.', '_' or '-')")
    return name


def build(ctx) -> None:
    with gr.Tab("6 · Export", id="export") as tab:
        intro("Write a merge as a Hugging Face model folder (sharded safetensors, config, tokenizer and a model "
              "card with the schedule and the scores), with the **plan.json** that re-runs it headless "
              "(`python -m recall_core merge --plan plan.json`) and the **mergekit.yaml** that reproduces it.")
        with gr.Row():
            merge = gr.Dropdown(choices=["recall"], value="recall", label="merge to export", scale=1,
                                elem_id="export-merge")
            name = gr.Textbox("recall-merge", label="model name", scale=1, elem_id="export-name")
            folder = gr.Textbox("", label="also save the folder here on the server (optional)", scale=2,
                                placeholder="/path/to/output (must not exist yet)")
            replace = gr.Checkbox(False, label="replace that folder if it exists", scale=1)
            export = gr.Button("Export", variant="primary", scale=0, min_width=160, elem_id="export")
        status = gr.Markdown(info("Run a merge in tab 5 (or export the RECALL schedule directly)."),
                             elem_classes=["status"], elem_id="export-status")
        with gr.Row():
            zip_button = gr.DownloadButton("Download model folder (.zip)", interactive=False, variant="primary",
                                           elem_id="download-zip")
            plan_button = gr.DownloadButton("Download plan.json", interactive=False, elem_id="download-plan")
            yaml_button = gr.DownloadButton("Download mergekit.yaml", interactive=False, elem_id="download-yaml")
        with gr.Row():
            with gr.Column():
                plan_code = gr.Code(label="plan.json", language="json", lines=10, max_lines=24, interactive=False)
            with gr.Column():
                yaml_code = gr.Code(label="mergekit.yaml", language="yaml", lines=10, max_lines=24,
                                    interactive=False)
        with gr.Accordion("Model card (README.md)", open=False):
            card = gr.Markdown("", elem_id="model-card")

    outputs = [zip_button, plan_button, yaml_button, plan_code, yaml_code, card, status]

    @guarded(len(outputs))
    def on_export(session, method, name_, server_folder, replace_, progress=gr.Progress()):
        started = time.perf_counter()
        model_name = _safe_name(name_)
        work = Path(tempfile.mkdtemp(prefix="recall-export-"))
        target = Path(server_folder).expanduser() if (server_folder or "").strip() else work / model_name
        out = workflow.export_session(session, method, target, force=bool(replace_), progress=progress_callback(progress, 0.0, 0.85))
        progress(0.9, desc="zipping the model folder")
        archive = shutil.make_archive(str(work / model_name), "zip", root_dir=out.parent, base_dir=out.name)
        saved = f" Saved to `{out}`." if target != work / model_name else ""
        # downloads must come from the temp dir: copy the small files beside the zip
        plan = Path(shutil.copy(out / "plan.json", work / "plan.json"))
        yaml = Path(shutil.copy(out / "mergekit.yaml", work / "mergekit.yaml"))
        readme = out / "README.md"
        size = Path(archive).stat().st_size / 1e6
        return (gr.update(value=archive, interactive=True), gr.update(value=str(plan), interactive=True),
                gr.update(value=str(yaml), interactive=True), plan.read_text(encoding="utf-8"),
                yaml.read_text(encoding="utf-8"), _strip_front_matter(readme.read_text(encoding="utf-8")),
                ok(f"Exported **{method}** as `{model_name}` ({size:.1f} MB zip) in "
                   f"{time.perf_counter() - started:.1f} s.{saved}"))

    def on_open(session, current):
        choices = merge_choices(session)
        return gr.update(choices=choices, value=current if current in choices else choices[0])

    export.click(on_export, [ctx.state, merge, name, folder, replace], outputs, api_name="export",
                 show_progress_on=[plan_code, yaml_code], **HEAVY)
    tab.select(on_open, [ctx.state, merge], [merge], api_name="open_export")
    ctx.tabs["export"] = tab


def _strip_front_matter(text: str) -> str:
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            return text[end + 4:].lstrip()
    return text

"""Tab 5, Merge & evaluate: run the RECALL schedule and the chosen baselines, score every source model and
every merge per task, show what each merge forgot, and compare generations side by side."""
from __future__ import annotations

import time

import gradio as gr

from recall_core import figures
from recall_core import workflow

from .common import HEAVY, empty_figure, guarded, info, intro, ok, progress_callback, table

METHOD_CHOICES = [("RECALL (the schedule of tab 4)", "recall"), ("average (model soup)", "average"),
                  ("task arithmetic (λ)", "task_arithmetic"), ("TIES (density)", "ties"),
                  ("DARE (drop rate, seed)", "dare")]
NEEDS_BASE = ("task_arithmetic", "ties", "dare")
N_PROMPTS = 6


def method_params(chosen, lam, density, drop_rate, seed) -> dict:
    """Widget values -> ``{method: params}`` for the merge step, in the order of the choices."""
    params = {"recall": {}, "average": {},
              "task_arithmetic": {"lambda": float(lam)},
              "ties": {"density": float(density), "lambda": float(lam)},
              "dare": {"drop_rate": float(drop_rate), "seed": int(seed or 0), "lambda": float(lam)}}
    return {m: params[m] for _, m in METHOD_CHOICES if m in (chosen or [])}


def scores_table(evaluation) -> dict:
    """Accuracy (%) per task for every model and merge, the average, and the worst forgetting (points)."""
    rows = []
    for row in evaluation.rows():
        out = {"model": row["model"], "kind": "source" if row["model"] in evaluation.sources else "merge"}
        for key, value in row.items():
            if key == "model":
                continue
            if key.endswith("(loss)"):
                out[key] = None if value is None else round(float(value), 3)
            else:
                label = {"average": "average %", "worst forgetting": "worst forgetting (points)"}.get(key, f"{key} %")
                out[label] = None if value is None else round(100 * float(value), 1)
        rows.append(out)
    return table(rows)


def forgetting_table(evaluation) -> dict:
    """Per model and task: best source score minus the model's (positive = forgot; points of accuracy)."""
    rows = []
    for model in evaluation.models:
        row = {"model": model}
        for task in evaluation.tasks:
            value = evaluation.forgetting[model][task]
            scale = 100 if evaluation.has_accuracy(task) else 1
            row[task] = round(scale * float(value), 1 if scale == 100 else 3)
        rows.append(row)
    return table(rows)


def bars(evaluation):
    tasks = [t for t in evaluation.tasks if evaluation.has_accuracy(t)]
    if not tasks:
        return empty_figure("No task has answers: accuracy cannot be charted (see the losses in the table).")
    scores = {m: {t: float(evaluation.scores[m][t].accuracy or 0.0) for t in tasks} for m in evaluation.models}
    return figures.evaluation_bars(scores, sources=evaluation.sources)


def summary(evaluation, seconds: float) -> str:
    merges = [m for m in evaluation.models if m not in evaluation.sources]
    if not merges:
        return ok(f"Evaluated in {seconds:.1f} s.")
    best = max(merges, key=lambda m: evaluation.average[m])
    worst = evaluation.worst_forgetting[best]
    forgot = (f"worst forgetting {100 * worst:.1f} points" if any(evaluation.has_accuracy(t) for t in evaluation.tasks)
              else f"worst loss increase {worst:.3f}")
    return ok(f"{len(merges)} merge(s) and {len(evaluation.sources)} source models evaluated in {seconds:.1f} s. "
              f"Best merge: **{best}** ({forgot}). Export it in tab 6.")


def default_prompts(session) -> str:
    """One held-out prompt per task, then more until N_PROMPTS."""
    probes = session.eval_probes or session.probes
    if probes is None:
        return ""
    picked = []
    for task in probes.task_names:
        picked.append(probes.by_task(task).items[0].text)
    for item in probes.items:
        if len(picked) >= N_PROMPTS:
            break
        if item.text not in picked:
            picked.append(item.text)
    return "\n".join(picked[:N_PROMPTS])


def build(ctx) -> None:
    with gr.Tab("5 · Merge & evaluate", id="merge") as tab:
        intro("Merge the models with the RECALL schedule and any baselines, then score every source model and "
              "every merge on the evaluation set. **Forgetting** = best source score minus the model's score on "
              "a task (positive = forgot). Task arithmetic, TIES and DARE need a model with the role `base`.")
        with gr.Row():
            methods = gr.CheckboxGroup(METHOD_CHOICES, value=["recall", "average"], label="merges to run", scale=3,
                                       elem_id="merge-methods")
            run = gr.Button("Merge & evaluate", variant="primary", scale=0, min_width=200, elem_id="run-merge")
        with gr.Row(equal_height=True):
            lam = gr.Number(1.0, label="λ (task arithmetic, TIES, DARE)", minimum=0, step=0.1)
            density = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="TIES density")
            drop_rate = gr.Slider(0.0, 0.95, value=0.5, step=0.05, label="DARE drop rate")
            seed = gr.Number(0, label="DARE seed", precision=0)
        status = gr.Markdown(info("Run a merge to see the scores."), elem_classes=["status"], elem_id="merge-status")
        scores = gr.Dataframe(value={"headers": ["model", "kind", "average %"], "data": []}, interactive=False, label="accuracy per task (%) — sources and merges",
                              elem_id="scores-table", wrap=True)
        with gr.Row():
            with gr.Column(scale=3):
                chart = gr.Plot(label="accuracy per task", elem_id="scores-plot")
            with gr.Column(scale=2):
                forgetting = gr.Dataframe(value={"headers": ["model"], "data": []}, interactive=False, wrap=True, elem_id="forgetting-table",
                                          label="forgetting per task: best source − model (points; < 0 = gain)")
        gr.Markdown("#### Side-by-side generations\nGreedy continuations of a few prompts (one per line) by every "
                    "source model and every merge.")
        with gr.Row():
            prompts = gr.Textbox(label="prompts (one per line)", lines=4, scale=4, elem_id="prompts")
            with gr.Column(scale=1):
                max_tokens = gr.Slider(1, 64, value=12, step=1, label="max new tokens")
                generate = gr.Button("Generate", elem_id="generate")
        gen_status = gr.Markdown("", elem_classes=["status"], elem_id="generate-status")
        generations = gr.Dataframe(value={"headers": ["prompt", "expected"], "data": []}, interactive=False, wrap=True, label="generations", elem_id="generations")

    outputs = [scores, forgetting, chart, status]

    @guarded(len(outputs), status_index=3)
    def on_run(session, chosen, lam_, density_, drop_rate_, seed_, progress=gr.Progress()):
        started = time.perf_counter()
        workflow.run_merges(session, method_params(chosen, lam_, density_, drop_rate_, seed_),
                         progress=progress_callback(progress, 0.0, 0.3))
        evaluation = workflow.evaluate_session(session, progress=progress_callback(progress, 0.3, 1.0))
        return scores_table(evaluation), forgetting_table(evaluation), bars(evaluation), summary(
            evaluation, time.perf_counter() - started)

    @guarded(2, status_index=1)
    def on_generate(session, text, n_tokens, progress=gr.Progress()):
        lines = [line for line in (text or "").splitlines() if line.strip()]
        progress(0.1, desc="generating with every model")
        outputs = workflow.generations(session, lines, int(n_tokens))
        probes = session.eval_probes or session.probes
        answers = {item.text: item.answer for item in (probes.items if probes else []) if item.answer is not None}
        rows = [{"prompt": p, "expected": answers.get(p, ""), **{m: outs[i] for m, outs in outputs.items()}}
                for i, p in enumerate(lines)]
        return table(rows), ok(f"Generated for {len(lines)} prompt(s) with {len(outputs)} models.")

    def on_open(session, current_prompts):
        prompts_value = current_prompts if (current_prompts or "").strip() else default_prompts(session)
        evaluation = session.results.get("evaluation") if session.results else None
        if evaluation is None:
            hint = empty_figure("Run a merge to see the scores.")
            return prompts_value, gr.skip(), gr.skip(), hint, gr.skip()
        return prompts_value, scores_table(evaluation), forgetting_table(evaluation), bars(evaluation), gr.skip()

    run.click(on_run, [ctx.state, methods, lam, density, drop_rate, seed], outputs, api_name="merge",
              show_progress_on=[scores, chart], **HEAVY)
    generate.click(on_generate, [ctx.state, prompts, max_tokens], [generations, gen_status], api_name="generate",
                   show_progress_on=[generations], **HEAVY)
    tab.select(on_open, [ctx.state, prompts], [prompts, scores, forgetting, chart, status], api_name="open_merge",
               show_progress="hidden")
    ctx.tabs["merge"] = tab

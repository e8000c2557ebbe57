"""Merge, evaluate and export the models of a session.

A merge is a :class:`~recall_core.plan.MergePlan` built from the session (its models, its schedule);
results are kept by method name ("recall", "average", ...) in ``session.results``, so that the
evaluation table and the export name the same merges.
"""
from __future__ import annotations

from pathlib import Path

from .errors import RecallError
from .probes import ProbeSet
from .session import Session, compute_schedule, require_ready


def make_plan(session: Session, method: str = "recall", params: dict | None = None):
    """A :class:`~recall_core.plan.MergePlan` of the session's models with one method.

    ``recall`` uses the session's schedule (computed with the current settings when missing).
    """
    from .plan import MergePlan

    require_ready(session, "merge")
    schedule = None
    if method == "recall":
        schedule = session.schedule or compute_schedule(session)
    return MergePlan(models=list(session.models), method=method, reference=session.reference, base=session.base,
                     schedule=schedule, method_params=dict(params or {}), analysis=session.settings.to_dict())


def run_merges(session: Session, methods: dict[str, dict], progress=None) -> dict:
    """Merge in memory with each method (``{method: params}``); results in ``session.results["merges"]``.

    Returns {method: loaded merged model}. Only for models that fit in memory (previews, the demo);
    exports stream from disk instead.
    """
    from .merge import merged_model

    if not methods:
        raise RecallError("choose at least one merge method")
    models, plans = {}, {}
    for i, (method, params) in enumerate(methods.items()):
        plan = make_plan(session, method, params)

        def step(fraction, message, i=i, method=method):
            if progress:
                progress((i + fraction) / len(methods), f"{method}: {message}")
        models[method] = merged_model(plan, progress=step)
        plans[method] = plan
    session.results["merges"] = models
    session.results["plans"] = plans
    session.results.pop("evaluation", None)
    return models


def evaluation_probes(session: Session) -> ProbeSet:
    """Held-out texts when loaded, else the probe set."""
    probes = session.eval_probes or session.probes
    if probes is None:
        raise RecallError("evaluate: load a probe set first")
    return probes


def evaluate_session(session: Session, progress=None, batch_size: int = 32):
    """Score every source model (from disk, one at a time) and every merge of the session.

    Forgetting is measured against the source models. Returns an EvaluationTable, also kept in
    ``session.results["evaluation"]``.
    """
    from .evaluate import evaluate_models
    from .models import load_tokenizer

    if not session.models:
        raise RecallError("evaluate: load models first")
    merges = session.results.get("merges", {})
    entries = {spec.name: spec for spec in session.models}
    clash = [m for m in merges if m in entries]
    if clash:
        raise RecallError(f"a model is named like the merge method {clash[0]!r}; rename it to evaluate both")
    entries.update(merges)
    tokenizer = load_tokenizer(session.spec(session.reference).path) if merges else None
    table = evaluate_models(entries, evaluation_probes(session), sources=session.names, tokenizer=tokenizer,
                            batch_size=batch_size, progress=progress)
    session.results["evaluation"] = table
    return table


def generations(session: Session, prompts: list[str], max_new_tokens: int = 16) -> dict[str, list[str]]:
    """Greedy continuations of ``prompts`` by every source model and every merge, side by side."""
    from .evaluate import generate
    from .models import load_model, load_tokenizer

    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise RecallError("give at least one prompt")
    if not session.models:
        raise RecallError("generate: load models first")
    tokenizer = load_tokenizer(session.spec(session.reference).path)
    out = {}
    for spec in session.models:
        model = load_model(spec.path)
        out[spec.name] = generate(model, tokenizer, prompts, max_new_tokens)
        del model
    for method, model in session.results.get("merges", {}).items():
        out[method] = generate(model, tokenizer, prompts, max_new_tokens)
    return out


def export_session(session: Session, method: str, out_dir, force: bool = False, progress=None) -> Path:
    """Export one merge of the session as a Hugging Face folder (streamed from disk, atomic)."""
    from .export import export_merge

    plans = session.results.get("plans", {})
    plan = plans.get(method) or make_plan(session, method)
    return export_merge(plan, out_dir, force=force, evaluation=session.results.get("evaluation"), progress=progress)

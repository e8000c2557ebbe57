"""The README model card of an exported merge: YAML front matter, schedule, evaluation, how to reproduce.

Front matter follows the Hugging Face model card metadata (``base_model``, ``tags``, ``library_name``),
so the hub shows the merge as a merge of its base model.
"""
from __future__ import annotations

import yaml

METHOD_TITLES = {
    "recall": "RECALL (representation-aligned layer-wise merge)",
    "average": "uniform average (model soup)",
    "task_arithmetic": "task arithmetic",
    "ties": "TIES",
    "dare": "DARE (linear)",
}


def card_metadata(plan) -> dict:
    """The YAML front matter as a dict."""
    base_name = plan.base or plan.reference_name
    tags = ["merge", "recall", "recall-studio", "mergekit-compatible", plan.method.replace("_", "-")]
    return {
        "base_model": str(plan.spec(base_name).path),
        "tags": list(dict.fromkeys(tags)),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "base_model_relation": "merge",
    }


def model_card(plan, evaluation=None, name: str | None = None) -> str:
    """The README.md text.

    Args:
        plan: a ``MergePlan``.
        evaluation: an object with ``to_markdown()`` (an ``EvaluationTable``), or None.
        name: the title; the output folder's name in an export.
    """
    front = yaml.safe_dump(card_metadata(plan), sort_keys=False).strip()
    title = name or f"{plan.method} merge"
    parts = [
        f"---\n{front}\n---",
        f"# {title}",
        _summary(plan),
        "## Models\n\n" + models_table(plan),
        "## Settings\n\n" + _method_settings(plan),
    ]
    schedule = plan.schedule
    if plan.method == "recall" and schedule is not None:
        parts.append(
            "## Fusion schedule\n\nWeight of each model per part of the network (rows sum to 1): `embed` "
            "is the token/position embeddings, `block_i` the i-th transformer block, `head` the final "
            "norm and the output layer."
            + (f" Source: {schedule.source}." if schedule.source else "")
            + "\n\n" + schedule_table(schedule)
        )
    if evaluation is not None:
        parts.append("## Evaluation\n\nPer task: exact-match accuracy in percent where the probes have answers, "
                     "else the mean token loss; forgetting is the drop against the best source model.\n\n"
                     + evaluation.to_markdown().strip())
    parts.append(
        "## Reproduce\n\n"
        "`plan.json` in this folder re-runs the merge headless:\n\n"
        "```bash\npython -m recall_core merge --plan plan.json --out merged\n```\n\n"
        + ("`mergekit.yaml` runs the same merge with mergekit (DARE's random masks differ between tools):\n\n"
           if plan.method == "dare" else "`mergekit.yaml` gives the same tensors with mergekit:\n\n")
        + "```bash\nmergekit-yaml mergekit.yaml merged --copy-tokenizer\n```"
    )
    return "\n\n".join(parts) + "\n"


def _summary(plan) -> str:
    merged = ", ".join(f"`{name}`" for name in plan.merged_models)
    text = (f"A merge of {merged} made with RECALL Studio (`recall_core`), method: "
            f"**{METHOD_TITLES.get(plan.method, plan.method)}**")
    if plan.base and plan.method not in ("recall", "average"):
        text += f", task vectors taken against the base `{plan.base}`"
    return text + "."


def models_table(plan) -> str:
    lines = ["| model | role | path |", "|---|---|---|"]
    for spec in plan.models:
        role = spec.role + (" (reference)" if spec.name == plan.reference_name and spec.role != "reference" else "")
        lines.append(f"| {_cell(spec.name)} | {role} | `{spec.path}` |")
    return "\n".join(lines)


def schedule_table(schedule, digits: int = 3) -> str:
    """A schedule as a markdown table: one row per part, one column per model."""
    lines = ["| part | " + " | ".join(_cell(m) for m in schedule.models) + " |",
             "|---|" + "---:|" * len(schedule.models)]
    for row, weights in zip(schedule.rows, schedule.weights):
        lines.append(f"| {row} | " + " | ".join(f"{float(w):.{digits}f}" for w in weights) + " |")
    return "\n".join(lines)


def _method_settings(plan) -> str:
    """Method parameters (defaults filled in), or for RECALL the analysis that made the schedule."""
    if plan.method == "recall":
        settings = dict(plan.analysis)
    else:
        settings = {key: value for key, value in plan.params.items() if value != {}}
    settings["dtype"] = plan.dtype
    return "\n".join(f"- `{key}`: {value}" for key, value in settings.items())


def _cell(text) -> str:
    return str(text).replace("|", "\\|")

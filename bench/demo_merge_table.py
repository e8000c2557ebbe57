"""The README's demo result: every source model and every merge, per-task accuracy, honestly measured.

Two scenarios on the built-in demo workspace (held-out evaluation set, 50 items per task):

- ``continual``: the RECALL paper's setting: the reverse expert (task A) and the sequential model
  (fine-tuned on A, then on B; the reference), merged to undo the forgetting of A.
- ``all``: the four experts and the sequential model merged into one multi-task model.

Usage: .venv/bin/python bench/demo_merge_table.py [--scenario continual|all] [--cache-dir DIR]
Prints a markdown table per scenario (accuracy %, average, worst forgetting against the sources).
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recall_core import session as steps  # noqa: E402
from recall_core import workflow  # noqa: E402
from recall_core.demo import build_demo  # noqa: E402
from recall_core.models import ModelSpec  # noqa: E402

SHARP_TAU = 0.1
SCENARIOS = {
    "continual": ["base", "reverse", "sequential"],
    "all": ["base", "arithmetic", "reverse", "sort", "facts", "sequential"],
}
# method label -> (method, params, temperature for recall)
MERGES = {
    "recall (tau=1)": ("recall", {}, 1.0),
    f"recall (tau={SHARP_TAU})": ("recall", {}, SHARP_TAU),
    "average": ("average", {}, None),
    "task_arithmetic (lambda=1)": ("task_arithmetic", {"lambda": 1.0}, None),
    "ties (density=0.5)": ("ties", {"density": 0.5}, None),
    "dare (drop=0.5, seed=0)": ("dare", {"drop_rate": 0.5, "seed": 0}, None),
}


def run(scenario: str, cache_dir=None) -> str:
    from recall_core.evaluate import evaluate_models
    from recall_core.merge import merged_model
    from recall_core.models import load_tokenizer

    demo = build_demo(cache_dir=cache_dir)
    specs = [ModelSpec(m.name, m.path, m.role) for m in demo.models if m.name in SCENARIOS[scenario]]
    session = steps.Session()
    steps.set_models(session, specs)
    steps.set_probes(session, demo.probes(), demo.eval_probes())
    steps.analyze(session)
    models = {spec.name: spec for spec in specs}
    for label, (method, params, tau) in MERGES.items():
        if tau is not None:
            steps.compute_schedule(session, tau)
        models[label] = merged_model(workflow.make_plan(session, method, params))
    table = evaluate_models(models, workflow.evaluation_probes(session), sources=[s.name for s in specs],
                            tokenizer=load_tokenizer(specs[-1].path))
    return table.to_markdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "both"], default="both")
    parser.add_argument("--cache-dir")
    args = parser.parse_args()
    for scenario in SCENARIOS if args.scenario == "both" else [args.scenario]:
        started = time.perf_counter()
        print(f"\n### scenario: {scenario} ({', '.join(SCENARIOS[scenario])})\n")
        print(run(scenario, args.cache_dir))
        print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

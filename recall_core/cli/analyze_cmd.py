"""``python -m recall_core analyze``: representations -> similarity -> RECALL schedule, written to a folder.

Writes ``similarity.json``, ``plan.json`` (re-runnable with ``python -m recall_core merge``) and
``report.html`` (self-contained, opens offline), and prints a short table.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import RecallError
from ..similarity import METRICS, SCALINGS, SIGMA_MODES
from ..representations import POOLINGS
from .common import parse_model_args, print_table


def add_arguments(parser) -> None:
    source = parser.add_argument_group("inputs (either --demo, or --model and --probes)")
    source.add_argument("--demo", action="store_true", help="use the built-in demo workspace (built on first use)")
    source.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a model folder or hub id; repeat for each model")
    source.add_argument("--probes", action="append", default=[], metavar="FILE",
                        help="probe file (.txt, .jsonl, .csv); repeatable")
    source.add_argument("--reference", help="name of the reference model (default: the last merged model)")
    source.add_argument("--base", help="name of the base model (optional; not merged by RECALL)")
    knobs = parser.add_argument_group("analysis settings (defaults as in the RECALL design)")
    knobs.add_argument("--metric", choices=METRICS, default="rbf")
    knobs.add_argument("--temperature", type=float, default=1.0, help="tau of softmax(s / tau) (default 1)")
    knobs.add_argument("--clusters", type=int, default=16, help="k-means clusters = typical samples (default 16)")
    knobs.add_argument("--pooling", choices=POOLINGS, default="mean")
    knobs.add_argument("--scaling", choices=SCALINGS, default="none")
    knobs.add_argument("--sigma-mode", choices=SIGMA_MODES, default="median")
    knobs.add_argument("--all-samples", action="store_true", help="similarity on all probe texts, not the typical ones")
    knobs.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="cache folder (demo models and representations)")
    parser.add_argument("--out", required=True, help="output folder (created; files in it are replaced)")


def load_inputs(args):
    """The session's models and probes from ``--demo`` or ``--model/--probes``."""
    from ..probes import load_probe_file, load_probe_files

    if args.demo:
        from ..demo import build_demo

        demo = build_demo(cache_dir=args.cache_dir, progress=_progress("demo"))
        return demo.models, load_probe_file(demo.probe_file)
    if not args.model or not args.probes:
        raise RecallError("give --demo, or at least two --model NAME=PATH and one --probes FILE")
    specs = parse_model_args(args.model, args.reference, args.base)
    if len(specs) < 2:
        raise RecallError("give at least two --model NAME=PATH to compare")
    return specs, load_probe_files(args.probes)


def run(args) -> int:
    from .. import session as steps
    from ..session import AnalysisSettings, Session

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RecallError(f"--out {out} exists and is not a folder")
    specs, probes = load_inputs(args)
    settings = AnalysisSettings(pooling=args.pooling, scaling=args.scaling, metric=args.metric,
                                sigma_mode=args.sigma_mode, clusters=args.clusters, temperature=args.temperature,
                                similarity_on="all" if args.all_samples else "typical", seed=args.seed)
    cache = Path(args.cache_dir) / "representations" if args.cache_dir else None
    session = Session(settings=settings, cache_dir=cache)
    report = steps.set_models(session, specs)
    if not report.ok:
        raise RecallError(f"incompatible models: {report.message}")
    steps.set_probes(session, probes)
    steps.analyze(session, progress=_progress("analyze"))

    out.mkdir(parents=True, exist_ok=True)
    _write(out / "similarity.json", json.dumps(session.similarity.to_dict(), indent=2))
    _write(out / "plan.json", json.dumps(plan_for(session).to_dict(), indent=2))
    _write(out / "report.html", build_report(session))

    print(f"\n{session.similarity.metric} similarity to {session.reference} "
          f"({session.similarity.settings['samples']} samples):")
    print_table(similarity_rows(session))
    print(f"\nschedule (tau={settings.temperature:g}): max/min weight per row "
          f"{session.schedule.spread().min():.3f} .. {session.schedule.spread().max():.3f}")
    print(f"wrote {out / 'similarity.json'}, {out / 'plan.json'}, {out / 'report.html'}")
    return 0


def plan_for(session):
    """The RECALL merge plan of an analysed session."""
    from ..plan import MergePlan

    models = [type(m)(m.name, str(Path(m.path).resolve()) if Path(m.path).exists() else m.path, m.role)
              for m in session.models]
    return MergePlan(models=models, method="recall", reference=session.reference, base=session.base,
                     schedule=session.schedule, analysis=session.settings.to_dict())


def similarity_rows(session) -> list[dict]:
    sim = session.similarity
    rows = []
    for i, model in enumerate(sim.models):
        row = {"model": model}
        row.update({layer: float(v) for layer, v in zip(sim.layer_names, sim.values[i])})
        rows.append(row)
    return rows


def build_report(session) -> str:
    """The HTML report: typical samples, similarity heatmap, schedule by depth, tables."""
    from .. import figures
    from ..typical import project_2d

    sim, schedule, typical = session.similarity, session.schedule, session.typical
    pooled = session.representations[session.reference].pooled[typical.layer]
    coords, method = project_2d(pooled, seed=session.settings.seed)
    scatter = figures.samples_scatter(coords, session.probes.texts, session.probes.tasks, typical.indices,
                                      title=f"Probe samples of {session.reference}, hidden state {typical.layer} "
                                            f"({method.upper()}); diamonds: the {typical.k} typical samples")
    heat = figures.similarity_heatmap(sim.values, sim.models, sim.layer_names, sim.reference, sim.metric)
    area = figures.schedule_area(schedule.rows, schedule.models, schedule.weights,
                                 title=f"RECALL fusion weights by depth ({schedule.source})")
    schedule_rows = [{"row": r, **{m: float(w) for m, w in zip(schedule.models, schedule.weights[i])}}
                     for i, r in enumerate(schedule.rows)]
    settings = [{"setting": k, "value": str(v)} for k, v in session.settings.to_dict().items()]
    return figures.report_html("RECALL analysis report", [
        ("Typical samples", scatter),
        ("Layer similarity", heat),
        ("Fusion schedule", area),
        ("Schedule weights", schedule_rows),
        ("Settings", settings),
    ])


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _progress(label: str):
    """A one-line progress display on stderr (only when it is a terminal)."""
    if not sys.stderr.isatty():
        return None

    def show(fraction: float, message: str) -> None:
        print(f"\r{label}: {fraction * 100:5.1f}% {message[:60]:<60}", end="", file=sys.stderr, flush=True)
        if fraction >= 1:
            print(file=sys.stderr)
    return show

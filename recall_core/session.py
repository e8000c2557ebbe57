"""One user's workspace: what they loaded and what was computed from it, and the steps between.

The dashboard keeps one :class:`Session` per browser session, the CLI one per run. Each step reads
the session, computes with the library and stores its result; setting new inputs clears the results
that depended on the old ones, so nothing stale is ever shown.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from . import representations as reps_mod
from .errors import RecallError
from .models import CompatibilityReport, ModelInfo, ModelSpec, check_compatibility, describe, open_model_checkpoint
from .probes import ProbeSet
from .schedule import Schedule, recall_schedule
from .similarity import SimilarityResult, similarity_to_reference
from .typical import TypicalSamples, typical_samples


@dataclass
class AnalysisSettings:
    """Every knob of the analysis, with the DESIGN defaults. Stored in plans so a result can be reproduced."""

    pooling: str = "mean"            # mean | mean_skip_first | last
    scaling: str = "none"            # none | standardize | l2 (before the similarity)
    metric: str = "rbf"              # rbf | cka | cosine
    sigma_mode: str = "median"       # median | mean | unit (rbf bandwidth per layer)
    l2_normalize: bool = False       # rbf on L2-normalised vectors
    clusters: int = 16               # k of k-means
    cluster_layer: int = -1          # hidden-state index the clustering uses (-1 = last)
    similarity_on: str = "typical"   # typical | all
    temperature: float = 1.0         # tau of softmax(s / tau)
    seed: int = 0
    batch_size: int = 16
    max_length: int = 256

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "AnalysisSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Session:
    models: list[ModelSpec] = field(default_factory=list)
    probes: ProbeSet | None = None
    eval_probes: ProbeSet | None = None
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    cache_dir: Path | None = None
    infos: dict[str, ModelInfo] = field(default_factory=dict)
    compatibility: CompatibilityReport | None = None
    representations: dict[str, reps_mod.Representations] = field(default_factory=dict)
    typical: TypicalSamples | None = None
    similarity: SimilarityResult | None = None
    schedule: Schedule | None = None
    results: dict = field(default_factory=dict)  # merge/evaluation results, keyed by step name

    # ---- names -------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def base(self) -> str | None:
        return next((m.name for m in self.models if m.role == "base"), None)

    @property
    def merged_models(self) -> list[str]:
        """The models a merge combines: every model but the base."""
        return [m.name for m in self.models if m.role != "base"]

    @property
    def reference(self) -> str | None:
        """The model with role ``reference``, else the last merged model."""
        explicit = [m.name for m in self.models if m.role == "reference"]
        merged = self.merged_models
        return explicit[-1] if explicit else (merged[-1] if merged else None)

    @property
    def n_blocks(self) -> int:
        info = next(iter(self.infos.values()), None)
        return info.n_blocks if info else 0

    def spec(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise RecallError(f"no model named {name!r} (models: {', '.join(self.names)})")

    # ---- invalidation ------------------------------------------------------------------------
    def clear_results(self, keep_representations: bool = False) -> None:
        if not keep_representations:
            self.representations = {}
        self.typical = self.similarity = self.schedule = None
        self.results = {}


def set_models(session: Session, specs: list[ModelSpec]) -> CompatibilityReport:
    """Open the models (headers only), describe them and check they can be merged.

    Raises:
        RecallError: duplicate names, several bases or references, a missing folder or weights.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RecallError(f"model names must be unique: {', '.join(names)}")
    if not specs:
        raise RecallError("no models given")
    for role in ("base", "reference"):
        if sum(s.role == role for s in specs) > 1:
            raise RecallError(f"at most one model can have the role {role!r}")
    checkpoints = {s.name: open_model_checkpoint(s) for s in specs}
    session.models = list(specs)
    session.infos = {name: describe(name, ckpt) for name, ckpt in checkpoints.items()}
    session.compatibility = check_compatibility(checkpoints)
    session.clear_results()
    return session.compatibility


def set_probes(session: Session, probes: ProbeSet, eval_probes: ProbeSet | None = None) -> None:
    session.probes = probes
    session.eval_probes = eval_probes
    session.clear_results()


def set_settings(session: Session, **changes) -> AnalysisSettings:
    """Change analysis settings; representations are kept unless the pooling or max_length changed."""
    new = replace(session.settings, **changes)
    extraction_changed = (new.pooling, new.max_length) != (session.settings.pooling, session.settings.max_length)
    session.settings = new
    session.clear_results(keep_representations=not extraction_changed)
    return new


def require_ready(session: Session, step: str) -> None:
    """Raise a clear error when a step is asked for before its inputs exist."""
    if not session.models:
        raise RecallError(f"{step}: load models first")
    if session.compatibility is not None and not session.compatibility.ok:
        raise RecallError(f"{step}: the models are incompatible ({session.compatibility.message})")
    if step != "extract" and not session.representations:
        raise RecallError(f"{step}: extract representations first")
    if session.probes is None:
        raise RecallError(f"{step}: load a probe set first")


def extract_all(session: Session, progress=None) -> dict[str, reps_mod.Representations]:
    """Representations of every model, one model in memory at a time (cached on disk)."""
    require_ready(session, "extract")
    s = session.settings
    out = {}
    n = len(session.models)
    for i, spec in enumerate(session.models):
        def step(fraction, message, i=i):
            if progress:
                progress((i + fraction) / n, message)
        out[spec.name] = reps_mod.extract_cached(
            spec, session.probes, pooling=s.pooling, cache_dir=session.cache_dir, batch_size=s.batch_size,
            max_length=s.max_length, progress=step)
    session.clear_results()
    session.representations = out
    return out


def compute_typical(session: Session) -> TypicalSamples:
    """K-means typical samples on the reference's representations at ``settings.cluster_layer``."""
    require_ready(session, "typical samples")
    pooled = session.representations[session.reference].pooled
    layer = session.settings.cluster_layer % pooled.shape[0]
    session.typical = typical_samples(pooled[layer], k=session.settings.clusters, seed=session.settings.seed,
                                      layer=layer)
    return session.typical


def sample_indices(session: Session) -> np.ndarray:
    """Which probe texts the similarity uses: the typical samples, or all."""
    if session.settings.similarity_on == "all":
        return np.arange(len(session.probes))
    typical = session.typical or compute_typical(session)
    return np.sort(typical.indices)


def compute_similarity(session: Session) -> SimilarityResult:
    """Similarity of every model to the reference per layer, on the chosen samples."""
    require_ready(session, "similarity")
    s = session.settings
    idx = sample_indices(session)
    pooled = {name: session.representations[name].pooled[:, idx] for name in session.merged_models}
    session.similarity = similarity_to_reference(pooled, session.reference, metric=s.metric, sigma_mode=s.sigma_mode,
                                                 scaling=s.scaling, l2_normalize=s.l2_normalize)
    session.similarity.settings["samples"] = int(len(idx))
    return session.similarity


def compute_schedule(session: Session, temperature: float | None = None) -> Schedule:
    """The RECALL schedule softmax(s / tau) from the session's similarity (computed if missing)."""
    similarity = session.similarity or compute_similarity(session)
    if temperature is not None:
        session.settings = replace(session.settings, temperature=float(temperature))
    schedule = recall_schedule(similarity.values, similarity.models, session.settings.temperature)
    schedule.settings = session.settings.to_dict()
    session.schedule = schedule
    return schedule


def analyze(session: Session, progress=None) -> Schedule:
    """Extract, cluster, compare and schedule: the whole analysis in one call."""
    def sub(lo, hi):
        return (lambda f, m: progress(lo + (hi - lo) * f, m)) if progress else None

    extract_all(session, progress=sub(0.0, 0.85))
    if progress:
        progress(0.9, "typical samples")
    compute_typical(session)
    if progress:
        progress(0.95, "similarity")
    compute_similarity(session)
    schedule = compute_schedule(session)
    if progress:
        progress(1.0, "done")
    return schedule


# ---- views for the dashboard's Samples, Similarity and Schedule tabs ----------------------------------
# Thin steps over the library so that the UI only translates widget values into calls.

@dataclass
class SampleView:
    """A 2-D projection of one model's pooled representations at one hidden-state index."""

    model: str
    layer: int
    coords: np.ndarray          # (n, 2)
    method: str                 # umap | pca
    groups: list                # per text: its task or its cluster
    typical: np.ndarray         # probe indices of the typical samples
    texts: list[str]


def sample_view(session: Session, model: str, layer: int, color_by: str = "task") -> SampleView:
    """UMAP (PCA below 10 texts) of ``model`` at hidden-state ``layer``, coloured by task or cluster."""
    from .typical import project_2d

    require_ready(session, "samples")
    if model not in session.representations:
        raise RecallError(f"no representations for model {model!r} (models: {', '.join(session.representations)})")
    pooled = session.representations[model].pooled
    layer = int(layer)
    if not 0 <= layer < pooled.shape[0]:
        raise RecallError(f"layer {layer} out of range (0..{pooled.shape[0] - 1})")
    typical = session.typical or compute_typical(session)
    coords, method = project_2d(pooled[layer], seed=session.settings.seed)
    if color_by == "cluster":
        groups = [int(c) for c in typical.labels]
    elif color_by == "task":
        groups = list(session.probes.tasks)
    else:
        raise RecallError(f"colour by 'task' or 'cluster', not {color_by!r}")
    return SampleView(model, layer, coords, method, groups, np.asarray(typical.indices), session.probes.texts)


def separability_by_layer(session: Session) -> dict[str, np.ndarray]:
    """Per model, the silhouette of the probe tasks at every hidden-state index (NaN with one task)."""
    from .typical import separability

    require_ready(session, "separability")
    tasks = session.probes.tasks
    return {name: separability(r.pooled, tasks) for name, r in session.representations.items()}


def pair_matrix(session: Session, layer: int) -> tuple[list[str], np.ndarray]:
    """Model x model similarity at one hidden-state index, with the session's metric and samples."""
    from .similarity import model_matrix

    require_ready(session, "pair view")
    s = session.settings
    idx = sample_indices(session)
    names = session.merged_models
    pooled = {name: session.representations[name].pooled[:, idx] for name in names}
    return names, model_matrix(pooled, int(layer), metric=s.metric, sigma_mode=s.sigma_mode, scaling=s.scaling,
                               l2_normalize=s.l2_normalize)


def layer_similarity(session: Session, model: str) -> np.ndarray:
    """Layer x layer linear CKA within one model, on the session's samples."""
    from .similarity import layer_matrix

    require_ready(session, "layer view")
    if model not in session.representations:
        raise RecallError(f"no representations for model {model!r}")
    return layer_matrix(session.representations[model].pooled[:, sample_indices(session)])


def apply_preset(session: Session, preset: str, k: int | None = None, temperature: float | None = None) -> Schedule:
    """Set the session's schedule from a preset: recall (tau), uniform, linear_ramp, reference_above (k)."""
    from .schedule import linear_ramp_schedule, reference_above_schedule, uniform_schedule

    require_ready(session, "schedule")
    models, n_blocks, reference = session.merged_models, session.n_blocks, session.reference
    if preset == "recall":
        return compute_schedule(session, temperature)
    if preset == "uniform":
        schedule = uniform_schedule(models, n_blocks)
    elif preset == "linear_ramp":
        schedule = linear_ramp_schedule(models, n_blocks, reference)
    elif preset == "reference_above":
        schedule = reference_above_schedule(models, n_blocks, reference, n_blocks // 2 if k is None else int(k))
    else:
        raise RecallError(f"preset must be one of recall, uniform, linear_ramp, reference_above, not {preset!r}")
    session.schedule = schedule
    return schedule


def edit_schedule(session: Session, cells) -> Schedule:
    """Set the session's schedule from edited table cells (rows x merged models); rows are renormalised.

    Raises:
        ScheduleError: naming the row and model of a cell that is not a non-negative number.
    """
    from .schedule import check_matches, parse_cells

    require_ready(session, "schedule")
    rows = session.schedule.rows if session.schedule else None
    if rows is None:
        from .layers import schedule_rows
        rows = schedule_rows(session.n_blocks)
    schedule = parse_cells(rows, session.merged_models, cells)
    check_matches(schedule, session.merged_models, session.n_blocks)
    schedule.settings = session.settings.to_dict()
    session.schedule = schedule
    return schedule


# ---- merge, evaluate, export ------------------------------------------------------------------------
# A merge is a MergePlan built from the session (its models, its schedule); results are kept by label
# ("recall", "average", ...), so the table and the export name the same merges.

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

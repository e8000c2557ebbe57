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

"""The built-in demo workspace: a tiny Llama family trained here, deterministically, and cached.

``build_demo()`` trains on the CPU (about 45-60 s on two cores, one thread) and caches the result:

- ``base``: pre-trained on a generic copy task ("copy ab3=" -> "ab3") plus a few dozen items of each demo
  task, so that it knows the prompt/answer format and attends to the prompt, but solves few items;
- one expert per task of :data:`recall_core.tasks.TASKS`, fine-tuned from the base;
- ``sequential``: the expert of task A fine-tuned further on task B (A then B), which forgets A.

Each model is a real Hugging Face folder (``save_pretrained``, safetensors) with the character tokenizer
saved beside it, so the demo goes through the same loading code as a user's checkpoints. The workspace
also holds a probe file (the analysis probe set) and a held-out evaluation file (another seed), and a
``manifest.json`` (seed, build time, accuracies measured at build time, weight checksums).

The cache folder is ``<cache_dir>/demo-<VERSION>-seed<seed>``; it is built in a temporary folder that is
renamed at the end, so an interrupted build never leaves a half cache.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import RecallError
from .models import ModelSpec
from .probes import ProbeItem, ProbeSet, load_probe_file
from .representations import default_cache_dir
from .tasks import TASKS, make_items
from .threads import one_torch_thread
from .training import encode_items, state_checksum, train

# Bump when the recipe, the tasks or the architecture change: it names the cache folder.
VERSION = "v1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the demo's weights besides the seed."""

    n_blocks: int = 4
    hidden: int = 64
    intermediate: int = 128
    heads: int = 4
    batch_size: int = 64
    base_steps: int = 250
    base_lr: float = 3e-3
    # Per task, as (task, steps) pairs: short-prompt tasks are cheap steps, and arithmetic needs more.
    expert_steps: tuple[tuple[str, int], ...] = (("arithmetic", 350), ("reverse", 150), ("sort", 150), ("facts", 120))
    expert_lr: float = 1.5e-3
    sequential_steps: int = 120
    sequential_lr: float = 1.5e-3
    warmup: int = 20
    pool_size: int = 2000  # training items per task, drawn once
    base_task_items: int = 60  # items of each of ``base_tasks`` mixed into the base's copy-task pool
    base_tasks: tuple[str, ...] = ("arithmetic", "reverse", "sort")  # the fact table is new to every expert
    sequence: tuple[str, str] = ("reverse", "sort")  # task A, then task B
    n_probe: int = 32  # per task, analysis probe set
    n_eval: int = 50  # per task, held-out evaluation set

    def steps_for(self, task: str) -> int:
        return dict(self.expert_steps)[task]


RECIPE = Recipe()
Progress = Callable[[float, str], None] | None


@dataclass
class DemoWorkspace:
    """A built demo.

    Attributes:
        root: the workspace folder.
        models: ``base`` (role base), one expert per task (named after it), ``sequential`` (role reference).
        probe_file: the analysis probe set (jsonl: text, task, answer), ``Recipe.n_probe`` items per task.
        eval_file: held-out items (another seed, no prompt shared with the probe set or the training data,
            except for the closed fact table), ``Recipe.n_eval`` per task.
        manifest: seed, build seconds, recipe, and per model its role, checksum and held-out accuracy/loss.
    """

    root: Path
    models: list[ModelSpec]
    probe_file: Path
    eval_file: Path
    manifest: dict = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(self.manifest.get("tasks", TASKS))

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise RecallError(f"the demo has no model {name!r} (it has {', '.join(m.name for m in self.models)})")

    def probes(self) -> ProbeSet:
        return load_probe_file(self.probe_file)

    def eval_probes(self) -> ProbeSet:
        return load_probe_file(self.eval_file)


def demo_root(cache_dir=None, seed: int = 0) -> Path:
    return Path(cache_dir or default_cache_dir()).expanduser() / f"demo-{VERSION}-seed{seed}"


# ----------------------------------------------------------------------------------------------- training

def _vocab():
    from .toy import make_char_tokenizer

    tokenizer = make_char_tokenizer()
    return tokenizer, tokenizer.get_vocab()


def _config(recipe: Recipe, vocab_size: int):
    from .toy import make_tiny_config

    return make_tiny_config(
        "llama", n_blocks=recipe.n_blocks, hidden=recipe.hidden, intermediate=recipe.intermediate,
        heads=recipe.heads, vocab_size=vocab_size, max_position_embeddings=64,
    )


def _training_pools(seed: int, recipe: Recipe, held_out: set[str], vocab: dict) -> dict[str, list]:
    # Training items come from their own seed stream and skip every probe/eval prompt (held out).
    return {
        task: encode_items(make_items(task, recipe.pool_size, seed=10_000 + seed, exclude=held_out), vocab)
        for task in (*TASKS, "copy")
    }


def train_base(seed: int = 0, recipe: Recipe = RECIPE, pools: dict | None = None, progress=None):
    """The demo's base model (random init + copy-task pre-training), deterministic for ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer, vocab = _vocab()
    if pools is None:
        pools = _training_pools(seed, recipe, _held_out(seed, recipe), vocab)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(recipe, len(vocab)))
    # Mixed batches: a few items of every task in most batches gives a base that experts merge back into.
    pool = pools["copy"] + [row for task in recipe.base_tasks for row in pools[task][: recipe.base_task_items]]
    return train(model, pool, recipe.base_steps, recipe.base_lr, recipe, seed, progress)


def _probe_items(seed: int, recipe: Recipe) -> list[ProbeItem]:
    return [it for task in TASKS for it in make_items(task, recipe.n_probe, seed=seed)]


def _eval_items(seed: int, recipe: Recipe) -> list[ProbeItem]:
    # Another seed than the probe set; eval prompts also skip the probe prompts where the task allows.
    probe_prompts = {it.text for it in _probe_items(seed, recipe)}
    return [it for task in TASKS for it in make_items(task, recipe.n_eval, seed=5_000 + seed, exclude=probe_prompts)]


def _held_out(seed: int, recipe: Recipe) -> set[str]:
    return {it.text for it in _probe_items(seed, recipe) + _eval_items(seed, recipe)}


# ----------------------------------------------------------------------------------------------- building

def build_demo(cache_dir=None, seed: int = 0, progress: Progress = None, force: bool = False,
               recipe: Recipe = RECIPE) -> DemoWorkspace:
    """The demo workspace for ``seed``: from the cache when it is there (milliseconds), else trained now.

    The weights are the same on every build of a seed (byte for byte), provided no other thread of the
    process draws from torch's global random generator meanwhile: model initialisation draws from it.

    Args:
        cache_dir: cache root (default :func:`recall_core.representations.default_cache_dir`); the workspace
            is its sub-folder ``demo-<VERSION>-seed<seed>``.
        progress: ``progress(fraction, message)``.
        force: rebuild even when a cached workspace exists (it is replaced only once the new one is complete).
    """
    report = progress or (lambda fraction, message: None)
    root = demo_root(cache_dir, seed)
    if not force:
        cached = load_demo(cache_dir, seed, recipe)
        if cached is not None:
            report(1.0, f"demo workspace from the cache ({root})")
            return cached
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(root)
        partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    except OSError as exc:
        raise RecallError(f"cannot write the demo cache in {root.parent}: {exc.strerror or exc}") from None
    try:
        with one_torch_thread():
            _build_into(partial, seed, recipe, report)
        _publish(partial, root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already when published
    workspace = load_demo(cache_dir, seed, recipe)
    if workspace is None:  # pragma: no cover - only when the cache is tampered with meanwhile
        raise RecallError(f"the demo workspace at {root} is incomplete")
    report(1.0, "demo workspace ready")
    return workspace


def load_demo(cache_dir=None, seed: int = 0, recipe: Recipe = RECIPE) -> DemoWorkspace | None:
    """The cached workspace, or None when it is missing or incomplete (no training, no model loading)."""
    root = demo_root(cache_dir, seed)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != VERSION or manifest.get("recipe") != json.loads(json.dumps(asdict(recipe))):
        return None
    models = [ModelSpec(m["name"], str(root / m["path"]), m["role"]) for m in manifest["models"]]
    files = [root / manifest["probe_file"], root / manifest["eval_file"]]
    weights = [Path(m.path) / "model.safetensors" for m in models]
    if not all(f.is_file() for f in files + weights):
        return None
    return DemoWorkspace(root, models, files[0], files[1], manifest)


def _build_into(folder: Path, seed: int, recipe: Recipe, report: Callable[[float, str], None]) -> dict:
    """Train, evaluate and save every model into ``folder``; write the probe files and the manifest."""
    import copy

    import torch

    from .evaluate import evaluate_model
    from .toy import save_model

    started = time.perf_counter()
    task_a, task_b = recipe.sequence
    # Fractions of the progress bar, proportional to training steps (evaluation and saving are quick).
    plan = [("base", "base", ["copy", *(f"{t} ({recipe.base_task_items} items)" for t in recipe.base_tasks)], recipe.base_steps)]
    plan += [(task, "expert", [task], recipe.steps_for(task)) for task in TASKS]
    plan += [("sequential", "reference", [task_a, task_b], recipe.sequential_steps)]
    total = sum(step for *_, step in plan) * 1.1
    done = 0.0

    report(0.0, "preparing the demo tasks")
    tokenizer, vocab = _vocab()
    probe_items, eval_items = _probe_items(seed, recipe), _eval_items(seed, recipe)
    (folder / "probes.jsonl").write_text(ProbeSet(probe_items).to_jsonl(), encoding="utf-8")
    (folder / "eval.jsonl").write_text(ProbeSet(eval_items).to_jsonl(), encoding="utf-8")
    held_out = {it.text for it in probe_items + eval_items}
    pools = _training_pools(seed, recipe, held_out, vocab)
    eval_set = ProbeSet(eval_items)

    records, trained = [], {}
    for index, (name, role, trained_on, steps) in enumerate(plan):
        def step_progress(fraction, _name=name, _steps=steps):
            report((done + fraction * _steps) / total, f"training {_name} ({int(fraction * _steps)}/{_steps} steps)")

        phase_started = time.perf_counter()
        if name == "base":
            model = train_base(seed, recipe, pools, step_progress)
        elif name == "sequential":
            # Task A's expert is exactly "base fine-tuned on A": continue it on B.
            model = train(copy.deepcopy(trained[task_a]), pools[task_b], steps, recipe.sequential_lr, recipe,
                          seed + 100, step_progress)
        else:
            model = train(copy.deepcopy(trained["base"]), pools[name], steps, recipe.expert_lr, recipe,
                          seed + 1 + index, step_progress)
        trained[name] = model
        train_seconds = time.perf_counter() - phase_started
        done += steps
        report(done / total, f"evaluating {name}")
        scores = evaluate_model(model, tokenizer, eval_set, batch_size=100)
        with _quiet_transformers():
            save_model(model, folder / "models" / name, tokenizer)
        records.append({
            "name": name, "role": role, "path": f"models/{name}", "trained_on": trained_on,
            "checksum": state_checksum(model), "train_seconds": round(train_seconds, 1),
            "accuracy": {task: score.accuracy for task, score in scores.items()},
            "loss": {task: round(score.loss, 4) for task, score in scores.items()},
        })
    manifest = {
        "format": "recall-demo/1",
        "version": VERSION,
        "seed": seed,
        "tasks": list(TASKS),
        "sequence": [task_a, task_b],
        "models": records,
        "probe_file": "probes.jsonl",
        "eval_file": "eval.jsonl",
        "recipe": asdict(recipe),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def _publish(partial: Path, root: Path) -> None:
    """Move the finished build into place; an existing workspace is replaced only after the new one is whole."""
    if root.exists():
        trash = root.with_name(f".{root.name}.old-{partial.name.rsplit('-', 1)[-1]}")
        root.rename(trash)
        partial.rename(root)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        partial.rename(root)


def _remove_stale_partials(root: Path, max_age_s: float = 3600.0) -> None:
    """Partial builds left by a killed process (an interrupted one removes its own)."""
    now = time.time()
    for path in root.parent.glob(f".{root.name}.*"):
        try:
            if now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


@contextmanager
def _quiet_transformers():
    """No "Writing model shards" progress bar on the console while saving."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()

"""Export a merge as a Hugging Face model folder, atomically.

The folder holds sharded safetensors with their index, ``config.json``, the tokenizer files and
``generation_config.json`` of the reference model, a README model card, ``plan.json`` and
``mergekit.yaml``. Everything is written into a hidden temporary sibling of the output folder and
renamed into place at the end: a failure or Ctrl-C in the middle leaves no partial output, and an
existing folder is replaced (with ``force``) only once the new one is complete.
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from .errors import ExportError
from .merge.streaming import DEFAULT_SHARD_BYTES

# Files copied as they are from the reference model's folder (those that exist).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
    "generation_config.json",
)

# Share of the progress bar taken by the tensors; the small files take the rest.
_MERGE_SHARE = 0.9


def export_merge(plan, out_dir, force: bool = False, evaluation=None, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 progress=None) -> Path:
    """Merge ``plan`` and write it as a Hugging Face model folder ``out_dir``.

    Args:
        plan: a ``MergePlan``.
        out_dir: the folder to create.
        force: replace an existing ``out_dir`` (only after the new folder is complete).
        evaluation: an ``EvaluationTable`` (anything with ``to_markdown()``) for the model card.
        shard_bytes: the largest safetensors shard.
        progress: ``callback(fraction, message)``.

    Returns:
        The absolute path of the written folder.

    Raises:
        ExportError: ``out_dir`` exists and ``force`` is off, or the files cannot be written.
        RecallError: the plan does not match its models (from the merge).
    """
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not force:
        raise ExportError(f"output folder {out_dir} already exists; choose another or use --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output path {out_dir} is a file, not a folder")
    from .plan import validate_plan

    report = progress or (lambda fraction, message: None)
    report(0.0, "checking the plan against its models")
    checkpoints = validate_plan(plan)  # bad input fails here, before anything is written
    created_parents = _make_parents(out_dir.parent)
    temp = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        temp.mkdir()
        write_model_folder(plan, temp, evaluation=evaluation, shard_bytes=shard_bytes, name=out_dir.name,
                           progress=report, checkpoints=checkpoints)
        _move_into_place(temp, out_dir)
    except BaseException as exc:  # KeyboardInterrupt included: never leave half a folder behind
        shutil.rmtree(temp, ignore_errors=True)
        for folder in created_parents:
            _rmdir_if_empty(folder)
        if isinstance(exc, OSError):
            raise ExportError(f"could not write {out_dir}: {exc.strerror or exc}") from None
        raise
    report(1.0, f"exported to {out_dir}")
    return out_dir


def write_model_folder(plan, folder: Path, evaluation=None, shard_bytes: int = DEFAULT_SHARD_BYTES,
                       name: str | None = None, progress=None, checkpoints: dict | None = None) -> None:
    """Write every file of the export into an existing, empty ``folder`` (not atomic by itself).

    ``checkpoints``: the plan's opened checkpoints (``validate_plan``'s result), to avoid reopening.
    """
    from .card import model_card
    from .merge.streaming import stream_merge
    from .mergekit_yaml import output_dtype_name, to_mergekit_yaml
    from .plan import save_plan

    report = progress or (lambda fraction, message: None)
    folder = Path(folder)
    reference = (checkpoints or {}).get(plan.reference_name)
    mergekit_text = (to_mergekit_yaml(plan, reference.names, reference.model_type) if reference is not None
                     else to_mergekit_yaml(plan))
    stream_merge(plan, folder, shard_bytes=shard_bytes, checkpoints=checkpoints,
                 progress=lambda fraction, message: report(_MERGE_SHARE * fraction, message))
    report(_MERGE_SHARE, "writing config, tokenizer and model card")
    source = _source_folder(plan)
    write_config(source, folder, output_dtype_name(plan))
    copy_tokenizer_files(source, folder)
    (folder / "README.md").write_text(model_card(plan, evaluation, name=name or folder.name), encoding="utf-8")
    save_plan(plan, folder / "plan.json")
    (folder / "mergekit.yaml").write_text(mergekit_text, encoding="utf-8")


def write_config(source: Path, folder: Path, dtype: str) -> None:
    """The source model's ``config.json`` with the saved dtype updated."""
    path = source / "config.json"
    if not path.is_file():
        raise ExportError(f"{source} has no config.json to copy into the export")
    config = json.loads(path.read_text(encoding="utf-8"))
    dtype = str(dtype).replace("torch.", "")
    config["dtype"] = dtype
    if "torch_dtype" in config:  # configs written by transformers 4
        config["torch_dtype"] = dtype
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def copy_tokenizer_files(source: Path, folder: Path) -> list[str]:
    """Copy the tokenizer files and generation config that exist in ``source``; return their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
            copied.append(name)
    return copied


def _source_folder(plan) -> Path:
    """The folder config and tokenizer come from: the reference model (the merge's layout too)."""
    from .models import resolve_model_path

    return resolve_model_path(str(plan.spec(plan.reference_name).path))


def _move_into_place(temp: Path, out_dir: Path) -> None:
    """Rename ``temp`` to ``out_dir``; an existing ``out_dir`` is set aside first and deleted after."""
    if not out_dir.exists():
        temp.rename(out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    out_dir.rename(old)
    try:
        temp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _make_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return the created ones, deepest first."""
    missing = []
    folder = parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"could not create {parent}: {exc.strerror or exc}") from None
    return missing


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass

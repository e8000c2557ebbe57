"""Probe sets: the texts the models are run on.

Formats:
- ``.txt``: one text per line; or, when the file has a blank line, blocks separated by blank lines.
- ``.jsonl``: one JSON object per line with ``text`` and optional ``task`` and ``answer``.
- ``.csv``: a header row with a ``text`` column and optional ``task`` and ``answer`` columns.

A text without a task gets the file's stem as task. Every error names the file and the line.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ProbeFileError

SUFFIXES = (".txt", ".jsonl", ".csv")


@dataclass(frozen=True)
class ProbeItem:
    """One probe text. ``answer`` is the expected continuation, for exact-match scoring."""

    text: str
    task: str
    answer: str | None = None


@dataclass
class ProbeSet:
    """An ordered list of probe items, possibly from several files."""

    items: list[ProbeItem]
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def texts(self) -> list[str]:
        return [item.text for item in self.items]

    @property
    def tasks(self) -> list[str]:
        return [item.task for item in self.items]

    @property
    def task_names(self) -> list[str]:
        """Tasks in order of first appearance."""
        return list(dict.fromkeys(self.tasks))

    def by_task(self, task: str) -> "ProbeSet":
        return ProbeSet([i for i in self.items if i.task == task], self.sources)

    def content_hash(self) -> str:
        """Hash of the texts, tasks and answers (not of file names): the representation cache key."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(json.dumps([item.text, item.task, item.answer]).encode())
        return digest.hexdigest()[:16]

    def to_jsonl(self) -> str:
        lines = []
        for item in self.items:
            row = {"text": item.text, "task": item.task}
            if item.answer is not None:
                row["answer"] = item.answer
            lines.append(json.dumps(row, ensure_ascii=False))
        return "\n".join(lines) + "\n"


def load_probe_file(path: str | os.PathLike, task: str | None = None) -> ProbeSet:
    """Read one probe file (format by suffix).

    Args:
        task: task name for rows that have none (default: the file stem).

    Raises:
        ProbeFileError: missing file, unknown suffix, bad row, non-UTF-8 bytes, or no texts.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeFileError(f"probe file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ProbeFileError(f"{path.name}: unsupported probe file type {suffix!r} (use .txt, .jsonl or .csv)")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProbeFileError(
            f"{path.name}, line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8"
        ) from None
    default_task = task or path.stem
    parse = {".txt": _parse_txt, ".jsonl": _parse_jsonl, ".csv": _parse_csv}[suffix]
    items = parse(content, path.name, default_task)
    if not items:
        raise ProbeFileError(f"{path.name}: no texts in the file")
    return ProbeSet(items, [str(path)])


def load_probe_files(paths, task: str | None = None) -> ProbeSet:
    """Read and concatenate several probe files."""
    sets = [load_probe_file(p, task) for p in paths]
    if not sets:
        raise ProbeFileError("no probe files given")
    return concat(sets)


def concat(sets: list[ProbeSet]) -> ProbeSet:
    return ProbeSet([i for s in sets for i in s.items], [src for s in sets for src in s.sources])


def from_texts(texts, task: str = "probe", answers=None) -> ProbeSet:
    """A probe set from Python strings (notebooks, tests)."""
    texts = list(texts)
    answers = list(answers) if answers is not None else [None] * len(texts)
    if len(answers) != len(texts):
        raise ProbeFileError(f"{len(texts)} texts but {len(answers)} answers")
    items = [ProbeItem(t, task, a) for t, a in zip(texts, answers) if t.strip()]
    if not items:
        raise ProbeFileError("no texts given")
    return ProbeSet(items)


def _parse_txt(content: str, filename: str, task: str) -> list[ProbeItem]:
    lines = content.splitlines()
    if any(not line.strip() for line in lines):
        blocks, current = [], []
        for line in lines + [""]:
            if line.strip():
                current.append(line)
            elif current:
                blocks.append("\n".join(current))
                current = []
        return [ProbeItem(block, task) for block in blocks]
    return [ProbeItem(line, task) for line in lines if line.strip()]


def _parse_jsonl(content: str, filename: str, task: str) -> list[ProbeItem]:
    items = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ProbeFileError(f"{filename}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ProbeFileError(f"{filename}, line {number}: expected a JSON object with a 'text' field")
        items.append(_item(row, filename, number, task))
    return items


def _parse_csv(content: str, filename: str, task: str) -> list[ProbeItem]:
    reader = csv.DictReader(io.StringIO(content))
    if not reader.fieldnames or "text" not in [f.strip() for f in reader.fieldnames]:
        raise ProbeFileError(f"{filename}, line 1: the header needs a 'text' column (found: {reader.fieldnames})")
    items = []
    try:
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            if None in row.values() or "" in row and row[""]:
                raise ProbeFileError(f"{filename}, line {reader.line_num}: wrong number of fields")
            if not any((v or "").strip() for v in row.values()):
                continue
            items.append(_item(row, filename, reader.line_num, task))
    except csv.Error as exc:
        raise ProbeFileError(f"{filename}, line {reader.line_num}: {exc}") from None
    return items


def _item(row: dict, filename: str, number: int, task: str) -> ProbeItem:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ProbeFileError(f"{filename}, line {number}: missing or empty 'text'")
    row_task = row.get("task") or task
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        answer = str(answer)
    if not isinstance(row_task, str):
        raise ProbeFileError(f"{filename}, line {number}: 'task' must be a string")
    return ProbeItem(text, row_task.strip() or task, answer if answer != "" else None)

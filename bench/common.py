"""Shared helpers of the benchmark scripts: measured child processes, medians, side-by-side tables.

Every benchmark measures the project and its reference in the same run, alternately, and prints one
table: metric, project, reference, ratio (project / reference) and whether the target is met.

Peak RSS of a child process comes from the kernel: the command runs under GNU ``time``, which reports
the command's own ``ru_maxrss`` (its high-water mark, and that of descendants it waited for); see
:func:`run_measured` for why not ``os.wait4`` on a child forked from the benchmark itself. A psutil
poller (every 50 ms) also records the largest *sum* of RSS over the child's process tree, which catches
descendants running at the same time; both are reported, the kernel figure is the one compared.
"""
from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / "_work"  # git-ignored: models, outputs, results

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def offline_env(extra: dict | None = None) -> dict:
    """The current environment with the offline switches set (and the repo on PYTHONPATH)."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra or {})
    return env


def set_offline() -> None:
    """Set the offline switches in this process (before importing transformers)."""
    os.environ.update(OFFLINE_ENV)


# ---------------------------------------------------------------- measured child processes

@dataclass
class Measurement:
    """One run of a child process."""

    command: list[str]
    wall_s: float
    peak_rss: int  # bytes, kernel ru_maxrss of the child (wait4)
    peak_tree_rss: int  # bytes, largest polled sum of RSS over the child and its descendants
    returncode: int
    user_s: float = 0.0
    system_s: float = 0.0
    stdout: str = ""
    stderr: str = ""

    def check(self) -> "Measurement":
        if self.returncode != 0:
            raise RuntimeError(f"command failed ({self.returncode}): {' '.join(self.command)}\n"
                               f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-4000:]}")
        return self


class _TreePoller(threading.Thread):
    """Polls the RSS sum of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop_event.is_set():
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


TIME_BIN = "/usr/bin/time"  # GNU time: reports the measured command's own rusage


def run_measured(command: list[str], env: dict | None = None, cwd: str | os.PathLike | None = None,
                 timeout: float | None = None) -> Measurement:
    """Run ``command`` to the end; return its wall time, peak RSS (kernel and polled), exit code and output.

    The kernel figure needs care: a child forked from this (large) Python process starts with this
    process's resident pages counted, and Linux carries that high-water mark across ``exec``. So the
    command runs under GNU ``time``, a small process that forks it afresh and reports its own
    ``ru_maxrss``. Without GNU time, ``os.wait4``'s figure is used and may include this process's RSS.
    """
    use_time = os.path.exists(TIME_BIN)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        full = ([TIME_BIN, "-f", "%M %U %S", "-o", timing.name] if use_time else []) + [str(c) for c in command]
        started = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, env=env, cwd=cwd)
        poller = _TreePoller(proc.pid)
        poller.start()
        deadline = None if timeout is None else started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - started
        poller.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        peak, user, system = usage.ru_maxrss * 1024, usage.ru_utime, usage.ru_stime
        if use_time:
            fields = (timing.read().strip().splitlines() or [""])[-1].split()
            if len(fields) == 3:
                peak, user, system = int(fields[0]) * 1024, float(fields[1]), float(fields[2])
        out.seek(0)
        err.seek(0)
        return Measurement([str(c) for c in command], wall, peak, poller.peak, proc.returncode, user, system,
                           out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def raise_priority(nice: int) -> int:
    """Set this process's nice value (children and threads created later inherit it); returns it.

    The benchmark machine is often shared (other jobs running): a negative nice value (root only)
    gives the measured tools, all alike, precedence over that load. Call it before torch starts
    its worker threads (Linux applies it per thread). With autogroup scheduling (Linux's default
    on desktops and many VMs) CPU time is first shared between sessions, so the nice value of this
    process's autogroup (its session: this benchmark and whatever else that shell runs) is set too.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (OSError, AttributeError):
        pass
    autogroup = Path("/proc/self/autogroup")
    try:
        before = autogroup.read_text().split("nice")[-1].strip()
        autogroup.write_text(f"{nice}\n")
        atexit.register(_restore_autogroup, before)  # the session outlives the benchmark
    except (OSError, ValueError):
        pass
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (OSError, AttributeError):
        return 0


def _restore_autogroup(value: str) -> None:
    try:
        Path("/proc/self/autogroup").write_text(f"{value}\n")
    except OSError:
        pass


def cpu_pressure() -> str:
    """The kernel's CPU pressure line (share of time some task waited for a CPU), when available."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return "CPU pressure " + " ".join(p for p in line.split()[1:3])
    except (OSError, IndexError):
        return f"load average {os.getloadavg()[0]:.1f}"


def add_priority_argument(parser) -> None:
    parser.add_argument("--nice", type=int, default=-10 if hasattr(os, "geteuid") and os.geteuid() == 0 else 0,
                        help="nice value for the benchmark and its children (default -10 as root, else 0): "
                             "precedence over other load on a shared machine, the same for both sides")


def drop_page_cache() -> bool:
    """``sync`` and drop the page cache (needs root and a writable /proc/sys); False when not possible."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def read_files(paths: list[Path], block: int = 16 << 20) -> int:
    """Read files to the end (warms the page cache); returns bytes read."""
    total = 0
    buf = bytearray(block)
    view = memoryview(buf)
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(view)
                if not n:
                    break
                total += n
    return total


# ---------------------------------------------------------------- statistics and tables

def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


@dataclass
class Row:
    """One line of a comparison table; ``higher_is_better`` decides how ``target`` is read."""

    metric: str
    project: float
    reference: float | None
    unit: str = ""
    target: float | None = None  # ratio project/reference the project must reach
    higher_is_better: bool = False
    note: str = ""
    ratio: float | None = field(default=None)
    limit: float | None = None  # an absolute bound on the project's figure instead of a ratio target

    def __post_init__(self):
        if self.ratio is None and self.reference not in (None, 0):
            self.ratio = self.project / self.reference

    @property
    def met(self) -> bool | None:
        if self.limit is not None:
            return self.project >= self.limit if self.higher_is_better else self.project < self.limit
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def target_text(self) -> str:
        if self.limit is not None:
            return f"{'>=' if self.higher_is_better else '<'} {fmt_value(self.limit, self.unit)}"
        if self.target is None:
            return ""
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B":
        return fmt_bytes(value)
    if unit == "B/s":
        return fmt_bytes(value) + "/s"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 0.1 else f"{value:.2f} s"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def format_table(rows: list[Row], project: str = "recall_core", reference: str = "reference",
                 markdown: bool = False) -> str:
    """A side-by-side table (plain text, or markdown for the README)."""
    header = ["metric", project, reference, "ratio", "target", "met"]
    lines = []
    for row in rows:
        met = row.met
        lines.append([row.metric, fmt_value(row.project, row.unit), fmt_value(row.reference, row.unit),
                      "-" if row.ratio is None else f"{row.ratio:.3g}x", row.target_text(),
                      "" if met is None else ("yes" if met else "NO")])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])


# ---------------------------------------------------------------- machine and results

def machine_info() -> dict:
    """Cores, memory, CPU model, OS and library versions (for the README next to the figures)."""
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "accelerator": "none (CPU only)"}
    for module in ("torch", "transformers", "safetensors", "mergekit"):
        try:
            from importlib.metadata import version

            info[module] = version(module)
        except Exception:  # noqa: BLE001 - a missing package is just not reported
            pass
    return info


def machine_line(info: dict | None = None) -> str:
    info = info or machine_info()
    libs = ", ".join(f"{k} {info[k]}" for k in ("torch", "transformers", "safetensors", "mergekit") if k in info)
    return (f"{info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB RAM, {info['accelerator']}; "
            f"Python {info['python']}; {libs}")


def save_results(name: str, payload: dict) -> Path:
    """Write ``bench/_work/<name>.json`` (rows, settings, machine) for the README."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path = WORK_DIR / f"{name}.json"
    clean = dict(payload)
    if "rows" in clean:
        clean["rows"] = [{**asdict(r), "met": r.met} if isinstance(r, Row) else r for r in clean["rows"]]
    path.write_text(json.dumps(clean, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

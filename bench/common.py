"""What every benchmark shares: options, results, the one table, the JSON file, machine and process facts.

The machine is small and noisy, so a benchmark never reports a speed on its
own. It repeats each measurement in rounds, runs its baselines in the same
rounds (in a rotating order), and reports datamill's speed as a ratio to each
baseline, taken round by round and then the median. A benchmark module exposes
`run(options) -> Section`; `bench.__main__` runs the modules, prints one table
and writes `bench/results/<UTC timestamp>.json`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import psycopg

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024

#: Rate limits and quotas that admit every call of a benchmark; the limiter's Redis call and the quota's lock still run.
OPEN_LIMITS = {
    "DATAMILL_RATE_LIMIT_READ_PER_SECOND": "1000000",
    "DATAMILL_RATE_LIMIT_READ_BURST": "1000000",
    "DATAMILL_RATE_LIMIT_WRITE_PER_SECOND": "1000000",
    "DATAMILL_RATE_LIMIT_WRITE_BURST": "1000000",
    "DATAMILL_QUOTA_CONCURRENT_JOBS": "0",
    "DATAMILL_QUOTA_DATASETS": "0",
}

#: Progress goes to stderr so that stdout carries only the table.
console = Console(stderr=True, highlight=False)


@dataclass(frozen=True, slots=True)
class Options:
    rows: int  # the row count of the main measurements
    repeats: int  # rounds of every repeated measurement
    quick: bool


@dataclass(slots=True)
class Result:
    """One line of the table: a measurement of `rows` rows, taken once per round."""

    label: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    #: The section's subject rows/s ÷ this line's rows/s (1.0 on the subject's own line).
    ratio: float | None = None
    peak_rss_bytes: int | None = None
    note: str = ""

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.median_seconds

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how much the rounds disagree."""
        return (max(self.seconds) - min(self.seconds)) / self.median_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rows": self.rows,
            "seconds": [round(s, 6) for s in self.seconds],
            "median_seconds": round(self.median_seconds, 6),
            "rows_per_second": round(self.rows_per_second, 1),
            "spread": round(self.spread, 4),
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "peak_rss_bytes": self.peak_rss_bytes,
            "note": self.note,
        }


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `samples` (fraction 0.99 for p99): a value that was measured."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class Latency:
    """One line of the latency table: `concurrency` callers making calls for `seconds`, each call's latency kept."""

    label: str
    concurrency: int
    samples_ms: list[float]
    seconds: float
    errors: int = 0
    #: The baseline's line (same concurrency) this one is compared with: p99 and calls/s ratios in the table.
    baseline: Latency | None = None
    note: str = ""

    def p(self, fraction: float) -> float:
        return percentile(self.samples_ms, fraction)

    @property
    def calls_per_second(self) -> float:
        return len(self.samples_ms) / self.seconds

    def ratios(self) -> tuple[float, float] | None:
        """(this p99 ÷ the baseline's, this calls/s ÷ the baseline's), or None without a baseline."""
        if self.baseline is None or self.baseline is self:
            return None
        return self.p(0.99) / self.baseline.p(0.99), self.calls_per_second / self.baseline.calls_per_second

    def to_json(self) -> dict[str, Any]:
        ratios = self.ratios()
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "calls": len(self.samples_ms),
            "errors": self.errors,
            "seconds": round(self.seconds, 6),
            "calls_per_second": round(self.calls_per_second, 1),
            **{f"p{round(f * 100)}_ms": round(self.p(f), 3) for f in (0.5, 0.95, 0.99)},
            "max_ms": round(max(self.samples_ms), 3),
            "p99_ratio": None if ratios is None else round(ratios[0], 3),
            "throughput_ratio": None if ratios is None else round(ratios[1], 3),
            "note": self.note,
        }


@dataclass(slots=True)
class Section:
    """One benchmark's results: table lines, notes under the table, and facts for the JSON."""

    name: str
    title: str
    results: list[Result] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Facts about the services measured (e.g. PostgreSQL's version), merged into the run's machine facts.
    environment: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "results": [r.to_json() for r in self.results],
            "latencies": [latency.to_json() for latency in self.latencies],
            "notes": self.notes,
            "environment": self.environment,
            "data": self.data,
        }


def paired_ratio(subject: Result, baseline: Result) -> float:
    """Median over rounds of subject rows/s ÷ baseline rows/s, each pair measured in the same round.

    Pairing cancels most of the machine's drift between rounds. Measurements
    not taken in the same rounds fall back to the ratio of their medians.
    """
    if len(subject.seconds) != len(baseline.seconds):
        return subject.rows_per_second / baseline.rows_per_second
    return statistics.median(
        (subject.rows / s) / (baseline.rows / b) for s, b in zip(subject.seconds, baseline.seconds, strict=True)
    )


def run_rounds(measurements: Sequence[tuple[Result, Callable[[int], float]]], repeats: int) -> None:
    """Call each measurement once per round, appending the seconds it returns to its Result.

    The order rotates from round to round, so no measurement always runs
    first (on a cold cache) or right after the heaviest one.
    """
    for index in range(repeats):
        shift = index % len(measurements)
        for result, measure in (*measurements[shift:], *measurements[:shift]):
            console.log(f"round {index + 1}/{repeats}: {result.label}")
            result.seconds.append(measure(index))


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn()` took on the monotonic high-resolution clock."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# --- the report -----------------------------------------------------------------------------------


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:,.0f}×"


def render_table(sections: Iterable[Section]) -> Table:
    table = Table(title="datamill benchmarks", title_justify="left")
    table.add_column("benchmark")
    table.add_column("measurement")
    table.add_column("rows", justify="right")
    table.add_column("median s", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("rows/s", justify="right")
    table.add_column("datamill ÷ this", justify="right")
    table.add_column("peak RSS", justify="right")
    for section in sections:
        for index, result in enumerate(section.results):
            table.add_row(
                section.name if index == 0 else "",
                result.label + (f" [dim]({result.note})[/]" if result.note else ""),
                f"{result.rows:,}",
                f"{result.median_seconds:.3f}",
                f"±{result.spread / 2:.0%}" if len(result.seconds) > 1 else "n=1",
                f"{result.rows_per_second:,.0f}",
                _ratio_text(result.ratio),
                f"{result.peak_rss_bytes / MIB:,.0f} MiB" if result.peak_rss_bytes is not None else "",
            )
        table.add_section()
    return table


def render_latency_table(sections: Iterable[Section]) -> Table:
    table = Table(title="datamill latency", title_justify="left")
    for name in ("benchmark", "measurement"):
        table.add_column(name)
    for name in ("callers", "calls", "errors", "p50 ms", "p95 ms", "p99 ms", "calls/s", "p99 ÷ base", "calls/s ÷ base"):
        table.add_column(name, justify="right")
    for section in sections:
        for index, latency in enumerate(section.latencies):
            ratios = latency.ratios()
            table.add_row(
                section.name if index == 0 else "",
                latency.label + (f" [dim]({latency.note})[/]" if latency.note else ""),
                f"{latency.concurrency:,}",
                f"{len(latency.samples_ms):,}",
                f"{latency.errors:,}",
                *(f"{latency.p(f):.2f}" for f in (0.5, 0.95, 0.99)),
                f"{latency.calls_per_second:,.0f}",
                *(("", "") if ratios is None else (f"{ratios[0]:.2f}×", f"{ratios[1]:.2f}×")),
            )
        if section.latencies:
            table.add_section()
    return table


def print_report(sections: Sequence[Section], machine: Mapping[str, Any]) -> None:
    out = Console(highlight=False, width=max(Console().width, 140))
    cpu = f"{machine['cpu_count']} CPUs ({machine['cpu_model']})"
    versions = f"Python {machine['python']}, PostgreSQL {machine.get('postgres', {}).get('server_version', '?')}"
    out.print(f"{cpu}, {versions}, load average {machine['load_average_start']} at start")
    if any(section.results for section in sections):
        out.print(render_table(sections))
    if any(section.latencies for section in sections):
        out.print(render_latency_table(sections))
    for section in sections:
        for note in section.notes:
            out.print(f"[bold]{section.name}[/]: {note}")


def print_summary(sections: Sequence[Section]) -> None:
    """The figures every benchmark holds against a target, gathered under all the tables."""
    out = Console(highlight=False, width=max(Console().width, 140))
    table = Table(title="targets", title_justify="left")
    table.add_column("benchmark")
    table.add_column("figure against its target")
    for section in sections:
        for note in section.notes:
            if "target" in note:
                table.add_row(section.name, note)
    out.print(table)


def options_json(options: Options) -> dict[str, Any]:
    return {"rows": options.rows, "repeats": options.repeats, "quick": options.quick}


def write_json(document: Mapping[str, Any], started: datetime, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


# --- machine facts --------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """Facts that make a result file comparable with another: CPUs, memory, versions, commit."""
    memory = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")),
        None,
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_bytes": int(memory) * 1024 if memory else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": {
            name: _version(name) for name in ("numpy", "pyarrow", "psycopg", "grpcio", "taskiq", "faker", "mimesis")
        },
        "git_commit": _git_commit(),
        "load_average_start": load_average(),
    }


# --- processes (Linux /proc) -----------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from every thread's children list."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = children(pid)
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children(child))
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def status_bytes(pid: int, key: str) -> int:
    """A memory figure from /proc/<pid>/status in bytes, e.g. "VmHWM" (peak RSS) or "VmRSS"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            amount, unit = value.split()
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {key} of process {pid}")
            return int(amount) * 1024
    raise KeyError(f"/proc/{pid}/status has no {key}")


def reset_peak_rss(pid: int) -> bool:
    """Set the process's peak RSS (VmHWM) to its current RSS, so that it measures what comes next.

    False when the kernel refuses (before Linux 4.0, or not our process): the peak then stays the one since
    the process started.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; fields after it are plain numbers.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


# --- CPU seconds of the stack's processes ----------------------------------------------------------------


#: What is measured besides the worker processes; "client" is this process, which submits and watches the jobs.
PARTIES = ("postgres", "server", "redis", "client")


class Meters:
    """CPU seconds of the stack's processes and of the machine, read before and after a measurement."""

    def __init__(self, admin: psycopg.Connection[Any]) -> None:
        # pgserver's PostgreSQL is not our descendant: find its postmaster as the parent of our own backend.
        backend = admin.execute("SELECT pg_backend_pid()").fetchone()
        if backend is None:
            raise RuntimeError("PostgreSQL did not give its backend pid")
        self.postmaster = parent_pid(int(backend[0]))
        ours = descendants(os.getpid())
        self.server = server_pid()
        self.redis = only_process(ours, "redis-server")

    def read(self, workers: list[int]) -> dict[str, Any]:
        return {
            "workers": [live_cpu_seconds(pid) for pid in workers],
            "postgres": tree_cpu_seconds(self.postmaster),
            "server": tree_cpu_seconds(self.server),
            "redis": live_cpu_seconds(self.redis),
            "client": cpu_seconds(os.getpid()),
            "machine": machine_busy_seconds(),
        }

    def since(self, before: dict[str, Any], workers: list[int], seconds: float) -> dict[str, Any]:
        after = self.read(workers)
        spent = [round(a - b, 3) for a, b in zip(after["workers"], before["workers"], strict=True)]
        parties = {key: round(after[key] - before[key], 3) for key in (*PARTIES, "machine")}
        ours = sum(spent) + sum(parties[key] for key in PARTIES)
        return {
            "seconds": round(seconds, 4),
            "workers": sorted(spent, reverse=True),
            **parties,
            "ours": round(ours, 3),
        }


def server_pid() -> int:
    """The datamill-server started under this process (with DATAMILL_SERVER_PROCESSES > 1, its supervisor)."""
    return only_process(descendants(os.getpid()), "datamill-server")


def process_cpu_seconds() -> float:
    """User + system CPU time of this process so far (resource.getrusage)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def only_process(pids: list[int], program: str) -> int:
    matches = [pid for pid in pids if any(program in part for part in cmdline(pid)[:2])]
    tops = [pid for pid in matches if not any(pid in descendants(other) for other in matches)]
    if len(tops) != 1:
        raise RuntimeError(f"expected one {program} under process {os.getpid()}, found {tops}")
    return tops[0]


def proc_stat(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces; the fields after it are plain numbers, from field 3 (state) on.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent_pid(pid: int) -> int:
    return int(proc_stat(pid)[1])


def live_cpu_seconds(pid: int) -> float:
    """CPU seconds of a live process, 0 for one that has just exited (its time is then its parent's)."""
    with contextlib.suppress(OSError):
        return cpu_seconds(pid)
    return 0.0


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root`, of its live descendants, and of the children it has already waited for.

    PostgreSQL's backends come and go; a finished one's time moves into the postmaster's cutime and cstime, so
    a difference of two readings counts every process that ran in between.
    """
    fields = proc_stat(root)
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return cpu_seconds(root) + reaped + sum(live_cpu_seconds(pid) for pid in descendants(root))


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle (user, nice, system, irq, softirq, steal) since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

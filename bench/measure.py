"""What a bench measures about processes and the machine, and how it prints the figures."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


def machine() -> dict[str, Any]:
    """Cores, memory and load of this machine right now."""
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in load],
        "python": platform.python_version(),
    }


def commit() -> str:
    """The checked-out commit (with `+dirty` when the tree has changes), or `unknown`;
    `BENCH_COMMIT` names it when the bench runs from an exported tree (no .git)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "raftorch",
                "protocol",
                "bench",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (nearest rank) of `values`, or None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p99/max in milliseconds of latencies given in seconds, and the sample count."""
    ordered = sorted(values)

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 1)

    return {
        "count": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1] if ordered else None),
    }


@dataclass
class ProcessGroup:
    """Processes whose CPU (summed, in cores) and RSS (each, peak) are measured together."""

    name: str
    pids: list[int]
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _start: tuple[float, float] | None = None
    peak_rss: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for pid in self.pids:
            self.add(pid)

    def add(self, pid: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self._procs[pid] = psutil.Process(pid)

    def _cpu(self) -> float:
        total = 0.0
        for proc in self._procs.values():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def start(self) -> None:
        """Start a CPU window (call `cores()` to end it)."""
        self._start = (time.monotonic(), self._cpu())

    def cores(self) -> float | None:
        """Cores used on average since `start()` (summed over the group)."""
        if self._start is None:
            return None
        wall = time.monotonic() - self._start[0]
        return round((self._cpu() - self._start[1]) / wall, 3) if wall > 0 else None

    def sample_rss(self) -> None:
        for pid, proc in self._procs.items():
            try:
                rss = proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self.peak_rss[pid] = max(rss, self.peak_rss.get(pid, 0))

    def peak_rss_mb(self) -> list[float]:
        return [round(v / 2**20, 1) for v in self.peak_rss.values()]


def table(rows: Iterable[tuple[str, Any]]) -> str:
    """Two columns, figure and value, as a Markdown table."""
    lines = ["| figure | value |", "|---|---|"]
    for name, value in rows:
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"| {name} | {text} |")
    return "\n".join(lines)


def flatten(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested figures as (dotted name, value) rows."""
    rows: list[tuple[str, Any]] = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def write_report(
    bench: str, params: dict[str, Any], figures: dict[str, Any], path: Path | None
) -> dict[str, Any]:
    """Print the table and write the JSON report (commit, machine, parameters, figures)."""
    report: dict[str, Any] = {
        "bench": bench,
        "commit": commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "params": params,
        "figures": figures,
    }
    print(
        f"\n## bench {bench} at {report['commit']} — load average "
        f"{report['machine']['load_average']}\n"
    )
    print(table(flatten({"params": params, **figures})))
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nJSON: {path}")
    return report

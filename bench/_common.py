"""Helpers the benchmark scripts share: environment facts, statistics, output."""

from __future__ import annotations

import gc
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "WRITER_THREAD",
    "Case",
    "Sample",
    "Timer",
    "add_json_flag",
    "environment",
    "measure",
    "median",
    "percentile",
    "remove_db",
    "rss_kib",
    "sqlite_url",
    "status_kib",
    "summarize",
    "write_json",
]

WRITER_THREAD = "exectrack-writer"  # the name exectrack gives its background writer


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What a reader needs to compare two result files (no host names, no paths)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "exectrack": _version("exectrack"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
    }


def sqlite_url(db: Path, *, synchronous: str, busy_timeout_ms: int) -> str:
    """An exectrack SQLite URL with the pragmas spelled out (the raw cases use the same)."""
    return f"sqlite:///{db}?synchronous={synchronous}&busy_timeout={busy_timeout_ms}"


def remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, RssAnon, ...), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib() -> int:
    """Current resident set size in KiB (peak RSS where /proc is missing)."""
    value = status_kib("VmRSS")
    if value is not None:
        return value
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def add_json_flag(parser: Any) -> None:
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the results as JSON to PATH ('-' or no value: stdout, "
        "instead of the table)",
    )


def write_json(target: str, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, sort_keys=False)
    if target == "-":
        print(text)
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed repeat of one case."""

    runs: int
    seconds: float
    cpu_seconds: float  # process CPU (all threads) inside the timed region
    persisted: int  # rows (or spans) the case verifiably delivered, warm-up included
    expected: int
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    label: str
    per_commit: bool  # True: sized by the per-commit run count (one or two commits a run)
    fn: Callable[..., Sample]


class Timer:
    """Wall and process-CPU time between ``start`` and ``stop``."""

    def start(self) -> None:
        gc.collect()
        self._cpu = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        wall = time.perf_counter() - self._t0
        return wall, time.process_time() - self._cpu


def measure(runs: Callable[[int], None], n: int, warmup: int) -> tuple[float, float]:
    """``runs(warmup)`` untimed, then (wall, cpu) seconds of ``runs(n)``."""
    runs(warmup)
    timer = Timer()
    timer.start()
    runs(n)
    return timer.stop()


def summarize(case: Case, samples: list[Sample]) -> dict[str, Any]:
    """Median per-run figures of one case over its repeats."""
    per_run = [s.seconds / s.runs * 1e6 for s in samples]
    us = median(per_run)
    return {
        "key": case.key,
        "label": case.label,
        "runs": samples[0].runs,
        "repeats": len(samples),
        "us_per_run": us,
        "us_per_run_min": min(per_run),
        "us_per_run_max": max(per_run),
        "runs_per_s": 1e6 / us if us else 0.0,
        "cpu_us_per_run": median([s.cpu_seconds / s.runs * 1e6 for s in samples]),
        "all_persisted": all(s.persisted == s.expected for s in samples),
        "dropped": sum(s.dropped for s in samples),
        "samples": [asdict(s) for s in samples],
    }

"""Helpers the benchmark scripts share: environment facts, statistics, output."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "WRITER_THREAD",
    "add_json_flag",
    "environment",
    "median",
    "percentile",
    "remove_db",
    "rss_kib",
    "sqlite_url",
    "status_kib",
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

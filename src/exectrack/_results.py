"""The query layer's result records (see :mod:`exectrack.query`, which exports them).

They live here so that a command that only lists runs does not pay for creating them:
``exectrack.query`` loads this module on the first use of one of them (the report's
records are in ``_report.py``: ``exectrack report`` creates those two alone; each
dataclass costs start-up ~4 M instructions, bench/cli_startup.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exectrack._model import Run

__all__ = ["Changes", "RunStats", "SourceStats"]


@dataclass(frozen=True, slots=True)
class Changes:
    """One page of the change feed: runs created or changed after the cursor it was
    asked for, oldest change first, each once and as it is now. Pass ``cursor`` back
    for the next page; it is the one asked for when nothing changed."""

    runs: list[Run]
    cursor: str


@dataclass(frozen=True, slots=True)
class RunStats:
    """Counts of the runs matching a filter."""

    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return self.by_status.get("queued", 0) + self.by_status.get("running", 0)

    @property
    def error_rate(self) -> float | None:
        """Share of finished runs that ended ``error`` or ``timeout``."""
        finished = self.total - self.open
        if finished == 0:
            return None
        failed = self.by_status.get("error", 0) + self.by_status.get("timeout", 0)
        return failed / finished

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "open": self.open,
            "error_rate": self.error_rate,
            "by_status": self.by_status,
            "by_source": self.by_source,
        }


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Outcome figures of one source among the runs matching a filter.

    ``success_rate`` = success / finished runs (None when none finished); the
    percentiles are nearest-rank durations of the finished runs. ``buckets`` (only
    when ``bounds`` were asked for) count finished runs with a duration <= each bound.
    """

    source: str
    total: int
    by_status: dict[str, int]
    open: int
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    top_errors: list[tuple[str, int]]
    buckets: tuple[int, ...] = ()
    duration_count: int = 0
    duration_sum_ms: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "total": self.total,
            "by_status": self.by_status,
            "open": self.open,
            "success_rate": self.success_rate,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "top_errors": [{"code": c, "count": n} for c, n in self.top_errors],
        }

"""What the store's summaries and the reaper return (``Store.summarize``,
``Store.aggregate``, ``Store.reap``).

Their own module, loaded on first use and apart from the write commands
(``_records.py``): ``exectrack report`` and ``exectrack reap`` create these three
dataclasses and none of the others (each costs start-up ~4 M instructions,
bench/cli_startup.py). Import them from ``exectrack.stores``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exectrack._model import RunStatus

__all__ = ["Reaped", "SourceAggregate", "SourceSummary"]


@dataclass(frozen=True, slots=True)
class Reaped:
    """A run the reaper finished (or, in a dry run, would finish), and why.

    ``reason``: ``dead_owner`` (its process on this host is gone), ``deadline`` (past
    ``deadline_at``) or ``lease_expired`` (no heartbeat within its lease).
    """

    run_id: str
    source: str
    source_ref: str | None
    owner: str | None
    status: RunStatus
    error_code: str
    reason: str


@dataclass(frozen=True, slots=True)
class SourceSummary:
    """One source's figures for a report. Runs "in the window" started at or after its
    start; ``open``, ``open_past_lease`` and ``oldest_open_at`` count every open run."""

    source: str
    by_status: dict[RunStatus, int]  # runs in the window, by status
    error_codes: dict[str, int]  # runs in the window, by error code
    open: int
    open_past_lease: int
    open_past_lease_in_window: int
    oldest_open_at: int | None  # started_at (microseconds) of the oldest open run
    p50_ms: float | None  # durations of the runs in the window that finished
    p95_ms: float | None
    first_item_p50_ms: float | None = None  # time to first item of the window's streams
    first_item_p95_ms: float | None = None


@dataclass(frozen=True, slots=True)
class SourceAggregate:
    """One source's figures over the runs matching a filter (``Store.aggregate``).

    ``quantiles`` maps each quantile asked for to the nearest-rank duration of the
    source's finished runs (absent when none has a duration). ``buckets[i]`` counts the
    finished runs with ``duration_ms <= bounds[i]`` (cumulative, as Prometheus wants);
    ``duration_count``/``duration_sum_ms`` cover every finished run with a duration.
    """

    source: str
    by_status: dict[RunStatus, int]
    error_codes: dict[str, int]
    quantiles: dict[float, float] = field(default_factory=dict)
    buckets: tuple[int, ...] = ()
    duration_count: int = 0
    duration_sum_ms: float = 0.0

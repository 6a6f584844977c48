"""The commands and results that cross the Store protocol, apart from the read path's
``RunFilter`` and ``Page`` (``_base.py``).

Their own module, loaded on first use: a CLI read (``exectrack runs list``) never
creates them, and each dataclass costs its start-up ~0.7 ms (bench/cli_startup.py).
Import them from ``exectrack.stores``.

Write commands carry times as integer microseconds since the Unix epoch (UTC) and
metadata as JSON text that the tracker already redacted and capped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exectrack._model import RunStatus

__all__ = [
    "ApplyResult",
    "Command",
    "FinishResult",
    "FinishRun",
    "MarkRunning",
    "NewRun",
    "Reaped",
    "SourceAggregate",
    "SourceSummary",
]


@dataclass(slots=True)
class NewRun:
    """Create a run. Usually ``running``; ``queued`` for work that waits first.

    A run may also be created already terminal (``finished_at`` set), which is how a
    batch writes a run whose start and finish arrive together.
    """

    id: str
    source: str
    started_at: int
    status: RunStatus = RunStatus.RUNNING
    source_ref: str | None = None
    session_id: str | None = None
    parent_id: str | None = None
    metadata: str | None = None
    owner: str | None = None
    deadline_at: int | None = None
    finished_at: int | None = None
    duration_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    lease_until: int | None = None  # the reaper may finish it after this, unless renewed
    items: int | None = None  # a stream's items (set with the finish folded in)
    first_item_ms: float | None = None
    # Writer bookkeeping: set (under the writer's lock) once the writer took this
    # command from its queue; until then a finish may be folded into it in place.
    taken: bool = field(default=False, repr=False, compare=False)


@dataclass(slots=True)
class MarkRunning:
    """Move a run from ``queued`` to ``running``; anything else is left unchanged."""

    id: str
    at: int


@dataclass(slots=True)
class FinishRun:
    """Finish an open run. ``metadata`` (full JSON text) replaces the stored metadata
    when given; ``duration_ms`` None means: derive it from the stored ``started_at``."""

    id: str
    status: RunStatus
    finished_at: int
    duration_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    metadata: str | None = None
    items: int | None = None  # a stream's items; None for a run that is not a stream
    first_item_ms: float | None = None  # from the run's start to its first item


Command = NewRun | MarkRunning | FinishRun


@dataclass(frozen=True, slots=True)
class FinishResult:
    """Outcome of a finish (or a start). Truthy exactly when the write applied.

    When it did not apply, ``status`` is the run's existing status, or None when no
    run has that id.
    """

    applied: bool
    status: RunStatus | None

    def __bool__(self) -> bool:
        return self.applied


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one ``Store.apply`` transaction did; each command counts exactly once, so
    the four fields add up to the number of commands.

    ``created``: creates that inserted a run (a run created already terminal counts
    here, not in ``finished``). ``started``/``finished``: starts and finishes that
    applied. ``not_applied``: commands that changed nothing (an existing id, a start
    or finish refused by the guard, an unknown id).
    """

    created: int = 0
    started: int = 0
    finished: int = 0
    not_applied: int = 0


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

"""The Store protocol and the commands and results that cross it.

A store persists runs. It is synchronous and thread-safe; async callers reach it
through the tracker's writer thread. Every engine passes the same contract suite
(``tests/stores/test_contract.py``).

Write commands carry times as integer microseconds since the Unix epoch (UTC) and
metadata as JSON text that the tracker already redacted and capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from exectrack._model import Run, RunStatus

__all__ = [
    "ApplyResult",
    "Command",
    "FinishResult",
    "FinishRun",
    "MarkRunning",
    "NewRun",
    "Page",
    "Reaped",
    "RunFilter",
    "SourceAggregate",
    "SourceSummary",
    "Store",
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


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Server-side filters; every field is optional and they combine with AND.

    ``statuses`` and ``sources`` match any of their values. ``started_after`` is
    inclusive, ``started_before`` exclusive. ``text`` is a literal substring (``%``,
    ``_`` and ``\\`` are plain characters) of ``source_ref`` or ``error_message``,
    ASCII letters in either case (no other letter folds), on every engine; a
    trigram index serves needles of three characters or more, shorter ones scan
    (``stores/_text.py``).
    """

    sources: tuple[str, ...] = ()
    statuses: tuple[RunStatus, ...] = ()
    session_id: str | None = None
    source_ref: str | None = None
    parent_id: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of runs, newest first. ``next_cursor`` is None on the last page."""

    runs: list[Run] = field(default_factory=list)
    next_cursor: str | None = None


@runtime_checkable
class Store(Protocol):
    """The narrow persistence contract every engine implements.

    Idempotency and ordering:

    - ``create`` of an id that exists changes nothing and returns False.
    - ``finish`` applies only while the run is open (``finished_at IS NULL``), through
      one conditional UPDATE; a ``queued`` run may only finish ``canceled``. The
      first terminal write wins; later ones change nothing and report the existing
      status.
    - ``apply`` runs its commands in order inside one transaction, with the same
      result as running them one by one.
    - ``list_runs`` orders by ``(started_at, id)`` descending; ``id`` breaks ties, so
      the order is total and pages never repeat or skip a run.
    """

    url: str

    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied (empty if none)."""
        ...

    def schema_version(self) -> int:
        """The version recorded in the database (0 for an empty database)."""
        ...

    def create(self, run: NewRun) -> bool: ...

    def start(self, run_id: str, at: int) -> FinishResult: ...

    def finish(self, cmd: FinishRun) -> FinishResult: ...

    def apply(self, commands: Sequence[Command]) -> ApplyResult: ...

    def get(self, run_id: str) -> Run | None:
        """The run, or None when no run has this id."""
        ...

    def list_runs(
        self, flt: RunFilter, *, limit: int, cursor: tuple[int, str] | None = None
    ) -> list[Run]:
        """Up to ``limit`` runs strictly after ``cursor`` (started_at_us, id)."""
        ...

    def count_runs(self, flt: RunFilter) -> dict[tuple[str, RunStatus], int]:
        """Run counts per (source, status) among the runs matching ``flt``."""
        ...

    def changes(self, after: tuple[int, str] | None, *, limit: int) -> list[tuple[int, Run]]:
        """The change feed: up to ``limit`` runs created or changed (started, finished,
        reaped) after the position ``after`` (change stamp, id), oldest change first,
        each once, at its current state, with its stamp. A lease renewal is no change."""
        ...

    def changes_head(self) -> tuple[int, str]:
        """The feed's current position: ``changes`` after it holds only later changes."""
        ...

    def summarize(self, since: int | None, now: int) -> list[SourceSummary]:
        """Per-source figures for the hang-rate report (runs started since ``since``;
        leases judged at ``now``), sorted by source."""
        ...

    def aggregate(
        self, flt: RunFilter, *, quantiles: Sequence[float] = (), bounds: Sequence[float] = ()
    ) -> list[SourceAggregate]:
        """Per-source counts by status and error code, duration quantiles (each in
        (0, 1]) and cumulative duration buckets (``bounds`` in ms, ascending) of the
        runs matching ``flt``, computed in the database; sorted by source."""
        ...

    def latest_runs(self, filters: Sequence[RunFilter]) -> list[Run | None]:
        """The newest run matching each filter (None where none does), in order, in
        one round trip."""
        ...

    def heartbeat(
        self, owner: str, at: int, lease_until: int, run_ids: Sequence[str] | None = None
    ) -> int:
        """Set ``heartbeat_at``/``lease_until`` on the open runs of ``owner``: all of
        them, or only those in ``run_ids`` (the runs the process still holds, so a
        run whose finish was lost stops being renewed and gets reaped); returns how
        many runs it renewed."""
        ...

    def open_owners(self) -> list[str]:
        """The distinct owners of open runs."""
        ...

    def reap(
        self, now: int, *, dead_owners: Sequence[str] = (), dry_run: bool = False
    ) -> list[Reaped]:
        """Finish open runs of ``dead_owners`` (abandoned), past their deadline
        (timeout) or past their lease (abandoned), with the guarded UPDATE."""
        ...

    def fold_rollups(self, *, limit: int | None = None) -> int:
        """Add the runs finished since the last fold to the rollups the stats read
        (a store also does it every few thousand changes it writes); returns how many
        runs it added."""
        ...

    def close(self) -> None: ...

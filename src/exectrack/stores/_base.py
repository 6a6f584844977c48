"""The Store protocol and the read path's filter and page.

A store persists runs. It is synchronous and thread-safe; async callers reach it
through the tracker's writer thread. Every engine passes the same contract suite
(``tests/stores/test_contract.py``). The write commands and the other results that
cross the protocol live in ``_records.py``, the summaries in ``_summaries.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from exectrack._model import Run, RunStatus

if TYPE_CHECKING:
    from exectrack.stores._records import (
        ApplyResult,
        Command,
        FinishResult,
        FinishRun,
        NewRun,
    )
    from exectrack.stores._summaries import Reaped, SourceAggregate, SourceSummary

__all__ = ["Page", "RunFilter", "Store"]


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

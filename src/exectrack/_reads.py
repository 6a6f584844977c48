"""The tracker's read methods. Each flushes first, so a process always reads its own
writes, then goes through :mod:`exectrack.query`, the one read path."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from exectrack import query
from exectrack._model import Run, us_to_datetime
from exectrack.monitor import reap_once
from exectrack.stores import Page, Reaped, Store

if TYPE_CHECKING:
    from exectrack._clock import Clock
    from exectrack._report import Report
    from exectrack._results import Changes, RunStats

__all__ = ["TrackerReads"]


class TrackerReads:
    store: Store
    clock: Clock

    def flush(self, timeout: float | None = 10.0) -> bool:
        raise NotImplementedError

    def get_run(self, run_id: str) -> Run | None:
        """The run with this id, or None."""
        self.flush()
        return query.get_run(self.store, run_id)

    def list_runs(self, *, limit: int = 50, cursor: str | None = None, **filters: Any) -> Page:
        """A page of runs; ``filters`` are those of :func:`exectrack.query.make_filter`."""
        self.flush()
        return query.list_runs(self.store, query.make_filter(**filters), limit=limit, cursor=cursor)

    def latest_run(self, **filters: Any) -> Run | None:
        """The newest run matching ``filters`` (e.g. ``source=...`` for a badge)."""
        self.flush()
        return query.latest_run(self.store, query.make_filter(**filters))

    def run_stats(self, **filters: Any) -> RunStats:
        """Counts by status and source of the runs matching ``filters``."""
        self.flush()
        return query.run_stats(self.store, query.make_filter(**filters))

    def changes(self, after: str | None = None, *, limit: int = 500) -> Changes:
        """Runs created or changed after the cursor ``after`` (see
        :func:`exectrack.query.changes`)."""
        self.flush()
        return query.changes(self.store, after, limit=limit)

    def changes_head(self) -> str:
        """The change feed's position now (see :func:`exectrack.query.changes_head`)."""
        self.flush()
        return query.changes_head(self.store)

    def report(self, *, since: str | datetime | None = None) -> Report:
        """The hang-rate report per source (see :func:`exectrack.query.report`)."""
        self.flush()
        return query.report(self.store, since=since, now=self.clock_now())

    def reap(self, *, dry_run: bool = False) -> list[Reaped]:
        """Run the reaper once now (see :func:`exectrack.monitor.reap_once`)."""
        self.flush()
        return reap_once(self.store, self.clock.now_us(), dry_run=dry_run)

    def clock_now(self) -> datetime:
        """The tracker's clock, as an aware UTC datetime."""
        return us_to_datetime(self.clock.now_us())

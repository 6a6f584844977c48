"""The tracker's lifetime: what it holds open, flushing, shutdown, close and stats.

Mixed into :class:`~exectrack.ExecutionTracker` (as its reads are, from ``_reads``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exectrack import _owner
from exectrack._config import Durability
from exectrack._lifecycle import SHUTDOWN
from exectrack._writer import EXIT_STALLED, WriterStats, log_unwritten

if TYPE_CHECKING:
    from exectrack._breaker import Breaker
    from exectrack._failures import Failures
    from exectrack._handle import RunHandle
    from exectrack._writer import Writer
    from exectrack.monitor import Monitor
    from exectrack.stores import FinishResult, Store

__all__ = ["TrackerLifetime", "TrackerStats"]


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Health of the write path. ``dropped`` runs were never written; ``unavailable``:
    the store failed its last attempt and nothing waits for it until it answers."""

    enabled: bool
    durability: Durability
    open_runs: int
    queued: int
    committed: int
    not_applied: int
    dropped: int
    failures: int
    failures_by_cause: dict[str, int]
    unavailable: bool = False


class TrackerLifetime:
    """Flush, shutdown, close and stats, written over the tracker's state."""

    store: Store
    enabled: bool
    durability: Durability
    monitor: Monitor | None
    _open_runs: dict[str, RunHandle]
    _writer: Writer | None
    _breaker: Breaker | None
    _failures: Failures
    _closed: bool
    _shutting: bool
    _owns_store: bool
    _dropped: int
    _report: Callable[[str, BaseException], None]

    def _finish(
        self,
        target: RunHandle | str,
        status: Any,
        code: str | None,
        message: str | None,
        retryable: bool | None,
        metadata: Any,
    ) -> FinishResult:
        raise NotImplementedError

    def held_run_ids(self) -> list[str]:
        """Ids of the recorded runs this process still holds open (the heartbeat
        renews exactly these)."""
        gen = _owner.generation
        return [h.id for h in list(self._open_runs.values()) if h.recorded and h._gen == gen]

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every write queued so far is committed. True when drained;
        False at once while the store is down (queued writes are kept for later)."""
        ok = True if self._writer is None else self._writer.flush(timeout)
        self._failures.raise_deferred()
        return ok

    def shutdown(self, timeout: float = 5.0) -> int:
        """Finish every run this tracker still has open as ``canceled``/``shutdown``
        and flush, within ``timeout`` seconds; runs opened later are not recorded.
        Runs at interpreter exit, at a multiprocessing child's end and on SIGTERM;
        returns how many runs it finished."""
        self._shutting = True
        deadline = time.monotonic() + timeout
        finished = 0
        gen = _owner.generation
        try:
            for handle in list(self._open_runs.values()):
                if time.monotonic() >= deadline:
                    break
                if handle._gen != gen:
                    continue
                outcome = SHUTDOWN
                result = self._finish(
                    handle, outcome.status, outcome.code, outcome.message, False, None
                )
                finished += result.applied
            writer = self._writer
            remaining = max(0.0, deadline - time.monotonic())
            if writer is not None and not writer.flush(remaining, stalled=EXIT_STALLED):
                log_unwritten(writer)
        except Exception as exc:  # exiting: report, never raise
            self._report("shutdown", exc)
        if self.monitor is not None:
            self.monitor.stop(min(0.2, max(0.0, deadline - time.monotonic())))
        return finished

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, stop the writer and close a store this tracker opened."""
        if self._closed:
            return True
        self._closed = True
        if self.monitor is not None:
            self.monitor.stop(timeout)
        ok = True if self._writer is None else self._writer.close(timeout)
        if self._owns_store:
            try:
                self.store.close()
            except Exception as exc:  # pragma: no cover - closing is best effort
                self._report("close", exc)
        return ok

    def stats(self) -> TrackerStats:
        w = self._writer.stats() if self._writer is not None else WriterStats(0, 0, 0, 0, 0)
        total, failures = self._failures.snapshot()
        breaker = self._breaker
        return TrackerStats(
            enabled=self.enabled,
            durability=self.durability,
            open_runs=len(self._open_runs),
            queued=w.queued,
            committed=w.committed,
            not_applied=w.not_applied,
            dropped=w.dropped + self._dropped,
            failures=total,
            failures_by_cause=failures,
            unavailable=w.down or (breaker is not None and breaker.open),
        )

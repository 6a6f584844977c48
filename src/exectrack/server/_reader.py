"""What the app reads from: a tracker (flushed first, so a process reads its own
writes, on the tracker's clock) or a store (read as it is, on the wall clock)."""

from __future__ import annotations

from datetime import UTC, datetime

from exectrack import ExecutionTracker, InvalidArgumentError, Store, TrackerStats
from exectrack._echo import echo

__all__ = ["Reader"]

# How long a read waits for this process's queued writes before reading anyway.
FLUSH_TIMEOUT = 2.0


class Reader:
    def __init__(self, target: ExecutionTracker | Store) -> None:
        if isinstance(target, ExecutionTracker):
            self.tracker: ExecutionTracker | None = target
            self.store: Store = target.store
        elif isinstance(target, Store):
            self.tracker = None
            self.store = target
        else:
            raise InvalidArgumentError(
                f"create_app takes an ExecutionTracker or a Store, not {echo(target)}"
            )

    def sync(self) -> None:
        """Before a read: commit what this process's tracker queued."""
        if self.tracker is not None:
            self.tracker.flush(FLUSH_TIMEOUT)

    def now(self) -> datetime:
        if self.tracker is not None:
            return self.tracker.clock_now()
        return datetime.now(UTC)

    def tracker_stats(self) -> TrackerStats | None:
        return None if self.tracker is None else self.tracker.stats()

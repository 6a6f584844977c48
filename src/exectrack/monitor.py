"""No run stays ``running`` forever: heartbeats, the reaper, and the loop that runs them.

- ``reap_once(store, now)`` finishes, with the same guarded UPDATE as a normal finish:
  runs whose owner process on this host is gone (``error``/``abandoned`` at once),
  runs past ``deadline_at`` (``timeout``/``deadline_exceeded``) and runs whose lease
  expired (``error``/``abandoned``). A reaped ``queued`` run ends ``canceled``.
- ``Monitor`` is a tracker's background thread: it renews the leases of the runs the
  process still holds open with one statement per interval (nothing when there are
  none) and, when switched on, reaps. A run whose finish could not be written is no
  longer held, so its lease runs out and the reaper ends it ``abandoned``.
  ``tick(now)`` is its one step, for tests and custom loops.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from exectrack._log import get_logger
from exectrack._model import datetime_to_us, now_us
from exectrack._owner import owner_alive
from exectrack._threads import quiet
from exectrack.stores._base import Store
from exectrack.stores._summaries import Reaped

if TYPE_CHECKING:
    from exectrack._tracker import ExecutionTracker

__all__ = ["Monitor", "Reaped", "reap_once"]

log = get_logger(__name__)

DEFAULT_LEASE = 30.0
DEFAULT_REAP_INTERVAL = 15.0


def reap_once(
    store: Store,
    now: datetime | int | None = None,
    *,
    dry_run: bool = False,
    alive: Callable[[str], bool | None] = owner_alive,
) -> list[Reaped]:
    """Finish every run that can no longer finish on its own; return what was finished.

    ``now`` is an aware datetime or microseconds (default: the wall clock). ``alive``
    tells whether an owner id still runs (False: gone, None: cannot tell here).
    ``dry_run`` reports without writing.
    """
    at = now_us() if now is None else now if isinstance(now, int) else datetime_to_us(now)
    dead = [owner for owner in store.open_owners() if alive(owner) is False]
    return store.reap(at, dead_owners=dead, dry_run=dry_run)


class Monitor:
    """A tracker's liveness thread: lease renewal and, when on, the reaper."""

    def __init__(
        self,
        tracker: ExecutionTracker,
        *,
        lease: float | None,
        heartbeat_interval: float,
        reap_interval: float | None,
    ) -> None:
        self._tracker = weakref.ref(tracker)
        self.lease = lease
        self.heartbeat_interval = heartbeat_interval
        self.reap_interval = reap_interval
        self.heartbeats = 0  # statements sent
        self.reaped = 0
        self._init_state()
        _monitors.add(self)

    def _init_state(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next_heartbeat = 0
        self._next_reap = 0

    def ensure_started(self) -> None:
        """Start the thread if it is not running (cheap when it is)."""
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=quiet(self._run), name="exectrack-monitor", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        waits = [self.heartbeat_interval] if self.lease is not None else []
        if self.reap_interval is not None:
            waits.append(self.reap_interval)
        while not self._stop.wait(min(waits, default=60.0)):
            self.tick()

    def tick(self, now: int | None = None) -> None:
        """One step: renew leases when due and runs are open; reap when on and due."""
        tracker = self._tracker()
        if tracker is None:
            self._stop.set()
            return
        at = tracker.clock.now_us() if now is None else now
        if self.lease is not None and at >= self._next_heartbeat:
            self._next_heartbeat = at + round(self.heartbeat_interval * 1e6)
            held = tracker.held_run_ids() if tracker._open_runs else []
            if held:
                try:
                    tracker.store.heartbeat(tracker.owner, at, at + round(self.lease * 1e6), held)
                    self.heartbeats += 1
                except Exception as exc:
                    tracker._report("heartbeat", exc)
        if self.reap_interval is not None and at >= self._next_reap:
            self._next_reap = at + round(self.reap_interval * 1e6)
            try:
                done = reap_once(tracker.store, at)
            except Exception as exc:
                tracker._report("reap", exc)
            else:
                self.reaped += len(done)
                for r in done:
                    log.info(
                        "exectrack: reaped run %s (%s) as %s: %s",
                        r.run_id,
                        r.source,
                        r.status.value,
                        r.reason,
                    )

    def stop(self, timeout: float | None = 1.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


_monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for monitor in list(_monitors):
        monitor._init_state()  # threads do not survive fork(); start again on use


os.register_at_fork(after_in_child=_after_fork_in_child)

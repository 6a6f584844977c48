"""One daemon thread that calls callbacks at monotonic deadlines (the bridge's timeouts).

A thread cannot be killed, so a timeout for work running in a thread is a callback at
the deadline that records the outcome and asks the work to stop; the work itself goes
on until it returns.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable

from exectrack._log import get_logger

__all__ = ["Watchdog"]

log = get_logger("exectrack.integrations")


class Watchdog:
    """Calls ``callback()`` once at ``time.monotonic() >= at``, unless cancelled first."""

    def __init__(self, name: str = "exectrack-watchdog") -> None:
        self._name = name
        self._seq = itertools.count()
        self._init_state()
        _watchdogs.add(self)

    def _init_state(self) -> None:
        """Empty, with no thread (also in a forked child: the parent's thread is gone,
        its lock may be held forever, and its callbacks are the parent's)."""
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def schedule(self, at: float, callback: Callable[[], None]) -> int:
        """Arrange ``callback`` at monotonic time ``at``; returns a key for :meth:`cancel`."""
        with self._cond:
            key = next(self._seq)
            heapq.heappush(self._heap, (at, key, callback))
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
            return key

    def cancel(self, key: int) -> None:
        with self._cond:
            if any(entry[1] == key for entry in self._heap):
                self._cancelled.add(key)
                self._cond.notify()

    def stop(self) -> None:
        """Drop every pending callback and let the thread end."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cancelled.clear()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    while self._heap and self._heap[0][1] in self._cancelled:
                        self._cancelled.discard(heapq.heappop(self._heap)[1])
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, callback = heapq.heappop(self._heap)
                        break
                    self._cond.wait(wait)
            try:
                callback()
            except Exception:  # a timeout callback never kills the watchdog
                log.exception("exectrack: a timeout callback failed")


_watchdogs: weakref.WeakSet[Watchdog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for watchdog in list(_watchdogs):
        watchdog._init_state()


os.register_at_fork(after_in_child=_after_fork_in_child)

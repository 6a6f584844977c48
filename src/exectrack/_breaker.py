"""The breaker of the synchronous write path: a store that is down costs nothing.

After a write failed with :class:`~exectrack.errors.StoreUnavailableError`, writes
skip the store at once (each skip is counted) while a background thread probes it
with a read, backing off up to a second apart; the first answer closes the breaker.
(The background writer of the default path has its own breaker: it keeps retrying
its batch, see ``_writer``.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from exectrack.errors import StoreUnavailableError

__all__ = ["Breaker"]

RETRY_MAX = 1.0


class Breaker:
    __slots__ = ("_lock", "_probe", "_thread", "open")

    def __init__(self, probe: Callable[[], object]) -> None:
        self._probe = probe
        self.reset()

    def reset(self) -> None:
        """Closed, with no probe thread (also after fork: threads do not survive it)."""
        self.open = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def trip(self, exc: BaseException) -> None:
        """Open on an unavailable store (other failures say nothing about it)."""
        if not isinstance(exc, StoreUnavailableError):
            return
        with self._lock:
            if self.open:
                return
            self.open = True
            self._thread = threading.Thread(target=self._run, name="exectrack-probe", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        delay = 0.05
        while True:
            time.sleep(delay)
            try:
                self._probe()
            except Exception:
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.open = False
            return

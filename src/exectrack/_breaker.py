"""The breaker of the synchronous write path: a store that is down costs nothing.

After a write failed with :class:`~exectrack.errors.StoreUnavailableError` *slowly*
(it waited ``SLOW`` seconds or more: a server that does not answer, a pool that
cannot connect), writes skip the store at once (each skip is counted) while a
background thread probes it with a read, backing off up to half a second apart; the
first answer closes the breaker. A failure that costs the caller little (a killed
connection, a replaced file) opens nothing: the next write simply tries again.
(The background writer of the default path has its own breaker: it keeps retrying
its batch, see ``_writer``.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from exectrack._threads import quiet
from exectrack.errors import StoreUnavailableError

__all__ = ["Breaker"]

RETRY_MAX = 0.5
SLOW = 0.25  # seconds a failed write must have waited to open the breaker


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

    def trip(self, exc: BaseException, waited: float) -> None:
        """Open on a store that was unavailable after ``waited`` seconds (other
        failures, and fast ones, say nothing about waiting for it)."""
        if not isinstance(exc, StoreUnavailableError) or waited < SLOW:
            return
        with self._lock:
            if self.open:
                return
            self.open = True
            self._thread = threading.Thread(
                target=quiet(self._run), name="exectrack-probe", daemon=True
            )
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

"""What one app holds: its reader, settings, counters and the reaper thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from exectrack._log import get_logger
from exectrack.monitor import DEFAULT_REAP_INTERVAL, reap_once

from ._reader import Reader

__all__ = ["Reaper", "ServerState"]

log = get_logger(__name__)


class Reaper:
    """The reaper loop of a served app: ``reap_once`` and a fold of the rollups every
    ``interval`` seconds in a
    daemon thread, started with the app (or by its first request when it is mounted
    and gets no lifespan events) and stopped with it."""

    def __init__(self, reader: Reader, interval: float = DEFAULT_REAP_INTERVAL) -> None:
        self.reader = reader
        self.interval = interval
        self.reaped = 0
        self.folded = 0  # finished runs this loop folded into the rollups
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="exectrack-server-reaper", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                reader = self.reader
                at = None if reader.tracker is None else reader.tracker.clock.now_us()
                self.reaped += len(reap_once(reader.store, at))
                # Fold what writers left unfolded (each folds every 2,000 changes of
                # its own), so the panel's stats add few runs by themselves.
                self.folded += reader.store.fold_rollups()
            except Exception as exc:  # the loop outlives a store outage
                log.warning("exectrack server: reaping failed: %s", type(exc).__name__)
            if self._stop.wait(self.interval):
                return

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


@dataclass
class ServerState:
    reader: Reader
    token: str | None
    live_interval: float
    keepalive: float = 15.0
    reaper: Reaper | None = None
    store_errors: int = 0
    streams: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

"""The background writer: one thread per store, group commit, a bounded queue.

``submit`` appends a command and returns at once (the thread is woken only when it
sleeps). The thread drains whatever is pending and applies it in one transaction, so
under light load a command lands within milliseconds and under heavy load batches
grow. When the queue stays full past a short wait (no wait at all on an event-loop
thread) the command is dropped and counted, never raised into the host.

A forked child starts with an empty queue and its own thread; the parent's pending
commands stay the parent's. At interpreter exit every writer flushes, bounded in time.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from exectrack.errors import StoreUnavailableError
from exectrack.stores._base import Command, NewRun, Store

__all__ = ["Writer", "WriterStats", "flush_all"]

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 20_000
DEFAULT_MAX_BATCH = 1_000
DEFAULT_PUT_WAIT = 0.1  # seconds a full queue makes a (non-async) caller wait
DEFAULT_RETRY_FOR = 2.0  # seconds a batch is retried while the store is unavailable
EXIT_FLUSH_TIMEOUT = 5.0

Report = Callable[[str, BaseException], None]


@dataclass(frozen=True, slots=True)
class WriterStats:
    queued: int
    committed: int
    not_applied: int
    dropped: int
    batches: int


class _Marker:
    """Put in the queue by ``flush``; set once everything before it is committed."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


class Writer:
    def __init__(
        self,
        store: Store,
        report: Report,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_batch: int = DEFAULT_MAX_BATCH,
        put_wait: float = DEFAULT_PUT_WAIT,
        retry_for: float = DEFAULT_RETRY_FOR,
    ) -> None:
        self.store = store
        self._report = report
        self._max = max(1, queue_size)
        self._max_batch = max(1, max_batch)
        self._put_wait = put_wait
        self._retry_for = retry_for
        self._closed = False
        self._init_state()
        _writers.add(self)

    def _init_state(self) -> None:
        self._pending: deque[Command | _Marker] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._idle = True  # the thread sleeps (or does not exist): submit must wake it
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._count_lock = threading.Lock()
        self._committed = 0
        self._not_applied = 0
        self._dropped = 0
        self._batches = 0

    # -- producer side --------------------------------------------------------------

    def submit(self, cmd: Command) -> bool:
        """Queue ``cmd``; False when it was dropped (queue full or writer closed).

        Only new runs count against the bound: a start, once accepted, is always
        followed by its finish, so a run is never left ``running`` by a full queue,
        and the queue never holds more than the bound plus one finish per open run.
        """
        if self._closed:
            self._drop(1, "tracker closed: commands after close() are dropped")
            return False
        pending = self._pending
        if len(pending) >= self._max and type(cmd) is NewRun and not self._wait_for_room():
            self._drop(1, "queue full: the store cannot keep up; new runs are dropped")
            return False
        pending.append(cmd)
        if self._idle:
            self._wake()
        return True

    def _wait_for_room(self) -> bool:
        if threading.current_thread() is self._thread or _on_event_loop():
            return False
        deadline = time.monotonic() + self._put_wait
        while len(self._pending) >= self._max:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def _drop(self, count: int, why: str) -> None:
        with self._count_lock:
            before = self._dropped
            self._dropped += count
        if before == 0 or before // 10_000 != self._dropped // 10_000:
            self._report("dropped", RuntimeError(why))  # first drop, then every 10,000th

    def _wake(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="exectrack-writer", daemon=True
                )
                self._thread.start()
                _register_exit_flush()
            self._cond.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is committed (or dropped)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            return not any(type(item) is not _Marker for item in list(self._pending))
        marker = _Marker()
        self._pending.append(marker)
        self._wake()
        return marker.event.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread. Later submits are dropped and counted."""
        ok = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(0 if not ok else timeout)
        return ok

    def stats(self) -> WriterStats:
        with self._count_lock:
            return WriterStats(
                queued=sum(1 for c in list(self._pending) if not isinstance(c, _Marker)),
                committed=self._committed,
                not_applied=self._not_applied,
                dropped=self._dropped,
                batches=self._batches,
            )

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        pending = self._pending
        cond = self._cond
        self._idle = False
        while True:
            if not pending:
                with cond:
                    self._idle = True
                    while not pending and not self._stopping:
                        cond.wait(0.5)
                    self._idle = False
                    if not pending:
                        return  # stopping, nothing left
            batch: list[Command] = []
            markers: list[_Marker] = []
            while pending and len(batch) < self._max_batch:
                item = pending.popleft()
                if type(item) is _Marker:
                    markers.append(item)
                else:
                    batch.append(item)  # type: ignore[arg-type]
            if batch:
                self._apply(batch)
            for marker in markers:
                marker.event.set()

    def _apply(self, batch: list[Command]) -> None:
        delay = 0.005
        give_up = time.monotonic() + self._retry_for
        while True:
            try:
                result = self.store.apply(batch)
            except StoreUnavailableError as exc:
                if self._stopping or time.monotonic() >= give_up:
                    self._dropped_batch(batch, exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            except Exception as exc:
                if len(batch) == 1:
                    self._dropped_batch(batch, exc)
                    return
                # One bad command must not sink its neighbours: apply them one by one.
                for cmd in batch:
                    self._apply([cmd])
                return
            with self._count_lock:
                self._committed += len(batch)
                self._not_applied += result.not_applied
                self._batches += 1
            return

    def _dropped_batch(self, batch: list[Command], exc: BaseException) -> None:
        with self._count_lock:
            self._dropped += len(batch)
        self._report("write", exc)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_writers: weakref.WeakSet[Writer] = weakref.WeakSet()
_exit_registered = False


def _register_exit_flush() -> None:
    global _exit_registered
    if not _exit_registered:
        _exit_registered = True
        atexit.register(flush_all, EXIT_FLUSH_TIMEOUT)


def flush_all(timeout: float = EXIT_FLUSH_TIMEOUT) -> bool:
    """Flush every live writer, sharing one time budget; True when all drained."""
    deadline = time.monotonic() + timeout
    ok = True
    for writer in list(_writers):
        remaining = max(0.0, deadline - time.monotonic())
        if not writer.flush(remaining):
            ok = False
            log.warning(
                "exectrack: exit flush timed out; %d commands not written", writer.stats().queued
            )
    return ok


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._init_state()
    # atexit handlers are inherited: the child flushes its own writers at exit.


os.register_at_fork(after_in_child=_after_fork_in_child)

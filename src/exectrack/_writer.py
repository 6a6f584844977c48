"""The background writer: one thread per store, group commit, a bounded queue.

``submit`` appends a command and returns at once (the thread is woken only when it
sleeps). Woken from sleep, the thread lingers ``linger`` seconds (10 ms) before it
takes what is pending, unless a flush or close waits: a run shorter than that (a
tool call, a streamed response) has its finish folded into its start and costs one
row instead of two transactions, and a burst becomes one batch (measured:
``bench/asgi_latency.py``). Then it drains whatever is pending and applies it in one
transaction, so under light load a command lands within a few milliseconds and under
heavy load batches grow (a busy writer never lingers). A finish whose run's create
is still queued is folded into that create (``finish``), so a short run takes one
queue slot and is written as one row: about 380 bytes while it waits (measured:
``bench/stall_and_memory.py``).

The queue holds ``queue_size`` commands (100,000 by default). Only new runs count
against it: a start, once accepted, is always followed by its finish, so a run is
never left ``running`` by a full queue. When the queue is full a new run waits up to
``put_wait`` for room (never on an event-loop thread, nor while the store is down or
one batch has been stuck for a second), then it is dropped and counted, never
raised into the host.

The store failing with :class:`~exectrack.errors.StoreUnavailableError` opens a
breaker: the writer keeps the batch and retries it with backoff (at most a second
apart) until the store answers. Meanwhile ``down`` is True: nothing waits long for
the writer (submit not at all, ``flush`` and exit half a second at most) and new runs
that find the queue full are dropped at once; what is queued is kept and written when
the store is back.

A forked child starts with an empty queue and its own thread; the parent's pending
commands stay the parent's.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from exectrack._log import get_logger
from exectrack._model import RunStatus
from exectrack._threads import quiet
from exectrack.errors import StoreUnavailableError
from exectrack.stores._base import Store
from exectrack.stores._records import Command, FinishRun, MarkRunning, NewRun

__all__ = ["EXIT_STALLED", "Writer", "WriterStats", "log_unwritten"]

log = get_logger(__name__)

DEFAULT_QUEUE_SIZE = 100_000
DEFAULT_MAX_BATCH = 1_000
DEFAULT_PUT_WAIT = 0.1  # seconds a full queue makes a (non-async) caller wait
DEFAULT_LINGER = 0.01  # seconds the thread waits for more once woken from sleep
RETRY_MAX = 1.0  # seconds between two attempts while the store is unavailable
DOWN_WAIT = 0.5  # seconds a flush waits for a store that is down to answer again
STALLED = 1.0  # seconds one batch may take before a full queue stops making callers wait

Report = Callable[[str, BaseException], None]
Note = Callable[[str, BaseException], None]


@dataclass(frozen=True, slots=True)
class WriterStats:
    queued: int
    committed: int
    not_applied: int
    dropped: int
    batches: int
    down: bool = False


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
        note: Note | None = None,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_batch: int = DEFAULT_MAX_BATCH,
        put_wait: float = DEFAULT_PUT_WAIT,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self.store = store
        self._report = report
        self._note = note if note is not None else report
        self._max = max(1, queue_size)
        self._max_batch = max(1, max_batch)
        self._put_wait = put_wait
        self._linger = max(0.0, linger)
        self._closed = False
        self._init_state()
        _writers.add(self)

    def _init_state(self) -> None:
        self._pending: deque[Command | _Marker] = deque()
        self._lock = threading.Lock()  # the thread taking creates vs a finish folding in
        self._cond = threading.Condition(threading.Lock())
        self._idle = True  # the thread sleeps (or does not exist): submit must wake it
        self._hurry = False  # a flush waits: do not linger
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._count_lock = threading.Lock()
        self._committed = 0
        self._not_applied = 0
        self._dropped = 0
        self._batches = 0
        self.down = False  # the breaker: the store failed its last attempt
        self._busy_since: float | None = None  # when the batch being applied started
        self._in_flight = 0  # commands taken from the queue, not yet committed or dropped

    # -- producer side --------------------------------------------------------------

    def submit(self, cmd: Command) -> bool:
        """Queue ``cmd``; False when it was dropped (queue full or writer closed)."""
        if self._closed:
            self._drop(1, "tracker closed: commands after close() are dropped")
            return False
        pending = self._pending
        if len(pending) >= self._max and type(cmd) is NewRun and not self._wait_for_room():
            why = "the store is unavailable" if self.down else "the store cannot keep up"
            self._drop(1, f"queue full: {why}; new runs are dropped")
            return False
        pending.append(cmd)
        if self._idle:
            self._wake()
        return True

    def finish(self, new: NewRun | None, cmd: FinishRun) -> bool:
        """Queue the finish ``cmd``. When ``new`` (the run's create) still waits in
        the queue, the finish is folded into it instead: one slot, one row."""
        if new is not None and not new.taken:
            with self._lock:
                if not new.taken:
                    new.status = cmd.status
                    new.finished_at = cmd.finished_at
                    new.duration_ms = cmd.duration_ms
                    new.error_code = cmd.error_code
                    new.error_message = cmd.error_message
                    new.retryable = cmd.retryable
                    new.items = cmd.items
                    new.first_item_ms = cmd.first_item_ms
                    if cmd.metadata is not None:
                        new.metadata = cmd.metadata
                    return True
        return self.submit(cmd)

    def start(self, new: NewRun | None, cmd: MarkRunning) -> bool:
        """Queue the start ``cmd``, or fold it into ``new`` while that waits."""
        if new is not None and not new.taken:
            with self._lock:
                if not new.taken and new.status is RunStatus.QUEUED:
                    new.status = RunStatus.RUNNING
                    return True
        return self.submit(cmd)

    def _wait_for_room(self) -> bool:
        if threading.current_thread() is self._thread or _on_event_loop():
            return False
        deadline = time.monotonic() + self._put_wait
        while len(self._pending) >= self._max:
            now = time.monotonic()
            busy = self._busy_since
            if self.down or now >= deadline or (busy is not None and now - busy > STALLED):
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
                    target=quiet(self._run), name="exectrack-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout: float | None = None, *, stalled: float | None = None) -> bool:
        """Wait until everything submitted before this call is committed (or dropped).

        False when ``timeout`` passed first; after ``DOWN_WAIT`` while the store is
        down (what is queued stays queued and is written when it answers again);
        and, with ``stalled``, once one batch has been in flight that many seconds.
        """
        thread = self._thread
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            return not any(type(item) is not _Marker for item in list(self._pending))
        marker = _Marker()
        self._pending.append(marker)
        self._hurry = True
        self._wake()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        down_since: float | None = None
        while True:
            wait = 0.02 if deadline is None else min(0.02, deadline - time.monotonic())
            if marker.event.wait(max(wait, 0.0)):
                return True
            now = time.monotonic()
            busy = self._busy_since
            if self.down:
                down_since = now if down_since is None else down_since
                if now - down_since >= DOWN_WAIT:
                    return False
            else:
                down_since = None
            if (deadline is not None and now >= deadline) or (
                stalled is not None and busy is not None and now - busy > stalled
            ):
                return False

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
                queued=self._in_flight
                + sum(1 for c in list(self._pending) if not isinstance(c, _Marker)),
                committed=self._committed,
                not_applied=self._not_applied,
                dropped=self._dropped,
                batches=self._batches,
                down=self.down,
            )

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        pending = self._pending
        cond = self._cond
        lock = self._lock
        self._idle = False
        woke = True  # the thread was started for a command just queued
        while True:
            if not pending:
                with cond:
                    self._idle = True
                    while not pending and not self._stopping:
                        cond.wait(0.5)
                    self._idle = False
                    if not pending:
                        return  # stopping, nothing left
                woke = True
            if woke:
                woke = False
                with cond:  # a flush or close sets its flag, then notifies under cond
                    if self._linger and not self._hurry and not self._stopping:
                        cond.wait(self._linger)
            self._hurry = False
            batch: list[Command] = []
            markers: list[_Marker] = []
            with lock:  # from here on a finish can no longer fold into these creates
                while pending and len(batch) < self._max_batch:
                    item = pending.popleft()
                    kind = type(item)
                    if kind is _Marker:
                        markers.append(item)  # type: ignore[arg-type]
                    else:
                        if kind is NewRun:
                            item.taken = True  # type: ignore[union-attr]
                        batch.append(item)  # type: ignore[arg-type]
            if batch:
                self._in_flight = len(batch)
                self._apply(batch)
                self._in_flight = 0
            for marker in markers:
                marker.event.set()

    def _apply(self, batch: list[Command]) -> None:
        delay = 0.005
        while True:
            self._busy_since = time.monotonic()
            try:
                result = self.store.apply(batch)
            except StoreUnavailableError as exc:
                self._busy_since = None
                if not self.down:
                    self.down = True
                    self._note("store unavailable", exc)
                if self._stopping:
                    self._dropped_batch(batch, None)
                    return
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            except Exception as exc:
                self._busy_since = None
                if len(batch) == 1:
                    self._dropped_batch(batch, exc)
                    return
                # One bad command must not sink its neighbours: apply them one by one.
                for cmd in batch:
                    self._apply([cmd])
                return
            self._busy_since = None
            if self.down:
                self.down = False
                log.warning(
                    "exectrack: the store %s answers again; writing resumed", self.store.url
                )
            with self._count_lock:
                self._committed += len(batch)
                self._not_applied += result.not_applied
                self._batches += 1
            return

    def _dropped_batch(self, batch: list[Command], exc: BaseException | None) -> None:
        with self._count_lock:
            self._dropped += len(batch)
        if exc is not None:
            self._report("write", exc)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


EXIT_STALLED = 1.5  # at exit, a batch in flight this long means the store is stuck


def log_unwritten(writer: Writer) -> None:
    """Say, at exit, what could not be written."""
    why = "the store is unavailable" if writer.down else "exit flush timed out"
    log.warning("exectrack: %s; %d commands not written", why, writer.stats().queued)


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._init_state()


os.register_at_fork(after_in_child=_after_fork_in_child)

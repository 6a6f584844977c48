"""The served app's reader and reaper loop pinned (mutation testing, issue 11): the
tracker's clock, running totals over passes, a failing store logged, bounded waits
for a stuck writer or a stuck loop, the thread's name and life."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import exectrack.server._reader as reader_module
from exectrack import ExecutionTracker, InvalidArgumentError, RunStatus
from exectrack._model import new_run_id
from exectrack.monitor import DEFAULT_REAP_INTERVAL
from exectrack.server._reader import Reader
from exectrack.server._state import Reaper
from exectrack.stores import NewRun
from exectrack.stores.sqlite import SQLiteStore
from exectrack.testing import FailingStore, FakeClock

LIMIT = 20.0
FUTURE = datetime(2031, 1, 1, tzinfo=UTC)  # after the wall clock: only the fake clock reaps


def until(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition`` for up to LIMIT seconds (a hang fails the test, not CI)."""
    end = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def returns_within(call: Callable[[], object], seconds: float) -> bool:
    """Whether ``call()`` returns within ``seconds`` (it runs in a daemon thread)."""
    finished = threading.Event()

    def run() -> None:
        call()
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    return finished.wait(seconds)


class StuckStore(FailingStore):
    """A real store whose writes or folds block until ``release`` is set."""

    def __init__(self, inner: Any, *, stick: set[str]) -> None:
        super().__init__(inner, fail=set())
        self.stick = stick
        self.release = threading.Event()
        self.entered = threading.Event()

    def _stuck(self, op: str) -> None:
        if op in self.stick:
            self.entered.set()
            self.release.wait(LIMIT)

    def apply(self, commands: Any) -> Any:
        self._stuck("apply")
        return super().apply(commands)

    def create(self, run: Any) -> Any:
        self._stuck("create")
        return super().create(run)

    def fold_rollups(self, *, limit: int | None = None) -> int:
        self._stuck("fold_rollups")
        return super().fold_rollups(limit=limit)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(FUTURE)


@pytest.fixture
def leased(tmp_path: Path, clock: FakeClock) -> Iterator[ExecutionTracker]:
    """A synchronous tracker on a fake clock far in the future, with no lease, reaper or
    monitor of its own."""
    t = ExecutionTracker(
        f"sqlite:///{tmp_path / 'runs.db'}",
        strict=True,
        durability="sync",
        clock=clock,
        lease=None,
        reaper=False,
    )
    yield t
    t.close()


def test_reader_refuses_anything_but_a_tracker_or_a_store() -> None:
    """Reader(42) names what it takes and what it got."""
    with pytest.raises(InvalidArgumentError) as err:
        Reader(42)  # type: ignore[arg-type]
    assert str(err.value) == "create_app takes an ExecutionTracker or a Store, not 42"


def test_reader_of_a_store_has_no_tracker_stats(tmp_path: Path) -> None:
    """A reader of a bare store has no tracker stats; one of a tracker has its stats."""
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        assert Reader(store).tracker_stats() is None
    finally:
        store.close()
    tracker = ExecutionTracker(f"sqlite:///{tmp_path / 'other.db'}", strict=True)
    try:
        stats = Reader(tracker).tracker_stats()
        assert stats is not None and stats == tracker.stats()
    finally:
        tracker.close()


def test_sync_gives_up_on_a_stuck_writer_after_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read waits for this process's queued writes only FLUSH_TIMEOUT seconds: a
    writer stuck in the store does not hang the app."""
    monkeypatch.setattr(reader_module, "FLUSH_TIMEOUT", 0.05)
    store = StuckStore(SQLiteStore(tmp_path / "runs.db"), stick={"apply"})
    tracker = ExecutionTracker(store, strict=True)
    try:
        tracker.start("chat", "turn").finish_success()
        until(store.entered.is_set, "the writer to be stuck")
        assert returns_within(Reader(tracker).sync, 5.0)
    finally:
        store.release.set()
        tracker.close()


def test_reaper_defaults() -> None:
    """A new reaper: the monitor's interval unless given, nothing reaped or folded."""
    reader = Reader.__new__(Reader)
    reaper = Reaper(reader)
    assert (reaper.interval, reaper.reaped, reaper.folded) == (DEFAULT_REAP_INTERVAL, 0, 0)
    assert Reaper(reader, 0.5).interval == 0.5


def test_reaper_thread_is_one_named_daemon_and_stop_joins_it(
    leased: ExecutionTracker,
) -> None:
    """ensure_started starts one daemon thread named exectrack-server-reaper (a second
    call starts none); stop() returns with it ended, and nothing starts it again."""
    reaper = Reaper(Reader(leased), interval=0.01)
    reaper.stop()  # never started: nothing to join
    reaper = Reaper(Reader(leased), interval=0.01)
    reaper.ensure_started()
    thread = reaper._thread
    assert thread is not None and thread.is_alive()
    assert (thread.name, thread.daemon) == ("exectrack-server-reaper", True)
    reaper.ensure_started()
    assert reaper._thread is thread
    reaper.stop()
    assert not thread.is_alive()
    reaper.ensure_started()
    assert reaper._thread is thread


def stale_run(tracker: ExecutionTracker, clock: FakeClock, ref: str) -> str:
    """A running run whose owner is gone, leased for 30 s from the fake clock's now."""
    now = clock.now_us()
    run = NewRun(new_run_id(), "chat", now, RunStatus.RUNNING, ref, lease_until=now + 30_000_000)
    assert tracker.store.create(run)
    return run.id


def test_reaper_reaps_on_the_trackers_clock_and_adds_up_over_passes(
    leased: ExecutionTracker, clock: FakeClock
) -> None:
    """Runs past their lease on the tracker's (fake, future) clock are reaped (an error:
    the owner is gone), the wall clock would reap none; reaped and folded are running
    totals over passes."""
    reaper = Reaper(Reader(leased), interval=0.01)
    for ref in ("a", "b", "c"):
        leased.start("chat", ref).finish_success()
    first = stale_run(leased, clock, "stale")
    clock.advance(60)
    reaper.ensure_started()
    try:
        until(lambda: reaper.reaped == 1 and reaper.folded == 4, "the first pass")
        assert leased.get_run(first).status is RunStatus.ERROR  # type: ignore[union-attr]
        leased.start("chat", "d").finish_success()
        second = stale_run(leased, clock, "stale-2")
        clock.advance(60)
        until(lambda: reaper.reaped == 2 and reaper.folded == 6, "a later pass")
        assert leased.get_run(second).status is RunStatus.ERROR  # type: ignore[union-attr]
    finally:
        reaper.stop()


def test_reaper_logs_a_failing_store_and_keeps_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that fails is logged with the error's type at each pass, and the loop
    goes on."""
    store = FailingStore(SQLiteStore(tmp_path / "runs.db"))
    reaper = Reaper(Reader(store), interval=0.01)
    with caplog.at_level(logging.WARNING, "exectrack.server._state"):
        reaper.ensure_started()
        try:
            until(lambda: len(caplog.records) >= 2, "two failed passes")
        finally:
            reaper.stop()
    messages = {r.getMessage() for r in caplog.records if r.name == "exectrack.server._state"}
    assert messages == {"exectrack server: reaping failed: StoreError"}
    store.inner.close()


def test_stop_waits_at_most_its_timeout_for_a_stuck_loop(tmp_path: Path) -> None:
    """stop() does not hang on a pass stuck in the store: it waits its timeout (2 s
    unless given) and returns."""
    store = StuckStore(SQLiteStore(tmp_path / "runs.db"), stick={"fold_rollups"})
    reaper = Reaper(Reader(store), interval=0.01)
    reaper.ensure_started()
    try:
        until(store.entered.is_set, "a pass stuck in the store")
        assert returns_within(lambda: reaper.stop(0.05), 5.0)
        assert reaper._thread is not None and reaper._thread.is_alive()
    finally:
        store.release.set()
    assert inspect.signature(Reaper.stop).parameters["timeout"].default == 2.0
    store.inner.close()


class GateLock:
    """A lock the test holds, counting the threads that wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = 0
        self._count = threading.Lock()

    def __enter__(self) -> None:
        with self._count:
            self.waiting += 1
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_two_racing_starts_make_one_thread(leased: ExecutionTracker) -> None:
    """Two ensure_started calls that both passed the first check start one thread: the
    second finds it under the lock."""
    reaper = Reaper(Reader(leased), interval=0.01)
    gate = GateLock()
    reaper._lock = gate  # type: ignore[assignment]
    gate.lock.acquire()
    callers = [threading.Thread(target=reaper.ensure_started) for _ in range(2)]
    before = {t for t in threading.enumerate() if t.name == "exectrack-server-reaper"}
    for caller in callers:
        caller.start()
    try:
        until(lambda: gate.waiting == 2, "both callers at the lock")
    finally:
        gate.lock.release()
    for caller in callers:
        caller.join(LIMIT)
    started = {t for t in threading.enumerate() if t.name == "exectrack-server-reaper"} - before
    reaper.stop()
    assert len(started) == 1 and started == {reaper._thread}

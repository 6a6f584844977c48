"""The tracker's lifetime, pinned: shutdown, close, flush, stats and the runs it holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from exectrack import ExecutionTracker, RunStatus, TrackerStats
from exectrack._model import now_us
from exectrack.errors import ExectrackError, StoreError, StoreUnavailableError
from exectrack.stores import ApplyResult, Command, FinishRun, open_store
from exectrack.testing import FailingStore, FakeClock

T0 = datetime(2001, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_shutdown_ends_each_open_run_canceled_shutdown_not_retryable(
    db_url: str, durability: str
) -> None:
    """shutdown() ends every run still open as canceled/shutdown (not retryable, with
    its message), leaves finished runs alone, returns how many it ended and writes
    them before it returns."""
    t = ExecutionTracker(db_url, strict=True, durability=durability, clock=FakeClock(T0))  # type: ignore[arg-type]
    done = t.start("skill", "done")
    done.finish_success()
    left = [t.start("skill", f"left-{i}") for i in range(3)]
    assert t.shutdown(5) == 3
    reader = open_store(db_url)
    for h in left:
        run = reader.get(h.id)
        assert run is not None
        assert (run.status, run.error_code, run.retryable) == (
            RunStatus.CANCELED,
            "shutdown",
            False,
        )
        assert run.error_message
    finished = reader.get(done.id)
    assert finished is not None and finished.status is RunStatus.SUCCESS
    assert t.stats().open_runs == 0
    reader.close()
    t.close()


def test_a_run_started_after_shutdown_is_not_recorded(db_url: str) -> None:
    """Once shutdown began, a new run is handed back but never written nor held."""
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    assert t.shutdown(5) == 0
    h = t.start("skill", "late")
    assert not h.recorded
    assert t.held_run_ids() == []
    assert t.get_run(h.id) is None
    t.close()


def test_shutdown_with_no_time_left_ends_nothing(db_url: str) -> None:
    """A shutdown whose time is already up stops before ending any run."""
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    h = t.start("skill")
    assert t.shutdown(0) == 0
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.RUNNING
    t.close()


def test_shutdown_stops_the_monitor_thread(db_url: str) -> None:
    """shutdown() stops the liveness thread (it does not outlive the exit)."""
    t = ExecutionTracker(db_url, strict=True, durability="sync", reaper=True, reap_interval=60)
    assert t.monitor is not None
    thread = t.monitor._thread
    assert thread is not None and thread.is_alive()
    t.shutdown(5)
    thread.join(5)
    assert not thread.is_alive()
    t.close()


def test_shutdown_reports_a_failing_store_and_never_raises(db_url: str) -> None:
    """At exit a store that fails is counted as a failure; shutdown() does not raise,
    and it still stops the monitor."""
    store = FailingStore(open_store(db_url), fail=set())
    t = ExecutionTracker(store, strict=False, durability="sync", reaper=True, reap_interval=60)
    h = t.start("skill")
    store.fail = {"finish", "apply"}
    assert t.shutdown(5) == 0
    assert t.stats().failures >= 1
    assert t.monitor is not None and t.monitor._thread is not None
    t.monitor._thread.join(5)
    assert not t.monitor._thread.is_alive()
    store.fail = set()
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.RUNNING
    t.close()
    store.inner.close()


def test_close_is_idempotent_and_closes_only_a_store_it_opened(db_url: str) -> None:
    """close() returns True (again on a second call); a store the tracker opened
    from a URL is closed, a store passed in stays usable by its owner."""
    given = open_store(db_url)
    t = ExecutionTracker(given, strict=True)
    h = t.start("skill")
    h.finish_success()
    assert t.close() is True
    assert t.close() is True
    run = given.get(h.id)  # still open: the caller owns it
    assert run is not None and run.status is RunStatus.SUCCESS
    given.close()

    owned = ExecutionTracker(db_url, strict=True, durability="sync")
    owned.start("skill")
    closed: list[bool] = []
    inner_close = owned.store.close

    def close() -> None:
        closed.append(True)
        inner_close()

    owned.store.close = close  # type: ignore[method-assign]
    assert owned.close() is True
    assert owned.close() is True
    assert closed == [True]


def test_close_stops_the_monitor_and_the_writer(db_url: str) -> None:
    """After close() neither the liveness thread nor the writer thread runs, and a
    run started afterwards is not written."""
    t = ExecutionTracker(db_url, strict=True, reaper=True, reap_interval=60)
    h = t.start("skill")
    h.finish_success()
    assert t.flush(5)
    assert t.monitor is not None
    monitor, writer = t.monitor._thread, t._writer
    assert monitor is not None and writer is not None and writer._thread is not None
    t.close()
    monitor.join(5)
    writer._thread.join(5)
    assert not monitor.is_alive() and not writer._thread.is_alive()
    late = t.start("skill")
    assert not late.recorded
    reader = open_store(db_url)
    assert reader.get(late.id) is None
    assert reader.get(h.id) is not None
    reader.close()


def test_flush_without_a_writer_is_true_and_raises_a_background_failure(db_url: str) -> None:
    """A sync tracker's flush() has nothing to wait for (True); an async strict
    tracker's flush() raises the failure its writer met in the background, once."""
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    assert t.flush(0) is True
    t.close()
    store = FailingStore(open_store(db_url), fail={"apply"})
    a = ExecutionTracker(store, strict=True)
    a.start("skill")
    with pytest.raises(ExectrackError):
        a.flush(5)
    assert a.flush(5) is True  # raised once, then cleared
    a.close()
    store.inner.close()


def test_stats_of_a_sync_tracker(db_url: str) -> None:
    """stats() of a sync tracker: its settings, open runs, no queue, and runs skipped
    while its breaker was open counted as dropped and the store as unavailable."""
    store = FailingStore(open_store(db_url), fail=set())
    t = ExecutionTracker(store, strict=False, durability="sync", lease=None)
    a = t.start("skill")
    t.start("skill")
    a.finish_success()
    s = t.stats()
    assert s == TrackerStats(
        enabled=True,
        durability="sync",
        open_runs=1,
        queued=0,
        committed=0,
        not_applied=0,
        dropped=0,
        failures=0,
        failures_by_cause={},
        unavailable=False,
    )
    assert t._breaker is not None
    t._breaker.open = True  # as after a slow StoreUnavailableError
    t.start("skill")
    s = t.stats()
    assert (s.dropped, s.unavailable, s.open_runs) == (1, True, 2)
    t._breaker.open = False
    store.fail = {"create"}
    store.error = StoreUnavailableError("down")
    t.start("skill")
    s = t.stats()
    assert (s.failures, s.dropped) == (1, 1)
    assert sum(s.failures_by_cause.values()) == 1
    t.close()
    store.inner.close()


def test_stats_of_an_async_tracker_count_commits(db_url: str) -> None:
    """stats() of an async tracker counts what its writer committed and what did not
    apply (a finish that lost to one written elsewhere first)."""
    t = ExecutionTracker(db_url, strict=True, lease=None)
    h = t.start("skill")
    assert t.flush(5)
    other = open_store(db_url)
    assert other.finish(FinishRun(h.id, RunStatus.CANCELED, now_us())).applied
    other.close()
    h.finish_success()
    assert t.flush(5)
    s = t.stats()
    assert (s.enabled, s.durability, s.open_runs, s.queued) == (True, "async", 0, 0)
    assert (s.committed, s.not_applied, s.dropped, s.unavailable) == (2, 1, 0, False)
    t.close()


def test_held_run_ids_are_the_recorded_open_runs_of_this_process(db_url: str) -> None:
    """held_run_ids() lists the runs this process holds open and recorded: not a
    finished one, not one that was never written, not one held before a fork."""
    store = FailingStore(open_store(db_url), fail=set())
    t = ExecutionTracker(store, strict=False, durability="sync")
    a, b = t.start("skill"), t.start("skill")
    store.fail = {"create"}
    unrecorded = t.start("skill")
    store.fail = set()
    assert not unrecorded.recorded
    b.finish_success()
    assert t.held_run_ids() == [a.id]
    a._gen -= 1  # as if held by the parent of a forked child
    assert t.held_run_ids() == []
    t.close()
    store.inner.close()


def test_shutdown_skips_runs_held_by_the_parent_process(db_url: str) -> None:
    """In a forked child, shutdown() leaves the runs the parent holds alone."""
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    parent = t.start("skill", "parent")
    mine = t.start("skill", "mine")
    parent._gen -= 1  # held before the fork: the parent's
    assert t.shutdown(5) == 1
    run = t.get_run(parent.id)
    assert run is not None and run.status is RunStatus.RUNNING
    run = t.get_run(mine.id)
    assert run is not None and run.status is RunStatus.CANCELED
    t.close()


class _Gated(FailingStore):
    """A real store whose ``apply`` (and, with ``heartbeats``, ``heartbeat``) waits
    until ``gate`` opens: a stuck database."""

    def __init__(self, url: str, *, heartbeats: bool = False) -> None:
        super().__init__(open_store(url), fail=set())
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.heartbeats = heartbeats

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        self.entered.set()
        self.gate.wait(30)
        return super().apply(commands)

    def heartbeat(self, *args: Any, **kwargs: Any) -> int:
        if self.heartbeats:
            self.entered.set()
            self.gate.wait(30)
        return int(super().heartbeat(*args, **kwargs))


def test_shutdown_writes_queued_finishes_before_it_returns(db_url: str) -> None:
    """shutdown() flushes the writer: the finishes it queued are committed when it
    returns, even from a writer that would otherwise linger for a minute."""
    t = ExecutionTracker(db_url, strict=True)
    assert t._writer is not None
    t._writer._linger = 60.0
    h = t.start("skill")
    assert t.shutdown(5) == 1
    reader = open_store(db_url)
    run = reader.get(h.id)
    assert run is not None and (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")
    reader.close()
    t.close()


def test_shutdown_gives_up_on_a_stuck_store_at_its_timeout(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A store stuck in a write holds shutdown() no longer than its timeout (here
    shorter than the 1.5 s after which a stalled batch ends the wait anyway), and what
    could not be written is logged."""
    store = _Gated(db_url)
    t = ExecutionTracker(store, strict=False, lease=None)
    t.start("skill")
    assert store.entered.wait(10)  # the writer holds that create at the gate
    t.start("skill")
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="exectrack._writer"):
        assert t.shutdown(0.3) == 2
    waited = time.monotonic() - began
    assert 0.3 <= waited < 0.9
    assert "exectrack: exit flush timed out; 3 commands not written" in caplog.messages
    store.gate.set()
    t.close()
    store.inner.close()


def test_shutdown_stops_waiting_once_a_batch_stalled(db_url: str) -> None:
    """With time to spare, shutdown() still stops waiting once one batch has been in
    the store for 1.5 s: a stuck database cannot hold an exit for the whole timeout."""
    store = _Gated(db_url)
    t = ExecutionTracker(store, strict=False, lease=None)
    t.start("skill")
    assert store.entered.wait(10)
    began = time.monotonic()
    t.shutdown(4)
    waited = time.monotonic() - began
    assert 1.4 <= waited < 3.5
    store.gate.set()
    t.close()
    store.inner.close()


def test_shutdown_logs_nothing_when_everything_was_written(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown whose flush drained the queue says nothing about unwritten commands."""
    t = ExecutionTracker(db_url, strict=True)
    t.start("skill")
    with caplog.at_level("WARNING"):
        assert t.shutdown(5) == 1
    assert not [m for m in caplog.messages if "not written" in m]
    t.close()


def test_a_failure_during_shutdown_is_reported_as_shutdown(db_url: str) -> None:
    """A strict tracker whose store fails at exit counts the failure under
    ``shutdown`` (with the error it met) instead of raising it."""
    store = FailingStore(open_store(db_url), fail=set())
    t = ExecutionTracker(store, strict=True, durability="sync", lease=None)
    t.start("skill")
    store.fail = {"finish"}
    assert t.shutdown(5) == 0
    causes = t.stats().failures_by_cause
    assert causes == {
        "finish: StoreError: injected store failure": 1,
        "shutdown: StoreError: injected store failure": 1,
    }
    store.fail = set()
    t.close()
    store.inner.close()


def test_shutdown_waits_a_fifth_of_a_second_at_most_for_a_stuck_monitor(db_url: str) -> None:
    """The liveness thread stuck in the store holds shutdown() 0.2 s at most, and no
    time at all once the shutdown's own time is up."""
    store = _Gated(db_url, heartbeats=True)
    t = ExecutionTracker(store, strict=False, durability="sync", lease=1, heartbeat_interval=0.01)
    t.start("skill")
    assert store.entered.wait(10)  # the monitor's heartbeat waits at the gate
    began = time.monotonic()
    t.shutdown(0)
    assert time.monotonic() - began < 0.15
    began = time.monotonic()
    t.shutdown(5)
    waited = time.monotonic() - began
    assert 0.2 <= waited < 0.9
    store.gate.set()
    t.close()
    store.inner.close()


def test_flush_and_close_give_up_on_a_stuck_store_at_their_timeout(db_url: str) -> None:
    """flush(timeout) and close(timeout) return False after their timeout while the
    store is stuck in a write; nothing waits for it longer."""
    store = _Gated(db_url)
    t = ExecutionTracker(store, strict=False, lease=None)
    t.start("skill")
    assert store.entered.wait(10)
    began = time.monotonic()
    assert t.flush(0.2) is False
    assert t.close(0.2) is False
    waited = time.monotonic() - began
    assert 0.4 <= waited < 1.2
    store.gate.set()
    store.inner.close()


def test_close_waits_at_most_its_timeout_for_a_stuck_monitor(db_url: str) -> None:
    """close(timeout) does not wait past its timeout for a liveness thread stuck in
    the store."""
    store = _Gated(db_url, heartbeats=True)
    t = ExecutionTracker(store, strict=False, durability="sync", lease=1, heartbeat_interval=0.01)
    t.start("skill")
    assert store.entered.wait(10)
    began = time.monotonic()
    assert t.close(0.2) is True  # nothing was left to write
    assert 0.2 <= time.monotonic() - began < 1.0
    store.gate.set()
    store.inner.close()


def test_a_store_that_fails_to_close_is_reported_not_raised(db_url: str) -> None:
    """close() of a store the tracker opened never raises: the failure is counted
    under ``close``."""
    t = ExecutionTracker(db_url, strict=False, durability="sync")
    inner_close = t.store.close

    def failing_close() -> None:
        inner_close()
        raise StoreError("the file system went away")

    t.store.close = failing_close  # type: ignore[method-assign]
    assert t.close() is True
    assert t.stats().failures_by_cause == {"close: StoreError: the file system went away": 1}

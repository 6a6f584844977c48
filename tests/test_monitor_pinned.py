"""The monitor's loop: its clock, its intervals, and its restart in a forked child."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack.stores import open_store
from exectrack.testing import FailingStore, FakeClock
from forking import arm_child_watchdog, wait_child

# Far from the wall clock: a monitor that read the wall clock instead of the tracker's
# would see every deadline below as long past.
T0 = datetime(2001, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def t(db_url: str, clock: FakeClock) -> Iterator[ExecutionTracker]:
    """A reaping tracker on a fake clock (reap every 15 s, heartbeat every 10 s), its
    thread stopped so that only the test's ticks run."""
    tracker = ExecutionTracker(
        db_url, strict=True, durability="sync", clock=clock, reaper=True, reap_interval=15
    )
    assert tracker.monitor is not None
    tracker.monitor.stop()
    yield tracker
    tracker.close()


def test_tick_reads_the_trackers_clock(t: ExecutionTracker, clock: FakeClock) -> None:
    """A tick without ``now`` reaps by the tracker's clock, not the wall clock."""
    assert t.monitor is not None
    h = t.start("skill", deadline=60)
    t.monitor.tick()
    assert (t.monitor.reaped, t.get_run(h.id).status) == (0, RunStatus.RUNNING)
    clock.advance(61)  # the deadline passed; the heartbeat kept the lease
    t.monitor.tick()
    assert (t.monitor.reaped, t.get_run(h.id).status) == (1, RunStatus.TIMEOUT)


def test_reaps_on_its_interval(t: ExecutionTracker, clock: FakeClock) -> None:
    """The reaper runs at the first tick, then again once reap_interval has passed
    (exactly then, not before), whatever the ticks in between."""
    assert t.monitor is not None
    t.monitor.tick()  # first reap: nothing to do; next one due at +15 s
    h = t.start("skill", deadline=5)
    clock.advance(10)
    t.monitor.tick()
    assert t.get_run(h.id).status is RunStatus.RUNNING  # overdue, but no reap is due
    clock.advance(5)
    t.monitor.tick()
    assert t.get_run(h.id).status is RunStatus.TIMEOUT
    assert t.monitor.reaped == 1


class _Stop:
    """Stands in for the loop's stop event: records each wait, stops after three."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return len(self.waits) == 3

    def is_set(self) -> bool:
        return False

    def set(self) -> None:
        pass


@pytest.mark.parametrize(
    ("options", "period"),
    [
        ({"lease": 30, "heartbeat_interval": 10, "reaper": True, "reap_interval": 4}, 4),
        ({"lease": 30, "heartbeat_interval": 3, "reaper": True, "reap_interval": 15}, 3),
        ({"lease": 30, "heartbeat_interval": 10}, 10),
        ({"lease": None, "reaper": True, "reap_interval": 7}, 7),
        ({"lease": None, "reaper": True, "reap_interval": 15}, 15),  # no heartbeat to wait for
    ],
)
def test_loop_waits_the_shorter_interval(
    db_url: str, clock: FakeClock, options: dict[str, object], period: float
) -> None:
    """The loop ticks once per the shorter of the heartbeat and reap intervals, and
    leaves the time to the tick (the tracker's clock)."""
    tracker = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock, **options)  # type: ignore[arg-type]
    monitor = tracker.monitor
    assert monitor is not None
    monitor.stop()
    ticks: list[int | None] = []
    stop = _Stop()
    monitor._stop = stop  # type: ignore[assignment]
    monitor.tick = lambda now=None: ticks.append(now)  # type: ignore[method-assign]
    monitor._run()
    assert stop.waits == [period] * 3
    assert ticks == [None, None]  # no time passed in: each tick reads the tracker's clock
    tracker.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_heartbeats_its_own_runs(db_url: str) -> None:
    """After fork, the child's first run starts the child's own monitor thread, which
    heartbeats that run (the parent's thread does not exist in the child)."""
    tracker = ExecutionTracker(db_url, strict=True, durability="sync", heartbeat_interval=0.05)
    parent_run = tracker.start("skill", "parent")
    assert tracker.monitor is not None and tracker.monitor._thread is not None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        arm_child_watchdog()
        code = 1
        try:
            monitor = tracker.monitor
            before = monitor.heartbeats
            child_run = tracker.start("skill", "child")
            thread = monitor._thread
            alive = thread is not None and thread.is_alive()
            if alive:
                import time

                deadline = time.monotonic() + 20
                while monitor.heartbeats == before and time.monotonic() < deadline:
                    time.sleep(0.01)  # waits for the child's thread, not for time
            beat = monitor.heartbeats > before
            os.write(write_fd, f"{alive},{beat},{child_run.id}".encode())
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write_fd)
    assert wait_child(pid) == 0  # the report is a few bytes: it waits in the pipe
    with os.fdopen(read_fd) as pipe:
        alive, beat, child_id = pipe.read().split(",")
    assert (alive, beat) == ("True", "True")
    child = tracker.get_run(child_id)
    assert child.heartbeat_at > child.started_at  # type: ignore[operator]
    parent_run.finish_success()
    tracker.close()


def test_reaped_count_and_log_accumulate(
    t: ExecutionTracker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each reap adds to ``reaped`` and logs the run, its source, status and reason;
    a tick given ``now`` uses that time."""
    assert t.monitor is not None
    first = t.start("skill", deadline=5)
    second = t.start("chat", deadline=100)
    with caplog.at_level("INFO", logger="exectrack.monitor"):
        t.monitor.tick(now=int((T0.timestamp() + 6) * 1_000_000))
        assert t.get_run(first.id).status is RunStatus.TIMEOUT  # by the given time
        clock.advance(101)
        t.monitor.tick()
    assert t.monitor.reaped == 2
    assert t.get_run(second.id).status is RunStatus.TIMEOUT
    messages = [r.getMessage() for r in caplog.records]
    assert f"exectrack: reaped run {first.id} (skill) as timeout: deadline" in messages
    assert f"exectrack: reaped run {second.id} (chat) as timeout: deadline" in messages


def test_monitor_thread_is_a_named_daemon_and_stays_stopped(db_url: str, clock: FakeClock) -> None:
    """The thread is a daemon named exectrack-monitor (it never holds up exit); a
    stopped monitor never starts one again."""
    stopped = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock)
    assert stopped.monitor is not None
    stopped.monitor.stop()
    stopped.start("skill").finish_success()
    assert stopped.monitor._thread is None
    stopped.close()
    running = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock)
    running.start("skill").finish_success()
    assert running.monitor is not None
    thread = running.monitor._thread
    assert thread is not None and thread.daemon and thread.name == "exectrack-monitor"
    running.close()


def test_failures_are_reported_with_the_stores_error(db_url: str, clock: FakeClock) -> None:
    """A heartbeat or reap that fails is counted under its cause with the store's own
    error (type and message), never raised from the tick."""
    store = FailingStore(open_store(db_url), fail={"heartbeat", "open_owners"})
    t = ExecutionTracker(store, strict=False, durability="sync", clock=clock, reaper=True)
    assert t.monitor is not None
    t.monitor.stop()
    t.start("skill")
    t.monitor.tick()
    assert t.stats().failures_by_cause == {
        "heartbeat: StoreError: injected store failure": 1,
        "reap: StoreError: injected store failure": 1,
    }
    assert t.monitor.heartbeats == 0
    t.close()
    store.inner.close()


def test_heartbeat_renews_only_the_runs_still_held(db_url: str, clock: FakeClock) -> None:
    """The heartbeat renews the runs this tracker still holds, not every open run of its
    owner: a run whose finish could not be written is let go, its lease runs out and
    the reaper ends it abandoned while the held run lives on."""
    store = FailingStore(open_store(db_url), fail=set())
    t = ExecutionTracker(
        store,
        strict=False,
        durability="sync",
        clock=clock,
        lease=30,
        heartbeat_interval=10,
        reaper=True,
        reap_interval=10,
        owner="elsewhere:1:x",  # not a process of this host: only the lease can end it
    )
    assert t.monitor is not None
    t.monitor.stop()
    held, lost = t.start("skill", "held"), t.start("skill", "lost")
    store.fail = {"finish"}
    lost.finish_success()  # could not be written: the tracker lets the run go
    store.fail = set()
    assert t.held_run_ids() == [held.id]
    for _ in range(4):  # 40 s of ticks, one every 10 s
        clock.advance(10)
        t.monitor.tick()
    assert t.monitor.heartbeats == 4
    reader = open_store(db_url)
    lost_run, held_run = reader.get(lost.id), reader.get(held.id)
    assert lost_run is not None and (lost_run.status, lost_run.error_code) == (
        RunStatus.ERROR,
        "abandoned",
    )
    assert held_run is not None and held_run.status is RunStatus.RUNNING
    assert held_run.lease_until is not None and held_run.lease_until > clock.now()
    reader.close()
    t.close()
    store.inner.close()


class _StuckHeartbeat(FailingStore):
    """A real store whose heartbeat blocks until ``gate`` opens (a stuck database)."""

    def __init__(self, url: str) -> None:
        super().__init__(open_store(url), fail=set())
        self.gate = threading.Event()
        self.entered = threading.Event()

    def heartbeat(self, *args: Any, **kwargs: Any) -> int:
        self.entered.set()
        self.gate.wait(30)
        return int(super().heartbeat(*args, **kwargs))


def test_stop_joins_the_thread(db_url: str) -> None:
    """stop() returns once the loop's thread has ended (it joins it)."""
    t = ExecutionTracker(db_url, strict=True, durability="sync", reaper=True, reap_interval=60)
    assert t.monitor is not None
    thread = t.monitor._thread
    assert thread is not None and thread.is_alive()
    t.monitor.stop(10)
    assert not thread.is_alive()
    t.close()


def test_stop_waits_at_most_its_timeout_for_a_stuck_tick(db_url: str) -> None:
    """A tick stuck in the store does not hold stop() past its timeout (one second
    by default); the thread ends once the store answers."""
    store = _StuckHeartbeat(db_url)
    t = ExecutionTracker(store, strict=True, durability="sync", lease=1, heartbeat_interval=0.01)
    t.start("skill")  # starts the thread; its first tick heartbeats this run
    assert t.monitor is not None
    thread = t.monitor._thread
    assert thread is not None and store.entered.wait(10)
    began = time.monotonic()
    t.monitor.stop(0.05)
    assert thread.is_alive()
    t.monitor.stop()
    waited = time.monotonic() - began
    assert thread.is_alive()
    assert 1.0 <= waited < 1.8
    store.gate.set()
    thread.join(10)
    assert not thread.is_alive()
    t.close()
    store.inner.close()


class _CountingLock:
    """Stands in for the monitor's lock: counts the threads that came to take it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = 0

    def __enter__(self) -> None:
        self.arrived += 1
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_racing_first_runs_start_one_thread(db_url: str) -> None:
    """Two threads that both find no monitor thread and race for the lock start one
    thread between them, not two."""
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    monitor = t.monitor
    assert monitor is not None and monitor._thread is None
    lock = _CountingLock()
    monitor._lock = lock  # type: ignore[assignment]
    before = [th for th in threading.enumerate() if th.name == "exectrack-monitor"]
    lock.lock.acquire()  # both callers get past the first check, then wait here
    callers = [threading.Thread(target=monitor.ensure_started) for _ in range(2)]
    for c in callers:
        c.start()
    deadline = time.monotonic() + 10
    while lock.arrived < 2:
        assert time.monotonic() < deadline, "the callers never reached the lock"
        time.sleep(0.001)
    lock.lock.release()
    for c in callers:
        c.join(10)
        assert not c.is_alive()
    started = [th for th in threading.enumerate() if th.name == "exectrack-monitor"]
    assert [th for th in started if th not in before] == [monitor._thread]
    t.close()

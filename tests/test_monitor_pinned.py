"""The monitor's loop: its clock, its intervals, and its restart in a forked child."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack.testing import FakeClock

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
    with os.fdopen(read_fd) as pipe:
        alive, beat, child_id = pipe.read().split(",")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
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

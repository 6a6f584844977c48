"""Leases, heartbeats and the reaper through the tracker, with a fake clock."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, FinishResult, InvalidArgumentError, RunStatus
from exectrack._owner import owner_alive, parse_owner, process_owner
from exectrack.monitor import reap_once
from exectrack.stores import open_store
from exectrack.testing import FailingStore, FakeClock

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def t(db_url: str, clock: FakeClock) -> Iterator[ExecutionTracker]:
    """A synchronous tracker on a fake clock: 30 s leases, heartbeat every 10 s."""
    tracker = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock)
    yield tracker
    tracker.close()


def test_runs_carry_owner_and_lease(t: ExecutionTracker) -> None:
    """A started run records this process as owner and a lease of 30 s by default."""
    h = t.start("skill")
    run = t.get_run(h.id)
    assert run.owner == process_owner()
    _host, pid, token = parse_owner(run.owner)  # type: ignore[misc]
    assert pid > 0 and token
    assert run.lease_until == T0 + timedelta(seconds=30)
    assert run.heartbeat_at == T0


def test_monitor_thread_starts_with_the_first_run_and_stops_at_close(db_url: str) -> None:
    """No thread until a run opens (a process that tracks nothing pays nothing); the
    thread stops when the tracker closes."""
    t = ExecutionTracker(db_url, strict=True)
    assert t.monitor is not None and t.monitor._thread is None
    t.start("skill").finish_success()
    thread = t.monitor._thread
    assert thread is not None and thread.is_alive()
    t.close()
    assert not thread.is_alive()


def test_heartbeat_renews_open_runs_on_schedule(t: ExecutionTracker, clock: FakeClock) -> None:
    """Each due tick renews every open run's lease in one statement; finished runs
    keep theirs; ticks between heartbeats do nothing."""
    assert t.monitor is not None
    a, b = t.start("skill", "a"), t.start("skill", "b")
    b.finish_success()
    t.monitor.tick()
    assert t.monitor.heartbeats == 1
    clock.advance(5)
    t.monitor.tick()  # not due yet
    assert t.monitor.heartbeats == 1
    clock.advance(5)
    t.monitor.tick()
    assert t.monitor.heartbeats == 2
    runs = {r.source_ref: r for r in t.list_runs().runs}
    assert runs["a"].lease_until == T0 + timedelta(seconds=40)
    assert runs["a"].heartbeat_at == T0 + timedelta(seconds=10)
    assert runs["b"].lease_until == T0 + timedelta(seconds=30)
    a.finish_success()


def test_no_statement_when_no_run_is_open(db_url: str, clock: FakeClock) -> None:
    """The heartbeat costs nothing while the process has no open run."""
    store = FailingStore(open_store(db_url), fail=set())
    t = ExecutionTracker(store, strict=True, durability="sync", clock=clock)
    assert t.monitor is not None
    for _ in range(5):
        t.monitor.tick()
        clock.advance(11)
    assert "heartbeat" not in store.calls
    h = t.start("skill")
    t.monitor.tick()
    assert store.calls["heartbeat"] == 1
    h.finish_success()
    clock.advance(11)
    t.monitor.tick()
    assert store.calls["heartbeat"] == 1
    t.close()


def test_live_lease_is_never_reaped_expired_one_is(t: ExecutionTracker, clock: FakeClock) -> None:
    """A run whose owner heartbeats survives any number of reaps; once heartbeats
    stop, the lease expires and the reaper finishes it error/abandoned."""
    assert t.monitor is not None
    h = t.start("heartbeat", "digest")
    for _ in range(12):  # two minutes of heartbeats every 10 s
        clock.advance(10)
        t.monitor.tick()
        assert t.reap() == []
    clock.advance(30)
    assert t.reap() == []  # exactly at the end of the lease: still live
    clock.advance(0.000001)
    [reaped] = t.reap()
    assert (reaped.run_id, reaped.status, reaped.reason) == (h.id, RunStatus.ERROR, "lease_expired")
    run = t.get_run(h.id)
    assert (run.status, run.error_code, run.retryable) == (RunStatus.ERROR, "abandoned", True)
    assert run.duration_ms == pytest.approx(150_000.001)
    # the store's guard refuses the late finish, and the handle learns the outcome
    assert h.finish_success() == FinishResult(False, RunStatus.ERROR)
    assert h.status is RunStatus.ERROR


def test_deadline_reaps_a_live_run_as_timeout(t: ExecutionTracker, clock: FakeClock) -> None:
    """A run past its deadline ends timeout/deadline_exceeded even while heartbeating."""
    assert t.monitor is not None
    h = t.start("skill", deadline=15)
    clock.advance(10)
    t.monitor.tick()
    assert t.reap() == []
    clock.advance(6)
    t.monitor.tick()
    [reaped] = t.reap()
    assert (reaped.run_id, reaped.status, reaped.error_code) == (
        h.id,
        RunStatus.TIMEOUT,
        "deadline_exceeded",
    )


def test_runs_without_lease_are_left_to_deadlines(db_url: str, clock: FakeClock) -> None:
    """lease=None records no lease: no heartbeat thread, never reaped as abandoned."""
    t = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock, lease=None)
    assert t.monitor is None
    h = t.start("skill")
    clock.advance(3600)
    assert t.reap() == []
    assert t.get_run(h.id).lease_until is None
    t.close()


def test_lease_options_are_validated(db_url: str) -> None:
    """A non-positive lease or a heartbeat not shorter than the lease is refused."""
    with pytest.raises(InvalidArgumentError, match="lease"):
        ExecutionTracker(db_url, lease=0)
    with pytest.raises(InvalidArgumentError, match="heartbeat_interval"):
        ExecutionTracker(db_url, lease=10, heartbeat_interval=10)


def test_reaper_switch_runs_the_loop(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """reaper=True (or EXECTRACK_REAPER=1) starts the loop at once, and it reaps."""
    past = FakeClock(datetime.now(UTC) - timedelta(hours=1))  # its deadline passed long ago
    other = ExecutionTracker(
        db_url, strict=True, durability="sync", owner="elsewhere:1:x", clock=past, lease=None
    )
    stale = other.start("skill", deadline=60)
    monkeypatch.setenv("EXECTRACK_REAPER", "1")
    t = ExecutionTracker(db_url, strict=True, reap_interval=0.01)
    assert t.reaper and t.monitor is not None and t.monitor._thread is not None
    # wait for the loop's count, which it raises after the reap committed; the stored
    # status alone could be read between the commit and the count
    deadline = time.monotonic() + 10
    while t.monitor.reaped < 1:
        assert time.monotonic() < deadline, "the reaper loop never reaped"
        time.sleep(0.01)
    assert t.monitor.reaped == 1
    assert t.get_run(stale.id).status is RunStatus.TIMEOUT
    t.close()
    other.close()


def test_reap_failure_is_reported_not_raised(db_url: str, clock: FakeClock) -> None:
    """A failing store makes a heartbeat or reap count a failure, never raise."""
    store = FailingStore(open_store(db_url), fail={"heartbeat", "reap", "open_owners"})
    t = ExecutionTracker(store, strict=False, durability="sync", clock=clock, reaper=True)
    assert t.monitor is not None
    t.start("skill")
    t.monitor.tick()
    assert any(cause.startswith("heartbeat") for cause in t.stats().failures_by_cause)
    assert any(cause.startswith("reap") for cause in t.stats().failures_by_cause)
    t.close()


def test_owner_alive_rules(tmp_path: Path) -> None:
    """This process is alive; a pid that exited is dead; a reused pid (other start
    token) is dead; another host or an unknown format cannot be told here."""
    import socket
    import subprocess
    import sys

    me = process_owner()
    assert me.startswith(f"{socket.gethostname()}:{os.getpid()}:")  # socket's host name
    assert owner_alive(me) is True
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = f"{socket.gethostname()}:{int(proc.stdout)}:123"
    assert owner_alive(gone) is False
    host, pid, token = parse_owner(me)  # type: ignore[misc]
    assert owner_alive(f"{host}:{pid}:{token}0") is False  # same pid, other process
    assert owner_alive(f"other-host:{pid}:{token}") is None
    assert owner_alive("not an owner") is None


def test_reap_once_uses_liveness(db_url: str) -> None:
    """reap_once finishes the runs of owners reported dead, and only those."""
    alive_t = ExecutionTracker(db_url, strict=True, durability="sync", owner="h:1:alive")
    dead_t = ExecutionTracker(db_url, strict=True, durability="sync", owner="h:2:dead")
    keep, gone = alive_t.start("skill"), dead_t.start("skill")
    store = open_store(db_url)
    preview = reap_once(store, dry_run=True, alive=lambda o: o == "h:1:alive")
    assert [r.run_id for r in preview] == [gone.id]
    reaped = reap_once(store, alive=lambda o: o == "h:1:alive")
    assert [(r.run_id, r.reason) for r in reaped] == [(gone.id, "dead_owner")]
    assert alive_t.get_run(keep.id).status is RunStatus.RUNNING
    alive_t.close()
    dead_t.close()

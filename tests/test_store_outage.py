"""A store that is down, stalled or racing costs the host nothing and loses nothing
it could keep (issue 7, items 2, 13, 14, 18)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack.stores import ApplyResult, Command, open_store
from exectrack.testing import FailingStore, FakeClock

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


class Unreachable:
    """A SQLite path that cannot be opened (its parent is a regular file) until
    ``repair()`` turns that file into a directory: a real store that is down."""

    def __init__(self, tmp_path: Path) -> None:
        self.blocker = tmp_path / "blocked"
        self.blocker.write_text("not a directory")
        self.url = f"sqlite:///{self.blocker / 'runs.db'}"

    def repair(self) -> None:
        self.blocker.unlink()
        self.blocker.mkdir()


# -- item 2: a run whose finish was lost is not kept alive ---------------------------------


def test_heartbeat_renews_only_held_runs_so_a_lost_finish_gets_reaped(db_url: str) -> None:
    """The finish of B fails (the store refused it): B ended locally, so the
    heartbeat stops renewing it and the reaper ends it abandoned; A, still held, is
    renewed and never reaped."""
    clock = FakeClock(T0)
    store = FailingStore(open_store(db_url), fail=set())
    t = ExecutionTracker(store, strict=False, durability="sync", clock=clock)
    assert t.monitor is not None
    a, b = t.start("skill", "held"), t.start("skill", "lost")
    store.fail = {"finish"}
    assert not b.finish_success()
    store.fail = set()
    assert b.finished and t.stats().open_runs == 1
    for _ in range(6):  # a minute of heartbeats, every 10 s
        clock.advance(10)
        t.monitor.tick()
    reaped = t.reap()
    assert [(r.run_id, r.status, r.error_code) for r in reaped] == [
        (b.id, RunStatus.ERROR, "abandoned")
    ]
    held = t.get_run(a.id)
    assert held is not None and held.status is RunStatus.RUNNING
    a.finish_success()
    t.close()


def test_heartbeat_statement_names_the_held_runs(db_url: str) -> None:
    """More held runs than one statement's id list still all get renewed."""
    clock = FakeClock(T0)
    t = ExecutionTracker(db_url, strict=True, durability="async", clock=clock)
    assert t.monitor is not None
    handles = [t.start("skill") for _ in range(1234)]
    t.flush()
    clock.advance(10)
    t.monitor.tick()
    first = t.list_runs(limit=1000)
    runs = first.runs + t.list_runs(limit=1000, cursor=first.next_cursor).runs
    assert len(runs) == 1234 and {r.heartbeat_at for r in runs} == {clock.now()}
    for h in handles:
        h.finish_success()
    t.close()


# -- item 13: a store that is down ----------------------------------------------------------


def test_queued_writes_survive_an_outage_and_land_when_the_store_answers(tmp_path: Path) -> None:
    """Runs started and finished while the store cannot be opened wait in the queue
    (the writer retries, nothing is dropped) and are all written once it can."""
    down = Unreachable(tmp_path)
    t = ExecutionTracker(down.url, strict=False)

    @t.with_run("skill", "during-outage")
    def work(i: int) -> int:
        return i

    assert [work(i) for i in range(200)] == list(range(200))
    wait_until(lambda: t.stats().unavailable, "the writer saw the store down")
    assert not t.flush(5)  # returns (after half a second), it does not hang
    down.repair()
    wait_until(lambda: t.flush(1), "the queue drained")
    stats = t.stats()
    assert (stats.dropped, stats.unavailable) == (0, False)
    runs = t.list_runs(limit=1000).runs
    assert len(runs) == 200 and {r.status for r in runs} == {RunStatus.SUCCESS}
    t.close()


def test_while_the_store_is_down_no_call_waits_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the breaker open, a full queue drops new runs at once (counted): the
    caller never sleeps waiting for a writer that cannot write."""
    from exectrack import _writer

    down = Unreachable(tmp_path)
    t = ExecutionTracker(down.url, strict=False, queue_size=50)
    t.start("skill").finish_success()
    wait_until(lambda: t.stats().unavailable, "the writer saw the store down")
    me = threading.get_ident()
    caller_sleeps = 0
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        nonlocal caller_sleeps
        caller_sleeps += threading.get_ident() == me
        real_sleep(seconds)

    monkeypatch.setattr(_writer.time, "sleep", sleep)

    @t.with_run("skill")
    def work() -> int:
        return 1

    assert sum(work() for _ in range(1000)) == 1000
    assert caller_sleeps == 0
    assert t.stats().dropped >= 950
    t.close(0.1)


def test_a_fast_sync_failure_opens_no_breaker(tmp_path: Path) -> None:
    """durability="sync": a write that fails at once (a file that cannot be opened)
    costs the caller little, so it opens no breaker: the next write tries the store
    again and lands as soon as the store can take it. (A slow failure does open it:
    tests/stores/test_outage_postgres.py.)"""
    down = Unreachable(tmp_path)
    store = FailingStore(open_store(down.url), fail=set())
    t = ExecutionTracker(store, strict=False, durability="sync")
    for _ in range(3):
        t.start("skill", "lost")
    assert store.calls.get("create") == 3 and not t.stats().unavailable
    down.repair()
    h = t.start("skill", "after")
    assert h.finish_success().applied
    assert [r.source_ref for r in t.list_runs().runs] == ["after"]
    t.close()


def test_exit_does_not_wait_for_a_down_store(tmp_path: Path) -> None:
    """A process whose store is down exits normally and says what it could not
    write (its exit time is measured in bench/outage.py)."""
    down = Unreachable(tmp_path)
    code = """
        import sys, time
        import exectrack
        t = exectrack.ExecutionTracker(sys.argv[1], strict=False)
        for _ in range(1000):
            t.start("skill").finish_success()
        t.start("skill", "left-open")
        while not t.stats().unavailable:
            time.sleep(0.01)
        print("exiting", flush=True)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), down.url],
        env={k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "exiting" in proc.stdout, proc.stderr
    # 1,000 short runs, each one queued command (start and finish folded) or two (the
    # writer took the start first), and the run finished at exit
    said = re.search(r"the store is unavailable; (\d+) commands not written", proc.stderr)
    assert said is not None and 1001 <= int(said.group(1)) <= 2001, proc.stderr


# -- item 14: a commit stall -----------------------------------------------------------------


class GatedStore(FailingStore):
    """A real store whose ``apply`` waits at a gate: a commit that stalls."""

    def __init__(self, url: str) -> None:
        super().__init__(open_store(url), fail=set())
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        self.waiting.set()
        self.gate.wait()
        return super().apply(commands)


STALL_RUNS = 70_000  # one second at the rate where runs were lost to a 100 ms stall


@pytest.mark.slow
@pytest.mark.parametrize("caller", ["thread", "event-loop"])
def test_a_stall_of_one_second_at_70000_runs_per_second_loses_no_run(
    db_url: str, caller: str
) -> None:
    """The writer is stuck in a commit while 70,000 short runs start and finish (a
    second's worth at that rate): each waits as one queue entry, none is dropped, and
    all are written when the commit returns. (An event-loop caller never waits, so
    only the queue's size protects it.)"""
    store = GatedStore(db_url)
    t = ExecutionTracker(store, strict=True)
    t.start("skill", "first").finish_success()
    assert store.waiting.wait(10)  # the writer is now stuck at the gate

    if caller == "thread":

        @t.with_run("skill", "stalled")
        def work() -> None:
            return None

        for _ in range(STALL_RUNS):
            work()
    else:

        @t.with_run("skill", "stalled")
        async def awork() -> None:
            return None

        async def main() -> None:
            for _ in range(STALL_RUNS):
                await awork()

        asyncio.run(main())
    stats = t.stats()
    # + first: one entry when its finish was folded into its start during the writer's
    # linger (it ends within microseconds), two when the writer took the start first
    assert stats.dropped == 0 and stats.queued in (STALL_RUNS + 1, STALL_RUNS + 2)
    store.gate.set()
    assert t.flush(120)
    counts = t.run_stats(source_ref="stalled")
    assert counts.by_status["success"] == STALL_RUNS and t.stats().dropped == 0
    t.close()


# -- item 18: what a racing finisher is told -------------------------------------------------


@pytest.mark.slow
def test_sync_racing_finishers_are_told_exactly_what_was_stored(db_url: str) -> None:
    """durability="sync": three threads finish each handle with different statuses
    while another process's tracker finishes it by id. Exactly one finish applies per
    run, and every other finisher is told the status the store kept."""
    ours = ExecutionTracker(db_url, strict=True, durability="sync")
    theirs = ExecutionTracker(db_url, strict=True, durability="sync")
    handles = [ours.start("skill") for _ in range(300)]
    statuses = [RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.TIMEOUT]
    results: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def finish_handle(h: Any, status: RunStatus) -> None:
        result = ours.finish_with_status(h, status, error_code=status.value)
        with lock:
            results.append((h.id, result))

    def finish_foreign(run_id: str) -> None:
        result = theirs.finish_with_status(run_id, "canceled", error_code="elsewhere")
        with lock:
            results.append((run_id, result))

    with ThreadPoolExecutor(4) as pool:
        for h in handles:
            barrier = [pool.submit(finish_handle, h, s) for s in statuses]
            barrier.append(pool.submit(finish_foreign, h.id))
            for future in barrier:
                future.result()
    stored = {r.id: r.status for r in ours.list_runs(limit=1000).runs}
    applied: dict[str, int] = {}
    for run_id, result in results:
        if result.applied:
            applied[run_id] = applied.get(run_id, 0) + 1
            assert result.status is stored[run_id]
        else:
            assert result.status is stored[run_id], (run_id, result, stored[run_id])
    assert applied == {h.id: 1 for h in handles}
    ours.close()
    theirs.close()

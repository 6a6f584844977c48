"""The background writer: group commit, bounded queue, flush, fork and exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack.stores import ApplyResult, Command, open_store
from exectrack.testing import FailingStore
from forking import arm_child_watchdog, wait_child


class GatedStore(FailingStore):
    """A real store whose ``apply`` waits until the gate opens (a stuck database)."""

    def __init__(self, url: str) -> None:
        super().__init__(open_store(url), fail=set())
        self.gate = threading.Event()
        self.waiting = threading.Event()  # set once the writer is held at the gate
        self.batches: list[int] = []

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        self.waiting.set()
        self.gate.wait()
        self.batches.append(len(commands))
        return super().apply(commands)


def test_group_commit_batches_pending_commands(db_url: str) -> None:
    """Commands queued while the writer is busy are committed together, and a finish
    whose start still waits in the queue is folded into it: one entry, one row."""
    store = GatedStore(db_url)
    t = ExecutionTracker(store, strict=True)
    first = t.start("skill", "first")  # the writer takes this and waits at the gate
    assert store.waiting.wait(5)
    handles = [t.start("skill", f"r{i}") for i in range(50)]
    for h in handles:
        h.finish_success()
    first.finish_success()
    store.gate.set()
    assert t.flush(5)
    assert store.batches[0] == 1
    assert sum(store.batches) == 1 + 50 + 1  # first; 50 folded runs; first's finish
    assert len(store.batches) <= 3
    runs = t.list_runs(limit=100).runs
    assert len(runs) == 51 and {r.status for r in runs} == {RunStatus.SUCCESS}
    assert t.stats().committed == 52
    t.close()


def test_light_load_lands_without_flush(db_url: str) -> None:
    """Under light load a single start is committed within moments, no flush needed."""
    t = ExecutionTracker(db_url, strict=True)
    h = t.start("heartbeat")
    reader = open_store(db_url)
    deadline = time.monotonic() + 5
    while reader.get(h.id) is None:
        assert time.monotonic() < deadline, "start never landed"
        time.sleep(0.001)
    t.close()


def test_full_queue_drops_new_runs_after_bounded_wait(db_url: str) -> None:
    """When the store cannot keep up, a new run waits a bounded time, then is dropped
    and counted; the host call is unaffected, and every run whose start was accepted
    still gets its finish (none is left running by a full queue)."""
    store = GatedStore(db_url)
    t = ExecutionTracker(store, strict=False, queue_size=10)

    @t.with_run("skill")
    def work(i: int) -> int:
        return i

    first = t.start("skill", "first")  # the writer takes this and waits at the gate
    assert store.waiting.wait(5)
    first.finish_success()
    started = time.monotonic()
    assert [work(i) for i in range(20)] == list(range(20))
    elapsed = time.monotonic() - started
    stats = t.stats()
    assert stats.dropped > 0
    assert elapsed < 20 * 0.1 + 1  # each dropped start waited at most the put timeout
    assert any("queue full" in cause for cause in stats.failures_by_cause)
    store.gate.set()
    assert t.flush(5)
    stored = t.list_runs(limit=100).runs
    assert len(stored) == 1 + 20 - stats.dropped
    assert {r.status for r in stored} == {RunStatus.SUCCESS}
    t.close()


def test_full_queue_never_waits_on_event_loop(db_url: str) -> None:
    """On an event-loop thread a full queue drops at once instead of blocking."""
    store = GatedStore(db_url)
    t = ExecutionTracker(store, strict=False, queue_size=5)
    held = t.start("skill", "held")
    # the writer holds that run's start alone at the gate (had it woken later, its
    # first batch could have taken up to five runs of the loop's, and fewer would drop)
    assert store.waiting.wait(5)

    @t.with_run("skill")
    async def work() -> None:
        return None

    async def main() -> float:
        start = time.perf_counter()
        for _ in range(40):
            await work()
        return time.perf_counter() - start

    try:
        elapsed = asyncio.run(main())
        # five runs fill the queue (each finish folds into its queued start); a
        # dropped start leaves the run unrecorded, so its finish is never queued
        assert t.stats().dropped == 40 - 5
        assert elapsed < 0.1 * 3  # a single bounded wait would take 0.1 s
    finally:
        store.gate.set()
        held.finish_success()
        t.close()


def test_transient_store_failure_is_retried(db_url: str) -> None:
    """A batch that fails with a transient error is retried and then lands."""
    from exectrack.errors import StoreUnavailableError

    store = FailingStore(open_store(db_url), fail={"apply"}, error=StoreUnavailableError("busy"))
    t = ExecutionTracker(store, strict=True)
    h = t.start("skill")
    h.finish_success()
    deadline = time.monotonic() + 5
    while store.calls.get("apply", 0) < 1:  # the writer met the failure at least once
        assert time.monotonic() < deadline
        time.sleep(0.001)
    store.fail.clear()
    assert t.flush(5)
    assert store.calls["apply"] >= 2
    assert t.get_run(h.id).status is RunStatus.SUCCESS
    t.close()


def test_bad_command_does_not_sink_its_batch(db_url: str) -> None:
    """A command the store rejects is dropped alone; its neighbours are written."""
    from exectrack.stores import FinishRun

    store = GatedStore(db_url)
    t = ExecutionTracker(store, strict=False)
    good = [t.start("skill", f"g{i}") for i in range(5)]
    # a finish with a non-terminal status is invalid and rejected by the store
    assert t._writer is not None
    t._writer.submit(FinishRun(good[0].id, RunStatus.RUNNING, 0))
    for h in good:
        h.finish_success()
    store.gate.set()
    assert t.flush(5)
    assert {r.status for r in t.list_runs().runs} == {RunStatus.SUCCESS}
    assert t.stats().dropped == 1
    t.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_gets_its_own_writer(db_url: str) -> None:
    """A child forked while the parent has queued writes writes only its own runs with
    a fresh writer; the parent's queued writes stay the parent's."""
    store = GatedStore(db_url)
    t = ExecutionTracker(store, strict=True)
    t.start("skill", "parent-first")
    assert store.waiting.wait(5)  # the writer now holds that one at the gate
    parent_handles = [t.start("skill", f"parent-{i}") for i in range(10)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        arm_child_watchdog()
        code = 1
        try:
            # the parent's writer may have held the old gate's lock at fork(): a lock
            # another thread held stays held forever in the child, so use a new gate
            store.gate = threading.Event()
            store.gate.set()
            for i in range(5):
                t.start("skill", f"child-{i}").finish_success()
            ok = t.flush(5)
            refs = sorted(str(r.source_ref) for r in t.list_runs(limit=100).runs)
            code = 0 if ok and refs == [f"child-{i}" for i in range(5)] else 3
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    for h in parent_handles:
        h.finish_success()
    store.gate.set()
    assert t.flush(5)
    refs = sorted(str(r.source_ref) for r in t.list_runs(limit=100).runs)
    assert refs == sorted(
        ["parent-first"] + [f"parent-{i}" for i in range(10)] + [f"child-{i}" for i in range(5)]
    )
    t.close()


def _run_script(code: str, db: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECTRACK_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_interpreter_exit_flushes_queued_writes(tmp_path: Path) -> None:
    """A process that exits without calling flush still commits every queued run."""
    db = tmp_path / "exit.db"
    proc = _run_script(
        """
        import exectrack

        @exectrack.with_run("skill")
        def work(i):
            return i

        for i in range(5000):
            work(i)
        """,
        db,
    )
    assert proc.returncode == 0, proc.stderr
    runs = open_store(f"sqlite:///{db}").count_runs(__import__("exectrack").RunFilter())
    assert runs == {("skill", RunStatus.SUCCESS): 5000}


def test_exit_flush_is_bounded_when_store_is_stuck(tmp_path: Path) -> None:
    """A stuck database cannot hang interpreter exit: the exit flush gives up."""
    db = tmp_path / "stuck.db"
    proc = _run_script(
        """
        import threading, time
        import exectrack
        from exectrack.stores import open_store
        from exectrack.testing import FailingStore

        entered = threading.Event()

        class Stuck(FailingStore):
            def apply(self, commands):
                entered.set()
                threading.Event().wait()

        t = exectrack.ExecutionTracker(Stuck(open_store("sqlite:///:memory:"), fail=set()),
                                       strict=False)
        t.start("skill")
        assert entered.wait(10)
        t.start("skill")
        print("exiting", flush=True)
        """,
        db,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stdout
    assert "exit flush timed out" in proc.stderr


class CountingStore(FailingStore):
    """A real store that records the size of every batch it is given."""

    def __init__(self, url: str) -> None:
        super().__init__(open_store(url), fail=set())
        self.batches: list[int] = []

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        self.batches.append(len(commands))
        return super().apply(commands)


@pytest.mark.parametrize("end", ["flush", "close"])
def test_a_run_shorter_than_the_linger_is_one_row_and_a_flush_does_not_wait(
    db_url: str, end: str
) -> None:
    """Woken from sleep, the writer lingers before taking what is pending: a run
    that ends meanwhile is folded into its start (one command, one batch). A flush
    or a close cuts the linger short (here 60 s, the flush is given 5)."""
    store = CountingStore(db_url)
    t = ExecutionTracker(store, strict=True)
    assert t._writer is not None
    t._writer._linger = 60.0
    h = t.start("skill", "short")
    h.finish_success()
    if end == "flush":
        assert t.flush(5)
    else:
        assert t.close(5)
    assert store.batches == [1]
    run = open_store(db_url).get(h.id)
    assert run is not None and run.status is RunStatus.SUCCESS
    t.close()


def test_a_busy_writer_does_not_linger(db_url: str) -> None:
    """The linger applies only when the writer wakes from sleep: commands queued
    while it applies a batch are taken at once after it (a flush is not needed)."""
    store = GatedStore(db_url)
    t = ExecutionTracker(store, strict=True)
    assert t._writer is not None
    first = t.start("skill", "first")  # taken (after the default linger), held at the gate
    assert store.waiting.wait(5)
    t._writer._linger = 60.0
    second = t.start("skill", "second")
    store.gate.set()
    reader = open_store(db_url)
    deadline = time.monotonic() + 5
    while reader.get(second.id) is None:
        assert time.monotonic() < deadline, "the second start waited for a linger"
        time.sleep(0.001)
    first.finish_success()
    second.finish_success()
    t.close()

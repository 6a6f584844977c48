"""Locks another thread holds at fork(): the child gets its own.

A lock held by a thread at fork() stays held forever in the child, where that thread
does not exist. Each test holds one of exectrack's process-wide locks in a thread of
the parent while forking, and the child uses what that lock guards: it must finish
(a hang is ended by the child's watchdog, which prints the child's stacks)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exectrack import _default
from exectrack.integrations._watchdog import Watchdog
from forking import fork_and_run, held_by_a_thread, wait_child
from test_handle_pinned import Broken

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def test_the_default_tracker_is_built_in_a_child_forked_while_a_thread_built_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread of the parent was building the default tracker (a slow store) when the
    process forked: the child builds its own and records with it."""
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", f"sqlite:///{tmp_path / 'runs.db'}")
    previous = _default.set_tracker(None)

    def child() -> int:
        tracker = _default.get_tracker()
        run = tracker.start("skill", "child").finish_success()
        return 0 if run.applied and tracker.flush(5) else 2

    try:
        with held_by_a_thread(_default._lock):
            pid = fork_and_run(child, limit=20)
        assert wait_child(pid) == 0
    finally:
        built = _default.set_tracker(previous)
        if built is not None:
            built.close()


def test_a_forked_childs_watchdog_has_its_own_lock_and_none_of_the_parents_callbacks(
    tmp_path: Path,
) -> None:
    """The watchdog's thread held its lock at fork(): the child's watchdog still takes
    new callbacks and calls them, and never calls the parent's (those time out the
    parent's work, which the child does not run)."""
    watchdog = Watchdog()
    calls = tmp_path / "calls"

    def call(who: str) -> Callable[[], None]:
        def callback() -> None:
            with calls.open("a") as f:
                f.write(f"{who}:{os.getpid()}\n")

        return callback

    watchdog.schedule(time.monotonic() + 0.3, call("parent"))

    def child() -> int:
        done = threading.Event()
        watchdog.schedule(time.monotonic() + 0.05, call("child"))
        watchdog.schedule(time.monotonic() + 0.6, done.set)  # after the parent's time
        return 0 if done.wait(10) else 2

    with held_by_a_thread(watchdog._cond):
        pid = fork_and_run(child, limit=20)
    assert wait_child(pid) == 0
    deadline = time.monotonic() + 10
    while not (calls.exists() and "parent" in calls.read_text()):
        assert time.monotonic() < deadline, "the parent's callback never ran"
        time.sleep(0.01)  # waiting for the parent's watchdog thread, not for time
    lines = sorted(calls.read_text().splitlines())
    assert lines == [f"child:{pid}", f"parent:{os.getpid()}"]
    watchdog.stop()


def test_a_forked_childs_first_record_while_a_parent_thread_installed_a_handler() -> None:
    """A logger's first record takes the lock that installs the CLI's stderr handler;
    a parent thread held it at fork(): the child's first record still goes out."""
    from exectrack import _log

    log = _log.get_logger("exectrack.test_fork")  # it has never logged

    def child() -> int:
        log.warning("from the child")
        return 0

    with held_by_a_thread(_log._lock):
        pid = fork_and_run(child, limit=20)
    assert wait_child(pid) == 0


def test_a_forked_child_finishes_and_counts_while_a_parent_thread_held_the_trackers_locks(
    tmp_path: Path,
) -> None:
    """A parent thread was finishing a run (the finish lock) and counting a failure
    (the failure lock) at fork(): the child's tracker still finishes its own runs and
    counts its own failures."""
    from exectrack import ExecutionTracker, RunStatus
    from exectrack.stores import FinishResult

    t = ExecutionTracker(f"sqlite:///{tmp_path / 'runs.db'}", durability="sync", strict=False)

    parents = t.start("skill", "parent")

    def child() -> int:
        if parents.finish_success() != FinishResult(False, None):  # not the child's
            return 4
        h = t.start("skill", "child")
        h.update_metadata(Broken())  # counted under the failure lock
        if t.stats().failures != 1:
            return 3
        return 0 if h.finish_success().applied else 2

    try:
        with held_by_a_thread(t._finish_lock), held_by_a_thread(t._failures._lock):
            pid = fork_and_run(child, limit=20)
        assert wait_child(pid) == 0
        assert parents.status is RunStatus.RUNNING
        assert sorted((r.source_ref, r.status.value) for r in t.list_runs().runs) == [
            ("child", "success"),
            ("parent", "running"),
        ]
    finally:
        t.close()


def test_a_forked_childs_breaker_is_closed_though_the_parents_was_open(tmp_path: Path) -> None:
    """The parent's breaker was open (a store that did not answer) with its probe
    thread running: the child has no probe thread, so it starts closed and writes."""
    from exectrack import ExecutionTracker
    from exectrack.errors import StoreUnavailableError
    from exectrack.stores import open_store
    from exectrack.testing import FailingStore

    class ProbeFails(FailingStore):
        def schema_version(self) -> int:  # the probe's read: the breaker stays open
            self._check("schema_version")
            return super().schema_version()

    store = ProbeFails(
        open_store(f"sqlite:///{tmp_path / 'runs.db'}"),
        fail={"schema_version"},
        error=StoreUnavailableError("down"),
    )
    t = ExecutionTracker(store, durability="sync", strict=False)
    assert t._breaker is not None
    t._breaker.trip(StoreUnavailableError("down"), waited=1.0)  # as after a slow failure
    assert t.stats().unavailable

    def child() -> int:
        return 0 if t.start("skill", "child").recorded else 2

    try:
        pid = fork_and_run(child, limit=20)
        assert wait_child(pid) == 0
        assert t.stats().unavailable  # the parent's is still open
        assert [r.source_ref for r in t.list_runs().runs] == ["child"]
    finally:
        store.fail = set()
        t.close()

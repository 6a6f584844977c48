"""Process exit, pinned in this process: what ``shutdown_all`` does with every live
tracker and its time budget; the exit hook registered once; which SIGTERM
dispositions exectrack takes over, chains or leaves alone (and only from the main
thread); the chained handler. (The paths that end the process run in child
processes: tests/test_crash_and_shutdown.py.)"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from exectrack import ExecutionTracker, RunStatus, _exit, _owner
from exectrack.stores import FinishResult


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only this test's trackers are live, and the SIGTERM disposition and exectrack's
    view of it come back as they were."""
    monkeypatch.setattr(_exit, "_live", weakref.WeakSet())
    monkeypatch.setattr(_exit, "_sigterm_wanted", False)
    monkeypatch.setattr(_exit, "_installed", _exit._installed)
    monkeypatch.setattr(_exit, "_dying", 0)
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def tracker(db_url: str, **kwargs: Any) -> ExecutionTracker:
    return ExecutionTracker(db_url, strict=True, durability="sync", **kwargs)


def statuses(t: ExecutionTracker) -> list[tuple[RunStatus, str | None]]:
    return sorted((r.status, r.error_code) for r in t.list_runs().runs)


# -- shutdown_all ------------------------------------------------------------------------


def test_shutdown_all_ends_every_live_trackers_runs(db_url: str, tmp_path: Any) -> None:
    a = tracker(db_url)
    b = tracker(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        a.start("skill")
        a.start("chat", queued=True)
        b.start("skill")
        assert _exit.shutdown_all() == 3
        assert statuses(a) == [(RunStatus.CANCELED, "shutdown")] * 2
        assert statuses(b) == [(RunStatus.CANCELED, "shutdown")]
        assert a.start("skill").recorded is False  # exit began: not recorded
        assert b.start("skill").recorded is False
        assert _exit.shutdown_all() == 0  # cheap the second time
    finally:
        a.close()
        b.close()


def test_shutdown_all_skips_closed_trackers(db_url: str) -> None:
    t = tracker(db_url)
    t.close()
    assert _exit.shutdown_all() == 0
    assert t._shutting is False


def test_shutdown_all_stops_new_runs_everywhere_before_it_ends_any(db_url: str) -> None:
    """Every tracker stops recording first: a run opened while another tracker is
    being shut down is not recorded (it would be left open)."""
    a = tracker(db_url)
    b = tracker(db_url)
    seen = []

    def opening_on(other: ExecutionTracker, original: Any) -> Any:
        def shutdown(timeout: float = 5.0) -> int:
            seen.append(other.start("skill").recorded)  # meanwhile, on the other one
            return int(original(timeout))

        return shutdown

    a.shutdown = opening_on(b, a.shutdown)  # type: ignore[method-assign]
    b.shutdown = opening_on(a, b.shutdown)  # type: ignore[method-assign]
    try:
        assert _exit.shutdown_all() == 0
        assert seen == [False, False]
    finally:
        a.close()
        b.close()


def test_shutdown_all_with_no_time_left_ends_nothing(db_url: str) -> None:
    t = tracker(db_url)
    try:
        h = t.start("skill")
        assert _exit.shutdown_all(0) == 0
        assert h.finish_success() == FinishResult(True, RunStatus.SUCCESS)
    finally:
        t.close()


def test_the_exit_budget() -> None:
    assert _exit.EXIT_TIMEOUT == 5.0
    assert (_exit.SIGNAL_WAIT, _exit.STUCK_GRACE) == (0.5, 1.0)


# -- registration ------------------------------------------------------------------------


def test_a_tracker_registers_the_exit_hook_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_exit, "_atexit_installed", False)
    atexit.unregister(_exit._at_exit)
    before = atexit._ncallbacks()
    try:
        a = tracker(db_url)
        b = tracker(db_url)
        assert atexit._ncallbacks() == before + 1
        assert set(_exit._live) == {a, b}
        a.close()
        b.close()
    finally:
        atexit.unregister(_exit._at_exit)
        atexit.register(_exit._at_exit)


def test_a_switched_off_tracker_is_not_registered(db_url: str) -> None:
    with ExecutionTracker(db_url, enabled=False) as off:
        assert off not in set(_exit._live)


# -- SIGTERM -----------------------------------------------------------------------------


def own_handler(signum: int, frame: FrameType | None) -> str:
    return f"own {signum}"


def test_the_default_disposition_is_taken_over(db_url: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with ExecutionTracker(db_url):
        assert signal.getsignal(signal.SIGTERM) is _exit._on_sigterm
        assert _exit._installed is _exit._raw_getsignal(signal.SIGTERM)
        assert _exit._sigterm_wanted is True


def test_an_applications_handler_is_chained_once(db_url: str) -> None:
    signal.signal(signal.SIGTERM, own_handler)
    with ExecutionTracker(db_url), ExecutionTracker(db_url):
        chained = signal.getsignal(signal.SIGTERM)
        assert isinstance(chained, _exit._Chained)
        assert chained.previous is own_handler
        assert repr(chained) == f"<exectrack SIGTERM hook chained to {own_handler!r}>"
        _exit._installed = None  # as if someone set it again: still chained once
        _exit._install_sigterm_handler()
        assert signal.getsignal(signal.SIGTERM) is chained
        assert _exit.terminating is False
        assert chained(signal.SIGTERM, None) == f"own {int(signal.SIGTERM)}"
        assert _exit.terminating is True
        frame = sys._getframe()
        got: list[tuple[int, FrameType | None]] = []
        _exit._Chained(lambda signum, f: got.append((signum, f)))(7, frame)
        assert got == [(7, frame)]


def test_ignored_sigterm_is_left_alone(db_url: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with ExecutionTracker(db_url):
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert _exit._installed == signal.SIG_IGN  # as the C function gives it: 1


def test_handle_sigterm_off_leaves_it_alone(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECTRACK_HANDLE_SIGTERM", "0")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with ExecutionTracker(db_url) as t:
        t.start("skill")
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert _exit._sigterm_wanted is False


def test_once_the_process_is_dying_nothing_is_installed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    monkeypatch.setattr(_exit, "_dying", int(signal.SIGTERM))
    with ExecutionTracker(db_url) as t:
        t.start("skill")
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_tracker_made_off_the_main_thread_installs_at_the_main_threads_first_run(
    db_url: str,
) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    made: list[ExecutionTracker] = []
    worker = threading.Thread(target=lambda: made.append(ExecutionTracker(db_url)))
    worker.start()
    worker.join(30)
    assert not worker.is_alive()
    [t] = made
    try:
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # not from there
        assert _exit._sigterm_wanted is True
        assert _exit.needs_hooks() is True
        in_thread: list[bool] = []
        other = threading.Thread(target=lambda: in_thread.append(_exit.needs_hooks()))
        other.start()
        other.join(30)
        new_process = _exit._hooks_generation != _owner.generation  # as the thread saw it
        t.start("skill")  # the main thread's first run
        assert signal.getsignal(signal.SIGTERM) is _exit._on_sigterm
        assert _exit.needs_hooks() is False
        # another thread never asks: it could not set a handler anyway
        assert in_thread == [new_process]
    finally:
        t.close()


def test_a_disposition_changed_behind_exectracks_back_is_noticed(db_url: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with ExecutionTracker(db_url) as t:
        t.start("skill")
        assert _exit.needs_hooks() is False
        signal.signal(signal.SIGTERM, own_handler)  # a server installs its own
        assert _exit.needs_hooks() is True
        t.start("skill")
        chained = signal.getsignal(signal.SIGTERM)
        assert isinstance(chained, _exit._Chained) and chained.previous is own_handler
        assert _exit.needs_hooks() is False


def test_a_new_fork_generation_needs_the_hooks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_exit, "_hooks_generation", _owner.generation)
    assert _exit.needs_hooks() is False
    monkeypatch.setattr(_owner, "generation", _owner.generation + 1)
    assert _exit.needs_hooks() is True
    _exit.on_first_run()
    assert _exit._hooks_generation == _owner.generation
    assert _exit.needs_hooks() is False


def test_no_multiprocessing_child_here() -> None:
    assert _exit._in_multiprocessing_child() is False
    assert os.getpid() > 0


def _report_exit_state(queue: Any) -> None:
    queue.put((_exit.terminating, _exit._dying, _exit._main_ident == threading.get_ident()))


def test_a_forked_child_starts_with_no_signal_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent was told to end (and passed it on to the app's handler): its child
    was not, and its own cancelled runs are not a shutdown's."""
    import multiprocessing

    monkeypatch.setattr(_exit, "terminating", True)
    monkeypatch.setattr(_exit, "_dying", int(signal.SIGTERM))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_report_exit_state, args=(queue,))
    child.start()
    state = queue.get(timeout=60)
    child.join(60)
    assert state == (False, 0, True)

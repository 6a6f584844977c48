"""fork() in a test: the child cannot hang the suite silently.

A child that hangs (a lock another thread held at fork stays held forever in the
child) would leave the parent in ``waitpid`` until pytest-timeout dumps the
*parent's* threads, which shows nothing of the hang. Instead the child arms
``faulthandler`` at once: after ``CHILD_LIMIT`` seconds it prints its own stacks to
stderr (captured by pytest in the failing test's report) and exits with
``HUNG``; the parent waits a bounded time and kills what is left.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

CHILD_LIMIT = 60.0
HUNG = 1  # faulthandler's exit status (``exit=True`` calls _exit(1))


def arm_child_watchdog(limit: float = CHILD_LIMIT) -> None:
    """Call first thing in the child: a hang prints the child's stacks and ends it."""
    faulthandler.dump_traceback_later(limit, exit=True)


def wait_child(pid: int, limit: float = CHILD_LIMIT + 15) -> int:
    """The child's exit code; fails the test (after killing it) if it outlives ``limit``."""
    deadline = time.monotonic() + limit
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"forked child {pid} still running after {limit:.0f} s")
        time.sleep(0.01)  # polling the child's state, not waiting for time to pass
    return os.waitstatus_to_exitcode(done[1])


@contextmanager
def held_by_a_thread(lock: threading.Lock | threading.Condition) -> Iterator[None]:
    """``lock`` held by another thread for the block (a fork() inside it leaves it
    held forever in the child), released and the thread gone after it."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(5)
    try:
        yield
    finally:
        release.set()
        thread.join(10)
        assert not thread.is_alive()


def fork_and_run(child: Callable[[], int], limit: float = CHILD_LIMIT) -> int:
    """Fork; the child runs ``child()`` under the watchdog and exits with its return
    value (1 if it raised). Returns the child's pid, for :func:`wait_child`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        arm_child_watchdog(limit)
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    return pid

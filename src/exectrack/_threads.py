"""exectrack's own threads leave the process's termination signals to other threads.

A signal sent to a process goes to one of its threads that does not block it. A
Python handler (exectrack's SIGTERM hook, Python's own SIGINT) runs only when the
main thread next runs Python code; when the signal lands on a background thread
while the main thread waits in C (a ``multiprocessing.Pool`` worker waiting for its
next task), the handler never runs and the process never ends: ``Pool.terminate``
then waits forever. Seen in CI with a worker's three threads all waiting and SIGTERM
still caught, not pending. Blocked in exectrack's threads, these signals reach a
thread that can act on them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = ["leave_signals_to_others", "quiet"]

_SIGNALS = {
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None)) if s is not None
}


def leave_signals_to_others() -> None:
    """Block SIGTERM and SIGINT in the calling thread (a no-op where threads have
    no signal masks)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def quiet(target: Callable[[], Any]) -> Callable[[], Any]:
    """``target`` as a thread's target that first blocks those signals. Only in the
    thread it starts: a caller running ``target`` itself (a test driving a loop) keeps
    its mask, and so do the processes it starts, which inherit it."""

    def run() -> Any:
        leave_signals_to_others()
        return target()

    return run

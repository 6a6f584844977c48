"""Process exit: at interpreter exit and on SIGTERM, every live tracker flushes and
finishes its open runs as ``canceled``/``shutdown``, within one time budget."""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exectrack._tracker import ExecutionTracker

__all__ = ["EXIT_TIMEOUT", "register_for_shutdown", "shutdown_all"]

EXIT_TIMEOUT = 5.0
_live: weakref.WeakSet[ExecutionTracker] = weakref.WeakSet()
_atexit_installed = False
_sigterm_installed = False


def shutdown_all(timeout: float = EXIT_TIMEOUT) -> int:
    """Shut every live tracker down within one time budget; returns runs finished."""
    deadline = time.monotonic() + timeout
    finished = 0
    for tracker in list(_live):
        if not tracker._closed:
            finished += tracker.shutdown(max(0.0, deadline - time.monotonic()))
    return finished


def register_for_shutdown(tracker: ExecutionTracker, handle_sigterm: bool) -> None:
    global _atexit_installed
    _live.add(tracker)
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(shutdown_all, EXIT_TIMEOUT)
    if handle_sigterm and not _sigterm_installed:
        _install_sigterm_handler()


def _install_sigterm_handler() -> None:
    """On SIGTERM, shut trackers down, then die of SIGTERM as if we were not here.

    Installed only from the main thread and only over the default action: an app's
    own handler is never replaced (its orderly exit reaches the atexit hook anyway).
    """
    global _sigterm_installed
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set there: a later tracker may try again
    _sigterm_installed = True
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    # Shut down in a helper thread, so a lock the interrupted code holds can only
    # cost the budget, never hang the process.
    helper = threading.Thread(target=shutdown_all, args=(EXIT_TIMEOUT,), daemon=True)
    helper.start()
    helper.join(EXIT_TIMEOUT + 1)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1)  # pragma: no cover - the signal ends the process first
    os._exit(128 + signum)  # pragma: no cover


def _forget_parent_runs() -> None:
    """A forked child does not own the runs its parent had open: its exit (or SIGTERM)
    must not finish them, and its heartbeat must not count them."""
    for tracker in list(_live):
        tracker._open_runs.clear()


os.register_at_fork(after_in_child=_forget_parent_runs)

"""Process exit: every live tracker flushes and finishes its open runs as
``canceled``/``shutdown``, within one time budget, however the process ends.

- Interpreter exit: an ``atexit`` hook (inherited by forked children that exit
  through ``sys.exit``).
- A ``multiprocessing`` child (``Process``, ``Pool`` and ``ProcessPoolExecutor``
  workers, every start method) ends with ``os._exit`` after running
  ``multiprocessing``'s finalisers, not ``atexit``: a finaliser is registered in the
  child when it opens its first run.
- SIGTERM with the default action: exectrack's handler shuts down, then lets the
  process die of the signal. An application's own SIGTERM handler (a server's
  graceful shutdown) is kept and chained: the signal marks the process as
  terminating, from then on every finish is committed before it returns and a
  cancellation is recorded as ``shutdown``, and the application's handler runs as
  before. Signal handlers can only be set from the main thread: a tracker created
  elsewhere installs it at the first run the main thread opens.
- A store that is down is not waited for: exit takes at most ``EXIT_TIMEOUT``, and
  well under a second when the store is unreachable.

A Python signal handler runs only when the main thread next runs Python code. A
signal that comes while that thread is between waits in C (glibc's ``sem_wait``
going back to sleep after a wake-up it lost to another process, as a ``Pool``
worker does when ``Pool.terminate`` takes the task queue's lock and signals it)
trips the handler and is never acted on: the worker waits forever, and so does
``Pool.terminate``. Without exectrack the default action would have ended the
process, so in a ``multiprocessing`` child exectrack also watches the signal wakeup
file descriptor (when no one else uses it) from a thread of its own, which starts
the shutdown itself and sends the signal again, which then interrupts the wait.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from exectrack import _owner
from exectrack._threads import leave_signals_to_others, quiet

if TYPE_CHECKING:
    from exectrack._tracker import ExecutionTracker

__all__ = ["EXIT_TIMEOUT", "on_first_run", "register_for_shutdown", "shutdown_all"]

EXIT_TIMEOUT = 5.0
_SIGTERM = int(getattr(signal, "SIGTERM", 15))
# The C function under signal.getsignal: 15 ns instead of 400 (no enum conversion),
# cheap enough to ask on every run the main thread opens.
_raw_getsignal = getattr(sys.modules.get("_signal"), "getsignal", signal.getsignal)
_live: weakref.WeakSet[ExecutionTracker] = weakref.WeakSet()
_atexit_installed = False
_hooks_generation = -1  # the fork generation whose per-process hooks are in place
_sigterm_wanted = False  # a tracker asked for the handler; set it from the main thread
_installed: object = None  # the SIGTERM disposition exectrack last set or accepted
_main_ident = threading.main_thread().ident
terminating = False  # SIGTERM was passed on to the application's own handler
_dying = 0  # the signal that came to exectrack's own handler: the process is ending
SIGNAL_WAIT = 0.5  # seconds the SIGTERM handler waits for the shutdown before returning
STUCK_GRACE = 1.0  # past the budget: the shutdown is stuck, the process dies anyway
_dying_lock = threading.Lock()  # who starts the shutdown: the handler or the watcher
_helper: threading.Thread | None = None  # the thread running _shutdown_then_die
_shut_down = False  # _shutdown_then_die finished the shutdown; the signal comes next
_watch_fds: tuple[int, int] | None = None  # this process's wakeup pipe, when it owns one


def shutdown_all(timeout: float = EXIT_TIMEOUT) -> int:
    """Shut every live tracker of this process down within one time budget;
    returns how many runs it finished. Cheap when called twice."""
    deadline = time.monotonic() + timeout
    trackers = [t for t in list(_live) if not t._closed]
    for tracker in trackers:
        tracker._shutting = True  # from here on new runs are not recorded
    finished = 0
    for tracker in trackers:
        finished += tracker.shutdown(max(0.0, deadline - time.monotonic()))
    return finished


def _at_exit() -> None:
    shutdown_all(EXIT_TIMEOUT)
    if _dying:  # SIGTERM came and its handler returned: die of it, as promised
        os.kill(os.getpid(), _dying)


def register_for_shutdown(tracker: ExecutionTracker, handle_sigterm: bool) -> None:
    global _atexit_installed, _sigterm_wanted
    _live.add(tracker)
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(_at_exit)
    if handle_sigterm:
        _sigterm_wanted = True
        _install_sigterm_handler()


def needs_hooks() -> bool:
    """Whether ``on_first_run`` has work to do (a cheap check for the hot path): a
    new process, or, on the main thread, a SIGTERM disposition exectrack did not set."""
    return _hooks_generation != _owner.generation or (
        _sigterm_wanted
        and threading.get_ident() == _main_ident
        and _raw_getsignal(_SIGTERM) is not _installed
    )


def on_first_run() -> None:
    """Per-process hooks that can only be set later than tracker creation: the
    multiprocessing finaliser of a child process, the SIGTERM handler (main thread)."""
    global _hooks_generation
    if _hooks_generation != _owner.generation:
        _hooks_generation = _owner.generation
        util = sys.modules.get("multiprocessing.util")
        if util is not None and _in_multiprocessing_child():
            util.Finalize(None, shutdown_all, args=(EXIT_TIMEOUT,), exitpriority=0)
    if _sigterm_wanted:
        _install_sigterm_handler()


def _install_sigterm_handler() -> None:
    global _installed
    if _dying:
        return  # SIGTERM came: its default action is what ends the process now
    if threading.get_ident() != _main_ident or not hasattr(signal, "SIGTERM"):
        return  # signal handlers can only be set there: the main thread's next run will
    if _raw_getsignal(_SIGTERM) is not _installed:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        elif callable(current) and not isinstance(current, _Chained) and current is not _on_sigterm:
            signal.signal(signal.SIGTERM, _Chained(current))
        # (SIG_IGN, or a handler set outside Python: left alone)
        _installed = _raw_getsignal(_SIGTERM)
    # (a forked child gets here with the parent's handler and no watcher of its own)
    if _installed is _on_sigterm and _watch_fds is None and _in_multiprocessing_child():
        _watch_for_lost_signals()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Shut trackers down, then die of the signal as if exectrack were not here.

    A helper thread finishes the open runs and flushes, then sends the signal again,
    whose default action ends the process. The handler waits for it a moment only:
    the main thread may have been interrupted holding a lock the shutdown needs (the
    writer's, for a moment in every submit), and waiting longer would deadlock until
    the budget ran out and lose the queue. Past that moment the handler returns, the
    main thread goes on (a blocking call resumes) and releases the lock, and the
    helper ends the process when it is done; if the main thread reaches interpreter
    exit first, the exit hook flushes and sends the signal. A second SIGTERM
    meanwhile ends the process at once. When the watcher started the shutdown first
    (the main thread was stuck in a wait, or the watcher was quicker), the handler
    waits for that one the same moment, or ends the process if it is already over.
    """
    global _sigterm_wanted
    _sigterm_wanted = False  # the main thread's next run must not set it again
    signal.signal(signum, signal.SIG_DFL)
    try:
        _start_dying(signum)
        if _shut_down:
            os.kill(os.getpid(), signum)  # the watcher's signal brought us here: die of it
        elif _helper is not None:
            _helper.join(SIGNAL_WAIT)  # the helper ends the process when it is done
    except Exception:  # no thread to be had: die of the signal, as without exectrack
        os.kill(os.getpid(), signum)


def _start_dying(signum: int) -> None:
    """Start ``_helper``, the thread that shuts down and then ends the process: the
    first caller (the handler or the watcher) does, the second finds it started."""
    global _dying, _helper
    with _dying_lock:
        if _dying:
            return
        _dying = signum
        _helper = threading.Thread(
            target=_shutdown_then_die, args=(signum,), name="exectrack-sigterm", daemon=True
        )
        _helper.start()  # under the lock: whoever comes second may join it at once


def _shutdown_then_die(signum: int) -> None:
    """The shutdown runs in a thread of its own, waited for past its budget only: a
    shutdown stuck for good (a lock a forked child inherited held, say) must not keep
    a process alive that was told to end; its Pool would wait for it forever."""
    global _shut_down
    leave_signals_to_others()  # the signal sent again below must reach another thread
    work = threading.Thread(
        target=shutdown_all, args=(EXIT_TIMEOUT,), name="exectrack-shutdown", daemon=True
    )
    try:
        work.start()
        work.join(EXIT_TIMEOUT + STUCK_GRACE)
    finally:
        _shut_down = True
        os.kill(os.getpid(), signum)
        time.sleep(1)  # pragma: no cover - the signal ends the process first
        os._exit(128 + signum)  # pragma: no cover


def _in_multiprocessing_child() -> bool:
    process = sys.modules.get("multiprocessing.process")
    return process is not None and process.parent_process() is not None


def _watch_for_lost_signals() -> None:
    """Main thread of a multiprocessing child: own the signal wakeup descriptor (if
    it is free: an event loop's stays its own) and read it from a thread, so that a
    SIGTERM whose handler the main thread never gets to run still ends the process."""
    global _watch_fds
    if not hasattr(signal, "set_wakeup_fd") or not hasattr(signal, "pthread_sigmask"):
        return  # pragma: no cover - not POSIX
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):  # pragma: no cover - refused: keep the plain handler
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)  # someone else's: give it back
        os.close(read_fd)
        os.close(write_fd)
        return
    _watch_fds = (read_fd, write_fd)
    threading.Thread(
        target=quiet(lambda: _watch(read_fd)), name="exectrack-signals", daemon=True
    ).start()


def _watch(read_fd: int) -> None:
    """Read the signals the C handler noted; a SIGTERM meant for exectrack's own
    handler starts the shutdown here, whether or not the main thread runs it."""
    while True:
        try:
            noted = os.read(read_fd, 512)
        except InterruptedError:  # pragma: no cover - its signals are blocked
            continue
        except OSError:
            return  # closed after a fork
        if not noted:
            return  # pragma: no cover - the write end is never closed in this process
        if _SIGTERM in noted and _raw_getsignal(_SIGTERM) is _on_sigterm:
            try:
                _start_dying(_SIGTERM)
            except Exception:  # no thread to be had: the handler, once woken, ends it
                os.kill(os.getpid(), _SIGTERM)


class _Chained:
    """The application's SIGTERM handler, with the process marked terminating first:
    the application shuts down its own way (a server drains its requests), and every
    run that ends meanwhile is committed before the process can die."""

    __slots__ = ("previous",)

    def __init__(self, previous: Callable[[int, FrameType | None], Any]) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        global terminating
        terminating = True
        return self.previous(signum, frame)

    def __repr__(self) -> str:
        return f"<exectrack SIGTERM hook chained to {self.previous!r}>"


def _forget_parent_runs() -> None:
    """A forked child does not own the runs its parent had open: its exit (or SIGTERM)
    must not finish them, and its heartbeat must not count them."""
    global terminating, _main_ident, _dying, _helper, _shut_down, _watch_fds, _dying_lock
    terminating = False
    _dying = 0
    _helper = None
    _shut_down = False
    _dying_lock = threading.Lock()  # the parent's may have been held at the fork
    _main_ident = threading.main_thread().ident
    if _watch_fds is not None:
        # The parent's watcher would read this child's signals: the child sets up
        # its own at its first run.
        fds, _watch_fds = _watch_fds, None
        with contextlib.suppress(ValueError):  # forked from a thread Python did not start
            signal.set_wakeup_fd(-1)
        for fd in fds:
            os.close(fd)
    for tracker in list(_live):
        tracker._open_runs.clear()


os.register_at_fork(after_in_child=_forget_parent_runs)

"""The module-level default tracker behind ``exectrack.with_run(...)`` and friends.

It is created on first use (never at import), from the environment. A tracker that
cannot be built (a bad ``EXECTRACK_DATABASE_URL``, say) makes tracked code run
untracked, with one logged warning; strict mode raises instead.
"""

from __future__ import annotations

import os
import threading

from exectrack._config import Settings, parse_bool
from exectrack._log import get_logger
from exectrack._tracker import ExecutionTracker
from exectrack.errors import ExectrackError

__all__ = ["default_tracker_or_none", "get_tracker", "set_tracker"]

log = get_logger("exectrack")

_lock = threading.Lock()
_tracker: ExecutionTracker | None = None
_broken: ExectrackError | None = None


def get_tracker() -> ExecutionTracker:
    """The default tracker, created from the environment on first use."""
    global _tracker, _broken
    tracker = _tracker
    if tracker is not None:
        return tracker
    with _lock:
        if _tracker is None:
            try:
                _tracker = ExecutionTracker(settings=Settings.from_env())
                _broken = None
            except ExectrackError as exc:
                _broken = exc
                raise
        return _tracker


def default_tracker_or_none() -> ExecutionTracker | None:
    """The default tracker, or None (logged once) when it cannot be built."""
    tracker = _tracker
    if tracker is not None:
        return tracker
    if _broken is not None:
        return None
    try:
        return get_tracker()
    except ExectrackError as exc:
        if _strict():
            raise
        log.warning("exectrack: tracking is off: %s", exc)
        return None


def _strict() -> bool:
    try:
        return parse_bool("EXECTRACK_STRICT", os.environ.get("EXECTRACK_STRICT"), False)
    except ExectrackError:
        return False


def set_tracker(tracker: ExecutionTracker | None) -> ExecutionTracker | None:
    """Replace the default tracker (None: build it again from the environment on next
    use). Returns the previous one, which the caller may close."""
    global _tracker, _broken
    with _lock:
        previous, _tracker, _broken = _tracker, tracker, None
    return previous


def _after_fork_in_child() -> None:
    """Another thread may have been building the default tracker (holding the lock)
    at fork(): a lock held at fork stays held forever in the child."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

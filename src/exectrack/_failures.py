"""Tracking failures: logged once per cause, counted, raised only in strict mode."""

from __future__ import annotations

import threading

from exectrack._log import get_logger
from exectrack.errors import ExectrackError, StoreError

__all__ = ["Failures"]

log = get_logger("exectrack")

MAX_CAUSES = 256  # distinct causes kept; later new ones are counted in the total only


class Failures:
    """One tracker's failure accounting. In strict mode the first failure seen in a
    background thread is kept and raised by the next caller that checks."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self._lock = threading.Lock()
        self.by_cause: dict[str, int] = {}
        self.total = 0
        self.deferred: BaseException | None = None
        self._noted: set[str] = set()

    def reinit(self) -> None:
        """A new lock (after fork: another thread may have held the old one)."""
        self._lock = threading.Lock()

    def report(self, cause: str, exc: BaseException) -> None:
        """Count ``exc``; log it the first time its cause is seen."""
        key = f"{cause}: {type(exc).__name__}: {_first_line(exc)}"
        with self._lock:
            self.total += 1
            seen = key in self.by_cause
            if seen or len(self.by_cause) < MAX_CAUSES:
                self.by_cause[key] = self.by_cause.get(key, 0) + 1
            if self.strict and self.deferred is None:
                self.deferred = exc
        if not seen:
            log.warning(
                "exectrack: %s; the host call goes on, tracking data may be missing "
                "(later failures of this kind are only counted)",
                key,
            )

    def note(self, cause: str, exc: BaseException) -> None:
        """Log ``exc`` the first time its cause is seen; no count, no strict raise
        (a store that went away and may come back before anything is lost)."""
        key = f"{cause}: {type(exc).__name__}: {_first_line(exc)}"
        with self._lock:
            if key in self._noted:
                return
            self._noted.add(key)
        log.warning("exectrack: %s; writes are kept queued until it answers", key)

    def fail(self, cause: str, exc: BaseException) -> None:
        """A failure in the caller's thread: count it, and raise it in strict mode."""
        self.report(cause, exc)
        if self.strict:
            self.deferred = None
            raise _as_exectrack(exc, f"tracking failed ({cause})") from exc

    def raise_deferred(self) -> None:
        """In strict mode, raise the failure a background thread kept, once."""
        if self.strict and self.deferred is not None:
            exc, self.deferred = self.deferred, None
            raise _as_exectrack(exc, "tracking failed in the background") from exc

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            return self.total, dict(self.by_cause)


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ raises
        return ""
    return text.splitlines()[0][:160] if text.strip() else ""


def _as_exectrack(exc: BaseException, what: str) -> ExectrackError:
    return exc if isinstance(exc, ExectrackError) else StoreError(f"{what}: {exc}")

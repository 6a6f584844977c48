"""Tracking failures: logged once per cause, counted, raised only in strict mode."""

from __future__ import annotations

import logging
import threading

from exectrack.errors import ExectrackError, StoreError

__all__ = ["Failures"]

log = logging.getLogger("exectrack")

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

    def report(self, cause: str, exc: BaseException) -> None:
        """Count ``exc``; log it the first time its cause is seen."""
        text = str(exc)
        key = f"{cause}: {type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}"
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


def _as_exectrack(exc: BaseException, what: str) -> ExectrackError:
    return exc if isinstance(exc, ExectrackError) else StoreError(f"{what}: {exc}")

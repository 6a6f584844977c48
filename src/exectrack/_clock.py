"""Time is a dependency: the tracker reads wall time and a monotonic clock from here."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Protocol

from exectrack._model import datetime_to_us, now_us, us_to_datetime

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def now_us(self) -> int:
        """Wall time, microseconds since the Unix epoch (UTC)."""
        ...

    def monotonic_ns(self) -> int:
        """A monotonic clock for durations, nanoseconds."""
        ...


class SystemClock:
    now_us = staticmethod(now_us)
    monotonic_ns = staticmethod(time.perf_counter_ns)


class FakeClock:
    """A clock that moves only when told to; wall and monotonic time move together."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._us = datetime_to_us(start)
        self._mono_ns = 0

    def now_us(self) -> int:
        return self._us

    def monotonic_ns(self) -> int:
        return self._mono_ns

    def now(self) -> datetime:
        return us_to_datetime(self._us)

    def advance(self, seconds: float | timedelta) -> None:
        delta = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        with self._lock:
            self._us += round(delta * 1_000_000)
            self._mono_ns += round(delta * 1_000_000_000)

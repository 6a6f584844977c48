"""Waiting on conditions (never on time) and reading a job's runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from exectrack import ExecutionTracker, Run

LIMIT = 20.0  # seconds before a wait gives up: a hang fails the test instead of CI


def wait_until(condition: Callable[[], object], what: str = "condition") -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


async def await_until(condition: Callable[[], object], what: str = "condition") -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def runs_of(tracker: ExecutionTracker, ref: str) -> list[Run]:
    """The runs of one job, oldest first."""
    return list(reversed(tracker.list_runs(source_ref=ref, limit=500).runs))


def finished(tracker: ExecutionTracker, ref: str, count: int = 1) -> Callable[[], bool]:
    def check() -> bool:
        return sum(1 for r in runs_of(tracker, ref) if r.is_terminal) >= count

    return check

"""Shared test setup: a clean environment, strict mode, fresh default tracker."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import exectrack
from exectrack import ExecutionTracker, FakeClock, _exit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts with no EXECTRACK_* variables but strict mode, and its own
    default database, so nothing leaks between tests or into the user's data dir."""
    for name in list(os.environ):
        if name.startswith("EXECTRACK_") and name not in (
            "EXECTRACK_TEST_POSTGRES_URL",
            "EXECTRACK_REQUIRE_POSTGRES",
            "EXECTRACK_REQUIRE_BROWSER",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EXECTRACK_STRICT", "1")
    # A test that sends SIGTERM to its own process (a server stopped by a real signal)
    # passes through exectrack's chained hook, which marks the process as ending: the
    # next test's cancelled runs would be recorded as shutdown.
    monkeypatch.setattr(_exit, "terminating", False)
    # The same signal sets sse-starlette's process-wide "server is exiting" flag, which
    # ends every later Server-Sent Events stream at once.
    sse = sys.modules.get("sse_starlette.sse")
    if sse is not None:
        monkeypatch.setattr(sse.AppStatus, "should_exit", False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    previous = exectrack.set_tracker(None)
    yield
    current = exectrack.set_tracker(previous)
    if current is not None and current is not previous:
        current.close()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def tracker(db_url: str) -> Iterator[ExecutionTracker]:
    """A strict tracker on a file SQLite store with the default (async) write path."""
    t = ExecutionTracker(db_url, strict=True)
    yield t
    t.close()


@pytest.fixture
def sync_tracker(db_url: str) -> Iterator[ExecutionTracker]:
    """The same, committing before start/finish return."""
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    yield t
    t.close()


CLOCK_START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-01-01T00:00:00Z; tests move it with ``advance``."""
    return FakeClock(CLOCK_START)


@pytest.fixture
def clocked(db_url: str, clock: FakeClock) -> Iterator[ExecutionTracker]:
    """A strict tracker committing before start/finish return, on ``clock``."""
    t = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock)
    yield t
    t.close()


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.%@+=-]+")


def pytest_make_parametrize_id(config: pytest.Config, val: Any, argname: str) -> str | None:
    """A text parameter that pytest would show escaped (a backslash, a control or
    non-ASCII character) gets a plain id instead: mutmut hands test ids back to
    pytest, which cannot find such ids (scripts/mutate.py refuses them)."""
    if isinstance(val, str) and not (val.isascii() and val.isprintable() and "\\" not in val):
        return _ID_UNSAFE.sub("_", val)[:40] or "_"
    return None


@pytest.fixture
def non_utc_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs at UTC-03:30 (or -02:30 in summer), whatever the machine's zone."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    assert time.timezone == 12_600, "no zone data for America/St_Johns on this machine"
    yield
    monkeypatch.undo()
    time.tzset()

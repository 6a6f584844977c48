"""Job functions the scheduling tests give APScheduler and task files by reference
(``scheduling.jobs:name``): a persistent job store and a task file need importable
callables. State lives in module globals that each test resets."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import exectrack

calls: list[str] = []
release = threading.Event()  # set by a test to let a blocked thread job end
failures_left = 0


def reset() -> None:
    global failures_left
    calls.clear()
    release.clear()
    failures_left = 0


def ok() -> str:
    calls.append("ok")
    return "done"


def fails() -> None:
    calls.append("fails")
    raise ConnectionError("the inbox server is down")


def flaky() -> str:
    """Fails while ``failures_left`` > 0, then returns."""
    global failures_left
    calls.append("flaky")
    if failures_left > 0:
        failures_left -= 1
        raise ConnectionError("try again")
    return "recovered"


def blocks() -> str:
    """A thread job that runs until the test releases it (a job that never returns)."""
    calls.append("blocks")
    release.wait(30)
    return "released"


def hangs_until_told() -> None:
    """A thread job that runs until the bridge asks it to stop (timeout, shutdown)."""
    from exectrack.integrations.apscheduler import current_execution

    calls.append("hangs_until_told")
    ctx = current_execution()
    assert ctx is not None
    ctx.stopping.wait(30)


def raises_timeout() -> None:
    raise TimeoutError("the provider took too long")


def nested() -> None:
    """A job that calls tracked code: that run is a child of the heartbeat run."""
    with exectrack.with_run("skill", "summarise"):
        calls.append("nested")


async def async_ok() -> str:
    calls.append("async_ok")
    await asyncio.sleep(0)
    return "done"


async def async_fails() -> None:
    calls.append("async_fails")
    raise ConnectionError("the inbox server is down")


async def async_forever() -> None:
    """A coroutine job that never returns."""
    calls.append("async_forever")
    await asyncio.Event().wait()


def with_args(a: int, b: int = 0, **rest: Any) -> int:
    calls.append(f"with_args {a} {b} {sorted(rest)}")
    return a + b


not_callable = 42

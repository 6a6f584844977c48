"""Checked by mypy (``make typecheck``), not run: decorated callables keep their types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, assert_type

import exectrack

tracker = exectrack.ExecutionTracker("sqlite:///:memory:")


@tracker.with_run("skill")
async def fetch(url: str, *, retries: int = 2) -> bytes:
    return b""


@tracker.with_run("chat")
def stream(n: int) -> Iterator[str]:
    yield from ()


@tracker.with_run("chat")
async def astream(n: int) -> AsyncIterator[str]:
    yield ""


@exectrack.with_run("heartbeat")
def tick(now: float) -> int:
    return 0


pending = fetch("u", retries=1)
checked = assert_type(pending, Coroutine[Any, Any, bytes])
pending.close()
assert_type(stream(1), Iterator[str])
assert_type(astream(1), AsyncIterator[str])
assert_type(tick(1.0), int)

with tracker.with_run("chat") as run:
    assert_type(run, exectrack.RunHandle)
    assert_type(run.finish_success(), exectrack.FinishResult)

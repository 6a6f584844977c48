"""Every tracked stream records how many items it produced and its time to first item
(what LLM users look at first: time to first token)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, Run, RunStatus
from exectrack.cli import main
from exectrack.testing import FakeClock

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(params=["async", "sync"])
def t(request: pytest.FixtureRequest, db_url: str, clock: FakeClock) -> Iterator[ExecutionTracker]:
    tracker = ExecutionTracker(db_url, strict=True, durability=request.param, clock=clock)
    yield tracker
    tracker.close()


def run_of(t: ExecutionTracker, ref: str) -> Run:
    [run] = t.list_runs(source_ref=ref).runs
    return run


def test_generator_counts_items_and_time_to_first(t: ExecutionTracker, clock: FakeClock) -> None:
    """Three items, the first 250 ms after the body started: items=3,
    first_item_ms=250, whatever the consumer did between items."""

    @t.with_run("chat", "gen")
    def tokens() -> Iterator[str]:
        clock.advance(0.25)
        yield "a"
        clock.advance(1)
        yield "b"
        yield "c"

    for _ in tokens():
        clock.advance(5)  # the consumer's time is not the stream's first-item time
    run = run_of(t, "gen")
    assert (run.status, run.items, run.first_item_ms) == (RunStatus.SUCCESS, 3, 250.0)


def test_async_generator_and_a_returned_stream(t: ExecutionTracker, clock: FakeClock) -> None:
    """An async generator, and a plain function returning one (followed until it
    ends), count the same way."""

    async def produce(n: int) -> AsyncIterator[int]:
        clock.advance(0.5)
        for i in range(n):
            yield i

    @t.with_run("chat", "agen")
    async def agen() -> AsyncIterator[int]:
        async for i in produce(4):
            yield i

    @t.with_run("chat", "returned")
    def handler() -> AsyncIterator[int]:
        return produce(2)

    async def drain() -> None:
        assert [i async for i in agen()] == [0, 1, 2, 3]
        assert [i async for i in handler()] == [0, 1]

    asyncio.run(drain())
    assert (run_of(t, "agen").items, run_of(t, "agen").first_item_ms) == (4, 500.0)
    assert (run_of(t, "returned").items, run_of(t, "returned").first_item_ms) == (2, 500.0)


def test_empty_closed_early_and_plain_runs(t: ExecutionTracker) -> None:
    """An empty stream: 0 items, no first item. A stream closed after 2 of 5: 2 items,
    canceled. A plain call is not a stream: None."""

    @t.with_run("chat", "empty")
    def empty() -> Iterator[int]:
        yield from ()

    @t.with_run("chat", "closed")
    def five() -> Iterator[int]:
        yield from range(5)

    @t.with_run("skill", "plain")
    def plain() -> int:
        return 1

    assert list(empty()) == []
    stream = five()
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    assert plain() == 1
    assert (run_of(t, "empty").items, run_of(t, "empty").first_item_ms) == (0, None)
    closed = run_of(t, "closed")
    assert (closed.status, closed.error_code, closed.items) == (
        RunStatus.CANCELED,
        "consumer_closed",
        2,
    )
    assert (run_of(t, "plain").items, run_of(t, "plain").first_item_ms) == (None, None)


def test_add_items_counts_what_an_entry_point_sends(t: ExecutionTracker, clock: FakeClock) -> None:
    """A handle counts items by hand (chunks an HTTP response sent); the first call
    fixes the time to first item; counts after the finish change nothing."""
    h = t.start("chat", "manual")
    clock.advance(0.1)
    h.add_items()
    clock.advance(0.1)
    h.add_items(4)
    h.add_items(0)
    assert h.items == 5
    h.finish_success()
    h.add_items(10)
    run = run_of(t, "manual")
    assert (run.items, run.first_item_ms) == (5, 100.0)


def test_runs_get_and_report_show_the_stream_facts(
    db_url: str, clock: FakeClock, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`runs get` lists items and first_item_ms; `report` gives p50/p95 time to
    first item per source."""
    t = ExecutionTracker(db_url, strict=True, clock=clock)

    @t.with_run("chat", "tokens")
    def tokens(delay: float) -> Iterator[int]:
        clock.advance(delay)
        yield 1

    for i in range(1, 21):
        assert list(tokens(i / 1000)) == [1]
    t.flush()
    run = t.list_runs(limit=1).runs[0]
    t.close()
    assert main(["--database", db_url, "runs", "get", run.id]) == 0
    listing = capsys.readouterr().out
    assert "items:" in listing and "first_item_ms: 20.0" in listing
    assert main(["--database", db_url, "report", "--json"]) == 0
    [chat] = json.loads(capsys.readouterr().out)["sources"]
    assert (chat["first_item_p50_ms"], chat["first_item_p95_ms"]) == (10.0, 19.0)

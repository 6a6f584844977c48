"""A cancellation whose cause an entry point learnt (a client that went away, a
scheduler skipping a run) is recorded with that cause, not a bare ``cancelled``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

import exectrack
from exectrack import ExecutionTracker, RunStatus


def outcome(t: ExecutionTracker) -> tuple[RunStatus, str | None, str | None]:
    [run] = t.list_runs().runs
    return run.status, run.error_code, run.error_message


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("client_disconnected", "the client disconnected"),
        ("shutdown", "the process shut down before the run finished"),
        ("skipped_overlap", "skipped: the previous run of this task was still running"),
        ("missed_schedule", "the scheduler missed this run"),
        ("Quota Pause", "the run was cancelled: quota_pause"),
        (None, "the run was cancelled"),
    ],
)
def test_a_cause_set_after_the_task_started_reaches_its_runs(
    tracker: ExecutionTracker, code: str | None, message: str
) -> None:
    """The reason is set once the cause is known (here after the task started), and
    a run in a task started inside the block records it, with its fixed text."""

    @tracker.with_run("chat")
    async def stream() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        with exectrack.cancel_reason() as reason:
            task = asyncio.create_task(stream())
            await asyncio.sleep(0.01)
            reason.code = code
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    expected_code = "cancelled" if code is None else code.lower().replace(" ", "_")
    assert outcome(tracker) == (RunStatus.CANCELED, expected_code, message)


def test_the_reason_stays_in_its_block(tracker: ExecutionTracker) -> None:
    """A run cancelled outside the block (or in another request's block) is a plain
    cancellation; errors inside the block are not affected at all."""

    @tracker.with_run("skill", "inside")
    async def fails() -> None:
        raise ValueError("bad")

    @tracker.with_run("skill", "outside")
    async def sleeps() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        with exectrack.cancel_reason() as reason:
            reason.code = "client_disconnected"
            with pytest.raises(ValueError, match="bad"):
                await fails()
        task = asyncio.create_task(sleeps())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    runs = {r.source_ref: (r.status, r.error_code) for r in tracker.list_runs().runs}
    assert runs == {
        "inside": (RunStatus.ERROR, "invalid_input"),
        "outside": (RunStatus.CANCELED, "cancelled"),
    }


def test_trio_cancel_scope_with_a_reason(tracker: ExecutionTracker) -> None:
    """The same under anyio's trio backend: a cancel scope cancelled for a known
    cause records that cause."""

    @tracker.with_run("chat", "trio")
    async def stream() -> None:
        await anyio.sleep(10)

    async def main() -> None:
        with exectrack.cancel_reason() as reason, anyio.CancelScope() as scope:
            reason.code = "client_disconnected"
            scope.cancel()
            await stream()

    anyio.run(main, backend="trio")
    assert outcome(tracker)[:2] == (RunStatus.CANCELED, "client_disconnected")


def test_resolve_is_asked_when_no_code_is_set(tracker: ExecutionTracker) -> None:
    """An entry point that can only tell the cause when asked passes ``resolve``; it
    is asked at the moment the run ends, and a resolver that raises means "unknown"."""
    answers: list[str | None] = []

    def resolve() -> str | None:
        if not answers:
            raise RuntimeError("not ready")
        return answers[0]

    @tracker.with_run("chat")
    async def stream() -> None:
        await asyncio.sleep(10)

    async def cancelled_once() -> None:
        with exectrack.cancel_reason(resolve=resolve):
            task = asyncio.create_task(stream())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(cancelled_once())
    answers.append("shutdown")
    asyncio.run(cancelled_once())
    runs = tracker.list_runs().runs
    assert sorted(r.error_code or "" for r in runs) == ["cancelled", "shutdown"]


def test_a_stream_closed_early_records_the_known_cause(tracker: ExecutionTracker) -> None:
    """A stream its consumer closes early is ``consumer_closed``, unless the block
    knows why (the client went away): then that cause, with its fixed text."""

    @tracker.with_run("chat")
    async def tokens() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    async def main() -> None:
        for code in (None, "client_disconnected"):
            with exectrack.cancel_reason() as reason:
                reason.code = code
                it = tokens()
                assert await it.__anext__() == 0
                await it.aclose()

    asyncio.run(main())
    found = {(r.error_code, r.error_message, r.items) for r in tracker.list_runs().runs}
    assert found == {
        ("consumer_closed", "the consumer closed the stream early", 1),
        ("client_disconnected", "the client disconnected", 1),
    }


def test_end_open_streams_ends_only_dropped_streams(tracker: ExecutionTracker) -> None:
    """A framework that drops a stream without closing it (it stays suspended at a
    yield) leaves its run open; ``end_open_streams`` ends it with the cause and the
    items so far, and leaves runs that are not streams, or already ended, alone."""

    @tracker.with_run("chat", "dropped")
    async def tokens() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    @tracker.with_run("chat", "done")
    async def short() -> AsyncIterator[int]:
        yield 1

    async def main() -> None:
        with exectrack.cancel_reason() as reason:
            dropped = tokens()
            assert [await dropped.__anext__() for _ in range(3)] == [0, 1, 2]
            assert [i async for i in short()] == [1]
            plain = tracker.start("skill", "still_running")
            assert {h.source_ref for h in reason.open_runs()} == {"dropped", "still_running"}
            reason.code = "client_disconnected"
            assert reason.end_open_streams() == 1
            assert [h.source_ref for h in reason.open_runs()] == ["still_running"]
            plain.finish_success()
            assert reason.open_runs() == []
            await dropped.aclose()  # a later close changes nothing

    asyncio.run(main())
    runs = {r.source_ref: (r.status, r.error_code, r.items) for r in tracker.list_runs().runs}
    assert runs == {
        "dropped": (RunStatus.CANCELED, "client_disconnected", 3),
        "done": (RunStatus.SUCCESS, None, 1),
        "still_running": (RunStatus.SUCCESS, None, None),
    }


def test_a_long_lived_block_keeps_only_its_open_runs(tracker: ExecutionTracker) -> None:
    """A block around a long loop (a scheduler) does not hold every run it ever saw:
    finished runs are dropped from its list as it grows."""
    with exectrack.cancel_reason() as reason:
        keep = tracker.start("heartbeat", "open")
        for _ in range(1000):
            tracker.start("heartbeat", "short").finish_success()
        assert len(reason._runs) < 200
        assert reason.open_runs() == [keep]
        keep.finish_success()


def test_a_block_without_streams_ends_none_and_reprs_unknown() -> None:
    """end_open_streams() of a block that opened no stream ends nothing (0); a block
    with no cause yet shows as unknown."""
    with exectrack.cancel_reason() as reason:
        assert reason.end_open_streams() == 0
        assert repr(reason) == "<CancelReason unknown>"
        assert reason.code is None

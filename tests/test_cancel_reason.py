"""A cancellation whose cause an entry point learnt (a client that went away, a
scheduler skipping a run) is recorded with that cause, not a bare ``cancelled``."""

from __future__ import annotations

import asyncio

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

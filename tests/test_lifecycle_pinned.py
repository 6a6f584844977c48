"""Every way a tracked call ends, with all the fields it stores: status, code,
retryable and message (through the public ``with_run``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator

import pytest
import trio

import exectrack
from exectrack import ClientDisconnected, ExecutionTracker, Run, RunStatus, success_flag


def only_run(t: ExecutionTracker) -> Run:
    [run] = t.list_runs().runs
    return run


ENDINGS = [
    # (raised, status, code, retryable, message)
    # a cancellation's message is a fixed text per cause, whatever the exception says
    (asyncio.CancelledError(), RunStatus.CANCELED, "cancelled", False, "the run was cancelled"),
    (
        asyncio.CancelledError("Cancelled by <Task pending at 0x7f00>"),
        RunStatus.CANCELED,
        "cancelled",
        False,
        "the run was cancelled",
    ),
    (
        concurrent.futures.CancelledError(),
        RunStatus.CANCELED,
        "cancelled",
        False,
        "the run was cancelled",
    ),
    (
        KeyboardInterrupt(),
        RunStatus.CANCELED,
        "interrupted",
        False,
        "interrupted by KeyboardInterrupt",
    ),
    (
        SystemExit(3),
        RunStatus.CANCELED,
        "interrupted",
        False,
        "the process is exiting (SystemExit with code 3)",
    ),
    (
        SystemExit("fatal"),
        RunStatus.CANCELED,
        "interrupted",
        False,
        "the process is exiting (SystemExit)",
    ),
    (
        ClientDisconnected("peer went away"),
        RunStatus.CANCELED,
        "client_disconnected",
        False,
        "the client disconnected",
    ),
    (TimeoutError("too slow"), RunStatus.TIMEOUT, "deadline_exceeded", True, "too slow"),
    (ConnectionError("down"), RunStatus.ERROR, "provider_unavailable", True, "down"),
    (ValueError(""), RunStatus.ERROR, "invalid_input", False, "ValueError"),
]


@pytest.mark.parametrize(("exc", "status", "code", "retryable", "message"), ENDINGS)
def test_sync_endings(
    sync_tracker: ExecutionTracker,
    exc: BaseException,
    status: RunStatus,
    code: str,
    retryable: bool,
    message: str,
) -> None:
    """A call that raises is stored with the status, code, retryable and message of
    the outcome table; cancellations and interrupts are never retryable."""

    @sync_tracker.with_run("skill")
    def call() -> None:
        raise exc

    with pytest.raises(type(exc)) as raised:
        call()
    assert raised.value is exc
    run = only_run(sync_tracker)
    assert (run.status, run.error_code, run.retryable, run.error_message) == (
        status,
        code,
        retryable,
        message,
    )
    assert run.finished_at is not None


@pytest.mark.parametrize(("exc", "status", "code", "retryable", "message"), ENDINGS)
def test_async_endings(
    sync_tracker: ExecutionTracker,
    exc: BaseException,
    status: RunStatus,
    code: str,
    retryable: bool,
    message: str,
) -> None:
    """The same table holds for a coroutine and for ``async with``."""

    @sync_tracker.with_run("skill", "decorated")
    async def call() -> None:
        await asyncio.sleep(0)
        raise exc

    async def block() -> None:
        async with sync_tracker.with_run("skill", "block"):
            await asyncio.sleep(0)
            raise exc

    for body in (call, block):
        with pytest.raises(type(exc)):
            asyncio.run(body())
    runs = sync_tracker.list_runs().runs
    assert len(runs) == 2
    for run in runs:
        assert (run.status, run.error_code, run.retryable, run.error_message) == (
            status,
            code,
            retryable,
            message,
        ), run.source_ref


@pytest.mark.parametrize("exc", [SystemExit(0), SystemExit(None)])
def test_clean_exit_is_success(sync_tracker: ExecutionTracker, exc: SystemExit) -> None:
    """SystemExit(0) and SystemExit(None) are a success with no error fields."""
    with pytest.raises(SystemExit):
        with sync_tracker.with_run("skill"):
            raise exc
    run = only_run(sync_tracker)
    assert (run.status, run.error_code, run.retryable, run.error_message) == (
        RunStatus.SUCCESS,
        None,
        None,
        None,
    )


def test_closed_stream_is_canceled_not_retryable(sync_tracker: ExecutionTracker) -> None:
    """A stream its consumer closes early ends canceled/consumer_closed, not retryable,
    with a fixed message."""

    @sync_tracker.with_run("chat")
    def tokens() -> Iterator[int]:
        yield from range(10)

    stream = tokens()
    assert next(stream) == 0
    stream.close()
    run = only_run(sync_tracker)
    assert (run.status, run.error_code, run.retryable, run.error_message) == (
        RunStatus.CANCELED,
        "consumer_closed",
        False,
        "the consumer closed the stream early",
    )


def test_result_classifier_error_keeps_its_fields(sync_tracker: ExecutionTracker) -> None:
    """A returned value the result classifier rejects is an error with its code and
    message; an accepted one is a success."""

    @sync_tracker.with_run("skill", "bad", classify_result=success_flag(code="skill_failed"))
    def bad() -> dict[str, object]:
        return {"success": False, "error": "quota used up"}

    @sync_tracker.with_run("skill", "good", classify_result=success_flag())
    def good() -> dict[str, object]:
        return {"success": True}

    assert bad() == {"success": False, "error": "quota used up"}
    assert good() == {"success": True}
    runs = {r.source_ref: r for r in sync_tracker.list_runs().runs}
    assert (runs["bad"].status, runs["bad"].error_code, runs["bad"].error_message) == (
        RunStatus.ERROR,
        "skill_failed",
        "quota used up",
    )
    assert runs["bad"].retryable is False
    assert (runs["good"].status, runs["good"].error_code) == (RunStatus.SUCCESS, None)


CAUSES = [
    # (CancelReason.code, stored code, stored message): every cause is not retryable
    ("client_disconnected", "client_disconnected", "the client disconnected"),
    ("shutdown", "shutdown", "the process shut down before the run finished"),
    ("Quota Pause", "quota_pause", "the run was cancelled: quota_pause"),
    # a cause with nothing storable left after normalising is a plain cancellation
    ("!!!", "cancelled", "the run was cancelled: cancelled"),
    (None, "cancelled", "the run was cancelled"),
]


@pytest.mark.parametrize(("cause", "code", "message"), CAUSES)
def test_a_known_cause_stores_every_field(
    sync_tracker: ExecutionTracker, cause: str | None, code: str, message: str
) -> None:
    """A run cancelled inside a ``cancel_reason`` block stores the block's cause as
    its code, a fixed text per cause, and never retryable (a custom cause too)."""
    with exectrack.cancel_reason() as reason:
        reason.code = cause
        with pytest.raises(asyncio.CancelledError):
            with sync_tracker.with_run("chat"):
                raise asyncio.CancelledError
    run = only_run(sync_tracker)
    assert (run.status, run.error_code, run.retryable, run.error_message) == (
        RunStatus.CANCELED,
        code,
        False,
        message,
    )


def test_end_open_streams_uses_its_own_blocks_cause(sync_tracker: ExecutionTracker) -> None:
    """``end_open_streams`` ends the streams with the cause of the block they were
    opened in, also when it is called after that block (or from another block)."""

    @sync_tracker.with_run("chat")
    def tokens() -> Iterator[int]:
        yield from range(10)

    with exectrack.cancel_reason() as reason:
        reason.code = "shutdown"
        stream = tokens()
        assert next(stream) == 0
    with exectrack.cancel_reason() as other:
        other.code = "client_disconnected"
        assert reason.end_open_streams() == 1
    run = only_run(sync_tracker)
    assert (run.status, run.error_code, run.error_message) == (
        RunStatus.CANCELED,
        "shutdown",
        "the process shut down before the run finished",
    )
    stream.close()


def _exception_class(name: str, module: str, base: type[BaseException]) -> type[BaseException]:
    return type(name, (base,), {"__module__": module})


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        # trio's Cancelled, wherever in trio it is defined: recognised by name + package
        (_exception_class("Cancelled", "trio", BaseException)(), RunStatus.CANCELED),
        (_exception_class("Cancelled", "trio._core._run", BaseException)(), RunStatus.CANCELED),
        # a Cancelled of another library, or another exception of trio's: not a cancellation
        (_exception_class("Cancelled", "jobs.queue", Exception)(), RunStatus.ERROR),
        (_exception_class("Cancelled", "triode", Exception)(), RunStatus.ERROR),
        (trio.TooSlowError(), RunStatus.ERROR),
    ],
    ids=["trio", "trio-submodule", "other-library", "trio-like-name", "trio-other-error"],
)
def test_trio_cancellation_is_recognised_by_name_and_package(
    sync_tracker: ExecutionTracker, exc: BaseException, status: RunStatus
) -> None:
    """Only an exception named ``Cancelled`` from the ``trio`` package (any of its
    modules) is a cancellation; a same-named class elsewhere or trio's other
    exceptions are errors."""
    with pytest.raises(type(exc)):
        with sync_tracker.with_run("skill"):
            raise exc
    run = only_run(sync_tracker)
    assert run.status == status
    assert (run.error_code == "cancelled") == (status == RunStatus.CANCELED)


class _BrokenResponse(Exception):
    @property
    def response(self) -> object:
        raise RuntimeError("response is broken")


def test_a_tracked_call_counts_what_classifying_its_exception_did_wrong(db_url: str) -> None:
    """An exception that breaks the classifier (an attribute that raises) still ends
    its run as an error, and the problem is counted under its cause."""
    t = ExecutionTracker(db_url, strict=False, durability="sync", lease=None)
    try:
        with pytest.raises(_BrokenResponse):
            with t.with_run("skill"):
                raise _BrokenResponse("it failed")
        run = only_run(t)
        assert (run.status, run.error_code) == (RunStatus.ERROR, "internal_error")
        assert t.stats().failures_by_cause == {
            "classifier: _BrokenResponse.response raised: RuntimeError: response is broken": 1
        }
    finally:
        t.close()

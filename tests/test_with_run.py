"""with_run for every callable kind and every row of the outcome table (DESIGN.md s3)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from exectrack import (
    ClientDisconnected,
    ExecutionTracker,
    Run,
    RunStatus,
    success_flag,
)


def only_run(t: ExecutionTracker, **filters: Any) -> Run:
    page = t.list_runs(**filters)
    assert len(page.runs) == 1, page.runs
    return page.runs[0]


@pytest.fixture(params=["async", "sync"])
def t(request: pytest.FixtureRequest, db_url: str) -> Iterator[ExecutionTracker]:
    """The default group-commit path and the synchronous-durable path."""
    tracker = ExecutionTracker(db_url, strict=True, durability=request.param)
    yield tracker
    tracker.close()


# -- plain functions --------------------------------------------------------------------


def test_plain_return_is_success_and_result_unchanged(t: ExecutionTracker) -> None:
    """A plain function's return value passes through and the run is a success."""

    @t.with_run("skill")
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    run = only_run(t)
    assert run.status is RunStatus.SUCCESS
    assert run.source == "skill"
    assert run.source_ref.endswith("double")  # type: ignore[union-attr]
    assert run.finished_at is not None and run.duration_ms is not None
    assert run.error_code is None and run.retryable is None


def test_exception_propagates_unchanged_and_is_classified(t: ExecutionTracker) -> None:
    """The very same exception object, traceback and (absent) chaining reach the caller."""
    boom = ValueError("bad query")

    @t.with_run("skill", "search")
    def search() -> None:
        raise boom

    with pytest.raises(ValueError, match="bad query") as info:
        search()
    assert info.value is boom
    assert boom.__cause__ is None and boom.__context__ is None
    frames = [f.co_name for f in _frames(boom.__traceback__)]
    assert frames[-1] == "search"
    run = only_run(t)
    assert (run.status, run.error_code, run.error_message, run.retryable) == (
        RunStatus.ERROR,
        "invalid_input",
        "bad query",
        False,
    )


def _frames(tb: Any) -> Iterator[Any]:
    while tb is not None:
        yield tb.tb_frame.f_code
        tb = tb.tb_next


def test_timeout_error_is_timeout(t: ExecutionTracker) -> None:
    """A TimeoutError raised inside the run makes that run ``timeout``."""

    @t.with_run("skill")
    def slow() -> None:
        raise TimeoutError("upstream took too long")

    with pytest.raises(TimeoutError):
        slow()
    run = only_run(t)
    assert (run.status, run.error_code, run.retryable) == (
        RunStatus.TIMEOUT,
        "deadline_exceeded",
        True,
    )


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (KeyboardInterrupt(), RunStatus.CANCELED, "interrupted"),
        (SystemExit(2), RunStatus.CANCELED, "interrupted"),
        (SystemExit("fatal"), RunStatus.CANCELED, "interrupted"),
        (SystemExit(0), RunStatus.SUCCESS, None),
        (SystemExit(None), RunStatus.SUCCESS, None),
        (concurrent.futures.CancelledError(), RunStatus.CANCELED, "cancelled"),
        (asyncio.CancelledError(), RunStatus.CANCELED, "cancelled"),
        (ClientDisconnected("peer went away"), RunStatus.CANCELED, "client_disconnected"),
        (GeneratorExit(), RunStatus.CANCELED, "consumer_closed"),
    ],
)
def test_base_exceptions_map_to_canceled_or_success(
    t: ExecutionTracker, exc: BaseException, status: RunStatus, code: str | None
) -> None:
    """Interrupts, exits, cancellation and disconnects follow the outcome table."""

    @t.with_run("skill")
    def stop() -> None:
        raise exc

    with pytest.raises(type(exc)) as info:
        stop()
    assert info.value is exc
    run = only_run(t)
    assert (run.status, run.error_code) == (status, code)


def test_framework_disconnect_recognised_by_name(t: ExecutionTracker) -> None:
    """A web framework's own ClientDisconnect exception counts as a client disconnect."""

    class ClientDisconnect(Exception):
        pass

    @t.with_run("chat")
    def handler() -> None:
        raise ClientDisconnect()

    with pytest.raises(ClientDisconnect):
        handler()
    run = only_run(t)
    assert (run.status, run.error_code, run.error_message) == (
        RunStatus.CANCELED,
        "client_disconnected",
        "the client disconnected",
    )


def test_empty_message_recorded_as_type_name(t: ExecutionTracker) -> None:
    """An exception without a message is recorded with its type name."""

    @t.with_run("skill")
    def fail() -> None:
        raise RuntimeError()

    with pytest.raises(RuntimeError):
        fail()
    run = only_run(t)
    assert (run.error_code, run.error_message) == ("internal_error", "RuntimeError")


def test_result_classifier_turns_value_into_error(t: ExecutionTracker) -> None:
    """A skill that returns success=False is recorded as an error, value unchanged."""

    @t.with_run("skill", classify_result=success_flag(code="skill_failed"))
    def skill(ok: bool) -> dict[str, Any]:
        return {"success": ok, "error": "quota exhausted"}

    assert skill(False) == {"success": False, "error": "quota exhausted"}
    assert skill(True)["success"] is True
    runs = t.list_runs().runs
    assert [(r.status, r.error_code, r.error_message) for r in runs] == [
        (RunStatus.SUCCESS, None, None),
        (RunStatus.ERROR, "skill_failed", "quota exhausted"),
    ]


def test_broken_result_classifier_does_not_break_host(db_url: str) -> None:
    """Outside strict mode a classifier that raises is logged; the run stays success."""
    t = ExecutionTracker(db_url, strict=False)

    def broken(_value: object) -> None:
        raise KeyError("oops")

    @t.with_run("skill", classify_result=broken)
    def skill() -> int:
        return 7

    assert skill() == 7
    assert only_run(t).status is RunStatus.SUCCESS
    assert t.stats().failures == 1
    t.close()


# -- coroutines ---------------------------------------------------------------------------


def test_coroutine_function_stays_a_coroutine_function(t: ExecutionTracker) -> None:
    """Decorating keeps the callable's kind, name and docstring."""

    @t.with_run("skill")
    async def fetch() -> int:
        """Doc."""
        return 1

    @t.with_run("chat")
    def gen() -> Iterator[int]:
        yield 1

    @t.with_run("chat")
    async def agen() -> AsyncIterator[int]:
        yield 1

    assert inspect.iscoroutinefunction(fetch)
    assert inspect.isgeneratorfunction(gen)
    assert inspect.isasyncgenfunction(agen)
    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Doc."
    assert asyncio.run(fetch()) == 1


def test_coroutine_outcomes(t: ExecutionTracker) -> None:
    """Returned, raised and cancelled coroutines end success, error and canceled."""

    @t.with_run("skill", "ok")
    async def ok() -> str:
        await asyncio.sleep(0)
        return "done"

    @t.with_run("skill", "fails")
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("provider down")

    @t.with_run("skill", "hangs")
    async def hangs(started: asyncio.Event) -> None:
        started.set()
        await asyncio.Event().wait()

    async def main() -> None:
        assert await ok() == "done"
        with pytest.raises(ConnectionError):
            await fails()
        started = asyncio.Event()
        task = asyncio.create_task(hangs(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    by_ref = {r.source_ref: r for r in t.list_runs().runs}
    assert by_ref["ok"].status is RunStatus.SUCCESS
    assert (by_ref["fails"].status, by_ref["fails"].error_code, by_ref["fails"].retryable) == (
        RunStatus.ERROR,
        "provider_unavailable",
        True,
    )
    assert (by_ref["hangs"].status, by_ref["hangs"].error_code) == (
        RunStatus.CANCELED,
        "cancelled",
    )


def test_outer_deadline_cancels_inner_run_and_inner_timeout_is_timeout(
    t: ExecutionTracker,
) -> None:
    """wait_for around a tracked call cancels it; a timeout raised inside is ``timeout``."""

    @t.with_run("skill", "outer-deadline")
    async def slow() -> None:
        await asyncio.sleep(10)

    @t.with_run("skill", "own-deadline")
    async def own_deadline() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(10)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow(), timeout=0.01)
        with pytest.raises(TimeoutError):
            await own_deadline()

    asyncio.run(main())
    by_ref = {r.source_ref: r for r in t.list_runs().runs}
    assert (by_ref["outer-deadline"].status, by_ref["outer-deadline"].error_code) == (
        RunStatus.CANCELED,
        "cancelled",
    )
    assert (by_ref["own-deadline"].status, by_ref["own-deadline"].error_code) == (
        RunStatus.TIMEOUT,
        "deadline_exceeded",
    )


# -- generators ---------------------------------------------------------------------------


def test_generator_run_starts_at_first_next_and_ends_when_exhausted(
    t: ExecutionTracker,
) -> None:
    """No run exists until the body first runs; exhausting the stream is success."""

    @t.with_run("chat")
    def tokens(n: int) -> Iterator[str]:
        for i in range(n):
            yield f"t{i}"
        return

    stream = tokens(3)
    assert t.list_runs().runs == []
    assert next(stream) == "t0"
    assert only_run(t).status is RunStatus.RUNNING
    assert list(stream) == ["t1", "t2"]
    assert only_run(t).status is RunStatus.SUCCESS


def test_generator_never_started_leaves_no_run(t: ExecutionTracker) -> None:
    """A stream created and dropped without iterating records nothing."""

    @t.with_run("chat")
    def tokens() -> Iterator[int]:
        yield 1

    stream = tokens()
    del stream
    gc.collect()
    assert t.list_runs().runs == []


def test_empty_generator_is_success(t: ExecutionTracker) -> None:
    """An empty stream is a success."""

    @t.with_run("chat")
    def nothing() -> Iterator[int]:
        yield from ()

    assert list(nothing()) == []
    assert only_run(t).status is RunStatus.SUCCESS


def test_generator_closed_early_is_canceled_consumer_closed(t: ExecutionTracker) -> None:
    """A consumer that stops reading ends the run canceled/consumer_closed, and the
    body's own cleanup runs."""
    cleaned: list[bool] = []

    @t.with_run("chat")
    def tokens() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            cleaned.append(True)

    stream = tokens()
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    assert cleaned == [True]
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "consumer_closed")


def test_generator_dropped_mid_stream_is_consumer_closed(t: ExecutionTracker) -> None:
    """Breaking out of a for-loop and dropping the stream closes it."""

    @t.with_run("chat")
    def tokens() -> Iterator[int]:
        yield from range(100)

    for item in tokens():
        if item == 3:
            break
    gc.collect()
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "consumer_closed")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_generator_ignoring_generator_exit_still_ends_once(t: ExecutionTracker) -> None:
    """A body that swallows GeneratorExit raises RuntimeError on close (as Python
    does), and its run still ends exactly once as canceled/consumer_closed."""

    @t.with_run("chat")
    def stubborn() -> Iterator[int]:
        while True:
            try:  # noqa: SIM105 - swallowing GeneratorExit by hand is the point
                yield 1
            except GeneratorExit:
                pass

    stream = stubborn()
    next(stream)
    with pytest.raises(RuntimeError, match="ignored GeneratorExit"):
        stream.close()
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "consumer_closed")
    del stream
    gc.collect()
    assert only_run(t).status is RunStatus.CANCELED


def test_generator_error_mid_stream(t: ExecutionTracker) -> None:
    """An exception inside the stream propagates unchanged and ends the run error."""
    boom = PermissionError("no access")

    @t.with_run("chat")
    def tokens() -> Iterator[int]:
        yield 1
        raise boom

    stream = tokens()
    next(stream)
    with pytest.raises(PermissionError) as info:
        next(stream)
    assert info.value is boom
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.ERROR, "permission_denied")


def test_generator_send_throw_and_return_value_are_forwarded(t: ExecutionTracker) -> None:
    """send() values reach the body, throw() is delivered inside it, and the return
    value arrives through ``yield from``."""

    @t.with_run("chat")
    def echo() -> Iterator[Any]:
        received = yield "ready"
        while received != "stop":
            try:
                received = yield f"echo:{received}"
            except KeyError as exc:
                received = yield f"caught:{exc.args[0]}"
        return "finished"

    stream = echo()
    assert next(stream) == "ready"
    assert stream.send("a") == "echo:a"
    assert stream.throw(KeyError("k")) == "caught:k"
    assert stream.send("b") == "echo:b"
    with pytest.raises(StopIteration) as stop:
        stream.send("stop")
    assert stop.value.value == "finished"
    assert only_run(t).status is RunStatus.SUCCESS


def test_generator_throw_not_handled_ends_run(t: ExecutionTracker) -> None:
    """An exception thrown into the stream and not handled ends the run with it."""

    @t.with_run("chat")
    def tokens() -> Iterator[int]:
        yield 1
        yield 2

    stream = tokens()
    next(stream)
    err = TimeoutError("consumer gave up")
    with pytest.raises(TimeoutError) as info:
        stream.throw(err)
    assert info.value is err
    assert only_run(t).status is RunStatus.TIMEOUT


# -- async generators -----------------------------------------------------------------


def test_async_generator_outcomes(t: ExecutionTracker) -> None:
    """Exhausted: success; aclose() early: consumer_closed; raising: error."""

    @t.with_run("chat", "full")
    async def full() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    @t.with_run("chat", "closed")
    async def closed() -> AsyncIterator[int]:
        for i in range(100):
            yield i

    @t.with_run("chat", "raises")
    async def raises() -> AsyncIterator[int]:
        yield 1
        raise ValueError("bad chunk")

    async def main() -> None:
        assert [i async for i in full()] == [0, 1, 2]
        stream = closed()
        assert await stream.__anext__() == 0
        await stream.aclose()
        with pytest.raises(ValueError, match="bad chunk"):
            async for _ in raises():
                pass

    asyncio.run(main())
    by_ref = {r.source_ref: r for r in t.list_runs().runs}
    assert by_ref["full"].status is RunStatus.SUCCESS
    assert (by_ref["closed"].status, by_ref["closed"].error_code) == (
        RunStatus.CANCELED,
        "consumer_closed",
    )
    assert (by_ref["raises"].status, by_ref["raises"].error_code) == (
        RunStatus.ERROR,
        "invalid_input",
    )


def test_async_generator_consumer_task_cancelled(t: ExecutionTracker) -> None:
    """Cancelling the task that consumes a tracked async stream ends it canceled."""
    reached = asyncio.Event

    @t.with_run("chat")
    async def tokens(started: asyncio.Event) -> AsyncIterator[int]:
        yield 0
        started.set()
        await asyncio.sleep(10)
        yield 1

    async def consume(started: asyncio.Event) -> None:
        async for _ in tokens(started):
            pass

    async def main() -> None:
        started = reached()
        task = asyncio.create_task(consume(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "cancelled")


def test_async_generator_asend_athrow_forwarded(t: ExecutionTracker) -> None:
    """asend() values and athrow() exceptions reach the async body."""

    @t.with_run("chat")
    async def echo() -> AsyncIterator[str]:
        received = yield "ready"
        while True:
            try:
                received = yield f"echo:{received}"
            except LookupError:
                received = yield "recovered"

    async def main() -> None:
        stream = echo()
        assert await stream.asend(None) == "ready"
        assert await stream.asend("x") == "echo:x"
        assert await stream.athrow(LookupError()) == "recovered"
        assert await stream.asend("y") == "echo:y"
        await stream.aclose()

    asyncio.run(main())
    assert only_run(t).error_code == "consumer_closed"


def test_async_generator_run_starts_at_first_anext(t: ExecutionTracker) -> None:
    """An async stream never iterated leaves no run."""

    @t.with_run("chat")
    async def tokens() -> AsyncIterator[int]:
        yield 1

    async def main() -> None:
        stream = tokens()
        await asyncio.sleep(0)
        assert t.list_runs().runs == []
        await stream.aclose()

    asyncio.run(main())
    assert t.list_runs().runs == []


# -- plain functions returning streams ---------------------------------------------------


def test_plain_function_returning_generator_is_followed(t: ExecutionTracker) -> None:
    """A handler that returns a stream ends its run when the stream ends."""

    def body() -> Iterator[int]:
        yield from range(3)

    @t.with_run("chat")
    def handler() -> Iterator[int]:
        return body()

    stream = handler()
    assert only_run(t).status is RunStatus.RUNNING
    assert list(stream) == [0, 1, 2]
    assert only_run(t).status is RunStatus.SUCCESS


def test_plain_function_returning_async_iterator_is_followed(t: ExecutionTracker) -> None:
    """Returned async generators and plain async iterators are followed too."""

    class Countdown:
        def __init__(self) -> None:
            self.n = 2

        def __aiter__(self) -> Countdown:
            return self

        async def __anext__(self) -> int:
            if self.n == 0:
                raise StopAsyncIteration
            self.n -= 1
            return self.n

    async def agen() -> AsyncIterator[int]:
        yield 5

    @t.with_run("chat", "agen")
    def handler_agen() -> AsyncIterator[int]:
        return agen()

    @t.with_run("chat", "iterator")
    def handler_iter() -> Countdown:
        return Countdown()

    async def main() -> None:
        assert [i async for i in handler_agen()] == [5]
        assert [i async for i in handler_iter()] == [1, 0]

    asyncio.run(main())
    assert {r.source_ref: r.status for r in t.list_runs().runs} == {
        "agen": RunStatus.SUCCESS,
        "iterator": RunStatus.SUCCESS,
    }


def test_plain_function_returning_coroutine_is_followed(t: ExecutionTracker) -> None:
    """A plain callable returning a coroutine (an async callable object) is awaited
    before its run ends."""

    class Tool:
        async def __call__(self) -> int:
            await asyncio.sleep(0)
            raise ConnectionResetError("reset")

    tool = t.with_run("skill", "tool")(Tool())
    with pytest.raises(ConnectionResetError):
        asyncio.run(tool())
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.ERROR, "provider_unavailable")


def test_followed_stream_never_iterated_ends_when_collected(t: ExecutionTracker) -> None:
    """A returned stream nobody iterates does not leave its run open forever."""

    def body() -> Iterator[int]:
        yield 1

    @t.with_run("chat")
    def handler() -> Iterator[int]:
        return body()

    stream = handler()
    del stream
    gc.collect()
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "consumer_closed")


# -- context manager -----------------------------------------------------------------------


def test_context_manager_success_error_and_annotations(t: ExecutionTracker) -> None:
    """``with`` records one run per block; annotations merge over start metadata."""
    with t.with_run("heartbeat", "digest", metadata={"a": 1, "b": 1}) as run:
        run.annotate(b=2, c=3)
    err = OSError("disk")
    with pytest.raises(OSError, match="disk") as info, t.with_run("heartbeat", "broken"):
        raise err
    assert info.value is err
    by_ref = {r.source_ref: r for r in t.list_runs().runs}
    assert by_ref["digest"].status is RunStatus.SUCCESS
    assert dict(by_ref["digest"].metadata) == {"a": 1, "b": 2, "c": 3}
    assert (by_ref["broken"].status, by_ref["broken"].error_code) == (
        RunStatus.ERROR,
        "io_error",
    )


def test_async_context_manager(t: ExecutionTracker) -> None:
    """``async with`` records a run; cancellation inside it is canceled."""

    async def turn(started: asyncio.Event | None) -> None:
        async with t.with_run("chat", "turn" if started is None else "cancelled") as run:
            assert run.status is RunStatus.RUNNING
            if started is not None:
                started.set()
                await asyncio.Event().wait()

    async def main() -> None:
        await turn(None)
        started = asyncio.Event()
        task = asyncio.create_task(turn(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    by_ref = {r.source_ref: r for r in t.list_runs().runs}
    assert by_ref["turn"].status is RunStatus.SUCCESS
    cancelled = by_ref["cancelled"]
    assert (cancelled.status, cancelled.error_code, cancelled.retryable) == (
        RunStatus.CANCELED,
        "cancelled",
        False,
    )


def test_explicit_finish_inside_block_wins(t: ExecutionTracker) -> None:
    """The first finish wins: an explicit finish_error inside the block stays."""
    with t.with_run("skill", "explicit") as run:
        result = run.finish_error(code="quota_exceeded", message="no quota", retryable=True)
        assert result.applied
    stored = only_run(t)
    assert (stored.status, stored.error_code, stored.retryable) == (
        RunStatus.ERROR,
        "quota_exceeded",
        True,
    )


def test_same_tracked_run_object_reused_concurrently(t: ExecutionTracker) -> None:
    """One with_run object entered from many tasks at once records one run each."""
    tracked = t.with_run("chat", "shared")

    async def turn(i: int) -> str:
        async with tracked as run:
            await asyncio.sleep(0.001 * (i % 3))
            return run.id

    async def main() -> list[str]:
        return await asyncio.gather(*(turn(i) for i in range(20)))

    ids = asyncio.run(main())
    runs = t.list_runs(limit=100).runs
    assert sorted(r.id for r in runs) == sorted(ids)
    assert all(r.status is RunStatus.SUCCESS and r.parent_id is None for r in runs)


# -- misuse ---------------------------------------------------------------------------------


def test_invalid_source_rejected_at_decoration(t: ExecutionTracker) -> None:
    """A bad source name is a clear error when with_run is built, not at call time."""
    from exectrack import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="invalid source"):
        t.with_run("Chat Turn")
    with pytest.raises(InvalidArgumentError, match="metadata must be a mapping"):
        t.with_run("chat", metadata=["not", "a", "dict"])  # type: ignore[arg-type]


def test_recursion_records_nested_runs(t: ExecutionTracker) -> None:
    """A recursive tracked function records a chain of parent links."""

    @t.with_run("skill", "fact")
    def fact(n: int) -> int:
        return 1 if n <= 1 else n * fact(n - 1)

    assert fact(4) == 24
    runs = sorted(t.list_runs().runs, key=lambda r: r.id)
    assert [r.parent_id for r in runs[1:]] == [r.id for r in runs[:-1]]
    assert runs[0].parent_id is None

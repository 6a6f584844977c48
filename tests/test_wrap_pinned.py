"""with_run's wrappers, pinned where test_with_run.py only checks the status: what a
followed coroutine or stream returns, which run is current while the body (and its
clean-up) runs, the stream facts on the tracker's clock, async iterators without
asend/athrow/aclose, and every wrapper with tracking switched off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import exectrack
from exectrack import ErrorInfo, ExecutionTracker, FakeClock, Run, RunStatus
from exectrack._context import current as current_var


@pytest.fixture
def t(clocked: ExecutionTracker) -> ExecutionTracker:
    """A strict tracker, committing before it returns, on the fake clock."""
    return clocked


@pytest.fixture
def off(tmp_path: Path) -> Iterator[ExecutionTracker]:
    tracker = ExecutionTracker(f"sqlite:///{tmp_path / 'off.db'}", strict=True, enabled=False)
    yield tracker
    tracker.close()


def only_run(t: ExecutionTracker) -> Run:
    [run] = t.list_runs().runs
    return run


def current_id() -> str | None:
    h = exectrack.current_run()
    return None if h is None else h.id


def flag_seven(value: Any) -> ErrorInfo | None:
    return ErrorInfo("seven", f"got {value!r}", retryable=True) if value == 7 else None


class Countdown:
    """An async iterator with only ``__anext__``: no asend, athrow or aclose."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __aiter__(self) -> Countdown:
        return self

    async def __anext__(self) -> int:
        if self.n == 0:
            raise StopAsyncIteration
        self.n -= 1
        return self.n


# -- a plain callable that returns a coroutine -------------------------------------------


class Tool:
    """A callable object whose call returns a coroutine (not a coroutine function)."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.seen: list[str | None] = []

    async def __call__(self) -> int:
        self.seen.append(current_id())
        await asyncio.sleep(0)
        self.seen.append(current_id())
        return self.value


@pytest.mark.parametrize("value", [3, 7])
def test_a_returned_coroutine_ends_on_its_own_result(t: ExecutionTracker, value: int) -> None:
    """The coroutine's result is returned and classified; its run is current while it
    runs and not after."""
    tool = Tool(value)
    wrapped = t.with_run("skill", "tool", classify_result=flag_seven)(tool)
    assert asyncio.run(wrapped()) == value
    run = only_run(t)
    assert tool.seen == [run.id, run.id]
    assert current_id() is None
    if value == 7:
        assert (run.status, run.error_code, run.error_message, run.retryable) == (
            RunStatus.ERROR,
            "seven",
            "got 7",
            True,
        )
    else:
        assert (run.status, run.error_code) == (RunStatus.SUCCESS, None)


# -- async generator functions -----------------------------------------------------------


def test_an_async_generator_function_gets_its_arguments(t: ExecutionTracker) -> None:
    @t.with_run("chat", "pair")
    async def pair(a: int, *, b: int) -> AsyncIterator[int]:
        yield a
        yield b

    async def main() -> list[int]:
        return [i async for i in pair(1, b=2)]

    assert asyncio.run(main()) == [1, 2]
    assert only_run(t).status is RunStatus.SUCCESS


def test_an_async_generator_called_with_bad_arguments_ends_its_run(t: ExecutionTracker) -> None:
    """Arguments that do not bind fail at the first ``__anext__``, where the run has
    started: it ends as an error, the TypeError goes to the caller."""

    @t.with_run("chat", "pair")
    async def pair(a: int) -> AsyncIterator[int]:
        yield a

    async def main() -> None:
        await pair(1, 2).__anext__()  # type: ignore[call-arg]

    with pytest.raises(TypeError, match="positional argument"):
        asyncio.run(main())
    run = only_run(t)
    assert (run.status, run.error_code) == (RunStatus.ERROR, "invalid_input")
    assert "positional argument" in (run.error_message or "")


def test_an_async_stream_result_is_classified_as_none(t: ExecutionTracker) -> None:
    """An async generator returns nothing: its classifier sees None."""
    seen: list[object] = []

    def classify(value: object) -> ErrorInfo | None:
        seen.append(value)
        return ErrorInfo("empty", "nothing came back")

    @t.with_run("chat", "s", classify_result=classify)
    async def stream() -> AsyncIterator[int]:
        yield 1

    async def main() -> list[int]:
        return [i async for i in stream()]

    assert asyncio.run(main()) == [1]
    assert seen == [None]
    run = only_run(t)
    assert (run.status, run.error_code, run.error_message) == (
        RunStatus.ERROR,
        "empty",
        "nothing came back",
    )


def test_the_run_is_current_in_the_body_and_its_clean_up_only(t: ExecutionTracker) -> None:
    """While the async body runs (and while aclose runs its finally) its run is
    current; while the consumer holds an item, no run is."""
    seen: list[tuple[str, str | None]] = []

    @t.with_run("chat", "s")
    async def stream() -> AsyncIterator[int]:
        try:
            seen.append(("body", current_id()))
            yield 1
            seen.append(("body", current_id()))
            yield 2
        finally:
            seen.append(("finally", current_id()))

    async def main() -> None:
        s = stream()
        assert await s.__anext__() == 1
        seen.append(("consumer", current_id()))
        assert await s.__anext__() == 2
        await s.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    run = only_run(t)
    assert seen == [("body", run.id), ("consumer", None), ("body", run.id), ("finally", run.id)]
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "consumer_closed")


def test_stream_facts_use_the_trackers_clock(t: ExecutionTracker, clock: FakeClock) -> None:
    """items counts what was yielded; first_item_ms is the time to the first one."""

    @t.with_run("chat", "s")
    async def stream() -> AsyncIterator[int]:
        clock.advance(0.25)
        yield 1
        clock.advance(1)
        yield 2
        clock.advance(1)
        yield 3

    async def main() -> list[int]:
        return [i async for i in stream()]

    assert asyncio.run(main()) == [1, 2, 3]
    run = only_run(t)
    assert (run.items, run.first_item_ms, run.duration_ms) == (3, 250.0, 2250.0)


# -- a plain function that returns an async iterator -------------------------------------


def test_a_returned_async_generator_is_closed_with_its_run(t: ExecutionTracker) -> None:
    """Closing the follower early closes the stream it follows (its finally runs, with
    the run current)."""
    seen: list[str | None] = []

    async def body() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            seen.append(current_id())

    @t.with_run("chat", "s")
    def handler() -> AsyncIterator[int]:
        return body()

    async def main() -> None:
        s = handler()
        assert await s.__anext__() == 1
        await s.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    run = only_run(t)
    assert seen == [run.id]
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "consumer_closed")


def test_a_bare_async_iterator_closed_early(t: ExecutionTracker) -> None:
    """An iterator without aclose: closing the follower ends the run, raises nothing."""

    @t.with_run("chat", "s")
    def handler() -> Countdown:
        return Countdown(3)

    async def main() -> None:
        s: Any = handler()
        assert await s.__anext__() == 2
        await s.aclose()

    asyncio.run(main())
    run = only_run(t)
    assert (run.status, run.error_code, run.items) == (RunStatus.CANCELED, "consumer_closed", 1)


def test_a_bare_async_iterator_thrown_into(t: ExecutionTracker) -> None:
    """An iterator without athrow: what is thrown into the follower is raised there
    and ends the run as that error."""

    @t.with_run("chat", "s")
    def handler() -> Countdown:
        return Countdown(3)

    async def main() -> None:
        s: Any = handler()
        assert await s.__anext__() == 2
        await s.athrow(ConnectionError("upstream"))

    with pytest.raises(ConnectionError, match="upstream"):
        asyncio.run(main())
    run = only_run(t)
    assert (run.status, run.error_code, run.error_message) == (
        RunStatus.ERROR,
        "provider_unavailable",
        "upstream",
    )


def test_a_returned_async_generator_gets_what_is_sent(t: ExecutionTracker) -> None:
    async def echo() -> AsyncIterator[str]:
        got = yield "ready"
        while got is not None:
            got = yield f"echo {got}"

    @t.with_run("chat", "s")
    def handler() -> AsyncIterator[str]:
        return echo()

    async def main() -> list[str]:
        s: Any = handler()
        out = [await s.__anext__(), await s.asend("a"), await s.asend("b")]
        with pytest.raises(StopAsyncIteration):
            await s.asend(None)
        return out

    assert asyncio.run(main()) == ["ready", "echo a", "echo b"]
    run = only_run(t)
    assert (run.status, run.items) == (RunStatus.SUCCESS, 3)


# -- tracking switched off: every wrapper passes through ---------------------------------


def test_switched_off_async_generators_pass_everything_through(off: ExecutionTracker) -> None:
    closed: list[bool] = []

    @off.with_run("chat", "s")
    async def stream(n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                if i == 2:
                    raise ValueError("two")
                got = yield i
                if got is not None:
                    yield got
        finally:
            closed.append(True)

    async def main() -> None:
        assert [i async for i in stream(2)] == [0, 1]
        s: Any = stream(5)
        assert await s.__anext__() == 0
        assert await s.asend("sent") == "sent"
        with pytest.raises(KeyError):
            await s.athrow(KeyError("thrown"))
        with pytest.raises(ValueError, match="two"):
            _ = [i async for i in stream(5)]
        s = stream(5)
        assert await s.__anext__() == 0
        await s.aclose()

    asyncio.run(main())
    assert closed == [True] * 4
    assert off.list_runs().runs == []
    assert exectrack.current_run() is None


def test_switched_off_wrappers_return_what_the_body_returns(off: ExecutionTracker) -> None:
    @off.with_run("skill")
    def plain(x: int) -> int:
        return x + 1

    @off.with_run("skill")
    async def coro(x: int) -> int:
        return x + 2

    @off.with_run("skill")
    def gen(x: int) -> Iterator[int]:
        yield x
        return x + 3

    @off.with_run("skill")
    def returns_stream() -> Countdown:
        return Countdown(2)

    def drain(g: Iterator[int]) -> tuple[list[int], object]:
        items: list[int] = []
        while True:
            try:
                items.append(next(g))
            except StopIteration as stop:
                return items, stop.value

    async def from_stream() -> list[int]:
        return [i async for i in returns_stream()]

    assert plain(1) == 2
    assert asyncio.run(coro(1)) == 3
    assert drain(gen(1)) == ([1], 4)
    assert asyncio.run(from_stream()) == [1, 0]
    assert off.list_runs().runs == []


# -- a bad value given to with_run -------------------------------------------------------


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_ref_that_cannot_be_printed_is_counted_on_the_given_tracker(db_url: str) -> None:
    """Counted once, when with_run is built (its tracker is known then)."""
    t = ExecutionTracker(db_url, durability="sync", strict=False)
    try:
        tracked = t.with_run("skill", source_ref=Unprintable())
        assert t.stats().failures_by_cause == {"unprintable value: RuntimeError: no text": 1}
        with tracked:
            pass
        assert t.stats().failures == 1
        assert only_run(t).source_ref == "<unprintable Unprintable>"
    finally:
        t.close()


# -- generators, classifiers that raise, the context manager -----------------------------


def test_a_generator_is_classified_on_what_it_returns(t: ExecutionTracker) -> None:
    @t.with_run("chat", "g", classify_result=flag_seven)
    def gen(result: int) -> Iterator[int]:
        yield 1
        return result

    assert list(gen(3)) == [1]
    assert list(gen(7)) == [1]
    runs = sorted(t.list_runs().runs, key=lambda r: r.status.value)
    assert [(r.status, r.error_code, r.error_message) for r in runs] == [
        (RunStatus.ERROR, "seven", "got 7"),
        (RunStatus.SUCCESS, None, None),
    ]


def test_a_generator_closed_early_runs_its_finally_in_its_run(t: ExecutionTracker) -> None:
    seen: list[str | None] = []

    @t.with_run("chat", "g")
    def gen() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            seen.append(current_id())

    g = gen()
    assert next(g) == 1
    g.close()
    run = only_run(t)
    assert seen == [run.id]
    assert current_id() is None
    assert (run.status, run.error_code, run.items) == (RunStatus.CANCELED, "consumer_closed", 1)


def raising_classifier(_value: object) -> ErrorInfo | None:
    raise KeyError("oops")


def run_every_kind(t: ExecutionTracker) -> list[object]:
    """Run a plain function, a generator, an async generator and a returned coroutine,
    each with a classifier that raises; what each one gave back."""
    track = t.with_run("skill", classify_result=raising_classifier)

    @track
    def plain() -> int:
        return 1

    @track
    def gen() -> Iterator[int]:
        yield 2
        return 3

    @track
    async def agen() -> AsyncIterator[int]:
        yield 4

    async def drain() -> list[int]:
        return [i async for i in agen()]

    out: list[object] = []
    for call in (
        plain,
        lambda: list(gen()),
        lambda: asyncio.run(drain()),
        lambda: asyncio.run(track(Tool(5))()),
    ):
        try:
            out.append(call())
        except Exception as exc:
            out.append(type(exc).__name__)
    return out


def test_a_raising_classifier_is_counted_and_the_run_succeeds(db_url: str) -> None:
    t = ExecutionTracker(db_url, durability="sync", strict=False)
    try:
        assert run_every_kind(t) == [1, [2], [4], 5]
        assert [r.status for r in t.list_runs().runs] == [RunStatus.SUCCESS] * 4
        assert t.stats().failures_by_cause == {"result classifier: KeyError: 'oops'": 4}
    finally:
        t.close()


def test_a_raising_classifier_raises_in_strict_mode(t: ExecutionTracker) -> None:
    """... after ending the run as that error: strict mode leaves no run open."""
    assert run_every_kind(t) == ["KeyError"] * 4
    assert [(r.status, r.error_code, r.error_message) for r in t.list_runs().runs] == [
        (RunStatus.ERROR, "internal_error", "'oops'")
    ] * 4


def test_the_context_manager_stores_everything_it_was_given(t: ExecutionTracker) -> None:
    with t.with_run("chat", "turn", session_id="s-1", deadline=30, metadata={"k": "v"}) as h:
        assert exectrack.current_run() is h
    assert exectrack.current_run() is None
    run = only_run(t)
    assert (run.source, run.source_ref, run.session_id, dict(run.metadata)) == (
        "chat",
        "turn",
        "s-1",
        {"k": "v"},
    )
    assert run.deadline_at == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def test_without_a_tracker_the_context_manager_gives_a_handle_that_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A default tracker that cannot be built (outside strict mode): the block runs
    with a handle named like the run, and nothing is recorded."""
    monkeypatch.delenv("EXECTRACK_STRICT")
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", "nosuch://x")
    with exectrack.with_run("chat", "turn") as h:
        assert exectrack.current_run() is h
        assert (h.source, h.source_ref, h.recorded) == ("chat", "turn", False)
    assert exectrack.current_run() is None
    assert "tracking is off" in caplog.text


def test_exiting_where_no_block_was_entered_only_warns(
    t: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """__exit__ with no entered block current (here: inside a tracked function, whose
    run is current but was not entered by ``with``) logs and changes nothing."""
    block = t.with_run("chat", "block")

    @t.with_run("skill", "body")
    def body() -> str | None:
        block.__exit__(None, None, None)
        return current_id()

    inside = body()
    run = only_run(t)
    assert (run.source_ref, run.status, inside) == ("body", RunStatus.SUCCESS, run.id)
    assert [r.getMessage() for r in caplog.records if r.module == "_wrap"] == [
        "exectrack: with_run exited in a different context than it entered"
    ]


def test_a_block_exited_first_in_a_copy_of_its_context(
    t: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """Exited first in a copy of its context (a task started inside the block): the
    run ends there; the block's own exit then restores its context (no run is left
    current there) and changes nothing else."""
    import contextvars

    outer = t.start("chat", "outer")
    token = current_var.set(outer)
    try:
        block = t.with_run("chat", "block")
        h = block.__enter__()
        contextvars.copy_context().run(block.__exit__, None, None, None)
        assert current_id() == h.id  # the copy's exit did not touch this context
        assert t.get_run(h.id).status is RunStatus.SUCCESS  # type: ignore[union-attr]
        block.__exit__(ValueError, ValueError("too late"), None)
        assert current_id() == outer.id
    finally:
        current_var.reset(token)
    inner = t.get_run(h.id)
    assert inner is not None
    assert (inner.status, inner.parent_id) == (RunStatus.SUCCESS, outer.id)
    assert [r for r in caplog.records if r.module == "_wrap"] == []


# -- the decorator: what each kind of callable records -----------------------------------


def decorate_every_kind(track: exectrack.TrackedRun) -> dict[str, Any]:
    @track
    def plain() -> int:
        return 1

    @track
    async def coro() -> int:
        return 2

    @track
    def gen() -> Iterator[int]:
        yield 3

    @track
    async def agen() -> AsyncIterator[int]:
        yield 4

    return {"plain": plain, "coro": coro, "gen": gen, "agen": agen}


def call_every_kind(track: exectrack.TrackedRun) -> list[object]:
    f = decorate_every_kind(track)

    async def drain() -> list[int]:
        return [i async for i in f["agen"]()]

    return [f["plain"](), asyncio.run(f["coro"]()), list(f["gen"]()), asyncio.run(drain())]


def test_every_kind_records_what_with_run_was_given(t: ExecutionTracker) -> None:
    track = t.with_run("skill", "ref", session_id="s-1", metadata={"k": 1}, deadline=5)
    assert call_every_kind(track) == [1, 2, [3], [4]]
    runs = t.list_runs().runs
    assert len(runs) == 4
    for run in runs:
        assert (run.source, run.source_ref, run.session_id, dict(run.metadata)) == (
            "skill",
            "ref",
            "s-1",
            {"k": 1},
        )
        assert (run.status, run.deadline_at) == (
            RunStatus.SUCCESS,
            datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
        )


def test_every_kind_keeps_its_name_and_kind(t: ExecutionTracker) -> None:
    import inspect

    wrapped = decorate_every_kind(t.with_run("skill"))
    assert {name: f.__name__ for name, f in wrapped.items()} == {
        "plain": "plain",
        "coro": "coro",
        "gen": "gen",
        "agen": "agen",
    }
    assert all(f.__wrapped__.__name__ == f.__name__ for f in wrapped.values())
    assert inspect.iscoroutinefunction(wrapped["coro"])
    assert inspect.isgeneratorfunction(wrapped["gen"])
    assert inspect.isasyncgenfunction(wrapped["agen"])


class Named:
    def __init__(self, qualname: str | None, name: str | None) -> None:
        if qualname is not None:
            self.__qualname__ = qualname
        if name is not None:
            self.__name__ = name

    def __call__(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("func", "ref"),
    [
        (Named("Q.call", "call"), "Q.call"),
        (Named("", "plain_name"), "plain_name"),
        (Named(None, "plain_name"), "plain_name"),
        (Named(None, None), "Named"),
        (Named("", ""), "Named"),
    ],
)
def test_the_default_ref_is_the_callables_name(t: ExecutionTracker, func: Named, ref: str) -> None:
    """__qualname__, else __name__, else the type's name."""
    assert t.with_run("skill")(func)() == 0
    assert only_run(t).source_ref == ref


@pytest.mark.parametrize("value", [3, 7])
def test_a_plain_result_is_classified(t: ExecutionTracker, value: int) -> None:
    class Box:  # not one of the plain types: settled on the spot all the same
        def __eq__(self, other: object) -> bool:
            return other == value

        __hash__ = None  # type: ignore[assignment]

    @t.with_run("skill", "plain", classify_result=flag_seven)
    def plain() -> int:
        return value

    @t.with_run("skill", "object", classify_result=flag_seven)
    def boxed() -> Box:
        return Box()

    assert plain() == value
    assert boxed() == value
    statuses = {r.source_ref: (r.status, r.error_code) for r in t.list_runs().runs}
    want = (RunStatus.ERROR, "seven") if value == 7 else (RunStatus.SUCCESS, None)
    assert statuses == {"plain": want, "object": want}


def test_decorating_what_cannot_be_called_says_what_it_got(t: ExecutionTracker) -> None:
    with pytest.raises(exectrack.InvalidArgumentError) as info:
        t.with_run("skill")(42)  # type: ignore[arg-type]
    assert str(info.value) == "with_run decorates a callable, not 42"


def test_a_bad_ref_given_to_the_default_tracker_is_counted_at_first_use(db_url: str) -> None:
    """exectrack.with_run at import time opens nothing: its problem is counted on the
    default tracker when it is first used, and only once."""
    tracked = exectrack.with_run("skill", source_ref=Unprintable())
    t = ExecutionTracker(db_url, durability="sync", strict=False)
    exectrack.set_tracker(t)
    assert t.stats().failures == 0
    for _ in range(2):
        with tracked:
            pass
    assert t.stats().failures_by_cause == {"unprintable value: RuntimeError: no text": 1}
    assert [r.source_ref for r in t.list_runs().runs] == ["<unprintable Unprintable>"] * 2


def test_a_switched_off_async_generator_leaves_the_outer_run_current(
    t: ExecutionTracker, off: ExecutionTracker
) -> None:
    """Tracking off for the stream: its body (and its clean-up) still sees the run
    that was current when it was called."""
    seen: list[str | None] = []

    @off.with_run("chat", "s")
    async def stream() -> AsyncIterator[int]:
        try:
            seen.append(current_id())
            yield 1
            yield 2
        finally:
            seen.append(current_id())

    async def main() -> str:
        with t.with_run("chat", "outer") as outer:
            s: Any = stream()
            assert await s.__anext__() == 1
            await s.aclose()
            return outer.id

    outer_id = asyncio.run(main())
    assert seen == [outer_id, outer_id]


def test_a_returned_stream_is_classified_on_what_it_returns(t: ExecutionTracker) -> None:
    def gen() -> Iterator[int]:
        yield 1
        return 7

    async def agen() -> AsyncIterator[int]:
        yield 1

    def none_is_empty(value: object) -> ErrorInfo | None:
        return ErrorInfo("empty", "no result") if value is None else flag_seven(value)

    @t.with_run("chat", "sync", classify_result=flag_seven)
    def returns_gen() -> Iterator[int]:
        return gen()

    @t.with_run("chat", "async", classify_result=none_is_empty)
    def returns_agen() -> AsyncIterator[int]:
        return agen()

    async def drain() -> list[int]:
        return [i async for i in returns_agen()]

    assert list(returns_gen()) == [1]
    assert asyncio.run(drain()) == [1]
    codes = {r.source_ref: (r.status, r.error_code) for r in t.list_runs().runs}
    assert codes == {"sync": (RunStatus.ERROR, "seven"), "async": (RunStatus.ERROR, "empty")}


def test_exiting_with_no_run_current_at_all_only_warns(
    t: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    t.with_run("chat", "block").__exit__(None, None, None)
    assert [r.getMessage() for r in caplog.records if r.module == "_wrap"] == [
        "exectrack: with_run exited in a different context than it entered"
    ]
    assert t.list_runs().runs == []


def test_a_classifier_that_cannot_be_called_is_refused(t: ExecutionTracker) -> None:
    with pytest.raises(exectrack.InvalidArgumentError) as info:
        t.with_run("skill", classify_result="success")  # type: ignore[arg-type]
    assert str(info.value) == "classify_result must be callable"


def test_metadata_that_is_not_a_mapping_is_refused_when_built(t: ExecutionTracker) -> None:
    with pytest.raises(exectrack.InvalidArgumentError) as info:
        t.with_run("skill", metadata=[("a", 1)])  # type: ignore[arg-type]
    assert str(info.value) == "metadata must be a mapping (a dict), not list"


def test_a_bad_metadata_value_is_counted_once_per_run(db_url: str) -> None:
    """Checked, cleaned and counted where each run starts; building with_run counts
    nothing by itself."""
    t = ExecutionTracker(db_url, durability="sync", strict=False)
    try:
        tracked = t.with_run("skill", metadata={"v": Unprintable()})
        assert t.stats().failures == 0
        for _ in range(2):
            with tracked:
                pass
        assert t.stats().failures == 2
    finally:
        t.close()


def test_a_bad_ref_with_no_tracker_at_all_is_dropped_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No default tracker can be built (outside strict mode): the problem has nowhere
    to be counted, and the block still runs."""
    monkeypatch.delenv("EXECTRACK_STRICT")
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", "nosuch://x")
    ran = []
    with exectrack.with_run("skill", source_ref=Unprintable()) as h:
        ran.append(h.source_ref)
    assert ran == ["<unprintable Unprintable>"]


def test_a_block_exited_again_in_a_copy_of_its_context_only_warns(
    t: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """A task started inside the block still sees its run as current after the block
    ended: exiting the block there again warns and changes nothing."""
    import contextvars

    block = t.with_run("chat", "block")
    h = block.__enter__()
    inside = contextvars.copy_context()
    block.__exit__(None, None, None)
    inside.run(block.__exit__, ValueError, ValueError("again"), None)
    assert inside.run(current_id) == h.id
    assert only_run(t).status is RunStatus.SUCCESS
    assert [r.getMessage() for r in caplog.records if r.module == "_wrap"] == [
        "exectrack: with_run exited in a different context than it entered"
    ]

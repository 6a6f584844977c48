"""Parent links follow Python's context (DESIGN.md s3, edge cases)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

from exectrack import ExecutionTracker, RunHandle, bind_context, current_run


def parents(t: ExecutionTracker) -> dict[str, str | None]:
    """source_ref -> source_ref of the parent run (None for a root)."""
    runs = t.list_runs(limit=100).runs
    ref = {r.id: r.source_ref for r in runs}
    return {str(r.source_ref): (ref.get(r.parent_id) if r.parent_id else None) for r in runs}


def test_nested_with_blocks_and_decorators(tracker: ExecutionTracker) -> None:
    """A run started inside another run records it as parent; siblings share it."""

    @tracker.with_run("skill", "search")
    def search() -> None:
        with tracker.with_run("skill", "fetch"):
            pass

    with tracker.with_run("chat", "turn"):
        search()
        with tracker.with_run("skill", "summarise"):
            pass
    with tracker.with_run("chat", "next-turn"):
        pass
    assert parents(tracker) == {
        "turn": None,
        "search": "turn",
        "fetch": "search",
        "summarise": "turn",
        "next-turn": None,
    }


def test_current_run_is_reset_after_each_block(tracker: ExecutionTracker) -> None:
    """current_run() is the innermost run inside a block and restored after it."""
    assert current_run() is None
    with tracker.with_run("chat", "outer") as outer:
        assert current_run() is outer
        with tracker.with_run("skill", "inner") as inner:
            assert current_run() is inner
        assert current_run() is outer
    assert current_run() is None


def test_asyncio_tasks_and_to_thread_inherit_parent(tracker: ExecutionTracker) -> None:
    """Tasks created and to_thread calls made inside a run are its children."""

    @tracker.with_run("skill", "in-task")
    async def in_task() -> None:
        await asyncio.sleep(0)

    @tracker.with_run("skill", "in-thread")
    def in_thread() -> None:
        pass

    async def main() -> None:
        async with tracker.with_run("chat", "turn"):
            await asyncio.gather(asyncio.create_task(in_task()))
            await asyncio.to_thread(in_thread)

    asyncio.run(main())
    assert parents(tracker) == {"turn": None, "in-task": "turn", "in-thread": "turn"}


def test_copy_context_run_inherits_parent(tracker: ExecutionTracker) -> None:
    """contextvars.copy_context().run carries the current run."""

    @tracker.with_run("skill", "child")
    def child() -> None:
        pass

    with tracker.with_run("chat", "turn"):
        ctx = contextvars.copy_context()
    ctx.run(child)
    assert parents(tracker) == {"turn": None, "child": "turn"}


def test_thread_pool_submit_does_not_inherit_but_bind_context_does(
    tracker: ExecutionTracker,
) -> None:
    """A plain executor submit starts a root run; bind_context makes it a child, and a
    reused worker thread never keeps a stale parent."""

    @tracker.with_run("skill")
    def work(name: str) -> None:
        assert current_run() is not None

    with ThreadPoolExecutor(max_workers=1) as pool:
        with tracker.with_run("chat", "turn"):
            pool.submit(work, "plain").result()
            pool.submit(bind_context(tracker.with_run("skill", "bound")(lambda: None))).result()
        # the same worker thread, after the bound call: no stale parent
        pool.submit(tracker.with_run("skill", "later")(lambda: None)).result()
    assert parents(tracker) == {
        "turn": None,
        "test_thread_pool_submit_does_not_inherit_but_bind_context_does.<locals>.work": None,
        "bound": "turn",
        "later": None,
    }


def test_consumer_calls_between_items_are_not_children_of_stream(
    tracker: ExecutionTracker,
) -> None:
    """Runs inside a stream's body are its children; runs the consumer makes between
    two items are not."""

    @tracker.with_run("skill", "inside")
    def inside() -> None:
        pass

    @tracker.with_run("skill", "between")
    def between() -> None:
        pass

    @tracker.with_run("chat", "stream")
    def stream() -> Iterator[int]:
        inside()
        yield 1
        yield 2

    for _ in stream():
        assert current_run() is None
        between()
    assert parents(tracker) == {"stream": None, "inside": "stream", "between": None}


def test_async_stream_body_vs_consumer(tracker: ExecutionTracker) -> None:
    """The same holds for async generators consumed inside another run."""

    @tracker.with_run("skill", "inside")
    async def inside() -> None:
        await asyncio.sleep(0)

    @tracker.with_run("skill", "between")
    def between() -> None:
        pass

    @tracker.with_run("chat", "stream")
    async def stream() -> AsyncIterator[int]:
        await inside()
        yield 1

    async def main() -> None:
        async with tracker.with_run("chat", "turn") as turn:
            async for _ in stream():
                assert current_run() is turn
                between()

    asyncio.run(main())
    assert parents(tracker) == {
        "turn": None,
        "stream": "turn",
        "inside": "stream",
        "between": "turn",
    }


def test_manual_start_takes_parent_from_context(tracker: ExecutionTracker) -> None:
    """tracker.start() inside a run links to it; an explicit parent_id wins."""
    with tracker.with_run("chat", "turn") as turn:
        child = tracker.start("skill", "manual")
        other = tracker.start("skill", "explicit", parent_id="0000")
    child.finish_success()
    other.finish_success()
    runs = {r.source_ref: r for r in tracker.list_runs().runs}
    assert runs["manual"].parent_id == turn.id
    assert runs["explicit"].parent_id == "0000"


def test_threads_do_not_share_current_run(tracker: ExecutionTracker) -> None:
    """A run active in one thread is invisible to another thread."""
    seen: list[RunHandle | None] = []
    ready = threading.Event()
    done = threading.Event()

    def other() -> None:
        ready.wait()
        seen.append(current_run())
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with tracker.with_run("chat", "turn"):
        ready.set()
        done.wait()
    thread.join()
    assert seen == [None]

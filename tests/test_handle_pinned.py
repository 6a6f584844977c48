"""RunHandle, pinned: its status as this process sees it, items and the time to the
first one, metadata added before the finish, its finishes (and a null handle's), and
its repr."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from exectrack import ExecutionTracker, FakeClock, Run, RunStatus
from exectrack._handle import null_handle
from exectrack.stores import FinishResult


@pytest.fixture
def t(clocked: ExecutionTracker) -> ExecutionTracker:
    """A strict tracker, committing before it returns, on the fake clock."""
    return clocked


def stored(t: ExecutionTracker, run_id: str) -> Run:
    run = t.get_run(run_id)
    assert run is not None
    return run


def test_status_and_finished_follow_the_first_finish(t: ExecutionTracker) -> None:
    queued = t.start("skill", queued=True)
    running = t.start("skill")
    assert (queued.status, queued.finished) == (RunStatus.QUEUED, False)
    assert (running.status, running.finished) == (RunStatus.RUNNING, False)
    assert queued.mark_running() == FinishResult(True, RunStatus.RUNNING)
    assert queued.status is RunStatus.RUNNING
    assert queued.finish_with_status("timeout") == FinishResult(True, RunStatus.TIMEOUT)
    assert (queued.status, queued.finished) == (RunStatus.TIMEOUT, True)
    assert running.finish_success() == FinishResult(True, RunStatus.SUCCESS)
    assert running.finish_error(ValueError("late")) == FinishResult(False, RunStatus.SUCCESS)
    assert (running.status, running.finished) == (RunStatus.SUCCESS, True)
    assert stored(t, running.id).status is RunStatus.SUCCESS


def test_started_at_is_the_trackers_clock(t: ExecutionTracker, clock: FakeClock) -> None:
    clock.advance(90)
    h = t.start("skill")
    assert h.started_at == datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)
    assert h.started_at_us == int(h.started_at.timestamp() * 1_000_000)


def test_add_items_counts_and_times_the_first(t: ExecutionTracker, clock: FakeClock) -> None:
    h = t.start("chat")
    assert h.items is None  # not a stream until something is counted
    h.add_items(0)
    h.add_items(-3)
    assert h.items is None
    clock.advance(0.5)
    h.add_items()
    clock.advance(1)
    h.add_items(4)
    assert h.items == 5
    h.finish_success()
    h.add_items(10)  # after the finish: ignored
    assert h.items == 5
    run = stored(t, h.id)
    assert (run.items, run.first_item_ms, run.duration_ms) == (5, 500.0, 1500.0)


def test_metadata_added_before_the_finish_is_merged(t: ExecutionTracker) -> None:
    h = t.start("skill", metadata={"a": 1, "b": 1})
    h.annotate(b=2)
    h.update_metadata({"c": 3})
    h.finish_success(metadata={"d": 4})
    h.annotate(e=5)  # after the finish: ignored
    h.update_metadata({"f": 6})
    assert dict(stored(t, h.id).metadata) == {"a": 1, "b": 2, "c": 3, "d": 4}


class Broken(Mapping[str, Any]):
    """A mapping whose items cannot be read."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no keys")

    def __len__(self) -> int:
        return 1

    def keys(self) -> Any:
        raise RuntimeError("no keys")


def test_metadata_that_cannot_be_read_is_counted_not_raised(db_url: str) -> None:
    t = ExecutionTracker(db_url, durability="sync", strict=False)
    try:
        h = t.start("skill", metadata={"a": 1})
        h.update_metadata(Broken())
        h.annotate(b=2)
        h.finish_success()
        assert t.stats().failures_by_cause == {"metadata: RuntimeError: no keys": 1}
        assert dict(stored(t, h.id).metadata) == {"a": 1, "b": 2}
    finally:
        t.close()


def test_finish_error_passes_every_field(t: ExecutionTracker) -> None:
    h = t.start("skill")
    result = h.finish_error(
        ValueError("bad"), code="quota", message="over quota", retryable=True, metadata={"m": 1}
    )
    assert result == FinishResult(True, RunStatus.ERROR)
    run = stored(t, h.id)
    assert (run.error_code, run.error_message, run.retryable, dict(run.metadata)) == (
        "quota",
        "over quota",
        True,
        {"m": 1},
    )


def test_finish_with_status_passes_every_field(t: ExecutionTracker) -> None:
    h = t.start("skill")
    result = h.finish_with_status(
        RunStatus.CANCELED,
        error_code="stopped",
        error_message="by the user",
        retryable=False,
        metadata={"m": 2},
    )
    assert result == FinishResult(True, RunStatus.CANCELED)
    run = stored(t, h.id)
    assert (run.status, run.error_code, run.error_message, run.retryable) == (
        RunStatus.CANCELED,
        "stopped",
        "by the user",
        False,
    )
    assert dict(run.metadata) == {"m": 2}


def test_finish_success_passes_its_metadata(t: ExecutionTracker) -> None:
    h = t.start("skill")
    assert h.finish_success(metadata={"m": 3}) == FinishResult(True, RunStatus.SUCCESS)
    assert dict(stored(t, h.id).metadata) == {"m": 3}


def test_a_null_handle_writes_nothing_and_says_so() -> None:
    h = null_handle("chat", "turn")
    nothing = FinishResult(False, None)
    assert (h.source, h.source_ref, h.session_id, h.parent_id) == ("chat", "turn", None, None)
    assert (h.recorded, h.queued, h.status, h.items) == (False, False, RunStatus.RUNNING, None)
    assert h.mark_running() == nothing
    assert h.finish_success(metadata={"a": 1}) == nothing
    assert h.finish_error(ValueError("x"), code="c") == nothing
    assert h.finish_with_status("error", error_code="c") == nothing
    h.add_items(2)  # counted, with no clock to time the first item
    h.update_metadata(Broken())  # no tracker to count the problem on: no error
    assert (h.items, h._first_ns) == (2, None)
    assert null_handle("chat").source_ref is None


def test_a_null_handle_has_an_id_of_its_own_and_no_clock() -> None:
    """Its id is a fresh run id (for logs and headers), ordered like any other; with
    no clock behind it, it started at the epoch and has no deadline."""
    a, b = null_handle("chat"), null_handle("chat")
    assert uuid.UUID(a.id).version == 7
    assert a.id < b.id
    assert (a.started_at, a.deadline_at_us) == (datetime(1970, 1, 1, tzinfo=UTC), None)


def test_repr_names_the_run(t: ExecutionTracker) -> None:
    h = t.start("chat", "turn-1")
    assert repr(h) == f"<RunHandle chat:turn-1 {h.id} running>"
    h.finish_error(ValueError("x"))
    assert repr(h) == f"<RunHandle chat:turn-1 {h.id} error>"
    bare = t.start("skill", queued=True)
    assert repr(bare) == f"<RunHandle skill:- {bare.id} queued>"

"""The tracker's own calls, pinned field by field: deadlines at their bounds,
finish_error's defaults and overrides, finish_with_status's fields, mark_running's
every answer (by handle and by id, queued, finished, unrecorded, on both write paths),
a finish of a run this process did not start, and repr."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exectrack import (
    ErrorInfo,
    ExecutionTracker,
    FakeClock,
    InvalidArgumentError,
    Run,
    RunStatus,
)
from exectrack.errors import StoreError, StoreUnavailableError
from exectrack.stores import FinishResult, open_store
from exectrack.testing import FailingStore


@pytest.fixture
def t(clocked: ExecutionTracker) -> ExecutionTracker:
    """A strict tracker, committing before it returns, on the fake clock."""
    return clocked


@pytest.fixture(params=["sync", "async"])
def either(request: pytest.FixtureRequest, db_url: str) -> Iterator[ExecutionTracker]:
    tracker = ExecutionTracker(db_url, strict=True, durability=request.param)
    yield tracker
    tracker.close()


class Unprintable:
    """A value whose text cannot be had."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


def stored(t: ExecutionTracker, run_id: str) -> Run:
    t.flush()
    run = t.get_run(run_id)
    assert run is not None
    return run


def error_fields(run: Run) -> tuple[Any, ...]:
    return (run.status, run.error_code, run.error_message, run.retryable)


# -- deadlines ---------------------------------------------------------------------------


@pytest.mark.parametrize(("deadline", "seconds"), [(0, 0), (0.5, 0.5), (2, 2)])
def test_a_deadline_in_seconds_from_zero_up(
    t: ExecutionTracker, deadline: float, seconds: float
) -> None:
    h = t.start("skill", deadline=deadline)
    assert h.deadline_at_us == h.started_at_us + round(seconds * 1_000_000)


@pytest.mark.parametrize(("deadline", "shown"), [(-1, "-1"), (-0.5, "-0.5"), (True, "True")])
def test_a_bad_deadline_is_named_in_the_error(
    t: ExecutionTracker, deadline: Any, shown: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        t.start("skill", deadline=deadline)
    assert str(info.value) == (
        f"deadline={shown}: pass an aware datetime, a timedelta or seconds >= 0"
    )


# -- finish_error ------------------------------------------------------------------------


def test_finish_error_needs_something_to_record(t: ExecutionTracker) -> None:
    h = t.start("skill")
    with pytest.raises(InvalidArgumentError) as info:
        h.finish_error()
    assert str(info.value) == "finish_error needs an exception or a code/message"
    assert h.status is RunStatus.RUNNING


def test_finish_error_defaults(t: ExecutionTracker) -> None:
    """A message alone is an internal_error; a code alone is its own message; neither
    is retryable unless told."""
    by_message = t.start("skill")
    by_message.finish_error(message="went wrong")
    by_code = t.start("skill")
    by_code.finish_error(code="quota")
    assert error_fields(stored(t, by_message.id)) == (
        RunStatus.ERROR,
        "internal_error",
        "went wrong",
        False,
    )
    assert error_fields(stored(t, by_code.id)) == (RunStatus.ERROR, "quota", "quota", False)


def test_finish_error_overrides_what_the_exception_says(t: ExecutionTracker) -> None:
    """A retryable exception told not retryable, and the other way round; a timeout is
    a timeout whatever code it is given; the metadata is kept."""
    down = t.start("skill")
    down.finish_error(ConnectionError("down"), retryable=False, metadata={"m": 1})
    bad = t.start("skill")
    bad.finish_error(ValueError("bad"), retryable=True)
    slow = t.start("skill")
    slow.finish_error(TimeoutError("slow"), code="upstream_slow")
    assert error_fields(stored(t, down.id)) == (
        RunStatus.ERROR,
        "provider_unavailable",
        "down",
        False,
    )
    assert dict(stored(t, down.id).metadata) == {"m": 1}
    assert error_fields(stored(t, bad.id)) == (RunStatus.ERROR, "invalid_input", "bad", True)
    assert error_fields(stored(t, slow.id)) == (RunStatus.TIMEOUT, "upstream_slow", "slow", True)


class CodeRaises(Exception):
    """An exception whose ``code`` attribute raises when read."""

    @property
    def code(self) -> str:
        raise RuntimeError("no code")


def test_what_classifying_an_exception_did_wrong_is_counted(db_url: str) -> None:
    t = ExecutionTracker(db_url, durability="sync", strict=False)
    try:
        h = t.start("skill")
        assert h.finish_error(CodeRaises("boom")) == FinishResult(True, RunStatus.ERROR)
        assert t.stats().failures_by_cause == {
            "classifier: CodeRaises.code raised: RuntimeError: no code": 1
        }
        assert stored(t, h.id).error_message == "boom"
    finally:
        t.close()


# -- finish_with_status ------------------------------------------------------------------


def test_finish_with_status_stores_every_field(t: ExecutionTracker) -> None:
    h = t.start("skill")
    result = t.finish_with_status(
        h.id,
        "timeout",
        error_code="late",
        error_message="too late",
        retryable=True,
        metadata={"m": 1},
    )
    assert result == FinishResult(True, RunStatus.TIMEOUT)
    run = stored(t, h.id)
    assert error_fields(run) == (RunStatus.TIMEOUT, "late", "too late", True)
    assert dict(run.metadata) == {"m": 1}


def test_finish_with_status_refuses_a_status_that_does_not_end(t: ExecutionTracker) -> None:
    h = t.start("skill")
    with pytest.raises(InvalidArgumentError) as info:
        h.finish_with_status("running")
    assert str(info.value) == (
        "finish_with_status needs a terminal status (success, error, canceled, timeout), "
        "not 'running'"
    )


# -- mark_running ------------------------------------------------------------------------


def test_mark_running_by_handle_and_by_id(either: ExecutionTracker) -> None:
    by_handle = either.start("skill", queued=True)
    by_id = either.start("skill", queued=True)
    assert either.mark_running(by_handle) == FinishResult(True, RunStatus.RUNNING)
    assert either.mark_running(by_id.id) == FinishResult(True, RunStatus.RUNNING)
    assert (by_handle.queued, by_id.queued) == (False, False)
    assert by_id.status is RunStatus.RUNNING
    assert stored(either, by_handle.id).status is RunStatus.RUNNING
    assert stored(either, by_id.id).status is RunStatus.RUNNING
    # running already, then finished: not applied, with the status it has
    assert either.mark_running(by_id.id) == FinishResult(False, RunStatus.RUNNING)
    by_id.finish_success()
    assert either.mark_running(by_id) == FinishResult(False, RunStatus.SUCCESS)
    assert stored(either, by_id.id).status is RunStatus.SUCCESS


def test_mark_running_a_run_this_process_did_not_start(db_url: str, t: ExecutionTracker) -> None:
    with ExecutionTracker(db_url, strict=True, durability="sync") as other:
        h = other.start("skill", queued=True)
        assert t.mark_running(h.id) == FinishResult(True, RunStatus.RUNNING)
        assert t.mark_running(h.id) == FinishResult(False, RunStatus.RUNNING)
        assert t.mark_running("no-such-run") == FinishResult(False, None)
        assert stored(t, h.id).status is RunStatus.RUNNING


def test_mark_running_another_process_run_through_the_background_writer(db_url: str) -> None:
    with (
        ExecutionTracker(db_url, strict=True, durability="sync") as other,
        ExecutionTracker(db_url, strict=True) as t,
    ):
        h = other.start("skill", queued=True)
        assert t.mark_running(h.id) == FinishResult(True, RunStatus.RUNNING)
        assert t.mark_running(h.id) == FinishResult(False, RunStatus.RUNNING)
        assert t.mark_running("no-such-run") == FinishResult(False, None)
        assert stored(t, h.id).status is RunStatus.RUNNING


class Gated(FailingStore):
    """A store whose first batch waits until ``release`` is set (a slow commit)."""

    def __init__(self, url: str) -> None:
        super().__init__(open_store(url), fail=set())
        self.entered = threading.Event()
        self.release = threading.Event()

    def _check(self, op: str) -> None:
        if op == "apply" and not self.entered.is_set():
            self.entered.set()
            self.release.wait(600)  # longer than any test may take: a hang shows
        super()._check(op)


def test_a_queued_run_marked_running_before_it_was_written_is_written_once(
    db_url: str, clock: FakeClock
) -> None:
    """Still waiting in the writer's queue, the queued run is written running, as of
    its start (one write); once written, marking it is a write of its own, at its
    own time."""
    store = Gated(db_url)
    t = ExecutionTracker(store, strict=True, clock=clock)
    try:
        t.start("skill", "first")  # the writer takes it and waits in the store
        assert store.entered.wait(30)
        waiting = t.start("skill", queued=True)
        started = clock.now()
        clock.advance(5)
        assert t.mark_running(waiting) == FinishResult(True, RunStatus.RUNNING)
        store.release.set()
        run = stored(t, waiting.id)
        assert (run.status, run.heartbeat_at, run.updated_at) == (
            RunStatus.RUNNING,
            started,
            started,
        )
        written = t.start("skill", queued=True)
        t.flush()
        clock.advance(5)
        assert t.mark_running(written) == FinishResult(True, RunStatus.RUNNING)
        run = stored(t, written.id)
        assert (run.status, run.heartbeat_at) == (RunStatus.RUNNING, clock.now())
    finally:
        store.release.set()
        t.close()


def test_mark_running_a_run_that_was_not_recorded(db_url: str) -> None:
    """Switched off, a queued handle still moves to running, locally."""
    with ExecutionTracker(db_url, strict=True, enabled=False) as off:
        h = off.start("skill", queued=True)
        assert off.mark_running(h) == FinishResult(True, RunStatus.RUNNING)
        assert h.status is RunStatus.RUNNING
        assert off.list_runs().runs == []


def test_mark_running_on_a_store_that_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    store = open_store(url)
    t = ExecutionTracker(store, durability="sync", strict=False)
    try:
        h = t.start("skill", queued=True)
        store.close()
        assert t.mark_running(h.id) == FinishResult(False, None)
        [(cause, count)] = t.stats().failures_by_cause.items()
        assert (cause.split(":")[0], count) == ("mark_running", 1)
    finally:
        t.close()


# -- a run this process did not start ----------------------------------------------------


def test_finishing_another_process_run_by_id(
    db_url: str, t: ExecutionTracker, clock: FakeClock
) -> None:
    """Its stored metadata is merged under the new one, every error field is written,
    its duration is measured from its stored start, and a second finish is told the
    first's status."""
    with ExecutionTracker(db_url, strict=True, durability="sync", clock=clock) as other:
        h = other.start("skill", metadata={"a": 1, "b": 1})
        clock.advance(2.5)
        result = t.finish_error(
            h.id, code="quota", message="over quota", retryable=True, metadata={"b": 2}
        )
        assert result == FinishResult(True, RunStatus.ERROR)
        run = stored(t, h.id)
        assert error_fields(run) == (RunStatus.ERROR, "quota", "over quota", True)
        assert dict(run.metadata) == {"a": 1, "b": 2}
        assert run.duration_ms == 2500.0
        assert t.finish_success(h.id) == FinishResult(False, RunStatus.ERROR)
        assert t.finish_success("no-such-run") == FinishResult(False, None)


def test_a_foreign_finish_keeps_the_metadata_limit(db_url: str) -> None:
    with (
        ExecutionTracker(db_url, strict=True, durability="sync") as other,
        ExecutionTracker(db_url, strict=True, durability="sync", metadata_limit=64) as t,
    ):
        h = other.start("skill", metadata={"a": 1})
        t.finish_success(h.id, metadata={"big": "x" * 500})
        assert dict(stored(t, h.id).metadata) == CUT_TO_64
        # a finish that adds nothing leaves the stored metadata as the starter wrote it
        big = other.start("skill", metadata={"big": "x" * 500})
        t.finish_success(big.id)
        assert dict(stored(t, big.id).metadata) == {"big": "x" * 500}


# {"a": 1} and then {"big": "x" * 500} under a limit of 64 bytes: the text cut while
# it is normalised (to the 256-character floor), then the whole dropped for its size.
CUT_TO_64 = {"a": 1, "_truncated": {"dropped_chars": 244, "original_bytes": 307}}


def test_a_finish_and_annotations_keep_the_metadata_limit(db_url: str) -> None:
    """The limit applies to what a finish adds and to what was added before it, as
    for a run this process did not start."""
    with ExecutionTracker(db_url, strict=True, durability="sync", metadata_limit=64) as t:
        by_finish = t.start("skill", metadata={"a": 1})
        by_finish.finish_success(metadata={"big": "x" * 500})
        annotated = t.start("skill", metadata={"a": 1})
        annotated.update_metadata({"big": "x" * 500})
        annotated.finish_success()
        assert dict(stored(t, by_finish.id).metadata) == CUT_TO_64
        assert dict(stored(t, annotated.id).metadata) == CUT_TO_64


def test_start_metadata_keeps_the_limit_and_its_problems_are_counted(db_url: str) -> None:
    with ExecutionTracker(db_url, strict=False, durability="sync", metadata_limit=64) as t:
        h = t.start("skill", metadata={"a": 1, "big": "x" * 500})
        assert dict(stored(t, h.id).metadata) == CUT_TO_64
        bad = t.start("skill", metadata={"bad": Unprintable()})
        assert dict(stored(t, bad.id).metadata) == {"bad": "<unprintable Unprintable>"}
        assert t.stats().failures_by_cause == {"unprintable value: RuntimeError: no text": 1}


@pytest.mark.parametrize("foreign", [False, True])
def test_unusable_finish_metadata_is_counted_and_the_run_still_ends(
    db_url: str, foreign: bool
) -> None:
    with (
        ExecutionTracker(db_url, durability="sync") as other,
        ExecutionTracker(db_url, strict=False, durability="sync") as t,
    ):
        h = (other if foreign else t).start("skill", metadata={"a": 1})
        cyclic: dict[str, Any] = {"ok": 2}
        cyclic["self"] = cyclic
        assert t.finish_success(h.id, metadata=["not", "a", "mapping"]) == FinishResult(  # type: ignore[arg-type]
            True, RunStatus.SUCCESS
        )
        run = stored(t, h.id)
        assert (run.status, dict(run.metadata)) == (RunStatus.SUCCESS, {"a": 1})
        h2 = (other if foreign else t).start("skill", metadata={"a": 1})
        t.finish_success(h2.id, metadata={"cyclic": cyclic, "bad": Unprintable()})
        assert dict(stored(t, h2.id).metadata) == {
            "a": 1,
            "cyclic": {"ok": 2, "self": "[cycle]"},
            "bad": "<unprintable Unprintable>",
        }
        assert t.stats().failures_by_cause == {
            "metadata: InvalidArgumentError: metadata must be a mapping (a dict), not list": 1,
            "unprintable value: RuntimeError: no text": 1,
        }


def test_a_foreign_finish_while_switched_off_writes_nothing(db_url: str) -> None:
    with (
        ExecutionTracker(db_url, strict=True, durability="sync") as other,
        ExecutionTracker(db_url, strict=True, enabled=False) as off,
    ):
        h = other.start("skill")
        assert off.finish_success(h.id) == FinishResult(False, None)
        assert stored(other, h.id).status is RunStatus.RUNNING


def test_a_foreign_finish_on_a_store_that_fails(tmp_path: Path) -> None:
    """Counted under "finish" outside strict mode; raised in it."""
    for strict in (False, True):
        store = open_store(f"sqlite:///{tmp_path / f'{strict}.db'}")
        t = ExecutionTracker(store, durability="sync", strict=strict)
        try:
            store.close()
            if strict:
                with pytest.raises(StoreError, match="is closed"):
                    t.finish_success("some-run")
            else:
                assert t.finish_success("some-run") == FinishResult(False, None)
                [(cause, count)] = t.stats().failures_by_cause.items()
                assert (cause.split(":")[0], count) == ("finish", 1)
        finally:
            t.close()


def test_unusable_finish_metadata_in_strict_mode_is_raised_once_the_run_ended(
    db_url: str, t: ExecutionTracker
) -> None:
    """As for any value problem: counted at the finish, raised by the next check."""
    with ExecutionTracker(db_url, strict=True, durability="sync") as other:
        for starter in (t, other):
            h = starter.start("skill")
            assert t.finish_success(h.id, metadata=42) == FinishResult(  # type: ignore[arg-type]
                True, RunStatus.SUCCESS
            )
            with pytest.raises(InvalidArgumentError, match=r"not int$"):
                t.flush()
            assert stored(t, h.id).status is RunStatus.SUCCESS


# -- repr --------------------------------------------------------------------------------


def test_repr_names_the_store_the_write_path_and_the_switch(db_url: str) -> None:
    with (
        ExecutionTracker(db_url, durability="sync") as on,
        ExecutionTracker(db_url, enabled=False) as off,
    ):
        assert repr(on) == f"<ExecutionTracker {db_url} sync on>"
        assert repr(off) == f"<ExecutionTracker {db_url} async off>"


# -- the synchronous write path ----------------------------------------------------------


def test_start_records_the_parent_it_is_given(t: ExecutionTracker) -> None:
    outer = t.start("chat")
    child = t.start("skill", parent_id="elsewhere")
    with t.with_run("chat", "block") as block:
        inherited = t.start("skill")
    assert (stored(t, child.id).parent_id, stored(t, outer.id).parent_id) == ("elsewhere", None)
    assert stored(t, inherited.id).parent_id == block.id


def test_a_run_finished_elsewhere_first_takes_that_status(db_url: str, t: ExecutionTracker) -> None:
    """The store keeps the first finish (another process's, the reaper's): this
    process's finish is told so, and its handle takes that status."""
    h = t.start("skill")
    with ExecutionTracker(db_url, strict=True, durability="sync") as other:
        other.finish_with_status(h.id, "timeout", error_code="lease_expired")
    assert h.finish_success() == FinishResult(False, RunStatus.TIMEOUT)
    assert (h.status, h.finished) == (RunStatus.TIMEOUT, True)
    assert h.finish_error(ValueError("x")) == FinishResult(False, RunStatus.TIMEOUT)
    assert stored(t, h.id).error_code == "lease_expired"


def test_a_sync_finish_the_store_refuses_is_counted(tmp_path: Path) -> None:
    """The handle keeps its own first status; the failure is counted under "finish";
    a second finish is told that status at once."""
    store = FailingStore(open_store(f"sqlite:///{tmp_path / 'runs.db'}"), fail=set())
    t = ExecutionTracker(store, durability="sync", strict=False)
    try:
        h = t.start("skill")
        store.fail = {"finish"}
        assert h.finish_success() == FinishResult(False, None)
        assert h.status is RunStatus.SUCCESS
        assert h.finish_error(ValueError("x")) == FinishResult(False, RunStatus.SUCCESS)
        assert t.stats().failures_by_cause == {"finish: StoreError: injected store failure": 1}
    finally:
        t.close()


class SlowToFail(FailingStore):
    """A store whose failing operations first wait (a server that does not answer)."""

    def _check(self, op: str) -> None:
        if op in self.fail:
            time.sleep(0.3)  # longer than the breaker's threshold
        super()._check(op)


def test_a_store_that_fails_fast_opens_no_breaker(tmp_path: Path) -> None:
    store = FailingStore(
        open_store(f"sqlite:///{tmp_path / 'runs.db'}"),
        fail={"create"},
        error=StoreUnavailableError("down"),
    )
    t = ExecutionTracker(store, durability="sync", strict=False)
    try:
        for _ in range(3):
            t.start("skill")
        s = t.stats()
        assert (store.calls["create"], s.unavailable, s.dropped) == (3, False, 0)
        assert s.failures_by_cause == {"start: StoreUnavailableError: down": 3}
    finally:
        t.close()


def test_a_store_that_fails_slowly_opens_the_breaker_until_it_answers(tmp_path: Path) -> None:
    """While open, every write skips the store and is counted as dropped; the probe
    closes it once the store answers."""
    store = SlowToFail(
        open_store(f"sqlite:///{tmp_path / 'runs.db'}"),
        fail=set(),
        error=StoreUnavailableError("down"),
    )
    t = ExecutionTracker(store, durability="sync", strict=False)
    try:
        h = t.start("skill", "before")
        store.fail = {"create", "finish", "schema_version"}
        t.start("skill")  # waits, fails, opens the breaker
        assert t.stats().unavailable
        t.start("skill")
        h.finish_success()
        s = t.stats()
        assert (store.calls["create"], store.calls.get("finish", 0), s.dropped) == (2, 0, 2)
        assert s.failures_by_cause == {"start: StoreUnavailableError: down": 1}
        store.fail = set()
        deadline = time.monotonic() + 30
        while t.stats().unavailable:
            assert time.monotonic() < deadline, "the probe never closed the breaker"
            time.sleep(0.01)
        assert t.start("skill", "after").recorded
        assert sorted(r.source_ref or "" for r in t.list_runs().runs) == ["after", "before"]
    finally:
        t.close()


# -- finishing: what each path answers ---------------------------------------------------


def test_finishing_an_open_run_by_id_updates_its_handle(either: ExecutionTracker) -> None:
    h = either.start("skill")
    assert either.finish_error(h.id, code="quota") == FinishResult(True, RunStatus.ERROR)
    assert (h.status, h.finished) == (RunStatus.ERROR, True)
    assert error_fields(stored(either, h.id)) == (RunStatus.ERROR, "quota", "quota", False)


def test_a_finish_is_answered_with_the_status_it_queued_or_stored(
    either: ExecutionTracker,
) -> None:
    h = either.start("skill")
    assert h.finish_with_status("canceled") == FinishResult(True, RunStatus.CANCELED)


def test_a_finish_of_a_run_that_was_not_recorded_applies_locally(db_url: str) -> None:
    with ExecutionTracker(db_url, strict=True, enabled=False) as off:
        h = off.start("skill")
        assert h.finish_error(code="x") == FinishResult(True, RunStatus.ERROR)
        assert h.finish_success() == FinishResult(False, RunStatus.ERROR)


def test_an_unprintable_message_is_counted_and_stored_as_a_placeholder(db_url: str) -> None:
    t = ExecutionTracker(db_url, durability="sync", strict=False)
    try:
        h = t.start("skill")
        h.finish_error(code="x", message=Unprintable())  # type: ignore[arg-type]
        assert stored(t, h.id).error_message == "<unprintable Unprintable>"
        assert t.stats().failures_by_cause == {"unprintable value: RuntimeError: no text": 1}
    finally:
        t.close()


@pytest.mark.parametrize("lease", [0, -1])
def test_a_lease_must_be_positive(db_url: str, lease: float) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ExecutionTracker(db_url, lease=lease)
    assert str(info.value) == f"lease={lease}: must be > 0 seconds (or None)"


def test_a_lease_under_a_second_is_allowed(db_url: str) -> None:
    with ExecutionTracker(db_url, lease=0.5, heartbeat_interval=0.1) as t:
        assert t.lease == 0.5


def test_a_background_failure_is_raised_at_the_next_call_in_strict_mode(
    tmp_path: Path,
) -> None:
    """Strict, default write path: the writer's failure is kept and raised by the next
    start, once; a finish raises it too."""
    store = FailingStore(open_store(f"sqlite:///{tmp_path / 'runs.db'}"), fail={"apply"})
    t = ExecutionTracker(store, strict=True)

    def failed(times: int) -> None:  # the writer's failures, counted (stats never raise)
        deadline = time.monotonic() + 30
        while t.stats().failures < times:
            assert time.monotonic() < deadline, "the writer never failed"
            time.sleep(0.01)

    try:
        first = t.start("skill")
        failed(1)
        with pytest.raises(StoreError, match="injected store failure"):
            t.start("skill")
        second = t.start("skill")  # raised once: this one is queued
        failed(2)
        with pytest.raises(StoreError, match="injected store failure"):
            second.finish_success()
        assert first.status is RunStatus.RUNNING
    finally:
        store.fail = set()
        t.close()


class Gate(FailingStore):
    """A store whose first apply waits for ``release``; it records each batch's size."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, fail=set())
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def apply(self, commands: Any) -> Any:
        self.batches.append(len(commands))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return super().apply(commands)


def test_a_finish_folds_into_its_still_queued_create(tmp_path: Path) -> None:
    """The default write path: a run finished while its create still waits is one
    command, one row write."""
    store = Gate(open_store(f"sqlite:///{tmp_path / 'runs.db'}"))
    t = ExecutionTracker(store, strict=True)
    try:
        t.start("skill", "holds the writer")
        assert store.entered.wait(30)
        h = t.start("skill", "folded")
        assert h.finish_success() == FinishResult(True, RunStatus.SUCCESS)
        store.release.set()
        assert t.flush(30)
        assert store.batches == [1, 1]
        assert stored(t, h.id).status is RunStatus.SUCCESS
    finally:
        store.release.set()
        t.close()


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_while_the_process_is_ending_a_cancelled_run_is_a_shutdown(
    db_url: str, durability: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once SIGTERM was passed on (exectrack's handler sets _exit.terminating; the
    real signal is tested in test_crash_and_shutdown.py), a run its server cancelled
    ends as canceled/shutdown; other endings keep theirs."""
    import asyncio

    from exectrack import _exit

    with ExecutionTracker(db_url, strict=True, durability=durability) as t:
        monkeypatch.setattr(_exit, "terminating", True)

        @t.with_run("chat", "cancelled")
        async def cancelled() -> None:
            raise asyncio.CancelledError

        @t.with_run("chat", "fine")
        def fine() -> None:
            return None

        with pytest.raises(asyncio.CancelledError):
            asyncio.run(cancelled())
        fine()
        monkeypatch.setattr(_exit, "terminating", False)
        t.flush()
        ends = {r.source_ref: (r.status, r.error_code) for r in t.list_runs().runs}
        assert ends == {
            "cancelled": (RunStatus.CANCELED, "shutdown"),
            "fine": (RunStatus.SUCCESS, None),
        }


def test_a_run_of_an_earlier_fork_generation_is_not_finished(
    t: ExecutionTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a forked child sees of its parent's runs (its fork generation is one more:
    the real fork is in test_fork_locks.py): finishing one changes nothing here."""
    from exectrack import _owner

    h = t.start("skill")
    with monkeypatch.context() as m:
        m.setattr(_owner, "generation", _owner.generation + 1)
        assert h.finish_success() == FinishResult(False, None)
        assert t.finish_success(h.id) == FinishResult(False, None)
    assert (h.status, stored(t, h.id).status) == (RunStatus.RUNNING, RunStatus.RUNNING)


# -- construction and what a start stores ------------------------------------------------


def test_a_start_stores_its_refs_and_its_lease(db_url: str, clock: FakeClock) -> None:
    with ExecutionTracker(db_url, durability="sync", clock=clock, lease=30) as t:
        bare = t.start("skill")
        full = t.start("skill", "ref", "session")
        assert (stored(t, bare.id).source_ref, stored(t, bare.id).session_id) == (None, None)
        assert (stored(t, full.id).source_ref, stored(t, full.id).session_id) == (
            "ref",
            "session",
        )
        assert stored(t, bare.id).lease_until == datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def test_an_unprintable_session_id_is_counted(db_url: str) -> None:
    with ExecutionTracker(db_url, durability="sync", strict=False) as t:
        h = t.start("skill", session_id=Unprintable())  # type: ignore[arg-type]
        assert stored(t, h.id).session_id == "<unprintable Unprintable>"
        assert t.stats().failures_by_cause == {"unprintable value: RuntimeError: no text": 1}


@pytest.mark.parametrize(
    ("env", "given", "reaper"),
    [(None, None, False), ("1", None, True), ("1", False, False), (None, True, True)],
)
def test_the_reaper_switch_argument_beats_the_environment(
    db_url: str, monkeypatch: pytest.MonkeyPatch, env: str | None, given: bool | None, reaper: bool
) -> None:
    if env is not None:
        monkeypatch.setenv("EXECTRACK_REAPER", env)
    with ExecutionTracker(db_url, reaper=given, reap_interval=60) as t:
        assert t.reaper is reaper
        assert t.monitor is not None
        assert t.monitor.reap_interval == (60 if reaper else None)


def test_the_monitor_follows_the_lease_and_the_switch(db_url: str) -> None:
    """A lease (the default) or the reaper needs a monitor, tracking off needs none; its
    heartbeat is a third of the lease unless given."""
    with ExecutionTracker(db_url, lease=9) as t:
        assert t.monitor is not None
        assert (t.monitor.lease, t.monitor.heartbeat_interval) == (9, 3)
    with ExecutionTracker(db_url, lease=9, heartbeat_interval=2) as t:
        assert t.monitor is not None and t.monitor.heartbeat_interval == 2
    with ExecutionTracker(db_url, lease=None, reaper=False) as t:
        assert t.monitor is None
    with ExecutionTracker(db_url, lease=None, reaper=True, reap_interval=60) as t:
        assert t.monitor is not None and t.monitor.lease is None
    with ExecutionTracker(db_url, lease=9, reaper=True, enabled=False) as t:
        assert t.monitor is None


@pytest.mark.parametrize("beat", [0, 9, 10])
def test_the_heartbeat_must_be_shorter_than_the_lease(db_url: str, beat: float) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ExecutionTracker(db_url, lease=9, heartbeat_interval=beat)
    assert str(info.value) == (
        f"heartbeat_interval={beat}: must be > 0 and shorter than the lease (9)"
    )


def test_given_settings_are_used_instead_of_the_environment(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exectrack._config import Settings

    monkeypatch.setenv("EXECTRACK_ENABLED", "1")
    with ExecutionTracker(db_url, settings=Settings(enabled=False, strict=True)) as t:
        assert (t.enabled, t.strict) == (False, True)


def test_a_bad_durability_is_named(db_url: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ExecutionTracker(db_url, durability="fast")  # type: ignore[arg-type]
    assert str(info.value) == "durability='fast': use 'async' or 'sync'"


def test_a_given_classifier_is_used(db_url: str) -> None:
    from exectrack import ErrorClassifier

    class QuotaError(Exception):
        pass

    classifier = ErrorClassifier()
    classifier.register(QuotaError, "quota", retryable=True)
    with ExecutionTracker(db_url, durability="sync", classifier=classifier) as t:
        h = t.start("skill")
        h.finish_error(QuotaError("over"))
        assert error_fields(stored(t, h.id)) == (RunStatus.ERROR, "quota", "over", True)


def test_close_closes_the_store_it_opened_and_only_that(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    opened = ExecutionTracker(url, durability="sync")
    opened.close()
    with pytest.raises(StoreError, match="is closed"):
        opened.store.get("x")
    given = open_store(url)
    ExecutionTracker(given, durability="sync").close()
    assert given.get("x") is None  # still open
    given.close()


def test_close_closes_the_store_it_opened_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    t = ExecutionTracker(durability="sync")
    t.close()
    with pytest.raises(StoreError, match="is closed"):
        t.store.get("x")


def test_runs_carry_the_owner_given(db_url: str) -> None:
    with ExecutionTracker(db_url, durability="sync", owner="worker-7") as t:
        h = t.start("skill")
        assert (t.owner, stored(t, h.id).owner) == ("worker-7", "worker-7")


def test_a_store_that_is_down_is_noted_once_and_writes_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default write path keeps its writes queued while the store is unavailable,
    says so once (not counted as a failure), and writes them when it answers."""
    store = FailingStore(
        open_store(f"sqlite:///{tmp_path / 'runs.db'}"),
        fail={"apply"},
        error=StoreUnavailableError("down"),
    )
    t = ExecutionTracker(store, strict=False)
    try:
        h = t.start("skill")

        def notes() -> list[str]:
            return [r.getMessage() for r in caplog.records if "kept queued" in r.getMessage()]

        deadline = time.monotonic() + 30
        while not (t.stats().unavailable and notes()):  # the writer logs after it marks
            assert time.monotonic() < deadline, "the writer never saw the store down"
            time.sleep(0.01)
        s = t.stats()
        assert (s.queued, s.failures, s.dropped) == (1, 0, 0)
        assert notes() == [
            "exectrack: store unavailable: StoreUnavailableError: down; "
            "writes are kept queued until it answers"
        ]
        store.fail = set()
        assert t.flush(30)
        assert stored(t, h.id).status is RunStatus.RUNNING
    finally:
        store.fail = set()
        t.close()


def test_the_queue_size_is_the_writers(tmp_path: Path) -> None:
    """Runs started while the writer's queue is full are dropped and counted."""
    store = Gate(open_store(f"sqlite:///{tmp_path / 'runs.db'}"))
    t = ExecutionTracker(store, strict=False, queue_size=2)
    try:
        t.start("skill", "holds the writer")
        assert store.entered.wait(30)
        handles = [t.start("skill", f"r{i}") for i in range(4)]
        assert [h.recorded for h in handles] == [True, True, False, False]
        assert t.stats().dropped == 2
    finally:
        store.release.set()
        t.close()


def test_durations_are_measured_from_the_runs_own_start(
    t: ExecutionTracker, clock: FakeClock
) -> None:
    clock.advance(90)  # the tracker's clock is well past zero when the run starts
    h = t.start("chat")
    clock.advance(0.25)
    h.add_items()
    clock.advance(1.25)
    h.finish_success()
    run = stored(t, h.id)
    assert (run.duration_ms, run.first_item_ms) == (1500.0, 250.0)


def test_a_sync_finish_of_a_run_whose_row_was_deleted(t: ExecutionTracker, db_url: str) -> None:
    """Someone deleted the row: the store finishes nothing, the handle keeps its own
    status, the host is told it did not apply."""
    import sqlite3

    h = t.start("skill")
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("DELETE FROM runs WHERE id = ?", (h.id,))
    assert h.finish_success() == FinishResult(False, None)
    assert h.status is RunStatus.SUCCESS


def test_an_unprintable_annotation_is_counted(db_url: str) -> None:
    with ExecutionTracker(db_url, durability="sync", strict=False) as t:
        h = t.start("skill")
        h.annotate(v=Unprintable())
        h.finish_success()
        assert t.stats().failures == 1
        assert "v" in stored(t, h.id).metadata


class SlowFinish(FailingStore):
    """A store whose first finish waits for ``release`` (a slow commit)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, fail=set())
        self.entered = threading.Event()
        self.release = threading.Event()

    def finish(self, cmd: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30)
        return super().finish(cmd)


def test_a_racing_sync_finisher_is_told_what_the_store_kept(db_url: str) -> None:
    """While one thread's finish is being written, a second finish of the same handle
    waits for it and is told the status the store kept (here: the reaper's, which
    got there first), not the first thread's wish."""
    store = SlowFinish(open_store(db_url))
    t = ExecutionTracker(store, durability="sync", strict=True)
    try:
        h = t.start("skill")
        first = threading.Thread(target=h.finish_success)
        first.start()
        assert store.entered.wait(30)
        with ExecutionTracker(db_url, durability="sync") as reaper:
            reaper.finish_with_status(h.id, "timeout", error_code="lease_expired")
        threading.Timer(0.2, store.release.set).start()  # after the second finish waits
        assert h.finish_error(ValueError("x")) == FinishResult(False, RunStatus.TIMEOUT)
        first.join(30)
        assert not first.is_alive()
        assert h.status is RunStatus.TIMEOUT
    finally:
        store.release.set()
        t.close()


# -- with_run ----------------------------------------------------------------------------


def test_with_run_records_every_field_it_is_given(t: ExecutionTracker, clock: FakeClock) -> None:
    def refuse(result: Any) -> ErrorInfo | None:
        return ErrorInfo("refused", f"got {result}") if result == "no" else None

    tracked = t.with_run(
        "skill", "ref", "sess", {"k": 1}, deadline=timedelta(seconds=30), classify_result=refuse
    )
    with tracked as h:
        pass
    run = stored(t, h.id)
    assert (run.source, run.source_ref, run.session_id, dict(run.metadata)) == (
        "skill",
        "ref",
        "sess",
        {"k": 1},
    )
    assert run.deadline_at == clock.now() + timedelta(seconds=30)
    assert run.status is RunStatus.SUCCESS

    @t.with_run("chat", session_id="s2", deadline=5, classify_result=refuse)
    def answer(text: str) -> str:
        return text

    assert answer("no") == "no"
    run = t.list_runs(source="chat").runs[0]
    assert (run.session_id, run.deadline_at) == ("s2", clock.now() + timedelta(seconds=5))
    assert error_fields(run) == (RunStatus.ERROR, "refused", "got no", False)


# -- runs that are not recorded ----------------------------------------------------------


def test_a_run_of_a_switched_off_tracker_is_not_recorded(db_url: str) -> None:
    with ExecutionTracker(db_url, strict=True, enabled=False) as off:
        h = off.start("skill")
        assert h.recorded is False
        assert h.finish_success() == FinishResult(True, RunStatus.SUCCESS)


def test_a_run_started_once_shutdown_began_is_neither_recorded_nor_kept_open(
    db_url: str,
) -> None:
    with ExecutionTracker(db_url, strict=True, durability="sync") as t:
        before = t.start("skill")
        assert t.shutdown() == 1
        late = t.start("skill")
        assert late.recorded is False
        assert t.shutdown() == 0  # nothing of this tracker's is open
        assert t.finish_success(late.id) == FinishResult(False, None)  # unknown here
        assert late.finish_success() == FinishResult(True, RunStatus.SUCCESS)
        assert [r.id for r in t.list_runs().runs] == [before.id]


# -- a wrapper's end never raises into the host --------------------------------------------


class BreakingClock(FakeClock):
    """A user's clock whose monotonic time fails once ``broken`` is set."""

    broken = False

    def monotonic_ns(self) -> int:
        if self.broken:
            raise RuntimeError("clock broke")
        return super().monotonic_ns()


def test_a_wrapper_whose_finish_fails_returns_and_counts_it(db_url: str) -> None:
    clock = BreakingClock(datetime(2026, 1, 1, tzinfo=UTC))
    with ExecutionTracker(db_url, strict=False, durability="sync", clock=clock) as t:
        with t.with_run("skill") as h:
            clock.broken = True
        assert t.stats().failures_by_cause == {"finish: RuntimeError: clock broke": 1}
        assert stored(t, h.id).status is RunStatus.RUNNING  # left to the reaper
    strict_clock = BreakingClock(datetime(2026, 1, 1, tzinfo=UTC))
    with ExecutionTracker(db_url, strict=True, durability="sync", clock=strict_clock) as t:
        with pytest.raises(RuntimeError, match="clock broke"), t.with_run("skill"):
            strict_clock.broken = True


def test_once_sigterm_was_seen_a_finish_waits_for_its_commit_only_so_long(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store stuck, the finish returns after TERMINATING_FLUSH seconds (the
    process is about to die: its commit is worth a short wait, not a hang); the
    finish stays queued and is written once the store answers."""
    from exectrack import _exit

    store = Gated(db_url)
    t = ExecutionTracker(store, strict=True)
    try:
        h = t.start("skill")
        assert store.entered.wait(30)  # the writer holds the start, stuck in the store
        monkeypatch.setattr(_exit, "terminating", True)
        assert h.finish_success() == FinishResult(True, RunStatus.SUCCESS)
        store.release.set()
        assert stored(t, h.id).status is RunStatus.SUCCESS
    finally:
        store.release.set()
        t.close()

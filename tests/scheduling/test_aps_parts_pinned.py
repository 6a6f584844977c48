"""The APScheduler bridge's framework-free parts pinned to exact values: the policy's
checks and back-off, which due time each call is for, how many due times a coalesced
misfire dropped, the schedule metadata, the recorded status and the execution's
book-keeping (issue 11's bar for the integrations)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import exectrack
from exectrack import ExecutionTracker, InvalidArgumentError, RunStatus
from exectrack.integrations import _aps_parts as parts

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


# -- JobPolicy -----------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = parts.JobPolicy()
    assert (policy.timeout, policy.retries, policy.backoff, policy.backoff_max) == (
        None,
        0,
        1.0,
        60.0,
    )
    assert dict(policy.metadata) == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout=0: seconds > 0, or None"),
        ({"timeout": -1.5}, "timeout=-1.5: seconds > 0, or None"),
        ({"timeout": True}, "timeout=True: seconds > 0, or None"),
        ({"timeout": "5"}, "timeout='5': seconds > 0, or None"),
        ({"retries": True}, "retries=True: an integer >= 0"),
        ({"retries": 1.0}, "retries=1.0: an integer >= 0"),
        ({"retries": -1}, "retries=-1: an integer >= 0"),
        ({"backoff": -0.5}, "backoff=-0.5: seconds >= 0"),
        ({"backoff": False}, "backoff=False: seconds >= 0"),
        ({"backoff_max": -1}, "backoff_max=-1: seconds >= 0"),
        ({"backoff_max": "60"}, "backoff_max='60': seconds >= 0"),
    ],
)
def test_policy_rejects_each_bad_option_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        parts.JobPolicy(**options)
    assert str(err.value) == message


def test_policy_accepts_the_edges() -> None:
    policy = parts.JobPolicy(timeout=0.001, retries=0, backoff=0, backoff_max=0)
    assert (policy.timeout, policy.backoff, policy.backoff_max) == (0.001, 0, 0)
    assert parts.JobPolicy(retries=3).retries == 3


def test_backoff_doubles_from_the_first_retry_up_to_its_cap() -> None:
    policy = parts.JobPolicy(backoff=1, backoff_max=60)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 6, 7, 8)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        32.0,
        60.0,
        60.0,
    ]
    assert all(type(policy.delay(n)) is float for n in (1, 8))


# -- which due time each call is for -----------------------------------------------------


def test_each_call_takes_the_next_due_time_within_the_grace() -> None:
    """A due time later than the grace was declared missed: the call is for the next
    one; past the list, every call is for the last."""
    now = datetime.now(UTC)
    times = [now - timedelta(seconds=600), now - timedelta(seconds=5), now - timedelta(seconds=1)]
    run_times = parts._RunTimes(times, grace=60)
    assert [run_times.take() for _ in range(4)] == [times[1], times[2], times[2], times[2]]


def test_without_a_grace_every_due_time_is_called_in_order() -> None:
    now = datetime.now(UTC)
    times = [now - timedelta(seconds=600), now - timedelta(seconds=300), now]
    run_times = parts._RunTimes(times, grace=None)
    assert [run_times.take() for _ in range(4)] == [*times, times[-1]]


def test_a_single_due_time_is_taken_however_late() -> None:
    late = datetime.now(UTC) - timedelta(days=1)
    run_times = parts._RunTimes([late], grace=1)
    assert (run_times.take(), run_times.take()) == (late, late)


def test_the_due_time_list_is_copied() -> None:
    now = datetime.now(UTC)
    times = [now - timedelta(seconds=2), now]
    run_times = parts._RunTimes(times, grace=None)
    times.clear()
    assert run_times.take() == now - timedelta(seconds=2)


# -- coalesced misfires --------------------------------------------------------------------


class _EverySecond:
    """A trigger firing every ``step`` seconds; records the ``now`` it was given."""

    def __init__(self, step: float = 1.0) -> None:
        self.step = timedelta(seconds=step)
        self.nows: list[datetime] = []

    def get_next_fire_time(self, previous: datetime, now: datetime) -> datetime:
        self.nows.append(now)
        return previous + self.step


class _Job:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


def test_coalesced_counts_the_due_times_before_the_one_kept() -> None:
    trigger = _EverySecond(10)
    job = _Job(coalesce=True, next_run_time=T0, trigger=trigger)
    before = datetime.now(UTC)
    assert parts._coalesced(job, [T0 + timedelta(seconds=30)]) == 3  # T0, +10, +20
    assert all(before <= now <= datetime.now(UTC) for now in trigger.nows)
    assert len(trigger.nows) == 3
    assert parts._coalesced(job, [T0 + timedelta(seconds=25), T0 + timedelta(hours=1)]) == 3


def test_coalesced_counts_nothing_when_nothing_was_dropped() -> None:
    trigger = _EverySecond()
    kept = T0 + timedelta(seconds=5)
    assert parts._coalesced(_Job(coalesce=False, next_run_time=T0, trigger=trigger), [kept]) == 0
    assert parts._coalesced(_Job(next_run_time=T0, trigger=trigger), [kept]) == 0  # no flag
    assert parts._coalesced(_Job(coalesce=True, next_run_time=T0, trigger=trigger), []) == 0
    assert parts._coalesced(_Job(coalesce=True, trigger=trigger), [kept]) == 0  # no next time
    assert parts._coalesced(_Job(coalesce=True, next_run_time=None, trigger=trigger), [kept]) == 0
    assert parts._coalesced(_Job(coalesce=True, next_run_time=kept, trigger=trigger), [kept]) == 0
    later = kept + timedelta(seconds=1)
    assert parts._coalesced(_Job(coalesce=True, next_run_time=later, trigger=trigger), [kept]) == 0
    assert trigger.nows == []


def test_coalesced_stops_when_the_trigger_ends_and_at_its_cap() -> None:
    class _Twice:
        def get_next_fire_time(self, previous: datetime, now: datetime) -> datetime | None:
            return previous + timedelta(seconds=1) if previous == T0 else None

    job = _Job(coalesce=True, next_run_time=T0, trigger=_Twice())
    assert parts._coalesced(job, [T0 + timedelta(hours=1)]) == 2
    huge = _Job(coalesce=True, next_run_time=T0, trigger=_EverySecond())
    cap = parts._COALESCE_COUNT_CAP
    assert cap == 100_000
    assert parts._coalesced(huge, [T0 + timedelta(seconds=cap + 50)]) == cap


# -- schedule metadata, times and statuses ----------------------------------------------


def test_schedule_metadata() -> None:
    at = T0 + timedelta(microseconds=1_234_567)
    assert parts._schedule_meta(T0, at, 0) == {
        "scheduled_at": "2026-11-25T12:00:00Z",
        "lateness_ms": 1234.567,
    }
    assert parts._schedule_meta(T0, T0 - timedelta(seconds=3), 4) == {
        "scheduled_at": "2026-11-25T12:00:00Z",
        "lateness_ms": 0.0,
        "coalesced": 4,
    }
    odd = parts._schedule_meta(T0, T0 + timedelta(microseconds=1), 1)["lateness_ms"]
    assert odd == 0.001


def test_times_are_written_in_utc_with_a_z() -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    assert parts._iso(datetime(2026, 11, 25, 17, 30, 0, 250_000, tzinfo=east)) == (
        "2026-11-25T12:00:00.250000Z"
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, RunStatus.SUCCESS),
        (ValueError("x"), RunStatus.ERROR),
        (TimeoutError(), RunStatus.TIMEOUT),
        (parts.JobTimeout(), RunStatus.TIMEOUT),
        (concurrent.futures.CancelledError(), RunStatus.CANCELED),
        (KeyboardInterrupt(), RunStatus.CANCELED),
        (SystemExit(1), RunStatus.CANCELED),
    ],
)
def test_status_without_a_run_maps_the_error(
    error: BaseException | None, status: RunStatus
) -> None:
    assert parts._status(None, error) is status


@pytest.fixture
def tracker(db_url: str) -> Iterator[ExecutionTracker]:
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    yield t
    t.close()


def test_status_of_a_finished_run_is_what_it_recorded(tracker: ExecutionTracker) -> None:
    run = tracker.start("heartbeat", "job")
    assert parts._status(run, None) is RunStatus.SUCCESS  # still open: the mapping
    assert parts._status(run, ValueError()) is RunStatus.ERROR
    run.finish_with_status(RunStatus.TIMEOUT, error_code="deadline_exceeded", error_message="late")
    assert parts._status(run, None) is RunStatus.TIMEOUT
    assert parts._status(run, ValueError()) is RunStatus.TIMEOUT


# -- the execution's book-keeping ---------------------------------------------------------


def test_an_execution_starts_with_its_deadline_and_nothing_settled() -> None:
    policy = parts.JobPolicy(timeout=5)
    before_wall, before = datetime.now(UTC), time.monotonic()
    active = parts._Active("job-1", T0, policy)
    assert (active.job_id, active.scheduled_at, active.policy) == ("job-1", T0, policy)
    assert before_wall <= active.started_at <= datetime.now(UTC)
    assert active.started_at.tzinfo is UTC
    assert before <= active.t0 <= time.monotonic()
    ctx = active.context
    assert (ctx.job_id, ctx.scheduled_at, ctx.deadline) == ("job-1", T0, active.t0 + 5)
    assert (ctx.run_id, ctx.attempt, ctx.stop_requested) == (None, 0, False)
    assert (active.reason, active.run, active.done, active.timed_out) == (None, None, False, False)
    assert active.lock.acquire(blocking=False)
    active.lock.release()
    assert parts._Active("job-2", T0, parts.JobPolicy()).context.deadline is None
    assert repr(ctx) == "<ExecutionContext job-1 attempt=0>"


def test_settle_loses_to_a_timeout_that_came_first() -> None:
    active = parts._Active("job", T0, parts.JobPolicy())
    assert active.settle() is True and active.done is True
    timed = parts._Active("job", T0, parts.JobPolicy(timeout=1))
    timed.timed_out = True
    assert timed.settle() is False and timed.done is False


def test_stop_names_the_cause_once_and_asks_the_job_to_stop() -> None:
    active = parts._Active("job", T0, parts.JobPolicy())
    parts._stop(active, "shutdown")  # no reason block: only the flag
    assert active.context.stop_requested
    with pytest.raises(concurrent.futures.CancelledError):
        active.context.raise_if_stopping()
    active = parts._Active("job", T0, parts.JobPolicy())
    active.reason = exectrack.CancelReason()
    parts._stop(active, "deadline_exceeded")
    parts._stop(active, "shutdown")
    assert (active.reason.code, active.context.stop_requested) == ("deadline_exceeded", True)


def test_a_context_not_stopping_lets_the_job_go_on() -> None:
    ctx = parts.ExecutionContext("job", T0, None)
    ctx.raise_if_stopping()
    assert not ctx.stop_requested


def test_the_executor_sees_the_same_job_with_the_tracked_function() -> None:
    class _Real:
        id = "job-7"

        def __str__(self) -> str:
            return "job-7 (every 10 s)"

        def __repr__(self) -> str:
            return "<Job id=job-7>"

    def tracked() -> None: ...

    view = parts._JobView(_Real(), tracked)
    assert (view.id, view.func, str(view), repr(view)) == (
        "job-7",
        tracked,
        "job-7 (every 10 s)",
        "<Job id=job-7>",
    )


def test_times_are_utc_in_any_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's zone (UTC-03:30 here) never leaks into the metadata."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    try:
        assert time.timezone == 12_600, "no zone data for America/St_Johns on this machine"
        assert parts._iso(T0) == "2026-11-25T12:00:00Z"
        assert parts._schedule_meta(T0, T0, 0)["scheduled_at"] == "2026-11-25T12:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()

"""The APScheduler bridge pinned exactly (mutation testing, issue 11): what listeners
get for a timeout and a refused submission, a coroutine run's metadata and context,
retries' error lists, detach leaving nothing behind, the process-pool warning."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.executors.base import BaseExecutor, MaxInstancesReachedError
from apscheduler.executors.pool import ProcessPoolExecutor, ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

import exectrack
import exectrack.integrations.apscheduler as aps
from exectrack import ExecutionTracker, InvalidArgumentError, RunStatus
from exectrack.integrations.apscheduler import (
    CAUSE_TEXTS,
    Execution,
    JobPolicy,
    JobTimeout,
    SchedulerBridge,
    attach,
    current_execution,
)
from scheduling import jobs
from scheduling.helpers import await_until, finished, runs_of, wait_until

LOGGER = "exectrack.integrations.apscheduler"
SCHEDULE_KEYS = {"scheduled_at", "lateness_ms"}


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class RefusingExecutor(BaseExecutor):  # type: ignore[misc]
    """An executor that refuses every job (a pool closed under the scheduler)."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        raise RuntimeError("the pool is closed")


# -- timeouts --------------------------------------------------------------------------


def test_thread_timeout_tells_listeners_once_and_stores_exact_metadata(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """At a thread job's deadline listeners get one Execution (timeout,
    deadline_exceeded, the run's id, no result, no error, the policy's metadata); the
    job's late return adds none; the run's metadata holds exactly the known keys."""
    got: list[Execution] = []
    bridge = attach(scheduler, tracker, listeners=[got.append])
    bridge.set_policy("hang", timeout=0.2, metadata={"team": "mail"})
    ended: list[Any] = []
    scheduler.add_listener(ended.append, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    due = datetime.now(UTC)
    scheduler.add_job(jobs.hangs_until_told, "date", run_date=due, id="hang")
    scheduler.start()
    wait_until(lambda: ended, "the job's late end")
    assert isinstance(ended[0].exception, JobTimeout)
    assert str(ended[0].exception) == "the task ran past its timeout (0.2 s)"
    (run,) = runs_of(tracker, "hang")
    (execution,) = got
    assert (execution.job_id, execution.run_id, execution.status, execution.cause) == (
        "hang",
        run.id,
        RunStatus.TIMEOUT,
        "deadline_exceeded",
    )
    assert (execution.result, execution.error, execution.attempts) == (None, None, 1)
    assert execution.scheduled_at == due and execution.started_at is not None
    assert execution.metadata == {"team": "mail"}
    assert (run.status, run.error_code) == (RunStatus.TIMEOUT, "deadline_exceeded")
    assert set(run.metadata) == SCHEDULE_KEYS | {"team", "trigger", "timeout_s", "attempt"}
    assert (run.metadata["attempt"], run.metadata["timeout_s"]) == (1, 0.2)


def test_coroutine_timeout_message_and_what_listeners_get(tracker: ExecutionTracker) -> None:
    """A coroutine job past its timeout: the run's message and the scheduler's
    JobTimeout name the timeout exactly; listeners get the timeout with the error."""
    got: list[Execution] = []
    seen: list[Any] = []

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker, listeners=[got.append]).set_policy("ahang", timeout=0.1)
        s.add_listener(seen.append, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
        s.add_job(jobs.async_forever, "date", run_date=datetime.now(UTC), id="ahang")
        s.start()
        await await_until(lambda: seen and got, "the job's end")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "ahang")
    assert run.error_message == "the task ran past its timeout (0.1 s)"
    assert str(seen[0].exception) == "the task ran past its timeout (0.1 s)"
    (execution,) = got
    assert (execution.status, execution.run_id, execution.result) == (
        RunStatus.TIMEOUT,
        run.id,
        None,
    )
    assert isinstance(execution.error, JobTimeout)


# -- coroutine jobs ---------------------------------------------------------------------


def test_coroutine_run_has_exact_metadata_deadline_context_and_execution(
    tracker: ExecutionTracker,
) -> None:
    """A coalesced coroutine job with arguments: its run's metadata (policy, schedule,
    coalesced count, trigger, timeout, attempt), its deadline, the context's run id,
    running_runs while it runs, and the Execution (result, no error, run id)."""
    got: list[Execution] = []
    inside: list[Any] = []

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        bridge = attach(s, tracker, listeners=[got.append])
        bridge.set_policy("sum", timeout=30, metadata={"team": "mail"})

        async def add(a: int, b: int = 0) -> int:
            ctx = current_execution()
            inside.append((ctx and ctx.run_id, bridge.running_runs("sum")))
            return a + b

        s.add_job(
            add,
            "interval",
            seconds=10,
            args=(2,),
            kwargs={"b": 3},
            id="sum",
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC) - timedelta(seconds=35),
        )
        s.start()
        await await_until(lambda: got, "the execution")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "sum")
    assert set(run.metadata) == SCHEDULE_KEYS | {
        "team",
        "coalesced",
        "trigger",
        "timeout_s",
        "attempt",
    }
    assert (run.metadata["team"], run.metadata["coalesced"], run.metadata["timeout_s"]) == (
        "mail",
        3,
        30,
    )
    assert run.metadata["trigger"].startswith("interval[")
    assert run.deadline_at is not None
    assert inside == [(run.id, [run.id])]
    (execution,) = got
    assert (execution.run_id, execution.status, execution.result, execution.error) == (
        run.id,
        RunStatus.SUCCESS,
        5,
        None,
    )
    assert (execution.cause, execution.attempts) == (None, 1)


def test_coroutine_failure_gives_listeners_the_error_and_no_result(
    tracker: ExecutionTracker,
) -> None:
    """A coroutine job that raises: the Execution carries that exception, no result."""
    got: list[Execution] = []
    boom = ConnectionError("the inbox server is down")

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker, listeners=[got.append])

        async def fails() -> None:
            raise boom

        s.add_job(fails, "date", run_date=datetime.now(UTC), id="afail")
        s.start()
        await await_until(lambda: got, "the execution")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "afail")
    (execution,) = got
    assert (execution.run_id, execution.status, execution.result) == (
        run.id,
        RunStatus.ERROR,
        None,
    )
    assert execution.error is boom


def test_coroutine_started_after_shutdown_began_is_canceled_shutdown(
    tracker: ExecutionTracker,
) -> None:
    """A coroutine job that starts after the scheduler began to shut down (what
    shutdown() tells the bridge first) and stops on the request is canceled with
    the cause shutdown, not a plain cancellation."""
    got: list[Execution] = []

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        bridge = attach(s, tracker, listeners=[got.append])

        async def stops_when_asked() -> None:
            ctx = current_execution()
            assert ctx is not None and ctx.stop_requested
            raise asyncio.CancelledError

        s.start()
        bridge._request_stop()
        s.add_job(stops_when_asked, "date", run_date=datetime.now(UTC), id="late")
        await await_until(lambda: got, "the execution")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "late")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")
    assert (got[0].status, got[0].cause) == (RunStatus.CANCELED, "shutdown")


@pytest.mark.parametrize("kind", ["thread", "coroutine"])
def test_retry_errors_keep_the_last_ten_type_names(tracker: ExecutionTracker, kind: str) -> None:
    """Eleven failed attempts before the last: retry_errors lists the last ten
    exception type names, and the job gets its arguments on every attempt."""
    calls: list[tuple[int, int]] = []

    def fails(a: int, b: int = 0) -> None:
        calls.append((a, b))
        raise ConnectionError("down")

    async def afails(a: int, b: int = 0) -> None:
        fails(a, b)

    policy = JobPolicy(retries=11, backoff=0)
    if kind == "thread":
        s = BackgroundScheduler(timezone="UTC")
        attach(s, tracker, policy=policy)
        s.add_job(fails, "date", run_date=datetime.now(UTC), args=(1,), kwargs={"b": 2}, id="r")
        s.start()
        wait_until(finished(tracker, "r"), "the run")
        s.shutdown()
    else:

        async def scenario() -> None:
            s = AsyncIOScheduler(timezone="UTC")
            attach(s, tracker, policy=policy)
            s.add_job(
                afails, "date", run_date=datetime.now(UTC), args=(1,), kwargs={"b": 2}, id="r"
            )
            s.start()
            await await_until(finished(tracker, "r"), "the run")
            s.shutdown()

        asyncio.run(scenario())
    (run,) = runs_of(tracker, "r")
    assert calls == [(1, 2)] * 12
    assert run.metadata["retry_errors"] == ["ConnectionError"] * 10
    assert (run.status, run.metadata["attempt"]) == (RunStatus.ERROR, 12)


# -- due times that never ran ----------------------------------------------------------


def test_refused_submission_is_one_error_run_and_one_execution(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """An executor that refuses a (coalesced) job: one error run with the policy's
    metadata, the schedule, the coalesced count and submit_failed; listeners get it
    with nothing started, no attempt and the executor's exception."""
    got: list[Execution] = []
    bridge = attach(scheduler, tracker, listeners=[got.append])
    bridge.set_policy("refused", metadata={"team": "mail"})
    scheduler.add_executor(RefusingExecutor(), "refusing")
    scheduler.add_job(
        jobs.ok,
        "interval",
        seconds=10,
        id="refused",
        executor="refusing",
        coalesce=True,
        misfire_grace_time=None,
        next_run_time=datetime.now(UTC) - timedelta(seconds=35),
    )
    scheduler.start()
    wait_until(finished(tracker, "refused"), "the error run")
    later = datetime.now(UTC)
    wait_until(lambda: scheduler.get_job("refused").next_run_time > later, "the next due time")
    scheduler.shutdown(wait=True)
    (run,) = runs_of(tracker, "refused")
    assert (run.status, run.error_message) == (RunStatus.ERROR, "the pool is closed")
    assert set(run.metadata) == SCHEDULE_KEYS | {"team", "coalesced", "submit_failed"}
    assert (run.metadata["team"], run.metadata["coalesced"], run.metadata["submit_failed"]) == (
        "mail",
        3,
        True,
    )
    assert jobs.calls == []
    (execution,) = got
    assert (execution.job_id, execution.run_id, execution.status) == (
        "refused",
        run.id,
        RunStatus.ERROR,
    )
    assert iso(execution.scheduled_at) == run.metadata["scheduled_at"]
    assert (execution.started_at, execution.duration_ms, execution.attempts) == (None, None, 0)
    assert (execution.cause, execution.result) == (None, None)
    assert isinstance(execution.error, RuntimeError)
    assert str(execution.error) == "the pool is closed"
    assert execution.metadata == run.metadata
    assert execution.finished_at >= execution.scheduled_at


def test_missed_run_carries_the_policy_metadata_through_the_default_tracker(
    tracker: ExecutionTracker,
) -> None:
    """Without a tracker the bridge records into the process-wide one: a missed due
    time is a canceled run of source heartbeat with exactly the policy's metadata, the
    schedule and the grace time, also when the one-off job is gone from the scheduler
    by the time its pool thread reports the miss."""
    s = BackgroundScheduler(timezone="UTC", executors={"default": ThreadPoolExecutor(1)})
    exectrack.set_tracker(tracker)
    try:
        attach(s).set_policy("late", metadata={"team": "mail"})
        s.add_job(jobs.blocks, "date", run_date=datetime.now(UTC), id="blocker")
        s.start()
        wait_until(lambda: jobs.calls == ["blocks"], "the pool's only thread to be busy")
        due = datetime.now(UTC) - timedelta(seconds=10)
        s.add_job(jobs.ok, "date", run_date=due, misfire_grace_time=1, id="late")
        wait_until(lambda: s.get_job("late") is None, "the late job queued and removed")
        jobs.release.set()
        wait_until(finished(tracker, "late"), "the missed run")
    finally:
        exectrack.set_tracker(None)
        jobs.release.set()
        s.shutdown(wait=True)
    (run,) = runs_of(tracker, "late")
    assert (run.source, run.source_ref, run.status, run.error_code) == (
        "heartbeat",
        "late",
        RunStatus.CANCELED,
        "missed_schedule",
    )
    assert run.error_message == CAUSE_TEXTS["missed_schedule"]
    assert run.metadata == {
        "team": "mail",
        "scheduled_at": iso(due),
        "lateness_ms": run.metadata["lateness_ms"],
        "misfire_grace_s": 1,
    }
    assert run.metadata["lateness_ms"] >= 10_000
    assert jobs.calls == ["blocks"]


# -- listeners, detach, running runs ---------------------------------------------------


def test_a_listener_added_later_gets_executions(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """add_listener() after attach: that listener gets the next execution."""
    got: list[Execution] = []
    attach(scheduler, tracker).add_listener(got.append)
    scheduler.add_job(jobs.ok, "date", run_date=datetime.now(UTC), id="later")
    scheduler.start()
    wait_until(lambda: got, "the execution")
    assert (got[0].job_id, got[0].status, got[0].result) == ("later", RunStatus.SUCCESS, "done")


def test_running_runs_of_an_idle_job_is_empty(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A job with nothing running (or no such job) has no running runs."""
    assert attach(scheduler, tracker).running_runs("nothing") == []


def test_detach_leaves_nothing_behind_and_a_second_detach_does_nothing(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """After detach() the scheduler holds none of the bridge's listeners and a miss is
    not recorded; detaching an old bridge again leaves a newer bridge attached."""
    old = attach(scheduler, tracker)
    old.detach()
    assert [cb for cb, _mask in scheduler._listeners if getattr(cb, "__self__", None) is old] == []
    newer = attach(scheduler, tracker)
    old.detach()
    with pytest.raises(InvalidArgumentError):
        attach(scheduler, tracker)
    newer.detach()
    due = datetime.now(UTC) - timedelta(seconds=10)
    scheduler.add_job(jobs.ok, "date", run_date=due, misfire_grace_time=1, id="unrecorded")
    missed: list[Any] = []
    scheduler.add_listener(missed.append)
    scheduler.start()
    wait_until(lambda: any(getattr(e, "job_id", None) == "unrecorded" for e in missed), "miss")
    # The loop removes the spent job after the miss: shutting down before that makes
    # APScheduler's own loop fail to remove it (JobLookupError in its thread).
    wait_until(lambda: scheduler.get_job("unrecorded") is None, "the job's removal")
    scheduler.shutdown(wait=True)
    assert runs_of(tracker, "unrecorded") == []


def test_a_bridge_made_directly_detaches_cleanly(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A SchedulerBridge built without attach() (so not in attach's registry) detaches
    without error, and attach() works afterwards."""
    SchedulerBridge(scheduler, tracker, "heartbeat", JobPolicy(), []).detach()
    attach(scheduler, tracker).detach()


def test_process_pool_executors_are_named_in_one_warning_each(
    tracker: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """Each process-pool executor is named in one warning (its runs are not
    recorded), however often it is added again; thread pools in none."""
    s = BackgroundScheduler(timezone="UTC", executors={"procs": ProcessPoolExecutor(1)})
    with caplog.at_level(logging.WARNING, LOGGER):
        attach(s, tracker)
        s.add_executor(ProcessPoolExecutor(1), "more")
        s.remove_executor("procs")
        s.add_executor(ProcessPoolExecutor(1), "procs")
        s.add_executor("threadpool", "threads")
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages == [
        f"exectrack: executor {alias!r} runs jobs in other processes; their skips and "
        "misses are recorded, their executions are not"
        for alias in ("procs", "more")
    ]
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.WARNING] * 2


# -- thread jobs: what listeners get ---------------------------------------------------


def test_thread_success_and_failure_executions_are_exact(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A thread job that returns and one that raises: each Execution has the schedule,
    start, end, duration, the policy's metadata, the result or that very exception,
    no cause; the run's deadline follows a timeout that did not expire; the context
    knows the run id; nothing stays in running_runs."""
    got: list[Execution] = []
    bridge = attach(scheduler, tracker, listeners=[got.append])
    boom = ConnectionError("the inbox server is down")
    inside: list[str | None] = []

    def ok() -> str:
        ctx = current_execution()
        inside.append(ctx and ctx.run_id)
        return "done"

    def fails() -> None:
        raise boom

    for job_id in ("ok", "fails"):
        bridge.set_policy(job_id, timeout=30, metadata={"team": job_id})
    due = datetime.now(UTC)
    scheduler.add_job(ok, "date", run_date=due, id="ok")
    scheduler.add_job(fails, "date", run_date=due, id="fails")
    scheduler.start()
    wait_until(lambda: len(got) == 2, "both executions")
    by_job = {e.job_id: e for e in got}
    for job_id, status, result, error in (
        ("ok", RunStatus.SUCCESS, "done", None),
        ("fails", RunStatus.ERROR, None, boom),
    ):
        (run,) = runs_of(tracker, job_id)
        execution = by_job[job_id]
        assert (run.status, execution.status, execution.run_id) == (status, status, run.id)
        assert execution.result == result and execution.error is error
        assert (execution.cause, execution.attempts) == (None, 1)
        assert execution.metadata == {"team": job_id}
        assert execution.scheduled_at == due
        assert execution.started_at is not None and execution.started_at >= due
        assert execution.finished_at >= execution.started_at
        assert isinstance(execution.duration_ms, float) and execution.duration_ms > 0
        assert run.deadline_at is not None and run.metadata["timeout_s"] == 30
        assert bridge.running_runs(job_id) == []
    assert inside == [runs_of(tracker, "ok")[0].id]
    assert bridge._active == {}


def test_thread_timeout_in_a_backoff_raises_job_timeout_naming_the_timeout(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A timeout that ends a retry's backoff: the scheduler sees JobTimeout with the
    timeout's text (the job's exception chained), the watchdog holds nothing after."""
    bridge = attach(scheduler, tracker)
    bridge.set_policy("retrying", timeout=0.1, retries=5, backoff=30)
    ended: list[Any] = []
    scheduler.add_listener(ended.append, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    scheduler.add_job(jobs.fails, "date", run_date=datetime.now(UTC), id="retrying")
    scheduler.start()
    wait_until(lambda: ended, "the job's end")
    assert isinstance(ended[0].exception, JobTimeout)
    assert str(ended[0].exception) == "the task ran past its timeout (0.1 s)"
    assert isinstance(ended[0].exception.__cause__, ConnectionError)


def test_thread_job_ending_before_its_timeout_leaves_no_watchdog_entry(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A job with a timeout that returns in time is a success, and its deadline
    callback is cancelled (none left pending in the watchdog)."""
    bridge = attach(scheduler, tracker)
    bridge.set_policy("quick", timeout=30)
    scheduler.add_job(jobs.ok, "date", run_date=datetime.now(UTC), id="quick")
    scheduler.start()
    wait_until(finished(tracker, "quick"), "the run")
    (run,) = runs_of(tracker, "quick")
    assert run.status is RunStatus.SUCCESS
    wait_until(lambda: not bridge._active, "the execution's end")
    heap = bridge._watchdog._heap
    assert all(key in bridge._watchdog._cancelled for _at, key, _cb in heap)


def test_two_instances_of_one_job_leave_running_runs_one_at_a_time(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """Two executions of one job at once (max_instances=2): when the first ends,
    running_runs still names the second; when it ends too, none."""
    bridge = attach(scheduler, tracker)
    gates = [threading.Event(), threading.Event()]
    started: list[str] = []

    def waits() -> None:
        ctx = current_execution()
        assert ctx is not None and ctx.run_id is not None
        index = len(started)
        started.append(ctx.run_id)
        gates[index].wait(20)

    scheduler.add_job(waits, "interval", seconds=0.05, id="two", max_instances=2)
    scheduler.start()
    wait_until(lambda: len(started) == 2, "two executions")
    scheduler.pause_job("two")
    first, second = started
    assert sorted(bridge.running_runs("two")) == sorted([first, second])
    gates[0].set()
    wait_until(lambda: bridge.running_runs("two") == [second], "the first's end")
    gates[1].set()
    wait_until(lambda: bridge.running_runs("two") == [], "the second's end")
    assert "two" not in bridge._active


@pytest.mark.parametrize("outcome", ["stops", "finishes"])
def test_thread_job_started_after_shutdown_began(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker, outcome: str
) -> None:
    """A thread job that starts after shutdown began sees stop_requested: stopping
    on it is canceled/shutdown (cause shutdown); finishing anyway is a success with
    no cause."""
    got: list[Execution] = []
    bridge = attach(scheduler, tracker, listeners=[got.append])

    def job() -> str:
        ctx = current_execution()
        assert ctx is not None and ctx.stop_requested
        if outcome == "stops":
            ctx.raise_if_stopping()
        return "done"

    scheduler.start()
    bridge._request_stop()
    scheduler.add_job(job, "date", run_date=datetime.now(UTC), id="late")
    wait_until(lambda: got, "the execution")
    (run,) = runs_of(tracker, "late")
    if outcome == "stops":
        assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")
        assert (got[0].status, got[0].cause) == (RunStatus.CANCELED, "shutdown")
    else:
        assert (run.status, got[0].status, got[0].cause) == (
            RunStatus.SUCCESS,
            RunStatus.SUCCESS,
            None,
        )


# -- skips and misses: what listeners get, and a failure to record ---------------------


def test_missed_run_execution_is_exact(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """The Execution of a missed due time: canceled, cause missed_schedule, nothing
    started, no duration, no attempt, the run's id and metadata."""
    got: list[Execution] = []
    attach(scheduler, tracker, listeners=[got.append]).set_policy("late", metadata={"t": 1})
    due = datetime.now(UTC) - timedelta(seconds=10)
    scheduler.add_job(jobs.ok, "date", run_date=due, misfire_grace_time=1, id="late")
    scheduler.start()
    wait_until(lambda: got, "the execution")
    wait_until(lambda: scheduler.get_job("late") is None, "the job's removal")
    (run,) = runs_of(tracker, "late")
    (execution,) = got
    assert (execution.job_id, execution.run_id, execution.status, execution.cause) == (
        "late",
        run.id,
        RunStatus.CANCELED,
        "missed_schedule",
    )
    assert (execution.started_at, execution.duration_ms, execution.attempts) == (None, None, 0)
    assert (execution.result, execution.error) == (None, None)
    assert execution.scheduled_at == due and execution.finished_at > due
    assert execution.metadata == run.metadata and run.metadata["t"] == 1


def test_a_run_that_cannot_be_recorded_is_logged_and_the_scheduler_goes_on(
    tracker: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """When recording a miss or a refused submission fails (here: a bridge made by
    hand with a source name the tracker refuses), it is logged with the job and the
    cause, no listener hears of it, and the scheduler keeps running."""
    got: list[Execution] = []
    s = BackgroundScheduler(timezone="UTC")
    SchedulerBridge(s, tracker, "Not A Source!", JobPolicy(), [got.append])
    s.add_executor(RefusingExecutor(), "refusing")
    due = datetime.now(UTC) - timedelta(seconds=10)
    with caplog.at_level(logging.ERROR, LOGGER):
        s.add_job(jobs.ok, "date", run_date=due, misfire_grace_time=1, id="late")
        s.add_job(jobs.ok, "date", run_date=due, id="refused", executor="refusing")
        s.start()
        wait_until(lambda: len([r for r in caplog.records if r.name == LOGGER]) == 2, "logs")
        wait_until(lambda: not s.get_jobs(), "both jobs done")
        assert s.running
        s.shutdown(wait=True)
    messages = sorted(r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert messages == [
        "exectrack: could not record a failed submission of job 'refused'",
        "exectrack: could not record a missed_schedule run of job 'late'",
    ]
    assert all(r.exc_info is not None for r in caplog.records if r.name == LOGGER)
    assert got == []


# -- the default tracker and policies --------------------------------------------------


def test_default_tracker_runs_get_metadata_and_deadline(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """Through the process-wide tracker an execution's run still gets the policy's
    metadata and its timeout as the deadline."""
    exectrack.set_tracker(tracker)
    try:
        attach(scheduler).set_policy("default", timeout=30, metadata={"team": "mail"})
        scheduler.add_job(jobs.ok, "date", run_date=datetime.now(UTC), id="default")
        scheduler.start()
        wait_until(finished(tracker, "default"), "the run")
    finally:
        exectrack.set_tracker(None)
    (run,) = runs_of(tracker, "default")
    assert (run.source, run.status, run.metadata["team"]) == (
        "heartbeat",
        RunStatus.SUCCESS,
        "mail",
    )
    assert run.deadline_at is not None and run.metadata["timeout_s"] == 30


def test_set_policy_defaults_and_metadata(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """set_policy with fields only: the documented defaults; its metadata is kept (a
    copy); policy_for falls back to the bridge's default policy."""
    bridge = attach(scheduler, tracker, policy=JobPolicy(retries=3))
    assert bridge.set_policy("plain") == JobPolicy(None, 0, 1.0, 60.0, {})
    meta = {"team": "mail"}
    policy = bridge.set_policy("tagged", metadata=meta)
    meta["team"] = "changed"
    assert policy.metadata == {"team": "mail"}
    assert bridge.policy_for("tagged") is policy
    assert bridge.policy_for("other") == JobPolicy(retries=3)


# -- submission book-keeping (the executor's side, called as APScheduler calls it) -----

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def due_job(job_id: str, *, coalesce: bool = True) -> SimpleNamespace:
    """What the executor gets from APScheduler: a job 30 s overdue on a 10 s interval,
    so coalescing its due times into the last drops three."""
    return SimpleNamespace(
        id=job_id,
        func=jobs.ok,
        trigger=IntervalTrigger(seconds=10, start_date=T0, timezone="UTC"),
        coalesce=coalesce,
        next_run_time=T0,
        misfire_grace_time=5,
        max_instances=1,
    )


LAST = T0 + timedelta(seconds=30)


def test_the_stashes_keep_at_most_their_cap_dropping_the_oldest(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coalesced counts (per due time) and graces (per job) kept for misses not reported
    yet hold at most the cap, the oldest dropped first; a job submitted again takes no
    new place; a job that coalesced nothing keeps no count."""
    monkeypatch.setattr(aps, "_STASH_CAP", 3)
    bridge = attach(scheduler, tracker)
    submitted: list[Any] = []

    def executor(job: Any, run_times: list[datetime]) -> None:
        submitted.append(job)

    for job_id in ("a", "b", "c", "d"):
        bridge._submit(executor, True, due_job(job_id), [LAST])
    assert list(bridge._coalesced) == [("b", LAST), ("c", LAST), ("d", LAST)]
    assert bridge._coalesced[("d", LAST)] == 3
    assert list(bridge._graces) == ["b", "c", "d"]
    bridge._submit(executor, True, due_job("c"), [LAST + timedelta(seconds=10)])
    assert list(bridge._graces) == ["b", "c", "d"]
    assert list(bridge._coalesced) == [
        ("c", LAST),
        ("d", LAST),
        ("c", LAST + timedelta(seconds=10)),
    ]
    bridge._submit(executor, True, due_job("e", coalesce=False), [LAST])
    assert ("e", LAST) not in bridge._coalesced and len(bridge._coalesced) == 3
    assert [type(job).__name__ for job in submitted] == ["_JobView"] * 6


def test_a_process_pool_gets_the_job_itself(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """An executor in other processes is handed APScheduler's own job, unwrapped."""
    bridge = attach(scheduler, tracker)
    job = due_job("p")
    got: list[Any] = []
    bridge._submit(lambda j, times: got.append(j), False, job, [LAST])
    assert got == [job] and got[0] is job


@pytest.mark.parametrize("cause", ["skipped_overlap", "shutdown", "submit_failed"])
def test_a_coalesced_submission_that_fails_records_its_count(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker, cause: str
) -> None:
    """A coalesced due time the executor refuses (its instances busy, the scheduler
    stopped, another failure) is recorded with the coalesced count, the exception goes
    back to APScheduler, and the count is not kept for a miss that will never come."""
    bridge = attach(scheduler, tracker)
    job = due_job("refused")
    error: Exception = (
        MaxInstancesReachedError(job) if cause == "skipped_overlap" else RuntimeError("closed")
    )
    if cause != "shutdown":
        scheduler.start(paused=True)

    def executor(job: Any, run_times: list[datetime]) -> None:
        raise error

    with pytest.raises(type(error)):
        bridge._submit(executor, True, job, [LAST])
    tracker.flush()
    (run,) = runs_of(tracker, "refused")
    assert run.metadata["coalesced"] == 3
    assert run.error_code == {"submit_failed": run.error_code}.get(cause, cause)
    assert run.metadata.get("submit_failed", False) is (cause == "submit_failed")
    assert bridge._coalesced == {}


def test_a_job_of_some_duration_reports_it_in_the_execution(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A job that works for 50 ms under a 30 s timeout succeeds, and its Execution's
    duration covers the work and fits in the time the test waited."""
    got: list[Execution] = []
    attach(scheduler, tracker, listeners=[got.append]).set_policy("work", timeout=30)

    def works() -> None:
        time.sleep(0.05)  # the job's own work, not a wait for a condition

    before = time.monotonic()
    scheduler.add_job(works, "date", run_date=datetime.now(UTC), id="work")
    scheduler.start()
    wait_until(lambda: got, "the execution")
    waited_ms = (time.monotonic() - before) * 1000
    (run,) = runs_of(tracker, "work")
    assert (run.status, got[0].status) == (RunStatus.SUCCESS, RunStatus.SUCCESS)
    assert got[0].duration_ms is not None and 50 <= got[0].duration_ms <= waited_ms


def test_a_failing_listener_is_logged_once_with_its_traceback(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises on every execution is logged once, with the exact text
    and its traceback."""

    def broken(execution: Execution) -> None:
        raise RuntimeError("listener bug")

    attach(scheduler, tracker, listeners=[broken])
    with caplog.at_level(logging.ERROR, LOGGER):
        scheduler.add_job(jobs.ok, "date", run_date=datetime.now(UTC), id="one")
        scheduler.add_job(jobs.ok, "date", run_date=datetime.now(UTC), id="two")
        scheduler.start()
        wait_until(lambda: finished(tracker, "one")() and finished(tracker, "two")(), "runs")
        wait_until(lambda: len(jobs.calls) == 2 and not scheduler.get_jobs(), "both ends")
        scheduler.shutdown(wait=True)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.getMessage() for r in records] == [
        "exectrack: an execution listener failed (logged once)"
    ]
    assert records[0].exc_info is not None and records[0].exc_info[0] is RuntimeError


def test_an_executor_added_under_two_aliases_is_wrapped_once(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """One executor object added under two aliases: an execution through either is
    one run (a second wrapper would track each execution twice, one inside the
    other)."""
    attach(scheduler, tracker)
    shared = ThreadPoolExecutor(2)
    scheduler.add_executor(shared, "first")
    scheduler.add_executor(shared, "second")
    scheduler.add_job(jobs.ok, "date", run_date=datetime.now(UTC), id="once", executor="second")
    scheduler.start()
    wait_until(finished(tracker, "once"), "the run")
    wait_until(lambda: not scheduler.get_jobs(), "the job's end")
    (run,) = runs_of(tracker, "once")
    assert (run.status, run.parent_id, jobs.calls) == (RunStatus.SUCCESS, None, ["ok"])
    assert tracker.list_runs(limit=10).runs == [run]


@pytest.mark.parametrize("trigger", ["interval", "date"])
def test_a_miss_of_a_job_submitted_before_attach(tracker: ExecutionTracker, trigger: str) -> None:
    """A due time submitted before the bridge was attached and reported missed after is
    recorded: with the grace of the scheduler's job, or without one when that one-off
    job is gone by then."""
    s = BackgroundScheduler(timezone="UTC", executors={"default": ThreadPoolExecutor(1)})
    try:
        s.add_job(jobs.blocks, "date", run_date=datetime.now(UTC), id="blocker")
        s.start()
        wait_until(lambda: jobs.calls == ["blocks"], "the pool's only thread to be busy")
        due = datetime.now(UTC) - timedelta(seconds=10)
        if trigger == "interval":
            s.add_job(
                jobs.ok, "interval", hours=1, next_run_time=due, misfire_grace_time=2, id="early"
            )
            wait_until(lambda: s.get_job("early").next_run_time > due, "the early job queued")
        else:
            s.add_job(jobs.ok, "date", run_date=due, misfire_grace_time=2, id="early")
            wait_until(lambda: s.get_job("early") is None, "the early job queued and removed")
        attach(s, tracker)
        jobs.release.set()
        wait_until(finished(tracker, "early"), "the missed run")
    finally:
        jobs.release.set()
        s.shutdown(wait=True)
    (run,) = runs_of(tracker, "early")
    assert run.error_code == "missed_schedule"
    assert run.metadata.get("misfire_grace_s") == (2 if trigger == "interval" else None)


def test_jobs_are_not_asked_to_stop_after_attach_to_a_running_scheduler_or_a_restart(
    tracker: ExecutionTracker,
) -> None:
    """A bridge attached to a running scheduler starts with nothing stopping, and a
    scheduler started again after a shutdown no longer asks its jobs to stop
    (AsyncIOScheduler: APScheduler's thread pools cannot start again)."""
    seen: list[bool] = []

    async def job() -> None:
        ctx = current_execution()
        assert ctx is not None
        seen.append(ctx.stop_requested)

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        s.start()
        attach(s, tracker)
        s.add_job(job, "date", run_date=datetime.now(UTC), id="first")
        await await_until(lambda: len(seen) == 1, "the first execution")
        s.shutdown()
        await await_until(lambda: not s.running, "the shutdown (run in the loop)")
        s.start()
        s.add_job(job, "date", run_date=datetime.now(UTC), id="second")
        await await_until(lambda: len(seen) == 2, "the second execution")
        s.shutdown()

    asyncio.run(scenario())
    assert seen == [False, False]


def test_attaching_twice_names_the_problem(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A second attach() to one scheduler is refused with the exact reason."""
    attach(scheduler, tracker)
    with pytest.raises(InvalidArgumentError) as info:
        attach(scheduler, tracker)
    assert str(info.value) == "this scheduler already has an exectrack bridge attached"

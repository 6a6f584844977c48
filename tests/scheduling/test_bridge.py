"""The APScheduler bridge against real BackgroundScheduler and AsyncIOScheduler
instances: every row of the mapping, retries, listeners, attach/detach."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler

import exectrack
from exectrack import ExecutionTracker, InvalidArgumentError, RunStatus
from exectrack._lifecycle import _CAUSES
from exectrack.integrations.apscheduler import (
    CAUSE_TEXTS,
    Execution,
    JobPolicy,
    JobTimeout,
    attach,
    current_execution,
)
from scheduling import jobs
from scheduling.helpers import await_until, finished, runs_of, wait_until

NOW = datetime.now


def _blocked_in_wait(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in a wait (so its next step follows our signal)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "wait" and "threading" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def outcomes(events: list[Any]) -> list[JobExecutionEvent]:
    return [e for e in events if isinstance(e, JobExecutionEvent)]


# -- returned / raised ---------------------------------------------------------------


def test_returned_is_success_with_schedule_metadata(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A thread job that returns is one success run: source heartbeat, the job id as
    source_ref, scheduled time, lateness and attempt in metadata."""
    attach(scheduler, tracker)
    due = NOW(UTC)
    scheduler.add_job(jobs.ok, "date", run_date=due, id="inbox")
    scheduler.start()
    wait_until(finished(tracker, "inbox"), "the run")
    (run,) = runs_of(tracker, "inbox")
    assert (run.source, run.status, run.error_code) == ("heartbeat", RunStatus.SUCCESS, None)
    assert run.metadata["scheduled_at"] == due.isoformat().replace("+00:00", "Z")
    assert run.metadata["lateness_ms"] >= 0
    assert run.metadata["attempt"] == 1
    assert run.metadata["trigger"].startswith("date[")
    assert run.deadline_at is None and "coalesced" not in run.metadata


def test_coroutine_job_returned_is_success(tracker: ExecutionTracker) -> None:
    """A coroutine job on AsyncIOScheduler that returns is one success run."""

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker)
        s.add_job(jobs.async_ok, "date", run_date=NOW(UTC), id="digest")
        s.start()
        await await_until(finished(tracker, "digest"), "the run")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "digest")
    assert run.status is RunStatus.SUCCESS and run.metadata["attempt"] == 1


def test_plain_job_on_asyncio_scheduler_is_tracked_in_its_thread(
    tracker: ExecutionTracker,
) -> None:
    """A plain function on AsyncIOScheduler runs in the loop's thread pool, tracked."""

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker)
        s.add_job(jobs.fails, "date", run_date=NOW(UTC), id="sync-on-loop")
        s.start()
        await await_until(finished(tracker, "sync-on-loop"), "the run")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "sync-on-loop")
    assert (run.status, run.error_code) == (RunStatus.ERROR, "provider_unavailable")


def test_raised_after_last_retry_is_error_and_scheduler_sees_the_same_exception(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A job that raises in every retry is one error run with the classified code,
    attempt = retries + 1 and the failed attempts' types; APScheduler gets the job's
    own exception object, unchanged."""
    bridge = attach(scheduler, tracker)
    bridge.set_policy("mail", retries=2, backoff=0.001)
    seen: list[Any] = []
    scheduler.add_listener(seen.append, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    scheduler.add_job(jobs.fails, "date", run_date=NOW(UTC), id="mail")
    scheduler.start()
    wait_until(finished(tracker, "mail"), "the run")
    wait_until(lambda: seen, "APScheduler's event")
    (run,) = runs_of(tracker, "mail")
    assert (run.status, run.error_code) == (RunStatus.ERROR, "provider_unavailable")
    assert run.error_message == "the inbox server is down"
    assert run.metadata["attempt"] == 3
    assert run.metadata["retry_errors"] == ["ConnectionError", "ConnectionError"]
    assert jobs.calls == ["fails"] * 3
    (event,) = outcomes(seen)
    assert event.code == EVENT_JOB_ERROR and isinstance(event.exception, ConnectionError)
    assert event.exception.__cause__ is None and event.exception.__context__ is None


def test_coroutine_job_raising_in_its_retries_is_error(tracker: ExecutionTracker) -> None:
    """A coroutine job that raises in every retry is one error run after them all."""

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker).set_policy("amail", retries=1, backoff=0.001)
        s.add_job(jobs.async_fails, "date", run_date=NOW(UTC), id="amail")
        s.start()
        await await_until(finished(tracker, "amail"), "the run")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "amail")
    assert run.status is RunStatus.ERROR and run.metadata["attempt"] == 2
    assert jobs.calls == ["async_fails"] * 2


def test_retry_that_succeeds_is_one_success_run(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """An execution whose second attempt returns is one success run (attempt 2)."""
    jobs.failures_left = 1
    attach(scheduler, tracker, policy=JobPolicy(retries=3, backoff=0.001))
    scheduler.add_job(jobs.flaky, "date", run_date=NOW(UTC), id="flaky")
    scheduler.start()
    wait_until(finished(tracker, "flaky"), "the run")
    (run,) = runs_of(tracker, "flaky")
    assert run.status is RunStatus.SUCCESS
    assert run.metadata["attempt"] == 2 and run.metadata["retry_errors"] == ["ConnectionError"]


def test_job_raising_timeout_error_itself_is_timeout_not_retried_as_ours(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A TimeoutError the job raises is a timeout run (the core's mapping), and the
    scheduler sees that error, not the bridge's JobTimeout."""
    attach(scheduler, tracker)
    seen: list[Any] = []
    scheduler.add_listener(seen.append, EVENT_JOB_ERROR)
    scheduler.add_job(jobs.raises_timeout, "date", run_date=NOW(UTC), id="slowapi")
    scheduler.start()
    wait_until(finished(tracker, "slowapi"), "the run")
    wait_until(lambda: seen, "APScheduler's event")
    (run,) = runs_of(tracker, "slowapi")
    assert (run.status, run.error_code) == (RunStatus.TIMEOUT, "deadline_exceeded")
    assert not isinstance(seen[0].exception, JobTimeout)


# -- timeouts ------------------------------------------------------------------------


def test_thread_job_past_its_timeout_is_timeout_while_it_still_runs(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A thread job that never returns is recorded timeout/deadline_exceeded at its
    deadline while the thread still runs; it is asked to stop; when it returns at last
    the scheduler sees JobTimeout and the run stays timeout."""
    bridge = attach(scheduler, tracker)
    bridge.set_policy("hang", timeout=0.2)
    contexts: list[Any] = []

    def hangs() -> None:
        contexts.append(current_execution())
        jobs.blocks()

    seen: list[Any] = []
    scheduler.add_listener(seen.append, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    scheduler.add_job(hangs, "date", run_date=NOW(UTC), id="hang")
    scheduler.start()
    wait_until(finished(tracker, "hang"), "the timeout")
    (run,) = runs_of(tracker, "hang")
    assert (run.status, run.error_code) == (RunStatus.TIMEOUT, "deadline_exceeded")
    assert run.error_message == "the task ran past its timeout (0.2 s)"
    assert run.deadline_at is not None and run.metadata["timeout_s"] == 0.2
    assert not jobs.release.is_set() and contexts[0].stop_requested
    assert seen == []  # the thread still runs: APScheduler has heard nothing yet
    jobs.release.set()
    wait_until(lambda: seen, "the job's end")
    assert isinstance(seen[0].exception, JobTimeout)
    assert runs_of(tracker, "hang")[0].status is RunStatus.TIMEOUT


def test_coroutine_job_past_its_timeout_is_cancelled_and_timeout(
    tracker: ExecutionTracker,
) -> None:
    """A coroutine job that never returns is cancelled at its timeout: a timeout run,
    and the scheduler sees JobTimeout."""
    seen: list[Any] = []

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker).set_policy("ahang", timeout=0.1)
        s.add_listener(seen.append, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
        s.add_job(jobs.async_forever, "date", run_date=NOW(UTC), id="ahang")
        s.start()
        await await_until(lambda: seen, "the job's end")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "ahang")
    assert (run.status, run.error_code) == (RunStatus.TIMEOUT, "deadline_exceeded")
    assert isinstance(seen[0].exception, JobTimeout)


def test_timeout_during_a_retry_backoff_ends_the_run_as_timeout(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """The timeout covers the whole execution: it ends a retry's backoff, no further
    attempt runs, and the run is timeout."""
    bridge = attach(scheduler, tracker)
    bridge.set_policy("retrying", timeout=0.1, retries=5, backoff=30)
    scheduler.add_job(jobs.fails, "date", run_date=NOW(UTC), id="retrying")
    scheduler.start()
    wait_until(finished(tracker, "retrying"), "the timeout")
    (run,) = runs_of(tracker, "retrying")
    assert run.status is RunStatus.TIMEOUT and jobs.calls == ["fails"]


# -- skips and misses ----------------------------------------------------------------


def test_overlap_skips_are_canceled_runs_naming_the_blocking_run(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A job still running when it is due again (max_instances=1): each skipped due
    time is a canceled/skipped_overlap run whose blocked_by names the running run."""
    attach(scheduler, tracker)
    scheduler.add_job(jobs.blocks, "interval", seconds=0.05, id="overlap")
    scheduler.start()
    wait_until(
        lambda: sum(r.error_code == "skipped_overlap" for r in runs_of(tracker, "overlap")) >= 3,
        "three skips",
    )
    runs = runs_of(tracker, "overlap")  # while the first execution still blocks
    jobs.release.set()
    scheduler.shutdown(wait=True)
    first = runs[0]
    skips = [r for r in runs if r.error_code == "skipped_overlap"]
    assert len(skips) == len(runs) - 1 >= 3
    for skip in skips:
        assert skip.status is RunStatus.CANCELED
        assert skip.error_message == CAUSE_TEXTS["skipped_overlap"]
        assert skip.metadata["blocked_by"] == [first.id]
        assert skip.metadata["max_instances"] == 1
    assert first.status is RunStatus.RUNNING and jobs.calls == ["blocks"]


def test_coroutine_overlap_skips_are_recorded(tracker: ExecutionTracker) -> None:
    """The same on AsyncIOScheduler with a coroutine that runs until cancelled."""

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker)
        s.add_job(jobs.async_forever, "interval", seconds=0.05, id="aoverlap")
        s.start()
        await await_until(
            lambda: any(r.error_code == "skipped_overlap" for r in runs_of(tracker, "aoverlap")),
            "a skip",
        )
        s.shutdown()
        await asyncio.sleep(0)

    asyncio.run(scenario())
    runs = runs_of(tracker, "aoverlap")
    assert runs[0].status is RunStatus.CANCELED and runs[0].error_code == "shutdown"
    assert {r.error_code for r in runs[1:]} == {"skipped_overlap"}


def test_job_due_as_the_scheduler_shuts_down_is_canceled_shutdown(
    tracker: ExecutionTracker, tmp_path: Path
) -> None:
    """BackgroundScheduler's loop makes one more pass after shutdown(): with a
    persistent job store, a job due then meets a shut-down executor and APScheduler
    moves it on in the store, so that due time is lost even to a restart; the bridge
    records it canceled/shutdown instead of nothing."""
    store = SQLAlchemyJobStore(url=f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    s = BackgroundScheduler(timezone="UTC", jobstores={"default": store})
    attach(s, tracker)
    s.start(paused=True)
    s.add_job(jobs.ok, "interval", hours=1, id="late", next_run_time=NOW(UTC))
    wait_until(lambda: _blocked_in_wait(s._thread), "the scheduler loop to wait")
    s.shutdown()
    (run,) = runs_of(tracker, "late")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")
    assert jobs.calls == []


# -- shutdown ------------------------------------------------------------------------


def test_shutdown_mid_coroutine_job_is_canceled_shutdown(tracker: ExecutionTracker) -> None:
    """AsyncIOScheduler.shutdown() cancels a running coroutine job: canceled/shutdown."""

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker)
        s.add_job(jobs.async_forever, "date", run_date=NOW(UTC), id="long")
        s.start()
        await await_until(lambda: jobs.calls, "the job to start")
        s.shutdown()
        await await_until(finished(tracker, "long"), "the run's end")

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "long")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")
    assert run.error_message == CAUSE_TEXTS["shutdown"]


def test_shutdown_mid_thread_job_that_stops_when_asked_is_canceled_shutdown(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A thread job told of the shutdown (stop_requested) that stops by
    raise_if_stopping() is canceled/shutdown, and shutdown(wait=True) returns."""
    attach(scheduler, tracker)

    def cooperative() -> None:
        ctx = current_execution()
        assert ctx is not None
        jobs.calls.append("started")
        ctx.stopping.wait(30)
        ctx.raise_if_stopping()

    scheduler.add_job(cooperative, "date", run_date=NOW(UTC), id="coop")
    scheduler.start()
    wait_until(lambda: jobs.calls, "the job to start")
    scheduler.shutdown(wait=True)
    (run,) = runs_of(tracker, "coop")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")


def test_shutdown_does_not_rewrite_a_thread_job_that_finishes_its_work(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A thread cannot be interrupted: a job that ignores the stop request and
    completes after shutdown(wait=False) records its real outcome, success."""
    attach(scheduler, tracker)
    scheduler.add_job(jobs.blocks, "date", run_date=NOW(UTC), id="stubborn")
    scheduler.start()
    wait_until(lambda: jobs.calls, "the job to start")
    scheduler.shutdown(wait=False)
    assert runs_of(tracker, "stubborn")[0].status is RunStatus.RUNNING
    jobs.release.set()
    wait_until(finished(tracker, "stubborn"), "the run's end")
    assert runs_of(tracker, "stubborn")[0].status is RunStatus.SUCCESS


def test_shutdown_during_a_retry_backoff_is_canceled_shutdown(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A retry waiting for its backoff stops at shutdown: canceled/shutdown, no more
    attempts."""
    attach(scheduler, tracker).set_policy("backoff", retries=3, backoff=30)
    scheduler.add_job(jobs.fails, "date", run_date=NOW(UTC), id="backoff")
    scheduler.start()
    wait_until(lambda: jobs.calls, "the first attempt")
    scheduler.shutdown(wait=True)
    (run,) = runs_of(tracker, "backoff")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")
    assert jobs.calls == ["fails"]


def test_coroutine_shutdown_during_backoff_is_canceled_shutdown(
    tracker: ExecutionTracker,
) -> None:
    """The same for a coroutine job waiting for its retry."""

    async def scenario() -> None:
        s = AsyncIOScheduler(timezone="UTC")
        attach(s, tracker).set_policy("abackoff", retries=3, backoff=30)
        s.add_job(jobs.async_fails, "date", run_date=NOW(UTC), id="abackoff")
        s.start()
        await await_until(lambda: jobs.calls, "the first attempt")
        s.shutdown()
        await await_until(finished(tracker, "abackoff"), "the run's end")

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "abackoff")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "shutdown")


# -- context, listeners, attach ------------------------------------------------------


def test_tracked_calls_inside_a_job_are_children_of_its_run(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A tracked call inside a job is a child run of that job's heartbeat run."""
    exectrack.set_tracker(tracker)
    attach(scheduler, tracker)
    scheduler.add_job(jobs.nested, "date", run_date=NOW(UTC), id="parent")
    scheduler.start()
    wait_until(finished(tracker, "parent"), "the run")
    wait_until(finished(tracker, "summarise"), "the child")
    (parent,) = runs_of(tracker, "parent")
    (child,) = runs_of(tracker, "summarise")
    assert child.parent_id == parent.id
    exectrack.set_tracker(None)


def test_default_tracker_is_used_when_none_is_given(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """attach(scheduler) records into the process-wide tracker."""
    exectrack.set_tracker(tracker)
    attach(scheduler)
    scheduler.add_job(jobs.ok, "date", run_date=NOW(UTC), id="default")
    scheduler.start()
    wait_until(finished(tracker, "default"), "the run")
    exectrack.set_tracker(None)


def test_listeners_get_each_execution_and_a_failing_listener_breaks_nothing(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """Listeners get one Execution per run (status, attempts, result); a listener
    that raises is logged once and neither the job nor the other listeners notice."""
    got: list[Execution] = []

    def broken(execution: Execution) -> None:
        raise RuntimeError("listener bug")

    attach(scheduler, tracker, listeners=[broken, got.append])
    scheduler.add_job(jobs.ok, "interval", seconds=0.02, id="listened")
    with caplog.at_level(logging.ERROR, "exectrack.integrations.apscheduler"):
        scheduler.start()
        # On a loaded machine a due time of this 20 ms job may be skipped (overlap):
        # that is an execution too, so wait for two that ran.
        ran = lambda: [e for e in got if e.status is RunStatus.SUCCESS]  # noqa: E731
        wait_until(lambda: len(ran()) >= 2, "two executions that ran")
        scheduler.shutdown(wait=True)
    first = ran()[0]
    assert (first.job_id, first.status, first.attempts, first.result) == (
        "listened",
        RunStatus.SUCCESS,
        1,
        "done",
    )
    stored = {r.id: r.status for r in runs_of(tracker, "listened")}
    assert stored[first.run_id] is RunStatus.SUCCESS
    assert len(stored) == len(got)  # one execution per run
    assert sum("listener failed" in r.message for r in caplog.records) == 1


def test_attach_twice_is_an_error_and_detach_stops_recording(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """One bridge per scheduler; after detach() nothing is recorded and the
    scheduler's own shutdown is back."""
    bridge = attach(scheduler, tracker)
    with pytest.raises(InvalidArgumentError):
        attach(scheduler, tracker)
    scheduler.start()
    bridge.detach()
    assert "shutdown" not in vars(scheduler)
    scheduler.add_job(jobs.ok, "date", run_date=NOW(UTC), id="untracked")
    wait_until(lambda: jobs.calls, "the job")
    scheduler.shutdown(wait=True)
    assert runs_of(tracker, "untracked") == []
    attach(scheduler, tracker).detach()  # attachable again


def test_job_arguments_reach_the_function(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """Positional and keyword job arguments pass through the bridge unchanged."""
    attach(scheduler, tracker)
    scheduler.add_job(
        jobs.with_args, "date", run_date=NOW(UTC), id="args", args=[2], kwargs={"b": 3, "z": 1}
    )
    scheduler.start()
    wait_until(finished(tracker, "args"), "the run")
    assert jobs.calls == ["with_args 2 3 ['z']"]


@pytest.mark.parametrize(
    "fields",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": True},
        {"retries": -1},
        {"retries": 1.5},
        {"backoff": -1},
        {"backoff_max": "1"},
    ],
)
def test_bad_policies_are_rejected(fields: dict[str, Any]) -> None:
    """A policy with a non-positive timeout or a negative/fractional retry count or
    backoff is an InvalidArgumentError when made, not a surprise at run time."""
    with pytest.raises(InvalidArgumentError):
        JobPolicy(**fields)


def test_backoff_doubles_up_to_its_cap() -> None:
    """Retry delays: backoff, then doubling, never above backoff_max."""
    policy = JobPolicy(retries=5, backoff=1, backoff_max=5)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_fixed_cause_texts_are_the_cores() -> None:
    """The bridge's texts for skips, misses and shutdown are the core's wording."""
    for code, text in CAUSE_TEXTS.items():
        assert _CAUSES[code].message == text


def test_bad_source_is_rejected_at_attach(scheduler: BackgroundScheduler) -> None:
    """attach() validates the source name at once."""
    with pytest.raises(InvalidArgumentError):
        attach(scheduler, source="Not Valid")


def test_cancellation_of_a_thread_job_by_itself_is_canceled(
    scheduler: BackgroundScheduler, tracker: ExecutionTracker
) -> None:
    """A thread job raising concurrent.futures.CancelledError outside a shutdown is
    canceled/cancelled (never error)."""
    attach(scheduler, tracker)

    def cancels() -> None:
        raise concurrent.futures.CancelledError

    scheduler.add_job(cancels, "date", run_date=NOW(UTC) + timedelta(milliseconds=1), id="c")
    scheduler.start()
    wait_until(finished(tracker, "c"), "the run")
    (run,) = runs_of(tracker, "c")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "cancelled")

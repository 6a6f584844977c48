"""Misfires after a simulated restart with a persistent job store (SQLAlchemyJobStore
over SQLite): the process that scheduled the jobs stops, time passes (its stored
next run times are moved into the past, as a 35 s outage leaves them), and a new
scheduler on the same store finds them overdue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler

from exectrack import ExecutionTracker, RunStatus
from exectrack.integrations.apscheduler import CAUSE_TEXTS, attach
from scheduling import jobs
from scheduling.helpers import await_until, finished, runs_of, wait_until

OUTAGE = timedelta(seconds=35)  # four due times of a 10 s interval pass while down


def schedule_then_go_down(url: str, **job_options: Any) -> None:
    """The first process: schedules the job on the persistent store, then stops."""
    first = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url)})
    first.start()
    first.add_job(jobs.ok, "interval", seconds=10, id="digest", **job_options)
    first.shutdown()
    # The outage: the stored next run time is now 35 s in the past.
    offline = BackgroundScheduler()
    store = SQLAlchemyJobStore(url=url)
    store.start(offline, "default")
    (job,) = store.get_all_jobs()
    job.next_run_time = datetime.now(UTC) - OUTAGE
    store.update_job(job)
    store.shutdown()


@pytest.fixture
def job_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.sqlite'}"


def restart(url: str, tracker: ExecutionTracker, expect: int) -> None:
    second = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url)})
    attach(second, tracker)
    second.start()
    try:
        wait_until(finished(tracker, "digest", expect), f"{expect} runs")
    finally:
        second.shutdown()


def test_coalesced_misfire_is_one_missed_run_with_the_coalesced_count(
    job_url: str, tracker: ExecutionTracker
) -> None:
    """Default coalescing: APScheduler merges the four overdue times into one, misses
    it (past the 1 s grace) and says nothing about the other three: one
    canceled/missed_schedule run with coalesced=3; the job does not run."""
    schedule_then_go_down(job_url)
    restart(job_url, tracker, 1)
    (run,) = runs_of(tracker, "digest")
    assert (run.status, run.error_code) == (RunStatus.CANCELED, "missed_schedule")
    assert run.error_message == CAUSE_TEXTS["missed_schedule"]
    assert run.metadata["coalesced"] == 3
    assert run.metadata["misfire_grace_s"] == 1
    assert run.metadata["lateness_ms"] > 1000
    assert jobs.calls == []


def test_uncoalesced_misfires_are_one_missed_run_each(
    job_url: str, tracker: ExecutionTracker
) -> None:
    """coalesce=False: every overdue time is its own missed_schedule run."""
    schedule_then_go_down(job_url, coalesce=False)
    restart(job_url, tracker, 4)
    runs = runs_of(tracker, "digest")
    assert [r.error_code for r in runs] == ["missed_schedule"] * 4
    scheduled = sorted(r.metadata["scheduled_at"] for r in runs)
    assert len(set(scheduled)) == 4
    assert all("coalesced" not in r.metadata for r in runs)


def test_overdue_run_within_its_grace_runs_and_says_what_it_coalesced(
    job_url: str, tracker: ExecutionTracker
) -> None:
    """With a grace longer than its lateness the merged execution runs: a success run
    that records the three due times folded into it and its lateness."""
    schedule_then_go_down(job_url, misfire_grace_time=30)
    restart(job_url, tracker, 1)
    (run,) = runs_of(tracker, "digest")
    assert run.status is RunStatus.SUCCESS
    assert run.metadata["coalesced"] == 3
    assert 4000 < run.metadata["lateness_ms"] < 30_000
    assert jobs.calls == ["ok"]


def test_uncoalesced_mix_of_missed_and_run_times_is_attributed(
    job_url: str, tracker: ExecutionTracker
) -> None:
    """coalesce=False with a 20 s grace: the two oldest due times are missed, the two
    within grace run; each run carries its own scheduled time."""
    schedule_then_go_down(job_url, coalesce=False, misfire_grace_time=20)
    restart(job_url, tracker, 4)
    runs = sorted(runs_of(tracker, "digest"), key=lambda r: r.metadata["scheduled_at"])
    assert [r.status for r in runs] == [RunStatus.CANCELED] * 2 + [RunStatus.SUCCESS] * 2
    assert [r.error_code for r in runs[:2]] == ["missed_schedule"] * 2
    assert len({r.metadata["scheduled_at"] for r in runs}) == 4
    assert jobs.calls == ["ok", "ok"]


def test_asyncio_scheduler_records_the_misfire_after_restart(
    job_url: str, tracker: ExecutionTracker
) -> None:
    """AsyncIOScheduler on the same persistent store records the same missed run."""
    schedule_then_go_down(job_url)

    async def scenario() -> None:
        s = AsyncIOScheduler(jobstores={"default": SQLAlchemyJobStore(url=job_url)})
        attach(s, tracker)
        s.start()
        await await_until(finished(tracker, "digest"), "the missed run")
        s.shutdown()

    asyncio.run(scenario())
    (run,) = runs_of(tracker, "digest")
    assert (run.error_code, run.metadata["coalesced"]) == ("missed_schedule", 3)

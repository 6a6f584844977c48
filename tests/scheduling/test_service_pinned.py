"""HeartbeatService pinned exactly: what each task becomes on the scheduler (trigger,
zone, job options, the bridge's policy), the checks made before anything is added,
and the lifecycle (start, running, shutdown, run_until_stopped and its signal handlers).

Each assertion is one a mutant of ``heartbeat/_service.py`` changed (``make mutate
MODULES=src/exectrack/heartbeat/_service.py``); the end-to-end runs are in
test_cli_heartbeat.py and test_legacy.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from exectrack import ExecutionTracker
from exectrack.heartbeat import HeartbeatService, LegacyConfig, Task, TaskFileError
from exectrack.heartbeat._tasks import load_tasks
from scheduling import jobs


def _jobs(scheduler: Any) -> dict[str, Any]:
    return {job.id: job for job in scheduler.get_jobs()}


def test_each_task_becomes_a_job_with_its_options(tracker: ExecutionTracker) -> None:
    tasks = [
        Task(
            "every",
            jobs.with_args,
            interval="90s",
            description="adds",
            args=(1,),
            kwargs={"b": 2},
            max_concurrent=3,
            coalesce=False,
            misfire_grace="30s",
        ),
        Task("nightly", jobs.ok, cron="0 3 * * *"),
    ]
    service = HeartbeatService(tasks, tracker=tracker, timezone="Europe/Berlin")
    scheduler = BackgroundScheduler(timezone="UTC")
    bridge = service.install(scheduler)
    assert (service.bridge, service.scheduler) == (bridge, scheduler)
    scheduler.start(paused=True)  # a job's defaults are filled in when it is stored
    every, nightly = _jobs(scheduler)["every"], _jobs(scheduler)["nightly"]
    assert (every.func, every.name, every.args, every.kwargs) == (
        jobs.with_args,
        "adds",
        (1,),
        {"b": 2},
    )
    assert (every.max_instances, every.coalesce, every.misfire_grace_time) == (3, False, 30)
    assert isinstance(every.trigger, IntervalTrigger)
    assert every.trigger.interval == timedelta(seconds=90)
    assert str(every.trigger.timezone) == "Europe/Berlin"  # the service's zone
    assert (nightly.func, nightly.name, nightly.args, nightly.kwargs) == (
        jobs.ok,
        "nightly",
        (),
        {},
    )
    assert (nightly.max_instances, nightly.coalesce) == (1, True)
    assert nightly.misfire_grace_time == scheduler._job_defaults["misfire_grace_time"]
    assert isinstance(nightly.trigger, CronTrigger)
    assert str(nightly.trigger.timezone) == "Europe/Berlin"
    fields = {f.name: str(f) for f in nightly.trigger.fields}
    assert (fields["minute"], fields["hour"], fields["day_of_week"]) == ("0", "3", "*")
    service.shutdown()


def test_a_tasks_own_zone_wins_and_the_schedulers_is_the_last_resort(
    tracker: ExecutionTracker,
) -> None:
    tasks = [
        Task("tokyo", jobs.ok, cron="0 9 * * *", timezone="Asia/Tokyo"),
        Task("plain", jobs.ok, interval=60),
    ]
    scheduler = BackgroundScheduler(timezone="America/New_York")
    HeartbeatService(tasks, tracker=tracker).install(scheduler)
    zones = {job.id: str(job.trigger.timezone) for job in scheduler.get_jobs()}
    assert zones == {"tokyo": "Asia/Tokyo", "plain": "America/New_York"}


def test_each_task_sets_its_policy_on_the_bridge(tracker: ExecutionTracker) -> None:
    tasks = [
        Task(
            "a",
            jobs.ok,
            interval=60,
            timeout="5s",
            retries=2,
            backoff=4,
            priority=7,
            description="inbox",
        ),
        Task("b", jobs.ok, interval=60, backoff=120),
        Task("c", jobs.ok, interval=60),
    ]
    bridge = HeartbeatService(tasks, tracker=tracker).install(BackgroundScheduler())
    a, b, c = (bridge.policy_for(t) for t in ("a", "b", "c"))
    assert (a.timeout, a.retries, a.backoff, a.backoff_max) == (5.0, 2, 4.0, 60.0)
    assert a.metadata == {"priority": 7, "description": "inbox"}
    assert (b.timeout, b.retries, b.backoff, b.backoff_max) == (None, 0, 120.0, 120.0)
    assert (c.backoff, c.backoff_max, c.metadata) == (1.0, 60.0, {"priority": 0})


def test_a_task_replaces_a_job_with_its_id(tracker: ExecutionTracker) -> None:
    """An app's scheduler (say, with a persistent job store) may hold the job already."""
    scheduler = BackgroundScheduler()
    scheduler.add_job(jobs.fails, "interval", seconds=5, id="a")
    HeartbeatService([Task("a", jobs.ok, interval=60)], tracker=tracker).install(scheduler)
    scheduler.start(paused=True)  # pending jobs are stored (and replaced) at start
    try:
        assert [(job.id, job.func) for job in scheduler.get_jobs()] == [("a", jobs.ok)]
    finally:
        scheduler.shutdown()


def test_a_coroutine_task_needs_an_asyncio_scheduler(tracker: ExecutionTracker) -> None:
    service = HeartbeatService(
        [Task("plain", jobs.ok, interval=60), Task("co", jobs.async_ok, interval=60)],
        tracker=tracker,
    )
    scheduler = BackgroundScheduler()
    with pytest.raises(TaskFileError) as err:
        service.install(scheduler)
    assert str(err.value) == (
        "task 'co': field 'target': a coroutine function needs an AsyncIOScheduler "
        "(`exectrack heartbeat run` uses one)"
    )
    assert (err.value.task, err.value.field) == ("co", "target")
    assert scheduler.get_jobs() == []  # checked before anything is added
    assert service.bridge is None and service.scheduler is None
    asyncio_scheduler = AsyncIOScheduler()
    service.install(asyncio_scheduler)
    assert sorted(job.id for job in asyncio_scheduler.get_jobs()) == ["co", "plain"]


def test_the_service_refuses_what_is_not_a_task_and_duplicate_ids() -> None:
    with pytest.raises(TaskFileError) as err:
        HeartbeatService([Task("a", jobs.ok, interval=60), "b"])  # type: ignore[list-item]
    assert str(err.value) == "'b' is not a heartbeat Task"
    with pytest.raises(TaskFileError) as err:
        HeartbeatService([Task("a", jobs.ok, interval=60), Task("a", jobs.ok, interval=30)])
    assert str(err.value) == "task 'a': field 'id': duplicate"
    assert (err.value.task, err.value.field) == ("a", "id")


def test_a_new_service_holds_its_arguments_and_nothing_else() -> None:
    task = Task("a", jobs.ok, interval=60)
    service = HeartbeatService(iter([task]))
    assert service.tasks == (task,)
    assert (service.tracker, service.timezone, service.scheduler, service.bridge) == (
        None,
        None,
        None,
        None,
    )
    assert service.legacy == LegacyConfig()
    assert service.running() == 0  # no bridge yet
    service.shutdown()  # never started: nothing to stop


def test_from_file_takes_the_files_tasks_zone_and_legacy_stage(
    tmp_path: Path, tracker: ExecutionTracker
) -> None:
    path = tmp_path / "tasks.toml"
    path.write_text(
        'timezone = "Asia/Tokyo"\n'
        "[legacy]\n"
        'stage = "read_only"\n'
        'database = "postgresql://legacy.example/db"\n'
        'table = "old_runs"\n'
        "[[tasks]]\n"
        'id = "a"\n'
        'target = "scheduling.jobs:ok"\n'
        'interval = "1m"\n',
        encoding="utf-8",
    )
    service = HeartbeatService.from_file(path, tracker=tracker)
    assert [t.id for t in service.tasks] == ["a"]
    assert (service.tracker, service.timezone) == (tracker, "Asia/Tokyo")
    assert service.legacy == LegacyConfig("read_only", "postgresql://legacy.example/db", "old_runs")
    overridden = HeartbeatService.from_file(load_tasks(path), legacy_stage="runs_only")
    assert overridden.tracker is None
    assert overridden.legacy == LegacyConfig(
        "runs_only", "postgresql://legacy.example/db", "old_runs"
    )
    assert overridden.tasks == service.tasks


def test_start_runs_the_tasks_on_a_scheduler_of_its_own(tracker: ExecutionTracker) -> None:
    service = HeartbeatService(
        [Task("a", jobs.ok, interval=3600)], tracker=tracker, timezone="Asia/Tokyo"
    )
    scheduler = service.start()
    try:
        assert isinstance(scheduler, BackgroundScheduler) and scheduler.running
        assert service.scheduler is scheduler
        assert str(scheduler.timezone) == "Asia/Tokyo"
        assert [job.id for job in scheduler.get_jobs()] == ["a"]
    finally:
        service.shutdown()
    assert not scheduler.running


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)  # polling the scheduler's threads, not waiting for time


def test_running_counts_the_executions_in_progress(tracker: ExecutionTracker) -> None:
    service = HeartbeatService(
        [Task("a", jobs.blocks, interval=3600), Task("b", jobs.blocks, interval=3600)],
        tracker=tracker,
    )
    scheduler = service.start()
    try:
        assert service.running() == 0
        for job in scheduler.get_jobs():
            job.modify(next_run_time=datetime.now(UTC))
        _until(lambda: service.running() == 2, "both tasks run")
        jobs.release.set()
        _until(lambda: service.running() == 0, "both returned")
    finally:
        jobs.release.set()
        service.shutdown()


def test_run_until_stopped_ends_at_its_duration(tracker: ExecutionTracker) -> None:
    service = HeartbeatService([Task("a", jobs.async_ok, interval=3600)], tracker=tracker)
    assert asyncio.run(service.run_until_stopped(duration=0.05)) == 0
    assert isinstance(service.scheduler, AsyncIOScheduler)
    assert not service.scheduler.running


def test_run_until_stopped_ends_when_told_and_on_sigterm(tracker: ExecutionTracker) -> None:
    """Its own stop event, and SIGTERM (a real one, to this process): either ends a
    run that has no duration (without them it would run until pytest-timeout)."""
    service = HeartbeatService([Task("a", jobs.async_ok, interval=3600)], tracker=tracker)

    async def told() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await service.run_until_stopped(stop=stop)

    async def signalled() -> int:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        return await service.run_until_stopped()

    assert asyncio.run(told()) == 0
    assert asyncio.run(signalled()) == 0


def test_run_until_stopped_gives_the_hosts_signal_handlers_back(tracker: ExecutionTracker) -> None:
    seen: list[int] = []

    def host_handler(signum: int, frame: object) -> None:
        seen.append(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, host_handler)
    try:
        service = HeartbeatService([Task("a", jobs.async_ok, interval=3600)], tracker=tracker)
        asyncio.run(service.run_until_stopped(duration=0.05))
        assert signal.getsignal(signal.SIGTERM) is host_handler
        assert signal.getsignal(signal.SIGINT) is previous[signal.SIGINT]
        os.kill(os.getpid(), signal.SIGTERM)
        _until(lambda: seen == [signal.SIGTERM], "the host's handler ran")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_run_until_stopped_says_what_is_still_running_after_the_grace(
    tracker: ExecutionTracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="exectrack.heartbeat")
    service = HeartbeatService([Task("a", jobs.blocks, interval=3600)], tracker=tracker)

    async def run() -> int:
        stop = asyncio.Event()

        def started() -> None:
            if service.running():
                stop.set()
            else:
                asyncio.get_running_loop().call_later(0.01, started)

        loop = asyncio.get_running_loop()
        loop.call_soon(
            lambda: service.scheduler.get_job("a").modify(next_run_time=datetime.now(UTC))
        )
        loop.call_soon(started)
        left = await service.run_until_stopped(duration=60, grace=0.2, stop=stop)
        jobs.release.set()  # before asyncio.run waits for the thread pool
        return left

    try:
        assert asyncio.run(run()) == 1
    finally:
        jobs.release.set()
    [record] = [r for r in caplog.records if r.name == "exectrack.heartbeat"]
    assert record.getMessage() == (
        "exectrack: 1 heartbeat execution(s) still running after 0 s; "
        "a thread cannot be stopped from outside"
    )


def test_run_until_stopped_runs_in_the_services_zone_and_waits_out_the_grace(
    tracker: ExecutionTracker,
) -> None:
    """Its AsyncIOScheduler takes the service's zone; an execution still running at
    the stop is waited for (up to ``grace``, 10 s unless given) and then not counted."""
    assert inspect.signature(HeartbeatService.run_until_stopped).parameters["grace"].default == 10
    service = HeartbeatService(
        [Task("a", jobs.blocks, interval=3600)], tracker=tracker, timezone="Asia/Tokyo"
    )

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def started() -> None:
            if service.running():
                stop.set()  # and the execution ends a little later, within the grace
                loop.call_later(0.1, jobs.release.set)
            else:
                loop.call_later(0.01, started)

        loop.call_soon(
            lambda: service.scheduler.get_job("a").modify(next_run_time=datetime.now(UTC))
        )
        loop.call_soon(started)
        return await service.run_until_stopped(grace=30, stop=stop)

    try:
        assert asyncio.run(run()) == 0
    finally:
        jobs.release.set()
    assert str(service.scheduler.timezone) == "Asia/Tokyo"


@pytest.mark.parametrize("wait", [True, False])
def test_shutdown_waits_for_running_executions_unless_told_not_to(
    tracker: ExecutionTracker, wait: bool
) -> None:
    service = HeartbeatService([Task("a", jobs.blocks, interval=3600)], tracker=tracker)
    scheduler = service.start()
    scheduler.get_job("a").modify(next_run_time=datetime.now(UTC))
    _until(lambda: service.running() == 1, "the execution runs")
    timer = threading.Timer(0.2, jobs.release.set)
    timer.start()
    if wait:
        service.shutdown()  # the default waits
    else:
        service.shutdown(wait=False)
    assert service.running() == (0 if wait else 1)
    timer.join()
    _until(lambda: service.running() == 0, "the execution ended")

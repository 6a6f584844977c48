"""The heartbeat service: tasks scheduled on APScheduler, every execution a run."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from exectrack._log import get_logger
from exectrack._tracker import ExecutionTracker
from exectrack.heartbeat._tasks import (
    LegacyConfig,
    LegacyStage,
    Task,
    TaskFile,
    TaskFileError,
    load_tasks,
)

__all__ = ["HeartbeatService"]

log = get_logger("exectrack.heartbeat")


class HeartbeatService:
    """Runs heartbeat tasks on an APScheduler scheduler through the bridge.

    In an app: ``HeartbeatService(tasks).start()`` (a ``BackgroundScheduler`` of its
    own; plain functions only) or ``service.install(scheduler)`` on the app's own
    ``BackgroundScheduler``/``AsyncIOScheduler`` (coroutine tasks need the latter).
    From a task file: ``HeartbeatService.from_file("tasks.toml")``, or
    ``exectrack heartbeat run tasks.toml``. ``legacy`` sets the legacy table's stage:
    in ``dual`` every execution is also written to it (see
    docs/heartbeat-retirement.md).
    """

    def __init__(
        self,
        tasks: Iterable[Task],
        *,
        tracker: ExecutionTracker | None = None,
        legacy: LegacyConfig | None = None,
        timezone: str | None = None,
    ) -> None:
        self.tasks = tuple(tasks)
        seen: set[str] = set()
        for task in self.tasks:
            if not isinstance(task, Task):
                raise TaskFileError(f"{task!r} is not a heartbeat Task")
            if task.id in seen:
                raise TaskFileError(
                    f"task {task.id!r}: field 'id': duplicate", task=task.id, field="id"
                )
            seen.add(task.id)
        self.tracker = tracker
        self.legacy = legacy or LegacyConfig()
        self.timezone = timezone
        self.scheduler: Any = None
        self.bridge: Any = None
        self._legacy_table: Any = None

    @classmethod
    def from_file(
        cls,
        path: str | Path | TaskFile,
        *,
        tracker: ExecutionTracker | None = None,
        legacy_stage: LegacyStage | None = None,
    ) -> HeartbeatService:
        """The service a task file declares (validated whole first); ``legacy_stage``
        overrides the file's ``[legacy] stage``."""
        spec = path if isinstance(path, TaskFile) else load_tasks(path)
        legacy = spec.legacy
        if legacy_stage is not None:
            legacy = LegacyConfig(legacy_stage, legacy.database, legacy.table)
        return cls(spec.tasks, tracker=tracker, legacy=legacy, timezone=spec.timezone)

    def install(self, scheduler: Any) -> Any:
        """Attach the bridge to ``scheduler`` and add every task as a job (replacing
        jobs with the same ids); returns the bridge. Nothing is added when a task
        cannot run on this scheduler or the legacy table is not ready."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        from exectrack.heartbeat.legacy import LegacyRecorder, LegacyTable
        from exectrack.integrations.apscheduler import JobPolicy, attach

        if not isinstance(scheduler, AsyncIOScheduler):
            for task in self.tasks:
                if task.is_coroutine:
                    raise TaskFileError(
                        f"task {task.id!r}: field 'target': a coroutine function needs an "
                        "AsyncIOScheduler (`exectrack heartbeat run` uses one)",
                        task=task.id,
                        field="target",
                    )
        listeners = []
        if self.legacy.stage == "dual":
            assert self.legacy.database is not None  # LegacyConfig checks it
            table = LegacyTable(self.legacy.database, self.legacy.table)
            table.require_ready()
            self._legacy_table = table
            listeners.append(LegacyRecorder(table))
        bridge = attach(scheduler, self.tracker, listeners=listeners)
        default_zone = self.timezone or getattr(scheduler, "timezone", None)
        for task in self.tasks:
            zone = task.timezone or default_zone  # a task's own zone first
            bridge.set_policy(
                task.id,
                JobPolicy(
                    timeout=task.timeout,  # type: ignore[arg-type]  # normalised to float
                    retries=task.retries,
                    backoff=float(task.backoff),
                    backoff_max=max(60.0, float(task.backoff)),
                    metadata=task.metadata(),
                ),
            )
            if task.cron is not None:
                trigger = CronTrigger.from_crontab(task.cron, timezone=zone)
            else:
                trigger = IntervalTrigger(seconds=float(task.interval), timezone=zone)  # type: ignore[arg-type]
            options: dict[str, Any] = {}
            if task.misfire_grace is not None:
                options["misfire_grace_time"] = task.misfire_grace
            scheduler.add_job(
                task.func,
                trigger,
                id=task.id,
                name=task.description or task.id,
                args=list(task.args),
                kwargs=dict(task.kwargs),
                max_instances=task.max_concurrent,
                coalesce=task.coalesce,
                replace_existing=True,
                **options,
            )
        self.scheduler = scheduler
        self.bridge = bridge
        return bridge

    def start(self) -> Any:
        """Run the tasks on a ``BackgroundScheduler`` of the service's own."""
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(**({"timezone": self.timezone} if self.timezone else {}))
        self.install(scheduler)
        scheduler.start()
        return scheduler

    def shutdown(self, wait: bool = True) -> None:
        """Stop the scheduler (running executions are told to stop first)."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        self.close()

    def close(self) -> None:
        if self._legacy_table is not None:
            self._legacy_table.close()
            self._legacy_table = None

    def running(self) -> int:
        """How many executions are in progress."""
        bridge = self.bridge
        if bridge is None:
            return 0
        return sum(len(bridge.running_runs(task.id)) for task in self.tasks)

    async def run_until_stopped(
        self,
        duration: float | None = None,
        grace: float = 10.0,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Run on an ``AsyncIOScheduler`` (coroutine tasks on the loop, plain ones in
        its thread pool) until SIGINT/SIGTERM, ``stop`` or ``duration`` seconds; then
        shut down and wait up to ``grace`` seconds for running executions. Returns how
        many were still running (threads cannot be stopped from outside)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        handled: list[tuple[signal.Signals, Any]] = []  # with the handler it replaced
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, stop.set)
                handled.append((sig, previous))
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        scheduler = AsyncIOScheduler(**({"timezone": self.timezone} if self.timezone else {}))
        self.install(scheduler)
        try:
            scheduler.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
            scheduler.shutdown()
            deadline = time.monotonic() + grace
            await asyncio.sleep(0)
            while self.running() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls threads
                await asyncio.sleep(0.05)
            left = self.running()
            if left:
                log.warning(
                    "exectrack: %d heartbeat execution(s) still running after %.0f s; "
                    "a thread cannot be stopped from outside",
                    left,
                    grace,
                )
            return left
        finally:
            for sig, previous in handled:
                loop.remove_signal_handler(sig)  # which leaves the default action
                if previous is not None:  # the host's handler (exectrack's, say) again
                    signal.signal(sig, previous)
            self.close()

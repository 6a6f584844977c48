"""APScheduler 3.11 bridge: every execution, skip and miss of a job is one run.

``pip install 'exectrack[heartbeat]'``, then one call::

    from apscheduler.schedulers.background import BackgroundScheduler
    from exectrack.integrations.apscheduler import attach

    scheduler = BackgroundScheduler()
    bridge = attach(scheduler)                        # or attach(scheduler, tracker)
    bridge.set_policy("inbox", timeout=30, retries=2, backoff=5)
    scheduler.add_job(check_inbox, "interval", minutes=30, id="inbox")
    scheduler.start()

Works with ``BackgroundScheduler`` (thread pools) and ``AsyncIOScheduler`` (coroutine
jobs as tasks, plain functions in the loop's thread pool). Each run has
``source="heartbeat"``, ``source_ref=<job id>`` and metadata ``scheduled_at``,
``lateness_ms`` (start minus scheduled time), ``attempt`` and, when APScheduler merged
several due times into one, ``coalesced`` (how many it dropped).

| what happened to a due execution                    | status     | error_code          |
| --------------------------------------------------- | ---------- | ------------------- |
| the job returned                                    | success    |                     |
| it raised, after its last retry                     | error      | from the classifier |
| it raised ``TimeoutError`` itself                   | timeout    | deadline_exceeded   |
| it ran past the bridge's ``timeout``                | timeout    | deadline_exceeded   |
| skipped: the previous instance still ran            | canceled   | skipped_overlap     |
|   (``EVENT_JOB_MAX_INSTANCES``)                     |            |                     |
| missed: later than ``misfire_grace_time``           | canceled   | missed_schedule     |
|   (``EVENT_JOB_MISSED``; ``coalesced`` in metadata) |            |                     |
| cancelled because the scheduler shut down           | canceled   | shutdown            |
| a coroutine job cancelled for another reason        | canceled   | cancelled           |

Timeouts: APScheduler has none, so the bridge's policy adds one, counted over the
whole execution (every attempt and backoff), also stored as the run's ``deadline``.
A coroutine job is cancelled at the deadline and the scheduler sees ``JobTimeout``.
A thread cannot be killed: at the deadline the run is recorded ``timeout`` and the
job is asked to stop (``current_execution().stop_requested``), but the function runs
on until it returns; it keeps its ``max_instances`` slot meanwhile, so later due times
are recorded as ``skipped_overlap``. When it returns late the scheduler sees
``JobTimeout``; an exception it raises late propagates unchanged.

Shutdown: ``scheduler.shutdown()`` first tells running executions (their
``stop_requested`` turns true and their cancel reason becomes ``shutdown``).
``AsyncIOScheduler`` then cancels coroutine jobs: ``canceled``/``shutdown``. Threads
are never interrupted (``shutdown(wait=True)`` waits for them): a thread job that
stops on the request by raising ``concurrent.futures.CancelledError`` (see
:meth:`ExecutionContext.raise_if_stopping`) is ``canceled``/``shutdown``, one that
runs to its end records its real outcome. A retry waiting for its backoff stops at
once and records ``canceled``/``shutdown``.

Retries (``retries=N``): an attempt that raised an ``Exception`` is tried again after
``backoff`` seconds, doubling up to ``backoff_max``, in the same run (the failed
attempts' exception types are kept in ``retry_errors``); a timeout or a cancellation
is never retried.

Executors that run jobs in other processes (``ProcessPoolExecutor``) are not
wrapped: their skips and misses are recorded, their executions are not (a warning
says so once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import (
    EVENT_EXECUTOR_ADDED,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_SHUTDOWN,
    EVENT_SCHEDULER_STARTED,
    JobExecutionEvent,
    SchedulerEvent,
)
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.executors.pool import ProcessPoolExecutor
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.util import iscoroutinefunction_partial

import exectrack
from exectrack import ExecutionTracker, InvalidArgumentError, RunHandle, RunStatus
from exectrack._log import get_logger
from exectrack.integrations._aps_parts import (
    Execution,
    ExecutionContext,
    JobPolicy,
    JobTimeout,
    Listener,
    _Active,
    _coalesced,
    _current,
    _JobView,
    _RunTimes,
    _schedule_meta,
    _status,
    _stop,
    _timeout_text,
    current_execution,
)
from exectrack.integrations._watchdog import Watchdog

for _cls in (Execution, ExecutionContext, JobPolicy, JobTimeout):
    _cls.__module__ = __name__  # shown (tracebacks, reprs) where users import it from
current_execution.__module__ = __name__

__all__ = [
    "Execution",
    "ExecutionContext",
    "JobPolicy",
    "JobTimeout",
    "SchedulerBridge",
    "attach",
    "current_execution",
]

log = get_logger("exectrack.integrations.apscheduler")

SOURCE = "heartbeat"
# The core's fixed texts for these causes (kept equal by a test), so rows group.
CAUSE_TEXTS = {
    "skipped_overlap": "skipped: the previous run of this task was still running",
    "missed_schedule": "the scheduler missed this run",
    "shutdown": "the process shut down before the run finished",
}
_STASH_CAP = 10_000  # coalesced counts kept for misses not yet reported

_bridges: weakref.WeakKeyDictionary[BaseScheduler, SchedulerBridge] = weakref.WeakKeyDictionary()


def _keep(stash: dict[Any, Any], key: Any, value: Any) -> None:
    """``stash[key] = value``, the oldest entry dropped first past ``_STASH_CAP``."""
    if key not in stash and len(stash) >= _STASH_CAP:
        stash.pop(next(iter(stash)))
    stash[key] = value


def attach(
    scheduler: BaseScheduler,
    tracker: ExecutionTracker | None = None,
    *,
    source: str = SOURCE,
    policy: JobPolicy | None = None,
    listeners: Sequence[Listener] = (),
) -> SchedulerBridge:
    """Record every execution, skip and miss of ``scheduler``'s jobs as runs.

    ``tracker``: where runs go (default: the process-wide tracker, looked up at each
    use). ``policy``: the options of jobs without their own (see
    :meth:`SchedulerBridge.set_policy`). ``listeners`` are called with an
    :class:`Execution` after each run ends (in the thread that ended it; keep them
    quick). Attach before or after ``start()``; call once per scheduler.
    """
    if scheduler in _bridges:
        raise InvalidArgumentError("this scheduler already has an exectrack bridge attached")
    exectrack.with_run(source)  # validates the source name; opens nothing
    bridge = SchedulerBridge(scheduler, tracker, source, policy or JobPolicy(), listeners)
    _bridges[scheduler] = bridge
    return bridge


class SchedulerBridge:
    """The link between one scheduler and a tracker (made by :func:`attach`)."""

    def __init__(
        self,
        scheduler: BaseScheduler,
        tracker: ExecutionTracker | None,
        source: str,
        policy: JobPolicy,
        listeners: Sequence[Listener],
    ) -> None:
        self.scheduler = scheduler
        self.tracker = tracker
        self.source = source
        self.default_policy = policy
        self._policies: dict[str, JobPolicy] = {}
        self._listeners: list[Listener] = list(listeners)
        self._failed_listeners: set[int] = set()
        self._lock = threading.Lock()
        self._active: dict[str, list[_Active]] = {}
        self._coalesced: dict[tuple[str, datetime], int] = {}
        # Each job's misfire grace as of its last submission: a miss is reported from
        # the executor's thread, when the scheduler may have removed a one-off job.
        self._graces: dict[str, float | None] = {}
        self._stopping = False
        self._warned: set[str] = set()
        self._watchdog = Watchdog()
        self._wrapped: list[tuple[Any, Any]] = []  # (executor, its original submit_job)
        self._detached = False
        scheduler.add_listener(
            self._on_event, EVENT_EXECUTOR_ADDED | EVENT_JOB_MISSED | EVENT_SCHEDULER_SHUTDOWN
        )
        scheduler.add_listener(self._on_started, EVENT_SCHEDULER_STARTED)
        for alias, executor in list(getattr(scheduler, "_executors", {}).items()):
            self._wrap(alias, executor)
        original_shutdown = scheduler.shutdown

        @functools.wraps(original_shutdown)
        def shutdown(*args: Any, **kwargs: Any) -> Any:
            if scheduler.running:
                self._request_stop()
            return original_shutdown(*args, **kwargs)

        self._shutdown = shutdown
        scheduler.shutdown = shutdown

    # -- configuration -----------------------------------------------------------------

    def set_policy(
        self,
        job_id: str,
        policy: JobPolicy | None = None,
        *,
        timeout: float | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        metadata: Mapping[str, Any] | None = None,
    ) -> JobPolicy:
        """Set the timeout, retries and backoff of one job (by id); takes effect at its
        next execution. Pass a :class:`JobPolicy` or the fields."""
        if policy is None:
            policy = JobPolicy(timeout, retries, backoff, backoff_max, dict(metadata or {}))
        with self._lock:
            self._policies[job_id] = policy
        return policy

    def policy_for(self, job_id: str) -> JobPolicy:
        return self._policies.get(job_id, self.default_policy)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def running_runs(self, job_id: str) -> list[str]:
        """Run ids of this job's executions in progress."""
        with self._lock:
            return [a.run.id for a in self._active.get(job_id, ()) if a.run is not None]

    def detach(self) -> None:
        """Stop recording; executions already running still record their end."""
        if self._detached:
            return
        self._detached = True
        self.scheduler.remove_listener(self._on_event)
        self.scheduler.remove_listener(self._on_started)
        for executor, _original in self._wrapped:
            executor.__dict__.pop("submit_job", None)
        self._wrapped.clear()
        if self.scheduler.__dict__.get("shutdown") is self._shutdown:
            del self.scheduler.__dict__["shutdown"]
        _bridges.pop(self.scheduler, None)

    # -- scheduler side ----------------------------------------------------------------

    def _wrap(self, alias: str, executor: Any) -> None:
        if "submit_job" in executor.__dict__:
            return  # wrapped already
        original = executor.submit_job
        in_process = not isinstance(executor, ProcessPoolExecutor)
        if not in_process:
            self._warn_once(
                alias,
                "exectrack: executor %r runs jobs in other processes; their skips and "
                "misses are recorded, their executions are not",
                alias,
            )

        def submit_job(job: Any, run_times: list[datetime]) -> None:
            self._submit(original, in_process, job, run_times)

        executor.submit_job = submit_job
        self._wrapped.append((executor, original))

    def _submit(
        self, original: Callable[..., None], in_process: bool, job: Any, run_times: list[datetime]
    ) -> None:
        coalesced = _coalesced(job, run_times)
        target: Any = job
        if in_process and run_times:
            target = _JobView(job, self._tracked_func(job, run_times, coalesced))
        key = (job.id, run_times[-1]) if run_times else None
        # Kept before submitting: the executor may report the miss before we return.
        with self._lock:
            _keep(self._graces, job.id, job.misfire_grace_time)
            if coalesced and key is not None:
                _keep(self._coalesced, key, coalesced)
        try:
            original(target, run_times)
        except Exception as exc:
            with self._lock:
                self._coalesced.pop(key, None)  # type: ignore[arg-type]
            if isinstance(exc, MaxInstancesReachedError):
                blocked_by = self.running_runs(job.id)
                for run_time in run_times:
                    extra: dict[str, Any] = {"max_instances": job.max_instances}
                    if blocked_by:
                        extra["blocked_by"] = blocked_by
                    self._record_cancel(job.id, run_time, "skipped_overlap", coalesced, extra)
                raise
            # APScheduler advances the job past these due times anyway: they are lost.
            # After shutdown() its loop makes one more pass, and a job due then meets
            # an executor that is shut down.
            stopped = self.scheduler.state == STATE_STOPPED
            for run_time in run_times:
                if stopped:
                    self._record_cancel(job.id, run_time, "shutdown", coalesced, {})
                else:
                    self._record_error(job.id, run_time, coalesced, exc)
            raise

    def _on_started(self, event: SchedulerEvent) -> None:
        self._stopping = False

    def _on_event(self, event: SchedulerEvent) -> None:
        if event.code == EVENT_EXECUTOR_ADDED:
            lookup = getattr(self.scheduler, "_lookup_executor", None)
            if lookup is not None and event.alias is not None:
                self._wrap(event.alias, lookup(event.alias))
        elif event.code == EVENT_SCHEDULER_SHUTDOWN:
            self._request_stop()
        elif event.code == EVENT_JOB_MISSED and isinstance(event, JobExecutionEvent):
            with self._lock:
                coalesced = self._coalesced.pop((event.job_id, event.scheduled_run_time), 0)
                known = event.job_id in self._graces
                grace = self._graces.get(event.job_id)
            if not known:  # submitted before the bridge was attached
                job = self.scheduler.get_job(event.job_id)
                grace = None if job is None else job.misfire_grace_time
            extra: dict[str, Any] = {}
            if grace is not None:
                extra["misfire_grace_s"] = grace
            self._record_cancel(
                event.job_id, event.scheduled_run_time, "missed_schedule", coalesced, extra
            )

    def _request_stop(self) -> None:
        """The scheduler is shutting down: running executions learn it now."""
        with self._lock:
            self._stopping = True
            active = [a for runs in self._active.values() for a in runs]
        for a in active:
            _stop(a, "shutdown")

    # -- runs --------------------------------------------------------------------------

    def _start(self, job_id: str, metadata: Mapping[str, Any]) -> RunHandle:
        if self.tracker is not None:
            return self.tracker.start(self.source, job_id, metadata=metadata)
        return exectrack.start(self.source, job_id, metadata=metadata)

    def _with_run(self, job_id: str, metadata: Mapping[str, Any], timeout: float | None) -> Any:
        if self.tracker is not None:
            return self.tracker.with_run(self.source, job_id, metadata=metadata, deadline=timeout)
        return exectrack.with_run(self.source, job_id, metadata=metadata, deadline=timeout)

    def _record_cancel(
        self,
        job_id: str,
        run_time: datetime,
        code: str,
        coalesced: int,
        extra: Mapping[str, Any],
    ) -> None:
        """A due execution that never ran (skipped or missed): one canceled run."""
        try:
            now = datetime.now(UTC)
            meta = {
                **self.policy_for(job_id).metadata,
                **_schedule_meta(run_time, now, coalesced),
                **extra,
            }
            handle = self._start(job_id, meta)
            handle.finish_with_status(
                RunStatus.CANCELED, error_code=code, error_message=CAUSE_TEXTS[code]
            )
        except Exception:  # recording never breaks the scheduler's loop
            log.exception("exectrack: could not record a %s run of job %r", code, job_id)
            return
        self._notify(
            Execution(
                job_id=job_id,
                run_id=handle.id,
                status=RunStatus.CANCELED,
                scheduled_at=run_time,
                started_at=None,
                finished_at=now,
                duration_ms=None,
                attempts=0,
                cause=code,
                metadata=meta,
            )
        )

    def _record_error(
        self, job_id: str, run_time: datetime, coalesced: int, exc: Exception
    ) -> None:
        """A due execution the executor refused: one error run (nothing ran)."""
        try:
            now = datetime.now(UTC)
            meta = {**self.policy_for(job_id).metadata, **_schedule_meta(run_time, now, coalesced)}
            meta["submit_failed"] = True
            handle = self._start(job_id, meta)
            handle.finish_error(exc)
        except Exception:
            log.exception("exectrack: could not record a failed submission of job %r", job_id)
            return
        self._notify(
            Execution(
                job_id=job_id,
                run_id=handle.id,
                status=handle.status,
                scheduled_at=run_time,
                started_at=None,
                finished_at=now,
                duration_ms=None,
                attempts=0,
                error=exc,
                metadata=meta,
            )
        )

    def _tracked_func(
        self, job: Any, run_times: list[datetime], coalesced: int
    ) -> Callable[..., Any]:
        times = _RunTimes(run_times, job.misfire_grace_time)
        func = job.func
        if iscoroutinefunction_partial(func):

            async def tracked_coroutine(*args: Any, **kwargs: Any) -> Any:
                return await self._run_async(
                    job.id, str(job.trigger), times.take(), coalesced, func, args, kwargs
                )

            return tracked_coroutine

        def tracked(*args: Any, **kwargs: Any) -> Any:
            return self._run_sync(
                job.id, str(job.trigger), times.take(), coalesced, func, args, kwargs
            )

        return tracked

    def _begin(self, job_id: str, run_time: datetime) -> _Active:
        active = _Active(job_id, run_time, self.policy_for(job_id))
        with self._lock:
            self._active.setdefault(job_id, []).append(active)
            stopping = self._stopping
        if stopping:  # started after shutdown began (work queued in a pool)
            active.context.stopping.set()
        return active

    def _open_meta(self, active: _Active, trigger: str, coalesced: int) -> dict[str, Any]:
        meta = {
            **active.policy.metadata,
            **_schedule_meta(active.scheduled_at, active.started_at, coalesced),
            "trigger": trigger,
        }
        if active.policy.timeout is not None:
            meta["timeout_s"] = active.policy.timeout
        return meta

    def _end(
        self,
        active: _Active,
        run: RunHandle | None,
        result: Any,
        error: BaseException | None,
    ) -> None:
        with self._lock:
            runs = self._active.get(active.job_id)
            if runs is not None and active in runs:
                runs.remove(active)
                if not runs:
                    del self._active[active.job_id]
        if active.timed_out:
            return  # the timeout told the listeners already
        status = _status(run, error)
        cause = None
        if status is RunStatus.CANCELED and active.reason is not None:
            cause = active.reason.code
        self._notify(self._execution(active, run, status, cause, result, error))

    def _execution(
        self,
        active: _Active,
        run: RunHandle | None,
        status: RunStatus,
        cause: str | None,
        result: Any,
        error: BaseException | None,
    ) -> Execution:
        return Execution(
            job_id=active.job_id,
            run_id="" if run is None else run.id,
            status=status,
            scheduled_at=active.scheduled_at,
            started_at=active.started_at,
            finished_at=datetime.now(UTC),
            duration_ms=(time.monotonic() - active.t0) * 1000,
            attempts=active.context.attempt,
            cause=cause,
            result=result,
            error=error,
            metadata=dict(active.policy.metadata),
        )

    def _expire(self, active: _Active) -> None:
        """The watchdog's callback at a thread job's deadline."""
        with active.lock:
            if active.done:
                return
            active.timed_out = True
        active.context.stopping.set()
        run = active.run
        if run is not None:
            run.finish_with_status(
                RunStatus.TIMEOUT,
                error_code="deadline_exceeded",
                error_message=_timeout_text(active.policy),
                metadata={"attempt": active.context.attempt},
            )
        self._notify(
            self._execution(active, run, RunStatus.TIMEOUT, "deadline_exceeded", None, None)
        )

    def _run_sync(
        self,
        job_id: str,
        trigger: str,
        run_time: datetime,
        coalesced: int,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        active = self._begin(job_id, run_time)
        policy = active.policy
        token = _current.set(active.context)
        result: Any = None
        error: BaseException | None = None
        run: RunHandle | None = None
        key = None
        try:
            with exectrack.cancel_reason() as reason:
                active.reason = reason
                if active.context.stopping.is_set():
                    reason.code = "shutdown"
                meta = self._open_meta(active, trigger, coalesced)
                with self._with_run(job_id, meta, policy.timeout) as run:
                    active.run = run
                    active.context.run_id = run.id
                    if policy.timeout is not None:
                        key = self._watchdog.schedule(
                            active.t0 + policy.timeout, functools.partial(self._expire, active)
                        )
                    try:
                        result = self._attempts(active, run, func, args, kwargs)
                    except BaseException:
                        active.settle()
                        raise
                    if not active.settle():
                        raise JobTimeout(_timeout_text(policy))
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            if key is not None:
                self._watchdog.cancel(key)
            _current.reset(token)
            self._end(active, run, result, error)

    def _attempts(
        self,
        active: _Active,
        run: RunHandle,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        policy = active.policy
        errors: list[str] = []
        while True:
            active.context.attempt += 1
            attempt = active.context.attempt
            run.annotate(attempt=attempt)
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if attempt > policy.retries or active.context.stopping.is_set():
                    raise
                errors.append(type(exc).__name__)
                run.annotate(retry_errors=errors[-10:])
                if active.context.stopping.wait(policy.delay(attempt)):
                    if active.timed_out:
                        raise JobTimeout(_timeout_text(policy)) from exc
                    raise concurrent.futures.CancelledError from exc

    async def _run_async(
        self,
        job_id: str,
        trigger: str,
        run_time: datetime,
        coalesced: int,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        active = self._begin(job_id, run_time)
        policy = active.policy
        token = _current.set(active.context)
        result: Any = None
        error: BaseException | None = None
        run: RunHandle | None = None
        try:
            with exectrack.cancel_reason() as reason:
                active.reason = reason
                if active.context.stopping.is_set():
                    reason.code = "shutdown"
                meta = self._open_meta(active, trigger, coalesced)
                async with self._with_run(job_id, meta, policy.timeout) as run:
                    active.run = run
                    active.context.run_id = run.id
                    scope = asyncio.timeout(policy.timeout)
                    try:
                        async with scope:
                            result = await self._attempts_async(active, run, func, args, kwargs)
                    except TimeoutError:
                        if not scope.expired():
                            raise
                        active.context.stopping.set()
                        run.finish_with_status(
                            RunStatus.TIMEOUT,
                            error_code="deadline_exceeded",
                            error_message=_timeout_text(policy),
                        )
                        raise JobTimeout(_timeout_text(policy)) from None
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            _current.reset(token)
            self._end(active, run, result, error)

    async def _attempts_async(
        self,
        active: _Active,
        run: RunHandle,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        policy = active.policy
        errors: list[str] = []
        while True:
            active.context.attempt += 1
            attempt = active.context.attempt
            run.annotate(attempt=attempt)
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                if attempt > policy.retries or active.context.stopping.is_set():
                    raise
                errors.append(type(exc).__name__)
                run.annotate(retry_errors=errors[-10:])
                await asyncio.sleep(policy.delay(attempt))
                if active.context.stopping.is_set():
                    raise asyncio.CancelledError from exc

    # -- listeners ---------------------------------------------------------------------

    def _notify(self, execution: Execution) -> None:
        for listener in list(self._listeners):
            try:
                listener(execution)
            except Exception:
                if id(listener) not in self._failed_listeners:
                    self._failed_listeners.add(id(listener))
                    log.exception("exectrack: an execution listener failed (logged once)")

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

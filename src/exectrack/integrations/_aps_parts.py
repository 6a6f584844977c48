"""The framework-free parts of the APScheduler bridge: policies, what listeners get,
the execution context, and the bookkeeping of one execution."""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import exectrack
from exectrack import InvalidArgumentError, RunHandle, RunStatus

_COALESCE_COUNT_CAP = 100_000  # due times counted at most when APScheduler coalesced


class JobTimeout(TimeoutError):  # noqa: N818 - named like TimeoutError, which it is
    """What the scheduler sees when an execution ran past the bridge's timeout."""


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """Per-job options: ``timeout`` (seconds for the whole execution, or None),
    ``retries`` (extra attempts after an exception), ``backoff`` (seconds before the
    first retry, doubling up to ``backoff_max``) and ``metadata`` added to every run."""

    timeout: float | None = None
    retries: int = 0
    backoff: float = 1.0
    backoff_max: float = 60.0
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timeout is not None and not _positive(self.timeout):
            raise InvalidArgumentError(f"timeout={self.timeout!r}: seconds > 0, or None")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise InvalidArgumentError(f"retries={self.retries!r}: an integer >= 0")
        if self.retries < 0:
            raise InvalidArgumentError(f"retries={self.retries!r}: an integer >= 0")
        for name in ("backoff", "backoff_max"):
            value = getattr(self, name)
            if not (_positive(value) or (value == 0 and not isinstance(value, bool))):
                raise InvalidArgumentError(f"{name}={value!r}: seconds >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.backoff_max))


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, slots=True)
class Execution:
    """One recorded execution, skip or miss, as listeners get it.

    ``cause``: ``skipped_overlap``, ``missed_schedule``, ``shutdown`` or
    ``deadline_exceeded`` when the bridge knows it; ``started_at`` is None for a skip
    or a miss (nothing ran). ``result`` is what the job returned, ``error`` what it
    raised (the last attempt's exception).
    """

    job_id: str
    run_id: str
    status: RunStatus
    scheduled_at: datetime
    started_at: datetime | None
    finished_at: datetime
    duration_ms: float | None
    attempts: int
    cause: str | None = None
    result: Any = None
    error: BaseException | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


Listener = Callable[[Execution], None]


class ExecutionContext:
    """The execution running in this context (see :func:`current_execution`).

    ``stop_requested`` turns true when the bridge's timeout passed or the scheduler is
    shutting down; a long job should check it and end early.
    """

    __slots__ = ("attempt", "deadline", "job_id", "run_id", "scheduled_at", "stopping")

    def __init__(self, job_id: str, scheduled_at: datetime, deadline: float | None) -> None:
        self.job_id = job_id
        self.scheduled_at = scheduled_at
        self.deadline = deadline  # time.monotonic() value, or None
        self.run_id: str | None = None
        self.attempt = 0
        self.stopping = threading.Event()

    @property
    def stop_requested(self) -> bool:
        return self.stopping.is_set()

    def raise_if_stopping(self) -> None:
        """Raise ``concurrent.futures.CancelledError`` when a stop was requested, which
        records the run ``canceled`` with the cause (``shutdown``)."""
        if self.stopping.is_set():
            raise concurrent.futures.CancelledError

    def __repr__(self) -> str:
        return f"<ExecutionContext {self.job_id} attempt={self.attempt}>"


_current: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "exectrack_apscheduler_execution", default=None
)


def current_execution() -> ExecutionContext | None:
    """The bridge's execution running in this context, or None outside a job."""
    return _current.get()


class _Active:
    """Book-keeping for one execution in progress."""

    __slots__ = (
        "context",
        "done",
        "job_id",
        "lock",
        "policy",
        "reason",
        "run",
        "scheduled_at",
        "started_at",
        "t0",
        "timed_out",
    )

    def __init__(self, job_id: str, scheduled_at: datetime, policy: JobPolicy) -> None:
        self.job_id = job_id
        self.scheduled_at = scheduled_at
        self.policy = policy
        self.started_at = datetime.now(UTC)
        self.t0 = time.monotonic()
        deadline = None if policy.timeout is None else self.t0 + policy.timeout
        self.context = ExecutionContext(job_id, scheduled_at, deadline)
        self.reason: exectrack.CancelReason | None = None
        self.run: RunHandle | None = None
        self.lock = threading.Lock()
        self.done = False
        self.timed_out = False

    def settle(self) -> bool:
        """The execution ended by itself: False if the timeout already ended its run."""
        with self.lock:
            if self.timed_out:
                return False
            self.done = True
            return True


class _RunTimes:
    """Which scheduled time each call of one submission is for. APScheduler calls the
    job once per due time it does not declare missed, in order; the same misfire rule
    tells which ones it skipped (exact unless a due time sits on the grace boundary)."""

    __slots__ = ("_grace", "_next", "_times")

    def __init__(self, times: Sequence[datetime], grace: int | None) -> None:
        self._times = list(times)
        self._grace = grace
        self._next = 0

    def take(self) -> datetime:
        now = datetime.now(UTC)
        times = self._times
        while self._next < len(times) - 1:
            candidate = times[self._next]
            self._next += 1
            if self._grace is None or (now - candidate).total_seconds() <= self._grace:
                return candidate
        self._next = len(times)
        return times[-1]


class _JobView:
    """The job as the executor sees it: the same job, with the tracked function."""

    __slots__ = ("_job", "func")

    def __init__(self, job: Any, func: Callable[..., Any]) -> None:
        self._job = job
        self.func = func

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)

    def __repr__(self) -> str:
        return repr(self._job)


def _stop(active: _Active, cause: str) -> None:
    reason = active.reason
    if reason is not None and reason.code is None:
        reason.code = cause
    active.context.stopping.set()


def _status(run: RunHandle | None, error: BaseException | None) -> RunStatus:
    """The run's recorded status; without a tracker, the same mapping done here."""
    if run is not None and run.status.is_terminal:
        return run.status
    if error is None:
        return RunStatus.SUCCESS
    if isinstance(error, TimeoutError):
        return RunStatus.TIMEOUT
    if isinstance(error, Exception) and not isinstance(error, concurrent.futures.CancelledError):
        return RunStatus.ERROR
    return RunStatus.CANCELED


def _timeout_text(policy: JobPolicy) -> str:
    return f"the task ran past its timeout ({policy.timeout:g} s)"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _schedule_meta(run_time: datetime, at: datetime, coalesced: int) -> dict[str, Any]:
    lateness = max(0.0, (at - run_time).total_seconds() * 1000)
    meta: dict[str, Any] = {"scheduled_at": _iso(run_time), "lateness_ms": round(lateness, 3)}
    if coalesced:
        meta["coalesced"] = coalesced
    return meta


def _coalesced(job: Any, run_times: Sequence[datetime]) -> int:
    """How many due times APScheduler dropped when it coalesced them into ``run_times``
    (it says nothing itself): the trigger's fire times from the job's next run time up
    to the one it kept. Counted before the scheduler moves ``next_run_time`` on."""
    if not run_times or not getattr(job, "coalesce", False):
        return 0
    first = getattr(job, "next_run_time", None)
    last = run_times[0]
    if first is None or first >= last:
        return 0
    count = 0
    current: datetime | None = first
    now = datetime.now(UTC)
    while current is not None and current < last and count < _COALESCE_COUNT_CAP:
        count += 1
        current = job.trigger.get_next_fire_time(current, now)
    return count

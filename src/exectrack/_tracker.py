"""The ExecutionTracker: start, finish, and the one place a run's lifecycle is written.

Recording never breaks the host: a store failure is logged once per cause, counted,
and the host's call goes on untouched (strict mode raises instead). A handle finishes
once; later finishes return ``FinishResult(applied=False, status=<first status>)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from exectrack._classify import ErrorClassifier, ResultClassifier, normalize_code
from exectrack._clock import Clock, SystemClock
from exectrack._config import Durability, Settings
from exectrack._context import current
from exectrack._exit import register_for_shutdown
from exectrack._failures import Failures
from exectrack._handle import RunHandle, null_handle
from exectrack._lifecycle import Outcome
from exectrack._model import (
    RunStatus,
    datetime_to_us,
    new_run_id,
    validate_source,
)
from exectrack._owner import process_owner
from exectrack._reads import TrackerReads
from exectrack._redact import (
    DEFAULT_METADATA_LIMIT,
    clean_text,
    encode_metadata,
    normalize_metadata,
)
from exectrack._writer import DEFAULT_QUEUE_SIZE, Writer, WriterStats
from exectrack.errors import InvalidArgumentError
from exectrack.monitor import DEFAULT_LEASE, DEFAULT_REAP_INTERVAL, Monitor
from exectrack.stores import FinishResult, FinishRun, MarkRunning, NewRun, Store, open_store

if TYPE_CHECKING:
    from exectrack._wrap import TrackedRun

__all__ = ["ExecutionTracker", "RunHandle", "TrackerStats", "null_handle"]

log = logging.getLogger("exectrack")

MESSAGE_LIMIT = 4096
REF_LIMIT = 512

Deadline = datetime | timedelta | float | int | None


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Health of the write path. ``dropped`` runs were never written."""

    enabled: bool
    durability: Durability
    open_runs: int
    queued: int
    committed: int
    not_applied: int
    dropped: int
    failures: int
    failures_by_cause: dict[str, int]


class ExecutionTracker(TrackerReads):
    """Records runs into a store.

    ``store`` is a Store, a database URL, or None for ``EXECTRACK_DATABASE_URL`` (else a
    file in the user's data directory). Keyword arguments beat environment variables.
    ``durability="async"`` (default) queues writes to a background writer with group
    commit; ``"sync"`` commits before ``start``/``finish`` return.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        enabled: bool | None = None,
        strict: bool | None = None,
        durability: Durability | None = None,
        classifier: ErrorClassifier | None = None,
        metadata_limit: int = DEFAULT_METADATA_LIMIT,
        clock: Clock | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        owner: str | None = None,
        lease: float | None = DEFAULT_LEASE,
        heartbeat_interval: float | None = None,
        reaper: bool | None = None,
        reap_interval: float = DEFAULT_REAP_INTERVAL,
        settings: Settings | None = None,
    ) -> None:
        if lease is not None and lease <= 0:
            raise InvalidArgumentError(f"lease={lease!r}: must be > 0 seconds (or None)")
        beat = heartbeat_interval
        if beat is None:
            beat = (lease if lease is not None else DEFAULT_LEASE) / 3
        if lease is not None and not 0 < beat < lease:
            raise InvalidArgumentError(
                f"heartbeat_interval={beat!r}: must be > 0 and shorter than the lease ({lease})"
            )
        env = settings if settings is not None else Settings.from_env()
        self.enabled: bool = env.enabled if enabled is None else enabled
        self.strict: bool = env.strict if strict is None else strict
        self.durability: Durability = env.durability if durability is None else durability
        if self.durability not in ("async", "sync"):
            raise InvalidArgumentError(f"durability={durability!r}: use 'async' or 'sync'")
        if isinstance(store, str | os.PathLike):
            self.store: Store = open_store(store)
            self._owns_store = True
        elif store is None:
            self.store = open_store(env.resolved_database_url())
            self._owns_store = True
        else:
            self.store = store
            self._owns_store = False
        self.classifier = classifier if classifier is not None else ErrorClassifier()
        self.metadata_limit = metadata_limit
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._owner = owner
        self._open_runs: dict[str, RunHandle] = {}
        self._finish_lock = threading.Lock()  # makes a handle's first finish atomic
        self._failures = Failures(self.strict)
        self._report = self._failures.report
        self._fail = self._failures.fail
        self._closed = False
        self._writer: Writer | None = None
        if self.durability == "async":
            self._writer = Writer(self.store, self._report, queue_size=queue_size)
        self.lease = lease
        self._lease_us = None if lease is None else round(lease * 1_000_000)
        self.reaper: bool = env.reaper if reaper is None else reaper
        self.monitor: Monitor | None = None
        if (lease is not None or self.reaper) and self.enabled:
            self.monitor = Monitor(
                self,
                lease=lease,
                heartbeat_interval=beat,
                reap_interval=reap_interval if self.reaper else None,
            )
            if self.reaper:
                self.monitor.ensure_started()
        if self.enabled:  # off means off: no exit hook, no signal handler
            register_for_shutdown(self, env.handle_sigterm)

    @property
    def owner(self) -> str:
        return self._owner if self._owner is not None else process_owner()

    # -- writes ------------------------------------------------------------------------

    def _create(self, cmd: NewRun) -> bool:
        writer = self._writer
        if writer is not None:
            if self._failures.deferred is not None:
                self._failures.raise_deferred()
            return writer.submit(cmd)
        try:
            self.store.create(cmd)
        except Exception as exc:
            self._fail("start", exc)
            return False
        return True

    def start(
        self,
        source: str,
        source_ref: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        deadline: Deadline = None,
        *,
        queued: bool = False,
        parent_id: str | None = None,
    ) -> RunHandle:
        """Start a run (``queued=True``: record it waiting; ``mark_running`` later).

        ``parent_id`` defaults to the run active in the current context.
        """
        validate_source(source)
        return self._open(source, source_ref, session_id, metadata, deadline, queued, parent_id)

    def _open(
        self,
        source: str,
        source_ref: str | None,
        session_id: str | None,
        metadata: Mapping[str, Any] | None,
        deadline: Deadline,
        queued: bool = False,
        parent_id: str | None = None,
        *,
        clean: bool = True,
    ) -> RunHandle:
        """Open a run. ``clean=False``: source_ref/session_id are already storable."""
        clock = self.clock
        h = RunHandle.__new__(RunHandle)
        h.id = new_run_id()
        h.source = source
        if clean:
            source_ref = None if source_ref is None else clean_text(source_ref, REF_LIMIT)
            session_id = None if session_id is None else clean_text(session_id, REF_LIMIT)
        h.source_ref = source_ref
        h.session_id = session_id
        if parent_id is None:
            parent = current.get()
            parent_id = None if parent is None else parent.id
        h.parent_id = parent_id
        h.queued = queued
        h._tracker = self
        h._extra = None
        h._final = None
        h._token = None
        h._t0 = clock.monotonic_ns()
        h.started_at_us = started = clock.now_us()
        h.deadline_at_us = None if deadline is None else _deadline_us(deadline, started)
        meta_json = None
        if metadata:
            h._meta = normalize_metadata(metadata)
            meta_json = encode_metadata(h._meta, self.metadata_limit)
        else:
            h._meta = None
        h.recorded = False
        if not self.enabled or self._closed:
            return h
        cmd = NewRun(
            h.id,
            source,
            started,
            RunStatus.QUEUED if queued else RunStatus.RUNNING,
            h.source_ref,
            h.session_id,
            parent_id,
            meta_json,
            self.owner,
            h.deadline_at_us,
            lease_until=None if self._lease_us is None else started + self._lease_us,
        )
        h.recorded = self._create(cmd)
        self._open_runs[h.id] = h
        monitor = self.monitor
        if monitor is not None and monitor._thread is None:
            monitor.ensure_started()
        return h

    def mark_running(self, target: RunHandle | str) -> FinishResult:
        handle = self._open_runs.get(target) if isinstance(target, str) else target
        run_id = target if isinstance(target, str) else target.id
        if handle is not None:
            if handle._final is not None:
                return FinishResult(False, handle._final)
            if not handle.queued:
                return FinishResult(False, RunStatus.RUNNING)
            handle.queued = False
            if not handle.recorded:
                return FinishResult(True, RunStatus.RUNNING)
        cmd = MarkRunning(run_id, self.clock.now_us())
        if self._writer is not None and handle is not None:
            self._writer.submit(cmd)
            return FinishResult(True, RunStatus.RUNNING)
        self.flush()
        try:
            return self.store.start(run_id, cmd.at)
        except Exception as exc:
            self._fail("mark_running", exc)
            return FinishResult(False, None)

    def finish_success(
        self, target: RunHandle | str, *, metadata: Mapping[str, Any] | None = None
    ) -> FinishResult:
        return self._finish(target, RunStatus.SUCCESS, None, None, None, metadata)

    def finish_error(
        self,
        target: RunHandle | str,
        error: BaseException | None = None,
        *,
        code: str | None = None,
        message: str | None = None,
        retryable: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FinishResult:
        """Finish as ``error`` from an exception (classified) or from code + message."""
        if error is None and code is None and message is None:
            raise InvalidArgumentError("finish_error needs an exception or a code/message")
        status = RunStatus.ERROR
        if error is not None:
            info = self.classifier.classify(error)
            code = code or info.code
            message = message or info.message
            retryable = info.retryable if retryable is None else retryable
            if isinstance(error, TimeoutError):
                status = RunStatus.TIMEOUT
        return self._finish(
            target,
            status,
            code or "internal_error",
            message or code,
            False if retryable is None else retryable,
            metadata,
        )

    def finish_with_status(
        self,
        target: RunHandle | str,
        status: RunStatus | str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        retryable: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FinishResult:
        final = RunStatus.parse(status)
        if not final.is_terminal:
            raise InvalidArgumentError(
                f"finish_with_status needs a terminal status (success, error, canceled, "
                f"timeout), not {final.value!r}"
            )
        return self._finish(target, final, error_code, error_message, retryable, metadata)

    def _end(self, handle: RunHandle, outcome: Outcome) -> None:
        """End a run from a wrapper: never raises into the host (unless strict)."""
        try:
            self._finish(
                handle, outcome.status, outcome.code, outcome.message, outcome.retryable, None
            )
        except Exception as exc:
            if self.strict:
                raise
            self._report("finish", exc)

    def _finish(
        self,
        target: RunHandle | str,
        status: RunStatus,
        code: str | None,
        message: str | None,
        retryable: bool | None,
        metadata: Mapping[str, Any] | None,
    ) -> FinishResult:
        if isinstance(target, str):
            handle = self._open_runs.get(target)
            if handle is None:
                return self._finish_foreign(target, status, code, message, retryable, metadata)
        else:
            handle = target
        with self._finish_lock:
            if handle._final is not None:
                return FinishResult(False, handle._final)
            if handle.queued and status is not RunStatus.CANCELED:
                return FinishResult(False, RunStatus.QUEUED)
            handle._final = status
        duration = (self.clock.monotonic_ns() - handle._t0) / 1e6
        meta_json = None
        if metadata or handle._extra:
            merged = dict(handle._meta) if handle._meta else {}
            if handle._extra:
                merged.update(normalize_metadata(handle._extra))
            if metadata:
                merged.update(normalize_metadata(metadata))
            meta_json = encode_metadata(merged, self.metadata_limit)
        handle._meta = handle._extra = None
        self._open_runs.pop(handle.id, None)
        if not handle.recorded:
            return FinishResult(True, status)
        cmd = self._finish_cmd(handle.id, status, duration, code, message, retryable, meta_json)
        writer = self._writer
        if writer is not None:
            if self._failures.deferred is not None:
                self._failures.raise_deferred()
            writer.submit(cmd)
            return FinishResult(True, status)
        try:
            result = self.store.finish(cmd)
        except Exception as exc:
            self._fail("finish", exc)
            return FinishResult(False, None)
        if not result.applied and result.status is not None and result.status.is_terminal:
            handle._final = result.status  # finished elsewhere first (the reaper, say)
        return result

    def _finish_cmd(
        self,
        run_id: str,
        status: RunStatus,
        duration_ms: float | None,
        code: str | None,
        message: str | None,
        retryable: bool | None,
        metadata_json: str | None,
    ) -> FinishRun:
        """The store command for a finish now: code normalised, message redacted, capped."""
        return FinishRun(
            run_id,
            status,
            self.clock.now_us(),
            duration_ms,
            None if code is None else normalize_code(code),
            None if message is None else clean_text(message, MESSAGE_LIMIT, redact=True),
            retryable,
            metadata_json,
        )

    def _finish_foreign(
        self,
        run_id: str,
        status: RunStatus,
        code: str | None,
        message: str | None,
        retryable: bool | None,
        metadata: Mapping[str, Any] | None,
    ) -> FinishResult:
        """Finish a run this process did not start: read it, merge, guarded write."""
        if not self.enabled:
            return FinishResult(False, None)
        try:
            self.flush()
            run = self.store.get(run_id)
            if run is None or run.is_terminal:
                return FinishResult(False, None if run is None else run.status)
            meta_json = None
            if metadata:
                merged = {**run.metadata, **normalize_metadata(metadata)}
                meta_json = encode_metadata(merged, self.metadata_limit)
            cmd = self._finish_cmd(run_id, status, None, code, message, retryable, meta_json)
            return self.store.finish(cmd)
        except InvalidArgumentError:
            raise
        except Exception as exc:
            self._fail("finish", exc)
            return FinishResult(False, None)

    # -- wrappers ----------------------------------------------------------------------

    def with_run(
        self,
        source: str,
        source_ref: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        deadline: Deadline = None,
        *,
        classify_result: ResultClassifier | None = None,
    ) -> TrackedRun:
        """A context manager (sync and async) and a decorator (plain, async, generator
        and async-generator functions) that records one run per use."""
        from exectrack._wrap import TrackedRun

        return TrackedRun(
            self,
            source,
            source_ref=source_ref,
            session_id=session_id,
            metadata=metadata,
            deadline=deadline,
            classify_result=classify_result,
        )

    # -- flushing, stats, shutdown -----------------------------------------------------

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every write queued so far is committed. True when drained."""
        ok = True if self._writer is None else self._writer.flush(timeout)
        self._failures.raise_deferred()
        return ok

    def shutdown(self, timeout: float = 5.0) -> int:
        """Flush, then finish every run this tracker still has open as
        ``canceled``/``shutdown`` and flush again, within ``timeout`` seconds.
        Runs at interpreter exit and on SIGTERM; returns how many runs it finished."""
        deadline = time.monotonic() + timeout
        finished = 0
        try:
            if self._writer is not None:
                self._writer.flush(max(0.0, deadline - time.monotonic()))
            for handle in list(self._open_runs.values()):
                if time.monotonic() >= deadline:
                    break
                result = self._finish(
                    handle,
                    RunStatus.CANCELED,
                    "shutdown",
                    "the process shut down before the run finished",
                    False,
                    None,
                )
                finished += result.applied
            if self._writer is not None:
                self._writer.flush(max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # exiting: report, never raise
            self._report("shutdown", exc)
        if self.monitor is not None:
            self.monitor.stop(max(0.0, deadline - time.monotonic()))
        return finished

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, stop the writer and close a store this tracker opened."""
        if self._closed:
            return True
        self._closed = True
        if self.monitor is not None:
            self.monitor.stop(timeout)
        ok = True if self._writer is None else self._writer.close(timeout)
        if self._owns_store:
            try:
                self.store.close()
            except Exception as exc:  # pragma: no cover - closing is best effort
                self._report("close", exc)
        return ok

    def stats(self) -> TrackerStats:
        w = self._writer.stats() if self._writer is not None else WriterStats(0, 0, 0, 0, 0)
        total, failures = self._failures.snapshot()
        return TrackerStats(
            enabled=self.enabled,
            durability=self.durability,
            open_runs=len(self._open_runs),
            queued=w.queued,
            committed=w.committed,
            not_applied=w.not_applied,
            dropped=w.dropped,
            failures=total,
            failures_by_cause=failures,
        )

    def __enter__(self) -> ExecutionTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<ExecutionTracker {self.store.url} {self.durability} {state}>"


def _deadline_us(deadline: datetime | timedelta | float | int, started_us: int) -> int:
    if isinstance(deadline, datetime):
        return datetime_to_us(deadline)
    if isinstance(deadline, timedelta):
        return started_us + round(deadline.total_seconds() * 1_000_000)
    if isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline >= 0:
        return started_us + round(deadline * 1_000_000)
    raise InvalidArgumentError(
        f"deadline={deadline!r}: pass an aware datetime, a timedelta or seconds >= 0"
    )

"""The ExecutionTracker: start, finish, and the one place a run's lifecycle is written.

Recording never breaks the host: a store failure is logged once per cause, counted,
and the host's call goes on untouched (strict mode raises instead). A handle finishes
once; later finishes return ``FinishResult(applied=False, status=<first status>)``.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from exectrack._classify import ErrorClassifier, ResultClassifier, normalize_code
from exectrack._clock import Clock, SystemClock
from exectrack._config import Durability, Settings
from exectrack._context import current
from exectrack._lifecycle import Outcome
from exectrack._model import (
    RunStatus,
    datetime_to_us,
    new_run_id,
    us_to_datetime,
    validate_source,
)
from exectrack._owner import process_owner
from exectrack._redact import (
    DEFAULT_METADATA_LIMIT,
    clean_text,
    encode_metadata,
    normalize_metadata,
)
from exectrack._writer import DEFAULT_QUEUE_SIZE, Writer, WriterStats
from exectrack.errors import ExectrackError, InvalidArgumentError, StoreError
from exectrack.monitor import DEFAULT_LEASE, DEFAULT_REAP_INTERVAL, Monitor
from exectrack.stores import FinishResult, FinishRun, MarkRunning, NewRun, Store, open_store

if TYPE_CHECKING:
    from contextvars import Token

    from exectrack._wrap import TrackedRun
    from exectrack.query import Report, RunStats
    from exectrack.stores._base import Page, Reaped

__all__ = ["ExecutionTracker", "RunHandle", "TrackerStats", "null_handle"]

log = logging.getLogger("exectrack")

MESSAGE_LIMIT = 4096
REF_LIMIT = 512
_MAX_CAUSES = 256

Deadline = datetime | timedelta | float | int | None


class RunHandle:
    """One started run, as this process sees it. Finish it once; later finishes
    change nothing and report the first status."""

    __slots__ = (
        "_extra",
        "_final",
        "_meta",
        "_t0",
        "_token",
        "_tracker",
        "deadline_at_us",
        "id",
        "parent_id",
        "queued",
        "recorded",
        "session_id",
        "source",
        "source_ref",
        "started_at_us",
    )

    id: str
    source: str
    source_ref: str | None
    session_id: str | None
    parent_id: str | None
    started_at_us: int
    deadline_at_us: int | None
    recorded: bool  # False when tracking is off or the start could not be queued
    queued: bool
    _tracker: ExecutionTracker | None
    _t0: int
    _meta: dict[str, Any] | None
    _extra: dict[str, Any] | None
    _final: RunStatus | None
    _token: Token[RunHandle | None] | None  # set while a ``with`` block holds the run

    @property
    def started_at(self) -> datetime:
        return us_to_datetime(self.started_at_us)

    @property
    def status(self) -> RunStatus:
        """This process's view: the first finish, else queued or running."""
        if self._final is not None:
            return self._final
        return RunStatus.QUEUED if self.queued else RunStatus.RUNNING

    @property
    def finished(self) -> bool:
        return self._final is not None

    def annotate(self, **fields: Any) -> None:
        """Add metadata recorded at finish (merged over the start metadata)."""
        self.update_metadata(fields)

    def update_metadata(self, fields: Mapping[str, Any]) -> None:
        if self._final is not None:
            return
        if self._extra is None:
            self._extra = {}
        self._extra.update(fields)

    def mark_running(self) -> FinishResult:
        """Move a queued run to running (a no-op for a running or finished run)."""
        if self._tracker is None:
            return FinishResult(False, None)
        return self._tracker.mark_running(self)

    def finish_success(self, *, metadata: Mapping[str, Any] | None = None) -> FinishResult:
        if self._tracker is None:
            return FinishResult(False, None)
        return self._tracker.finish_success(self, metadata=metadata)

    def finish_error(
        self,
        error: BaseException | None = None,
        *,
        code: str | None = None,
        message: str | None = None,
        retryable: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FinishResult:
        if self._tracker is None:
            return FinishResult(False, None)
        return self._tracker.finish_error(
            self, error, code=code, message=message, retryable=retryable, metadata=metadata
        )

    def finish_with_status(
        self,
        status: RunStatus | str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        retryable: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FinishResult:
        if self._tracker is None:
            return FinishResult(False, None)
        return self._tracker.finish_with_status(
            self,
            status,
            error_code=error_code,
            error_message=error_message,
            retryable=retryable,
            metadata=metadata,
        )

    def __repr__(self) -> str:
        return f"<RunHandle {self.source}:{self.source_ref or '-'} {self.id} {self.status}>"


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


class ExecutionTracker:
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
        self._fail_lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._failure_total = 0
        self._deferred: BaseException | None = None
        self._closed = False
        self._writer: Writer | None = None
        if self.durability == "async":
            self._writer = Writer(self.store, self._report, queue_size=queue_size)
        if lease is not None and lease <= 0:
            raise InvalidArgumentError(f"lease={lease!r}: must be > 0 seconds (or None)")
        beat = heartbeat_interval if heartbeat_interval is not None else (lease or 30.0) / 3
        if lease is not None and not 0 < beat < lease:
            raise InvalidArgumentError(
                f"heartbeat_interval={beat!r}: must be > 0 and shorter than the lease ({lease})"
            )
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
        _register_for_shutdown(self, env.handle_sigterm)

    @property
    def owner(self) -> str:
        return self._owner if self._owner is not None else process_owner()

    # -- failure reporting -------------------------------------------------------------

    def _report(self, cause: str, exc: BaseException) -> None:
        """Log a failure once per cause and count it; strict mode keeps it to raise."""
        key = f"{cause}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        with self._fail_lock:
            self._failure_total += 1
            seen = key in self._failures
            if seen or len(self._failures) < _MAX_CAUSES:
                self._failures[key] = self._failures.get(key, 0) + 1
            if self.strict and self._deferred is None:
                self._deferred = exc
        if not seen:
            log.warning(
                "exectrack: %s; the host call goes on, tracking data may be missing "
                "(later failures of this kind are only counted)",
                key,
            )

    def _fail(self, cause: str, exc: BaseException) -> None:
        """A failure in the caller's thread: count it, and raise it in strict mode."""
        self._report(cause, exc)
        if self.strict:
            self._deferred = None
            if isinstance(exc, ExectrackError):
                raise exc
            raise StoreError(f"tracking failed ({cause}): {exc}") from exc

    def _raise_deferred(self) -> None:
        if self.strict and self._deferred is not None:
            exc, self._deferred = self._deferred, None
            if isinstance(exc, ExectrackError):
                raise exc
            raise StoreError(f"tracking failed in the background: {exc}") from exc

    # -- writes ------------------------------------------------------------------------

    def _create(self, cmd: NewRun) -> bool:
        writer = self._writer
        if writer is not None:
            if self._deferred is not None:
                self._raise_deferred()
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
            self._owner if self._owner is not None else process_owner(),
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
        clock = self.clock
        duration = (clock.monotonic_ns() - handle._t0) / 1e6
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
        cmd = FinishRun(
            handle.id,
            status,
            clock.now_us(),
            duration,
            None if code is None else normalize_code(code),
            None if message is None else clean_text(message, MESSAGE_LIMIT, redact=True),
            retryable,
            meta_json,
        )
        writer = self._writer
        if writer is not None:
            if self._deferred is not None:
                self._raise_deferred()
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
            return self.store.finish(
                FinishRun(
                    run_id,
                    status,
                    self.clock.now_us(),
                    None,
                    None if code is None else normalize_code(code),
                    None if message is None else clean_text(message, MESSAGE_LIMIT, redact=True),
                    retryable,
                    meta_json,
                )
            )
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
        self._raise_deferred()
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
        with self._fail_lock:
            failures = dict(self._failures)
            total = self._failure_total
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

    # -- reads (flush first: a process always reads its own writes) --------------------

    def get_run(self, run_id: str) -> Any:
        from exectrack import query

        self.flush()
        return query.get_run(self.store, run_id)

    def list_runs(self, *, limit: int = 50, cursor: str | None = None, **filters: Any) -> Page:
        """A page of runs; ``filters`` are those of :func:`exectrack.query.make_filter`."""
        from exectrack import query

        self.flush()
        return query.list_runs(self.store, query.make_filter(**filters), limit=limit, cursor=cursor)

    def latest_run(self, **filters: Any) -> Any:
        from exectrack import query

        self.flush()
        return query.latest_run(self.store, query.make_filter(**filters))

    def run_stats(self, **filters: Any) -> RunStats:
        from exectrack import query

        self.flush()
        return query.run_stats(self.store, query.make_filter(**filters))

    def report(self, *, since: str | datetime | None = None) -> Report:
        """The hang-rate report per source (see :func:`exectrack.query.report`)."""
        from exectrack import query

        self.flush()
        return query.report(self.store, since=since, now=self.clock_now())

    def reap(self, *, dry_run: bool = False) -> list[Reaped]:
        """Run the reaper once now (see :func:`exectrack.monitor.reap_once`)."""
        from exectrack.monitor import reap_once

        self.flush()
        return reap_once(self.store, self.clock.now_us(), dry_run=dry_run)

    def clock_now(self) -> datetime:
        """The tracker's clock, as an aware UTC datetime."""
        return us_to_datetime(self.clock.now_us())

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


# -- process exit ---------------------------------------------------------------------

EXIT_TIMEOUT = 5.0
_live: weakref.WeakSet[ExecutionTracker] = weakref.WeakSet()
_exit_hooks_installed = False


def shutdown_all(timeout: float = EXIT_TIMEOUT) -> int:
    """Shut every live tracker down within one time budget; returns runs finished."""
    deadline = time.monotonic() + timeout
    finished = 0
    for tracker in list(_live):
        if not tracker._closed:
            finished += tracker.shutdown(max(0.0, deadline - time.monotonic()))
    return finished


def _register_for_shutdown(tracker: ExecutionTracker, handle_sigterm: bool) -> None:
    global _exit_hooks_installed
    _live.add(tracker)
    if _exit_hooks_installed:
        return
    _exit_hooks_installed = True
    atexit.register(shutdown_all, EXIT_TIMEOUT)
    if handle_sigterm:
        _install_sigterm_handler()


def _install_sigterm_handler() -> None:
    """On SIGTERM, shut trackers down, then die of SIGTERM as if we were not here.

    Installed only from the main thread and only over the default action: an app's
    own handler is never replaced (its orderly exit reaches the atexit hook anyway).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if not hasattr(signal, "SIGTERM") or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    # Shut down in a helper thread, so a lock the interrupted code holds can only
    # cost the budget, never hang the process.
    helper = threading.Thread(target=shutdown_all, args=(EXIT_TIMEOUT,), daemon=True)
    helper.start()
    helper.join(EXIT_TIMEOUT + 1)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1)  # pragma: no cover - the signal ends the process first
    os._exit(128 + signum)  # pragma: no cover


def null_handle(source: str, source_ref: str | None = None) -> RunHandle:
    """A handle with no tracker behind it: it writes nothing, its finishes are no-ops."""
    h = RunHandle.__new__(RunHandle)
    h.id = new_run_id()
    h.source, h.source_ref, h.session_id, h.parent_id = source, source_ref, None, None
    h.queued, h.recorded, h._tracker = False, False, None
    h._extra = h._meta = None
    h._final = h._token = None
    h._t0, h.started_at_us, h.deadline_at_us = 0, 0, None
    return h

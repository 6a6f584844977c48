"""The ExecutionTracker: start, finish, and the one place a run's lifecycle is written.

Recording never breaks the host: a store failure, an unprintable value or a broken
classifier is logged once per cause, counted, and the host's call goes on untouched
(strict mode raises instead). A handle finishes once, locally, whatever its
metadata; later finishes return ``FinishResult(applied=False, status=<first status>)``.

What ``applied`` means: with ``durability="sync"`` the store's own answer (a run
another process finished first is ``applied=False`` with that process's status, and
racing finishers of one handle are all told the status that was stored). With the
default ``"async"`` it means "this was the run's first finish in this process, and it
is queued"; whether the store took it shows in ``stats()`` (``not_applied``,
``dropped``) and in the stored run.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from exectrack import _exit, _owner
from exectrack._breaker import Breaker
from exectrack._classify import ErrorClassifier, ResultClassifier, normalize_code
from exectrack._clock import Clock, SystemClock
from exectrack._config import Durability, Settings
from exectrack._context import current
from exectrack._echo import echo
from exectrack._failures import Failures
from exectrack._handle import RunHandle, null_handle
from exectrack._lifecycle import CANCELLED, SHUTDOWN, Outcome, current_reason, outcome_of_exception
from exectrack._lifetime import TrackerLifetime, TrackerStats
from exectrack._log import get_logger
from exectrack._model import RunStatus, datetime_to_us, new_run_id, validate_source
from exectrack._owner import process_owner
from exectrack._reads import TrackerReads
from exectrack._redact import (
    DEFAULT_METADATA_LIMIT,
    Problems,
    clean_text,
    encode_metadata,
    normalize_metadata,
)
from exectrack._writer import DEFAULT_QUEUE_SIZE, Writer
from exectrack.errors import InvalidArgumentError
from exectrack.monitor import DEFAULT_LEASE, DEFAULT_REAP_INTERVAL, Monitor
from exectrack.stores import FinishResult, FinishRun, MarkRunning, NewRun, Store, open_store

if TYPE_CHECKING:
    from exectrack._wrap import TrackedRun

__all__ = ["ExecutionTracker", "RunHandle", "TrackerStats", "clean_refs", "null_handle"]

log = get_logger("exectrack")

MESSAGE_LIMIT = 4096
REF_LIMIT = 512
TERMINATING_FLUSH = 2.0  # seconds a finish waits for its commit once SIGTERM was seen

Deadline = datetime | timedelta | float | int | None


class ExecutionTracker(TrackerLifetime, TrackerReads):
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
            raise InvalidArgumentError(f"lease={echo(lease)}: must be > 0 seconds (or None)")
        beat = heartbeat_interval
        if beat is None:
            beat = (lease if lease is not None else DEFAULT_LEASE) / 3
        if lease is not None and not 0 < beat < lease:
            raise InvalidArgumentError(
                f"heartbeat_interval={echo(beat)}: must be > 0 and shorter than the lease ({lease})"
            )
        env = settings if settings is not None else Settings.from_env()
        self.enabled: bool = env.enabled if enabled is None else enabled
        self.strict: bool = env.strict if strict is None else strict
        self.durability: Durability = env.durability if durability is None else durability
        if self.durability not in ("async", "sync"):
            raise InvalidArgumentError(f"durability={echo(durability)}: use 'async' or 'sync'")
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
        self._failures = Failures(self.strict)
        self._report = self._failures.report
        self._fail = self._failures.fail
        self._init_locks()
        self._closed = False
        self._shutting = False  # exit began: new runs are no longer recorded
        self._writer: Writer | None = None
        self._breaker: Breaker | None = None
        self._dropped = 0  # synchronous writes skipped while the store was down
        if self.durability == "async":
            self._writer = Writer(
                self.store, self._report, self._failures.note, queue_size=queue_size
            )
        else:
            self._breaker = Breaker(self.store.schema_version)
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
        _trackers.add(self)
        if self.enabled:  # off means off: no exit hook, no signal handler
            _exit.register_for_shutdown(self, env.handle_sigterm)

    def _init_locks(self) -> None:
        self._finish_lock = threading.Lock()  # makes a handle's first finish atomic
        self._settled = threading.Condition(self._finish_lock)  # sync finishes' losers

    @property
    def owner(self) -> str:
        return self._owner if self._owner is not None else process_owner()

    def _problems(self, problems: Problems) -> None:
        """Count (and log once) what went wrong with a value; never raise here."""
        for what, exc in problems:
            self._report(what, exc)

    def _problem(self, what: str, exc: BaseException) -> None:
        self._report(what, exc)

    # -- writes ------------------------------------------------------------------------

    def _create(self, cmd: NewRun) -> bool:
        writer = self._writer
        if writer is not None:
            if self._failures.deferred is not None:
                self._failures.raise_deferred()
            return writer.submit(cmd)
        return self._sync_write("start", self.store.create, cmd) is not None

    def _sync_write(self, what: str, op: Any, arg: Any) -> Any:
        """``op(arg)`` on the store, skipped (and counted) while its breaker is open;
        None when it failed or was skipped."""
        breaker = self._breaker
        if breaker is not None and breaker.open:
            self._dropped += 1
            return None
        began = time.monotonic()
        try:
            return op(arg)
        except Exception as exc:
            if breaker is not None:
                breaker.trip(exc, time.monotonic() - began)
            self._fail(what, exc)
            return None

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
        if _exit.needs_hooks():
            _exit.on_first_run()
        clock = self.clock
        h = RunHandle.__new__(RunHandle)
        h.id = new_run_id()
        h.source = source
        problems: Problems = []
        if clean:
            source_ref, session_id = clean_refs(source_ref, session_id, problems)
        h.source_ref = source_ref
        h.session_id = session_id
        if parent_id is None:
            parent = current.get()
            parent_id = None if parent is None else parent.id
        h.parent_id = parent_id
        h.queued = queued
        h._tracker = self
        h._extra = h._final = h._token = h._cmd = None
        h._gen = _owner.generation
        h._settling = False
        h._items = h._first_ns = None
        h._t0 = clock.monotonic_ns()
        h.started_at_us = started = clock.now_us()
        h.deadline_at_us = None if deadline is None else _deadline_us(deadline, started)
        meta_json = None
        if metadata:
            h._meta = normalize_metadata(metadata, limit=self.metadata_limit, problems=problems)
            meta_json = encode_metadata(h._meta, self.metadata_limit)
        else:
            h._meta = None
        if problems:
            self._problems(problems)
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
        self._open_runs[h.id] = h
        if self._shutting:  # exit began: it may not see this run, so it is not recorded
            self._open_runs.pop(h.id, None)
            return h
        reason = current_reason()
        if reason is not None:  # an entry point's block: it may end what it dropped
            reason._opened(h)
        h.recorded = self._create(cmd)
        if h.recorded and self._writer is not None:
            h._cmd = cmd
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
            self._writer.start(handle._cmd, cmd)
            return FinishResult(True, RunStatus.RUNNING)
        self.flush()
        result = self._sync_write("mark_running", lambda c: self.store.start(c.id, c.at), cmd)
        return result if isinstance(result, FinishResult) else FinishResult(False, None)

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
            problems: Problems = []
            info = self.classifier.classify(error, problems)
            self._problems(problems)
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
        if outcome is CANCELLED and _exit.terminating:
            outcome = SHUTDOWN  # the server cancelled it because the process is ending
        try:
            self._finish(
                handle, outcome.status, outcome.code, outcome.message, outcome.retryable, None
            )
        except Exception as exc:
            if self.strict:
                raise
            self._report("finish", exc)

    def _end_exc(self, handle: RunHandle, exc: BaseException) -> None:
        """End a run that raised ``exc``; what classifying it did wrong is counted."""
        problems: Problems = []
        outcome = outcome_of_exception(exc, self.classifier, problems)
        if problems:
            self._problems(problems)
        self._end(handle, outcome)

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
        if handle._gen != _owner.generation:
            return FinishResult(False, None)  # the parent's run, seen by a forked child
        # Build the command before taking the lock (metadata may be slow); never raises.
        duration = (self.clock.monotonic_ns() - handle._t0) / 1e6
        cmd = self._finish_cmd(
            handle.id, status, duration, code, message, retryable, self._metadata(handle, metadata)
        )
        if handle._items is not None:
            cmd.items = handle._items
            first = handle._first_ns
            cmd.first_item_ms = None if first is None else (first - handle._t0) / 1e6
        writer = self._writer
        with self._finish_lock:
            second = handle._final is not None
            if second:
                pass  # told outside the lock, once the first finish settled
            elif handle.queued and status is not RunStatus.CANCELED:
                return FinishResult(False, RunStatus.QUEUED)
            else:
                handle._final = status
                handle._meta = handle._extra = None
                self._open_runs.pop(handle.id, None)
                if not handle.recorded:
                    return FinishResult(True, status)
                if writer is not None:
                    # Queued under the lock: an exit that finds the run finished knows
                    # its finish is already queued, so its last flush writes it.
                    new, handle._cmd = handle._cmd, None
                    writer.finish(new, cmd)
                else:
                    handle._settling = True
        if second:
            return self._first_finish(handle)
        if writer is not None:
            if _exit.terminating:
                writer.flush(TERMINATING_FLUSH)
            if self._failures.deferred is not None:
                self._failures.raise_deferred()
            return FinishResult(True, status)
        return self._finish_sync(handle, cmd)

    def _first_finish(self, handle: RunHandle) -> FinishResult:
        """What a second finish of ``handle`` is told: the first one's status (in sync
        mode, once the store said what it kept)."""
        if handle._settling:
            with self._settled:
                while handle._settling:
                    self._settled.wait(1.0)
        return FinishResult(False, handle._final)

    def _finish_sync(self, handle: RunHandle, cmd: FinishRun) -> FinishResult:
        final = handle._final
        result = FinishResult(False, None)
        try:
            stored = self._sync_write("finish", self.store.finish, cmd)
            if isinstance(stored, FinishResult):
                result = stored
                if not stored.applied and stored.status is not None and stored.status.is_terminal:
                    final = stored.status  # finished elsewhere first (the reaper, say)
        finally:
            with self._settled:
                handle._final = final
                handle._settling = False
                self._settled.notify_all()
        return result

    def _metadata(self, handle: RunHandle, metadata: Mapping[str, Any] | None) -> str | None:
        """The run's final metadata as JSON (start, then annotations, then ``metadata``),
        or None when nothing changes; never raises (what went wrong is counted)."""
        extra = handle._extra
        if not metadata and not extra:
            return None
        return self._merged_metadata(handle._meta, extra, metadata)

    def _merged_metadata(
        self, base: Mapping[str, Any] | None, *more: Mapping[str, Any] | None
    ) -> str | None:
        """``base`` (already normalised) updated by each of ``more`` in turn, as JSON;
        None when a value was unusable (counted: the run still ends)."""
        problems: Problems = []
        text = None
        try:
            merged = dict(base) if base else {}
            for fields in more:
                if fields:
                    merged.update(
                        normalize_metadata(fields, limit=self.metadata_limit, problems=problems)
                    )
            text = encode_metadata(merged, self.metadata_limit)
        except Exception as exc:  # not a mapping, say
            problems.append(("metadata", exc))
        self._problems(problems)
        return text

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
        problems: Problems = []
        text = None
        if message is not None:
            text = clean_text(message, MESSAGE_LIMIT, redact=True, problems=problems)
        if problems:
            self._problems(problems)
        return FinishRun(
            run_id,
            status,
            self.clock.now_us(),
            duration_ms,
            None if code is None else normalize_code(code),
            text,
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
            meta_json = self._merged_metadata(run.metadata, metadata) if metadata else None
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

    def __enter__(self) -> ExecutionTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<ExecutionTracker {self.store.url} {self.durability} {state}>"


def clean_refs(
    source_ref: object, session_id: object, problems: Problems
) -> tuple[str | None, str | None]:
    """``source_ref`` and ``session_id`` as stored: strings, capped, never raising (a
    value whose ``__str__`` raises becomes a placeholder, recorded in ``problems``)."""
    return (
        None if source_ref is None else clean_text(source_ref, REF_LIMIT, problems=problems),
        None if session_id is None else clean_text(session_id, REF_LIMIT, problems=problems),
    )


def _deadline_us(deadline: datetime | timedelta | float | int, started_us: int) -> int:
    if isinstance(deadline, datetime):
        return datetime_to_us(deadline)
    if isinstance(deadline, timedelta):
        return started_us + round(deadline.total_seconds() * 1_000_000)
    if isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline >= 0:
        return started_us + round(deadline * 1_000_000)
    raise InvalidArgumentError(
        f"deadline={echo(deadline)}: pass an aware datetime, a timedelta or seconds >= 0"
    )


_trackers: weakref.WeakSet[ExecutionTracker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Locks another thread held at fork() stay held forever in the child: replace
    them, and the breaker whose probe thread did not survive."""
    for tracker in list(_trackers):
        tracker._init_locks()
        tracker._failures.reinit()
        if tracker._breaker is not None:
            tracker._breaker.reset()


os.register_at_fork(after_in_child=_after_fork_in_child)

"""exectrack: one run model, one tracker, one store for every execution of an agent app.

Quick use::

    import exectrack

    @exectrack.with_run("skill")
    def search(query: str) -> list[str]: ...

    with exectrack.with_run("chat", session_id="s-1") as run:
        run.annotate(model="small")

See README.md for the API in five minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exectrack._classify import ErrorClassifier, ErrorInfo, ResultClassifier, success_flag
from exectrack._clock import Clock, FakeClock, SystemClock
from exectrack._context import bind_context, current_run
from exectrack._context import current as _current
from exectrack._default import default_tracker_or_none as _default_or_none
from exectrack._default import get_tracker, set_tracker
from exectrack._lifecycle import CancelReason, ClientDisconnected, cancel_reason
from exectrack._model import Run, RunStatus, Source
from exectrack._tracker import Deadline, ExecutionTracker, RunHandle, TrackerStats
from exectrack._tracker import null_handle as _null_handle
from exectrack._wrap import TrackedRun
from exectrack.errors import (
    ConfigError,
    DriverMissingError,
    ExectrackError,
    InvalidArgumentError,
    SchemaError,
    SchemaTooNewError,
    StoreError,
    StoreUnavailableError,
)
from exectrack.stores import FinishResult, Page, RunFilter, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "CancelReason",
    "ClientDisconnected",
    "Clock",
    "ConfigError",
    "Deadline",
    "DriverMissingError",
    "ErrorClassifier",
    "ErrorInfo",
    "ExectrackError",
    "ExecutionTracker",
    "FakeClock",
    "FinishResult",
    "InvalidArgumentError",
    "Page",
    "ResultClassifier",
    "Run",
    "RunFilter",
    "RunHandle",
    "RunStatus",
    "SchemaError",
    "SchemaTooNewError",
    "Source",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "SystemClock",
    "TrackedRun",
    "TrackerStats",
    "__version__",
    "annotate",
    "bind_context",
    "cancel_reason",
    "current_run",
    "finish_error",
    "finish_success",
    "finish_with_status",
    "flush",
    "get_tracker",
    "open_store",
    "set_tracker",
    "start",
    "success_flag",
    "with_run",
]


def with_run(
    source: str,
    source_ref: str | None = None,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    deadline: Deadline = None,
    *,
    classify_result: ResultClassifier | None = None,
) -> TrackedRun:
    """Like :meth:`ExecutionTracker.with_run` on the default tracker, which is looked
    up at each use (so decorating at import time opens nothing)."""
    return TrackedRun(
        None,
        source,
        source_ref=source_ref,
        session_id=session_id,
        metadata=metadata,
        deadline=deadline,
        classify_result=classify_result,
    )


def start(
    source: str,
    source_ref: str | None = None,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    deadline: Deadline = None,
    *,
    queued: bool = False,
) -> RunHandle:
    """Start a run on the default tracker; finish it with the handle's methods."""
    tracker = _default_or_none()
    if tracker is None:
        return _null_handle(source, source_ref)
    return tracker.start(source, source_ref, session_id, metadata, deadline, queued=queued)


def finish_success(
    target: RunHandle | str, *, metadata: Mapping[str, Any] | None = None
) -> FinishResult:
    if isinstance(target, RunHandle):
        return target.finish_success(metadata=metadata)
    return get_tracker().finish_success(target, metadata=metadata)


def finish_error(
    target: RunHandle | str,
    error: BaseException | None = None,
    *,
    code: str | None = None,
    message: str | None = None,
    retryable: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> FinishResult:
    if isinstance(target, RunHandle):
        return target.finish_error(
            error, code=code, message=message, retryable=retryable, metadata=metadata
        )
    return get_tracker().finish_error(
        target, error, code=code, message=message, retryable=retryable, metadata=metadata
    )


def finish_with_status(
    target: RunHandle | str,
    status: RunStatus | str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    retryable: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> FinishResult:
    if isinstance(target, RunHandle):
        return target.finish_with_status(
            status,
            error_code=error_code,
            error_message=error_message,
            retryable=retryable,
            metadata=metadata,
        )
    return get_tracker().finish_with_status(
        target,
        status,
        error_code=error_code,
        error_message=error_message,
        retryable=retryable,
        metadata=metadata,
    )


def annotate(**fields: Any) -> None:
    """Add metadata to the run active in this context (a no-op when there is none)."""
    handle = _current.get()
    if handle is not None:
        handle.annotate(**fields)


def flush(timeout: float | None = 10.0) -> bool:
    """Wait until the default tracker committed everything queued so far."""
    tracker = _default_or_none()
    return True if tracker is None else tracker.flush(timeout)

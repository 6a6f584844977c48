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

# typing.TYPE_CHECKING without importing typing (type checkers treat the name alike):
# ``import exectrack`` loads nothing but the exceptions.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from exectrack._classify import ErrorClassifier, ErrorInfo, ResultClassifier, success_flag
    from exectrack._clock import Clock, FakeClock, SystemClock
    from exectrack._context import bind_context, current_run
    from exectrack._default import get_tracker, set_tracker
    from exectrack._lifecycle import CancelReason, ClientDisconnected, cancel_reason
    from exectrack._model import Run, RunStatus, Source
    from exectrack._tracker import Deadline, ExecutionTracker, RunHandle, TrackerStats
    from exectrack._wrap import TrackedRun
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

# Where each lazily loaded public name lives. ``import exectrack`` imports only the
# exceptions: the tracker (and asyncio, threads, the writer, the query layer) is loaded
# on first use of a name that needs it, so the CLI's reads and a program that imports
# exectrack without tracking anything yet do not pay for it.
_LAZY = {
    "CancelReason": "exectrack._lifecycle",
    "ClientDisconnected": "exectrack._lifecycle",
    "Clock": "exectrack._clock",
    "Deadline": "exectrack._tracker",
    "ErrorClassifier": "exectrack._classify",
    "ErrorInfo": "exectrack._classify",
    "ExecutionTracker": "exectrack._tracker",
    "FakeClock": "exectrack._clock",
    "FinishResult": "exectrack.stores",
    "Page": "exectrack.stores",
    "ResultClassifier": "exectrack._classify",
    "Run": "exectrack._model",
    "RunFilter": "exectrack.stores",
    "RunHandle": "exectrack._tracker",
    "RunStatus": "exectrack._model",
    "Source": "exectrack._model",
    "Store": "exectrack.stores",
    "SystemClock": "exectrack._clock",
    "TrackedRun": "exectrack._wrap",
    "TrackerStats": "exectrack._tracker",
    "bind_context": "exectrack._context",
    "cancel_reason": "exectrack._lifecycle",
    "current_run": "exectrack._context",
    "get_tracker": "exectrack._default",
    "open_store": "exectrack.stores",
    "set_tracker": "exectrack._default",
    "success_flag": "exectrack._classify",
}

# The submodules ``import exectrack`` used to load as a side effect, so that
# ``import exectrack; exectrack.query.list_runs(...)`` keeps working.
_SUBMODULES = frozenset(
    {
        "_breaker",
        "_classify",
        "_clock",
        "_config",
        "_context",
        "_default",
        "_echo",
        "_exit",
        "_failures",
        "_handle",
        "_lifecycle",
        "_lifetime",
        "_model",
        "_owner",
        "_reads",
        "_redact",
        "_tracker",
        "_wrap",
        "_writer",
        "errors",
        "monitor",
        "query",
        "stores",
    }
)

if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> Any:
        """Load a public name (or a submodule) on first access; it then stays bound."""
        module = _LAZY.get(name)
        if module is not None:
            value = getattr(__import__(module, fromlist=[name]), name)
        elif name in _SUBMODULES:
            value = __import__(f"{__name__}.{name}", fromlist=["_"])
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__, *_SUBMODULES})


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
    from exectrack._wrap import TrackedRun

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
    from exectrack._default import default_tracker_or_none
    from exectrack._tracker import null_handle

    tracker = default_tracker_or_none()
    if tracker is None:
        return null_handle(source, source_ref)
    return tracker.start(source, source_ref, session_id, metadata, deadline, queued=queued)


def finish_success(
    target: RunHandle | str, *, metadata: Mapping[str, Any] | None = None
) -> FinishResult:
    from exectrack._default import get_tracker
    from exectrack._tracker import RunHandle

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
    from exectrack._default import get_tracker
    from exectrack._tracker import RunHandle

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
    from exectrack._default import get_tracker
    from exectrack._tracker import RunHandle

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
    from exectrack._context import current

    handle = current.get()
    if handle is not None:
        handle.annotate(**fields)


def flush(timeout: float | None = 10.0) -> bool:
    """Wait until the default tracker committed everything queued so far."""
    from exectrack._default import default_tracker_or_none

    tracker = default_tracker_or_none()
    return True if tracker is None else tracker.flush(timeout)

"""The package-level functions (``exectrack.with_run``, ``start``, ``finish_*``,
``annotate``, ``flush``): thin calls on the default tracker.

They live here, not in ``exectrack/__init__.py``, so that ``import exectrack`` stays
light: the package loads this module on first use of one of them, and the functions
then run without an import per call. Their ``__module__`` says ``exectrack``, where
they are documented and imported from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exectrack._classify import ResultClassifier
from exectrack._context import current
from exectrack._default import default_tracker_or_none, get_tracker
from exectrack._model import RunStatus
from exectrack._tracker import Deadline, RunHandle, null_handle
from exectrack._wrap import TrackedRun
from exectrack.stores import FinishResult

__all__ = [
    "annotate",
    "finish_error",
    "finish_success",
    "finish_with_status",
    "flush",
    "start",
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
    tracker = default_tracker_or_none()
    if tracker is None:
        return null_handle(source, source_ref)
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
    handle = current.get()
    if handle is not None:
        handle.annotate(**fields)


def flush(timeout: float | None = 10.0) -> bool:
    """Wait until the default tracker committed everything queued so far."""
    tracker = default_tracker_or_none()
    return True if tracker is None else tracker.flush(timeout)


for _name in __all__:  # where they are documented, and where pickle finds them
    globals()[_name].__module__ = "exectrack"
del _name

"""RunHandle: one started run as this process sees it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from exectrack._model import RunStatus, new_run_id, us_to_datetime
from exectrack.stores import FinishResult

if TYPE_CHECKING:
    from contextvars import Token

    from exectrack._tracker import ExecutionTracker
    from exectrack.stores import NewRun

__all__ = ["RunHandle", "null_handle"]


class RunHandle:
    """One started run, as this process sees it. Finish it once; later finishes
    change nothing and report the first status."""

    __slots__ = (
        "_cmd",
        "_extra",
        "_final",
        "_first_ns",
        "_gen",
        "_items",
        "_meta",
        "_settling",
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
    _gen: int  # the fork generation that opened it: a forked child never finishes it
    _cmd: NewRun | None  # its create while queued in the writer (a finish folds in)
    _settling: bool  # a synchronous finish of it is being written
    _items: int | None  # items a stream yielded so far (None: not a stream)
    _first_ns: int | None  # the tracker clock's monotonic time of the first item

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

    def add_items(self, count: int = 1) -> None:
        """Count ``count`` items this run produced (chunks sent, tokens streamed); the
        first call records the time to first item. Tracked generators and async
        generators count what they yield by themselves."""
        if self._final is not None or count <= 0:
            return
        items = self._items or 0
        if items == 0 and self._tracker is not None:
            self._first_ns = self._tracker.clock.monotonic_ns()
        self._items = items + count

    @property
    def items(self) -> int | None:
        """Items counted so far (None for a run that is not a stream)."""
        return self._items

    def update_metadata(self, fields: Mapping[str, Any]) -> None:
        if self._final is not None:
            return
        extra = self._extra
        if extra is None:
            extra = self._extra = {}
        try:
            extra.update(fields)
        except Exception as exc:  # a mapping whose items() raises: never into the host
            if self._tracker is not None:
                self._tracker._problem("metadata", exc)

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


def null_handle(source: str, source_ref: str | None = None) -> RunHandle:
    """A handle with no tracker behind it: it writes nothing, its finishes are no-ops."""
    h = RunHandle.__new__(RunHandle)
    h.id = new_run_id()
    h.source, h.source_ref, h.session_id, h.parent_id = source, source_ref, None, None
    h.queued, h.recorded, h._tracker = False, False, None
    h._extra = h._meta = h._cmd = None
    h._final = h._token = None
    h._gen, h._settling = 0, False
    h._items = h._first_ns = None
    h._t0, h.started_at_us, h.deadline_at_us = 0, 0, None
    return h

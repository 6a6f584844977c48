"""How an outcome maps to a status: the I/O-free core every wrapper shares.

| what happened                              | status   | error_code            |
| ------------------------------------------ | -------- | --------------------- |
| returned / stream exhausted                | success  | (result classifier)   |
| raised an ``Exception``                    | error    | from the classifier   |
| raised ``TimeoutError``                    | timeout  | ``deadline_exceeded`` |
| ``CancelledError`` (asyncio, futures, trio)| canceled | ``cancelled``         |
| ``KeyboardInterrupt`` / ``SystemExit(n)``  | canceled | ``interrupted``       |
| ``SystemExit(0)`` / ``SystemExit(None)``   | success  |                       |
| consumer closed a stream early             | canceled | ``consumer_closed``   |
| HTTP client disconnected mid-stream        | canceled | ``client_disconnected`` |

A cancellation's message is a short fixed text per cause (no task reprs, addresses
or paths), so rows group. Classifying never raises: whatever a hook or an exception
attribute does, the user's exception stays the one that propagates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exectrack._classify import ErrorClassifier, Problems, ResultClassifier, normalize_code
from exectrack._model import RunStatus

if TYPE_CHECKING:
    from exectrack._handle import RunHandle

__all__ = [
    "CANCELLED",
    "CONSUMER_CLOSED",
    "SHUTDOWN",
    "SUCCESS",
    "CancelReason",
    "ClientDisconnected",
    "Outcome",
    "cancel_reason",
    "closed_early",
    "current_reason",
    "is_cancellation",
    "outcome_of_exception",
    "outcome_of_result",
]


class ClientDisconnected(Exception):  # noqa: N818 - named for what happened, like ConnectionReset
    """Raise inside a tracked stream when the HTTP client went away mid-stream.

    Web frameworks' own disconnect exceptions (e.g. Starlette's ``ClientDisconnect``)
    are recognised by name too.
    """


_DISCONNECT_NAMES = frozenset({"ClientDisconnect", "ClientDisconnected", "ClientDisconnectedError"})
_CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: RunStatus
    code: str | None = None
    message: str | None = None
    retryable: bool | None = None


SUCCESS = Outcome(RunStatus.SUCCESS)
CONSUMER_CLOSED = Outcome(
    RunStatus.CANCELED, "consumer_closed", "the consumer closed the stream early", False
)
CANCELLED = Outcome(RunStatus.CANCELED, "cancelled", "the run was cancelled", False)
CLIENT_DISCONNECTED = Outcome(
    RunStatus.CANCELED, "client_disconnected", "the client disconnected", False
)
SHUTDOWN = Outcome(
    RunStatus.CANCELED, "shutdown", "the process shut down before the run finished", False
)


# Fixed texts for the causes exectrack's entry points know; any other code gets
# "the run was cancelled: <code>".
_CAUSES: dict[str, Outcome] = {
    o.code: o
    for o in (
        CLIENT_DISCONNECTED,
        SHUTDOWN,
        Outcome(
            RunStatus.CANCELED,
            "skipped_overlap",
            "skipped: the previous run of this task was still running",
            False,
        ),
        Outcome(RunStatus.CANCELED, "missed_schedule", "the scheduler missed this run", False),
    )
    if o.code is not None
}


class CancelReason:
    """Why work running in this context gets cancelled, set by whoever learns it first
    (an ASGI server's ``http.disconnect``, a scheduler shutting down): a run inside
    that ends by cancellation, or a stream inside that is closed early, records ``code``
    instead of ``cancelled`` / ``consumer_closed``.

    Open one with :func:`exectrack.cancel_reason` around the work; tasks started inside
    see the same object, so setting ``code`` later reaches them. An entry point that
    can only tell the cause when it is asked passes ``resolve``: it is called (when
    ``code`` is unset) each time a run inside ends by cancellation.

    The block also remembers the runs opened inside it (in this process), so the entry
    point can see which are still open when its work ends (:meth:`open_runs`) and end
    the streams a framework dropped without closing them (:meth:`end_open_streams`).
    """

    __slots__ = ("_pruned_at", "_runs", "code", "resolve")

    def __init__(self, resolve: Callable[[], str | None] | None = None) -> None:
        self.code: str | None = None
        self.resolve = resolve
        self._runs: list[RunHandle] = []
        self._pruned_at = _PRUNE_AT

    def cause(self) -> str | None:
        """``code``, else what ``resolve`` says now (None: not known)."""
        if self.code:
            return self.code
        resolve = self.resolve
        if resolve is None:
            return None
        try:
            return resolve()
        except Exception:  # the cause is a nicety: never break a finish for it
            return None

    def _opened(self, handle: RunHandle) -> None:
        runs = self._runs
        runs.append(handle)
        if len(runs) >= self._pruned_at:  # a long-lived block: keep only open runs
            runs[:] = [h for h in runs if h._final is None]
            self._pruned_at = max(_PRUNE_AT, 2 * len(runs))

    def open_runs(self) -> list[RunHandle]:
        """The runs opened inside the block (in this process) that are still open."""
        return [h for h in self._runs if h._final is None]

    def end_open_streams(self) -> int:
        """End every tracked stream opened inside the block that is still open, as a
        stream closed early now (:func:`closed_early`): for an entry point whose
        framework dropped a stream without closing it (Starlette cancels a response
        while it is sending and never closes its body iterator). Returns how many."""
        streams = [h for h in self._runs if h._final is None and h._items is not None]
        if not streams:
            return 0  # (a plain run still open is someone's work: left alone)
        outcome = closed_early(self)
        for h in streams:
            if h._tracker is not None:
                h._tracker._end(h, outcome)
        return len(streams)

    def __repr__(self) -> str:
        return f"<CancelReason {self.code or 'unknown'}>"


_PRUNE_AT = 64

_reason: contextvars.ContextVar[CancelReason | None] = contextvars.ContextVar(
    "exectrack_cancel_reason", default=None
)


def current_reason() -> CancelReason | None:
    return _reason.get()


@contextlib.contextmanager
def cancel_reason(resolve: Callable[[], str | None] | None = None) -> Iterator[CancelReason]:
    """A :class:`CancelReason` for the work inside the block (sync or async code)."""
    reason = CancelReason(resolve)
    token = _reason.set(reason)
    try:
        yield reason
    finally:
        _reason.reset(token)


def _caused(code: str | None, default: Outcome) -> Outcome:
    if not code:
        return default
    known = _CAUSES.get(code)
    if known is not None:
        return known
    code = normalize_code(code, "cancelled")
    return Outcome(RunStatus.CANCELED, code, f"the run was cancelled: {code}", False)


def _cancelled() -> Outcome:
    reason = _reason.get()
    return CANCELLED if reason is None else _caused(reason.cause(), CANCELLED)


def closed_early(reason: CancelReason | None = None) -> Outcome:
    """A stream closed before its end: ``consumer_closed``, or the cause the
    enclosing :class:`CancelReason` knows (a client that went away closes it too)."""
    if reason is None:
        reason = _reason.get()
        if reason is None:
            return CONSUMER_CLOSED
    return _caused(reason.cause(), CONSUMER_CLOSED)


def is_cancellation(exc: BaseException) -> bool:
    """asyncio's or concurrent.futures' ``CancelledError``, or trio's ``Cancelled``
    (anyio on trio), recognised without importing trio."""
    if isinstance(exc, _CANCELLED):
        return True
    cls = type(exc)
    return cls.__name__ == "Cancelled" and cls.__module__.partition(".")[0] == "trio"


def _exit_code(exc: SystemExit) -> object:
    try:
        return exc.code
    except Exception:  # a subclass whose code property raises: not a clean exit
        return _exit_code


def outcome_of_exception(
    exc: BaseException, classifier: ErrorClassifier, problems: Problems | None = None
) -> Outcome:
    """The status and error fields for a run that ended by raising ``exc``; never
    raises (``problems`` collects what a classifier hook or attribute did wrong)."""
    if is_cancellation(exc):
        return _cancelled()
    if isinstance(exc, GeneratorExit):
        return closed_early()
    if isinstance(exc, SystemExit):
        code = _exit_code(exc)
        if code is None or (isinstance(code, int) and code == 0):
            return SUCCESS
        detail = f" with code {code}" if isinstance(code, int) else ""
        return Outcome(
            RunStatus.CANCELED, "interrupted", f"the process is exiting (SystemExit{detail})", False
        )
    if any(cls.__name__ in _DISCONNECT_NAMES for cls in type(exc).__mro__):
        return CLIENT_DISCONNECTED
    if not isinstance(exc, Exception):
        return Outcome(
            RunStatus.CANCELED, "interrupted", f"interrupted by {type(exc).__name__}", False
        )
    info = classifier.classify(exc, problems)
    if isinstance(exc, TimeoutError):
        return Outcome(RunStatus.TIMEOUT, info.code, info.message, info.retryable)
    return Outcome(RunStatus.ERROR, info.code, info.message, info.retryable)


def outcome_of_result(value: Any, classify_result: ResultClassifier | None) -> Outcome:
    """Success, unless the call site's result classifier says the value is an error."""
    if classify_result is None:
        return SUCCESS
    info = classify_result(value)
    if info is None:
        return SUCCESS
    return Outcome(RunStatus.ERROR, info.code, info.message, info.retryable)

"""How an outcome maps to a status: the I/O-free core every wrapper shares.

| what happened                              | status   | error_code            |
| ------------------------------------------ | -------- | --------------------- |
| returned / stream exhausted                | success  | (result classifier)   |
| raised an ``Exception``                    | error    | from the classifier   |
| raised ``TimeoutError``                    | timeout  | ``deadline_exceeded`` |
| ``CancelledError`` (asyncio or futures)    | canceled | ``cancelled``         |
| ``KeyboardInterrupt`` / ``SystemExit(n)``  | canceled | ``interrupted``       |
| ``SystemExit(0)`` / ``SystemExit(None)``   | success  |                       |
| consumer closed a stream early             | canceled | ``consumer_closed``   |
| HTTP client disconnected mid-stream        | canceled | ``client_disconnected`` |
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

from exectrack._classify import ErrorClassifier, ResultClassifier, exception_message
from exectrack._model import RunStatus

__all__ = ["ClientDisconnected", "Outcome", "outcome_of_exception", "outcome_of_result"]


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


def outcome_of_exception(exc: BaseException, classifier: ErrorClassifier) -> Outcome:
    """The status and error fields for a run that ended by raising ``exc``."""
    if isinstance(exc, _CANCELLED):
        return Outcome(RunStatus.CANCELED, "cancelled", exception_message(exc), False)
    if isinstance(exc, GeneratorExit):
        return CONSUMER_CLOSED
    if isinstance(exc, SystemExit):
        if exc.code is None or exc.code == 0:
            return SUCCESS
        return Outcome(RunStatus.CANCELED, "interrupted", f"SystemExit({exc.code!r})", False)
    if any(cls.__name__ in _DISCONNECT_NAMES for cls in type(exc).__mro__):
        return Outcome(RunStatus.CANCELED, "client_disconnected", exception_message(exc), False)
    if not isinstance(exc, Exception):
        return Outcome(RunStatus.CANCELED, "interrupted", exception_message(exc), False)
    info = classifier.classify(exc)
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

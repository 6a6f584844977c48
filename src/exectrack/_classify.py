"""Error normalisation: an exception becomes ``(error_code, error_message, retryable)``.

Precedence, first match wins:

1. the exception's own ``error_code`` attribute (and ``retryable``, if it has one);
2. hooks registered with ``add_hook``, then types registered with ``register``
   (most specific class first);
3. an HTTP status the exception carries (``status_code``, ``status``, ``code``, or
   the same on its ``response``): 429 ``rate_limited``, 401/403 ``auth_failed``, ...;
4. built-in types and well-known class names along the MRO (``TimeoutError``,
   ``ConnectionError``, ``...RateLimitError``, ``...NotFound``, ...);
5. ``internal_error``.

Codes are low-cardinality snake_case (``[a-z][a-z0-9_]{0,63}``).

Classifying never raises: a hook that raises or returns something other than an
``ErrorInfo``, or an exception attribute (``error_code``, ``status_code``,
``response``, ...) whose property raises, is skipped and recorded in ``problems``
(the tracker counts it); the user's exception is never replaced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from exectrack._echo import echo
from exectrack.errors import InvalidArgumentError

__all__ = [
    "ErrorClassifier",
    "ErrorInfo",
    "ResultClassifier",
    "normalize_code",
    "success_flag",
]

_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A normalised error: a machine code, a human message, whether a retry may help."""

    code: str
    message: str
    retryable: bool = False


ResultClassifier = Callable[[Any], ErrorInfo | None]
Hook = Callable[[BaseException], ErrorInfo | None]
Problems = list[tuple[str, BaseException]]


def _attr(obj: object, name: str, problems: Problems | None) -> Any:
    """``getattr(obj, name, None)``, where a raising property counts as missing."""
    try:
        return getattr(obj, name, None)
    except Exception as exc:
        if problems is not None:
            problems.append((f"classifier: {type(obj).__name__}.{name} raised", exc))
        return None


def normalize_code(raw: object, fallback: str = "internal_error") -> str:
    """Turn ``"RateLimited"``, ``"rate-limited"`` or ``"RATE_LIMITED"`` into snake_case."""
    text = str(raw).strip()
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).lower()
    text = re.sub(r"[^a-z0-9]+", "_", text).strip("_")[:64].rstrip("_")
    if not text:
        return fallback
    if not text[0].isalpha():
        text = ("e_" + text)[:64]
    return text


def _validated_code(code: str) -> str:
    if _CODE_RE.fullmatch(code) is None:
        raise InvalidArgumentError(
            f"error code {echo(code)} is not snake_case ([a-z][a-z0-9_]{{0,63}})"
        )
    return code


def exception_message(exc: BaseException) -> str:
    """``str(exc)``, or the exception's type name when that is empty."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break tracking
        text = ""
    return text if text.strip() else type(exc).__name__


_BUILTIN_TYPES: dict[type[BaseException], tuple[str, bool]] = {
    TimeoutError: ("deadline_exceeded", True),
    PermissionError: ("permission_denied", False),
    ConnectionError: ("provider_unavailable", True),
    FileNotFoundError: ("not_found", False),
    NotImplementedError: ("not_implemented", False),
    MemoryError: ("resource_exhausted", False),
    ValueError: ("invalid_input", False),
    TypeError: ("invalid_input", False),
    OSError: ("io_error", False),
}

# Class names of well-known client libraries (HTTP clients, provider SDKs), matched
# along the MRO so a library's own hierarchy is honoured before the builtins above.
_NAME_RULES: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (re.compile(r"RateLimit"), "rate_limited", True),
    (re.compile(r"Timeout|TimedOut"), "deadline_exceeded", True),
    (
        re.compile(r"Connect(ion)?Error|Unavailable|ServiceUnavailable"),
        "provider_unavailable",
        True,
    ),
    (
        re.compile(r"Authentication|Unauthori[sz]ed|PermissionDenied|Forbidden"),
        "auth_failed",
        False,
    ),
    (re.compile(r"NotFound|DoesNotExist"), "not_found", False),
    (re.compile(r"Validation|BadRequest|Invalid"), "invalid_input", False),
)


def _http_status(exc: BaseException, problems: Problems | None = None) -> int | None:
    for holder in (exc, _attr(exc, "response", problems)):
        if holder is None:
            continue
        for attr in ("status_code", "status", "code"):
            value = _attr(holder, attr, problems)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _from_status(status: int) -> tuple[str, bool] | None:
    if status == 429:
        return "rate_limited", True
    if status in (401, 403):
        return "auth_failed", False
    if status == 404:
        return "not_found", False
    if status == 408:
        return "deadline_exceeded", True
    if status == 409:
        return "conflict", False
    if status in (400, 413, 422):
        return "invalid_input", False
    if 500 <= status <= 599:
        return "provider_unavailable", True
    if 400 <= status <= 499:
        return "request_failed", False
    return None


class ErrorClassifier:
    """Maps exceptions to :class:`ErrorInfo`. Register your own types and hooks."""

    def __init__(self) -> None:
        self._types: dict[type[BaseException], tuple[str, bool]] = {}
        self._hooks: list[Hook] = []

    def register(
        self, exc_type: type[BaseException], code: str, *, retryable: bool = False
    ) -> None:
        """Map ``exc_type`` (and its subclasses) to ``code``."""
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise InvalidArgumentError(f"{echo(exc_type)} is not an exception type")
        self._types[exc_type] = (_validated_code(code), bool(retryable))

    def add_hook(self, hook: Hook) -> None:
        """Call ``hook(exc)`` first; a non-None :class:`ErrorInfo` wins."""
        self._hooks.append(hook)

    def classify(self, exc: BaseException, problems: Problems | None = None) -> ErrorInfo:
        """The normalised error for ``exc``; never raises (see the module docstring)."""
        message = exception_message(exc)
        own = _attr(exc, "error_code", problems)
        if isinstance(own, str) and own.strip():
            flag = _attr(exc, "retryable", problems)
            retry = flag if isinstance(flag, bool) else self._lookup(exc, problems)[1]
            return ErrorInfo(normalize_code(own), message, retry)
        for hook in self._hooks:
            try:
                info: object = hook(exc)
            except Exception as error:
                if problems is not None:
                    problems.append(("classifier hook raised", error))
                continue
            if info is None:
                continue
            if not isinstance(info, ErrorInfo):
                if problems is not None:
                    problems.append(
                        (
                            "classifier hook",
                            TypeError(f"returned {type(info).__name__}, not ErrorInfo or None"),
                        )
                    )
                continue
            return ErrorInfo(
                normalize_code(info.code), info.message or message, bool(info.retryable)
            )
        code, retry = self._lookup(exc, problems)
        return ErrorInfo(code, message, retry)

    def _lookup(self, exc: BaseException, problems: Problems | None = None) -> tuple[str, bool]:
        mro = type(exc).__mro__
        for cls in mro:
            if cls in self._types:
                return self._types[cls]
        status = _http_status(exc, problems)
        if status is not None:
            mapped = _from_status(status)
            if mapped is not None:
                return mapped
        for cls in mro:
            if cls in _BUILTIN_TYPES:
                return _BUILTIN_TYPES[cls]
            if cls.__module__ != "builtins":
                for pattern, code, retry in _NAME_RULES:
                    if pattern.search(cls.__name__):
                        return code, retry
        return "internal_error", False


def success_flag(
    field: str = "success", *, code: str = "failed", message_field: str = "error"
) -> ResultClassifier:
    """A result classifier for results that report failure in a flag.

    ``{"success": False, "error": "quota"}`` (or an object with those attributes)
    is recorded as an error with ``code`` and the ``message_field`` text.
    """
    code = _validated_code(code)

    def classify(result: Any) -> ErrorInfo | None:
        if isinstance(result, Mapping):
            flag, text = result.get(field, True), result.get(message_field)
        else:
            flag, text = getattr(result, field, True), getattr(result, message_field, None)
        if flag is False:
            return ErrorInfo(code, str(text) if text else f"{field} is False")
        return None

    return classify

"""Error normalisation: exceptions -> (error_code, error_message, retryable)."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
from typing import Any

import pytest

from exectrack import ErrorClassifier, ErrorInfo, InvalidArgumentError, success_flag
from exectrack._classify import normalize_code


class HTTPStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class Response:
    def __init__(self, status: int) -> None:
        self.status = status


class ClientError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__("client error")
        self.response = Response(status)


class RateLimitError(Exception):
    """Like provider SDKs' RateLimitError, without a status attribute."""


class ReadTimeout(OSError):
    """Like requests' ReadTimeout: an OSError by inheritance."""


class APIConnectionError(Exception):
    pass


class NotFoundError(Exception):
    pass


class Quota(Exception):
    error_code = "QuotaExceeded"
    retryable = True


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (TimeoutError("t"), "deadline_exceeded", True),
        (asyncio.TimeoutError(), "deadline_exceeded", True),  # noqa: UP041 - the alias is the point
        (socket.timeout(), "deadline_exceeded", True),  # noqa: UP041 - the alias is the point
        (PermissionError("p"), "permission_denied", False),
        (ConnectionRefusedError(), "provider_unavailable", True),
        (ConnectionResetError(), "provider_unavailable", True),
        (BrokenPipeError(), "provider_unavailable", True),
        (FileNotFoundError("f"), "not_found", False),
        (ValueError("v"), "invalid_input", False),
        (TypeError("t"), "invalid_input", False),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), "invalid_input", False),
        (NotImplementedError(), "not_implemented", False),
        (OSError("disk"), "io_error", False),
        (KeyError("k"), "internal_error", False),
        (RuntimeError("r"), "internal_error", False),
        (HTTPStatusError(429), "rate_limited", True),
        (HTTPStatusError(401), "auth_failed", False),
        (HTTPStatusError(403), "auth_failed", False),
        (HTTPStatusError(404), "not_found", False),
        (HTTPStatusError(503), "provider_unavailable", True),
        (HTTPStatusError(422), "invalid_input", False),
        (HTTPStatusError(418), "request_failed", False),
        (ClientError(429), "rate_limited", True),
        (urllib.error.HTTPError("u", 429, "slow", {}, None), "rate_limited", True),  # type: ignore[arg-type]
        (RateLimitError("r"), "rate_limited", True),
        (ReadTimeout("r"), "deadline_exceeded", True),
        (APIConnectionError("c"), "provider_unavailable", True),
        (NotFoundError("n"), "not_found", False),
        (Quota("q"), "quota_exceeded", True),
    ],
)
def test_builtin_mappings(exc: BaseException, code: str, retryable: bool) -> None:
    """Each built-in rule gives its low-cardinality code and retryable flag."""
    info = ErrorClassifier().classify(exc)
    assert (info.code, info.retryable) == (code, retryable)


def test_message_is_str_or_type_name() -> None:
    """The message is the exception's text, or its type name when empty."""
    c = ErrorClassifier()
    assert c.classify(ValueError("bad input")).message == "bad input"
    assert c.classify(ValueError()).message == "ValueError"

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    assert c.classify(Broken()).message == "Broken"


def test_own_error_code_wins_over_everything() -> None:
    """An exception's error_code attribute beats registrations and HTTP statuses."""

    class Custom(HTTPStatusError):
        error_code = "custom-thing"

    c = ErrorClassifier()
    c.register(HTTPStatusError, "registered")
    info = c.classify(Custom(429))
    assert (info.code, info.retryable) == ("custom_thing", False)


def test_registered_types_and_hooks() -> None:
    """User registrations match subclasses (most specific first); hooks come first."""

    class Base(Exception):
        pass

    class Child(Base):
        pass

    c = ErrorClassifier()
    c.register(Base, "base_failed")
    c.register(Child, "child_failed", retryable=True)
    c.register(ValueError, "bad_value")
    assert c.classify(Child()).code == "child_failed"
    assert c.classify(Base()).code == "base_failed"
    assert c.classify(UnicodeError()).code == "bad_value"

    def hook(exc: BaseException) -> ErrorInfo | None:
        return ErrorInfo("hooked", "from hook", True) if "hook" in str(exc) else None

    c.add_hook(hook)
    assert c.classify(Child("hook me")) == ErrorInfo("hooked", "from hook", True)
    assert c.classify(Child("plain")).code == "child_failed"


def test_register_validates_arguments() -> None:
    """Bad codes and non-exception types are refused with a clear message."""
    c = ErrorClassifier()
    with pytest.raises(InvalidArgumentError, match="snake_case"):
        c.register(ValueError, "Not Snake")
    with pytest.raises(InvalidArgumentError, match="not an exception type"):
        c.register(int, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("RateLimited", "rate_limited"),
        ("rate-limited", "rate_limited"),
        ("RATE_LIMITED", "rate_limited"),
        ("  spaced out  ", "spaced_out"),
        ("429", "e_429"),
        ("", "internal_error"),
        ("x" * 100, "x" * 64),
    ],
)
def test_normalize_code(raw: str, code: str) -> None:
    """Any code string becomes snake_case of at most 64 characters."""
    assert normalize_code(raw) == code


def test_success_flag_classifier() -> None:
    """success_flag reads dicts and objects; only an explicit False is an error."""
    classify = success_flag(code="skill_failed")

    class Result:
        success = False
        error = "quota"

    assert classify({"success": True}) is None
    assert classify({"other": 1}) is None
    assert classify({"success": False}) == ErrorInfo("skill_failed", "success is False")
    assert classify(Result()) == ErrorInfo("skill_failed", "quota")
    value: Any = 3
    assert classify(value) is None

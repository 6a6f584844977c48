"""Every classifier rule, one row each: name rules, HTTP statuses, builtin types,
registrations and the order in which they win."""

from __future__ import annotations

from typing import Any

import pytest

from exectrack import ErrorClassifier


def sdk_error(name: str, *bases: type[BaseException], **attrs: Any) -> type[Exception]:
    """An exception class as a provider SDK defines it (not in ``builtins``)."""
    body = {"__module__": "provider_sdk", **attrs}
    cls = type(name, bases or (Exception,), body)
    assert issubclass(cls, Exception)
    return cls


def classify(exc: BaseException) -> tuple[str, bool]:
    info = ErrorClassifier().classify(exc)
    return info.code, info.retryable


NAME_RULES = [
    ("RateLimitError", "rate_limited", True),
    ("ReadTimeout", "deadline_exceeded", True),
    ("RequestTimedOut", "deadline_exceeded", True),
    ("ConnectError", "provider_unavailable", True),
    ("APIConnectionError", "provider_unavailable", True),
    ("UnavailableError", "provider_unavailable", True),
    ("ServiceUnavailable", "provider_unavailable", True),
    ("AuthenticationError", "auth_failed", False),
    ("Unauthorized", "auth_failed", False),
    ("UnauthorisedError", "auth_failed", False),
    ("PermissionDeniedError", "auth_failed", False),
    ("Forbidden", "auth_failed", False),
    ("NotFoundError", "not_found", False),
    ("DoesNotExist", "not_found", False),
    ("ValidationError", "invalid_input", False),
    ("BadRequestError", "invalid_input", False),
    ("InvalidRequestError", "invalid_input", False),
    ("SomethingWentWrong", "internal_error", False),
]


@pytest.mark.parametrize(("name", "code", "retryable"), NAME_RULES)
def test_each_name_rule(name: str, code: str, retryable: bool) -> None:
    """A library exception is classified by its class name, one rule per row."""
    assert classify(sdk_error(name)("boom")) == (code, retryable)


def test_name_rule_order_first_match_wins() -> None:
    """Within one name the rules apply in order: RateLimit before Timeout, and so on."""
    assert classify(sdk_error("RateLimitTimeout")()) == ("rate_limited", True)
    assert classify(sdk_error("TimeoutUnavailable")()) == ("deadline_exceeded", True)
    assert classify(sdk_error("UnavailableForbidden")()) == ("provider_unavailable", True)
    assert classify(sdk_error("ForbiddenNotFound")()) == ("auth_failed", False)
    assert classify(sdk_error("NotFoundInvalid")()) == ("not_found", False)


def test_name_rules_follow_the_mro() -> None:
    """A subclass's own name wins over its base's; an unmatched subclass inherits."""
    base = sdk_error("RateLimitError")
    assert classify(sdk_error("QuotaNotFound", base)()) == ("not_found", False)
    assert classify(sdk_error("Plain", base)()) == ("rate_limited", True)


def test_library_name_wins_over_builtin_base() -> None:
    """A library class named ...Timeout that derives from ConnectionError is a timeout."""
    assert classify(sdk_error("ProviderTimeout", ConnectionError)()) == ("deadline_exceeded", True)


def test_builtin_names_are_not_name_matched() -> None:
    """Builtins are mapped by type only: a builtin's name never hits a name rule."""
    assert classify(KeyError("x")) == ("internal_error", False)  # no rule for LookupError
    assert classify(ModuleNotFoundError("x")) == ("internal_error", False)  # not "NotFound"
    assert classify(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")) == ("invalid_input", False)


BUILTINS = [
    (TimeoutError(), "deadline_exceeded", True),
    (PermissionError(), "permission_denied", False),
    (ConnectionError(), "provider_unavailable", True),
    (ConnectionRefusedError(), "provider_unavailable", True),
    (FileNotFoundError(), "not_found", False),
    (NotImplementedError(), "not_implemented", False),
    (MemoryError(), "resource_exhausted", False),
    (ValueError(), "invalid_input", False),
    (TypeError(), "invalid_input", False),
    (OSError(), "io_error", False),
    (IsADirectoryError(), "io_error", False),
    (RuntimeError(), "internal_error", False),
]


@pytest.mark.parametrize(("exc", "code", "retryable"), BUILTINS)
def test_each_builtin_type(exc: BaseException, code: str, retryable: bool) -> None:
    """Each builtin exception type (and its subclasses) has one code."""
    assert classify(exc) == (code, retryable)


STATUSES = [
    (429, "rate_limited", True),
    (401, "auth_failed", False),
    (403, "auth_failed", False),
    (404, "not_found", False),
    (408, "deadline_exceeded", True),
    (409, "conflict", False),
    (400, "invalid_input", False),
    (413, "invalid_input", False),
    (422, "invalid_input", False),
    (402, "request_failed", False),
    (418, "request_failed", False),
    (499, "request_failed", False),
    (500, "provider_unavailable", True),
    (502, "provider_unavailable", True),
    (503, "provider_unavailable", True),
    (599, "provider_unavailable", True),
]


@pytest.mark.parametrize(("status", "code", "retryable"), STATUSES)
def test_each_http_status(status: int, code: str, retryable: bool) -> None:
    """An HTTP status on the exception or its response maps to one code."""
    plain = sdk_error("HTTPError")
    for attr in ("status_code", "status", "code"):
        exc = plain("failed")
        setattr(exc, attr, status)
        assert classify(exc) == (code, retryable), attr
    resp = type("Response", (), {"status_code": status})()
    assert classify(sdk_error("HTTPError", response=resp)()) == (code, retryable)
    resp = type("Response", (), {"status": status})()
    assert classify(sdk_error("HTTPError", response=resp)()) == (code, retryable)


@pytest.mark.parametrize("status", [99, 100, 200, 302, 600, True])
def test_statuses_outside_errors_are_ignored(status: object) -> None:
    """Informational, success and redirect statuses, out-of-range numbers and bools
    do not classify: the name and type rules decide."""
    exc = sdk_error("NotFoundError")("x")
    exc.status_code = status  # type: ignore[attr-defined]
    assert classify(exc) == ("not_found", False)
    other = sdk_error("HTTPError")("x")
    other.status_code = status  # type: ignore[attr-defined]
    assert classify(other) == ("internal_error", False)


@pytest.mark.parametrize(
    ("status_code", "code"),
    [(100, "internal_error"), (599, "provider_unavailable"), (600, "not_found")],
)
def test_first_status_in_range_is_used(status_code: int, code: str) -> None:
    """The first attribute holding a status in 100..599 is the status, even one that
    maps to nothing; an out-of-range value is skipped for the next attribute."""
    exc = sdk_error("HTTPError")("x")
    exc.status_code = status_code  # type: ignore[attr-defined]
    exc.code = 404  # type: ignore[attr-defined]
    assert classify(exc)[0] == code


def test_status_wins_over_names_and_builtins() -> None:
    """A carried HTTP status beats the class name and the builtin base."""
    exc = sdk_error("NotFoundError", ValueError)("x")
    exc.status_code = 429  # type: ignore[attr-defined]
    assert classify(exc) == ("rate_limited", True)


def test_exception_status_wins_over_response_status() -> None:
    """The exception's own status is read before its response's."""
    resp = type("Response", (), {"status_code": 404})()
    exc = sdk_error("HTTPError", response=resp)("x")
    exc.status_code = 503  # type: ignore[attr-defined]
    assert classify(exc) == ("provider_unavailable", True)


def test_register_sets_code_and_retryable() -> None:
    """register() maps a type and its subclasses; retryable defaults to False."""
    quota, other = sdk_error("QuotaError"), sdk_error("OtherError")
    c = ErrorClassifier()
    c.register(quota, "quota_exceeded", retryable=True)
    c.register(other, "other_failure")
    info = c.classify(sdk_error("DailyQuota", quota)("out of quota"))
    assert (info.code, info.message, info.retryable) == ("quota_exceeded", "out of quota", True)
    info = c.classify(other("x"))
    assert (info.code, info.retryable) == ("other_failure", False)


def test_most_specific_registration_wins() -> None:
    """A registered subclass beats its registered base, whatever the order."""
    base = sdk_error("BaseProviderError")
    sub = sdk_error("SubProviderError", base)
    c = ErrorClassifier()
    c.register(sub, "sub_code", retryable=True)
    c.register(base, "base_code")
    assert c.classify(sub()).code == "sub_code"
    assert c.classify(base()).code == "base_code"


def test_registration_wins_over_status_and_names() -> None:
    """A registered type beats an HTTP status and the name rules."""
    limited = sdk_error("RateLimitError", status_code=503)
    c = ErrorClassifier()
    c.register(limited, "custom_code")
    info = c.classify(limited())
    assert (info.code, info.retryable) == ("custom_code", False)


def test_hook_wins_over_registration() -> None:
    """A hook's answer beats a registration; its empty message means the exception's."""
    from exectrack import ErrorInfo

    err = sdk_error("HookedError")
    c = ErrorClassifier()
    c.register(err, "registered")
    c.add_hook(lambda exc: ErrorInfo("From-Hook", "", True) if isinstance(exc, err) else None)
    info = c.classify(err("the message"))
    assert (info.code, info.message, info.retryable) == ("from_hook", "the message", True)
    assert c.classify(sdk_error("RateLimitError")()).code == "rate_limited"  # hook said None


@pytest.mark.parametrize(
    ("attrs", "retryable"),
    [
        ({"status_code": 503}, True),  # from the status
        ({"status_code": 400}, False),
        ({}, False),
        ({"retryable": False, "status_code": 503}, False),  # its own flag wins
        ({"retryable": True}, True),
        ({"retryable": "yes", "status_code": 503}, True),  # not a bool: ignored
    ],
)
def test_own_error_code_keeps_the_inherited_retryable(
    attrs: dict[str, Any], retryable: bool
) -> None:
    """An exception's own error_code wins; retryable is its own bool, else what the
    other rules would say."""
    exc = sdk_error("ProviderError", error_code="QuotaExceeded", **attrs)("out of quota")
    info = ErrorClassifier().classify(exc)
    assert (info.code, info.message, info.retryable) == (
        "quota_exceeded",
        "out of quota",
        retryable,
    )


def test_own_error_code_keeps_the_name_rule_retryable() -> None:
    """A rate-limit class with its own code is still retryable."""
    exc = sdk_error("RateLimitError", error_code="slow_down")("x")
    assert classify(exc) == ("slow_down", True)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("--rate limited", "rate_limited"),  # leading and inner separators
        ("a" * 63 + "-tail", "a" * 63),  # cut at 64, then no trailing underscore
        ("4xx", "e_4xx"),  # must start with a letter
        ("1" + "a" * 63, "e_1" + "a" * 61),  # the prefixed code is cut to 64 too
    ],
)
def test_normalize_code_edges(raw: str, code: str) -> None:
    """Codes are snake_case, start with a letter and are at most 64 characters."""
    from exectrack._classify import normalize_code

    assert normalize_code(raw) == code


def test_success_flag_defaults() -> None:
    """success_flag() reads ``success`` and ``error``; code ``failed``; only False fails."""
    from exectrack import ErrorInfo, success_flag

    classify_result = success_flag()
    assert classify_result({"success": False}) == ErrorInfo("failed", "success is False")
    assert classify_result({"success": False, "error": "quota"}) == ErrorInfo("failed", "quota")
    assert classify_result({}) is None
    assert classify_result({"success": None}) is None
    assert classify_result(object()) is None


def test_registered_codes_may_be_64_characters() -> None:
    """register() accepts a snake_case code of up to 64 characters, not 65."""
    from exectrack import InvalidArgumentError

    c = ErrorClassifier()
    longest = "a" + "_b" * 31 + "c"
    err = sdk_error("LongError")
    c.register(err, longest)
    assert c.classify(err()).code == longest
    with pytest.raises(InvalidArgumentError, match="snake_case"):
        c.register(err, longest + "d")

"""What the classifier says about what went wrong while it classified: a raising
attribute or hook, a hook that returns the wrong type, a bad registration. It never
raises; each problem is handed back (the tracker counts them)."""

from __future__ import annotations

from typing import Any

import pytest

from exectrack import ErrorClassifier, ErrorInfo, ExecutionTracker
from exectrack.errors import InvalidArgumentError


class Broken(Exception):
    """An exception whose chosen attributes raise when read."""

    raising: frozenset[str] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name in type(self).raising:
            raise RuntimeError(f"{name} is broken")
        return super().__getattribute__(name)


def broken(*names: str, **attrs: Any) -> Exception:
    cls = type("Broken", (Broken,), {"raising": frozenset(names), **attrs})
    return cls("it failed")  # type: ignore[no-any-return]


def kinds(problems: list[tuple[str, BaseException]]) -> list[tuple[str, str, str]]:
    return [(what, type(exc).__name__, str(exc)) for what, exc in problems]


def test_hooks_that_raise_or_return_junk_are_skipped_and_said() -> None:
    """Hooks run in order: one that raises and one that returns the wrong type are
    each reported and skipped, one that returns None passes, the next ErrorInfo wins."""
    c = ErrorClassifier()

    def raising(exc: BaseException) -> ErrorInfo | None:
        raise ValueError("hook bug")

    c.add_hook(raising)
    c.add_hook(lambda exc: "quota")  # type: ignore[arg-type,return-value]
    c.add_hook(lambda exc: None)
    c.add_hook(lambda exc: ErrorInfo("QuotaExceeded", "", True))
    problems: list[tuple[str, BaseException]] = []
    info = c.classify(KeyError("k"), problems)
    assert (info.code, info.message, info.retryable) == ("quota_exceeded", "'k'", True)
    assert kinds(problems) == [
        ("classifier hook raised", "ValueError", "hook bug"),
        ("classifier hook", "TypeError", "returned str, not ErrorInfo or None"),
    ]


def test_hook_problems_are_not_collected_without_a_list() -> None:
    """Without a problems list the same hooks classify the same, quietly."""
    c = ErrorClassifier()
    c.add_hook(lambda exc: 1 / 0)  # type: ignore[arg-type,return-value]
    c.add_hook(lambda exc: 42)  # type: ignore[arg-type,return-value]
    assert c.classify(TimeoutError("slow")).code == "deadline_exceeded"


@pytest.mark.parametrize(
    ("exc", "attr"),
    [
        (broken("error_code"), "error_code"),
        (broken("retryable", error_code="own_code"), "retryable"),
        (broken("response", error_code="own_code"), "response"),
        (broken("response"), "response"),
        (broken("status_code"), "status_code"),
    ],
    ids=["error_code", "retryable", "response-with-code", "response", "status_code"],
)
def test_a_raising_attribute_is_read_as_missing_and_said(exc: Exception, attr: str) -> None:
    """An attribute whose read raises counts as missing, and the problem names the
    exception's type and the attribute."""
    problems: list[tuple[str, BaseException]] = []
    info = ErrorClassifier().classify(exc, problems)
    assert info.code in ("internal_error", "own_code")
    said = (f"classifier: Broken.{attr} raised", "RuntimeError", f"{attr} is broken")
    assert said in kinds(problems)


def test_the_tracker_counts_classifier_problems(db_url: str) -> None:
    """A tracked call whose exception breaks the classifier still ends error, and the
    problem is counted under its own cause."""
    t = ExecutionTracker(db_url, strict=False, durability="sync", lease=None)
    h = t.start("skill")
    t.finish_error(h, broken("response"))
    run = t.get_run(h.id)
    assert run is not None and run.error_code == "internal_error"
    assert t.stats().failures_by_cause == {
        "classifier: Broken.response raised: RuntimeError: response is broken": 1
    }
    t.close()


def test_registration_errors_name_what_was_wrong() -> None:
    """register() refuses a non-exception type and a code that is not snake_case,
    saying which value it refused."""
    c = ErrorClassifier()
    with pytest.raises(InvalidArgumentError) as info:
        c.register("ValueError", "bad_value")  # type: ignore[arg-type]
    assert str(info.value) == "'ValueError' is not an exception type"
    with pytest.raises(InvalidArgumentError) as info:
        c.register(ValueError, "Bad Value")
    assert str(info.value) == "error code 'Bad Value' is not snake_case ([a-z][a-z0-9_]{0,63})"

"""Tracking failures, pinned: each cause's key, logged once and counted always; the cap
on distinct causes; what strict mode raises, when, and as what; the first line of a
hostile exception's text."""

from __future__ import annotations

import logging

import pytest

from exectrack._failures import MAX_CAUSES, Failures, _first_line
from exectrack.errors import ConfigError, ExectrackError, StoreError, StoreUnavailableError

TAIL = (
    "; the host call goes on, tracking data may be missing"
    " (later failures of this kind are only counted)"
)
QUEUED = "; writes are kept queued until it answers"


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="exectrack")


def test_report_counts_every_failure_and_logs_each_cause_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Failures(strict=False)
    f.report("start", ValueError("bad"))
    f.report("start", ValueError("bad"))
    f.report("finish", ValueError("bad"))
    f.report("start", KeyError("k"))
    assert f.snapshot() == (
        4,
        {
            "start: ValueError: bad": 2,
            "finish: ValueError: bad": 1,
            "start: KeyError: 'k'": 1,
        },
    )
    assert messages(caplog) == [
        ("exectrack", logging.WARNING, f"exectrack: start: ValueError: bad{TAIL}"),
        ("exectrack", logging.WARNING, f"exectrack: finish: ValueError: bad{TAIL}"),
        ("exectrack", logging.WARNING, f"exectrack: start: KeyError: 'k'{TAIL}"),
    ]
    assert f.deferred is None


def test_distinct_causes_are_capped_known_ones_keep_counting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Failures(strict=False)
    for k in range(MAX_CAUSES + 5):
        f.report("c", ValueError(str(k)))
    f.report("c", ValueError("0"))
    f.report("c", ValueError(str(MAX_CAUSES - 1)))
    f.report("c", ValueError(str(MAX_CAUSES)))  # beyond the cap: total only
    total, by_cause = f.snapshot()
    assert MAX_CAUSES == 256
    assert total == MAX_CAUSES + 8
    assert len(by_cause) == MAX_CAUSES
    assert by_cause["c: ValueError: 0"] == 2
    assert by_cause[f"c: ValueError: {MAX_CAUSES - 1}"] == 2
    assert f"c: ValueError: {MAX_CAUSES}" not in by_cause
    # a cause beyond the cap is not remembered, so it is logged each time it comes
    assert len(caplog.records) == MAX_CAUSES + 5 + 1


def test_the_snapshot_is_a_copy() -> None:
    f = Failures(strict=False)
    f.report("c", ValueError("x"))
    _, by_cause = f.snapshot()
    by_cause.clear()
    assert f.snapshot() == (1, {"c: ValueError: x": 1})


def test_note_logs_each_cause_once_and_counts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    f = Failures(strict=True)
    exc = StoreUnavailableError("down\nmore")
    for _ in range(3):
        f.note("writer", exc)
    f.note("writer", StoreUnavailableError("other"))
    assert f.snapshot() == (0, {})
    assert f.deferred is None
    assert messages(caplog) == [
        (
            "exectrack",
            logging.WARNING,
            f"exectrack: writer: StoreUnavailableError: down{QUEUED}",
        ),
        (
            "exectrack",
            logging.WARNING,
            f"exectrack: writer: StoreUnavailableError: other{QUEUED}",
        ),
    ]


def test_fail_outside_strict_mode_only_counts() -> None:
    f = Failures(strict=False)
    f.fail("start", ValueError("bad"))
    assert f.snapshot() == (1, {"start: ValueError: bad": 1})
    f.raise_deferred()  # nothing kept: no raise


def test_fail_in_strict_mode_raises_a_store_error_from_the_cause() -> None:
    f = Failures(strict=True)
    cause = ValueError("bad")
    with pytest.raises(StoreError) as caught:
        f.fail("start", cause)
    assert type(caught.value) is StoreError
    assert str(caught.value) == "tracking failed (start): bad"
    assert caught.value.__cause__ is cause
    assert f.snapshot() == (1, {"start: ValueError: bad": 1})
    assert f.deferred is None  # raised here: not raised again later
    f.raise_deferred()


@pytest.mark.parametrize("exc", [ConfigError("cfg"), StoreUnavailableError("down")])
def test_an_exectrack_error_is_raised_as_itself(exc: ExectrackError) -> None:
    f = Failures(strict=True)
    with pytest.raises(type(exc)) as caught:
        f.fail("start", exc)
    assert caught.value is exc


def test_strict_mode_keeps_the_first_background_failure_and_raises_it_once() -> None:
    f = Failures(strict=True)
    first, second = ValueError("first"), ValueError("second")
    f.report("writer", first)
    f.report("writer", second)
    assert f.deferred is first
    with pytest.raises(StoreError) as caught:
        f.raise_deferred()
    assert str(caught.value) == "tracking failed in the background: first"
    assert caught.value.__cause__ is first
    assert f.deferred is None
    f.raise_deferred()  # once
    f.report("writer", second)
    with pytest.raises(StoreError, match=r"background: second$"):
        f.raise_deferred()


def test_a_kept_exectrack_error_is_raised_as_itself() -> None:
    f = Failures(strict=True)
    exc = StoreUnavailableError("down")
    f.report("writer", exc)
    with pytest.raises(StoreUnavailableError) as caught:
        f.raise_deferred()
    assert caught.value is exc


def test_outside_strict_mode_nothing_is_kept() -> None:
    f = Failures(strict=False)
    f.report("writer", ValueError("x"))
    assert f.deferred is None
    f.raise_deferred()


def test_reinit_gives_a_new_free_lock() -> None:
    f = Failures(strict=False)
    old = f._lock
    old.acquire()  # held by a thread that, after fork, no longer exists
    f.reinit()
    assert f._lock is not old and not f._lock.locked()
    f.report("c", ValueError("x"))  # would block on the old lock
    assert f.snapshot()[0] == 1


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (ValueError("one\ntwo"), "one"),
        (ValueError("x" * 500), "x" * 160),
        (ValueError(("y" * 170) + "\nz"), "y" * 160),
        (ValueError(""), ""),
        (ValueError("   \n  "), ""),
        (ValueError("\nsecond"), ""),
        (ValueError("  padded  "), "  padded  "),
        (Unprintable(), ""),
    ],
)
def test_first_line(exc: BaseException, line: str) -> None:
    assert _first_line(exc) == line


def test_an_unprintable_failure_is_still_counted(caplog: pytest.LogCaptureFixture) -> None:
    f = Failures(strict=False)
    f.report("start", Unprintable())
    assert f.snapshot() == (1, {"start: Unprintable: ": 1})

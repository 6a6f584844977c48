"""Hostile input through the public API: times out of range are InvalidArgumentError,
and no error message repeats more than a short prefix of what it was given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from exectrack import ExecutionTracker, RunStatus, query
from exectrack.errors import InvalidArgumentError
from exectrack.stores.sqlite import SQLiteStore

HUGE = "x" * 100_000
SHORT = 400  # no message that repeats input may be longer than this


# -- times out of range (issue 7, item 10) -----------------------------------------------

OUT_OF_RANGE = [
    "1000000d",
    "99999999999h",
    "9" * 400 + "s",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+05:00",
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
]


@pytest.mark.parametrize("value", OUT_OF_RANGE, ids=lambda v: str(v)[:30])
def test_a_time_out_of_range_is_an_invalid_argument(value: str | datetime) -> None:
    """parse_time (and every filter and report built on it) names the value instead of
    raising OverflowError."""
    with pytest.raises(InvalidArgumentError, match="out of range"):
        query.parse_time(value)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        query.make_filter(since=value)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        query.make_filter(until=value)
    store = SQLiteStore(":memory:")
    with pytest.raises(InvalidArgumentError, match="out of range"):
        query.report(store, since=value)


def test_times_at_the_edges_of_the_range_still_work() -> None:
    """The first and last representable UTC times are accepted, and ages up to them."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert query.parse_time("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)
    assert query.parse_time("9999-12-31T23:59:59Z").year == 9999
    assert query.parse_time("700000d", now=now).year < 200


# -- echoed input stays short (issue 7, item 12) -----------------------------------------


def _raises_short(error: type[Exception], call: object, *args: object) -> str:
    assert callable(call)
    with pytest.raises(error) as info:
        call(*args)
    message = str(info.value)
    assert len(message) < SHORT, len(message)
    return message


def test_an_invalid_100kb_source_makes_a_short_message(tracker: ExecutionTracker) -> None:
    """The source is echoed as a prefix and '...', wherever it is validated."""
    message = _raises_short(InvalidArgumentError, tracker.start, HUGE)
    assert message.startswith("invalid source 'xxxx")
    assert "'..." in message
    _raises_short(InvalidArgumentError, lambda: query.make_filter(source=HUGE))
    _raises_short(InvalidArgumentError, lambda: tracker.list_runs(source=HUGE))


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: RunStatus.parse(HUGE), id="status"),
        pytest.param(lambda: query.make_filter(status=[HUGE]), id="status-filter"),
        pytest.param(lambda: query.decode_cursor(HUGE), id="cursor"),
        pytest.param(lambda: query.parse_time(HUGE), id="time"),
        pytest.param(lambda: query.list_runs(SQLiteStore(":memory:"), limit=10**5000), id="limit"),
    ],
)
def test_every_echo_of_user_input_is_capped(call: object) -> None:
    """Statuses, cursors, times and limits: a huge value makes a short message."""
    _raises_short(InvalidArgumentError, call)


def test_an_input_whose_repr_raises_is_still_reported() -> None:
    """The message names the type instead of failing to print the value."""

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    class HostileText(str):
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you either")

    with pytest.raises(InvalidArgumentError, match="<Hostile>"):
        RunStatus.parse(Hostile())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="<HostileText>"):
        RunStatus.parse(HostileText("bogus"))
    with pytest.raises(InvalidArgumentError, match="<Hostile>"):
        query.make_filter(source=[Hostile()])  # type: ignore[list-item]

"""Hostile input through the public API: unusable database URLs are one ConfigError (the
password redacted), times out of range are InvalidArgumentError, and no error message
repeats more than a short prefix of what it was given."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import exectrack
from exectrack import ExecutionTracker, RunStatus, query
from exectrack.errors import ConfigError, InvalidArgumentError, StoreError
from exectrack.stores import RunFilter, open_store
from exectrack.stores.sqlite import SQLiteStore

SECRET = "hunter2-not-for-logs"
HUGE = "x" * 100_000
SHORT = 400  # no message that repeats input may be longer than this


# -- database URLs (issue 7, item 9) -----------------------------------------------------

UNPARSABLE = [
    pytest.param("sqlite://[x/runs.db", "cannot parse database URL", id="sqlite-ipv6"),
    pytest.param(f"postgresql://u:{SECRET}@[::1/db", "cannot parse database URL", id="pg-ipv6"),
    pytest.param(f"postgresql://u:{SECRET}@h:99999/db", "port '99999'", id="pg-port-range"),
    pytest.param(f"postgresql://u:{SECRET}@h:0/db", "port '0'", id="pg-port-zero"),
    pytest.param(f"postgresql://u:{SECRET}@h:abc/db", "port 'abc'", id="pg-port-text"),
    pytest.param(f"postgresql://u:{SECRET}@h/db?port=70000", "port '70000'", id="pg-port-query"),
    pytest.param(f"postgresql://u:{SECRET}@h/db?bogus=1", "bogus", id="pg-unknown-option"),
    pytest.param(f"postgresql://u:{SECRET}%ZZ@h/db", "percent-encoded", id="pg-bad-escape"),
    pytest.param(f"postgresql://u:{SECRET}@h/d%00b", "%00", id="pg-nul-escaped"),
    pytest.param(f"postgresql://u:{SECRET}@h/d\x00b", "NUL", id="pg-nul"),
    pytest.param(f"postgresql://u:{SECRET}@h/db?pool_timeout=inf", "finite", id="pg-inf-wait"),
    pytest.param("sqlite:///a%00b.db", "NUL", id="sqlite-nul-escaped"),
    pytest.param("a\x00b.db", "NUL", id="path-nul"),
    pytest.param("sqlite:runs.db", "has no '//'", id="sqlite-no-slashes"),
    pytest.param("sqlite:///x.db?busy_timeout=99999999999999", "busy_timeout", id="busy-huge"),
    pytest.param("sqlite:///x.db?busy_timeout=1e3", "not an integer", id="busy-float"),
    pytest.param("sqlite:///x.db?&&=&mode=ro", "unknown sqlite URL option", id="odd-query"),
    pytest.param("~no_such_user_exectrack/runs.db", "cannot use database path", id="tilde-user"),
    pytest.param("mysql://u@h/db", "unsupported database URL scheme", id="scheme"),
]


@pytest.mark.parametrize(("url", "needle"), UNPARSABLE)
def test_an_unusable_url_is_one_config_error_at_open(url: str, needle: str) -> None:
    """open_store and ExecutionTracker raise one ConfigError naming the problem, with
    the password redacted, never a ValueError from the URL parser."""
    with pytest.raises(ConfigError) as info:
        open_store(url)
    message = str(info.value)
    assert needle in message
    assert SECRET not in message
    with pytest.raises(ConfigError):
        ExecutionTracker(url)


def test_a_directory_as_database_is_a_clear_store_error(tmp_path: Path) -> None:
    """A path that is a directory fails at first use with a StoreError that says so."""
    store = open_store(f"sqlite:///{tmp_path}")
    with pytest.raises(StoreError, match="is a directory"):
        store.list_runs(RunFilter(), limit=1)


def test_the_default_tracker_fails_open_on_an_unparsable_url(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """EXECTRACK_DATABASE_URL that cannot be parsed: decorated calls run and return their
    result, tracking is off, and that is logged once."""
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", f"postgresql://u:{SECRET}@[::1/db")
    monkeypatch.setenv("EXECTRACK_STRICT", "0")
    caplog.set_level(logging.WARNING, logger="exectrack")

    @exectrack.with_run("chat")
    def answer() -> int:
        return 42

    assert [answer(), answer()] == [42, 42]
    warnings = [r.getMessage() for r in caplog.records if "tracking is off" in r.getMessage()]
    assert len(warnings) == 1
    assert "cannot parse database URL" in warnings[0]
    assert SECRET not in caplog.text


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


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///runs.db?" + "x" * 100_000 + "=1",
        f"postgresql://u:{SECRET}@h/db?pool_max_size=" + "9z" * 50_000,
        "mysql" + "x" * 100_000 + "://h/db",
    ],
    ids=["sqlite-option", "pg-option", "scheme"],
)
def test_url_errors_are_capped_and_redacted(url: str) -> None:
    """A URL error repeats a short, redacted prefix of the URL."""
    message = _raises_short(ConfigError, open_store, url)
    assert SECRET not in message


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


def test_a_plain_path_with_its_own_query_like_text_is_a_path(tmp_path: Path) -> None:
    """Only URLs are parsed: a plain path may hold '?', '#' and '%' (unchanged behaviour)."""
    path = tmp_path / "odd?name#with%25.db"
    store = open_store(str(path))
    store.migrate()
    assert os.path.exists(path)
    store.close()

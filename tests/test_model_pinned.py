"""The run model, pinned: status parsing's answers and error text, a source's exact
form, every field of ``Run.to_dict``, absolute times (not just round trips), and the
run id's bit layout, including the counter within one millisecond and its overflow
(on a stopped clock)."""

from __future__ import annotations

import types
import uuid
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType

import pytest

from exectrack import InvalidArgumentError, Run, RunStatus, Source, _model
from exectrack._model import (
    datetime_to_us,
    new_run_id,
    now_us,
    us_to_datetime,
    validate_source,
)

ALLOWED = "queued, running, success, error, canceled, timeout"


@pytest.mark.parametrize("status", list(RunStatus))
def test_parse_takes_a_status_or_its_exact_value(status: RunStatus) -> None:
    assert RunStatus.parse(status) is status
    assert RunStatus.parse(status.value) is status
    assert RunStatus.parse(str(status.value)) is status


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ("done", "'done'"),
        (3, "3"),
        (None, "None"),
        (b"error", "b'error'"),
        (["error"], "['error']"),  # not even hashable
        ("x" * 500, None),
    ],
)
def test_parse_refuses_anything_else_with_one_message(bad: object, shown: str | None) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        RunStatus.parse(bad)  # type: ignore[arg-type]
    if shown is None:
        shown = repr("x" * 80) + "..."
    assert str(caught.value) == f"unknown run status {shown}; expected one of: {ALLOWED}"


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (RunStatus.QUEUED, False),
        (RunStatus.RUNNING, False),
        (RunStatus.SUCCESS, True),
        (RunStatus.ERROR, True),
        (RunStatus.CANCELED, True),
        (RunStatus.TIMEOUT, True),
    ],
)
def test_which_statuses_are_terminal(status: RunStatus, terminal: bool) -> None:
    assert status.is_terminal is terminal
    run = Run(id="r", source="chat", status=status, started_at=us_to_datetime(0))
    assert run.is_terminal is terminal


@pytest.mark.parametrize("name", ["a", "z" * 64, "0-9_.", "my.app-v2_x", "chat"])
def test_valid_sources_come_back_as_plain_strings(name: str) -> None:
    got = validate_source(name)
    assert got == name and type(got) is str


def test_a_builtin_source_comes_back_as_its_plain_value() -> None:
    got = validate_source(Source.HEARTBEAT)
    assert got == "heartbeat" and type(got) is str


@pytest.mark.parametrize(
    "bad", ["", "z" * 65, "A", "a b", "a/b", "a:b", "é", "a\n", "\na", None, 7, b"chat"]
)
def test_invalid_sources_name_the_rule(bad: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_source(bad)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"invalid source {bad!r}: use 1-64 characters from [a-z0-9_.-] "
        "(built-in: chat, skill, heartbeat)"
    )


def test_absolute_times() -> None:
    assert datetime_to_us(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert datetime_to_us(datetime(1970, 1, 2, 0, 0, 1, 7, tzinfo=UTC)) == (
        86_400_000_000 + 1_000_007
    )
    assert datetime_to_us(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)) == -1_000_000
    assert us_to_datetime(1_764_547_200_000_001) == datetime(2025, 12, 1, 0, 0, 0, 1, tzinfo=UTC)
    east = timezone(timedelta(hours=5, minutes=30))
    assert datetime_to_us(datetime(1970, 1, 1, 5, 30, tzinfo=east)) == 0


def test_a_tzinfo_without_an_offset_is_naive() -> None:
    class NoOffset(tzinfo):
        def utcoffset(self, dt: datetime | None) -> None:
            return None

    value = datetime(2026, 1, 1, tzinfo=NoOffset())
    with pytest.raises(InvalidArgumentError) as caught:
        datetime_to_us(value)
    assert str(caught.value) == (
        "naive datetime '2026-01-01T00:00:00': pass a timezone-aware datetime"
    )


def test_now_is_the_wall_clock_in_microseconds() -> None:
    before = datetime.now(UTC)
    now = now_us()
    after = datetime.now(UTC)
    assert datetime_to_us(before) - 1 <= now <= datetime_to_us(after) + 1
    assert type(now) is int


def test_to_dict_gives_every_field_json_ready() -> None:
    t0 = datetime(2026, 11, 25, 8, 0, 1, 5, tzinfo=UTC)
    meta = MappingProxyType({"k": [1]})
    run = Run(
        id="i",
        source="skill",
        status=RunStatus.TIMEOUT,
        started_at=t0,
        source_ref="ref",
        session_id="sess",
        parent_id="p",
        finished_at=t0 + timedelta(seconds=1),
        duration_ms=1000.0,
        error_code="deadline",
        error_message="too slow",
        retryable=True,
        metadata=meta,
        owner="h:1:2",
        heartbeat_at=t0 + timedelta(seconds=2),
        deadline_at=t0 + timedelta(seconds=3),
        updated_at=t0 + timedelta(seconds=4),
        lease_until=t0 + timedelta(seconds=5),
        items=3,
        first_item_ms=1.5,
    )
    d = run.to_dict()
    assert d == {
        "id": "i",
        "source": "skill",
        "status": "timeout",
        "started_at": "2026-11-25T08:00:01.000005Z",
        "source_ref": "ref",
        "session_id": "sess",
        "parent_id": "p",
        "finished_at": "2026-11-25T08:00:02.000005Z",
        "duration_ms": 1000.0,
        "error_code": "deadline",
        "error_message": "too slow",
        "retryable": True,
        "metadata": {"k": [1]},
        "owner": "h:1:2",
        "heartbeat_at": "2026-11-25T08:00:03.000005Z",
        "deadline_at": "2026-11-25T08:00:04.000005Z",
        "updated_at": "2026-11-25T08:00:05.000005Z",
        "lease_until": "2026-11-25T08:00:06.000005Z",
        "items": 3,
        "first_item_ms": 1.5,
    }
    assert type(d["status"]) is str and type(d["metadata"]) is dict
    assert list(d) == list(Run.__dataclass_fields__)


def test_to_dict_of_a_fresh_run() -> None:
    d = Run(id="i", source="chat", status=RunStatus.RUNNING, started_at=us_to_datetime(0)).to_dict()
    assert d["started_at"] == "1970-01-01T00:00:00Z"
    assert d["metadata"] == {} and d["finished_at"] is None and d["items"] is None


# -- ids on a stopped clock --------------------------------------------------------------

MS = 1_764_547_200_123  # 2025-12-01T00:00:00.123Z


@pytest.fixture
def stopped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids' clock, stopped at MS (set the list's item to move it)."""
    now = [MS * 1_000_000]
    monkeypatch.setattr(_model, "time", types.SimpleNamespace(time_ns=lambda: now[0]))
    monkeypatch.setattr(_model, "_last_ms", 0)
    monkeypatch.setattr(_model, "_seq", 0)
    return now


def fields(run_id: str) -> tuple[int, int, int, int, int]:
    """(ms, version, counter, variant, random) of an id."""
    value = uuid.UUID(run_id).int
    return (
        value >> 80,
        (value >> 76) & 0xF,
        (value >> 64) & 0xFFF,
        (value >> 62) & 0b11,
        value & ((1 << 62) - 1),
    )


def test_id_layout_and_the_counter_within_one_millisecond(stopped: list[int]) -> None:
    ids = [new_run_id() for _ in range(50)]
    parts = [fields(i) for i in ids]
    first = parts[0][2]
    assert first <= 0x7FF  # a random start in the lower half: room to count up
    assert [p[:2] for p in parts] == [(MS, 7)] * 50
    assert [p[2] for p in parts] == list(range(first, first + 50))
    assert {p[3] for p in parts} == {0b10}
    assert len({p[4] for p in parts}) == 50
    assert {p[4] & 1 for p in parts} == {0, 1}  # all 62 random bits used (2**-49 to fail)
    assert ids == sorted(ids)
    assert all(len(i) == 36 and i.count("-") == 4 and i == i.lower() for i in ids)
    assert [len(g) for g in ids[0].split("-")] == [8, 4, 4, 4, 12]


def test_a_new_millisecond_restarts_the_counter_randomly(stopped: list[int]) -> None:
    starts = set()
    for k in range(1, 40):
        stopped[0] = (MS + k) * 1_000_000
        ms, _, seq, _, _ = fields(new_run_id())
        assert ms == MS + k and seq <= 0x7FF
        starts.add(seq)
    assert len(starts) > 20  # random, not one fixed start


def test_an_exhausted_counter_borrows_the_next_millisecond(stopped: list[int]) -> None:
    ids = [new_run_id() for _ in range(0x1000 + 10)]
    parts = [fields(i) for i in ids]
    first = parts[0][2]
    overflow = 0x1000 - first  # ids with counters first..0xFFF
    assert [p[0] for p in parts[:overflow]] == [MS] * overflow
    assert parts[overflow - 1][2] == 0xFFF
    assert [p[:3:2] for p in parts[overflow : overflow + 3]] == [
        (MS + 1, 0),
        (MS + 1, 1),
        (MS + 1, 2),
    ]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # the real clock catching up to the borrowed millisecond keeps counting on
    last_ms, _, last_seq, _, _ = parts[-1]
    stopped[0] = last_ms * 1_000_000
    ms, _, seq, _, _ = fields(new_run_id())
    assert (ms, seq) == (last_ms, last_seq + 1)


def test_a_clock_that_steps_back_never_makes_a_smaller_id(stopped: list[int]) -> None:
    a = new_run_id()
    stopped[0] = (MS - 5_000) * 1_000_000
    b = new_run_id()
    assert b > a and fields(b)[0] == MS and fields(b)[2] == fields(a)[2] + 1

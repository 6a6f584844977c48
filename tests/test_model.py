"""The run model: statuses, sources, ids and times."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exectrack import InvalidArgumentError, Run, RunStatus, Source
from exectrack._model import datetime_to_us, new_run_id, us_to_datetime, validate_source


def test_status_enum_and_terminal_set() -> None:
    """Six statuses; exactly success/error/canceled/timeout are terminal."""
    assert [s.value for s in RunStatus] == [
        "queued",
        "running",
        "success",
        "error",
        "canceled",
        "timeout",
    ]
    assert {s for s in RunStatus if s.is_terminal} == RunStatus.terminal()
    assert RunStatus.terminal() == {
        RunStatus.SUCCESS,
        RunStatus.ERROR,
        RunStatus.CANCELED,
        RunStatus.TIMEOUT,
    }


@pytest.mark.parametrize("bad", ["done", "SUCCESS", "cancelled", "", " running"])
def test_unknown_status_is_an_error_never_coerced(bad: str) -> None:
    """Parsing an unknown status raises and names the allowed values."""
    with pytest.raises(InvalidArgumentError, match="expected one of: queued, running"):
        RunStatus.parse(bad)


def test_sources_builtin_and_custom() -> None:
    """Built-in sources and custom names in [a-z0-9_.-]{1,64} are valid; others not."""
    assert [s.value for s in Source] == ["chat", "skill", "heartbeat"]
    for name in ("chat", "my-app.cron_v2", "a" * 64, "0"):
        assert validate_source(name) == name
    for name in ("", "Chat", "a" * 65, "with space", "ümlaut", "a/b"):
        with pytest.raises(InvalidArgumentError, match="invalid source"):
            validate_source(name)


def test_run_ids_are_uuid7_and_strictly_increasing() -> None:
    """Ids are version-7, RFC variant UUIDs whose order is creation order."""
    ids = [new_run_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    ms = int(ids[-1].replace("-", "")[:12], 16)
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert abs(ms - now_ms) < 60_000


def test_run_ids_unique_across_threads() -> None:
    """Ids made by many threads at once never collide."""
    out: list[list[str]] = [[] for _ in range(8)]

    def make(k: int) -> None:
        out[k].extend(new_run_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    flat = [i for per in out for i in per]
    assert len(set(flat)) == len(flat)
    assert all(per == sorted(per) for per in out)


@given(
    st.datetimes(
        timezones=st.just(UTC), min_value=datetime(1970, 1, 1), max_value=datetime(9000, 1, 1)
    )
)
def test_microsecond_time_round_trips(value: datetime) -> None:
    """UTC datetimes survive the integer-microsecond form exactly."""
    assert us_to_datetime(datetime_to_us(value)) == value


def test_times_are_aware_utc() -> None:
    """Other offsets convert exactly; naive datetimes are refused, never guessed."""
    plus2 = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert us_to_datetime(datetime_to_us(plus2)) == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert us_to_datetime(0).tzinfo is UTC
    with pytest.raises(InvalidArgumentError, match="naive"):
        datetime_to_us(datetime(2026, 1, 1))


def test_run_to_dict_is_json_ready() -> None:
    """Run.to_dict gives ISO UTC strings ending in Z and plain status values."""
    run = Run(
        id="x",
        source="chat",
        status=RunStatus.SUCCESS,
        started_at=datetime(2026, 11, 25, 8, 0, 1, 5, tzinfo=UTC),
        metadata={"k": [1]},
    )
    d = run.to_dict()
    assert d["started_at"] == "2026-11-25T08:00:01.000005Z"
    assert d["status"] == "success" and d["metadata"] == {"k": [1]}
    assert d["finished_at"] is None
    assert run.is_terminal


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_draws_different_id_bits() -> None:
    """A forked child reseeds the id generator: its random bits differ from the
    parent's, so parent and child never produce the same id in the same ms."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write_fd, ",".join(new_run_id()[-12:] for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    parent = [new_run_id()[-12:] for _ in range(100)]
    os.waitpid(pid, 0)
    with os.fdopen(read_fd) as f:
        child = f.read().split(",")
    assert len(child) == 100
    assert not set(child) & set(parent)

"""The query layer: filters, keyset pages, stats and the latest-run badge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exectrack import ExecutionTracker, InvalidArgumentError, RunStatus
from exectrack import query as q
from exectrack.testing import FakeClock

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_parse_time_forms() -> None:
    """ISO 8601 (with Z, offsets, or naive meaning UTC) and ages like 15m/2h/7d."""
    assert q.parse_time("2026-11-25T10:00:00Z") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert q.parse_time("2026-11-25T12:00:00+02:00") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert q.parse_time("2026-11-25") == datetime(2026, 11, 25, tzinfo=UTC)
    assert q.parse_time("15m", now=NOW) == NOW - timedelta(minutes=15)
    assert q.parse_time("2h", now=NOW) == NOW - timedelta(hours=2)
    assert q.parse_time("1.5d", now=NOW) == NOW - timedelta(hours=36)
    assert q.parse_time("1w", now=NOW) == NOW - timedelta(weeks=1)
    for bad in ("yesterday", "15 minutes", "-3h", ""):
        with pytest.raises(InvalidArgumentError, match="cannot read time"):
            q.parse_time(bad)


def test_cursor_round_trip_and_bad_cursors(sync_tracker: ExecutionTracker) -> None:
    """Cursors are opaque, round-trip exactly, and a damaged one is a clear error."""
    h = sync_tracker.start("chat")
    run = sync_tracker.get_run(h.id)
    cursor = q.encode_cursor(run)
    assert q.decode_cursor(cursor) == (h.started_at_us, run.id)
    for bad in ("!!!", "bm90LWEtY3Vyc29y", q.encode_cursor(run)[:-3] + "@@@"):
        with pytest.raises(InvalidArgumentError, match="invalid cursor"):
            q.decode_cursor(bad)


def test_make_filter_validates() -> None:
    """Unknown statuses and invalid sources are rejected; several values are allowed."""
    flt = q.make_filter(source=["chat", "skill"], status=["error", "timeout"], since="1h", now=NOW)
    assert flt.sources == ("chat", "skill")
    assert flt.statuses == (RunStatus.ERROR, RunStatus.TIMEOUT)
    assert flt.started_after == NOW - timedelta(hours=1)
    with pytest.raises(InvalidArgumentError, match="unknown run status"):
        q.make_filter(status="failed")
    with pytest.raises(InvalidArgumentError, match="invalid source"):
        q.make_filter(source="Bad Source")


def test_pages_cover_every_run_once_while_runs_arrive(db_url: str) -> None:
    """Paging through 250 runs while new runs keep arriving returns each of the
    original runs exactly once, in (started_at, id) descending order."""
    clock = FakeClock(NOW)
    t = ExecutionTracker(db_url, strict=True, clock=clock)
    original = []
    for i in range(250):
        if i % 3:
            clock.advance(0.001)  # every third run ties with the previous one
        original.append(t.start("skill", f"r{i}").id)
    seen: list[str] = []
    cursor = None
    while True:
        page = t.list_runs(limit=20, cursor=cursor)
        seen.extend(r.id for r in page.runs)
        for _ in range(7):  # newer runs arrive between pages
            clock.advance(0.001)
            t.start("skill", "late")
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(original) and len(seen) == len(set(seen))
    runs = {r.id: r for r in t.list_runs(limit=1000, source_ref=None).runs}
    keys = [(runs[i].started_at, i) for i in seen]
    assert keys == sorted(keys, reverse=True)
    t.close()


def test_limit_bounds() -> None:
    """A page size outside 1..1000 is refused."""
    from exectrack.stores import open_store

    store = open_store("sqlite:///:memory:")
    for bad in (0, -1, 1001):
        with pytest.raises(InvalidArgumentError, match="limit"):
            q.list_runs(store, limit=bad)


def test_stats_and_latest_per_source(sync_tracker: ExecutionTracker) -> None:
    """Stats count by status and source; latest() filters server-side, so a quiet
    source still shows its newest run however busy the others are."""
    t = sync_tracker
    beat = t.start("heartbeat", "digest")
    beat.finish_error(code="missed", message="late")
    for i in range(60):
        h = t.start("chat", session_id="s-1" if i % 2 else "s-2")
        if i % 4:
            h.finish_success()
    stats = t.run_stats()
    assert stats.total == 61 and stats.open == 15
    assert stats.by_source["heartbeat"] == {"error": 1}
    assert stats.by_source["chat"] == {"running": 15, "success": 45}
    assert stats.error_rate == pytest.approx(1 / 46)
    assert stats.to_dict()["open"] == 15
    latest = t.latest_run(source="heartbeat")
    assert latest is not None and latest.id == beat.id and latest.status is RunStatus.ERROR
    assert t.latest_run(source="chat", session_id="s-1").session_id == "s-1"
    assert t.latest_run(source="skill") is None
    assert t.run_stats(source="skill").error_rate is None

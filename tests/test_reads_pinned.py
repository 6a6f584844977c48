"""The tracker's reads, pinned: each one sees the process's own writes at once (it
flushes the group commit first), passes its filters and page on, and the report and
the reaper read the tracker's clock, not the wall clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from exectrack import ExecutionTracker, FakeClock, RunStatus
from exectrack._model import datetime_to_us


@pytest.fixture
def t(db_url: str, clock: FakeClock) -> Iterator[ExecutionTracker]:
    """The default durability: writes go through the background group commit."""
    tracker = ExecutionTracker(db_url, strict=True, clock=clock)
    assert tracker.durability == "async"
    yield tracker
    tracker.close()


def test_get_run_sees_a_start_and_a_finish_at_once(t: ExecutionTracker) -> None:
    h = t.start("skill", "a")
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.RUNNING
    h.finish_success()
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.SUCCESS
    assert t.get_run("0" * 36) is None


def test_list_runs_flushes_and_passes_filters_and_pages(t: ExecutionTracker) -> None:
    ids = [t.start("skill", f"r{k}").id for k in range(5)]
    t.start("chat", "other")
    page = t.list_runs(source="skill", limit=2)
    assert [r.id for r in page.runs] == ids[::-1][:2]
    assert page.next_cursor is not None
    rest = t.list_runs(source="skill", limit=10, cursor=page.next_cursor)
    assert [r.id for r in rest.runs] == ids[::-1][2:]
    assert rest.next_cursor is None
    assert [r.source_ref for r in t.list_runs(source_ref="r3").runs] == ["r3"]


def test_latest_run_flushes_and_filters(t: ExecutionTracker) -> None:
    t.start("skill", "old")
    newest = t.start("skill", "new")
    t.start("chat")
    latest = t.latest_run(source="skill")
    assert latest is not None and latest.id == newest.id
    assert t.latest_run(source="heartbeat") is None


def test_run_stats_flush_and_filter(t: ExecutionTracker) -> None:
    t.start("skill").finish_success()
    t.start("skill").finish_error(ValueError("x"))
    t.start("chat")
    stats = t.run_stats(source="skill")
    assert stats.total == 2
    assert {k: n for k, n in stats.by_status.items() if n} == {"success": 1, "error": 1}
    assert t.run_stats().total == 3


def test_changes_and_their_head_flush(t: ExecutionTracker) -> None:
    head = t.changes_head()
    a = t.start("skill")
    assert t.changes_head() != head
    feed = t.changes(head)
    assert [r.id for r in feed.runs] == [a.id]
    b = t.start("skill")
    a.finish_success()
    feed = t.changes(feed.cursor, limit=1)
    assert len(feed.runs) == 1
    feed2 = t.changes(feed.cursor, limit=500)
    assert {r.id for r in feed.runs + feed2.runs} == {a.id, b.id}
    assert t.changes(t.changes_head()).runs == []


def test_the_report_is_at_the_trackers_clock(t: ExecutionTracker, clock: FakeClock) -> None:
    t.start("skill").finish_success()
    report = t.report()
    assert report.now == clock.now() == t.clock_now()
    assert datetime_to_us(t.clock_now()) == clock.now_us()
    assert [(s.source, s.started) for s in report.sources] == [("skill", 1)]
    clock.advance(timedelta(hours=2))
    t.start("skill")
    recent = t.report(since=clock.now() - timedelta(hours=1))
    assert recent.since == clock.now() - timedelta(hours=1)
    assert [(s.source, s.started, s.open) for s in recent.sources] == [("skill", 1, 1)]
    assert [s.started for s in t.report(since="1h").sources] == [1]


def test_reap_is_at_the_trackers_clock_and_a_dry_run_changes_nothing(
    t: ExecutionTracker, clock: FakeClock
) -> None:
    h = t.start("skill", deadline=timedelta(minutes=5))
    assert t.reap() == []  # not yet overdue on the tracker's clock
    clock.advance(timedelta(minutes=6))
    dry = t.reap(dry_run=True)
    assert [(r.run_id, r.status, r.reason) for r in dry] == [(h.id, RunStatus.TIMEOUT, "deadline")]
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.RUNNING
    assert [r.run_id for r in t.reap()] == [h.id]
    run = t.get_run(h.id)
    assert run is not None and run.status is RunStatus.TIMEOUT
    assert run.finished_at == clock.now()


def test_default_page_sizes(t: ExecutionTracker) -> None:
    """list_runs: 50 runs a page; changes: 500."""
    ids = [t.start("skill").id for _ in range(501)]
    page = t.list_runs()
    assert [r.id for r in page.runs] == ids[::-1][:50]
    assert page.next_cursor is not None
    feed = t.changes()
    assert [r.id for r in feed.runs] == ids[:500]
    assert [r.id for r in t.changes(feed.cursor).runs] == ids[500:]

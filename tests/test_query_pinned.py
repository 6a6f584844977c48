"""The report's window and figures, and how times are read, pinned to exact values."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, InvalidArgumentError, RunStatus
from exectrack import query as q
from exectrack._model import Run, datetime_to_us
from exectrack.stores import NewRun, SourceSummary, open_store
from exectrack.stores.sqlite import SQLiteStore
from exectrack.testing import FailingStore, FakeClock

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def t(db_url: str, clock: FakeClock) -> Iterator[ExecutionTracker]:
    """A synchronous tracker on a fake clock, 30 s leases."""
    tracker = ExecutionTracker(db_url, strict=True, durability="sync", clock=clock)
    yield tracker
    tracker.close()


def test_report_counts_only_runs_started_in_its_window(
    t: ExecutionTracker, clock: FakeClock
) -> None:
    """since= limits started, statuses and error codes to runs started in the window."""
    t.start("skill", "old").finish_error(code="old_failure", message="x")
    clock.advance(7200)
    t.start("skill", "new").finish_error(code="rate_limited", message="x")
    t.start("skill", "ok").finish_success()
    now = clock.now()
    windowed = q.report(t.store, since="1h", now=now)
    [skill] = windowed.sources
    assert (skill.started, skill.by_status["error"], skill.by_status["success"]) == (2, 1, 1)
    assert skill.top_errors == [("rate_limited", 1)]
    assert windowed.since == now - timedelta(hours=1)
    [everything] = q.report(t.store, now=now).sources
    assert everything.started == 3
    assert everything.top_errors == [("old_failure", 1), ("rate_limited", 1)]
    aware = q.report(t.store, since=now - timedelta(hours=1), now=now)
    assert aware.sources == windowed.sources


def test_hang_rate_counts_abandoned_and_open_past_lease(
    t: ExecutionTracker, clock: FakeClock
) -> None:
    """hang_rate = (abandoned + open past lease) / started, among runs in the window;
    open and open_past_lease count every open run."""
    t.start("skill", "a")  # never heartbeats: reaped as abandoned below
    clock.advance(31)
    assert [r.reason for r in t.reap()] == ["lease_expired"]
    t.start("skill", "b")
    t.start("skill", "c")
    t.start("skill", "s").finish_success()
    clock.advance(31)  # b and c are now past their lease, still open
    [all_runs] = q.report(t.store, now=clock.now()).sources
    assert (all_runs.started, all_runs.abandoned, all_runs.open) == (4, 1, 2)
    assert (all_runs.open_past_lease, all_runs.hang_rate) == (2, 0.75)
    since = T0 + timedelta(seconds=10)  # leaves out a
    [recent] = q.report(t.store, since=since, now=clock.now()).sources
    assert (recent.started, recent.abandoned, recent.open_past_lease) == (3, 0, 2)
    assert recent.hang_rate == pytest.approx(2 / 3)


def test_oldest_open_age(t: ExecutionTracker, clock: FakeClock) -> None:
    """oldest_open_age_s is the age of the oldest open run, in seconds; None when none."""
    first = t.start("skill")
    clock.advance(90)
    t.start("skill")
    clock.advance(30)
    t.start("chat").finish_success()
    by_source = {s.source: s for s in q.report(t.store, now=clock.now()).sources}
    assert by_source["skill"].oldest_open_age_s == 120.0
    assert by_source["chat"].oldest_open_age_s is None
    first.finish_success()
    [skill] = [s for s in q.report(t.store, now=clock.now()).sources if s.source == "skill"]
    assert skill.oldest_open_age_s == 30.0


def test_duration_percentiles(t: ExecutionTracker, clock: FakeClock) -> None:
    """p50 and p95 are the nearest-rank percentiles of finished runs' durations."""
    for seconds in range(1, 21):  # durations 1 s .. 20 s
        h = t.start("skill")
        clock.advance(seconds)
        h.finish_success()
    [skill] = q.report(t.store, now=clock.now()).sources
    assert (skill.p50_ms, skill.p95_ms) == (10_000.0, 19_000.0)


def test_top_errors_order_and_limit(t: ExecutionTracker) -> None:
    """top_errors: most frequent first, ties by code, at most ``top``."""
    for code, n in (("b_code", 3), ("d_code", 1), ("a_code", 3), ("c_code", 5)):
        for _ in range(n):
            t.start("skill").finish_error(code=code, message="x")
    [skill] = q.report(t.store, now=T0, top=3).sources
    assert skill.top_errors == [("c_code", 5), ("a_code", 3), ("b_code", 3)]
    [skill] = q.report(t.store, now=T0).sources
    assert [c for c, _ in skill.top_errors] == ["c_code", "a_code", "b_code", "d_code"]


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30s", timedelta(seconds=30)),
        ("45S", timedelta(seconds=45)),
        ("1.5m", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("2W", timedelta(weeks=2)),
        (" 3h ", timedelta(hours=3)),
    ],
)
def test_ages_are_read_in_their_unit(text: str, age: timedelta) -> None:
    """An age is that long before ``now``: s seconds, m minutes, h hours, d days, w weeks."""
    assert q.parse_time(text, now=T0) == T0 - age


def test_aware_datetimes_are_converted_to_utc() -> None:
    """An aware datetime in any zone is accepted and returned in UTC."""
    st_johns = timezone(-timedelta(hours=3, minutes=30))
    value = q.parse_time(datetime(2026, 11, 25, 8, 30, tzinfo=st_johns))
    assert value == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert value.tzinfo is UTC
    with pytest.raises(InvalidArgumentError, match="naive"):
        q.parse_time(datetime(2026, 11, 25, 8, 30))


@pytest.mark.usefixtures("non_utc_zone")
def test_naive_iso_text_means_utc_in_any_local_zone() -> None:
    """ISO text without an offset is UTC, not local time, even when the zone is not UTC."""
    assert q.parse_time("2026-11-25T10:00:00") == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert q.parse_time("2026-11-25T10:00:00z") == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert q.parse_time("2026-11-25T10:00:00-03:30") == datetime(2026, 11, 25, 13, 30, tzinfo=UTC)


def test_filter_window_is_relative_to_now() -> None:
    """since and until ages in a filter count back from the ``now`` given."""
    flt = q.make_filter(since="2h", until="30m", now=T0)
    assert flt.started_after == T0 - timedelta(hours=2)
    assert flt.started_before == T0 - timedelta(minutes=30)


def test_report_window_is_relative_to_its_now(t: ExecutionTracker, clock: FakeClock) -> None:
    """report(since="1h") counts back from the ``now`` passed, not the wall clock; a
    source with nothing in the window and nothing open is left out."""
    t.start("skill").finish_success()
    report = q.report(t.store, since="1h", now=T0 + timedelta(minutes=30))
    assert report.since == T0 - timedelta(minutes=30)
    assert [s.started for s in report.sources] == [1]
    assert q.report(t.store, since="1h", now=T0 + timedelta(hours=2)).sources == []


def test_report_run_status_counts(t: ExecutionTracker) -> None:
    """by_status lists every status, zero included."""
    t.start("skill").finish_success()
    [skill] = q.report(t.store, now=T0).sources
    assert skill.by_status == {s.value: int(s is RunStatus.SUCCESS) for s in RunStatus}


def test_top_errors_default_to_five(t: ExecutionTracker) -> None:
    """Without ``top``, the report lists the five most frequent codes."""
    for k in range(7):
        for _ in range(k + 1):
            t.start("skill").finish_error(code=f"code_{k}", message="x")
    [skill] = q.report(t.store, now=T0).sources
    assert [c for c, _ in skill.top_errors] == [f"code_{k}" for k in (6, 5, 4, 3, 2)]


def test_report_times_are_utc(t: ExecutionTracker) -> None:
    """The report's now and since are UTC whatever zone ``now`` came in, and its
    dict form writes them with a Z."""
    st_johns = timezone(-timedelta(hours=3, minutes=30))
    report = q.report(t.store, since="1h", now=datetime(2026, 11, 25, 8, 30, tzinfo=st_johns))
    assert report.now == T0 and report.now.tzinfo is UTC
    assert report.to_dict()["since"] == "2026-11-25T11:00:00Z"
    assert report.to_dict()["now"] == "2026-11-25T12:00:00Z"


def test_cursors_are_url_safe_and_round_trip(sync_tracker: ExecutionTracker) -> None:
    """A cursor uses only URL-safe characters (no padding) and decodes back to the
    run's start time and id, whatever bytes the id holds."""
    for k in range(40):
        h = sync_tracker.start("skill", f"r{k}")
        run = sync_tracker.get_run(h.id)
        assert run is not None
        cursor = q.encode_cursor(run)
        assert set(cursor) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        assert q.decode_cursor(cursor) == (datetime_to_us(run.started_at), run.id)
    # base64 of "1:~>?~" uses both URL-safe alphabet characters "-" and "_"
    assert q.decode_cursor("MTp-Pj9-") == (1, "~>?~")


def test_filter_defaults_and_single_status() -> None:
    """make_filter() with nothing is the empty filter; a status string is one status."""
    from exectrack.stores import RunFilter

    assert q.make_filter() == RunFilter()
    assert q.make_filter(status="error").statuses == (RunStatus.ERROR,)
    assert q.make_filter(status=["error", RunStatus.TIMEOUT]).statuses == (
        RunStatus.ERROR,
        RunStatus.TIMEOUT,
    )


def test_list_runs_pages_fifty_by_default(sync_tracker: ExecutionTracker) -> None:
    """Without a limit a page holds 50 runs; the last page has no next cursor."""
    for _ in range(51):
        sync_tracker.start("skill").finish_success()
    first = q.list_runs(sync_tracker.store)
    assert len(first.runs) == 50 and first.next_cursor is not None
    last = q.list_runs(sync_tracker.store, cursor=first.next_cursor)
    assert len(last.runs) == 1 and last.next_cursor is None


@pytest.mark.usefixtures("non_utc_zone")
def test_iso_text_is_returned_in_utc_in_any_local_zone() -> None:
    """Parsed ISO text comes back with the UTC zone itself, not the local one."""
    for text in ("2026-11-25T10:00:00", "2026-11-25T10:00:00+02:00", "2026-11-25T10:00:00Z"):
        assert q.parse_time(text).tzinfo is UTC


def test_unreadable_and_out_of_range_times_say_so() -> None:
    """A time that cannot be read names the value and both forms accepted; one that
    falls outside the years 1-9999 says so."""
    with pytest.raises(InvalidArgumentError) as info:
        q.parse_time("yesterday")
    assert str(info.value) == (
        "cannot read time 'yesterday': use ISO 8601 (2026-11-25T10:00:00Z) "
        "or an age such as 30s, 15m, 2h, 7d"
    )
    with pytest.raises(InvalidArgumentError) as info:
        q.parse_time("99999999d", now=T0)
    assert str(info.value) == (
        "time '99999999d' is out of range: times must fall in the years 1-9999 (UTC)"
    )


def test_an_invalid_cursor_names_itself() -> None:
    """A cursor that is not one of ours is refused, naming it and what to pass."""
    with pytest.raises(InvalidArgumentError) as info:
        q.decode_cursor("not a cursor")
    assert str(info.value) == (
        "invalid cursor 'not a cursor': pass the next_cursor of a previous page"
    )


def test_a_cursor_ending_in_any_letter_round_trips(tmp_path: Path) -> None:
    """Only padding is stripped from a cursor: one whose last character is a letter
    (here X) decodes back to its run."""
    store = SQLiteStore(tmp_path / "runs.db")
    us = datetime_to_us(T0)
    run_id = next(
        f"run-{k}W"
        for k in range(1_000)
        if base64.urlsafe_b64encode(f"{us}:run-{k}W".encode()).decode().rstrip("=").endswith("X")
    )
    store.create(NewRun(run_id, "skill", us))
    run = store.get(run_id)
    assert run is not None
    cursor = q.encode_cursor(run)
    assert cursor.endswith("X")
    assert q.decode_cursor(cursor) == (us, run_id)
    store.close()


def test_report_time_to_first_item_percentiles(t: ExecutionTracker, clock: FakeClock) -> None:
    """A source's streams report p50 and p95 of their time to the first item."""

    @t.with_run("chat")
    def stream(wait: float) -> Iterator[int]:
        clock.advance(wait)
        yield 1

    for seconds in range(1, 21):
        assert list(stream(seconds)) == [1]
    [chat] = q.report(t.store, now=clock.now()).sources
    assert (chat.first_item_p50_ms, chat.first_item_p95_ms) == (10_000.0, 19_000.0)


def test_hang_rate_of_a_single_run(t: ExecutionTracker) -> None:
    """One finished run in the window: a hang rate of 0, not unknown."""
    t.start("skill").finish_success()
    [skill] = q.report(t.store, now=T0).sources
    assert (skill.started, skill.hang_rate) == (1, 0.0)


class _CodesBackwards(FailingStore):
    """A real store that lists each source's error codes in reverse order (the Store
    contract promises no order)."""

    def summarize(self, since: int | None, now: int) -> list[SourceSummary]:
        return [
            replace(s, error_codes=dict(reversed(list(s.error_codes.items()))))
            for s in super().summarize(since, now)
        ]


def test_top_errors_ties_go_by_code_whatever_the_stores_order(db_url: str) -> None:
    """Codes with the same count are listed by code, in whatever order the store
    handed them over."""
    store = _CodesBackwards(open_store(db_url), fail=set())
    t = ExecutionTracker(store, strict=True, durability="sync")
    for code in ("a_code", "b_code", "c_code"):
        t.start("skill").finish_error(code=code, message="x")
    [skill] = q.report(store, now=datetime.now(UTC)).sources
    assert skill.top_errors == [("a_code", 1), ("b_code", 1), ("c_code", 1)]
    t.close()
    store.inner.close()


def test_a_source_with_no_run_in_the_window_has_no_hang_rate(
    t: ExecutionTracker, clock: FakeClock
) -> None:
    """A source listed only for a run started before the window (still open) started
    nothing in it: its hang rate is unknown (None), not a division by zero."""
    t.start("skill")
    clock.advance(timedelta(hours=2))
    [skill] = q.report(t.store, since="1h", now=clock.now()).sources
    assert (skill.started, skill.open, skill.hang_rate) == (0, 1, None)


@pytest.mark.parametrize("run_id", ["plain", "a:b", "a:b:c:"])
def test_cursors_keep_a_run_id_with_colons_whole(run_id: str) -> None:
    """A run id may hold ':' (ids are the caller's when it passes them): the list
    cursor and the change cursor give it back whole."""
    at = datetime(2026, 11, 30, tzinfo=UTC)
    run = Run(id=run_id, source="chat", status=RunStatus.RUNNING, started_at=at)
    assert q.decode_cursor(q.encode_cursor(run)) == (datetime_to_us(at), run_id)
    assert q._decode_position(q._encode_position((7, run_id))) == (7, run_id)


# -- source_stats, latest_runs and the change feed's edges, pinned -----------------------


def test_source_stats_figures_of_each_source(t: ExecutionTracker, clock: FakeClock) -> None:
    """Per source: every status counted (zeros included), open = queued + running,
    success rate over finished runs, nearest-rank percentiles, top errors, buckets,
    the duration count and sum; sources in name order; to_dict says the same."""
    for seconds in range(1, 11):  # skill: durations 1 s .. 10 s, 7 success, 3 errors
        h = t.start("skill")
        clock.advance(seconds)
        if seconds in (2, 5, 9):
            h.finish_error(code="tool_failed" if seconds != 9 else "rate_limited", message="x")
        else:
            h.finish_success()
    t.start("skill")  # open
    t.start("chat")  # open, nothing finished
    stats = q.source_stats(t.store, bounds=(2_000, 5_000, 60_000))
    assert [s.source for s in stats] == ["chat", "skill"]
    chat, skill = stats
    assert (chat.total, chat.open, chat.success_rate) == (1, 1, None)
    assert (chat.p50_ms, chat.p95_ms, chat.p99_ms, chat.top_errors) == (None, None, None, [])
    assert skill.by_status == {
        "queued": 0,
        "running": 1,
        "success": 7,
        "error": 3,
        "canceled": 0,
        "timeout": 0,
    }
    assert (skill.total, skill.open, skill.success_rate) == (11, 1, 0.7)
    assert (skill.p50_ms, skill.p95_ms, skill.p99_ms) == (5_000.0, 10_000.0, 10_000.0)
    assert skill.top_errors == [("tool_failed", 2), ("rate_limited", 1)]
    assert skill.buckets == (2, 5, 10)
    assert (skill.duration_count, skill.duration_sum_ms) == (10, 55_000.0)
    assert skill.to_dict() == {
        "source": "skill",
        "total": 11,
        "by_status": skill.by_status,
        "open": 1,
        "success_rate": 0.7,
        "p50_ms": 5_000.0,
        "p95_ms": 10_000.0,
        "p99_ms": 10_000.0,
        "top_errors": [{"code": "tool_failed", "count": 2}, {"code": "rate_limited", "count": 1}],
    }
    [only] = q.source_stats(t.store, q.make_filter(source="skill"), top=1, percentiles=False)
    assert (only.top_errors, only.p50_ms, only.p95_ms, only.p99_ms) == (
        [("tool_failed", 2)],
        None,
        None,
        None,
    )
    assert only.buckets == ()


def test_latest_runs_one_per_filter_in_one_call(t: ExecutionTracker) -> None:
    """The newest run of each filter, None where none matches, in the filters' order;
    no filter asks the store nothing."""
    t.start("skill", "a").finish_success()
    newest_a = t.start("skill", "a")
    b = t.start("chat", "b")
    got = q.latest_runs(
        t.store,
        (
            q.make_filter(source="chat"),
            q.make_filter(source="skill", source_ref="a"),
            q.make_filter(source="heartbeat"),
        ),
    )
    assert [r.id if r else None for r in got] == [b.id, newest_a.id, None]
    failing = FailingStore(t.store)
    assert q.latest_runs(failing, []) == []
    assert failing.calls == {}


def test_change_positions_up_to_the_largest_sequence(tmp_path: Path) -> None:
    """A change cursor holds a 63-bit sequence: the largest round-trips, one more is
    a clear error naming the cursor and what to pass instead."""
    top = q._encode_position((2**63 - 1, "run-1"))
    assert q._decode_position(top) == (2**63 - 1, "run-1")
    assert q._decode_position(q._encode_position((126, "r"))) == (126, "r")
    past = q._encode_position((2**63, "run-1"))
    with pytest.raises(InvalidArgumentError) as err:
        q._decode_position(past)
    assert str(err.value) == (
        f"invalid change cursor {past!r}: pass the cursor of a previous change page "
        "or a page's changes_cursor"
    )


def test_change_pages_of_an_empty_feed_and_the_default_size(tmp_path: Path) -> None:
    """An empty feed answers the start of history (or the cursor it was given); a
    page holds 500 changes unless asked otherwise; a bad limit names itself."""
    store = open_store(f"sqlite:///{tmp_path / 'feed.db'}")
    try:
        empty = q.changes(store)
        assert (empty.runs, q._decode_position(empty.cursor)) == ([], (0, ""))
        given = q._encode_position((41, "gone"))
        assert q.changes(store, given).cursor == given
        with pytest.raises(InvalidArgumentError, match=r"^limit=0: must be between 1 and "):
            q.changes(store, limit=0)
        store.apply(
            [
                NewRun(id=f"r{i:04d}", source="skill", started_at=datetime_to_us(T0))
                for i in range(501)
            ]
        )
        page = q.changes(store)
        assert len(page.runs) == 500
        assert [r.id for r in q.changes(store, page.cursor).runs] == ["r0500"]
    finally:
        store.close()


def test_source_stats_top_errors_default_to_five(t: ExecutionTracker) -> None:
    for k in range(6):
        t.start("skill").finish_error(code=f"code_{k}", message="x")
    [skill] = q.source_stats(t.store)
    assert [c for c, _ in skill.top_errors] == [f"code_{k}" for k in range(5)]


def test_result_records_are_loaded_on_first_use_as_the_same_classes() -> None:
    from exectrack import _report, _results

    for name in ("Changes", "RunStats", "SourceStats"):
        assert getattr(q, name) is getattr(_results, name)
    for name in ("Report", "SourceReport"):
        assert getattr(q, name) is getattr(_report, name)
    with pytest.raises(AttributeError) as err:
        q.RunStatz  # type: ignore[attr-defined]  # noqa: B018
    assert str(err.value) == "module 'exectrack.query' has no attribute 'RunStatz'"


def test_store_records_are_loaded_on_first_use_as_the_same_classes() -> None:
    from exectrack import stores
    from exectrack.stores import _records, _summaries

    for name in ("ApplyResult", "Command", "FinishResult", "FinishRun", "MarkRunning"):
        assert getattr(stores, name) is getattr(_records, name)
    assert stores.NewRun is _records.NewRun
    for name in ("Reaped", "SourceAggregate", "SourceSummary"):
        assert getattr(stores, name) is getattr(_summaries, name)
    assert set(stores.__all__) >= {*_records.__all__, *_summaries.__all__}
    with pytest.raises(AttributeError) as err:
        stores.NewRunz  # type: ignore[attr-defined]  # noqa: B018
    assert str(err.value) == "module 'exectrack.stores' has no attribute 'NewRunz'"

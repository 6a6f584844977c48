"""Rollups (schema v5), once per engine: every count, error code, duration bucket and
percentile read through them equals what the runs themselves give, for any window,
whatever was folded and whatever was not; a finished run is added exactly once,
however many processes fold at the same time."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exectrack._model import RunStatus, us_to_datetime
from exectrack.stores import FinishRun, NewRun, RunFilter
from exectrack.stores._dialect import sql
from exectrack.stores._rollup import (
    DAY_US,
    HOUR_US,
    Window,
    add_packed,
    bound_slot,
    pack,
    percentile,
    slot_of,
    slot_value,
)
from exectrack.stores._sql import SqlStore

from .conftest import Target

# 07:23:11.5 on a day: windows built from it cut through hours and days.
DAY0 = 1_763_942_400_000_000  # 2025-11-24T00:00:00Z
T0 = DAY0 + 7 * HOUR_US + 23 * 60_000_000 + 11_500_000
SOURCES = ("chat", "skill", "heartbeat")
CODES = ("rate_limited", "provider_unavailable", "abandoned")


# -- slots, percentiles and windows: pure functions ---------------------------------


@given(st.floats(min_value=1e-8, max_value=1e12, allow_nan=False))
def test_a_slot_is_the_smallest_two_digit_number_at_or_above_the_value(ms: float) -> None:
    value = slot_value(slot_of(ms))
    assert value >= ms * (1 - 1e-9)
    assert value <= ms * 1.1 * (1 + 1e-9)
    mantissa = value / 10 ** math.floor(math.log10(value))
    assert round(mantissa * 10) == pytest.approx(mantissa * 10)  # two significant digits


@given(st.integers(10, 99), st.integers(-8, 11))
def test_every_two_digit_number_is_its_own_slot(mantissa: int, exponent: int) -> None:
    number = float(f"{mantissa}e{exponent - 1}")
    assert slot_value(slot_of(number)) == number
    assert bound_slot(number) == slot_of(number)


@given(
    st.floats(min_value=1e-8, max_value=1e12, allow_nan=False),
    st.floats(min_value=1e-8, max_value=1e12, allow_nan=False),
)
def test_slots_sort_like_their_values(a: float, b: float) -> None:
    if a <= b:
        assert slot_of(a) <= slot_of(b)
    else:
        assert slot_of(a) >= slot_of(b)


def test_a_histogram_is_stored_compact_and_read_back() -> None:
    """One row per hour or day holds all its slots: as short a text as JSON allows."""
    slots = {slot_of(110): 2, slot_of(0.5): 7, 0: 1}
    text = pack(slots)
    assert text == f"[0,1,{slot_of(0.5)},7,{slot_of(110)},2]"
    into = {slot_of(110): 1}
    add_packed(into, text)
    assert into == {0: 1, slot_of(0.5): 7, slot_of(110): 3}


def test_slot_edges_and_zero() -> None:
    assert [slot_value(slot_of(v)) for v in (0.7, 1.15, 99.99, 100.0, 100.5, 123.4)] == [
        0.7,
        1.2,
        100.0,
        100.0,
        110.0,
        130.0,
    ]
    assert slot_of(0.0) == slot_of(-5.0) == slot_of(float("nan")) == slot_of(1e-9) == 0
    assert slot_value(0) == 0.0
    assert slot_value(slot_of(1.05e-9)) == 1.1e-9  # the smallest slot above zero
    assert slot_value(slot_of(2e16)) == slot_value(slot_of(1e17))  # the top slot
    assert bound_slot(12.5) is None  # three digits: cuts through the slot (12, 13]
    assert bound_slot(300_000) == slot_of(300_000)


def test_percentile_reads_the_nearest_rank_slot() -> None:
    slots = {slot_of(10): 50, slot_of(20): 45, slot_of(200): 5}
    assert percentile(slots, 500) == 10.0
    assert percentile(slots, 501) == 20.0  # rank 51 of 100
    assert percentile(slots, 950) == 20.0
    assert percentile(slots, 951) == 200.0
    assert percentile(slots, 1000) == 200.0
    assert percentile({}, 500) is None
    assert percentile({slot_of(1): 1, slot_of(2): 1}, 500) == 1.0  # rank 1 of 2


@given(
    st.one_of(st.none(), st.integers(0, 40 * DAY_US)),
    st.one_of(st.none(), st.integers(0, 40 * DAY_US)),
    st.lists(st.integers(0, 40 * DAY_US), min_size=1, max_size=30),
)
def test_a_window_is_covered_once_by_its_ranges_and_edges(
    start: int | None, end: int | None, points: list[int]
) -> None:
    window = Window.of(start, end)
    for at in points:
        inside = (start is None or at >= start) and (end is None or at < end)
        hits = sum(
            1
            for grain, lo, hi in window.ranges
            if (lo is None or at - at % grain >= lo) and (hi is None or at - at % grain < hi)
        )
        hits += sum(
            1 for lo, hi in window.raw if (lo is None or at >= lo) and (hi is None or at < hi)
        )
        assert hits == (1 if inside else 0), (start, end, at, window)
        if window.covered is not None and inside:
            lo, hi = window.covered
            in_ranges = (lo is None or at >= lo) and (hi is None or at < hi)
            assert in_ranges == (
                hits == 1
                and not any((a is None or at >= a) and (b is None or at < b) for a, b in window.raw)
            )


def test_a_window_uses_days_then_hours_then_runs() -> None:
    w = Window.of(T0, T0 + 3 * DAY_US)
    day0 = T0 - T0 % DAY_US + DAY_US
    assert w.ranges[0] == (DAY_US, day0, day0 + 2 * DAY_US)
    assert (HOUR_US, T0 - T0 % HOUR_US + HOUR_US, day0) in w.ranges
    assert w.raw == (
        (T0, T0 - T0 % HOUR_US + HOUR_US),
        (T0 - T0 % HOUR_US + 3 * DAY_US, T0 + 3 * DAY_US),
    )
    assert Window.of(T0, T0 + 60_000_000).ranges == ()  # within one hour: the runs only
    assert Window.of(None, None).ranges == ((DAY_US, None, None),)


# -- the store: rollups against the runs themselves ----------------------------------


@dataclass
class Fact:
    source: str
    started: int
    status: RunStatus
    code: str | None
    duration: float | None
    first_item: float | None


def _workload(store: SqlStore, rnd: random.Random, n: int, start: int, span: int) -> list[str]:
    """``n`` runs over ``span`` microseconds: created finished in batches, created open
    and finished later, left open, queued; returns the ids of the runs left open."""
    batch: list[Any] = []
    later: list[FinishRun] = []
    left_open: list[str] = []
    for i in range(n):
        at = start + rnd.randrange(span)
        rid = f"r{start:x}-{i:05d}"
        source = rnd.choice(SOURCES)
        roll = rnd.random()
        status = rnd.choice([RunStatus.SUCCESS] * 5 + [RunStatus.ERROR, RunStatus.TIMEOUT])
        code = None if status is RunStatus.SUCCESS else rnd.choice(CODES)
        duration = round(rnd.lognormvariate(4, 1.5), 3)
        first = round(duration * rnd.random(), 3) if rnd.random() < 0.3 else None
        if roll < 0.5:  # created finished (a batch folds start and finish together)
            batch.append(NewRun(rid, source, at, source_ref="ref"))
            batch.append(
                FinishRun(
                    rid,
                    status,
                    at + 1000,
                    duration_ms=duration,
                    error_code=code,
                    items=None if first is None else 3,
                    first_item_ms=first,
                )
            )
        elif roll < 0.85:  # started now, finished later
            store.create(NewRun(rid, source, at, source_ref="ref"))
            later.append(
                FinishRun(
                    rid,
                    status,
                    at + 2000,
                    duration_ms=duration,
                    error_code=code,
                    items=None if first is None else 2,
                    first_item_ms=first,
                )
            )
        elif roll < 0.95:
            store.create(NewRun(rid, source, at))
            left_open.append(rid)
        else:
            store.create(NewRun(rid, source, at, status=RunStatus.QUEUED))
            left_open.append(rid)
    store.apply(batch)
    store.apply(later[: len(later) // 2])
    for f in later[len(later) // 2 :]:
        store.finish(f)
    return left_open


def _facts(store: SqlStore) -> list[Fact]:
    runs = store.list_runs(RunFilter(), limit=1_000_000)
    return [
        Fact(
            r.source,
            int(r.started_at.timestamp() * 1e6) if False else _us(r.started_at),
            r.status,
            r.error_code,
            r.duration_ms if r.finished_at is not None else None,
            r.first_item_ms if r.finished_at is not None else None,
        )
        for r in runs
    ]


def _us(at: datetime) -> int:
    from exectrack._model import datetime_to_us

    return datetime_to_us(at)


def _nearest(values: list[float], permille: int) -> float:
    ordered = sorted(values)
    return ordered[max((len(ordered) * permille + 999) // 1000 - 1, 0)]


def _check_window(store: SqlStore, facts: list[Fact], start: int | None, end: int | None) -> None:
    def inside(f: Fact) -> bool:
        return (start is None or f.started >= start) and (end is None or f.started < end)

    picked = [f for f in facts if inside(f)]
    flt = RunFilter(
        started_after=None if start is None else us_to_datetime(start),
        started_before=None if end is None else us_to_datetime(end),
    )
    want_counts = Counter((f.source, f.status) for f in picked)
    assert store.count_runs(flt) == dict(want_counts), (start, end)
    only_chat = RunFilter(
        sources=("chat",),
        statuses=(RunStatus.ERROR, RunStatus.RUNNING),
        started_after=flt.started_after,
        started_before=flt.started_before,
    )
    assert store.count_runs(only_chat) == {
        k: n
        for k, n in want_counts.items()
        if k[0] == "chat" and k[1] in (RunStatus.ERROR, RunStatus.RUNNING)
    }
    bounds = (5.0, 25.0, 100.0, 300_000.0)
    for exact in (True, False):
        store.exact_quantiles = 1_000_000 if exact else 0
        aggs = {
            a.source: a for a in store.aggregate(flt, quantiles=(0.5, 0.95, 0.99), bounds=bounds)
        }
        assert sorted(aggs) == sorted({f.source for f in picked})
        for src, agg in aggs.items():
            mine = [f for f in picked if f.source == src]
            assert agg.by_status == dict(Counter(f.status for f in mine))
            assert agg.error_codes == dict(Counter(f.code for f in mine if f.code))
            durations = [f.duration for f in mine if f.duration is not None]
            assert agg.duration_count == len(durations)
            assert agg.duration_sum_ms == pytest.approx(sum(durations))
            assert agg.buckets == tuple(sum(d <= b for d in durations) for b in bounds)
            if not durations:
                assert agg.quantiles == {}
                continue
            for q, pm in ((0.5, 500), (0.95, 950), (0.99, 990)):
                value = _nearest(durations, pm)
                assert agg.quantiles[q] == (value if exact else slot_value(slot_of(value)))
        summaries = {s.source: s for s in store.summarize(start, T0 + 40 * DAY_US)}
        if end is None:
            for src, s in summaries.items():
                mine = [f for f in picked if f.source == src]
                assert s.by_status == dict(Counter(f.status for f in mine))
                assert s.error_codes == dict(Counter(f.code for f in mine if f.code))
                for got, values, pm in (
                    (s.p50_ms, [f.duration for f in mine if f.duration is not None], 500),
                    (s.p95_ms, [f.duration for f in mine if f.duration is not None], 950),
                    (
                        s.first_item_p95_ms,
                        [f.first_item for f in mine if f.first_item is not None],
                        950,
                    ),
                ):
                    if not values:
                        assert got is None
                        continue
                    value = _nearest(values, pm)  # type: ignore[arg-type]
                    assert got == (value if exact else slot_value(slot_of(value)))
    store.exact_quantiles = SqlStore.exact_quantiles


def _windows(rnd: random.Random) -> list[tuple[int | None, int | None]]:
    out: list[tuple[int | None, int | None]] = [
        (None, None),
        (T0, None),
        (T0 + 2 * DAY_US + 17, None),
        (T0 + HOUR_US // 3, T0 + HOUR_US // 2),  # inside one hour
        (T0 - T0 % HOUR_US, T0 - T0 % HOUR_US + 5 * HOUR_US),  # whole hours
        (T0 - T0 % DAY_US + DAY_US, T0 - T0 % DAY_US + 3 * DAY_US),  # whole days
    ]
    for _ in range(6):
        a = T0 + rnd.randrange(4 * DAY_US)
        out.append((a, a + rnd.randrange(3 * DAY_US)))
        out.append((a, None))
    return out


def test_reads_equal_the_runs_folded_or_not(target: Target) -> None:
    """Half the runs folded, then more written, finished and reaped without a fold:
    every window's counts, codes, buckets and percentiles (exact and from slots) equal
    the runs'; after a fold, the same again."""
    store = target.store
    rnd = random.Random(11)
    open_ids = _workload(store, rnd, 300, T0, 4 * DAY_US)
    _fold_settled(store)
    assert _rollup_total(store) > 0
    _workload(store, rnd, 300, T0 + 12 * HOUR_US, 3 * DAY_US)
    for rid in open_ids[:5]:
        store.finish(FinishRun(rid, RunStatus.CANCELED, T0 + 5 * DAY_US))
    facts = _facts(store)
    for start, end in _windows(rnd):
        _check_window(store, facts, start, end)
    total = _rollup_total(store)
    _fold_settled(store)
    assert _rollup_total(store) > total
    assert store.fold_rollups() == 0  # nothing twice
    assert _rollup_total(store) == sum(1 for f in facts if f.duration is not None)
    for start, end in _windows(rnd):
        _check_window(store, facts, start, end)


def _fold_settled(store: SqlStore) -> int:
    """Fold until no finished run is left unfolded; how many runs the folds added.
    On PostgreSQL a change settles only once no older transaction is open anywhere
    on the server (other tests', say), so this waits for that, up to 30 s."""
    deadline = time.monotonic() + 30
    added = 0
    while True:
        added += store.fold_rollups()
        with store._read() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM runs WHERE finished_at IS NOT NULL AND (change_seq, id) > "
                "(SELECT folded_seq, folded_id FROM run_rollup_state)"
            )
            if int(cur.fetchone()[0]) == 0:
                return added
        assert time.monotonic() < deadline, "changes did not settle in 30 s"
        time.sleep(0.05)


def _rollup_total(store: SqlStore) -> int:
    with store._read() as cur:
        cur.execute(
            sql(store.dialect, "SELECT SUM(runs) FROM run_rollups WHERE grain = ?"), (DAY_US,)
        )
        day = int(cur.fetchone()[0] or 0)
        cur.execute(
            sql(store.dialect, "SELECT SUM(runs) FROM run_rollups WHERE grain = ?"), (HOUR_US,)
        )
        hour = int(cur.fetchone()[0] or 0)
    assert day == hour
    return day


def test_a_run_is_folded_once_when_it_finishes(target: Target) -> None:
    """An open run is not in the rollups; once finished and folded it is, once; the
    reaper's finish is folded like any other."""
    store = target.store
    store.create(NewRun("a", "chat", T0))
    store.create(NewRun("b", "chat", T0, lease_until=T0 + 1))
    _fold_settled(store)
    assert _rollup_total(store) == 0
    store.finish(FinishRun("a", RunStatus.SUCCESS, T0 + 5_000, duration_ms=5.0))
    store.finish(FinishRun("a", RunStatus.ERROR, T0 + 6_000, duration_ms=6.0))  # refused
    assert _fold_settled(store) == 1
    assert _rollup_total(store) == 1
    assert store.fold_rollups() == 0
    reaped = store.reap(T0 + 10_000_000)
    assert [r.run_id for r in reaped] == ["b"]
    assert _fold_settled(store) == 1
    assert _rollup_total(store) == 2
    counts = store.count_runs(RunFilter())
    assert counts == {("chat", RunStatus.SUCCESS): 1, ("chat", RunStatus.ERROR): 1}


def test_writes_fold_every_so_often(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store folds by itself after ``fold_every`` changes it wrote (created,
    finished or reaped runs), so reads add few unfolded runs."""
    store = target.store
    store.fold_every = 10
    store._ensure_ready()  # the migration's own fold is not counted
    calls: list[int] = []
    fold = store.fold_rollups

    def counted(**kwargs: Any) -> int:
        calls.append(1)
        return fold(**kwargs)

    monkeypatch.setattr(store, "fold_rollups", counted)
    store.apply(
        [
            NewRun(
                f"r{i}",
                "chat",
                T0 + i,
                status=RunStatus.SUCCESS,
                finished_at=T0 + i + 1,
                duration_ms=1.0,
            )
            for i in range(25)
        ]
    )
    assert len(calls) == 1
    for i in range(9):
        store.create(NewRun(f"o{i}", "skill", T0, lease_until=T0))
    assert len(calls) == 1  # 9 changes: not yet
    store.finish(FinishRun("o0", RunStatus.SUCCESS, T0 + 9, duration_ms=2.0))
    assert len(calls) == 2
    store.reap(T0 + 1_000_000)  # 8 reaped
    assert len(calls) == 2
    store.finish(FinishRun("none", RunStatus.SUCCESS, T0 + 9))  # applies nothing
    store.create(NewRun("o0", "skill", T0))  # exists: creates nothing
    assert len(calls) == 2
    store.create(NewRun("n1", "skill", T0))
    store.create(NewRun("n2", "skill", T0))
    assert len(calls) == 3
    if target.engine != "postgres":  # settled at once: the folds added every run
        assert _rollup_total(store) == 25 + 9


def test_concurrent_folds_add_each_run_once(shared_target: Target) -> None:
    """Three store objects fold while a fourth writes: at the end the rollups hold
    every finished run exactly once (SQLite serialises folds; PostgreSQL skips a
    fold while another holds the position)."""
    writer = shared_target.store
    folders = [shared_target.open_again() for _ in range(3)]
    for f in folders:
        f.fold_chunk = 37  # many small transactions, interleaved
    done = threading.Event()
    errors: list[BaseException] = []

    added: list[int] = []

    def fold(store: SqlStore) -> None:
        try:
            while not done.is_set():
                added.append(store.fold_rollups())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fold, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    try:
        for k in range(20):
            writer.apply(
                [
                    NewRun(
                        f"w{k}-{i}",
                        SOURCES[i % 3],
                        T0 + k * HOUR_US + i,
                        status=RunStatus.SUCCESS,
                        finished_at=T0 + k * HOUR_US + i + 9,
                        duration_ms=float(i % 50),
                    )
                    for i in range(60)
                ]
            )
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    added.append(_fold_settled(writer))
    assert _rollup_total(writer) == 20 * 60
    assert sum(added) == 20 * 60  # what each fold says it added, added up
    assert sum(store_n for store_n in writer.count_runs(RunFilter()).values()) == 1200


def test_a_store_that_never_migrates_reads_without_folding(shared_target: Target) -> None:
    """A read-only store object (migrate=False) adds the unfolded runs itself and
    writes nothing."""
    store = shared_target.store
    store.fold_every = 1_000_000
    for i in range(30):
        store.create(NewRun(f"r{i}", "chat", T0 + i * HOUR_US))
        store.finish(
            FinishRun(f"r{i}", RunStatus.SUCCESS, T0 + i * HOUR_US + 10, duration_ms=float(i))
        )
    from exectrack.stores.postgres import PostgresStore
    from exectrack.stores.sqlite import SQLiteStore

    reader = (
        PostgresStore(shared_target.url, migrate=False)
        if shared_target.engine == "postgres"
        else SQLiteStore(shared_target.url, migrate=False)
    )
    shared_target.opened.append(reader)
    flt = RunFilter(started_after=us_to_datetime(T0 + 5 * HOUR_US))
    assert reader.count_runs(flt) == {("chat", RunStatus.SUCCESS): 25}
    [agg] = reader.aggregate(flt, quantiles=(0.5,))
    assert agg.quantiles == {0.5: 17.0}
    assert _rollup_total(store) == 0


def test_migrating_a_version_4_database_folds_its_runs(shared_target: Target) -> None:
    """Runs stored before rollups existed are folded by the migration that adds them."""
    store = shared_target.open_again()
    d = store.dialect
    with store._write() as cur:
        store._lock_schema(cur)
        cur.execute(d.migrations_table)
        for m in store.migrations[:4]:
            for statement in m.statements:
                cur.execute(statement)
            cur.execute(
                sql(
                    d,
                    "INSERT INTO exectrack_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                ),
                (m.version, m.name, datetime(2026, 1, 1, tzinfo=UTC)),
            )
        for i in range(40):
            cur.execute(
                sql(
                    d,
                    "INSERT INTO runs (id, source, status, started_at, finished_at, duration_ms, "
                    "updated_at) VALUES (?, 'chat', ?, ?, ?, ?, ?)",
                ),
                (
                    f"old{i}",
                    "success" if i % 4 else "error",
                    d.ts(T0 + i),
                    d.ts(T0 + i + 5),
                    float(i),
                    d.ts(T0),
                ),
            )
    assert store.schema_version() == 4
    store.fold_chunk = 7
    assert store.migrate() == [5, 6]
    assert _rollup_total(store) == 40
    assert store.fold_rollups() == 0
    assert store.count_runs(RunFilter()) == {
        ("chat", RunStatus.SUCCESS): 30,
        ("chat", RunStatus.ERROR): 10,
    }


def _tricky_values() -> list[float]:
    rnd = random.Random(5)
    values = [0.0, 1e-12, 1e-9, 2e-9, 0.7, 1.15, 99.99, 100.0, 100.5, 1e17, 123.456]
    for exp in range(-8, 15):
        for mant in (10, 11, 25, 99):
            number = float(f"{mant}e{exp - 1}")
            values += [number, math.nextafter(number, math.inf), math.nextafter(number, 0.0)]
    values += [rnd.lognormvariate(3, 4) for _ in range(300)]
    return values


def test_the_engine_and_python_put_a_value_in_the_same_slot(target: Target) -> None:
    """A value stored and read back by the engine lands in the slot ``slot_of``
    gives it, folded or added by a read: powers of ten, slot numbers and the doubles
    next to them included."""
    store = target.store
    values = _tricky_values()
    store.apply(
        [
            NewRun(
                f"v{i:04d}", "chat", T0, status=RunStatus.SUCCESS, finished_at=T0 + 1, duration_ms=v
            )
            for i, v in enumerate(values)
        ]
    )
    _fold_settled(store)
    with store._read() as cur:
        hists = store._rollup_histograms(cur, Window.of(None, None), RunFilter(), ["duration"])
    want = Counter(slot_of(v) for v in values)
    assert hists[("chat", "duration")] == dict(want)


def test_fold_reads_at_most_its_limit_and_says_what_it_added(target: Target) -> None:
    """``fold_rollups(limit=n)`` reads n changes at most, in chunks of ``fold_chunk``,
    and returns the finished runs among them; without a limit it goes on to the end."""
    store = target.store
    store.fold_every = 10**9
    store.fold_chunk = 7
    store.apply(
        [
            NewRun(
                f"f{i:02d}",
                "chat",
                T0 + i,
                status=RunStatus.SUCCESS,
                finished_at=T0 + i + 1,
                duration_ms=1.0,
            )
            for i in range(30)
        ]
    )
    store.create(NewRun("open", "chat", T0 + 99))  # a change, not a finished run
    if target.engine == "postgres":  # changes settle when no older transaction is open
        assert _fold_settled(store) == 30
        return
    assert store.fold_rollups(limit=10) == 10
    assert store.fold_rollups(limit=25) == 20  # 20 finished runs and the open one
    assert store.fold_rollups() == 0
    assert _rollup_total(store) == 30


def test_histograms_count_every_run_in_a_slot(target: Target) -> None:
    """Runs sharing a slot each count: one run at 5 ms and three at 50 ms put the
    median at 50, for durations and for times to first item alike."""
    store = target.store
    store.exact_quantiles = 0
    rows = []
    for i, ms in enumerate((5.0, 50.0, 50.0, 50.0)):
        rows.append(NewRun(f"h{i}", "chat", T0 + i, source_ref="ref"))
        rows.append(
            FinishRun(
                f"h{i}", RunStatus.SUCCESS, T0 + i + 9, duration_ms=ms, items=1, first_item_ms=ms
            )
        )
    store.apply(rows)
    for _ in range(2):  # unfolded, then folded
        [s] = store.summarize(None, T0 + DAY_US)
        assert (s.p50_ms, s.first_item_p50_ms) == (50.0, 50.0)
        [agg] = store.aggregate(RunFilter(sources=("chat", "other")), quantiles=(0.5,))
        assert agg.quantiles == {0.5: 50.0}
        _fold_settled(store)


def test_filters_the_rollups_cannot_answer_read_the_runs(target: Target) -> None:
    """A session, source_ref, parent or text filter narrows the counts (the rollups
    hold none of them, so such a filter reads the runs); two sources add up."""
    store = target.store
    store.apply(
        [
            NewRun(
                "p",
                "chat",
                T0,
                status=RunStatus.SUCCESS,
                finished_at=T0 + 1,
                session_id="s1",
                source_ref="alpha",
                duration_ms=1.0,
            ),
            NewRun(
                "c",
                "skill",
                T0,
                status=RunStatus.SUCCESS,
                finished_at=T0 + 1,
                parent_id="p",
                duration_ms=2.0,
            ),
            NewRun(
                "o",
                "chat",
                T0,
                status=RunStatus.ERROR,
                finished_at=T0 + 1,
                session_id="s2",
                source_ref="beta",
                error_code="boom",
                error_message="upstream said no",
                duration_ms=3.0,
            ),
        ]
    )
    _fold_settled(store)
    ok, err = ("chat", RunStatus.SUCCESS), ("chat", RunStatus.ERROR)
    assert store.count_runs(RunFilter(session_id="s1")) == {ok: 1}
    assert store.count_runs(RunFilter(source_ref="beta")) == {err: 1}
    assert store.count_runs(RunFilter(parent_id="p")) == {("skill", RunStatus.SUCCESS): 1}
    assert store.count_runs(RunFilter(text="upstream")) == {err: 1}
    assert store.count_runs(RunFilter(sources=("chat", "skill"))) == {
        ok: 1,
        err: 1,
        ("skill", RunStatus.SUCCESS): 1,
    }


def test_a_window_inside_one_hour_counts_only_its_own_open_runs(target: Target) -> None:
    """Open runs count in the window they started in: one that started earlier in
    the same hour is not in a window that begins after it."""
    store = target.store
    hour = T0 - T0 % HOUR_US
    store.create(NewRun("early", "chat", hour + 60_000_000))
    store.create(NewRun("inside", "chat", hour + 20 * 60_000_000))
    flt = RunFilter(
        started_after=us_to_datetime(hour + 10 * 60_000_000),
        started_before=us_to_datetime(hour + 30 * 60_000_000),
    )
    assert store.count_runs(flt) == {("chat", RunStatus.RUNNING): 1}

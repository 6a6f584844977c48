"""The Store contract, once, for every engine (SQLite in memory, SQLite on a file,
PostgreSQL): the same commands must leave the same runs behind everywhere."""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from exectrack._model import Run, RunStatus, datetime_to_us, us_to_datetime
from exectrack._redact import (
    DEFAULT_METADATA_LIMIT,
    TRUNCATED_KEY,
    encode_metadata,
    normalize_metadata,
)
from exectrack.errors import InvalidArgumentError, SchemaTooNewError, StoreError
from exectrack.stores import (
    ApplyResult,
    Command,
    FinishResult,
    FinishRun,
    MarkRunning,
    NewRun,
    RunFilter,
    Store,
)
from exectrack.stores._sql import SqlStore

from .conftest import Target

T0 = 1_764_000_000_000_000  # 2025-11-24, in microseconds
TERMINAL = sorted(RunStatus.terminal())
OPEN = (RunStatus.QUEUED, RunStatus.RUNNING)


def at(us: int) -> datetime:
    return us_to_datetime(us)


def new(run_id: str, at_us: int = T0, **fields: Any) -> NewRun:
    return NewRun(run_id, fields.pop("source", "chat"), at_us, **fields)


def fin(run_id: str, status: RunStatus, at_us: int, **fields: Any) -> FinishRun:
    return FinishRun(run_id, status, at_us, **fields)


def settings_for(target: Target, sqlite_examples: int) -> settings:
    return settings(
        max_examples=target.examples(sqlite_examples),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def ids(runs: Sequence[Run]) -> list[str]:
    return [r.id for r in runs]


def everything(store: SqlStore, flt: RunFilter | None = None) -> list[Run]:
    return store.list_runs(flt or RunFilter(), limit=10_000)


# -- protocol and schema ---------------------------------------------------------------


def test_store_implements_the_protocol(target: Target) -> None:
    """Every engine is a runtime ``Store`` with a ``url``."""
    assert isinstance(target.store, Store)
    assert isinstance(target.store.url, str)


def test_fresh_database_is_version_zero_until_migrated(target: Target) -> None:
    """An empty database reports version 0; migrate applies every version in order."""
    store = target.store
    assert store.schema_version() == 0
    assert store.migrate() == [m.version for m in store.migrations]
    assert store.schema_version() == store.latest_version


def test_migrate_twice_applies_nothing_the_second_time(target: Target) -> None:
    """Migrations are idempotent: a second migrate returns [] and keeps the data."""
    store = target.store
    store.migrate()
    store.create(new("a"))
    assert store.migrate() == []
    assert store.schema_version() == store.latest_version
    assert ids(everything(store)) == ["a"]
    if target.shared:
        assert target.open_again().migrate() == []


def test_first_use_migrates_implicitly(target: Target) -> None:
    """Any operation on a fresh database creates the schema first."""
    assert target.store.get("nope") is None
    assert target.store.schema_version() == target.store.latest_version


def test_concurrent_first_use_migrates_once(shared_target: Target) -> None:
    """Six stores migrating one database at once: one applies, each version recorded once."""
    target = shared_target
    stores = [target.open_again() for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def migrate(store: SqlStore) -> None:
        barrier.wait()
        try:
            results.append(store.migrate())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a migrating thread is stuck"
    assert errors == []
    assert sorted(results) == [[]] * 5 + [[m.version for m in target.store.migrations]]
    with target.store._read() as cur:
        cur.execute("SELECT version, COUNT(*) FROM exectrack_migrations GROUP BY version")
        assert {int(v): int(n) for v, n in cur.fetchall()} == {
            m.version: 1 for m in target.store.migrations
        }


def test_newer_schema_is_a_clear_error(target: Target) -> None:
    """A database migrated by newer code raises SchemaTooNewError naming both versions."""
    # On migrate and on a store opened afterwards; nothing is changed.
    store = target.store
    store.migrate()
    newer = store.latest_version + 1
    target.execute(
        "INSERT INTO exectrack_migrations (version, name, applied_at) "
        + ("VALUES (%s, %s, %s)" if target.engine == "postgres" else "VALUES (?, ?, ?)"),
        (newer, "from the future", "2030-01-01T00:00:00+00:00"),
    )
    with pytest.raises(SchemaTooNewError) as info:
        store.migrate()
    message = str(info.value)
    assert f"schema version {newer}" in message
    assert f"up to {store.latest_version}" in message
    assert "upgrade exectrack" in message
    assert store.schema_version() == newer
    if target.shared:
        with pytest.raises(SchemaTooNewError):
            target.open_again().get("any")


def test_closed_store_refuses_work(target: Target) -> None:
    """After close(), an operation raises StoreError instead of reopening silently."""
    target.store.migrate()
    target.store.close()
    with pytest.raises(StoreError, match="closed"):
        target.store.create(new("late"))


# -- create / get ------------------------------------------------------------------------


def test_create_then_get_round_trips_every_field(target: Target) -> None:
    """Every field written by create comes back from get, times as aware UTC."""
    store = target.store
    running = new(
        "r-1",
        T0 + 1,
        source="skill",
        source_ref="search",
        session_id="s-1",
        parent_id="p-0",
        metadata='{"model":"small","n":[1,2.5,null,true]}',
        owner="host:1:abc",
        deadline_at=T0 + 60_000_000,
    )
    done = new(
        "r-2",
        T0 + 2,
        status=RunStatus.ERROR,
        finished_at=T0 + 1_502,
        duration_ms=1.5,
        error_code="rate_limited",
        error_message="slow down",
        retryable=True,
    )
    assert store.create(running) is True
    assert store.create(done) is True
    assert store.get("r-1") == Run(
        id="r-1",
        source="skill",
        status=RunStatus.RUNNING,
        started_at=at(T0 + 1),
        source_ref="search",
        session_id="s-1",
        parent_id="p-0",
        metadata={"model": "small", "n": [1, 2.5, None, True]},
        owner="host:1:abc",
        heartbeat_at=at(T0 + 1),
        deadline_at=at(T0 + 60_000_000),
        updated_at=at(T0 + 1),
    )
    got = store.get("r-2")
    assert got == Run(
        id="r-2",
        source="chat",
        status=RunStatus.ERROR,
        started_at=at(T0 + 2),
        finished_at=at(T0 + 1_502),
        duration_ms=1.5,
        error_code="rate_limited",
        error_message="slow down",
        retryable=True,
        metadata={},
        heartbeat_at=at(T0 + 2),
        updated_at=at(T0 + 1_502),
    )
    assert got is not None and got.started_at.utcoffset() == timedelta(0)


def test_create_existing_id_changes_nothing(target: Target) -> None:
    """A second create of an id returns False and leaves the first run as it was."""
    store = target.store
    assert store.create(new("a", source_ref="first"))
    before = store.get("a")
    assert store.create(new("a", T0 + 5, source_ref="second")) is False
    assert store.get("a") == before


def test_create_rejects_inconsistent_terminal_state(target: Target) -> None:
    """finished_at must be set exactly when the status is terminal; nothing is written."""
    with pytest.raises(InvalidArgumentError):
        target.store.create(new("a", finished_at=T0 + 1))
    with pytest.raises(InvalidArgumentError):
        target.store.create(new("b", status=RunStatus.SUCCESS))
    assert everything(target.store) == []


def test_get_unknown_id_is_none(target: Target) -> None:
    """get of an id no run has returns None, on an empty and a non-empty database."""
    assert target.store.get("missing") is None
    target.store.create(new("a"))
    assert target.store.get("missing") is None


# -- start / finish -----------------------------------------------------------------------


def test_first_finish_wins_and_the_loser_learns_it(target: Target) -> None:
    """A second finish writes nothing and reports the status the first one wrote."""
    store = target.store
    store.create(new("a"))
    first = store.finish(fin("a", RunStatus.SUCCESS, T0 + 2_000, metadata='{"ok":1}'))
    assert first == FinishResult(True, RunStatus.SUCCESS) and first
    stored = store.get("a")
    for status in TERMINAL:
        late = store.finish(
            fin("a", status, T0 + 9_000, error_code="late", error_message="x", retryable=True)
        )
        assert late == FinishResult(False, RunStatus.SUCCESS)
        assert not late
    assert store.get("a") == stored


def test_finish_unknown_id_reports_no_run(target: Target) -> None:
    """Finishing an id no run has is FinishResult(False, None) and creates nothing."""
    result = target.store.finish(fin("ghost", RunStatus.ERROR, T0))
    assert result == FinishResult(False, None)
    assert not result
    assert target.store.get("ghost") is None


def test_queued_runs_may_only_finish_canceled(target: Target) -> None:
    """A queued run refuses success/error/timeout (reporting queued) but takes canceled."""
    store = target.store
    store.create(new("q", status=RunStatus.QUEUED))
    for status in (RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.TIMEOUT):
        assert store.finish(fin("q", status, T0 + 1)) == FinishResult(False, RunStatus.QUEUED)
    assert store.get("q").status is RunStatus.QUEUED  # type: ignore[union-attr]
    assert store.finish(fin("q", RunStatus.CANCELED, T0 + 2)) == FinishResult(
        True, RunStatus.CANCELED
    )
    assert store.get("q").status is RunStatus.CANCELED  # type: ignore[union-attr]


def test_finish_rejects_a_non_terminal_status(target: Target) -> None:
    """finish with queued/running is an argument error naming the run and the status,
    not a silent no-op."""
    target.store.create(new("a"))
    for status in OPEN:
        with pytest.raises(InvalidArgumentError) as info:
            target.store.finish(fin("a", status, T0 + 1))
        assert str(info.value) == f"cannot finish run a with non-terminal status '{status.value}'"
    assert target.store.get("a").status is RunStatus.RUNNING  # type: ignore[union-attr]


def test_finish_writes_its_fields_and_derives_a_missing_duration(target: Target) -> None:
    """A finish writes its fields; a missing duration is derived exactly from started_at."""
    store = target.store
    store.create(new("a", T0 + 7, metadata='{"start":1}'))
    store.finish(
        fin(
            "a",
            RunStatus.TIMEOUT,
            T0 + 7 + 123_457,
            error_code="deadline_exceeded",
            error_message="too slow",
            retryable=False,
        )
    )
    run = store.get("a")
    assert run is not None
    assert run.status is RunStatus.TIMEOUT
    assert run.finished_at == at(T0 + 7 + 123_457)
    assert run.duration_ms == 123.457
    assert (run.error_code, run.error_message, run.retryable) == (
        "deadline_exceeded",
        "too slow",
        False,
    )
    assert run.updated_at == run.finished_at
    assert run.metadata == {"start": 1}


def test_finish_metadata_replaces_only_when_given(target: Target) -> None:
    """Metadata given at finish replaces the stored JSON; none keeps the start's."""
    store = target.store
    store.create(new("a", metadata='{"k":"start"}'))
    store.create(new("b", metadata='{"k":"start"}'))
    store.finish(fin("a", RunStatus.SUCCESS, T0 + 1, duration_ms=0.25))
    store.finish(fin("b", RunStatus.SUCCESS, T0 + 1, metadata='{"k":"end","x":[1]}'))
    assert store.get("a").metadata == {"k": "start"}  # type: ignore[union-attr]
    assert store.get("a").duration_ms == 0.25  # type: ignore[union-attr]
    assert store.get("b").metadata == {"k": "end", "x": [1]}  # type: ignore[union-attr]


def test_start_moves_a_queued_run_to_running_once(target: Target) -> None:
    """start moves only a queued run to running; otherwise it reports the existing status."""
    store = target.store
    store.create(new("q", status=RunStatus.QUEUED))
    assert store.start("q", T0 + 10) == FinishResult(True, RunStatus.RUNNING)
    run = store.get("q")
    assert run is not None
    assert (run.status, run.heartbeat_at, run.updated_at) == (
        RunStatus.RUNNING,
        at(T0 + 10),
        at(T0 + 10),
    )
    assert store.start("q", T0 + 20) == FinishResult(False, RunStatus.RUNNING)
    assert store.get("q") == run
    assert store.start("ghost", T0) == FinishResult(False, None)
    store.finish(fin("q", RunStatus.ERROR, T0 + 30))
    assert store.start("q", T0 + 40) == FinishResult(False, RunStatus.ERROR)


# -- apply ----------------------------------------------------------------------------------


def test_apply_large_batch_of_finishes_first_wins(target: Target) -> None:
    """A batch larger than one multi-row statement, finishing earlier runs twice each
    (the repeats interleaved), applies exactly the first finish of every run."""
    store = target.store
    n = 160
    store.apply([new(f"r{i:03}", T0 + i) for i in range(n)])
    first = [fin(f"r{i:03}", TERMINAL[i % 4], T0 + 1000 + i, error_code="first") for i in range(n)]
    again = [
        fin(f"r{i:03}", TERMINAL[(i + 1) % 4], T0 + 2000 + i, error_code="again") for i in range(n)
    ]
    batch: list[Command] = []
    for i in range(n):
        batch.append(first[i])
        if i >= 3:
            batch.append(again[i - 3])  # a repeat lands within the same chunk of 100
    batch += again[n - 3 :]
    assert store.apply(batch) == ApplyResult(finished=n, not_applied=n)
    runs = {r.id: r for r in everything(store)}
    assert {i: (r.status, r.error_code) for i, r in runs.items()} == {
        f.id: (f.status, "first") for f in first
    }
    assert all(r.duration_ms == pytest.approx(1.0) for r in runs.values())


def test_apply_counts_every_command_exactly_once(target: Target) -> None:
    """ApplyResult counts each command once, on the folded and the one-by-one path."""
    store = target.store
    store.create(new("old"))
    store.create(new("oldq", status=RunStatus.QUEUED))
    batch: list[Command] = [
        new("a"),
        fin("a", RunStatus.SUCCESS, T0 + 5),  # folded into a's insert
        fin("a", RunStatus.ERROR, T0 + 6),  # refused: a is already terminal
        new("a"),  # duplicate create
        new("q", status=RunStatus.QUEUED),
        MarkRunning("q", T0 + 3),  # folded
        MarkRunning("q", T0 + 4),  # refused: already running
        fin("old", RunStatus.ERROR, T0 + 7),
        MarkRunning("oldq", T0 + 8),
        fin("ghost", RunStatus.ERROR, T0 + 9),  # unknown id
        new("t", status=RunStatus.CANCELED, finished_at=T0 + 1),  # created terminal
    ]
    assert store.apply(batch) == ApplyResult(created=3, started=2, finished=2, not_applied=4)
    assert {r.id: r.status for r in everything(store)} == {
        "a": RunStatus.SUCCESS,
        "q": RunStatus.RUNNING,
        "old": RunStatus.ERROR,
        "oldq": RunStatus.RUNNING,
        "t": RunStatus.CANCELED,
    }
    # An id created earlier makes the batch fall back to one-by-one: same counting.
    again: list[Command] = [new("old"), fin("oldq", RunStatus.SUCCESS, T0 + 10), new("b")]
    assert store.apply(again) == ApplyResult(created=1, started=0, finished=1, not_applied=1)


def test_apply_of_nothing_does_nothing(target: Target) -> None:
    """An empty batch is an empty result."""
    assert target.store.apply([]) == ApplyResult()


def test_apply_validates_the_whole_batch_before_writing(target: Target) -> None:
    """One invalid command rejects the batch with nothing written."""
    with pytest.raises(InvalidArgumentError):
        target.store.apply([new("a"), fin("a", RunStatus.RUNNING, T0 + 1)])
    with pytest.raises(InvalidArgumentError):
        target.store.apply([new("b"), new("c", status=RunStatus.ERROR)])
    assert everything(target.store) == []


POOL = ["r0", "r1", "r2"]


@st.composite
def commands(draw: st.DrawFn, size: int) -> list[Command]:
    """Creates, starts and finishes over a few ids, times moving forward."""
    out: list[Command] = []
    now = T0
    for _ in range(draw(st.integers(0, size))):
        now += draw(st.integers(0, 3_000))
        run_id = draw(st.sampled_from(POOL))
        kind = draw(st.sampled_from(["new", "new", "start", "finish", "finish"]))
        if kind == "new":
            status = draw(st.sampled_from([*OPEN, *OPEN, RunStatus.SUCCESS, RunStatus.ERROR]))
            terminal = status.is_terminal
            out.append(
                new(
                    run_id,
                    now,
                    status=status,
                    source=draw(st.sampled_from(["chat", "skill"])),
                    metadata=draw(st.sampled_from([None, '{"s":1}'])),
                    finished_at=now + 500 if terminal else None,
                    duration_ms=0.5 if terminal else None,
                )
            )
        elif kind == "start":
            out.append(MarkRunning(run_id, now))
        else:
            out.append(
                fin(
                    run_id,
                    draw(st.sampled_from(TERMINAL)),
                    now,
                    duration_ms=draw(st.sampled_from([None, 2.0])),
                    error_code=draw(st.sampled_from([None, "boom"])),
                    retryable=draw(st.sampled_from([None, True, False])),
                    metadata=draw(st.sampled_from([None, '{"f":2}'])),
                )
            )
    return out


def one_by_one(store: SqlStore, cmds: Sequence[Command]) -> ApplyResult:
    created = started = finished = 0
    for cmd in cmds:
        if isinstance(cmd, NewRun):
            created += store.create(cmd)
        elif isinstance(cmd, MarkRunning):
            started += store.start(cmd.id, cmd.at).applied
        else:
            finished += store.finish(cmd).applied
    return ApplyResult(created, started, finished, len(cmds) - created - started - finished)


def snapshot(store: SqlStore) -> dict[str, Run | None]:
    return {run_id: store.get(run_id) for run_id in POOL}


def test_apply_equals_running_the_commands_one_by_one(target: Target) -> None:
    """Any batch applied at once leaves the same runs and counts as its commands one by one."""
    # Batches mix creates, starts, finishes, duplicates, creates of existing ids and
    # finishes that precede their create.
    store = target.store

    @settings_for(target, 200)
    @given(before=commands(4), batch=commands(12))
    def check(before: list[Command], batch: list[Command]) -> None:
        target.reset()
        one_by_one(store, before)
        expected_counts = one_by_one(store, batch)
        expected = snapshot(store)
        target.reset()
        one_by_one(store, before)
        assert store.apply(batch) == expected_counts
        assert snapshot(store) == expected

    check()


# -- ordering and pages ----------------------------------------------------------------------


def test_list_is_newest_first_and_ids_break_ties_bytewise(target: Target) -> None:
    """Runs list newest first; equal times order by id bytewise on every engine."""
    store = target.store
    tied = ["a", "B", "a-b", "a_b", "ä", "Z9", "a0"]
    for run_id in tied:
        store.create(new(run_id, T0))
    store.create(new("older", T0 - 1))
    store.create(new("newer", T0 + 1))
    assert ids(everything(store)) == ["newer", *sorted(tied, reverse=True), "older"]


def test_cursor_means_strictly_after_that_run(target: Target) -> None:
    """A cursor (started_at_us, id) returns only the runs ordered after that position."""
    store = target.store
    for run_id, when in [("a", T0), ("b", T0), ("c", T0), ("d", T0 + 1), ("e", T0 - 1)]:
        store.create(new(run_id, when))
    assert ids(store.list_runs(RunFilter(), limit=10, cursor=(T0, "b"))) == ["a", "e"]
    assert ids(store.list_runs(RunFilter(), limit=10, cursor=(T0 + 1, "d"))) == [
        "c",
        "b",
        "a",
        "e",
    ]
    assert ids(store.list_runs(RunFilter(), limit=10, cursor=(T0, "bb"))) == ["b", "a", "e"]
    assert ids(store.list_runs(RunFilter(), limit=2, cursor=(T0 + 5, "z"))) == ["d", "c"]
    assert store.list_runs(RunFilter(), limit=10, cursor=(T0 - 1, "e")) == []


def test_limit_below_one_is_an_empty_page(target: Target) -> None:
    """limit 0 (or less) returns no runs."""
    target.store.create(new("a"))
    assert target.store.list_runs(RunFilter(), limit=0) == []


def test_keyset_pages_return_every_run_once_while_runs_are_inserted(target: Target) -> None:
    """Keyset pages return every run exactly once while new runs are inserted between pages."""
    # A run inserted between pages appears exactly when it sorts behind the cursor.
    store = target.store

    @settings_for(target, 60)
    @given(
        initial=st.lists(st.integers(0, 6), max_size=14),
        page=st.integers(1, 4),
        inserts=st.lists(st.lists(st.integers(0, 6), max_size=3), max_size=6),
    )
    def check(initial: list[int], page: int, inserts: list[list[int]]) -> None:
        target.reset()
        keys: list[tuple[int, str]] = []
        for n, slot in enumerate(initial):
            keys.append((T0 + slot, f"i{n:02d}"))
            store.create(new(keys[-1][1], keys[-1][0]))
        expected = set(keys)
        seen: list[tuple[int, str]] = []
        cursor: tuple[int, str] | None = None
        rounds = iter(inserts)
        while True:
            runs = store.list_runs(RunFilter(), limit=page, cursor=cursor)
            seen += [(datetime_to_us(r.started_at), r.id) for r in runs]
            if len(runs) < page:
                break
            cursor = seen[-1]
            for n, slot in enumerate(next(rounds, [])):
                key = (T0 + slot, f"n{len(seen):03d}{n}")
                store.create(new(key[1], key[0]))
                if key < cursor:
                    expected.add(key)
        assert seen == sorted(seen, reverse=True)
        assert len(seen) == len(set(seen))
        assert set(seen) == expected

    check()


# -- counts and filters ---------------------------------------------------------------------


def test_count_runs_groups_by_source_and_status(target: Target) -> None:
    """count_runs returns a count per (source, status) among the matching runs only."""
    store = target.store
    store.create(new("a", source="chat"))
    store.create(new("b", source="chat"))
    store.create(new("c", source="skill", status=RunStatus.QUEUED))
    store.finish(fin("b", RunStatus.ERROR, T0 + 1))
    assert store.count_runs(RunFilter()) == {
        ("chat", RunStatus.RUNNING): 1,
        ("chat", RunStatus.ERROR): 1,
        ("skill", RunStatus.QUEUED): 1,
    }
    assert store.count_runs(RunFilter(sources=("skill",))) == {("skill", RunStatus.QUEUED): 1}
    assert store.count_runs(RunFilter(sources=("nothing",))) == {}


SOURCES = ["chat", "skill", "x.y"]
SESSIONS = [None, "s1", "S1"]
REFS = [None, "Alpha", "alpha_1", "50%", "a\\b", "café"]
MESSAGES = [None, "Boom", "rate limited 50%", "x_y"]
TEXTS = st.one_of(st.none(), st.text(alphabet="aAlLpP%_\\1é ", max_size=3))


@st.composite
def run_rows(draw: st.DrawFn) -> list[NewRun]:
    rows: list[NewRun] = []
    for n in range(draw(st.integers(0, 10))):
        status = draw(st.sampled_from(list(RunStatus)))
        started = T0 + draw(st.integers(0, 5)) * 1000
        rows.append(
            NewRun(
                f"r{n}",
                draw(st.sampled_from(SOURCES)),
                started,
                status,
                source_ref=draw(st.sampled_from(REFS)),
                session_id=draw(st.sampled_from(SESSIONS)),
                parent_id=draw(st.sampled_from([None, "r0", "r1"])),
                finished_at=started + 10 if status.is_terminal else None,
                error_message=draw(st.sampled_from(MESSAGES)),
            )
        )
    return rows


FILTERS = st.builds(
    RunFilter,
    sources=st.lists(st.sampled_from([*SOURCES, "none"]), max_size=2, unique=True).map(tuple),
    statuses=st.lists(st.sampled_from(list(RunStatus)), max_size=3, unique=True).map(tuple),
    session_id=st.sampled_from(SESSIONS),
    source_ref=st.sampled_from(REFS),
    parent_id=st.sampled_from([None, "r0", "r1"]),
    started_after=st.one_of(st.none(), st.integers(0, 6).map(lambda k: at(T0 + k * 1000))),
    started_before=st.one_of(st.none(), st.integers(0, 6).map(lambda k: at(T0 + k * 1000))),
    text=TEXTS,
)


def _ascii_lower(text: str) -> str:
    """Case folding both engines share: ASCII only (SQLite's LIKE folds no other)."""
    return "".join(c.lower() if c.isascii() else c for c in text)


def model_filter(rows: Sequence[NewRun], flt: RunFilter) -> list[NewRun]:
    """The filter semantics RunFilter documents, in plain Python."""

    def keep(r: NewRun) -> bool:
        if flt.sources and r.source not in flt.sources:
            return False
        if flt.statuses and r.status not in flt.statuses:
            return False
        for name in ("session_id", "source_ref", "parent_id"):
            wanted = getattr(flt, name)
            if wanted is not None and getattr(r, name) != wanted:
                return False
        if flt.started_after is not None and r.started_at < datetime_to_us(flt.started_after):
            return False
        if flt.started_before is not None and r.started_at >= datetime_to_us(flt.started_before):
            return False
        if flt.text:
            needle = _ascii_lower(flt.text)
            hay = [_ascii_lower(v) for v in (r.source_ref, r.error_message) if v is not None]
            if not any(needle in h for h in hay):
                return False
        return True

    return sorted((r for r in rows if keep(r)), key=lambda r: (r.started_at, r.id), reverse=True)


def check_filter(store: SqlStore, rows: Sequence[NewRun], flt: RunFilter) -> None:
    wanted = model_filter(rows, flt)
    assert ids(store.list_runs(flt, limit=100)) == [r.id for r in wanted]
    assert store.count_runs(flt) == dict(Counter((r.source, r.status) for r in wanted))


def _plain_id(text: str) -> str:
    """A test id without backslashes (see tests/conftest.py)."""
    return re.sub(r"[^A-Za-z0-9_.%=(),' -]+", "_", text)


FIXED_ROWS = [
    new("r0", T0, source="chat", session_id="s1", source_ref="Alpha", error_message="Boom"),
    new("r1", T0 + 1000, source="skill", status=RunStatus.QUEUED, parent_id="r0"),
    new(
        "r2",
        T0 + 2000,
        source="x.y",
        status=RunStatus.ERROR,
        finished_at=T0 + 3000,
        source_ref="50%",
        session_id="S1",
        error_message="rate limited 50%",
    ),
    new("r3", T0 + 2000, source="chat", source_ref="a\\b", parent_id="r1"),
]


@pytest.mark.parametrize(
    "flt",
    [
        RunFilter(sources=("chat",)),
        RunFilter(sources=("skill", "x.y")),
        RunFilter(statuses=(RunStatus.RUNNING,)),
        RunFilter(statuses=(RunStatus.QUEUED, RunStatus.ERROR)),
        RunFilter(session_id="s1"),
        RunFilter(source_ref="50%"),
        RunFilter(parent_id="r0"),
        RunFilter(started_after=at(T0 + 1000)),
        RunFilter(started_before=at(T0 + 2000)),
        RunFilter(text="alpha"),
        RunFilter(text="%"),
        RunFilter(text="_"),
        RunFilter(text="\\"),
        RunFilter(text="BOOM"),
        RunFilter(
            sources=("chat", "x.y"),
            statuses=(RunStatus.RUNNING, RunStatus.ERROR),
            started_after=at(T0),
            started_before=at(T0 + 5000),
            text="a",
        ),
    ],
    ids=lambda flt: _plain_id(repr(flt)),
)
def test_each_filter_alone_and_combined(target: Target, flt: RunFilter) -> None:
    """Each RunFilter field, alone and combined, narrows list and count as documented."""
    for row in FIXED_ROWS:
        target.store.create(row)
    check_filter(target.store, FIXED_ROWS, flt)


def test_filters_match_the_model(target: Target) -> None:
    """Random runs and filter combinations: list, paged list and count agree with a model."""
    store = target.store

    @settings_for(target, 120)
    @given(
        rows=run_rows(), filters=st.lists(FILTERS, min_size=1, max_size=4), page=st.integers(1, 3)
    )
    def check(rows: list[NewRun], filters: list[RunFilter], page: int) -> None:
        target.reset()
        for row in rows:
            assert store.create(row)
        for flt in filters:
            check_filter(store, rows, flt)
            paged: list[Run] = []
            cursor = None
            while batch := store.list_runs(flt, limit=page, cursor=cursor):
                paged += batch
                cursor = (datetime_to_us(batch[-1].started_at), batch[-1].id)
            assert ids(paged) == [r.id for r in model_filter(rows, flt)]

    check()


# -- metadata -------------------------------------------------------------------------------

UNICODE = st.characters(codec=None, exclude_categories=())  # NUL and lone surrogates too

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(UNICODE, max_size=12),
    st.builds(lambda c, n: c * n, UNICODE, st.integers(0, 9_000)),  # past the cap
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(UNICODE, max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)
METADATA = st.dictionaries(st.text(UNICODE, max_size=8), JSON_VALUES, max_size=6)


def assert_json_equal(got: Any, want: Any, *, exact_numbers: bool) -> None:
    """Equal as JSON. With ``exact_numbers`` False (PostgreSQL's jsonb stores numbers
    as numeric and prints 1e300 as digits), a number only has to keep its value."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            assert_json_equal(got[key], want[key], exact_numbers=exact_numbers)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_json_equal(g, w, exact_numbers=exact_numbers)
    elif exact_numbers or isinstance(want, bool | str) or want is None:
        assert type(got) is type(want) and got == want
    else:
        assert not isinstance(got, bool) and isinstance(got, int | float)
        assert got == want or float(got) == float(want)


def test_metadata_round_trips_as_the_tracker_encodes_it(target: Target) -> None:
    """Metadata encoded as the tracker does it comes back as that JSON, at create and finish."""
    # Nested values, any unicode (NUL and lone surrogates too) and values past the 16 KiB cap.
    store = target.store
    exact = target.engine != "postgres"

    @settings_for(target, 100)
    @given(start=METADATA, end=METADATA)
    def check(start: dict[str, Any], end: dict[str, Any]) -> None:
        target.reset()
        start_json = encode_metadata(normalize_metadata(start))
        end_json = encode_metadata(normalize_metadata(end))
        assert len(start_json.encode("utf-8")) <= DEFAULT_METADATA_LIMIT
        store.create(new("m", metadata=start_json))
        got = store.get("m")
        assert got is not None
        assert_json_equal(dict(got.metadata), json.loads(start_json), exact_numbers=exact)
        store.finish(fin("m", RunStatus.SUCCESS, T0 + 1, metadata=end_json))
        got = store.get("m")
        assert got is not None
        assert_json_equal(dict(got.metadata), json.loads(end_json), exact_numbers=exact)

    check()


def test_metadata_over_the_cap_is_stored_capped_with_a_marker(target: Target) -> None:
    """Metadata far over 16 KiB is stored within the cap, marked _truncated."""
    big = {"blob": "é" * 40_000, "keep": 1, "list": ["x" * 5_000] * 5}
    text = encode_metadata(normalize_metadata(big))
    target.store.create(new("m", metadata=text))
    got = target.store.get("m")
    assert got is not None
    assert got.metadata[TRUNCATED_KEY]["original_bytes"] > DEFAULT_METADATA_LIMIT
    assert got.metadata["keep"] == 1
    stored = json.dumps(dict(got.metadata), ensure_ascii=False, separators=(",", ":"))
    assert len(stored.encode("utf-8")) <= DEFAULT_METADATA_LIMIT


# -- the terminal-state rule, stateful ----------------------------------------------------------


class TerminalRule(RuleBasedStateMachine):
    """Creates, starts, finishes and batches in any order on a few ids: results match
    the transition rule, and a run that reached a terminal state never changes."""

    target: Target

    def __init__(self) -> None:
        super().__init__()
        self.store = self.target.store
        self.target.reset()
        self.model: dict[str, RunStatus] = {}
        self.final: dict[str, Run] = {}
        self.now = T0

    def tick(self) -> int:
        self.now += 1_000
        return self.now

    def expect_finish(self, run_id: str, status: RunStatus) -> FinishResult:
        current = self.model.get(run_id)
        if current is RunStatus.RUNNING or (
            current is RunStatus.QUEUED and status is RunStatus.CANCELED
        ):
            self.model[run_id] = status
            return FinishResult(True, status)
        return FinishResult(False, current)

    @rule(run_id=st.sampled_from(POOL), queued=st.booleans())
    def create(self, run_id: str, queued: bool) -> None:
        status = RunStatus.QUEUED if queued else RunStatus.RUNNING
        created = self.store.create(new(run_id, self.tick(), status=status))
        assert created == (run_id not in self.model)
        self.model.setdefault(run_id, status)

    @rule(run_id=st.sampled_from(POOL))
    def start(self, run_id: str) -> None:
        current = self.model.get(run_id)
        result = self.store.start(run_id, self.tick())
        if current is RunStatus.QUEUED:
            self.model[run_id] = RunStatus.RUNNING
            assert result == FinishResult(True, RunStatus.RUNNING)
        else:
            assert result == FinishResult(False, current)

    @rule(run_id=st.sampled_from(POOL), status=st.sampled_from(TERMINAL))
    def finish(self, run_id: str, status: RunStatus) -> None:
        expected = self.expect_finish(run_id, status)
        assert self.store.finish(fin(run_id, status, self.tick(), error_code="c")) == expected

    @rule(
        run_id=st.sampled_from(POOL),
        status=st.sampled_from(TERMINAL),
        queued=st.booleans(),
    )
    def create_and_finish_in_one_batch(self, run_id: str, status: RunStatus, queued: bool) -> None:
        created = run_id not in self.model
        if created:
            self.model[run_id] = RunStatus.QUEUED if queued else RunStatus.RUNNING
        finished = self.expect_finish(run_id, status).applied
        result = self.store.apply(
            [
                new(run_id, self.tick(), status=RunStatus.QUEUED if queued else RunStatus.RUNNING),
                fin(run_id, status, self.tick()),
            ]
        )
        assert (result.created, result.finished) == (int(created), int(finished))

    @invariant()
    def stored_status_matches_and_terminal_runs_never_change(self) -> None:
        for run_id in POOL:
            run = self.store.get(run_id)
            assert (run.status if run else None) == self.model.get(run_id)
            if run is not None and run.is_terminal:
                assert self.final.setdefault(run_id, run) == run


def test_terminal_state_rule_holds_for_any_sequence(target: Target) -> None:
    """The state machine above, on every engine."""
    machine = type("Machine", (TerminalRule,), {"target": target})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=target.examples(60),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- concurrency ----------------------------------------------------------------------------


def test_racing_finishers_apply_exactly_one_finish_per_run(target: Target) -> None:
    """Eight threads finishing the same runs: exactly one finish applies per run."""
    # The stored run is the winner's and every loser is told the winner's status.
    store = target.store
    n_runs, n_threads = 150, 8
    run_ids = [f"race-{n:03d}" for n in range(n_runs)]
    store.apply([new(run_id) for run_id in run_ids])
    barrier = threading.Barrier(n_threads)
    results: dict[int, list[tuple[str, FinishResult]]] = {}
    errors: list[BaseException] = []

    def finisher(k: int) -> None:
        order = run_ids[:]
        random.Random(k).shuffle(order)
        status = TERMINAL[k % len(TERMINAL)]
        mine: list[tuple[str, FinishResult]] = []
        barrier.wait()
        try:
            for run_id in order:
                mine.append((run_id, store.finish(fin(run_id, status, T0 + k, error_code=f"t{k}"))))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        results[k] = mine

    threads = [threading.Thread(target=finisher, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a finisher thread is stuck"
    assert errors == []
    winners: dict[str, int] = {}
    for k, mine in results.items():
        for run_id, result in mine:
            if result.applied:
                assert run_id not in winners, f"{run_id} finished twice"
                winners[run_id] = k
    assert sorted(winners) == run_ids
    for run_id, k in winners.items():
        run = store.get(run_id)
        assert run is not None
        assert (run.status, run.error_code) == (TERMINAL[k % len(TERMINAL)], f"t{k}")
    for mine in results.values():
        for run_id, result in mine:
            if not result.applied:
                assert result.status is TERMINAL[winners[run_id] % len(TERMINAL)]


def test_a_nul_in_any_filter_or_id_is_no_store_error(target: Target) -> None:
    """Hostile input through the HTTP API: a NUL in a filter, an id or a cursor. SQLite
    compares it like any character; PostgreSQL text cannot hold one, so nothing
    matches there, and a cursor holding one is an invalid argument, not a failing
    store (which the API would answer with a 503)."""
    store = target.store
    store.create(NewRun("plain", "chat", T0, source_ref="ref", session_id="s"))
    nul = "a\x00b"
    filters = [
        RunFilter(sources=(nul,)),
        RunFilter(session_id=nul),
        RunFilter(source_ref=nul),
        RunFilter(parent_id=nul),
        RunFilter(text=nul),
    ]
    for flt in filters:
        assert store.list_runs(flt, limit=10) == []
        assert store.count_runs(flt) == {}
        assert store.aggregate(flt, quantiles=(0.5,)) == []
    assert store.latest_runs([*filters, RunFilter(sources=("chat",))])[:-1] == [None] * 5
    assert store.latest_runs([RunFilter(sources=("chat",)), filters[0]])[0].id == "plain"
    assert store.get(nul) is None
    if target.engine == "postgres":
        with pytest.raises(InvalidArgumentError):
            store.list_runs(RunFilter(), limit=10, cursor=(T0 + 1, nul))
        with pytest.raises(InvalidArgumentError):
            store.changes((1, nul), limit=10)
    else:
        assert [r.id for r in store.list_runs(RunFilter(), limit=10, cursor=(T0 + 1, nul))] == [
            "plain"
        ]

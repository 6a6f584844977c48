"""Schema version 2 (what a stream produced) on every engine: the facts survive every
write path, and a version 1 database migrates without losing a run."""

from __future__ import annotations

from datetime import UTC, datetime

from exectrack import RunFilter, RunStatus
from exectrack.stores import FinishRun, NewRun
from exectrack.stores._dialect import sql

from .conftest import Target

T = 1_790_000_000_000_000


def _new(run_id: str, **kw: object) -> NewRun:
    return NewRun(run_id, "chat", T, **kw)  # type: ignore[arg-type]


def _finish(run_id: str, items: int | None, first: float | None) -> FinishRun:
    return FinishRun(run_id, RunStatus.SUCCESS, T + 5_000, 5.0, items=items, first_item_ms=first)


def test_stream_facts_survive_every_write_path(target: Target) -> None:
    """A single finish, a create already terminal, a finish folded into its create
    in one batch and a batched finish of many runs all keep items/first_item_ms; a
    run that is not a stream keeps None."""
    s = target.store
    s.create(_new("single"))
    assert s.finish(_finish("single", 3, 1.5)).applied
    s.create(
        _new(
            "terminal",
            status=RunStatus.SUCCESS,
            finished_at=T + 1,
            duration_ms=0.001,
            items=0,
            first_item_ms=None,
        )
    )
    s.apply([_new("folded"), _finish("folded", 7, 2.25)])
    s.apply([_new(f"batch{i}") for i in range(120)])
    s.apply([_finish(f"batch{i}", i, i / 4) for i in range(120)])
    s.create(_new("plain"))
    s.finish(FinishRun("plain", RunStatus.SUCCESS, T + 10))
    got = {r.id: (r.items, r.first_item_ms) for r in s.list_runs(RunFilter(), limit=500)}
    assert got.pop("single") == (3, 1.5)
    assert got.pop("terminal") == (0, None)
    assert got.pop("folded") == (7, 2.25)
    assert got.pop("plain") == (None, None)
    assert got == {f"batch{i}": (i, i / 4) for i in range(120)}


def test_report_gives_time_to_first_item_percentiles(target: Target) -> None:
    """p50/p95 time to first item per source, over the window's finished streams
    only (runs that are not streams do not count)."""
    s = target.store
    for i in range(1, 21):
        s.apply([_new(f"s{i}"), _finish(f"s{i}", 1, float(i))])
    s.apply([_new("plain"), FinishRun("plain", RunStatus.SUCCESS, T + 10)])
    [chat] = s.summarize(None, T + 60_000_000)
    assert (chat.first_item_p50_ms, chat.first_item_p95_ms) == (10.0, 19.0)
    assert chat.by_status == {RunStatus.SUCCESS: 21}


def test_a_version_1_database_migrates_to_the_latest(shared_target: Target) -> None:
    """A database made by the first release (schema version 1, a run in it) is
    upgraded in place: the run is kept, its new columns are empty, and a finish
    records them from then on."""
    store = shared_target.open_again()
    d = store.dialect
    with store._write() as cur:
        store._lock_schema(cur)
        cur.execute(d.migrations_table)
        for statement in store.migrations[0].statements:
            cur.execute(statement)
        cur.execute(
            sql(d, "INSERT INTO exectrack_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
            (1, "create runs", datetime(2026, 1, 1, tzinfo=UTC)),
        )
        cur.execute(
            sql(
                d,
                "INSERT INTO runs (id, source, status, started_at, updated_at) "
                "VALUES ('old', 'chat', 'running', ?, ?)",
            ),
            (d.ts(T), d.ts(T)),
        )
    assert store.schema_version() == 1
    assert store.migrate() == list(range(2, store.latest_version + 1))
    assert store.schema_version() == store.latest_version
    old = store.get("old")
    assert old is not None and (old.status, old.items, old.first_item_ms) == (
        RunStatus.RUNNING,
        None,
        None,
    )
    assert store.finish(_finish("old", 4, 0.5)).applied
    done = store.get("old")
    assert done is not None and (done.items, done.first_item_ms) == (4, 0.5)

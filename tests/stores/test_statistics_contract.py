"""Planner statistics are kept current by the store itself (nothing else does on
SQLite, nor on PostgreSQL with autovacuum off): after ``stats_first`` created runs,
then every ``stats_every``, the runs table is analyzed; a failing ANALYZE never fails
the write that crossed the threshold."""

from __future__ import annotations

import logging

import pytest

from exectrack.stores import NewRun

from .conftest import Target

T = 1_790_000_000_000_000


def _analyzed(target: Target) -> float:
    """Rows the planner believes the table has: -1/0 until analyzed."""
    with target.store._read() as cur:
        if target.engine == "postgres":
            cur.execute("SELECT reltuples FROM pg_class WHERE oid = 'runs'::regclass")
            return float(cur.fetchone()[0])
        cur.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = 'runs' AND idx IS NULL")
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = 'runs' LIMIT 1")
            row = cur.fetchone()
        return -1.0 if row is None else float(str(row[0]).split()[0])


def _write(target: Target, lo: int, hi: int) -> None:
    target.store.apply([NewRun(f"r{i:05}", "chat", T + i) for i in range(lo, hi)])


def test_statistics_follow_the_runs_written(target: Target) -> None:
    s = target.store
    s.stats_first, s.stats_every = 100, 300  # type: ignore[misc]
    s.create(NewRun("first", "chat", T))
    with target.store._read() as cur:  # SQLite: no sqlite_stat1 table before ANALYZE
        if target.engine != "postgres":
            cur.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            assert cur.fetchone()[0] == 0
    if target.engine == "postgres":
        assert _analyzed(target) <= 0
    _write(target, 0, 98)  # 99 created: below the first threshold
    if target.engine == "postgres":
        assert _analyzed(target) <= 0
    _write(target, 98, 150)  # crosses 100
    assert _analyzed(target) == 151
    _write(target, 150, 400)  # 401 created: below the next threshold (100 + 300)
    assert _analyzed(target) == 151
    _write(target, 400, 500)  # crosses 451
    # SQLite's analysis_limit reads a bounded sample: its estimate grows, not exact
    assert _analyzed(target) == 501 if target.engine == "postgres" else _analyzed(target) > 151


def test_a_failing_analyze_never_fails_the_write(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    s = target.store
    s.stats_first, s.stats_every = 10, 10  # type: ignore[misc]

    def broken() -> None:
        raise RuntimeError("analyze refused")

    s._refresh_statistics = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="exectrack.stores"):
        for lo in range(0, 60, 15):
            assert (
                s.apply([NewRun(f"x{i}", "chat", T + i) for i in range(lo, lo + 15)]).created == 15
            )
    warnings = [r for r in caplog.records if "planner statistics" in r.getMessage()]
    assert len(warnings) == 1 and "analyze refused" in warnings[0].getMessage()
    assert s.get("x59") is not None

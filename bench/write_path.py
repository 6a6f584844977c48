"""The write path, side by side: what one tracked run costs until it is on disk.

Cases (each on a fresh SQLite file in a temporary directory, per repeat):

  a    ExecutionTracker, durability="async" (default): @with_run around a no-op;
       the clock stops after tracker.flush() returned, so every row is committed
  b    the same with durability="sync" (commits before start/finish return)
  c    raw sqlite3: INSERT, then the guarded UPDATE, one BEGIN IMMEDIATE/COMMIT each
  d    raw sqlite3 batched: executemany of 500 INSERTs + 500 guarded UPDATEs per
       transaction (the physical floor for "insert, then finish")
  d'   raw sqlite3 batched, folded: 500 INSERTs of already finished rows per
       transaction (the floor for what the async writer actually writes when a
       run's start and finish land in the same batch)
  e    OpenTelemetry SDK: one span per call, BatchSpanProcessor, an exporter that
       persists nothing; force_flush() before the clock stops

Raw cases use exectrack's own migration statements and the same pragmas (WAL,
synchronous, busy_timeout), so the schema and indexes cannot drift.

    .venv/bin/python bench/write_path.py [--runs 30000] [--commit-runs 2000]
        [--repeat 5] [--json [PATH]] [--check]
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from _common import (
    Case,
    Sample,
    Timer,
    add_json_flag,
    environment,
    measure,
    remove_db,
    sqlite_url,
    summarize,
    write_json,
)
from exectrack import ExecutionTracker
from exectrack.stores.sqlite import MIGRATIONS

SYNCHRONOUS = "normal"  # exectrack's SQLite default, passed explicitly to both sides
BUSY_TIMEOUT_MS = 5000  # likewise
BATCH = 500
FLUSH_TIMEOUT = 300.0

COLUMNS = (
    "id, source, source_ref, session_id, parent_id, status, started_at, finished_at, "
    "duration_ms, error_code, error_message, retryable, metadata, owner, heartbeat_at, "
    "deadline_at, updated_at, lease_until"
)
INSERT = f"INSERT INTO runs ({COLUMNS}) VALUES ({', '.join('?' * 18)}) ON CONFLICT (id) DO NOTHING"
LEASE_US = 30_000_000  # exectrack's default lease, written with every run
GUARDED_UPDATE = (
    "UPDATE runs SET status = ?, finished_at = ?, duration_ms = ?, error_code = ?, "
    "error_message = ?, retryable = ?, metadata = COALESCE(?, metadata), updated_at = ? "
    "WHERE id = ? AND finished_at IS NULL"
)
OWNER = f"bench:{os.getpid()}:0"
SOURCE_REF = "noop"


CaseFn = Callable[[Path, int, int], Sample]


def noop() -> None:
    return None


# -- exectrack ----------------------------------------------------------------------


def _finished_rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT COUNT(*) FROM runs WHERE finished_at IS NOT NULL").fetchone()
        return int(row[0])
    finally:
        conn.close()


def tracker_case(durability: Literal["async", "sync"]) -> CaseFn:
    def run(db: Path, n: int, warmup: int) -> Sample:
        url = sqlite_url(db, synchronous=SYNCHRONOUS, busy_timeout_ms=BUSY_TIMEOUT_MS)
        tracker = ExecutionTracker(url, durability=durability, enabled=True, strict=False)
        try:
            tracked = tracker.with_run("skill")(noop)
            for _ in range(warmup):
                tracked()
            tracker.flush(FLUSH_TIMEOUT)
            timer = Timer()
            timer.start()
            for _ in range(n):
                tracked()
            drained = tracker.flush(FLUSH_TIMEOUT)
            wall, cpu = timer.stop()
            stats = tracker.stats()
        finally:
            tracker.close()
        if not drained:
            raise RuntimeError(f"flush did not drain within {FLUSH_TIMEOUT}s")
        return Sample(n, wall, cpu, _finished_rows(db), n + warmup, stats.dropped)

    return run


# -- raw sqlite3 --------------------------------------------------------------------


def _raw_connect(db: Path) -> sqlite3.Connection:
    """A connection set up exactly like exectrack's SQLite store, with its schema."""
    conn = sqlite3.connect(
        db, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS.upper()}")
    conn.execute("BEGIN IMMEDIATE")
    for migration in MIGRATIONS:
        for statement in migration.statements:
            conn.execute(statement)
    conn.execute("COMMIT")
    return conn


def _id_source() -> Callable[[], str]:
    """Time-ordered 36-character ids (like UUIDv7 strings), cheaper than real ones."""
    prefix = secrets.token_hex(12)
    counter = itertools.count()
    head = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-"

    def next_id() -> str:
        return f"{head}{next(counter):012x}"

    return next_id


def _new_row(run_id: str, started: int) -> tuple[Any, ...]:
    return (
        run_id,
        "skill",
        SOURCE_REF,
        None,
        None,
        "running",
        started,
        None,
        None,
        None,
        None,
        None,
        "{}",
        OWNER,
        started,
        None,
        started,
        started + LEASE_US,
    )


def _finished_row(run_id: str, started: int, finished: int, ms: float) -> tuple[Any, ...]:
    return (
        run_id,
        "skill",
        SOURCE_REF,
        None,
        None,
        "success",
        started,
        finished,
        ms,
        None,
        None,
        None,
        "{}",
        OWNER,
        started,
        None,
        finished,
        started + LEASE_US,
    )


def _finish_params(run_id: str, finished: int, ms: float) -> tuple[Any, ...]:
    return ("success", finished, ms, None, None, None, None, finished, run_id)


def _now_us() -> int:
    return time.time_ns() // 1000


def raw_per_commit(db: Path, n: int, warmup: int) -> Sample:
    conn = _raw_connect(db)
    next_id = _id_source()
    perf_ns = time.perf_counter_ns

    def runs(count: int) -> None:
        execute = conn.execute
        for _ in range(count):
            run_id = next_id()
            t0 = perf_ns()
            started = _now_us()
            execute("BEGIN IMMEDIATE")
            execute(INSERT, _new_row(run_id, started))
            execute("COMMIT")
            noop()
            ms = (perf_ns() - t0) / 1e6
            execute("BEGIN IMMEDIATE")
            if execute(GUARDED_UPDATE, _finish_params(run_id, _now_us(), ms)).rowcount != 1:
                raise RuntimeError("guarded update did not apply")
            execute("COMMIT")

    try:
        wall, cpu = measure(runs, n, warmup)
    finally:
        conn.close()
    return Sample(n, wall, cpu, _finished_rows(db), n + warmup)


def raw_batched(*, folded: bool) -> CaseFn:
    def run(db: Path, n: int, warmup: int) -> Sample:
        conn = _raw_connect(db)
        next_id = _id_source()
        perf_ns = time.perf_counter_ns

        def runs(count: int) -> None:
            execute, executemany = conn.execute, conn.executemany
            done = 0
            while done < count:
                size = min(BATCH, count - done)
                rows: list[tuple[Any, ...]] = []
                finishes: list[tuple[Any, ...]] = []
                for _ in range(size):
                    run_id = next_id()
                    t0 = perf_ns()
                    started = _now_us()
                    noop()
                    ms = (perf_ns() - t0) / 1e6
                    if folded:
                        rows.append(_finished_row(run_id, started, _now_us(), ms))
                    else:
                        rows.append(_new_row(run_id, started))
                        finishes.append(_finish_params(run_id, _now_us(), ms))
                execute("BEGIN IMMEDIATE")
                executemany(INSERT, rows)
                if finishes:
                    executemany(GUARDED_UPDATE, finishes)
                execute("COMMIT")
                done += size

        try:
            wall, cpu = measure(runs, n, warmup)
        finally:
            conn.close()
        return Sample(n, wall, cpu, _finished_rows(db), n + warmup)

    return run


# -- OpenTelemetry ------------------------------------------------------------------


def otel_case(db: Path, n: int, warmup: int) -> Sample:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class CountingExporter(SpanExporter):
        """Receives every span and persists nothing."""

        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = CountingExporter()
    provider = TracerProvider()
    # A queue large enough that no span is dropped: every span reaches the exporter,
    # as every exectrack run reaches the database.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=n + warmup + 2048))
    tracer = provider.get_tracer("bench")
    traced = tracer.start_as_current_span("skill")(noop)
    try:
        for _ in range(warmup):
            traced()
        provider.force_flush()
        timer = Timer()
        timer.start()
        for _ in range(n):
            traced()
        flushed = provider.force_flush(int(FLUSH_TIMEOUT * 1000))
        wall, cpu = timer.stop()
    finally:
        provider.shutdown()
    if not flushed:
        raise RuntimeError("force_flush timed out")
    return Sample(n, wall, cpu, exporter.spans, n + warmup)


CASES: tuple[Case, ...] = (
    Case("a", "exectrack async (default), flush at end", False, tracker_case("async")),
    Case("b", 'exectrack durability="sync"', True, tracker_case("sync")),
    Case("c", "raw sqlite3, 1 txn per INSERT and per UPDATE", True, raw_per_commit),
    Case("d", "raw sqlite3 batched 500 INSERT+UPDATE / txn", False, raw_batched(folded=False)),
    Case("d'", "raw sqlite3 batched 500 finished INSERTs / txn", False, raw_batched(folded=True)),
    Case("e", "OpenTelemetry span, BatchSpanProcessor, no-op export", False, otel_case),
)


# -- running and reporting ----------------------------------------------------------


def targets(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    a, b, c, e = (rows[k]["us_per_run"] for k in ("a", "b", "c", "e"))
    return [
        {
            "target": "(a) <= (e): async tracked run no dearer than an OTel span",
            "value": f"{a:.1f} us vs {e:.1f} us ({a / e:.2f}x)",
            "ok": a <= e,
        },
        {
            "target": "(a) >= 20,000 runs/s persisted end to end",
            "value": f"{rows['a']['runs_per_s']:,.0f} runs/s",
            "ok": rows["a"]["runs_per_s"] >= 20_000,
        },
        {
            "target": "(b) <= 1.2x (c): sync tracked run near raw per-commit SQLite",
            "value": f"{b:.1f} us vs {c:.1f} us ({b / c:.2f}x)",
            "ok": b <= 1.2 * c,
        },
    ]


def print_table(rows: dict[str, dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    e, c = rows["e"]["us_per_run"], rows["c"]["us_per_run"]
    header = (
        f"{'case':<4} {'what':<52} {'runs':>7} {'us/run':>8} {'min-max':>15} "
        f"{'runs/s':>9} {'cpu us':>7} {'x(e)':>6} {'x(c)':>6}  ok"
    )
    print(header)
    print("-" * len(header))
    for row in rows.values():
        us = row["us_per_run"]
        spread = f"{row['us_per_run_min']:.1f}-{row['us_per_run_max']:.1f}"
        ok = "yes" if row["all_persisted"] and not row["dropped"] else "NO"
        print(
            f"{row['key']:<4} {row['label']:<52} {row['runs']:>7} {us:>8.2f} {spread:>15} "
            f"{row['runs_per_s']:>9,.0f} {row['cpu_us_per_run']:>7.1f} "
            f"{us / e:>6.2f} {us / c:>6.3f}  {ok}"
        )
    print()
    print("us/run: median over repeats of wall time / runs; cpu us: process CPU (all")
    print("threads) per run; ok: every row (span) verified delivered, nothing dropped.")
    print()
    for check in checks:
        print(f"[{'PASS' if check['ok'] else 'FAIL'}] {check['target']}: {check['value']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30_000, help="runs per repeat, fast cases")
    parser.add_argument(
        "--commit-runs", type=int, default=2_000, help="runs per repeat, per-commit cases (b, c)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=1_000, help="untimed runs before each")
    parser.add_argument(
        "--cases",
        default="a,b,c,d,d',e",
        help="comma-separated subset (a, b, c and e are needed for the ratios and targets)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    add_json_flag(parser)
    args = parser.parse_args(argv)

    wanted = {k.strip() for k in args.cases.split(",")}
    cases = [c for c in CASES if c.key in wanted]
    quiet = args.json == "-"
    samples: dict[str, list[Sample]] = {c.key: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="exectrack-bench-") as tmp:
        for rep in range(args.repeat):
            # Rotate the order each repeat so no case always runs first (or last).
            shift = rep % len(cases)
            for case in cases[shift:] + cases[:shift]:
                n = args.commit_runs if case.per_commit else args.runs
                warmup = max(1, args.warmup // 10) if case.per_commit else args.warmup
                slug = case.key.replace("'", "-folded")
                db = Path(tmp) / f"case-{slug}-{rep}.db"
                sample = case.fn(db, n, warmup)
                remove_db(db)
                samples[case.key].append(sample)
                if not quiet:
                    print(
                        f"  repeat {rep + 1}/{args.repeat} {case.key:<3} "
                        f"{sample.seconds / sample.runs * 1e6:8.2f} us/run",
                        file=sys.stderr,
                    )
    rows = {c.key: summarize(c, samples[c.key]) for c in cases}
    checks = targets(rows) if {"a", "b", "c", "e"} <= rows.keys() else []
    if not quiet:
        if checks:
            print_table(rows, checks)
        else:
            for row in rows.values():
                print(f"{row['key']:<4} {row['label']:<52} {row['us_per_run']:8.2f} us/run")
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "write_path",
                "environment": environment(),
                "settings": {
                    "runs": args.runs,
                    "commit_runs": args.commit_runs,
                    "repeat": args.repeat,
                    "warmup": args.warmup,
                    "batch": BATCH,
                    "synchronous": SYNCHRONOUS,
                    "busy_timeout_ms": BUSY_TIMEOUT_MS,
                },
                "cases": rows,
                "targets": checks,
            },
        )
    failed = any(not c["ok"] for c in checks) or any(
        not r["all_persisted"] or r["dropped"] for r in rows.values()
    )
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""What tracking costs on PostgreSQL, against raw psycopg, and how many runs/s several
writer processes commit together.

Per-run cost (each case on a fresh schema, per repeat):

  a    ExecutionTracker, durability="async" (default): @with_run around a no-op; the
       clock stops after tracker.flush() returned, so every row is committed
  b    the same with durability="sync" (commits before start/finish return)
  c    raw psycopg: the same INSERT, then the same guarded UPDATE, one transaction each
       (psycopg's default: BEGIN ... COMMIT around each statement)
  c'   raw psycopg, autocommit: each statement its own implicit transaction (what
       exectrack's sync path sends: one round trip per statement)
  d    raw psycopg batched: 500 already finished INSERTs per transaction with
       executemany (the floor for what the async writer writes under load)

Many writers: P processes x T threads each run tracked no-ops through their own
default (async) tracker into one schema; runs/s = runs committed / wall time from a
common start until the last process flushed. Also with durability="sync".

Every schema is created by exectrack's own migrate(), so raw cases write the same
table with the same indexes.

    EXECTRACK_TEST_POSTGRES_URL=postgresql://user@host:5432/db \\
    .venv/bin/python bench/bench_postgres.py [--url URL] [--runs 20000]
        [--commit-runs 2000] [--repeat 3] [--procs 4] [--threads 2]
        [--writer-runs 10000] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg

from _common import Case, Sample, Timer, add_json_flag, environment, measure, summarize, write_json
from exectrack import ExecutionTracker
from exectrack.stores import redact_url
from exectrack.stores.postgres import PostgresStore

BATCH = 500
FLUSH_TIMEOUT = 600.0
COLUMNS = (
    "id, source, source_ref, session_id, parent_id, status, started_at, finished_at, "
    "duration_ms, error_code, error_message, retryable, metadata, owner, heartbeat_at, "
    "deadline_at, updated_at, lease_until"
)
INSERT = (
    f"INSERT INTO runs ({COLUMNS}) VALUES ({', '.join(['%s'] * 12)}, %s::jsonb, "
    "%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
LEASE = timedelta(seconds=30)  # exectrack's default lease, written with every run
GUARDED_UPDATE = (
    "UPDATE runs SET status = %s, finished_at = %s, duration_ms = %s, error_code = %s, "
    "error_message = %s, retryable = %s, metadata = COALESCE(%s::jsonb, metadata), "
    "updated_at = %s WHERE id = %s AND finished_at IS NULL"
)
OWNER = f"bench:{os.getpid()}:0"


def noop() -> None:
    return None


# -- schemas ---------------------------------------------------------------------------


def with_options(url: str, **options: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in options.items())


class Schemas:
    """Fresh schemas on the server, each migrated with exectrack's statements."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = psycopg.connect(url, autocommit=True)
        self.made: list[str] = []

    def fresh(self) -> str:
        """A new schema, migrated by exectrack itself (raw cases use it as well)."""
        name = "bench_" + secrets.token_hex(5)
        self.made.append(name)
        store = PostgresStore(self.store_url(name))
        store.migrate()
        store.close()
        return name

    def store_url(self, schema: str) -> str:
        return with_options(self.url, schema=schema)

    def raw(self, schema: str, *, autocommit: bool) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=autocommit, options=f"-c search_path={schema}")

    def finished_rows(self, schema: str) -> int:
        row = self.admin.execute(
            f'SELECT COUNT(*) FROM "{schema}".runs WHERE finished_at IS NOT NULL'
        ).fetchone()
        return int(row[0]) if row else 0

    def server(self) -> dict[str, str]:
        out = {}
        for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method"):
            row = self.admin.execute(f"SHOW {name}").fetchone()
            out[name] = str(row[0]) if row else "?"
        return out

    def drop_all(self) -> None:
        for name in self.made:
            self.admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.admin.close()


# -- cases -----------------------------------------------------------------------------

CaseFn = Callable[[Schemas, int, int], Sample]


def tracker_case(durability: Literal["async", "sync"]) -> CaseFn:
    def run(schemas: Schemas, n: int, warmup: int) -> Sample:
        schema = schemas.fresh()
        tracker = ExecutionTracker(
            schemas.store_url(schema), durability=durability, enabled=True, strict=False
        )
        try:
            tracked = tracker.with_run("skill", "noop")(noop)
            for _ in range(warmup):
                tracked()
            tracker.flush(FLUSH_TIMEOUT)
            timer = Timer()
            timer.start()
            for _ in range(n):
                tracked()
            drained = tracker.flush(FLUSH_TIMEOUT)
            wall, cpu = timer.stop()
        finally:
            tracker.close()
        if not drained:
            raise RuntimeError(f"flush did not drain within {FLUSH_TIMEOUT}s")
        return Sample(n, wall, cpu, schemas.finished_rows(schema), n + warmup)

    return run


def _new_row(run_id: str, started: datetime) -> tuple[Any, ...]:
    return (run_id, "skill", "noop", None, None, "running", started, None, None, None)


def _row_tail(started: datetime, updated: datetime) -> tuple[Any, ...]:
    return (None, None, "{}", OWNER, started, None, updated, started + LEASE)


def _now() -> datetime:
    return datetime.now(UTC)


def raw_per_statement(*, autocommit: bool) -> CaseFn:
    def run(schemas: Schemas, n: int, warmup: int) -> Sample:
        schema = schemas.fresh()
        conn = schemas.raw(schema, autocommit=autocommit)
        perf_ns = time.perf_counter_ns

        def runs(count: int) -> None:
            execute = conn.execute
            commit = (lambda: None) if autocommit else conn.commit
            for _ in range(count):
                run_id = secrets.token_hex(16)
                t0 = perf_ns()
                started = _now()
                execute(INSERT, _new_row(run_id, started) + _row_tail(started, started))
                commit()
                noop()
                ms = (perf_ns() - t0) / 1e6
                done = _now()
                cur = execute(
                    GUARDED_UPDATE, ("success", done, ms, None, None, None, None, done, run_id)
                )
                if cur.rowcount != 1:
                    raise RuntimeError("guarded update did not apply")
                commit()

        try:
            wall, cpu = measure(runs, n, warmup)
        finally:
            conn.close()
        return Sample(n, wall, cpu, schemas.finished_rows(schema), n + warmup)

    return run


def raw_batched(schemas: Schemas, n: int, warmup: int) -> Sample:
    schema = schemas.fresh()
    conn = schemas.raw(schema, autocommit=False)
    perf_ns = time.perf_counter_ns

    def runs(count: int) -> None:
        done = 0
        with conn.cursor() as cur:
            while done < count:
                size = min(BATCH, count - done)
                rows = []
                for _ in range(size):
                    t0 = perf_ns()
                    started = _now()
                    noop()
                    ms = (perf_ns() - t0) / 1e6
                    finished = _now()
                    run_id = secrets.token_hex(16)
                    head = (run_id, "skill", "noop", None, None, "success", started, finished)
                    rows.append((*head, ms, None, *_row_tail(started, finished)))
                cur.executemany(INSERT, rows)
                conn.commit()
                done += size

    try:
        wall, cpu = measure(runs, n, warmup)
    finally:
        conn.close()
    return Sample(n, wall, cpu, schemas.finished_rows(schema), n + warmup)


CASES = (
    Case("a", "exectrack async (default), flush at end", False, tracker_case("async")),
    Case("b", 'exectrack durability="sync"', True, tracker_case("sync")),
    Case(
        "c",
        "raw psycopg, BEGIN/COMMIT per INSERT and per UPDATE",
        True,
        raw_per_statement(autocommit=False),
    ),
    Case(
        "c'", "raw psycopg, autocommit INSERT and UPDATE", True, raw_per_statement(autocommit=True)
    ),
    Case("d", f"raw psycopg batched {BATCH} finished INSERTs / txn", False, raw_batched),
)


# -- many writers ----------------------------------------------------------------------


def _writer_process(
    url: str, durability: str, threads: int, runs: int, barrier: Any, out: Any
) -> None:
    import threading

    tracker = ExecutionTracker(
        url,
        durability=durability,  # type: ignore[arg-type]
        strict=False,
        queue_size=2 * threads * runs + 1000,  # measure throughput, not drops
    )
    tracked = tracker.with_run("skill", f"w{os.getpid()}")(noop)
    tracked()
    tracker.flush(FLUSH_TIMEOUT)

    def loop() -> None:
        for _ in range(runs):
            tracked()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    barrier.wait(120)
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    calls_done = time.perf_counter() - t0
    drained = tracker.flush(FLUSH_TIMEOUT)
    elapsed = time.perf_counter() - t0
    stats = tracker.stats()
    tracker.close()
    out.put(
        {
            "calls_s": calls_done,
            "elapsed_s": elapsed,
            "drained": drained,
            "dropped": stats.dropped,
            "failures": stats.failures,
        }
    )


def many_writers(
    schemas: Schemas, durability: str, procs: int, threads: int, runs: int
) -> dict[str, Any]:
    schema = schemas.fresh()
    url = schemas.store_url(schema)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [
        ctx.Process(target=_writer_process, args=(url, durability, threads, runs, barrier, out))
        for _ in range(procs)
    ]
    for p in workers:
        p.start()
    reports = [out.get(timeout=FLUSH_TIMEOUT) for _ in workers]
    for p in workers:
        p.join(60)
    total = procs * threads * runs
    committed = schemas.finished_rows(schema) - procs  # minus each process's warm-up run
    wall = max(r["elapsed_s"] for r in reports)
    return {
        "durability": durability,
        "processes": procs,
        "threads_per_process": threads,
        "runs": total,
        "committed": committed,
        "wall_s": wall,
        "runs_per_s": committed / wall if wall else 0.0,
        "calls_s_max": max(r["calls_s"] for r in reports),
        "dropped": sum(r["dropped"] for r in reports),
        "failures": sum(r["failures"] for r in reports),
        "all_drained": all(r["drained"] for r in reports),
    }


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("EXECTRACK_TEST_POSTGRES_URL"),
        help="PostgreSQL URL (default: $EXECTRACK_TEST_POSTGRES_URL); schemas named "
        "bench_* are created in it and dropped afterwards",
    )
    parser.add_argument("--runs", type=int, default=20_000, help="runs for a, d")
    parser.add_argument("--commit-runs", type=int, default=2_000, help="runs for b, c, c'")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--procs", type=int, default=4, help="many-writers processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per process")
    parser.add_argument("--writer-runs", type=int, default=10_000, help="runs per thread")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no PostgreSQL URL: pass --url or set EXECTRACK_TEST_POSTGRES_URL")

    schemas = Schemas(args.url)
    rows: dict[str, dict[str, Any]] = {}
    try:
        server = schemas.server()
        for case in CASES:
            n = args.commit_runs if case.per_commit else args.runs
            warmup = max(50, n // 20)
            samples = [case.fn(schemas, n, warmup) for _ in range(args.repeat)]
            rows[case.key] = summarize(case, samples)
            if args.json != "-":
                r = rows[case.key]
                print(
                    f"  ({case.key:2}) {case.label:55} {r['us_per_run']:9.1f} us/run "
                    f"[{r['us_per_run_min']:.1f}-{r['us_per_run_max']:.1f}] "
                    f"cpu {r['cpu_us_per_run']:7.1f} us  persisted={r['all_persisted']}",
                    flush=True,
                )
        writers = [
            many_writers(schemas, d, args.procs, args.threads, args.writer_runs)
            for d in ("async", "sync")
        ]
        writers.insert(0, many_writers(schemas, "async", 1, args.threads, args.writer_runs))
    finally:
        schemas.drop_all()

    us = {k: v["us_per_run"] for k, v in rows.items()}
    ratios = {
        "sync (b) / raw txn (c)": us["b"] / us["c"],
        "sync (b) / raw autocommit (c')": us["b"] / us["c'"],
        "async (a) / raw txn (c)": us["a"] / us["c"],
        "async (a) / raw batched (d)": us["a"] / us["d"],
    }
    payload = {
        "benchmark": "bench_postgres",
        "environment": {**environment(), "postgres": server, "url": redact_url(args.url)},
        "cases": list(rows.values()),
        "ratios": ratios,
        "many_writers": writers,
    }
    if args.json == "-":
        write_json("-", payload)
        return 0
    print("\nratios (lower is cheaper for exectrack):")
    for name, value in ratios.items():
        print(f"  {name:34} {value:6.2f}x")
    print("\nmany writers (runs committed per second, end to end):")
    for w in writers:
        print(
            f"  {w['processes']} proc x {w['threads_per_process']} threads, "
            f"{w['durability']:5}: {w['runs_per_s']:9,.0f} runs/s "
            f"({w['committed']:,}/{w['runs']:,} runs in {w['wall_s']:.1f}s, "
            f"dropped {w['dropped']}, failures {w['failures']})"
        )
    print(f"\nserver: {server}")
    if args.json:
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())

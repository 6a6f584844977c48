"""What the panel's reads cost at 1,000,000 runs, through exectrack's query layer, with
the same statement sent by the raw driver as the baseline (the floor: what the
database itself spends, without exectrack's Python around it).

Data (built once per engine, reused while the row count matches): N runs over 30 days
ending now, 3 sources, ~200 source_refs, 50,000 sessions, statuses 85% success, 8%
error, 3% canceled, 2% timeout, the rest open; error codes from a short list.

    .venv/bin/python bench/query_speed.py [--engine sqlite|postgres|both]
        [--runs 1000000] [--db PATH] [--url URL] [--repeat 15] [--json [PATH]]

Every figure is the median over --repeat calls, in milliseconds, server side (no
HTTP). A time is never asserted anywhere: this prints figures to compare.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, write_json
from exectrack import RunStatus, query
from exectrack.stores import NewRun, Store, open_store

DAY_US = 86_400_000_000
SOURCES = ("chat", "skill", "heartbeat")
CODES = ("rate_limited", "provider_unavailable", "deadline_exceeded", "invalid_input")


def build(store: Store, n: int, now_us: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    start = now_us - 30 * DAY_US
    batch: list[NewRun] = []
    done = 0
    for i in range(n):
        at = start + (30 * DAY_US * i) // n + rnd.randrange(1000)
        src = SOURCES[i % 3]
        ref = f"{src}-ref-{rnd.randrange(67):03}" if rnd.random() > 0.001 else f"{src}-rare"
        roll = rnd.random()
        kw: dict[str, Any] = {}
        if roll < 0.85:
            status = RunStatus.SUCCESS
        elif roll < 0.93:
            status, kw["error_code"] = RunStatus.ERROR, rnd.choice(CODES)
            kw["error_message"] = f"upstream said no ({kw['error_code']})"
        elif roll < 0.96:
            status, kw["error_code"] = RunStatus.CANCELED, "cancelled"
        elif roll < 0.98:
            status, kw["error_code"] = RunStatus.TIMEOUT, "deadline_exceeded"
        else:
            status = RunStatus.RUNNING if at > now_us - DAY_US else RunStatus.SUCCESS
        if status is not RunStatus.RUNNING:
            duration = rnd.lognormvariate(6, 1.2)
            kw["finished_at"] = at + int(duration * 1000)
            kw["duration_ms"] = duration
        batch.append(
            NewRun(
                f"{at:016x}{i:08x}",
                src,
                at,
                status=status,
                source_ref=ref,
                session_id=f"sess-{rnd.randrange(50_000):05}",
                owner="bench:1:x",
                **kw,
            )
        )
        if len(batch) == 5000:
            store.apply(batch)
            done += len(batch)
            batch = []
            if done % 100_000 == 0:
                print(f"  built {done:,} / {n:,}", file=sys.stderr)
    if batch:
        store.apply(batch)


# /metrics' duration buckets (exectrack.server._metrics.BOUNDS_MS), kept here so the
# bench needs no server extra.
BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000)


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def cases(store: Store, now: datetime) -> dict[str, Callable[[], Any]]:
    f = query.make_filter
    first = query.list_runs(store, f(), limit=1).runs[0]
    cursor = None
    for _ in range(200):  # 200 pages of 50 = depth 10,000
        cursor = query.list_runs(store, f(), limit=50, cursor=cursor).next_cursor
    deep = cursor
    fcursor = None
    for _ in range(200):
        fcursor = query.list_runs(store, f(source="chat"), limit=50, cursor=fcursor).next_cursor
    refs = [(s, f"{s}-ref-{i:03}") for s in SOURCES for i in range(67)][:200]
    head = query.changes_head(store)
    return {
        "page: no filter": lambda: query.list_runs(store, f()),
        "page: source": lambda: query.list_runs(store, f(source="skill")),
        "page: status error": lambda: query.list_runs(store, f(status="error")),
        "page: session": lambda: query.list_runs(store, f(session_id="sess-01234")),
        "page: source_ref (common)": lambda: query.list_runs(store, f(source_ref="chat-ref-007")),
        "page: source_ref (rare)": lambda: query.list_runs(store, f(source_ref="skill-rare")),
        "page: source+status+24h": lambda: query.list_runs(
            store, f(source="chat", status=["error", "timeout"], since="24h", now=now)
        ),
        "page: text, no match": lambda: query.list_runs(store, f(text="no such text")),
        "page: text, common (8%)": lambda: query.list_runs(store, f(text="upstream")),
        "page: text, rare (0.03%)": lambda: query.list_runs(store, f(text="skill-rare")),
        "page: text, 2 chars, no match": lambda: query.list_runs(store, f(text="zq")),
        "page: text+source+status": lambda: query.list_runs(
            store, f(source="chat", status="error", text="Rate_Limited")
        ),
        "page: depth 10,000": lambda: query.list_runs(store, f(), cursor=deep),
        "page: source, depth 10,000": lambda: query.list_runs(
            store, f(source="chat"), cursor=fcursor
        ),
        "get": lambda: query.get_run(store, first.id),
        "latest: source": lambda: query.latest_run(store, f(source="heartbeat")),
        "latest: ref that never ran": lambda: query.latest_run(
            store, f(source="chat", source_ref="never-ran")
        ),
        "latest: 200 badges": lambda: [
            query.latest_run(store, f(source=s, source_ref=r)) for s, r in refs
        ],
        "latest: 200 badges, one query": lambda: query.latest_runs(
            store, [f(source=s, source_ref=r) for s, r in refs]
        ),
        "source_stats 24h (api/stats)": lambda: query.source_stats(store, f(since="24h", now=now)),
        "source_stats 30d (api/stats)": lambda: query.source_stats(store, f(since="30d", now=now)),
        "source_stats 24h + buckets (/metrics)": lambda: query.source_stats(
            store, f(since="24h", now=now), bounds=BOUNDS_MS
        ),
        "run_stats 24h": lambda: query.run_stats(store, f(since="24h", now=now)),
        "run_stats 30d": lambda: query.run_stats(store, f(since="30d", now=now)),
        "report 24h": lambda: query.report(store, since="24h", now=now),
        "report 30d": lambda: query.report(store, since="30d", now=now),
        "changes: head": lambda: query.changes_head(store),
        "changes: after head": lambda: query.changes(store, head),
    }


def raw_baselines(engine: str, target: str, now_us: int, first_id: str) -> dict[str, Any]:
    """The same reads as one hand-written statement each, through the bare driver."""
    day = now_us - DAY_US
    if engine == "sqlite":
        conn: Any = sqlite3.connect(target)
        p, ts = "?", (lambda us: us)
    else:
        import psycopg

        conn = psycopg.connect(target.split("?", maxsplit=1)[0], autocommit=True)
        schema = target.split("schema=")[1].split("&", maxsplit=1)[0]
        conn.execute(f"SET search_path TO {schema}")
        p = "%s"

        def ts(us: int) -> datetime:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)

    # The text filter's term: SQLite's store reads a page in steps (bench/README.md),
    # so its baseline is the scan it replaced; PostgreSQL's store sends this one.
    like = "LIKE ? ESCAPE '\\'" if engine == "sqlite" else 'ILIKE ? COLLATE "C"'

    def run(text: str, params: tuple[Any, ...]) -> Callable[[], Any]:
        sql = text.replace("?", p)
        return lambda: conn.execute(sql, params).fetchall()

    return {
        "page: no filter": run("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 51", ()),
        "get": run("SELECT * FROM runs WHERE id = ?", (first_id,)),
        "page: source_ref (rare)": run(
            "SELECT * FROM runs WHERE source_ref = ? ORDER BY started_at DESC, id DESC LIMIT 51",
            ("skill-rare",),
        ),
        "run_stats 24h": run(
            "SELECT source, status, COUNT(*) FROM runs WHERE started_at >= ? "
            "GROUP BY source, status",
            (ts(day),),
        ),
        "run_stats 30d": run(
            "SELECT source, status, COUNT(*) FROM runs WHERE started_at >= ? "
            "GROUP BY source, status",
            (ts(now_us - 30 * DAY_US),),
        ),
        **{
            name: run(
                f"SELECT * FROM runs WHERE source_ref {like} OR error_message {like} "
                "ORDER BY started_at DESC, id DESC LIMIT 51",
                (f"%{needle}%", f"%{needle}%"),
            )
            for name, needle in (
                ("page: text, no match", "no such text"),
                ("page: text, common (8%)", "upstream"),
                ("page: text, rare (0.03%)", "skill-rare"),
                ("page: text, 2 chars, no match", "zq"),
            )
        },
    }


def bench_engine(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    if engine == "sqlite":
        db = Path(args.db)
        target = str(db)
        url = f"sqlite:///{db}"
    else:
        base = args.url or os.environ.get("EXECTRACK_TEST_POSTGRES_URL")
        if not base:
            raise SystemExit("PostgreSQL: pass --url or set EXECTRACK_TEST_POSTGRES_URL")
        sep = "&" if "?" in base else "?"
        url = target = f"{base}{sep}schema={args.schema}"
    store = open_store(url)
    store.migrate()
    have = query.run_stats(store).total
    marker = query.latest_run(store)
    now_us = (
        int(marker.started_at.timestamp() * 1e6) + 1
        if marker and have == args.runs
        else int(time.time() * 1e6)
    )
    if have != args.runs:
        print(f"{engine}: building {args.runs:,} runs (had {have:,})", file=sys.stderr)
        if have:
            with store._write() as cur:  # type: ignore[attr-defined]
                cur.execute("DELETE FROM runs")
        t0 = time.perf_counter()
        build(store, args.runs, now_us)
        print(f"{engine}: built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    now = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_us)
    results: dict[str, dict[str, float | None]] = {}
    baselines = raw_baselines(engine, target, now_us, query.latest_run(store).id)  # type: ignore[union-attr]
    for name, fn in cases(store, now).items():
        if args.only and args.only not in name:
            continue
        raw = baselines.get(name)
        results[name] = {
            "ms": round(timed(fn, args.repeat), 3),
            "raw_ms": None if raw is None else round(timed(raw, args.repeat), 3),
        }
        print(f"  {engine:8} {name:28} {results[name]['ms']:>9.3f} ms", file=sys.stderr)
    store.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/exectrack-query-speed.db")
    ap.add_argument("--url")
    ap.add_argument("--schema", default="bench_query", help="PostgreSQL schema (kept)")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--only", help="time only the cases whose name contains this text")
    add_json_flag(ap)
    args = ap.parse_args()
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    out = {e: bench_engine(e, args) for e in engines}
    print(f"\n{'case':30}" + "".join(f"{e + ' ms':>14}{'raw':>9}" for e in engines))
    for name in out[engines[0]]:
        row = f"{name:30}"
        for e in engines:
            r = out[e][name]
            raw = "" if r["raw_ms"] is None else f"{r['raw_ms']:.3f}"
            row += f"{r['ms']:>14.3f}{raw:>9}"
        print(row)
    if args.json is not None:
        write_json(args.json, {"benchmark": "query_speed", "environment": environment(), **out})


if __name__ == "__main__":
    main()

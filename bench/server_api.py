"""What the runs panel's HTTP API costs per request, next to the query-layer call it
wraps, on a seeded database.

``--runs`` runs (default 100,000) over 3 sources, ~200 source_refs, ~5,000 sessions
and 30 days are written straight to a fresh store (SQLite file; PostgreSQL with
``--postgres URL``, in a fresh schema dropped afterwards). Each case is then called
``--repeat`` times in-process (FastAPI's TestClient: the whole ASGI app, routing,
parameter validation, JSON), after a warm-up, and its median and p95 are printed
beside the median of the bare query-layer call (what the HTTP layer adds).

    .venv/bin/python bench/server_api.py
    .venv/bin/python bench/server_api.py --runs 1000000 --repeat 20 \
        --postgres postgresql://postgres@127.0.0.1:5432/test --json bench/results/api.json
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, median, percentile, write_json

DAY_US = 86_400_000_000


def seed(store: Any, runs: int) -> None:
    from exectrack import RunStatus
    from exectrack._model import datetime_to_us, new_run_id
    from exectrack.stores import NewRun

    rng = random.Random(7)
    now = datetime_to_us(datetime.now(UTC))
    statuses = [RunStatus.SUCCESS] * 8 + [RunStatus.ERROR, RunStatus.TIMEOUT, RunStatus.CANCELED]
    batch = []
    for i in range(runs):
        started = now - rng.randrange(30 * DAY_US)
        status = statuses[rng.randrange(len(statuses))] if i % 500 else RunStatus.RUNNING
        done = status.is_terminal
        batch.append(
            NewRun(
                new_run_id(),
                ("chat", "skill", "heartbeat")[i % 3],
                started,
                status=status,
                source_ref=f"ref-{rng.randrange(200)}",
                session_id=f"s-{rng.randrange(5000)}",
                finished_at=started + 1000 if done else None,
                duration_ms=rng.expovariate(1 / 300) if done else None,
                error_code="rate_limited" if status is RunStatus.ERROR else None,
                error_message="slow down" if status is RunStatus.ERROR else None,
            )
        )
        if len(batch) == 5000:
            store.apply(batch)
            batch = []
            print(f"seeded {i + 1} runs", file=sys.stderr)
    if batch:
        store.apply(batch)


def cases(store: Any) -> list[tuple[str, str, Callable[[], Any]]]:
    """(name, URL, the bare query-layer call)."""
    from exectrack import query

    deep = query.list_runs(store, limit=1000).next_cursor
    day = datetime.now(UTC) - timedelta(days=1)
    scopes = [f"skill:ref-{i}" for i in range(200)]
    filters = [query.make_filter(source="skill", source_ref=f"ref-{i}") for i in range(200)]
    return [
        ("list first page", "/api/runs", lambda: query.list_runs(store)),
        (
            "list filtered",
            "/api/runs?source=skill&status=error",
            lambda: query.list_runs(store, query.make_filter(source="skill", status="error")),
        ),
        (
            "list after 1000",
            f"/api/runs?cursor={deep}",
            lambda: query.list_runs(store, cursor=deep),
        ),
        (
            "latest of a ref",
            "/api/runs/latest?source=skill&source_ref=ref-7",
            lambda: query.latest_run(store, query.make_filter(source="skill", source_ref="ref-7")),
        ),
        (
            "200 badges",
            "/api/badges?" + "&".join(f"scope={s}" for s in scopes),
            lambda: query.latest_runs(store, filters),
        ),
        (
            "stats 24 h",
            "/api/stats",
            lambda: query.source_stats(store, query.make_filter(since=day)),
        ),
        ("report 24 h", "/api/report", lambda: query.report(store, since=day)),
        ("changes head", "/api/runs/changes?limit=1", lambda: query.changes(store, limit=1)),
        ("metrics", "/metrics", lambda: None),
    ]


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run(engine: str, url: str, runs: int, repeat: int) -> list[dict[str, Any]]:
    from fastapi.testclient import TestClient

    from exectrack.server import create_app
    from exectrack.stores import open_store

    store = open_store(url)
    store.migrate()
    seed(store, runs)
    if engine == "postgres":  # what autovacuum does within a minute of a bulk load
        with store._write() as cur:  # type: ignore[attr-defined]
            cur.execute("ANALYZE runs")
    results = []
    with TestClient(create_app(store)) as client:
        for name, path, bare in cases(store):

            def call(path: str = path) -> None:
                r = client.get(path)
                assert r.status_code == 200, r.text

            http = timed(call, repeat)
            direct = timed(bare, repeat)
            results.append(
                {
                    "engine": engine,
                    "case": name,
                    "http_p50_ms": median(http),
                    "http_p95_ms": percentile(http, 95),
                    "query_p50_ms": median(direct),
                }
            )
            print(f"{engine:8} {name:18} {median(http):9.2f} {percentile(http, 95):9.2f} "
                  f"{median(direct):9.2f}", flush=True)  # fmt: skip
    store.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--postgres", metavar="URL", help="also measure on this server")
    add_json_flag(parser)
    args = parser.parse_args()
    print(f"{'engine':8} {'case':18} {'http p50':>9} {'http p95':>9} {'query p50':>9}  (ms)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results += run("sqlite", str(Path(tmp) / "runs.db"), args.runs, args.repeat)
    if args.postgres:
        import psycopg

        schema = "bench_" + secrets.token_hex(4)
        try:
            results += run("postgres", f"{args.postgres}?schema={schema}", args.runs, args.repeat)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    if args.json:
        write_json(args.json, {"environment": environment(), "runs": args.runs, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

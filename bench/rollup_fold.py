"""What keeping the rollups costs the write path: the same batches of runs written with
folding off and with the default (a fold every 2,000 changes), interleaved, on the
same store engine, and a fold's own cost per run.

    python bench/rollup_fold.py [--engine sqlite|postgres|both] [--runs 100000]
        [--batch 500] [--rounds 5] [--json [PATH]]

Writes go through ``Store.apply`` in batches (what the tracker's writer thread does);
each round writes ``--runs`` runs twice, once per setting, into fresh stores. Printed:
the median time per run of each setting and their ratio, and the time per run of
folding a backlog of ``--runs`` runs at once (the migration's backfill rate).
PostgreSQL takes its URL from ``--url`` or ``EXECTRACK_TEST_POSTGRES_URL`` and uses
(and drops) the schemas ``bench_fold_*``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_json_flag, environment, write_json
from exectrack._model import RunStatus
from exectrack.stores import NewRun, open_store
from exectrack.stores._sql import SqlStore

T0 = 1_763_942_400_000_000


def batches(n: int, size: int, seed: int) -> list[list[NewRun]]:
    """Runs as the writer sends them: a start and finish folded into one row each."""
    rnd = random.Random(seed)
    out: list[list[NewRun]] = []
    for k in range(0, n, size):
        batch = []
        for i in range(k, min(k + size, n)):
            at = T0 + i * 50_000
            failed = rnd.random() < 0.1
            batch.append(
                NewRun(
                    f"{seed:x}-{i:08d}",
                    ("chat", "skill", "heartbeat")[i % 3],
                    at,
                    status=RunStatus.ERROR if failed else RunStatus.SUCCESS,
                    finished_at=at + 1000,
                    duration_ms=rnd.lognormvariate(5, 1.2),
                    error_code="rate_limited" if failed else None,
                    source_ref=f"ref-{i % 50}",
                )
            )
        out.append(batch)
    return out


class Engine:
    def __init__(self, name: str, url: str | None) -> None:
        self.name = name
        self.base = url
        self.dir = tempfile.mkdtemp(prefix="exectrack-fold-")
        self.count = 0
        self.schemas: list[str] = []

    def fresh(self) -> SqlStore:
        self.count += 1
        if self.name == "sqlite":
            url = f"sqlite:///{self.dir}/r{self.count}.db"
        else:
            assert self.base is not None
            schema = f"bench_fold_{os.getpid()}_{self.count}"
            self.schemas.append(schema)
            url = f"{self.base}{'&' if '?' in self.base else '?'}schema={schema}"
        store = open_store(url)
        assert isinstance(store, SqlStore)
        store.migrate()
        return store

    def cleanup(self) -> None:
        if self.schemas and self.base:
            import psycopg

            with psycopg.connect(self.base.split("?")[0], autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def write_all(store: SqlStore, work: list[list[NewRun]]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): SQLite works in this process, so
    its CPU time holds up on a loaded machine; PostgreSQL's work is the server's."""
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in work:
        store.apply(batch)
    return time.perf_counter() - t0, time.process_time() - c0


def bench(engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    off: list[float] = []
    on: list[float] = []
    off_cpu: list[float] = []
    on_cpu: list[float] = []
    backfill: list[float] = []
    for r in range(args.rounds):
        work = batches(args.runs, args.batch, seed=r + 1)
        for setting in ("off", "on") if r % 2 == 0 else ("on", "off"):
            store = engine.fresh()
            store.fold_every = 2_000 if setting == "on" else 10**12
            seconds, cpu = write_all(store, work)
            (on if setting == "on" else off).append(seconds / args.runs * 1e6)
            (on_cpu if setting == "on" else off_cpu).append(cpu / args.runs * 1e6)
            if setting == "off":
                t0 = time.perf_counter()
                store.fold_rollups()
                backfill.append((time.perf_counter() - t0) / args.runs * 1e6)
            store.close()
        print(
            f"  {engine.name} round {r + 1}: off {off[-1]:.2f} us/run, on {on[-1]:.2f} us/run,"
            f" backlog fold {backfill[-1]:.2f} us/run",
            file=sys.stderr,
        )
    result = {
        "write_us_per_run_folding_off": statistics.median(off),
        "write_us_per_run_folding_on": statistics.median(on),
        "ratio_on_off": statistics.median(on) / statistics.median(off),
        "cpu_us_per_run_folding_off": statistics.median(off_cpu),
        "cpu_us_per_run_folding_on": statistics.median(on_cpu),
        "cpu_ratio_on_off": statistics.median(on_cpu) / statistics.median(off_cpu),
        "backlog_fold_us_per_run": statistics.median(backfill),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="sqlite")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--url")
    add_json_flag(ap)
    args = ap.parse_args()
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    out: dict[str, Any] = {}
    for name in engines:
        url = args.url or os.environ.get("EXECTRACK_TEST_POSTGRES_URL")
        if name == "postgres" and not url:
            raise SystemExit("PostgreSQL: pass --url or set EXECTRACK_TEST_POSTGRES_URL")
        engine = Engine(name, url)
        try:
            out[name] = bench(engine, args)
        finally:
            engine.cleanup()
    print(
        f"\n{'engine':10}{'off us/run':>12}{'on us/run':>12}{'on/off':>9}"
        f"{'cpu on/off':>12}{'backlog us/run':>16}"
    )
    for name, r in out.items():
        print(
            f"{name:10}{r['write_us_per_run_folding_off']:>12.2f}"
            f"{r['write_us_per_run_folding_on']:>12.2f}{r['ratio_on_off']:>9.3f}"
            f"{r['cpu_ratio_on_off']:>12.3f}{r['backlog_fold_us_per_run']:>16.2f}"
        )
    if args.json is not None:
        write_json(args.json, {"benchmark": "rollup_fold", "environment": environment(), **out})


if __name__ == "__main__":
    main()

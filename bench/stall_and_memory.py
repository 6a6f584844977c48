"""Two costs a tracker must not impose on its host: event-loop stalls and memory growth.
(g) runs first, so that its cold baseline is not inflated by what (f) left in the heap.

(f) stall: 1,000 concurrent tracked coroutines (``@tracker.with_run`` on an
    ``async def`` that awaits ``asyncio.sleep(0)`` a few times), gathered again and
    again for a few seconds, while a monitor task sleeps ~0.5 ms in a loop and records
    how late each wakeup is (actual - requested). The same workload untracked runs in
    the same process for comparison; modes alternate over the repeats.
(g) memory: RSS (/proc/self/status VmRSS) while one default (async) tracker records
    many runs of a no-op function; printed at intervals, then after a final flush.
    Growth is shown from a warm baseline (after warm-up runs: connection open, the
    queue filled once) and from cold (before the tracker existed). The check uses the
    growth over the runs (what a million runs add: a leak shows there); the one-time
    cost of tracking at all (connection, page cache, a full queue) is the from-cold
    figure, printed beside it.

    .venv/bin/python bench/stall_and_memory.py [--only stall|memory] [--seconds 3]
        [--tasks 1000] [--awaits 3] [--repeat 2] [--memory-runs 200000] [--json [PATH]]

Use ``--memory-runs 1000000`` for the full million-run check (about 35 s here).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    add_json_flag,
    environment,
    median,
    percentile,
    rss_kib,
    sqlite_url,
    status_kib,
    write_json,
)
from exectrack import ExecutionTracker

MONITOR_SLEEP = 0.0005  # seconds the monitor asks to sleep
FLUSH_TIMEOUT = 300.0


def _tracker(db: Path, queue_size: int | None = None) -> ExecutionTracker:
    url = sqlite_url(db, synchronous="normal", busy_timeout_ms=5000)
    if queue_size is None:
        return ExecutionTracker(url, enabled=True, strict=False)
    return ExecutionTracker(url, enabled=True, strict=False, queue_size=queue_size)


def _finished_rows(tracker: ExecutionTracker) -> int:
    stats = tracker.run_stats()
    return stats.total - stats.open


def _open_rows(tracker: ExecutionTracker) -> int:
    return tracker.run_stats().open


# -- (f) event-loop stall -----------------------------------------------------------


async def _monitor(stop: asyncio.Event, lags: list[float]) -> None:
    clock = time.perf_counter
    while not stop.is_set():
        t0 = clock()
        await asyncio.sleep(MONITOR_SLEEP)
        lags.append(clock() - t0 - MONITOR_SLEEP)


async def _drive(work: Callable[[], Awaitable[None]], tasks: int, seconds: float) -> dict[str, Any]:
    # Warm up (first gather creates the writer thread, the connection, the schema).
    await asyncio.gather(*(work() for _ in range(tasks)))
    lags: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor(stop, lags))
    await asyncio.sleep(0.01)  # let the monitor start
    lags.clear()
    rounds = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        await asyncio.gather(*(work() for _ in range(tasks)))
        rounds += 1
    elapsed = time.perf_counter() - t0
    stop.set()
    await monitor
    return {"runs": rounds * tasks, "seconds": elapsed, "lags": lags}


def _make_work(awaits: int) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        for _ in range(awaits):
            await asyncio.sleep(0)

    return work


def stall_once(tracked: bool, db: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = _make_work(args.awaits)
    tracker = _tracker(db) if tracked else None
    try:
        if tracker is not None:
            work = tracker.with_run("skill")(work)
        result = asyncio.run(_drive(work, args.tasks, args.seconds))
        if tracker is not None:
            t0 = time.perf_counter()
            drained = tracker.flush(FLUSH_TIMEOUT)
            result["flush_seconds"] = time.perf_counter() - t0
            stats = tracker.stats()
            result["dropped"] = stats.dropped
            result["committed"] = stats.committed
            if not drained:
                raise RuntimeError("flush did not drain")
            # every run of the timed rounds and of the warm-up round is in the store
            result["missing"] = result["runs"] + args.tasks - _finished_rows(tracker)
            # of those, rows left "running" (their finish was dropped): phantom open runs
            result["stuck_open"] = _open_rows(tracker)
    finally:
        if tracker is not None:
            tracker.close()
    return result


def stall(args: argparse.Namespace, tmp: Path, quiet: bool) -> dict[str, Any]:
    modes = ("untracked", "tracked")
    pooled: dict[str, dict[str, Any]] = {
        m: {
            "runs": 0,
            "seconds": 0.0,
            "lags": [],
            "dropped": 0,
            "missing": 0,
            "stuck_open": 0,
            "flush_seconds": [],
        }
        for m in modes
    }
    for rep in range(args.repeat):
        order = modes if rep % 2 == 0 else modes[::-1]
        for mode in order:
            r = stall_once(mode == "tracked", tmp / f"stall-{rep}.db", args)
            p = pooled[mode]
            p["runs"] += r["runs"]
            p["seconds"] += r["seconds"]
            p["lags"].extend(r["lags"])
            p["dropped"] += r.get("dropped", 0)
            p["missing"] += r.get("missing", 0)
            p["stuck_open"] += r.get("stuck_open", 0)
            if "flush_seconds" in r:
                p["flush_seconds"].append(r["flush_seconds"])
            if not quiet:
                print(
                    f"  repeat {rep + 1}/{args.repeat} {mode:<9} "
                    f"max lag {max(r['lags']) * 1e3:7.2f} ms",
                    file=sys.stderr,
                )
    out: dict[str, Any] = {}
    for mode, p in pooled.items():
        lags_ms = [x * 1e3 for x in p["lags"]]
        out[mode] = {
            "runs": p["runs"],
            "runs_per_s": p["runs"] / p["seconds"],
            "samples": len(lags_ms),
            "lag_p50_ms": percentile(lags_ms, 50),
            "lag_p99_ms": percentile(lags_ms, 99),
            "lag_p999_ms": percentile(lags_ms, 99.9),
            "lag_max_ms": max(lags_ms, default=0.0),
            "lag_mean_ms": sum(lags_ms) / len(lags_ms) if lags_ms else 0.0,
            "dropped": p["dropped"],
            "missing_rows": p["missing"],
            "lost_pct": 100 * p["missing"] / (p["runs"] + args.tasks * args.repeat),
            "stuck_open_rows": p["stuck_open"],
            "final_flush_s": median(p["flush_seconds"]) if p["flush_seconds"] else None,
        }
    return out


def print_stall(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"(f) event-loop stall: {args.tasks} concurrent tasks x {args.awaits} awaits, "
        f"{args.seconds:g}s x {args.repeat} repeats per mode; monitor sleeps "
        f"{MONITOR_SLEEP * 1e3:g} ms, lag = actual - requested"
    )
    header = (
        f"{'mode':<10} {'runs':>9} {'runs/s':>9} {'samples':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'p99.9':>7} {'max ms':>7} {'dropped':>8} {'missing':>8} {'lost %':>6} "
        f"{'open':>6} {'flush s':>8}"
    )
    print(header)
    print("-" * len(header))
    for mode, r in result.items():
        flush = "-" if r["final_flush_s"] is None else f"{r['final_flush_s']:.3f}"
        print(
            f"{mode:<10} {r['runs']:>9} {r['runs_per_s']:>9,.0f} {r['samples']:>8} "
            f"{r['lag_p50_ms']:>7.2f} {r['lag_p99_ms']:>7.2f} {r['lag_p999_ms']:>7.2f} "
            f"{r['lag_max_ms']:>7.2f} {r['dropped']:>8} {r['missing_rows']:>8} "
            f"{r['lost_pct']:>6.1f} {r['stuck_open_rows']:>6} {flush:>8}"
        )
    t, u = result["tracked"], result["untracked"]
    print(
        f"tracked - untracked: p99 {t['lag_p99_ms'] - u['lag_p99_ms']:+.2f} ms, "
        f"max {t['lag_max_ms'] - u['lag_max_ms']:+.2f} ms; throughput "
        f"{t['runs_per_s'] / u['runs_per_s']:.2f}x of untracked"
    )
    print(
        "dropped: commands refused by the full queue; missing: runs not finished in the "
        "store after the final flush\n(lost %: of all tracked runs); open: of those, rows "
        "left 'running' because their finish was dropped;\nflush s: time the writer needed "
        "to drain after the loop ended (not part of the loop)."
    )


# -- (g) memory -----------------------------------------------------------------------


def memory(args: argparse.Namespace, tmp: Path, quiet: bool) -> dict[str, Any]:
    def noop() -> None:
        return None

    gc.collect()
    cold = rss_kib()  # before the tracker exists: what tracking costs in total
    tracker = _tracker(tmp / "memory.db", args.queue_size)
    points: list[dict[str, Any]] = []
    try:
        tracked = tracker.with_run("skill")(noop)
        for _ in range(args.memory_warmup):
            tracked()
        tracker.flush(FLUSH_TIMEOUT)
        gc.collect()
        base = rss_kib()  # warm: connection open, queue has been full once
        step = max(1, args.memory_runs // args.memory_points)
        done = 0
        t0 = time.perf_counter()

        def point(label: str) -> None:
            stats = tracker.stats()
            rss = rss_kib()
            row = {
                "runs": done,
                "label": label,
                "seconds": time.perf_counter() - t0,
                "rss_mib": rss / 1024,
                "growth_mib": (rss - base) / 1024,
                "growth_from_cold_mib": (rss - cold) / 1024,
                "anon_mib": (status_kib("RssAnon") or 0) / 1024,
                "queued": stats.queued,
                "committed": stats.committed,
                "dropped": stats.dropped,
            }
            points.append(row)
            if not quiet:
                print(
                    f"  {label:<12} {done:>9} runs  {row['seconds']:6.1f}s  "
                    f"RSS {row['rss_mib']:7.1f} MiB  growth {row['growth_mib']:+6.2f} MiB "
                    f"(from cold {row['growth_from_cold_mib']:+6.2f})  "
                    f"anon {row['anon_mib']:6.1f} MiB  queued {stats.queued:>6}  "
                    f"dropped {stats.dropped}",
                    flush=True,
                )

        point("baseline")
        while done < args.memory_runs:
            size = min(step, args.memory_runs - done)
            for _ in range(size):
                tracked()
            done += size
            point("running")
        tracker.flush(FLUSH_TIMEOUT)
        gc.collect()
        point("flushed+gc")
        peak = status_kib("VmHWM")
        stats = tracker.stats()
        rows = _finished_rows(tracker)
    finally:
        tracker.close()
    growth = [p["growth_mib"] for p in points]
    from_cold = [p["growth_from_cold_mib"] for p in points]
    return {
        "runs": args.memory_runs,
        "warmup": args.memory_warmup,
        "queue_size": args.queue_size,
        "cold_rss_mib": cold / 1024,
        "baseline_rss_mib": base / 1024,
        "max_growth_mib": max(growth),
        "final_growth_mib": growth[-1],
        "max_growth_from_cold_mib": max(from_cold),
        "peak_rss_mib": None if peak is None else peak / 1024,
        "committed": stats.committed,
        "dropped": stats.dropped,
        "rows_in_store": rows,
        "seconds": points[-1]["seconds"],
        "limit_mib": args.max_growth_mib,
        "ok": max(growth) <= args.max_growth_mib and stats.dropped == 0,
        "points": points,
    }


def print_memory(result: dict[str, Any]) -> None:
    queue = "default" if result["queue_size"] is None else f"{result['queue_size']:,}"
    print(
        f"(g) memory: {result['runs']:,} tracked runs after {result['warmup']:,} warm-up runs, "
        f"async writer (queue size {queue}), {result['seconds']:.1f}s"
    )
    print(
        f"RSS before the tracker existed {result['cold_rss_mib']:.1f} MiB, after warm-up "
        f"{result['baseline_rss_mib']:.1f} MiB, peak {result['peak_rss_mib'] or 0:.1f} MiB"
    )
    print(
        f"growth over the runs (from warm-up): max {result['max_growth_mib']:+.2f} MiB, "
        f"after flush+gc {result['final_growth_mib']:+.2f} MiB; "
        f"from cold: max {result['max_growth_from_cold_mib']:+.2f} MiB"
    )
    print(
        f"committed {result['committed']:,} commands, dropped {result['dropped']}, "
        f"rows in store {result['rows_in_store']:,}"
    )
    verdict = "PASS" if result["ok"] else "FAIL"
    print(
        f"[{verdict}] RSS growth over the runs within {result['limit_mib']:g} MiB "
        f"(max {result['max_growth_mib']:+.2f} MiB) and nothing dropped"
    )


# -- main -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("stall", "memory"), help="run one part only")
    parser.add_argument("--seconds", type=float, default=3.0, help="(f) seconds per mode")
    parser.add_argument("--tasks", type=int, default=1_000, help="(f) concurrent coroutines")
    parser.add_argument("--awaits", type=int, default=3, help="(f) sleep(0) per coroutine")
    parser.add_argument("--repeat", type=int, default=2, help="(f) repeats per mode")
    parser.add_argument("--memory-runs", type=int, default=200_000, help="(g) tracked runs")
    parser.add_argument("--memory-warmup", type=int, default=20_000, help="(g) before baseline")
    parser.add_argument("--memory-points", type=int, default=10, help="(g) RSS samples")
    parser.add_argument(
        "--max-growth-mib", type=float, default=5.0, help="(g) the 'a few MB' limit"
    )
    parser.add_argument(
        "--queue-size", type=int, help="(g) the writer's queue bound (default: exectrack's)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when (g) fails")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    quiet = args.json == "-"

    payload: dict[str, Any] = {"benchmark": "stall_and_memory", "environment": environment()}
    payload["settings"] = {k: v for k, v in vars(args).items() if k not in ("json", "check")}
    with tempfile.TemporaryDirectory(prefix="exectrack-bench-") as tmp:
        # Memory first: its "cold" baseline must not include what (f) left in the heap.
        if args.only in (None, "memory"):
            payload["memory"] = memory(args, Path(tmp), quiet)
            if not quiet:
                print_memory(payload["memory"])
        if args.only in (None, "stall"):
            if not quiet and "memory" in payload:
                print()
            payload["stall"] = stall(args, Path(tmp), quiet)
            if not quiet:
                print_stall(payload["stall"], args)
    if args.json:
        write_json(args.json, payload)
    failed = "memory" in payload and not payload["memory"]["ok"]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())

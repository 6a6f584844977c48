"""Does tracking block the event loop? 1,000 concurrent tracked coroutines at a paced
load, the loop's worst stall measured tracked and untracked in the same run.

Each of ``--tasks`` coroutines loops: a tracked ``async def`` (three ``await
asyncio.sleep(0)``), then a random pause of ``--pause`` ms on average, so the loop is
busy but not saturated (1,000 tasks / 100 ms = ~10,000 tracked runs/s). A monitor task
sleeps 0.5 ms in a loop and records how late each wakeup is: that lateness is the
longest time the loop could not run a ready callback, whoever held it (the loop's own
callbacks or the writer thread holding the GIL). Untracked and tracked alternate over
``--repeat`` rounds. Under saturation (no pause) see ``stall_and_memory.py``.

    .venv/bin/python bench/loop_stall.py [--tasks 1000] [--pause 100] [--seconds 5]
        [--repeat 3] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, percentile, sqlite_url, write_json
from exectrack import ExecutionTracker

MONITOR_SLEEP = 0.0005


async def _monitor(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(MONITOR_SLEEP)
        lags.append(time.perf_counter() - t0 - MONITOR_SLEEP)


async def _worker(
    work: Callable[[], Awaitable[None]], stop: asyncio.Event, pause: float, count: list[int]
) -> None:
    rng = random.Random()
    await asyncio.sleep(rng.uniform(0, 2 * pause))  # spread the starts
    while not stop.is_set():
        await work()
        count[0] += 1
        await asyncio.sleep(rng.uniform(0, 2 * pause))


async def _round(work: Callable[[], Awaitable[None]], args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    lags: list[float] = []
    count = [0]
    pause = args.pause / 1000
    workers = [asyncio.create_task(_worker(work, stop, pause, count)) for _ in range(args.tasks)]
    await asyncio.sleep(2 * pause)  # warm-up: every worker running
    count[0] = 0
    monitor = asyncio.create_task(_monitor(stop, lags))
    t0 = time.perf_counter()
    await asyncio.sleep(args.seconds)
    stop.set()
    elapsed = time.perf_counter() - t0
    await monitor
    await asyncio.gather(*workers)
    return {"runs": count[0], "seconds": elapsed, "lags_ms": [x * 1000 for x in lags]}


def _work() -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    return work


def one(tracked: bool, args: argparse.Namespace, tmp: Path, k: int) -> dict[str, Any]:
    work = _work()
    tracker = None
    if tracked:
        url = sqlite_url(tmp / f"stall{k}.db", synchronous="normal", busy_timeout_ms=5000)
        tracker = ExecutionTracker(url, strict=False)
        work = tracker.with_run("skill")(work)
    result = asyncio.run(_round(work, args))
    if tracker is not None:
        tracker.flush(60)
        stats = tracker.stats()
        result["dropped"] = stats.dropped
        result["stored"] = tracker.run_stats().total
        tracker.close()
    return result


def writer_segment(batch: int = 1000, repeat: int = 50) -> dict[str, float]:
    """The writer's longest stretch of pure Python (holding the GIL, so the loop
    cannot run): folding a full batch, then building one multi-row statement."""
    from exectrack._model import RunStatus, new_run_id
    from exectrack.stores import FinishRun, NewRun
    from exectrack.stores._batch import fold
    from exectrack.stores._sql import INSERT_CHUNK
    from exectrack.stores.sqlite import SQLiteStore

    cmds: list[NewRun | FinishRun] = []
    for i in range(batch // 2):
        rid = new_run_id()
        cmds.append(NewRun(rid, "skill", i, RunStatus.RUNNING, "noop", owner="o:1:2"))
        cmds.append(FinishRun(rid, RunStatus.SUCCESS, i + 5, 0.1))
    store = SQLiteStore(":memory:")
    fold_s = params_s = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = fold(cmds)
        t1 = time.perf_counter()
        assert plan is not None
        [p for r in plan.rows[:INSERT_CHUNK] for p in store._row_params(r)]
        t2 = time.perf_counter()
        fold_s, params_s = min(fold_s, t1 - t0), min(params_s, t2 - t1)
    return {"fold_ms": fold_s * 1000, "params_ms": params_s * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--pause", type=float, default=100.0, help="mean pause, ms")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    add_json_flag(parser)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeat):
            for tracked in (False, True):
                mode = "tracked" if tracked else "untracked"
                print(f"round {k + 1}/{args.repeat} {mode}", file=sys.stderr)
                r = one(tracked, args, Path(tmp), k)
                lags = r.pop("lags_ms")
                rows.append(
                    {
                        "mode": "tracked" if tracked else "untracked",
                        "round": k + 1,
                        "runs_per_s": r["runs"] / r["seconds"],
                        "samples": len(lags),
                        "p50_ms": percentile(lags, 50),
                        "p99_ms": percentile(lags, 99),
                        "p999_ms": percentile(lags, 99.9),
                        "max_ms": max(lags),
                        "dropped": r.get("dropped", 0),
                        "stored": r.get("stored"),
                    }
                )
    header = f"{'mode':10} {'round':>5} {'runs/s':>9} {'samples':>8} {'p50 ms':>7} "
    header += f"{'p99 ms':>7} {'p99.9':>7} {'max ms':>7} {'dropped':>8}"
    if args.json != "-":
        print(f"{args.tasks} tasks, mean pause {args.pause:g} ms, {args.seconds:g} s per round")
        print(header)
        for row in rows:
            print(
                f"{row['mode']:10} {row['round']:>5} {row['runs_per_s']:>9,.0f} "
                f"{row['samples']:>8} {row['p50_ms']:>7.3f} {row['p99_ms']:>7.3f} "
                f"{row['p999_ms']:>7.3f} {row['max_ms']:>7.3f} {row['dropped']:>8}"
            )
        for mode in ("untracked", "tracked"):
            mine = [r for r in rows if r["mode"] == mode]
            print(
                f"{mode:10} worst stall over all rounds: {max(r['max_ms'] for r in mine):.3f} ms,"
                f" worst p99.9: {max(r['p999_ms'] for r in mine):.3f} ms"
            )
    segment = writer_segment()
    if args.json != "-":
        print(
            f"writer's longest GIL hold (pure Python): fold of a full 1,000-command batch "
            f"{segment['fold_ms']:.3f} ms + one {50}-row statement's parameters "
            f"{segment['params_ms']:.3f} ms"
        )
    if args.json is not None:
        payload = {"environment": environment(), "args": vars(args), "rows": rows}
        write_json(args.json, {**payload, "writer_segment": segment})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

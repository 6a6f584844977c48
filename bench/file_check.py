"""What the SQLite store's file check costs: the ``stat`` before each transaction that
notices a database file deleted or replaced while in use.

Measured in one process, on a fresh file in a temporary directory:

  stat     ``os.stat`` of the database path (the system call the check makes)
  check    the store's whole check (``stat`` plus comparing device and inode)
  sync     one run through the synchronous store path (autocommit INSERT, then the
           guarded UPDATE: two checks), with the check and with it replaced by a
           no-op (the path before the check existed); alternating, ``--repeat`` times

    .venv/bin/python bench/file_check.py [--calls 200000] [--runs 1000] [--repeat 21]
        [--synchronous off] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, median, write_json
from exectrack._model import RunStatus, new_run_id, now_us
from exectrack.stores import FinishRun, NewRun
from exectrack.stores.sqlite import SQLiteStore


def per_call_us(fn: Callable[[], object], calls: int, repeat: int) -> dict[str, float]:
    """Median and min µs per call over ``repeat`` timings of ``calls`` calls."""
    times = [t / calls * 1e6 for t in timeit.repeat(fn, number=calls, repeat=repeat)]
    return {"median_us": median(times), "min_us": min(times)}


def sync_runs_us(store: SQLiteStore, runs: int) -> float:
    """µs per run of ``runs`` create + finish pairs, each its own autocommit write."""
    started = time.perf_counter()
    for _ in range(runs):
        run_id, at = new_run_id(), now_us()
        store.create(NewRun(run_id, "bench", at))
        store.finish(FinishRun(run_id, RunStatus.SUCCESS, at + 1))
    return (time.perf_counter() - started) / runs * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per stat/check timing")
    parser.add_argument("--runs", type=int, default=1_000, help="runs per sync timing")
    parser.add_argument("--repeat", type=int, default=21, help="repeats; median and min reported")
    parser.add_argument(
        "--synchronous", default="off", help="the store's synchronous pragma (default: off)"
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="exectrack-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "runs.db", synchronous=args.synchronous)
        store.migrate()
        sync_runs_us(store, args.runs // 10)  # warm up: connection, statement cache
        path = os.path.abspath(Path(tmp) / "runs.db")
        stat = per_call_us(lambda: os.stat(path), args.calls, args.repeat)
        check = per_call_us(store._check_file, args.calls, args.repeat)
        with_check: list[float] = []
        without: list[float] = []
        real_check = store._check_file
        for rep in range(args.repeat):  # alternate, and swap which goes first
            for enabled in (rep % 2 == 0, rep % 2 == 1):
                store._check_file = real_check if enabled else (lambda: None)  # type: ignore[method-assign]
                (with_check if enabled else without).append(sync_runs_us(store, args.runs))
        store.close()

    sync = {
        "with_check_us": median(with_check),
        "without_check_us": median(without),
        # each repeat's pair ran back to back: the median of their differences is the
        # figure least moved by the machine's load drifting between repeats
        "difference_us": median([w - o for w, o in zip(with_check, without, strict=True)]),
        "with_check_min_us": min(with_check),
        "without_check_min_us": min(without),
    }
    if args.json != "-":
        print(f"os.stat:              {stat['median_us']:6.2f} us/call (min {stat['min_us']:.2f})")
        print(
            f"store file check:     {check['median_us']:6.2f} us/call (min {check['min_us']:.2f})"
        )
        print(
            f"sync run, with check: {sync['with_check_us']:6.1f} us/run "
            f"(min {sync['with_check_min_us']:.1f})"
        )
        print(
            f"sync run, no check:   {sync['without_check_us']:6.1f} us/run "
            f"(min {sync['without_check_min_us']:.1f})"
        )
        print(
            f"difference (2 checks per run, median of pairs): {sync['difference_us']:+.1f} us/run"
        )
    if args.json:
        payload: dict[str, Any] = {
            "benchmark": "file_check",
            "environment": environment(),
            "settings": vars(args),
            "stat": stat,
            "check": check,
            "sync": sync,
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a commit stall lose runs? Tracked runs offered at a steady rate while one
commit stalls, and what a queued run costs in memory.

A tracker on a fresh SQLite file whose store holds one commit for ``--stall``
seconds (a disk flushing other pages, say), ``--stall-at`` seconds into the run. A
producer offers tracked no-op runs at ``--rate`` runs/s (paced: it waits for its
schedule, never falls behind silently: the rate it achieved is printed) for
``--seconds`` seconds, from a plain thread or from an event loop (which never waits
for room). Reported: runs offered, the rate achieved, runs dropped, runs stored, the
deepest the queue got, and the bytes each queued entry held (tracemalloc, measured apart:
20,000 short runs queued behind a commit held open, traced memory over entries).

    .venv/bin/python bench/commit_stall.py [--rate 70000] [--stall 1.0] [--seconds 3]
        [--caller thread|loop] [--queue-size 100000] [--json [PATH]]

``--queue-size 20000`` shows what the old 20,000-command queue did at this rate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, sqlite_url, write_json
from exectrack import ExecutionTracker
from exectrack.stores import ApplyResult, Command, open_store
from exectrack.testing import FailingStore


class StallingStore(FailingStore):
    """A real SQLite store whose next ``apply`` after ``arm()`` takes ``seconds``."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(open_store(url), fail=set())
        self.seconds = seconds
        self.armed = threading.Event()
        self.stalling = threading.Event()
        self.done = threading.Event()

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        if self.armed.is_set() and not self.done.is_set():
            self.stalling.set()
            time.sleep(self.seconds)
            self.done.set()
        return super().apply(commands)


def offer(t: ExecutionTracker, args: argparse.Namespace, store: StallingStore) -> dict[str, Any]:
    @t.with_run("skill", "offered")
    def noop() -> None:
        return None

    @t.with_run("skill", "offered")
    async def anoop() -> None:
        return None

    interval = 1.0 / args.rate
    deepest = 0

    def watch_queue() -> None:
        nonlocal deepest
        while not store.done.is_set():
            deepest = max(deepest, t.stats().queued)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch_queue, daemon=True)
    watcher.start()
    started = time.perf_counter()
    offered = 0

    def due() -> float:
        return started + offered * interval

    async def loop_producer() -> None:
        nonlocal offered
        while (now := time.perf_counter()) - started < args.seconds:
            if not store.armed.is_set() and now - started >= args.stall_at:
                store.armed.set()
            if now >= due():
                await anoop()
                offered += 1
            elif due() - now > 0.001:
                await asyncio.sleep(0)

    if args.caller == "loop":
        asyncio.run(loop_producer())
    else:
        while (now := time.perf_counter()) - started < args.seconds:
            if not store.armed.is_set() and now - started >= args.stall_at:
                store.armed.set()
            if now >= due():
                noop()
                offered += 1
    elapsed = time.perf_counter() - started
    watcher.join(args.stall + 30)
    assert t.flush(300), "the queue did not drain"
    stats = t.stats()
    stored = t.run_stats(source_ref="offered").total
    return {
        "caller": args.caller,
        "queue_size": args.queue_size,
        "offered": offered,
        "rate": offered / elapsed,
        "stall_s": args.stall,
        "stalled": store.stalling.is_set(),
        "dropped": stats.dropped,
        "stored": stored,
        "deepest_queue": deepest,
    }


def bytes_per_entry(url: str, runs: int) -> float:
    """Traced memory per queued entry: ``runs`` short runs (each one entry, its start
    and finish folded) queued behind a commit that does not return until measured."""
    store = StallingStore(url, 0.0)
    gate = threading.Event()
    waiting = threading.Event()
    original = store.apply

    def held(commands: Sequence[Command]) -> ApplyResult:
        waiting.set()
        gate.wait()
        return original(commands)

    store.apply = held  # type: ignore[method-assign]
    t = ExecutionTracker(store, strict=False)

    @t.with_run("skill", "queued")
    def noop() -> None:
        return None

    noop()  # the writer takes this one and waits at the gate
    waiting.wait(30)
    queued = t.stats().queued
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(runs):
        noop()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    entries = t.stats().queued - queued
    gate.set()
    t.close()
    return (after - before) / entries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=70_000.0)
    parser.add_argument("--stall", type=float, default=1.0)
    parser.add_argument("--stall-at", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--caller", choices=("thread", "loop"), default="thread")
    parser.add_argument("--queue-size", type=int, default=100_000)
    add_json_flag(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_url(Path(tmp) / "stall.db", synchronous="normal", busy_timeout_ms=5000)
        store = StallingStore(url, args.stall)
        t = ExecutionTracker(store, strict=False, queue_size=args.queue_size)
        print(f"offering {args.rate:,.0f} runs/s for {args.seconds} s ...", file=sys.stderr)
        result = offer(t, args, store)
        t.close()
        result["bytes_per_queued_entry"] = bytes_per_entry(
            sqlite_url(Path(tmp) / "memory.db", synchronous="normal", busy_timeout_ms=5000),
            20_000,
        )
    if args.json != "-":
        per = result["bytes_per_queued_entry"]
        print(
            f"caller {result['caller']}, queue {result['queue_size']:,}: offered "
            f"{result['offered']:,} runs at {result['rate']:,.0f}/s with a "
            f"{result['stall_s']} s commit stall; dropped {result['dropped']:,}, stored "
            f"{result['stored']:,}; deepest queue {result['deepest_queue']:,} entries; "
            f"{'-' if per is None else f'{per:,.0f}'} bytes per queued entry"
        )
    if args.json is not None:
        write_json(args.json, {"benchmark": "commit_stall", "environment": environment(), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

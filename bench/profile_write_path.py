"""Where case (a) of write_path.py spends its time, per thread (``--durability sync``:
case (b), which has no writer thread).

Pass 1 (no profiler): wall time, and CPU time of the caller thread and of the
writer thread (read through the writer thread's CPU clock), per run.
Pass 2 (cProfile): one profile of the caller thread (the timed loop only) and one of
the writer thread (its whole life; its idle waits show up as lock ``acquire`` time).
cProfile slows pure-Python code several times over, so read its numbers as shares,
not as costs; pass 1 gives the costs.

    .venv/bin/python bench/profile_write_path.py [--runs 30000] [--top 25]
        [--sort tottime] [--save DIR] [--durability async|sync]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from _common import WRITER_THREAD, sqlite_url
from exectrack import ExecutionTracker

_writer_profiles: list[cProfile.Profile] = []
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    """Thread.run, under a profiler when this is exectrack's writer thread."""
    if self.name != WRITER_THREAD:
        _original_run(self)
        return
    profile = cProfile.Profile()
    _writer_profiles.append(profile)
    profile.enable()
    try:
        _original_run(self)
    finally:
        profile.disable()


def noop() -> None:
    return None


def _writer_clock() -> Callable[[], float]:
    """The CPU clock of the live writer thread, in seconds."""
    for thread in threading.enumerate():
        if thread.name == WRITER_THREAD and thread.ident is not None:
            clock = time.pthread_getcpuclockid(thread.ident)
            return lambda: time.clock_gettime(clock)
    raise RuntimeError(f"no {WRITER_THREAD!r} thread is running")


Durability = Literal["async", "sync"]


def _tracked(db: Path, durability: Durability) -> tuple[ExecutionTracker, Callable[[], None]]:
    tracker = ExecutionTracker(
        sqlite_url(db, synchronous="normal", busy_timeout_ms=5000),
        durability=durability,
        enabled=True,
        strict=False,
    )
    return tracker, tracker.with_run("skill")(noop)


def measure(db: Path, runs: int, warmup: int, durability: Durability) -> dict[str, float]:
    tracker, tracked = _tracked(db, durability)
    try:
        for _ in range(warmup):
            tracked()
        tracker.flush()
        writer_cpu = _writer_clock() if durability == "async" else (lambda: 0.0)
        gc.collect()
        w0, c0, t0 = writer_cpu(), time.thread_time(), time.perf_counter()
        for _ in range(runs):
            tracked()
        caller_loop = time.perf_counter() - t0
        caller_cpu = time.thread_time() - c0
        tracker.flush()
        wall = time.perf_counter() - t0
        writer = writer_cpu() - w0
        stats = tracker.stats()
    finally:
        tracker.close()
    per = 1e6 / runs
    return {
        "wall_us": wall * per,
        "caller_loop_us": caller_loop * per,
        "caller_cpu_us": caller_cpu * per,
        "writer_cpu_us": writer * per,
        "committed": stats.committed,
        "dropped": stats.dropped,
    }


def profile(
    db: Path, runs: int, warmup: int, durability: Durability
) -> tuple[cProfile.Profile, cProfile.Profile | None]:
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    try:
        tracker, tracked = _tracked(db, durability)
        try:
            for _ in range(warmup):
                tracked()
            tracker.flush()
            caller = cProfile.Profile()
            caller.enable()
            for _ in range(runs):
                tracked()
            caller.disable()
            tracker.flush()
        finally:
            tracker.close()
    finally:
        threading.Thread.run = _original_run  # type: ignore[method-assign]
    if durability == "async" and not _writer_profiles:
        raise RuntimeError("the writer thread was not profiled")
    return caller, _writer_profiles[-1] if _writer_profiles else None


def show(title: str, prof: cProfile.Profile, sort: str, top: int, save: Path | None) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(save / f"{title.split(maxsplit=1)[0]}.prof")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--top", type=int, default=25, help="rows per profile")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--save", type=Path, help="also write caller.prof / writer.prof here")
    parser.add_argument("--durability", choices=("async", "sync"), default="async")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="exectrack-profile-") as tmp:
        db = Path(tmp) / "measure.db"
        costs: dict[str, Any] = measure(db, args.runs, args.warmup, args.durability)
        db = Path(tmp) / "profile.db"
        caller, writer = profile(db, args.runs, args.warmup, args.durability)

    case = "a" if args.durability == "async" else "b"
    print(f"case ({case}), durability={args.durability}, {args.runs} runs, no profiler:")
    print(f"  wall, until flush() returned  {costs['wall_us']:7.2f} us/run")
    print(f"  caller loop (wall)            {costs['caller_loop_us']:7.2f} us/run")
    print(f"  caller thread CPU             {costs['caller_cpu_us']:7.2f} us/run")
    print(f"  writer thread CPU             {costs['writer_cpu_us']:7.2f} us/run")
    print(f"  committed {costs['committed']}, dropped {costs['dropped']}")
    show("caller thread (timed loop)", caller, args.sort, args.top, args.save)
    if writer is not None:
        show("writer thread (whole life)", writer, args.sort, args.top, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the lease heartbeat costs: tracked-run throughput with the heartbeat thread
off and on, in the same run.

Each case opens ``--open`` long-lived runs (so every heartbeat has rows to renew),
then times ``--runs`` tracked calls of a no-op on the default write path, flushing
before the clock stops. Cases: heartbeat off (``lease=None``: no monitor thread), the
default (30 s lease, a heartbeat every 10 s), and an aggressive heartbeat every
``--fast`` seconds (a statement renewing every open run each time), to show the
price when heartbeats really happen during the measurement.

    .venv/bin/python bench/heartbeat.py [--runs 30000] [--open 100] [--fast 0.01]
        [--repeat 5] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, median, sqlite_url, write_json
from exectrack import ExecutionTracker


def _case(
    db: Path, args: argparse.Namespace, lease: float | None, beat: float | None
) -> dict[str, Any]:
    url = sqlite_url(db, synchronous="normal", busy_timeout_ms=5000)
    tracker = ExecutionTracker(
        url, strict=False, lease=lease, heartbeat_interval=beat, enabled=True
    )
    held = [tracker.start("bench", f"held-{i}") for i in range(args.open)]
    noop = tracker.with_run("skill")(lambda: None)
    for _ in range(1000):
        noop()
    tracker.flush(60)
    beats_before = tracker.monitor.heartbeats if tracker.monitor else 0
    t0 = time.perf_counter()
    for _ in range(args.runs):
        noop()
    tracker.flush(60)
    seconds = time.perf_counter() - t0
    beats = (tracker.monitor.heartbeats if tracker.monitor else 0) - beats_before
    for h in held:
        h.finish_success()
    dropped = tracker.stats().dropped
    tracker.close()
    return {"us_per_run": seconds / args.runs * 1e6, "heartbeats": beats, "dropped": dropped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30_000)
    parser.add_argument("--open", type=int, default=100, help="long-lived open runs")
    parser.add_argument("--fast", type=float, default=0.01, help="aggressive interval, s")
    parser.add_argument("--repeat", type=int, default=5)
    add_json_flag(parser)
    args = parser.parse_args(argv)
    cases = {
        "off": (None, None),
        "default (10 s)": (30.0, None),
        f"every {args.fast:g} s": (max(args.fast * 3, 1.0), args.fast),
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeat):
            for name, (lease, beat) in cases.items():
                db = Path(tmp) / f"{k}-{len(samples[name])}-{name[:3]}.db"
                samples[name].append(_case(db, args, lease, beat))
    base = median([s["us_per_run"] for s in samples["off"]])
    rows = []
    for name, runs in samples.items():
        us = median([s["us_per_run"] for s in runs])
        rows.append(
            {
                "case": name,
                "us_per_run": us,
                "runs_per_s": 1e6 / us,
                "ratio_to_off": us / base,
                "heartbeats": median([s["heartbeats"] for s in runs]),
                "dropped": sum(s["dropped"] for s in runs),
            }
        )
    if args.json != "-":
        print(
            f"{args.runs} tracked no-op runs, {args.open} runs held open, median of {args.repeat}"
        )
        print(
            f"{'heartbeat':16} {'us/run':>8} {'runs/s':>9} {'x off':>6} {'beats':>6} {'dropped':>8}"
        )
        for r in rows:
            print(
                f"{r['case']:16} {r['us_per_run']:>8.2f} {r['runs_per_s']:>9,.0f} "
                f"{r['ratio_to_off']:>6.3f} {r['heartbeats']:>6.0f} {r['dropped']:>8}"
            )
    if args.json is not None:
        write_json(args.json, {"environment": environment(), "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What tracking adds to a streamed request served by uvicorn.

One uvicorn process (a subprocess, so the client does not share its GIL) serves four
routes that stream the same chunks from an async generator:

- ``plain``: no exectrack at all (the baseline);
- ``middleware``: the generator untracked, behind ``ExectrackMiddleware``;
- ``with_run``: the generator is ``@exectrack.with_run("chat")``, no middleware;
- ``tracked``: both, as the README recommends.

The client (httpx, one keep-alive connection) sends the requests in blocks of
``--block`` per mode, the modes rotating (plain, middleware, with_run, tracked,
then middleware, with_run, tracked, plain, ...), so load and noise fall on every
mode alike while a block's writer work stays in its own block, and times each
request from sending it to its last byte. Reported per mode: p50, p95
and mean latency, and the difference to ``plain``. The tracked runs go to a fresh
SQLite file through the default (async) write path; afterwards the script checks
that every tracked request left exactly one ``success`` run.

``--profile`` runs the server under cProfile and prints where its time went (the
top functions by own time, per request over all modes). ``--store memory`` or
``off`` and ``--linger`` (the writer's linger in seconds) take the cost apart.

    .venv/bin/python bench/asgi_latency.py
    .venv/bin/python bench/asgi_latency.py --requests 1000 --chunks 8 --profile
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, median, percentile, write_json

MODES = ("plain", "middleware", "with_run", "tracked")


# -- the server (runs in the subprocess) -----------------------------------------------


def serve(db: str, chunks: int, profile: str | None, store: str, linger: float | None) -> None:
    import asyncio
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    import exectrack
    from exectrack.integrations.asgi import ExectrackMiddleware

    url = {"file": f"sqlite:///{db}", "memory": "sqlite:///:memory:"}.get(store, f"sqlite:///{db}")
    tracker = exectrack.ExecutionTracker(url, enabled=store != "off")
    if linger is not None and tracker._writer is not None:
        tracker._writer._linger = linger  # an experiment knob, not an API
    exectrack.set_tracker(tracker)
    payload = [f"token {i:04d} ".encode() for i in range(chunks)]

    async def tokens() -> Any:
        for chunk in payload:
            yield chunk
            await asyncio.sleep(0)  # a model yields control between tokens

    tracked_tokens = tracker.with_run("chat", "bench")(tokens)

    def app_for(gen: Any) -> Starlette:
        async def endpoint(request: Any) -> StreamingResponse:
            return StreamingResponse(gen(), media_type="text/plain")

        return Starlette(routes=[Route("/{mode}", endpoint)])

    apps = {
        "plain": app_for(tokens),
        "middleware": ExectrackMiddleware(app_for(tokens)),
        "with_run": app_for(tracked_tokens),
        "tracked": ExectrackMiddleware(app_for(tracked_tokens)),
    }

    async def router(scope: Any, receive: Any, send: Any) -> None:
        await apps[scope["path"].strip("/")](scope, receive, send)

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; with proto 0
    # Nagle and delayed ACKs add ~40 ms to every keep-alive streamed response
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        router, http="h11", lifespan="off", log_config=None, access_log=False, log_level="error"
    )
    server = uvicorn.Server(config)
    print(sock.getsockname()[1], flush=True)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT that stopped it
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        tracker.close()


# -- the client ------------------------------------------------------------------------


def run_client(
    port: int, requests: int, warmup: int, chunks: int, block: int
) -> dict[str, list[float]]:
    import httpx

    expected = sum(len(f"token {i:04d} ") for i in range(chunks))
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        def one(mode: str) -> float:
            t0 = time.perf_counter()
            response = client.get(f"/{mode}")
            body = response.content
            elapsed = time.perf_counter() - t0
            if response.status_code != 200 or len(body) != expected:
                raise SystemExit(f"{mode}: bad response {response.status_code}")
            return elapsed * 1000

        for _ in range(warmup):
            for mode in MODES:
                one(mode)
        rounds = -(-requests // block)
        for r in range(rounds):
            order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
            for mode in order:
                for _ in range(min(block, requests - r * block)):
                    latencies[mode].append(one(mode))
    return latencies


def start_server(
    db: Path, chunks: int, profile: str | None, store: str, linger: float | None
) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, __file__, "--serve", str(db), "--chunks", str(chunks), "--store", store]
    if linger is not None:
        cmd += ["--linger", str(linger)]
    if profile:
        cmd += ["--profile-out", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    import socket

    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the server did not start") from None
            time.sleep(0.05)


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def count_runs(db: Path) -> dict[str, int]:
    from exectrack import open_store
    from exectrack.query import make_filter, run_stats

    store = open_store(f"sqlite:///{db}", migrate=False)
    try:
        stats = run_stats(store, make_filter(source="chat"))
        return {str(k): v for k, v in stats.by_status.items()}
    finally:
        store.close()


def print_profile(path: str, per: int, top: int) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("tottime")
    print(f"\nserver profile: top {top} functions by own time (us per request of all modes)")
    rows = []
    for func, (_cc, nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, nc, func))
    rows.sort(reverse=True)
    for tt, nc, (file, line, name) in rows[:top]:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"  {tt / per * 1e6:8.2f} us  {nc / per:6.1f} calls  {name}  ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per mode")
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests per mode")
    parser.add_argument("--chunks", type=int, default=8, help="chunks per streamed response")
    parser.add_argument("--block", type=int, default=50, help="requests per mode in a row")
    parser.add_argument(
        "--linger",
        type=float,
        help="the writer's linger in seconds (default: exectrack's, 0.01; 0: none)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the server, print the top functions"
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    parser.add_argument(
        "--store",
        choices=["file", "memory", "off"],
        default="file",
        help="where tracked runs go: a SQLite file (default), SQLite in memory, or "
        "nowhere (tracking disabled: the wrappers' own cost)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    add_json_flag(parser)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.chunks, args.profile_out, args.store, args.linger)
        return

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.db"
        profile = str(Path(tmp) / "server.prof") if args.profile else None
        print(
            f"{args.requests} timed requests per mode ({args.warmup} warm-up), "
            f"{args.chunks} chunks each, in blocks of {args.block} ...",
            file=sys.stderr,
        )
        proc, port = start_server(db, args.chunks, profile, args.store, args.linger)
        try:
            latencies = run_client(port, args.requests, args.warmup, args.chunks, args.block)
        finally:
            stop_server(proc)
        total = args.requests + args.warmup
        if args.store == "file":
            counts = {k: v for k, v in count_runs(db).items() if v}
            expected = {"success": 2 * total}  # with_run and tracked modes
        else:
            counts = expected = {}
        results = []
        base = median(latencies["plain"])
        base95 = percentile(latencies["plain"], 95)
        for mode in MODES:
            values = latencies[mode]
            p50, p95 = median(values), percentile(values, 95)
            results.append(
                {
                    "mode": mode,
                    "requests": len(values),
                    "p50_ms": p50,
                    "p95_ms": p95,
                    "mean_ms": sum(values) / len(values),
                    "p50_extra_ms": p50 - base,
                    "p95_extra_ms": p95 - base95,
                }
            )
        payload = {
            "environment": environment(),
            "requests": args.requests,
            "chunks": args.chunks,
            "block": args.block,
            "store": args.store,
            "linger": args.linger,
            "results": results,
            "runs_by_status": counts,
            "all_recorded": counts == expected,
        }
        if args.json != "-":
            heads = ("p50 ms", "p95 ms", "mean ms", "+p50 ms", "+p95 ms")
            print(f"{'mode':<11} " + " ".join(f"{h:>8}" for h in heads))
            for r in results:
                print(
                    f"{r['mode']:<11} {r['p50_ms']:8.3f} {r['p95_ms']:8.3f} {r['mean_ms']:8.3f} "
                    f"{r['p50_extra_ms']:+8.3f} {r['p95_extra_ms']:+8.3f}"
                )
            print(f"runs stored: {counts} (expected {expected})")
            if profile:
                print_profile(profile, total * len(MODES), args.top)
        if args.json:
            write_json(args.json, payload)
        if counts != expected:
            raise SystemExit("not every tracked request left exactly one success run")


if __name__ == "__main__":
    main()

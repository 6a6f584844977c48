"""Run the demo host: the app under uvicorn on 127.0.0.1, the traffic generator, and
a periodic heartbeat task, for a while or until Ctrl-C; then stop cleanly, with no run
left open."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from exectrack import ExecutionTracker
from exectrack.demo.app import create_app
from exectrack.demo.traffic import generate

__all__ = ["DemoResult", "run_demo"]

HEARTBEAT_EVERY = 2.0


@dataclass(frozen=True, slots=True)
class DemoResult:
    url: str
    database: str
    runs: int
    open_runs: int


async def _heartbeat(tracker: ExecutionTracker) -> None:
    """A periodic task ("check the inbox"): every third check fails."""

    @tracker.with_run("heartbeat", "inbox_digest")
    async def inbox_digest(n: int) -> int:
        await asyncio.sleep(0.05)
        if n % 3 == 2:
            raise ConnectionError("the mail server did not answer")
        return n

    for n in range(1_000_000):
        with contextlib.suppress(ConnectionError):
            await inbox_digest(n)
        await asyncio.sleep(HEARTBEAT_EVERY)


def _socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def run_demo(
    tracker: ExecutionTracker,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    duration: float | None = None,
    traffic: bool = True,
    ready: Callable[[str], None] | None = None,
) -> DemoResult:
    """Serve the demo until ``duration`` seconds passed (None: until Ctrl-C or
    SIGTERM). ``ready(url)`` is called once the server listens."""
    sock = _socket(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
    config = uvicorn.Config(
        create_app(tracker), log_level="warning", timeout_graceful_shutdown=2, lifespan="off"
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                await serving  # it failed to start: raise why
                return
            await asyncio.sleep(0.01)
        if ready is not None:
            ready(url + "/")
        helpers = [asyncio.create_task(_heartbeat(tracker))]
        if traffic:
            helpers.append(asyncio.create_task(generate(url)))
        if duration is not None:

            async def stop_later() -> None:
                await asyncio.sleep(duration)
                server.should_exit = True

            helpers.append(asyncio.create_task(stop_later()))
        try:
            await serving
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        sock.close()
    tracker.flush()
    stats = tracker.run_stats()
    return DemoResult(url + "/", str(tracker.store.url), stats.total, stats.open)

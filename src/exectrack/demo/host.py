"""Run the demo host: the app under uvicorn on 127.0.0.1, the traffic generator, and
heartbeat tasks on APScheduler (one fails now and then, one always times out, one
overlaps itself), for a while or until Ctrl-C; then stop cleanly, with no run left
open."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from exectrack import ExecutionTracker
from exectrack.demo.app import create_app
from exectrack.demo.traffic import generate

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoResult:
    url: str
    database: str
    runs: int
    open_runs: int


async def inbox_digest() -> int:
    """Check the inbox: quick; every third check finds the mail server down."""
    global _checks
    _checks += 1
    await asyncio.sleep(0.05)
    if _checks % 3 == 0:
        raise ConnectionError("the mail server did not answer")
    return _checks


async def nightly_report() -> None:
    """Build a report: takes longer than its 0.5 s timeout, every time."""
    await asyncio.sleep(2)


def index_documents() -> None:
    """Re-index documents in a thread: takes longer than its interval, so the next
    due run finds it still running and is skipped."""
    time.sleep(1.5)


_checks = 0


def _heartbeat_scheduler(tracker: ExecutionTracker) -> Any:
    """An APScheduler on the server's event loop with three tracked tasks, or None
    when APScheduler (the ``heartbeat`` extra) is not installed."""
    try:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from exectrack.integrations.apscheduler import attach
    except ImportError:
        return None
    # Its job failures are the demo's point and are recorded as runs: keep them off the
    # terminal (APScheduler logs each with a traceback).
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    scheduler = AsyncIOScheduler()
    bridge = attach(scheduler, tracker)
    scheduler.add_job(inbox_digest, "interval", seconds=2, id="inbox_digest")
    scheduler.add_job(nightly_report, "interval", seconds=3, id="nightly_report")
    bridge.set_policy("nightly_report", timeout=0.5)
    scheduler.add_job(index_documents, "interval", seconds=1, id="index_documents", max_instances=1)
    return scheduler


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
        scheduler = _heartbeat_scheduler(tracker)
        if scheduler is not None:
            scheduler.start()
        helpers = []
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
            if scheduler is not None:
                scheduler.shutdown(wait=False)
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

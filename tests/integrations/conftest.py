"""Real servers for the integration tests: uvicorn (asyncio) and hypercorn (trio) in a
thread of the test process, on a free 127.0.0.1 port, stopped when the test ends."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest

from exectrack import ExecutionTracker, Run


@dataclass
class Served:
    port: int
    stop: Callable[[], None]
    stopped: threading.Event = field(default_factory=threading.Event)
    server: Any = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.005)


def ended_runs(tracker: ExecutionTracker, source: str = "chat") -> list[Run]:
    return [r for r in tracker.list_runs(source=source, limit=500).runs if r.is_terminal]


def wait_for_ended(
    tracker: ExecutionTracker, count: int = 1, timeout: float = 10.0, source: str = "chat"
) -> list[Run]:
    """The ended runs of ``source`` once there are ``count`` of them."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (runs := ended_runs(tracker, source)) and len(runs) >= count and runs,
        timeout,
        f"{count} ended {source} run(s)",
    )


@contextmanager
def uvicorn_server(app: Any, graceful: float = 0.5) -> Iterator[Served]:
    """uvicorn (h11, ASGI spec 2.3 as this uvicorn reports it) serving ``app`` in a
    thread; on exit it shuts down, cancelling what is left after ``graceful`` s."""
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; with proto 0
    # Nagle and delayed ACKs add ~40 ms to every keep-alive streamed response
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    # A factory and interface="asgi3" say what uvicorn otherwise guesses by calling the
    # app with no arguments and reading its __call__ (a wrapped __call__, as under
    # mutation testing, fools both guesses).
    config = uvicorn.Config(
        lambda: app,
        factory=True,
        interface="asgi3",
        http="h11",
        lifespan="off",
        log_config=None,
        log_level="critical",
        timeout_graceful_shutdown=graceful,
    )
    server = uvicorn.Server(config)
    served = Served(
        sock.getsockname()[1], stop=lambda: setattr(server, "should_exit", True), server=server
    )

    def run() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            served.stopped.set()

    thread = threading.Thread(target=run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or served.stopped.is_set(), 10, "uvicorn started")
        assert server.started
        yield served
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@contextmanager
def hypercorn_trio_server(app: Any, graceful: float = 0.5) -> Iterator[Served]:
    """hypercorn's trio worker serving ``app`` in a thread (Starlette under trio)."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = graceful
    config.accesslog = None
    config.errorlog = None
    ports: list[int] = []
    ready = threading.Event()
    stopped = threading.Event()
    token: list[trio.lowlevel.TrioToken] = []
    stop_event: list[trio.Event] = []

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        stop = trio.Event()
        stop_event.append(stop)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(
                    app, config, shutdown_trigger=stop.wait, task_status=task_status, mode="asgi"
                )
            )  # type: ignore[arg-type]
            ports.append(int(binds[0].rsplit(":", 1)[1]))
            ready.set()

    def run() -> None:
        try:
            trio.run(main)
        finally:
            stopped.set()
            ready.set()

    def stop() -> None:
        if token and not stopped.is_set():
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop_event[0].set, trio_token=token[0])

    thread = threading.Thread(target=run, name="hypercorn-test", daemon=True)
    thread.start()
    ready.wait(10)
    assert ports, "hypercorn did not start"
    try:
        yield Served(ports[0], stop=stop, stopped=stopped)
    finally:
        stop()
        thread.join(15)
        assert not thread.is_alive(), "hypercorn did not stop"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_tracker(request: pytest.FixtureRequest, db_url: str) -> Iterator[ExecutionTracker]:
    """A strict tracker on a SQLite file, or on a fresh schema of the test PostgreSQL
    server (skipped without ``EXECTRACK_TEST_POSTGRES_URL``, failed when
    ``EXECTRACK_REQUIRE_POSTGRES=1``)."""
    if request.param == "sqlite":
        t = ExecutionTracker(db_url, strict=True)
        yield t
        t.close()
        return
    url = os.environ.get("EXECTRACK_TEST_POSTGRES_URL", "").strip()
    if not url:
        if os.environ.get("EXECTRACK_REQUIRE_POSTGRES", "").strip() == "1":
            pytest.fail("EXECTRACK_REQUIRE_POSTGRES=1 but no EXECTRACK_TEST_POSTGRES_URL")
        pytest.skip("no EXECTRACK_TEST_POSTGRES_URL")
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    t = ExecutionTracker(f"{url}?schema={schema}", strict=True)
    try:
        yield t
    finally:
        t.close()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

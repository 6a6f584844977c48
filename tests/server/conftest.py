"""The HTTP API under test: apps over a real store (SQLite file, or PostgreSQL from
``EXECTRACK_TEST_POSTGRES_URL``), clients in-process, real servers when needed."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from exectrack import RunStatus
from exectrack._model import datetime_to_us
from exectrack.stores import NewRun, Store, open_store
from exectrack.stores._sql import SqlStore


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.01)
    return value


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def add_run(
    store: Store,
    run_id: str,
    source: str = "chat",
    *,
    started: datetime | None = None,
    status: RunStatus = RunStatus.SUCCESS,
    duration_ms: float | None = 10.0,
    **fields: Any,
) -> str:
    """Write one run straight to the store (terminal unless ``status`` is open)."""
    at = datetime_to_us(started or ago(minutes=1))
    done = status.is_terminal
    store.create(
        NewRun(
            run_id,
            source,
            at,
            status=status,
            finished_at=at + 1000 if done else None,
            duration_ms=duration_ms if done else None,
            **fields,
        )
    )
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated SQLite file store."""
    s = open_store(tmp_path / "runs.db")
    assert isinstance(s, SqlStore)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def client_for() -> Iterator[Callable[..., TestClient]]:
    """TestClients over apps, closed after the test."""
    clients: list[TestClient] = []

    def make(app: Any, **kwargs: Any) -> TestClient:
        c = TestClient(app, **kwargs)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def postgres_url() -> str | None:
    url = os.environ.get("EXECTRACK_TEST_POSTGRES_URL", "").strip()
    if not url:
        if os.environ.get("EXECTRACK_REQUIRE_POSTGRES", "").strip() == "1":
            pytest.fail("EXECTRACK_REQUIRE_POSTGRES=1 but no EXECTRACK_TEST_POSTGRES_URL")
        pytest.skip("no EXECTRACK_TEST_POSTGRES_URL")
    return url


@pytest.fixture
def pg_store() -> Iterator[SqlStore]:
    """A store on a fresh schema of the test PostgreSQL server, dropped afterwards."""
    import psycopg

    url = postgres_url()
    assert url is not None
    schema = "t_" + secrets.token_hex(6)
    s = open_store(f"{url}?schema={schema}")
    assert isinstance(s, SqlStore)
    try:
        yield s
    finally:
        s.close()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def uvicorn_thread(app: Any) -> Iterator[Any]:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread; yields the
    server (``server.port``); stops it at the end and fails if it does not stop."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, log_level="critical", timeout_graceful_shutdown=3)
    )
    server.port = sock.getsockname()[1]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn started")
        assert server.started
        yield server
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"

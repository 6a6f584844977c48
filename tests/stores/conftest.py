"""Store targets for the contract suite: SQLite in memory, SQLite on a file, PostgreSQL.

PostgreSQL comes from ``EXECTRACK_TEST_POSTGRES_URL`` (e.g.
``postgresql://postgres@127.0.0.1:5432/test``). Each test gets its own schema (and its
own ``application_name``, so a test can find and kill exactly its own connections),
dropped afterwards. Without the variable the PostgreSQL cases skip, unless
``EXECTRACK_REQUIRE_POSTGRES=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

from exectrack.stores import redact_url
from exectrack.stores._sql import SqlStore
from exectrack.stores.postgres import PostgresStore
from exectrack.stores.sqlite import SQLiteStore

ENGINES = [
    pytest.param("sqlite-memory", id="sqlite-memory"),
    pytest.param("sqlite-file", id="sqlite-file"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _required() -> bool:
    return os.environ.get("EXECTRACK_REQUIRE_POSTGRES", "").strip() == "1"


def _unavailable(why: str) -> NoReturn:
    if _required():
        pytest.fail(f"EXECTRACK_REQUIRE_POSTGRES=1 but {why}", pytrace=False)
    pytest.skip(why)


def with_options(url: str, **options: str) -> str:
    """``url`` with query options appended (it may already have some)."""
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return url + ("&" if urlsplit(url).query else "?") + query


@dataclass
class PostgresServer:
    """The test server: an admin connection and fresh schemas on demand."""

    url: str
    admin: Any  # psycopg.Connection, autocommit; None when it could not connect
    error: str | None = None
    created: list[str] = field(default_factory=list)

    def new_schema(self) -> tuple[str, str]:
        """A fresh schema name and a store URL using it (and naming its connections)."""
        name = "t_" + secrets.token_hex(6)
        self.created.append(name)
        return name, with_options(self.url, schema=name, application_name=f"exectrack_{name}")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.admin.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []

    def terminate(self, schema: str) -> int:
        """Kill every server connection of the store using ``schema``; how many."""
        return len(self.kill(schema))

    def kill(self, schema: str) -> set[int]:
        """Kill every server connection of the store using ``schema``; their pids."""
        rows = self.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"exectrack_{schema}",),
        )
        return {pid for (pid, ok) in rows if ok}

    def kill_some(self, schema: str, timeout: float = 30.0) -> set[int]:
        """:meth:`kill`, polled until it killed at least one connection: between a
        kill and the pool's replacement the store may hold none for a moment."""
        deadline = time.monotonic() + timeout
        while not (killed := self.kill(schema)):
            assert time.monotonic() < deadline, "the store holds no server connection"
            time.sleep(0.005)  # polling the server's view, not waiting for time to pass
        return killed

    def backends(self, schema: str) -> set[int]:
        rows = self.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (f"exectrack_{schema}",),
        )
        return {pid for (pid,) in rows}

    def drop_created(self) -> None:
        while self.created:
            name = self.created.pop()
            self.terminate(name)
            self.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(scope="session")
def _pg_session() -> Iterator[PostgresServer | None]:
    url = os.environ.get("EXECTRACK_TEST_POSTGRES_URL", "").strip()
    if not url:
        yield None
        return
    import psycopg

    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        yield PostgresServer(url, None, error=redact_url(f"{type(exc).__name__}: {exc}"))
        return
    yield PostgresServer(url, admin)
    admin.close()


@pytest.fixture
def pg(_pg_session: PostgresServer | None) -> Iterator[PostgresServer]:
    """The PostgreSQL server, or skip (fail when required); schemas made here are
    dropped after the test."""
    if _pg_session is None:
        _unavailable("EXECTRACK_TEST_POSTGRES_URL is not set")
    if _pg_session.admin is None:
        _unavailable(f"cannot connect to the PostgreSQL server: {_pg_session.error}")
    try:
        yield _pg_session
    finally:
        _pg_session.drop_created()


@dataclass
class Target:
    """One engine under test: a fresh, empty database and how to reach it again."""

    engine: str
    url: str
    store: SqlStore
    opened: list[SqlStore] = field(default_factory=list)
    schema: str | None = None

    @property
    def shared(self) -> bool:
        """Whether a second store object on ``url`` sees the same database."""
        return self.engine != "sqlite-memory"

    def open_again(self) -> SqlStore:
        """Another store object on the same database (own connections)."""
        assert self.shared
        store = PostgresStore(self.url) if self.engine == "postgres" else SQLiteStore(self.url)
        self.opened.append(store)
        return store

    def examples(self, sqlite: int) -> int:
        """A Hypothesis budget: every example resets the database, which costs more
        round trips (and fsyncs) on PostgreSQL, so it gets fewer."""
        return sqlite if self.engine != "postgres" else max(10, sqlite // 2)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run raw SQL through the store's own write path (test setup only)."""
        with self.store._write() as cur:
            cur.execute(sql, params)

    def reset(self) -> None:
        """Empty the runs table and the rollups, keeping the schema (cheap between
        examples)."""
        self.store._ensure_ready()
        self.execute("DELETE FROM runs")
        self.execute("DELETE FROM run_rollups")
        self.execute("DELETE FROM run_histograms")
        with self.store._write() as cur:
            d = self.store.dialect
            cur.execute(
                f"UPDATE run_rollup_state SET folded_seq = {d.param}{d.seq_cast}, folded_id = ''",
                (0,),
            )

    def close(self) -> None:
        for store in [self.store, *self.opened]:
            store.close()


def _target(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if engine == "postgres":
        server: PostgresServer = request.getfixturevalue("pg")
        schema, url = server.new_schema()
        t = Target(engine, url, PostgresStore(url), schema=schema)
    elif engine == "sqlite-file":
        path = tmp_path / "runs.db"
        t = Target(engine, str(path), SQLiteStore(path))
    else:
        t = Target(engine, ":memory:", SQLiteStore(":memory:"))
    try:
        yield t
    finally:
        t.close()


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Every contract test runs once per engine, on an empty database."""
    yield from _target(request.param, request, tmp_path)


@pytest.fixture(params=[e for e in ENGINES if e.id != "sqlite-memory"])
def shared_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The engines whose database several store objects (processes) can share."""
    yield from _target(request.param, request, tmp_path)


@pytest.fixture
def make_pg_url(pg: PostgresServer) -> Callable[[], tuple[str, str]]:
    """Fresh (schema, url) pairs on the test server, dropped after the test."""
    return pg.new_schema

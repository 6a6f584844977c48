"""SQLite store (stdlib ``sqlite3``): one file, WAL, a busy timeout, ``BEGIN IMMEDIATE``.

Safe for several threads (one connection per thread, writes serialised by a process
lock in front of SQLite's own file lock) and several processes on one file. A forked
child opens its own connections and never touches its parent's.

``migrate=False`` opens an existing database as it is: the file is never created
(``mode=rw``), the schema never created or upgraded, the journal mode never changed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from exectrack._echo import echo, echo_url
from exectrack.errors import ConfigError, StoreError, StoreUnavailableError
from exectrack.stores._dialect import runs_table_v1
from exectrack.stores._sql import Cursor, Migration, SqlDialect, SqlStore, json_loads_object

__all__ = ["SQLiteStore", "parse_sqlite_url"]

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "create runs",
        runs_table_v1(
            id_type="TEXT",
            ts="INTEGER",
            real="REAL",
            boolean="INTEGER",
            json_type="TEXT",
            empty_json="'{}'",
        ),
    ),
)

_DIALECT = SqlDialect(
    param="?",
    json_param="?",
    like="LIKE",
    duration_since_start="(? - started_at) / 1000.0",
    multirow=True,
    duration_between="({end} - {start}) / 1000.0",
    finish_casts=("",) * 8,
    ts=int,
    ts_out=int,
    json_out=json_loads_object,
    bool_out=bool,
    migrations_table="CREATE TABLE IF NOT EXISTS exectrack_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
)

_SYNCHRONOUS = ("off", "normal", "full", "extra")
_MAX_BUSY_TIMEOUT_MS = 2**31 - 1  # sqlite3_busy_timeout takes a C int
_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "readonly", "read-only")

_live_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
# Connections inherited across fork() must never be closed or used by the child; they
# are kept here so garbage collection does not close them either.
_inherited: list[Any] = []


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``.

    Query options: ``synchronous`` (off/normal/full/extra), ``busy_timeout`` (ms). A URL
    that cannot be parsed is a ConfigError.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"cannot parse database URL {echo_url(url)}: {exc}") from None
    if parts.scheme != "sqlite":
        raise ConfigError(f"not a sqlite URL: {echo_url(url)}")
    if parts.netloc:
        raise ConfigError(
            f"sqlite URL {echo_url(url)} has a host part; use sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path:
        raise ConfigError(f"sqlite URL {echo_url(url)} names no file; e.g. sqlite:///runs.db")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    return path, options


class SQLiteStore(SqlStore):
    dialect = _DIALECT
    migrations = MIGRATIONS

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        busy_timeout_ms: int = 5000,
        migrate: bool = True,
    ) -> None:
        path = os.fspath(path)
        if "\x00" in path:
            raise ConfigError(f"database path {echo(path)} contains a NUL character")
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigError(
                f"synchronous={echo(synchronous)}: use one of {', '.join(_SYNCHRONOUS)}"
            )
        if not 0 <= busy_timeout_ms <= _MAX_BUSY_TIMEOUT_MS:
            raise ConfigError(
                f"busy_timeout={busy_timeout_ms}: must be between 0 and {_MAX_BUSY_TIMEOUT_MS} ms"
            )
        self.memory = path == ":memory:"
        try:
            self.path = path if self.memory else str(Path(path).expanduser())
        except RuntimeError as exc:  # ~unknown_user
            raise ConfigError(f"cannot use database path {echo(path)}: {exc}") from None
        self.url = "sqlite:///" + self.path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._reset_connections()
        super().__init__(migrate=migrate)
        _live_stores.add(self)

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> SQLiteStore:
        path, options = parse_sqlite_url(url)
        unknown = set(options) - {"synchronous", "busy_timeout"}
        if unknown:
            raise ConfigError(
                f"unknown sqlite URL option(s) {echo(', '.join(sorted(unknown)))} in "
                f"{echo_url(url)}; known: synchronous, busy_timeout"
            )
        try:
            timeout = int(options.get("busy_timeout", "5000"))
        except ValueError:
            raise ConfigError(f"busy_timeout in {echo_url(url)} is not an integer") from None
        return cls(
            path,
            synchronous=options.get("synchronous", "normal"),
            busy_timeout_ms=timeout,
            migrate=migrate,
        )

    # -- connections ----------------------------------------------------------------

    def _reset_connections(self) -> None:
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._wlock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        self._closed = False

    def _after_fork(self) -> None:
        _inherited.extend(self._conns)
        self._reset_connections()
        self._ready = False  # a fresh :memory: database needs its schema again

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        try:
            conn = self._open()
        except (sqlite3.Error, OSError) as exc:
            raise self._open_error(exc) from exc
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        changes = self._migrates and not self.memory  # may create the file and set WAL
        if changes:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        target, uri = self.path, False
        if not self._migrates and not self.memory:  # mode=rw: never creates the file
            target, uri = Path(self.path).absolute().as_uri() + "?mode=rw", True
        conn = sqlite3.connect(
            target,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            if changes:
                self._use_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_error(self, exc: BaseException) -> StoreError:
        if not self.memory and os.path.isdir(self.path):
            return StoreError(f"cannot open {self.url}: {self.path} is a directory")
        if not self._migrates and not self.memory and not os.path.exists(self.path):
            return StoreError(
                f"no database at {self.path}; `exectrack migrate` creates it "
                "(a store opened with migrate=False never does)"
            )
        return _translate(exc, f"cannot open {self.url}")

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. Switching a new file needs an exclusive lock that SQLite does
        not wait for (no busy handler), so a thread or process opening the same new
        file at the same moment gets "database is locked": retry within the timeout."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _conn(self) -> sqlite3.Connection:
        if self.memory:
            if self._shared is None:
                self._shared = self._connect()
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._wlock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc, "cannot begin a write") from exc
            try:
                yield conn.cursor()
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, "write failed") from exc
                raise

    def _write_one(self) -> _Autocommit:
        """Autocommit: a lone INSERT or UPDATE takes the write lock when it starts
        (with the busy timeout), exactly as ``BEGIN IMMEDIATE`` would, and commits
        when it ends, without two more statements around it."""
        return _Autocommit(self)

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        lock = self._wlock if self.memory else None
        if lock is not None:
            lock.acquire()
        try:
            yield self._conn().cursor()
        except sqlite3.Error as exc:
            raise _translate(exc, "read failed") from exc
        finally:
            if lock is not None:
                lock.release()

    def _lock_schema(self, cur: Cursor) -> None:
        """``BEGIN IMMEDIATE`` already holds the database's write lock."""

    def _has_migrations_table(self, cur: Cursor) -> bool:
        cur.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exectrack_migrations'"
        )
        return cur.fetchone() is not None

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
            self._closed = True
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        self._shared = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


class _Autocommit:
    """The context of ``_write_one``: a plain class, cheaper per use than a
    generator-based context manager on the synchronous write path."""

    __slots__ = ("store",)

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def __enter__(self) -> Cursor:
        self.store._wlock.acquire()
        try:
            return self.store._conn().cursor()
        except BaseException:
            self.store._wlock.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.store._wlock.release()
        if isinstance(exc, sqlite3.Error):
            raise _translate(exc, "write failed") from exc


def _translate(exc: BaseException, what: str) -> StoreError:
    message = f"{what}: {exc}"
    lowered = str(exc).lower()
    if isinstance(exc, OSError) or any(word in lowered for word in _TRANSIENT):
        return StoreUnavailableError(message)
    return StoreError(message)


def _after_fork_in_child() -> None:
    for store in list(_live_stores):
        store._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

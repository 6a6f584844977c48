"""SQLite store (stdlib ``sqlite3``): one file, WAL, a busy timeout, ``BEGIN IMMEDIATE``.

Safe for several threads (one connection per thread, writes serialised by a process
lock in front of SQLite's own file lock) and several processes on one file. A forked
child opens its own connections and never touches its parent's.

A database file deleted or replaced while the store uses it is noticed before the next
transaction (one ``stat``: the file's device and inode against those seen at connect):
the store closes its connections to the old file, says so once with a
:class:`~exectrack.errors.StoreUnavailableError` (which the background writer retries)
and a logged warning, and opens the file now at that path on next use, creating it
and the schema again if needed. Old connections close before any new one opens, so
closing them never touches the new file's ``-wal``.

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
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote_from_bytes, unquote, urlsplit

from exectrack._echo import echo, echo_url
from exectrack._log import get_logger
from exectrack.errors import ConfigError, StoreError, StoreUnavailableError
from exectrack.stores._dialect import (
    rollup_tables_v5,
    runs_table_v1,
    runs_table_v2,
    runs_table_v3,
    runs_table_v4,
)
from exectrack.stores._sql import Cursor, Migration, SqlDialect, SqlStore, json_loads_object
from exectrack.stores._text import (
    SQLITE_TEXT_DRAIN,
    sqlite_text_index,
    sqlite_text_page,
    sqlite_text_term,
)

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
    Migration(2, "stream facts", runs_table_v2(real="REAL")),
    Migration(3, "change feed", runs_table_v3(seq_type="INTEGER", seq_default="0")),
    Migration(4, "source_ref index", runs_table_v4()),
    Migration(
        5,
        "rollups",
        rollup_tables_v5(big="INTEGER", real="REAL", seq_type="INTEGER", seq_default="0"),
    ),
    Migration(6, "text search index", sqlite_text_index()),
)

_DIALECT = SqlDialect(
    param="?",
    json_param="?",
    duration_since_start="MAX(0, ? - started_at) / 1000.0",
    multirow=True,
    duration_between="MAX(0, {end} - {start}) / 1000.0",
    finish_casts=("",) * 10,
    ts=int,
    ts_out=int,
    json_out=json_loads_object,
    bool_out=bool,
    migrations_table="CREATE TABLE IF NOT EXISTS exectrack_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    # Writes are serialized (BEGIN IMMEDIATE), so one more than the largest stamp is
    # larger than every stamp a reader has seen: stamps grow in commit order. An index
    # seek, not a row write (a counter row or a trigger would write twice per run).
    change_stamp="(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM runs)",
    change_settled="1 = 1",
    seq_cast="",
    seq_out=int,
    text_term=sqlite_text_term,
    text_page=sqlite_text_page,
    unindexed="+",
)

log = get_logger(__name__)

_SYNCHRONOUS = ("off", "normal", "full", "extra")
CLOSE_WAIT = 5.0  # seconds close() waits for a write or read in flight to end
_MAX_BUSY_TIMEOUT_MS = 2**31 - 1  # sqlite3_busy_timeout takes a C int
# "closed database": a statement on a connection that close() closed under it.
_TRANSIENT = (
    "locked",
    "busy",
    "unable to open",
    "disk i/o",
    "readonly",
    "read-only",
    "closed database",
)

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


def expand_path(path: str) -> str:
    """``str(pathlib.Path(path).expanduser())``, without importing pathlib on POSIX (a
    CLI command paid 17 M instructions for it): no empty or ``.`` parts, no trailing
    slash, two leading slashes kept (POSIX leaves them to the system), ``~`` and
    ``~user`` expanded (RuntimeError when they cannot be)."""
    if os.name != "posix":  # pragma: no cover - drives, other separators
        from pathlib import Path

        return str(Path(path).expanduser())
    root, names = _split(path)
    if not root and names and names[0][:1] == "~":
        home = os.path.expanduser(names[0])
        if home[:1] == "~":
            raise RuntimeError("Could not determine home directory.")
        root, head = _split(home)
        names = head + names[1:]
    return root + "/".join(names) or "."


def _split(path: str) -> tuple[str, list[str]]:
    """(root, names) as pathlib parses a POSIX path."""
    stripped = path.lstrip("/")
    slashes = len(path) - len(stripped)
    root = "//" if slashes == 2 else "/" if slashes else ""
    return root, [name for name in stripped.split("/") if name and name != "."]


def file_uri(path: str) -> str:
    """``pathlib.Path(path).as_uri()`` of an absolute, normalised path, without
    importing pathlib on POSIX."""
    if os.name != "posix":  # pragma: no cover
        from pathlib import Path

        return Path(path).as_uri()
    return "file://" + quote_from_bytes(os.fsencode(path))


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
        if path.startswith("sqlite:"):  # would create a folder named "sqlite:" here
            raise ConfigError(
                f"database path {echo_url(path)} is a URL: pass the file's path, or the URL "
                "to open_store() or SQLiteStore.from_url()"
            )
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
            self.path = path if self.memory else expand_path(path)
            # Connections and the file check use the absolute path: a later chdir in
            # the host never points the store at another file.
            self._file = self.path if self.memory else os.path.abspath(self.path)
        except (RuntimeError, OSError) as exc:  # ~unknown_user, a deleted working directory
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
        self._conns_lock = threading.Lock()  # held while connecting and while reopening
        self._wlock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        self._closed = False
        self._gen = 0  # bumped by a reopen: a thread's connection of an older one is stale
        self._readers = 0  # threads inside _read on a file; a reopen waits for none
        self._gate = threading.Condition(threading.Lock())
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) this generation opened

    def _after_fork(self) -> None:
        _inherited.extend(self._conns)
        self._reset_connections()
        self._ready = False  # a fresh :memory: database needs its schema again

    def _connect(self) -> tuple[sqlite3.Connection, int]:
        """A new connection and the generation it belongs to.

        Serialised with ``_reopen``: no connection to a replaced file is ever opened
        after the new file's first one, nor closed after it. The first connection to a
        file opened again creates (or checks) the schema before any thread can use it.
        """
        with self._conns_lock:
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            try:
                conn = self._open()
                try:
                    ident = None if self.memory else _identity(self._file)
                    if self._ident is not None and ident != self._ident:
                        raise self._replaced()  # since this generation's first: reopen
                    if self._gen and self._ident is None:
                        self._prepare(conn)
                except BaseException:
                    conn.close()
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise self._open_error(exc) from exc
            if self._ident is None:
                self._ident = ident
            self._conns.append(conn)
            return conn, self._gen

    def _prepare(self, conn: sqlite3.Connection) -> None:
        cur = conn.cursor()
        if not self._migrates:
            self._check_schema(cur)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._migrate_in(cur)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _open(self) -> sqlite3.Connection:
        changes = self._migrates and not self.memory  # may create the file and set WAL
        if changes:
            os.makedirs(os.path.dirname(self._file), exist_ok=True)
        target, uri = self._file, False
        if not self._migrates and not self.memory:
            target, uri = file_uri(self._file) + "?mode=rw", True  # never creates it
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
        if not self.memory and os.path.isdir(self._file):
            return StoreError(f"cannot open {self.url}: {self.path} is a directory")
        if not self._migrates and not self.memory and not os.path.exists(self._file):
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
                self._shared = self._connect()[0]
            return self._shared
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.gen != self._gen:
            conn, local.gen = self._connect()
            local.conn = conn
        return conn

    def _check_file(self) -> None:
        """Before a transaction: one ``stat`` tells whether the file this generation's
        connections opened is still the file at the path; if not, ``_reopen``."""
        ident = self._ident
        if ident is None:  # in memory, or nothing opened since the last reopen
            return
        try:
            st = os.stat(self._file)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError:
            return  # cannot tell (e.g. permissions): the open connections go on
        else:
            if st.st_ino == ident[1] and st.st_dev == ident[0]:
                return
        self._reopen(ident)

    def _reopen(self, seen: tuple[int, int]) -> NoReturn:
        """Close every connection to the old file, then raise StoreUnavailableError so
        the caller retries; the next use opens the file now at the path and creates
        the schema again if needed.

        It waits until no write (the write lock) and no read (the gate) is in flight:
        closing a connection while another thread runs a statement on it can crash
        the interpreter. Reads and writes never nest, so the wait always ends.
        """
        with self._wlock, self._gate:
            while self._readers:
                self._gate.wait()
            with self._conns_lock:
                first = self._ident == seen and not self._closed  # the first to notice
                if first:
                    stale, self._conns = self._conns, []
                    self._gen += 1
                    self._ident = None
                    for conn in stale:  # all closed before a new one opens
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
        if first:
            log.warning(
                "exectrack: database file %s was deleted or replaced while in use; "
                "reopened it (runs written to the old file are not in the new one)",
                self.path,
            )
        raise self._replaced()

    def _replaced(self) -> StoreUnavailableError:
        return StoreUnavailableError(f"database file {self.path} was deleted or replaced; reopened")

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._wlock:
            self._check_file()
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc, "cannot begin a write") from exc
            try:
                yield conn.cursor()
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
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
        if self.memory:  # one shared connection: reads take the write lock
            with self._wlock:
                try:
                    yield self._conn().cursor()
                except sqlite3.Error as exc:
                    raise _translate(exc, "read failed") from exc
            return
        self._check_file()
        with self._gate:
            self._readers += 1
        try:
            yield self._conn().cursor()
        except sqlite3.Error as exc:
            raise _translate(exc, "read failed") from exc
        finally:
            with self._gate:
                self._readers -= 1
                if not self._readers:
                    self._gate.notify_all()

    @contextmanager
    def _read_snapshot(self) -> Iterator[Cursor]:
        """``_read`` in one read transaction: the steps of a text-filtered page
        (``_text.sqlite_text_page``) see the same runs."""
        with self._read() as cur:
            conn = self._conn()
            cur.execute("BEGIN")
            try:
                yield cur
            finally:
                if conn.in_transaction:  # a read: ending it loses nothing
                    conn.execute("ROLLBACK")

    # Created runs between two moves of the text queue into the trigram index
    # (``_text.py``): a move costs one index flush, however many runs it takes.
    text_drain_every = 1000
    _text_queued = 0
    _text_drain_failed = False

    def _wrote(self, created: int) -> None:
        super()._wrote(created)
        if not created:
            return
        self._text_queued += created
        if self._text_queued < self.text_drain_every:
            return
        self._text_queued = 0
        try:
            self.index_text()
        except Exception as exc:  # the runs are committed; reads check queued runs
            if not self._text_drain_failed:
                self._text_drain_failed = True
                log.warning("exectrack: could not update the text search index: %s", exc)

    def index_text(self) -> int:
        """Move the runs queued for the text index into it (one transaction); how
        many. Stores do it by themselves every ``text_drain_every`` created runs;
        until then text search reads queued runs directly."""
        self._ensure_ready()
        with self._write() as cur:
            cur.execute(SQLITE_TEXT_DRAIN[0])
            moved = max(cur.rowcount, 0)
            cur.execute(SQLITE_TEXT_DRAIN[1])
        return moved

    def _lock_schema(self, cur: Cursor) -> None:
        """``BEGIN IMMEDIATE`` already holds the database's write lock."""

    def _refresh_statistics(self) -> None:
        """ANALYZE reading at most ~400 rows per index (``analysis_limit``): about
        25 ms at a million runs, and enough for the planner's choices."""
        with self._write() as cur:
            cur.execute("PRAGMA analysis_limit = 400")
            cur.execute("ANALYZE runs")

    def _has_migrations_table(self, cur: Cursor) -> bool:
        cur.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exectrack_migrations'"
        )
        return cur.fetchone() is not None

    def close(self) -> None:
        """Close every connection, once no write and no read is in flight on one:
        closing a connection while another thread runs a statement on it crashes the
        interpreter (a segfault, reproduced by a test). Later calls raise StoreError.
        A write or read still going after ``CLOSE_WAIT`` keeps its connections open
        (they close when their thread lets go of them) rather than risk that."""
        got = self._wlock.acquire(timeout=CLOSE_WAIT)
        try:
            with self._gate:
                deadline = time.monotonic() + CLOSE_WAIT
                while self._readers and (left := deadline - time.monotonic()) > 0:
                    self._gate.wait(left)
                idle = got and not self._readers
                with self._conns_lock:
                    conns, self._conns = self._conns, []
                    self._closed = True
                    self._ident = None  # nothing left to check
                    self._gen += 1  # a thread's own connection is stale from now on
        finally:
            if got:
                self._wlock.release()
        self._local = threading.local()
        self._shared = None
        if not idle:
            log.warning(
                "exectrack: closed %s while a statement was still running on it; its "
                "connections close when that thread lets go of them",
                self.path,
            )
            return
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


class _Autocommit:
    """The context of ``_write_one``: a plain class, cheaper per use than a
    generator-based context manager on the synchronous write path."""

    __slots__ = ("store",)

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def __enter__(self) -> Cursor:
        store = self.store
        store._wlock.acquire()
        try:
            store._check_file()
            return store._conn().cursor()
        except BaseException as exc:
            store._wlock.release()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, "write failed") from exc
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


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _translate(exc: BaseException, what: str) -> StoreError:
    message = f"{what}: {exc}"
    lowered = str(exc).lower()
    if isinstance(exc, OSError) or any(word in lowered for word in _TRANSIENT):
        return StoreUnavailableError(message)
    return StoreError(message)


# fork() while one of our threads is inside a write transaction would hand the child
# SQLite's in-process record of a lock its process does not hold: the child's own
# connections would then wait for it forever. So fork waits for the write to end.
_held_at_fork: list[threading.RLock] = []


def _before_fork() -> None:
    for store in list(_live_stores):
        if not store.memory:
            store._wlock.acquire()
            _held_at_fork.append(store._wlock)


def _after_fork_in_parent() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_at_fork.clear()
    for store in list(_live_stores):
        store._after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)

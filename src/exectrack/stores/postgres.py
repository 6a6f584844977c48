"""PostgreSQL store: psycopg 3 with a ``psycopg_pool`` connection pool.

For runs shared by several processes or hosts. The schema, the migrations and every
statement's meaning are those of the SQLite store (``_sql.py``); only the SQL
dialect differs: ``timestamptz`` times, ``jsonb`` metadata, ``boolean`` flags,
``ILIKE`` text search.

- Migrations run in one transaction under a transaction-level advisory lock, so
  several processes starting at once migrate once.
- ``?schema=name`` keeps the tables in their own schema (created on first migrate).
- Connections are autocommit; a single guarded statement runs without BEGIN/COMMIT
  (it is atomic on its own), a batch runs in one transaction.
- A pooled connection is checked without a round trip when handed out: if its socket
  has something to read while idle (the server's goodbye after a restart or
  ``pg_terminate_backend``), it is pinged and replaced when dead. Connection
  errors surface as :class:`~exectrack.errors.StoreUnavailableError`, which the
  background writer retries.
- After ``fork()`` the child never touches its parent's pool or connections; it opens
  its own pool on first use.

URL: ``postgresql://user:password@host:5432/db`` (or ``postgres://``). exectrack's own
options, removed before the URL reaches libpq: ``schema``, ``pool_min_size``
(default 1), ``pool_max_size`` (10), ``pool_timeout`` (seconds to wait for a
connection, 5). Every other option goes to libpq (``sslmode``, ``connect_timeout``
(default 5), ``application_name`` (default ``exectrack``), ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from exectrack._echo import echo, echo_url
from exectrack._log import get_logger
from exectrack._model import Run, RunStatus, datetime_to_us, us_to_datetime
from exectrack._redact import redact_text
from exectrack.errors import (
    ConfigError,
    InvalidArgumentError,
    SchemaError,
    StoreError,
    StoreUnavailableError,
)
from exectrack.stores import _pgconn
from exectrack.stores._base import RunFilter
from exectrack.stores._dialect import (
    rollup_tables_v5,
    runs_table_v1,
    runs_table_v2,
    runs_table_v3,
    runs_table_v4,
)
from exectrack.stores._records import (
    ApplyResult,
    Command,
    FinishResult,
    FinishRun,
    NewRun,
)
from exectrack.stores._sql import Cursor, Migration, SqlDialect, SqlStore, json_loads_object
from exectrack.stores._summaries import SourceAggregate
from exectrack.stores._text import PG_TEXT_INDEXES, postgres_text_index, postgres_text_term

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["INSTALL_HINT", "MIGRATIONS", "PostgresStore", "parse_postgres_url"]

INSTALL_HINT = _pgconn.INSTALL_HINT

_T = TypeVar("_T")

SCHEMES = ("postgresql", "postgres")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "create runs",
        runs_table_v1(
            # id sorts bytewise (COLLATE "C"), as in SQLite, so ties break the same way.
            id_type='TEXT COLLATE "C"',
            ts="TIMESTAMPTZ",
            real="DOUBLE PRECISION",
            boolean="BOOLEAN",
            json_type="JSONB",
            empty_json="'{}'::jsonb",
        ),
    ),
    Migration(2, "stream facts", runs_table_v2(real="DOUBLE PRECISION")),
    Migration(3, "change feed", runs_table_v3(seq_type="xid8", seq_default="'0'::xid8")),
    Migration(4, "source_ref index", runs_table_v4()),
    Migration(
        5,
        "rollups",
        rollup_tables_v5(
            big="BIGINT", real="DOUBLE PRECISION", seq_type="xid8", seq_default="'0'::xid8"
        ),
    ),
    Migration(6, "text search index", postgres_text_index()),
)

_DIALECT = SqlDialect(
    param="%s",
    json_param="%s::jsonb",
    # EXTRACT gives exact numeric seconds; the column rounds once, like SQLite's division.
    duration_since_start="GREATEST(0, EXTRACT(EPOCH FROM (?::timestamptz - started_at)) * 1000)",
    multirow=False,
    duration_between="GREATEST(0, EXTRACT(EPOCH FROM ({end} - {start})) * 1000)",
    # A SELECT list gives a NULL parameter the type text: every column is cast.
    finish_casts=(
        "::text",
        "::text",
        "::timestamptz",
        "::double precision",
        "::text",
        "::text",
        "::boolean",
        "::jsonb",
        "::integer",
        "::double precision",
    ),
    ts=us_to_datetime,
    ts_out=datetime_to_us,
    json_out=json_loads_object,
    bool_out=bool,
    migrations_table="CREATE TABLE IF NOT EXISTS exectrack_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
    # Writers run concurrently, so a counter would commit out of order (or serialize
    # them all on one row). The writing transaction's id is the stamp instead, and a
    # reader only reads stamps below the oldest transaction still running: every
    # transaction with a smaller id has ended, so no row can appear behind the cursor.
    change_stamp="pg_current_xact_id()",
    change_settled="change_seq < pg_snapshot_xmin(pg_current_snapshot())",
    seq_cast="::text::xid8",
    seq_out=lambda value: int(str(value)),
    text_term=postgres_text_term,
    text_page=None,
    row_lock=" FOR UPDATE SKIP LOCKED",
)

log = get_logger(__name__)

_OWN_OPTIONS = ("schema", "pool_min_size", "pool_max_size", "pool_timeout")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_live_stores: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def parse_postgres_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a ``postgresql://`` URL into what libpq gets and exectrack's own options.
    A URL that cannot be parsed is a ConfigError (password redacted)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"cannot parse database URL {echo_url(url)}: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"not a PostgreSQL URL: {echo_url(url)}")
    if "\x00" in url:
        raise ConfigError(f"database URL {echo_url(url)} contains a NUL character")
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OWN_OPTIONS:
            own[key] = value
        else:
            rest.append((key, value))
    names = {key for key, _ in rest}
    if "connect_timeout" not in names:
        rest.append(("connect_timeout", "5"))
    if "application_name" not in names:
        rest.append(("application_name", "exectrack"))
    query = urlencode(rest, quote_via=quote)  # libpq reads %20, not +, as a space
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return conninfo, own


def _check_conninfo(conninfo: str, url: str) -> None:
    """libpq's own reading of the URL, at creation: a malformed URL, an unknown
    option or a bad port is a ConfigError now, not a pool timeout at first use."""
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = urlsplit(url).password
        if password:  # libpq may quote the token it could not read
            for secret in {password, unquote(password)}:
                detail = detail.replace(secret, "***")
        raise ConfigError(
            f"cannot use database URL {echo_url(url)}: {redact_text(detail)[:200]}"
        ) from None
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"port {echo(port)} in {echo_url(url)}: use 1-65535")


def _positive_int(name: str, raw: str | int, url: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={echo(raw)} in {echo(url)} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{name}={value} in {echo(url)}: must be >= 1")
    return value


class PostgresStore(SqlStore):
    """Runs in PostgreSQL. Explicit arguments beat the URL's options."""

    lateral_latest = True  # see AggregateOps.latest_runs

    dialect = _DIALECT
    migrations = MIGRATIONS

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_min_size: int | None = None,
        pool_max_size: int | None = None,
        pool_timeout: float | None = None,
        migrate: bool = True,
    ) -> None:
        self._psycopg, self._psycopg_pool = _pgconn.import_driver()
        self.url = redact_text(url.strip())
        self._conninfo, options = parse_postgres_url(url.strip())
        _check_conninfo(self._conninfo, url.strip())
        schema = schema if schema is not None else options.get("schema") or None
        if schema is not None and _IDENTIFIER.fullmatch(schema) is None:
            raise ConfigError(
                f"schema={echo(schema)} in {echo(self.url)}: use a plain identifier "
                "([A-Za-z_][A-Za-z0-9_]*, at most 63 characters)"
            )
        self.schema = schema
        self._min_size = _positive_int(
            "pool_min_size",
            pool_min_size if pool_min_size is not None else options.get("pool_min_size", "1"),
            self.url,
        )
        self._max_size = _positive_int(
            "pool_max_size",
            pool_max_size if pool_max_size is not None else options.get("pool_max_size", "10"),
            self.url,
        )
        if self._max_size < self._min_size:
            raise ConfigError(f"pool_max_size < pool_min_size in {echo(self.url)}")
        try:
            timeout = float(
                pool_timeout if pool_timeout is not None else options.get("pool_timeout", "5")
            )
        except ValueError:
            raise ConfigError(f"pool_timeout in {echo(self.url)} is not a number") from None
        if not 0 < timeout < math.inf:
            raise ConfigError(
                f"pool_timeout={timeout} in {echo(self.url)}: must be > 0 seconds and finite"
            )
        self._timeout = timeout
        # One advisory lock per schema: stores of different schemas never wait for
        # each other's migrations.
        digest = hashlib.blake2b(
            f"exectrack.migrate:{schema or ''}".encode(), digest_size=8
        ).digest()
        self._lock_key = int.from_bytes(digest, "big", signed=True)
        self._reset_pool()
        super().__init__(migrate=migrate)
        _live_stores.add(self)

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> PostgresStore:
        return cls(url, migrate=migrate)

    # -- the pool -------------------------------------------------------------------

    def _reset_pool(self) -> None:
        self._connect_error: BaseException | None = None  # the pool's last failed connect
        self._pool_obj: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    def _after_fork(self) -> None:
        # The parent's pool, its threads and its sockets stay the parent's: drop the
        # reference (its finaliser and psycopg's are no-ops in a child process).
        self._pool_obj = None
        self._pool_lock = threading.Lock()

    def _pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool_obj
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            if self._pool_obj is None:
                _pgconn.quiet_pool_logs()
                self._pool_obj = _pgconn.pool_class()(
                    self._conninfo,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self._timeout,
                    kwargs={"autocommit": True},
                    connection_class=_pgconn.connection_class(self._record_connect()),
                    configure=self._configure if self.schema else None,
                    name="exectrack",
                    open=False,
                )
                self._pool_obj.open(wait=False)
            return self._pool_obj

    def _record_connect(self) -> Callable[[BaseException | None], None]:
        ref = weakref.ref(self)

        def record(error: BaseException | None) -> None:
            store = ref()
            if store is not None:
                store._connect_error = error

        return record

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Point a new connection at the store's schema."""
        conn.execute("SELECT set_config('search_path', %s, false)", (f'"{self.schema}"',))

    @contextmanager
    def _connection(
        self, what: str, step: _Step | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        psycopg = self._psycopg
        pool = self._pool()
        try:
            conn = self._checkout(pool)
        except psycopg.Error as exc:
            raise self._translate(exc, f"cannot get a connection for {what}") from exc
        try:
            yield conn
        except psycopg.Error as exc:
            error = self._translate(exc, f"{what} failed")
            if _pgconn.connection_lost(conn, exc):
                lost = _ConnectionLostError(str(error))
                lost.maybe_committed = step is None or step.committing
                raise lost from exc
            raise error from exc
        finally:
            pool.putconn(conn)

    def _checkout(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
        """A connection from the pool that was not closed by the server while idle."""
        for _ in range(self._max_size + 1):
            conn = pool.getconn()
            if not _pgconn.has_input(conn):
                return conn
            try:
                conn.execute("")  # a notice, or the server's goodbye: ask once
            except self._psycopg.Error:
                pool.putconn(conn)  # broken: the pool replaces it
                pool.check()  # its idle siblings probably died with it
                continue
            return conn
        return pool.getconn()

    def _translate(self, exc: BaseException, what: str) -> StoreError:
        errors = self._psycopg.errors
        detail = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        message = f"{what} on {self.url}: {type(exc).__name__}: {detail}"
        last = self._connect_error
        if isinstance(exc, self._psycopg_pool.PoolTimeout) and last is not None:
            reason = str(last).strip().splitlines()[0] if str(last).strip() else ""
            message += f" (last connection attempt: {redact_text(reason)})"
        if isinstance(exc, errors.UndefinedTable | errors.UndefinedColumn):
            return SchemaError(message + " (schema missing or damaged)")
        if isinstance(exc, self._psycopg.OperationalError | self._psycopg.InterfaceError):
            return StoreUnavailableError(message)
        return StoreError(message)

    # -- SqlStore hooks ------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        step = _Step()
        with self._connection("write", step) as conn, conn.cursor() as cur, conn.transaction():
            yield cur
            step.committing = True  # from here on, a lost connection leaves it unknown

    @contextmanager
    def _write_one(self) -> Iterator[Cursor]:
        with self._connection("write") as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._connection("read", _Step()) as conn, conn.cursor() as cur:
            yield cur

    # -- one retry when the server dropped the connection under an operation ----------
    #
    # The check at checkout (no round trip) misses a connection the server is closing
    # at that very moment (a restart, pg_terminate_backend). Such an operation is run
    # once more on a new connection. A read, or a transaction lost before its COMMIT,
    # is simply repeated. A single guarded statement may have committed before the
    # connection died; its retry is harmless (the writes are idempotent) and the run
    # itself tells whether the first attempt was the one that applied.

    def _twice(self, op: Callable[[], _T], *, if_maybe_committed: bool = True) -> tuple[bool, _T]:
        """``op()``, run once more if the connection was lost under it; returns whether
        it was, and the result. A second loss is a plain StoreUnavailableError."""
        try:
            return False, op()
        except _ConnectionLostError as exc:
            if exc.maybe_committed and not if_maybe_committed:
                raise StoreUnavailableError(str(exc)) from exc.__cause__
        try:
            return True, op()
        except _ConnectionLostError as exc:
            raise StoreUnavailableError(str(exc)) from exc.__cause__

    def migrate(self) -> list[int]:
        return self._twice(lambda: SqlStore.migrate(self))[1]

    def schema_version(self) -> int:
        return self._twice(lambda: SqlStore.schema_version(self))[1]

    # PostgreSQL text cannot hold a NUL: a filter or id holding one matches no run
    # (rather than failing the read, which the HTTP API would answer with a 503).

    def get(self, run_id: str) -> Run | None:
        if "\x00" in run_id:
            return None
        return self._twice(lambda: SqlStore.get(self, run_id))[1]

    def list_runs(
        self, flt: RunFilter, *, limit: int, cursor: tuple[int, str] | None = None
    ) -> list[Run]:
        if cursor is not None and "\x00" in cursor[1]:
            raise InvalidArgumentError("cursor: no run id holds a NUL character")
        if _holds_nul(flt):
            return []
        return self._twice(lambda: SqlStore.list_runs(self, flt, limit=limit, cursor=cursor))[1]

    def changes(self, after: tuple[int, str] | None, *, limit: int) -> list[tuple[int, Run]]:
        if after is not None and "\x00" in after[1]:
            raise InvalidArgumentError("cursor: no run id holds a NUL character")
        return SqlStore.changes(self, after, limit=limit)

    def count_runs(self, flt: RunFilter) -> dict[tuple[str, RunStatus], int]:
        if _holds_nul(flt):
            return {}
        return self._twice(lambda: SqlStore.count_runs(self, flt))[1]

    def aggregate(
        self, flt: RunFilter, *, quantiles: Sequence[float] = (), bounds: Sequence[float] = ()
    ) -> list[SourceAggregate]:
        if _holds_nul(flt):
            flt = _NOTHING  # the arguments are still checked
        return self._twice(
            lambda: SqlStore.aggregate(self, flt, quantiles=quantiles, bounds=bounds)
        )[1]

    def fold_rollups(self, *, limit: int | None = None) -> int:
        # Each chunk is one transaction that moves the fold position with what it
        # added: a chunk lost before its COMMIT is folded again, never twice.
        return self._twice(lambda: SqlStore.fold_rollups(self, limit=limit))[1]

    def latest_runs(self, filters: Sequence[RunFilter]) -> list[Run | None]:
        clean = [None if _holds_nul(f) else f for f in filters]
        asked = [f for f in clean if f is not None]
        found = iter(self._twice(lambda: SqlStore.latest_runs(self, asked))[1] if asked else [])
        return [None if f is None else next(found) for f in clean]

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        # Lost at COMMIT, a batch is left to the writer's retry: its writes are
        # idempotent, only its counts could be off.
        return self._twice(lambda: SqlStore.apply(self, commands), if_maybe_committed=False)[1]

    def create(self, run: NewRun) -> bool:
        lost, created = self._twice(lambda: SqlStore.create(self, run))
        if created or not lost:
            return created
        got = SqlStore.get(self, run.id)
        return got is not None and _same_run(got, run)

    def start(self, run_id: str, at: int) -> FinishResult:
        lost, result = self._twice(lambda: SqlStore.start(self, run_id, at))
        if lost and not result.applied and result.status is RunStatus.RUNNING:
            got = SqlStore.get(self, run_id)
            if got is not None and got.heartbeat_at == us_to_datetime(at):
                return FinishResult(True, RunStatus.RUNNING)
        return result

    def finish(self, cmd: FinishRun) -> FinishResult:
        lost, result = self._twice(lambda: SqlStore.finish(self, cmd))
        if lost and not result.applied and result.status is cmd.status:
            got = SqlStore.get(self, cmd.id)
            if (
                got is not None
                and got.finished_at == us_to_datetime(cmd.finished_at)
                and got.error_code == cmd.error_code
            ):
                return FinishResult(True, cmd.status)
        return result

    def _refresh_statistics(self) -> None:
        """ANALYZE samples a fixed number of rows, whatever the table's size; done
        here too because autovacuum may be off."""
        with self._write_one() as cur:
            cur.execute("ANALYZE runs")

    def _lock_schema(self, cur: Cursor) -> None:
        """Take the migration lock (released at commit), then make sure the schema
        exists (checked first: CREATE SCHEMA needs a privilege reuse does not)."""
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
        if self.schema is None:
            return
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE SCHEMA "{self.schema}"')

    text_extension = "pg_trgm"  # schema v6's text index (``_text.py``)
    _text_scan_logged = False

    def _after_migrations(self, cur: Cursor) -> None:
        """Text search's trigram indexes, when the migration could not create them
        (``pg_trgm`` missing or not creatable): tried again at every migrate, since
        the extension may have been installed since; while they are missing, text
        search scans, said once per store."""
        if self._has_text_indexes(cur):
            return
        for statement in postgres_text_index(self.text_extension):
            cur.execute(statement)
        if self._has_text_indexes(cur) or self._text_scan_logged:
            return
        self._text_scan_logged = True
        log.warning(
            "exectrack: the pg_trgm extension is not available on %s (it could not be "
            "created); text search scans the runs table. Create it (CREATE EXTENSION "
            "pg_trgm, as a role allowed to) and the next start indexes the text",
            self.url,
        )

    def _has_text_indexes(self, cur: Cursor) -> bool:
        cur.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            PG_TEXT_INDEXES,
        )
        row = cur.fetchone()
        return bool(row and row[0])

    def _has_migrations_table(self, cur: Cursor) -> bool:
        cur.execute("SELECT to_regclass('exectrack_migrations') IS NOT NULL")
        row = cur.fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            pool, self._pool_obj = self._pool_obj, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close(timeout=5.0)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"


class _Step:
    """Where an operation is: ``committing`` once its transaction's COMMIT is sent."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


class _ConnectionLostError(StoreUnavailableError):
    """The server closed the connection under an operation (retried once)."""

    maybe_committed = True


def _same_run(got: Run, run: NewRun) -> bool:
    """Whether the stored run is the one ``run`` creates (its own retried create)."""
    return (
        got.source == run.source
        and got.started_at == us_to_datetime(run.started_at)
        and got.owner == run.owner
        and got.source_ref == run.source_ref
        and got.session_id == run.session_id
        and got.parent_id == run.parent_id
    )


def _after_fork_in_child() -> None:
    for store in list(_live_stores):
        store._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# A filter no run matches: statuses none is ever in (the empty IN list is invalid SQL).
_NOTHING = RunFilter(
    sources=("\x01no source\x01",), started_before=datetime(1970, 1, 2, tzinfo=UTC)
)


def _holds_nul(flt: RunFilter) -> bool:
    """Whether a text ``flt`` compares holds a NUL: no PostgreSQL text does."""
    texts = (*flt.sources, flt.session_id, flt.source_ref, flt.parent_id, flt.text)
    return any(t is not None and "\x00" in t for t in texts)

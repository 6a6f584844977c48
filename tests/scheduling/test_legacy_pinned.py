"""The legacy table module pinned exactly: time parsing and the stored time format, the
table's name and URL rules, its connection and errors, the schema it creates, rows in
and out, the rows the bridge writes in ``dual``, derived run ids, the import's field
mapping and the consistency check's pairing, tolerances and figures.

Each assertion is one a mutant of ``heartbeat/legacy.py`` changes (``make mutate
MODULES=src/exectrack/heartbeat/legacy.py``); the end-to-end stages are in
test_legacy.py. The process runs in a zone that is not UTC, so a time written or read
in local time instead of UTC shows.
"""

from __future__ import annotations

import secrets
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exectrack import ConfigError, DriverMissingError, ExecutionTracker, RunStatus, StoreError
from exectrack._model import Run, datetime_to_us
from exectrack._redact import encode_metadata, normalize_metadata
from exectrack.heartbeat.legacy import (
    CheckResult,
    Disagreement,
    LegacyRecorder,
    LegacyRow,
    LegacyTable,
    check,
    import_rows,
    parse_time,
    row_of_execution,
    stable_run_id,
)
from exectrack.integrations.apscheduler import Execution
from exectrack.stores import NewRun, RunFilter, Store
from scheduling.test_legacy import COLUMNS

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))
MS = timedelta(milliseconds=1)
S = timedelta(seconds=1)
TABLE = "heartbeat_executions"
# A table made by hand, every column nullable and no CHECK on status: rows the
# module's own schema refuses (NULLs, unknown statuses, text that is no time).
LOOSE_DDL = (
    f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, task_id TEXT, task_description TEXT, "
    "priority INTEGER, execution_mode TEXT, status TEXT, started_at TEXT, completed_at TEXT, "
    "duration_ms INTEGER, output TEXT, retry_count INTEGER, run_id TEXT)"
)


pytestmark = pytest.mark.usefixtures("non_utc_zone")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
def table(db_path: Path) -> Iterator[LegacyTable]:
    """A created legacy table in a SQLite file."""
    t = LegacyTable(f"sqlite:///{db_path}")
    t.create()
    yield t
    t.close()


@pytest.fixture
def loose(db_path: Path) -> Iterator[LegacyTable]:
    """A legacy table made by hand without the module's constraints."""
    with sqlite3.connect(db_path) as conn:
        conn.execute(LOOSE_DDL)
    conn.close()
    t = LegacyTable(str(db_path))
    yield t
    t.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def legacy(request: pytest.FixtureRequest, db_path: Path) -> Iterator[LegacyTable]:
    """A created legacy table, on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        t = LegacyTable(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_table"))
    else:
        t = LegacyTable(f"sqlite:///{db_path}")
    assert t.create() == ["created"]
    yield t
    t.close()


@pytest.fixture
def store(sync_tracker: ExecutionTracker) -> Store:
    return sync_tracker.store


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A unique schema on the test server, dropped with its tables afterwards."""
    import psycopg

    name = "legacy_" + secrets.token_hex(4)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def raw(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read through a separate sqlite3 connection (what other processes see)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def raw_insert(path: Path, rows: list[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join(['?'] * 12)})", rows)
    conn.close()


def all_rows(t: LegacyTable) -> list[LegacyRow]:
    return [r for page in islice(t.iter_rows(), 50) for r in page]


def put_run(
    store: Store,
    run_id: str,
    task: str | None,
    start: datetime,
    status: RunStatus = RunStatus.SUCCESS,
    ms: float | None = 1500.0,
    *,
    source: str = "heartbeat",
    code: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """A run written straight to the store, at an exact start (terminal unless open)."""
    terminal = status.is_terminal
    store.apply(
        [
            NewRun(
                run_id,
                source,
                datetime_to_us(start),
                status,
                source_ref=task,
                metadata=None
                if metadata is None
                else encode_metadata(normalize_metadata(metadata)),
                finished_at=datetime_to_us(start + (ms or 0) * MS) if terminal else None,
                duration_ms=ms if terminal else None,
                error_code=code,
            )
        ]
    )


def the_run(store: Store, run_id: str) -> Run:
    run = store.get(run_id)
    assert run is not None, run_id
    return run


def execution(**fields: Any) -> Execution:
    values: dict[str, Any] = {
        "job_id": "inbox",
        "run_id": "run-1",
        "status": RunStatus.SUCCESS,
        "scheduled_at": T0,
        "started_at": T0 + 5 * MS,
        "finished_at": T0 + 1505 * MS,
        "duration_ms": 1500.0,
        "attempts": 1,
    }
    values.update(fields)
    return Execution(**values)


class CountingStore:
    """The real store, its list_runs calls recorded (limit, cursor) and bounded, so a
    paging loop that never ends fails at once instead of hanging."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[tuple[int, tuple[int, str] | None]] = []

    def list_runs(
        self, flt: RunFilter, *, limit: int, cursor: tuple[int, str] | None = None
    ) -> list[Run]:
        self.calls.append((limit, cursor))
        assert len(self.calls) <= 5, "list_runs paged on and on"
        return self.store.list_runs(flt, limit=limit, cursor=cursor)


# -- parse_time and the stored time format ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T08:00:00Z", T0),
        ("2026-03-01T08:00:00z", T0),
        ("2026-03-01T10:00:00+02:00", T0),
        ("2026-03-01 08:00:00", T0),
        ("2026-03-01 10:00:00 +02:00", T0),
        ("  2026-03-01T08:00:00.123456Z \n", T0 + timedelta(microseconds=123_456)),
        ("2026-03-01T08:00:05Z", T0 + 5 * S),
        # CPython 3.11 refuses a bare "Z" after a date: only the rewrite to an offset reads it.
        ("2026-03-01Z", datetime(2026, 3, 1, tzinfo=UTC)),
    ],
    ids=["Z", "z", "offset", "space", "space-and-offset", "padded", "seconds", "date-Z"],
)
def test_parse_time_reads_iso_text_as_aware_utc(text: str, expected: datetime) -> None:
    """ISO 8601 text with Z, z, an offset or none, T or a space, padded, is that instant in UTC."""
    result = parse_time(text)
    assert result == expected
    assert result is not None and result.tzinfo is UTC


def test_parse_time_of_datetimes_and_nothing() -> None:
    """None and "" are None; a naive datetime is UTC; an aware one is converted to UTC."""
    assert parse_time(None) is None
    assert parse_time("") is None
    naive = parse_time(datetime(2026, 3, 1, 8, 0))
    assert naive == T0 and naive is not None and naive.tzinfo is UTC
    aware = parse_time(datetime(2026, 3, 1, 10, 0, tzinfo=PLUS2))
    assert aware == T0 and aware is not None and aware.tzinfo is UTC


def test_parse_time_refuses_other_values_with_exact_messages() -> None:
    """A value that is no str or datetime, and text that is no time, raise ValueError."""
    with pytest.raises(ValueError, match=r"^not a time: int$"):
        parse_time(5)
    with pytest.raises(ValueError, match=r"^not a time: list$"):
        parse_time([])
    # only the first space becomes a T
    with pytest.raises(ValueError, match=r"^Invalid isoformat string: '2026-03-01T08:00 x y'$"):
        parse_time(" 2026-03-01 08:00 x y ")


def test_sqlite_stores_times_as_utc_iso_text(table: LegacyTable, db_path: Path) -> None:
    """On SQLite, times are stored as %Y-%m-%dT%H:%M:%S.%fZ in UTC, whatever their zone."""
    start = datetime(2026, 3, 1, 10, 0, 0, 123_456, tzinfo=PLUS2)
    table.insert(LegacyRow(None, "inbox", "success", start, completed_at=T0 + 1500 * MS))
    assert raw(db_path, f"SELECT started_at, completed_at FROM {TABLE}") == [
        ("2026-03-01T08:00:00.123456Z", "2026-03-01T08:00:01.500000Z")
    ]


def test_disagreement_to_dict_is_exact() -> None:
    """Disagreement.to_dict holds every field, its time as UTC ISO text."""
    d = Disagreement(
        "duration",
        "inbox",
        datetime(2026, 3, 1, 10, 0, 0, 5, tzinfo=PLUS2),
        7,
        "run-7",
        "success",
        "success",
        1500,
        2600.5,
    )
    assert d.to_dict() == {
        "kind": "duration",
        "task_id": "inbox",
        "started_at": "2026-03-01T08:00:00.000005Z",
        "legacy_id": 7,
        "run_id": "run-7",
        "legacy_status": "success",
        "run_status": "success",
        "legacy_ms": 1500,
        "run_ms": 2600.5,
    }


def test_check_result_figures_and_to_dict_are_exact() -> None:
    """compared, agreement_pct and coverage_pct (2 places) and to_dict, times as UTC text."""
    d = Disagreement("missing_run", "ghost", T0, legacy_id=3, legacy_status="failed")
    result = CheckResult(
        since=datetime(2026, 3, 1, 9, 0, tzinfo=PLUS2),
        until=datetime(2026, 3, 2, 9, 0, 0, 250_000, tzinfo=PLUS2),
        legacy_rows=3,
        runs=2,
        paired=2,
        agreeing=1,
        new_visibility=4,
        open_runs=5,
        legacy_by_status={"success": 2, "failed": 1},
        runs_by_status={"success": 2},
        disagreements=[d],
    )
    assert (result.compared, result.agreement_pct, result.coverage_pct) == (3, 33.33, 66.67)
    assert result.to_dict() == {
        "since": "2026-03-01T07:00:00.000000Z",
        "until": "2026-03-02T07:00:00.250000Z",
        "legacy_rows": 3,
        "runs": 2,
        "paired": 2,
        "agreeing": 1,
        "agreement_pct": 33.33,
        "coverage_pct": 66.67,
        "new_visibility": 4,
        "open_runs": 5,
        "legacy_by_status": {"success": 2, "failed": 1},
        "runs_by_status": {"success": 2},
        "disagreements": [
            {
                "kind": "missing_run",
                "task_id": "ghost",
                "started_at": "2026-03-01T08:00:00.000000Z",
                "legacy_id": 3,
                "run_id": None,
                "legacy_status": "failed",
                "run_status": None,
                "legacy_ms": None,
                "run_ms": None,
            }
        ],
    }


def test_check_result_without_window_or_rows() -> None:
    """No since/until is None in to_dict; no rows: no coverage; nothing compared: no agreement."""
    empty = CheckResult(None, None, 0, 0, 0, 0, 0, 0, {}, {})
    assert (empty.compared, empty.agreement_pct, empty.coverage_pct) == (0, None, None)
    out = empty.to_dict()
    assert (out["since"], out["until"], out["disagreements"]) == (None, None, [])
    runs_only = CheckResult(None, None, 0, 3, 0, 2, 0, 0, {}, {"success": 3})
    assert (runs_only.compared, runs_only.agreement_pct, runs_only.coverage_pct) == (
        3,
        66.67,
        None,
    )


# -- the table's name and URL ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a" * 63, "_x9", "Heartbeat_2", "s.t", "a" * 63 + "." + "b" * 63],
    ids=["63-chars", "underscore", "mixed-case", "schema-table", "63-dot-63"],
)
def test_table_names_accepted(name: str) -> None:
    """A name of up to 63 letters, digits and underscores (not first a digit), or
    schema.name on PostgreSQL, is a table name."""
    url = "postgresql://u@h/db" if "." in name else "sqlite:///x.db"
    assert LegacyTable(url, name).table == name


@pytest.mark.parametrize("url", ["sqlite:///c.db", "c.db"], ids=["url", "path"])
def test_schema_table_on_sqlite_is_refused_with_the_exact_message(url: str) -> None:
    """schema.table on SQLite is a ConfigError at construction, not a failure per statement."""
    with pytest.raises(ConfigError) as err:
        LegacyTable(url, "main.hb")
    assert str(err.value) == "legacy table 'main.hb': schema.table is for PostgreSQL only"


@pytest.mark.parametrize(
    "name",
    ["a" * 64, "a.b.c", "9abc", "a-b", "", "a.", "a." + "b" * 64, 5, None],
    ids=[
        "64-chars",
        "three-parts",
        "digit-first",
        "dash",
        "empty",
        "dot-end",
        "64-after",
        "int",
        "none",
    ],
)
def test_table_names_refused_with_the_exact_message(name: Any) -> None:
    """Anything else is a ConfigError that repeats the name."""
    with pytest.raises(ConfigError) as err:
        LegacyTable("sqlite:///x.db", name)
    assert str(err.value) == f"legacy table {name!r} is not a table name"


def test_sqlite_urls_and_bare_paths_open_that_file(tmp_path: Path) -> None:
    """sqlite:///path (in any case) and a bare path open that file; url and table are kept."""
    for n, url in enumerate(
        [
            f"sqlite:///{tmp_path / 'a.db'}",
            f"  SQLITE:///{tmp_path / 'b.db'} ",
            str(tmp_path / "c.db"),
        ]
    ):
        t = LegacyTable(url)
        assert (t.url, t.table, t.postgres) == (url, TABLE, False), n
        assert t.create() == ["created"]
        t.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db", "c.db"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/db",
        "postgres://u@h/db",
        "PostgreSQL://u@h/db",
        "POSTGRES://u@h/db",
        " postgresql://u@h/db",
    ],
    ids=["postgresql", "postgres", "mixed-case", "upper", "padded"],
)
def test_postgres_urls_are_postgres(url: str) -> None:
    """postgresql:// and postgres://, in any case, name a PostgreSQL table (nothing opens yet)."""
    t = LegacyTable(url, "s.t")
    assert (t.postgres, t.url, t.table) == (True, url, "s.t")


def test_another_scheme_is_refused_with_the_url_redacted() -> None:
    """A URL with another scheme is a ConfigError naming it, its password hidden."""
    with pytest.raises(ConfigError) as err:
        LegacyTable("mysql://user:secret@host/db")
    assert str(err.value) == (
        "legacy database 'mysql://user:***@host/db': use sqlite:///path.db or postgresql://..."
    )


@pytest.mark.parametrize(
    "url", ["", "sqlite:///", "   ", " sqlite:/// "], ids=["empty", "scheme", "blank", "padded"]
)
def test_an_empty_url_is_refused(url: str) -> None:
    """A URL that names no file is a ConfigError."""
    with pytest.raises(ConfigError) as err:
        LegacyTable(url)
    assert str(err.value) == "empty legacy database URL"


def test_repr_names_the_table_and_the_redacted_url() -> None:
    """repr shows the table and the URL with its password hidden."""
    t = LegacyTable("postgresql://user:secret@host/db", "s.t")
    assert repr(t) == "<LegacyTable s.t at 'postgresql://user:***@host/db'>"
    assert repr(LegacyTable("x.db")) == "<LegacyTable heartbeat_executions at 'x.db'>"


# -- connection and errors -------------------------------------------------------------


def test_an_unopenable_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    """A path SQLite cannot open (a directory) is a StoreError naming it, chained."""
    t = LegacyTable(str(tmp_path))
    with pytest.raises(StoreError) as err:
        t.columns()
    assert str(err.value) == (
        f"cannot open the legacy database {str(tmp_path)!r}: unable to open database file"
    )
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)


@pytest.mark.postgres
def test_an_unreachable_postgres_server_is_a_store_error(pg_url: str) -> None:
    """A PostgreSQL server that refuses the connection is a StoreError naming the error type."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = LegacyTable(f"postgresql://postgres@127.0.0.1:{port}/test")
    with pytest.raises(StoreError) as err:
        t.count()
    assert str(err.value) == "cannot connect to the legacy database: OperationalError"
    assert type(err.value.__cause__).__name__ == "OperationalError"


def test_a_postgres_table_without_psycopg_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without psycopg installed, a PostgreSQL legacy table says which extra to install
    (psycopg hidden from the import system: None in sys.modules fails its import)."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    t = LegacyTable("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(DriverMissingError) as err:
        t.count()
    assert str(err.value) == (
        "a PostgreSQL legacy table needs psycopg: pip install 'exectrack[postgres]'"
    )


def test_sqlite_connection_waits_5_s_and_is_shared_by_threads(table: LegacyTable) -> None:
    """The SQLite connection has a 5000 ms busy timeout and serves other threads too."""
    assert table._run("PRAGMA busy_timeout") == [(5000,)]
    seen: list[object] = []

    def count() -> None:
        try:
            seen.append(table.count())
        except Exception as exc:
            seen.append(exc)

    worker = threading.Thread(target=count)
    worker.start()
    worker.join(10)
    assert seen == [0]


def test_sqlite_writes_are_committed_at_once(table: LegacyTable, db_path: Path) -> None:
    """A row inserted is visible to another connection right away (autocommit)."""
    table.insert(LegacyRow(None, "inbox", "success", T0))
    assert raw(db_path, f"SELECT id, task_id FROM {TABLE}") == [(1, "inbox")]


def test_sql_errors_become_store_errors_naming_the_table(table: LegacyTable) -> None:
    """A driver error is a StoreError: the table, the error type and its text, chained."""
    with pytest.raises(StoreError) as err:
        table._run("SELECT * FROM nope")
    assert str(err.value) == f"legacy table {TABLE}: OperationalError: no such table: nope"
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)


class _Refuses:
    """A parameter whose adaptation raises an error that is not the driver's."""

    def __conform__(self, protocol: object) -> object:
        raise KeyError("not adaptable")


def test_other_errors_pass_through_unchanged(table: LegacyTable) -> None:
    """An exception that is not the driver's is raised as it is, not wrapped."""
    with pytest.raises(KeyError) as err:
        table._run("SELECT ?", (_Refuses(),))
    assert err.value.args == ("not adaptable",)


def test_close_is_idempotent_and_the_table_reopens(db_path: Path) -> None:
    """close() before any use, twice, and use after close all work."""
    t = LegacyTable(str(db_path))
    t.close()
    assert t.create() == ["created"]
    t.close()
    t.close()
    assert t.count() == 0
    t.close()


# -- schema --------------------------------------------------------------------------


def test_sqlite_schema_is_exactly_the_documented_one(db_path: Path) -> None:
    """create() makes exactly this table and started_at index on SQLite, once."""
    t = LegacyTable(str(db_path))
    assert t.columns() == set()
    assert t.create() == ["created"]
    assert t.columns() == COLUMNS
    assert t.create() == []
    t.close()
    assert raw(db_path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name") == [
        (
            "table",
            TABLE,
            TABLE,
            f'CREATE TABLE "{TABLE}" (\n'
            "    id               INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "    task_id          TEXT    NOT NULL,\n"
            "    task_description TEXT    NOT NULL DEFAULT '',\n"
            "    priority         INTEGER NOT NULL DEFAULT 0,\n"
            "    execution_mode   TEXT    NOT NULL DEFAULT 'scheduled',\n"
            "    status           TEXT    NOT NULL "
            "CHECK (status IN ('success', 'failed', 'timeout')),\n"
            "    started_at       TEXT NOT NULL,\n"
            "    completed_at     TEXT,\n"
            "    duration_ms      INTEGER,\n"
            "    output           TEXT,\n"
            "    retry_count      INTEGER NOT NULL DEFAULT 0,\n"
            "    run_id           TEXT\n"
            ")",
        ),
        (
            "index",
            f"{TABLE}_started_at",
            TABLE,
            f'CREATE INDEX "{TABLE}_started_at" ON "{TABLE}" (started_at)',
        ),
        ("table", "sqlite_sequence", "sqlite_sequence", "CREATE TABLE sqlite_sequence(name,seq)"),
    ]


PG_COLUMNS = [
    ("id", "bigint", "NO", None, "YES", "BY DEFAULT"),
    ("task_id", "text", "NO", None, "NO", None),
    ("task_description", "text", "NO", "''::text", "NO", None),
    ("priority", "integer", "NO", "0", "NO", None),
    ("execution_mode", "text", "NO", "'scheduled'::text", "NO", None),
    ("status", "text", "NO", None, "NO", None),
    ("started_at", "timestamp with time zone", "NO", None, "NO", None),
    ("completed_at", "timestamp with time zone", "YES", None, "NO", None),
    ("duration_ms", "bigint", "YES", None, "NO", None),
    ("output", "text", "YES", None, "NO", None),
    ("retry_count", "integer", "NO", "0", "NO", None),
    ("run_id", "text", "YES", None, "NO", None),
]


def pg_layout(pg_url: str, schema: str, name: str) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The columns and index names of a PostgreSQL table, read on a separate connection."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default, is_identity, "
            "identity_generation FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, name),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s "
            "ORDER BY indexname",
            (schema, name),
        ).fetchall()
    return columns, [r[0] for r in indexes]


@pytest.mark.postgres
def test_postgres_schema_is_exactly_the_documented_one(pg_url: str, pg_table: str) -> None:
    """create() makes exactly these columns and the started_at index on PostgreSQL, once,
    visible to other connections (autocommit)."""
    t = LegacyTable(pg_url, pg_table)
    assert t.columns() == set()
    assert t.create() == ["created"]
    assert t.columns() == COLUMNS
    assert t.create() == []
    t.close()
    assert pg_layout(pg_url, "public", pg_table) == (
        PG_COLUMNS,
        [f"{pg_table}_pkey", f"{pg_table}_started_at"],
    )


@pytest.mark.postgres
def test_postgres_schema_qualified_table(pg_url: str, pg_schema: str) -> None:
    """schema.table lives in that schema (index named after the table part); the bare
    name looks in the current schema only."""
    t = LegacyTable(pg_url, f"{pg_schema}.hb")
    assert t.columns() == set()
    assert t.create() == ["created"]
    assert t.columns() == COLUMNS
    assert t.create() == []
    row_id = t.insert(LegacyRow(None, "inbox", "success", T0))
    assert [r.id for r in all_rows(t)] == [row_id]
    t.close()
    assert pg_layout(pg_url, pg_schema, "hb") == (PG_COLUMNS, ["hb_pkey", "hb_started_at"])
    bare = LegacyTable(pg_url, "hb")
    assert bare.columns() == set()
    bare.close()


@pytest.mark.postgres
def test_postgres_sql_errors_become_store_errors(pg_url: str, pg_table: str) -> None:
    """A psycopg error is a StoreError: the table, the error type and its text, chained."""
    t = LegacyTable(pg_url, pg_table)
    with pytest.raises(StoreError) as err:
        t._run("SELECT * FROM nope")
    assert str(err.value) == f"legacy table {pg_table}: UndefinedTable: {err.value.__cause__}"
    assert str(err.value.__cause__).startswith('relation "nope" does not exist')
    t.close()


SEED_DDL = (
    f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, task_id TEXT, task_description TEXT, "
    "priority INTEGER, execution_mode TEXT, status TEXT, started_at TEXT, completed_at TEXT, "
    "duration_ms INTEGER, output TEXT, retry_count INTEGER)"
)


def test_seed_table_gets_run_id_and_readiness_messages(db_path: Path) -> None:
    """require_ready names a missing table or its missing columns; create() adds run_id
    to a seed table, keeping its rows."""
    t = LegacyTable(str(db_path))
    with pytest.raises(ConfigError) as err:
        t.require_ready()
    assert str(err.value) == (
        f"legacy table {TABLE} does not exist; create it with `exectrack legacy init`"
    )
    with sqlite3.connect(db_path) as conn:
        conn.execute(SEED_DDL)
        conn.execute(
            f"INSERT INTO {TABLE} VALUES (7, 'inbox', '', 0, 'manual', 'success', "
            "'2026-03-01 08:00:00', NULL, 12, 'ok', 0)"
        )
    conn.close()
    with pytest.raises(ConfigError) as err:
        t.require_ready()
    assert str(err.value) == (
        f"legacy table {TABLE} lacks columns run_id; `exectrack legacy init` adds run_id"
    )
    assert t.create() == ["added run_id"]
    assert t.columns() == COLUMNS
    t.require_ready()
    assert t.create() == []
    assert [(r.id, r.execution_mode, r.run_id) for r in all_rows(t)] == [(7, "manual", None)]
    t.close()


def test_a_table_missing_columns_is_refused_with_their_sorted_names(db_path: Path) -> None:
    """require_ready and create() list every missing column, sorted (create() leaves
    run_id out: it adds that one itself)."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE other (id INTEGER PRIMARY KEY, task_id TEXT, status TEXT)")
    conn.close()
    t = LegacyTable(str(db_path), "other")
    with pytest.raises(ConfigError) as err:
        t.require_ready()
    assert str(err.value) == (
        "legacy table other lacks columns completed_at, duration_ms, execution_mode, output, "
        "priority, retry_count, run_id, started_at, task_description; "
        "`exectrack legacy init` adds run_id"
    )
    with pytest.raises(ConfigError) as err:
        t.create()
    assert str(err.value) == (
        "legacy table other lacks columns completed_at, duration_ms, execution_mode, output, "
        "priority, retry_count, started_at, task_description; "
        "see docs/heartbeat-retirement.md for the schema"
    )
    t.close()


def test_a_refused_table_is_left_unchanged(db_path: Path) -> None:
    """create() on a table lacking other columns as well as run_id refuses it before
    changing anything: no run_id is added."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE other (id INTEGER PRIMARY KEY, task_id TEXT, status TEXT)")
    conn.close()
    t = LegacyTable(str(db_path), "other")
    with pytest.raises(ConfigError, match="lacks columns completed_at"):
        t.create()
    assert t.columns() == {"id", "task_id", "status"}
    t.close()
    assert [r[1] for r in raw(db_path, "PRAGMA table_info(other)")] == ["id", "task_id", "status"]


# -- rows ------------------------------------------------------------------------------


def test_insert_returns_assigned_and_explicit_ids(legacy: LegacyTable) -> None:
    """insert() returns the id it assigned, or keeps the one given."""
    assert legacy.insert(LegacyRow(None, "a", "success", T0)) == 1
    assert legacy.insert(LegacyRow(None, "b", "failed", T0)) == 2
    assert legacy.insert(LegacyRow(40, "c", "timeout", T0)) == 40
    assert [(r.id, r.task_id) for r in all_rows(legacy)] == [(1, "a"), (2, "b"), (40, "c")]


def test_a_row_round_trips_every_field(legacy: LegacyTable) -> None:
    """Every field written comes back as written; times as aware UTC."""
    row = LegacyRow(
        None,
        "inbox",
        "failed",
        datetime(2026, 3, 1, 10, 0, 0, 250, tzinfo=PLUS2),
        completed_at=T0 + 1500 * MS,
        duration_ms=1500,
        task_description="Summarise",
        priority=3,
        execution_mode="manual",
        output="SMTP said no",
        retry_count=2,
        run_id="run-9",
    )
    row_id = legacy.insert(row)
    [back] = all_rows(legacy)
    assert back == LegacyRow(
        row_id,
        "inbox",
        "failed",
        T0 + timedelta(microseconds=250),
        T0 + 1500 * MS,
        1500,
        "Summarise",
        3,
        "manual",
        "SMTP said no",
        2,
        "run-9",
    )
    assert back.started_at.tzinfo is UTC


@pytest.mark.postgres
def test_postgres_stores_times_as_timestamptz(pg_url: str, pg_table: str) -> None:
    """On PostgreSQL, times are timestamptz holding the same instant."""
    import psycopg

    t = LegacyTable(pg_url, pg_table)
    t.create()
    t.insert(LegacyRow(None, "inbox", "success", datetime(2026, 3, 1, 10, 0, tzinfo=PLUS2)))
    t.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        got = conn.execute(
            f'SELECT started_at, pg_typeof(started_at)::text, completed_at FROM "{pg_table}"'
        ).fetchall()
    assert got == [(T0, "timestamp with time zone", None)]


def test_windows_include_since_and_exclude_until(legacy: LegacyTable) -> None:
    """count() and iter_rows() take rows started in [since, until), compared as instants."""
    until = T0 + 10 * S
    for start in (T0 - timedelta(microseconds=1), T0, T0 + S, until - MS, until):
        legacy.insert(LegacyRow(None, "inbox", "success", start))
    since_local = T0.astimezone(PLUS2)
    until_local = until.astimezone(PLUS2)
    assert legacy.count() == 5
    assert legacy.count(since_local) == 4
    assert legacy.count(None, until_local) == 4
    assert legacy.count(since_local, until_local) == 3

    def ids(since: datetime | None, until: datetime | None) -> list[int | None]:
        return [r.id for page in islice(legacy.iter_rows(since, until), 10) for r in page]

    assert ids(since_local, until_local) == [2, 3, 4]
    assert ids(since_local, None) == [2, 3, 4, 5]
    assert ids(None, until_local) == [1, 2, 3, 4]


def test_iter_rows_pages_in_id_order(legacy: LegacyTable) -> None:
    """iter_rows(batch=2) yields pages of 2, 2 and 1 rows, by id, also within a window."""
    for n in range(6):
        legacy.insert(LegacyRow(None, f"t{n}", "success", T0 + (5 - n) * S))
    pages = [[r.id for r in page] for page in islice(legacy.iter_rows(batch=2), 10)]
    assert pages == [[1, 2], [3, 4], [5, 6]]
    window = legacy.iter_rows(T0 + S, None, batch=2)
    assert [[r.id for r in page] for page in islice(window, 10)] == [[1, 2], [3, 4], [5]]


def test_null_columns_read_as_their_defaults(loose: LegacyTable, db_path: Path) -> None:
    """NULL description, priority, mode, retries, output and times read as the defaults."""
    raw_insert(
        db_path,
        [
            (
                1,
                "a",
                None,
                None,
                None,
                "success",
                "2026-03-01 08:00:00",
                None,
                None,
                None,
                None,
                None,
            ),
            (
                2,
                "b",
                "Sum",
                4,
                "manual",
                "failed",
                "2026-03-01T10:00:00+02:00",
                "",
                1500,
                "o",
                3,
                "r",
            ),
        ],
    )
    assert all_rows(loose) == [
        LegacyRow(1, "a", "success", T0),
        LegacyRow(2, "b", "failed", T0, None, 1500, "Sum", 4, "manual", "o", 3, "r"),
    ]


@pytest.mark.parametrize("column", ["started_at", "completed_at"])
def test_a_row_with_an_unreadable_time_is_a_store_error(
    loose: LegacyTable, db_path: Path, column: str
) -> None:
    """A start or end that is no ISO 8601 time is a StoreError naming the row."""
    values = {"started_at": "2026-03-01T08:00:00Z", "completed_at": None, column: "yesterday"}
    raw_insert(
        db_path,
        [
            (
                3,
                "a",
                "",
                0,
                "scheduled",
                "success",
                values["started_at"],
                values["completed_at"],
                None,
                None,
                0,
                None,
            )
        ],
    )
    with pytest.raises(StoreError) as err:
        all_rows(loose)
    assert str(err.value) == (
        "legacy row 3: started_at/completed_at is not ISO 8601 "
        "(Invalid isoformat string: 'yesterday')"
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_naive_times_are_written_as_utc(legacy: LegacyTable) -> None:
    """A naive datetime is UTC when written, as parse_time reads it, not local time (the
    process runs at UTC-03:30): a naive start and end round-trip, naive bounds too."""
    naive = datetime(2026, 3, 1, 8, 0)
    legacy.insert(LegacyRow(None, "inbox", "success", naive, completed_at=naive + 1500 * MS))
    [back] = all_rows(legacy)
    assert (back.started_at, back.completed_at) == (T0, T0 + 1500 * MS)
    assert legacy.count(naive) == legacy.count(None, naive + MS) == 1
    assert legacy.count(naive + MS) == legacy.count(None, naive) == 0
    moved = Disagreement("missing_run", "inbox", naive)
    assert moved.to_dict()["started_at"] == "2026-03-01T08:00:00.000000Z"


def test_sqlite_windows_place_seed_times_by_instant(loose: LegacyTable, db_path: Path) -> None:
    """Rows a seed system wrote with a space or an offset fall in a window by their
    instant, not by their text (both are 08:00Z)."""
    raw_insert(
        db_path,
        [
            (1, "a", "", 0, "scheduled", "success", "2026-03-01 08:00:00", None, 5, None, 0, None),
            (2, "a", "", 0, "scheduled", "success", "2026-03-01T10:00:00+02:00", *[None] * 5),
        ],
    )
    assert loose.count(since=datetime(2026, 3, 1, 7, 0, tzinfo=UTC)) == 2
    assert loose.count(until=datetime(2026, 3, 1, 9, 0, tzinfo=UTC)) == 2
    assert loose.count(since=datetime(2026, 3, 1, 8, 0, 0, 1, tzinfo=UTC)) == 0
    first, last = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    assert loose.count(first, last) == loose.count(first) == loose.count(None, last) == 2


def _utc_text(fmt: str, suffix: str = "") -> Any:
    return lambda dt: dt.strftime(fmt) + suffix


def _at(zone: timezone, fmt: str, suffix: str) -> Any:
    return lambda dt: dt.astimezone(zone).strftime(fmt) + suffix


US = timedelta(microseconds=1)
PLUS15 = timezone(timedelta(hours=15))
# (id, how an instant is written, the smallest step that form can show). The last
# ones are forms parse_time reads and SQLite's date functions cannot.
TIME_FORMS: list[tuple[str, Any, timedelta]] = [
    ("canonical", _utc_text("%Y-%m-%dT%H:%M:%S.%fZ"), US),
    ("Z-seconds", _utc_text("%Y-%m-%dT%H:%M:%SZ"), S),
    ("z-micro", _utc_text("%Y-%m-%dT%H:%M:%S.%fz"), US),
    ("millis", lambda dt: dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", MS),
    ("offset", lambda dt: dt.astimezone(PLUS2).isoformat(), US),
    ("space", _utc_text("%Y-%m-%d %H:%M:%S.%f"), US),
    ("space-seconds", _utc_text("%Y-%m-%d %H:%M:%S"), S),
    ("space-and-offset", _at(PLUS2, "%Y-%m-%d %H:%M:%S.%f", " +02:00"), US),
    ("offset-14h", _at(timezone(timedelta(hours=14)), "%Y-%m-%dT%H:%M:%S.%f", "+14:00"), US),
    ("minutes", _utc_text("%Y-%m-%dT%H:%M"), timedelta(minutes=1)),
    ("date", _utc_text("%Y-%m-%d"), timedelta(days=1)),
    ("trailing-blank", _utc_text("%Y-%m-%dT%H:%M:%S.%fZ", " \n"), US),
    ("leading-blank", lambda dt: dt.strftime("  %Y-%m-%dT%H:%M:%S.%fZ"), US),
    ("tab-padded", _utc_text("\t%Y-%m-%d %H:%M:%S\t"), S),
    ("offset-no-colon", _at(PLUS2, "%Y-%m-%dT%H:%M:%S.%f", "+0200"), US),
    ("offset-hours", _at(PLUS2, "%Y-%m-%dT%H:%M:%S.%f", "+02"), US),
    ("offset-15h", lambda dt: dt.astimezone(PLUS15).isoformat(), US),
    ("lowercase-t", _utc_text("%Y-%m-%dt%H:%M:%S.%fZ"), US),
    ("comma", _utc_text("%Y-%m-%dT%H:%M:%S,%fZ"), US),
    ("basic", _utc_text("%Y%m%dT%H%M%S.%fZ"), US),
    ("hour", _utc_text("%Y-%m-%dT%H"), timedelta(hours=1)),
    ("date-Z", _utc_text("%Y-%m-%dZ"), timedelta(days=1)),
]
SINCE = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=3)


@pytest.mark.parametrize(
    ("spell", "step"), [f[1:] for f in TIME_FORMS], ids=[f[0] for f in TIME_FORMS]
)
def test_sqlite_windows_hold_rows_in_every_accepted_form_by_instant(
    loose: LegacyTable, db_path: Path, store: Store, spell: Any, step: timedelta
) -> None:
    """Rows written in any form parse_time reads (SQLite's date functions read or not) at,
    just before and just after since and until fall in [since, until) by instant, to the
    microsecond: count and iter_rows agree, and the import and the check see them."""
    starts = [SINCE - step, SINCE, SINCE + step, UNTIL - step, UNTIL, UNTIL + step]
    raw_insert(
        db_path,
        [
            (n, "t", "", 0, "scheduled", "success", spell(at), *[None] * 5)
            for n, at in enumerate(starts, 1)
        ],
    )
    assert [r.started_at for r in all_rows(loose)] == starts

    def ids(since: datetime | None, until: datetime | None) -> list[int | None]:
        return [r.id for page in islice(loose.iter_rows(since, until, batch=2), 10) for r in page]

    for since, until, expected in [
        (SINCE, UNTIL, [2, 3, 4]),
        (SINCE, None, [2, 3, 4, 5, 6]),
        (None, UNTIL, [1, 2, 3, 4]),
    ]:
        assert (ids(since, until), loose.count(since, until)) == (expected, len(expected))
    result = import_rows(store, loose, since=SINCE, until=UNTIL)
    assert (result.read, result.created) == (3, 3)
    imported = store.list_runs(RunFilter(sources=("heartbeat",)), limit=10)
    assert sorted(r.started_at for r in imported) == starts[1:4]
    checked = check(store, loose, since=SINCE, until=UNTIL)
    assert (checked.legacy_rows, checked.runs, checked.paired, checked.agreeing) == (3, 3, 3, 3)


MICRO_FORMS = [f[1] for f in TIME_FORMS if f[2] == US]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(0, 3 * 86_400_000_000),
    st.integers(0, 3_000_000),
    st.lists(st.tuples(st.integers(-2_000_000, 5_000_000), st.sampled_from(MICRO_FORMS))),
)
def test_sqlite_windows_agree_with_parse_time(
    since_us: int, width_us: int, rows: list[tuple[int, Any]]
) -> None:
    """For any rows in any form with microseconds, near any bounds, count and iter_rows
    hold exactly the rows parse_time places in [since, until), [since, ...), [..., until)."""
    since = SINCE + since_us * US
    until = since + width_us * US
    starts = [since + offset * US for offset, _ in rows]
    t = LegacyTable(":memory:")
    t._run(LOOSE_DDL)
    for start, (_, spell) in zip(starts, rows, strict=True):
        t._run(
            f"INSERT INTO {TABLE} (task_id, status, started_at) VALUES ('t', 'success', ?)",
            (spell(start),),
        )
    for lo, hi in [(since, until), (since, None), (None, until)]:
        expected = [
            n
            for n, start in enumerate(starts, 1)
            if (lo is None or start >= lo) and (hi is None or start < hi)
        ]
        got = [r.id for page in islice(t.iter_rows(lo, hi, batch=3), 20) for r in page]
        assert (got, t.count(lo, hi)) == (expected, len(expected))
    t.close()


def test_sqlite_counts_canonical_rows_in_sql(
    table: LegacyTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows stored in the canonical form are counted in a window by SQL alone, none
    read into Python."""
    for n in range(3):
        table.insert(LegacyRow(None, "inbox", "success", T0 + n * S))

    def refuse(value: object) -> None:
        raise AssertionError(f"parsed {value!r}")

    monkeypatch.setattr("exectrack.heartbeat._legacy_table.parse_time", refuse)
    assert table.count(T0 + S, T0 + 2 * S) == 1
    assert (table.count(T0 + S), table.count(None, T0 + 2 * S)) == (2, 2)


@pytest.mark.parametrize(
    ("started_at", "message"),
    [
        (
            "yesterday",
            "started_at/completed_at is not ISO 8601 (Invalid isoformat string: 'yesterday')",
        ),
        ("", "started_at is empty"),
        (None, "started_at is empty"),
    ],
    ids=["no-time", "empty", "null"],
)
def test_a_windowed_read_of_a_row_without_a_time_is_a_store_error(
    loose: LegacyTable, db_path: Path, started_at: str | None, message: str
) -> None:
    """A row whose start no one can read is a StoreError naming it in every window (count
    and iter_rows alike), never silently left out."""
    raw_insert(db_path, [(3, "a", "", 0, "scheduled", "success", started_at, *[None] * 5)])
    for since, until in [(SINCE, None), (None, UNTIL), (SINCE, UNTIL)]:
        with pytest.raises(StoreError) as err:
            loose.count(since, until)
        assert str(err.value) == f"legacy row 3: {message}"
        with pytest.raises(StoreError) as err:
            list(islice(loose.iter_rows(since, until), 10))
        assert str(err.value) == f"legacy row 3: {message}"


# -- dual: the rows the bridge writes ----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {
                "result": 42,
                "attempts": 3,
                "duration_ms": 1500.6,
                "metadata": {"description": "Summarise", "priority": 3},
            },
            {
                "status": "success",
                "output": "42",
                "retry_count": 2,
                "duration_ms": 1501,
                "task_description": "Summarise",
                "priority": 3,
            },
        ),
        (
            {"run_id": "", "duration_ms": None, "attempts": 0},
            {
                "status": "success",
                "output": None,
                "retry_count": 0,
                "duration_ms": None,
                "run_id": None,
            },
        ),
        (
            {"status": RunStatus.ERROR, "error": ValueError("bad password=hunter2"), "attempts": 2},
            {"status": "failed", "output": "ValueError: bad password=[REDACTED]", "retry_count": 1},
        ),
        (
            {"status": RunStatus.CANCELED, "cause": "shutdown", "result": "partial"},
            {"status": "failed", "output": "canceled: shutdown"},
        ),
        (
            {"status": RunStatus.CANCELED},
            {"status": "failed", "output": "canceled: cancelled"},
        ),
        (
            {"status": RunStatus.TIMEOUT, "cause": "deadline_exceeded", "result": "late"},
            {"status": "timeout", "output": "timeout"},
        ),
        (
            {"status": RunStatus.TIMEOUT, "error": TimeoutError("ran 5 s")},
            {"status": "timeout", "output": "TimeoutError: ran 5 s"},
        ),
        (
            {"result": "x" * 5000, "metadata": {"description": 5, "priority": "3"}},
            {"status": "success", "output": "x" * 3986 + "...[truncated]"},
        ),
        (
            {"status": RunStatus.RUNNING, "result": "odd"},
            {"status": "failed", "output": "odd"},
        ),
    ],
    ids=[
        "success",
        "bare",
        "error",
        "canceled-cause",
        "canceled",
        "timeout",
        "timeout-error",
        "long-output",
        "other-status",
    ],
)
def test_row_of_execution_maps_every_field(
    fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    """An execution becomes the legacy row the old system wrote: status, output (error,
    cause, result; cut and redacted), metadata, retries, duration and run id."""
    row = row_of_execution(execution(**fields))
    defaults: dict[str, Any] = {
        "id": None,
        "task_id": "inbox",
        "started_at": T0 + 5 * MS,
        "completed_at": T0 + 1505 * MS,
        "duration_ms": 1500,
        "task_description": "",
        "priority": 0,
        "execution_mode": "scheduled",
        "retry_count": 0,
        "run_id": "run-1",
    }
    assert row == LegacyRow(**(defaults | expected))


def test_recorder_writes_executions_that_ran_only(table: LegacyTable, db_path: Path) -> None:
    """The recorder inserts one row per execution that started, none for a skip or miss."""
    recorder = LegacyRecorder(table)
    assert recorder.table is table
    recorder(execution(started_at=None, status=RunStatus.CANCELED, cause="skipped_overlap"))
    assert table.count() == 0
    start = datetime(2026, 3, 1, 10, 0, tzinfo=PLUS2)
    recorder(execution(started_at=start, finished_at=start + 2 * S, result="done"))
    assert raw(db_path, f"SELECT * FROM {TABLE}") == [
        (
            1,
            "inbox",
            "",
            0,
            "scheduled",
            "success",
            "2026-03-01T08:00:00.000000Z",
            "2026-03-01T08:00:02.000000Z",
            1500,
            "done",
            0,
            "run-1",
        )
    ]


# -- derived run ids ---------------------------------------------------------------------


def test_stable_run_id_is_pinned_and_shaped_like_uuid7() -> None:
    """The derived id of one row is this exact value: its start in ms, version 7, variant 10."""
    row = LegacyRow(7, "inbox", "success", T0 + timedelta(microseconds=123_456))
    run_id = stable_run_id(row)
    assert run_id == PINNED_ID
    assert stable_run_id(LegacyRow(7, "inbox", "failed", row.started_at.astimezone(PLUS2))) == (
        PINNED_ID
    )
    assert [len(part) for part in run_id.split("-")] == [8, 4, 4, 4, 12]
    value = int(run_id.replace("-", ""), 16)
    assert value >> 80 == datetime_to_us(T0) // 1000 + 123
    assert (value >> 76) & 0xF == 7
    assert (value >> 62) & 0b11 == 0b10
    assert stable_run_id(LegacyRow(8, "inbox", "success", row.started_at)) == PINNED_ID_8
    # An id whose last bit is set: the random part keeps all its 62 low bits.
    assert stable_run_id(LegacyRow(9, "inbox", "success", row.started_at)) == PINNED_ID_9
    assert stable_run_id(LegacyRow(7, "inbox2", "success", row.started_at)) != PINNED_ID


PINNED_ID = "019ca869-507b-7b7e-8ef8-e512ab4af94a"
PINNED_ID_8 = "019ca869-507b-7a37-b111-6dc13ee0e35c"
PINNED_ID_9 = "019ca869-507b-7970-a269-07508a6d6f0b"


def test_stable_run_id_clamps_starts_before_1970() -> None:
    """A start before the epoch gets 0 as its time part."""
    run_id = stable_run_id(LegacyRow(1, "x", "success", datetime(1969, 12, 31, 23, 59, tzinfo=UTC)))
    assert run_id == "00000000-0000-7229-8840-cc79959dfd1a"
    assert (int(run_id.replace("-", ""), 16) >> 62) & 0b11 == 0b10


# -- import ------------------------------------------------------------------------------

LONG = "y" * 5000
MAPPING_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "success",
        {
            "completed_at": T0 + 2 * S,
            "duration_ms": 1500,
            "task_description": "Summarise",
            "priority": 3,
            "execution_mode": "manual",
            "output": "3 new mails",
        },
        {
            "finished_at": T0 + 2 * S,
            "duration_ms": 1500.0,
            "metadata": {
                "execution_mode": "manual",
                "priority": 3,
                "description": "Summarise",
                "output": "3 new mails",
            },
        },
    ),
    (
        "failed",
        {
            "status": "failed",
            "output": "SMTP said password=hunter2",
            "retry_count": 2,
            "task_description": "Mail",
        },
        {
            "status": RunStatus.ERROR,
            "error_code": "task_failed",
            "error_message": "SMTP said password=[REDACTED]",
            "metadata": {"attempt": 3, "description": "Mail"},
        },
    ),
    (
        "failed-silent",
        {"status": "failed"},
        {"status": RunStatus.ERROR, "error_code": "task_failed", "error_message": "failed"},
    ),
    (
        "failed-long",
        {"status": "failed", "output": "z" * 5000},
        {
            "status": RunStatus.ERROR,
            "error_code": "task_failed",
            "error_message": "z" * 4082 + "...[truncated]",
        },
    ),
    (
        "timeout",
        {"status": "timeout", "output": "ran past 5 s password=hunter2"},
        {
            "status": RunStatus.TIMEOUT,
            "error_code": "deadline_exceeded",
            "error_message": "ran past 5 s password=[REDACTED]",
        },
    ),
    (
        "timeout-silent",
        {"status": "timeout", "output": ""},
        {
            "status": RunStatus.TIMEOUT,
            "error_code": "deadline_exceeded",
            "error_message": "timeout",
        },
    ),
    (
        "timeout-long",
        {"status": "timeout", "output": "z" * 5000},
        {
            "status": RunStatus.TIMEOUT,
            "error_code": "deadline_exceeded",
            "error_message": "z" * 4082 + "...[truncated]",
        },
    ),
    (
        "duration-only",
        {"duration_ms": 2500},
        {"finished_at": T0 + 2500 * MS, "duration_ms": 2500.0},
    ),
    (
        "end-only",
        {"completed_at": T0 + 1250 * MS},
        {"finished_at": T0 + 1250 * MS, "duration_ms": 1250.0},
    ),
    (
        "end-before-start",
        {"completed_at": T0 - 5 * S},
        {"finished_at": T0, "duration_ms": 0.0},
    ),
    (
        "neither",
        {},
        {"finished_at": T0, "duration_ms": None},
    ),
    (
        "long-output",
        {"output": LONG, "task_description": ""},
        {"metadata": {"output": LONG[:4000]}},
    ),
    (
        "long-task",
        {"task_id": "t" * 600},
        {"source_ref": "t" * 498 + "...[truncated]"},
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in MAPPING_CASES], ids=[c[0] for c in MAPPING_CASES]
)
def test_import_maps_every_field_of_a_row(
    table: LegacyTable, store: Store, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    """An imported row is a finished heartbeat run: status, error code and message, times,
    duration and metadata exactly."""
    table.insert(
        LegacyRow(
            **({"id": None, "task_id": "inbox", "status": "success", "started_at": T0} | fields)
        )
    )
    [row] = all_rows(table)
    assert import_rows(store, table).created == 1
    run = the_run(store, stable_run_id(row))
    metadata = {
        "imported_from": TABLE,
        "legacy_id": 1,
        "execution_mode": "scheduled",
        "priority": 0,
        "attempt": 1,
    } | expected.get("metadata", {})
    want: dict[str, Any] = {
        "source": "heartbeat",
        "status": RunStatus.SUCCESS,
        "source_ref": "inbox",
        "started_at": T0,
        "finished_at": T0,
        "duration_ms": None,
        "error_code": None,
        "error_message": None,
    } | {k: v for k, v in expected.items() if k != "metadata"}
    got = {name: getattr(run, name) for name in want}
    assert (got, dict(run.metadata)) == (want, metadata)


def test_import_counts_batches_and_a_window(table: LegacyTable, store: Store) -> None:
    """import_rows reads the window [since, until) batch by batch, reports progress,
    and a second import creates nothing; rows carrying a run id keep it."""
    for n in range(6):
        table.insert(LegacyRow(None, "inbox", "success", T0 + n * S, duration_ms=10))
    table.insert(LegacyRow(None, "inbox", "success", T0 + 3 * S, run_id="run-dual"))
    seen: list[tuple[int, int]] = []
    first = import_rows(
        store,
        table,
        since=T0 + S,
        until=T0 + 5 * S,
        batch=2,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert (first.read, first.created, first.existing) == (5, 5, 0)
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert the_run(store, "run-dual").started_at == T0 + 3 * S
    again = import_rows(store, table, batch=4)
    assert (again.read, again.created, again.existing) == (7, 2, 5)


def test_import_progress_total_grows_with_rows_added_meanwhile(
    table: LegacyTable, store: Store
) -> None:
    """A row written during the import is read too, and the total reported grows to it."""
    for n in range(2):
        table.insert(LegacyRow(None, "inbox", "success", T0 + n * S))
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 1:
            table.insert(LegacyRow(None, "inbox", "success", T0 + 9 * S))

    result = import_rows(store, table, batch=1, progress=progress)
    assert seen == [(1, 2), (2, 2), (3, 3)]
    assert (result.read, result.created, result.existing) == (3, 3, 0)


def test_import_refuses_an_unknown_status(loose: LegacyTable, db_path: Path, store: Store) -> None:
    """A row whose status the import does not know is a StoreError naming it."""
    raw_insert(
        db_path,
        [(4, "a", "", 0, "scheduled", "weird", "2026-03-01T08:00:00Z", None, None, None, 0, None)],
    )
    with pytest.raises(StoreError) as err:
        import_rows(store, loose)
    assert str(err.value) == "legacy row 4: unknown status 'weird'"


# -- check -------------------------------------------------------------------------------


def test_check_pairs_by_run_id_then_derived_id(table: LegacyTable, store: Store) -> None:
    """A row pairs with the run named by its run_id, else with its derived id, however far
    apart their starts; an agreeing pair counts before a disagreeing one is listed."""
    table.insert(LegacyRow(None, "dual", "success", T0, duration_ms=1500, run_id="run-dual"))
    derived_id = table.insert(LegacyRow(None, "old", "failed", T0 + S, duration_ms=1500))
    table.insert(LegacyRow(None, "bad", "timeout", T0 + 2 * S, duration_ms=1500, run_id="run-bad"))
    [_, derived, _] = all_rows(table)
    assert derived.id == derived_id
    put_run(store, "run-dual", "dual", T0 + timedelta(hours=1))
    put_run(store, stable_run_id(derived), "old", T0 + timedelta(hours=2), RunStatus.CANCELED)
    put_run(store, "run-bad", "bad", T0 + timedelta(hours=3), RunStatus.ERROR, 1500.0)
    result = check(store, table, since=T0)
    assert (result.legacy_rows, result.runs, result.paired, result.agreeing) == (3, 3, 3, 2)
    assert result.disagreements == [
        Disagreement("status", "bad", T0 + 2 * S, 3, "run-bad", "timeout", "error", 1500, 1500.0)
    ]
    assert (result.legacy_by_status, result.runs_by_status) == (
        {"success": 1, "failed": 1, "timeout": 1},
        {"success": 1, "canceled": 1, "error": 1},
    )
    assert (result.since, result.until, result.new_visibility, result.open_runs) == (T0, None, 0, 0)


def test_check_pairs_by_time_within_two_seconds(table: LegacyTable, store: Store) -> None:
    """A row without its run pairs with a run of its task started at most 2 s away: the
    closest, each run once; 2.001 s away is too far."""
    table.insert(LegacyRow(None, "near", "success", T0, duration_ms=1500))
    table.insert(LegacyRow(None, "before", "success", T0, duration_ms=1500))
    table.insert(LegacyRow(None, "far", "success", T0, duration_ms=1500))
    table.insert(LegacyRow(None, "pick", "success", T0, duration_ms=1500))
    table.insert(LegacyRow(None, "once", "success", T0, duration_ms=1500))
    table.insert(LegacyRow(None, "once", "success", T0 + S, duration_ms=1500))
    put_run(store, "r-near", "near", T0 + 2 * S)
    put_run(store, "r-before", "before", T0 - 2 * S)
    put_run(store, "r-far", "far", T0 + 2001 * MS)
    put_run(store, "r-pick-late", "pick", T0 + 1500 * MS, RunStatus.ERROR)
    put_run(store, "r-pick-close", "pick", T0 - 500 * MS)
    put_run(store, "r-once", "once", T0 + 500 * MS)
    result = check(store, table, since=T0 - timedelta(minutes=1))
    assert (result.legacy_rows, result.runs, result.paired, result.agreeing) == (6, 6, 4, 4)
    assert [d.to_dict() for d in result.disagreements] == [
        Disagreement(
            "missing_run", "far", T0, legacy_id=3, legacy_status="success", legacy_ms=1500
        ).to_dict(),
        Disagreement(
            "missing_run", "once", T0 + S, legacy_id=6, legacy_status="success", legacy_ms=1500
        ).to_dict(),
        Disagreement(
            "missing_legacy",
            "pick",
            T0 + 1500 * MS,
            run_id="r-pick-late",
            run_status="error",
            run_ms=1500.0,
        ).to_dict(),
        Disagreement(
            "missing_legacy",
            "far",
            T0 + 2001 * MS,
            run_id="r-far",
            run_status="success",
            run_ms=1500.0,
        ).to_dict(),
    ]
    assert (result.agreement_pct, result.coverage_pct) == (50.0, 66.67)
    assert (result.legacy_by_status, result.runs_by_status) == (
        {"success": 6},
        {"success": 5, "error": 1},
    )


def test_check_status_matching_table(table: LegacyTable, store: Store) -> None:
    """success matches success, timeout timeout, failed error or canceled; nothing else."""
    pairs = [
        ("success", RunStatus.SUCCESS, True),
        ("failed", RunStatus.ERROR, True),
        ("failed", RunStatus.CANCELED, True),
        ("timeout", RunStatus.TIMEOUT, True),
        ("success", RunStatus.ERROR, False),
        ("failed", RunStatus.SUCCESS, False),
        ("failed", RunStatus.TIMEOUT, False),
        ("timeout", RunStatus.ERROR, False),
        ("success", RunStatus.TIMEOUT, False),
    ]
    for n, (legacy_status, run_status, _) in enumerate(pairs):
        table.insert(
            LegacyRow(None, f"t{n}", legacy_status, T0 + n * S, duration_ms=1500, run_id=f"r{n}")
        )
        put_run(store, f"r{n}", f"t{n}", T0 + n * S, run_status)
    result = check(store, table, since=T0)
    assert result.agreeing == 4
    assert [(d.kind, d.task_id) for d in result.disagreements] == [
        ("status", f"t{n}") for n, (_, _, agrees) in enumerate(pairs) if not agrees
    ]


def test_check_an_unknown_legacy_status_disagrees(
    loose: LegacyTable, db_path: Path, store: Store
) -> None:
    """A legacy status the check does not know matches no run status."""
    raw_insert(
        db_path,
        [(1, "a", "", 0, "scheduled", "weird", "2026-03-01T08:00:00Z", None, 5, None, 0, "r1")],
    )
    put_run(store, "r1", "a", T0, RunStatus.SUCCESS, 5.0)
    result = check(store, loose, since=T0)
    assert result.disagreements == [
        Disagreement("status", "a", T0, 1, "r1", "weird", "success", 5, 5.0)
    ]


@pytest.mark.parametrize(
    ("legacy_ms", "run_ms", "tolerance", "agrees"),
    [
        (1500, 2500.0, None, True),
        (1500, 2501.0, None, False),
        (2500, 1500.0, None, True),
        (3000, 1000.0, None, False),
        (1500, 1510.0, 10.0, True),
        (1500, 1510.5, 10.0, False),
        (None, None, None, True),
        (1500, None, None, False),
        (None, 1500.0, None, False),
    ],
    ids=[
        "at-default",
        "over-default",
        "run-shorter",
        "far-shorter",
        "at-given",
        "over-given",
        "both-none",
        "run-none",
        "legacy-none",
    ],
)
def test_check_duration_tolerance(
    table: LegacyTable,
    store: Store,
    legacy_ms: int | None,
    run_ms: float | None,
    tolerance: float | None,
    agrees: bool,
) -> None:
    """Durations agree within the tolerance (1000 ms unless given), bound included; a
    duration on one side only disagrees."""
    table.insert(LegacyRow(None, "inbox", "success", T0, duration_ms=legacy_ms, run_id="r1"))
    put_run(store, "r1", "inbox", T0, RunStatus.SUCCESS, run_ms)
    run_ms_stored = the_run(store, "r1").duration_ms
    assert run_ms_stored == run_ms
    if tolerance is None:
        result = check(store, table, since=T0)
    else:
        result = check(store, table, since=T0, duration_tolerance_ms=tolerance)
    expected = (
        []
        if agrees
        else [
            Disagreement("duration", "inbox", T0, 1, "r1", "success", "success", legacy_ms, run_ms)
        ]
    )
    assert (result.agreeing, result.disagreements) == (int(agrees), expected)


def test_check_derives_a_missing_duration_as_the_import_does(
    table: LegacyTable, store: Store
) -> None:
    """A row with an end but no duration_ms agrees with the run its import made; where it
    disagrees or has no run, legacy_ms is that derived duration (0 for an end before
    its start)."""
    table.insert(LegacyRow(None, "inbox", "success", T0, completed_at=T0 + 1250 * MS))
    assert import_rows(store, table).created == 1
    result = check(store, table, since=T0)
    assert (result.paired, result.agreeing, result.disagreements) == (1, 1, [])
    table.insert(LegacyRow(None, "slow", "success", T0 + S, completed_at=T0 + 2 * S, run_id="r"))
    put_run(store, "r", "slow", T0 + S, ms=2500.0)
    table.insert(LegacyRow(None, "ghost", "failed", T0 + 2 * S, completed_at=T0 + S))
    result = check(store, table, since=T0)
    assert (result.paired, result.agreeing) == (2, 1)
    assert result.disagreements == [
        Disagreement("duration", "slow", T0 + S, 2, "r", "success", "success", 1000.0, 2500.0),
        Disagreement("missing_run", "ghost", T0 + 2 * S, 3, None, "failed", None, 0.0, None),
    ]


def test_check_counts_open_runs_and_new_visibility_apart(table: LegacyTable, store: Store) -> None:
    """Open runs, skips, misses and failed submissions are counted apart, not compared;
    runs of other sources and outside [since, until) are left out."""
    until = T0 + timedelta(minutes=10)
    put_run(store, "open-1", "a", T0, RunStatus.RUNNING)
    put_run(store, "open-2", "a", T0 + S, RunStatus.RUNNING)
    put_run(store, "skip", "a", T0 + 2 * S, RunStatus.CANCELED, code="skipped_overlap")
    put_run(store, "miss", "a", T0 + 3 * S, RunStatus.CANCELED, code="missed_schedule")
    put_run(store, "submit", "a", T0 + 4 * S, RunStatus.ERROR, metadata={"submit_failed": True})
    put_run(store, "other-code", "b", T0 + 5 * S, RunStatus.CANCELED, None, code="shutdown")
    put_run(store, "cron", "c", T0 + 6 * S, source="cron")
    put_run(store, "early", "c", T0 - timedelta(microseconds=1))
    put_run(store, "at-until", "c", until)
    result = check(store, table, since=T0, until=until)
    assert (result.open_runs, result.new_visibility, result.runs, result.legacy_rows) == (
        2,
        3,
        1,
        0,
    )
    assert result.runs_by_status == {"canceled": 1}
    assert result.disagreements == [
        Disagreement("missing_legacy", "b", T0 + 5 * S, run_id="other-code", run_status="canceled")
    ]
    assert (result.agreement_pct, result.coverage_pct) == (0.0, None)
    cron = check(store, table, since=T0, until=until, source="cron")
    assert (cron.runs, cron.open_runs, cron.new_visibility) == (1, 0, 0)
    assert [d.run_id for d in cron.disagreements] == ["cron"]


def test_check_window_and_sorting_of_disagreements(table: LegacyTable, store: Store) -> None:
    """Only legacy rows in [since, until) count; disagreements sort by start, then task;
    a run without a task is listed under ""."""
    until = T0 + timedelta(minutes=10)
    table.insert(LegacyRow(None, "b", "success", T0))
    table.insert(LegacyRow(None, "early", "success", T0 - MS))
    table.insert(LegacyRow(None, "late", "success", until))
    table.insert(LegacyRow(None, "z", "failed", T0 + S, duration_ms=5))
    put_run(store, "r-a", "a", T0)
    put_run(store, "r-none", None, T0 + 5 * S, RunStatus.ERROR, None)
    result = check(store, table, since=T0, until=until)
    assert (result.since, result.until, result.legacy_rows) == (T0, until, 2)
    assert [d.to_dict() for d in result.disagreements] == [
        {
            "kind": "missing_legacy",
            "task_id": "a",
            "started_at": "2026-03-01T08:00:00.000000Z",
            "legacy_id": None,
            "run_id": "r-a",
            "legacy_status": None,
            "run_status": "success",
            "legacy_ms": None,
            "run_ms": 1500.0,
        },
        {
            "kind": "missing_run",
            "task_id": "b",
            "started_at": "2026-03-01T08:00:00.000000Z",
            "legacy_id": 1,
            "run_id": None,
            "legacy_status": "success",
            "run_status": None,
            "legacy_ms": None,
            "run_ms": None,
        },
        {
            "kind": "missing_run",
            "task_id": "z",
            "started_at": "2026-03-01T08:00:01.000000Z",
            "legacy_id": 4,
            "run_id": None,
            "legacy_status": "failed",
            "run_status": None,
            "legacy_ms": 5,
            "run_ms": None,
        },
        {
            "kind": "missing_legacy",
            "task_id": "",
            "started_at": "2026-03-01T08:00:05.000000Z",
            "legacy_id": None,
            "run_id": "r-none",
            "legacy_status": None,
            "run_status": "error",
            "legacy_ms": None,
            "run_ms": None,
        },
    ]


def test_more_than_a_thousand_rows_and_runs(
    table: LegacyTable, db_path: Path, store: Store
) -> None:
    """Rows are read 1000 at a time by default, the import reports each 1000, and the
    check pages the runs 1000 at a time from the last run of each page."""
    raw_insert(
        db_path,
        [
            (
                None,
                "inbox",
                "",
                0,
                "scheduled",
                "success",
                (T0 + n * S).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                None,
                1000,
                None,
                0,
                None,
            )
            for n in range(1001)
        ],
    )
    assert [len(page) for page in islice(table.iter_rows(), 5)] == [1000, 1]
    seen: list[tuple[int, int]] = []
    result = import_rows(store, table, progress=lambda d, t: seen.append((d, t)))
    assert (result.read, result.created, seen) == (1001, 1001, [(1000, 1001), (1001, 1001)])
    put_run(store, "open", "inbox", T0 + 1500 * MS, RunStatus.RUNNING)  # the 1000th newest
    counting = CountingStore(store)
    summary = check(counting, table, since=None)  # type: ignore[arg-type]
    assert counting.calls == [(1000, None), (1000, (datetime_to_us(T0 + 1500 * MS), "open"))]
    assert (summary.legacy_rows, summary.runs, summary.paired, summary.agreeing) == (
        1001,
        1001,
        1001,
        1001,
    )
    assert (summary.open_runs, summary.disagreements) == (1, [])

"""What both SQL engines share below the store: the columns, the cursor subset, and
``SqlDialect``, the data that says how one engine spells what differs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

__all__ = [
    "COLS",
    "COLUMNS",
    "FINISH_COLUMNS",
    "Cursor",
    "Migration",
    "SqlDialect",
    "json_loads_object",
    "rollup_tables_v5",
    "runs_table_v1",
    "runs_table_v2",
    "runs_table_v3",
    "runs_table_v4",
    "sql",
]

COLUMNS = (
    "id",
    "source",
    "source_ref",
    "session_id",
    "parent_id",
    "status",
    "started_at",
    "finished_at",
    "duration_ms",
    "error_code",
    "error_message",
    "retryable",
    "metadata",
    "owner",
    "heartbeat_at",
    "deadline_at",
    "updated_at",
    "lease_until",
    "items",
    "first_item_ms",
)
COLS = ", ".join(COLUMNS)
FINISH_COLUMNS = (
    "id",
    "status",
    "finished_at",
    "duration_ms",
    "error_code",
    "error_message",
    "retryable",
    "metadata",
    "items",
    "first_item_ms",
)


class Cursor(Protocol):
    """The DB-API subset both drivers offer."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: Any, params: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Migration(NamedTuple):
    version: int
    name: str
    statements: tuple[str, ...]


class SqlDialect(NamedTuple):
    """What differs between engines, as data and small functions."""

    param: str  # "?" or "%s"
    json_param: str  # "?" or "%s::jsonb"
    duration_since_start: str  # SQL: ms from started_at to a time param, never below 0
    duration_between: str  # SQL: ms from {start} to {end}, never below 0 (clock skew)
    # Batches as multi-row statements (SQLite: executemany hands the GIL over once per
    # row) or executemany (psycopg pipelines it, which beats one big statement).
    multirow: bool
    finish_casts: tuple[str, ...]  # casts for FINISH_COLUMNS, in order
    ts: Callable[[int], Any]  # microseconds -> driver parameter
    ts_out: Callable[[Any], int]  # driver value -> microseconds
    json_out: Callable[[Any], dict[str, Any]]
    bool_out: Callable[[Any], bool]
    migrations_table: str  # CREATE TABLE IF NOT EXISTS exectrack_migrations (...)
    # The change feed (schema v3). ``change_stamp``: the SQL value every write that
    # changes what a reader sees sets ``change_seq`` to; stamps grow in commit order
    # once ``change_settled`` (a WHERE term) holds. ``seq_cast`` types a stamp
    # parameter; ``seq_out`` reads a stamp back as an int.
    change_stamp: str
    change_settled: str
    seq_cast: str
    seq_out: Callable[[Any], int]
    # The text filter (schema v6, ``_text.py``). ``text_term``: needle -> a WHERE term
    # and its parameters. ``text_page``: where the engine reads a text-filtered page
    # in steps of its own (cursor, columns, other terms, their parameters, needle,
    # limit) -> rows, or None to use ``text_term`` in one statement.
    text_term: Callable[[str], tuple[str, list[Any]]]
    text_page: Callable[[Cursor, str, list[str], list[Any], str, int], list[Any] | None] | None
    # Appended to the SELECT of the fold position (schema v5): PostgreSQL skips a fold
    # while another transaction folds; SQLite's write lock already serialises them.
    row_lock: str = ""
    # Put before a column to keep the planner from using its index (SQLite's "+x";
    # PostgreSQL's planner weighs its statistics instead).
    unindexed: str = ""


def sql(dialect: SqlDialect, text: str) -> str:
    return text.replace("{json}", dialect.json_param).replace("?", dialect.param)


def json_loads_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    loaded = json.loads(value)
    return loaded if isinstance(loaded, dict) else {}


_STATUS_CHECK = "status IN ('queued', 'running', 'success', 'error', 'canceled', 'timeout')"


def runs_table_v1(
    *, id_type: str, ts: str, real: str, boolean: str, json_type: str, empty_json: str
) -> tuple[str, ...]:
    """Schema version 1, once for every engine; only the column types differ."""
    return (
        f"""CREATE TABLE runs (
            id {id_type} NOT NULL PRIMARY KEY,
            source TEXT NOT NULL,
            source_ref TEXT,
            session_id TEXT,
            parent_id TEXT,
            status TEXT NOT NULL CHECK ({_STATUS_CHECK}),
            started_at {ts} NOT NULL,
            finished_at {ts},
            duration_ms {real},
            error_code TEXT,
            error_message TEXT,
            retryable {boolean},
            metadata {json_type} NOT NULL DEFAULT {empty_json},
            owner TEXT,
            heartbeat_at {ts},
            deadline_at {ts},
            lease_until {ts},
            updated_at {ts} NOT NULL,
            CHECK ((finished_at IS NULL) = (status IN ('queued', 'running')))
        )""",
        "CREATE INDEX runs_started ON runs (started_at, id)",
        "CREATE INDEX runs_source_started ON runs (source, started_at, id)",
        "CREATE INDEX runs_status_started ON runs (status, started_at, id)",
        "CREATE INDEX runs_session_started ON runs (session_id, started_at, id)"
        " WHERE session_id IS NOT NULL",
        "CREATE INDEX runs_parent ON runs (parent_id) WHERE parent_id IS NOT NULL",
        "CREATE INDEX runs_open ON runs (owner, started_at) WHERE finished_at IS NULL",
    )


def runs_table_v2(*, real: str) -> tuple[str, ...]:
    """Schema version 2: what a stream produced. ``items``: how many it yielded (or
    the entry point counted); ``first_item_ms``: from the run's start to its first."""
    return (
        "ALTER TABLE runs ADD COLUMN items INTEGER",
        f"ALTER TABLE runs ADD COLUMN first_item_ms {real}",
    )


def runs_table_v3(*, seq_type: str, seq_default: str) -> tuple[str, ...]:
    """Schema version 3: the change feed. ``change_seq`` is stamped by every write that
    changes a run (create, start, finish, reap; not a lease renewal); runs written
    before this version hold the default and come first in the feed."""
    return (
        f"ALTER TABLE runs ADD COLUMN change_seq {seq_type} NOT NULL DEFAULT {seq_default}",
        "CREATE INDEX runs_changes ON runs (change_seq, id)",
    )


def runs_table_v4() -> tuple[str, ...]:
    """Schema version 4: a source_ref's runs newest first (a badge, the panel's
    source_ref filter, the latest run of a ref that never ran) without a scan."""
    return (
        "CREATE INDEX runs_ref_started ON runs (source_ref, started_at, id)"
        " WHERE source_ref IS NOT NULL",
    )


def rollup_tables_v5(*, big: str, real: str, seq_type: str, seq_default: str) -> tuple[str, ...]:
    """Schema version 5: rollups (``stores/_rollup.py``). ``bucket`` is the start of
    an hour or a day (``grain``, both in microseconds since the epoch, UTC);
    ``error_code`` is '' for none. The fold position starts before every change, so
    the first fold adds every finished run stored so far."""
    return (
        f"""CREATE TABLE run_rollups (
            grain {big} NOT NULL,
            bucket {big} NOT NULL,
            source TEXT NOT NULL,
            status TEXT NOT NULL,
            error_code TEXT NOT NULL,
            runs {big} NOT NULL,
            durations {big} NOT NULL,
            duration_sum {real} NOT NULL,
            first_items {big} NOT NULL,
            PRIMARY KEY (grain, bucket, source, status, error_code)
        )""",
        f"""CREATE TABLE run_histograms (
            grain {big} NOT NULL,
            bucket {big} NOT NULL,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,
            counts TEXT NOT NULL,
            PRIMARY KEY (grain, bucket, source, kind)
        )""",
        f"""CREATE TABLE run_rollup_state (
            id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            folded_seq {seq_type} NOT NULL,
            folded_id TEXT NOT NULL
        )""",
        f"INSERT INTO run_rollup_state (id, folded_seq, folded_id) VALUES (1, {seq_default}, '')",
    )

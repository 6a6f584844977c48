"""What both SQL engines share below the store: the columns, the cursor subset, and
``SqlDialect``, the data that says how one engine spells what differs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "COLS",
    "COLUMNS",
    "FINISH_COLUMNS",
    "Cursor",
    "Migration",
    "SqlDialect",
    "json_loads_object",
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
)


class Cursor(Protocol):
    """The DB-API subset both drivers offer."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: Any, params: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SqlDialect:
    """What differs between engines, as data and small functions."""

    param: str  # "?" or "%s"
    json_param: str  # "?" or "%s::jsonb"
    like: str  # "LIKE" (SQLite: ASCII case-insensitive) or "ILIKE"
    duration_since_start: str  # SQL giving ms between a time param and started_at
    duration_between: str  # SQL giving ms from {start} to {end} (two time expressions)
    finish_casts: tuple[str, ...]  # casts for (id, status, finished_at, duration_ms,
    #                                error_code, error_message, retryable, metadata)
    ts: Callable[[int], Any]  # microseconds -> driver parameter
    ts_out: Callable[[Any], int]  # driver value -> microseconds
    json_out: Callable[[Any], dict[str, Any]]
    bool_out: Callable[[Any], bool]
    migrations_table: str  # CREATE TABLE IF NOT EXISTS exectrack_migrations (...)


def sql(dialect: SqlDialect, text: str) -> str:
    return text.replace("{json}", dialect.json_param).replace("?", dialect.param)


def json_loads_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    loaded = json.loads(value)
    return loaded if isinstance(loaded, dict) else {}

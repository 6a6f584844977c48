"""Stores: one protocol, one shared SQL base, one module per engine."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from exectrack._echo import echo, echo_url
from exectrack.errors import ConfigError
from exectrack.stores._base import Page, RunFilter, Store

if TYPE_CHECKING:
    from exectrack.stores._records import (
        ApplyResult,
        Command,
        FinishResult,
        FinishRun,
        MarkRunning,
        NewRun,
    )
    from exectrack.stores._summaries import Reaped, SourceAggregate, SourceSummary

__all__ = [
    "ApplyResult",
    "Command",
    "FinishResult",
    "FinishRun",
    "MarkRunning",
    "NewRun",
    "Page",
    "Reaped",
    "RunFilter",
    "SourceAggregate",
    "SourceSummary",
    "Store",
    "open_store",
    "redact_url",
]


def open_store(url: str | os.PathLike[str], *, migrate: bool = True) -> Store:
    """Open the store a URL names, without connecting yet.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``, a
    plain file path (SQLite), or ``postgresql://user:password@host:5432/db`` (also
    ``postgres://``; needs ``pip install 'exectrack[postgres]'``). Connections open,
    and migrations run, on first use. A URL that cannot be parsed or used is a
    ConfigError, with any password redacted.

    ``migrate=False`` opens an existing exectrack database and changes nothing about
    it: no database file, schema or migration is ever created, and SQLite's journal
    mode is left as it is. A database without exectrack's schema (or with an older
    one) is then a SchemaError at first use; one migrated by a newer exectrack is a
    SchemaTooNewError either way.
    """
    text = os.fspath(url).strip()
    if not text:
        raise ConfigError("empty database URL")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
    elif text.lower().startswith(_URL_PREFIXES):
        raise ConfigError(
            f"database URL {echo_url(text)} has no '//': "
            "use sqlite:///path.db or postgresql://user@host/db"
        )
    else:
        scheme = ""
    if scheme == "":
        from exectrack.stores.sqlite import SQLiteStore

        return SQLiteStore(text, migrate=migrate)
    if scheme == "sqlite":
        from exectrack.stores.sqlite import SQLiteStore

        return SQLiteStore.from_url(text, migrate=migrate)
    if scheme in ("postgresql", "postgres"):
        from exectrack.stores.postgres import PostgresStore

        return PostgresStore.from_url(text, migrate=migrate)
    raise ConfigError(
        f"unsupported database URL scheme {echo(scheme)} in {echo_url(text)}; "
        "use sqlite:///path.db or postgresql://user@host/db"
    )


_URL_PREFIXES = ("sqlite:", "postgresql:", "postgres:")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    from exectrack._redact import redact_text

    return redact_text(url)


_SUMMARIES = frozenset({"Reaped", "SourceAggregate", "SourceSummary"})
_RECORDS = (
    frozenset(__all__) - {"Page", "RunFilter", "Store", "open_store", "redact_url"} - _SUMMARIES
)


def __getattr__(name: str) -> Any:
    """The write commands and results (``stores/_records.py``) and the summaries
    (``stores/_summaries.py``) load on first use: a command that only reads runs does
    not pay for creating them, nor ``report`` for the write commands."""
    if name in _RECORDS:
        from exectrack.stores import _records

        return getattr(_records, name)
    if name in _SUMMARIES:
        from exectrack.stores import _summaries

        return getattr(_summaries, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

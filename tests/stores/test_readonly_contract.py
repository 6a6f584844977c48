"""Stores opened with ``migrate=False``, on every engine: they use an exectrack schema as
they find it and never create one, whatever the database holds."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exectrack.cli import main
from exectrack.errors import ConfigError, SchemaError, SchemaTooNewError, StoreError
from exectrack.stores import NewRun, RunFilter, open_store
from exectrack.stores._dialect import sql
from exectrack.stores._sql import SqlStore

from .conftest import PostgresServer, Target

T0 = 1_764_000_000_000_000

OPERATIONS: list[tuple[str, Callable[[SqlStore], Any]]] = [
    ("list_runs", lambda s: s.list_runs(RunFilter(), limit=10)),
    ("count_runs", lambda s: s.count_runs(RunFilter())),
    ("get", lambda s: s.get("no-such-run")),
    ("summarize", lambda s: s.summarize(None, T0)),
    ("open_owners", lambda s: s.open_owners()),
    ("reap_dry_run", lambda s: s.reap(T0, dry_run=True)),
    ("reap", lambda s: s.reap(T0)),
    ("create", lambda s: s.create(NewRun("r1", "chat", T0))),
    ("heartbeat", lambda s: s.heartbeat("me", T0, T0 + 1)),
]


def never_migrating(target: Target) -> SqlStore:
    store = open_store(target.url, migrate=False)
    assert isinstance(store, SqlStore)
    target.opened.append(store)
    return store


def add_foreign_table(target: Target, request: pytest.FixtureRequest) -> None:
    """Make the database another application's: one table of its own, and for SQLite
    the default rollback journal. (A SQLite memory database is private to its store.)"""
    if target.engine == "sqlite-file":
        conn = sqlite3.connect(target.url)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
        conn.close()
    elif target.engine == "postgres":
        server: PostgresServer = request.getfixturevalue("pg")
        server.execute(f'CREATE SCHEMA "{target.schema}"')
        server.execute(f'CREATE TABLE "{target.schema}".notes (body TEXT)')


def foreign_shape(target: Target, request: pytest.FixtureRequest) -> object:
    """What an exectrack migration would change: the tables, and SQLite's journal mode."""
    if target.engine == "sqlite-file":
        conn = sqlite3.connect(target.url)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY 1")]
            return tables, conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()
    if target.engine == "postgres":
        server: PostgresServer = request.getfixturevalue("pg")
        return server.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
            (target.schema,),
        )
    return None


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=[n for n, _ in OPERATIONS])
def test_a_database_without_the_schema_is_a_schema_error(
    target: Target, request: pytest.FixtureRequest, name: str, operation: Callable[..., Any]
) -> None:
    """Every operation of a store that never migrates says the schema is missing and how
    to create it; the database keeps exactly what it had."""
    add_foreign_table(target, request)
    before = foreign_shape(target, request)
    store = never_migrating(target)
    with pytest.raises(SchemaError, match=r"has no exectrack schema; run `exectrack migrate`"):
        operation(store)
    assert foreign_shape(target, request) == before
    assert store.schema_version() == 0


def test_a_missing_postgres_schema_is_not_created(pg: PostgresServer) -> None:
    """A `?schema=` that does not exist stays absent (reads never run CREATE SCHEMA)."""
    schema, url = pg.new_schema()
    store = open_store(url, migrate=False)
    try:
        with pytest.raises(SchemaError, match="has no exectrack schema"):
            store.list_runs(RunFilter(), limit=1)
    finally:
        store.close()
    assert pg.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == []


def test_a_migrated_database_is_read_and_written_as_usual(shared_target: Target) -> None:
    """On a database exectrack migrated, a never-migrating store reads, reaps and writes."""
    shared_target.store.migrate()
    shared_target.store.create(NewRun("r1", "chat", T0, owner="gone", lease_until=T0))
    store = never_migrating(shared_target)
    assert [r.id for r in store.list_runs(RunFilter(), limit=10)] == ["r1"]
    assert [r.run_id for r in store.reap(T0 + 1)] == ["r1"]
    assert store.create(NewRun("r2", "skill", T0 + 2))
    assert store.count_runs(RunFilter()) == {("chat", "error"): 1, ("skill", "running"): 1}


def test_a_newer_schema_is_schema_too_new(shared_target: Target) -> None:
    """A schema migrated by a newer exectrack is refused either way, never touched."""
    shared_target.store.migrate()
    newer = shared_target.store.latest_version + 5
    shared_target.execute(
        sql(
            shared_target.store.dialect,
            "INSERT INTO exectrack_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        ),
        (newer, "from the future", "2030-01-01T00:00:00+00:00"),
    )
    store = never_migrating(shared_target)
    with pytest.raises(SchemaTooNewError, match=f"schema version {newer}"):
        store.list_runs(RunFilter(), limit=1)
    assert store.schema_version() == newer


def test_migrate_on_a_never_migrating_store_is_refused(target: Target) -> None:
    """migrate() is the one thing such a store will not do; it says how to get one that does."""
    store = never_migrating(target)
    with pytest.raises(ConfigError, match="migrate=False"):
        store.migrate()


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    """No file, no directory: a StoreError that names the path, nothing created."""
    path = tmp_path / "missing" / "runs.db"
    store = open_store(str(path), migrate=False)
    with pytest.raises(StoreError, match="no database at"):
        store.list_runs(RunFilter(), limit=1)
    assert not path.parent.exists()
    store.close()


@pytest.mark.parametrize("command", [["runs", "list"], ["report"], ["reap"]], ids=" ".join)
def test_cli_commands_on_a_database_without_the_schema(
    shared_target: Target,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """On both engines the CLI says to run `exectrack migrate` and creates nothing."""
    add_foreign_table(shared_target, request)
    before = foreign_shape(shared_target, request)
    code = main(["--database", shared_target.url, *command])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "has no exectrack schema; run `exectrack migrate`" in err
    assert foreign_shape(shared_target, request) == before


def test_an_older_schema_says_both_versions_and_to_migrate(shared_target: Target) -> None:
    """A schema an older exectrack left is refused by a never-migrating store, with
    both versions and the command that upgrades it; nothing is changed."""
    shared_target.store.migrate()
    latest = shared_target.store.latest_version
    shared_target.execute(
        sql(shared_target.store.dialect, "DELETE FROM exectrack_migrations WHERE version = ?"),
        (latest,),
    )
    store = never_migrating(shared_target)
    with pytest.raises(SchemaError) as info:
        store.list_runs(RunFilter(), limit=1)
    assert str(info.value).endswith(
        f"has schema version {latest - 1}, older than this exectrack's {latest}; "
        "run `exectrack migrate`"
    )
    assert store.schema_version() == latest - 1

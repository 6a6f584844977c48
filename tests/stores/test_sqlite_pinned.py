"""The SQLite engine, pinned: URLs and their options (every error's text), the
constructor's checks and bounds, the pragmas every connection gets, what opening a
directory or a missing file says, and the store's own names for itself."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from exectrack._echo import echo_url
from exectrack.errors import ConfigError, StoreError
from exectrack.stores import NewRun, RunFilter, open_store
from exectrack.stores.sqlite import SQLiteStore, parse_sqlite_url

MAX_BUSY = 2**31 - 1


@pytest.mark.parametrize(
    ("url", "path", "options"),
    [
        ("sqlite:///runs.db", "runs.db", {}),
        ("sqlite:////abs/runs.db", "/abs/runs.db", {}),
        ("sqlite:///:memory:", ":memory:", {}),
        ("sqlite:///a%20b.db", "a b.db", {}),
        ("sqlite:runs.db", "runs.db", {}),
        (
            "sqlite:///r.db?synchronous=full&busy_timeout=7",
            "r.db",
            {"synchronous": "full", "busy_timeout": "7"},
        ),
        ("sqlite:///r.db?busy_timeout=", "r.db", {"busy_timeout": ""}),
    ],
)
def test_parse_sqlite_url(url: str, path: str, options: dict[str, str]) -> None:
    assert parse_sqlite_url(url) == (path, options)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql:///x", "not a sqlite URL: 'postgresql:///x'"),
        (
            "sqlite://host/runs.db",
            "sqlite URL 'sqlite://host/runs.db' has a host part; use sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:",
        ),
        ("sqlite:///", "sqlite URL 'sqlite:///' names no file; e.g. sqlite:///runs.db"),
        ("sqlite://", "sqlite URL 'sqlite://' names no file; e.g. sqlite:///runs.db"),
        ("sqlite://[::1/x", "cannot parse database URL 'sqlite://[::1/x': Invalid IPv6 URL"),
    ],
)
def test_unusable_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sqlite_url(url)
    assert str(caught.value) == message


def test_url_options_reach_the_store(tmp_path: Path) -> None:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'r.db'}?synchronous=full&busy_timeout=7")
    try:
        assert pragmas(store) == (2, 7, "wal")
    finally:
        store.close()
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert pragmas(store) == (1, 5000, "wal")  # normal, 5 s
    finally:
        store.close()


def test_a_store_from_a_url_that_must_not_migrate_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SQLiteStore.from_url(f"sqlite:///{tmp_path / 'none.db'}", migrate=False).list_runs(
            RunFilter(), limit=1
        )
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "colour=red",
            "unknown sqlite URL option(s) 'colour' in {url}; known: synchronous, busy_timeout",
        ),
        (
            "b=1&a=2&busy_timeout=1",
            "unknown sqlite URL option(s) 'a, b' in {url}; known: synchronous, busy_timeout",
        ),
        ("busy_timeout=soon", "busy_timeout in {url} is not an integer"),
        ("busy_timeout=", "busy_timeout in {url} is not an integer"),
        ("busy_timeout=-1", "busy_timeout=-1: must be between 0 and 2147483647 ms"),
        ("synchronous=fast", "synchronous='fast': use one of off, normal, full, extra"),
    ],
)
def test_bad_url_options_say_why(tmp_path: Path, query: str, message: str) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}?{query}"
    with pytest.raises(ConfigError) as caught:
        SQLiteStore.from_url(url)
    assert str(caught.value) == message.format(url=echo_url(url))
    assert not (tmp_path / "r.db").exists()


def pragmas(store: SQLiteStore) -> tuple[int, int, str]:
    conn = store._conn()
    return (
        conn.execute("PRAGMA synchronous").fetchone()[0],
        conn.execute("PRAGMA busy_timeout").fetchone()[0],
        conn.execute("PRAGMA journal_mode").fetchone()[0],
    )


@pytest.mark.parametrize(
    ("synchronous", "level"), [("off", 0), ("NORMAL", 1), ("full", 2), ("Extra", 3)]
)
def test_every_connection_gets_the_pragmas(tmp_path: Path, synchronous: str, level: int) -> None:
    store = SQLiteStore(tmp_path / "r.db", synchronous=synchronous, busy_timeout_ms=1234)
    try:
        assert pragmas(store) == (level, 1234, "wal")
        other: list[tuple[int, int, str]] = []
        import threading

        thread = threading.Thread(target=lambda: other.append(pragmas(store)))
        thread.start()
        thread.join(30)
        assert other == [(level, 1234, "wal")]
    finally:
        store.close()


def test_a_memory_store_keeps_its_journal_in_memory() -> None:
    store = SQLiteStore(":memory:")
    try:
        assert store.memory is True
        assert pragmas(store) == (1, 5000, "memory")
        assert (store.path, store.url) == (":memory:", "sqlite:///:memory:")
    finally:
        store.close()


@pytest.mark.parametrize("busy", [0, MAX_BUSY])
def test_the_busy_timeout_bounds_are_allowed(tmp_path: Path, busy: int) -> None:
    store = SQLiteStore(tmp_path / "r.db", busy_timeout_ms=busy)
    try:
        assert pragmas(store)[1] == busy
    finally:
        store.close()


@pytest.mark.parametrize("busy", [-1, MAX_BUSY + 1])
def test_a_busy_timeout_out_of_bounds_is_refused(tmp_path: Path, busy: int) -> None:
    with pytest.raises(ConfigError) as caught:
        SQLiteStore(tmp_path / "r.db", busy_timeout_ms=busy)
    assert str(caught.value) == f"busy_timeout={busy}: must be between 0 and {MAX_BUSY} ms"


def test_a_path_with_a_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        SQLiteStore(f"{tmp_path}/a\x00b.db")
    assert (
        str(caught.value)
        == f"database path {f'{tmp_path}/a' + chr(0) + 'b.db'!r} contains a NUL character"
    )


def test_the_store_names_itself_by_its_expanded_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sub//./r.db")
    try:
        assert (store.path, store.url) == ("sub/r.db", "sqlite:///sub/r.db")
        assert store._file == str(tmp_path / "sub" / "r.db")
        assert repr(store) == "SQLiteStore('sub/r.db')"
        store.list_runs(RunFilter(), limit=1)
        os.chdir("/")  # the host changes directory: the store keeps its file
        store.create(NewRun("r", "skill", 1))
        assert (tmp_path / "sub" / "r.db").exists()
    finally:
        store.close()


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{tmp_path / 'dir.db'}").list_runs(RunFilter(), limit=1)
    assert str(caught.value) == (
        f"cannot open sqlite:///{tmp_path / 'dir.db'}: {tmp_path / 'dir.db'} is a directory"
    )


def test_a_missing_file_without_migrations_says_how_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{path}", migrate=False).list_runs(RunFilter(), limit=1)
    assert str(caught.value) == (
        f"no database at {path}; `exectrack migrate` creates it "
        "(a store opened with migrate=False never does)"
    )
    assert not path.exists()


def test_an_existing_database_without_migrations_is_opened_read_write(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    first = open_store(f"sqlite:///{path}")
    first.create(NewRun("r", "skill", 1))
    first.close()
    store = open_store(f"sqlite:///{path}", migrate=False)
    try:
        assert isinstance(store, SQLiteStore)
        conn = store._conn()
        conn.execute("CREATE TABLE scratch (x)")  # read-write, not read-only
        assert sqlite3.connect(path).execute("SELECT count(*) FROM scratch").fetchone() == (0,)
    finally:
        store.close()


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("database table is LOCKED"), True),
        (sqlite3.OperationalError("database is busy"), True),
        (sqlite3.OperationalError("unable to open database file"), True),
        (sqlite3.OperationalError("disk I/O error"), True),
        (sqlite3.OperationalError("attempt to write a readonly database"), True),
        (sqlite3.OperationalError("the file is read-only"), True),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), True),
        (PermissionError(13, "Permission denied"), True),
        (sqlite3.IntegrityError("UNIQUE constraint failed: runs.id"), False),
        (sqlite3.OperationalError("no such table: runs"), False),
        (sqlite3.DatabaseError("file is not a database"), False),
    ],
)
def test_which_errors_are_worth_a_retry(exc: BaseException, unavailable: bool) -> None:
    from exectrack.errors import StoreUnavailableError
    from exectrack.stores.sqlite import _translate

    translated = _translate(exc, "write failed")
    assert type(translated) is (StoreUnavailableError if unavailable else StoreError)
    assert str(translated) == f"write failed: {exc}"


# -- switching a new file to WAL -----------------------------------------------------------


def locked_new_file(path: Path) -> sqlite3.Connection:
    """A new, empty database file another connection holds the write lock of: the
    switch to WAL needs the file to itself, and SQLite refuses it at once, without
    its busy handler (so the store retries)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_wal_waits_for_a_lock_that_ends_within_the_busy_timeout(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "r.db"
    holder = locked_new_file(path)
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    store = SQLiteStore(path, busy_timeout_ms=30_000)
    try:
        assert pragmas(store)[2] == "wal"
    finally:
        release.join()
        holder.close()
        store.close()


def test_wal_gives_up_when_the_lock_outlasts_the_busy_timeout(tmp_path: Path) -> None:
    from exectrack.errors import StoreUnavailableError

    path = tmp_path / "r.db"
    holder = locked_new_file(path)
    store = SQLiteStore(path, busy_timeout_ms=50)
    try:
        with pytest.raises(StoreUnavailableError, match="locked"):
            store.list_runs(RunFilter(), limit=1)
    finally:
        holder.close()
        store.close()


def test_a_file_that_is_not_a_database_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    path.write_bytes(b"not a database, just text" * 100)
    store = SQLiteStore(path, busy_timeout_ms=MAX_BUSY)  # no waiting for this
    try:
        with pytest.raises(StoreError, match="file is not a database"):
            store.list_runs(RunFilter(), limit=1)
    finally:
        store.close()


# -- the text index and the planner's statistics --------------------------------------------


def test_index_text_moves_the_queued_runs_with_text(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    try:
        store.apply(
            [
                NewRun("a", "skill", 1, source_ref="alpha"),
                NewRun("b", "skill", 2, source_ref="beta"),
                NewRun("c", "skill", 3),  # no text: never queued
            ]
        )
        assert store.index_text() == 2
        assert store.index_text() == 0
    finally:
        store.close()


def test_the_text_queue_drains_itself_every_so_many_created_runs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    try:
        assert store.text_drain_every == 1000
        store.text_drain_every = 3
        store.apply([NewRun("a", "skill", 1, source_ref="alpha")])
        store.apply([NewRun("b", "skill", 2, source_ref="beta")])
        assert store._text_queued == 2
        store.apply([NewRun("c", "skill", 3, source_ref="gamma")])  # the third: drained
        assert store._text_queued == 0
        assert store.index_text() == 0
        store.apply([NewRun("d", "skill", 4, source_ref="delta")])
        assert store.index_text() == 1
    finally:
        store.close()


def test_statistics_are_refreshed_with_a_bounded_analyze(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    try:
        store.apply([NewRun(f"r{i}", "skill", i) for i in range(20)])
        store._refresh_statistics()
        conn = store._conn()
        assert conn.execute("PRAGMA analysis_limit").fetchone() == (400,)
        tables = {row[0] for row in conn.execute("SELECT tbl FROM sqlite_stat1")}
        assert tables == {"runs"}
    finally:
        store.close()


# -- connections, paths, a replaced file ----------------------------------------------------


def test_a_thread_keeps_its_connection_another_thread_has_its_own(tmp_path: Path) -> None:
    import threading

    store = SQLiteStore(tmp_path / "r.db")
    try:
        mine = store._conn()
        assert store._conn() is mine
        theirs: list[sqlite3.Connection] = []
        thread = threading.Thread(target=lambda: theirs.append(store._conn()))
        thread.start()
        thread.join(30)
        assert theirs and theirs[0] is not mine
        assert len(store._conns) == 2
    finally:
        store.close()


def test_a_memory_store_works_on_one_shared_connection() -> None:
    store = SQLiteStore(":memory:")
    try:
        store.create(NewRun("r", "skill", 1))
        assert store._conn() is store._conn()
        assert [r.id for r in store.list_runs(RunFilter(), limit=5)] == ["r"]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("path", "expanded"),
    [
        ("XX/a.db", "XX/a.db"),
        ("/X/a.db", "/X/a.db"),
        ("a//b/./c.db", "a/b/c.db"),
        ("//a.db", "//a.db"),
        ("///a.db", "/a.db"),
        ("./", "."),
    ],
)
def test_expand_path_examples(path: str, expanded: str) -> None:
    from exectrack.stores.sqlite import expand_path

    assert expand_path(path) == expanded == str(Path(path))


def test_an_unknown_users_home_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        SQLiteStore("~no_such_user_zz/r.db")
    assert str(caught.value) == (
        "cannot use database path '~no_such_user_zz/r.db': Could not determine home directory."
    )


def test_a_file_where_a_directory_should_be_is_a_store_error(tmp_path: Path) -> None:
    from exectrack.errors import StoreUnavailableError

    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "r.db"
    with pytest.raises(StoreUnavailableError) as caught:
        SQLiteStore(path).list_runs(RunFilter(), limit=1)
    assert str(caught.value) == (
        f"cannot open sqlite:///{path}: [Errno 17] File exists: '{tmp_path / 'file'}'"
    )


def test_a_deleted_file_is_reopened_once_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from exectrack.errors import StoreUnavailableError

    path = tmp_path / "r.db"
    store = SQLiteStore(path)
    try:
        store.create(NewRun("old", "skill", 1))
        old_conn = store._conn()
        path.unlink()
        caplog.set_level(logging.WARNING, logger="exectrack")
        with pytest.raises(StoreUnavailableError) as caught:
            store.create(NewRun("lost", "skill", 2))
        assert str(caught.value) == f"database file {path} was deleted or replaced; reopened"
        assert [(r.name, r.getMessage()) for r in caplog.records] == [
            (
                "exectrack.stores.sqlite",
                f"exectrack: database file {path} was deleted or replaced while in use; "
                "reopened it (runs written to the old file are not in the new one)",
            )
        ]
        with pytest.raises(sqlite3.ProgrammingError):
            old_conn.execute("SELECT 1")  # the old file's connections are closed
        store.create(NewRun("new", "skill", 3))
        assert [r.id for r in store.list_runs(RunFilter(), limit=5)] == ["new"]
        assert len(caplog.records) == 1
    finally:
        store.close()


# -- failures inside a write, the text queue's, and closing -----------------------------


def test_a_single_write_that_fails_says_so(tmp_path: Path) -> None:
    from exectrack._model import RunStatus
    from exectrack.errors import StoreUnavailableError
    from exectrack.stores import FinishRun

    path = tmp_path / "r.db"
    store = SQLiteStore(path)
    try:
        store.create(NewRun("r", "skill", 1))
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TRIGGER no_finish BEFORE UPDATE ON runs "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        db.close()
        with pytest.raises(StoreError) as caught:
            store.finish(FinishRun("r", RunStatus.SUCCESS, 2))
        assert (type(caught.value), str(caught.value)) == (StoreError, "write failed: refused")
        store._conn().close()  # this thread's connection, closed behind the store's back
        with pytest.raises(StoreUnavailableError) as gone:
            store.create(NewRun("s", "skill", 3))
        assert str(gone.value) == "write failed: Cannot operate on a closed database."
    finally:
        store.close()


def test_a_text_queue_that_cannot_drain_warns_once_and_starts_counting_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    store = SQLiteStore(tmp_path / "r.db")
    try:
        store.text_drain_every = 2

        def broken() -> int:
            raise RuntimeError("index gone")

        monkeypatch.setattr(store, "index_text", broken)
        caplog.set_level(logging.WARNING, logger="exectrack")
        for i in range(6):
            store.create(NewRun(f"r{i}", "skill", i, source_ref="x"))
        assert store._text_queued == 0
        assert [r.getMessage() for r in caplog.records] == [
            "exectrack: could not update the text search index: index gone"
        ]
        store._wrote(0)  # nothing created: nothing counted
        assert store._text_queued == 0
    finally:
        store.close()


def test_close_waits_for_a_short_read_and_closes_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    store = SQLiteStore(tmp_path / "r.db")
    store.create(NewRun("r", "skill", 1))
    inside = threading.Event()
    conns: list[sqlite3.Connection] = []

    def read() -> None:
        with store._read() as cur:
            conns.append(store._conn())
            inside.set()
            threading.Event().wait(0.3)
            cur.execute("SELECT 1")

    reader = threading.Thread(target=read)
    reader.start()
    assert inside.wait(30)
    caplog.set_level(logging.WARNING, logger="exectrack")
    store.close()
    reader.join(30)
    assert caplog.records == []
    with pytest.raises(sqlite3.ProgrammingError):
        conns[0].execute("SELECT 1")  # closed once the read ended


def test_close_past_its_wait_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging
    import threading

    import exectrack.stores.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "CLOSE_WAIT", 0.05)
    store = SQLiteStore(tmp_path / "r.db")
    store.create(NewRun("r", "skill", 1))
    inside, release = threading.Event(), threading.Event()

    def read() -> None:
        with store._read():
            inside.set()
            release.wait(30)

    reader = threading.Thread(target=read)
    reader.start()
    assert inside.wait(30)
    caplog.set_level(logging.WARNING, logger="exectrack")
    store.close()
    release.set()
    reader.join(30)
    assert [r.getMessage() for r in caplog.records] == [
        f"exectrack: closed {store.path} while a statement was still running on it; its "
        "connections close when that thread lets go of them"
    ]


def test_a_closed_store_says_so_even_after_a_reopen(tmp_path: Path) -> None:
    from exectrack.errors import StoreUnavailableError

    path = tmp_path / "r.db"
    store = SQLiteStore(path)
    store.create(NewRun("r", "skill", 1))
    path.unlink()
    with pytest.raises(StoreUnavailableError):
        store.create(NewRun("s", "skill", 2))  # noticed: reopened once
    store.create(NewRun("t", "skill", 3))
    store.close()
    with pytest.raises(StoreError) as caught:
        store.create(NewRun("u", "skill", 4))
    assert (type(caught.value), str(caught.value)) == (
        StoreError,
        f"store sqlite:///{path} is closed",
    )


def test_runs_moved_into_the_text_index_are_found_there(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    try:
        store.apply([NewRun("a", "skill", 1, source_ref="alphabet"), NewRun("b", "skill", 2)])
        assert store.index_text() == 1
        assert [r.id for r in store.list_runs(RunFilter(text="phab"), limit=5)] == ["a"]
    finally:
        store.close()


def test_a_store_that_does_not_migrate_checks_a_replaced_file(tmp_path: Path) -> None:
    from exectrack.errors import SchemaError, StoreUnavailableError

    path = tmp_path / "r.db"
    first = SQLiteStore(path)
    first.create(NewRun("r", "skill", 1))
    first.close()
    store = SQLiteStore(path, migrate=False)
    try:
        assert [r.id for r in store.list_runs(RunFilter(), limit=5)] == ["r"]
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE unrelated (x)")
        db.close()
        with pytest.raises(StoreUnavailableError):
            store.list_runs(RunFilter(), limit=5)  # noticed: reopened
        with pytest.raises(SchemaError):
            store.list_runs(RunFilter(), limit=5)  # not an exectrack database
    finally:
        store.close()


def _write_in_child(store: SQLiteStore, parent_conn_id: int, queue: Any) -> None:
    store.create(NewRun("child", "skill", 2))
    queue.put((id(store._conn()) != parent_conn_id, len(store._conns)))


def test_a_forked_child_opens_connections_of_its_own(tmp_path: Path) -> None:
    """The parent's connections are never used (nor closed) by a forked child."""
    import multiprocessing

    store = SQLiteStore(tmp_path / "r.db")
    try:
        store.create(NewRun("parent", "skill", 1))
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_write_in_child, args=(store, id(store._conn()), queue))
        child.start()
        assert queue.get(timeout=60) == (True, 1)
        child.join(60)
        assert child.exitcode == 0
        assert sorted(r.id for r in store.list_runs(RunFilter(), limit=5)) == ["child", "parent"]
    finally:
        store.close()


def test_a_url_given_as_a_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It would otherwise make a folder named "sqlite:" in the working directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        SQLiteStore("sqlite:///runs.db")
    assert str(caught.value) == (
        "database path 'sqlite:///runs.db' is a URL: pass the file's path, or the URL "
        "to open_store() or SQLiteStore.from_url()"
    )
    assert list(tmp_path.iterdir()) == []
    store = SQLiteStore("./sqlite:runs.db")  # a file that is really named so
    try:
        store.create(NewRun("r", "skill", 1))
        assert (tmp_path / "sqlite:runs.db").exists()
    finally:
        store.close()

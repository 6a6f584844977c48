"""The text filter (schema version 5: a trigram index on every engine) keeps the exact
meaning it had as a scan: a literal, ASCII-case-insensitive substring of source_ref or
error_message. Pinned on every engine, for each way a page is read, for every write
path that sets the text, and for databases migrated from version 4."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exectrack._model import RunStatus
from exectrack.errors import SchemaError
from exectrack.stores import NewRun, RunFilter
from exectrack.stores import _text as text_mod
from exectrack.stores._dialect import sql
from exectrack.stores._sql import SqlStore
from exectrack.stores.postgres import PostgresStore
from exectrack.stores.sqlite import SQLiteStore

from .conftest import PostgresServer, Target
from .test_contract import T0, fin, ids, model_filter, new, settings_for

TEXT_MIGRATION = "text search index"


def _found(store: SqlStore, needle: str, **kw: object) -> list[str]:
    return ids(store.list_runs(RunFilter(text=needle, **kw), limit=1000))  # type: ignore[arg-type]


def _check(store: SqlStore, rows: Sequence[NewRun], flt: RunFilter, page: int = 1000) -> None:
    """list (in pages of ``page``, through the keyset cursor) and count agree with
    the model of RunFilter.text."""
    wanted = [r.id for r in model_filter(rows, flt)]
    got: list[str] = []
    cursor = None
    while batch := store.list_runs(flt, limit=page, cursor=cursor):
        got += ids(batch)
        last = batch[-1]
        cursor = (int(last.started_at.timestamp() * 1_000_000), last.id)
        assert len(got) <= len(rows)
    assert got == wanted, flt.text
    counts = Counter((r.source, r.status) for r in model_filter(rows, flt))
    assert store.count_runs(flt) == dict(counts), flt.text


@pytest.fixture(params=["queued", "indexed", "indexed, small steps"])
def steps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where SQLite finds a run's text, and how it reads a page. "queued": runs wait
    in the queue (a store moves it into the trigram index every 1,000 created runs);
    "indexed": a store that moves it after every write that creates runs (later
    finishes queue their run again); "small steps" shrinks the page steps sized for
    a million runs, so that a handful of runs goes through every branch (a rare
    trigram, only common ones, the newest runs then the index below them)."""
    if request.param != "queued":
        monkeypatch.setattr(SQLiteStore, "text_drain_every", 1)
    if "small" in request.param:
        monkeypatch.setattr(text_mod, "RARE", 3)
        monkeypatch.setattr(text_mod, "WALKS", (1, 2))
        monkeypatch.setattr(text_mod, "PROBED", 3)
        monkeypatch.setattr(text_mod, "COMMON_ANDED", 2)
    return str(request.param)


def _fts_ok(target: Target) -> None:
    """SQLite: once the queue is moved in, the trigram index agrees with the runs
    (FTS5's own check, which compares it with every run's text)."""
    if not isinstance(target.store, SQLiteStore):
        return
    target.store.index_text()
    with target.store._write() as cur:
        cur.execute("INSERT INTO runs_text (runs_text, rank) VALUES ('integrity-check', 1)")


ROWS = [
    new("r0", T0, source_ref="Alpha-Beta", error_message="Connection REFUSED by host"),
    new("r1", T0 + 1, source_ref="skill.summarize"),
    new("r2", T0 + 2, source_ref="50%_off", error_message="rate limited at 50%"),
    new("r3", T0 + 3, source_ref="a\\b\\c", error_message="path a\\b failed"),
    new("r4", T0 + 4, source_ref="café-crème", error_message="ÉCHEC: naïve"),
    new("r5", T0 + 5, source_ref=None, error_message="timeout after 30s"),
    new("r6", T0 + 6, source_ref="日本語のタスク", error_message=None),
    new("r7", T0 + 7, source_ref='say "NEAR" AND *go* ^x: y', error_message="OR (a) -b {c}"),
    new("r8", T0 + 8, source_ref=None, error_message=None),
    new("r9", T0 + 9, source_ref="tail", error_message="head"),
    new("r10", T0 + 10, source_ref="alpha-beta", error_message="refused"),
    new("r11", T0 + 11, source_ref="x" * 300, error_message="y" * 2000),
]

NEEDLES = [
    # anywhere in the value: start, middle, end, the whole value
    "Alpha",
    "pha-Be",
    "Beta",
    "alpha-beta",
    "summarize",
    "host",
    # ASCII letters fold, other letters do not
    "ALPHA-BETA",
    "refused",
    "REFUSED BY",
    "CAFÉ",
    "CAFé",
    "échec",
    "ÉCHEC",
    "NAÏVE",
    "naïve",
    # %, _ and \ are literals
    "50%",
    "%",
    "_",
    "0%_",
    "%_o",
    "5_%",
    "\\",
    "a\\b",
    "\\b\\",
    "a\\\\b",
    "a%b",
    "a_b",
    # 1 and 2 characters (no trigram: the scan)
    "a",
    "é",
    "日",
    "本語",
    "Ta",
    "zz",
    # non-ASCII with trigrams
    "日本語",
    "のタスク",
    # never across the two columns, nor across runs
    "tailhead",
    "ilhe",
    # FTS5 syntax is literal
    '"',
    '"NEAR"',
    "NEAR",
    "near",
    "AND",
    " AND *go",
    "*go*",
    "^x",
    "^x:",
    ": y",
    "OR (a)",
    "-b {c}",
    '""',
    '"""',
    "NEAR(a b)",
    "a OR b",
    # long needles
    "x" * 300,
    "x" * 301,
    "y" * 2000,
    "y" * 1999 + "z",
    "no such text anywhere",
]


def _needle_id(needle: str) -> str:
    """An ASCII test id: mutmut passes ids back to pytest, which finds none with a
    backslash or a character outside ASCII (usage error, every mutant "timed out")."""
    return f"{NEEDLES.index(needle):02d}-" + (re.sub(r"[^A-Za-z0-9]+", "_", needle)[:24] or "_")


@pytest.mark.parametrize("needle", NEEDLES, ids=_needle_id)
def test_each_needle_means_what_the_scan_meant(target: Target, needle: str) -> None:
    """Substring anywhere, ASCII-only case folding, %/_/\\ literal, short needles,
    non-ASCII, source_ref vs error_message, FTS syntax and long needles: list and
    count give exactly the model's answer."""
    target.store.apply(ROWS)
    _check(target.store, ROWS, RunFilter(text=needle))


def test_each_needle_in_small_steps(target: Target, steps: str) -> None:
    """The same needles with SQLite's steps shrunk (every branch of a page read),
    in pages of 1 and 2 through the cursor, alone and with another filter."""
    target.store.apply(ROWS)
    for needle in NEEDLES:
        for page in (1, 2, 1000):
            _check(target.store, ROWS, RunFilter(text=needle), page)
        _check(target.store, ROWS, RunFilter(text=needle, sources=("chat",)), 2)


def test_a_common_needle_pages_through_every_match(target: Target, steps: str) -> None:
    """Many runs share the needle, some of them old and some recent, with runs that
    do not match in between: every page (newest first, through the cursor) holds
    exactly the matching runs, once each."""
    rows = []
    for i in range(60):
        msg = "upstream said no" if i % 7 in (0, 1) or i < 5 else "all fine here"
        rows.append(
            new(
                f"c{i:02}",
                T0 + i * 10,
                source="skill" if i % 2 else "chat",
                source_ref=f"ref-{i % 4}",
                status=RunStatus.ERROR if msg.startswith("up") else RunStatus.SUCCESS,
                finished_at=T0 + i * 10 + 5,
                error_message=msg if msg.startswith("up") else None,
            )
        )
    target.store.apply(rows)
    for needle in ("upstream", "UPSTREAM SAID", "ref-1", "ref-", "said no", "no match"):
        for page in (1, 3, 50):
            _check(target.store, rows, RunFilter(text=needle), page)
            _check(target.store, rows, RunFilter(text=needle, sources=("skill",)), page)


TEXT_ALPHABET = 'aAbB%_\\"*^:é É-'


@st.composite
def needles_and_rows(draw: st.DrawFn) -> tuple[list[NewRun], list[str]]:
    values = st.one_of(st.none(), st.text(alphabet=TEXT_ALPHABET, max_size=8))
    rows = [
        new(
            f"h{i}",
            T0 + draw(st.integers(0, 5)),
            source_ref=draw(values),
            error_message=draw(values),
        )
        for i in range(draw(st.integers(0, 8)))
    ]
    found: list[str] = []
    for row in rows:  # needles that occur, case flipped at random, and others
        for value in (row.source_ref, row.error_message):
            if value and draw(st.booleans()):
                start = draw(st.integers(0, len(value) - 1))
                part = value[start : draw(st.integers(start + 1, len(value)))]
                found.append("".join(c.swapcase() if draw(st.booleans()) else c for c in part))
    others = draw(st.lists(st.text(alphabet=TEXT_ALPHABET, min_size=1, max_size=6), max_size=3))
    return rows, found + others


def test_text_matches_the_model(target: Target, steps: str) -> None:
    """Random values and needles (drawn from the values, case flipped, or anything):
    list, paged list and count agree with the model."""
    store = target.store

    @settings_for(target, 150)
    @given(case=needles_and_rows(), page=st.integers(1, 3))
    def check(case: tuple[list[NewRun], list[str]], page: int) -> None:
        rows, needles = case
        target.reset()
        store.apply(rows)
        for needle in needles:
            _check(store, rows, RunFilter(text=needle), page)
        _fts_ok(target)

    check()


# -- every write that sets the text --------------------------------------------------


def test_queued_runs_are_found_by_a_reader_and_moved_by_a_writer(tmp_path: object) -> None:
    """Runs written since the last move into the index are found by a store that
    only reads (migrate=False), and a writer's move changes no answer."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "q.db"
    writer = SQLiteStore(path)
    writer.apply([new(f"q{i}", T0 + i, source_ref=f"queued-{i % 3}") for i in range(10)])
    reader = SQLiteStore(path, migrate=False)
    try:
        before = [_found(reader, n) for n in ("queued-1", "QUEUED", "no such")]
        assert before[0] == ["q7", "q4", "q1"] and len(before[1]) == 10 and before[2] == []
        assert writer.index_text() == 10
        assert writer.index_text() == 0
        assert [_found(reader, n) for n in ("queued-1", "QUEUED", "no such")] == before
    finally:
        reader.close()
        writer.close()


def test_a_needle_with_a_nul_is_no_error_and_list_and_count_agree(target: Target) -> None:
    """A NUL in the needle (FTS5's query parser would end a string there) keeps the
    scan: no error, and list and count give the same runs."""
    if target.engine == "postgres":  # no text there holds a NUL: it matches nothing
        target.store.apply([new("n1", T0 + 1, source_ref="abcdef")])
        for needle in ("\x00", "\x00ab", "abc\x00"):
            assert _found(target.store, needle) == []
            assert target.store.count_runs(RunFilter(text=needle)) == {}
        return
    target.store.apply([new("n0", source_ref="x\x00abc"), new("n1", T0 + 1, source_ref="abcdef")])
    for needle in ("\x00", "\x00ab", "x\x00abc", "c\x00a", "abc\x00"):
        found = _found(target.store, needle)
        assert sum(target.store.count_runs(RunFilter(text=needle)).values()) == len(found)


def test_text_set_by_any_write_is_found_and_unset_text_is_not(target: Target, steps: str) -> None:
    """An error message written by a single finish, a batched finish, a finish folded
    into its create, a terminal create and the reaper is found at once; a run
    deleted is found no more; the successful finish of a run leaves it as it was."""
    s = target.store
    s.create(new("single", source_ref="job-1"))
    assert _found(s, "kaboom") == []
    assert s.finish(fin("single", RunStatus.ERROR, T0 + 5, error_message="KABOOM one")).applied
    s.apply([new(f"b{i}", T0 + i, source_ref="job-b") for i in range(3)])
    s.apply([fin(f"b{i}", RunStatus.ERROR, T0 + 9, error_message=f"kaboom b{i}") for i in range(3)])
    s.apply([new("folded"), fin("folded", RunStatus.ERROR, T0 + 9, error_message="kaboom f")])
    s.create(
        new(
            "terminal",
            status=RunStatus.TIMEOUT,
            finished_at=T0 + 9,
            error_message="kaboom t",
        )
    )
    s.create(new("fine", source_ref="job-ok"))
    assert s.finish(fin("fine", RunStatus.SUCCESS, T0 + 9)).applied
    s.create(new("lost", source_ref="job-lost", owner="gone:1:x"))
    assert [r.run_id for r in s.reap(T0 + 10, dead_owners=["gone:1:x"])] == ["lost"]
    assert sorted(_found(s, "KaBoOm")) == ["b0", "b1", "b2", "folded", "single", "terminal"]
    assert _found(s, "job-ok") == ["fine"]
    assert _found(s, "process that ran it") == ["lost"]  # the reaper's message
    assert sorted(_found(s, "job-")) == ["b0", "b1", "b2", "fine", "lost", "single"]
    target.execute(sql(s.dialect, "DELETE FROM runs WHERE id IN (?, ?)"), ("single", "b1"))
    assert sorted(_found(s, "kaboom")) == ["b0", "b2", "folded", "terminal"]
    assert sorted(_found(s, "kaboom", sources=("chat",))) == ["b0", "b2", "folded", "terminal"]
    _fts_ok(target)
    if isinstance(s, SQLiteStore):
        with s._read() as cur:
            cur.execute("SELECT COUNT(*) FROM runs_text_pending")
            assert cur.fetchone() == (0,)
        assert sorted(_found(s, "kaboom")) == ["b0", "b2", "folded", "terminal"]
        assert s.finish(fin("b0", RunStatus.ERROR, T0 + 99, error_message="late")).applied is False
        target.execute("DELETE FROM runs WHERE id = 'b2'")
        assert sorted(_found(s, "kaboom")) == ["b0", "folded", "terminal"]
        _fts_ok(target)


def test_search_survives_vacuum(tmp_path: object) -> None:
    """SQLite's index refers to runs by rowid: VACUUM (which may renumber rowids of
    tables without indexes) keeps every run findable."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "v.db"
    s = SQLiteStore(path)
    s.apply([new(f"v{i}", T0 + i, source_ref=f"ref-{i}") for i in range(50)])
    s.apply([fin(f"v{i}", RunStatus.ERROR, T0 + 99, error_message=f"bad {i}") for i in range(50)])
    with s._write() as cur:
        cur.execute("DELETE FROM runs WHERE id IN ('v3', 'v10', 'v11', 'v49')")
    s.index_text()
    conn = s._conn()
    conn.execute("VACUUM")
    assert _found(s, "ref-4") == [
        "v48",
        "v47",
        "v46",
        "v45",
        "v44",
        "v43",
        "v42",
        "v41",
        "v40",
        "v4",
    ]
    assert _found(s, "bad 1") == ["v19", "v18", "v17", "v16", "v15", "v14", "v13", "v12", "v1"]
    with s._write() as cur:
        cur.execute("INSERT INTO runs_text (runs_text, rank) VALUES ('integrity-check', 1)")
        cur.execute("SELECT COUNT(*) FROM runs_text_pending")
        assert cur.fetchone() == (0,)
    s.close()


# -- migration ------------------------------------------------------------------------


def _make_v4(store: SqlStore, rows: int) -> None:
    """The database as the release before text search left it (the migrations
    before ours), with ``rows`` runs in it."""
    d = store.dialect
    mine = next(i for i, m in enumerate(store.migrations) if m.name == TEXT_MIGRATION)
    with store._write() as cur:
        store._lock_schema(cur)
        cur.execute(d.migrations_table)
        for m in store.migrations[:mine]:
            for statement in m.statements:
                cur.execute(statement)
            cur.execute(
                sql(
                    d,
                    "INSERT INTO exectrack_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                ),
                (m.version, m.name, datetime(2026, 1, 1, tzinfo=UTC)),
            )
        for i in range(rows):
            cur.execute(
                sql(
                    d,
                    "INSERT INTO runs (id, source, source_ref, status, started_at, finished_at,"
                    " error_message, updated_at) VALUES (?, 'chat', ?, 'error', ?, ?, ?, ?)",
                ),
                (
                    f"old{i:03}",
                    f"Ref-{i % 10}",
                    d.ts(T0 + i),
                    d.ts(T0 + i + 1),
                    f"old boom {i}",
                    d.ts(T0),
                ),
            )


@pytest.fixture
def v4(shared_target: Target) -> tuple[Target, SqlStore]:
    store = shared_target.open_again()
    _make_v4(store, 120)
    return shared_target, store


def test_a_version_4_database_with_runs_is_indexed_by_the_migration(
    v4: tuple[Target, SqlStore],
) -> None:
    """Migrating a database that already holds runs builds the index over them: the
    old runs are found and counted (through the index), and so are new ones."""
    target, store = v4
    mine = next(m.version for m in store.migrations if m.name == TEXT_MIGRATION)
    assert mine in store.migrate()
    assert _found(store, "OLD BOOM 11") == [
        "old119",
        "old118",
        "old117",
        "old116",
        "old115",
        "old114",
        "old113",
        "old112",
        "old111",
        "old110",
        "old011",
    ]
    assert len(_found(store, "ref-3")) == 12
    # a count asks the index for its candidates (a page of so few runs never does)
    counted = store.count_runs(RunFilter(text="OLD BOOM 11"))
    assert sum(counted.values()) == 11
    store.create(new("fresh", T0 + 1000, source_ref="Ref-3"))
    assert _found(store, "ref-3")[0] == "fresh"
    if target.engine == "postgres":
        with store._read() as cur:
            cur.execute("SELECT to_regclass('runs_text_ref'), to_regclass('runs_text_error')")
            assert None not in cur.fetchone()


def test_reads_of_a_version_4_database_never_migrate_it(v4: tuple[Target, SqlStore]) -> None:
    """A store opened with migrate=False on a version 4 database refuses to read it
    (older schema: run `exectrack migrate`) and changes nothing, index included."""
    target, store = v4
    version = store.schema_version()
    reader = (
        SQLiteStore(target.url, migrate=False)
        if target.engine != "postgres"
        else PostgresStore(target.url, migrate=False)
    )
    target.opened.append(reader)
    with pytest.raises(SchemaError, match="exectrack migrate"):
        reader.list_runs(RunFilter(text="boom"), limit=5)
    assert store.schema_version() == version
    with store._read() as cur:
        if target.engine == "postgres":
            cur.execute("SELECT to_regclass('runs_text_ref'), to_regclass('runs_text_error')")
            assert cur.fetchone() == (None, None)
        else:
            cur.execute("SELECT name FROM sqlite_master WHERE name LIKE 'runs_text%'")
            assert cur.fetchall() == []


def test_two_stores_migrating_a_version_4_database_at_once(v4: tuple[Target, SqlStore]) -> None:
    """Two stores (as two processes would) migrating the same version 4 database at
    the same moment: one applies the migration, the other finds it done."""
    import threading

    target, _ = v4
    a, b = target.open_again(), target.open_again()
    results: list[list[int]] = []
    barrier = threading.Barrier(2)

    def go(store: SqlStore) -> None:
        barrier.wait()
        results.append(store.migrate())

    threads = [threading.Thread(target=go, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mine = next(m.version for m in a.migrations if m.name == TEXT_MIGRATION)
    assert sorted(results, key=len) == [[], list(range(mine, a.latest_version + 1))]
    assert _found(a, "OLD BOOM 77") == ["old077"]


# -- PostgreSQL: the index is used, and its absence is no failure ---------------------


class _Rollback(Exception):
    pass


def _pg_plan_uses_index(store: SqlStore, needle: str) -> bool:
    """Whether PostgreSQL can serve the text term from both trigram indexes (the
    form of the statement and the indexes' collation agree). A small table is
    cheaper to scan, or to read whole through the source_ref btree, so both are
    priced out (inside a transaction rolled back) for the question."""
    term, params = store.dialect.text_term(needle)
    plan = ""
    with contextlib.suppress(_Rollback), store._write() as cur:
        cur.execute("ANALYZE runs")
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("DROP INDEX runs_ref_started")
        cur.execute(sql(store.dialect, f"EXPLAIN SELECT id FROM runs WHERE {term}"), params)
        plan = "\n".join(str(r[0]) for r in cur.fetchall())
        raise _Rollback
    return "runs_text_error" in plan and "runs_text_ref" in plan


def test_postgres_serves_ilike_from_the_trigram_indexes(make_pg_url: object) -> None:
    """A fresh PostgreSQL schema gets both trigram indexes and, with a few thousand
    distinct runs, the text filter's statement reads them (no scan)."""
    _, url = make_pg_url()  # type: ignore[operator]
    store = PostgresStore(url)
    try:
        store.apply(
            [
                new(f"a{i}", T0 + i, source_ref=f"task-{i}", error_message=f"failed step {i}")
                for i in range(3000)
            ]
        )
        assert _pg_plan_uses_index(store, "hello world")
        assert _found(store, "TASK-2999") == ["a2999"]
        assert _found(store, "STEP 2999") == ["a2999"]
    finally:
        store.close()


_NO_SUCH = "exectrack_no_such_extension"


class _NoTrigramStore(PostgresStore):
    """A store whose server has no usable pg_trgm (an extension name that exists
    nowhere stands in for a missing package or privilege)."""

    text_extension = _NO_SUCH
    migrations = tuple(
        m
        if m.name != TEXT_MIGRATION
        else type(m)(m.version, m.name, text_mod.postgres_text_index(_NO_SUCH))
        for m in PostgresStore.migrations
    )


def test_postgres_without_pg_trgm_migrates_scans_and_says_so_once(
    make_pg_url: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Without pg_trgm the migration still succeeds, text search still answers
    exactly (by scanning), and the store logs it once, not per query."""
    _, url = make_pg_url()  # type: ignore[operator]
    store = _NoTrigramStore(url)
    try:
        with caplog.at_level(logging.WARNING, logger="exectrack"):
            store.migrate()
            store.migrate()
            store.apply(ROWS)
            for needle in ("alpha", "50%", "日本語"):
                _check(store, ROWS, RunFilter(text=needle))
        assert store.schema_version() == store.latest_version
        warnings = [r for r in caplog.records if "pg_trgm" in r.getMessage()]
        assert len(warnings) == 1
        assert "scans" in warnings[0].getMessage()
    finally:
        store.close()


def test_postgres_creates_the_missing_indexes_once_the_extension_exists(
    make_pg_url: object, pg: PostgresServer
) -> None:
    """A schema migrated while pg_trgm was missing gets its indexes at the next
    migrate (a process start) once the extension can be created."""
    _, url = make_pg_url()  # type: ignore[operator]
    store = _NoTrigramStore(url)
    store.migrate()
    store.create(new("a", source_ref="hello"))
    store.close()
    again = PostgresStore(url)
    try:
        again.migrate()
        with again._read() as cur:
            cur.execute("SELECT to_regclass('runs_text_ref'), to_regclass('runs_text_error')")
            assert None not in cur.fetchone()
        assert _found(again, "ELL") == ["a"]
    finally:
        again.close()


def test_postgres_with_pg_trgm_where_this_role_may_not_use_it(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """pg_trgm installed in a schema the store's role has no USAGE on (another
    application's): the migration still succeeds, text search scans exactly, and
    the store says so once. In a database of its own: a database holds one pg_trgm,
    and the shared test database's lives where the other tests' stores put it."""
    import psycopg

    token = secrets.token_hex(4)
    database, role = f"exectrack_text_{token}", f"exectrack_text_{token}"
    pg.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(pg.url)
    other = urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))
    admin = psycopg.connect(other, autocommit=True)
    store = None
    try:
        admin.execute('CREATE SCHEMA "elsewhere"')
        admin.execute('CREATE EXTENSION pg_trgm SCHEMA "elsewhere"')
        admin.execute('REVOKE ALL ON SCHEMA "elsewhere" FROM PUBLIC')
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
        netloc = f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        store = PostgresStore(urlunsplit((parts.scheme, netloc, f"/{database}", "schema=mine", "")))
        with caplog.at_level(logging.WARNING, logger="exectrack"):
            store.migrate()
            store.apply(ROWS)
            for needle in ("alpha", "日本語", "50%"):
                _check(store, ROWS, RunFilter(text=needle))
        assert store.schema_version() == store.latest_version
        assert len([r for r in caplog.records if "pg_trgm" in r.getMessage()]) == 1
    finally:
        if store is not None:
            store.close()
        admin.close()
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        pg.execute(f'DROP DATABASE IF EXISTS "{database}"')
        pg.execute(f'DROP ROLE IF EXISTS "{role}"')

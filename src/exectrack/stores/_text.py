"""The ``text`` filter without a scan: schema version 6 and the reads that use it.

What ``RunFilter.text`` means, the same on every engine and whatever the index: the
needle is a literal (``%``, ``_`` and ``\\`` are plain characters) found anywhere in
``source_ref`` or in ``error_message``; ASCII letters match either case, no other
letter does (SQLite's LIKE folds only ASCII; PostgreSQL's ILIKE is given the "C"
collation so that a database's locale folds nothing more); a NULL column matches
nothing. An index only narrows the candidates: the same LIKE/ILIKE as before decides
every row, so the answer never depends on whether or how the index was used.

SQLite: an FTS5 table ``runs_text`` with the trigram tokenizer over the two columns,
external content (the ``runs`` rows themselves, by rowid: ``runs`` has indexes, so
VACUUM keeps its rowids). Triggers queue a run whose text is set or changes in
``runs_text_pending`` (FTS5 would write an index segment per statement: see
``sqlite_text_index``) and stores move the queue into the index every
``SQLiteStore.text_drain_every`` created runs; reads check queued runs directly.
``detail=none``: no token positions, a third of ``detail=full``'s size and build
time, and faster queries; the trigrams of a needle are ANDed and the LIKE recheck
restores adjacency. A page is read in a few short steps (``sqlite_text_page``).
Needles shorter than three characters have no trigram and keep the scan (the newest
runs first, stopping at a full page: such needles usually match often).

PostgreSQL: ``pg_trgm`` GIN indexes on each column (``COLLATE "C"``, partial on NOT
NULL) serve ``ILIKE`` directly, and the planner picks between them and the
``started_at`` order from the column statistics. When the extension cannot be
created (no privilege, not installed on the server) the migration still succeeds,
text search scans as before, and the store logs that once; each later migrate of a
store (every process start) tries again.
"""

from __future__ import annotations

from typing import Any

from exectrack.stores._dialect import Cursor

__all__ = [
    "PG_TEXT_INDEXES",
    "SQLITE_TEXT_DRAIN",
    "postgres_text_index",
    "postgres_text_term",
    "sqlite_text_index",
    "sqlite_text_page",
    "sqlite_text_term",
    "trigrams",
]

# A trigram with fewer postings than this is "rare": the candidates it gives are few
# enough to fetch by rowid and recheck (one random row read each: ~10 ms for a full
# set at a million runs on a busy 2-core machine).
RARE = 1000
# Trigrams of one needle counted (SQLite): each costs up to ~0.2 ms.
PROBED = 12
# Trigrams ANDed when every one is common: each costs ~6-9 ms at a million runs.
COMMON_ANDED = 4
# When every trigram of the needle is common, the newest runs (of the other filters)
# are checked directly, these many and then these many more, before the index is
# asked (a common needle usually fills a page among the newest runs; counting the
# runs in a step reads them, so the first step is small).
WALKS = (256, 2048)

PG_TEXT_INDEXES = ("runs_text_ref", "runs_text_error")
# A GIN index takes new entries into a pending list that every search reads whole,
# merged into the index only past this size (default 4 MB) or by (auto)vacuum: at
# 4 MB a search that matches nothing took 20-30 ms, read from the list. In kB.
_PG_PENDING_KB = 256
# pg_advisory_xact_lock key: stores of different schemas creating the extension at
# once would otherwise race on it (their migration locks differ).
_PG_EXTENSION_LOCK = 0x65787472_74726967  # "extrtrig"


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def trigrams(text: str) -> list[str]:
    """The needle's distinct trigrams (by code point, as FTS5's trigram tokenizer
    reads text), in order of first appearance; none below three characters, and
    none for a needle with a NUL (SQLite's LIKE, FTS5's tokenizer and its query
    parser each stop at a NUL in their own way: such a needle keeps the scan, with
    exactly the old meaning)."""
    if "\x00" in text:
        return []
    seen: dict[str, None] = {}
    for i in range(len(text) - 2):
        seen.setdefault(text[i : i + 3])
    return list(seen)


def _spread(items: list[str], k: int) -> list[str]:
    """At most ``k`` of ``items``, evenly spaced, the first and last among them."""
    if len(items) <= k:
        return items
    picked = {round(i * (len(items) - 1) / (k - 1)) for i in range(k)}
    return [items[i] for i in sorted(picked)]


def _fts_string(gram: str) -> str:
    """One trigram as an FTS5 string: inside double quotes every character is
    literal (``*``, ``:``, ``^``, ``NEAR``, ``AND``...), a quote is doubled."""
    return '"' + gram.replace('"', '""') + '"'


def _fts_and(grams: list[str]) -> str:
    return " AND ".join(_fts_string(g) for g in grams)


# -- SQLite -----------------------------------------------------------------------------

_SQLITE_LIKE = "(source_ref LIKE ? ESCAPE '\\' OR error_message LIKE ? ESCAPE '\\')"
_SQLITE_CANDIDATES = (
    "(runs.rowid IN (SELECT rowid FROM runs_text WHERE runs_text MATCH ?)"
    " OR runs.rowid IN (SELECT run_rowid FROM runs_text_pending))"
)
_SQLITE_PENDING = "runs.rowid IN (SELECT run_rowid FROM runs_text_pending)"
_ORDER = " ORDER BY started_at DESC, id DESC"


def sqlite_text_index() -> tuple[str, ...]:
    """Schema version 6 on SQLite: the trigram index, built from the existing runs,
    and the triggers that keep it in step with every later write.

    A run's text is not indexed by the statement that writes it: FTS5 writes a new
    index segment at every statement that changes it (a statement savepoint
    flushes it), which cost more than the run's own row. The insert trigger only
    queues the rowid in ``runs_text_pending`` (a plain b-tree append), readers read
    queued runs directly, and stores move the queue into the index in one statement
    now and then (``SQLITE_TEXT_DRAIN``). The invariant: a run with text is either
    in the index with its current values or queued, never both."""
    cols = "source_ref, error_message"
    some_new = "new.source_ref IS NOT NULL OR new.error_message IS NOT NULL"
    some_old = "old.source_ref IS NOT NULL OR old.error_message IS NOT NULL"
    indexed = "NOT EXISTS (SELECT 1 FROM runs_text_pending WHERE run_rowid = old.rowid)"
    queue = "INSERT OR IGNORE INTO runs_text_pending (run_rowid) "
    # An external-content 'delete' must name exactly the values indexed before.
    unindex = (
        f"INSERT INTO runs_text (runs_text, rowid, {cols}) SELECT 'delete', old.rowid, "
        f"old.source_ref, old.error_message WHERE ({some_old}) AND {indexed}; "
    )
    return (
        f"CREATE VIRTUAL TABLE runs_text USING fts5({cols}, content='runs', "
        "content_rowid='rowid', tokenize='trigram case_sensitive 0', detail=none, "
        "columnsize=0)",
        "INSERT INTO runs_text (runs_text) VALUES ('rebuild')",
        "CREATE TABLE runs_text_pending (run_rowid INTEGER PRIMARY KEY)",
        f"CREATE TRIGGER runs_text_insert AFTER INSERT ON runs WHEN {some_new} "
        f"BEGIN {queue}VALUES (new.rowid); END",
        f"CREATE TRIGGER runs_text_update AFTER UPDATE OF {cols} ON runs "
        "WHEN old.source_ref IS NOT new.source_ref "
        "OR old.error_message IS NOT new.error_message BEGIN "
        f"{unindex}{queue}SELECT new.rowid WHERE {some_new}; END",
        f"CREATE TRIGGER runs_text_delete AFTER DELETE ON runs WHEN {some_old} BEGIN "
        f"{unindex}DELETE FROM runs_text_pending WHERE run_rowid = old.rowid; END",
    )


# Moves every queued run into the index, in one write transaction (one FTS5 flush).
SQLITE_TEXT_DRAIN = (
    "INSERT INTO runs_text (rowid, source_ref, error_message) "
    "SELECT r.rowid, r.source_ref, r.error_message FROM runs_text_pending AS p "
    "JOIN runs AS r ON r.rowid = p.run_rowid",
    "DELETE FROM runs_text_pending",
)


def sqlite_text_term(text: str) -> tuple[str, list[Any]]:
    """The WHERE term for counts and aggregates: candidates from the index (up to
    ``COMMON_ANDED`` trigrams), decided by LIKE; a needle without a trigram scans."""
    pattern = "%" + escape_like(text) + "%"
    grams = trigrams(text)
    if not grams:
        return _SQLITE_LIKE, [pattern, pattern]
    match = _fts_and(_spread(grams, COMMON_ANDED))
    return f"{_SQLITE_CANDIDATES} AND {_SQLITE_LIKE}", [match, pattern, pattern]


def sqlite_text_page(
    cur: Cursor, cols: str, where: list[str], params: list[Any], text: str, limit: int
) -> list[Any] | None:
    """Rows of one page (newest first) of the runs matching ``where`` whose text
    matches ``text``, or None for a needle the index cannot serve (under three
    characters). ``cur`` should hold one read snapshot for the steps:

    1. the newest ``WALKS[0]`` runs are checked directly (a common needle fills a
       page there, and the index is never asked);
    2. each trigram's postings are counted, up to ``RARE``: a trigram in no indexed
       run leaves only the queued runs to check;
    3. with a rare trigram, the candidates below step 1 from the rarest ones (fewer
       than ``RARE``) and the queued runs are fetched by rowid, rechecked, sorted;
    4. when every trigram is common, the next ``WALKS`` steps are checked directly,
       and only a page still short asks the index for the runs below them.
    """
    grams = trigrams(text)
    if not grams:
        return None
    pattern = "%" + escape_like(text) + "%"
    like = [pattern, pattern]
    rows: list[Any] = []
    below: list[str] = []  # under the last step's bound
    at: list[Any] = []

    def page(terms: list[str], values: list[Any]) -> None:
        cond = " AND ".join([*where, *below, *terms])
        cur.execute(
            f"SELECT {cols} FROM runs WHERE {cond}{_ORDER} LIMIT ?",
            [*params, *at, *values, limit - len(rows)],
        )
        rows.extend(cur.fetchall())

    def walk(n: int) -> bool:
        """Check the next ``n`` runs; whether the page is complete."""
        nonlocal below, at
        cond = " AND ".join([*where, *below]) or "1 = 1"
        cur.execute(
            f"SELECT started_at, id FROM runs WHERE {cond}{_ORDER} LIMIT 1 OFFSET ?",
            [*params, *at, n - 1],
        )
        bound = cur.fetchone()
        if bound is None:  # fewer runs left than that: checking them all is complete
            page([_SQLITE_LIKE], like)
            return True
        page(["(started_at, id) >= (?, ?)", _SQLITE_LIKE], [*bound, *like])
        below, at = ["(started_at, id) < (?, ?)"], list(bound)
        return len(rows) == limit

    if walk(WALKS[0]):
        return rows
    probed = _spread(grams, PROBED)
    cur.execute(
        "SELECT "
        + ", ".join(
            ["(SELECT COUNT(*) FROM (SELECT 1 FROM runs_text WHERE runs_text MATCH ? LIMIT ?))"]
            * len(probed)
        ),
        [p for g in probed for p in (_fts_string(g), RARE)],
    )
    counts = cur.fetchone()
    if min(counts) == 0:  # in no indexed run: only queued runs can match
        page([_SQLITE_PENDING, _SQLITE_LIKE], like)
        return rows
    rare = sorted((n, g) for n, g in zip(counts, probed, strict=True) if n < RARE)
    if rare:
        page([_SQLITE_CANDIDATES, _SQLITE_LIKE], [_fts_and([g for _, g in rare[:3]]), *like])
        return rows
    for n in WALKS[1:]:
        if walk(n):
            return rows
    page([_SQLITE_CANDIDATES, _SQLITE_LIKE], [_fts_and(_spread(grams, COMMON_ANDED)), *like])
    return rows


# -- PostgreSQL -------------------------------------------------------------------------


def postgres_text_index(extension: str = "pg_trgm") -> tuple[str, ...]:
    """Schema version 6 on PostgreSQL, idempotent (the store runs it again while the
    indexes are missing): ``pg_trgm`` if it can be created (in ``public`` when this
    role may create there, else in the store's schema), then a GIN trigram index
    per searched column, referring to the extension's operator class by the schema
    it lives in (another exectrack schema may have created it). An extension that
    cannot be created or used (say, it lives in a schema this role may not use) is
    no error: the indexes are then simply not made.
    ``extension``: a plain identifier (tests name one that does not exist)."""
    index = (
        "EXECUTE format('CREATE INDEX IF NOT EXISTS {name} ON runs USING gin "
        '({col} COLLATE "C" %s.gin_trgm_ops) WITH (gin_pending_list_limit = {pending}) '
        "WHERE {col} IS NOT NULL', ns);"
    )
    return (
        "DO $exectrack$ DECLARE ns text; BEGIN "
        f"PERFORM pg_advisory_xact_lock({_PG_EXTENSION_LOCK}); "
        # In public when allowed: in the store's own schema, dropping that schema
        # would drop the extension and with it every other schema's text indexes.
        f"BEGIN CREATE EXTENSION IF NOT EXISTS {extension} SCHEMA public; "
        f"EXCEPTION WHEN OTHERS THEN BEGIN CREATE EXTENSION IF NOT EXISTS {extension}; "
        "EXCEPTION WHEN OTHERS THEN NULL; END; END; "
        "SELECT quote_ident(n.nspname) INTO ns FROM pg_extension e "
        f"JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = '{extension}'; "
        "IF ns IS NOT NULL THEN BEGIN "
        + index.format(name=PG_TEXT_INDEXES[0], col="source_ref", pending=_PG_PENDING_KB)
        + " "
        + index.format(name=PG_TEXT_INDEXES[1], col="error_message", pending=_PG_PENDING_KB)
        # e.g. the extension lives in a schema this role may not use
        + " EXCEPTION WHEN OTHERS THEN NULL; END; END IF; END $exectrack$",
    )


def postgres_text_term(text: str) -> tuple[str, list[Any]]:
    """ILIKE in the "C" collation (ASCII case folding, as SQLite's LIKE), the form
    the trigram indexes serve; backslash is PostgreSQL's default LIKE escape."""
    pattern = "%" + escape_like(text) + "%"
    return (
        '(source_ref ILIKE ? COLLATE "C" OR error_message ILIKE ? COLLATE "C")',
        [pattern, pattern],
    )

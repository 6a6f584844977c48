"""The SQL both engines share. Engines differ only in what ``SqlDialect`` names:
placeholders, how times, booleans and JSON travel, and how a transaction begins.

Every write goes through one guarded UPDATE (``... AND finished_at IS NULL``), so
racing finishers, the reaper and normal completion can never disagree.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from exectrack._log import get_logger
from exectrack._model import RunStatus
from exectrack.errors import ConfigError, InvalidArgumentError, SchemaError, SchemaTooNewError
from exectrack.stores._batch import ConflictError, Plan, Row, fold, groups
from exectrack.stores._dialect import (
    COLS,
    COLUMNS,
    FINISH_COLUMNS,
    Cursor,
    Migration,
    SqlDialect,
    json_loads_object,
    sql,
)
from exectrack.stores._liveness import LivenessOps
from exectrack.stores._sqlagg import AggregateOps

if TYPE_CHECKING:  # the write commands and results load on first write: a CLI read
    # never creates them (stores/_records.py)
    from exectrack.stores._records import (
        ApplyResult,
        Command,
        FinishResult,
        FinishRun,
        MarkRunning,
        NewRun,
    )

__all__ = ["Cursor", "Migration", "SqlDialect", "SqlStore", "json_loads_object"]

_log = get_logger("exectrack.stores")


class SqlStore(AggregateOps, LivenessOps, abc.ABC):
    """Store operations written once; subclasses supply connections and a dialect."""

    dialect: SqlDialect
    migrations: tuple[Migration, ...]
    url: str

    def __init__(self, *, migrate: bool = True) -> None:
        d = self.dialect
        self._migrates = migrate
        self._ready = False
        self._ready_lock = threading.Lock()
        _sql_stores.add(self)
        stamp = d.change_stamp
        self._insert_row = sql(
            d, "(" + ", ".join("{json}" if c == "metadata" else "?" for c in COLUMNS) + ")"
        )
        self._insert_sql = (
            f"INSERT INTO runs ({COLS}, change_seq) VALUES ({self._insert_row[1:-1]}, {stamp}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self._finish_sql = sql(
            d,
            "UPDATE runs SET status = ?, finished_at = ?, "
            f"duration_ms = COALESCE(?, {d.duration_since_start}), "
            "error_code = ?, error_message = ?, retryable = ?, "
            "metadata = COALESCE({json}, metadata), updated_at = ?, "
            f"items = ?, first_item_ms = ?, change_seq = {stamp} "
            f"WHERE id = ? AND {finish_guard('', '?')}",
        )
        self._start_sql = sql(
            d,
            "UPDATE runs SET status = 'running', heartbeat_at = ?, updated_at = ?, "
            f"change_seq = {stamp} WHERE id = ? AND status = 'queued'",
        )
        self._insert_many: dict[int, str] = {}
        self._finish_many: dict[int, str] = {}
        self._status_sql = sql(d, "SELECT status FROM runs WHERE id = ?")
        self._get_sql = sql(d, f"SELECT {COLS} FROM runs WHERE id = ?")

    # -- engine hooks -------------------------------------------------------------

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a write transaction that commits on success."""

    def _write_one(self) -> AbstractContextManager[Cursor]:
        """A cursor for writes whose statements are each atomic on their own (one
        INSERT, or a guarded UPDATE and a read). Engines where a transaction costs
        extra round trips run these without one."""
        return self._write()

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads (autocommit or a read transaction)."""

    @abc.abstractmethod
    def _lock_schema(self, cur: Cursor) -> None:
        """Serialise migrations across processes (inside the write transaction)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- schema -------------------------------------------------------------------

    @property
    def latest_version(self) -> int:
        return self.migrations[-1].version

    def migrate(self) -> list[int]:
        if not self._migrates:
            raise ConfigError(
                f"store {self.url} was opened with migrate=False; "
                "open it with migrate=True (the default) to migrate"
            )
        with self._write() as cur:
            applied = self._migrate_in(cur)
        self._ready = True
        if ROLLUPS_VERSION in applied:
            self._backfill_rollups()
        return applied

    def _backfill_rollups(self) -> None:
        """Fold the runs stored before rollups existed, saying how far it got."""
        total = 0
        while True:
            added = self.fold_rollups(limit=self.fold_chunk * 20)
            total += added
            if added == 0:
                break
            _log.info("exectrack: rollups: %d finished runs folded so far", total)

    def _migrate_in(self, cur: Cursor) -> list[int]:
        """Apply pending migrations inside the write transaction of ``cur``."""
        self._lock_schema(cur)
        cur.execute(self.dialect.migrations_table)
        current = self._current_version(cur)
        if current > self.latest_version:
            raise self._too_new(current)
        applied: list[int] = []
        for m in self.migrations:
            if m.version <= current:
                continue
            for statement in m.statements:
                cur.execute(statement)
            cur.execute(
                sql(
                    self.dialect,
                    "INSERT INTO exectrack_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                ),
                (m.version, m.name, datetime.now().astimezone().isoformat()),
            )
            applied.append(m.version)
        self._after_migrations(cur)
        return applied

    def _after_migrations(self, cur: Cursor) -> None:
        """What an engine checks or repairs once the schema is current (in the
        migration's transaction)."""

    def _too_new(self, version: int) -> SchemaTooNewError:
        return SchemaTooNewError(
            f"database {self.url} has schema version {version}, but this exectrack "
            f"knows versions up to {self.latest_version}; upgrade exectrack"
        )

    def _check_schema(self, cur: Cursor) -> None:
        """What a store that never migrates does before first use: use the schema as
        it is, or say why it cannot."""
        version = self._current_version(cur) if self._has_migrations_table(cur) else 0
        if version > self.latest_version:
            raise self._too_new(version)
        if version == 0:
            raise SchemaError(
                f"database {self.url} has no exectrack schema; run `exectrack migrate`"
            )
        if version < self.latest_version:
            raise SchemaError(
                f"database {self.url} has schema version {version}, older than this "
                f"exectrack's {self.latest_version}; run `exectrack migrate`"
            )

    def schema_version(self) -> int:
        with self._read() as cur:
            if not self._has_migrations_table(cur):
                return 0
            return self._current_version(cur)

    @abc.abstractmethod
    def _has_migrations_table(self, cur: Cursor) -> bool: ...

    @staticmethod
    def _current_version(cur: Cursor) -> int:
        cur.execute("SELECT MAX(version) FROM exectrack_migrations")
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _ensure_ready(self) -> None:
        """Migrate on first use, once per store object (a store opened with
        ``migrate=False`` checks the schema instead and never changes it)."""
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                if self._migrates:
                    self.migrate()
                else:
                    with self._read() as cur:
                        self._check_schema(cur)
                    self._ready = True

    # -- writes -------------------------------------------------------------------

    def _insert_params(self, run: NewRun) -> tuple[Any, ...]:
        return self._row_params(Row.of(run))

    def _row_params(self, row: Row) -> tuple[Any, ...]:
        ts = self.dialect.ts
        r, f = row.run, row.finish
        started = ts(r.started_at)
        if f is None:
            finished_at, duration, code, message, retryable = (
                r.finished_at,
                r.duration_ms,
                r.error_code,
                r.error_message,
                r.retryable,
            )
            metadata, items, first_item = r.metadata, r.items, r.first_item_ms
        else:
            finished_at, duration, code, message, retryable = (
                f.finished_at,
                row.duration_ms,
                f.error_code,
                f.error_message,
                f.retryable,
            )
            metadata = f.metadata if f.metadata is not None else r.metadata
            items, first_item = f.items, f.first_item_ms
        return (
            r.id,
            r.source,
            r.source_ref,
            r.session_id,
            r.parent_id,
            row.status.value,
            started,
            None if finished_at is None else ts(finished_at),
            duration,
            code,
            message,
            retryable,
            metadata if metadata is not None else "{}",
            r.owner,
            ts(row.heartbeat_at),
            None if r.deadline_at is None else ts(r.deadline_at),
            ts(row.updated_at),
            None if r.lease_until is None else ts(r.lease_until),
            items,
            first_item,
        )

    def _finish_params(self, f: FinishRun) -> tuple[Any, ...]:
        at = self.dialect.ts(f.finished_at)
        status = f.status.value
        return (
            status,
            at,
            f.duration_ms,
            at,
            f.error_code,
            f.error_message,
            f.retryable,
            f.metadata,
            at,
            f.items,
            f.first_item_ms,
            f.id,
            status,
        )

    def _start_params(self, m: MarkRunning) -> tuple[Any, ...]:
        at = self.dialect.ts(m.at)
        return (at, at, m.id)

    def create(self, run: NewRun) -> bool:
        _check_new(run)
        self._ensure_ready()
        with self._write_one() as cur:
            cur.execute(self._insert_sql, self._insert_params(run))
            created = cur.rowcount == 1
        self._wrote(int(created))
        self._changed(int(created))
        return created

    # -- planner statistics ---------------------------------------------------------

    # Rows this store object creates before it first refreshes the planner's
    # statistics, then between refreshes. Without statistics both engines pick plans
    # for the panel's reads that are 3-300x slower at a million runs (bench/query_speed.py),
    # and nothing else keeps them: SQLite never analyzes by itself, and PostgreSQL
    # only when autovacuum is on.
    stats_first = 10_000
    stats_every = 50_000
    _written = 0
    _stats_next: int | None = None
    _stats_failed = False

    # Changes (created or finished runs) written through this store object between
    # folds into the rollups: a read adds the unfolded ones from the runs themselves.
    fold_every = 2_000
    _unfolded = 0
    _fold_failed = False

    def _changed(self, n: int) -> None:
        """Count changes; fold them into the rollups every ``fold_every``."""
        self._unfolded += n
        if self._unfolded < self.fold_every:
            return
        self._unfolded = 0
        try:
            self.fold_rollups()
        except Exception as exc:  # the runs are committed: a read adds what is unfolded
            if not self._fold_failed:
                self._fold_failed = True
                _log.warning("exectrack: could not fold runs into the rollups: %s", exc)

    def _wrote(self, created: int) -> None:
        """Count created runs; refresh statistics when the next threshold is crossed."""
        if not created:
            return
        self._written += created
        due = self.stats_first if self._stats_next is None else self._stats_next
        if self._written < due:
            return
        self._stats_next = self._written + self.stats_every
        try:
            self._refresh_statistics()
        except Exception as exc:  # the runs are committed: a failed ANALYZE is no failed write
            if not self._stats_failed:
                self._stats_failed = True
                _log.warning("exectrack: could not refresh planner statistics: %s", exc)

    @abc.abstractmethod
    def _refresh_statistics(self) -> None:
        """Analyze the runs table (each engine says how cheaply)."""

    def start(self, run_id: str, at: int) -> FinishResult:
        from exectrack.stores._records import FinishResult, MarkRunning

        self._ensure_ready()
        with self._write_one() as cur:
            cur.execute(self._start_sql, self._start_params(MarkRunning(run_id, at)))
            if cur.rowcount == 1:
                return FinishResult(True, RunStatus.RUNNING)
            return FinishResult(False, self._status_of(cur, run_id))

    def finish(self, cmd: FinishRun) -> FinishResult:
        from exectrack.stores._records import FinishResult

        _check_finish(cmd)
        self._ensure_ready()
        with self._write_one() as cur:
            cur.execute(self._finish_sql, self._finish_params(cmd))
            applied = cur.rowcount == 1
            status = cmd.status if applied else self._status_of(cur, cmd.id)
        if applied:
            self._changed(1)
        return FinishResult(applied, status)

    def _status_of(self, cur: Cursor, run_id: str) -> RunStatus | None:
        cur.execute(self._status_sql, (run_id,))
        row = cur.fetchone()
        return None if row is None else RunStatus(row[0])

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        """Run ``commands`` in one transaction, with the result of running them one by one.

        A start or finish whose run is created earlier in the same batch is folded
        into that run's INSERT, so a short run costs one row write, not two. When
        folding cannot give the one-by-one result (a created id already exists, or a
        start/finish precedes its run's create), the batch runs command by command.
        """
        from exectrack.stores._records import ApplyResult, FinishRun, NewRun

        for cmd in commands:
            if type(cmd) is NewRun:
                _check_new(cmd)
            elif type(cmd) is FinishRun:
                _check_finish(cmd)
        if not commands:
            return ApplyResult()
        self._ensure_ready()
        plan = fold(commands)
        result = None
        if plan is not None:
            # ConflictError: rolled back, a created id already exists
            with contextlib.suppress(ConflictError):
                result = self._apply_folded(plan)
        if result is None:
            result = self._apply_each(commands)
        self._wrote(result.created)
        self._changed(result.created + result.finished)
        return result

    def _apply_folded(self, plan: Plan) -> ApplyResult:
        from exectrack.stores._records import FinishRun, MarkRunning

        rows, updates = plan.rows, plan.updates
        created = started = finished = 0
        if len(rows) + len(updates) == 1:  # one statement: atomic without a transaction
            with self._write_one() as cur:
                if rows:
                    row = rows[0]
                    cur.execute(self._insert_sql, self._row_params(row))
                    if cur.rowcount != 1:
                        raise ConflictError
                    created, started, finished = 1, row.started, int(row.finish is not None)
                else:
                    started, finished = self._execute_update(cur, updates[0])
            return _result(plan.count, created, started, finished)
        with self._write() as cur:
            self._insert_rows(cur, rows)
            created = len(rows)
            started = sum(r.started for r in rows)
            finished = sum(r.finish is not None for r in rows)
            for kind, group in groups(updates):
                if kind is FinishRun:
                    finishes = [c for c in group if isinstance(c, FinishRun)]
                    finished += self._finish_many_runs(cur, finishes)
                else:
                    starts = [self._start_params(c) for c in group if isinstance(c, MarkRunning)]
                    cur.executemany(self._start_sql, starts)
                    started += max(cur.rowcount, 0)
        return _result(plan.count, created, started, finished)

    def _insert_rows(self, cur: Cursor, rows: list[Row]) -> None:
        """INSERT ``rows``; ConflictError when an id already exists."""
        if not self.dialect.multirow:
            cur.executemany(self._insert_sql, [self._row_params(r) for r in rows])
            if cur.rowcount != len(rows):
                raise ConflictError
            return
        cur.execute(f"SELECT {self.dialect.change_stamp}")
        stamp = cur.fetchone()[0]
        for i in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[i : i + INSERT_CHUNK]
            cur.execute(
                self._insert_sql_for(len(chunk)),
                [p for r in chunk for p in (*self._row_params(r), stamp)],
            )
            if cur.rowcount != len(chunk):
                raise ConflictError

    def _finish_many_runs(self, cur: Cursor, finishes: list[FinishRun]) -> int:
        """The guarded finish of ``finishes``, in order; returns how many applied."""
        if not self.dialect.multirow:
            cur.executemany(self._finish_sql, [self._finish_params(f) for f in finishes])
            return max(cur.rowcount, 0)
        applied = 0
        for chunk in _distinct_chunks(finishes, FINISH_CHUNK):
            cur.execute(
                self._finish_sql_for(len(chunk)),
                [p for f in chunk for p in self._finish_row_params(f)],
            )
            applied += max(cur.rowcount, 0)
        return applied

    def _insert_sql_for(self, n: int) -> str:
        """One INSERT of ``n`` rows: a statement per row would hand the GIL over (and
        wait to get it back) once per row."""
        text = self._insert_many.get(n)
        if text is None:
            # The stamp is a parameter, read once per batch (_insert_rows): SQLite
            # evaluates a stamp subquery once per row of a multi-row INSERT, which cost
            # ~6% more instructions per run.
            rows = ", ".join([f"{self._insert_row[:-1]}, {self.dialect.param})"] * n)
            text = (
                f"INSERT INTO runs ({COLS}, change_seq) VALUES {rows} ON CONFLICT (id) DO NOTHING"
            )
            self._insert_many[n] = text
        return text

    def _finish_sql_for(self, n: int) -> str:
        """The guarded finish of ``n`` distinct runs in one UPDATE ... FROM.

        The rows are a UNION ALL of SELECTs: SQLite names no VALUES columns, and its
        sqlite3 module reports no rowcount for a statement that starts with WITH.
        """
        text = self._finish_many.get(n)
        if text is None:
            d = self.dialect
            names = FINISH_COLUMNS
            first = ", ".join(
                f"{d.param}{cast} AS {name}"
                for name, cast in zip(names, d.finish_casts, strict=True)
            )
            rest = ", ".join(f"{d.param}{cast}" for cast in d.finish_casts)
            rows = " UNION ALL ".join([f"SELECT {first}"] + [f"SELECT {rest}"] * (n - 1))
            duration = d.duration_between.format(end="v.finished_at", start="runs.started_at")
            text = (
                "UPDATE runs SET status = v.status, finished_at = v.finished_at, "
                f"duration_ms = COALESCE(v.duration_ms, {duration}), "
                "error_code = v.error_code, error_message = v.error_message, "
                "retryable = v.retryable, metadata = COALESCE(v.metadata, runs.metadata), "
                "updated_at = v.finished_at, items = v.items, "
                f"first_item_ms = v.first_item_ms, change_seq = {d.change_stamp} "
                f"FROM ({rows}) AS v WHERE runs.id = v.id "
                f"AND {finish_guard('runs.', 'v.status')}"
            )
            self._finish_many[n] = text
        return text

    def _finish_row_params(self, f: FinishRun) -> tuple[Any, ...]:
        return (
            f.id,
            f.status.value,
            self.dialect.ts(f.finished_at),
            f.duration_ms,
            f.error_code,
            f.error_message,
            f.retryable,
            f.metadata,
            f.items,
            f.first_item_ms,
        )

    def _apply_each(self, commands: Sequence[Command]) -> ApplyResult:
        """The batch command by command, in order, in one transaction."""
        from exectrack.stores._records import NewRun

        created = started = finished = 0
        with self._write() as cur:
            for cmd in commands:
                if isinstance(cmd, NewRun):
                    cur.execute(self._insert_sql, self._insert_params(cmd))
                    created += max(cur.rowcount, 0)
                else:
                    s, f = self._execute_update(cur, cmd)
                    started += s
                    finished += f
        return _result(len(commands), created, started, finished)

    def _execute_update(self, cur: Cursor, cmd: MarkRunning | FinishRun) -> tuple[int, int]:
        """Run one start or finish; (started, finished) it applied."""
        from exectrack.stores._records import FinishRun

        if isinstance(cmd, FinishRun):
            cur.execute(self._finish_sql, self._finish_params(cmd))
            return 0, max(cur.rowcount, 0)
        cur.execute(self._start_sql, self._start_params(cmd))
        return max(cur.rowcount, 0), 0


# -- helpers -------------------------------------------------------------------------


def finish_guard(table: str, target: str) -> str:
    """The whole first-terminal-write-wins rule, as SQL: the run is open, and a queued
    run may only become canceled. ``table``: a column prefix; ``target``: the new
    status (a parameter or a column)."""
    return f"{table}finished_at IS NULL AND ({table}status = 'running' OR {target} = 'canceled')"


ROLLUPS_VERSION = 5  # the schema version that adds the rollups

# Rows per multi-row statement: their parameters stay under SQLite's oldest limit of
# 999 bound parameters (49 x 20, 99 x 10), and 99 SELECTs under its 500 in one UNION.
SQLITE_MAX_PARAMS = 999
INSERT_CHUNK = SQLITE_MAX_PARAMS // (len(COLUMNS) + 1)  # + the change stamp
FINISH_CHUNK = SQLITE_MAX_PARAMS // len(FINISH_COLUMNS)


def _distinct_chunks(items: Sequence[Any], size: int) -> list[list[FinishRun]]:
    """Consecutive chunks of at most ``size`` items with distinct ids: an UPDATE ...
    FROM that matched one run twice would apply an arbitrary one of the two."""
    chunks: list[list[FinishRun]] = []
    chunk: list[FinishRun] = []
    ids: set[str] = set()
    for item in items:
        if len(chunk) == size or item.id in ids:
            chunks.append(chunk)
            chunk, ids = [], set()
        chunk.append(item)
        ids.add(item.id)
    if chunk:
        chunks.append(chunk)
    return chunks


def _check_new(run: NewRun) -> None:
    if (run.finished_at is None) != (run.status in (RunStatus.QUEUED, RunStatus.RUNNING)):
        raise InvalidArgumentError(
            f"run {run.id}: finished_at must be set exactly when the status is terminal"
        )


def _result(count: int, created: int, started: int, finished: int) -> ApplyResult:
    from exectrack.stores._records import ApplyResult

    return ApplyResult(created, started, finished, count - created - started - finished)


def _check_finish(cmd: FinishRun) -> None:
    if not cmd.status.is_terminal:
        raise InvalidArgumentError(
            f"cannot finish run {cmd.id} with non-terminal status {cmd.status.value!r}"
        )


_sql_stores: weakref.WeakSet[SqlStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A thread of the parent may have been migrating (holding the lock) at fork():
    the child gets a new lock, or its first write would wait forever."""
    for store in list(_sql_stores):
        store._ready_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

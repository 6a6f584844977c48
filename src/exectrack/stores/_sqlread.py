"""Reads: one run, filtered keyset pages, counts. Mixed into ``SqlStore``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from exectrack._model import Run, RunStatus, datetime_to_us, us_to_datetime
from exectrack.stores._base import RunFilter
from exectrack.stores._dialect import COLS, Cursor, SqlDialect, sql
from exectrack.stores._rollup import (
    DURATION,
    FIRST_ITEM,
    RollupCounts,
    RollupOps,
    Window,
    percentile,
    rollup_filter,
    window_of,
)

if TYPE_CHECKING:  # loads on first use (stores/_summaries.py): a CLI read never needs it
    from exectrack.stores._summaries import SourceSummary

__all__ = ["ReadOps"]


class ReadOps(RollupOps):
    """Store reads, written once for every engine."""

    dialect: SqlDialect
    _get_sql: str

    def _read(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _ensure_ready(self) -> None:
        raise NotImplementedError

    def get(self, run_id: str) -> Run | None:
        self._ensure_ready()
        with self._read() as cur:
            cur.execute(self._get_sql, (run_id,))
            row = cur.fetchone()
        return None if row is None else self._to_run(row)

    def list_runs(
        self, flt: RunFilter, *, limit: int, cursor: tuple[int, str] | None = None
    ) -> list[Run]:
        if limit < 1:
            return []
        self._ensure_ready()
        d = self.dialect
        stepped = flt.text if d.text_page is not None else None  # a needle read in steps
        where, params = self._where(flt, text=not stepped)
        if cursor is not None:
            # A row value, not "a < x OR (a = x AND b < y)": both engines turn it into
            # an index range, so page 10,000 costs what page 1 does.
            where.append("(started_at, id) < (?, ?)")
            params += [d.ts(cursor[0]), cursor[1]]
        if stepped and d.text_page is not None:
            with self._read_snapshot() as cur:
                found = d.text_page(cur, COLS, where, params, stepped, limit)
            if found is not None:
                return [self._to_run(r) for r in found]
            term, values = d.text_term(stepped)  # a needle the steps do not serve
            where.append(term)
            params += values
        query = f"SELECT {COLS} FROM runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_at DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._read() as cur:
            cur.execute(sql(self.dialect, query), params)
            rows = cur.fetchall()
        return [self._to_run(r) for r in rows]

    def changes(self, after: tuple[int, str] | None, *, limit: int) -> list[tuple[int, Run]]:
        """Up to ``limit`` runs whose last change comes after ``after`` (change_seq, id),
        in that order, each once and as it is now, with its stamp. Only settled stamps
        are read, so a later call never finds a change behind its cursor."""
        if limit < 1:
            return []
        self._ensure_ready()
        d = self.dialect
        query = f"SELECT {COLS}, change_seq FROM runs WHERE {d.change_settled}"
        params: list[Any] = []
        if after is not None:
            query += f" AND (change_seq, id) > (?{d.seq_cast}, ?)"
            params += [after[0], after[1]]
        query += " ORDER BY change_seq, id LIMIT ?"
        params.append(limit)
        with self._read() as cur:
            cur.execute(sql(d, query), params)
            rows = cur.fetchall()
        return [(d.seq_out(r[-1]), self._to_run(r)) for r in rows]

    def changes_head(self) -> tuple[int, str]:
        """The feed's position now: ``changes`` after it returns only later changes."""
        self._ensure_ready()
        d = self.dialect
        with self._read() as cur:
            cur.execute(
                sql(
                    d,
                    f"SELECT change_seq, id FROM runs WHERE {d.change_settled} "
                    "ORDER BY change_seq DESC, id DESC LIMIT 1",
                )
            )
            row = cur.fetchone()
        return (0, "") if row is None else (d.seq_out(row[0]), str(row[1]))

    def count_runs(self, flt: RunFilter) -> dict[tuple[str, RunStatus], int]:
        self._ensure_ready()
        if rollup_filter(flt):
            with self._read() as cur:
                counts = self._rollup_counts(cur, Window.of(*window_of(flt)), flt)
            return {(src, st): n for src, c in counts.items() for st, n in c.by_status.items()}
        where, params = self._where(flt)
        query = "SELECT source, status, COUNT(*) FROM runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " GROUP BY source, status"
        with self._read() as cur:
            cur.execute(sql(self.dialect, query), params)
            rows = cur.fetchall()
        return {(str(src), RunStatus(st)): int(n) for src, st, n in rows}

    def _read_snapshot(self) -> AbstractContextManager[Cursor]:
        """A cursor whose statements all see one snapshot (engines whose reads are
        autocommit override it)."""
        return self._read()

    def _where(self, flt: RunFilter, *, text: bool = True) -> tuple[list[str], list[Any]]:
        """The filter as WHERE terms and their parameters; ``text=False`` leaves the
        text filter out (for an engine that reads it in steps)."""
        where: list[str] = []
        params: list[Any] = []
        if flt.sources:
            where.append("source IN (" + ", ".join("?" * len(flt.sources)) + ")")
            params += flt.sources
        if flt.statuses:
            where.append("status IN (" + ", ".join("?" * len(flt.statuses)) + ")")
            params += [RunStatus.parse(s).value for s in flt.statuses]
        for column in ("session_id", "source_ref", "parent_id"):
            value = getattr(flt, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if flt.started_after is not None:
            where.append("started_at >= ?")
            params.append(self.dialect.ts(datetime_to_us(flt.started_after)))
        if flt.started_before is not None:
            where.append("started_at < ?")
            params.append(self.dialect.ts(datetime_to_us(flt.started_before)))
        if flt.text and text:
            term, values = self.dialect.text_term(flt.text)
            where.append(term)
            params += values
        return where, params

    def _to_run(self, row: Sequence[Any]) -> Run:
        d = self.dialect

        def ts(value: Any) -> datetime | None:
            return None if value is None else us_to_datetime(d.ts_out(value))

        return Run(
            id=str(row[0]),
            source=row[1],
            source_ref=row[2],
            session_id=row[3],
            parent_id=row[4],
            status=RunStatus(row[5]),
            started_at=us_to_datetime(d.ts_out(row[6])),  # NOT NULL in every schema
            finished_at=ts(row[7]),
            duration_ms=None if row[8] is None else float(row[8]),
            error_code=row[9],
            error_message=row[10],
            retryable=None if row[11] is None else d.bool_out(row[11]),
            metadata=d.json_out(row[12]),
            owner=row[13],
            heartbeat_at=ts(row[14]),
            deadline_at=ts(row[15]),
            updated_at=ts(row[16]),
            lease_until=ts(row[17]),
            items=None if row[18] is None else int(row[18]),
            first_item_ms=None if row[19] is None else float(row[19]),
        )

    def summarize(self, since: int | None, now: int) -> list[SourceSummary]:
        """Per-source figures for the hang-rate report: counts from the rollups, open
        runs from their index, percentiles exactly while the window holds at most
        ``exact_quantiles`` finished runs, from the histograms beyond."""
        from exectrack.stores._summaries import SourceSummary

        self._ensure_ready()
        d = self.dialect
        ts = d.ts
        window = Window.of(since, None)
        opens: dict[str, tuple[int, int, int, int | None]] = {}
        with self._read() as cur:
            counts = self._rollup_counts(cur, window, RunFilter())
            in_window = "1" if since is None else "CASE WHEN started_at >= ? THEN 1 ELSE 0 END"
            cur.execute(
                sql(
                    d,
                    "SELECT source, COUNT(*), "
                    "SUM(CASE WHEN lease_until < ? THEN 1 ELSE 0 END), "
                    f"SUM(CASE WHEN lease_until < ? THEN {in_window} ELSE 0 END), "
                    # unindexed: grouping by source must not lead SQLite to scan
                    # every run through the source index instead of the open ones
                    "MIN(started_at) FROM runs WHERE finished_at IS NULL "
                    f"GROUP BY {d.unindexed}source",
                ),
                [ts(now), ts(now), *([] if since is None else [ts(since)])],
            )
            for src, n, past, past_in, oldest in cur.fetchall():
                # a group has one open run or more: MIN(started_at) is never NULL
                opens[src] = (int(n), int(past or 0), int(past_in or 0), d.ts_out(oldest))
            finished = sum(c.durations + c.first_items for c in counts.values())
            rank: Callable[[str, str, float], float | None]
            if finished > self.exact_quantiles:
                hists = self._rollup_histograms(cur, window, RunFilter(), [DURATION, FIRST_ITEM])
                rank = lambda src, kind, q: percentile(  # noqa: E731
                    hists.get((src, kind), {}), round(q * 1000)
                )
            else:
                rank = self._exact_rank(cur, since, counts)

            summaries = []
            for src in sorted(set(counts) | set(opens)):
                n_open, past, past_in, oldest = opens.get(src, (0, 0, 0, None))
                c = counts.get(src)
                summaries.append(
                    SourceSummary(
                        source=src,
                        by_status={} if c is None else c.by_status,
                        error_codes={} if c is None else c.error_codes,
                        open=n_open,
                        open_past_lease=past,
                        open_past_lease_in_window=past_in,
                        oldest_open_at=oldest,
                        p50_ms=rank(src, DURATION, 0.50),
                        p95_ms=rank(src, DURATION, 0.95),
                        first_item_p50_ms=rank(src, FIRST_ITEM, 0.50),
                        first_item_p95_ms=rank(src, FIRST_ITEM, 0.95),
                    )
                )
        return summaries

    def _exact_rank(
        self, cur: Cursor, since: int | None, counts: dict[str, RollupCounts]
    ) -> Callable[[str, str, float], float | None]:
        """``rank(source, kind, q)``: the nearest-rank ``q`` quantile of the durations
        (or times to first item) of the source's finished runs started since
        ``since``, one sorted read each."""
        d = self.dialect
        window = "" if since is None else " AND started_at >= ?"
        wparams: list[Any] = [] if since is None else [d.ts(since)]

        def rank(src: str, kind: str, q: float) -> float | None:
            c = counts.get(src)
            n = 0 if c is None else c.durations if kind == DURATION else c.first_items
            if n == 0:
                return None
            column = "duration_ms" if kind == DURATION else "first_item_ms"
            cur.execute(
                sql(
                    d,
                    f"SELECT {column} FROM runs WHERE source = ? AND finished_at IS NOT NULL"
                    f" AND {column} IS NOT NULL{window} ORDER BY {column} LIMIT 1 OFFSET ?",
                ),
                [src, *wparams, max(math.ceil(q * n) - 1, 0)],
            )
            row = cur.fetchone()
            return None if row is None else float(row[0])

        return rank

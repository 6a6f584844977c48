"""Aggregates for the HTTP API and /metrics: per-source counts, duration quantiles
and buckets in a few queries, and the latest run of many scopes in one. Mixed into
``SqlStore`` beside the plain reads of ``_sqlread``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from exectrack._echo import echo
from exectrack._model import Run, RunStatus
from exectrack.errors import InvalidArgumentError
from exectrack.stores._base import RunFilter
from exectrack.stores._dialect import COLS, Cursor, sql
from exectrack.stores._rollup import (
    DURATION,
    Window,
    bound_slot,
    percentile,
    rollup_filter,
    window_of,
)
from exectrack.stores._sqlread import ReadOps

if TYPE_CHECKING:  # loads on first use (stores/_summaries.py): a CLI read never needs it
    from exectrack.stores._summaries import SourceAggregate

__all__ = ["AggregateOps"]

# SQLite caps a compound SELECT at 500 terms; stay well below it.
_SCOPES_PER_QUERY = 200


def _permille(q: float) -> int:
    """A quantile as an integer per mille, so the rank is exact integer arithmetic in
    SQL on both engines (no CEIL in SQLite without its math extension)."""
    if not isinstance(q, int | float) or not 0 < q <= 1:
        raise InvalidArgumentError(f"quantile {echo(q)}: must be in (0, 1]")
    pm = round(q * 1000)
    if pm == 0 or abs(pm - q * 1000) > 1e-6:
        raise InvalidArgumentError(f"quantile {echo(q)}: use at most three decimals")
    return pm


_DONE = "finished_at IS NOT NULL AND duration_ms IS NOT NULL"

_EQUALITIES = ("source", "source_ref", "session_id", "parent_id")


def _scope_of(flt: RunFilter) -> dict[str, str] | None:
    """The filter as column equalities, or None when it is more than that."""
    if len(flt.sources) > 1 or flt.statuses or flt.text:
        return None
    if flt.started_after is not None or flt.started_before is not None:
        return None
    scope = {"source": flt.sources[0]} if flt.sources else {}
    for column in _EQUALITIES[1:]:
        value = getattr(flt, column)
        if value is not None:
            scope[column] = value
    return scope


class AggregateOps(ReadOps):
    """``aggregate`` and ``latest_runs``, written once for every engine."""

    # PostgreSQL plans a UNION ALL of 200 LIMIT 1 subqueries in ~150 ms (ten times
    # running them): where the engine has LATERAL, scopes that are plain equalities
    # (what badges ask) go in as arrays, one small plan per shape of scope.
    lateral_latest = False

    def aggregate(
        self, flt: RunFilter, *, quantiles: Sequence[float] = (), bounds: Sequence[float] = ()
    ) -> list[SourceAggregate]:
        permilles = [_permille(q) for q in quantiles]
        limits = [float(b) for b in bounds]
        if limits != sorted(limits):
            raise InvalidArgumentError("bucket bounds must be ascending")
        self._ensure_ready()
        edges = [bound_slot(b) for b in limits]
        if rollup_filter(flt) and not (limits and (flt.statuses or None in edges)):
            return self._aggregate_rollups(flt, quantiles, permilles, edges)
        return self._aggregate_runs(flt, quantiles, permilles, limits)

    def _aggregate_rollups(
        self,
        flt: RunFilter,
        quantiles: Sequence[float],
        permilles: Sequence[int],
        edges: Sequence[int | None],
    ) -> list[SourceAggregate]:
        """``aggregate`` from the rollups: counts always; percentiles exactly from the
        runs up to ``exact_quantiles`` finished runs (or with a status filter, which
        the histograms do not split by), from the histograms beyond; buckets from the
        histograms (``edges``: each bound's slot)."""
        from exectrack.stores._summaries import SourceAggregate

        window = Window.of(*window_of(flt))
        with self._read() as cur:
            counts = self._rollup_counts(cur, window, flt)
            finished = sum(c.durations for c in counts.values())
            exact = bool(permilles) and (bool(flt.statuses) or finished <= self.exact_quantiles)
            hists: dict[tuple[str, str], dict[int, int]] = {}
            if edges or (permilles and not exact):
                hists = self._rollup_histograms(cur, window, flt, [DURATION])
            marks: dict[str, dict[float, float]] = {}
            if exact:
                where, params = self._where(flt)
                marks = self._exact_quantiles(cur, where, params, quantiles, permilles)
        out = []
        for src in sorted(counts):
            c = counts[src]
            slots = hists.get((src, DURATION), {})
            if permilles and not exact:
                found = {
                    q: percentile(slots, pm) for q, pm in zip(quantiles, permilles, strict=True)
                }
                marks[src] = {q: v for q, v in found.items() if v is not None}
            out.append(
                SourceAggregate(
                    source=src,
                    by_status=c.by_status,
                    error_codes=c.error_codes,
                    quantiles=marks.get(src, {}),
                    buckets=tuple(
                        sum(n for slot, n in slots.items() if slot <= edge)
                        for edge in edges
                        if edge is not None
                    ),
                    duration_count=c.durations,
                    duration_sum_ms=c.duration_sum_ms,
                )
            )
        return out

    def _aggregate_runs(
        self,
        flt: RunFilter,
        quantiles: Sequence[float],
        permilles: Sequence[int],
        limits: Sequence[float],
    ) -> list[SourceAggregate]:
        """``aggregate`` read from the runs themselves (filters the rollups cannot
        answer: a session, ref, parent, text, or bucket bounds that cut slots)."""
        from exectrack.stores._summaries import SourceAggregate

        d = self.dialect
        where, params = self._where(flt)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        bucket_sql = "".join(
            f", SUM(CASE WHEN {_DONE} AND duration_ms <= ? THEN 1 ELSE 0 END)" for _ in limits
        )
        counts: dict[str, dict[RunStatus, int]] = {}
        buckets: dict[str, list[int]] = {}
        durations: dict[str, tuple[int, float]] = {}
        codes: dict[str, dict[str, int]] = {}
        marks: dict[str, dict[float, float]] = {}
        with self._read() as cur:
            cur.execute(
                sql(
                    d,
                    f"SELECT source, status, COUNT(*), SUM(CASE WHEN {_DONE} THEN 1 ELSE 0 END), "
                    f"SUM(CASE WHEN {_DONE} THEN duration_ms ELSE 0 END){bucket_sql} "
                    f"FROM runs{cond} GROUP BY source, status",
                ),
                [*limits, *params],
            )
            for row in cur.fetchall():
                src = str(row[0])
                counts.setdefault(src, {})[RunStatus(row[1])] = int(row[2])
                n, total = durations.get(src, (0, 0.0))
                durations[src] = (n + int(row[3] or 0), total + float(row[4] or 0.0))
                into = buckets.setdefault(src, [0] * len(limits))
                for i, value in enumerate(row[5:]):
                    into[i] += int(value or 0)
            code_cond = " AND ".join([*where, "error_code IS NOT NULL"])
            cur.execute(
                sql(
                    d,
                    f"SELECT source, error_code, COUNT(*) FROM runs WHERE {code_cond} "
                    "GROUP BY source, error_code",
                ),
                params,
            )
            for src, code, n in cur.fetchall():
                codes.setdefault(str(src), {})[str(code)] = int(n)
            if permilles:
                marks = self._exact_quantiles(cur, where, params, quantiles, permilles)
        return [
            SourceAggregate(
                source=src,
                by_status=counts[src],
                error_codes=codes.get(src, {}),
                quantiles=marks.get(src, {}),
                buckets=tuple(buckets.get(src, [0] * len(limits))),
                duration_count=durations[src][0],
                duration_sum_ms=durations[src][1],
            )
            for src in sorted(counts)
        ]

    def _exact_quantiles(
        self,
        cur: Cursor,
        where: list[str],
        params: list[Any],
        quantiles: Sequence[float],
        permilles: Sequence[int],
    ) -> dict[str, dict[float, float]]:
        """Nearest-rank duration quantiles per source of the finished runs matching
        ``where``, in one sorting query."""
        marks: dict[str, dict[float, float]] = {}
        ranks = ", ".join(f"(cnt * {pm} + 999) / 1000" for pm in sorted(set(permilles)))
        inner_cond = " AND ".join([*where, _DONE])
        cur.execute(
            sql(
                self.dialect,
                "SELECT source, rn, cnt, duration_ms FROM ("
                "SELECT source, duration_ms, "
                "ROW_NUMBER() OVER (PARTITION BY source ORDER BY duration_ms) AS rn, "
                "COUNT(*) OVER (PARTITION BY source) AS cnt "
                f"FROM runs WHERE {inner_cond}) AS ranked WHERE rn IN ({ranks})",
            ),
            params,
        )
        for src, rn, cnt, value in cur.fetchall():
            for q, pm in zip(quantiles, permilles, strict=True):
                if (int(cnt) * pm + 999) // 1000 == int(rn):
                    marks.setdefault(str(src), {})[q] = float(value)
        return marks

    def latest_runs(self, filters: Sequence[RunFilter]) -> list[Run | None]:
        self._ensure_ready()
        found: list[Run | None] = [None] * len(filters)
        if self.lateral_latest and filters and all(_scope_of(f) is not None for f in filters):
            self._latest_lateral(filters, found)
            return found
        for start in range(0, len(filters), _SCOPES_PER_QUERY):
            parts: list[str] = []
            params: list[Any] = []
            for k, flt in enumerate(filters[start : start + _SCOPES_PER_QUERY], start):
                where, part_params = self._where(flt)
                cond = (" WHERE " + " AND ".join(where)) if where else ""
                parts.append(
                    f"SELECT * FROM (SELECT {COLS}, {k} AS k FROM runs{cond} "
                    f"ORDER BY started_at DESC, id DESC LIMIT 1) AS t{k}"
                )
                params += part_params
            if not parts:
                break
            with self._read() as cur:
                cur.execute(sql(self.dialect, " UNION ALL ".join(parts)), params)
                rows = cur.fetchall()
            for row in rows:
                found[int(row[-1])] = self._to_run(row[:-1])
        return found

    def _latest_lateral(self, filters: Sequence[RunFilter], found: list[Run | None]) -> None:
        """One statement: per shape of scope (which columns it fixes), the scopes'
        values as arrays, each joined LATERAL to its newest run."""
        shapes: dict[tuple[str, ...], list[tuple[int, dict[str, str]]]] = {}
        for k, flt in enumerate(filters):
            scope = _scope_of(flt)
            assert scope is not None
            shapes.setdefault(tuple(c for c in _EQUALITIES if c in scope), []).append((k, scope))
        parts: list[str] = []
        params: list[Any] = []
        for columns, members in shapes.items():
            arrays = ", ".join(["?::int[]", *("?::text[]" for _ in columns)])
            names = ", ".join(["k", *columns])
            cond = " AND ".join(f"runs.{c} = v.{c}" for c in columns) or "TRUE"
            parts.append(
                f"SELECT r.*, v.k FROM unnest({arrays}) AS v({names}) CROSS JOIN LATERAL "
                f"(SELECT {COLS} FROM runs WHERE {cond} "
                "ORDER BY started_at DESC, id DESC LIMIT 1) AS r"
            )
            params.append([k for k, _ in members])
            params += [[scope[c] for _, scope in members] for c in columns]
        with self._read() as cur:
            cur.execute(sql(self.dialect, " UNION ALL ".join(parts)), params)
            rows = cur.fetchall()
        for row in rows:
            found[int(row[-1])] = self._to_run(row[:-1])

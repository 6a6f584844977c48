"""Rollups: what finished runs add up to, kept per hour and per day, so the stats, the
report and /metrics over a window read a few hundred rows instead of every run in it.

Each finished run is added once, after it finished: ``fold_rollups`` walks the change
feed (``change_seq``, schema v3) from where it stopped, adds the runs that are
finished to ``run_rollups`` (counts by source, status and error code; duration count
and sum) and to ``run_histograms`` (durations and times to first item, by slot), at
the hour and the day they started, and moves the fold position in the same
transaction. A finished run never changes again (the first terminal write wins), so
nothing is ever subtracted, and the writes themselves stay as they were: folding is
a separate statement run in batches (after every ``fold_every`` written runs, by the
reaper loops and when asked).

A read adds three things in one statement, so it is exact at every moment: the
rollup rows of the whole hours and days inside its window, the finished runs of its
partial hours at the window's edges, and the finished runs not folded yet (after the
fold position, which that same statement reads). Open runs come from the open-runs
index, which holds only them.

Histograms have a slot per two significant digits (..., 9.9, 10, 11, ..., 99, 100,
110, ...): a value goes in the slot of the smallest such number >= it. A percentile
read from them is that number: at most 10% above the exact one, never below; a
Prometheus bucket bound with at most two significant digits (5, 10, 25, ..., 300000)
is a slot edge, so its cumulative count is exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from exectrack._model import RunStatus, datetime_to_us
from exectrack.stores._base import RunFilter
from exectrack.stores._dialect import Cursor, SqlDialect, sql

__all__ = [
    "DAY_US",
    "HOUR_US",
    "RollupCounts",
    "RollupOps",
    "Window",
    "bound_slot",
    "percentile",
    "rollup_filter",
    "slot_of",
    "slot_value",
    "window_of",
]

_log = logging.getLogger("exectrack.stores")

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
GRAINS = (HOUR_US, DAY_US)

# Slots: (exponent + _OFFSET) * 100 + mantissa, mantissa 10..99 (two digits), so a
# slot's number is mantissa * 10 ** (exponent - 1) and slots sort like their numbers.
_OFFSET = 9  # the smallest slot is 1e-9 ms; slot 0 holds zero (and anything below)
_TINY = 1e-9

DURATION = "duration"
FIRST_ITEM = "first_item"


def slot_of(ms: float) -> int:
    """The slot of a value in ms: the smallest two-significant-digit number >= it."""
    if not ms > _TINY:  # also NaN
        return 0
    exp = math.floor(math.log10(ms))
    # 1e-9: a value that is a slot's number must not round up past it (0.7 / 1e-2 is
    # 70.00000000000001 in binary floating point).
    mant = math.ceil(ms / 10.0 ** (exp - 1) - 1e-9)
    if mant < 10:  # log10 rounded up at a power of ten
        exp, mant = exp - 1, mant * 10
    if mant > 99:
        exp, mant = exp + 1, 10
    return (exp + _OFFSET) * 100 + mant


def slot_value(slot: int) -> float:
    """The number a slot stands for (its upper edge), in ms."""
    if slot <= 0:
        return 0.0
    exp, mant = divmod(slot, 100)
    return float(f"{mant}e{exp - _OFFSET - 1}")


def bound_slot(bound_ms: float) -> int | None:
    """The slot whose edge is exactly ``bound_ms``, or None (a bound with more than two
    significant digits cuts through a slot)."""
    slot = slot_of(bound_ms)
    return slot if slot_value(slot) == bound_ms else None


def percentile(slots: dict[int, int], permille: int) -> float | None:
    """The nearest-rank ``permille``/1000 quantile of a histogram: its slot's number."""
    total = sum(slots.values())
    if total == 0:
        return None
    rank = (total * permille + 999) // 1000
    seen = 0
    for slot in sorted(slots):
        seen += slots[slot]
        if seen >= max(rank, 1):
            return slot_value(slot)
    raise AssertionError("unreachable: the ranks add up to the total")  # pragma: no cover


def _floor(us: int, grain: int) -> int:
    return us - us % grain


def _ceil(us: int, grain: int) -> int:
    return -((-us) // grain) * grain


@dataclass(frozen=True, slots=True)
class Window:
    """A started_at window [start, end) in microseconds (None: unbounded), cut into the
    rollup ranges that cover it and the raw ranges at its edges.

    ``ranges``: (grain, first bucket, end bucket) with None for unbounded;
    ``raw``: [lo, hi) ranges read from runs; ``covered``: the part the ranges cover.
    """

    start: int | None
    end: int | None
    ranges: tuple[tuple[int, int | None, int | None], ...]
    raw: tuple[tuple[int | None, int | None], ...]
    covered: tuple[int | None, int | None] | None

    @classmethod
    def of(cls, start: int | None, end: int | None) -> Window:
        h0 = None if start is None else _ceil(start, HOUR_US)
        h1 = None if end is None else _floor(end, HOUR_US)
        if h0 is not None and h1 is not None and h0 >= h1:
            return cls(start, end, (), ((start, end),), None)
        d0 = None if h0 is None else _ceil(h0, DAY_US)
        d1 = None if h1 is None else _floor(h1, DAY_US)
        ranges: list[tuple[int, int | None, int | None]] = []
        if d0 is not None and d1 is not None and d0 >= d1:
            ranges.append((HOUR_US, h0, h1))
        else:
            ranges.append((DAY_US, d0, d1))
            if h0 is not None and d0 is not None and h0 < d0:
                ranges.append((HOUR_US, h0, d0))
            if h1 is not None and d1 is not None and d1 < h1:
                ranges.append((HOUR_US, d1, h1))
        raw: list[tuple[int | None, int | None]] = []
        if start is not None and h0 is not None and start < h0:
            raw.append((start, h0))
        if end is not None and h1 is not None and h1 < end:
            raw.append((h1, end))
        return cls(start, end, tuple(ranges), tuple(raw), (h0, h1))


@dataclass(slots=True)
class RollupCounts:
    """One source's figures in a window (finished runs from rollups, open runs live)."""

    by_status: dict[RunStatus, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    durations: int = 0
    duration_sum_ms: float = 0.0
    first_items: int = 0


def rollup_filter(flt: RunFilter) -> bool:
    """True when rollups can answer ``flt``: sources, statuses and a time window only
    (a session, ref, parent or text filter reads the runs through their indexes)."""
    return (
        flt.session_id is None and flt.source_ref is None and flt.parent_id is None and not flt.text
    )


def window_of(flt: RunFilter) -> tuple[int | None, int | None]:
    start = None if flt.started_after is None else datetime_to_us(flt.started_after)
    end = None if flt.started_before is None else datetime_to_us(flt.started_before)
    return start, end


class RollupOps:
    """Folding runs into rollups and reading them, written once for every engine."""

    dialect: SqlDialect
    # Changes read per fold transaction: SQLite holds its write lock meanwhile.
    fold_chunk = 5_000
    # Up to this many finished runs in a window, percentiles are read exactly from the
    # runs (one sort of that many rows); beyond, from the histograms.
    exact_quantiles = 2_000

    def _write(self) -> Any:
        raise NotImplementedError

    def _read(self) -> Any:
        raise NotImplementedError

    def _ensure_ready(self) -> None:
        raise NotImplementedError

    # -- folding ----------------------------------------------------------------

    def fold_rollups(self, *, limit: int | None = None) -> int:
        """Fold settled changes into the rollups, ``fold_chunk`` per transaction, until
        none is left (or ``limit`` changes were read); returns the finished runs added.
        Another process folding at the same time is waited for (SQLite) or skipped
        (PostgreSQL: it holds the fold position, and will fold these too)."""
        self._ensure_ready()
        added = 0
        read = 0
        while limit is None or read < limit:
            chunk = self.fold_chunk if limit is None else min(self.fold_chunk, limit - read)
            seen, folded = self._fold_chunk(chunk)
            added += folded
            read += seen
            if seen < chunk:
                break
        return added

    def _fold_chunk(self, chunk: int) -> tuple[int, int]:
        """One transaction: read up to ``chunk`` changes after the fold position and add
        the finished runs among them; (changes read, runs added)."""
        d = self.dialect
        with self._write() as cur:
            cur.execute(
                "SELECT folded_seq, folded_id FROM run_rollup_state WHERE id = 1" + d.row_lock
            )
            state = cur.fetchone()
            if state is None:  # PostgreSQL: another fold holds it
                return 0, 0
            cur.execute(
                sql(
                    d,
                    "SELECT change_seq, id, source, started_at, status, error_code, "
                    f"duration_ms, first_item_ms, finished_at FROM runs WHERE {d.change_settled} "
                    f"AND (change_seq, id) > (?{d.seq_cast}, ?) ORDER BY change_seq, id LIMIT ?",
                ),
                [d.seq_out(state[0]), state[1], chunk],
            )
            rows = cur.fetchall()
            if not rows:
                return 0, 0
            counts: dict[tuple[Any, ...], list[float]] = {}
            hists: dict[tuple[Any, ...], int] = {}
            added = 0
            for _seq, _id, source, started, status, code, duration, first, finished in rows:
                if finished is None:
                    continue
                added += 1
                at = d.ts_out(started)
                for grain in GRAINS:
                    bucket = _floor(at, grain)
                    key = (grain, bucket, source, status, code or "")
                    c = counts.get(key)
                    if c is None:
                        c = counts[key] = [0, 0, 0.0, 0]
                    c[0] += 1
                    if duration is not None:
                        c[1] += 1
                        c[2] += float(duration)
                        hk = (grain, bucket, source, DURATION, slot_of(float(duration)))
                        hists[hk] = hists.get(hk, 0) + 1
                    if first is not None:
                        c[3] += 1
                        hk = (grain, bucket, source, FIRST_ITEM, slot_of(float(first)))
                        hists[hk] = hists.get(hk, 0) + 1
            if counts:
                cur.executemany(
                    sql(
                        d,
                        "INSERT INTO run_rollups (grain, bucket, source, status, error_code, "
                        "runs, durations, duration_sum, first_items) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (grain, bucket, source, status, error_code) DO UPDATE SET "
                        "runs = run_rollups.runs + excluded.runs, "
                        "durations = run_rollups.durations + excluded.durations, "
                        "duration_sum = run_rollups.duration_sum + excluded.duration_sum, "
                        "first_items = run_rollups.first_items + excluded.first_items",
                    ),
                    [(*k, int(v[0]), int(v[1]), v[2], int(v[3])) for k, v in counts.items()],
                )
            if hists:
                cur.executemany(
                    sql(
                        d,
                        "INSERT INTO run_histograms (grain, bucket, source, kind, slot, runs) "
                        "VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (grain, bucket, source, kind, slot) DO UPDATE SET "
                        "runs = run_histograms.runs + excluded.runs",
                    ),
                    [(*k, n) for k, n in hists.items()],
                )
            last = rows[-1]
            cur.execute(
                sql(
                    d,
                    f"UPDATE run_rollup_state SET folded_seq = ?{d.seq_cast}, folded_id = ? "
                    "WHERE id = 1",
                ),
                [d.seq_out(last[0]), last[1]],
            )
        return len(rows), added

    # -- reading ------------------------------------------------------------------

    def _parts_sql(
        self, window: Window, flt: RunFilter, *, rollup_select: str, raw_select: str
    ) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, list[Any]]]]:
        """The arms of a rollup read, each with its parameters: the rollup rows of
        ``window``'s ranges, and the finished runs of its raw edges or not folded yet.
        Only the sources and statuses of ``flt`` apply here."""
        d = self.dialect
        extra, extra_params = _source_status(flt)
        rollup_arms: list[tuple[str, list[Any]]] = []
        for grain, lo, hi in window.ranges:
            cond = ["grain = ?"]
            params: list[Any] = [grain]
            if lo is not None:
                cond.append("bucket >= ?")
                params.append(lo)
            if hi is not None:
                cond.append("bucket < ?")
                params.append(hi)
            rollup_arms.append(
                (f"{rollup_select} WHERE {' AND '.join(cond + extra)}", params + extra_params)
            )
        run_arms: list[tuple[str, list[Any]]] = []
        for lo, hi in window.raw:
            cond, params = _started_between(d, lo, hi)
            run_arms.append(
                (
                    f"{raw_select} WHERE finished_at IS NOT NULL AND " + " AND ".join(cond + extra),
                    params + extra_params,
                )
            )
        if window.covered is not None:
            cond, params = _started_between(d, *window.covered)
            cond.append("(change_seq, id) > (SELECT folded_seq, folded_id FROM run_rollup_state)")
            run_arms.append(
                (
                    f"{raw_select} WHERE finished_at IS NOT NULL AND " + " AND ".join(cond + extra),
                    params + extra_params,
                )
            )
        return rollup_arms, run_arms

    def _rollup_counts(
        self, cur: Cursor, window: Window, flt: RunFilter
    ) -> dict[str, RollupCounts]:
        """Per source: runs by status and error code, duration count and sum and
        streams with a first item, of the runs started in ``window`` that match the
        sources and statuses of ``flt``, in one statement."""
        d = self.dialect
        rollup_arms, run_arms = self._parts_sql(
            window,
            flt,
            rollup_select=(
                "SELECT source, status, error_code, runs, durations, duration_sum, "
                "first_items FROM run_rollups"
            ),
            raw_select=(
                "SELECT source, status, COALESCE(error_code, '') AS error_code, 1 AS runs, "
                "CASE WHEN duration_ms IS NULL THEN 0 ELSE 1 END AS durations, "
                "COALESCE(duration_ms, 0) AS duration_sum, "
                "CASE WHEN first_item_ms IS NULL THEN 0 ELSE 1 END AS first_items FROM runs"
            ),
        )
        open_cond, open_params = _started_between(d, window.start, window.end)
        extra, extra_params = _source_status(flt)
        open_arm = (
            "SELECT source, status, '' AS error_code, 1 AS runs, 0 AS durations, "
            "0 AS duration_sum, 0 AS first_items FROM runs WHERE finished_at IS NULL"
            + "".join(" AND " + c for c in open_cond + extra),
            open_params + extra_params,
        )
        arms = [*rollup_arms, *run_arms, open_arm]
        cur.execute(
            sql(
                d,
                "SELECT source, status, error_code, SUM(runs), SUM(durations), "
                "SUM(duration_sum), SUM(first_items) FROM ("
                + " UNION ALL ".join(a for a, _ in arms)
                + ") AS parts GROUP BY source, status, error_code",
            ),
            [p for _, ps in arms for p in ps],
        )
        out: dict[str, RollupCounts] = {}
        for source, status, code, runs, durations, total, firsts in cur.fetchall():
            n = int(runs)
            if n == 0:
                continue
            c = out.setdefault(str(source), RollupCounts())
            st = RunStatus(status)
            c.by_status[st] = c.by_status.get(st, 0) + n
            if code:
                c.error_codes[str(code)] = c.error_codes.get(str(code), 0) + n
            c.durations += int(durations or 0)
            c.duration_sum_ms += float(total or 0.0)
            c.first_items += int(firsts or 0)
        return out

    def _rollup_histograms(
        self, cur: Cursor, window: Window, flt: RunFilter, kinds: Sequence[str]
    ) -> dict[tuple[str, str], dict[int, int]]:
        """Per (source, kind): the histogram of the finished runs started in ``window``
        of the sources of ``flt`` (statuses: histograms have none), in one statement."""
        flt = RunFilter(sources=flt.sources)
        arms: list[tuple[str, list[Any]]] = []
        for kind in kinds:
            column = _COLUMN_OF[kind]
            rollup_arms, run_arms = self._parts_sql(
                window,
                flt,
                rollup_select=(
                    f"SELECT source, '{kind}' AS kind, slot, runs, "
                    "CAST(NULL AS DOUBLE PRECISION) AS value FROM run_histograms"
                ),
                raw_select=f"SELECT source, '{kind}' AS kind, 0 AS slot, 1 AS runs, "
                f"{column} AS value FROM runs",
            )
            arms += [(a + f" AND kind = '{kind}'", p) for a, p in rollup_arms]
            arms += [(a + f" AND {column} IS NOT NULL", p) for a, p in run_arms]
        out: dict[tuple[str, str], dict[int, int]] = {}
        if not arms:
            return out
        cur.execute(
            sql(
                self.dialect,
                "SELECT source, kind, slot, SUM(runs), value FROM ("
                + " UNION ALL ".join(a for a, _ in arms)
                + ") AS parts GROUP BY source, kind, slot, value",
            ),
            [p for _, ps in arms for p in ps],
        )
        for source, kind, slot, runs, value in cur.fetchall():
            slots = out.setdefault((str(source), str(kind)), {})
            at = slot_of(float(value)) if value is not None else int(slot)
            slots[at] = slots.get(at, 0) + int(runs)
        return out


_COLUMN_OF = {DURATION: "duration_ms", FIRST_ITEM: "first_item_ms"}


def _source_status(flt: RunFilter) -> tuple[list[str], list[Any]]:
    cond: list[str] = []
    params: list[Any] = []
    if flt.sources:
        cond.append("source IN (" + ", ".join("?" * len(flt.sources)) + ")")
        params += list(flt.sources)
    if flt.statuses:
        cond.append("status IN (" + ", ".join("?" * len(flt.statuses)) + ")")
        params += [RunStatus.parse(s).value for s in flt.statuses]
    return cond, params


def _started_between(d: SqlDialect, lo: int | None, hi: int | None) -> tuple[list[str], list[Any]]:
    cond: list[str] = []
    params: list[Any] = []
    if lo is not None:
        cond.append("started_at >= ?")
        params.append(d.ts(lo))
    if hi is not None:
        cond.append("started_at < ?")
        params.append(d.ts(hi))
    return cond, params

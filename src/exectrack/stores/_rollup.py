"""Rollups: what finished runs add up to, kept per hour and per day, so the stats, the
report and /metrics over a window read a few hundred rows instead of every run in it.

Each finished run is added once, after it finished: ``fold_rollups`` walks the change
feed (``change_seq``, schema v3) from where it stopped, adds the runs that are
finished to ``run_rollups`` (counts by source, status and error code; duration count
and sum) and to ``run_histograms`` (durations and times to first item: one row per
hour or day, source and kind, its slots packed in it), at
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

import bisect
import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

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

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
GRAINS = (HOUR_US, DAY_US)

# Slots: (exponent + _OFFSET) * 90 + mantissa - 10, mantissa 10..99 (two digits), so a
# slot's number is mantissa * 10 ** (exponent - 1), slots sort like their numbers, and
# a mantissa that rounds up to 100 is the next decade's 10.
_OFFSET = 9
_EXPONENTS = range(-_OFFSET, 16)  # values from 1e-9 ms to 1e16 ms (the top slot above)
_POWERS = {e: float(f"1e{e}") for e in range(-_OFFSET - 1, 17)}
_TINY = 1e-9  # slot 0 holds zero, anything smaller and NaN
_ROUND = 1e-9  # 0.7 / 1e-2 is 70.00000000000001: a slot's own number must stay in it
_TOP = (_EXPONENTS[-1] + _OFFSET) * 90 + 89

DURATION = "duration"
FIRST_ITEM = "first_item"


_UPPERS = [_POWERS[e + 1] for e in _EXPONENTS]  # each decade's end, ascending


def slot_of(ms: float) -> int:
    """The slot of a value in ms: the smallest two-significant-digit number >= it."""
    if not ms > _TINY:  # also NaN
        return 0
    i = bisect.bisect_right(_UPPERS, ms)  # the decade: the first that ends above ms
    if i == len(_UPPERS):
        return _TOP
    exp = _EXPONENTS[i]
    return (exp + _OFFSET) * 90 + math.ceil(ms / _POWERS[exp - 1] - _ROUND) - 10


def slot_value(slot: int) -> float:
    """The number a slot stands for (its upper edge), in ms."""
    if slot <= 0:
        return 0.0
    exp, mant = divmod(slot, 90)
    return float(f"{mant + 10}e{exp - _OFFSET - 1}")


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
    rank = max((total * permille + 999) // 1000, 1)
    seen = 0
    for slot in sorted(slots):  # not empty: total > 0
        seen += slots[slot]
        if seen >= rank:
            break
    return slot_value(slot)


def pack(slots: dict[int, int]) -> str:
    """A histogram as stored: JSON ``[slot, runs, slot, runs, ...]``, slots ascending
    (one row per hour or day and source holds all its slots)."""
    return json.dumps(
        [x for slot in sorted(slots) for x in (slot, slots[slot])], separators=(",", ":")
    )


def add_packed(into: dict[int, int], packed: str) -> None:
    """Add a stored histogram to ``into``."""
    flat = json.loads(packed)
    get = into.get
    for slot, runs in zip(flat[::2], flat[1::2], strict=True):
        into[slot] = get(slot, 0) + runs


def _floor(us: int, grain: int) -> int:
    return us - us % grain


def _ceil(us: int, grain: int) -> int:
    return -((-us) // grain) * grain


class Window(NamedTuple):
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


class RollupCounts:
    """One source's figures in a window (finished runs from rollups, open runs live)."""

    __slots__ = ("by_status", "duration_sum_ms", "durations", "error_codes", "first_items")

    def __init__(self) -> None:
        self.by_status: dict[RunStatus, int] = {}
        self.error_codes: dict[str, int] = {}
        self.durations = 0
        self.duration_sum_ms = 0.0
        self.first_items = 0


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
        """One transaction: add the finished runs among the next ``chunk`` settled
        changes after the fold position, and move the position past them; (changes
        read, runs added)."""
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
                    "SELECT change_seq, id, finished_at, started_at, source, status, error_code, "
                    f"duration_ms, first_item_ms FROM runs WHERE {d.change_settled} "
                    f"AND (change_seq, id) > (?{d.seq_cast}, ?) ORDER BY change_seq, id LIMIT ?",
                ),
                [d.seq_out(state[0]), state[1], chunk],
            )
            rows = cur.fetchall()
            if not rows:
                return 0, 0
            # Added up here per hour (a GROUP BY in the engine costs twice as much: the
            # slots make most groups a run or two), then the days from the hours.
            ts_out = d.ts_out
            hours: dict[tuple[Any, ...], list[Any]] = {}
            hour_slots: dict[tuple[Any, ...], dict[int, int]] = {}
            added = 0
            for _seq, _id, finished, started, source, status, code, dur, first in rows:
                if finished is None:
                    continue
                added += 1
                at = ts_out(started)
                bucket = at - at % HOUR_US
                c = hours.get((bucket, source, status, code))
                if c is None:
                    c = hours[(bucket, source, status, code)] = [0, 0, 0.0, 0]
                c[0] += 1
                if dur is not None:
                    c[1] += 1
                    c[2] += dur
                    h = hour_slots.setdefault((bucket, source, DURATION), {})
                    slot = slot_of(dur)
                    h[slot] = h.get(slot, 0) + 1
                if first is not None:
                    c[3] += 1
                    h = hour_slots.setdefault((bucket, source, FIRST_ITEM), {})
                    slot = slot_of(first)
                    h[slot] = h.get(slot, 0) + 1
            counts: dict[tuple[Any, ...], list[Any]] = {}
            for (bucket, source, status, code), c in hours.items():
                for grain in GRAINS:
                    key = (grain, bucket - bucket % grain, source, status, code or "")
                    total = counts.setdefault(key, [0, 0, 0.0, 0])
                    for i in range(4):
                        total[i] += c[i]
            hists: dict[tuple[Any, ...], dict[int, int]] = {}
            for (bucket, source, kind), slots in hour_slots.items():
                for grain in GRAINS:
                    h = hists.setdefault((grain, bucket - bucket % grain, source, kind), {})
                    for slot, n in slots.items():
                        h[slot] = h.get(slot, 0) + n
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
                    [(*k, *v) for k, v in counts.items()],
                )
            if hists:
                self._merge_histograms(cur, hists)
            cur.execute(
                sql(
                    d,
                    f"UPDATE run_rollup_state SET folded_seq = ?{d.seq_cast}, folded_id = ? "
                    "WHERE id = 1",
                ),
                [d.seq_out(rows[-1][0]), rows[-1][1]],
            )
        return len(rows), added

    def _merge_histograms(self, cur: Cursor, hists: dict[tuple[Any, ...], dict[int, int]]) -> None:
        """Add ``hists`` (per (grain, bucket, source, kind): slot -> runs) to the stored
        ones: read those of the buckets touched, add, write back. Safe because one
        fold at a time holds the fold position."""
        d = self.dialect
        for grain in GRAINS:  # every hour's slots are in its day's too: both are there
            buckets = [k[1] for k in hists if k[0] == grain]
            cur.execute(
                sql(
                    d,
                    "SELECT bucket, source, kind, counts FROM run_histograms "
                    "WHERE grain = ? AND bucket >= ? AND bucket <= ?",
                ),
                [grain, min(buckets), max(buckets)],
            )
            for bucket, source, kind, counts in cur.fetchall():
                new = hists.get((grain, bucket, source, kind))
                if new is not None:
                    add_packed(new, counts)
        cur.executemany(
            sql(
                d,
                "INSERT INTO run_histograms (grain, bucket, source, kind, counts) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (grain, bucket, source, kind) DO UPDATE SET counts = excluded.counts",
            ),
            [(*k, pack(h)) for k, h in hists.items()],
        )

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
            # Found through the change index from the fold position on: the window is
            # checked on each (``unindexed``: SQLite would otherwise scan it by time).
            cond, params = _started_between(d, *window.covered, column=d.unindexed + "started_at")
            cond += [
                "change_seq >= (SELECT folded_seq FROM run_rollup_state)",
                "(change_seq, id) > (SELECT folded_seq, folded_id FROM run_rollup_state)",
            ]
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
        # Open runs through their own (partial) index, the window checked on each.
        open_cond, open_params = _started_between(
            d, window.start, window.end, column=d.unindexed + "started_at"
        )
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
            n = int(runs)  # >= 1: every arm's rows count at least one run
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
                    f"SELECT source, '{kind}' AS kind, counts, "
                    "CAST(NULL AS DOUBLE PRECISION) AS value FROM run_histograms"
                ),
                raw_select=f"SELECT source, '{kind}' AS kind, NULL AS counts, "
                f"{column} AS value FROM runs",
            )
            arms += [(a + f" AND kind = '{kind}'", p) for a, p in rollup_arms]
            arms += [(a + f" AND {column} IS NOT NULL", p) for a, p in run_arms]
        out: dict[tuple[str, str], dict[int, int]] = {}
        if not arms:
            return out
        cur.execute(
            sql(self.dialect, " UNION ALL ".join(a for a, _ in arms)),
            [p for _, ps in arms for p in ps],
        )
        for source, kind, counts, value in cur.fetchall():
            slots = out.setdefault((str(source), str(kind)), {})
            if counts is not None:
                add_packed(slots, counts)
            else:
                at = slot_of(float(value))
                slots[at] = slots.get(at, 0) + 1
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


def _started_between(
    d: SqlDialect, lo: int | None, hi: int | None, *, column: str = "started_at"
) -> tuple[list[str], list[Any]]:
    cond: list[str] = []
    params: list[Any] = []
    if lo is not None:
        cond.append(f"{column} >= ?")
        params.append(d.ts(lo))
    if hi is not None:
        cond.append(f"{column} < ?")
        params.append(d.ts(hi))
    return cond, params

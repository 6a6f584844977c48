"""The one read path: filters, keyset pages, stats, latest run.

The CLI, the HTTP API and the badges all call these functions, so the same run shows
the same status everywhere. Every function takes a store; the tracker's own query
methods flush first and then call these.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from exectrack._echo import echo
from exectrack._model import Run, RunStatus, datetime_to_us, validate_source
from exectrack.errors import InvalidArgumentError
from exectrack.stores._base import Page, RunFilter, Store

if TYPE_CHECKING:
    from exectrack._report import Report, SourceReport
    from exectrack._results import Changes, RunStats, SourceStats

__all__ = [
    "MAX_PAGE_SIZE",
    "Changes",
    "Report",
    "RunStats",
    "SourceReport",
    "SourceStats",
    "changes",
    "changes_head",
    "decode_cursor",
    "encode_cursor",
    "get_run",
    "latest_run",
    "latest_runs",
    "list_runs",
    "make_filter",
    "parse_time",
    "report",
    "run_stats",
    "source_stats",
]

MAX_PAGE_SIZE = 1000
_RESULTS = frozenset({"Changes", "RunStats", "SourceStats"})
_REPORT = frozenset({"Report", "SourceReport"})
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | datetime, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 (naive means UTC) or an age such as
    ``30s``, ``15m``, ``2h``, ``7d``, ``1w`` (that long before ``now``).

    A time that cannot be read, or that falls outside the years 1-9999 in UTC, is an
    InvalidArgumentError naming the value.
    """
    if isinstance(text, datetime) and text.tzinfo is None:
        raise InvalidArgumentError(f"naive datetime {text.isoformat()!r}: pass an aware one")
    try:
        if isinstance(text, datetime):
            return text.astimezone(UTC)
        raw = text.strip()
        match = _RELATIVE.fullmatch(raw.lower())
        if match:
            age = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
            return (now or datetime.now(UTC)) - age
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidArgumentError(
            f"time {echo(text)} is out of range: times must fall in the years 1-9999 (UTC)"
        ) from None
    except ValueError:
        raise InvalidArgumentError(
            f"cannot read time {echo(text)}: use ISO 8601 (2026-11-25T10:00:00Z) "
            "or an age such as 30s, 15m, 2h, 7d"
        ) from None


def _opaque(text: str) -> str:
    """A cursor's text as unpadded URL-safe base64 (opaque to clients)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unopaque(cursor: str) -> str:
    """The text of a cursor; ValueError (or binascii.Error) when it is not one."""
    padded = cursor + "=" * (-len(cursor) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True).decode()


def encode_cursor(run: Run) -> str:
    """An opaque cursor pointing just after ``run`` in list order."""
    return _opaque(f"{datetime_to_us(run.started_at)}:{run.id}")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        us, run_id = _unopaque(cursor).split(":", 1)
        if not run_id:
            raise ValueError
        return int(us), run_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgumentError(
            f"invalid cursor {echo(cursor)}: pass the next_cursor of a previous page"
        ) from None


def _encode_position(position: tuple[int, str]) -> str:
    return _opaque(f"c:{position[0]}:{position[1]}")


def _decode_position(cursor: str) -> tuple[int, str]:
    try:
        tag, seq, run_id = _unopaque(cursor).split(":", 2)
        if tag != "c" or not seq.isdigit() or int(seq) >= 2**63:
            raise ValueError
        return int(seq), run_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgumentError(
            f"invalid change cursor {echo(cursor)}: pass the cursor of a previous "
            "change page or a page's changes_cursor"
        ) from None


def changes(store: Store, after: str | None = None, *, limit: int = 500) -> Changes:
    """What changed after ``after`` (a cursor from :func:`changes_head`, a previous
    :class:`Changes` or None: from the start of history).

    A run that changes again later appears again, at its new position; a change is
    never found behind a cursor that has passed it, even with many writers.
    """
    from exectrack._results import Changes

    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgumentError(f"limit={echo(limit)}: must be between 1 and {MAX_PAGE_SIZE}")
    position = None if after is None else _decode_position(after)
    rows = store.changes(position, limit=limit)
    if not rows:
        return Changes([], after if after is not None else _encode_position((0, "")))
    seq, last = rows[-1]
    return Changes([run for _, run in rows], _encode_position((seq, last.id)))


def changes_head(store: Store) -> str:
    """The change feed's position now: take it before reading a page of runs, then
    follow :func:`changes` from it, and no update to the page is missed."""
    return _encode_position(store.changes_head())


def _tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def make_filter(
    *,
    source: str | Iterable[str] | None = None,
    status: str | RunStatus | Iterable[str | RunStatus] | None = None,
    session_id: str | None = None,
    source_ref: str | None = None,
    parent_id: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    text: str | None = None,
    now: datetime | None = None,
) -> RunFilter:
    """A validated :class:`RunFilter`; unknown statuses and bad names are errors."""
    sources = tuple(validate_source(s) for s in _tuple(source))
    if status is None:
        statuses: tuple[RunStatus, ...] = ()
    elif isinstance(status, str):
        statuses = (RunStatus.parse(status),)
    else:
        statuses = tuple(RunStatus.parse(s) for s in status)
    after = None if since is None else parse_time(since, now=now)
    before = None if until is None else parse_time(until, now=now)
    return RunFilter(
        sources=sources,
        statuses=statuses,
        session_id=session_id,
        source_ref=source_ref,
        parent_id=parent_id,
        started_after=after,
        started_before=before,
        text=text or None,
    )


def list_runs(
    store: Store, flt: RunFilter | None = None, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """One page of runs, newest first; pass ``next_cursor`` back for the next page.

    Pages are keyset-based on ``(started_at, id)``: a deep page costs the same as the
    first, and runs inserted while paging never make a page repeat or skip a run.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgumentError(f"limit={echo(limit)}: must be between 1 and {MAX_PAGE_SIZE}")
    after = None if cursor is None else decode_cursor(cursor)
    runs = store.list_runs(flt or RunFilter(), limit=limit + 1, cursor=after)
    if len(runs) > limit:
        runs = runs[:limit]
        return Page(runs=runs, next_cursor=encode_cursor(runs[-1]))
    return Page(runs=runs, next_cursor=None)


def get_run(store: Store, run_id: str) -> Run | None:
    """The run, or None when no run has this id."""
    return store.get(run_id)


def latest_run(store: Store, flt: RunFilter | None = None) -> Run | None:
    """The newest run matching ``flt`` (e.g. a source and source_ref, for a badge)."""
    runs = store.list_runs(flt or RunFilter(), limit=1)
    return runs[0] if runs else None


def latest_runs(store: Store, filters: Sequence[RunFilter]) -> list[Run | None]:
    """The newest run matching each filter (None where none does), in one query: all
    the badges of a page at once."""
    return store.latest_runs(list(filters)) if filters else []


def run_stats(store: Store, flt: RunFilter | None = None) -> RunStats:
    from exectrack._results import RunStats

    counts = store.count_runs(flt or RunFilter())
    by_status: dict[str, int] = {s.value: 0 for s in RunStatus}
    by_source: dict[str, dict[str, int]] = {}
    for (source, status), n in sorted(counts.items()):
        by_status[status.value] += n
        by_source.setdefault(source, {})[status.value] = n
    return RunStats(total=sum(counts.values()), by_status=by_status, by_source=by_source)


def _top_codes(codes: dict[str, int], top: int) -> list[tuple[str, int]]:
    """The ``top`` most frequent error codes, most frequent first, ties by code."""
    return sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def source_stats(
    store: Store,
    flt: RunFilter | None = None,
    *,
    top: int = 5,
    bounds: Sequence[float] = (),
    percentiles: bool = True,
) -> list[SourceStats]:
    """Per source, among the runs matching ``flt``: counts by status, open runs, the
    success rate, p50/p95/p99 duration and the ``top`` error codes, computed in the
    database; ``bounds`` (ms, ascending) adds cumulative duration buckets.
    ``percentiles=False`` leaves the percentiles None and skips their sorting query."""
    from exectrack._results import SourceStats

    quantiles = (0.5, 0.95, 0.99) if percentiles else ()
    out = []
    for agg in store.aggregate(flt or RunFilter(), quantiles=quantiles, bounds=bounds):
        by_status = {st.value: agg.by_status.get(st, 0) for st in RunStatus}
        total = sum(by_status.values())
        n_open = by_status["queued"] + by_status["running"]
        finished = total - n_open
        out.append(
            SourceStats(
                source=agg.source,
                total=total,
                by_status=by_status,
                open=n_open,
                success_rate=None if finished == 0 else by_status["success"] / finished,
                p50_ms=agg.quantiles.get(0.5),
                p95_ms=agg.quantiles.get(0.95),
                p99_ms=agg.quantiles.get(0.99),
                top_errors=_top_codes(agg.error_codes, top),
                buckets=agg.buckets,
                duration_count=agg.duration_count,
                duration_sum_ms=agg.duration_sum_ms,
            )
        )
    return out


def report(
    store: Store,
    *,
    since: str | datetime | None = None,
    now: datetime | None = None,
    top: int = 5,
) -> Report:
    """The hang-rate and consistency report, per source, over runs started since
    ``since`` (an ISO time or an age such as ``24h``; None: all runs)."""
    from exectrack._report import Report, SourceReport

    at = (now or datetime.now(UTC)).astimezone(UTC)
    start = None if since is None else parse_time(since, now=at)
    now_us = datetime_to_us(at)
    summaries = store.summarize(None if start is None else datetime_to_us(start), now_us)
    sources = []
    for s in summaries:
        started = sum(s.by_status.values())
        abandoned = s.error_codes.get("abandoned", 0)
        hung = abandoned + s.open_past_lease_in_window
        sources.append(
            SourceReport(
                source=s.source,
                started=started,
                by_status={st.value: s.by_status.get(st, 0) for st in RunStatus},
                open=s.open,
                open_past_lease=s.open_past_lease,
                abandoned=abandoned,
                hang_rate=None if started == 0 else hung / started,
                oldest_open_age_s=(
                    None if s.oldest_open_at is None else (now_us - s.oldest_open_at) / 1e6
                ),
                p50_ms=s.p50_ms,
                p95_ms=s.p95_ms,
                first_item_p50_ms=s.first_item_p50_ms,
                first_item_p95_ms=s.first_item_p95_ms,
                top_errors=_top_codes(s.error_codes, top),
            )
        )
    return Report(since=start, now=at, sources=sources)


def __getattr__(name: str) -> Any:
    """The result records load on first use (``exectrack._results``, the report's in
    ``exectrack._report``): a command that only lists runs does not pay for creating
    them, nor ``report`` for the others."""
    if name in _RESULTS:
        from exectrack import _results

        return getattr(_results, name)
    if name in _REPORT:
        from exectrack import _report

        return getattr(_report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

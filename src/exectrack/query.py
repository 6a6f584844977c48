"""The one read path: filters, keyset pages, stats, latest run.

The CLI, the HTTP API and the badges all call these functions, so the same run shows
the same status everywhere. Every function takes a store; the tracker's own query
methods flush first and then call these.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from exectrack._model import Run, RunStatus, datetime_to_us, validate_source
from exectrack.errors import InvalidArgumentError
from exectrack.stores._base import Page, RunFilter, Store

__all__ = [
    "MAX_PAGE_SIZE",
    "RunStats",
    "decode_cursor",
    "encode_cursor",
    "get_run",
    "latest_run",
    "list_runs",
    "make_filter",
    "parse_time",
    "run_stats",
]

MAX_PAGE_SIZE = 1000
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | datetime, *, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 (naive means UTC) or an age such as
    ``30s``, ``15m``, ``2h``, ``7d``, ``1w`` (that long before ``now``)."""
    if isinstance(text, datetime):
        if text.tzinfo is None:
            raise InvalidArgumentError(f"naive datetime {text.isoformat()!r}: pass an aware one")
        return text.astimezone(UTC)
    raw = text.strip()
    match = _RELATIVE.fullmatch(raw.lower())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"cannot read time {text!r}: use ISO 8601 (2026-11-25T10:00:00Z) "
            "or an age such as 30s, 15m, 2h, 7d"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def encode_cursor(run: Run) -> str:
    """An opaque cursor pointing just after ``run`` in list order."""
    raw = f"{datetime_to_us(run.started_at)}:{run.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        us, run_id = raw.split(":", 1)
        if not run_id:
            raise ValueError
        return int(us), run_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgumentError(
            f"invalid cursor {cursor!r}: pass the next_cursor of a previous page"
        ) from None


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
        raise InvalidArgumentError(f"limit={limit}: must be between 1 and {MAX_PAGE_SIZE}")
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


@dataclass(frozen=True, slots=True)
class RunStats:
    """Counts of the runs matching a filter."""

    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return self.by_status.get("queued", 0) + self.by_status.get("running", 0)

    @property
    def error_rate(self) -> float | None:
        """Share of finished runs that ended ``error`` or ``timeout``."""
        finished = self.total - self.open
        if finished == 0:
            return None
        failed = self.by_status.get("error", 0) + self.by_status.get("timeout", 0)
        return failed / finished

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "open": self.open,
            "error_rate": self.error_rate,
            "by_status": self.by_status,
            "by_source": self.by_source,
        }


def run_stats(store: Store, flt: RunFilter | None = None) -> RunStats:
    counts = store.count_runs(flt or RunFilter())
    by_status: dict[str, int] = {s.value: 0 for s in RunStatus}
    by_source: dict[str, dict[str, int]] = {}
    for (source, status), n in sorted(counts.items()):
        by_status[status.value] += n
        by_source.setdefault(source, {})[status.value] = n
    return RunStats(total=sum(counts.values()), by_status=by_status, by_source=by_source)

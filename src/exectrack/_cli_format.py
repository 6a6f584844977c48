"""Output of the ``exectrack`` command: tables, listings, JSON, all UTC."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exectrack._model import Run

if TYPE_CHECKING:
    from exectrack._report import Report

__all__ = [
    "REF_WIDTH",
    "cell",
    "dump_json",
    "duration",
    "out",
    "print_report",
    "print_run",
    "print_runs",
    "printable",
    "table",
    "utc_seconds",
]

REF_WIDTH = 40  # longer source_refs are shortened in the table (never in --json)


def out(line: str = "") -> None:
    print(line, file=sys.stdout)


def dump_json(value: object) -> None:
    out(json.dumps(value, indent=2))


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped, so a stored string cannot move the
    cursor, recolour the terminal or break a table row."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (keep_newlines and ch == "\n"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def cell(value: str | None, width: int | None = None) -> str:
    if value is None or value == "":
        return "-"
    text = printable(value)
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text


def utc_seconds(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [headers, *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out("  ".join(cells).rstrip())


def print_runs(runs: Sequence[Run]) -> None:
    headers = ("ID", "STARTED (UTC)", "SOURCE", "REF", "STATUS", "DURATION", "ERROR_CODE")
    rows = [
        (
            run.id,
            utc_seconds(run.started_at),
            cell(run.source),
            cell(run.source_ref, REF_WIDTH),
            run.status.value,
            duration(run.duration_ms),
            cell(run.error_code),
        )
        for run in runs
    ]
    table(headers, rows, right=frozenset({5}))


def listing_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return printable(str(value), keep_newlines=True)


def print_run(run: Run) -> None:
    """A ``key: value`` listing of every field; metadata as indented JSON."""
    data = run.to_dict()
    metadata = data.pop("metadata")
    width = max(len(key) for key in [*data, "metadata"]) + 1
    for key, value in data.items():
        text = listing_value(value)
        if key == "duration_ms" and value is not None:
            text = f"{value:.3f} ({duration(value)})"
        lines = text.split("\n")
        out(f"{key + ':':<{width}} {lines[0]}".rstrip())
        for more in lines[1:]:
            out(f"{'':<{width}} {more}".rstrip())
    if not metadata:
        out(f"{'metadata:':<{width}} {{}}")
        return
    out("metadata:")
    pretty = json.dumps(metadata, indent=2, ensure_ascii=False, sort_keys=True)
    for line in pretty.splitlines():
        out("  " + printable(line))


def print_report(result: Report) -> None:
    """The hang-rate report as a table, one row per source."""
    window = "all runs" if result.since is None else f"runs since {utc_seconds(result.since)}"
    out(f"report at {utc_seconds(result.now)} over {window}")
    if not result.sources:
        out("no runs")
        return

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    def age(seconds: float | None) -> str:
        return "-" if seconds is None else duration(seconds * 1000)

    rows = [
        (
            cell(s.source),
            str(s.started),
            *(str(s.by_status[k]) for k in ("success", "error", "canceled", "timeout")),
            str(s.open),
            str(s.open_past_lease),
            str(s.abandoned),
            pct(s.hang_rate),
            age(s.oldest_open_age_s),
            duration(s.p50_ms),
            duration(s.p95_ms),
            duration(s.first_item_p50_ms),
            duration(s.first_item_p95_ms),
            ", ".join(f"{code}={n}" for code, n in s.top_errors) or "-",
        )
        for s in result.sources
    ]
    headers = (
        "SOURCE",
        "STARTED",
        "SUCCESS",
        "ERROR",
        "CANCELED",
        "TIMEOUT",
        "OPEN",
        "PAST_LEASE",
        "ABANDONED",
        "HANG_RATE",
        "OLDEST_OPEN",
        "P50",
        "P95",
        "FIRST_P50",
        "FIRST_P95",
        "TOP_ERRORS",
    )
    table(headers, rows, right=frozenset(range(1, 15)))

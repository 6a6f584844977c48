"""The legacy per-task history table (``heartbeat_executions``) and its retirement.

The seed system kept one row per heartbeat execution. Its DDL is not available, so
this package defines the table exactly (:meth:`LegacyTable.create` makes it on SQLite
or PostgreSQL) and docs/heartbeat-retirement.md the stages that retire it:

- ``dual``: the bridge writes every execution both as a run and as a legacy row
  (:class:`LegacyRecorder`, carrying the run's id in ``run_id``);
- ``read_only``: runs only; the legacy table stays readable, nothing new is written;
- ``runs_only``: runs only; the legacy table can be archived.

:func:`import_rows` copies legacy rows into runs, idempotently: a row's run id is
its ``run_id`` when the bridge wrote it, else derived from the row (its id, task and
start), so a re-run creates nothing twice. :func:`check` compares the two over a
window (counts, statuses, durations) and lists the rows that disagree.

The table itself (its schema on both engines, reading and writing rows, time
windows) is :class:`LegacyTable`, in ``exectrack.heartbeat._legacy_table``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from exectrack._model import RunStatus, datetime_to_us
from exectrack._redact import clean_text, encode_metadata, normalize_metadata
from exectrack.errors import StoreError
from exectrack.heartbeat._legacy_table import (
    DEFAULT_TABLE,
    LegacyRow,
    LegacyTable,
    _iso,
    parse_time,
)
from exectrack.stores import NewRun, RunFilter, Store

__all__ = [
    "DEFAULT_TABLE",
    "CheckResult",
    "Disagreement",
    "ImportResult",
    "LegacyRecorder",
    "LegacyRow",
    "LegacyTable",
    "check",
    "import_rows",
    "parse_time",
    "stable_run_id",
]

for _cls in (LegacyRow, LegacyTable):
    _cls.__module__ = __name__  # shown (tracebacks, reprs) where users import it from
parse_time.__module__ = __name__

OUTPUT_LIMIT = 4000
SOURCE = "heartbeat"
# Runs that have no legacy counterpart by design: the old system never saw them.
NEW_VISIBILITY = frozenset({"skipped_overlap", "missed_schedule"})


# -- dual writes ---------------------------------------------------------------------


class LegacyRecorder:
    """A bridge listener for the ``dual`` stage: each execution that ran (not a skip
    or a miss, which the old table never had) becomes one legacy row with the run's
    id. Failures are raised to the bridge, which logs them once and goes on."""

    def __init__(self, table: LegacyTable) -> None:
        self.table = table

    def __call__(self, execution: Any) -> None:
        row = row_of_execution(execution)
        if row is not None:
            self.table.insert(row)


def row_of_execution(execution: Any) -> LegacyRow | None:
    """The legacy row the old system would have written for a bridge Execution."""
    if execution.started_at is None:
        return None
    status = {
        RunStatus.SUCCESS: "success",
        RunStatus.TIMEOUT: "timeout",
    }.get(execution.status, "failed")
    if execution.error is not None:
        output: str | None = f"{type(execution.error).__name__}: {execution.error}"
    elif execution.status is RunStatus.CANCELED:
        output = f"canceled: {execution.cause or 'cancelled'}"
    elif execution.status is RunStatus.TIMEOUT:
        output = "timeout"
    else:
        output = None if execution.result is None else str(execution.result)
    if output is not None:
        output = clean_text(output, OUTPUT_LIMIT, redact=True)
    meta = execution.metadata
    description = meta.get("description", "")
    priority = meta.get("priority", 0)
    return LegacyRow(
        id=None,
        task_id=execution.job_id,
        status=status,
        started_at=execution.started_at,
        completed_at=execution.finished_at,
        duration_ms=None if execution.duration_ms is None else round(execution.duration_ms),
        task_description=description if isinstance(description, str) else "",
        priority=priority if isinstance(priority, int) else 0,
        execution_mode="scheduled",
        output=output,
        retry_count=max(0, execution.attempts - 1),
        run_id=execution.run_id or None,
    )


# -- import --------------------------------------------------------------------------


def stable_run_id(row: LegacyRow) -> str:
    """A run id derived from the legacy row (its id, task and start): the same row
    always gets the same id, so importing twice creates nothing twice. Shaped like
    exectrack's UUIDv7 ids, with the row's start as its time, so it sorts with them."""
    ms = max(0, datetime_to_us(row.started_at) // 1000)  # 48 bits hold past year 9999
    key = f"exectrack-legacy\0{row.id}\0{row.task_id}\0{_iso(row.started_at)}"
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:10], "big")
    rand_a = digest >> 68 & 0xFFF
    rand_b = digest & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def run_id_of(row: LegacyRow) -> str:
    return row.run_id or stable_run_id(row)


_STATUS = {"success": RunStatus.SUCCESS, "failed": RunStatus.ERROR, "timeout": RunStatus.TIMEOUT}


def _legacy_ms(row: LegacyRow) -> float | None:
    """The row's duration as the import records it: ``duration_ms``, else from
    ``completed_at`` (0 when that is before the start), else None."""
    if row.duration_ms is not None or row.completed_at is None:
        return row.duration_ms
    return max(0, datetime_to_us(row.completed_at) - datetime_to_us(row.started_at)) / 1000


def _new_run(row: LegacyRow, table: str) -> NewRun:
    status = _STATUS.get(row.status)
    if status is None:
        raise StoreError(f"legacy row {row.id}: unknown status {row.status!r}")
    started = datetime_to_us(row.started_at)
    finished = row.completed_at
    if finished is None and row.duration_ms is not None:
        finished = row.started_at + timedelta(milliseconds=row.duration_ms)
    finished_us = started if finished is None else max(started, datetime_to_us(finished))
    duration = _legacy_ms(row)
    code = message = None
    if status is RunStatus.ERROR:
        code, message = "task_failed", clean_text(row.output or "failed", 4096, redact=True)
    elif status is RunStatus.TIMEOUT:
        code, message = "deadline_exceeded", clean_text(row.output or "timeout", 4096, redact=True)
    meta: dict[str, Any] = {
        "imported_from": table,
        "legacy_id": row.id,
        "execution_mode": row.execution_mode,
        "priority": row.priority,
        "attempt": row.retry_count + 1,
    }
    if row.task_description:
        meta["description"] = row.task_description
    if row.output and status is RunStatus.SUCCESS:
        meta["output"] = row.output[:OUTPUT_LIMIT]
    return NewRun(
        id=run_id_of(row),
        source=SOURCE,
        started_at=started,
        status=status,
        source_ref=clean_text(row.task_id, 512),
        metadata=encode_metadata(normalize_metadata(meta)),
        finished_at=finished_us,
        duration_ms=None if duration is None else float(duration),
        error_code=code,
        error_message=message,
    )


@dataclass(frozen=True, slots=True)
class ImportResult:
    """``read`` legacy rows; ``created`` runs; ``existing``: rows whose run was there
    already (an earlier import, or written by the bridge in ``dual``)."""

    read: int
    created: int
    existing: int


Progress = Callable[[int, int], None]


def import_rows(
    store: Store,
    legacy: LegacyTable,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch: int = 1000,
    progress: Progress | None = None,
) -> ImportResult:
    """Copy the legacy rows in the window into ``store`` as finished heartbeat runs,
    one transaction per ``batch``; ``progress(done, total)`` after each."""
    total = legacy.count(since, until)
    read = created = 0
    for rows in legacy.iter_rows(since, until, batch=batch):
        result = store.apply([_new_run(row, legacy.table) for row in rows])
        read += len(rows)
        created += result.created
        if progress is not None:
            progress(read, max(total, read))
    return ImportResult(read, created, read - created)


# -- check ---------------------------------------------------------------------------

DisagreementKind = Literal["missing_run", "missing_legacy", "status", "duration"]


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One execution the two sides disagree on. ``legacy_ms`` is the legacy row's
    duration as the import records it: ``duration_ms``, else ``completed_at`` minus
    ``started_at``."""

    kind: DisagreementKind
    task_id: str
    started_at: datetime
    legacy_id: int | None = None
    run_id: str | None = None
    legacy_status: str | None = None
    run_status: str | None = None
    legacy_ms: float | None = None
    run_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = _iso(value) if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True)
class CheckResult:
    """The comparison of legacy rows and heartbeat runs over a window.

    ``paired``: executions found on both sides, ``agreeing`` of them with the same
    status (legacy ``failed`` = run ``error`` or ``canceled``) and a duration within
    the tolerance. ``agreement_pct`` = agreeing / (paired + unpaired on either side);
    None when the window is empty. ``new_visibility``: skip and miss runs, which the
    legacy table never had; ``open_runs``: runs not finished yet. Neither counts.
    """

    since: datetime | None
    until: datetime | None
    legacy_rows: int
    runs: int
    paired: int
    agreeing: int
    new_visibility: int
    open_runs: int
    legacy_by_status: dict[str, int]
    runs_by_status: dict[str, int]
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.paired + (self.legacy_rows - self.paired) + (self.runs - self.paired)

    @property
    def agreement_pct(self) -> float | None:
        if self.compared == 0:
            return None
        return round(100.0 * self.agreeing / self.compared, 2)

    @property
    def coverage_pct(self) -> float | None:
        """Share of legacy rows that have their run."""
        if self.legacy_rows == 0:
            return None
        return round(100.0 * self.paired / self.legacy_rows, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": None if self.since is None else _iso(self.since),
            "until": None if self.until is None else _iso(self.until),
            "legacy_rows": self.legacy_rows,
            "runs": self.runs,
            "paired": self.paired,
            "agreeing": self.agreeing,
            "agreement_pct": self.agreement_pct,
            "coverage_pct": self.coverage_pct,
            "new_visibility": self.new_visibility,
            "open_runs": self.open_runs,
            "legacy_by_status": self.legacy_by_status,
            "runs_by_status": self.runs_by_status,
            "disagreements": [d.to_dict() for d in self.disagreements],
        }


_MATCHES = {"success": {"success"}, "timeout": {"timeout"}, "failed": {"error", "canceled"}}
PAIR_WINDOW = timedelta(seconds=2)  # rows without a run id pair with a run this close


def check(
    store: Store,
    legacy: LegacyTable,
    *,
    since: datetime | None,
    until: datetime | None = None,
    duration_tolerance_ms: float = 1000.0,
    source: str = SOURCE,
) -> CheckResult:
    """Compare legacy rows and ``source`` runs started in ``[since, until)``.

    A legacy row pairs with its run by ``run_id`` (written in ``dual``), else by the
    id an import derives from it, else with the unpaired run of the same task that
    started closest to it within two seconds (rows the old code wrote itself).
    """
    rows = [row for page in legacy.iter_rows(since, until) for row in page]
    runs: dict[str, Any] = {}
    new_visibility = open_runs = 0
    flt = RunFilter(sources=(source,), started_after=since, started_before=until)
    cursor: tuple[int, str] | None = None
    while True:
        page = store.list_runs(flt, limit=1000, cursor=cursor)
        for run in page:
            if not run.is_terminal:
                open_runs += 1
            elif run.error_code in NEW_VISIBILITY or run.metadata.get("submit_failed"):
                new_visibility += 1
            else:
                runs[run.id] = run
        if len(page) < 1000:
            break
        last = page[-1]
        cursor = (datetime_to_us(last.started_at), last.id)
    legacy_by_status: dict[str, int] = {}
    runs_by_status: dict[str, int] = {}
    for row in rows:
        legacy_by_status[row.status] = legacy_by_status.get(row.status, 0) + 1
    for run in runs.values():
        runs_by_status[run.status.value] = runs_by_status.get(run.status.value, 0) + 1

    unpaired = dict(runs)
    pairs: list[tuple[LegacyRow, Any]] = []
    loose: list[LegacyRow] = []
    for row in rows:
        run = unpaired.pop(run_id_of(row), None)
        if run is not None:
            pairs.append((row, run))
        else:
            loose.append(row)
    by_task: dict[str | None, list[Any]] = {}
    for run in unpaired.values():
        by_task.setdefault(run.source_ref, []).append(run)
    missing: list[LegacyRow] = []
    for row in loose:
        candidates = by_task.get(row.task_id, [])
        best = min(candidates, key=lambda r: abs(r.started_at - row.started_at), default=None)
        if best is not None and abs(best.started_at - row.started_at) <= PAIR_WINDOW:
            candidates.remove(best)
            del unpaired[best.id]
            pairs.append((row, best))
        else:
            missing.append(row)

    disagreements: list[Disagreement] = []
    agreeing = 0
    for row, run in pairs:
        kind: DisagreementKind | None = None
        row_ms = _legacy_ms(row)
        if run.status.value not in _MATCHES.get(row.status, set()):
            kind = "status"
        elif (row_ms is None) != (run.duration_ms is None) or (
            row_ms is not None and abs(row_ms - run.duration_ms) > duration_tolerance_ms
        ):
            kind = "duration"
        if kind is None:
            agreeing += 1
            continue
        disagreements.append(
            Disagreement(
                kind,
                row.task_id,
                row.started_at,
                row.id,
                run.id,
                row.status,
                run.status.value,
                row_ms,
                run.duration_ms,
            )
        )
    for row in missing:
        disagreements.append(
            Disagreement(
                "missing_run",
                row.task_id,
                row.started_at,
                legacy_id=row.id,
                legacy_status=row.status,
                legacy_ms=_legacy_ms(row),
            )
        )
    for run in unpaired.values():
        disagreements.append(
            Disagreement(
                "missing_legacy",
                run.source_ref or "",
                run.started_at,
                run_id=run.id,
                run_status=run.status.value,
                run_ms=run.duration_ms,
            )
        )
    disagreements.sort(key=lambda d: (d.started_at, d.task_id))
    return CheckResult(
        since=since,
        until=until,
        legacy_rows=len(rows),
        runs=len(runs),
        paired=len(pairs),
        agreeing=agreeing,
        new_visibility=new_visibility,
        open_runs=open_runs,
        legacy_by_status=legacy_by_status,
        runs_by_status=runs_by_status,
        disagreements=disagreements,
    )

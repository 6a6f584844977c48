"""The legacy history table: its schema on SQLite and PostgreSQL, idempotent import,
the consistency check on deliberately disagreeing rows, and the dual stage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from exectrack import ConfigError, ExecutionTracker, RunStatus
from exectrack.heartbeat import HeartbeatService, LegacyConfig, Task
from exectrack.heartbeat.legacy import LegacyRow, LegacyTable, check, import_rows, stable_run_id
from scheduling import jobs
from scheduling.helpers import finished, runs_of, wait_until

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
COLUMNS = {
    "id",
    "task_id",
    "task_description",
    "priority",
    "execution_mode",
    "status",
    "started_at",
    "completed_at",
    "duration_ms",
    "output",
    "retry_count",
    "run_id",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LegacyTable]:
    """An empty legacy table, on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        table = LegacyTable(url, request.getfixturevalue("pg_table"))
    else:
        table = LegacyTable(f"sqlite:///{tmp_path / 'app.db'}")
    table.create()
    yield table
    table.close()


def row(n: int, status: str = "success", *, task: str = "inbox", ms: int = 1500) -> LegacyRow:
    started = T0 + timedelta(minutes=n)
    return LegacyRow(
        id=None,
        task_id=task,
        status=status,
        started_at=started,
        completed_at=started + timedelta(milliseconds=ms),
        duration_ms=ms,
        task_description="Summarise new mail",
        priority=3,
        execution_mode="scheduled",
        output="3 new mails" if status == "success" else "SMTP said no",
        retry_count=1 if status == "failed" else 0,
    )


def test_the_table_has_exactly_the_documented_columns(legacy: LegacyTable) -> None:
    """create() makes the documented schema; a second create() changes nothing."""
    assert legacy.columns() == COLUMNS
    assert legacy.create() == []


def test_a_seed_table_without_run_id_gets_the_column(tmp_path: Path) -> None:
    """An existing seed table (no run_id) gets run_id added, rows kept; a table
    missing other columns is refused with their names."""
    path = tmp_path / "seed.db"
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE heartbeat_executions (id INTEGER PRIMARY KEY, task_id TEXT, "
            "task_description TEXT, priority INTEGER, execution_mode TEXT, status TEXT, "
            "started_at TEXT, completed_at TEXT, duration_ms INTEGER, output TEXT, "
            "retry_count INTEGER)"
        )
        conn.execute(
            "INSERT INTO heartbeat_executions VALUES (7, 'inbox', '', 0, 'manual', "
            "'success', '2026-03-01 08:00:00', NULL, 12, 'ok', 0)"
        )
        conn.execute("CREATE TABLE other_history (id INTEGER PRIMARY KEY, task_id TEXT)")
    table = LegacyTable(str(path))
    with pytest.raises(ConfigError, match="lacks columns run_id"):
        table.require_ready()
    assert table.create() == ["added run_id"]
    table.require_ready()
    (page,) = table.iter_rows()
    assert page[0].id == 7 and page[0].started_at == T0 and page[0].run_id is None
    with pytest.raises(ConfigError, match="lacks columns completed_at"):
        LegacyTable(str(path), "other_history").create()
    table.close()


def test_import_is_idempotent_and_maps_every_field(
    legacy: LegacyTable, sync_tracker: ExecutionTracker
) -> None:
    """Importing twice creates each run once; ids are derived from the rows; status
    success/failed/timeout map to success/error/timeout with durations and times."""
    for n, status in enumerate(["success", "failed", "timeout"] * 3):
        legacy.insert(row(n, status))
    seen: list[tuple[int, int]] = []
    first = import_rows(
        sync_tracker.store, legacy, batch=4, progress=lambda d, t: seen.append((d, t))
    )
    assert (first.read, first.created, first.existing) == (9, 9, 0)
    assert seen == [(4, 9), (8, 9), (9, 9)]
    again = import_rows(sync_tracker.store, legacy)
    assert (again.read, again.created, again.existing) == (9, 0, 9)
    runs = runs_of(sync_tracker, "inbox")
    assert len(runs) == 9
    (page,) = legacy.iter_rows()
    by_id = {r.id: r for r in runs}
    for legacy_row in page:
        run = by_id[stable_run_id(legacy_row)]
        assert run.started_at == legacy_row.started_at
        assert run.finished_at == legacy_row.completed_at
        assert run.duration_ms == 1500
        assert run.metadata["legacy_id"] == legacy_row.id
        assert run.metadata["priority"] == 3
    statuses = [r.status for r in runs]
    assert statuses.count(RunStatus.ERROR) == statuses.count(RunStatus.TIMEOUT) == 3
    failed = next(r for r in runs if r.status is RunStatus.ERROR)
    assert (failed.error_code, failed.error_message, failed.metadata["attempt"]) == (
        "task_failed",
        "SMTP said no",
        2,
    )


def test_import_window_and_rows_written_in_dual_are_not_duplicated(
    legacy: LegacyTable, sync_tracker: ExecutionTracker
) -> None:
    """--since limits the rows read; a row carrying the run id the bridge wrote in
    dual imports nothing new."""
    run = sync_tracker.start("heartbeat", "inbox")
    run.finish_success()
    legacy.insert(LegacyRow(None, "inbox", "success", T0, run_id=run.id, duration_ms=1))
    legacy.insert(row(60))
    result = import_rows(sync_tracker.store, legacy)
    assert (result.read, result.created, result.existing) == (2, 1, 1)
    assert import_rows(sync_tracker.store, legacy, since=T0 + timedelta(minutes=30)).read == 1


def test_stable_ids_are_stable_and_distinct() -> None:
    """The same row always gets the same id; another row another; ids sort by start."""
    a, b = LegacyRow(1, "inbox", "success", T0), LegacyRow(2, "inbox", "success", T0)
    later = LegacyRow(3, "inbox", "success", T0 + timedelta(seconds=1))
    assert stable_run_id(a) == stable_run_id(LegacyRow(1, "inbox", "success", T0))
    assert len({stable_run_id(a), stable_run_id(b), stable_run_id(later)}) == 3
    assert stable_run_id(a)[14] == "7" and max(stable_run_id(a), stable_run_id(b)) < (
        stable_run_id(later)
    )


def test_check_finds_every_kind_of_disagreement(
    legacy: LegacyTable, sync_tracker: ExecutionTracker
) -> None:
    """On a table with deliberately disagreeing rows, the check pairs rows with runs
    (by run id, by derived id, by task and time) and reports each disagreement; skips
    are counted apart; agreement = agreeing / all executions compared."""
    store = sync_tracker.store
    # 1-3: imported rows that agree with their runs.
    for n in range(3):
        legacy.insert(row(n))
    import_rows(store, legacy)
    # 4: written by the old code itself (no run id): pairs with its run by time.
    # 5: a status mismatch; 6: a duration mismatch (both paired by run_id).
    # 7: a legacy row without any run; 8: a run without a legacy row; 9: a skip.
    clock_runs = []
    for ref in ("digest", "mismatch", "slow", "orphan", "overlap"):
        clock_runs.append(sync_tracker.start("heartbeat", ref))
    digest, mismatch, slow, orphan, overlap = clock_runs
    digest.finish_success()
    mismatch.finish_error(code="boom", message="boom")
    slow.finish_success()
    orphan.finish_success()
    overlap.finish_with_status("canceled", error_code="skipped_overlap")
    now = datetime.now(UTC)
    legacy.insert(
        LegacyRow(None, "digest", "success", digest_start(sync_tracker, digest.id), duration_ms=0)
    )
    legacy.insert(LegacyRow(None, "mismatch", "success", now, duration_ms=0, run_id=mismatch.id))
    legacy.insert(LegacyRow(None, "slow", "success", now, duration_ms=999_999, run_id=slow.id))
    legacy.insert(LegacyRow(None, "ghost", "failed", now, duration_ms=5))
    result = check(store, legacy, since=T0 - timedelta(days=1))
    kinds = sorted(d.kind for d in result.disagreements)
    assert kinds == ["duration", "missing_legacy", "missing_run", "status"]
    by_kind = {d.kind: d for d in result.disagreements}
    assert (by_kind["status"].legacy_status, by_kind["status"].run_status) == ("success", "error")
    assert by_kind["duration"].legacy_ms == 999_999
    assert by_kind["missing_run"].task_id == "ghost"
    assert by_kind["missing_legacy"].run_id == orphan.id
    assert result.new_visibility == 1
    assert (result.legacy_rows, result.runs, result.paired, result.agreeing) == (7, 7, 6, 4)
    assert result.agreement_pct == 50.0  # 4 agreeing of 6 pairs + 1 + 1 unpaired
    assert result.coverage_pct == round(100 * 6 / 7, 2)
    assert result.legacy_by_status == {"success": 6, "failed": 1}


def digest_start(tracker: ExecutionTracker, run_id: str) -> datetime:
    run = tracker.get_run(run_id)
    assert run is not None
    return run.started_at + timedelta(milliseconds=300)


def test_check_on_an_empty_window_has_no_percentage(
    legacy: LegacyTable, sync_tracker: ExecutionTracker
) -> None:
    """Nothing in the window: agreement is None, not 0 or 100."""
    result = check(sync_tracker.store, legacy, since=datetime.now(UTC))
    assert result.agreement_pct is None and result.disagreements == []


def test_dual_stage_writes_both_and_they_agree(
    legacy: LegacyTable, tracker: ExecutionTracker
) -> None:
    """In dual every execution that ran is a run and a legacy row with its run id;
    skips are runs only; the check over the window agrees 100%."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    service = HeartbeatService(
        [
            Task("ok", jobs.ok, interval=3600, description="fine", priority=2),
            Task("fails", jobs.fails, interval=3600),
            Task("hangs", jobs.blocks, interval=3600, timeout=0.1),
        ],
        tracker=tracker,
        legacy=LegacyConfig("dual", legacy.url, legacy.table),
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    service.install(scheduler)
    table = service._legacy_table  # the service's own connection to the legacy table
    assert table is not None
    for job in scheduler.get_jobs():
        job.modify(next_run_time=datetime.now(UTC))
    scheduler.start()
    for ref in ("ok", "fails", "hangs"):
        wait_until(finished(tracker, ref), ref)
    wait_until(lambda: legacy.count() == 3, "three legacy rows")
    jobs.release.set()
    service.shutdown(wait=True)
    assert service._legacy_table is None
    assert table._conn is None or table._conn.closed
    service.shutdown()  # again: nothing left to close, no error
    rows = {r.task_id: r for page in legacy.iter_rows() for r in page}
    assert {k: r.status for k, r in rows.items()} == {
        "ok": "success",
        "fails": "failed",
        "hangs": "timeout",
    }
    assert rows["ok"].run_id == runs_of(tracker, "ok")[0].id
    assert (rows["ok"].task_description, rows["ok"].priority, rows["ok"].output) == (
        "fine",
        2,
        "done",
    )
    assert rows["fails"].output == "ConnectionError: the inbox server is down"
    result = check(tracker.store, legacy, since=since)
    assert (result.paired, result.agreement_pct, result.disagreements) == (3, 100.0, [])


def test_read_only_and_runs_only_write_no_legacy_rows(
    legacy: LegacyTable, tracker: ExecutionTracker
) -> None:
    """Past dual, executions are runs only: the legacy table gets nothing new."""
    for stage in ("read_only", "runs_only"):
        service = HeartbeatService(
            [Task(f"t-{stage}", jobs.ok, interval=3600)],
            tracker=tracker,
            legacy=LegacyConfig(stage, legacy.url, legacy.table),  # type: ignore[arg-type]
        )
        scheduler = BackgroundScheduler(timezone="UTC")
        service.install(scheduler)
        scheduler.get_job(f"t-{stage}").modify(next_run_time=datetime.now(UTC))
        scheduler.start()
        wait_until(finished(tracker, f"t-{stage}"), stage)
        service.shutdown()
    assert legacy.count() == 0


def test_dual_without_a_ready_table_schedules_nothing(
    tmp_path: Path, tracker: ExecutionTracker
) -> None:
    """Dual with a missing legacy table fails at install with the fix, and adds no job."""
    service = HeartbeatService(
        [Task("ok", jobs.ok, interval=60)],
        tracker=tracker,
        legacy=LegacyConfig("dual", f"sqlite:///{tmp_path / 'none.db'}"),
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    with pytest.raises(ConfigError, match="exectrack legacy init"):
        service.install(scheduler)
    assert scheduler.get_jobs() == []


def test_coroutine_task_on_a_thread_scheduler_is_refused(tracker: ExecutionTracker) -> None:
    """A coroutine target on a BackgroundScheduler is a TaskFileError naming it."""
    service = HeartbeatService([Task("a", jobs.async_ok, interval=60)], tracker=tracker)
    with pytest.raises(ConfigError, match="task 'a': field 'target': a coroutine"):
        service.install(BackgroundScheduler(timezone="UTC"))

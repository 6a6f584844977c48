"""The heartbeat and legacy commands, through exectrack.cli.main and once as a real
subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack.cli import main
from exectrack.heartbeat.legacy import LegacyRow, LegacyTable
from scheduling import jobs

TESTS = Path(__file__).resolve().parents[1]

TASKS = """
[[tasks]]
id = "inbox"
description = "Check the inbox"
target = "scheduling.jobs:ok"
interval = "0.1s"

[[tasks]]
id = "stuck"
target = "scheduling.jobs:hangs_until_told"
interval = "0.1s"
timeout = "0.3s"
"""


@pytest.fixture
def tasks_file(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text(TASKS)
    return path


def test_heartbeat_check_lists_a_good_file_and_needs_no_database(
    tasks_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`heartbeat check` validates and lists the tasks without touching a database."""
    db = tmp_path / "never.db"
    assert main(["heartbeat", "check", str(tasks_file), "--database", f"sqlite:///{db}"]) == 0
    out = capsys.readouterr().out
    assert "inbox" in out and "every 0.1 s" in out and "2 task(s) valid" in out
    assert not db.exists()
    assert main(["heartbeat", "check", str(tasks_file), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in doc["tasks"]] == ["inbox", "stuck"]
    assert doc["tasks"][1]["timeout_s"] == 0.3


@pytest.mark.parametrize("action", ["check", "run"])
def test_a_bad_task_file_is_one_line_exit_1_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    """A typo in a field: one stderr line naming the task and the field, exit 1; `run`
    creates no database and runs no job."""
    bad = tmp_path / "tasks.toml"
    bad.write_text(TASKS.replace('interval = "0.1s"', 'intervall = "0.1s"', 1))
    db = tmp_path / "runs.db"
    assert main(["heartbeat", action, str(bad), "--database", f"sqlite:///{db}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("exectrack: tasks.toml: task 'inbox': field 'intervall':")
    assert "did you mean 'interval'" in err
    assert not db.exists() and jobs.calls == []


def test_heartbeat_run_records_success_timeout_and_overlap_skips(
    tasks_file: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`heartbeat run --duration` runs the file's tasks and records successes, the
    stuck task's timeouts and the due times it skipped while stuck, then exits 0."""
    code = main(["heartbeat", "run", str(tasks_file), "--duration", "2", "--database", db_url])
    assert code == 0
    assert "heartbeat runs recorded:" in capsys.readouterr().out
    with ExecutionTracker(db_url) as t:
        inbox = t.list_runs(source_ref="inbox", limit=500).runs
        stuck = t.list_runs(source_ref="stuck", limit=500).runs
    # On a loaded machine a 0.1 s task may miss a due time or find its previous run
    # still going: those are recorded as skips, never as failures.
    outcomes = {(r.status, r.error_code) for r in inbox}
    assert (RunStatus.SUCCESS, None) in outcomes
    assert outcomes <= {
        (RunStatus.SUCCESS, None),
        (RunStatus.CANCELED, "skipped_overlap"),
        (RunStatus.CANCELED, "missed_schedule"),
    }
    assert all(r.metadata["description"] == "Check the inbox" for r in inbox)
    codes = {r.error_code for r in stuck}
    assert "deadline_exceeded" in codes and "skipped_overlap" in codes


RUN_ARGS = ("--duration", "2", "--json", "--database")


def test_heartbeat_run_as_a_real_process(tasks_file: Path, db_url: str) -> None:
    """`python -m exectrack heartbeat run` in a subprocess: exit 0, runs written."""
    env = {**os.environ, "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("EXECTRACK_STRICT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "exectrack", "heartbeat", "run", str(tasks_file), *RUN_ARGS, db_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["runs_by_status"]["success"] >= 1
    assert doc["runs_by_status"]["timeout"] >= 1


# -- legacy --------------------------------------------------------------------------


T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def seed_legacy(path: Path, rows: int) -> str:
    url = f"sqlite:///{path}"
    table = LegacyTable(url)
    table.create()
    for n in range(rows):
        started = T0 + timedelta(minutes=n)
        table.insert(
            LegacyRow(None, "inbox", "success" if n % 5 else "failed", started, duration_ms=100)
        )
    table.close()
    return url


def test_legacy_init_import_and_check_from_the_cli(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """init creates the table; import copies rows with progress lines and is
    idempotent; check prints 100% agreement, then lists a row changed to disagree
    and exits 3 under --min-agreement."""
    app = tmp_path / "app.db"
    assert main(["legacy", "init", "--legacy-database", f"sqlite:///{app}"]) == 0
    assert "created" in capsys.readouterr().out
    url = seed_legacy(app, 25)
    args = ["--legacy-database", url, "--database", db_url]
    assert main(["legacy", "import", *args, "--batch", "10"]) == 0
    captured = capsys.readouterr()
    assert "25 run(s) created, 0 already there" in captured.out
    assert "imported 10/25 rows (40%)" in captured.err
    assert "imported 25/25 rows (100%)" in captured.err
    assert main(["legacy", "import", *args, "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"read": 25, "created": 0, "existing": 25}

    assert main(["legacy", "check", *args, "--since", "2026-03-01T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "agreement: 100.00%" in out and "no disagreeing rows" in out

    table = LegacyTable(url)
    table._run("UPDATE heartbeat_executions SET status = 'timeout' WHERE id = 3")
    table.close()
    code = main(
        ["legacy", "check", *args, "--since", "2026-03-01T00:00:00Z", "--min-agreement", "99"]
    )
    out = capsys.readouterr().out
    assert code == 3
    assert "agreement: 96.00%" in out
    assert "status" in out and "#3 timeout" in out
    assert main(["legacy", "check", *args, "--since", "2026-03-01T00:00:00Z", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["agreement_pct"] == 96.0 and doc["disagreements"][0]["legacy_id"] == 3


def test_legacy_commands_reject_bad_arguments_in_one_line(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No legacy database, a bad URL or time: one line, exit 1; --since missing: 2."""
    assert main(["migrate", "--database", db_url]) == 0
    assert main(["legacy", "check", "--database", db_url, "--since", "1d"]) == 1
    assert "no legacy database" in capsys.readouterr().err
    assert main(["legacy", "init", "--legacy-database", "mysql://x/y"]) == 1
    assert "use sqlite:///path.db or postgresql://" in capsys.readouterr().err
    url = seed_legacy(tmp_path / "app.db", 1)
    assert main(["legacy", "check", "--legacy-database", url, "--database", db_url]) == 2
    capsys.readouterr()
    code = main(
        ["legacy", "check", "--legacy-database", url, "--database", db_url, "--since", "soon"]
    )
    assert code == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_legacy_settings_come_from_the_task_file(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tasks FILE reads [legacy] database and table from the task file."""
    url = seed_legacy(tmp_path / "app.db", 3)
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(f'[legacy]\nstage = "read_only"\ndatabase = "{url}"\n' + TASKS)
    assert main(["legacy", "import", "--tasks", str(tasks), "--database", db_url, "--quiet"]) == 0
    assert "3 run(s) created" in capsys.readouterr().out

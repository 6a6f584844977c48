"""`exectrack heartbeat ...` and `exectrack legacy ...` pinned exactly, in this process
(so mutmut's switched mutants of ``_cli_heartbeat.py`` are reached): every parser's
help, defaults and bounds; what `heartbeat check` lists; what `heartbeat run` prints,
counts and logs, stopped by its ``--duration`` or by a real signal to this process;
what each legacy command prints and writes, with exact messages and exit codes.

The end-to-end runs (and the one real subprocess) are in test_cli_heartbeat.py. The
process runs in a zone that is not UTC, so a time printed in local time shows.
"""

# ruff: noqa: E501 (argparse help is pinned as printed: one line per paragraph)

from __future__ import annotations

import contextlib
import json
import logging
import os
import pty
import select
import signal
import sqlite3
import sys
import threading
import tty
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack import _cli_heartbeat as hb
from exectrack.cli import build_parser, main
from exectrack.heartbeat.legacy import LegacyRow, LegacyTable
from exectrack.stores import RunFilter
from scheduling import jobs
from scheduling.test_cli_heartbeat import seed_legacy
from scheduling.test_legacy_pinned import SEED_DDL, put_run

pytestmark = pytest.mark.usefixtures("non_utc_zone")

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TIME_HELP = "ISO 8601 (2026-11-25T10:00:00Z; no zone means UTC) or an age: 30s, 15m, 2h, 7d, 1w"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``exectrack ARGV`` in this process: its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- task targets: module-level, so a task file names them ----------------------------

_signalled = threading.Event()


async def sigterm_when_others_ran() -> None:
    """Stops the `heartbeat run` around it with a real SIGTERM to this process, once
    both thread tasks (ok, fails) have run. On the loop: the handler is in place."""
    jobs.calls.append("sigterm")
    if {"ok", "fails"} <= set(jobs.calls) and not _signalled.is_set():
        _signalled.set()
        os.kill(os.getpid(), signal.SIGTERM)


def sigint_then_block() -> str:
    """A thread task that interrupts the `heartbeat run` around it (SIGINT, once) and
    then runs on until the test releases it."""
    jobs.calls.append("sigint_then_block")
    if not _signalled.is_set():
        _signalled.set()
        os.kill(os.getpid(), signal.SIGINT)
    jobs.release.wait(30)
    return "released"


@pytest.fixture(autouse=True)
def fresh_signal() -> Iterator[None]:
    _signalled.clear()
    yield
    _signalled.set()


# -- the parsers -----------------------------------------------------------------------


HELP = {
    ("heartbeat",): """\
usage: exectrack heartbeat [-h] [--database URL] [-v] ACTION ...

Heartbeat tasks on APScheduler (pip install 'exectrack[heartbeat]'): every execution, overlap skip and misfire is a heartbeat run.

options:
  -h, --help      show this help message and exit
  --database URL  the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose   log more to stderr (-v: info, -vv: debug)

actions:
  ACTION
    check         validate a task file and list its tasks
    run           run the tasks of a task file until interrupted
""",
    ("heartbeat", "check"): """\
usage: exectrack heartbeat check [-h] [--database URL] [-v] [--json] TASKS.toml

Validate TASKS.toml as `heartbeat run` would (targets imported, schedules parsed) and list its tasks. A bad file is one line naming the task and field, exit 1. Needs no database.

positional arguments:
  TASKS.toml

options:
  -h, --help      show this help message and exit
  --database URL  the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose   log more to stderr (-v: info, -vv: debug)
  --json          print JSON: tasks, legacy_stage
""",
    ("heartbeat", "run"): """\
usage: exectrack heartbeat run [-h] [--database URL] [-v] [--duration S] [--grace S] [--legacy-stage {dual,read_only,runs_only}] [--json] TASKS.toml

Run the tasks of TASKS.toml on an AsyncIOScheduler (coroutine tasks on the loop, plain functions in its thread pool) until SIGINT/SIGTERM or --duration, recording every execution as a heartbeat run. The whole file is validated first: a bad file starts nothing.

positional arguments:
  TASKS.toml

options:
  -h, --help            show this help message and exit
  --database URL        the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose         log more to stderr (-v: info, -vv: debug)
  --duration S          stop after S seconds
  --grace S             seconds to wait for running executions at the end (default: 10)
  --legacy-stage {dual,read_only,runs_only}
                        override the task file's [legacy] stage (e.g. roll back to dual)
  --json                print JSON: runs_by_status
""",
    ("legacy",): """\
usage: exectrack legacy [-h] [--database URL] [-v] ACTION ...

The legacy per-task history table (heartbeat_executions) and its retirement: see docs/heartbeat-retirement.md.

options:
  -h, --help      show this help message and exit
  --database URL  the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose   log more to stderr (-v: info, -vv: debug)

actions:
  ACTION
    init          create the legacy table, or add run_id to an existing one
    import        copy legacy rows into runs (idempotent)
    check         compare legacy rows and heartbeat runs over a window
""",
    ("legacy", "init"): """\
usage: exectrack legacy init [-h] [--database URL] [-v] [--legacy-database URL] [--tasks TASKS.toml] [--table TABLE] [--json]

Create the legacy table with the documented schema (SQLite or PostgreSQL), or add the run_id column an existing seed table needs for the dual stage.

options:
  -h, --help            show this help message and exit
  --database URL        the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose         log more to stderr (-v: info, -vv: debug)
  --json                print JSON: table, done

the legacy table:
  --legacy-database URL
                        the app database holding it: sqlite:///app.db or postgresql://...
  --tasks TASKS.toml    read [legacy] from a task file
  --table TABLE         its name (default: heartbeat_executions)
""",
    ("legacy", "import"): f"""\
usage: exectrack legacy import [-h] [--database URL] [-v] [--legacy-database URL] [--tasks TASKS.toml] [--table TABLE] [--since TIME] [--until TIME] [--batch N] [--quiet] [--json]

Copy legacy rows into the runs database as finished heartbeat runs. Each row's run id is its run_id (written in dual) or derived from the row, so a re-run imports nothing twice. Progress goes to stderr.

options:
  -h, --help            show this help message and exit
  --database URL        the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose         log more to stderr (-v: info, -vv: debug)
  --since TIME          rows started at or after: {TIME_HELP}
  --until TIME          rows started before: {TIME_HELP}
  --batch N             rows per transaction
  --quiet               no progress on stderr
  --json                print JSON: read, created, existing

the legacy table:
  --legacy-database URL
                        the app database holding it: sqlite:///app.db or postgresql://...
  --tasks TASKS.toml    read [legacy] from a task file
  --table TABLE         its name (default: heartbeat_executions)
""",
    ("legacy", "check"): f"""\
usage: exectrack legacy check [-h] [--database URL] [-v] [--legacy-database URL] [--tasks TASKS.toml] [--table TABLE] --since TIME [--until TIME] [--tolerance-ms MS] [--min-agreement PCT] [--show N] [--json]

Compare the legacy rows and the heartbeat runs started in the window: counts, statuses (failed = error or canceled) and durations. Prints the agreement percentage, the coverage (legacy rows that have their run) and the rows that disagree. Skips and misses (new in runs) are counted apart. Exits 3 when agreement is below --min-agreement.

options:
  -h, --help            show this help message and exit
  --database URL        the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose         log more to stderr (-v: info, -vv: debug)
  --since TIME          window start: {TIME_HELP}
  --until TIME          window end: {TIME_HELP}
  --tolerance-ms MS     durations closer than this agree (default: 1000)
  --min-agreement PCT   exit 3 below it
  --show N              disagreeing rows shown
  --json                print JSON: the whole comparison

the legacy table:
  --legacy-database URL
                        the app database holding it: sqlite:///app.db or postgresql://...
  --tasks TASKS.toml    read [legacy] from a task file
  --table TABLE         its name (default: heartbeat_executions)
""",
}


@pytest.mark.parametrize("path", sorted(HELP), ids=" ".join)
def test_help_of_every_heartbeat_and_legacy_parser_is_exact(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--help` prints each parser's usage, description, options and help texts (on a
    terminal wide enough that nothing wraps), exit 0."""
    monkeypatch.setenv("COLUMNS", "400")
    assert cli(capsys, *path, "--help") == (0, HELP[path], "")


def test_the_whole_parser_holds_the_commands_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser built without a command line (every command) has the same ones."""
    monkeypatch.setenv("COLUMNS", "400")
    parser = build_parser()
    for path, text in HELP.items():
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*path, "--help"])
        assert exit_.value.code == 0
        assert capsys.readouterr().out == text


def test_the_command_list_describes_heartbeat_and_legacy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`exectrack --help` lists both commands with their one-line help."""
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = cli(capsys, "--help")
    listed = {
        line.split(None, 1)[0]: line.split(None, 1)[1:]
        for line in out.splitlines()
        if line.startswith("    ") and line.split(None, 1)[0] in ("heartbeat", "legacy")
    }
    assert (code, listed) == (
        0,
        {
            "heartbeat": ["run or check heartbeat tasks declared in a TOML task file"],
            "legacy": ["retire the legacy heartbeat history table (init, import, check)"],
        },
    )


def parsed(*argv: str) -> dict[str, Any]:
    return vars(build_parser(list(argv)).parse_args(list(argv)))


def test_every_option_parses_to_its_value_and_default() -> None:
    """The namespace each command gets: its handler, defaults, types and flags."""
    assert parsed("heartbeat", "check", "t.toml") == {
        "command": "heartbeat",
        "action": "check",
        "tasks": "t.toml",
        "json": False,
        "handler": hb._cmd_check_tasks,
        "no_store": True,
    }
    assert parsed("heartbeat", "run", "t.toml") == {
        "command": "heartbeat",
        "action": "run",
        "tasks": "t.toml",
        "duration": None,
        "grace": 10.0,
        "legacy_stage": None,
        "json": False,
        "handler": hb._cmd_run,
        "creates": True,
        "no_store": True,
    }
    run = parsed(
        "heartbeat", "run", "t.toml", "--duration", "1.5", "--grace", "0.25", "--json",
        "--legacy-stage", "dual", "--database", "sqlite:///x.db", "-vv",
    )  # fmt: skip
    assert (run["duration"], run["grace"], run["legacy_stage"], run["json"]) == (
        1.5,
        0.25,
        "dual",
        True,
    )
    assert (run["database"], run["verbose"]) == ("sqlite:///x.db", 2)
    legacy = {"legacy_database": None, "tasks": None, "table": None, "json": False}
    assert parsed("legacy", "init") == {
        "command": "legacy",
        "action": "init",
        **legacy,
        "handler": hb._cmd_init,
        "no_store": True,
    }
    assert parsed("legacy", "import") == {
        "command": "legacy",
        "action": "import",
        **legacy,
        "since": None,
        "until": None,
        "batch": 1000,
        "quiet": False,
        "handler": hb._cmd_import,
        "creates": True,
    }
    assert parsed("legacy", "check", "--since", "1d") == {
        "command": "legacy",
        "action": "check",
        **legacy,
        "since": "1d",
        "until": None,
        "tolerance_ms": 1000.0,
        "min_agreement": None,
        "show": 50,
        "handler": hb._cmd_legacy_check,
    }
    check = parsed(
        "legacy", "check", "--since", "1d", "--until", "2h", "--tolerance-ms", "2.5",
        "--min-agreement", "99.5", "--show", "7", "--legacy-database", "sqlite:///a.db",
        "--tasks", "t.toml", "--table", "hb",
    )  # fmt: skip
    assert (check["until"], check["tolerance_ms"], check["min_agreement"], check["show"]) == (
        "2h",
        2.5,
        99.5,
        7,
    )
    assert (check["legacy_database"], check["tasks"], check["table"]) == (
        "sqlite:///a.db",
        "t.toml",
        "hb",
    )
    imp = parsed("legacy", "import", "--since", "1d", "--until", "1h", "--batch", "5", "--quiet")
    assert (imp["since"], imp["until"], imp["batch"], imp["quiet"]) == ("1d", "1h", 5, True)


USAGE = {
    "heartbeat": "usage: exectrack heartbeat [-h] [--database URL] [-v] ACTION ...",
    "legacy": "usage: exectrack legacy [-h] [--database URL] [-v] ACTION ...",
}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["heartbeat"], "exectrack heartbeat: error: the following arguments are required: ACTION"),
        (["legacy"], "exectrack legacy: error: the following arguments are required: ACTION"),
        (
            ["heartbeat", "run"],
            "exectrack heartbeat run: error: the following arguments are required: TASKS.toml",
        ),
        (
            ["legacy", "check", "--legacy-database", "sqlite:///a.db"],
            "exectrack legacy check: error: the following arguments are required: --since",
        ),
        (
            ["heartbeat", "run", "t.toml", "--legacy-stage", "off"],
            "exectrack heartbeat run: error: argument --legacy-stage: invalid choice: 'off' "
            "(choose from 'dual', 'read_only', 'runs_only')",
        ),
        (
            ["heartbeat", "run", "t.toml", "--duration", "soon"],
            "exectrack heartbeat run: error: argument --duration: invalid float value: 'soon'",
        ),
        (
            ["heartbeat", "run", "t.toml", "--grace", "long"],
            "exectrack heartbeat run: error: argument --grace: invalid float value: 'long'",
        ),
        (
            ["legacy", "import", "--batch", "1.5"],
            "exectrack legacy import: error: argument --batch: invalid int value: '1.5'",
        ),
        (
            ["legacy", "check", "--since", "1d", "--show", "all"],
            "exectrack legacy check: error: argument --show: invalid int value: 'all'",
        ),
        (
            ["legacy", "check", "--since", "1d", "--tolerance-ms", "x"],
            "exectrack legacy check: error: argument --tolerance-ms: invalid float value: 'x'",
        ),
        (
            ["legacy", "check", "--since", "1d", "--min-agreement", "most"],
            "exectrack legacy check: error: argument --min-agreement: invalid float value: 'most'",
        ),
    ],
)
def test_usage_errors_exit_2_with_argparses_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == message
    if argv in (["heartbeat"], ["legacy"]):
        assert err.splitlines()[0] == USAGE[argv[0]]


# -- heartbeat check ---------------------------------------------------------------------

CHECKED = """
[legacy]
stage = "read_only"

[[tasks]]
id = "inbox"
description = "Check the inbox"
target = "scheduling.jobs:ok"
interval = "1.5m"
timeout = "2.5s"
retries = 2
max_concurrent = 3
priority = -7

[[tasks]]
id = "nightly-digest"
target = "scheduling.jobs:async_ok"
cron = "0 3 * * *"
priority = 12345
"""


@pytest.fixture
def checked_file(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text(CHECKED)
    return path


def test_heartbeat_check_prints_the_task_table_exactly(
    checked_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One row per task: its schedule (interval in seconds, or the cron line), timeout
    ("-" without one), retries, max, priority (numbers right-aligned) and target; then
    the count and the file's legacy stage."""
    assert cli(capsys, "heartbeat", "check", str(checked_file)) == (
        0,
        "TASK            SCHEDULE        TIMEOUT  RETRIES  MAX  PRIORITY  TARGET\n"
        "inbox           every 90 s      2.5 s          2    3        -7  scheduling.jobs:ok\n"
        "nightly-digest  cron 0 3 * * *  -              0    1     12345  scheduling.jobs:async_ok\n"
        "2 task(s) valid; legacy stage: read_only\n",
        "",
    )


def test_heartbeat_check_json_is_exact(
    checked_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "heartbeat", "check", str(checked_file), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "tasks": [
            {
                "id": "inbox",
                "schedule": "every 90 s",
                "target": "scheduling.jobs:ok",
                "timeout_s": 2.5,
                "retries": 2,
                "max_concurrent": 3,
                "priority": -7,
                "description": "Check the inbox",
            },
            {
                "id": "nightly-digest",
                "schedule": "cron 0 3 * * *",
                "target": "scheduling.jobs:async_ok",
                "timeout_s": None,
                "retries": 0,
                "max_concurrent": 1,
                "priority": 12345,
                "description": "",
            },
        ],
        "legacy_stage": "read_only",
    }
    assert out.startswith('{\n  "tasks": [\n    {\n      "id": "inbox",\n')  # indented


# -- heartbeat run -----------------------------------------------------------------------

IDLE = """
[legacy]
stage = "read_only"

[[tasks]]
id = "idle"
target = "scheduling.jobs:ok"
interval = "1h"
"""

STOPPED_BY_SIGTERM = """
[[tasks]]
id = "stopper"
target = "scheduling.test_cli_heartbeat_pinned:sigterm_when_others_ran"
interval = "0.05s"

[[tasks]]
id = "ok"
target = "scheduling.jobs:ok"
interval = "0.05s"

[[tasks]]
id = "fails"
target = "scheduling.jobs:fails"
interval = "0.05s"
"""

STOPPED_BY_SIGINT = """
[[tasks]]
id = "blocker"
target = "scheduling.test_cli_heartbeat_pinned:sigint_then_block"
interval = "0.05s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text(text)
    return path


def heartbeat_counts(db_url: str, exclude: frozenset[str] = frozenset()) -> dict[str, int]:
    """The heartbeat runs in the database by status (but the ``exclude`` ids)."""
    with ExecutionTracker(db_url) as t:
        runs = t.store.list_runs(RunFilter(sources=("heartbeat",)), limit=1000)
    counts: dict[str, int] = {}
    for run in runs:
        if run.id not in exclude:
            counts[run.status.value] = counts.get(run.status.value, 0) + 1
    return counts


@pytest.fixture
def apscheduler_logger() -> Iterator[logging.Logger]:
    """APScheduler's logger, checked to be as it was after the command."""
    logger = logging.getLogger("apscheduler")
    before = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    assert (list(logger.handlers), logger.level, logger.propagate) == before


@pytest.fixture
def seeded(db_url: str) -> frozenset[str]:
    """A heartbeat run that started yesterday and a skill run that starts tomorrow:
    neither is one of the command's own runs."""
    now = datetime.now(UTC)
    with ExecutionTracker(db_url, durability="sync") as t:
        put_run(t.store, "hb-yesterday", "idle", now - timedelta(days=1))
        put_run(t.store, "skill-tomorrow", "idle", now + timedelta(days=1), source="skill")
    return frozenset({"hb-yesterday"})


def test_heartbeat_run_for_a_duration_counts_only_its_own_heartbeat_runs(
    tmp_path: Path,
    db_url: str,
    seeded: frozenset[str],
    capsys: pytest.CaptureFixture[str],
    apscheduler_logger: logging.Logger,
) -> None:
    """`--duration S`: one stderr line says what runs for how long; a task not due in
    that time runs never, and runs started before the command or of another source are
    not counted: "no runs"."""
    path = write(tmp_path, IDLE)
    assert cli(
        capsys, "heartbeat", "run", str(path), "--duration", "0.05", "--database", db_url
    ) == (
        0,
        "heartbeat runs recorded: no runs\n",
        "exectrack: running 1 heartbeat task(s) for 0.05 s; legacy stage: read_only\n",
    )
    assert jobs.calls == []
    assert heartbeat_counts(db_url) == {"success": 1}  # the seeded one


def test_heartbeat_run_json_and_the_legacy_stage_option(
    tmp_path: Path,
    db_url: str,
    seeded: frozenset[str],
    capsys: pytest.CaptureFixture[str],
    apscheduler_logger: logging.Logger,
) -> None:
    """`--json`: the counts by status and how many were still running; `--legacy-stage`
    overrides the file's stage."""
    path = write(tmp_path, IDLE)
    argv = ["heartbeat", "run", str(path), "--duration", "0.05", "--database", db_url]
    code, out, err = cli(capsys, *argv, "--json", "--legacy-stage", "runs_only")
    assert (code, err) == (
        0,
        "exectrack: running 1 heartbeat task(s) for 0.05 s; legacy stage: runs_only\n",
    )
    assert out == '{\n  "runs_by_status": {},\n  "still_running": 0\n}\n'


@pytest.mark.parametrize(
    ("flag", "lines"),
    [
        ("-q", []),
        (
            "-v",
            [
                "INFO apscheduler.scheduler: Adding job tentatively -- it will be properly "
                "scheduled when the scheduler starts",
                'INFO apscheduler.scheduler: Added job "idle" to job store "default"',
                "INFO apscheduler.scheduler: Scheduler started",
                "INFO apscheduler.scheduler: Scheduler has been shut down",
            ],
        ),
        (
            "-vv",
            [
                "Adding job tentatively -- it will be properly scheduled when the scheduler starts",
                'Added job "idle" to job store "default"',
                "Scheduler started",
                "Scheduler has been shut down",
            ],
        ),
    ],
)
def test_heartbeat_run_logs_apschedulers_info_with_v_and_plain_with_vv(
    tmp_path: Path,
    db_url: str,
    flag: str,
    lines: list[str],
    capsys: pytest.CaptureFixture[str],
    apscheduler_logger: logging.Logger,
) -> None:
    """APScheduler's info lines go to stderr from -v, as one line each with level and
    logger; -vv leaves its records as they are; without -v, warnings and up only."""
    path = write(tmp_path, IDLE)
    argv = ["heartbeat", "run", str(path), "--duration", "0.05", "--database", db_url]
    code, out, err = cli(capsys, *argv, *([] if flag == "-q" else [flag]))
    assert (code, out) == (0, "heartbeat runs recorded: no runs\n")
    assert err.splitlines() == [
        "exectrack: running 1 heartbeat task(s) for 0.05 s; legacy stage: read_only",
        *lines,
    ]


def test_heartbeat_run_until_sigterm_creates_the_database_and_counts_by_status(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    apscheduler_logger: logging.Logger,
) -> None:
    """Without --duration it runs until a real SIGTERM to this process; it creates the
    database; the summary counts its runs by status in name order, and a task's
    exception is one stderr line, with no traceback (the run holds the error)."""
    db = tmp_path / "new" / "runs.db"
    db.parent.mkdir()
    path = write(tmp_path, STOPPED_BY_SIGTERM)
    code, out, err = cli(capsys, "heartbeat", "run", str(path), "--database", f"sqlite:///{db}")
    assert code == 0
    assert _signalled.is_set() and {"ok", "fails"} <= set(jobs.calls)
    counts = heartbeat_counts(f"sqlite:///{db}")
    assert counts["error"] >= 1 and counts["success"] >= 2
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    assert out == f"heartbeat runs recorded: {summary}\n"
    first, *rest = err.splitlines()
    assert (
        first == "exectrack: running 3 heartbeat task(s) until interrupted; legacy stage: runs_only"
    )
    failures = [line for line in rest if 'Job "fails' in line]
    assert len(failures) >= 1
    for line in failures:
        assert line.startswith(
            'ERROR apscheduler.executors.default: Job "fails (trigger: '
            "interval[0:00:00.050000], next run at: "
        )
        assert line.endswith('" raised an exception (ConnectionError: the inbox server is down)')
    assert "Traceback" not in err


def test_heartbeat_run_json_until_sigterm(
    tmp_path: Path,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    apscheduler_logger: logging.Logger,
) -> None:
    path = write(tmp_path, STOPPED_BY_SIGTERM)
    code, out, _ = cli(capsys, "heartbeat", "run", str(path), "--json", "--database", db_url)
    assert code == 0
    assert json.loads(out) == {"runs_by_status": heartbeat_counts(db_url), "still_running": 0}


class _ReleaseWhenLeft(logging.Handler):
    """Lets the blocked task end once the service has given up waiting for it."""

    def emit(self, record: logging.LogRecord) -> None:
        if "still running after" in record.getMessage():
            jobs.release.set()


def test_heartbeat_run_says_how_many_executions_were_still_running(
    tmp_path: Path,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    apscheduler_logger: logging.Logger,
) -> None:
    """A thread task still running after --grace when a real SIGINT stopped the run:
    the summary says so in a second line (and the JSON counts it)."""
    path = write(tmp_path, STOPPED_BY_SIGINT)
    hook = _ReleaseWhenLeft()
    logger = logging.getLogger("exectrack.heartbeat")
    logger.addHandler(hook)
    try:
        code, out, err = cli(
            capsys, "heartbeat", "run", str(path), "--grace", "0.05", "--database", db_url
        )
    finally:
        logger.removeHandler(hook)
    assert code == 0
    summary = ", ".join(f"{n} {s}" for s, n in sorted(heartbeat_counts(db_url).items()))
    assert out == (
        f"heartbeat runs recorded: {summary}\n1 execution(s) still running in threads at exit\n"
    )
    assert err.splitlines()[0] == (
        "exectrack: running 1 heartbeat task(s) until interrupted; legacy stage: runs_only"
    )
    assert (
        "WARNING exectrack.heartbeat: exectrack: 1 heartbeat execution(s) still running after "
        "0 s; a thread cannot be stopped from outside"
    ) in err.splitlines()


def _record(exc: BaseException | None, level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = None if exc is None else (type(exc), exc, None)
    return logging.LogRecord("apscheduler.x", level, __file__, 1, "Job %r %s", ("a", "b"), exc_info)


def test_one_line_formatter_names_level_logger_message_and_exception() -> None:
    """APScheduler's records in one line: level, logger, message and the exception's
    type and text (its type alone when it has no text); never a traceback."""
    one = hb._OneLine()
    assert one.format(_record(None, logging.WARNING)) == "WARNING apscheduler.x: Job 'a' b"
    assert one.format(_record(ConnectionError("down"))) == (
        "ERROR apscheduler.x: Job 'a' b (ConnectionError: down)"
    )
    assert one.format(_record(TimeoutError())) == "ERROR apscheduler.x: Job 'a' b (TimeoutError)"
    record = _record(None)
    record.exc_info = (None, None, None)  # logging's form of "no exception now"
    assert one.format(record) == "ERROR apscheduler.x: Job 'a' b"


@pytest.mark.parametrize(("verbosity", "level"), [(0, logging.WARNING), (1, logging.INFO)])
def test_quiet_apscheduler_sends_one_line_records_to_stderr_until_undone(
    verbosity: int, level: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Warnings and up (info with -v) to stderr in one line each, not propagated to the
    root logger; the undo gives back the level and propagation and removes the handler."""
    logger = logging.getLogger("apscheduler")
    before = list(logger.handlers)
    logger.setLevel(logging.DEBUG)
    try:
        undo = hb._quiet_apscheduler(verbosity)
        [handler] = [h for h in logger.handlers if h not in before]
        assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
        assert type(handler.formatter) is hb._OneLine
        assert (logger.level, logger.propagate) == (level, False)
        logging.getLogger("apscheduler.scheduler").info("started")
        logging.getLogger("apscheduler.scheduler").warning("skipped")
        undo()
        assert (list(logger.handlers), logger.level, logger.propagate) == (
            before,
            logging.DEBUG,
            True,
        )
    finally:
        logger.setLevel(logging.NOTSET)
    shown = ["INFO apscheduler.scheduler: started"] if verbosity else []
    assert capsys.readouterr().err.splitlines() == [
        *shown,
        "WARNING apscheduler.scheduler: skipped",
    ]


def test_quiet_apscheduler_keeps_records_as_they_are_from_vv(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("apscheduler")
    undo = hb._quiet_apscheduler(3)
    try:
        assert logger.level == logging.INFO
        [handler] = logger.handlers[-1:]
        assert type(handler.formatter) is logging.Formatter
        logging.getLogger("apscheduler.scheduler").info("started")
    finally:
        undo()
    assert capsys.readouterr().err == "started\n"


# -- progress ----------------------------------------------------------------------------


def test_progress_is_none_when_quiet() -> None:
    assert hb._progress(False) is None


def test_progress_off_a_terminal_is_a_line_per_tenth_and_the_last_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not a terminal: a line at the first step, whenever the percentage enters another
    tenth, and at the last step (even within the same tenth)."""
    report = hb._progress(True)
    assert report is not None
    for done, total in [(1, 25), (2, 25), (5, 50), (3, 25), (24, 25), (25, 25), (25, 25), (0, 0)]:
        report(done, total)
    assert capsys.readouterr() == (
        "",
        "imported 1/25 rows (4%)\n"
        "imported 5/50 rows (10%)\n"
        "imported 24/25 rows (96%)\n"
        "imported 25/25 rows (100%)\n"
        "imported 25/25 rows (100%)\n"
        "imported 0/0 rows (0%)\n",
    )
    report = hb._progress(True)
    assert report is not None
    report(1, 1)
    report(0, 0)
    report(0, 0)
    assert capsys.readouterr().err == (
        "imported 1/1 rows (100%)\nimported 0/0 rows (0%)\nimported 0/0 rows (0%)\n"
    )


@contextlib.contextmanager
def stderr_on_a_terminal() -> Iterator[Callable[[], str]]:
    """sys.stderr on a real pseudo-terminal (raw: no newline translation); yields a
    reader of what was written to it. Set inside the test: pytest's capture puts its
    own sys.stderr back between a fixture and the test."""
    leader, follower = pty.openpty()
    tty.setraw(follower)
    stream = os.fdopen(follower, "w", encoding="utf-8")

    def read() -> str:
        stream.flush()
        chunks = []
        while select.select([leader], [], [], 0.5)[0]:
            chunks.append(os.read(leader, 65536))
            if not select.select([leader], [], [], 0)[0]:
                break
        return b"".join(chunks).decode()

    saved = sys.stderr
    sys.stderr = stream
    try:
        yield read
    finally:
        sys.stderr = saved
        stream.close()
        os.close(leader)


def test_progress_on_a_terminal_is_one_bar_redrawn() -> None:
    """On a terminal: a bar of 25 cells (one per 4%) redrawn in place at every step,
    and a newline after the last."""
    with stderr_on_a_terminal() as terminal:
        report = hb._progress(True)
        assert report is not None
        report(0, 3)
        report(1, 3)
        report(2, 3)
        report(3, 3)
        assert terminal() == (
            "\rimporting [                         ]   0% 0/3"
            "\rimporting [########                 ]  33% 1/3"
            "\rimporting [################         ]  66% 2/3"
            "\rimporting [#########################] 100% 3/3\n"
        )
        report(0, 0)
        report(5, 7)
        assert terminal() == (
            "\rimporting [                         ]   0% 0/0\n"
            "\rimporting [#################        ]  71% 5/7"
        )


# -- legacy init -------------------------------------------------------------------------


def tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        return [name for (name,) in rows]
    finally:
        conn.close()


def test_legacy_init_creates_then_finds_the_table_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init creates heartbeat_executions (the default name), then has nothing to do;
    --json says the same as {table, done}; no runs database is opened."""
    app = tmp_path / "app.db"
    url = f"sqlite:///{app}"
    runs = tmp_path / "runs.db"
    argv = ["legacy", "init", "--legacy-database", url, "--database", f"sqlite:///{runs}"]
    assert cli(capsys, *argv) == (0, "legacy table heartbeat_executions: created\n", "")
    assert tables(app) == ["heartbeat_executions"]
    assert cli(capsys, *argv) == (
        0,
        "legacy table heartbeat_executions: already up to date\n",
        "",
    )
    assert cli(capsys, *argv, "--json") == (
        0,
        '{\n  "table": "heartbeat_executions",\n  "done": []\n}\n',
        "",
    )
    assert not runs.exists()


def test_legacy_init_adds_run_id_to_a_seed_table_and_names_another_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as conn:
        conn.execute(SEED_DDL)
    conn.close()
    url = f"sqlite:///{app}"
    assert cli(capsys, "legacy", "init", "--legacy-database", url) == (
        0,
        "legacy table heartbeat_executions: added run_id\n",
        "",
    )
    code, out, err = cli(
        capsys, "legacy", "init", "--legacy-database", url, "--table", "hb_two", "--json"
    )
    assert (code, json.loads(out), err) == (0, {"table": "hb_two", "done": ["created"]}, "")
    assert tables(app) == ["hb_two", "heartbeat_executions"]


@pytest.mark.postgres
def test_legacy_init_on_postgresql(
    pg_url: str, pg_table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["legacy", "init", "--legacy-database", pg_url, "--table", pg_table, "--json"]
    code, out, _ = cli(capsys, *argv)
    assert (code, json.loads(out)) == (0, {"table": pg_table, "done": ["created"]})
    code, out, _ = cli(capsys, *argv)
    assert (code, json.loads(out)) == (0, {"table": pg_table, "done": []})


NO_LEGACY_DATABASE = (
    "exectrack: no legacy database: pass --legacy-database URL, or --tasks FILE with "
    "[legacy] database = ...\n"
)


@pytest.mark.parametrize("action", ["init", "import", "check"])
def test_legacy_commands_without_a_legacy_database_exit_1_in_one_line(
    action: str, tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither --legacy-database nor a task file with [legacy] database."""
    assert main(["migrate", "--database", db_url]) == 0
    capsys.readouterr()
    extra = ["--since", "1d"] if action == "check" else []
    assert cli(capsys, "legacy", action, "--database", db_url, *extra) == (
        1,
        "",
        NO_LEGACY_DATABASE,
    )
    no_database = write(tmp_path, '[legacy]\nstage = "read_only"\n' + IDLE.split("\n", 3)[3])
    assert cli(
        capsys, "legacy", action, "--tasks", str(no_database), "--database", db_url, *extra
    ) == (1, "", NO_LEGACY_DATABASE)


def test_legacy_table_settings_from_the_task_file_and_the_options_over_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tasks reads [legacy] database and table; --legacy-database and --table win."""
    file_db, cli_db = tmp_path / "file.db", tmp_path / "cli.db"
    tasks = write(
        tmp_path,
        f'[legacy]\nstage = "read_only"\ndatabase = "sqlite:///{file_db}"\ntable = "hb_file"\n'
        + IDLE.split("\n", 3)[3],
    )
    init = ["legacy", "init", "--tasks", str(tasks)]
    assert cli(capsys, *init) == (0, "legacy table hb_file: created\n", "")
    assert tables(file_db) == ["hb_file"]
    assert cli(capsys, *init, "--table", "hb_cli") == (0, "legacy table hb_cli: created\n", "")
    assert tables(file_db) == ["hb_cli", "hb_file"]
    assert cli(capsys, *init, "--legacy-database", f"sqlite:///{cli_db}") == (
        0,
        "legacy table hb_file: created\n",
        "",
    )
    assert tables(cli_db) == ["hb_file"]


# -- legacy import -----------------------------------------------------------------------


def test_legacy_import_prints_progress_and_counts_and_is_idempotent(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows in batches, a progress line per batch on stderr, the counts on stdout; a
    second import creates nothing; --quiet prints no progress; --json the counts."""
    url = seed_legacy(tmp_path / "app.db", 25)
    argv = ["legacy", "import", "--legacy-database", url, "--database", db_url]
    assert cli(capsys, *argv, "--batch", "10") == (
        0,
        "read 25 legacy row(s): 25 run(s) created, 0 already there\n",
        "imported 10/25 rows (40%)\nimported 20/25 rows (80%)\nimported 25/25 rows (100%)\n",
    )
    assert heartbeat_counts(db_url) == {"error": 5, "success": 20}
    assert cli(capsys, *argv, "--quiet") == (
        0,
        "read 25 legacy row(s): 0 run(s) created, 25 already there\n",
        "",
    )
    assert cli(capsys, *argv, "--quiet", "--json") == (
        0,
        '{\n  "read": 25,\n  "created": 0,\n  "existing": 25\n}\n',
        "",
    )


def test_legacy_import_of_a_window_one_row_at_a_time(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since (inclusive) and --until (exclusive), read as UTC; --batch 1."""
    url = seed_legacy(tmp_path / "app.db", 25)
    argv = ["legacy", "import", "--legacy-database", url, "--database", db_url, "--batch", "1"]
    window = ["--since", "2026-03-01T08:05:00", "--until", "2026-03-01T08:08:00Z"]
    assert cli(capsys, *argv, *window) == (
        0,
        "read 3 legacy row(s): 3 run(s) created, 0 already there\n",
        "imported 1/3 rows (33%)\nimported 2/3 rows (66%)\nimported 3/3 rows (100%)\n",
    )
    with ExecutionTracker(db_url) as t:
        starts = sorted(r.started_at for r in t.store.list_runs(RunFilter(), limit=100))
    assert starts == [T0 + n * MINUTE for n in (5, 6, 7)]
    assert cli(capsys, *argv, "--quiet", "--since", "2026-03-01T08:23:00Z") == (
        0,
        "read 2 legacy row(s): 2 run(s) created, 0 already there\n",
        "",
    )
    assert cli(capsys, *argv, "--quiet", "--until", "2026-03-01T08:01:00Z") == (
        0,
        "read 1 legacy row(s): 1 run(s) created, 0 already there\n",
        "",
    )


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_legacy_import_refuses_a_batch_below_1(
    batch: str, tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = seed_legacy(tmp_path / "app.db", 2)
    argv = ["legacy", "import", "--legacy-database", url, "--database", db_url]
    assert cli(capsys, *argv, "--batch", batch) == (
        1,
        "",
        f"exectrack: --batch {batch}: must be at least 1\n",
    )
    assert heartbeat_counts(db_url) == {}


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_legacy_import_refuses_a_bad_time(
    option: str, tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = seed_legacy(tmp_path / "app.db", 2)
    argv = ["legacy", "import", "--legacy-database", url, "--database", db_url]
    code, out, err = cli(capsys, *argv, option, "soon")
    assert (code, out) == (1, "")
    assert err.startswith("exectrack: ") and err.count("\n") == 1 and "soon" in err
    assert heartbeat_counts(db_url) == {}


@pytest.mark.postgres
def test_legacy_import_from_postgresql(
    pg_url: str, pg_table: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = LegacyTable(pg_url, pg_table)
    table.create()
    table.insert(LegacyRow(None, "inbox", "success", T0, duration_ms=100))
    table.insert(LegacyRow(None, "inbox", "timeout", T0 + MINUTE, duration_ms=30000))
    table.close()
    argv = ["legacy", "import", "--legacy-database", pg_url, "--table", pg_table]
    assert cli(capsys, *argv, "--database", db_url, "--quiet") == (
        0,
        "read 2 legacy row(s): 2 run(s) created, 0 already there\n",
        "",
    )
    assert heartbeat_counts(db_url) == {"success": 1, "timeout": 1}


# -- legacy check ------------------------------------------------------------------------


@pytest.fixture
def compared(tmp_path: Path, db_url: str) -> list[str]:
    """Legacy rows and heartbeat runs that agree once and disagree in every way; the
    arguments that compare them, from 08:00 UTC."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    table = LegacyTable(url)
    table.create()
    table.insert(LegacyRow(None, "inbox", "success", T0, duration_ms=100))  # agrees
    table.insert(LegacyRow(None, "inbox", "failed", T0 + MINUTE, duration_ms=200))  # status
    table.insert(LegacyRow(None, "inbox", "success", T0 + 2 * MINUTE, duration_ms=100))
    table.insert(LegacyRow(None, "digest", "success", T0 + 3 * MINUTE))  # no run
    table.close()
    with ExecutionTracker(db_url, durability="sync") as t:
        put_run(t.store, "r-1", "inbox", T0, ms=100)
        put_run(t.store, "r-2", "inbox", T0 + MINUTE, RunStatus.TIMEOUT, 200)
        put_run(t.store, "r-3", "inbox", T0 + 2 * MINUTE, ms=2600)  # 2.5 s longer
        put_run(t.store, "r-5", "digest", T0 + 4 * MINUTE, RunStatus.ERROR, None)  # no row
        put_run(t.store, "r-skip", "inbox", T0 + 5 * MINUTE, RunStatus.CANCELED, 0.0,
                code="skipped_overlap")  # fmt: skip
        put_run(t.store, "r-open", "inbox", T0 + 6 * MINUTE, RunStatus.RUNNING)
    return ["legacy", "check", "--legacy-database", url, "--database", db_url,
            "--since", "2026-03-01T08:00:00Z"]  # fmt: skip


HEADER = (
    "KIND            TASK    STARTED               LEGACY      RUN      LEGACY MS  RUN MS  RUN ID"
)
ROWS = [
    "status          inbox   2026-03-01T08:01:00Z  #2 failed   timeout        200     200  r-2",
    "duration        inbox   2026-03-01T08:02:00Z  #3 success  success        100    2600  r-3",
    "missing_run     digest  2026-03-01T08:03:00Z  #4 success  -                -       -  -",
    "missing_legacy  digest  2026-03-01T08:04:00Z  -           error            -       -  r-5",
]
FIGURES = [
    "legacy rows: 4   runs: 4   paired: 3   agreeing: 1",
    "agreement: 20.00%   coverage: 75.00%   (skips/misses, not in legacy: 1; open runs: 1)",
    "legacy by status: failed 1, success 3",
    "runs by status:   error 1, success 2, timeout 1",
]


def test_legacy_check_prints_figures_and_every_disagreement_exactly(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The window, the counts, agreement and coverage, skips and open runs apart, both
    sides by status, and a table of the rows that disagree (durations right-aligned,
    "-" for what a side lacks)."""
    code, out, err = cli(capsys, *compared)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "legacy check since 2026-03-01T08:00:00Z",
        *FIGURES,
        "4 disagreeing row(s):",
        HEADER,
        *ROWS,
    ]


def test_legacy_check_shows_at_most_show_rows(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, *compared, "--show", "2")
    assert (code, out.splitlines()[-4:]) == (
        0,
        [
            "KIND      TASK   STARTED               LEGACY      RUN      LEGACY MS  RUN MS  RUN ID",
            "status    inbox  2026-03-01T08:01:00Z  #2 failed   timeout        200     200  r-2",
            "duration  inbox  2026-03-01T08:02:00Z  #3 success  success        100    2600  r-3",
            "... 2 more (use --show N or --json)",
        ],
    )
    code, out, _ = cli(capsys, *compared, "--show", "4")
    assert (code, out.splitlines()[-5:]) == (0, [HEADER, *ROWS])


def test_legacy_check_window_until_and_tolerance(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--until ends the window (exclusive); --tolerance-ms widens what agrees, and 0
    is allowed."""
    argv = [*compared, "--until", "2026-03-01T08:03:00Z", "--tolerance-ms", "2500"]
    code, out, _ = cli(capsys, *argv)
    assert (code, out.splitlines()) == (
        0,
        [
            "legacy check since 2026-03-01T08:00:00Z until 2026-03-01T08:03:00Z",
            "legacy rows: 3   runs: 3   paired: 3   agreeing: 2",
            "agreement: 66.67%   coverage: 100.00%   (skips/misses, not in legacy: 0; open runs: 0)",
            "legacy by status: failed 1, success 2",
            "runs by status:   success 2, timeout 1",
            "1 disagreeing row(s):",
            "KIND    TASK   STARTED               LEGACY     RUN      LEGACY MS  RUN MS  RUN ID",
            "status  inbox  2026-03-01T08:01:00Z  #2 failed  timeout        200     200  r-2",
        ],
    )
    code, out, _ = cli(capsys, *compared, "--until", "2026-03-01T08:03:00Z", "--tolerance-ms", "0")
    assert (code, out.splitlines()[1]) == (0, "legacy rows: 3   runs: 3   paired: 3   agreeing: 1")


def test_legacy_check_refuses_a_negative_tolerance(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, *compared, "--tolerance-ms", "-0.5") == (
        1,
        "",
        "exectrack: --tolerance-ms -0.5: must be >= 0\n",
    )


def test_legacy_check_refuses_a_negative_show(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A negative N would slice from the end (all rows but the last N)."""
    assert cli(capsys, *compared, "--show", "-1") == (1, "", "exectrack: --show -1: must be >= 0\n")


def test_legacy_check_show_0_counts_the_rows_it_does_not_list(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, *compared, "--show", "0")
    assert (code, out.splitlines()) == (
        0,
        [
            "legacy check since 2026-03-01T08:00:00Z",
            *FIGURES,
            "4 disagreeing row(s) (list them: --show N or --json)",
        ],
    )


@pytest.mark.parametrize(("minimum", "code"), [("20", 0), ("20.5", 3)])
def test_legacy_check_exits_3_below_min_agreement(
    compared: list[str], minimum: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Below --min-agreement: a last line saying so and exit 3; at it: exit 0."""
    got, out, _ = cli(capsys, *compared, "--min-agreement", minimum)
    last = [f"agreement below --min-agreement {minimum}%"] if code else []
    assert (got, out.splitlines()[-2:]) == (code, [*ROWS[-2:], *last][-2:])
    got, out, _ = cli(capsys, *compared, "--min-agreement", minimum, "--json")
    assert got == code and json.loads(out)["agreement_pct"] == 20.0


def test_legacy_check_json_is_the_whole_comparison(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, *compared, "--json", "--show", "1")
    assert (code, err) == (0, "")

    def row(kind: str, task: str, minute: int, **fields: Any) -> dict[str, Any]:
        empty = dict.fromkeys(["legacy_id", "run_id", "legacy_status", "run_status"])
        return {
            "kind": kind,
            "task_id": task,
            "started_at": f"2026-03-01T08:0{minute}:00.000000Z",
            **empty,
            "legacy_ms": None,
            "run_ms": None,
            **fields,
        }

    assert json.loads(out) == {
        "since": "2026-03-01T08:00:00.000000Z",
        "until": None,
        "legacy_rows": 4,
        "runs": 4,
        "paired": 3,
        "agreeing": 1,
        "agreement_pct": 20.0,
        "coverage_pct": 75.0,
        "new_visibility": 1,
        "open_runs": 1,
        "legacy_by_status": {"failed": 1, "success": 3},
        "runs_by_status": {"error": 1, "success": 2, "timeout": 1},
        "disagreements": [
            row("status", "inbox", 1, legacy_id=2, run_id="r-2", legacy_status="failed",
                run_status="timeout", legacy_ms=200, run_ms=200.0),
            row("duration", "inbox", 2, legacy_id=3, run_id="r-3", legacy_status="success",
                run_status="success", legacy_ms=100, run_ms=2600.0),
            row("missing_run", "digest", 3, legacy_id=4, legacy_status="success"),
            row("missing_legacy", "digest", 4, run_id="r-5", run_status="error"),
        ],
    }  # fmt: skip


def test_legacy_check_of_an_empty_window(
    compared: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing in the window: no percentages ("n/a"), "-" by status, and no exit 3
    whatever --min-agreement says."""
    argv = [*compared[:-1], "2026-03-02T00:00:00", "--min-agreement", "99"]
    assert cli(capsys, *argv) == (
        0,
        "legacy check since 2026-03-02T00:00:00Z\n"
        "legacy rows: 0   runs: 0   paired: 0   agreeing: 0\n"
        "agreement: n/a   coverage: n/a   (skips/misses, not in legacy: 0; open runs: 0)\n"
        "legacy by status: -\n"
        "runs by status:   -\n"
        "no disagreeing rows\n",
        "",
    )
    code, out, _ = cli(capsys, *argv, "--json")
    assert (code, json.loads(out)["agreement_pct"]) == (0, None)


def test_legacy_check_when_everything_agrees(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = seed_legacy(tmp_path / "app.db", 3)
    assert (
        main(["legacy", "import", "--legacy-database", url, "--database", db_url, "--quiet"]) == 0
    )
    capsys.readouterr()
    argv = ["legacy", "check", "--legacy-database", url, "--database", db_url]
    assert cli(capsys, *argv, "--since", "2026-03-01T08:00:00Z", "--min-agreement", "100") == (
        0,
        "legacy check since 2026-03-01T08:00:00Z\n"
        "legacy rows: 3   runs: 3   paired: 3   agreeing: 3\n"
        "agreement: 100.00%   coverage: 100.00%   (skips/misses, not in legacy: 0; open runs: 0)\n"
        "legacy by status: failed 1, success 2\n"
        "runs by status:   error 1, success 2\n"
        "no disagreeing rows\n",
        "",
    )

"""The CLI under hostile input: unusable URLs and times out of range are one line and
exit 1 (never a traceback), and no command but `migrate` creates or changes a database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from exectrack.cli import main
from exectrack.stores import open_store

SECRET = "hunter2-not-for-logs"

READ_COMMANDS = [
    ["runs", "list"],
    ["runs", "list", "--json"],
    ["runs", "get", "0190c3a2-0000-7000-8000-000000000000"],
    ["runs", "latest"],
    ["runs", "stats"],
    ["report"],
    ["reap", "--dry-run"],
    ["reap"],
]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, out: str, err: str, *needles: str) -> None:
    assert (code, out) == (1, "")
    assert err.startswith("exectrack: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err


def migrated(url: str) -> None:
    """An empty exectrack database at ``url``."""
    store = open_store(url)
    store.migrate()
    store.close()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exectrack.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


# -- unusable database URLs (issue 7, item 9) --------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("sqlite://[x/runs.db", "cannot parse database URL"),
        (f"postgresql://u:{SECRET}@[::1/db", "cannot parse database URL"),
        (f"postgresql://u:{SECRET}@127.0.0.1:99999/db", "use 1-65535"),
        ("sqlite:///a%00b.db", "NUL"),
    ],
)
def test_an_unusable_url_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, needle: str
) -> None:
    """From --database or EXECTRACK_DATABASE_URL: one line, password redacted, exit 1."""
    for command in (["runs", "list"], ["migrate"]):
        code, out, err = cli(capsys, "--database", url, *command)
        assert_one_error_line(code, out, err, needle)
        assert SECRET not in err
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", url)
    code, out, err = cli(capsys, "runs", "stats")
    assert_one_error_line(code, out, err, needle)


def test_a_directory_as_database_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A directory is not a database: said in one line by reads and by migrate."""
    for command in (["runs", "list"], ["migrate"]):
        code, out, err = cli(capsys, "--database", str(tmp_path), *command)
        assert_one_error_line(code, out, err, "is a directory")


def test_an_unparsable_url_in_a_subprocess_prints_no_traceback() -> None:
    """The real command, as a user runs it: one line on stderr, exit 1."""
    done = run_cli("runs", "list", env={"EXECTRACK_DATABASE_URL": "sqlite://[x/runs.db"})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "exectrack: cannot parse database URL 'sqlite://[x/runs.db': Invalid IPv6 URL\n"
    )


# -- times out of range (issue 7, item 10) -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list", "--since", "1000000d"],
        ["runs", "list", "--since", "99999999999h"],
        ["runs", "list", "--until", "1000000d"],
        ["runs", "stats", "--since", "99999999999h"],
        ["runs", "latest", "--until", "9999-12-31T23:59:59-05:00"],
        ["report", "--since", "1000000d"],
        ["report", "--since", "0001-01-01T00:00:00+05:00"],
    ],
)
def test_a_time_out_of_range_is_one_line(
    capsys: pytest.CaptureFixture[str], db_url: str, args: list[str]
) -> None:
    """Every command that takes a time names the bad value and exits 1."""
    migrated(db_url)
    code, out, err = cli(capsys, "--database", db_url, *args)
    assert_one_error_line(code, out, err, "out of range", repr(args[-1]))


def test_a_time_out_of_range_in_a_subprocess_prints_no_traceback(db_url: str) -> None:
    """The real command: `--since 1000000d` is one line and exit 1, not an OverflowError."""
    migrated(db_url)
    for args in (["runs", "list", "--since", "1000000d"], ["report", "--since", "99999999999h"]):
        done = run_cli("--database", db_url, *args)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.startswith(f"exectrack: time {args[-1]!r} is out of range")
        assert done.stderr.count("\n") == 1


# -- reads never create or migrate (issue 7, item 11) ------------------------------------


def _foreign_database(path: Path) -> None:
    """Another application's SQLite file: one table, the default rollback journal."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()


def _shape(path: Path) -> tuple[list[str], str, list[str]]:
    """The tables, the journal mode, and the files next to the database."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return tables, mode, sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_no_command_but_migrate_changes_another_applications_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    """Reads, report and reap on a SQLite file without exectrack's schema: one line that
    says to run `exectrack migrate`, and the file keeps its tables and journal mode."""
    path = tmp_path / "app.db"
    _foreign_database(path)
    before = _shape(path)
    code, out, err = cli(capsys, "--database", str(path), *command)
    assert_one_error_line(code, out, err, "has no exectrack schema", "`exectrack migrate`")
    assert _shape(path) == before == (["notes"], "delete", ["app.db"])


def test_migrate_is_the_command_that_creates_the_schema(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """After an explicit `migrate`, the same file serves every read command."""
    path = tmp_path / "app.db"
    _foreign_database(path)
    code, _, _ = cli(capsys, "--database", str(path), "migrate")
    assert code == 0
    for command in READ_COMMANDS:
        code, _, err = cli(capsys, "--database", str(path), *command)
        assert code == 0 or "no run" in err, (command, err)  # get and latest: no run yet
        assert "schema" not in err


def test_reads_on_a_missing_file_create_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No command but migrate creates a database file or its directory."""
    path = tmp_path / "nowhere" / "runs.db"
    for command in READ_COMMANDS:
        code, out, err = cli(capsys, "--database", str(path), *command)
        assert_one_error_line(code, out, err, "no database at")
    assert not path.parent.exists()


def test_a_read_command_in_a_subprocess_leaves_a_foreign_file_alone(tmp_path: Path) -> None:
    """The real command on another application's file: one line, file unchanged."""
    path = tmp_path / "app.db"
    _foreign_database(path)
    done = run_cli("--database", str(path), "runs", "list")
    assert done.returncode == 1
    assert done.stderr == (
        f"exectrack: database sqlite:///{path} has no exectrack schema; run `exectrack migrate`\n"
    )
    assert _shape(path) == (["notes"], "delete", ["app.db"])


# -- echoed input stays short (issue 7, item 12) -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list", "--source", "X" * 100_000],
        ["runs", "list", "--status", "x" * 100_000],
        ["runs", "list", "--cursor", "x" * 100_000],
        ["runs", "list", "--since", "x" * 100_000],
        ["runs", "get", "x" * 100_000],
    ],
    ids=["source", "status", "cursor", "since", "get"],
)
def test_a_huge_argument_makes_a_short_error_line(
    capsys: pytest.CaptureFixture[str], db_url: str, args: list[str]
) -> None:
    """The one error line repeats a short prefix of the argument, not 100 KB."""
    migrated(db_url)
    code, out, err = cli(capsys, "--database", db_url, *args)
    assert_one_error_line(code, out, err)
    assert len(err) < 300, len(err)

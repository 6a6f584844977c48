"""The CLI under hostile input: unusable URLs and times out of range are one line and
exit 1 (never a traceback), and an error line stays short."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exectrack.cli import main
from exectrack.stores import open_store

SECRET = "hunter2-not-for-logs"


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

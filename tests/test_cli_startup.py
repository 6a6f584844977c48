"""Startup stays light: ``import exectrack`` and the CLI's read commands import none of
the heavy modules they do not use (asyncio, the tracker and its writer, drivers, ...).

Pinned as "which modules got imported", never as a time: a regression shows up here
on any machine. bench/cli_startup.py measures the times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from exectrack import RunStatus
from exectrack.stores import NewRun, open_store

ROOT = Path(__file__).resolve().parent.parent

# Never needed to read runs: the async machinery, the tracker's write path, drivers,
# and what only `serve`, `demo` or `heartbeat` use.
HEAVY = {
    "logging",  # exectrack._log imports it for the first record; a read logs none
    "asyncio",
    "concurrent.futures",
    "ssl",
    "subprocess",
    "socket",  # the host name of an owner id comes from os.uname()
    "pathlib",  # a database path is expanded and made a URI by stores.sqlite itself
    "secrets",  # (and hmac, OpenSSL's hashes) only for an owner id where /proc is missing
    "shutil",  # argparse's formatter imports it for the terminal width; exectrack.cli's not
    "psycopg",
    "psycopg_pool",
    "uvicorn",
    "fastapi",
    "apscheduler",
    "exectrack._tracker",
    "exectrack._writer",
    "exectrack._lifecycle",
    "exectrack._wrap",
    "exectrack._default",
    "exectrack._redact",
    "exectrack.stores._records",  # the write commands: the CLI's reaper writes in SQL
    "exectrack.server",
    # the parsers of the other commands: only the command line's own path is built
    "exectrack._cli_serve",
    "exectrack._cli_demo",
    "exectrack._cli_heartbeat",
    "exectrack.heartbeat",
    "exectrack.stores.postgres",
}

# A bare ``import exectrack`` loads the exceptions and nothing else.
NOT_ON_IMPORT = {
    *HEAVY,
    "typing",
    "dataclasses",
    "logging",
    "threading",
    "json",
    "sqlite3",
    "socket",
    "exectrack._model",
    "exectrack.query",
    "exectrack.stores",
}


def _imported(code: str, *args: str) -> dict[str, list[str]]:
    """Run ``code`` in a fresh interpreter; return its ``sys.modules`` names and stdout."""
    probe = (
        "import sys\n"
        "def _report(out):\n"
        "    modules = sorted(sys.modules)  # before the probe's own json\n"
        "    import json\n"
        "    sys.__stdout__.write('\\n' + json.dumps({'modules': modules, 'out': out}))\n"
        f"{code}\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, list[str]] = json.loads(out.stdout.splitlines()[-1])
    return result


def _loaded(modules: list[str], names: set[str]) -> set[str]:
    """The names in ``names`` that are loaded, as themselves or through a submodule."""
    return {name for name in names for m in modules if m == name or m.startswith(name + ".")}


def test_import_exectrack_loads_only_the_exceptions() -> None:
    """``import exectrack`` imports exectrack.errors and no other module of its own, and
    none of asyncio, typing, dataclasses, logging, threading, sqlite3, drivers, ..."""
    got = _imported("import exectrack\n_report([])")
    assert {m for m in got["modules"] if m.startswith("exectrack")} == {
        "exectrack",
        "exectrack.errors",
    }
    assert _loaded(got["modules"], NOT_ON_IMPORT) == set()


def test_decorating_loads_the_tracker_only_when_used() -> None:
    """``@exectrack.with_run`` loads the tracker (it is needed then) but still opens no
    database: the light import does not move work to the wrong place."""
    got = _imported(
        "import exectrack\n"
        "@exectrack.with_run('skill')\n"
        "def f(): ...\n"
        "_report([str(exectrack._default._tracker)])"
    )
    assert "exectrack._wrap" in got["modules"]
    assert got["out"] == ["None"]


def test_console_script_is_the_light_entry_point() -> None:
    """The ``exectrack`` console script calls exectrack.cli:main, the module the tests
    below import (``python -m exectrack`` goes there too)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert scripts == {"exectrack": "exectrack.cli:main"}
    assert "from exectrack.cli import main" in (ROOT / "src/exectrack/__main__.py").read_text()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database with a finished run and an open one (something to reap)."""
    path = tmp_path_factory.mktemp("startup") / "runs.db"
    url = f"sqlite:///{path}"
    store = open_store(url, migrate=True)
    try:
        store.apply(
            [
                NewRun(
                    "run-1",
                    "skill",
                    1_000_000,
                    source_ref="search",
                    status=RunStatus.SUCCESS,
                    finished_at=2_000_000,
                    duration_ms=1000.0,
                ),
                NewRun("run-2", "chat", 3_000_000, owner="elsewhere:1:x"),
            ]
        )
    finally:
        store.close()
    return url


READ_COMMANDS = [
    ["--version"],
    ["runs", "list"],
    ["runs", "list", "--json"],
    ["runs", "get", "run-1"],
    ["runs", "latest", "--source", "skill"],
    ["runs", "stats"],
    ["report"],
    ["reap", "--dry-run"],
    ["reap"],  # writes only in SQL: no write command is created
]


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=" ".join)
def test_cli_read_commands_stay_light(db: str, argv: list[str]) -> None:
    """Each read command, started like the console script, answers (exit 0) without
    importing asyncio, the tracker, its writer, any driver or the server."""
    common = [] if argv == ["--version"] else ["--database", db]
    got = _imported(
        "import contextlib, io\n"
        "from exectrack.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        code = main(sys.argv[1:])\n"
        "    except SystemExit as exc:\n"  # argparse's --version exits
        "        code = exc.code\n"
        "_report([str(code), buf.getvalue()])",
        *common,
        *argv,
    )
    code, out = got["out"]
    assert code == "0"
    assert out.strip()
    assert _loaded(got["modules"], HEAVY) == set()
    # the query layer's result records load only for the commands that return them
    assert ("exectrack._results" in got["modules"]) == (argv[:2] == ["runs", "stats"])
    assert ("exectrack._report" in got["modules"]) == (argv[:1] == ["report"])
    # the store's summaries load only for the commands that reap or summarize (reading
    # runs creates none of them); its write commands for none (HEAVY)
    summaries = argv[:1] in (["report"], ["reap"])
    assert ("exectrack.stores._summaries" in got["modules"]) == summaries


@pytest.mark.parametrize("columns", [None, "", "0", "-3", "abc", "37", "200"])
def test_help_width_is_shutils(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    """The CLI's help formatter takes the terminal width without importing shutil, and
    gets the width shutil would (COLUMNS when a positive number, else the terminal's,
    else 80), so help text wraps exactly as argparse's own formatter wraps it."""
    import shutil

    from exectrack import cli

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli._terminal_columns() == shutil.get_terminal_size().columns


PARSED = [
    [],
    ["--help"],
    ["--version"],
    ["--vers", "runs", "list"],
    ["--version=1"],
    ["-x", "--version"],
    ["--version", "-x"],
    ["runs", "--version"],
    ["runs"],
    ["runs", "--help"],
    ["runs", "list", "--help"],
    ["runs", "lst"],
    ["runz", "list"],
    ["--database", "sqlite:///x.db", "runs", "list", "--limit", "3"],
    ["--database=sqlite:///x.db", "-vv", "runs", "list", "--json"],
    ["--data", "x.db", "runs", "latest", "--source", "skill"],
    ["--d=x.db", "runs", "stats", "--since", "2h"],
    ["-v", "--verbose", "runs", "--database", "x.db", "get", "ID"],
    ["runs", "list", "--database", "x.db", "--status", "error", "--status", "timeout"],
    ["--database", "-v", "runs", "list"],
    ["--ver", "runs", "list"],
    ["--verb", "runs", "list"],
    ["--", "runs", "list"],
    ["runs", "--", "list"],
    ["-", "runs"],
    ["-x", "runs", "list"],
    ["runs", "list", "--bogus"],
    ["runs", "get"],
    ["runs", "tail", "--after", "c"],
    ["report", "24h"],
    ["report", "--since", "30d", "--json"],
    ["reap", "--dry-run"],
    ["migrate"],
    ["serve", "--port", "0"],
    ["demo", "--no-traffic"],
    ["heartbeat", "check", "tasks.toml"],
    ["legacy", "check", "--tasks", "t.toml"],
    ["legacy"],
    ["--database"],
]


def _parse(parser: object, argv: list[str]) -> tuple[object, str, str]:
    """(namespace as a dict, or the exit code) and what argparse printed."""
    import argparse
    import contextlib
    import io

    assert isinstance(parser, argparse.ArgumentParser)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: object = vars(parser.parse_args(argv))
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", PARSED, ids=" ".join)
def test_partial_parser_parses_like_the_whole_one(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """The parser built for a command line (only that command's parsers) gives the same
    namespace, or the same help, usage error and exit code, as the whole parser."""
    from exectrack import cli

    monkeypatch.setenv("COLUMNS", "100")
    assert _parse(cli.build_parser(argv), argv) == _parse(cli.build_parser(), argv)


def test_partial_parser_builds_only_the_command_path() -> None:
    """For ``runs list`` the other commands and actions are not built (what saves the
    time); for a command line naming no command plainly, everything is."""
    import argparse

    from exectrack import cli

    def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    partial = cli.build_parser(["--database", "x.db", "runs", "list", "--limit", "3"])
    assert list(commands(partial)) == ["runs"]
    assert list(commands(commands(partial)["runs"])) == ["list"]
    whole = cli.build_parser(["--help"])
    assert list(commands(whole)) == [
        "runs",
        "migrate",
        "reap",
        "report",
        "serve",
        "demo",
        "heartbeat",
        "legacy",
    ]

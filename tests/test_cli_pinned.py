"""The exectrack CLI pinned down: exact lines, exit codes, option bounds, JSON shapes,
paging cursors, reap, help texts, the parser's shortcuts and every error path."""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import logging
import os
import pty
import signal
import socket
import struct
import sys
import termios
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exectrack import ExecutionTracker, FakeClock, __version__, query
from exectrack import cli as cli_module
from exectrack.cli import build_parser, main
from exectrack.errors import SchemaError
from exectrack.stores.sqlite import MIGRATIONS
from test_cli import (
    LATEST_VERSION,
    ORDER,
    Seeded,
    assert_one_error_line,
    cli,
    listed,
    seeded,
)

__all__ = ["seeded"]  # the fixture, imported from test_cli

HELP_COLUMNS = "100"


@pytest.fixture
def columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Help wraps at a known width whatever the terminal (argparse reads $COLUMNS)."""
    monkeypatch.setenv("COLUMNS", HELP_COLUMNS)


def _cursor_after(capsys: pytest.CaptureFixture[str], db: Seeded, limit: int) -> str:
    code, out, _ = cli(
        capsys, "--database", db.url, "runs", "list", "--json", "--limit", str(limit)
    )
    assert code == 0
    cursor = json.loads(out)["next_cursor"]
    assert isinstance(cursor, str)
    return cursor


# -- runs list ---------------------------------------------------------------------------


def test_list_table_ends_with_the_exact_next_page_line(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """A table page with more runs after it ends with one line naming the exact cursor."""
    cursor = _cursor_after(capsys, seeded, 2)
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "list", "--limit", "2")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 4
    assert [line.split()[0] for line in lines[1:3]] == [seeded.ids[n] for n in ORDER[:2]]
    assert lines[3] == f"more runs: repeat with --cursor {cursor} for the next page"


def test_list_with_a_cursor_past_the_last_match_says_no_more_runs(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """An empty page after a cursor says `no more runs` (table) or an empty list (JSON)."""
    cursor = _cursor_after(capsys, seeded, 6)  # after search1: only chat1 is older
    args = ["--database", seeded.url, "runs", "list", "--source", "skill", "--cursor", cursor]
    code, out, err = cli(capsys, *args)
    assert (code, out, err) == (0, "no more runs\n", "")
    code, out, err = cli(capsys, *args, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"runs": [], "next_cursor": None}
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "list", "--cursor", cursor)
    assert (code, out.splitlines()[1].split()[0]) == (0, seeded.ids["chat1"])


def test_list_json_page_has_the_runs_and_the_cursor_of_the_next(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """--json --limit 3: exactly two keys, three whole runs, a cursor that continues."""
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "list", "--json", "--limit", "3")
    assert code == 0
    page = json.loads(out)
    assert list(page) == ["runs", "next_cursor"]
    assert seeded.names([r["id"] for r in page["runs"]]) == ORDER[:3]
    assert page["runs"][0]["source_ref"] == "search"
    assert page["runs"][0]["status"] == "queued"
    assert listed(capsys, seeded, "--cursor", page["next_cursor"]) == ORDER[3:]
    assert out.startswith('{\n  "runs": [\n    {\n')  # indented by two


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "limit=0: must be between 1 and 1000"),
        ("-1", "limit=-1: must be between 1 and 1000"),
        ("1001", "limit=1001: must be between 1 and 1000"),
    ],
)
def test_list_limit_out_of_bounds_is_one_exact_line(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, limit: str, message: str
) -> None:
    """--limit outside 1-1000 exits 1 with the bounds named."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "list", "--limit", limit)
    assert (code, out, err) == (1, "", f"exectrack: {message}\n")


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_list_limit_bounds_are_accepted(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, limit: str
) -> None:
    """--limit 1 and --limit 1000 are both valid pages."""
    assert len(listed(capsys, seeded, "--limit", limit)) == min(int(limit), len(ORDER))


def test_list_default_page_is_50_runs(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """Without --limit a page holds 50 runs and hands a cursor for the 51st."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    with ExecutionTracker(db_url, strict=True, clock=clock) as t:
        for i in range(51):
            clock.advance(1)
            t.start("skill", f"r{i}").finish_success()
    code, out, _ = cli(capsys, "--database", db_url, "runs", "list", "--json")
    assert code == 0
    page = json.loads(out)
    assert len(page["runs"]) == 50
    assert page["runs"][-1]["source_ref"] == "r1"
    code, out, _ = cli(
        capsys, "--database", db_url, "runs", "list", "--cursor", page["next_cursor"]
    )
    assert code == 0
    assert [line.split()[3] for line in out.splitlines()[1:]] == ["r0"]


def test_every_filter_reaches_the_query_at_once(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """All eight filters together select the one run that meets each of them."""
    args = [
        "--source",
        "skill",
        "--status",
        "error",
        "--session",
        "s-1",
        "--ref",
        "search",
        "--parent",
        seeded.ids["chat1"],
        "--since",
        seeded.iso(1),
        "--until",
        seeded.iso(2),
        "--search",
        "slow down",
    ]
    assert listed(capsys, seeded, *args) == ["search1"]
    for i in range(0, len(args), 2):  # each filter, spoiled alone, leaves nothing
        spoiled = list(args)
        spoiled[i + 1] = {
            "--since": seeded.iso(2),
            "--until": seeded.iso(1),
            "--status": "success",
        }.get(args[i], "zzz")
        if args[i] == "--source":
            spoiled[i + 1] = "chat"
        assert listed(capsys, seeded, *spoiled) == [], args[i]


# -- runs get / latest -------------------------------------------------------------------


def test_get_unknown_long_id_is_echoed_shortened(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """An unknown id is echoed up to 80 characters (77 + `...`)."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "get", "ab" * 60)
    assert (code, out) == (1, "")
    assert err == f"exectrack: no run with id {('ab' * 60)[:77]}...\n"


def test_get_unknown_empty_id_prints_a_dash(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """An empty id is shown as `-`, never as nothing."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "get", "")
    assert (code, out, err) == (1, "", "exectrack: no run with id -\n")


def test_get_text_shows_the_run_fields(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """`runs get` without --json is the key: value listing (first line: the id)."""
    run_id = seeded.ids["task7"]
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "get", run_id)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["id:", run_id]
    assert ["error_code:", "deadline_exceeded"] in [line.split() for line in lines]
    assert lines[-1].split() == ["metadata:", "{}"]


def test_latest_without_match_is_the_exact_line(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """`runs latest` with no match says so in one exact line, with or without --json."""
    for extra in ([], ["--json"]):
        code, out, err = cli(
            capsys, "--database", seeded.url, "runs", "latest", "--source", "nope", *extra
        )
        assert (code, out, err) == (1, "", "exectrack: no run matches these filters\n")


def test_latest_json_is_the_whole_run(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """`runs latest --json` prints the same document as `runs get --json`."""
    code, latest, _ = cli(
        capsys, "--database", seeded.url, "runs", "latest", "--session", "s-1", "--json"
    )
    assert code == 0
    code, got, _ = cli(
        capsys, "--database", seeded.url, "runs", "get", seeded.ids["search1"], "--json"
    )
    assert code == 0
    assert latest == got
    assert json.loads(latest)["id"] == seeded.ids["search1"]


# -- runs stats --------------------------------------------------------------------------

STATS_ALL = """\
runs: 7  open: 2  error rate: 40.0%

STATUS    COUNT
queued        1
running       1
success       2
error         1
canceled      1
timeout       1

SOURCE     TOTAL  QUEUED  RUNNING  SUCCESS  ERROR  CANCELED  TIMEOUT
chat           2       0        1        1      0         0        0
heartbeat      2       0        0        0      0         1        1
skill          3       1        0        1      1         0        0
"""


def test_stats_table_exactly(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """`runs stats` prints the totals, the status table and the per-source table."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "stats")
    assert (code, err) == (0, "")
    assert out == STATS_ALL


def test_stats_without_finished_runs_or_sources(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """No finished run: the error rate is `-`; no run at all: no source table."""
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "stats", "--status", "running")
    assert code == 0
    assert out.splitlines()[0] == "runs: 1  open: 1  error rate: -"
    assert out.splitlines()[-2:] == [
        "SOURCE  TOTAL  QUEUED  RUNNING  SUCCESS  ERROR  CANCELED  TIMEOUT",
        "chat        1       0        1        0      0         0        0",
    ]
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "stats", "--source", "nope")
    assert code == 0
    assert out == (
        "runs: 0  open: 0  error rate: -\n\nSTATUS    COUNT\nqueued        0\n"
        "running       0\nsuccess       0\nerror         0\ncanceled      0\ntimeout       0\n"
    )


def test_stats_json_shape(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """`runs stats --json` is exactly the filtered counts."""
    code, out, _ = cli(
        capsys, "--database", seeded.url, "runs", "stats", "--json", "--source", "heartbeat"
    )
    assert code == 0
    assert json.loads(out) == {
        "total": 2,
        "open": 0,
        "error_rate": 0.5,
        "by_status": {
            "queued": 0,
            "running": 0,
            "success": 0,
            "error": 0,
            "canceled": 1,
            "timeout": 1,
        },
        "by_source": {"heartbeat": {"canceled": 1, "timeout": 1}},
    }


# -- migrate -----------------------------------------------------------------------------


def test_migrate_json_and_text_exactly(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`migrate --json` names the database, the versions applied and the version."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    code, out, err = cli(capsys, "--database", url, "migrate", "--json")
    assert (code, err) == (0, "")
    versions = [m.version for m in MIGRATIONS]
    assert json.loads(out) == {"database": url, "applied": versions, "version": LATEST_VERSION}
    code, out, _ = cli(capsys, "--database", url, "migrate", "--json")
    assert json.loads(out) == {"database": url, "applied": [], "version": LATEST_VERSION}

    other = f"sqlite:///{tmp_path / 'n.db'}"
    code, out, _ = cli(capsys, "--database", other, "migrate")
    assert code == 0
    listed_versions = ", ".join(str(v) for v in versions)
    assert out == (
        f"applied migration(s) {listed_versions}; the schema is now at version {LATEST_VERSION}\n"
    )


def test_migrate_json_redacts_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database named by `migrate --json` never shows a password (PostgreSQL)."""
    url = os.environ.get("EXECTRACK_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("EXECTRACK_TEST_POSTGRES_URL not set")
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    if not host:
        pytest.skip("the test URL has no user part")
    with_password = f"{scheme}://{user.split(':')[0]}:not-shown-pw@{host}"
    monkeypatch.setenv("PGPASSWORD", user.partition(":")[2] or "unused")
    code, out, err = cli(capsys, "--database", with_password, "migrate", "--json")
    if code != 0 and "password" in err:
        pytest.skip("the test server checks passwords")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert "not-shown-pw" not in out
    assert data["version"] >= 1
    assert data["database"].startswith(f"{scheme}://")


# -- reap --------------------------------------------------------------------------------

OWNER = "elsewhere:7:x"  # another host: never judged dead here


@pytest.fixture
def overdue(db_url: str) -> dict[str, str]:
    """Three open runs an hour old: two past their deadline (one of them queued, its
    ref longer than the table's column), one well within it."""
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    t = ExecutionTracker(
        db_url, strict=True, durability="sync", owner=OWNER, clock=clock, lease=None
    )
    ids = {
        "nightly": t.start("heartbeat", "nightly", deadline=60).id,
        "queued": t.start("job", "q" * 45, deadline=60, queued=True).id,
        "fresh": t.start("heartbeat", "hourly", deadline=7200).id,
    }
    t.close()
    return ids


def _reap_rows(ids: dict[str, str]) -> list[str]:
    ref = "q" * 37 + "..."
    return [
        f"{ids['nightly']}  heartbeat  nightly{' ' * 33}  timeout   deadline_exceeded  "
        f"deadline  {OWNER}",
        f"{ids['queued']}  job        {ref}  canceled  deadline_exceeded  deadline  {OWNER}",
    ]


def _reap_header() -> str:
    return f"ID{' ' * 34}  SOURCE     REF{' ' * 37}  STATUS    ERROR_CODE         REASON    OWNER"


def test_reap_dry_run_table_then_reap_table_exactly(
    capsys: pytest.CaptureFixture[str], db_url: str, overdue: dict[str, str]
) -> None:
    """The dry run prints what the reap then finishes, in the same table."""
    rows = sorted(_reap_rows(overdue))
    code, out, err = cli(capsys, "--database", db_url, "reap", "--dry-run")
    assert (code, err) == (0, "")
    first, header, *got = out.splitlines()
    assert first == "would finish 2 run(s):"
    assert header == _reap_header()
    assert sorted(got) == rows
    code, out, _ = cli(capsys, "--database", db_url, "reap")
    assert code == 0
    first, header, *got = out.splitlines()
    assert (first, header, sorted(got)) == ("finished 2 run(s):", _reap_header(), rows)
    code, out, _ = cli(capsys, "--database", db_url, "reap", "--dry-run")
    assert (code, out) == (
        0,
        "nothing to reap: no open run is abandoned or past its deadline\n",
    )


def test_reap_json_exactly(
    capsys: pytest.CaptureFixture[str], db_url: str, overdue: dict[str, str]
) -> None:
    """`reap --json` lists every field of each run; a dry run changes nothing."""

    def entry(name: str, source: str, ref: str, status: str) -> dict[str, object]:
        return {
            "id": overdue[name],
            "source": source,
            "source_ref": ref,
            "owner": OWNER,
            "status": status,
            "error_code": "deadline_exceeded",
            "reason": "deadline",
        }

    expected = [
        entry("nightly", "heartbeat", "nightly", "timeout"),
        entry("queued", "job", "q" * 45, "canceled"),
    ]

    def by_id(doc: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
        return sorted(doc["reaped"], key=lambda r: str(r["id"]))

    for dry in (True, False):
        extra = ["--dry-run"] if dry else []
        code, out, err = cli(capsys, "--database", db_url, "reap", "--json", *extra)
        assert (code, err) == (0, "")
        doc = json.loads(out)
        assert list(doc) == ["dry_run", "reaped"]
        assert doc["dry_run"] is dry
        assert by_id(doc) == sorted(expected, key=lambda r: str(r["id"]))
    code, out, _ = cli(capsys, "--database", db_url, "reap", "--json", "--dry-run")
    assert json.loads(out) == {"dry_run": True, "reaped": []}
    code, out, _ = cli(capsys, "--database", db_url, "runs", "get", overdue["fresh"], "--json")
    assert json.loads(out)["status"] == "running"


# -- report ------------------------------------------------------------------------------


@pytest.fixture
def reported(db_url: str) -> str:
    """Two skill runs on a fixed day: one at 10:00 (error), one at 11:00 (success)."""
    clock = FakeClock(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    with ExecutionTracker(db_url, strict=True, clock=clock) as t:
        t.start("skill", "a").finish_error(code="rate_limited", message="slow")
        clock.advance(3600)
        h = t.start("skill", "b")
        clock.advance(2)
        h.finish_success()
    return db_url


def test_report_since_narrows_the_window(capsys: pytest.CaptureFixture[str], reported: str) -> None:
    """`report --since T` counts the runs started at or after T and says so."""
    since = "2026-03-01T10:30:00Z"
    code, out, err = cli(capsys, "--database", reported, "report", "--since", since, "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["since"] == since
    [skill] = data["sources"]
    assert (skill["source"], skill["started"], skill["top_errors"]) == ("skill", 1, [])
    code, out, _ = cli(capsys, "--database", reported, "report", "--since", since)
    assert code == 0
    first, header, row = out.splitlines()
    assert first.startswith("report at ")
    assert first.endswith(f"Z over runs since {since}")
    assert header.split()[:3] == ["SOURCE", "STARTED", "SUCCESS"]
    assert row.split()[:3] == ["skill", "1", "1"]


def test_report_without_since_covers_all_runs(
    capsys: pytest.CaptureFixture[str], reported: str
) -> None:
    """Without --since the report covers every run."""
    code, out, _ = cli(capsys, "--database", reported, "report")
    assert code == 0
    assert out.splitlines()[0].endswith("Z over all runs")
    assert "rate_limited=1" in out


# -- help --------------------------------------------------------------------------------

_FILTERS_HELP = """\
filters (combined with AND):
  --source NAME    runs of this entry point (chat, skill, heartbeat, ...); repeat for any of
                   several
  --status STATUS  runs in this status (queued, running, success, error, canceled, timeout);
                   repeat for any of several
  --session ID     runs of this session / conversation
  --ref REF        runs of this source_ref (skill name, task id, ...)
  --parent RUN_ID  child runs of this run
  --since TIME     started at or after TIME: ISO 8601 (2026-11-25T10:00:00Z; no zone means UTC) or
                   an age: 30s, 15m, 2h, 7d, 1w
  --until TIME     started before TIME: ISO 8601 (2026-11-25T10:00:00Z; no zone means UTC) or an
                   age: 30s, 15m, 2h, 7d, 1w
  --search TEXT    case-insensitive text in the source_ref or the error message
"""

_COMMON = """\
  --database URL  the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose   log more to stderr (-v: info, -vv: debug)
"""

_COMMON_WIDE = """\
  --database URL   the database (default: $EXECTRACK_DATABASE_URL, else the default file)
  -v, --verbose    log more to stderr (-v: info, -vv: debug)
"""

HELP = {
    ("runs", "list"): f"""\
usage: exectrack runs list [-h] [--database URL] [-v] [--source NAME] [--status STATUS]
                           [--session ID] [--ref REF] [--parent RUN_ID] [--since TIME]
                           [--until TIME] [--search TEXT] [--limit N] [--cursor CURSOR] [--json]

List runs matching the filters, newest first. Pages are keyset-based: pass the cursor printed
after a page (next_cursor with --json) to get the next one; runs recorded meanwhile never make a
page repeat or skip a run.

options:
  -h, --help       show this help message and exit
{_COMMON_WIDE}\
  --limit N        runs per page, 1-1000 (default: 50)
  --cursor CURSOR  continue after a previous page
  --json           print JSON: {{"runs": [...], "next_cursor": ...}}

{_FILTERS_HELP}""",
    ("runs", "get"): f"""\
usage: exectrack runs get [-h] [--database URL] [-v] [--json] ID

Show every field of one run, metadata included. Exits 1 if no run has ID.

positional arguments:
  ID              the run id (a UUID)

options:
  -h, --help      show this help message and exit
{_COMMON}\
  --json          print JSON: the run's fields
""",
    ("runs", "latest"): f"""\
usage: exectrack runs latest [-h] [--database URL] [-v] [--source NAME] [--status STATUS]
                             [--session ID] [--ref REF] [--parent RUN_ID] [--since TIME]
                             [--until TIME] [--search TEXT] [--json]

Show the newest run matching the filters, like `runs get` (e.g. the last run of one scheduled
task). Exits 1 if no run matches.

options:
  -h, --help       show this help message and exit
{_COMMON_WIDE}\
  --json           print JSON: the run's fields

{_FILTERS_HELP}""",
    ("runs", "stats"): f"""\
usage: exectrack runs stats [-h] [--database URL] [-v] [--source NAME] [--status STATUS]
                            [--session ID] [--ref REF] [--parent RUN_ID] [--since TIME]
                            [--until TIME] [--search TEXT] [--json]

Count the runs matching the filters by status and by source, with the number still open and the
error rate (error + timeout among finished runs).

options:
  -h, --help       show this help message and exit
{_COMMON_WIDE}\
  --json           print JSON: total, open, error_rate, by_status, by_source

{_FILTERS_HELP}""",
    ("migrate",): f"""\
usage: exectrack migrate [-h] [--database URL] [-v] [--json]

Apply pending schema migrations (creating the database if needed) and print the versions applied,
or that the schema is up to date. This is the only command that creates or changes a database; the
others exit 1 on a database without exectrack's schema.

options:
  -h, --help      show this help message and exit
{_COMMON}\
  --json          print JSON: database, applied (versions), version
""",
    ("reap",): f"""\
usage: exectrack reap [-h] [--database URL] [-v] [--dry-run] [--json]

Finish, once, every open run whose process on this host is gone or whose lease expired
(error/abandoned), or that is past its deadline (timeout/deadline_exceeded); a queued one ends
canceled. Prints what it finished. Safe to run beside live processes and other reapers.

options:
  -h, --help      show this help message and exit
{_COMMON}\
  --dry-run       show what would be finished
  --json          print JSON: dry_run, reaped (id, source, status, error_code, reason, ...)
""",
    ("report",): f"""\
usage: exectrack report [-h] [--database URL] [-v] [--since TIME] [--json]

Per source, over the runs started in the window: runs started and how they ended, runs open (and
open past their lease), runs reaped as abandoned, the hang rate ((abandoned + open past lease) /
started), the age of the oldest open run, p50/p95 duration, p50/p95 time to first item of streams,
and the top error codes.

options:
  -h, --help      show this help message and exit
{_COMMON}\
  --since TIME    window start: ISO 8601 (2026-11-25T10:00:00Z; no zone means UTC) or an age: 30s,
                  15m, 2h, 7d, 1w (default: all)
  --json          print JSON: since, now, sources [...]
""",
}


@pytest.mark.usefixtures("columns")
@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
def test_help_text_exactly(capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    """Each command's --help, at 100 columns, is exactly this text; exit 0."""
    code, out, err = cli(capsys, *command, "--help")
    assert (code, err) == (0, "")
    assert out == HELP[command]


@pytest.mark.usefixtures("columns")
def test_top_level_and_runs_help_list_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`exectrack --help` and `exectrack runs --help` describe each command of cli.py."""
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "usage: exectrack [-h] [--database URL] [-v] [--version] COMMAND ..."
    assert "XX" not in out
    for line in [
        "commands:",
        "  COMMAND",
        "    runs          list, show and count recorded runs",
        "    migrate       create or upgrade the database schema",
        "    reap          finish runs left open by dead processes or past their deadline",
        "    report        hang rate and outcomes per source",
        "  --version       show program's version number and exit",
        *_COMMON.splitlines(),
    ]:
        assert line in lines, line
    code, out, _ = cli(capsys, "runs", "--help")
    assert code == 0
    assert "XX" not in out
    assert out.startswith(
        "usage: exectrack runs [-h] [--database URL] [-v] ACTION ...\n\n"
        "List, show and count recorded runs (newest first).\n"
    )
    lines = out.splitlines()
    for line in [
        "actions:",
        "  ACTION",
        "    list          list runs, newest first, one page at a time",
        "    get           show one run by id",
        "    latest        show the newest run matching the filters",
        "    stats         count runs by status and by source",
    ]:
        assert line in lines, line


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints `exectrack <version>` and exits 0."""
    assert cli(capsys, "--version") == (0, f"exectrack {__version__}\n", "")
    assert cli(capsys, "-v", "--vers") == (0, f"exectrack {__version__}\n", "")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["runs"], "the following arguments are required: ACTION"),
        (["runs", "get"], "the following arguments are required: ID"),
        (["reap", "--dry"], None),  # a prefix of --dry-run is accepted
    ],
)
def test_required_parts_name_their_metavar(
    capsys: pytest.CaptureFixture[str], db_url: str, args: list[str], needle: str | None
) -> None:
    """A missing command, action or id exits 2 naming it."""
    if needle is None:
        cli(capsys, "--database", db_url, "migrate")
        assert cli(capsys, "--database", db_url, *args)[0] == 0
        return
    code, out, err = cli(capsys, *args)
    assert (code, out) == (2, "")
    assert err.rstrip().endswith(f"error: {needle}")


# -- the options before and after the command --------------------------------------------


def test_database_before_the_command_is_kept_by_the_subcommands(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--database before `runs list` is not reset by the parsers below it."""
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", "sqlite:///nowhere/at/all.db")
    for args in (
        ["--database", seeded.url, "runs", "stats", "--json"],
        ["runs", "--database", seeded.url, "stats", "--json"],
        ["runs", "stats", "--database", seeded.url, "--json"],
        [f"--database={seeded.url}", "runs", "stats", "--json"],
        ["--data", seeded.url, "runs", "stats", "--json"],
    ):
        code, out, err = cli(capsys, *args)
        assert (code, err) == (0, ""), args
        assert json.loads(out)["total"] == 7


@pytest.mark.parametrize("flags", [[], ["-v"], ["-vv"], ["--verbose", "--verbose"]])
def test_verbosity_sets_the_level_of_exectrack_records(
    capsys: pytest.CaptureFixture[str],
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
) -> None:
    """Without -v only warnings reach stderr; -v adds info, -vv debug too."""
    probe = logging.getLogger("exectrack.probe")

    class LoggingStdout(io.StringIO):
        """A terminal that logs while the command prints (a record from inside it)."""

        def write(self, text: str) -> int:
            probe.debug("debug-probe")
            probe.info("info-probe")
            probe.warning("warning-probe")
            return super().write(text)

    stdout = LoggingStdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    logger = logging.getLogger("exectrack")
    before = (list(logger.handlers), logger.level)
    code = main(["--database", seeded.url, *flags, "runs", "stats", "--json"])
    assert (list(logger.handlers), logger.level) == before  # the CLI's handler is gone
    _, err = capsys.readouterr()
    assert code == 0
    assert json.loads(stdout.getvalue())["total"] == 7
    level = {0: 30, 1: 20}.get(len("".join(flags).replace("-verbose", "v").strip("-")), 10)
    seen = {
        name
        for name in ("debug", "info", "warning")
        if f"{name.upper()} exectrack.probe: {name}-probe" in err
    }
    want = (
        {"warning"} | ({"info"} if level <= 20 else set()) | ({"debug"} if level <= 10 else set())
    )
    assert seen == want


# -- the parser's shortcuts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["runs", "list", "--json"], ("runs", "list")),
        (["runs"], ("runs",)),
        (["report", "--since", "2h"], ("report",)),
        (["reap", "-"], ("reap", "-")),
        (["--database", "x.db", "runs", "get", "id"], ("runs", "get")),
        (["--database=x.db", "runs", "get"], ("runs", "get")),
        (["--d", "x.db", "migrate"], ("migrate",)),  # argparse takes a prefix
        (["--d=x.db", "migrate"], ("migrate",)),
        (["-v", "-vv", "--verbose", "runs", "stats"], ("runs", "stats")),
        (["-vx", "runs"], None),
        (["-", "runs"], ("-", "runs")),
        (["--version"], ()),
        (["--vers"], ()),
        (["--ver", "runs"], None),
        (["-v", "--version", "runs"], ()),
        (["runs", "--version"], ("runs",)),
        (["--help", "runs"], None),
        (["-h"], None),
        (["--", "runs"], None),
        (["runs", "--database", "x", "list"], ("runs", "list")),
        (["runs", "--json", "list"], ("runs",)),
        ([], None),
        (["--database"], None),
    ],
)
def test_command_path_reads_the_first_two_words(
    argv: list[str], path: tuple[str, ...] | None
) -> None:
    """The command words are found past --database and -v, and nothing else."""
    assert cli_module._command_path(argv) == path


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


ALL_COMMANDS = ["runs", "migrate", "reap", "report", "serve", "demo", "heartbeat", "legacy"]


@pytest.mark.parametrize(
    ("argv", "commands", "actions"),
    [
        (["runs", "list"], ["runs"], ["list"]),
        (["runs", "get", "x"], ["runs"], ["get"]),
        (["runs", "latest"], ["runs"], ["latest"]),
        (["runs", "stats"], ["runs"], ["stats"]),
        (["runs", "tail"], ["runs"], ["tail"]),
        (["runs"], ["runs"], ["list", "get", "latest", "stats", "tail"]),
        (["migrate"], ["migrate"], None),
        (["reap", "--dry-run"], ["reap"], None),
        (["report"], ["report"], None),
        (["--version"], [], None),
        (["serve"], ["serve"], None),
        (["demo"], ["demo"], None),
        (["heartbeat", "check"], ["heartbeat", "legacy"], None),
        (["legacy", "check"], ["heartbeat", "legacy"], None),
        (["runs", "nope"], ALL_COMMANDS, ["list", "get", "latest", "stats", "tail"]),
        (["nope"], ALL_COMMANDS, None),
        (None, ALL_COMMANDS, ["list", "get", "latest", "stats", "tail"]),
        (["--help"], ALL_COMMANDS, ["list", "get", "latest", "stats", "tail"]),
    ],
)
def test_build_parser_builds_only_the_commands_on_the_path(
    argv: list[str] | None, commands: list[str], actions: list[str] | None
) -> None:
    """The parser holds the named command (and action) only; else the whole tree."""
    parser = build_parser(argv)
    top = _choices(parser)
    assert sorted(top) == sorted(commands)
    if actions is not None:
        assert sorted(_choices(top["runs"])) == sorted(actions)
    else:
        for name in top:
            assert name == "runs" or not _choices(top[name]) or name in ("heartbeat", "legacy")


def test_main_parses_its_argv_not_the_process_argv(
    capsys: pytest.CaptureFixture[str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main(argv) builds its parser from argv even when sys.argv names another command;
    main() reads sys.argv."""
    assert cli(capsys, "--database", db_url, "migrate")[0] == 0
    monkeypatch.setattr(sys, "argv", ["exectrack", "runs", "list", "--json"])
    assert cli(capsys, "--database", db_url, "reap", "--json") == (
        0,
        '{\n  "dry_run": false,\n  "reaped": []\n}\n',
        "",
    )
    monkeypatch.setattr(sys, "argv", ["exectrack", "--database", db_url, "runs", "list", "--json"])
    code = main()
    out, err = capsys.readouterr()
    assert (code, json.loads(out), err) == (0, {"runs": [], "next_cursor": None}, "")


def test_holds_checks_each_word_of_the_path() -> None:
    """A parser holds a path when each word is a choice at its level, or the level has none."""
    whole = build_parser()
    assert cli_module._holds(whole, ("runs", "list"))
    assert cli_module._holds(whole, ("reap", "anything"))
    assert cli_module._holds(whole, ())
    assert not cli_module._holds(whole, ("runs", "nope"))
    assert not cli_module._holds(whole, ("nope",))
    reap_only = build_parser(["reap"])
    assert not cli_module._holds(reap_only, ("runs",))
    assert cli_module._holds(reap_only, ("reap",))


def test_a_partial_parser_parses_like_the_whole(db_url: str) -> None:
    """For each command line, the built parser gives the same namespace as the whole one."""
    whole = build_parser()
    for argv in (
        ["--database", db_url, "runs", "list", "--limit", "3", "--source", "a"],
        ["-v", "runs", "get", "x", "--json"],
        ["reap", "--dry-run", "--database", db_url],
        ["report", "--since", "2h"],
        ["runs", "stats", "--status", "error"],
    ):
        assert vars(build_parser(argv).parse_args(argv)) == vars(whole.parse_args(argv)), argv


# -- help width --------------------------------------------------------------------------


@pytest.fixture
def tty_stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's original stdout is a real terminal (a pty) 123 columns wide."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
    stream = os.fdopen(follower, "w")
    monkeypatch.setattr(sys, "__stdout__", stream)
    yield
    stream.close()
    os.close(leader)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [("60", 60), ("1", 1), ("0", 123), ("-5", 123), ("wide", 123), (None, 123)],
)
@pytest.mark.usefixtures("tty_stdout")
def test_terminal_columns_from_env_else_the_terminal(
    monkeypatch: pytest.MonkeyPatch, columns: str | None, expected: int
) -> None:
    """A positive $COLUMNS wins; else the width of the terminal on stdout."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli_module._terminal_columns() == expected


@pytest.mark.parametrize("stdout", ["none", "file", "closed"])
def test_terminal_columns_default_to_80(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stdout: str
) -> None:
    """No usable $COLUMNS and no terminal (none, a file, a closed stream): 80."""
    monkeypatch.setenv("COLUMNS", "x")
    stream = None if stdout == "none" else open(tmp_path / "out.txt", "w")  # noqa: SIM115
    if stream is not None and stdout == "closed":
        stream.close()
    monkeypatch.setattr(sys, "__stdout__", stream)
    try:
        assert cli_module._terminal_columns() == 80
    finally:
        if stream is not None:
            stream.close()


@pytest.mark.usefixtures("tty_stdout")
def test_help_wraps_at_the_terminal_width(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Help text fills the terminal's width less two columns, as argparse's own."""
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = cli(capsys, "report", "--help")
    assert code == 0
    widths = [len(line) for line in out.splitlines()]
    assert max(widths) <= 121
    assert max(widths) >= 110
    formatter = cli_module._TerminalWidth("prog")
    assert formatter._width == 121
    assert formatter._max_help_position == 24
    assert formatter._indent_increment == 2
    assert cli_module._TerminalWidth("prog", width=50)._width == 50


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("plain", "exectrack: plain\n"),
        ("two\nlines  and\ttabs ", "exectrack: two lines and tabs\n"),
        ("", "exectrack: error\n"),
        (" \n ", "exectrack: error\n"),
        (
            "cannot open postgresql://app:hunter2@db.example/runs",
            "exectrack: cannot open postgresql://app:***@db.example/runs\n",
        ),
    ],
)
def test_error_is_one_redacted_line(
    capsys: pytest.CaptureFixture[str], message: str, line: str
) -> None:
    """_error collapses whitespace, masks passwords, never prints an empty message."""
    assert cli_module._error(message) == 1
    assert capsys.readouterr() == ("", line)


def test_missing_driver_is_one_line_naming_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL URL without psycopg installed: one line naming the extra, no password."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    code, out, err = cli(
        capsys, "--database", "postgresql://app:pw-123@127.0.0.1:1/db", "runs", "list"
    )
    assert (code, out) == (1, "")
    assert err == (
        "exectrack: the PostgreSQL store needs psycopg 3 and psycopg_pool: "
        "pip install 'exectrack[postgres]'\n"
    )


def test_a_database_removed_after_migrate_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A database file that is gone: reads and reap say where they looked; exit 1."""
    path = tmp_path / "gone.db"
    assert cli(capsys, "--database", str(path), "migrate")[0] == 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for command in (["runs", "list"], ["reap"], ["report"]):
        code, out, err = cli(capsys, "--database", str(path), *command)
        assert (code, out) == (1, "")
        assert err == (
            f"exectrack: no database at {path} (check --database or EXECTRACK_DATABASE_URL; "
            "`exectrack migrate` creates it)\n"
        )
    assert not path.exists()


def test_an_in_memory_database_is_opened_not_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """sqlite:///:memory: has no file to check: the read opens it and finds no schema."""
    code, out, err = cli(capsys, "--database", "sqlite:///:memory:", "runs", "list")
    assert (code, out) == (1, "")
    assert err == (
        "exectrack: database sqlite:///:memory: has no exectrack schema; run `exectrack migrate`\n"
    )
    code, out, _ = cli(capsys, "--database", "sqlite:///:memory:", "migrate", "--json")
    assert code == 0
    assert json.loads(out)["version"] == LATEST_VERSION


def test_default_database_is_created_only_by_migrate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without --database or the env: reads refuse the missing default file, migrate makes it."""
    default = tmp_path / "xdg" / "exectrack" / "runs.db"
    code, out, err = cli(capsys, "runs", "list")
    assert_one_error_line(code, out, err, f"no database at {default}")
    assert cli(capsys, "migrate")[0] == 0
    assert cli(capsys, "runs", "list") == (0, "no runs match\n", "")


def test_an_unreachable_postgres_server_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL server that refuses connections: exit 1 and an exectrack line that
    names the URL (the pool's own log record aside)."""
    if not os.environ.get("EXECTRACK_TEST_POSTGRES_URL"):
        pytest.skip("EXECTRACK_TEST_POSTGRES_URL not set")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://postgres:pw-123@127.0.0.1:{port}/test?connect_timeout=1&pool_timeout=1"
    code, out, err = cli(capsys, "--database", url, "runs", "list")
    assert (code, out) == (1, "")
    [line] = [line for line in err.splitlines() if line.startswith("exectrack: ")]
    assert f"127.0.0.1:{port}/test" in line
    assert "pw-123" not in err


def test_interrupt_is_one_line_and_exit_130(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (SIGINT) while the command prints: `exectrack: interrupted`, exit 130."""

    class InterruptedStdout(io.StringIO):
        def write(self, text: str) -> int:
            signal.raise_signal(signal.SIGINT)
            return super().write(text)

    monkeypatch.setattr(signal, "SIGINT", signal.SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(sys, "stdout", InterruptedStdout())
        code = main(["--database", seeded.url, "runs", "list"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    assert capsys.readouterr().err == "exectrack: interrupted\n"


def test_a_reader_gone_is_exit_1_and_stdout_is_silenced(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`exectrack runs list | head`: a closed pipe exits 1 without a trace, and what is
    left to print goes nowhere (stdout now writes to the null device)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        code = main(["--database", seeded.url, "runs", "list"])
        assert code == 1
        stdout.write("more\n" * 1000)
        stdout.flush()  # would raise BrokenPipeError without the null device
    finally:
        stdout.close()
    assert capsys.readouterr().err == ""


def test_a_command_without_store_opens_no_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Checking a task file needs no database: an unusable URL is never opened, and the
    handler's exit code is the command's."""
    tasks = tmp_path / "tasks.toml"
    tasks.write_text('[[tasks]]\nid = "t"\ntarget = "json:dumps"\ninterval = "1h"\n')
    code, out, err = cli(
        capsys, "--database", "mysql://nowhere/db", "heartbeat", "check", "--json", str(tasks)
    )
    assert (code, err) == (0, "")
    assert [t["id"] for t in json.loads(out)["tasks"]] == ["t"]
    tasks.write_text("")
    code, out, err = cli(
        capsys, "--database", "mysql://nowhere/db", "heartbeat", "check", str(tasks)
    )
    assert (code, out) == (1, "")
    assert (
        err == "exectrack: tasks.toml: field 'tasks': no tasks: add at least one [[tasks]] table\n"
    )


class _GoneReader(io.StringIO):
    """A stdout whose reader went away and whose descriptor cannot be replaced."""

    def __init__(self, fileno: str) -> None:
        super().__init__()
        self._how = fileno

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        if self._how == "closed":
            raise ValueError("I/O operation on closed file")
        if self._how == "bad":
            return 2**20  # no such descriptor: dup2 fails with EBADF
        raise AttributeError("fileno")


@pytest.mark.parametrize("fileno", ["closed", "bad", "missing"])
def test_a_reader_gone_from_an_odd_stdout_is_still_exit_1(
    capsys: pytest.CaptureFixture[str],
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    fileno: str,
) -> None:
    """When stdout cannot be pointed at the null device (closed, a bad descriptor, no
    descriptor at all) the closed pipe is still exit 1, silently."""
    monkeypatch.setattr(sys, "stdout", _GoneReader(fileno))
    assert main(["--database", seeded.url, "runs", "list"]) == 1
    assert capsys.readouterr().err == ""


def test_repeated_source_and_status_mean_any_of_them(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """--source and --status may be given twice: a run matching either is listed."""
    assert listed(capsys, seeded, "--source", "chat", "--source", "heartbeat") == [
        "chat2",
        "task8",
        "task7",
        "chat1",
    ]
    assert listed(capsys, seeded, "--status", "queued", "--status", "error") == [
        "search2",
        "search1",
    ]


def test_migrate_on_an_up_to_date_database_says_so(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """`migrate` with nothing to apply prints one exact line."""
    assert cli(capsys, "--database", seeded.url, "migrate") == (
        0,
        f"the schema is up to date at version {LATEST_VERSION}\n",
        "",
    )


def test_main_reads_the_command_from_the_words_after_the_program(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main() finds the command after the program name: in `exectrack --database migrate
    reap` (a database file named `migrate`) the command is reap."""
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "--database", "migrate", "migrate")[0] == 0
    monkeypatch.setattr(sys, "argv", ["exectrack", "--database", "migrate", "reap", "--json"])
    code = main()
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out) == {"dry_run": False, "reaped": []}


def test_parsed_namespace_names_the_command_and_action() -> None:
    """build_parser (public) puts the command and the action in `command` and `action`."""
    args = build_parser().parse_args(["runs", "list", "--limit", "3"])
    assert (args.command, args.action, args.limit) == ("runs", "list", 3)
    assert build_parser(["reap"]).parse_args(["reap"]).command == "reap"


@pytest.mark.usefixtures("columns")
def test_top_level_help_keeps_its_description_and_examples_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The top-level help prints the description and the examples line for line."""
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    assert (
        "\n\nInspect the runs exectrack recorded: list them with filters, show one, count them,\n"
        "report hang rates, finish abandoned runs, and migrate the database schema.\n\n"
        "The database is --database URL, else EXECTRACK_DATABASE_URL, else a file in your\n"
        "data directory. URLs: sqlite:///relative.db, sqlite:////absolute/path.db, or a path.\n\n"
    ) in out
    assert out.endswith(
        "\nexamples:\n  exectrack runs list --source skill --status error --since 2h\n"
        "  exectrack runs list --json --limit 200 | jq '.runs[].id'\n"
        "  exectrack runs get 0190c3a2-...\n"
        "  exectrack runs latest --source heartbeat --ref nightly-report\n"
        "  exectrack runs stats --since 7d\n  exectrack runs tail --json\n"
        "  exectrack serve --port 8000\n  exectrack --database sqlite:///runs.db migrate\n"
        "  exectrack reap --dry-run\n  exectrack report --since 24h\n"
        "  exectrack heartbeat run tasks.toml\n"
        "  exectrack legacy check --tasks tasks.toml --since 7d\n"
    )


def test_an_error_without_a_message_is_named_by_its_type(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exectrack error with an empty message prints its class name. No real path
    raises one today, so the query fails on purpose here (fault injection)."""

    def fail(*args: object, **kwargs: object) -> None:
        raise SchemaError()

    monkeypatch.setattr(query, "run_stats", fail)
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "stats")
    assert (code, out, err) == (1, "", "exectrack: SchemaError\n")


@pytest.mark.usefixtures("columns")
def test_legacy_check_help_explains_times_as_the_other_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`legacy check --help` gets the same time help as `runs list`."""
    code, out, _ = cli(capsys, "legacy", "check", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert (
        "--since TIME window start: ISO 8601 (2026-11-25T10:00:00Z; no zone means UTC) "
        "or an age: 30s, 15m, 2h, 7d, 1w"
    ) in text

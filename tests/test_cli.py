"""The exectrack CLI: runs list/get/latest/stats and migrate over real SQLite files."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exectrack import ExecutionTracker, FakeClock
from exectrack.cli import main
from exectrack.stores.sqlite import MIGRATIONS

LATEST_VERSION = MIGRATIONS[-1].version
ORDER = ["search2", "chat2", "task8", "task7", "summarize", "search1", "chat1"]  # newest first


@dataclass(frozen=True)
class Seeded:
    """A database with one run of every status, one minute apart (``m0`` .. ``m6``)."""

    url: str
    path: Path
    base: datetime
    ids: dict[str, str]

    def iso(self, minute: int) -> str:
        return (self.base + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def names(self, ids: list[str]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[i] for i in ids]


def _seed(url: str, path: Path) -> Seeded:
    """Record seven runs through a real tracker on a fake clock, then close it."""
    base = (datetime.now(UTC) - timedelta(days=3)).replace(second=0, microsecond=0)
    clock = FakeClock(base)
    ids: dict[str, str] = {}

    def at(minute: int) -> None:
        clock.advance(base + timedelta(minutes=minute) - clock.now())

    with ExecutionTracker(url, strict=True, clock=clock) as t:
        h = t.start("chat", "turn-1", session_id="s-1", metadata={"model": "small"})
        ids["chat1"] = h.id
        clock.advance(1.5)
        h.finish_success(metadata={"tokens": 42})

        at(1)
        h = t.start("skill", "search", session_id="s-1", parent_id=ids["chat1"])
        ids["search1"] = h.id
        clock.advance(0.25)
        h.finish_error(code="rate_limited", message="provider said slow down", retryable=True)

        at(2)
        h = t.start("skill", "summarize", session_id="s-2")
        ids["summarize"] = h.id
        clock.advance(2)
        h.finish_success()

        at(3)
        h = t.start("heartbeat", "task-7")
        ids["task7"] = h.id
        clock.advance(90)
        h.finish_with_status("timeout", error_code="deadline_exceeded", error_message="too long")

        at(4)
        h = t.start("heartbeat", "task-8")
        ids["task8"] = h.id
        h.finish_with_status("canceled", error_code="cancelled")

        at(5)
        ids["chat2"] = t.start("chat", "turn-2", session_id="s-2").id  # left running

        at(6)
        ids["search2"] = t.start("skill", "search", session_id="s-2", queued=True).id
    return Seeded(url=url, path=path, base=base, ids=ids)


@pytest.fixture
def seeded(db_url: str, tmp_path: Path) -> Seeded:
    return _seed(db_url, tmp_path / "runs.db")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listed(capsys: pytest.CaptureFixture[str], db: Seeded, *args: str) -> list[str]:
    """The names of the runs ``runs list --json`` prints for ``args``."""
    code, out, err = cli(capsys, "--database", db.url, "runs", "list", "--json", *args)
    assert (code, err) == (0, "")
    return db.names([r["id"] for r in json.loads(out)["runs"]])


def assert_one_error_line(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 1
    assert out == ""
    assert err.startswith("exectrack: ")
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err


# -- runs list ---------------------------------------------------------------------------


def test_list_json_prints_every_run_newest_first(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """--json prints {"runs", "next_cursor"} with all runs newest first and Z timestamps."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "list", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == {"runs", "next_cursor"}
    assert data["next_cursor"] is None
    assert seeded.names([r["id"] for r in data["runs"]]) == ORDER
    first = data["runs"][-1]
    assert first["started_at"] == seeded.iso(0)
    assert first["finished_at"].endswith("Z")
    assert first["metadata"] == {"model": "small", "tokens": 42}
    for run in data["runs"]:
        for key in ("started_at", "finished_at", "updated_at", "heartbeat_at"):
            assert run[key] is None or run[key].endswith("Z")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--source", "skill"], ["search2", "summarize", "search1"]),
        (["--source", "chat", "--source", "heartbeat"], ["chat2", "task8", "task7", "chat1"]),
        (["--status", "error"], ["search1"]),
        (["--status", "queued", "--status", "running"], ["search2", "chat2"]),
        (["--session", "s-1"], ["search1", "chat1"]),
        (["--ref", "search"], ["search2", "search1"]),
        (["--parent", "{chat1}"], ["search1"]),
        (["--since", "{m4}"], ["search2", "chat2", "task8"]),
        (["--until", "{m1}"], ["chat1"]),
        (["--since", "{m4naive}"], ["search2", "chat2", "task8"]),
        (["--since", "4d"], ORDER),
        (["--since", "2d"], []),
        (["--until", "48h"], ORDER),
        (["--search", "SLOW"], ["search1"]),
        (["--search", "task-"], ["task8", "task7"]),
        (["--source", "skill", "--session", "s-2"], ["search2", "summarize"]),
        (["--source", "skill", "--status", "success", "--since", "{m1}"], ["summarize"]),
        (["--source", "heartbeat", "--search", "too long"], ["task7"]),
        (
            ["--since", "{m2}", "--until", "{m5}", "--status", "timeout", "--status", "canceled"],
            ["task8", "task7"],
        ),
    ],
)
def test_list_filters(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, args: list[str], expected: list[str]
) -> None:
    """Each filter alone and combined selects exactly the matching runs, newest first."""
    values = {
        "chat1": seeded.ids["chat1"],
        "m1": seeded.iso(1),
        "m2": seeded.iso(2),
        "m4": seeded.iso(4),
        "m5": seeded.iso(5),
        "m4naive": seeded.iso(4).removesuffix("Z"),
    }
    assert listed(capsys, seeded, *(a.format(**values) for a in args)) == expected


def test_list_table_shows_aligned_rows(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """The default output is a header and one aligned row per run with UTC seconds."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "list")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert " ".join(header.split()) == "ID STARTED (UTC) SOURCE REF STATUS DURATION ERROR_CODE"
    assert len(rows) == len(ORDER)
    for word in ("STARTED", "SOURCE", "REF", "STATUS", "ERROR_CODE"):  # left-aligned
        start = header.index(word)
        assert all(row[start - 1] == " " and row[start] != " " for row in rows), word
    end = header.index("DURATION") + len("DURATION")  # right-aligned
    assert all(row[end - 1] != " " and row[end] == " " for row in rows)
    by_name = dict(zip(ORDER, rows, strict=True))
    assert all(by_name[name].startswith(seeded.ids[name] + " ") for name in ORDER)
    cells = {name: " ".join(row.split()[1:]) for name, row in by_name.items()}
    assert cells["chat1"] == f"{seeded.iso(0)} chat turn-1 success 1.5s -"
    assert cells["search1"] == f"{seeded.iso(1)} skill search error 250ms rate_limited"
    assert cells["task7"] == f"{seeded.iso(3)} heartbeat task-7 timeout 1m30s deadline_exceeded"
    assert cells["task8"] == f"{seeded.iso(4)} heartbeat task-8 canceled 0ms cancelled"
    assert cells["chat2"] == f"{seeded.iso(5)} chat turn-2 running - -"
    assert cells["search2"] == f"{seeded.iso(6)} skill search queued - -"
    assert "--cursor" not in out


def test_table_times_do_not_depend_on_the_local_timezone(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a far-off local zone the table still shows UTC times ending in Z."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    try:
        code, out, _ = cli(capsys, "--database", seeded.url, "runs", "list", "--source", "chat")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert code == 0
    assert seeded.iso(0) in out
    assert seeded.iso(5) in out


def test_table_escapes_control_characters(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """A stored ref with a newline or terminal escape cannot break a row or the terminal."""
    with ExecutionTracker(db_url, strict=True) as t:
        t.start("skill", "evil\x1b[31m\nref").finish_success()
    code, out, _ = cli(capsys, "--database", db_url, "runs", "list")
    assert code == 0
    assert "\x1b" not in out
    assert len(out.splitlines()) == 2
    assert "evil\\x1b[31m\\nref" in out


def test_list_without_matches_says_so(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """An empty result is one readable line (table) or an empty list (--json)."""
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "list", "--source", "nope")
    assert (code, out) == (0, "no runs match\n")
    assert listed(capsys, seeded, "--source", "nope") == []


def test_database_option_also_works_after_the_command(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """--database is accepted after `runs list` as well as before the command."""
    code, out, _ = cli(capsys, "runs", "list", "--json", "--database", seeded.url)
    assert code == 0
    assert len(json.loads(out)["runs"]) == len(ORDER)


# -- paging ------------------------------------------------------------------------------


@pytest.fixture
def many(db_url: str) -> list[str]:
    """23 runs, three per timestamp (so ties are broken by id); ids newest first."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    ids = []
    with ExecutionTracker(db_url, strict=True, clock=clock) as t:
        for i in range(23):
            if i % 3 == 0:
                clock.advance(1)
            h = t.start("skill", f"ref-{i}")
            h.finish_success()
            ids.append(h.id)
    return ids[::-1]


@pytest.mark.parametrize("limit", [1, 5, 22, 23, 50])
def test_json_paging_covers_every_run_once(
    capsys: pytest.CaptureFixture[str], db_url: str, many: list[str], limit: int
) -> None:
    """Following next_cursor visits every run exactly once, in order, then stops."""
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        extra = [] if cursor is None else ["--cursor", cursor]
        args = ["--database", db_url, "runs", "list", "--json", "--limit", str(limit)]
        code, out, _ = cli(capsys, *args, *extra)
        assert code == 0
        page = json.loads(out)
        assert 1 <= len(page["runs"]) <= limit
        seen += [r["id"] for r in page["runs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == many
    assert pages == -(-len(many) // limit)


def test_table_paging_prints_the_cursor_to_pass(
    capsys: pytest.CaptureFixture[str], db_url: str, many: list[str]
) -> None:
    """The table's last line names the exact --cursor; following it reaches every run."""
    seen: list[str] = []
    extra: list[str] = []
    while True:
        code, out, _ = cli(capsys, "--database", db_url, "runs", "list", "--limit", "10", *extra)
        assert code == 0
        lines = out.splitlines()
        match = re.search(r"--cursor (\S+)", lines[-1])
        rows = lines[1:-1] if match else lines[1:]
        seen += [row.split()[0] for row in rows]
        if match is None:
            break
        extra = ["--cursor", match.group(1)]
    assert seen == many


# -- get, latest, stats ------------------------------------------------------------------


def test_get_prints_every_field_and_pretty_metadata(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """`runs get ID` lists key: value lines with the metadata as indented JSON."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "get", seeded.ids["chat1"])
    assert (code, err) == (0, "")
    head, _, _ = out.partition("metadata:")
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in head.splitlines())
    assert fields["id"] == seeded.ids["chat1"]
    assert fields["status"] == "success"
    assert fields["source_ref"] == "turn-1"
    assert fields["started_at"] == seeded.iso(0)
    assert fields["duration_ms"] == "1500.000 (1.5s)"
    assert fields["parent_id"] == "-"
    assert "metadata:\n  {\n" in out
    assert '    "model": "small",\n' in out
    assert '    "tokens": 42\n' in out


def test_get_json_round_trips_the_run(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """`runs get ID --json` prints the run's to_dict, with UTC Z timestamps."""
    run_id = seeded.ids["search1"]
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "get", run_id, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["id"] == run_id
    assert data["parent_id"] == seeded.ids["chat1"]
    assert (data["status"], data["error_code"], data["retryable"]) == (
        "error",
        "rate_limited",
        True,
    )
    assert data["error_message"] == "provider said slow down"
    assert data["started_at"] == seeded.iso(1)


@pytest.mark.parametrize("as_json", [False, True])
def test_get_unknown_id_is_one_error_line(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, as_json: bool
) -> None:
    """An unknown id prints `exectrack: no run with id ...` on stderr and exits 1."""
    args = ["--database", seeded.url, "runs", "get", "no-such-run"] + (
        ["--json"] if as_json else []
    )
    code, out, err = cli(capsys, *args)
    assert_one_error_line(code, out, err)
    assert err == "exectrack: no run with id no-such-run\n"


def test_latest_shows_the_newest_matching_run(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """`runs latest` with filters shows the newest match, like `runs get`."""
    code, out, _ = cli(
        capsys, "--database", seeded.url, "runs", "latest", "--source", "heartbeat", "--json"
    )
    assert code == 0
    assert json.loads(out)["id"] == seeded.ids["task8"]
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "latest", "--status", "error")
    assert code == 0
    assert out.startswith("id:")
    assert seeded.ids["search1"] in out.splitlines()[0]
    assert "rate_limited" in out


def test_latest_without_match_is_one_error_line(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """`runs latest` exits 1 with one stderr line when no run matches."""
    code, out, err = cli(capsys, "--database", seeded.url, "runs", "latest", "--ref", "nothing")
    assert_one_error_line(code, out, err, "no run matches")


def test_stats_json_counts_by_status_and_source(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """`runs stats --json` counts the matching runs by status and by source."""
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "stats", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["total"] == 7
    assert stats["open"] == 2
    assert stats["by_status"] == {
        "queued": 1,
        "running": 1,
        "success": 2,
        "error": 1,
        "canceled": 1,
        "timeout": 1,
    }
    assert stats["by_source"]["heartbeat"] == {"canceled": 1, "timeout": 1}
    assert stats["error_rate"] == pytest.approx(2 / 5)

    code, out, _ = cli(
        capsys, "--database", seeded.url, "runs", "stats", "--json", "--source", "skill"
    )
    assert code == 0
    assert json.loads(out)["total"] == 3


def test_stats_table(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    """`runs stats` prints the totals, a status table and a per-source table."""
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "stats", "--since", "4d")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "runs: 7  open: 2  error rate: 40.0%"
    assert lines[3].split() == ["queued", "1"]
    assert lines[5].split() == ["success", "2"]
    header = next(line for line in lines if line.startswith("SOURCE"))
    assert header.split()[:3] == ["SOURCE", "TOTAL", "QUEUED"]
    skill = next(line for line in lines if line.startswith("skill"))
    assert skill.split() == ["skill", "3", "1", "0", "1", "1", "0", "0"]


# -- migrate -----------------------------------------------------------------------------


def test_migrate_applies_then_reports_up_to_date(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`migrate` creates the schema once, then says it is up to date at version N."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out, _ = cli(capsys, "--database", url, "migrate", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["applied"] == [m.version for m in MIGRATIONS]
    assert data["version"] == LATEST_VERSION
    code, out, _ = cli(capsys, "--database", url, "migrate")
    assert (code, out) == (0, f"the schema is up to date at version {LATEST_VERSION}\n")
    code, out, _ = cli(capsys, "--database", url, "migrate", "--json")
    assert json.loads(out)["applied"] == []


def test_migrate_text_names_the_applied_versions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`migrate` on a new database prints the versions it applied."""
    code, out, _ = cli(capsys, "--database", str(tmp_path / "plain-path.db"), "migrate")
    assert code == 0
    assert out.startswith("applied migration(s) 1")
    assert out.endswith(f"the schema is now at version {LATEST_VERSION}\n")


def test_default_database_comes_from_env_then_data_dir(
    capsys: pytest.CaptureFixture[str],
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Without --database the CLI uses EXECTRACK_DATABASE_URL, else the data-dir file."""
    default = tmp_path / "xdg" / "exectrack" / "runs.db"
    assert not default.exists()
    code, _, _ = cli(capsys, "migrate")
    assert code == 0
    assert default.exists()

    monkeypatch.setenv("EXECTRACK_DATABASE_URL", seeded.url)
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert code == 0
    assert len(json.loads(out)["runs"]) == len(ORDER)


def test_database_option_beats_the_environment(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit --database wins over a (here unusable) EXECTRACK_DATABASE_URL."""
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", "mysql://nowhere/db")
    code, out, _ = cli(capsys, "--database", seeded.url, "runs", "stats", "--json")
    assert code == 0
    assert json.loads(out)["total"] == 7
    code, out, err = cli(capsys, "runs", "stats")
    assert_one_error_line(code, out, err, "unsupported database URL scheme 'mysql'")


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["runs", "list", "--status", "bogus"], "unknown run status 'bogus'"),
        (["runs", "stats", "--status", "success", "--status", "ok"], "unknown run status 'ok'"),
        (["runs", "latest", "--status", "RUNNING"], "unknown run status 'RUNNING'"),
        (["runs", "list", "--since", "yesterday"], "cannot read time 'yesterday'"),
        (["runs", "stats", "--until", "2026-13-45"], "cannot read time '2026-13-45'"),
        (["runs", "list", "--cursor", "not a cursor!"], "invalid cursor"),
        (["runs", "list", "--cursor", "bm9jb2xvbg"], "invalid cursor"),
        (["runs", "list", "--limit", "0"], "limit=0"),
        (["runs", "list", "--limit", "1001"], "limit=1001"),
        (["runs", "list", "--source", "Bad Source"], "invalid source 'Bad Source'"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, args: list[str], needle: str
) -> None:
    """A bad status, time, cursor, limit or source prints one stderr line and exits 1."""
    code, out, err = cli(capsys, "--database", seeded.url, *args)
    assert_one_error_line(code, out, err, needle)


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list", "--limit", "many"],
        ["runs", "list", "--bogus"],
        ["runs", "get"],
        ["runs"],
        [],
        ["frobnicate"],
    ],
)
def test_usage_errors_keep_argparse_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """Malformed command lines exit 2 with argparse's usage message, no traceback."""
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert "usage: exectrack" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://user:s3cret-pw@db.example/runs", "unsupported database URL scheme"),
        ("sqlite://somehost/runs.db", "has a host part"),
        ("sqlite:///runs.db?journal=wal", "unknown sqlite URL option"),
        ("", "empty database URL"),
    ],
)
def test_bad_database_url_is_one_error_line(
    capsys: pytest.CaptureFixture[str], url: str, needle: str
) -> None:
    """An unusable database URL exits 1 with one line, and never echoes a password."""
    code, out, err = cli(capsys, "--database", url, "runs", "list")
    assert_one_error_line(code, out, err, needle)
    assert "s3cret" not in err


def test_bad_database_url_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad EXECTRACK_DATABASE_URL is reported like a bad --database."""
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", "redis://localhost/0")
    code, out, err = cli(capsys, "migrate")
    assert_one_error_line(code, out, err, "unsupported database URL scheme 'redis'")


def test_reading_a_missing_database_fails_without_creating_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Read commands on a path with no database exit 1 and leave no file behind."""
    missing = tmp_path / "typo" / "runs.db"
    for command in (["list"], ["stats"], ["latest"], ["get", "x"]):
        code, out, err = cli(capsys, "--database", f"sqlite:///{missing}", "runs", *command)
        assert_one_error_line(code, out, err, "no database at", "exectrack migrate")
    assert not missing.parent.exists()


def test_a_file_that_is_not_a_database_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A store failure (here: not a SQLite file) exits 1 with one line, no traceback."""
    junk = tmp_path / "notes.txt"
    junk.write_text("these are not the runs you are looking for\n" * 100)
    code, out, err = cli(capsys, "--database", str(junk), "runs", "list")
    assert_one_error_line(code, out, err)


def test_schema_too_new_is_one_error_line(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """A database migrated by a newer exectrack is refused by reads and by migrate."""
    with sqlite3.connect(seeded.path) as conn:
        conn.execute(
            "INSERT INTO exectrack_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (LATEST_VERSION + 98, "from the future", "2099-01-01T00:00:00+00:00"),
        )
    conn.close()
    for args in (["runs", "list"], ["runs", "stats", "--json"], ["migrate"]):
        code, out, err = cli(capsys, "--database", seeded.url, *args)
        assert_one_error_line(
            code, out, err, f"schema version {LATEST_VERSION + 98}", "upgrade exectrack"
        )


def test_library_warnings_reach_stderr_and_handlers_are_removed(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI routes library log records to stderr and leaves logging as it found it."""
    monkeypatch.delenv("EXECTRACK_STRICT")
    monkeypatch.setenv("EXECTRACK_ENABLED", "maybe")
    monkeypatch.setenv("EXECTRACK_DATABASE_URL", seeded.url)
    logger = logging.getLogger("exectrack")
    before = (list(logger.handlers), logger.level)
    code, out, err = cli(capsys, "runs", "list", "--json")
    assert code == 0
    assert json.loads(out)["runs"]
    assert "WARNING exectrack._config: ignoring EXECTRACK_ENABLED='maybe'" in err
    assert (list(logger.handlers), logger.level) == before


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["runs"],
        ["runs", "list"],
        ["runs", "get"],
        ["runs", "latest"],
        ["runs", "stats"],
        ["migrate"],
    ],
)
def test_help_everywhere(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """`--help` works on every command, exits 0 and describes it."""
    code, out, _ = cli(capsys, *args, "--help")
    assert code == 0
    assert out.startswith(f"usage: exectrack {' '.join(args)}".rstrip())
    assert "--database URL" in out
    if args and args != ["runs"]:
        assert "--json" in out


# -- the installed entry point -----------------------------------------------------------


def _commands() -> Iterator[Any]:
    script = shutil.which("exectrack", path=str(Path(sys.executable).parent))
    yield pytest.param(
        [script] if script else None,
        id="console-script",
        marks=pytest.mark.skipif(script is None, reason="console script not installed"),
    )
    yield pytest.param([sys.executable, "-m", "exectrack.cli"], id="python-m")


@pytest.mark.parametrize("command", list(_commands()))
def test_entry_point_in_a_subprocess(command: list[str], seeded: Seeded, tmp_path: Path) -> None:
    """The installed command runs, prints JSON, and reports bad arguments without a trace."""
    env = {**os.environ, "TZ": "America/St_Johns"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    ok = run("--database", seeded.url, "runs", "list", "--json", "--limit", "3")
    assert (ok.returncode, ok.stderr) == (0, "")
    page = json.loads(ok.stdout)
    assert seeded.names([r["id"] for r in page["runs"]]) == ORDER[:3]
    assert page["next_cursor"]

    table = run("--database", seeded.url, "runs", "list", "--source", "chat")
    assert table.returncode == 0
    assert seeded.iso(0) in table.stdout  # UTC, whatever the local zone

    bad = run("--database", seeded.url, "runs", "list", "--status", "bogus")
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("exectrack: unknown run status 'bogus'")

    usage = run("runs", "list", "--limit", "lots")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr
    assert "invalid int value: 'lots'" in usage.stderr


# -- reap and report --------------------------------------------------------------------


def test_reap_dry_run_then_reap_then_nothing(
    capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    """`reap --dry-run` shows what `reap` then finishes; a second reap finds nothing."""
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))  # runs started an hour ago
    t = ExecutionTracker(
        db_url, strict=True, durability="sync", owner="elsewhere:7:x", clock=clock, lease=None
    )
    overdue = t.start("heartbeat", "nightly", deadline=60)
    fresh = t.start("heartbeat", "hourly", deadline=7200)
    t.close()
    code, out, _ = cli(capsys, "--database", db_url, "reap", "--dry-run")
    assert code == 0 and "would finish 1 run(s)" in out and overdue.id in out
    assert fresh.id not in out
    code, out, _ = cli(capsys, "--database", db_url, "reap")
    assert code == 0 and "finished 1 run(s)" in out
    assert re.search(rf"{overdue.id}\s+heartbeat\s+nightly\s+timeout\s+deadline_exceeded", out)
    code, out, _ = cli(capsys, "--database", db_url, "reap", "--json")
    assert code == 0 and json.loads(out) == {"dry_run": False, "reaped": []}
    code, out, _ = cli(capsys, "--database", db_url, "reap")
    assert "nothing to reap" in out


def test_report_table_and_json(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    """`report` prints one row per source with its hang rate; --json has the figures."""
    t = ExecutionTracker(db_url, strict=True, durability="sync")
    for i in range(4):
        h = t.start("skill", f"s{i}")
        if i:
            h.finish_error(code="rate_limited", message="slow down")
    t.close()
    code, out, _ = cli(capsys, "--database", db_url, "report", "--since", "1h")
    assert code == 0
    assert "HANG_RATE" in out and "rate_limited=3" in out
    assert re.search(r"^skill\s+4\s+0\s+3\s+0\s+0\s+1\s+0\s+0\s+0\.00%", out, re.MULTILINE)
    code, out, _ = cli(capsys, "--database", db_url, "report", "--json")
    data = json.loads(out)
    [skill] = data["sources"]
    assert (skill["started"], skill["open"], skill["hang_rate"]) == (4, 1, 0.0)
    assert skill["top_errors"] == [{"code": "rate_limited", "count": 3}]
    assert data["since"] is None and data["now"].endswith("Z")

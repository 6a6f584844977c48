"""`exectrack demo`: the README's first command, as a newcomer runs it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}


def _outcomes(db: Path) -> dict[str, set[str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT source, status FROM runs").fetchall()
    out: dict[str, set[str]] = {}
    for source, status in rows:
        out.setdefault(source, set()).add(status)
    return out


@pytest.mark.slow
def test_demo_for_20_seconds_shows_every_source_and_outcome(tmp_path: Path) -> None:
    """On a fresh database, 20 seconds of the demo leave chat, skill and heartbeat
    runs that ended success, error, canceled and timeout (heartbeat tasks among them
    a timeout and an overlap skip), none left open; the demo says where it serves
    and where the runs are."""
    db = tmp_path / "demo.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exectrack.cli",
            "--database",
            f"sqlite:///{db}",
            "demo",
            "--port",
            "0",
            "--duration",
            "20",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "the agent host is at http://127.0.0.1:" in proc.stdout
    assert f"runs are stored in sqlite:///{db}" in proc.stdout
    outcomes = _outcomes(db)
    assert {"chat", "skill", "heartbeat"} <= set(outcomes)
    every = set().union(*outcomes.values())
    assert {"success", "error", "canceled", "timeout"} <= every
    assert not every & {"running", "queued"}
    assert "Traceback" not in proc.stderr
    with sqlite3.connect(db) as conn:
        heartbeat = set(
            conn.execute("SELECT status, error_code FROM runs WHERE source = 'heartbeat'")
        )
    assert {("success", None), ("timeout", "deadline_exceeded")} <= heartbeat
    assert ("canceled", "skipped_overlap") in heartbeat
    with sqlite3.connect(db) as conn:
        chat = set(conn.execute("SELECT status, error_code FROM runs WHERE source = 'chat'"))
    assert ("canceled", "client_disconnected") in chat  # the user who hangs up


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """Ctrl-C while users are chatting: exit 130, no traceback, no run left open, and
    the page and the chat endpoint were served before."""
    db = tmp_path / "demo.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exectrack.cli",
            "--database",
            f"sqlite:///{db}",
            "demo",
            "--port",
            "0",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "the agent host is at " in first, first
        url = first.split(" is at ", 1)[1].strip()
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "exectrack demo agent" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        answer = httpx.post(
            url + "api/chat", json={"message": "add 2 and 3", "session_id": "t"}, timeout=30
        )
        assert answer.status_code == 200 and "[" in answer.text  # tool lines, then the answer
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    statuses = set().union(*_outcomes(db).values())
    assert statuses and not statuses & {"running", "queued"}

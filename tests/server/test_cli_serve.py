"""``exectrack serve`` and ``exectrack runs tail`` as real processes: the URL printed,
the API served, a non-loopback bind refused without a token, SIGTERM with a live
stream attached, and Ctrl-C ending ``tail`` with 130."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exectrack import RunStatus, query
from exectrack._model import now_us
from exectrack.stores import FinishRun, open_store

from .conftest import add_run

EXE = [sys.executable, "-m", "exectrack.cli"]


class Proc:
    """A child process whose stdout lines are read in a thread (no blocking reads)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            [*EXE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.p.kill()
            _, err = self.p.communicate()
            pytest.fail(f"no output line within {timeout} s; stderr: {err}")

    def stop(self, sig: int, timeout: float = 10) -> tuple[int, str]:
        self.p.send_signal(sig)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            pytest.fail(f"did not exit within {timeout} s of signal {sig}")
        assert self.p.stderr is not None
        return self.p.returncode, self.p.stderr.read()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}
    e["EXECTRACK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'runs.db'}"
    e["PYTHONUNBUFFERED"] = "1"
    return e


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait()


def served_url(proc: Proc) -> str:
    line = proc.line()
    assert line.startswith("exectrack serve: the runs panel is at http://"), line
    return line.rsplit(" ", 1)[1]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_serve_refuses_a_non_loopback_host_without_a_token(env: dict[str, str], host: str) -> None:
    r = subprocess.run(
        [*EXE, "serve", "--host", host], check=False, env=env, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("exectrack: refusing to serve on") and "token" in lines[0]
    assert not Path(env["EXECTRACK_DATABASE_URL"].removeprefix("sqlite:///")).exists()


def test_serve_prints_its_url_serves_and_stops_on_sigterm_with_a_stream_attached(
    env: dict[str, str], tmp_path: Path, procs: list[Proc]
) -> None:
    """The URL works, the database of EXECTRACK_DATABASE_URL is read, and SIGTERM
    ends the process promptly although an SSE client is still connected."""
    store = open_store(tmp_path / "runs.db")
    add_run(store, "r1", "skill")
    store.close()
    proc = Proc(["serve", "--port", "0"], env)
    procs.append(proc)
    url = served_url(proc)
    with httpx.Client(base_url=url, timeout=10) as client:
        assert [r["id"] for r in client.get("api/runs").json()["runs"]] == ["r1"]
        assert client.get("").headers["content-type"].startswith("text/html")
        with client.stream("GET", "api/runs/changes/stream") as response:
            assert response.status_code == 200
            next(response.iter_lines())  # the stream is live
            code, err = proc.stop(signal.SIGTERM)
    assert code in (0, -signal.SIGTERM), err
    assert "Traceback" not in err


def test_serve_with_a_token_on_any_address(env: dict[str, str], procs: list[Proc]) -> None:
    """0.0.0.0 is allowed with a token (here from EXECTRACK_TOKEN), which every request
    must then carry; Ctrl-C stops the server and exits 130."""
    proc = Proc(["serve", "--host", "0.0.0.0", "--port", "0"], {**env, "EXECTRACK_TOKEN": "tk"})
    procs.append(proc)
    port = served_url(proc).rsplit(":", 1)[1].rstrip("/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert client.get("/api/runs").status_code == 401
        assert client.get("/api/runs", headers={"Authorization": "Bearer tk"}).status_code == 200
    code, err = proc.stop(signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err


def test_tail_prints_a_line_per_change_and_exits_130_on_ctrl_c(
    env: dict[str, str], tmp_path: Path, procs: list[Proc]
) -> None:
    """Runs created and finished after the cursor appear, each change once, as JSON
    lines; runs from before it do not."""
    store = open_store(tmp_path / "runs.db")
    store.migrate()
    add_run(store, "before")
    head = query.changes_head(store)
    proc = Proc(["runs", "tail", "--json", "--interval", "0.05", "--after", head], env)
    procs.append(proc)
    try:
        add_run(store, "first", status=RunStatus.RUNNING)
        got = [json.loads(proc.line())]
        assert [(r["id"], r["status"]) for r in got] == [("first", "running")]
        store.finish(FinishRun("first", RunStatus.ERROR, now_us(), error_code="boom"))
        add_run(store, "second")
        got = [json.loads(proc.line()), json.loads(proc.line())]
        assert [(r["id"], r["status"]) for r in got] == [("first", "error"), ("second", "success")]
        assert got[0]["error_code"] == "boom"
    finally:
        store.close()
    code, err = proc.stop(signal.SIGINT)
    assert code == 130
    assert err.strip() == "exectrack: interrupted"


def test_tail_from_start_as_text(env: dict[str, str], tmp_path: Path, procs: list[Proc]) -> None:
    store = open_store(tmp_path / "runs.db")
    add_run(store, "r-old", "heartbeat", source_ref="inbox\x1b[31m")
    store.close()
    proc = Proc(["runs", "tail", "--from-start"], env)
    procs.append(proc)
    line = proc.line()
    assert "r-old" in line and "success" in line and "heartbeat" in line
    assert "\x1b" not in line  # stored text cannot drive the terminal
    code, _ = proc.stop(signal.SIGINT)
    assert code == 130


def test_tail_keeps_following_through_a_store_that_went_away(
    env: dict[str, str], tmp_path: Path, procs: list[Proc]
) -> None:
    """The database file moved away mid-tail: one line on stderr, no exit; moved back
    with a run added meanwhile, that run is printed, once, and so are later ones."""
    db = tmp_path / "runs.db"
    store = open_store(db)
    store.migrate()
    head = query.changes_head(store)
    proc = Proc(["runs", "tail", "--json", "--interval", "0.05", "--after", head], env)
    procs.append(proc)
    add_run(store, "first")
    store.close()
    assert json.loads(proc.line())["id"] == "first"  # following
    away = tmp_path / "away.db"
    db.rename(away)
    errors: queue.Queue[str] = queue.Queue()

    def read_errors() -> None:
        assert proc.p.stderr is not None
        for text in proc.p.stderr:
            errors.put(text)

    threading.Thread(target=read_errors, daemon=True).start()

    def error_line(part: str) -> str:
        while True:
            text = errors.get(timeout=20)
            if part in text:
                return text

    try:
        note = error_line("retrying")
        assert note.startswith("exectrack: "), note
        assert proc.p.poll() is None
        moved = open_store(away)
        add_run(moved, "meanwhile")
        moved.close()
        away.rename(db)
        assert json.loads(proc.line())["id"] == "meanwhile"
        assert error_line("answers again").startswith("exectrack: ")
        back = open_store(db)
        add_run(back, "after")
        back.close()
        assert json.loads(proc.line())["id"] == "after"
    finally:
        if away.exists():
            away.rename(db)
    code, _ = proc.stop(signal.SIGINT)
    assert code == 130
    assert not any("Traceback" in t for t in list(errors.queue))


def test_tail_refuses_a_bad_cursor(env: dict[str, str], tmp_path: Path) -> None:
    open_store(tmp_path / "runs.db").migrate()
    r = subprocess.run(
        [*EXE, "runs", "tail", "--after", "nope"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("exectrack: invalid change cursor")


def test_serve_on_a_port_in_use_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    """Exit 1 with one line, and no database created for nothing."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [*EXE, "serve", "--port", str(port)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
        )
    assert r.returncode == 1
    assert r.stderr.startswith(f"exectrack: cannot listen on 127.0.0.1:{port}:")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs.db").exists()

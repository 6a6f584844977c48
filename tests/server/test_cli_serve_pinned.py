"""``exectrack serve`` and ``exectrack runs tail`` run in the test's own process, so
every line of ``_cli_serve.py`` is reached by the tests that pin it: the exact lines
printed, a real uvicorn server on a free port stopped by a real SIGTERM or SIGINT sent
to this process, and the tail's polling, paging and retry rules, its pauses taken by a
fake ``time.sleep`` that also ends it with a real SIGINT."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from exectrack import RunStatus, query
from exectrack._cli_serve import _bind, is_loopback
from exectrack._model import datetime_to_us, now_us
from exectrack.cli import build_parser, main
from exectrack.errors import ConfigError
from exectrack.stores import FinishRun, NewRun, Store, open_store

from .conftest import add_run

WAIT = 20.0  # seconds a helper waits for the server before it gives up


class Pipe(io.TextIOBase):
    """stdout or stderr as a block-buffered pipe: the reader sees text only once it is
    flushed; ``chunks`` holds what each flush delivered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self.chunks: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.chunks.append("".join(self._pending))
                self._pending.clear()

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self.chunks.clear()

    def seen_chunks(self) -> list[str]:
        with self._lock:
            return list(self.chunks)

    def seen(self) -> str:
        """What a reader at the other end has received so far."""
        with self._lock:
            return "".join(self.chunks)

    def text(self) -> str:
        """Everything written, flushed or not."""
        with self._lock:
            return "".join(self.chunks) + "".join(self._pending)


@dataclass
class Io:
    out: Pipe
    err: Pipe

    def run(self, argv: list[str]) -> int:
        """``exectrack ARGV`` in this process, its stdout and stderr these pipes."""
        with contextlib.redirect_stdout(self.out), contextlib.redirect_stderr(self.err):
            return main(argv)


@pytest.fixture
def io_() -> Iterator[Io]:
    """The command's stdout and stderr; uvicorn's loggers (which it points at them)
    given back as they were."""
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield Io(Pipe(), Pipe())
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture
def signals() -> Iterator[list[int]]:
    """SIGINT raises KeyboardInterrupt (as in a terminal, whatever the test runner
    inherited) and SIGTERM goes to a host handler that records it; both given back."""
    seen: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    yield seen
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# -- serve, live ---------------------------------------------------------------------------


@dataclass
class Served:
    code: int = -1
    url: str = ""  # the URL the command printed
    shown: list[str] = field(default_factory=list)  # stdout's flushed chunks, while serving
    err: str = ""
    problems: list[str] = field(default_factory=list)  # what the helper thread found


def serve(
    io_: Io,
    argv: list[str],
    client: Callable[[str, Callable[[], None]], None],
    sig: int = signal.SIGTERM,
) -> Served:
    """``exectrack ARGV`` in this (the main) thread, as in a terminal; a helper thread
    waits for the URL line, calls ``client(url, stop)`` and then sends ``sig`` to this
    process (``stop()`` sends it earlier)."""
    served = Served()
    done, sent = threading.Event(), threading.Event()
    prefix = "exectrack serve: the runs panel is at "

    def stop() -> None:
        if not sent.is_set():
            sent.set()
            served.shown = io_.out.seen_chunks()
            os.kill(os.getpid(), sig)

    def helper() -> None:
        deadline = time.monotonic() + WAIT
        while not done.is_set():
            first = io_.out.seen().split("\n", 1)[0]
            if first.startswith(prefix):
                served.url = first.removeprefix(prefix)
                break
            if time.monotonic() > deadline:
                served.problems.append(f"no URL line within {WAIT} s: {io_.out.text()!r}")
                sent.set()
                os.kill(os.getpid(), signal.SIGTERM)  # stops uvicorn, else only recorded
                return
            time.sleep(0.01)
        else:
            return  # the command ended by itself
        try:
            client(served.url, stop)
        except BaseException as exc:  # reported by the test
            served.problems.append(f"client: {exc!r}")
        finally:
            stop()

    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    try:
        served.code = io_.run(argv)
    finally:
        done.set()
        thread.join(WAIT)
    served.err = io_.err.text()
    return served


def panel_lines(url: str, database: str, *, token: bool = False) -> list[str]:
    lines = [
        f"exectrack serve: the runs panel is at {url}\n",
        f"exectrack serve: reading {database}\n",
    ]
    if token:
        lines.append("exectrack serve: every request needs the token\n")
    return lines


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def test_serve_prints_its_url_creates_the_schema_and_stops_on_sigterm(
    io_: Io, signals: list[int], tmp_path: Path
) -> None:
    """A new database file is created with its schema; the URL line, then the database
    line, each flushed at once; API answers; SIGTERM ends it with one "stopped" line,
    exit 0, and the host's own SIGTERM handler gets the signal back."""
    db = tmp_path / "new" / "runs.db"
    seen: dict[str, object] = {}

    def client(url: str, stop: Callable[[], None]) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            seen["runs"] = c.get("api/runs").json()["runs"]
            seen["panel"] = c.get("").headers["content-type"]

    s = serve(io_, ["serve", "--database", sqlite_url(db), "--port", "0"], client)
    assert s.problems == []
    assert s.url.startswith("http://127.0.0.1:") and port_of(s.url) > 0
    assert s.url == f"http://127.0.0.1:{port_of(s.url)}/"
    assert s.shown == panel_lines(s.url, sqlite_url(db))
    assert seen["runs"] == []
    assert str(seen["panel"]).startswith("text/html")
    assert (s.code, s.err) == (0, "exectrack serve: stopped\n")
    assert io_.out.text() == "".join(s.shown)
    assert signals == [signal.SIGTERM]
    store = open_store(db, migrate=False)
    try:
        assert store.schema_version() > 0
    finally:
        store.close()


def test_serve_with_a_token_on_any_address_and_ctrl_c(
    io_: Io, signals: list[int], tmp_path: Path, store: Store
) -> None:
    """--token on 0.0.0.0: the URL names that address, a third line says a token is
    needed, a request without it gets 401, with it 200; Ctrl-C (SIGINT) exits 130 with
    "interrupted" and no "stopped" line."""
    db = tmp_path / "runs.db"
    add_run(store, "r1", "skill")
    got: dict[str, int] = {}

    def client(url: str, stop: Callable[[], None]) -> None:
        local = f"http://127.0.0.1:{port_of(url)}"
        with httpx.Client(base_url=local, timeout=10) as c:
            got["none"] = c.get("/api/runs").status_code
            got["wrong"] = c.get("/api/runs", headers={"Authorization": "Bearer no"}).status_code
            r = c.get("/api/runs", headers={"Authorization": "Bearer tk"})
            got["right"] = r.status_code
            got["runs"] = len(r.json()["runs"])

    argv = ["serve", "--host", "0.0.0.0", "--port", "0", "--token", "tk"]
    s = serve(io_, ["--database", sqlite_url(db), *argv], client, signal.SIGINT)
    assert s.problems == []
    assert s.url == f"http://0.0.0.0:{port_of(s.url)}/"
    assert s.shown == panel_lines(s.url, sqlite_url(db), token=True)
    assert got == {"none": 401, "wrong": 401, "right": 200, "runs": 1}
    assert (s.code, s.err) == (130, "exectrack: interrupted\n")
    assert signals == []


def test_serve_takes_the_token_from_the_environment(
    io_: Io, signals: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXECTRACK_TOKEN allows a non-loopback address and is required by every request."""
    monkeypatch.setenv("EXECTRACK_TOKEN", "envtk")
    db = tmp_path / "runs.db"
    got: list[int] = []

    def client(url: str, stop: Callable[[], None]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port_of(url)}", timeout=10) as c:
            got.append(c.get("/api/runs").status_code)
            got.append(c.get("/api/runs", params={"token": "envtk"}).status_code)

    s = serve(io_, ["serve", "--host", "0.0.0.0", "--port", "0", "--database", str(db)], client)
    assert s.problems == []
    assert s.shown == panel_lines(s.url, sqlite_url(db), token=True)
    assert got == [401, 200]
    assert (s.code, s.err) == (0, "exectrack serve: stopped\n")


def test_serve_with_an_empty_token_option_ignores_the_environment(
    io_: Io, signals: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--token "" on loopback serves without a token although EXECTRACK_TOKEN is set."""
    monkeypatch.setenv("EXECTRACK_TOKEN", "envtk")
    db = tmp_path / "runs.db"
    got: list[int] = []

    def client(url: str, stop: Callable[[], None]) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            got.append(c.get("api/runs").status_code)

    s = serve(io_, ["serve", "--port", "0", "--token", "", "--database", str(db)], client)
    assert s.problems == []
    assert s.shown == panel_lines(s.url, sqlite_url(db))
    assert got == [200]
    assert (s.code, s.err) == (0, "exectrack serve: stopped\n")


def test_serve_reaps_a_run_whose_lease_expired(
    io_: Io, signals: list[int], tmp_path: Path, store: Store
) -> None:
    """The server runs the reaper: a running run whose lease ended is finished."""
    db = tmp_path / "runs.db"
    add_run(store, "stale", status=RunStatus.RUNNING, lease_until=now_us() - 60_000_000)
    statuses: list[str] = []

    def client(url: str, stop: Callable[[], None]) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                status = c.get("api/runs/stale").json()["run"]["status"]
                if not statuses or statuses[-1] != status:
                    statuses.append(status)
                if status != "running":
                    return
                time.sleep(0.02)

    s = serve(io_, ["serve", "--port", "0", "--database", sqlite_url(db)], client)
    assert s.problems == []
    assert statuses[-1] != "running", statuses
    assert (s.code, s.err) == (0, "exectrack serve: stopped\n")


def test_serve_ignores_forwarded_headers(io_: Io, signals: list[int], tmp_path: Path) -> None:
    """No proxy headers are trusted: a redirect keeps the scheme the client used,
    whatever X-Forwarded-Proto says."""
    got: list[tuple[int, str]] = []

    def client(url: str, stop: Callable[[], None]) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
            r = c.get("api/runs/", headers=headers)
            got.append((r.status_code, r.headers.get("location", "")))

    s = serve(io_, ["serve", "--port", "0", "--database", str(tmp_path / "runs.db")], client)
    assert s.problems == []
    assert got == [(307, f"{s.url}api/runs")]
    assert s.code == 0


def test_serve_ends_a_live_stream_on_sigterm(io_: Io, signals: list[int], tmp_path: Path) -> None:
    """SIGTERM with a change-feed stream attached: the server ends the stream itself
    and the command returns."""
    new_database(tmp_path / "runs.db", "r1")
    ends: list[str] = []

    def client(url: str, stop: Callable[[], None]) -> None:
        with (
            httpx.Client(base_url=url, timeout=WAIT) as c,
            c.stream("GET", "api/runs/changes/stream") as response,
        ):
            assert response.status_code == 200
            lines = response.iter_lines()
            next(lines)  # the stream is live
            stop()
            for _ in lines:
                pass
            ends.append("closed by the server")

    s = serve(io_, ["serve", "--port", "0", "--database", str(tmp_path / "runs.db")], client)
    assert s.problems == []
    assert ends == ["closed by the server"]
    assert (s.code, s.err) == (0, "exectrack serve: stopped\n")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_serve_on_ipv6_loopback_prints_a_bracketed_url(
    io_: Io, signals: list[int], tmp_path: Path, host: str
) -> None:
    """An IPv6 address, bracketed or not, is bound and printed in brackets."""
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    got: list[int] = []

    def client(url: str, stop: Callable[[], None]) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            got.append(c.get("api/runs").status_code)

    db = str(tmp_path / "runs.db")
    s = serve(io_, ["serve", "--host", host, "--port", "0", "--database", db], client)
    assert s.problems == []
    assert s.url == f"http://[::1]:{port_of(s.url)}/"
    assert got == [200]
    assert s.code == 0


def test_serve_on_localhost_keeps_the_name(io_: Io, signals: list[int], tmp_path: Path) -> None:
    """localhost needs no token and the URL keeps the name."""
    got: list[int] = []

    def client(url: str, stop: Callable[[], None]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port_of(url)}", timeout=10) as c:
            got.append(c.get("/api/runs").status_code)

    db = str(tmp_path / "runs.db")
    s = serve(io_, ["serve", "--host", "localhost", "--port", "0", "--database", db], client)
    assert s.problems == []
    assert s.url == f"http://localhost:{port_of(s.url)}/"
    assert got == [200]


# -- serve, refused ----------------------------------------------------------------------


def refusal(host: str) -> str:
    return (
        f"exectrack: refusing to serve on {host!r} without a token: anyone who can reach "
        "it could read every run; pass --token or set EXECTRACK_TOKEN\n"
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_serve_refuses_a_non_loopback_host_without_a_token(
    io_: Io, tmp_path: Path, host: str
) -> None:
    """Exit 2, one line, nothing on stdout, no database created."""
    db = tmp_path / "runs.db"
    code = io_.run(["serve", "--host", host, "--database", str(db)])
    assert (code, io_.out.text(), io_.err.text()) == (2, "", refusal(host))
    assert not db.exists()


def test_serve_refuses_an_empty_token_option_although_the_environment_has_one(
    io_: Io, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--token "" means no token: EXECTRACK_TOKEN does not make 0.0.0.0 allowed."""
    monkeypatch.setenv("EXECTRACK_TOKEN", "envtk")
    code = io_.run(["serve", "--host", "0.0.0.0", "--token", "", "--database", str(tmp_path / "x")])
    assert (code, io_.err.text()) == (2, refusal("0.0.0.0"))


def test_serve_on_a_port_in_use_is_one_line(io_: Io, tmp_path: Path) -> None:
    """A busy port: exit 1, one line with the OS reason, no database created."""
    db = tmp_path / "runs.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = io_.run(["serve", "--port", str(port), "--database", str(db)])
    reason = os.strerror(errno.EADDRINUSE)
    assert (code, io_.out.text()) == (1, "")
    assert io_.err.text() == f"exectrack: cannot listen on 127.0.0.1:{port}: {reason}\n"
    assert not db.exists()


def test_serve_on_a_port_out_of_range_is_one_line(io_: Io, tmp_path: Path) -> None:
    """A port above 65535: exit 1, one line (OverflowError has no strerror)."""
    code = io_.run(["serve", "--port", "70000", "--database", str(tmp_path / "runs.db")])
    assert code == 1
    assert io_.err.text() == (
        "exectrack: cannot listen on 127.0.0.1:70000: bind(): port must be 0-65535.\n"
    )


def test_serve_without_the_server_extra_names_it(
    io_: Io, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without uvicorn: exit 1, one line naming the extra to install."""
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    code = io_.run(["serve", "--port", "0", "--database", str(tmp_path / "runs.db")])
    assert code == 1
    assert io_.err.text() == (
        "exectrack: exectrack serve needs FastAPI and uvicorn: pip install "
        "'exectrack[server]' (import of uvicorn halted; None in sys.modules)\n"
    )
    assert not (tmp_path / "runs.db").exists()


# -- is_loopback, _bind -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LocalHost", True),
        (" localhost ", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        (" 127.0.0.1 ", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("[::]", False),
        ("192.168.1.10", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
        ("X127.0.0.1", False),  # only brackets are stripped
        ("[127.0.0.1]x", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    """Loopback: localhost (any case, spaces around), 127.x, ::1 with or without
    brackets; not the wildcard addresses, other addresses, names or junk."""
    assert is_loopback(host) is expected


def test_bind_gives_a_reusable_socket_of_the_right_family() -> None:
    """IPv4 or IPv6 by the address (brackets stripped), with SO_REUSEADDR set."""
    with _bind("127.0.0.1", 0) as sock:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    if ipv6_loopback():
        for host in ("::1", "[::1]"):
            with _bind(host, 0) as sock:
                assert sock.family == socket.AF_INET6
                assert sock.getsockname()[0] == "::1"


@pytest.mark.parametrize(
    ("host", "port", "reason"),
    [
        ("192.0.2.1", 0, os.strerror(errno.EADDRNOTAVAIL)),  # not an address of this host
        ("127.0.0.1", 65536, "bind(): port must be 0-65535."),
        ("127.0.0.1", -1, "bind(): port must be 0-65535."),
    ],
)
def test_bind_errors_are_one_config_error(host: str, port: int, reason: str) -> None:
    """Every bind failure is one ConfigError line with the address and the OS reason,
    its cause not chained (the traceback says nothing more)."""
    with pytest.raises(ConfigError) as caught:
        _bind(host, port)
    assert str(caught.value) == f"cannot listen on {host}:{port}: {reason}"
    assert caught.value.__suppress_context__


def test_bind_strips_brackets_only() -> None:
    """A name is bound as given: "X127.0.0.1X" is not 127.0.0.1."""
    with pytest.raises(ConfigError, match=r"^cannot listen on X127\.0\.0\.1X:0: "):
        _bind("X127.0.0.1X", 0)


# -- the parsers ---------------------------------------------------------------------------


def test_serve_and_tail_defaults() -> None:
    """serve: 127.0.0.1:8000, no token, opens (and creates) its own store; tail: 1 s."""
    serve_args = build_parser(["serve"]).parse_args(["serve"])
    assert (serve_args.host, serve_args.port, serve_args.token) == ("127.0.0.1", 8000, None)
    assert (serve_args.no_store, serve_args.creates) == (True, True)
    argv = ["runs", "tail"]
    tail_args = build_parser(argv).parse_args(argv)
    assert (tail_args.interval, tail_args.json, tail_args.from_start, tail_args.after) == (
        1.0,
        False,
        False,
        None,
    )


def help_of(argv: list[str], io_: Io) -> str:
    assert io_.run([*argv, "--help"]) == 0
    return " ".join(io_.out.text().split())


def test_serve_help(io_: Io, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve --help: its usage, description and each option's help."""
    monkeypatch.setenv("COLUMNS", "100")
    text = help_of(["serve"], io_)
    assert text.startswith(
        "usage: exectrack serve [-h] [--database URL] [-v] [--host HOST] [--port PORT] "
        "[--token TOKEN] "
    )
    for part in [
        "Serve the runs panel and its read-only HTTP API (api/runs, api/stats, api/report, "
        "the change feed, badges, /metrics, openapi.json) for the database of --database / "
        "EXECTRACK_DATABASE_URL, creating its schema if needed, and reap abandoned runs "
        "while it runs. Binds 127.0.0.1 unless told otherwise; any other address needs a "
        "token (--token or EXECTRACK_TOKEN) that every request must carry. Ctrl-C stops.",
        "--host HOST address to bind (default: 127.0.0.1)",
        "--port PORT port (default: 8000; 0: any free)",
        "--token TOKEN require this token (Authorization: Bearer or ?token=); default: "
        "$EXECTRACK_TOKEN",
    ]:
        assert part in text


def test_tail_help(io_: Io, monkeypatch: pytest.MonkeyPatch) -> None:
    """runs tail --help: its usage, description and each option's help."""
    monkeypatch.setenv("COLUMNS", "100")
    text = help_of(["runs", "tail"], io_)
    assert text.startswith(
        "usage: exectrack runs tail [-h] [--database URL] [-v] [--from-start | --after CURSOR] "
        "[--interval SECONDS] [--json] "
    )
    for part in [
        "Print a line per run created or changed (started, finished, reaped) from now on, "
        "as the change feed reports them, until Ctrl-C (exit 130). With --json, one JSON "
        "object per line.",
        "--from-start replay every change first",
        "--after CURSOR continue after a change cursor",
        "--interval SECONDS seconds between two polls (default: 1)",
        "--json print one JSON object per run change",
    ]:
        assert part in text


def test_the_commands_are_listed_with_their_help(io_: Io, monkeypatch: pytest.MonkeyPatch) -> None:
    """exectrack --help lists serve, exectrack runs --help lists tail, with their help."""
    monkeypatch.setenv("COLUMNS", "200")
    top = help_of([], io_)
    assert (
        "serve serve the runs panel, its HTTP API, badges and /metrics (needs exectrack[server])"
        in top
    )
    io_.out.clear()
    runs = help_of(["runs"], io_)
    assert "tail follow runs as they start, change and finish" in runs


@pytest.mark.parametrize("value", ["0.05", "3600", "3600.0", "1e-1"])
def test_interval_bounds_are_inclusive(value: str) -> None:
    """--interval accepts 0.05 to 3600 seconds, both ends included."""
    argv = ["runs", "tail", "--interval", value]
    assert build_parser(argv).parse_args(argv).interval == float(value)


@pytest.mark.parametrize("value", ["0.049", "0", "-1", "3600.5", "3601", "nan", "inf"])
def test_interval_out_of_bounds_is_a_usage_error(io_: Io, value: str) -> None:
    """Outside 0.05..3600 (or not a number in it): exit 2 with argparse's one line."""
    code = io_.run(["runs", "tail", "--interval", value])
    assert code == 2
    assert io_.err.text().splitlines()[-1] == (
        "exectrack runs tail: error: argument --interval: must be between 0.05 and 3600 seconds"
    )


def test_from_start_and_after_exclude_each_other(io_: Io) -> None:
    """--from-start and --after together: a usage error."""
    assert io_.run(["runs", "tail", "--from-start", "--after", "x"]) == 2
    assert io_.err.text().splitlines()[-1] == (
        "exectrack runs tail: error: argument --after: not allowed with argument --from-start"
    )


# -- tail ---------------------------------------------------------------------------------


class Sleeps:
    """``time.sleep`` for the tail: records each pause (and how many lines a reader had
    received by then), runs the step planned for it, and once the plan is done ends
    the tail with a real SIGINT."""

    def __init__(self, out: Pipe, steps: list[Callable[[], None]] | None = None) -> None:
        self.out = out
        self.steps = steps or []
        self.pauses: list[float] = []
        self.lines: list[int] = []  # lines received at each pause

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.lines.append(self.out.seen().count("\n"))
        n = len(self.pauses)
        if n <= len(self.steps):
            self.steps[n - 1]()
        else:
            signal.raise_signal(signal.SIGINT)


def nothing() -> None:
    pass


@pytest.fixture
def sleeps(io_: Io, monkeypatch: pytest.MonkeyPatch, signals: list[int]) -> Sleeps:
    fake = Sleeps(io_.out)
    monkeypatch.setattr(time, "sleep", fake)
    return fake


AT = datetime(2026, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)


def new_run(run_id: str, **fields: object) -> NewRun:
    start = datetime_to_us(AT)
    values: dict[str, object] = {
        "status": RunStatus.SUCCESS,
        "finished_at": start + 90_500_000,
        "duration_ms": 90_500.0,
    }
    values.update(fields)
    return NewRun(run_id, "chat", start, **values)  # type: ignore[arg-type]


def tail(io_: Io, db: Path, *options: str) -> int:
    return io_.run(["runs", "tail", "--database", sqlite_url(db), *options])


def test_tail_from_start_as_text_lines_in_utc(
    io_: Io, sleeps: Sleeps, store: Store, tmp_path: Path, non_utc_zone: None
) -> None:
    """One line per run: time of its last change (UTC, to the second), status padded
    to 8, source, source_ref (escaped, shortened to 40), id, duration, error code."""
    store.create(new_run("r-ok", source_ref="inbox\x1b[31m"))
    store.create(
        new_run(
            "r-err",
            status=RunStatus.ERROR,
            source_ref="r" * 50,
            error_code="boom",
            duration_ms=42.0,
        )
    )
    store.create(new_run("r-open", status=RunStatus.RUNNING, finished_at=None, duration_ms=None))
    code = tail(io_, tmp_path / "runs.db", "--from-start")
    assert code == 130
    assert io_.out.text().splitlines() == [
        "2026-01-02T03:05:35Z  success   chat  inbox\\x1b[31m  r-ok  1m30s  -",
        "2026-01-02T03:05:35Z  error     chat  " + "r" * 37 + "...  r-err  42ms  boom",
        "2026-01-02T03:04:05Z  running   chat  -  r-open  -  -",
    ]
    assert io_.err.text() == "exectrack: interrupted\n"
    assert sleeps.pauses == [1.0]  # the default interval, after the page


def test_tail_prints_only_changes_after_now_as_json(
    io_: Io, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signals: list[int]
) -> None:
    """Without --from-start or --after it starts at the feed's head; each change is one
    compact JSON line, a run changed again appears again."""
    add_run(store, "before")

    def first() -> None:
        add_run(store, "first", status=RunStatus.RUNNING)

    def second() -> None:
        store.finish(FinishRun("first", RunStatus.ERROR, now_us(), error_code="boom"))
        add_run(store, "second")

    fake = Sleeps(io_.out, [first, nothing, second, nothing])
    monkeypatch.setattr(time, "sleep", fake)
    assert tail(io_, tmp_path / "runs.db", "--json", "--interval", "0.05") == 130
    lines = io_.out.text().splitlines()
    got = [json.loads(line) for line in lines]
    assert [(r["id"], r["status"]) for r in got] == [
        ("first", "running"),
        ("first", "error"),
        ("second", "success"),
    ]
    final = {r.id: r for r in query.list_runs(store).runs}
    assert lines[1:] == [json.dumps(final[r].to_dict()) for r in ("first", "second")]
    assert fake.pauses == [0.05] * 5
    assert fake.lines == [0, 1, 1, 3, 3]
    assert io_.err.text() == "exectrack: interrupted\n"


def test_tail_after_a_cursor(io_: Io, sleeps: Sleeps, store: Store, tmp_path: Path) -> None:
    """--after CURSOR prints the changes after that cursor only."""
    add_run(store, "a")
    cursor = query.changes(store, None).cursor
    add_run(store, "b")
    assert tail(io_, tmp_path / "runs.db", "--after", cursor, "--json") == 130
    assert [json.loads(x)["id"] for x in io_.out.text().splitlines()] == ["b"]


def test_tail_reads_a_full_page_again_at_once(
    io_: Io, sleeps: Sleeps, store: Store, tmp_path: Path
) -> None:
    """Pages of 500: a full page is printed and flushed, and the next one read without
    a pause; the pause comes after the first page that is not full."""
    store.apply([new_run(f"r{i:04d}") for i in range(501)])
    assert tail(io_, tmp_path / "runs.db", "--from-start", "--json", "--interval", "0.05") == 130
    assert [chunk.count("\n") for chunk in io_.out.chunks] == [500, 1]
    assert sleeps.pauses == [0.05]
    assert sleeps.lines == [501]
    ids = [json.loads(x)["id"] for x in io_.out.text().splitlines()]
    assert ids == [f"r{i:04d}" for i in range(501)]


def test_tail_flushes_each_page(io_: Io, sleeps: Sleeps, store: Store, tmp_path: Path) -> None:
    """A reader at the other end of a pipe gets the lines before the tail pauses."""
    add_run(store, "one")
    assert tail(io_, tmp_path / "runs.db", "--from-start") == 130
    assert sleeps.lines == [1]


def away_and_back(db: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    away = db.with_name("away.db")

    def move_away() -> None:
        db.rename(away)

    def move_back() -> None:
        away.rename(db)

    return move_away, move_back


def new_database(path: Path, *runs: str) -> Path:
    """A migrated database file with these runs, closed (no WAL file left behind)."""
    store = open_store(path)
    try:
        store.migrate()
        for run_id in runs:
            add_run(store, run_id)
    finally:
        store.close()
    return path


def test_tail_retries_a_failing_store_with_growing_pauses(
    io_: Io, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signals: list[int]
) -> None:
    """The database file moved away: one line per outage, pauses doubling from the
    interval up to 5 s, the cursor kept (the run written meanwhile is printed once),
    one line when it answers again, and the next outage starts from the interval."""
    db = new_database(tmp_path / "runs.db")
    move_away, move_back = away_and_back(db)

    def meanwhile_and_back() -> None:
        new_database(db.with_name("away.db"), "meanwhile")
        move_back()

    steps = [move_away, *[nothing] * 8, meanwhile_and_back, move_away, nothing, move_back]
    fake = Sleeps(io_.out, steps)
    monkeypatch.setattr(time, "sleep", fake)
    code = tail(io_, db, "--json", "--interval", "0.05")
    assert code == 130, io_.err.text()
    assert fake.pauses == [
        0.05,
        0.05,
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        5.0,
        5.0,
        0.05,
        0.05,
        0.1,
        0.05,
    ]
    assert [json.loads(x)["id"] for x in io_.out.text().splitlines()] == ["meanwhile"]
    retry = (
        f"exectrack: database file {db} was deleted or replaced; reopened; retrying from "
        "where the feed stopped"
    )
    again = "exectrack: the store answers again"
    ours = [x for x in io_.err.text().splitlines() if not x.startswith("WARNING ")]
    assert ours == [retry, again, retry, again, "exectrack: interrupted"], io_.err.text()


def test_tail_keeps_a_long_interval_while_the_store_fails(
    io_: Io, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signals: list[int]
) -> None:
    """An interval above 5 s is the pause while failing too: never shorter, never longer."""
    db = new_database(tmp_path / "runs.db")
    move_away, move_back = away_and_back(db)
    fake = Sleeps(io_.out, [move_away, nothing, nothing, move_back])
    monkeypatch.setattr(time, "sleep", fake)
    assert tail(io_, db, "--interval", "10") == 130
    assert fake.pauses == [10.0] * 5


def test_tail_stops_on_a_schema_too_new(
    io_: Io, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signals: list[int]
) -> None:
    """A database replaced by one of a newer exectrack: the replacement is one retry
    (the store reopens the file), the schema too new ends the tail with exit 1."""
    db = new_database(tmp_path / "runs.db")
    newer = tmp_path / "newer.db"

    def replace() -> None:
        source, target = sqlite3.connect(db), sqlite3.connect(newer)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
            target.execute(
                "INSERT INTO exectrack_migrations (version, name, applied_at) "
                "VALUES (999, 'future', '2030-01-01T00:00:00+00:00')"
            )
            target.commit()
        finally:
            source.close()
            target.close()
        os.replace(newer, db)

    fake = Sleeps(io_.out, [replace, nothing, nothing])
    monkeypatch.setattr(time, "sleep", fake)
    assert tail(io_, db, "--interval", "0.05") == 1
    assert fake.pauses == [0.05, 0.05]
    lines = [x for x in io_.err.text().splitlines() if not x.startswith("WARNING ")]
    assert len(lines) == 2, io_.err.text()
    assert lines[0] == (
        f"exectrack: database file {db} was deleted or replaced; reopened; retrying from "
        "where the feed stopped"
    )
    assert lines[1].startswith(f"exectrack: database {sqlite_url(db)} has schema version 999, ")

"""What a store that is down costs the host: tracked no-op calls per second with the
store healthy and unreachable, and how long the process then takes to exit.

Each case runs in a fresh child process (so its exit can be timed): the child makes
``--calls`` tracked no-op calls, prints the rate and its tracker's stats, and returns
from its main; the parent measures from that line to the child's exit (the exit
hooks: shutdown, flush, giving up on a store that does not answer).

  sqlite               a fresh SQLite file (the healthy baseline)
  sqlite-readonly      an exectrack database on a read-only bind mount (needs root;
                       skipped otherwise): every write fails "readonly database"
  sqlite-unopenable    a path under a regular file: the database cannot be opened
  postgres             the test server (``--postgres URL``, default the CI one)
  postgres-refused     a closed local port: every connect is refused at once
  postgres-silent      a local port that accepts and never answers (a hung server):
                       every connect waits for its timeout

for ``durability="async"`` (default) and ``"sync"``. The ratio column is the case's
rate over the healthy rate of the same engine and durability, in the same run.

    .venv/bin/python bench/outage.py [--calls 25000] [--durability async sync]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, write_json

CHILD = """
import json, sys, time
import exectrack

url, durability, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = exectrack.ExecutionTracker(url, durability=durability, strict=False)

@t.with_run("skill")
def noop():
    return None

for _ in range(200):  # warm up (and, for a healthy store, create the schema)
    noop()
started = time.perf_counter()
for _ in range(calls):
    noop()
elapsed = time.perf_counter() - started
s = t.stats()
print(json.dumps({"rate": calls / elapsed, "dropped": s.dropped, "queued": s.queued,
                  "unavailable": s.unavailable, "failures": s.failures}), flush=True)
"""


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return int(port)


@contextlib.contextmanager
def readonly_sqlite(tmp: Path) -> Iterator[str | None]:
    """An exectrack database (schema created, WAL) on a read-only bind mount."""
    source, mount = tmp / "ro-source", tmp / "ro-mount"
    source.mkdir()
    mount.mkdir()
    url = f"sqlite:///{source / 'runs.db'}"
    subprocess.run(
        [sys.executable, "-m", "exectrack.cli", "--database", url, "migrate"],
        check=True,
        capture_output=True,
    )
    mounted = (
        subprocess.run(
            ["mount", "--bind", str(source), str(mount)], capture_output=True, check=False
        ).returncode
        == 0
    )
    if (
        mounted
        and subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True, check=False
        ).returncode
        != 0
    ):
        subprocess.run(["umount", str(mount)], check=False)
        mounted = False
    try:
        yield f"sqlite:///{mount / 'runs.db'}" if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)


def run_case(url: str, durability: str, calls: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), url, durability, str(calls)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    done = time.perf_counter()
    proc.wait(120)
    exit_s = time.perf_counter() - done
    if not line:
        raise RuntimeError(f"case failed: {proc.stderr.read() if proc.stderr else ''}")
    return {**json.loads(line), "exit_s": exit_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=25_000)
    parser.add_argument("--durability", nargs="+", default=["async", "sync"])
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "EXECTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    add_json_flag(parser)
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name, silent_server() as silent:
        tmp = Path(tmp_name)
        blocker = tmp / "blocker"
        blocker.write_text("a file, so nothing can be created under it")
        with readonly_sqlite(tmp) as readonly:
            for durability in args.durability:
                cases = [
                    ("sqlite", "sqlite", f"sqlite:///{tmp / f'healthy-{durability}.db'}"),
                    ("sqlite", "sqlite-readonly", readonly),
                    ("sqlite", "sqlite-unopenable", f"sqlite:///{blocker / 'runs.db'}"),
                    ("postgres", "postgres", args.postgres),
                    (
                        "postgres",
                        "postgres-refused",
                        f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
                    ),
                    (
                        "postgres",
                        "postgres-silent",
                        f"postgresql://postgres@127.0.0.1:{silent}/test",
                    ),
                ]
                healthy: dict[str, float] = {}
                for engine, name, url in cases:
                    if url is None:
                        print(f"{name}: skipped (no read-only mount here)", file=sys.stderr)
                        continue
                    print(f"{durability} {name} ...", file=sys.stderr)
                    r = run_case(url, durability, args.calls)
                    if name == engine:
                        healthy[engine] = r["rate"]
                    r.update(
                        case=name,
                        durability=durability,
                        ratio=r["rate"] / healthy[engine] if engine in healthy else None,
                    )
                    results.append(r)
    if args.json != "-":
        print(
            f"{'durability':10} {'case':18} {'calls/s':>9} {'ratio':>6} {'exit s':>7} "
            f"{'dropped':>8} {'queued':>7} down"
        )
        for r in results:
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
            print(
                f"{r['durability']:10} {r['case']:18} {r['rate']:9.0f} {ratio:>6} "
                f"{r['exit_s']:7.2f} {r['dropped']:8} {r['queued']:7} {r['unavailable']}"
            )
    if args.json is not None:
        write_json(
            args.json,
            {
                "benchmark": "outage",
                "environment": environment(),
                "calls": args.calls,
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

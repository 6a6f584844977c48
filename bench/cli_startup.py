"""What an ``exectrack`` command costs as a process, against python + sqlite3 doing the
same read (the floor: an interpreter, the driver and one statement).

Data: a fresh SQLite file with N runs (default 10,000; the data of query_speed.py:
30 days, 3 sources, a few open). Each case is a new process, started the way the
installed console script starts (a launcher built from ``[project.scripts]`` in
pyproject.toml) with this tree's ``src`` first on ``sys.path``. Bytecode is cached, as
in an installed package: the processes write and read it under a temporary
``PYTHONPYCACHEPREFIX``, and every case runs once untimed first (its exit code and
output are checked there). The cases rotate order every round, so a load spike hits
them alike.

    .venv/bin/python bench/cli_startup.py [--runs 10000] [--repeat 40] [--json [PATH]]
        [--src LABEL=PATH ...]

Reported per case: the median wall time over --repeat rounds (ms), the min, the
median CPU time of the process (user + system, ms; less sensitive to a busy machine
than wall time) and, with --instructions, the instructions of one run counted by
valgrind (the same however busy the machine is). A time is never asserted anywhere:
this prints figures to compare.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import add_json_flag, environment, median, write_json
from exectrack.stores import open_store
from query_speed import build

ROOT = Path(__file__).resolve().parent.parent
NOW_US = 1_780_000_000_000_000  # fixed, so the data (and so every output) repeats

LIST_SQL = "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 51"
GET_SQL = "SELECT * FROM runs WHERE id = ?"
LATEST_SQL = "SELECT * FROM runs WHERE source = ? ORDER BY started_at DESC, id DESC LIMIT 1"
COUNT_SQL = "SELECT source, status, COUNT(*) FROM runs GROUP BY source, status"


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    argv: list[str]
    baseline: str | None = None  # the key of the raw case doing the same read
    prints: bool = True  # the untimed check expects output on stdout
    src: str | None = None  # the tree first on sys.path (None: this tree's)


def launcher(tmp: Path) -> Path:
    """The script pip writes for ``[project.scripts] exectrack``."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    module, func = scripts["exectrack"].split(":")
    path = tmp / "exectrack"
    path.write_text(
        "import sys\n"
        f"from {module} import {func}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n"
        f"    sys.exit({func}())\n",
        encoding="utf-8",
    )
    return path


def raw(db: Path, statement: str, *params: str) -> list[str]:
    """python + sqlite3 running one statement and printing its rows."""
    code = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(db)!r})\n"
        f"for row in c.execute({statement!r}, {params!r}): print(*row)\n"
    )
    return [sys.executable, "-c", code]


def raw_cases(db: Path, run_id: str) -> list[Case]:
    py = sys.executable
    return [
        Case("python -c pass", [py, "-c", "pass"], prints=False),
        Case("sqlite3: list (51 rows)", raw(db, LIST_SQL)),
        Case("sqlite3: get", raw(db, GET_SQL, run_id)),
        Case("sqlite3: latest", raw(db, LATEST_SQL, "skill")),
        Case("sqlite3: count by source, status", raw(db, COUNT_SQL)),
    ]


def exectrack_cases(db: Path, script: Path, run_id: str, src: Path, label: str) -> list[Case]:
    """The commands, run with ``src`` first on the path (``label`` names that tree)."""
    py = sys.executable
    cli = [py, str(script), "--database", f"sqlite:///{db}"]
    tag = f" [{label}]" if label else ""
    lst, count = "sqlite3: list (51 rows)", "sqlite3: count by source, status"
    cases = [
        Case("python -c 'import exectrack'", [py, "-c", "import exectrack"], prints=False),
        Case("exectrack --version", [py, str(script), "--version"]),
        Case("exectrack runs list", [*cli, "runs", "list"], lst),
        Case("exectrack runs list --json", [*cli, "runs", "list", "--json"], lst),
        Case("exectrack runs get ID", [*cli, "runs", "get", run_id], "sqlite3: get"),
        Case(
            "exectrack runs latest --source skill",
            [*cli, "runs", "latest", "--source", "skill"],
            "sqlite3: latest",
        ),
        Case("exectrack runs stats", [*cli, "runs", "stats"], count),
        Case("exectrack report", [*cli, "report"], count),
        Case("exectrack reap --dry-run", [*cli, "reap", "--dry-run"]),
    ]
    return [Case(c.key + tag, c.argv, c.baseline, c.prints, str(src)) for c in cases]


def child_env(pycache: Path, src: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COVERAGE_"))}
    env["PYTHONPATH"] = src or str(ROOT / "src")
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall ms, child CPU ms, exit code) of one process, its output discarded."""
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=quiet)
    _, status, usage = os.wait4(pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    return wall, (usage.ru_utime + usage.ru_stime) * 1000, os.waitstatus_to_exitcode(status)


def check(case: Case, env: dict[str, str]) -> None:
    out = subprocess.run(case.argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0 or (case.prints and not out.stdout.strip()):
        raise SystemExit(f"{case.key}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")


def instructions(argv: list[str], env: dict[str, str]) -> int:
    """Instructions one run of ``argv`` executes (valgrind's callgrind): unlike a time,
    the same on a busy machine as on an idle one."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit(f"no instruction count from valgrind for {argv[:3]}")


def parse_src(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not Path(path, "exectrack").is_dir():
        raise argparse.ArgumentTypeError("expected LABEL=PATH, PATH holding exectrack/")
    return label, Path(path).resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the database")
    parser.add_argument("--repeat", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument(
        "--src",
        type=parse_src,
        action="append",
        metavar="LABEL=PATH",
        help="time the commands of the exectrack under PATH (a src directory, e.g. "
        "from `git archive REV src | tar -x -C /tmp/before`), labelled LABEL; repeat "
        "to compare trees in the same rounds (default: this tree's src)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the instructions of one run of each case under valgrind "
        "(slow: ~30 s a case; a figure that a busy machine does not change)",
    )
    add_json_flag(parser)
    args = parser.parse_args()
    trees: list[tuple[str, Path]] = args.src or [("", ROOT / "src")]

    with tempfile.TemporaryDirectory(prefix="exectrack-cli-startup-") as name:
        tmp = Path(name)
        db = tmp / "runs.db"
        store = open_store(f"sqlite:///{db}", migrate=True)
        try:
            build(store, args.runs, NOW_US)
        finally:
            store.close()
        with sqlite3.connect(db) as conn:
            run_id = conn.execute(LIST_SQL).fetchone()[0]
        script = launcher(tmp)
        all_cases = raw_cases(db, run_id)
        for label, src in trees:
            all_cases += exectrack_cases(db, script, run_id, src, label)
        # PYTHONPYCACHEPREFIX mirrors each source's absolute path: trees cannot collide
        envs = {c.key: child_env(tmp / "pycache", c.src) for c in all_cases}
        for case in all_cases:
            check(case, envs[case.key])  # also writes the bytecode cache
        counts: dict[str, int] = {}
        if args.instructions:
            for case in all_cases:
                counts[case.key] = instructions(case.argv, envs[case.key])
                print(f"  {case.key}: {counts[case.key]:,} instructions", file=sys.stderr)
        walls: dict[str, list[float]] = {c.key: [] for c in all_cases}
        cpus: dict[str, list[float]] = {c.key: [] for c in all_cases}
        for i in range(args.repeat):
            shift = i % len(all_cases)
            for case in all_cases[shift:] + all_cases[:shift]:
                wall, cpu, code = timed_run(case.argv, envs[case.key])
                if code != 0:
                    raise SystemExit(f"{case.key}: exit {code}")
                walls[case.key].append(wall)
                cpus[case.key].append(cpu)
            print(f"  round {i + 1}/{args.repeat}", file=sys.stderr)

    results: list[dict[str, Any]] = []
    for case in all_cases:
        results.append(
            {
                "case": case.key,
                "wall_ms": median(walls[case.key]),
                "wall_ms_min": min(walls[case.key]),
                "cpu_ms": median(cpus[case.key]),
                "instructions": counts.get(case.key),
                "baseline": case.baseline,
                "baseline_wall_ms": median(walls[case.baseline]) if case.baseline else None,
            }
        )
    payload = {
        "environment": environment(),
        "runs": args.runs,
        "repeat": args.repeat,
        "trees": {label: str(src) for label, src in trees},
        "results": results,
    }
    if args.json == "-":
        write_json("-", payload)
        return
    width = max(len(r["case"]) for r in results)
    print(
        f"{'case':<{width}}  {'median ms':>9}  {'min ms':>7}  {'cpu ms':>7}  "
        f"{'M instr':>7}  raw baseline (ms)"
    )
    for r in results:
        base = "" if r["baseline"] is None else f"{r['baseline_wall_ms']:.1f} ({r['baseline']})"
        count = "-" if r["instructions"] is None else f"{r['instructions'] / 1e6:.0f}"
        print(
            f"{r['case']:<{width}}  {r['wall_ms']:>9.1f}  {r['wall_ms_min']:>7.1f}  "
            f"{r['cpu_ms']:>7.1f}  {count:>7}  {base}"
        )
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()

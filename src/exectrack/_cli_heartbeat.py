"""``exectrack heartbeat ...`` and ``exectrack legacy ...``: heartbeat tasks and the
legacy history table's retirement. Imported by :mod:`exectrack.cli` when it builds
its parser; APScheduler and the database drivers are imported only when a command
runs.

::

    exectrack heartbeat check TASKS.toml [--json]
    exectrack heartbeat run TASKS.toml [--duration S] [--grace S] [--legacy-stage STAGE]
    exectrack legacy init   (--legacy-database URL | --tasks TASKS.toml) [--table T]
    exectrack legacy import (--legacy-database URL | --tasks TASKS.toml) [--since T] ...
    exectrack legacy check  (--legacy-database URL | --tasks TASKS.toml) --since T ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from exectrack import _cli_format as fmt
from exectrack import query
from exectrack.errors import ConfigError, InvalidArgumentError
from exectrack.stores import RunFilter, Store

__all__ = ["add_commands"]

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 3

_STAGES = ("dual", "read_only", "runs_only")


# -- heartbeat ---------------------------------------------------------------------------


def _cmd_check_tasks(args: argparse.Namespace, store: Store | None) -> int:
    from exectrack.heartbeat import load_tasks

    spec = load_tasks(args.tasks)
    rows: list[dict[str, Any]] = []
    for task in spec.tasks:
        schedule = f"cron {task.cron}" if task.cron else f"every {task.interval:g} s"
        rows.append(
            {
                "id": task.id,
                "schedule": schedule,
                "target": f"{task.func.__module__}:{task.func.__qualname__}",
                "timeout_s": task.timeout,
                "retries": task.retries,
                "max_concurrent": task.max_concurrent,
                "priority": task.priority,
                "description": task.description,
            }
        )
    if args.json:
        fmt.dump_json({"tasks": rows, "legacy_stage": spec.legacy.stage})
        return EXIT_OK
    fmt.table(
        ["TASK", "SCHEDULE", "TIMEOUT", "RETRIES", "MAX", "PRIORITY", "TARGET"],
        [
            [
                fmt.cell(r["id"]),
                fmt.cell(r["schedule"]),
                "-" if r["timeout_s"] is None else f"{r['timeout_s']:g} s",
                str(r["retries"]),
                str(r["max_concurrent"]),
                str(r["priority"]),
                fmt.cell(r["target"]),
            ]
            for r in rows
        ],
        frozenset({3, 4, 5}),
    )
    fmt.out(f"{len(rows)} task(s) valid; legacy stage: {spec.legacy.stage}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace, store: Store | None) -> int:
    from exectrack.cli import _open
    from exectrack.heartbeat import load_tasks

    spec = load_tasks(args.tasks)  # a bad file starts nothing: no database, no scheduler
    store = _open(args)
    try:
        return _run(args, spec, store)
    finally:
        store.close()


class _OneLine(logging.Formatter):
    """APScheduler's job errors as one line: the run already holds the error."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" ({type(exc).__name__}: {exc})" if str(exc) else f" ({type(exc).__name__})"
        return text


def _quiet_apscheduler(verbosity: int) -> Callable[[], None]:
    logger = logging.getLogger("apscheduler")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine() if verbosity < 2 else logging.Formatter())
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity else logging.WARNING)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved

    return undo


def _run(args: argparse.Namespace, spec: Any, store: Store) -> int:
    from exectrack._tracker import ExecutionTracker
    from exectrack.heartbeat import HeartbeatService

    tracker = ExecutionTracker(store)
    try:
        service = HeartbeatService.from_file(spec, tracker=tracker, legacy_stage=args.legacy_stage)
        started = query.parse_time("0s")
        print(
            f"exectrack: running {len(spec.tasks)} heartbeat task(s)"
            + (f" for {args.duration:g} s" if args.duration else " until interrupted")
            + f"; legacy stage: {service.legacy.stage}",
            file=sys.stderr,
        )
        undo = _quiet_apscheduler(getattr(args, "verbose", 0))
        try:
            import asyncio  # here, not at import: every command builds this parser

            left = asyncio.run(service.run_until_stopped(args.duration, args.grace))
        finally:
            undo()
        tracker.flush()
    finally:
        tracker.close()
    flt = RunFilter(
        sources=("heartbeat",),
        started_after=started,
    )
    counts: dict[str, int] = {}
    for (_source, status), n in store.count_runs(flt).items():  # one source: once each
        counts[status.value] = n
    if args.json:
        fmt.dump_json({"runs_by_status": counts, "still_running": left})
    else:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
        fmt.out(f"heartbeat runs recorded: {summary}")
        if left:
            fmt.out(f"{left} execution(s) still running in threads at exit")
    return EXIT_OK


# -- legacy ------------------------------------------------------------------------------


def _legacy_table(args: argparse.Namespace) -> Any:
    from exectrack.heartbeat import load_tasks
    from exectrack.heartbeat.legacy import DEFAULT_TABLE, LegacyTable

    url: str | None = args.legacy_database
    table: str | None = args.table
    if args.tasks is not None:
        legacy = load_tasks(args.tasks).legacy
        url = url or legacy.database
        table = table or legacy.table
    if not url:
        raise ConfigError(
            "no legacy database: pass --legacy-database URL, or --tasks FILE with "
            "[legacy] database = ..."
        )
    return LegacyTable(url, table or DEFAULT_TABLE)


def _cmd_init(args: argparse.Namespace, store: Store | None) -> int:
    legacy = _legacy_table(args)
    try:
        done = legacy.create()
    finally:
        legacy.close()
    what = ", ".join(done) or "already up to date"
    if args.json:
        fmt.dump_json({"table": legacy.table, "done": done})
    else:
        fmt.out(f"legacy table {legacy.table}: {what}")
    return EXIT_OK


def _progress(enabled: bool) -> Callable[[int, int], None] | None:
    """A bar on a terminal, else a line per step, on stderr; None when quiet."""
    if not enabled:
        return None
    tty = sys.stderr.isatty()
    last = [-1]

    def report(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if tty:
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\rimporting [{bar:<25}] {pct:3d}% {done}/{total}")
            if done >= total:
                sys.stderr.write("\n")
        elif pct // 10 != last[0] // 10 or done >= total:
            print(f"imported {done}/{total} rows ({pct}%)", file=sys.stderr)
        last[0] = pct
        sys.stderr.flush()

    return report


def _cmd_import(args: argparse.Namespace, store: Store | None) -> int:
    from exectrack.heartbeat.legacy import import_rows

    assert store is not None
    since = None if args.since is None else query.parse_time(args.since)
    until = None if args.until is None else query.parse_time(args.until)
    if args.batch < 1:
        raise InvalidArgumentError(f"--batch {args.batch}: must be at least 1")
    legacy = _legacy_table(args)
    try:
        result = import_rows(
            store,
            legacy,
            since=since,
            until=until,
            batch=args.batch,
            progress=_progress(not args.quiet),
        )
    finally:
        legacy.close()
    if args.json:
        fmt.dump_json({"read": result.read, "created": result.created, "existing": result.existing})
    else:
        fmt.out(
            f"read {result.read} legacy row(s): {result.created} run(s) created, "
            f"{result.existing} already there"
        )
    return EXIT_OK


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _cmd_legacy_check(args: argparse.Namespace, store: Store | None) -> int:
    from exectrack.heartbeat.legacy import check

    assert store is not None
    since = query.parse_time(args.since)
    until = None if args.until is None else query.parse_time(args.until)
    if args.tolerance_ms < 0:
        raise InvalidArgumentError(f"--tolerance-ms {args.tolerance_ms:g}: must be >= 0")
    if args.show < 0:
        raise InvalidArgumentError(f"--show {args.show}: must be >= 0")
    legacy = _legacy_table(args)
    try:
        result = check(
            store, legacy, since=since, until=until, duration_tolerance_ms=args.tolerance_ms
        )
    finally:
        legacy.close()
    below = (
        args.min_agreement is not None
        and result.agreement_pct is not None
        and result.agreement_pct < args.min_agreement
    )
    if args.json:
        fmt.dump_json(result.to_dict())
        return EXIT_BELOW_THRESHOLD if below else EXIT_OK
    window = f"since {fmt.utc_seconds(since)}" + (
        f" until {fmt.utc_seconds(until)}" if until else ""
    )
    fmt.out(f"legacy check {window}")
    fmt.out(
        f"legacy rows: {result.legacy_rows}   runs: {result.runs}   paired: {result.paired}"
        f"   agreeing: {result.agreeing}"
    )
    fmt.out(
        f"agreement: {_pct(result.agreement_pct)}   coverage: {_pct(result.coverage_pct)}"
        f"   (skips/misses, not in legacy: {result.new_visibility}; open runs: "
        f"{result.open_runs})"
    )
    legacy_s = ", ".join(f"{k} {v}" for k, v in sorted(result.legacy_by_status.items()))
    runs_s = ", ".join(f"{k} {v}" for k, v in sorted(result.runs_by_status.items()))
    fmt.out(f"legacy by status: {legacy_s or '-'}")
    fmt.out(f"runs by status:   {runs_s or '-'}")
    shown = result.disagreements[: args.show]
    if shown:
        fmt.out(f"{len(result.disagreements)} disagreeing row(s):")
        fmt.table(
            ["KIND", "TASK", "STARTED", "LEGACY", "RUN", "LEGACY MS", "RUN MS", "RUN ID"],
            [
                [
                    d.kind,
                    fmt.cell(d.task_id),
                    fmt.utc_seconds(d.started_at),
                    "-" if d.legacy_id is None else f"#{d.legacy_id} {d.legacy_status}",
                    d.run_status or "-",
                    "-" if d.legacy_ms is None else f"{d.legacy_ms:.0f}",
                    "-" if d.run_ms is None else f"{d.run_ms:.0f}",
                    d.run_id or "-",
                ]
                for d in shown
            ],
            frozenset({5, 6}),
        )
        if len(result.disagreements) > len(shown):
            fmt.out(f"... {len(result.disagreements) - len(shown)} more (use --show N or --json)")
    elif result.disagreements:  # --show 0: counted, not listed
        fmt.out(f"{len(result.disagreements)} disagreeing row(s) (list them: --show N or --json)")
    else:
        fmt.out("no disagreeing rows")
    if below:
        fmt.out(f"agreement below --min-agreement {args.min_agreement:g}%")
        return EXIT_BELOW_THRESHOLD
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------


def add_commands(commands: Any, common: argparse.ArgumentParser, time_help: str) -> None:
    """Add the ``heartbeat`` and ``legacy`` commands to ``exectrack``'s parser."""
    hb = commands.add_parser(
        "heartbeat",
        parents=[common],
        help="run or check heartbeat tasks declared in a TOML task file",
        description=(
            "Heartbeat tasks on APScheduler (pip install 'exectrack[heartbeat]'): every "
            "execution, overlap skip and misfire is a heartbeat run."
        ),
    )
    actions = hb.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "check",
        parents=[common],
        help="validate a task file and list its tasks",
        description=(
            "Validate TASKS.toml as `heartbeat run` would (targets imported, schedules "
            "parsed) and list its tasks. A bad file is one line naming the task and "
            "field, exit 1. Needs no database."
        ),
    )
    p.add_argument("tasks", metavar="TASKS.toml")
    p.add_argument("--json", action="store_true", help="print JSON: tasks, legacy_stage")
    p.set_defaults(handler=_cmd_check_tasks, no_store=True)

    p = actions.add_parser(
        "run",
        parents=[common],
        help="run the tasks of a task file until interrupted",
        description=(
            "Run the tasks of TASKS.toml on an AsyncIOScheduler (coroutine tasks on the "
            "loop, plain functions in its thread pool) until SIGINT/SIGTERM or "
            "--duration, recording every execution as a heartbeat run. The whole file "
            "is validated first: a bad file starts nothing."
        ),
    )
    p.add_argument("tasks", metavar="TASKS.toml")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for running executions at the end (default: 10)",
    )
    p.add_argument(
        "--legacy-stage",
        choices=_STAGES,
        help="override the task file's [legacy] stage (e.g. roll back to dual)",
    )
    p.add_argument("--json", action="store_true", help="print JSON: runs_by_status")
    p.set_defaults(handler=_cmd_run, creates=True, no_store=True)

    lg = commands.add_parser(
        "legacy",
        parents=[common],
        help="retire the legacy heartbeat history table (init, import, check)",
        description=(
            "The legacy per-task history table (heartbeat_executions) and its retirement: "
            "see docs/heartbeat-retirement.md."
        ),
    )
    actions = lg.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    where = type(lg)(add_help=False)  # the CLI's parser class (see exectrack.cli)
    group = where.add_argument_group("the legacy table")
    group.add_argument(
        "--legacy-database",
        metavar="URL",
        help="the app database holding it: sqlite:///app.db or postgresql://...",
    )
    group.add_argument("--tasks", metavar="TASKS.toml", help="read [legacy] from a task file")
    group.add_argument("--table", help="its name (default: heartbeat_executions)")

    p = actions.add_parser(
        "init",
        parents=[common, where],
        help="create the legacy table, or add run_id to an existing one",
        description=(
            "Create the legacy table with the documented schema (SQLite or PostgreSQL), "
            "or add the run_id column an existing seed table needs for the dual stage."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON: table, done")
    p.set_defaults(handler=_cmd_init, no_store=True)

    p = actions.add_parser(
        "import",
        parents=[common, where],
        help="copy legacy rows into runs (idempotent)",
        description=(
            "Copy legacy rows into the runs database as finished heartbeat runs. Each "
            "row's run id is its run_id (written in dual) or derived from the row, so a "
            "re-run imports nothing twice. Progress goes to stderr."
        ),
    )
    p.add_argument("--since", metavar="TIME", help=f"rows started at or after: {time_help}")
    p.add_argument("--until", metavar="TIME", help=f"rows started before: {time_help}")
    p.add_argument("--batch", type=int, default=1000, metavar="N", help="rows per transaction")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print JSON: read, created, existing")
    p.set_defaults(handler=_cmd_import, creates=True)

    p = actions.add_parser(
        "check",
        parents=[common, where],
        help="compare legacy rows and heartbeat runs over a window",
        description=(
            "Compare the legacy rows and the heartbeat runs started in the window: "
            "counts, statuses (failed = error or canceled) and durations. Prints the "
            "agreement percentage, the coverage (legacy rows that have their run) and "
            "the rows that disagree. Skips and misses (new in runs) are counted apart. "
            f"Exits {EXIT_BELOW_THRESHOLD} when agreement is below --min-agreement."
        ),
    )
    p.add_argument("--since", required=True, metavar="TIME", help=f"window start: {time_help}")
    p.add_argument("--until", metavar="TIME", help=f"window end: {time_help}")
    p.add_argument(
        "--tolerance-ms",
        type=float,
        default=1000.0,
        metavar="MS",
        help="durations closer than this agree (default: 1000)",
    )
    p.add_argument(
        "--min-agreement", type=float, metavar="PCT", help=f"exit {EXIT_BELOW_THRESHOLD} below it"
    )
    p.add_argument("--show", type=int, default=50, metavar="N", help="disagreeing rows shown")
    p.add_argument("--json", action="store_true", help="print JSON: the whole comparison")
    p.set_defaults(handler=_cmd_legacy_check)

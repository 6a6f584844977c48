"""The ``exectrack`` command: a thin layer over :mod:`exectrack.query`.

::

    exectrack [--database URL] runs list [FILTERS] [--limit N] [--cursor C] [--json]
    exectrack [--database URL] runs get ID [--json]
    exectrack [--database URL] runs latest [FILTERS] [--json]
    exectrack [--database URL] runs stats [FILTERS] [--json]
    exectrack [--database URL] runs tail [--json] [--from-start | --after CURSOR]
    exectrack [--database URL] migrate [--json]
    exectrack [--database URL] reap [--dry-run] [--json]
    exectrack [--database URL] report [--since TIME] [--json]
    exectrack [--database URL] serve [--host H] [--port P] [--token T]
    exectrack [--database URL] demo [--host H] [--port P] [--duration S] [--no-traffic]
    exectrack [--database URL] heartbeat check|run TASKS.toml ...
    exectrack [--database URL] legacy init|import|check ...

People get an aligned table or a ``key: value`` listing; ``--json`` prints one JSON
document whose timestamps are UTC ISO 8601 ending in ``Z``. A user error (a bad
filter, cursor, time or database URL, an unknown id, a database without exectrack's
schema or with a newer one) prints one ``exectrack: ...`` line on stderr and exits 1;
argparse's usage errors exit 2. Every command reads through :mod:`exectrack.query`, the
same path as the HTTP API. Only ``migrate`` (and ``demo``, which records runs, and
``serve``, which reaps) creates or changes a database (its file, schema or journal
mode); ``reap`` writes to an existing exectrack database only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from exectrack import __version__, query
from exectrack import _cli_format as fmt
from exectrack._config import Settings
from exectrack._echo import ECHO_LIMIT
from exectrack._log import to_stderr
from exectrack._model import Run, RunStatus
from exectrack.errors import ConfigError, ExectrackError
from exectrack.stores import RunFilter, Store, open_store, redact_url

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130

_STATUSES = ", ".join(s.value for s in RunStatus)

Handler = Callable[[argparse.Namespace, Store], int]


# -- commands ----------------------------------------------------------------------------


def _filter(args: argparse.Namespace) -> RunFilter:
    return query.make_filter(
        source=args.source,
        status=args.status,
        session_id=args.session,
        source_ref=args.ref,
        parent_id=args.parent,
        since=args.since,
        until=args.until,
        text=args.search,
    )


def _cmd_list(args: argparse.Namespace, store: Store) -> int:
    page = query.list_runs(store, _filter(args), limit=args.limit, cursor=args.cursor)
    if args.json:
        fmt.dump_json(
            {"runs": [run.to_dict() for run in page.runs], "next_cursor": page.next_cursor}
        )
        return EXIT_OK
    if not page.runs:
        fmt.out("no runs match" if args.cursor is None else "no more runs")
        return EXIT_OK
    fmt.print_runs(page.runs)
    if page.next_cursor is not None:
        fmt.out(f"more runs: repeat with --cursor {page.next_cursor} for the next page")
    return EXIT_OK


def _show(args: argparse.Namespace, run: Run) -> int:
    if args.json:
        fmt.dump_json(run.to_dict())
    else:
        fmt.print_run(run)
    return EXIT_OK


def _cmd_get(args: argparse.Namespace, store: Store) -> int:
    run = query.get_run(store, args.id)
    if run is None:
        return _error(f"no run with id {fmt.cell(args.id, ECHO_LIMIT)}")
    return _show(args, run)


def _cmd_latest(args: argparse.Namespace, store: Store) -> int:
    run = query.latest_run(store, _filter(args))
    if run is None:
        return _error("no run matches these filters")
    return _show(args, run)


def _cmd_stats(args: argparse.Namespace, store: Store) -> int:
    stats = query.run_stats(store, _filter(args))
    if args.json:
        fmt.dump_json(stats.to_dict())
        return EXIT_OK
    rate = "-" if stats.error_rate is None else f"{stats.error_rate:.1%}"
    fmt.out(f"runs: {stats.total}  open: {stats.open}  error rate: {rate}")
    fmt.out()
    fmt.table(
        ("STATUS", "COUNT"),
        [(status, str(n)) for status, n in stats.by_status.items()],
        right=frozenset({1}),
    )
    if stats.by_source:
        fmt.out()
        statuses = [s.value for s in RunStatus]
        rows = [
            (
                fmt.cell(source),
                str(sum(counts.values())),
                *(str(counts.get(s, 0)) for s in statuses),
            )
            for source, counts in stats.by_source.items()
        ]
        headers = ("SOURCE", "TOTAL", *(s.upper() for s in statuses))
        fmt.table(headers, rows, right=frozenset(range(1, len(headers))))
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace, store: Store) -> int:
    applied = store.migrate()
    version = store.schema_version()
    if args.json:
        fmt.dump_json({"database": redact_url(store.url), "applied": applied, "version": version})
    elif applied:
        versions = ", ".join(str(v) for v in applied)
        fmt.out(f"applied migration(s) {versions}; the schema is now at version {version}")
    else:
        fmt.out(f"the schema is up to date at version {version}")
    return EXIT_OK


def _cmd_reap(args: argparse.Namespace, store: Store) -> int:
    from exectrack.monitor import reap_once

    reaped = reap_once(store, dry_run=args.dry_run)
    if args.json:
        fmt.dump_json(
            {
                "dry_run": args.dry_run,
                "reaped": [
                    {
                        "id": r.run_id,
                        "source": r.source,
                        "source_ref": r.source_ref,
                        "owner": r.owner,
                        "status": r.status.value,
                        "error_code": r.error_code,
                        "reason": r.reason,
                    }
                    for r in reaped
                ],
            }
        )
        return EXIT_OK
    verb = "would finish" if args.dry_run else "finished"
    if not reaped:
        fmt.out("nothing to reap: no open run is abandoned or past its deadline")
        return EXIT_OK
    fmt.out(f"{verb} {len(reaped)} run(s):")
    fmt.table(
        ("ID", "SOURCE", "REF", "STATUS", "ERROR_CODE", "REASON", "OWNER"),
        [
            (
                r.run_id,
                fmt.cell(r.source),
                fmt.cell(r.source_ref, fmt.REF_WIDTH),
                r.status.value,
                r.error_code,
                r.reason,
                fmt.cell(r.owner),
            )
            for r in reaped
        ],
        right=frozenset(),
    )
    return EXIT_OK


def _cmd_report(args: argparse.Namespace, store: Store) -> int:
    result = query.report(store, since=args.since)
    if args.json:
        fmt.dump_json(result.to_dict())
        return EXIT_OK
    fmt.print_report(result)
    return EXIT_OK


# -- the parser --------------------------------------------------------------------------

_DESCRIPTION = """\
Inspect the runs exectrack recorded: list them with filters, show one, count them,
report hang rates, finish abandoned runs, and migrate the database schema.

The database is --database URL, else EXECTRACK_DATABASE_URL, else a file in your
data directory. URLs: sqlite:///relative.db, sqlite:////absolute/path.db, or a path.
"""

_EPILOG = """\
examples:
  exectrack runs list --source skill --status error --since 2h
  exectrack runs list --json --limit 200 | jq '.runs[].id'
  exectrack runs get 0190c3a2-...
  exectrack runs latest --source heartbeat --ref nightly-report
  exectrack runs stats --since 7d
  exectrack runs tail --json
  exectrack serve --port 8000
  exectrack --database sqlite:///runs.db migrate
  exectrack reap --dry-run
  exectrack report --since 24h
  exectrack heartbeat run tasks.toml
  exectrack legacy check --tasks tasks.toml --since 7d
"""


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, computed the same way without importing
    shutil (which imports bz2, lzma, zlib, fnmatch: a few ms of every command)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _TerminalWidth(argparse.HelpFormatter):
    """argparse's formatter looks the terminal width up through shutil, and a parser makes
    a formatter for every ``add_argument``; this one passes the same width instead."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2  # what argparse subtracts
        super().__init__(prog, indent_increment, max_help_position, width)


class _RawDescription(_TerminalWidth, argparse.RawDescriptionHelpFormatter):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the formatter above. Subcommand parsers are of the
    parent's class, so the whole tree uses it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _TerminalWidth)
        super().__init__(*args, **kwargs)


_TIME_HELP = "ISO 8601 (2026-11-25T10:00:00Z; no zone means UTC) or an age: 30s, 15m, 2h, 7d, 1w"


def _common_options() -> argparse.ArgumentParser:
    """Options accepted before and after the command (``exectrack runs list --database``)."""
    common: argparse.ArgumentParser = _ArgumentParser(add_help=False)
    common.add_argument(
        "--database",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the database (default: $EXECTRACK_DATABASE_URL, else the default file)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more to stderr (-v: info, -vv: debug)",
    )
    return common


def _filter_options() -> argparse.ArgumentParser:
    filters: argparse.ArgumentParser = _ArgumentParser(add_help=False)
    group = filters.add_argument_group("filters (combined with AND)")
    group.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help="runs of this entry point (chat, skill, heartbeat, ...); repeat for any of several",
    )
    group.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help=f"runs in this status ({_STATUSES}); repeat for any of several",
    )
    group.add_argument("--session", metavar="ID", help="runs of this session / conversation")
    group.add_argument(
        "--ref", metavar="REF", help="runs of this source_ref (skill name, task id, ...)"
    )
    group.add_argument("--parent", metavar="RUN_ID", help="child runs of this run")
    group.add_argument("--since", metavar="TIME", help=f"started at or after TIME: {_TIME_HELP}")
    group.add_argument("--until", metavar="TIME", help=f"started before TIME: {_TIME_HELP}")
    group.add_argument(
        "--search",
        metavar="TEXT",
        help="case-insensitive text in the source_ref or the error message",
    )
    return filters


def _json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print JSON: {what}")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the ``exectrack`` command.

    Given the command line, only the parsers on its command's path are built (the
    whole tree is some twenty parsers, a few ms at every start): the result parses
    ``argv`` exactly as the whole parser would. Without ``argv``, or when the command
    line does not name a command plainly, the whole parser is built.
    """
    path = None if argv is None else _command_path(argv)
    if path is not None:
        parser = _build(path)
        if _holds(parser, path):
            return parser
    return _build(None)


def _command_path(argv: Sequence[str]) -> tuple[str, ...] | None:
    """The first two words of ``argv`` that are not options (``("runs", "list")``,
    ``("report", ...)``), skipping the options accepted before a command; ``()`` for
    ``--version``; None when an option before the command is another one (help,
    ``--``, ...)."""
    words: list[str] = []
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            words.append(arg)
            if len(words) == 2:
                break
            continue
        name, eq, _ = arg.partition("=")
        if len(name) >= 3 and "--database".startswith(name):  # argparse takes prefixes
            if not eq:
                next(args, None)  # its value
        elif name == "--verbose" or (name[1:] and name[1:] == "v" * len(name[1:])):
            pass  # -v, -vv, ...
        elif len(name) >= 6 and "--version".startswith(name) and not words:
            return ()  # argparse prints the version when it meets the option: no command
        elif words:
            break  # the command's own options follow
        else:
            return None
    return tuple(words) or None


def _holds(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> bool:
    """Whether ``parser`` has the command (and the action, for a command with actions)
    that ``path`` names, so parsing cannot miss a part that was not built."""
    for word in path:
        choices = next(
            (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
            None,
        )
        if choices is None:
            return True  # a command without actions: later words are its arguments
        if word not in choices:
            return False
        parser = choices[word]
    return True


def _build(path: tuple[str, ...] | None) -> argparse.ArgumentParser:
    """The parser, with only the commands on ``path`` (all of them for None)."""

    def want(*words: str) -> bool:
        """Whether to build the parser of ``words`` (a command, or a command's action)."""
        if path is None:
            return True
        return bool(path) and path[: len(words)] == words[: len(path)]

    common = _common_options()
    parser: argparse.ArgumentParser = _ArgumentParser(
        prog="exectrack",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_RawDescription,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )

    if want("runs"):
        filters = _filter_options()
        runs = commands.add_parser(
            "runs",
            parents=[common],
            help="list, show and count recorded runs",
            description="List, show and count recorded runs (newest first).",
        )
        actions = runs.add_subparsers(
            title="actions", dest="action", required=True, metavar="ACTION"
        )

        if want("runs", "list"):
            p = actions.add_parser(
                "list",
                parents=[common, filters],
                help="list runs, newest first, one page at a time",
                description=(
                    "List runs matching the filters, newest first. Pages are keyset-based: pass "
                    "the cursor printed after a page (next_cursor with --json) to get the next "
                    "one; runs recorded meanwhile never make a page repeat or skip a run."
                ),
            )
            p.add_argument(
                "--limit",
                type=int,
                default=50,
                metavar="N",
                help=f"runs per page, 1-{query.MAX_PAGE_SIZE} (default: 50)",
            )
            p.add_argument("--cursor", metavar="CURSOR", help="continue after a previous page")
            _json_option(p, '{"runs": [...], "next_cursor": ...}')
            p.set_defaults(handler=_cmd_list)

        if want("runs", "get"):
            p = actions.add_parser(
                "get",
                parents=[common],
                help="show one run by id",
                description=(
                    "Show every field of one run, metadata included. Exits 1 if no run has ID."
                ),
            )
            p.add_argument("id", metavar="ID", help="the run id (a UUID)")
            _json_option(p, "the run's fields")
            p.set_defaults(handler=_cmd_get)

        if want("runs", "latest"):
            p = actions.add_parser(
                "latest",
                parents=[common, filters],
                help="show the newest run matching the filters",
                description=(
                    "Show the newest run matching the filters, like `runs get` (e.g. the last "
                    "run of one scheduled task). Exits 1 if no run matches."
                ),
            )
            _json_option(p, "the run's fields")
            p.set_defaults(handler=_cmd_latest)

        if want("runs", "stats"):
            p = actions.add_parser(
                "stats",
                parents=[common, filters],
                help="count runs by status and by source",
                description=(
                    "Count the runs matching the filters by status and by source, with the "
                    "number still open and the error rate (error + timeout among finished runs)."
                ),
            )
            _json_option(p, "total, open, error_rate, by_status, by_source")
            p.set_defaults(handler=_cmd_stats)

        if want("runs", "tail"):
            from exectrack._cli_serve import add_tail_command

            add_tail_command(actions, common)

    if want("migrate"):
        p = commands.add_parser(
            "migrate",
            parents=[common],
            help="create or upgrade the database schema",
            description=(
                "Apply pending schema migrations (creating the database if needed) and print "
                "the versions applied, or that the schema is up to date. This is the only "
                "command that creates or changes a database; the others exit 1 on a "
                "database without exectrack's schema."
            ),
        )
        _json_option(p, "database, applied (versions), version")
        p.set_defaults(handler=_cmd_migrate, creates=True)

    if want("reap"):
        p = commands.add_parser(
            "reap",
            parents=[common],
            help="finish runs left open by dead processes or past their deadline",
            description=(
                "Finish, once, every open run whose process on this host is gone or whose "
                "lease expired (error/abandoned), or that is past its deadline "
                "(timeout/deadline_exceeded); a queued one ends canceled. Prints what it "
                "finished. Safe to run beside live processes and other reapers."
            ),
        )
        p.add_argument("--dry-run", action="store_true", help="show what would be finished")
        _json_option(p, "dry_run, reaped (id, source, status, error_code, reason, ...)")
        p.set_defaults(handler=_cmd_reap)

    if want("report"):
        p = commands.add_parser(
            "report",
            parents=[common],
            help="hang rate and outcomes per source",
            description=(
                "Per source, over the runs started in the window: runs started and how "
                "they ended, runs open (and open past their lease), runs reaped as "
                "abandoned, the hang rate ((abandoned + open past lease) / started), the "
                "age of the oldest open run, p50/p95 duration, p50/p95 time to first item "
                "of streams, and the top error codes."
            ),
        )
        p.add_argument("--since", metavar="TIME", help=f"window start: {_TIME_HELP} (default: all)")
        _json_option(p, "since, now, sources [...]")
        p.set_defaults(handler=_cmd_report)

    if want("serve"):
        from exectrack._cli_serve import add_serve_command

        add_serve_command(commands, common)

    if want("demo"):
        from exectrack._cli_demo import add_demo_command

        add_demo_command(commands, common)

    if want("heartbeat") or want("legacy"):
        from exectrack import _cli_heartbeat

        _cli_heartbeat.add_commands(commands, common, _TIME_HELP)

    return parser


# -- running -----------------------------------------------------------------------------


def _error(message: str) -> int:
    """Print one ``exectrack: ...`` line on stderr; return the user-error exit code."""
    line = " ".join(redact_url(message).split()) or "error"
    print(f"exectrack: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


def _open(args: argparse.Namespace) -> Store:
    url: str | None = getattr(args, "database", None)
    if url is None:
        url = Settings.from_env().resolved_database_url()
    creates: bool = getattr(args, "creates", False)
    store = open_store(url, migrate=creates)
    if not creates:
        _require_existing(store)
    return store


def _require_existing(store: Store) -> None:
    """Reads never create a database: a typo in a path is an error, not an empty result."""
    from exectrack.stores.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore) and not store.memory and not os.path.exists(store.path):
        store.close()
        raise ConfigError(
            f"no database at {store.path} (check --database or EXECTRACK_DATABASE_URL; "
            "`exectrack migrate` creates it)"
        )


def _quiet_stdout() -> None:
    """The reader went away (``exectrack runs list | head``): send the rest nowhere."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``exectrack`` command; return its exit code (never raises for user errors)."""
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: keep argparse's code
        status = exc.code
        return status if isinstance(status, int) else (EXIT_OK if status is None else 2)
    undo_logging = to_stderr(getattr(args, "verbose", 0))
    try:
        if getattr(args, "no_store", False):  # e.g. validating a task file
            code = int(args.handler(args, None))
        else:
            store = _open(args)
            try:
                handler: Handler = args.handler
                code = handler(args, store)
            finally:
                store.close()
        sys.stdout.flush()
        return code
    except ExectrackError as exc:
        return _error(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_USER_ERROR
    finally:
        undo_logging()


if __name__ == "__main__":
    raise SystemExit(main())

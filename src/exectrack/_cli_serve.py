"""``exectrack serve`` (the runs panel and its HTTP API) and ``exectrack runs tail``
(follow the change feed in a terminal)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from exectrack import _cli_format as fmt
from exectrack import query
from exectrack._config import Settings
from exectrack._model import Run
from exectrack.errors import ConfigError, DriverMissingError, SchemaTooNewError, StoreError
from exectrack.stores import Store, redact_url

if TYPE_CHECKING:
    import socket

# ipaddress, json, socket and time are imported where they are used: building the
# parser (every command does) must not pay for them.

__all__ = ["add_serve_command", "add_tail_command", "is_loopback"]

EXIT_OK = 0
EXIT_USAGE = 2


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except (OSError, OverflowError) as exc:  # in use, no such address, port > 65535
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def _cmd_serve(args: argparse.Namespace, _: None) -> int:
    token = args.token if args.token is not None else Settings.from_env().token
    if not is_loopback(args.host) and not token:
        print(
            f"exectrack: refusing to serve on {args.host!r} without a token: anyone who can "
            "reach it could read every run; pass --token or set EXECTRACK_TOKEN",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        import uvicorn

        from exectrack.server import create_app
    except ImportError as exc:
        raise DriverMissingError(
            f"exectrack serve needs FastAPI and uvicorn: pip install 'exectrack[server]' ({exc})"
        ) from exc
    from exectrack.cli import _open

    sock = _bind(args.host, args.port)  # before the database: a busy port changes nothing
    try:
        store = _open(args)
        try:
            host = args.host if ":" not in args.host else f"[{args.host.strip('[]')}]"
            url = f"http://{host}:{sock.getsockname()[1]}/"
            app = create_app(store, token=token or "", reaper=True)
            config = uvicorn.Config(
                app, log_level="warning", timeout_graceful_shutdown=2, proxy_headers=False
            )

            class Server(uvicorn.Server):
                async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                    await super().startup(sockets=sockets)
                    if self.started:  # listening: the URL printed now answers
                        print(f"exectrack serve: the runs panel is at {url}", flush=True)
                        print(f"exectrack serve: reading {redact_url(store.url)}", flush=True)
                        if token:
                            print("exectrack serve: every request needs the token", flush=True)

            Server(config).run(sockets=[sock])
        finally:
            store.close()
    finally:
        sock.close()
    print("exectrack serve: stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def add_serve_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the runs panel, its HTTP API, badges and /metrics (needs exectrack[server])",
        description=(
            "Serve the runs panel and its read-only HTTP API (api/runs, api/stats, "
            "api/report, the change feed, badges, /metrics, openapi.json) for the "
            "database of --database / EXECTRACK_DATABASE_URL, creating its schema if "
            "needed, and reap abandoned runs while it runs. Binds 127.0.0.1 unless told "
            "otherwise; any other address needs a token (--token or EXECTRACK_TOKEN) "
            "that every request must carry. Ctrl-C stops."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free)")
    p.add_argument(
        "--token",
        default=None,
        help="require this token (Authorization: Bearer or ?token=); default: $EXECTRACK_TOKEN",
    )
    p.set_defaults(handler=_cmd_serve, no_store=True, creates=True)


def _line(run: Run) -> str:
    at = run.updated_at or run.started_at
    return "  ".join(
        [
            fmt.utc_seconds(at),
            f"{run.status.value:<8}",
            fmt.cell(run.source),
            fmt.cell(run.source_ref, fmt.REF_WIDTH),
            run.id,
            fmt.duration(run.duration_ms),
            fmt.cell(run.error_code),
        ]
    )


TAIL_MAX_PAUSE = 5.0  # seconds between polls while the store fails


def _cmd_tail(args: argparse.Namespace, store: Store) -> int:
    import json
    import time

    if args.after is not None:
        cursor: str | None = args.after
    elif args.from_start:
        cursor = None
    else:
        cursor = query.changes_head(store)
    failing = False
    pause = args.interval
    while True:
        try:
            changes = query.changes(store, cursor, limit=500)
        except StoreError as exc:
            if isinstance(exc, SchemaTooNewError):
                raise
            # A restarted server, a locked or moved file: say so once, keep the
            # cursor, and poll again less often until the store answers.
            if not failing:
                print(f"exectrack: {exc}; retrying from where the feed stopped", file=sys.stderr)
                failing = True
            time.sleep(pause)
            pause = min(pause * 2, max(args.interval, TAIL_MAX_PAUSE))
            continue
        if failing:
            print("exectrack: the store answers again", file=sys.stderr)
            failing, pause = False, args.interval
        for run in changes.runs:
            if args.json:
                fmt.out(json.dumps(run.to_dict()))
            else:
                fmt.out(_line(run))
        sys.stdout.flush()
        cursor = changes.cursor
        if len(changes.runs) < 500:
            time.sleep(args.interval)


def _interval(text: str) -> float:
    value = float(text)
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0.05 and 3600 seconds")
    return value


def add_tail_command(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = actions.add_parser(
        "tail",
        parents=[common],
        help="follow runs as they start, change and finish",
        description=(
            "Print a line per run created or changed (started, finished, reaped) from "
            "now on, as the change feed reports them, until Ctrl-C (exit 130). With "
            "--json, one JSON object per line."
        ),
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--from-start", action="store_true", help="replay every change first")
    where.add_argument("--after", metavar="CURSOR", help="continue after a change cursor")
    p.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two polls (default: 1)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per run change")
    p.set_defaults(handler=_cmd_tail)

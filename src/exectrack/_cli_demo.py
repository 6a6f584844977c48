"""``exectrack demo``: run the demo agent host (the README's first command)."""

from __future__ import annotations

import argparse
import sys

from exectrack.errors import DriverMissingError
from exectrack.stores import Store, redact_url

__all__ = ["add_demo_command"]

EXIT_OK = 0
EXIT_INTERRUPTED = 130


def _cmd_demo(args: argparse.Namespace, store: Store) -> int:
    try:
        from exectrack.demo import run_demo
    except ImportError as exc:
        raise DriverMissingError(
            f"the demo needs FastAPI, uvicorn and httpx: pip install 'exectrack[server]' ({exc})"
        ) from exc
    from exectrack import ExecutionTracker

    tracker = ExecutionTracker(store, reaper=True)
    where = redact_url(store.url)

    def ready(url: str) -> None:
        print(f"exectrack demo: the agent host is at {url}", flush=True)
        print(f"exectrack demo: the runs panel is at {url}runs/", flush=True)
        print(f"exectrack demo: runs are stored in {where}", flush=True)
        print(
            f"exectrack demo: look at them with `exectrack --database {where} runs list`"
            + ("" if args.duration is not None else "; Ctrl-C stops"),
            flush=True,
        )

    try:
        result = run_demo(
            tracker,
            host=args.host,
            port=args.port,
            duration=args.duration,
            traffic=not args.no_traffic,
            ready=ready,
        )
    except KeyboardInterrupt:
        tracker.shutdown()
        tracker.close()
        print("exectrack demo: stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    tracker.close()
    print(f"exectrack demo: stopped after recording {result.runs} runs", flush=True)
    return EXIT_OK


def add_demo_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = commands.add_parser(
        "demo",
        parents=[common],
        help="run a small tracked agent app with traffic (needs exectrack[server])",
        description=(
            "Serve the demo agent host on 127.0.0.1: a chat page whose streamed answers "
            "call tools (one slow, one rate-limited, one that reports failure, one that "
            "raises), a heartbeat task, and simulated users (one hangs up mid-answer), "
            "so runs of every source and outcome appear within a minute. Uses the "
            "database of --database / EXECTRACK_DATABASE_URL, else the default file."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any free)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after SECONDS")
    p.add_argument("--no-traffic", action="store_true", help="do not simulate users")
    p.set_defaults(handler=_cmd_demo, creates=True)

"""A small agent app whose three entry points are tracked by exectrack.

- a streamed chat turn (an async generator) that calls skills,
- skills: one succeeds, one hits a rate limit, one reports ``success=False``,
- a heartbeat task, and a chat stream the user stops half-way.

Run it with ``make demo``; it writes to ``demo-runs.db`` (or EXECTRACK_DATABASE_URL)
and then shows the runs with the CLI.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import exectrack
from exectrack import ClientDisconnected, ExecutionTracker, success_flag
from exectrack.cli import main as cli

URL = os.environ.get("EXECTRACK_DATABASE_URL") or f"sqlite:///{Path('demo-runs.db').resolve()}"
tracker = ExecutionTracker(URL)


class RateLimitError(Exception):
    status_code = 429


@tracker.with_run("skill", "web_search")
async def web_search(query: str) -> list[str]:
    await asyncio.sleep(0.01)
    exectrack.annotate(results=3)
    return [f"{query} result {i}" for i in range(3)]


@tracker.with_run("skill", "translate")
async def translate(text: str) -> str:
    await asyncio.sleep(0.005)
    raise RateLimitError("provider says: slow down (key sk-demo-abcdefghijklmnop0000)")


@tracker.with_run("skill", "send_email", classify_result=success_flag(code="skill_failed"))
def send_email(to: str) -> dict[str, Any]:
    return {"success": False, "error": f"mailbox {to} is full"}


@tracker.with_run("chat", "agent_turn")
async def chat_turn(session_id: str, question: str) -> AsyncIterator[str]:
    exectrack.annotate(session=session_id, model="small-model")
    hits = await web_search(question)
    try:
        await translate(hits[0])
    except RateLimitError:
        yield "(translation unavailable, answering in English)\n"
    for word in f"Here is what I found about {question}.".split():
        await asyncio.sleep(0.002)
        yield word + " "


@tracker.with_run("heartbeat", "inbox_digest")
def heartbeat() -> int:
    send_email("ops@example.com")
    return 1


async def main() -> None:
    async for chunk in chat_turn("session-1", "tidal energy"):
        sys.stdout.write(chunk)
    print()

    stream = chat_turn("session-2", "a very long question")
    async for chunk in stream:  # the user presses "stop" after the first chunk
        sys.stdout.write(chunk + "... [stopped]\n")
        break
    await stream.aclose()

    heartbeat()

    with tracker.with_run("chat", "agent_turn", session_id="session-3"):
        try:
            raise ClientDisconnected("browser tab closed")
        except ClientDisconnected:
            pass  # handled by the app; the run still ends as a success here

    try:
        async with tracker.with_run("chat", "agent_turn", session_id="session-4"):
            raise ClientDisconnected("browser tab closed mid-stream")
    except ClientDisconnected:
        pass


if __name__ == "__main__":
    asyncio.run(main())
    tracker.close()
    print(f"\nRuns recorded in {URL}:\n")
    cli(["--database", URL, "runs", "list", "--limit", "20"])
    print()
    cli(["--database", URL, "runs", "stats"])
    print(f"\nExplore: .venv/bin/exectrack --database {URL} runs list --status error")

"""Across entry points: N invocations of each (a streamed chat turn over ASGI, some
dropped by their client; a skill called inside each turn; a skill endpoint called
directly) leave exactly N runs of that source, all ended, parents right."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
from fastapi import FastAPI
from sse_starlette import EventSourceResponse

from exectrack import ExecutionTracker, RunStatus
from exectrack.integrations.asgi import ExectrackMiddleware

from .conftest import Served, uvicorn_server, wait_for_ended

N = 24


def agent_app(tracker: ExecutionTracker) -> FastAPI:
    app = FastAPI()

    @tracker.with_run("skill", "search")
    async def search(query: str) -> list[str]:
        await anyio.lowlevel.checkpoint()
        return [query]

    @tracker.with_run("chat", "turn")
    async def turn(question: str, hang: bool) -> AsyncIterator[dict[str, str]]:
        for hit in await search(question):
            yield {"data": hit}
        yield {"data": "done"}
        if hang:
            await anyio.sleep_forever()

    @app.get("/chat")
    async def chat(q: str, hang: bool = False) -> EventSourceResponse:
        return EventSourceResponse(turn(q, hang), ping=0)

    @app.get("/skill")
    @tracker.with_run("skill", "direct")
    async def skill(q: str) -> dict[str, str]:
        await anyio.lowlevel.checkpoint()
        return {"q": q}

    app.add_middleware(ExectrackMiddleware)
    return app


def call(served: Served, i: int) -> None:
    with httpx.Client(timeout=10) as client:
        if i % 3 == 0:
            assert client.get(served.url(f"/skill?q={i}")).json() == {"q": str(i)}
        elif i % 3 == 1:
            assert "done" in client.get(served.url(f"/chat?q={i}")).text
        else:  # read the first event, then drop the connection
            with client.stream("GET", served.url(f"/chat?q={i}&hang=true")) as response:
                next(line for line in response.iter_lines() if line.startswith("data:"))


def test_n_invocations_of_each_entry_point_leave_n_ended_runs(
    engine_tracker: ExecutionTracker,
) -> None:
    """3N requests from 8 concurrent clients: N direct skill calls (no parent), N
    full chat turns and N dropped ones (success / client_disconnected), N*2 skill
    runs inside turns, each the child of its own turn; nothing left running, on
    SQLite and PostgreSQL."""
    tracker = engine_tracker
    with uvicorn_server(agent_app(tracker)) as served:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: call(served, i), range(3 * N)))
        chats = wait_for_ended(tracker, 2 * N, source="chat")
        skills = wait_for_ended(tracker, 3 * N, source="skill")
    assert len(chats) == 2 * N and len(skills) == 3 * N
    assert tracker.list_runs(status=["running", "queued"]).runs == []
    outcomes: dict[Any, int] = {}
    for run in chats:
        key = (run.status, run.error_code)
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes == {
        (RunStatus.SUCCESS, None): N,
        (RunStatus.CANCELED, "client_disconnected"): N,
    }
    direct = [r for r in skills if r.source_ref == "direct"]
    nested = [r for r in skills if r.source_ref == "search"]
    assert len(direct) == N and all(r.parent_id is None for r in direct)
    assert sorted(r.parent_id or "" for r in nested) == sorted(r.id for r in chats)
    assert all(r.status is RunStatus.SUCCESS for r in skills)

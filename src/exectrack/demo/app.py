"""The demo agent host's web app: a chat page (with the latest-status badges), a
streamed chat endpoint whose turns call tools, a small JSON list of the latest runs
for the page to show, and the runs panel with its HTTP API mounted at ``/runs/``."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from exectrack import ExecutionTracker
from exectrack.demo.model import FakeModel
from exectrack.demo.tools import Tools, make_tools
from exectrack.integrations.asgi import ExectrackMiddleware
from exectrack.server import create_app as create_panel

__all__ = ["create_app"]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {"chat.js": "text/javascript", "chat.css": "text/css"}


class ProviderError(ConnectionError):
    """The fake model's provider went away mid-answer (every ninth turn)."""


def _static(name: str) -> str:
    return resources.files("exectrack.demo").joinpath("static", name).read_text("utf-8")


def create_app(
    tracker: ExecutionTracker,
    *,
    model: FakeModel | None = None,
    tools: Tools | None = None,
) -> FastAPI:
    """The demo app, recording into ``tracker``."""
    model = model if model is not None else FakeModel()
    tools = tools if tools is not None else make_tools(tracker)
    turns = itertools.count()
    app = FastAPI(title="exectrack demo agent host", docs_url=None, redoc_url=None)
    # A tracked stream ends when its response really ends: a user who hangs up is
    # client_disconnected (with the chunks sent), a server shutdown is shutdown.
    app.add_middleware(ExectrackMiddleware)

    async def turn_stream(message: str, turn: int) -> AsyncIterator[str]:
        plan = model.plan(turn, message)
        for name in plan.tools:
            argument = "2+x" if name == "calculator" and turn % 2 else "2+3"
            try:
                await tools.call(name, argument if name == "calculator" else message)
                yield f"[{name}: ok]\n"
            except Exception as exc:  # the agent reports a failed tool and goes on
                yield f"[{name}: failed ({type(exc).__name__})]\n"
        sent = 0
        async for token in model.stream(plan.answer):
            if turn % 9 == 8 and sent == 3:
                raise ProviderError("the model provider closed the stream")
            sent += 1
            yield token
        yield "\n"

    async def answer(stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """The response body: the tracked turn, closed with the response (so a client
        that hangs up ends the turn at once), its provider failure told to the user
        instead of raised into the server (the run records it as an error)."""
        async with contextlib.aclosing(stream) as chunks:  # type: ignore[type-var]
            try:
                async for chunk in chunks:
                    yield chunk
            except ProviderError:
                yield "\n[the model provider failed; this turn is recorded as an error]\n"

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(_static("index.html"), headers={"Content-Security-Policy": _CSP})

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(status_code=404, detail="no such file")
        return Response(_static(name), media_type=_STATIC[name])

    @app.post("/api/chat")
    async def chat(request: Request) -> StreamingResponse:
        body: Any = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            raise HTTPException(status_code=422, detail="send {'message': str, 'session_id': str}")
        session = str(body.get("session_id") or "anonymous")[:128]
        turn = next(turns)
        tracked = tracker.with_run("chat", "chat_turn", session_id=session)(turn_stream)
        return StreamingResponse(answer(tracked(body["message"], turn)), media_type="text/plain")

    @app.get("/api/recent")
    async def recent() -> JSONResponse:
        page = tracker.list_runs(limit=25)
        return JSONResponse({"runs": [run.to_dict() for run in page.runs]})

    app.mount("/runs", create_panel(tracker, token=""))  # a demo on 127.0.0.1: no token

    return app

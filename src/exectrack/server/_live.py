"""The change feed: ``api/runs/changes`` (one page) and its Server-Sent Events stream
``api/runs/changes/stream``, which polls the store every ``live_interval`` seconds
and sends what changed, so a client updates rows instead of re-listing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from exectrack import ExectrackError, query
from exectrack._log import get_logger

from . import _models as m
from ._api import _ERRORS
from ._errors import parameter
from ._params import MAX_LIMIT
from ._state import ServerState

__all__ = ["live_router"]

log = get_logger(__name__)

_AFTER = "a cursor: the changes_cursor of a runs page or the cursor of a change page"
After = Annotated[str | None, Query(max_length=512, description=_AFTER)]


def _body(changes: query.Changes) -> dict[str, Any]:
    return {"runs": [r.to_dict() for r in changes.runs], "cursor": changes.cursor}


def live_router(state: ServerState) -> APIRouter:
    router = APIRouter()
    reader = state.reader

    def read(after: str | None, limit: int) -> query.Changes:
        reader.sync()
        return query.changes(reader.store, after, limit=limit)

    @router.get("/api/runs/changes", response_model=m.ChangesOut, responses=_ERRORS)
    def changes(
        after: After = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="runs at most")] = MAX_LIMIT,
    ) -> JSONResponse:
        """Runs created or changed after the cursor (from the start of history without
        one), oldest change first, each once and as it is now."""
        with parameter("after"):
            return JSONResponse(_body(read(after, limit)))

    @router.get(
        "/api/runs/changes/stream",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS},
    )
    async def stream(
        after: After = None,
        last_event_id: Annotated[str | None, Header(max_length=512)] = None,
    ) -> EventSourceResponse:
        """The change feed as Server-Sent Events: ``event: runs`` with ``id:`` the
        cursor and ``data:`` a change page, whenever something changed; a
        ``: keepalive`` comment every 15 s. A reconnecting EventSource's
        ``Last-Event-ID`` wins over ``after``. While the store fails, the stream
        stays open and polls again (an EventSource gives up on a failed reconnect)."""
        start = last_event_id or after
        name = "Last-Event-ID" if last_event_id else "after"
        with parameter(name):  # a bad cursor is a 400 now, not a broken stream later
            first = await run_in_threadpool(read, start, MAX_LIMIT)
        return EventSourceResponse(
            _events(state, read, first),
            ping=state.keepalive,
            sep="\n",
            ping_message_factory=lambda: ServerSentEvent(comment="keepalive", sep="\n"),
        )

    return router


async def _events(
    state: ServerState, read: Any, first: query.Changes
) -> AsyncIterator[ServerSentEvent]:
    state.streams += 1
    failing = False  # log an outage once, not once per poll
    try:
        changes = first
        while True:
            if changes.runs:
                yield ServerSentEvent(
                    json.dumps(_body(changes), separators=(",", ":")),
                    id=changes.cursor,
                    event="runs",
                    sep="\n",
                )
            if len(changes.runs) < MAX_LIMIT:  # caught up: wait before the next poll
                await anyio.sleep(state.live_interval)
                if state.stopping.is_set():  # the app's lifespan ended
                    return
            try:
                changes = await run_in_threadpool(read, changes.cursor, MAX_LIMIT)
            except ExectrackError as exc:  # the store is down: keep the client, try again
                state.store_errors += 1
                if not failing:
                    log.warning("exectrack server: the change stream cannot read: %s", exc)
                failing = True
                changes = query.Changes([], changes.cursor)
            else:
                failing = False
    finally:
        state.streams -= 1

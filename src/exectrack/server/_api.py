"""The JSON routes: thin over :mod:`exectrack.query`, one read path for everything."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from exectrack import Run, RunStatus, query

from . import _models as m
from ._errors import ApiError, parameter
from ._params import MAX_LIMIT, MAX_SCOPES, parse_scope, run_filter
from ._state import ServerState

__all__ = ["api_router"]

CHILDREN_LIMIT = 200
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": m.ErrorOut, "description": "a parameter is invalid (named in the error)"},
    401: {"model": m.ErrorOut, "description": "the token is missing or wrong"},
    503: {"model": m.ErrorOut, "description": "the run store is unavailable"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": m.ErrorOut, "description": "no run has this id"}
}

_TIME = "ISO 8601 (2026-11-25T10:00:00Z; no zone means UTC) or an age: 30s, 15m, 2h, 7d, 1w"
Sources = Annotated[
    list[str] | None,
    Query(max_length=50, description="runs of this source; repeat for any of several"),
]
Statuses = Annotated[
    list[RunStatus] | None,
    Query(max_length=6, description="runs in this status; repeat for any of several"),
]
SessionId = Annotated[str | None, Query(max_length=512, description="runs of this session")]
SourceRef = Annotated[str | None, Query(max_length=512, description="runs of this source_ref")]
ParentId = Annotated[str | None, Query(max_length=512, description="child runs of this run")]
Since = Annotated[str | None, Query(max_length=64, description=f"started at or after: {_TIME}")]
Until = Annotated[str | None, Query(max_length=64, description=f"started before: {_TIME}")]
Text = Annotated[
    str | None,
    Query(max_length=512, description="case-insensitive text in source_ref or error_message"),
]


def _json(body: Any) -> JSONResponse:
    return JSONResponse(body)


def _run(run: Run | None) -> dict[str, Any] | None:
    return None if run is None else run.to_dict()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def api_router(state: ServerState) -> APIRouter:
    router = APIRouter()
    reader = state.reader

    @router.get("/api/runs", response_model=m.RunsOut, responses=_ERRORS)
    def list_runs(
        source: Sources = None,
        status: Statuses = None,
        session_id: SessionId = None,
        source_ref: SourceRef = None,
        parent_id: ParentId = None,
        since: Since = None,
        until: Until = None,
        text: Text = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="runs per page")] = 50,
        cursor: Annotated[
            str | None, Query(max_length=512, description="the next_cursor of the previous page")
        ] = None,
    ) -> JSONResponse:
        """One page of runs, newest first (keyset pages on started_at, id), with
        ``changes_cursor``: the change feed's position taken before the page was read
        (follow api/runs/changes from it and no update to the page is missed)."""
        flt = run_filter(
            reader.now(),
            source=source,
            status=status,
            session_id=session_id,
            source_ref=source_ref,
            parent_id=parent_id,
            since=since,
            until=until,
            text=text,
        )
        reader.sync()
        head = query.changes_head(reader.store)  # before the read: no update is missed
        with parameter("cursor"):
            page = query.list_runs(reader.store, flt, limit=limit, cursor=cursor)
        return _json(
            {
                "runs": [r.to_dict() for r in page.runs],
                "next_cursor": page.next_cursor,
                "changes_cursor": head,
            }
        )

    @router.get("/api/runs/latest", response_model=m.LatestOut, responses=_ERRORS)
    def latest_run(
        source: Annotated[str | None, Query(max_length=64)] = None,
        source_ref: SourceRef = None,
        session_id: SessionId = None,
    ) -> JSONResponse:
        """The newest run of exactly this scope (null when it never ran)."""
        flt = run_filter(reader.now(), source=source, source_ref=source_ref, session_id=session_id)
        reader.sync()
        return _json({"run": _run(query.latest_run(reader.store, flt))})

    @router.get("/api/runs/{run_id}", response_model=m.RunDetailOut, responses=_ERRORS | _NOT_FOUND)
    def get_run(run_id: Annotated[str, Path(max_length=512)]) -> JSONResponse:
        """One run with its children (oldest first; the latest 200 when there are more)."""
        reader.sync()
        run = query.get_run(reader.store, run_id)
        if run is None:
            raise ApiError(404, f"no run has the id {run_id[:80]!r}")
        children = query.list_runs(
            reader.store, query.make_filter(parent_id=run.id), limit=CHILDREN_LIMIT
        ).runs
        return _json({"run": run.to_dict(), "children": [c.to_dict() for c in reversed(children)]})

    @router.get("/api/stats", response_model=m.StatsOut, responses=_ERRORS)
    def stats(
        since: Since = "24h",
        until: Until = None,
        source: Sources = None,
    ) -> JSONResponse:
        """Per source over a window (default: the last 24 hours): counts by status,
        open runs, success rate (success / finished), p50/p95/p99 duration and the top
        error codes."""
        flt = run_filter(reader.now(), since=since or "24h", until=until, source=source)
        reader.sync()
        return _json(
            {
                "since": _iso(flt.started_after),
                "until": _iso(flt.started_before),
                "sources": [s.to_dict() for s in query.source_stats(reader.store, flt)],
            }
        )

    @router.get("/api/report", response_model=m.ReportOut, responses=_ERRORS)
    def report(since: Since = "24h") -> JSONResponse:
        """The hang-rate report per source over the runs started since ``since``
        (default: the last 24 hours)."""
        now = reader.now()
        with parameter("since"):
            start = query.parse_time(since or "24h", now=now)
        reader.sync()
        return _json(query.report(reader.store, since=start, now=now).to_dict())

    @router.get("/api/badges", response_model=m.BadgesOut, responses=_ERRORS)
    def badges(
        scope: Annotated[
            list[str] | None,
            Query(
                max_length=MAX_SCOPES,
                description="source[:source_ref[:session_id]]; repeat, up to 200",
            ),
        ] = None,
    ) -> JSONResponse:
        """The latest run of every scope of a page, in one query."""
        scopes = scope or []
        parsed = [parse_scope(s) for s in scopes]
        now = reader.now()
        filters = []
        for text, args in zip(scopes, parsed, strict=True):
            try:
                filters.append(run_filter(now, **args))
            except ApiError as exc:
                raise ApiError(
                    400, f"scope {text[:80]!r}: {exc.message}", parameter="scope"
                ) from None
        reader.sync()
        latest = query.latest_runs(reader.store, filters)
        return _json(
            {
                "badges": [
                    {
                        "scope": text,
                        "source": args["source"],
                        "source_ref": args["source_ref"],
                        "session_id": args["session_id"],
                        "status": None if run is None else run.status.value,
                        "run_id": None if run is None else run.id,
                        "started_at": None if run is None else _iso(run.started_at),
                    }
                    for text, args, run in zip(scopes, parsed, latest, strict=True)
                ]
            }
        )

    return router

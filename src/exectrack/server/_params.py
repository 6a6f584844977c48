"""Query parameters -> query-layer arguments, every failure naming its parameter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from exectrack import InvalidArgumentError, RunFilter, query

from ._errors import ApiError

__all__ = ["MAX_LIMIT", "MAX_SCOPES", "parse_scope", "run_filter"]

MAX_LIMIT = 500
MAX_SCOPES = 200


def run_filter(now: datetime, **params: Any) -> RunFilter:
    """``query.make_filter`` of the request's parameters (HTTP names are the query
    layer's); when it refuses them, the first parameter it refuses alone is named."""
    given = {name: value for name, value in params.items() if value is not None}
    try:
        return query.make_filter(now=now, **given)
    except InvalidArgumentError as exc:
        for name, value in given.items():
            try:
                query.make_filter(now=now, **{name: value})
            except InvalidArgumentError as alone:
                raise ApiError(400, str(alone), parameter=name) from None
        raise ApiError(400, str(exc)) from None


def parse_scope(scope: str) -> dict[str, str | None]:
    """``source[:source_ref[:session_id]]`` (split at the first two colons; an empty
    part means "any") -> make_filter arguments."""
    source, ref, session = ([*scope.split(":", 2), "", ""])[:3]
    return {"source": source, "source_ref": ref or None, "session_id": session or None}

"""Response shapes for the published OpenAPI schema. Routes return plain JSON built
from the query layer's ``to_dict``; these models only document it (and the
schemathesis test checks that what is sent matches them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from exectrack import RunStatus

__all__ = [
    "BadgeEntry",
    "BadgesOut",
    "ChangesOut",
    "ErrorOut",
    "LatestOut",
    "RunDetailOut",
    "RunOut",
    "RunsOut",
    "ShieldsOut",
    "StatsOut",
]


class RunOut(BaseModel):
    id: str
    source: str
    status: RunStatus
    started_at: str
    source_ref: str | None
    session_id: str | None
    parent_id: str | None
    finished_at: str | None
    duration_ms: float | None
    error_code: str | None
    error_message: str | None
    retryable: bool | None
    metadata: dict[str, Any]
    owner: str | None
    heartbeat_at: str | None
    deadline_at: str | None
    updated_at: str | None
    lease_until: str | None
    items: int | None
    first_item_ms: float | None


class RunsOut(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None
    changes_cursor: str


class RunDetailOut(BaseModel):
    run: RunOut
    children: list[RunOut]


class LatestOut(BaseModel):
    run: RunOut | None


class ChangesOut(BaseModel):
    runs: list[RunOut]
    cursor: str


class ErrorCount(BaseModel):
    code: str
    count: int


class SourceStatsOut(BaseModel):
    source: str
    total: int
    by_status: dict[str, int]
    open: int
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    top_errors: list[ErrorCount]


class StatsOut(BaseModel):
    since: str
    until: str | None
    sources: list[SourceStatsOut]


class SourceReportOut(BaseModel):
    source: str
    started: int
    by_status: dict[str, int]
    open: int
    open_past_lease: int
    abandoned: int
    hang_rate: float | None
    oldest_open_age_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    top_errors: list[ErrorCount]
    first_item_p50_ms: float | None
    first_item_p95_ms: float | None


class ReportOut(BaseModel):
    since: str | None
    now: str
    sources: list[SourceReportOut]


class BadgeEntry(BaseModel):
    scope: str
    source: str
    source_ref: str | None
    session_id: str | None
    status: RunStatus | None
    run_id: str | None
    started_at: str | None


class BadgesOut(BaseModel):
    badges: list[BadgeEntry]


class ShieldsOut(BaseModel):
    schemaVersion: int  # noqa: N815 - shields.io's field name
    label: str
    message: str
    color: str


class ErrorDetail(BaseModel):
    code: str
    parameter: str | None
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail

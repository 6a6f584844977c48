"""Property: paging through /api/runs with any filter combination returns exactly the
matching runs, each once, newest first, while runs are written between pages (a run
written behind the cursor is found later; one written ahead of it is not repeated)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from exectrack import RunStatus
from exectrack._model import datetime_to_us
from exectrack.server import create_app
from exectrack.stores import NewRun, open_store
from exectrack.stores._sql import SqlStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SOURCES = ("chat", "skill", "heartbeat")
SESSIONS = ("s1", "s2", None)
REFS = ("Alpha", "beta", "alphabet", None)
PARENTS = ("p1", "p2", None)
MESSAGES = ("Rate limit", "timeout while reading", None)


@dataclass(frozen=True)
class Row:
    id: str
    source: str
    status: RunStatus
    second: int
    session_id: str | None
    source_ref: str | None
    parent_id: str | None
    error_message: str | None

    @property
    def key(self) -> tuple[int, str]:
        return (self.second, self.id)


@st.composite
def rows(draw: Any, prefix: str, max_size: int) -> list[Row]:
    n = draw(st.integers(0, max_size))
    return [
        Row(
            id=f"{prefix}{i:03d}-{draw(st.integers(0, 99)):02d}",
            source=draw(st.sampled_from(SOURCES)),
            status=draw(st.sampled_from(list(RunStatus))),
            second=draw(st.integers(0, 30)),  # few distinct times: many ties on started_at
            session_id=draw(st.sampled_from(SESSIONS)),
            source_ref=draw(st.sampled_from(REFS)),
            parent_id=draw(st.sampled_from(PARENTS)),
            error_message=draw(st.sampled_from(MESSAGES)),
        )
        for i in range(n)
    ]


@st.composite
def filters(draw: Any) -> dict[str, Any]:
    f: dict[str, Any] = {}
    if draw(st.booleans()):
        f["source"] = draw(st.lists(st.sampled_from(SOURCES), min_size=1, max_size=2, unique=True))
    if draw(st.booleans()):
        f["status"] = draw(
            st.lists(
                st.sampled_from([s.value for s in RunStatus]), min_size=1, max_size=3, unique=True
            )
        )
    for name, values in (("session_id", SESSIONS), ("source_ref", REFS), ("parent_id", PARENTS)):
        if draw(st.integers(0, 3)) == 0:
            f[name] = draw(st.sampled_from([v for v in values if v]))
    if draw(st.integers(0, 2)) == 0:
        f["since"] = (T0 + timedelta(seconds=draw(st.integers(0, 30)))).isoformat()
    if draw(st.integers(0, 2)) == 0:
        f["until"] = (T0 + timedelta(seconds=draw(st.integers(0, 31)))).isoformat()
    if draw(st.integers(0, 3)) == 0:
        f["text"] = draw(st.sampled_from(["alpha", "LIMIT", "read", "zzz"]))
    return f


def matches(row: Row, f: dict[str, Any]) -> bool:
    """The filter semantics, written out independently of the query layer."""
    at = T0 + timedelta(seconds=row.second)
    text = f.get("text")
    message = row.error_message if row.status.is_terminal else None  # as written
    return (
        ("source" not in f or row.source in f["source"])
        and ("status" not in f or row.status.value in f["status"])
        and all(
            f.get(n) is None or getattr(row, n) == f[n]
            for n in ("session_id", "source_ref", "parent_id")
        )
        and ("since" not in f or at >= datetime.fromisoformat(f["since"]))
        and ("until" not in f or at < datetime.fromisoformat(f["until"]))
        and (
            text is None
            or any(text.lower() in (v or "").lower() for v in (row.source_ref, message))
        )
    )


def write(store: SqlStore, row: Row) -> None:
    at = datetime_to_us(T0 + timedelta(seconds=row.second))
    done = row.status.is_terminal
    store.create(
        NewRun(
            row.id,
            row.source,
            at,
            status=row.status,
            session_id=row.session_id,
            source_ref=row.source_ref,
            parent_id=row.parent_id,
            finished_at=at + 5 if done else None,
            duration_ms=1.0 if done else None,
            error_message=row.error_message if done else None,
        )
    )


def check_paging(
    client: TestClient,
    store: SqlStore,
    initial: list[Row],
    during: list[Row],
    flt: dict[str, Any],
    limit: int,
) -> None:
    with store._write() as cur:
        cur.execute("DELETE FROM runs")
    for row in initial:
        write(store, row)
    expected = [r for r in initial if matches(r, flt)]
    pending = list(during)
    got: list[str] = []
    cursor: str | None = None
    while True:
        params = [(k, v) for k, vs in flt.items() for v in (vs if isinstance(vs, list) else [vs])]
        params.append(("limit", str(limit)))
        if cursor is not None:
            params.append(("cursor", cursor))
        r = client.get("/api/runs", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["runs"]) <= limit
        got += [run["id"] for run in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # Between pages: write some runs. One sorting behind the last run returned
        # must be found later; one ahead of it is already passed.
        last = next(r for r in [*initial, *during] if r.id == got[-1]).key
        for _ in range(min(2, len(pending))):
            row = pending.pop()
            write(store, row)
            if matches(row, flt) and row.key < last:
                expected.append(row)
    assert len(got) == len(set(got)), "a run was returned twice"
    assert got == [r.id for r in sorted(expected, key=lambda r: r.key, reverse=True)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def paging_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_store")
        return
    s = open_store(tmp_path / "runs.db")
    assert isinstance(s, SqlStore)
    yield s
    s.close()


def test_paging_returns_each_matching_run_once_newest_first(paging_store: SqlStore) -> None:
    pg = "postgres" in type(paging_store).__name__.lower()
    paging_store.migrate()
    client = TestClient(create_app(paging_store))

    @settings(
        max_examples=15 if pg else 60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        initial=rows("a", 25),
        during=rows("b", 12),
        flt=filters(),
        limit=st.integers(1, 6),
    )
    def check(initial: list[Row], during: list[Row], flt: dict[str, Any], limit: int) -> None:
        note(f"initial={initial!r} during={during!r} flt={flt!r} limit={limit}")
        check_paging(client, paging_store, initial, during, flt, limit)

    with client:
        check()

"""Fixtures for the scheduling tests: a tracker, a fresh job module state, and the
PostgreSQL server for the legacy table (skips without EXECTRACK_TEST_POSTGRES_URL,
fails instead when EXECTRACK_REQUIRE_POSTGRES=1)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from scheduling import jobs


@pytest.fixture(autouse=True)
def fresh_jobs() -> Iterator[None]:
    """Every test starts with empty job state and releases blocked jobs at the end."""
    jobs.reset()
    yield
    jobs.release.set()


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get("EXECTRACK_TEST_POSTGRES_URL", "").strip()
    if not url:
        if os.environ.get("EXECTRACK_REQUIRE_POSTGRES", "").strip() == "1":
            pytest.fail("EXECTRACK_REQUIRE_POSTGRES=1 but EXECTRACK_TEST_POSTGRES_URL is not set")
        pytest.skip("EXECTRACK_TEST_POSTGRES_URL is not set")
    return url


@pytest.fixture
def pg_table(pg_url: str) -> Iterator[str]:
    """A unique legacy table name on the test server, dropped afterwards."""
    import psycopg

    name = "heartbeat_executions_" + secrets.token_hex(4)
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    """A BackgroundScheduler in UTC, shut down (blocked jobs released) afterwards."""
    s = BackgroundScheduler(timezone="UTC")
    yield s
    jobs.release.set()
    if s.running:
        s.shutdown(wait=True)

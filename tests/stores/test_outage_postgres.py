"""A PostgreSQL server that stops accepting the store's connections for a while: the
host never waits on it, and what was queued lands when it is back (issue 7, items 2
and 13)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

from exectrack import ExecutionTracker, RunStatus
from exectrack.stores import open_store
from exectrack.testing import FailingStore

from .conftest import PostgresServer, with_options

pytestmark = pytest.mark.postgres


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@dataclass
class Outage:
    """A login role of its own, so the server can refuse exactly this store."""

    pg: PostgresServer
    role: str
    schema: str
    url: str

    def begin(self) -> None:
        """New connections are refused and the open ones are killed."""
        self.pg.execute(f'ALTER ROLE "{self.role}" NOLOGIN')
        self.pg.terminate(self.schema)

    def end(self) -> None:
        self.pg.execute(f'ALTER ROLE "{self.role}" LOGIN')


@pytest.fixture
def outage(pg: PostgresServer) -> Iterator[Outage]:
    role = "exectrack_outage_" + secrets.token_hex(4)
    pg.execute(f'CREATE ROLE "{role}" LOGIN')
    [(database,)] = pg.execute("SELECT current_database()")
    pg.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
    schema, url = pg.new_schema()
    parts = urlsplit(url)
    netloc = f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    yield Outage(pg, role, schema, with_options(url, pool_timeout="0.5"))
    pg.execute(f'ALTER ROLE "{role}" LOGIN')
    pg.drop_created()
    pg.execute(f'DROP OWNED BY "{role}"')
    pg.execute(f'DROP ROLE "{role}"')


def test_finishes_queued_during_an_outage_land_with_their_status(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs open when the server goes away finish during the outage, more runs start
    and finish meanwhile: none is dropped or left running; every one lands with its
    own outcome once the server takes the store's connections again, and psycopg's
    reconnect warnings are logged once per kind, not once per attempt."""
    caplog.set_level(logging.WARNING)
    t = ExecutionTracker(outage.url, strict=False)
    before = [t.start("skill", "open-before") for _ in range(5)]
    assert t.flush(10)
    outage.begin()
    for h in before:
        h.finish_error(code="rate_limited", message="slow down", retryable=True)

    @t.with_run("skill", "during")
    def work(i: int) -> int:
        return i

    assert [work(i) for i in range(20)] == list(range(20))
    wait_until(lambda: t.stats().unavailable, "the writer saw the server gone")
    time.sleep(1.5)  # the outage lasts: several failed reconnects, several retries
    outage.end()
    wait_until(lambda: t.flush(1), "the queue drained after the outage")
    stats = t.stats()
    assert (stats.dropped, stats.unavailable, stats.open_runs) == (0, False, 0)
    runs = t.list_runs(limit=100).runs
    outcome = {(r.source_ref, r.status, r.error_code) for r in runs}
    assert len(runs) == 25
    assert outcome == {
        ("open-before", RunStatus.ERROR, "rate_limited"),
        ("during", RunStatus.SUCCESS, None),
    }
    pool_logs = [r.getMessage() for r in caplog.records if r.name == "psycopg.pool"]
    connecting = [m for m in pool_logs if m.startswith("error connecting in 'exectrack'")]
    assert len(connecting) <= 1, pool_logs
    t.close()


def test_a_slow_sync_failure_opens_the_breaker_until_a_probe_answers(outage: Outage) -> None:
    """durability="sync": the first write that waits for the pool (0.5 s) and fails
    opens the breaker: later writes skip the store at once (counted as dropped) instead
    of each waiting; the background probe closes it when the server is back. (The pool
    may first hand out its killed connection: that write fails fast and opens nothing.)"""
    store = FailingStore(open_store(outage.url), fail=set())
    t = ExecutionTracker(store, strict=False, durability="sync")
    t.start("skill", "committed").finish_success()
    outage.begin()
    for _ in range(100):
        t.start("skill", "skipped").finish_success()
    failed = store.calls["create"] - 1  # the committed run's create came first
    assert failed in (1, 2), store.calls  # [a fast failure, then] the slow one
    stats = t.stats()
    assert stats.unavailable and stats.dropped == 100 - failed
    outage.end()
    wait_until(lambda: not t.stats().unavailable, "the probe saw the server back")
    assert t.start("skill", "after").finish_success().applied
    refs = sorted(str(r.source_ref) for r in t.list_runs(limit=200).runs)
    assert refs == ["after", "committed"]
    t.close()

"""The change feed (schema version 3) on every engine: every write that changes a run
moves it forward, a lease renewal does not, paging returns each change once, and
a reader following the feed while many writers commit never misses a change."""

from __future__ import annotations

import threading
import time

import pytest

from exectrack import RunStatus, query
from exectrack.errors import InvalidArgumentError
from exectrack.stores import FinishRun, MarkRunning, NewRun
from exectrack.stores._sql import SqlStore

from .conftest import Target

T = 1_790_000_000_000_000
OWNER = "host:1:tok"


def _new(run_id: str, **kw: object) -> NewRun:
    kw.setdefault("owner", OWNER)
    return NewRun(run_id, "chat", T, **kw)  # type: ignore[arg-type]


def _done(run_id: str, status: RunStatus = RunStatus.SUCCESS) -> FinishRun:
    return FinishRun(run_id, status, T + 5_000, 5.0)


def _since(
    store: SqlStore, cursor: str, expect: int | None = None
) -> tuple[dict[str, RunStatus], str]:
    """The changes after ``cursor``. On PostgreSQL the feed trails the oldest
    transaction still running anywhere on the server (other tests' too), so the
    caller says how many runs it expects and this follows the feed until they came."""
    seen: dict[str, RunStatus] = {}
    deadline = time.monotonic() + 30
    while True:
        page = query.changes(store, cursor, limit=1000)
        ids = [r.id for r in page.runs]
        assert len(ids) == len(set(ids)), "a run appears once per page"
        seen.update({r.id: r.status for r in page.runs})
        cursor = page.cursor
        if expect is None or len(seen) >= expect or time.monotonic() > deadline:
            return seen, cursor
        time.sleep(0.01)


def test_every_write_that_changes_a_run_moves_it_forward(target: Target) -> None:
    """create, start, finish (single, batched, folded into its create) and reap each
    put the run after the previous head, at its current state; a lease renewal and a
    finish that loses change nothing the feed shows."""
    s = target.store
    head = query.changes_head(s)
    s.create(_new("a"))
    s.create(_new("q", status=RunStatus.QUEUED))
    s.create(_new("b"))
    seen, head = _since(s, head, 3)
    assert seen == {"a": RunStatus.RUNNING, "q": RunStatus.QUEUED, "b": RunStatus.RUNNING}

    assert s.start("q", T + 1).applied
    seen, head = _since(s, head, 1)
    assert seen == {"q": RunStatus.RUNNING}

    assert s.finish(_done("a")).applied
    s.apply([_done("b", RunStatus.ERROR), _new("c"), _done("c", RunStatus.CANCELED)])
    seen, head = _since(s, head, 3)
    assert seen == {"a": RunStatus.SUCCESS, "b": RunStatus.ERROR, "c": RunStatus.CANCELED}

    assert not s.finish(_done("a", RunStatus.ERROR)).applied  # the first finish won
    assert s.heartbeat(OWNER, T + 10, T + 60_000_000) == 1  # renews "q" only
    s.create(
        _new("marker", owner="other:2:tok")
    )  # once the feed reaches it, nothing before it is pending
    seen, head = _since(s, head, 1)
    assert seen == {"marker": RunStatus.RUNNING}

    [reaped] = s.reap(T + 10_000_000, dead_owners=[OWNER])
    assert reaped.run_id == "q"
    seen, head = _since(s, head, 1)
    assert seen == {"q": RunStatus.ERROR}
    assert query.changes(s, head).cursor == head  # nothing new: the cursor stays


def test_paging_through_the_feed_returns_every_change_once_in_order(target: Target) -> None:
    """1,200 runs written in batches (one finish batch over 500 distinct runs): pages
    of 97 from the start of history hold every run once, as it is now, and each page's
    cursor lies after the one before."""
    s = target.store
    n = 1_200
    for lo in range(0, n, 400):
        s.apply([_new(f"r{i:04}") for i in range(lo, lo + 400)])
    s.apply([_done(f"r{i:04}") for i in range(0, 600)])
    seen: list[str] = []
    statuses: dict[str, RunStatus] = {}
    cursor: str | None = None
    positions = []
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:
        page = query.changes(s, cursor, limit=97)
        if not page.runs:
            # Nothing settled yet (PostgreSQL: another session's older transaction is
            # open): the cursor stays, or from the start it is the feed's first one.
            assert query._decode_position(page.cursor) == (
                (0, "") if cursor is None else query._decode_position(cursor)
            )
            time.sleep(0.01)
            continue
        seen += [r.id for r in page.runs]
        statuses.update({r.id: r.status for r in page.runs})
        positions.append(query._decode_position(page.cursor))
        cursor = page.cursor
    assert sorted(seen) == [f"r{i:04}" for i in range(n)]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert statuses == {
        f"r{i:04}": RunStatus.SUCCESS if i < 600 else RunStatus.RUNNING for i in range(n)
    }


def test_a_reader_following_the_feed_misses_no_change_of_many_writers(
    shared_target: Target,
) -> None:
    """Four writers on their own connections create and finish runs in batches while
    a reader follows the feed from the head: every run is seen, and the last state
    seen of each is the one stored."""
    reader = shared_target.open_again()
    head = query.changes_head(reader)
    writers = [shared_target.open_again() for _ in range(4)]
    per_writer = 300

    def write(k: int, store: SqlStore) -> None:
        for lo in range(0, per_writer, 20):
            ids = [f"w{k}-{i:03}" for i in range(lo, lo + 20)]
            store.apply([_new(i) for i in ids])
            store.apply([_done(i) for i in ids[::2]])

    threads = [threading.Thread(target=write, args=(k, w)) for k, w in enumerate(writers)]
    for t in threads:
        t.start()
    last: dict[str, RunStatus] = {}
    cursor = head
    while any(t.is_alive() for t in threads):
        page = query.changes(reader, cursor, limit=50)
        last.update({r.id: r.status for r in page.runs})
        cursor = page.cursor
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    deadline = time.monotonic() + 30
    while len(last) < per_writer * 4 or any(
        last[f"w{k}-{i:03}"] is RunStatus.RUNNING for k in range(4) for i in range(0, per_writer, 2)
    ):
        if time.monotonic() > deadline:
            break
        page = query.changes(reader, cursor, limit=500)
        last.update({r.id: r.status for r in page.runs})
        cursor = page.cursor
    expected = {
        f"w{k}-{i:03}": RunStatus.SUCCESS if i % 2 == 0 else RunStatus.RUNNING
        for k in range(4)
        for i in range(per_writer)
    }
    assert last == expected


def test_an_open_transaction_holds_later_changes_back_without_blocking_writers(
    shared_target: Target,
) -> None:
    """A writer whose transaction is still open does not block another writer; on
    PostgreSQL the feed stops before the open transaction's stamp, so the later,
    committed run is delivered only after the earlier one commits, and neither is
    missed. (SQLite serializes writers, so there the second writer waits its turn.)"""
    slow, fast, reader = (shared_target.open_again() for _ in range(3))
    head = query.changes_head(reader)
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with slow._write() as cur:
            cur.execute(slow._insert_sql, slow._insert_params(_new("slow")))
            inside.set()
            assert release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    if shared_target.engine == "postgres":
        done = threading.Event()

        def write_fast() -> None:
            fast.create(_new("fast"))
            done.set()

        t = threading.Thread(target=write_fast)
        t.start()
        assert done.wait(30), "a second writer waited for the first one's transaction"
        t.join()
        assert fast.get("fast") is not None
        assert query.changes(reader, head).runs == []  # held back, not skipped
        release.set()
    else:
        release.set()
        fast.create(_new("fast"))
    holder.join(30)
    assert not holder.is_alive()
    seen, _ = _since(reader, head, 2)
    assert seen == {"slow": RunStatus.RUNNING, "fast": RunStatus.RUNNING}


def test_runs_written_before_the_feed_existed_come_first(target: Target) -> None:
    """A run stored with the pre-version-3 default stamp is in the feed from the start
    of history, before the head; finishing it moves it after the head."""
    s = target.store
    s.create(_new("old"))
    target.execute("UPDATE runs SET change_seq = '0'")
    s.create(_new("new"))
    assert list(_since(s, query.changes(s, limit=1).cursor, 1)[0]) == ["new"]
    head = query.changes_head(s)
    assert s.finish(_done("old")).applied
    assert _since(s, head, 1)[0] == {"old": RunStatus.SUCCESS}


def test_a_start_folded_into_its_create_is_one_change(target: Target) -> None:
    s = target.store
    s.apply([_new("q", status=RunStatus.QUEUED), MarkRunning("q", T + 1)])
    assert _since(s, query._encode_position((0, "")), 1)[0] == {"q": RunStatus.RUNNING}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage!",
        "bm90LWEtY3Vyc29y",
        query.encode_cursor,
        "YzotMTph",
        "Yzo5OTk5OTk5OTk5OTk5OTk5OTk5OTo",
    ],
)
def test_a_bad_change_cursor_is_an_error_naming_it(target: Target, bad: object) -> None:
    """Not base64, not a change cursor, a page cursor of list_runs, a negative or an
    out-of-range stamp: an InvalidArgumentError, never a driver error."""
    s = target.store
    s.create(_new("a"))
    if callable(bad):
        [run] = s.list_runs(query.make_filter(), limit=1)
        bad = bad(run)
    with pytest.raises(InvalidArgumentError, match="change cursor"):
        query.changes(s, str(bad))


@pytest.mark.parametrize("limit", [0, -1, query.MAX_PAGE_SIZE + 1])
def test_change_pages_are_bounded(target: Target, limit: int) -> None:
    with pytest.raises(InvalidArgumentError, match="limit"):
        query.changes(target.store, None, limit=limit)

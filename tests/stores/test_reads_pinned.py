"""The report's per-source summary and the change feed's head pinned exactly: open and
past-lease counts in and out of the window, sources with only old open runs or with
none open, percentiles of durations and times to first item read exactly or from the
histograms, and where the switch between the two lies.

Each assertion is one a mutant of ``stores/_sqlread.py`` changed (``make mutate
MODULES=src/exectrack/stores/_sqlread.py``).
"""

from __future__ import annotations

from typing import Any

from exectrack._model import RunStatus
from exectrack.stores import FinishRun, NewRun

from .conftest import Target

T0 = 1_764_000_000_000_000
NOW = T0 + 100


def _write(target: Target) -> None:
    store = target.store
    finished = [  # id, source, start offset, status, duration, first item, code
        ("c1", "chat", 1, RunStatus.SUCCESS, 12.3, 1.23, None),
        ("c2", "chat", 2, RunStatus.SUCCESS, 25.7, 4.56, None),
        ("c3", "chat", 3, RunStatus.ERROR, 33.3, None, "x"),
        ("h1", "heartbeat", 4, RunStatus.SUCCESS, 7.0, None, None),
        ("t1", "tool", 6, RunStatus.SUCCESS, 5.0, None, None),  # none open
    ]
    for run_id, source, at, status, ms, first, code in finished:
        store.create(NewRun(run_id, source, T0 + at))
        store.finish(
            FinishRun(
                run_id,
                status,
                T0 + at + 50,
                duration_ms=ms,
                error_code=code,
                items=None if first is None else 2,
                first_item_ms=first,
            )
        )
    # open: one in the window past its lease, one before it within its lease; a
    # source whose only run is open, old and past its lease; one open within its lease
    # (a source with open runs and none past its lease counts 0, not "none")
    store.create(NewRun("o1", "chat", T0 + 10, lease_until=T0 + 20))
    store.create(NewRun("o0", "chat", T0 - 1000, lease_until=T0 + 500))
    store.create(NewRun("s-old", "skill", T0 - 5000, lease_until=T0 + 10))
    store.create(NewRun("h-open", "heartbeat", T0 + 5, lease_until=NOW + 1000))


def _summaries(target: Target) -> dict[str, dict[str, Any]]:
    return {
        s.source: {
            "by_status": s.by_status,
            "error_codes": s.error_codes,
            "open": s.open,
            "open_past_lease": s.open_past_lease,
            "open_past_lease_in_window": s.open_past_lease_in_window,
            "oldest_open_at": s.oldest_open_at,
            "p50_ms": s.p50_ms,
            "p95_ms": s.p95_ms,
            "first_item_p50_ms": s.first_item_p50_ms,
            "first_item_p95_ms": s.first_item_p95_ms,
        }
        for s in target.store.summarize(T0, NOW)
    }


def _expected(chat_marks: tuple[float, float, float, float]) -> dict[str, dict[str, Any]]:
    p50, p95, f50, f95 = chat_marks
    return {
        "chat": {
            "by_status": {RunStatus.SUCCESS: 2, RunStatus.ERROR: 1, RunStatus.RUNNING: 1},
            "error_codes": {"x": 1},
            "open": 2,
            "open_past_lease": 1,
            "open_past_lease_in_window": 1,
            "oldest_open_at": T0 - 1000,
            "p50_ms": p50,
            "p95_ms": p95,
            "first_item_p50_ms": f50,
            "first_item_p95_ms": f95,
        },
        "heartbeat": {
            "by_status": {RunStatus.SUCCESS: 1, RunStatus.RUNNING: 1},
            "error_codes": {},
            "open": 1,
            "open_past_lease": 0,
            "open_past_lease_in_window": 0,
            "oldest_open_at": T0 + 5,
            "p50_ms": 7.0,
            "p95_ms": 7.0,
            "first_item_p50_ms": None,
            "first_item_p95_ms": None,
        },
        "tool": {
            "by_status": {RunStatus.SUCCESS: 1},
            "error_codes": {},
            "open": 0,
            "open_past_lease": 0,
            "open_past_lease_in_window": 0,
            "oldest_open_at": None,
            "p50_ms": 5.0,
            "p95_ms": 5.0,
            "first_item_p50_ms": None,
            "first_item_p95_ms": None,
        },
        "skill": {
            "by_status": {},
            "error_codes": {},
            "open": 1,
            "open_past_lease": 1,
            "open_past_lease_in_window": 0,
            "oldest_open_at": T0 - 5000,
            "p50_ms": None,
            "p95_ms": None,
            "first_item_p50_ms": None,
            "first_item_p95_ms": None,
        },
    }


EXACT = (25.7, 33.3, 1.23, 4.56)
SLOTS = (26.0, 34.0, 1.3, 4.6)  # the histogram slots: two significant digits, rounded up


def test_summary_with_exact_percentiles(target: Target) -> None:
    _write(target)
    assert _summaries(target) == _expected(EXACT)


def test_summary_switches_to_histograms_past_the_limit(target: Target) -> None:
    """The window holds 5 durations and 2 times to first item: 7 values. Up to 7
    allowed the ranks are exact; at 6 (or 0) they come from the histograms, 7.0 and
    5.0 being their own slots."""
    _write(target)
    target.store.exact_quantiles = 7
    assert _summaries(target) == _expected(EXACT)
    target.store.exact_quantiles = 6
    assert _summaries(target) == _expected(SLOTS)
    target.store.exact_quantiles = 0
    assert _summaries(target) == _expected(SLOTS)


def test_one_finished_run_is_every_percentile(target: Target) -> None:
    target.store.create(NewRun("only", "chat", T0 + 1))
    target.store.finish(
        FinishRun("only", RunStatus.SUCCESS, T0 + 9, duration_ms=42.5, items=1, first_item_ms=2.5)
    )
    (summary,) = target.store.summarize(T0, NOW)
    assert (summary.p50_ms, summary.p95_ms) == (42.5, 42.5)
    assert (summary.first_item_p50_ms, summary.first_item_p95_ms) == (2.5, 2.5)


def test_the_feed_head_of_an_empty_store(target: Target) -> None:
    assert target.store.changes_head() == (0, "")
    assert target.store.changes((0, ""), limit=10) == []

"""``aggregate`` and ``latest_runs`` pinned exactly on every path a filter can take:
the runs themselves (a session, a ref, a status with buckets, bounds that cut a
histogram slot), the rollups with exact or histogram percentiles, and the quantile
and bound checks with their messages.

Each assertion is one a mutant of ``stores/_sqlagg.py`` changed (``make mutate
MODULES=src/exectrack/stores/_sqlagg.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from exectrack._model import RunStatus, us_to_datetime
from exectrack.errors import InvalidArgumentError
from exectrack.stores import FinishRun, NewRun, RunFilter

from .conftest import Target

T0 = 1_764_000_000_000_000


def _write(target: Target) -> None:
    """chat: 20 runs of 1.5, 3.5, ..., 39.5 ms (session s1, ref r1); every fifth an
    error (codes a, b alternating); one open run. skill: 2 runs of 100 and 200 ms
    (session s2), and one queued run."""
    store = target.store
    for i in range(20):
        store.create(NewRun(f"c{i:02d}", "chat", T0 + i, session_id="s1", source_ref="r1"))
        error = i % 5 == 0
        store.finish(
            FinishRun(
                f"c{i:02d}",
                RunStatus.ERROR if error else RunStatus.SUCCESS,
                T0 + i + 10,
                duration_ms=1.5 + 2 * i,
                error_code=("a" if i % 10 == 0 else "b") if error else None,
            )
        )
    store.create(NewRun("c-open", "chat", T0 + 100, session_id="s1", source_ref="r1"))
    for i, ms in enumerate((100.0, 200.0)):
        store.create(NewRun(f"s{i}", "skill", T0 + i, session_id="s2"))
        store.finish(FinishRun(f"s{i}", RunStatus.SUCCESS, T0 + i + 10, duration_ms=ms))
    store.create(NewRun("s-queued", "skill", T0 + 50, status=RunStatus.QUEUED))


def _figures(agg: Any) -> dict[str, Any]:
    return {
        "source": agg.source,
        "by_status": agg.by_status,
        "error_codes": agg.error_codes,
        "quantiles": agg.quantiles,
        "buckets": agg.buckets,
        "duration_count": agg.duration_count,
        "duration_sum_ms": agg.duration_sum_ms,
    }


CHAT_ALL = {
    "source": "chat",
    "by_status": {RunStatus.SUCCESS: 16, RunStatus.ERROR: 4, RunStatus.RUNNING: 1},
    "error_codes": {"a": 2, "b": 2},
    "quantiles": {0.5: 19.5, 0.9: 35.5, 1.0: 39.5},
    "buckets": (5, 20),  # <= 10.5 ms: 1.5 .. 9.5; <= 100 ms: all
    "duration_count": 20,
    "duration_sum_ms": 410.0,
}


@pytest.mark.parametrize(
    "flt",
    [
        RunFilter(session_id="s1"),
        RunFilter(source_ref="r1"),
        RunFilter(sources=("chat",)),
        RunFilter(session_id="s1", source_ref="r1"),
    ],
    ids=["session", "ref", "bounds-cut-a-slot", "session-and-ref"],
)
def test_the_runs_path_gives_every_figure(target: Target, flt: RunFilter) -> None:
    """A session, a ref, or a bound (10.5 ms) that cuts a histogram slot: read from
    the runs, every figure exact."""
    _write(target)
    aggs = target.store.aggregate(flt, quantiles=(0.5, 0.9, 1.0), bounds=(10.5, 100.0))
    assert [_figures(a) for a in aggs] == [CHAT_ALL]


def test_the_runs_path_over_several_sources_keeps_each_apart(target: Target) -> None:
    _write(target)
    aggs = target.store.aggregate(RunFilter(), quantiles=(0.5,), bounds=(10.5, 150.0))
    assert [_figures(a) for a in aggs] == [
        {**CHAT_ALL, "quantiles": {0.5: 19.5}, "buckets": (5, 20)},
        {
            "source": "skill",
            "by_status": {RunStatus.SUCCESS: 2, RunStatus.QUEUED: 1},
            "error_codes": {},
            "quantiles": {0.5: 100.0},
            "buckets": (0, 1),
            "duration_count": 2,
            "duration_sum_ms": 300.0,
        },
    ]


def test_a_status_filter_with_buckets_reads_the_runs(target: Target) -> None:
    """Histograms do not split by status: buckets of the error runs alone (even at
    bounds that are slot edges) come from the runs."""
    _write(target)
    (chat,) = target.store.aggregate(
        RunFilter(statuses=(RunStatus.ERROR,)), quantiles=(0.5,), bounds=(10.0, 20.0, 50.0)
    )
    # errors: 1.5, 11.5, 21.5, 31.5 ms
    assert _figures(chat) == {
        "source": "chat",
        "by_status": {RunStatus.ERROR: 4},
        "error_codes": {"a": 2, "b": 2},
        "quantiles": {0.5: 11.5},
        "buckets": (1, 2, 4),
        "duration_count": 4,
        "duration_sum_ms": 66.0,
    }


def test_rollup_percentiles_exact_up_to_the_limit_then_from_histograms(
    target: Target,
) -> None:
    """Up to ``exact_quantiles`` finished runs (inclusive) the rollup path ranks the
    runs themselves; beyond, it reads the histogram slot (two significant digits)."""
    _write(target)
    store = target.store
    store.exact_quantiles = 22  # chat 20 + skill 2 finished runs
    exact = store.aggregate(RunFilter(), quantiles=(0.5, 0.9))
    assert [a.quantiles for a in exact] == [{0.5: 19.5, 0.9: 35.5}, {0.5: 100.0, 0.9: 200.0}]
    store.exact_quantiles = 21
    slots = store.aggregate(RunFilter(), quantiles=(0.5, 0.9))
    assert [a.quantiles for a in slots] == [{0.5: 20.0, 0.9: 36.0}, {0.5: 100.0, 0.9: 200.0}]


def test_a_status_filter_ranks_its_own_runs_at_any_size(target: Target) -> None:
    """With a status filter the percentiles are exact even past the limit: the
    histograms would mix in the other statuses."""
    _write(target)
    store = target.store
    store.exact_quantiles = 0
    (chat,) = store.aggregate(RunFilter(statuses=(RunStatus.ERROR,)), quantiles=(0.5, 1.0))
    assert chat.quantiles == {0.5: 11.5, 1.0: 31.5}
    assert chat.by_status == {RunStatus.ERROR: 4}


@pytest.mark.parametrize(
    ("q", "message"),
    [
        (0, "quantile 0: must be in (0, 1]"),
        (-0.5, "quantile -0.5: must be in (0, 1]"),
        (1.5, "quantile 1.5: must be in (0, 1]"),
        ("0.5", "quantile '0.5': must be in (0, 1]"),
        (0.0004, "quantile 0.0004: use at most three decimals"),
        (0.1234, "quantile 0.1234: use at most three decimals"),
    ],
)
def test_bad_quantiles_say_why(target: Target, q: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        target.store.aggregate(RunFilter(), quantiles=(q,))
    assert str(caught.value) == message


def test_edge_quantiles_are_accepted(target: Target) -> None:
    """0.001 (one per mille, the smallest) and 1 (the maximum) are valid."""
    _write(target)
    (chat, _skill) = target.store.aggregate(RunFilter(), quantiles=(0.001, 1))
    assert chat.quantiles == {0.001: 1.5, 1: 39.5}


def test_bounds_must_ascend(target: Target) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        target.store.aggregate(RunFilter(), bounds=(10.0, 5.0))
    assert str(caught.value) == "bucket bounds must be ascending"


def test_latest_runs_of_plain_scopes_and_of_filters(target: Target) -> None:
    """Scopes that are only equalities (PostgreSQL answers them LATERAL) and filters
    that are more (a status, a window): each the newest match, None where none."""
    _write(target)
    got = target.store.latest_runs(
        [
            RunFilter(sources=("chat",)),
            RunFilter(sources=("skill",), session_id="s2"),
            RunFilter(source_ref="r1"),
            RunFilter(sources=("nope",)),
            RunFilter(),
        ]
    )
    assert [r and r.id for r in got] == ["c-open", "s1", "c-open", None, "c-open"]
    mixed = target.store.latest_runs(
        [RunFilter(sources=("chat",), statuses=(RunStatus.ERROR,)), RunFilter(sources=("skill",))]
    )
    assert [r and r.id for r in mixed] == ["c15", "s-queued"]
    assert target.store.latest_runs([]) == []


def test_latest_runs_of_windows_and_of_several_sources(target: Target) -> None:
    """A time window or several sources is more than a plain scope: each is honoured
    (PostgreSQL's LATERAL form would ignore them)."""
    _write(target)
    filters = [
        RunFilter(sources=("chat",), started_before=us_to_datetime(T0 + 50)),
        RunFilter(sources=("skill",), started_after=us_to_datetime(T0 + 40)),
        RunFilter(sources=("skill",), started_after=us_to_datetime(T0 + 60)),
        RunFilter(sources=("skill", "chat")),
    ]
    want = ["c19", "s-queued", None, "c-open"]
    got = target.store.latest_runs(filters)
    assert [r and r.id for r in got] == want
    # alone, and beside a plain scope: a batch of plain scopes takes the LATERAL form
    for flt, wanted in zip(filters, want, strict=True):
        alone = target.store.latest_runs([flt])
        assert [r and r.id for r in alone] == [wanted]
        beside = target.store.latest_runs([flt, RunFilter(sources=("chat",))])
        assert [r and r.id for r in beside] == [wanted, "c-open"]
    only_more = target.store.latest_runs([RunFilter(statuses=(RunStatus.SUCCESS,))])
    assert [r and r.id for r in only_more] == ["c19"]


def test_the_runs_path_for_a_source_with_no_finished_run(target: Target) -> None:
    """No duration: no quantiles (an empty mapping) and empty buckets."""
    target.store.create(NewRun("q", "skill", T0, session_id="s9", status=RunStatus.QUEUED))
    (skill,) = target.store.aggregate(
        RunFilter(session_id="s9"), quantiles=(0.5,), bounds=(10.5, 20.0)
    )
    assert (skill.quantiles, skill.buckets, skill.duration_count) == ({}, (0, 0), 0)
    assert skill.by_status == {RunStatus.QUEUED: 1}


def test_the_runs_path_without_quantiles(target: Target) -> None:
    _write(target)
    (chat,) = target.store.aggregate(RunFilter(session_id="s1"), bounds=(10.5,))
    assert (chat.quantiles, chat.buckets, chat.duration_count) == ({}, (5,), 20)

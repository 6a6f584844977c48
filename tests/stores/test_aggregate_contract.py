"""The aggregate reads behind the HTTP API, once per engine: ``aggregate`` (per-source
counts, error codes, duration quantiles and buckets, in SQL) and ``latest_runs`` (the
newest run of many scopes in one query) agree with the plain reads and with Python."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exectrack._model import RunStatus, us_to_datetime
from exectrack.errors import InvalidArgumentError
from exectrack.stores import FinishRun, NewRun, RunFilter

from .conftest import Target

T0 = 1_764_000_000_000_000
SOURCES = ("chat", "skill", "heartbeat")


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(Fraction(str(q)) * len(ordered)) - 1, 0)]


def test_aggregate_counts_codes_quantiles_and_buckets(target: Target) -> None:
    """Per source: counts by status, error codes, nearest-rank p50/p95/p99 of finished
    durations and cumulative buckets; open runs count but have no duration."""
    store = target.store
    durations = [float(d) for d in range(1, 101)]  # 1..100 ms on chat
    for i, ms in enumerate(durations):
        store.create(NewRun(f"c{i:03d}", "chat", T0 + i))
        status = RunStatus.ERROR if i % 10 == 0 else RunStatus.SUCCESS
        code = ("rate_limited" if i % 20 == 0 else "provider_unavailable") if i % 10 == 0 else None
        store.finish(FinishRun(f"c{i:03d}", status, T0 + i + 5, duration_ms=ms, error_code=code))
    store.create(NewRun("open-chat", "chat", T0 + 500))
    store.create(NewRun("s1", "skill", T0, status=RunStatus.QUEUED))
    aggs = store.aggregate(RunFilter(), quantiles=(0.5, 0.95, 0.99), bounds=(10.0, 50.0, 1000.0))
    assert [a.source for a in aggs] == ["chat", "skill"]
    chat, skill = aggs
    assert chat.by_status == {RunStatus.SUCCESS: 90, RunStatus.ERROR: 10, RunStatus.RUNNING: 1}
    assert chat.error_codes == {"rate_limited": 5, "provider_unavailable": 5}
    assert chat.quantiles == {0.5: 50.0, 0.95: 95.0, 0.99: 99.0}
    assert chat.buckets == (10, 50, 100)
    assert chat.duration_count == 100
    assert chat.duration_sum_ms == pytest.approx(sum(durations))
    assert skill.by_status == {RunStatus.QUEUED: 1}
    assert skill.quantiles == {}
    assert skill.buckets == (0, 0, 0)
    assert skill.duration_count == 0


def test_aggregate_applies_the_filter(target: Target) -> None:
    """Only the runs matching the filter count: a window and a source narrow every figure."""
    store = target.store
    store.create(NewRun("old", "chat", T0, status=RunStatus.ERROR, finished_at=T0 + 1,
                        duration_ms=1000.0, error_code="old_code"))  # fmt: skip
    store.create(NewRun("new", "chat", T0 + 10_000_000, status=RunStatus.SUCCESS,
                        finished_at=T0 + 10_000_001, duration_ms=7.0))  # fmt: skip
    store.create(NewRun("sk", "skill", T0 + 10_000_000))
    flt = RunFilter(sources=("chat",), started_after=us_to_datetime(T0 + 5_000_000))
    (chat,) = store.aggregate(flt, quantiles=(0.5,))
    assert chat.by_status == {RunStatus.SUCCESS: 1}
    assert chat.error_codes == {}
    assert chat.quantiles == {0.5: 7.0}
    assert store.aggregate(RunFilter(sources=("nothing",)), quantiles=(0.5,)) == []


def test_aggregate_rejects_bad_quantiles_and_bounds(target: Target) -> None:
    """A quantile outside (0, 1] or with more than three decimals, or descending
    bounds, is an InvalidArgumentError, not a wrong answer."""
    for q in (0.0, 1.5, -0.1, 0.1234):
        with pytest.raises(InvalidArgumentError):
            target.store.aggregate(RunFilter(), quantiles=(q,))
    with pytest.raises(InvalidArgumentError):
        target.store.aggregate(RunFilter(), bounds=(10.0, 5.0))


@st.composite
def run_rows(draw: Any) -> list[tuple[str, RunStatus, float | None, str | None]]:
    n = draw(st.integers(0, 40))
    rows = []
    for _ in range(n):
        status = draw(st.sampled_from(list(RunStatus)))
        duration = (
            None
            if not status.is_terminal
            else draw(st.one_of(st.none(), st.integers(0, 50).map(float)))
        )
        code = draw(st.sampled_from([None, "a", "b"])) if status is RunStatus.ERROR else None
        rows.append((draw(st.sampled_from(SOURCES)), status, duration, code))
    return rows


def test_aggregate_matches_python_on_any_runs(target: Target) -> None:
    """For any mix of runs, every figure equals the same figure computed in Python from
    list_runs (duplicate durations, missing durations and open runs included)."""

    @settings(
        max_examples=target.examples(40),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(rows=run_rows())
    def check(rows: list[tuple[str, RunStatus, float | None, str | None]]) -> None:
        target.reset()
        store = target.store
        for i, (source, status, duration, code) in enumerate(rows):
            done = status.is_terminal
            store.create(
                NewRun(
                    f"r{i:03d}",
                    source,
                    T0 + i,
                    status=status,
                    finished_at=T0 + i + 1 if done else None,
                    duration_ms=duration,
                    error_code=code,
                )
            )
        qs = (0.5, 0.95, 0.99)
        bounds = (0.0, 10.0, 25.0)
        got = {a.source: a for a in store.aggregate(RunFilter(), quantiles=qs, bounds=bounds)}
        assert sorted(got) == sorted({r[0] for r in rows})
        for source, agg in got.items():
            mine = [r for r in rows if r[0] == source]
            assert agg.by_status == dict(Counter(r[1] for r in mine))
            assert agg.error_codes == dict(Counter(r[3] for r in mine if r[3] is not None))
            finished = [r[2] for r in mine if r[1].is_terminal and r[2] is not None]
            assert agg.quantiles == ({q: nearest_rank(finished, q) for q in qs} if finished else {})
            assert agg.buckets == tuple(sum(1 for d in finished if d <= b) for b in bounds)
            assert agg.duration_count == len(finished)

    check()


def test_latest_runs_answers_each_scope_in_order(target: Target) -> None:
    """Each filter gets the newest run matching exactly it (a busier scope never hides
    a quieter one), None where nothing matches, in the order asked."""
    store = target.store
    store.create(NewRun("hb-inbox", "heartbeat", T0, source_ref="inbox"))
    for i in range(30):  # a busy scope, newer than the quiet one
        store.create(NewRun(f"chat-{i:02d}", "chat", T0 + 1000 + i, session_id=f"s{i % 3}"))
    filters = [
        RunFilter(sources=("chat",)),
        RunFilter(sources=("heartbeat",), source_ref="inbox"),
        RunFilter(sources=("heartbeat",), source_ref="never"),
        RunFilter(sources=("chat",), session_id="s1"),
        RunFilter(),
    ]
    got = store.latest_runs(filters)
    assert [None if r is None else r.id for r in got] == [
        "chat-29",
        "hb-inbox",
        None,
        "chat-28",
        "chat-29",
    ]
    for flt, run in zip(filters, got, strict=True):
        plain = store.list_runs(flt, limit=1)
        assert (plain[0] if plain else None) == run
    assert store.latest_runs([]) == []


def test_latest_runs_beyond_one_query(target: Target) -> None:
    """More scopes than one statement holds are answered in chunks, still in order."""
    store = target.store
    for i in range(5):
        store.create(NewRun(f"r{i}", "skill", T0 + i, source_ref=f"ref{i}"))
    filters = [RunFilter(sources=("skill",), source_ref=f"ref{i % 7}") for i in range(450)]
    got = store.latest_runs(filters)
    assert [None if r is None else r.id for r in got] == [
        f"r{i % 7}" if i % 7 < 5 else None for i in range(450)
    ]


def test_latest_runs_ties_break_by_id(target: Target) -> None:
    """Two runs started in the same microsecond: the larger id is the latest, as in
    list order."""
    store = target.store
    store.create(NewRun("a", "chat", T0))
    store.create(NewRun("b", "chat", T0))
    assert [r.id for r in store.latest_runs([RunFilter()]) if r] == ["b"]


def test_latest_runs_with_any_filter(target: Target) -> None:
    """Scopes that are more than equalities (statuses, a window, text, several
    sources) mixed with plain ones: each still gets exactly its newest match."""
    store = target.store
    store.create(NewRun("e1", "chat", T0, status=RunStatus.ERROR, finished_at=T0 + 1,
                        error_message="Rate limited"))  # fmt: skip
    store.create(NewRun("s1", "chat", T0 + 10, status=RunStatus.SUCCESS, finished_at=T0 + 11))
    store.create(NewRun("k1", "skill", T0 + 20, source_ref="calc"))
    filters = [
        RunFilter(sources=("chat",), statuses=(RunStatus.ERROR,)),
        RunFilter(sources=("chat", "skill")),
        RunFilter(started_before=us_to_datetime(T0 + 5)),
        RunFilter(text="rate"),
        RunFilter(sources=("skill",), source_ref="calc"),
        RunFilter(sources=("chat",), statuses=(RunStatus.TIMEOUT,)),
    ]
    got = store.latest_runs(filters)
    assert [None if r is None else r.id for r in got] == ["e1", "k1", "e1", "e1", "k1", None]

"""The reaper under a Hypothesis state machine: starts, finishes, heartbeats, clock
advances and reaps in any order, on a fake clock.

Three owners share one database: ``live`` (heartbeats, alive), ``dead`` (its pid is
gone: reaped at once) and ``silent`` (on another host, never heartbeats: only its
lease or a deadline can end its runs). Each reap must finish exactly the runs the
rules name; a run with a live lease and a live (or unknown) owner, before its
deadline, is never reaped; a terminal run never changes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from exectrack import ExecutionTracker, RunHandle, RunStatus
from exectrack.monitor import reap_once
from exectrack.testing import FakeClock

S = 1_000_000
LEASE = 30
OWNERS = {"live": "h:1:live", "dead": "h:2:dead", "silent": "far:3:silent"}
ALIVE = {"h:1:live": True, "h:2:dead": False, "far:3:silent": None}


@dataclass
class Model:
    owner: str
    status: RunStatus
    lease_until: int
    deadline: int | None


class ReaperMachine(RuleBasedStateMachine):
    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        url = f"sqlite:///{Path(self.dir.name) / 'runs.db'}"
        self.clock = FakeClock(datetime(2026, 11, 25, tzinfo=UTC))
        self.trackers = {
            name: ExecutionTracker(
                url, strict=True, durability="sync", clock=self.clock, owner=owner, lease=LEASE
            )
            for name, owner in OWNERS.items()
        }
        self.runs: dict[str, Model] = {}
        self.next_heartbeat = 0

    def teardown(self) -> None:
        for t in self.trackers.values():
            t.close()
        self.dir.cleanup()

    @property
    def now(self) -> int:
        return self.clock.now_us()

    @rule(
        target=handles,
        who=st.sampled_from(sorted(OWNERS)),
        deadline=st.none() | st.sampled_from([1, 15, 45]),
    )
    def start(self, who: str, deadline: int | None) -> RunHandle:
        h = self.trackers[who].start("skill", who, deadline=deadline)
        self.runs[h.id] = Model(
            OWNERS[who],
            RunStatus.RUNNING,
            self.now + LEASE * S,
            None if deadline is None else self.now + deadline * S,
        )
        return h

    @rule(h=handles, status=st.sampled_from(sorted(RunStatus.terminal())))
    def finish(self, h: RunHandle, status: RunStatus) -> None:
        m = self.runs[h.id]
        result = h.finish_with_status(status)
        if m.status is RunStatus.RUNNING:
            assert result.applied
            m.status = status
        else:
            assert not result.applied

    @rule(seconds=st.sampled_from([0.000001, 1, 5, 10, 29, 30, 31, 60]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def heartbeat(self) -> None:
        """The live owner's monitor ticks: due every 10 s, renewing its open runs."""
        live = self.trackers["live"]
        assert live.monitor is not None
        live.monitor.tick()
        if self.now >= self.next_heartbeat:
            self.next_heartbeat = self.now + 10 * S
            for m in self.runs.values():
                if m.owner == OWNERS["live"] and m.status is RunStatus.RUNNING:
                    m.lease_until = self.now + LEASE * S

    @rule()
    def reap(self) -> None:
        store = self.trackers["live"].store
        expected: dict[str, tuple[RunStatus, str]] = {}
        for run_id, m in self.runs.items():
            if m.status is not RunStatus.RUNNING:
                continue
            if ALIVE[m.owner] is False:
                expected[run_id] = (RunStatus.ERROR, "dead_owner")
            elif m.deadline is not None and m.deadline < self.now:
                expected[run_id] = (RunStatus.TIMEOUT, "deadline")
            elif m.lease_until < self.now:
                expected[run_id] = (RunStatus.ERROR, "lease_expired")
        reaped = reap_once(store, self.now, alive=ALIVE.get)
        assert {r.run_id: (r.status, r.reason) for r in reaped} == expected
        for run_id, (status, _) in expected.items():
            self.runs[run_id].status = status
        for m in self.runs.values():  # nothing reapable is left open
            if m.status is RunStatus.RUNNING:
                assert ALIVE[m.owner] is not False
                assert m.lease_until >= self.now
                assert m.deadline is None or m.deadline >= self.now

    @invariant()
    def stored_matches_model(self) -> None:
        if not self.runs:
            return
        stored = self.trackers["live"].list_runs(limit=1000).runs
        assert {r.id: r.status for r in stored} == {i: m.status for i, m in self.runs.items()}


ReaperMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_reaper_rules = ReaperMachine.TestCase

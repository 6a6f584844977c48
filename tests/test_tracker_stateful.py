"""The terminal-state rule through the tracker, under a Hypothesis state machine.

Starts, finishes (through the handle, by id from a second tracker, in any order and
any number of times), queued runs and flushes interleave freely on the default
group-commit path and the synchronous path: the first terminal write always wins, a
terminal run never changes, and what is stored always matches the model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from exectrack import ExecutionTracker, RunHandle, RunStatus

TERMINAL = sorted(RunStatus.terminal())


def _store_allows(current: RunStatus, target: RunStatus) -> bool:
    return current is RunStatus.RUNNING or (
        current is RunStatus.QUEUED and target is RunStatus.CANCELED
    )


class TrackerMachine(RuleBasedStateMachine):
    """``model`` is what the store must hold; ``local`` and ``local_queued`` are what
    each handle knows in its own process (a finish made elsewhere is not seen)."""

    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        url = f"sqlite:///{Path(self.dir.name) / 'runs.db'}"
        self.fast = ExecutionTracker(url, strict=True)
        self.durable = ExecutionTracker(url, strict=True, durability="sync")
        self.other = ExecutionTracker(url, strict=True, durability="sync")
        self.model: dict[str, RunStatus] = {}
        self.codes: dict[str, str | None] = {}
        self.local: dict[str, RunStatus | None] = {}
        self.local_queued: dict[str, bool] = {}
        self.is_durable: dict[str, bool] = {}

    def teardown(self) -> None:
        for t in (self.fast, self.durable, self.other):
            t.close()
        self.dir.cleanup()

    @rule(target=handles, durable=st.booleans(), queued=st.booleans())
    def start(self, durable: bool, queued: bool) -> RunHandle:
        t = self.durable if durable else self.fast
        h = t.start("skill", "m", queued=queued)
        self.model[h.id] = RunStatus.QUEUED if queued else RunStatus.RUNNING
        self.codes[h.id] = None
        self.local[h.id] = None
        self.local_queued[h.id] = queued
        self.is_durable[h.id] = durable
        return h

    @rule(h=handles)
    def mark_running(self, h: RunHandle) -> None:
        result = h.mark_running()
        local = self.local[h.id]
        if local is not None:
            assert (result.applied, result.status) == (False, local)
        elif not self.local_queued[h.id]:
            assert (result.applied, result.status) == (False, RunStatus.RUNNING)
        else:
            self.local_queued[h.id] = False
            store_applies = self.model[h.id] is RunStatus.QUEUED
            if self.is_durable[h.id]:
                assert result.applied == store_applies
            else:
                assert result.applied
            if store_applies:
                self.model[h.id] = RunStatus.RUNNING

    @rule(h=handles, status=st.sampled_from(TERMINAL), code=st.sampled_from(["a", "b"]))
    def finish_handle(self, h: RunHandle, status: RunStatus, code: str) -> None:
        result = h.finish_with_status(status, error_code=code)
        local = self.local[h.id]
        if local is not None:
            assert (result.applied, result.status) == (False, local)
            return
        if self.local_queued[h.id] and status is not RunStatus.CANCELED:
            assert (result.applied, result.status) == (False, RunStatus.QUEUED)
            return
        self.local[h.id] = status
        before = self.model[h.id]
        store_applies = _store_allows(before, status)
        if self.is_durable[h.id]:
            assert result.applied == store_applies
            assert result.status is (status if store_applies else before)
            if not store_applies and before.is_terminal:
                self.local[h.id] = before  # the handle learns who finished first
        else:
            assert (result.applied, result.status) == (True, status)
        if store_applies:
            self.model[h.id], self.codes[h.id] = status, code

    @rule(h=handles, status=st.sampled_from(TERMINAL))
    def finish_by_id_elsewhere(self, h: RunHandle, status: RunStatus) -> None:
        """Another process finishes the run by id: only the store's guard decides."""
        self.fast.flush(10)
        before = self.model[h.id]
        result = self.other.finish_with_status(h.id, status, error_code="other")
        if _store_allows(before, status):
            assert (result.applied, result.status) == (True, status)
            self.model[h.id], self.codes[h.id] = status, "other"
        else:
            assert (result.applied, result.status) == (False, before)

    @precondition(lambda self: bool(self.model))
    @rule()
    def flush(self) -> None:
        assert self.fast.flush(10)

    @invariant()
    def stored_matches_model(self) -> None:
        if not self.model:
            return
        assert self.fast.flush(10)
        stored = {r.id: r for r in self.other.list_runs(limit=1000).runs}
        assert {i: r.status for i, r in stored.items()} == self.model
        for run_id, run in stored.items():
            assert (run.finished_at is None) == (not run.status.is_terminal)
            if run.status.is_terminal:
                assert run.error_code == self.codes[run_id]


TrackerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_terminal_state_rule = TrackerMachine.TestCase

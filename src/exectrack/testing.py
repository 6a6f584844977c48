"""Helpers for testing code that uses exectrack (shipped, like structlog.testing).

- :class:`FakeClock`: a clock that moves only when told to.
- :class:`FailingStore`: wraps a store and makes chosen operations raise, to prove
  that tracking failures never change what the host's code returns or raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exectrack._clock import FakeClock
from exectrack._model import Run, RunStatus
from exectrack.errors import StoreError
from exectrack.stores._base import RunFilter, Store
from exectrack.stores._records import (
    ApplyResult,
    Command,
    FinishResult,
    FinishRun,
    NewRun,
)
from exectrack.stores._summaries import Reaped, SourceAggregate, SourceSummary

__all__ = ["FailingStore", "FakeClock"]

_ALL = frozenset(
    {
        "migrate",
        "create",
        "start",
        "finish",
        "apply",
        "get",
        "list_runs",
        "count_runs",
        "changes",
        "changes_head",
        "summarize",
        "aggregate",
        "latest_runs",
        "heartbeat",
        "open_owners",
        "reap",
    }
)


class FailingStore:
    """A store whose operations in ``fail`` raise ``error`` (default: every one).

    ``calls`` counts the attempted operations by name.
    """

    def __init__(
        self,
        inner: Store,
        *,
        fail: frozenset[str] | set[str] = _ALL,
        error: Exception | None = None,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail = set(fail)
        self.error = error if error is not None else StoreError("injected store failure")
        self.calls: dict[str, int] = {}

    def _check(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if op in self.fail:
            raise self.error

    def migrate(self) -> list[int]:
        self._check("migrate")
        return self.inner.migrate()

    def schema_version(self) -> int:
        return self.inner.schema_version()

    def create(self, run: NewRun) -> bool:
        self._check("create")
        return self.inner.create(run)

    def start(self, run_id: str, at: int) -> FinishResult:
        self._check("start")
        return self.inner.start(run_id, at)

    def finish(self, cmd: FinishRun) -> FinishResult:
        self._check("finish")
        return self.inner.finish(cmd)

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        self._check("apply")
        return self.inner.apply(commands)

    def get(self, run_id: str) -> Run | None:
        self._check("get")
        return self.inner.get(run_id)

    def list_runs(
        self, flt: RunFilter, *, limit: int, cursor: tuple[int, str] | None = None
    ) -> list[Run]:
        self._check("list_runs")
        return self.inner.list_runs(flt, limit=limit, cursor=cursor)

    def count_runs(self, flt: RunFilter) -> dict[tuple[str, RunStatus], int]:
        self._check("count_runs")
        return self.inner.count_runs(flt)

    def changes(self, after: tuple[int, str] | None, *, limit: int) -> list[tuple[int, Run]]:
        self._check("changes")
        return self.inner.changes(after, limit=limit)

    def changes_head(self) -> tuple[int, str]:
        self._check("changes_head")
        return self.inner.changes_head()

    def summarize(self, since: int | None, now: int) -> list[SourceSummary]:
        self._check("summarize")
        return self.inner.summarize(since, now)

    def aggregate(
        self, flt: RunFilter, *, quantiles: Sequence[float] = (), bounds: Sequence[float] = ()
    ) -> list[SourceAggregate]:
        self._check("aggregate")
        return self.inner.aggregate(flt, quantiles=quantiles, bounds=bounds)

    def latest_runs(self, filters: Sequence[RunFilter]) -> list[Run | None]:
        self._check("latest_runs")
        return self.inner.latest_runs(filters)

    def heartbeat(
        self, owner: str, at: int, lease_until: int, run_ids: Sequence[str] | None = None
    ) -> int:
        self._check("heartbeat")
        return self.inner.heartbeat(owner, at, lease_until, run_ids)

    def open_owners(self) -> list[str]:
        self._check("open_owners")
        return self.inner.open_owners()

    def reap(
        self, now: int, *, dead_owners: Sequence[str] = (), dry_run: bool = False
    ) -> list[Reaped]:
        self._check("reap")
        return self.inner.reap(now, dead_owners=dead_owners, dry_run=dry_run)

    def fold_rollups(self, *, limit: int | None = None) -> int:
        self._check("fold_rollups")
        return self.inner.fold_rollups(limit=limit)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

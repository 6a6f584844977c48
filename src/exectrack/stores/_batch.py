"""Folding a batch of commands into as few row writes as one-by-one semantics allow.

Used by ``SqlStore.apply``: a start or finish whose run is created earlier in the same
batch becomes part of that run's INSERT.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from exectrack._model import RunStatus

if TYPE_CHECKING:  # the records load on first write (stores/_records.py)
    from exectrack.stores._records import Command, FinishRun, MarkRunning, NewRun

__all__ = ["ConflictError", "Plan", "Row", "fold", "groups", "may_finish"]


def may_finish(current: RunStatus, target: RunStatus) -> bool:
    """The transition rule the guarded UPDATE enforces, for folding in memory."""
    return current is RunStatus.RUNNING or (
        current is RunStatus.QUEUED and target is RunStatus.CANCELED
    )


class ConflictError(Exception):
    """A folded INSERT met an existing id: roll back and run the batch unfolded."""


class Row:
    """A run as one INSERT writes it: its create, with the starts and finishes of the
    same batch folded in (the command objects themselves are never changed)."""

    __slots__ = ("duration_ms", "finish", "heartbeat_at", "run", "started", "status", "updated_at")

    def __init__(self, run: NewRun, status: RunStatus, heartbeat_at: int, updated_at: int) -> None:
        self.run = run
        self.status = status
        self.heartbeat_at = heartbeat_at
        self.updated_at = updated_at
        self.finish: FinishRun | None = None  # the folded finish that applied
        self.duration_ms: float | None = None  # the folded finish's duration, derived if missing
        self.started = 0  # folded starts that applied

    @classmethod
    def of(cls, run: NewRun) -> Row:
        at = run.finished_at if run.finished_at is not None else run.started_at
        return cls(run, run.status, run.started_at, at)


class Plan:
    __slots__ = ("count", "rows", "updates")

    def __init__(self, rows: list[Row], updates: list[MarkRunning | FinishRun], count: int) -> None:
        self.rows = rows
        self.updates = updates
        self.count = count  # commands in the batch


def fold(commands: Sequence[Command]) -> Plan | None:
    """Fold starts and finishes into runs created earlier in the same batch.

    The folded rows are written as if each command ran in order, including the
    ``heartbeat_at``/``updated_at`` a start or finish would set. None when folding
    cannot keep the one-by-one result: a start or finish precedes its run's create.
    """
    from exectrack.stores._records import FinishRun, MarkRunning, NewRun

    rows: dict[str, Row] = {}
    updates: list[MarkRunning | FinishRun] = []
    touched: set[str] = set()
    for cmd in commands:
        if isinstance(cmd, NewRun):
            if cmd.id in rows:
                continue  # a duplicate create changes nothing: counted as not applied
            if cmd.id in touched:
                return None
            rows[cmd.id] = Row.of(cmd)
            continue
        row = rows.get(cmd.id)
        if row is None:
            touched.add(cmd.id)
            updates.append(cmd)
        elif isinstance(cmd, FinishRun):
            if may_finish(row.status, cmd.status):
                row.status = cmd.status
                row.finish = cmd
                row.duration_ms = cmd.duration_ms
                if cmd.duration_ms is None:
                    row.duration_ms = (cmd.finished_at - row.run.started_at) / 1000.0
                row.updated_at = cmd.finished_at
        elif isinstance(cmd, MarkRunning) and row.status is RunStatus.QUEUED:
            row.status = RunStatus.RUNNING
            row.heartbeat_at = row.updated_at = cmd.at
            row.started += 1
    return Plan(list(rows.values()), updates, len(commands))


def groups(
    commands: list[MarkRunning | FinishRun],
) -> Iterator[tuple[type, list[MarkRunning | FinishRun]]]:
    """Consecutive runs of the same command type, in order."""
    i = 0
    while i < len(commands):
        kind = type(commands[i])
        j = i
        while j < len(commands) and type(commands[j]) is kind:
            j += 1
        yield kind, commands[i:j]
        i = j

"""The write commands and their results that cross the Store protocol (the read path's
``RunFilter`` and ``Page`` are in ``_base.py``, the summaries in ``_summaries.py``).

Their own module, loaded on first use: a CLI command never creates them, and each
dataclass costs its start-up ~4 M instructions, ~0.8 ms (bench/cli_startup.py).
Import them from ``exectrack.stores``.

Write commands carry times as integer microseconds since the Unix epoch (UTC) and
metadata as JSON text that the tracker already redacted and capped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exectrack._model import RunStatus

__all__ = [
    "ApplyResult",
    "Command",
    "FinishResult",
    "FinishRun",
    "MarkRunning",
    "NewRun",
]


@dataclass(slots=True)
class NewRun:
    """Create a run. Usually ``running``; ``queued`` for work that waits first.

    A run may also be created already terminal (``finished_at`` set), which is how a
    batch writes a run whose start and finish arrive together.
    """

    id: str
    source: str
    started_at: int
    status: RunStatus = RunStatus.RUNNING
    source_ref: str | None = None
    session_id: str | None = None
    parent_id: str | None = None
    metadata: str | None = None
    owner: str | None = None
    deadline_at: int | None = None
    finished_at: int | None = None
    duration_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    lease_until: int | None = None  # the reaper may finish it after this, unless renewed
    items: int | None = None  # a stream's items (set with the finish folded in)
    first_item_ms: float | None = None
    # Writer bookkeeping: set (under the writer's lock) once the writer took this
    # command from its queue; until then a finish may be folded into it in place.
    taken: bool = field(default=False, repr=False, compare=False)


@dataclass(slots=True)
class MarkRunning:
    """Move a run from ``queued`` to ``running``; anything else is left unchanged."""

    id: str
    at: int


@dataclass(slots=True)
class FinishRun:
    """Finish an open run. ``metadata`` (full JSON text) replaces the stored metadata
    when given; ``duration_ms`` None means: derive it from the stored ``started_at``."""

    id: str
    status: RunStatus
    finished_at: int
    duration_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    metadata: str | None = None
    items: int | None = None  # a stream's items; None for a run that is not a stream
    first_item_ms: float | None = None  # from the run's start to its first item


Command = NewRun | MarkRunning | FinishRun


@dataclass(frozen=True, slots=True)
class FinishResult:
    """Outcome of a finish (or a start). Truthy exactly when the write applied.

    When it did not apply, ``status`` is the run's existing status, or None when no
    run has that id.
    """

    applied: bool
    status: RunStatus | None

    def __bool__(self) -> bool:
        return self.applied


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one ``Store.apply`` transaction did; each command counts exactly once, so
    the four fields add up to the number of commands.

    ``created``: creates that inserted a run (a run created already terminal counts
    here, not in ``finished``). ``started``/``finished``: starts and finishes that
    applied. ``not_applied``: commands that changed nothing (an existing id, a start
    or finish refused by the guard, an unknown id).
    """

    created: int = 0
    started: int = 0
    finished: int = 0
    not_applied: int = 0

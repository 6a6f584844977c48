"""The run model: one record per execution, one status enum, validated sources.

Times are timezone-aware UTC datetimes at the API; stores and write commands carry
them as integer microseconds since the Unix epoch (exact, cheap, the same precision
as PostgreSQL's ``timestamptz``).
"""

from __future__ import annotations

import enum
import os
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exectrack._echo import echo
from exectrack.errors import InvalidArgumentError

__all__ = [
    "Run",
    "RunStatus",
    "Source",
    "datetime_to_us",
    "new_run_id",
    "now_us",
    "us_to_datetime",
    "validate_source",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RunStatus(enum.StrEnum):
    """The one status enum. ``queued`` and ``running`` are open; the rest are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    CANCELED = "canceled"
    TIMEOUT = "timeout"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @classmethod
    def parse(cls, value: str | RunStatus) -> RunStatus:
        """Parse a status string exactly; an unknown status is an error, never coerced."""
        if isinstance(value, RunStatus):
            return value
        status = _STATUS_BY_VALUE.get(value) if isinstance(value, str) else None
        if status is None:  # looked up, not cls(value): its error would repr the input
            allowed = ", ".join(s.value for s in cls)
            raise InvalidArgumentError(
                f"unknown run status {echo(value)}; expected one of: {allowed}"
            )
        return status

    @classmethod
    def terminal(cls) -> frozenset[RunStatus]:
        return TERMINAL_STATUSES


_STATUS_BY_VALUE: dict[str, RunStatus] = {s.value: s for s in RunStatus}

TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELED, RunStatus.TIMEOUT}
)


class Source(enum.StrEnum):
    """The built-in entry points. Any name matching ``[a-z0-9_.-]{1,64}`` is also valid."""

    CHAT = "chat"
    SKILL = "skill"
    HEARTBEAT = "heartbeat"


_SOURCE_RE = re.compile(r"[a-z0-9_.-]{1,64}")


def validate_source(source: str) -> str:
    """Return ``source`` if it is a valid source name, else raise InvalidArgumentError."""
    if not isinstance(source, str) or _SOURCE_RE.fullmatch(source) is None:
        raise InvalidArgumentError(
            f"invalid source {echo(source)}: use 1-64 characters from [a-z0-9_.-] "
            "(built-in: chat, skill, heartbeat)"
        )
    return str(source)


@dataclass(frozen=True, slots=True)
class Run:
    """One execution as stored. ``finished_at`` is None exactly while the run is open."""

    id: str
    source: str
    status: RunStatus
    started_at: datetime
    source_ref: str | None = None
    session_id: str | None = None
    parent_id: str | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    owner: str | None = None
    heartbeat_at: datetime | None = None
    deadline_at: datetime | None = None
    updated_at: datetime | None = None
    lease_until: datetime | None = None
    items: int | None = None  # what a stream yielded (None: not a stream)
    first_item_ms: float | None = None  # time to first item (LLMs: to first token)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: datetimes as ISO 8601 strings, status as its value."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, RunStatus):
                value = value.value
            elif name == "metadata":
                value = dict(value)
            out[name] = value
        return out


# -- time -------------------------------------------------------------------------


def now_us() -> int:
    """Current wall-clock time in integer microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


def us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def datetime_to_us(value: datetime) -> int:
    """Exact microseconds since the epoch; a naive datetime is an error, not a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(
            f"naive datetime {value.isoformat()!r}: pass a timezone-aware datetime"
        )
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- ids ----------------------------------------------------------------------------

_id_lock = threading.Lock()
_last_ms = 0
_seq = 0
# Ids need uniqueness, not secrecy: a PRNG seeded from os.urandom (and reseeded in a
# forked child) avoids a system call per run, which would also release the GIL.
_rng = random.Random(os.urandom(32))


def new_run_id() -> str:
    """A UUIDv7 string: 48-bit millisecond time, then a counter, then random bits.

    Ids made in one process are strictly increasing (the 12-bit ``rand_a`` field is a
    counter within a millisecond, seeded randomly), so they sort in creation order.
    """
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    with _id_lock:
        rand = _rng.getrandbits(80)
        if ms > _last_ms:
            _last_ms = ms
            _seq = (rand >> 68) & 0x7FF  # random start, leaving room to count up
        else:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # counter exhausted within one ms: borrow the next ms
                _last_ms += 1
                ms = _last_ms
                _seq = 0
        seq = _seq
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _reset_ids_after_fork() -> None:
    global _id_lock
    _id_lock = threading.Lock()
    _rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reset_ids_after_fork)

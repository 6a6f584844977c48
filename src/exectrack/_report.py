"""The report's result records (``exectrack.query.report``, which exports them).

Apart from the other results (``_results.py``): ``exectrack report`` creates these two
dataclasses and none of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Report", "SourceReport"]


@dataclass(frozen=True, slots=True)
class SourceReport:
    """Liveness and outcome figures of one source over a window.

    ``hang_rate`` = (runs reaped as ``abandoned`` + runs still open past their lease)
    / runs started, all among the runs started in the window. ``open`` and
    ``open_past_lease`` count every open run, however old; ``oldest_open_age_s`` is
    the age of the oldest one. ``first_item_p50_ms``/``first_item_p95_ms``: time to
    first item of the window's finished streams (None when there were none).
    """

    source: str
    started: int
    by_status: dict[str, int]
    open: int
    open_past_lease: int
    abandoned: int
    hang_rate: float | None
    oldest_open_age_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    top_errors: list[tuple[str, int]]
    first_item_p50_ms: float | None = None
    first_item_p95_ms: float | None = None

    def to_dict(self) -> dict[str, object]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["top_errors"] = [{"code": c, "count": n} for c, n in self.top_errors]
        return out


@dataclass(frozen=True, slots=True)
class Report:
    since: datetime | None
    now: datetime
    sources: list[SourceReport]

    def to_dict(self) -> dict[str, object]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat().replace("+00:00", "Z")

        return {
            "since": iso(self.since),
            "now": iso(self.now),
            "sources": [s.to_dict() for s in self.sources],
        }

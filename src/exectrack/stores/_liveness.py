"""Liveness: leases kept alive by heartbeats, and the reaper's guarded finishes.

Mixed into ``SqlStore``. Every reaper write is the same guarded UPDATE as a normal
finish (``... AND finished_at IS NULL``), so concurrent reapers and racing finishes
never double-write. A reaped ``queued`` run becomes ``canceled`` (the only terminal
state a queued run may reach), a running one ``error``/``abandoned`` or
``timeout``/``deadline_exceeded``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from exectrack._model import RunStatus
from exectrack.stores._dialect import Cursor, SqlDialect, sql

if TYPE_CHECKING:  # loads on first reap (stores/_summaries.py): a CLI read never needs it
    from exectrack.stores._summaries import Reaped

__all__ = ["LivenessOps"]

_RETURNING = "id, source, source_ref, owner, status"
HEARTBEAT_CHUNK = 500  # ids per statement: far below every engine's parameter limit


class LivenessOps:
    """Heartbeats and reaping, written once for every engine."""

    dialect: SqlDialect

    def _write(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _write_one(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _changed(self, n: int) -> None:
        raise NotImplementedError

    def _ensure_ready(self) -> None:
        raise NotImplementedError

    def heartbeat(
        self, owner: str, at: int, lease_until: int, run_ids: Sequence[str] | None = None
    ) -> int:
        """Prove ``owner`` alive: renew the lease of its open runs (only ``run_ids``
        among them, when given), in one statement per ``HEARTBEAT_CHUNK`` ids;
        returns how many runs it renewed."""
        self._ensure_ready()
        ts = self.dialect.ts
        base = (
            "UPDATE runs SET heartbeat_at = ?, lease_until = ? "
            "WHERE owner = ? AND finished_at IS NULL"
        )
        params = [ts(at), ts(lease_until), owner]
        if run_ids is None:
            with self._write_one() as cur:
                cur.execute(sql(self.dialect, base), params)
                return max(cur.rowcount, 0)
        ids = list(run_ids)
        renewed = 0
        for i in range(0, len(ids), HEARTBEAT_CHUNK):
            chunk = ids[i : i + HEARTBEAT_CHUNK]
            marks = ", ".join("?" * len(chunk))
            with self._write_one() as cur:
                cur.execute(sql(self.dialect, f"{base} AND id IN ({marks})"), [*params, *chunk])
                renewed += max(cur.rowcount, 0)
        return renewed

    def open_owners(self) -> list[str]:
        """The distinct owners of open runs."""
        self._ensure_ready()
        with self._read() as cur:
            cur.execute(
                "SELECT DISTINCT owner FROM runs WHERE finished_at IS NULL AND owner IS NOT NULL"
            )
            return sorted(str(row[0]) for row in cur.fetchall())

    def reap(
        self, now: int, *, dead_owners: Sequence[str] = (), dry_run: bool = False
    ) -> list[Reaped]:
        """Finish, in one transaction, the open runs that (in this order) belong to a
        dead owner, are past ``deadline_at``, or are past ``lease_until`` (strictly
        before ``now``). ``dry_run``: report what would be finished, change nothing."""
        from exectrack.stores._summaries import Reaped

        self._ensure_ready()
        ts = self.dialect.ts(now)
        rules: list[tuple[str, list[Any], str, str, str]] = []
        if dead_owners:
            marks = ", ".join("?" * len(dead_owners))
            rules.append(
                (f"owner IN ({marks})", list(dead_owners), "error", "abandoned", "dead_owner")
            )
        rules.append(("deadline_at < ?", [ts], "timeout", "deadline_exceeded", "deadline"))
        rules.append(("lease_until < ?", [ts], "error", "abandoned", "lease_expired"))
        reaped: list[Reaped] = []
        with self._read() if dry_run else self._write() as cur:
            for condition, params, status, code, reason in rules:
                where = f"finished_at IS NULL AND {condition}"
                if dry_run:
                    done = {r.run_id for r in reaped}
                    query = sql(self.dialect, f"SELECT {_RETURNING} FROM runs WHERE {where}")
                    cur.execute(query, params)
                    rows = [r for r in cur.fetchall() if r[0] not in done]
                else:
                    cur.execute(
                        sql(
                            self.dialect,
                            "UPDATE runs SET status = CASE WHEN status = 'queued' "
                            "THEN 'canceled' ELSE ? END, finished_at = ?, "
                            f"duration_ms = {self.dialect.duration_since_start}, "
                            "error_code = ?, error_message = ?, retryable = ?, updated_at = ?, "
                            f"change_seq = {self.dialect.change_stamp} "
                            f"WHERE {where} RETURNING {_RETURNING}",
                        ),
                        [status, ts, ts, code, _MESSAGES[reason], True, ts, *params],
                    )
                    rows = cur.fetchall()
                for row in rows:
                    if not dry_run:
                        final = RunStatus(row[4])  # RETURNING gives the row as updated
                    elif row[4] == RunStatus.QUEUED:
                        final = RunStatus.CANCELED
                    else:
                        final = RunStatus(status)
                    reaped.append(Reaped(str(row[0]), row[1], row[2], row[3], final, code, reason))
        if reaped and not dry_run:
            self._changed(len(reaped))
        return reaped


_MESSAGES = {
    "dead_owner": "the process that ran it is gone",
    "deadline": "its deadline passed before it finished",
    "lease_expired": "its owner stopped heartbeating (lease expired)",
}

"""psycopg plumbing for the PostgreSQL store: the lazy driver import, a pool that is
safe to drop in a forked child, a connection class that remembers why connecting
failed, and the checks that tell a connection the server closed."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exectrack.errors import DriverMissingError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "INSTALL_HINT",
    "connection_class",
    "connection_lost",
    "has_input",
    "import_driver",
    "pool_class",
    "quiet_pool_logs",
]

INSTALL_HINT = "pip install 'exectrack[postgres]'"


def import_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise DriverMissingError(
            f"the PostgreSQL store needs psycopg 3 and psycopg_pool: {INSTALL_HINT}"
        ) from exc
    return psycopg, psycopg_pool


def connection_lost(conn: psycopg.Connection[Any], exc: BaseException) -> bool:
    """Whether ``exc`` means the server connection is gone (closed, or being closed
    by an operator or a shutdown: SQLSTATE class 08, 57P01-57P03)."""
    state = getattr(exc, "sqlstate", None) or ""
    return conn.closed or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def has_input(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection's socket is readable (or the connection is gone)."""
    if conn.closed:
        return True
    try:
        fd = conn.fileno()
    except Exception:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover - Windows


def connection_class(
    record: Callable[[BaseException | None], None],
) -> type[psycopg.Connection[Any]]:
    """psycopg's Connection, calling ``record`` with each connect's failure (or None):
    the pool retries in the background, and a timeout alone would not say why."""
    from psycopg import Connection

    class _Connection(Connection[Any]):
        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> Any:
            try:
                conn = super().connect(*args, **kwargs)
            except Exception as exc:
                record(exc)
                raise
            record(None)
            return conn

    return _Connection


_POOL_CLASS: Any = None


def pool_class() -> Any:
    """psycopg_pool's ConnectionPool whose finaliser does nothing outside the process
    that made it (like psycopg's own connections), so a forked child that drops its
    parent's pool never stops the parent's worker threads or closes its sockets."""
    global _POOL_CLASS
    if _POOL_CLASS is None:
        from psycopg_pool import ConnectionPool

        class _ForkSafePool(ConnectionPool):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._exectrack_pid = os.getpid()
                super().__init__(*args, **kwargs)

            def __del__(self) -> None:
                if getattr(self, "_exectrack_pid", None) == os.getpid():
                    super().__del__()

        _POOL_CLASS = _ForkSafePool
    return _POOL_CLASS


class _OncePerMessage(logging.Filter):
    """psycopg_pool logs every failed reconnect (several a second while a server is
    down); for exectrack's pool (its threads, or records naming it) each kind of
    message goes through once, like exectrack's own failure logs."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        ours = (record.threadName or "").startswith("exectrack") or (
            isinstance(record.args, tuple) and "exectrack" in record.args
        )
        if not ours:
            return True
        key = str(record.msg)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        return True


_FILTER: _OncePerMessage | None = None


def quiet_pool_logs() -> None:
    """Install the once-per-message filter on psycopg_pool's logger (once)."""
    global _FILTER
    if _FILTER is None:
        _FILTER = _OncePerMessage()
        logging.getLogger("psycopg.pool").addFilter(_FILTER)


def _after_fork_in_child() -> None:
    """A pool thread of the parent may have held the filter's lock at fork() (it logs
    each failed reconnect): a lock held at fork stays held forever in the child."""
    if _FILTER is not None:
        _FILTER._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

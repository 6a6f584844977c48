"""exectrack's loggers: :mod:`logging` is imported when one first logs.

A CLI read never logs, and importing logging costs it ~4 ms of its ~50 ms start-up
(bench/cli_startup.py), so every exectrack module logs through ``get_logger``. The records
are the standard library's, under the same logger names; only the import moves.

The CLI sends exectrack's records to stderr for one command (``to_stderr``). Its
handler is installed at once when logging is already imported, else just before
exectrack's first record.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["Logger", "get_logger", "to_stderr"]

_FORMAT = "%(levelname)s %(name)s: %(message)s"

_lock = threading.Lock()
_pending: int | None = None  # the CLI's verbosity, until its handler is installed
_undo: Callable[[], None] | None = None  # removes the installed handler


class Logger:
    """The ``logging.Logger`` of ``name``, looked up when it first logs. Records carry
    the caller's function and line (``stacklevel``), as a plain logger's do."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _get(self) -> logging.Logger:
        logger = self._logger
        if logger is None:
            import logging

            _install()
            logger = self._logger = logging.getLogger(self.name)
        return logger

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        self._get().info(msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        self._get().warning(msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        self._get().exception(msg, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<exectrack logger {self.name}>"


def get_logger(name: str) -> Logger:
    """The logger ``name`` (exectrack's own: ``exectrack`` or below it)."""
    return Logger(name)


def to_stderr(verbosity: int) -> Callable[[], None]:
    """Send exectrack's records to stderr, warnings and up (``verbosity`` 0), info (1)
    or everything (2 or more), until the returned undo runs; the undo leaves the
    ``exectrack`` logger's handlers and level as they were."""
    global _pending
    with _lock:
        _pending = verbosity
    if "logging" in sys.modules:
        _install()
    return _restore


def _install() -> None:
    """Install the CLI's pending stderr handler, if one waits."""
    global _pending, _undo
    with _lock:
        verbosity, _pending = _pending, None
        if verbosity is None:
            return
        import logging

        logger = logging.getLogger("exectrack")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        previous = logger.level
        logger.addHandler(handler)
        logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))

        def undo() -> None:
            logger.removeHandler(handler)
            logger.setLevel(previous)

        _undo = undo


def _restore() -> None:
    global _pending, _undo
    with _lock:
        undo, _pending, _undo = _undo, None, None
    if undo is not None:
        undo()


def _after_fork_in_child() -> None:
    """Every logger's first record takes the lock (to install the CLI's handler): a
    thread of the parent may have held it at fork(), and then would forever."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

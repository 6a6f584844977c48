"""Heartbeat tasks: periodic agent work on APScheduler, every execution one run.

Declare tasks in code (:class:`Task`) or in a TOML task file (:func:`load_tasks`),
then run them with :class:`HeartbeatService` (``service.start()``,
``service.install(scheduler)``) or ``exectrack heartbeat run tasks.toml``. Needs
``pip install 'exectrack[heartbeat]'`` to run (declaring and validating tasks works
without it, except cron schedules). The legacy history table and its retirement
live in :mod:`exectrack.heartbeat.legacy`.
"""

from __future__ import annotations

from exectrack.heartbeat._service import HeartbeatService
from exectrack.heartbeat._tasks import (
    LegacyConfig,
    LegacyStage,
    Task,
    TaskFile,
    TaskFileError,
    load_tasks,
    parse_duration,
)

__all__ = [
    "HeartbeatService",
    "LegacyConfig",
    "LegacyStage",
    "Task",
    "TaskFile",
    "TaskFileError",
    "load_tasks",
    "parse_duration",
]

"""Heartbeat tasks: declared in code (:class:`Task`) or in a TOML task file
(:func:`load_tasks`), validated whole before anything starts.

A bad declaration is one :class:`TaskFileError` naming the task and the field
(``tasks.toml: task 'inbox': field 'interval': ...``); nothing is scheduled.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from exectrack._echo import echo
from exectrack.errors import ConfigError, DriverMissingError

__all__ = [
    "LegacyConfig",
    "LegacyStage",
    "Task",
    "TaskFile",
    "TaskFileError",
    "load_tasks",
    "parse_duration",
    "resolve_target",
]

LegacyStage = Literal["dual", "read_only", "runs_only"]
STAGES: tuple[LegacyStage, ...] = ("dual", "read_only", "runs_only")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_TARGET_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class TaskFileError(ConfigError):
    """A task declaration cannot be used; ``task`` and ``field`` say where."""

    def __init__(self, message: str, *, task: str | None = None, field: str | None = None):
        super().__init__(message)
        self.task = task
        self.field = field


def _fail(task: str | None, name: str | None, problem: str) -> TaskFileError:
    where = []
    if task is not None:
        where.append(f"task {echo(task, 64)}")
    if name is not None:
        where.append(f"field {name!r}")
    prefix = ": ".join(where)
    return TaskFileError(f"{prefix}: {problem}" if prefix else problem, task=task, field=name)


def parse_duration(value: object) -> float:
    """Seconds from a number (``90``, ``0.5``) or a string (``"90s"``, ``"30m"``,
    ``"2h"``, ``"1d"``, ``"250ms"``); must be > 0. ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError(f"{echo(value)} is not a duration (use e.g. 90, '90s', '30m', '2h')")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{echo(value)} is not a duration (use e.g. 90, '90s', '30m', '2h')")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{echo(value)} must be more than 0 seconds")
    return seconds


def resolve_target(target: str) -> Callable[..., Any]:
    """The callable ``"package.module:function"`` names (``function`` may be dotted:
    ``module:Class.method``). ValueError saying what could not be found."""
    if not isinstance(target, str) or not _TARGET_RE.fullmatch(target):
        raise ValueError(f"{echo(target)} is not 'package.module:function'")
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} ({type(exc).__name__}: {echo(str(exc), 120)})"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"importing module {module_name!r} failed ({type(exc).__name__}: {echo(str(exc), 120)})"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{target!r} is {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def _int(value: object, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{echo(value)} is not {what}")
    if value < minimum:
        raise ValueError(f"{echo(value)} is not {what}")
    return value


def _check_cron(expr: object, timezone: str | None) -> str:
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError(f"{echo(expr)} is not a cron expression like '*/30 * * * *'")
    try:
        from apscheduler.triggers.cron import CronTrigger
    except ImportError:  # pragma: no cover - the extra is installed in the test env
        raise DriverMissingError(
            "cron schedules need APScheduler: pip install 'exectrack[heartbeat]'"
        ) from None
    try:
        CronTrigger.from_crontab(expr, timezone=timezone or "UTC")
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{echo(expr)} is not a valid cron expression ({echo(str(exc), 100)}); "
            "use five fields: minute hour day month day-of-week"
        ) from None
    return expr.strip()


@dataclass(frozen=True)
class Task:
    """One heartbeat task. Give ``interval`` (seconds, or ``"30m"``) or ``cron``
    (five fields), not both. ``target`` is a callable or ``"package.module:function"``
    (resolved at once). ``timeout`` covers the whole execution (retries included);
    ``retries`` extra attempts after an exception, waiting ``backoff`` seconds
    (doubling). ``max_concurrent`` is APScheduler's ``max_instances``: a due time
    that finds that many still running is recorded as ``skipped_overlap``.
    ``priority`` is recorded with every run (APScheduler has no priorities, so it
    does not change the order of execution). ``timezone``: the zone of the task's
    schedule (default: the service's, else the scheduler's; a task file sets one for
    all its tasks). Invalid fields raise TaskFileError."""

    id: str
    target: Callable[..., Any] | str
    interval: float | str | None = None
    cron: str | None = None
    description: str = ""
    timeout: float | str | None = None
    retries: int = 0
    backoff: float | str = 1.0
    priority: int = 0
    max_concurrent: int = 1
    misfire_grace: float | str | None = None
    coalesce: bool = True
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timezone: str | None = None

    def __post_init__(self) -> None:
        tid = self.id
        if not isinstance(tid, str) or not _ID_RE.fullmatch(tid):
            raise _fail(
                None if not isinstance(tid, str) else tid,
                "id",
                f"{echo(tid)} is not a task id (1-128 letters, digits, '_', '.', ':', '-')",
            )

        def check(name: str, convert: Callable[[Any], Any]) -> None:
            try:
                value = convert(getattr(self, name))
            except (ValueError, TypeError) as exc:
                raise _fail(tid, name, str(exc)) from None
            object.__setattr__(self, name, value)

        if self.interval is None and self.cron is None:
            raise _fail(tid, "interval", "give a schedule: interval = '30m' or cron = '0 * * * *'")
        if self.interval is not None and self.cron is not None:
            raise _fail(tid, "cron", "give interval or cron, not both")
        if self.timezone is not None:
            check("timezone", _zone)
        if self.interval is not None:
            check("interval", parse_duration)
        else:
            check("cron", lambda v: _check_cron(v, self.timezone))
        if isinstance(self.target, str):
            check("target", resolve_target)
        elif not callable(self.target):
            raise _fail(tid, "target", f"{echo(self.target)} is not a callable")
        check("description", _text)
        if self.timeout is not None:
            check("timeout", parse_duration)
        check("retries", lambda v: _int(v, 0, "a whole number >= 0"))
        check("backoff", _backoff)
        check("priority", lambda v: _int(v, -(2**31), "a whole number"))
        check("max_concurrent", lambda v: _int(v, 1, "a whole number >= 1"))
        if self.misfire_grace is not None:
            check("misfire_grace", lambda v: max(1, round(parse_duration(v))))
        if not isinstance(self.coalesce, bool):
            raise _fail(tid, "coalesce", f"{echo(self.coalesce)} is not true or false")
        check("args", _args)
        check("kwargs", _kwargs)

    @property
    def func(self) -> Callable[..., Any]:
        """The resolved target."""
        target = self.target
        assert callable(target)  # resolved in __post_init__
        return target

    @property
    def is_coroutine(self) -> bool:
        func = self.func
        while hasattr(func, "func") and not inspect.isfunction(func):  # functools.partial
            func = func.func
        return inspect.iscoroutinefunction(func)

    def metadata(self) -> dict[str, Any]:
        """What every run of this task records besides the schedule."""
        meta: dict[str, Any] = {"priority": self.priority}
        if self.description:
            meta["description"] = self.description
        return meta


def _zone(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{echo(value)} is not a time zone name like 'Europe/Berlin'")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {echo(value)} (use e.g. 'UTC', 'Europe/Berlin')"
        ) from None
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{echo(value)} is not a string")
    return value


def _backoff(value: object) -> float:
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return parse_duration(value)


def _args(value: object) -> tuple[Any, ...]:
    if isinstance(value, list | tuple):
        return tuple(value)
    raise ValueError(f"{echo(value)} is not a list of arguments")


def _kwargs(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return dict(value)
    raise ValueError(f"{echo(value)} is not a table of keyword arguments")


@dataclass(frozen=True)
class LegacyConfig:
    """Where the retirement of the legacy history table stands (see
    docs/heartbeat-retirement.md): ``dual`` writes both runs and legacy rows,
    ``read_only`` and ``runs_only`` write runs only. ``database`` is the legacy
    table's database URL (needed for ``dual``)."""

    stage: LegacyStage = "runs_only"
    database: str | None = None
    table: str = "heartbeat_executions"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise _fail(
                None, "legacy.stage", f"{echo(self.stage)} is not one of {', '.join(STAGES)}"
            )
        if self.database is not None and not isinstance(self.database, str):
            raise _fail(None, "legacy.database", f"{echo(self.database)} is not a URL")
        if self.stage == "dual" and not self.database:
            raise _fail(None, "legacy.database", "stage 'dual' needs the legacy database URL")
        if not isinstance(self.table, str) or not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?", self.table
        ):
            raise _fail(None, "legacy.table", f"{echo(self.table)} is not a table name")


@dataclass(frozen=True)
class TaskFile:
    """A loaded task file: its tasks, time zone and legacy settings."""

    tasks: tuple[Task, ...]
    timezone: str | None = None
    legacy: LegacyConfig = field(default_factory=LegacyConfig)
    path: str | None = None


_TASK_FIELDS = {f.name for f in fields(Task)} - {"timezone"}
_TOP_KEYS = {"tasks", "timezone", "legacy"}
_LEGACY_KEYS = {f.name for f in fields(LegacyConfig)}


def _unknown(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field {echo(key, 64)}{hint}; allowed: {', '.join(sorted(allowed))}"


def load_tasks(path: str | Path) -> TaskFile:
    """Read and validate a TOML task file; TaskFileError (prefixed with the file
    name) for the first problem found, before anything is scheduled::

        timezone = "UTC"                  # optional: cron times' zone (default: local)

        [legacy]                          # optional: see docs/heartbeat-retirement.md
        stage = "dual"                    # dual | read_only | runs_only
        database = "sqlite:///app.db"
        table = "heartbeat_executions"

        [[tasks]]
        id = "inbox_digest"
        description = "Summarise new mail"
        target = "myapp.tasks:inbox_digest"
        interval = "30m"                  # or cron = "*/30 * * * *"
        timeout = "2m"
        retries = 2
        backoff = "10s"
        priority = 5
        max_concurrent = 1
    """
    name = Path(path).name
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskFileError(f"{name}: cannot read the task file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TaskFileError(f"{name}: the task file is not UTF-8 text") from None
    try:
        return _parse(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as exc:
        raise TaskFileError(f"{name}: not valid TOML: {exc}") from None
    except TaskFileError as exc:
        raise TaskFileError(f"{name}: {exc}", task=exc.task, field=exc.field) from None


def _parse(doc: Mapping[str, Any], path: str | None = None) -> TaskFile:
    for key in doc:
        if key not in _TOP_KEYS:
            raise _fail(None, None, _unknown(key, _TOP_KEYS))
    timezone = doc.get("timezone")
    if timezone is not None:
        try:
            timezone = _zone(timezone)
        except ValueError as exc:
            raise _fail(None, "timezone", str(exc)) from None
    legacy_raw = doc.get("legacy", {})
    if not isinstance(legacy_raw, Mapping):
        raise _fail(None, "legacy", "must be a table: [legacy]")
    for key in legacy_raw:
        if key not in _LEGACY_KEYS:
            raise _fail(None, f"legacy.{key}", _unknown(key, _LEGACY_KEYS))
    legacy = LegacyConfig(**legacy_raw)
    raw_tasks = doc.get("tasks")
    if raw_tasks is None:
        raise _fail(None, "tasks", "no tasks: add at least one [[tasks]] table")
    if not isinstance(raw_tasks, list) or not all(isinstance(t, Mapping) for t in raw_tasks):
        raise _fail(None, "tasks", "must be an array of tables: [[tasks]]")
    if not raw_tasks:
        raise _fail(None, "tasks", "no tasks: add at least one [[tasks]] table")
    tasks: list[Task] = []
    seen: set[str] = set()
    for number, raw in enumerate(raw_tasks, 1):
        tid = raw.get("id")
        label = tid if isinstance(tid, str) else f"#{number}"
        if "id" not in raw:
            raise _fail(label, "id", "missing: every task needs an id")
        for key in raw:
            if key not in _TASK_FIELDS:
                raise _fail(label, key, _unknown(key, _TASK_FIELDS))
        if "target" not in raw:
            raise _fail(label, "target", "missing: target = 'package.module:function'")
        if isinstance(tid, str) and tid in seen:
            raise _fail(label, "id", "duplicate: another task has this id")
        if isinstance(tid, str):
            seen.add(tid)
        try:
            tasks.append(Task(**raw, timezone=timezone))
        except TaskFileError as exc:
            if exc.task is None:  # a bad id: name the task by its position
                raise _fail(label, exc.field, str(exc).partition(": ")[2]) from None
            raise
    return TaskFile(tuple(tasks), timezone, legacy, path)

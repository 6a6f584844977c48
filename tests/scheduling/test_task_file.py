"""Task files: a good one loads whole; every kind of bad field is one TaskFileError
naming the task and the field, raised before anything is scheduled."""

from __future__ import annotations

from pathlib import Path

import pytest

from exectrack.heartbeat import LegacyConfig, Task, TaskFileError, load_tasks, parse_duration
from exectrack.heartbeat._tasks import resolve_target
from scheduling import jobs

GOOD = """
timezone = "UTC"

[legacy]
stage = "dual"
database = "sqlite:///app.db"

[[tasks]]
id = "inbox_digest"
description = "Summarise new mail"
target = "scheduling.jobs:ok"
interval = "30m"
timeout = "2m"
retries = 2
backoff = "10s"
priority = 5
max_concurrent = 2
misfire_grace = "1m"

[[tasks]]
id = "nightly"
target = "scheduling.jobs:async_ok"
cron = "0 3 * * *"
args = [1]
kwargs = { b = 2 }
coalesce = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_task_file_loads_every_field(tmp_path: Path) -> None:
    """Durations are seconds, targets resolved, defaults filled, legacy read."""
    spec = load_tasks(write(tmp_path, GOOD))
    inbox, nightly = spec.tasks
    assert inbox.func is jobs.ok and nightly.func is jobs.async_ok
    assert (inbox.interval, inbox.timeout, inbox.backoff, inbox.misfire_grace) == (
        1800.0,
        120.0,
        10.0,
        60,
    )
    assert (inbox.retries, inbox.priority, inbox.max_concurrent) == (2, 5, 2)
    assert inbox.metadata() == {"priority": 5, "description": "Summarise new mail"}
    assert nightly.cron == "0 3 * * *" and nightly.is_coroutine and not inbox.is_coroutine
    assert (nightly.args, dict(nightly.kwargs), nightly.coalesce) == ((1,), {"b": 2}, False)
    assert spec.timezone == "UTC"
    assert spec.legacy == LegacyConfig("dual", "sqlite:///app.db", "heartbeat_executions")


def task(**fields: str) -> str:
    """One [[tasks]] table: a valid task with ``fields`` replaced (TOML values)."""
    base = {"id": '"t1"', "target": '"scheduling.jobs:ok"', "interval": '"1m"'}
    base.update(fields)
    body = "\n".join(f"{k} = {v}" for k, v in base.items() if v != "<drop>")
    return f"[[tasks]]\n{body}\n"


BAD = [
    # (file text, task named, field named, words in the message)
    (task(intervall='"1m"'), "t1", "intervall", "did you mean 'interval'"),
    (task(target='"scheduling.jobs:no_such"'), "t1", "target", "has no attribute"),
    (task(target='"no_such_module_xyz:run"'), "t1", "target", "cannot import module"),
    (task(target='"scheduling.jobs:not_callable"'), "t1", "target", "not a callable"),
    (task(target='"scheduling.jobs"'), "t1", "target", "package.module:function"),
    (task(target="<drop>"), "t1", "target", "missing"),
    (task(target="42"), "t1", "target", "not a callable"),
    (task(id="<drop>"), "#1", "id", "missing"),
    (task(id='"bad id!"'), "bad id!", "id", "not a task id"),
    (task(id="7"), "#1", "id", "not a task id"),
    (task(interval='"30x"'), "t1", "interval", "not a duration"),
    (task(interval="0"), "t1", "interval", "more than 0"),
    (task(interval="-5"), "t1", "interval", "more than 0"),
    (task(interval="true"), "t1", "interval", "not a duration"),
    (task(interval="<drop>"), "t1", "interval", "give a schedule"),
    (task(cron='"0 * * * *"'), "t1", "cron", "not both"),
    (task(interval="<drop>", cron='"61 * * * *"'), "t1", "cron", "not a valid cron"),
    (task(interval="<drop>", cron='"every hour"'), "t1", "cron", "not a valid cron"),
    (task(interval="<drop>", cron="5"), "t1", "cron", "not a cron expression"),
    (task(timeout='"soon"'), "t1", "timeout", "not a duration"),
    (task(timeout="0"), "t1", "timeout", "more than 0"),
    (task(retries="-1"), "t1", "retries", ">= 0"),
    (task(retries="1.5"), "t1", "retries", ">= 0"),
    (task(retries='"3"'), "t1", "retries", ">= 0"),
    (task(backoff='"fast"'), "t1", "backoff", "not a duration"),
    (task(priority='"high"'), "t1", "priority", "whole number"),
    (task(max_concurrent="0"), "t1", "max_concurrent", ">= 1"),
    (task(misfire_grace='"x"'), "t1", "misfire_grace", "not a duration"),
    (task(coalesce='"yes"'), "t1", "coalesce", "true or false"),
    (task(description="3"), "t1", "description", "not a string"),
    (task(args='"a"'), "t1", "args", "list"),
    (task(kwargs="[1]"), "t1", "kwargs", "table"),
    (task() + task(), "t1", "id", "duplicate"),
    ("", None, "tasks", "no tasks"),
    ("tasks = []", None, "tasks", "no tasks"),
    ("tasks = 3", None, "tasks", "array of tables"),
    ('tasks = ["a"]', None, "tasks", "array of tables"),
    ("taks = 1\n" + task(), None, None, "did you mean 'tasks'"),
    ('timezone = "Mars/Olympus"\n' + task(), None, "timezone", "unknown time zone"),
    ('[legacy]\nstage = "both"\n' + task(), None, "legacy.stage", "dual, read_only, runs_only"),
    ('[legacy]\nstage = "dual"\n' + task(), None, "legacy.database", "needs the legacy"),
    ('[legacy]\nstagee = "dual"\n' + task(), None, "legacy.stagee", "did you mean 'stage'"),
    ('[legacy]\ntable = "drop table;"\n' + task(), None, "legacy.table", "not a table name"),
    ("legacy = 3\n" + task(), None, "legacy", "must be a table"),
]


@pytest.mark.parametrize(("text", "task_id", "field", "words"), BAD)
def test_every_kind_of_bad_field_is_one_error_naming_task_and_field(
    tmp_path: Path, text: str, task_id: str | None, field: str | None, words: str
) -> None:
    """The message starts with the file name, names the task and field, says why."""
    with pytest.raises(TaskFileError) as info:
        load_tasks(write(tmp_path, text))
    message = str(info.value)
    assert message.startswith("tasks.toml: ")
    assert (info.value.task, info.value.field) == (task_id, field)
    if task_id is not None:
        assert f"task '{task_id}'" in message
    if field is not None:
        assert f"field '{field}'" in message
    assert words in message
    assert "\n" not in message


def test_toml_syntax_error_and_unreadable_file_are_one_line(tmp_path: Path) -> None:
    """Broken TOML and a missing file are one-line TaskFileErrors too."""
    with pytest.raises(TaskFileError, match=r"tasks.toml: not valid TOML: .*line 1"):
        load_tasks(write(tmp_path, "[[tasks]\nid = 1"))
    with pytest.raises(TaskFileError, match="cannot read the task file"):
        load_tasks(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(TaskFileError, match="not UTF-8"):
        load_tasks(tmp_path / "bin.toml")


def test_a_target_whose_import_raises_names_the_module(tmp_path: Path) -> None:
    """A target module that raises while importing is reported, not propagated."""
    (tmp_path / "broken_target_mod.py").write_text("1 / 0\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(TaskFileError, match=r"importing module 'broken_target_mod' failed"):
            load_tasks(write(tmp_path, task(target='"broken_target_mod:run"')))
    finally:
        sys.path.remove(str(tmp_path))


def test_tasks_in_code_are_validated_the_same_way() -> None:
    """Task(...) in code takes callables or references and rejects bad fields."""
    t = Task("inbox", jobs.ok, interval=60, timeout="30s")
    assert (t.interval, t.timeout, t.func) == (60.0, 30.0, jobs.ok)
    with pytest.raises(TaskFileError, match="field 'retries'") as info:
        Task("inbox", jobs.ok, interval=60, retries=-2)
    assert info.value.task == "inbox"
    with pytest.raises(TaskFileError, match="field 'target'"):
        Task("inbox", 42, interval=60)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (0.5, 0.5), ("90", 90.0), ("90s", 90.0), ("250ms", 0.25), ("30m", 1800.0)],
)
def test_durations_parse_to_seconds(text: object, seconds: float) -> None:
    """Numbers are seconds; strings take ms, s, m, h or d."""
    assert parse_duration(text) == seconds


# Every message in full (third-party text aside: the cron parser's and the import
# system's own words are checked by prefix below), so a changed word is noticed.
EXACT = [
    (
        task(intervall='"1m"'),
        "tasks.toml: task 't1': field 'intervall': unknown field 'intervall' (did you mean 'interval'?); allowed: args, backoff, coalesce, cron, description, id, interval, kwargs, max_concurrent, misfire_grace, priority, retries, target, timeout",  # noqa: E501
    ),
    (
        task(target='"scheduling.jobs:no_such"'),
        "tasks.toml: task 't1': field 'target': 'scheduling.jobs' has no attribute 'no_such'",
    ),
    (
        task(target='"scheduling.jobs:not_callable"'),
        "tasks.toml: task 't1': field 'target': 'scheduling.jobs:not_callable' is int, not a callable",  # noqa: E501
    ),
    (
        task(target='"scheduling.jobs"'),
        "tasks.toml: task 't1': field 'target': 'scheduling.jobs' is not 'package.module:function'",
    ),
    (
        task(target="<drop>"),
        "tasks.toml: task 't1': field 'target': missing: target = 'package.module:function'",
    ),
    (task(target="42"), "tasks.toml: task 't1': field 'target': 42 is not a callable"),
    (task(id="<drop>"), "tasks.toml: task '#1': field 'id': missing: every task needs an id"),
    (
        task(id='"bad id!"'),
        "tasks.toml: task 'bad id!': field 'id': 'bad id!' is not a task id (1-128 letters, digits, '_', '.', ':', '-')",  # noqa: E501
    ),
    (
        task(id="7"),
        "tasks.toml: task '#1': field 'id': 7 is not a task id (1-128 letters, digits, '_', '.', ':', '-')",  # noqa: E501
    ),
    (
        task(interval='"30x"'),
        "tasks.toml: task 't1': field 'interval': '30x' is not a duration (use e.g. 90, '90s', '30m', '2h')",  # noqa: E501
    ),
    (task(interval="0"), "tasks.toml: task 't1': field 'interval': 0 must be more than 0 seconds"),
    (
        task(interval="-5"),
        "tasks.toml: task 't1': field 'interval': -5 must be more than 0 seconds",
    ),
    (
        task(interval="true"),
        "tasks.toml: task 't1': field 'interval': True is not a duration (use e.g. 90, '90s', '30m', '2h')",  # noqa: E501
    ),
    (
        task(interval="<drop>"),
        "tasks.toml: task 't1': field 'interval': give a schedule: interval = '30m' or cron = '0 * * * *'",  # noqa: E501
    ),
    (
        task(cron='"0 * * * *"'),
        "tasks.toml: task 't1': field 'cron': give interval or cron, not both",
    ),
    (
        task(interval="<drop>", cron="5"),
        "tasks.toml: task 't1': field 'cron': 5 is not a cron expression like '*/30 * * * *'",
    ),
    (
        task(timeout='"soon"'),
        "tasks.toml: task 't1': field 'timeout': 'soon' is not a duration (use e.g. 90, '90s', '30m', '2h')",  # noqa: E501
    ),
    (task(timeout="0"), "tasks.toml: task 't1': field 'timeout': 0 must be more than 0 seconds"),
    (task(retries="-1"), "tasks.toml: task 't1': field 'retries': -1 is not a whole number >= 0"),
    (task(retries="1.5"), "tasks.toml: task 't1': field 'retries': 1.5 is not a whole number >= 0"),
    (task(retries='"3"'), "tasks.toml: task 't1': field 'retries': '3' is not a whole number >= 0"),
    (
        task(backoff='"fast"'),
        "tasks.toml: task 't1': field 'backoff': 'fast' is not a duration (use e.g. 90, '90s', '30m', '2h')",  # noqa: E501
    ),
    (
        task(priority='"high"'),
        "tasks.toml: task 't1': field 'priority': 'high' is not a whole number",
    ),
    (
        task(max_concurrent="0"),
        "tasks.toml: task 't1': field 'max_concurrent': 0 is not a whole number >= 1",
    ),
    (
        task(misfire_grace='"x"'),
        "tasks.toml: task 't1': field 'misfire_grace': 'x' is not a duration (use e.g. 90, '90s', '30m', '2h')",  # noqa: E501
    ),
    (task(coalesce='"yes"'), "tasks.toml: task 't1': field 'coalesce': 'yes' is not true or false"),
    (task(description="3"), "tasks.toml: task 't1': field 'description': 3 is not a string"),
    (task(args='"a"'), "tasks.toml: task 't1': field 'args': 'a' is not a list of arguments"),
    (
        task(kwargs="[1]"),
        "tasks.toml: task 't1': field 'kwargs': [1] is not a table of keyword arguments",
    ),
    (task() + task(), "tasks.toml: task 't1': field 'id': duplicate: another task has this id"),
    ("", "tasks.toml: field 'tasks': no tasks: add at least one [[tasks]] table"),
    ("tasks = []", "tasks.toml: field 'tasks': no tasks: add at least one [[tasks]] table"),
    ("tasks = 3", "tasks.toml: field 'tasks': must be an array of tables: [[tasks]]"),
    ('tasks = ["a"]', "tasks.toml: field 'tasks': must be an array of tables: [[tasks]]"),
    (
        "taks = 1\n" + task(),
        "tasks.toml: unknown field 'taks' (did you mean 'tasks'?); allowed: legacy, tasks, timezone",  # noqa: E501
    ),
    (
        'timezone = "Mars/Olympus"\n' + task(),
        "tasks.toml: field 'timezone': unknown time zone 'Mars/Olympus' (use e.g. 'UTC', 'Europe/Berlin')",  # noqa: E501
    ),
    (
        '[legacy]\nstage = "both"\n' + task(),
        "tasks.toml: field 'legacy.stage': 'both' is not one of dual, read_only, runs_only",
    ),
    (
        '[legacy]\nstage = "dual"\n' + task(),
        "tasks.toml: field 'legacy.database': stage 'dual' needs the legacy database URL",
    ),
    (
        '[legacy]\nstagee = "dual"\n' + task(),
        "tasks.toml: field 'legacy.stagee': unknown field 'stagee' (did you mean 'stage'?); allowed: database, stage, table",  # noqa: E501
    ),
    (
        '[legacy]\ntable = "drop table;"\n' + task(),
        "tasks.toml: field 'legacy.table': 'drop table;' is not a table name",
    ),
    ("legacy = 3\n" + task(), "tasks.toml: field 'legacy': must be a table: [legacy]"),
    (
        task(zzzz="1"),
        "tasks.toml: task 't1': field 'zzzz': unknown field 'zzzz'; allowed: args, backoff, coalesce, cron, description, id, interval, kwargs, max_concurrent, misfire_grace, priority, retries, target, timeout",  # noqa: E501
    ),
    (
        task(id='"' + "x" * 100 + '!"'),
        "tasks.toml: task 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...: field 'id': 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... is not a task id (1-128 letters, digits, '_', '.', ':', '-')",  # noqa: E501
    ),
    (
        task(backoff="false"),
        "tasks.toml: task 't1': field 'backoff': False is not a duration (use e.g. 90, '90s', '30m', '2h')",  # noqa: E501
    ),
    (
        task(kwargs='["a", "b"]'),
        "tasks.toml: task 't1': field 'kwargs': ['a', 'b'] is not a table of keyword arguments",
    ),
    (
        task(args="{ a = 1 }"),
        "tasks.toml: task 't1': field 'args': {'a': 1} is not a list of arguments",
    ),
    (
        task(interval='"inf"'),
        "tasks.toml: task 't1': field 'interval': 'inf' is not a duration (use e.g. 90, '90s', '30m', '2h')",  # noqa: E501
    ),
    (task(priority="true"), "tasks.toml: task 't1': field 'priority': True is not a whole number"),
]


@pytest.mark.parametrize(("text", "message"), EXACT)
def test_each_bad_task_file_gets_exactly_this_message(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(TaskFileError) as info:
        load_tasks(write(tmp_path, text))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "head", "tail"),
    [
        (
            task(target='"no_such_module_xyz:run"'),
            "tasks.toml: task 't1': field 'target': cannot import module "
            "'no_such_module_xyz' (ModuleNotFoundError: ",
            ")",
        ),
        (
            task(interval="<drop>", cron='"every hour"'),
            "tasks.toml: task 't1': field 'cron': 'every hour' is not a valid cron expression (",
            "); use five fields: minute hour day month day-of-week",
        ),
    ],
)
def test_messages_quoting_a_library_keep_their_own_frame(
    tmp_path: Path, text: str, head: str, tail: str
) -> None:
    with pytest.raises(TaskFileError) as info:
        load_tasks(write(tmp_path, text))
    message = str(info.value)
    assert message.startswith(head) and message.endswith(tail), message


def test_a_zero_backoff_is_no_wait_and_a_grace_is_at_least_a_second(tmp_path: Path) -> None:
    [t] = load_tasks(write(tmp_path, task(backoff="0", misfire_grace="0.2"))).tasks
    assert (t.backoff, t.misfire_grace) == (0.0, 1)
    [t] = load_tasks(write(tmp_path, task(kwargs="{ 1 = 2 }"))).tasks  # TOML keys are text
    assert dict(t.kwargs) == {"1": 2}


# -- tasks made in code, targets, zones and the legacy table, pinned ---------------------


def test_a_task_made_in_code_names_itself_in_its_errors() -> None:
    """Task(...) outside a file: the error still names the task and the field."""
    cases = [
        (
            {"target": jobs.ok},
            "interval",
            "give a schedule: interval = '30m' or cron = '0 * * * *'",
        ),
        (
            {"target": jobs.ok, "interval": 60, "cron": "* * * * *"},
            "cron",
            "give interval or cron, not both",
        ),
        ({"target": 42, "interval": 60}, "target", "42 is not a callable"),
        (
            {"target": jobs.ok, "interval": 60, "coalesce": "yes"},
            "coalesce",
            "'yes' is not true or false",
        ),
    ]
    for fields_, field, problem in cases:
        with pytest.raises(TaskFileError) as info:
            Task(id="t9", **fields_)
        assert (info.value.task, info.value.field) == ("t9", field)
        assert str(info.value) == f"task 't9': field '{field}': {problem}"
    with pytest.raises(TaskFileError) as info:
        Task(id=7, target=jobs.ok, interval=60)  # type: ignore[arg-type]
    assert (info.value.task, info.value.field) == (None, "id")


def test_priority_is_a_32_bit_whole_number_from_below() -> None:
    assert Task(id="t", target=jobs.ok, interval=60, priority=-(2**31)).priority == -(2**31)
    with pytest.raises(TaskFileError, match="is not a whole number"):
        Task(id="t", target=jobs.ok, interval=60, priority=-(2**31) - 1)


def test_targets_split_at_the_first_colon_and_may_be_dotted() -> None:
    import os.path

    assert resolve_target("os:path.join") is os.path.join
    with pytest.raises(ValueError, match="has no attribute") as err:
        resolve_target("scheduling.jobs:ok.nope")
    assert str(err.value) == "'scheduling.jobs' has no attribute 'ok.nope'"
    with pytest.raises(ValueError, match="cannot import module") as err:
        resolve_target("no_such_module_xyz:run")
    assert str(err.value) == (
        "cannot import module 'no_such_module_xyz' "
        "(ModuleNotFoundError: \"No module named 'no_such_module_xyz'\")"
    )


def test_a_module_failing_on_import_is_named_with_its_error_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "boom_on_import.py").write_text(f"raise RuntimeError({'x' * 200!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="importing module") as err:
        resolve_target("boom_on_import:run")
    assert str(err.value) == (
        "importing module 'boom_on_import' failed (RuntimeError: " + "'" + "x" * 120 + "'...)"
    )


def test_cron_without_apscheduler_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from exectrack.errors import DriverMissingError

    monkeypatch.setitem(sys.modules, "apscheduler.triggers.cron", None)
    with pytest.raises(DriverMissingError) as info:
        Task(id="t", target=jobs.ok, cron="* * * * *")
    assert str(info.value) == "cron schedules need APScheduler: pip install 'exectrack[heartbeat]'"


def test_a_file_keeps_its_path_and_gives_each_task_its_zone(tmp_path: Path) -> None:
    path = write(tmp_path, 'timezone = "Europe/Berlin"\n' + task())
    spec = load_tasks(path)
    assert spec.path == str(path)
    assert spec.tasks[0].timezone == "Europe/Berlin"


def test_unknown_names_and_zones_and_odd_legacy_values_in_full(tmp_path: Path) -> None:
    long = "q" * 100
    with pytest.raises(TaskFileError) as info:
        load_tasks(write(tmp_path, task(**{long: "1"})))
    assert str(info.value).startswith(
        f"tasks.toml: task 't1': field '{long}': unknown field '{'q' * 64}'...; allowed: args"
    )
    with pytest.raises(TaskFileError) as info:
        load_tasks(write(tmp_path, "timezone = 5\n" + task()))
    assert str(info.value) == (
        "tasks.toml: field 'timezone': 5 is not a time zone name like 'Europe/Berlin'"
    )
    with pytest.raises(TaskFileError) as info:
        load_tasks(write(tmp_path, '[legacy]\nstage = "dual"\ndatabase = 5\n' + task()))
    assert (str(info.value), info.value.field) == (
        "tasks.toml: field 'legacy.database': 5 is not a URL",
        "legacy.database",
    )
    assert LegacyConfig(table="Heartbeat.Executions_2").table == "Heartbeat.Executions_2"


def test_an_invalid_id_is_named_as_given_or_by_position() -> None:
    with pytest.raises(TaskFileError) as info:
        Task(id="bad id!", target=jobs.ok, interval=60)
    assert (info.value.task, info.value.field) == ("bad id!", "id")


def test_an_id_that_is_a_table_keeps_its_whole_text(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError) as info:
        load_tasks(write(tmp_path, task(id="{ x = 1 }")))
    assert str(info.value) == (
        "tasks.toml: task '#1': field 'id': {'x': 1} is not a task id "
        "(1-128 letters, digits, '_', '.', ':', '-')"
    )


def test_the_cron_parsers_own_words_are_quoted_cut_at_100(tmp_path: Path) -> None:
    from apscheduler.triggers.cron import CronTrigger

    from exectrack._echo import echo

    expr = "1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16-17-18-19-20-21-22-23-24-25-26-27-28 * * * *"
    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        said = str(exc)
    assert len(said) > 100, "the case needs a message longer than the cut"
    with pytest.raises(TaskFileError) as info:
        Task(id="t", target=jobs.ok, cron=expr)
    assert str(info.value) == (
        f"task 't': field 'cron': {echo(expr)} is not a valid cron expression "
        f"({echo(said, 100)}); use five fields: minute hour day month day-of-week"
    )


def test_an_import_error_is_quoted_cut_at_120() -> None:
    name = "m" * 150
    with pytest.raises(ValueError, match="cannot import module") as err:
        resolve_target(f"{name}:run")
    said = f"No module named '{name}'"
    from exectrack._echo import echo

    assert str(err.value) == (
        f"cannot import module {name!r} (ModuleNotFoundError: {echo(said, 120)})"
    )
    assert echo(said, 120) != echo(said)

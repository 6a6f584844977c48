"""exectrack's loggers import logging on first use (``exectrack._log``): the records,
their logger names and the CLI's stderr handler are what a plain logger gives.

The lazy half (logging not imported yet) runs in a fresh interpreter: pytest itself
imports logging.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys

import pytest

from exectrack import _log
from exectrack._log import get_logger, to_stderr
from exectrack.stores import open_store


def _fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter; it fails unless logging starts unimported."""
    probe = "import sys\nassert 'logging' not in sys.modules, 'logging was imported'\n" + code
    return subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_records_name_their_logger_and_caller(caplog: pytest.LogCaptureFixture) -> None:
    """A record says which exectrack logger wrote it and where it was called from (the
    wrapper frame is skipped), with its arguments, level and exception."""
    log = get_logger("exectrack.test")
    caplog.set_level(logging.INFO, logger="exectrack")
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    log.info("one %s", "info")
    log.warning("two %d", 2)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("three")
    info, warning, error = caplog.records
    assert [r.name for r in caplog.records] == ["exectrack.test"] * 3
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.WARNING, logging.ERROR]
    assert [r.getMessage() for r in caplog.records] == ["one info", "two 2", "three"]
    assert {r.funcName for r in caplog.records} == {"test_records_name_their_logger_and_caller"}
    assert {r.filename for r in caplog.records} == {"test_log.py"}
    assert (info.lineno, warning.lineno) == (line, line + 1)
    assert error.exc_info is not None and error.exc_info[0] is ValueError
    assert info.exc_info is None


def test_a_callers_own_stacklevel_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    """``stacklevel=2`` names the caller's caller, as it would with a plain logger."""
    log = get_logger("exectrack.test")

    def helper() -> None:
        log.warning("from the helper", stacklevel=2)

    caplog.set_level(logging.WARNING, logger="exectrack")
    helper()
    (record,) = caplog.records
    assert record.funcName == "test_a_callers_own_stacklevel_is_kept"


def test_one_logging_logger_per_name(caplog: pytest.LogCaptureFixture) -> None:
    """Two exectrack loggers of one name write through the same logging.Logger, so a
    host's configuration of ``exectrack.stores`` (say) applies to both."""
    a, b = get_logger("exectrack.same"), get_logger("exectrack.same")
    logging.getLogger("exectrack.same").setLevel(logging.ERROR)
    try:
        caplog.set_level(logging.INFO)
        a.warning("dropped")
        b.warning("dropped too")
        a.exception("kept")
    finally:
        logging.getLogger("exectrack.same").setLevel(logging.NOTSET)
    assert [r.getMessage() for r in caplog.records] == ["kept"]
    assert repr(a) == "<exectrack logger exectrack.same>"


def test_stderr_handler_installed_at_once_when_logging_is_imported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With logging imported, ``to_stderr`` installs its handler at once; the undo
    leaves the exectrack logger's handlers and level as they were, and is safe twice."""
    logger = logging.getLogger("exectrack")
    before = (list(logger.handlers), logger.level)
    undo = to_stderr(1)
    try:
        assert len(logger.handlers) == len(before[0]) + 1
        assert logger.level == logging.INFO
        get_logger("exectrack.cli_test").info("shown %s", "here")
        assert "INFO exectrack.cli_test: shown here\n" in capsys.readouterr().err
    finally:
        undo()
    assert (list(logger.handlers), logger.level) == before
    undo()
    assert (list(logger.handlers), logger.level) == before
    assert _log._pending is None


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        (0, ["WARNING exectrack.x: warned 1"]),
        (1, ["INFO exectrack.x: said", "WARNING exectrack.x: warned 1"]),
    ],
)
def test_stderr_handler_waits_for_the_first_record(verbosity: int, shown: list[str]) -> None:
    """Without logging imported, ``to_stderr`` imports nothing; the first record
    installs the handler (at the asked level) and is shown; after the undo, exectrack's
    records no longer reach stderr through it."""
    out = _fresh(
        "from exectrack._log import get_logger, to_stderr\n"
        f"undo = to_stderr({verbosity})\n"
        "assert 'logging' not in sys.modules\n"
        "log = get_logger('exectrack.x')\n"
        "assert 'logging' not in sys.modules\n"
        "log.info('said')\n"
        "log.warning('warned %d', 1)\n"
        "undo()\n"
        "import logging\n"
        "assert logging.getLogger('exectrack').handlers == []\n"
        "logging.getLogger('exectrack').addHandler(logging.NullHandler())\n"
        "log.warning('after the undo')\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == shown


def test_undo_before_any_record_installs_nothing() -> None:
    """A command that logged nothing leaves logging untouched (and unimported)."""
    out = _fresh(
        "from exectrack._log import get_logger, to_stderr\n"
        "to_stderr(2)()\n"
        "assert 'logging' not in sys.modules\n"
        "import logging\n"
        "get_logger('exectrack.x').warning('later')\n"
        "assert logging.getLogger('exectrack').handlers == []\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == "later\n"  # logging's last resort, not the CLI's format


def test_cli_read_that_logs_shows_the_record(tmp_path: os.PathLike[str]) -> None:
    """``exectrack runs list`` imports logging only to log: a bad EXECTRACK_ENABLED still
    reaches stderr in the CLI's format, and the command still answers."""
    db = os.path.join(tmp_path, "runs.db")
    store = open_store(db)
    store.migrate()
    store.close()
    out = _fresh(
        "from exectrack.cli import main\ncode = main(['runs', 'list'])\nassert code == 0, code\n",
        env={"EXECTRACK_DATABASE_URL": db, "EXECTRACK_ENABLED": "maybe", "EXECTRACK_STRICT": ""},
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == (
        "WARNING exectrack._config: ignoring EXECTRACK_ENABLED='maybe': not a boolean; "
        "tracking stays on\n"
    )

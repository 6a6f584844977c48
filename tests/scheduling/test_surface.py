"""The heartbeat surface stays honest: exports exist, and the core (and the CLI's
parser) never imports APScheduler or the integrations."""

from __future__ import annotations

import subprocess
import sys

import exectrack.heartbeat
import exectrack.heartbeat.legacy
import exectrack.integrations.apscheduler


def test_exports_exist_once() -> None:
    """Each new public module's __all__ names each export once, and each exists."""
    for module in (
        exectrack.heartbeat,
        exectrack.heartbeat.legacy,
        exectrack.integrations.apscheduler,
    ):
        names = list(module.__all__)
        assert len(set(names)) == len(names), module.__name__
        assert all(hasattr(module, name) for name in names), module.__name__


def test_core_and_cli_parser_do_not_import_apscheduler() -> None:
    """`import exectrack` and building the CLI parser load neither APScheduler nor
    an integration module: the extra stays optional."""
    code = (
        "import sys, exectrack, exectrack.cli; exectrack.cli.build_parser(); "
        "bad = [m for m in sys.modules if m.startswith(('apscheduler', "
        "'exectrack.integrations', 'exectrack.heartbeat'))]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"

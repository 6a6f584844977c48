"""The server stays a layer on top: the core and the CLI's parser load neither it nor
its web stack; and its package data (the panel's static files) ships in the wheel."""

from __future__ import annotations

import subprocess
import sys

WEB = ("exectrack.server", "fastapi", "starlette", "uvicorn", "sse_starlette", "prometheus_client")


def loaded_after(statement: str) -> set[str]:
    code = (
        f"import sys; {statement}; "
        f"print('\\n'.join(m for m in sys.modules if m.startswith({WEB!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_the_core_and_the_cli_parser_load_no_server() -> None:
    assert loaded_after("import exectrack, exectrack.query") == set()
    assert loaded_after("import exectrack.cli; exectrack.cli.build_parser()") == set()


def test_the_static_files_are_package_data() -> None:
    """badge.js is read through importlib.resources, as an installed wheel serves it."""
    from importlib import resources

    static = resources.files("exectrack.server").joinpath("static")
    assert static.joinpath("badge.js").is_file()

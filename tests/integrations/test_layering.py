"""Integrations stay apart from the core: importing exectrack imports no integration
and no web framework, and the ASGI integration itself needs none."""

from __future__ import annotations

import subprocess
import sys

import exectrack.integrations.asgi

FRAMEWORKS = ("starlette", "fastapi", "uvicorn", "sse_starlette", "anyio", "trio")


def imported_after(statement: str) -> set[str]:
    code = (
        f"import sys; {statement}; "
        "print('\\n'.join(m for m in sys.modules if m.startswith('exectrack.integrations') "
        f"or m.partition('.')[0] in {FRAMEWORKS!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_the_core_imports_no_integration_and_no_framework() -> None:
    """``import exectrack`` (and using it) loads no integration and no web framework."""
    assert imported_after("import exectrack; exectrack.cancel_reason") == set()


def test_the_asgi_integration_is_pure_asgi() -> None:
    """The middleware module imports no framework: any ASGI app and server will do;
    its public surface is the middleware alone."""
    assert imported_after("import exectrack.integrations.asgi") == {
        "exectrack.integrations",
        "exectrack.integrations.asgi",
    }
    assert exectrack.integrations.asgi.__all__ == ["ExectrackMiddleware"]

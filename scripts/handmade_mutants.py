"""Hand-made mutants: the constants, regexes and SQL text that mutmut does not mutate.

Each mutant in ``mutation.toml`` (``[[handmade]]``) replaces one exact piece of text in
one source file. Every mutant is applied alone to a temporary copy of ``src/`` and
``tests/``, the mutant's tests run against that copy (``PYTHONPATH`` points at it, so
subprocesses see the mutant too), and the mutant is reported ``caught`` (a test
failed), ``survived`` (all passed), ``equivalent`` (survived and listed in
``[[equivalent]]`` with a reason) or ``stale`` (its text is no longer in the file
exactly once: update the entry). The working tree is never changed.

    python scripts/handmade_mutants.py                      # every module
    python scripts/handmade_mutants.py src/exectrack/_redact.py
    python scripts/handmade_mutants.py --id redact-ignorecase
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mutation.toml"
PYTEST_ARGS = ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--timeout=120"]


@dataclass(frozen=True)
class Handmade:
    id: str
    module: str
    find: str
    replace: str
    why: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    mutant: Handmade
    status: str  # caught | survived | equivalent | stale | broken
    seconds: float
    detail: str = ""


def load_config(path: Path = CONFIG) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def module_tests(config: dict[str, Any], module: str) -> tuple[str, ...]:
    return tuple(config.get("modules", {}).get(module, {}).get("tests", ["tests"]))


def handmade_mutants(config: dict[str, Any]) -> list[Handmade]:
    out = []
    for entry in config.get("handmade", []):
        tests = entry.get("tests") or module_tests(config, entry["module"])
        out.append(
            Handmade(
                id=entry["id"],
                module=entry["module"],
                find=entry["find"],
                replace=entry["replace"],
                why=entry.get("why", ""),
                tests=tuple(tests),
            )
        )
    return out


def equivalent_reasons(config: dict[str, Any]) -> dict[str, str]:
    """Hand-made mutant id -> why it cannot be told apart from the original."""
    return {e["handmade"]: e["reason"] for e in config.get("equivalent", []) if "handmade" in e}


def _existing(tests: Iterable[str], root: Path) -> list[str]:
    return [t for t in tests if (root / t.split("::")[0]).exists()]


def _run_pytest(
    copy: Path, tests: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def run(mutants: list[Handmade], equivalents: dict[str, str], *, log: bool = True) -> list[Outcome]:
    """Apply each mutant alone to a temporary copy, run its tests, and classify it."""
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="exectrack-handmade-") as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(
            ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
        env = {**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
        baselines: dict[tuple[str, ...], bool] = {}
        for mutant in mutants:
            target = copy / mutant.module
            original = target.read_text(encoding="utf-8")
            if original.count(mutant.find) != 1:
                found = original.count(mutant.find)
                outcomes.append(Outcome(mutant, "stale", 0.0, f"text found {found} times"))
                continue
            tests = _existing(mutant.tests, copy)
            key = tuple(tests)
            if key not in baselines:  # unmutated, the same tests must pass
                clean = _run_pytest(copy, tests, env)
                baselines[key] = clean.returncode == 0
                if clean.returncode != 0:
                    print(f"  baseline fails for {tests}: {_tail(clean)}", file=sys.stderr)
            if not baselines[key]:
                outcomes.append(Outcome(mutant, "broken", 0.0, "tests fail without the mutant"))
                continue
            start = time.monotonic()
            target.write_text(original.replace(mutant.find, mutant.replace), encoding="utf-8")
            try:
                proc = _run_pytest(copy, tests, env)
            finally:
                target.write_text(original, encoding="utf-8")
            seconds = time.monotonic() - start
            if proc.returncode == 0:
                status = "equivalent" if mutant.id in equivalents else "survived"
                detail = equivalents.get(mutant.id, "")
            elif proc.returncode == 1:
                status = "caught"
                detail = _first_failure(proc.stdout)
            else:
                status, detail = "caught", f"pytest exit {proc.returncode}: {_tail(proc)}"
            outcomes.append(Outcome(mutant, status, seconds, detail))
            if log:
                print(f"  {status:10} {mutant.id} ({seconds:.1f}s) {detail}", flush=True)
    return outcomes


def _first_failure(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("FAILED ") or line.startswith("ERROR "):
            return line.split(" - ")[0]
    return ""


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return " | ".join(lines[-3:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="source files (default: every module)")
    parser.add_argument("--id", action="append", default=[], help="only this mutant id")
    args = parser.parse_args(argv)
    config = load_config()
    mutants = [
        m
        for m in handmade_mutants(config)
        if (not args.modules or m.module in args.modules) and (not args.id or m.id in args.id)
    ]
    if not mutants:
        print("no hand-made mutant matches", file=sys.stderr)
        return 2
    outcomes = run(mutants, equivalent_reasons(config))
    left = [o for o in outcomes if o.status in ("survived", "stale", "broken")]
    caught = sum(o.status == "caught" for o in outcomes)
    print(f"hand-made: {caught} of {len(outcomes)} caught, {len(left)} survived or stale")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())

"""Mutation testing of the core modules, one module at a time: ``make mutate``.

For each module (default: every module in ``mutation.toml``):

1. mutmut 3 mutates that module only, against that module's tests (``mutation.toml``),
   in its own work folder ``.mutmut/<module>/`` (links to ``src/`` and ``tests/`` and a
   ``pyproject.toml`` whose ``[tool.mutmut]`` names the module and its tests). The folder
   keeps mutmut's results, so a second run tests only the functions changed since,
   plus the mutants that survived last time (new tests may kill them now).
2. The hand-made mutants of that module (``scripts/handmade_mutants.py``) run.
3. Survivors are matched against ``[[equivalent]]`` in ``mutation.toml``.

The report (score, survivors, hand-made results, the command that reproduces it)
goes to stdout and ``.mutmut/report.md``. Exit 1 when a mutant survived that is not
listed as equivalent.

    python scripts/mutate.py                                  # every core module
    python scripts/mutate.py src/exectrack/query.py           # one module
    python scripts/mutate.py --changed main                   # modules changed vs main
    python scripts/mutate.py --fresh src/exectrack/_redact.py  # forget earlier results
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import handmade_mutants

ROOT = handmade_mutants.ROOT
WORK = ROOT / ".mutmut"
MUTMUT = Path(sys.executable).with_name("mutmut")
KILLED = {"killed", "timeout", "caught by type check", "segfault", "killed by a signal"}
_SECTION = re.compile(r"^\[tool\.mutmut\]\n(?:(?!^\[).*\n?)*", re.MULTILINE)


@dataclass
class Survivor:
    name: str
    status: str  # survived | no tests | survived in a child | suspicious | not checked
    line: str  # the mutated line, stripped
    diff: str
    reason: str | None = None  # set when listed as equivalent


@dataclass
class ModuleReport:
    module: str
    total: int = 0
    killed: int = 0
    survivors: list[Survivor] = field(default_factory=list)
    handmade: list[handmade_mutants.Outcome] = field(default_factory=list)
    import_time: int = 0  # mutants of functions run at import: out of mutmut's reach
    child_killed: int = 0  # "no tests" mutants killed by the module's child_tests
    seconds: float = 0.0

    @property
    def equivalent(self) -> int:
        return sum(s.reason is not None for s in self.survivors)

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0

    @property
    def score_without_equivalents(self) -> float:
        tested = self.total - self.equivalent
        return 100.0 * self.killed / tested if tested else 100.0


def slug(module: str) -> str:
    return module.removeprefix("src/").removesuffix(".py").replace("/", ".")


def mutmut_settings(module: str, tests: list[str], *, debug: bool = False) -> dict[str, Any]:
    """pyproject's [tool.mutmut], narrowed to ``module`` and its tests."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        base = dict(tomllib.load(f).get("tool", {}).get("mutmut", {}))
    base["only_mutate"] = [module]
    base["pytest_add_cli_args_test_selection"] = [t for t in tests if (ROOT / t).exists()]
    if debug:
        base["debug"] = True
    return base


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def prepare(module: str, tests: list[str], *, fresh: bool, debug: bool = False) -> Path:
    """The module's work folder, with a pyproject.toml for this module."""
    work = WORK / slug(module)
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests"):
        link = work / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(ROOT / name, work))
    text = _SECTION.sub("", (ROOT / "pyproject.toml").read_text(encoding="utf-8")).rstrip()
    settings = mutmut_settings(module, tests, debug=debug)
    lines = [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    new = text + "\n\n[tool.mutmut]\n" + "\n".join(lines) + "\n"
    target = work / "pyproject.toml"
    if not target.exists() or target.read_text(encoding="utf-8") != new:
        target.write_text(new, encoding="utf-8")
    return work


def results(work: Path, module: str) -> dict[str, str]:
    """mutant name -> status, from mutmut's record of ``module``."""
    meta = work / "mutants" / (module + ".meta")
    if not meta.exists():
        return {}
    from mutmut.stats import status_by_exit_code

    data = json.loads(meta.read_text(encoding="utf-8"))
    return {k: _status(v, status_by_exit_code) for k, v in data["exit_code_by_key"].items()}


def _status(code: int | None, by_code: dict[int | None, str]) -> str:
    """mutmut's status of an exit code, except that a test process killed by a signal
    mutmut has no name for ("suspicious": a mutant that signals its own process, say
    SIGHUP instead of the probe ``kill(pid, 0)``) is killed: the tests noticed."""
    if isinstance(code, int) and code < 0 and code not in by_code:
        return "killed by a signal"
    return by_code[code]


def mutmut(work: Path, *args: str, log: Path) -> int:
    # A test that starts a Python subprocess (a uvicorn process, a worker) gets the
    # mutated sources too, not whatever copy of exectrack the environment installs.
    src = str(work / "mutants" / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ mutmut {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run(
            [str(MUTMUT), *args],
            cwd=work,
            env={**os.environ, "PYTHONPATH": path},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return proc.returncode


def show(work: Path, name: str) -> tuple[str, str]:
    """(diff, mutated line) of one mutant."""
    proc = subprocess.run(
        [str(MUTMUT), "show", name], cwd=work, capture_output=True, text=True, check=False
    )
    diff = "\n".join(proc.stdout.splitlines()[1:])
    added = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return diff, " / ".join(added)


# SQL as the modules write it: keywords in capitals, columns of ``runs`` or of the
# ``v`` rows qualified in lower case.
_SQL_MARK = re.compile(
    r"\b(?:SELECT|INSERT|UPDATE|DELETE|SET|FROM|WHERE|UNION|COALESCE|AND|OR|NULL)\b"
    r"|\b(?:BEGIN|COMMIT|ROLLBACK|PRAGMA|ANALYZE)\b"
    r"|\b(?:IN \(|VALUES|GROUP BY|ORDER BY|PARTITION BY|OVER \(|LIMIT|ON CONFLICT)"
    r"|::[a-z]+\[\]"
    r"|\b(?:runs|v|run_rollups|excluded)\.[a-z_]+"
    r"|[a-z_]+ (?:[<>]?=|<|>) \?"  # a column compared with a placeholder
)
_SQL_LITERAL = re.compile(r"'[^']*'")


def sql_case_only(diff: str) -> bool:
    """Whether a mutant only changes the letter case of SQL text: every changed line is
    SQL, the same text in another case, with its quoted SQL literals ('running', ...)
    unchanged. SQL keywords and unquoted names are case-insensitive on every engine."""
    removed = [
        ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")
    ]
    added = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    if not removed or len(removed) != len(added):
        return False
    for old, new in zip(removed, added, strict=True):
        if old == new or old.lower() != new.lower() or not _SQL_MARK.search(old):
            return False
        if _SQL_LITERAL.findall(old) != _SQL_LITERAL.findall(new):
            return False
        changed = _changed_strings(old, new)
        if not changed or not all(_SQL_MARK.search(text) for text in changed):
            return False  # a plain Python string on a line of SQL ("abandoned", say)
    return True


def _changed_strings(old: str, new: str) -> list[str] | None:
    """The Python string literals of line ``old`` that differ in ``new``, or None when
    anything but string literals differs (or the line cannot be tokenized)."""
    import io
    import tokenize

    def tokens(line: str) -> list[tuple[int, str]]:
        out = []
        try:
            for tok in tokenize.generate_tokens(io.StringIO(line.strip()).readline):
                out.append((tok.type, tok.string))
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass  # a line cut from a longer statement: keep what came before
        return out

    a, b = tokens(old), tokens(new)
    if len(a) != len(b):
        return None
    changed = []
    for (type_a, text_a), (type_b, text_b) in zip(a, b, strict=True):
        if text_a == text_b:
            continue
        if type_a != tokenize.STRING or type_b != tokenize.STRING:
            return None
        changed.append(text_a)
    return changed


def equivalent_reason(config: dict[str, Any], name: str, line: str, diff: str = "") -> str | None:
    function = name.rsplit("__mutmut_", 1)[0]
    module = name.rsplit(".x", 1)[0]
    for entry in config.get("equivalent", []):
        if entry.get("rule") == "sql-case":
            if module in entry.get("modules", []) and sql_case_only(diff):
                return str(entry["reason"])
            continue
        mutant = entry.get("mutant")
        if mutant is None:
            continue
        if mutant == name and "line" not in entry:
            return str(entry["reason"])
        if mutant.rsplit("__mutmut_", 1)[0] == function and entry.get("line") == line:
            return str(entry["reason"])
    return None


def import_time_function(config: dict[str, Any], name: str) -> bool:
    """Whether ``name`` mutates a function listed in ``[[import_time]]``: one that only
    runs while its module is imported (building migration SQL, say), before mutmut
    switches a mutant on, so its mutants always "survive" and say nothing."""
    function = name.rsplit("__mutmut_", 1)[0]
    return any(entry["function"] == function for entry in config.get("import_time", []))


def killed_by_handmade(config: dict[str, Any], name: str, line: str) -> str | None:
    """The hand-made mutant (``[[killed_by_handmade]]``) whose catch also kills ``name``."""
    function = name.rsplit("__mutmut_", 1)[0]
    for entry in config.get("killed_by_handmade", []):
        mutant = entry["mutant"]
        if mutant == name or (
            mutant.rsplit("__mutmut_", 1)[0] == function and entry.get("line") == line
        ):
            return str(entry["handmade"])
    return None


def unselectable_ids(tests: list[str]) -> list[str]:
    """The test ids among ``tests`` that mutmut cannot hand back to pytest: in its
    forked workers pytest finds no test by an id with a backslash (or outside ASCII),
    exits with a usage error, and mutmut counts the mutant a timeout, that is killed.
    tests/conftest.py gives text parameters plain ids; an explicit ``ids=`` may not."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return [
        line for line in out.stdout.splitlines() if "::" in line and not _PLAIN_ID.fullmatch(line)
    ]


_PLAIN_ID = re.compile(r"[\x20-\x5b\x5d-\x7e]*")  # printable ASCII but the backslash


def run_module(module: str, config: dict[str, Any], *, fresh: bool, handmade: bool) -> ModuleReport:
    start = time.monotonic()
    tests = list(config["modules"][module]["tests"])
    bad = unselectable_ids(tests)
    if bad:
        sys.exit(
            f"{module}: {len(bad)} test ids mutmut cannot select (every mutant they reach "
            f"would count as a timeout), e.g. {bad[0]!r}: give them plain ids"
        )
    debug = bool(config["modules"][module].get("debug", True))  # mutation.toml
    work = prepare(module, tests, fresh=fresh, debug=debug)
    log = work / "mutmut.log"
    log.write_text("", encoding="utf-8")
    before = results(work, module)
    print(f"== {module}: mutmut (log: {log.relative_to(ROOT)})", flush=True)
    code = mutmut(work, "run", log=log)
    if code != 0:
        # mutmut's clean run of the tests now and then cannot import exectrack from
        # a freshly generated tree (seen twice, never twice in a row): once more.
        print(f"   mutmut run failed (exit {code}); running it once more", flush=True)
        code = mutmut(work, "run", log=log)
    if code != 0:
        sys.exit(f"mutmut run failed for {module} (exit {code}); see {log}")
    after = results(work, module)
    # Survivors of an earlier run whose function did not change were not retested:
    # retest them against the tests as they are now.
    again = [n for n, s in before.items() if s != "killed" and after.get(n) == s]
    if again:
        print(f"   retesting {len(again)} earlier survivors", flush=True)
        code = mutmut(work, "run", *again, log=log)
        if code != 0:
            sys.exit(f"mutmut run failed for {module} (exit {code}); see {log}")
        after = results(work, module)
    report = ModuleReport(module)
    report.import_time = sum(import_time_function(config, n) for n in after)
    after = {n: s for n, s in after.items() if not import_time_function(config, n)}
    report.total = len(after)
    report.killed = sum(s in KILLED for s in after.values())
    for name, status in sorted(after.items()):
        if status in KILLED:
            continue
        diff, line = show(work, name)
        reason = equivalent_reason(config, name, line, diff)
        report.survivors.append(Survivor(name, status, line, diff, reason))
    child_tests = list(config["modules"][module].get("child_tests", []))
    if child_tests:
        check_in_children(work, child_tests, report)
    if handmade:
        mutants = [m for m in handmade_mutants.handmade_mutants(config) if m.module == module]
        if mutants:
            print(f"   {len(mutants)} hand-made mutants", flush=True)
            equivalents = handmade_mutants.equivalent_reasons(config)
            report.handmade = handmade_mutants.run(mutants, equivalents)
    # mutmut cannot see which test reaches code that runs only in a forked child
    # ("no tests"): such a mutant counts as killed when the hand-made mutant that
    # removes the same code was caught in this run.
    caught = {o.mutant.id for o in report.handmade if o.status == "caught"}
    for survivor in list(report.survivors):
        via = killed_by_handmade(config, survivor.name, survivor.line)
        if via is not None and via in caught:
            report.survivors.remove(survivor)
            report.killed += 1
    report.seconds = time.monotonic() - start
    return report


CHILD_ARGS = ("-p", "no:randomly", "--timeout=60")


def run_child_tests(work: Path, tests: list[str], mutant: str) -> int:
    """pytest's exit code for ``tests`` on mutmut's tree with ``mutant`` switched on
    (an empty name: none); the processes they start inherit both."""
    src = str(work / "mutants" / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *CHILD_ARGS, *tests],
        cwd=work / "mutants",
        env={**os.environ, "PYTHONPATH": path, "MUTANT_UNDER_TEST": mutant},
        capture_output=True,
        check=False,
    )
    return proc.returncode


def check_in_children(work: Path, tests: list[str], report: ModuleReport) -> None:
    """mutmut sees no test reach code that runs only in a child process ("no tests"),
    and a mutant of code that runs here but matters only in a child survives its
    tests here: run the module's ``child_tests`` (which start such processes) with
    each of those mutants switched on, as mutmut would; a failing test kills it."""
    unseen = [
        s for s in report.survivors if s.status in ("no tests", "survived") and s.reason is None
    ]
    if not unseen:
        return
    print(f"   {len(unseen)} mutants left: the child tests", flush=True)
    clean = run_child_tests(work, tests, "")
    if clean != 0:
        sys.exit(f"the child tests fail with no mutant (pytest exit {clean}): {tests}")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        codes = pool.map(lambda s: run_child_tests(work, tests, s.name), unseen)
        for i, (survivor, code) in enumerate(zip(unseen, codes, strict=True), start=1):
            if code not in (0, 1):
                sys.exit(f"child tests for {survivor.name}: pytest exit {code}")
            verdict = "killed" if code == 1 else "survived"
            print(f"   [{i}/{len(unseen)}] {verdict:8} {survivor.name}", flush=True)
            if code == 1:
                report.survivors.remove(survivor)
                report.killed += 1
                report.child_killed += 1
            else:
                survivor.status = "survived in a child"


def changed_modules(config: dict[str, Any], ref: str) -> list[str]:
    """Core modules changed on this branch since it left ``ref`` (committed or not),
    not what ``ref`` gained meanwhile."""
    base = subprocess.run(
        ["git", "merge-base", ref, "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out = subprocess.run(
        ["git", "diff", "--name-only", base, "--"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    changed = set(out) | set(untracked)
    return [m for m in config["modules"] if m in changed]


def render(reports: list[ModuleReport], command: str) -> str:
    lines = ["# Mutation report", "", f"Reproduce: `{command}`", ""]
    lines += [
        "| module | mutants | killed | score | equivalent | score w/o equivalents "
        "| left | hand-made caught | time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        hm_caught = sum(o.status == "caught" for o in r.handmade)
        hm_eq = sum(o.status == "equivalent" for o in r.handmade)
        hm = f"{hm_caught}/{len(r.handmade)}" + (f" (+{hm_eq} equivalent)" if hm_eq else "")
        left = len(r.survivors) - r.equivalent
        lines.append(
            f"| `{r.module}` | {r.total} | {r.killed} | {r.score:.1f}% | {r.equivalent} "
            f"| {r.score_without_equivalents:.1f}% | {left} | {hm} | {r.seconds:.0f} s |"
        )
    for r in reports:
        lines += ["", f"## {r.module}", ""]
        lines.append(f"Reproduce: `python scripts/mutate.py {r.module}`")
        if r.import_time:
            lines += [
                "",
                f"{r.import_time} mutants of functions that run only at import "
                "(`[[import_time]]` in mutation.toml) are left out of the count: "
                "their hand-made mutants measure them.",
            ]
        if r.child_killed:
            lines += [
                "",
                f"{r.child_killed} of the killed are mutants the tests in this process "
                "did not kill (or reach), killed by the module's `child_tests` (which "
                "start processes that run the mutant).",
            ]
        for s in r.survivors:
            verdict = f"equivalent: {s.reason}" if s.reason else f"LEFT ({s.status})"
            lines += ["", f"- `{s.name}`: {verdict}", "", "```diff", s.diff, "```"]
        for o in r.handmade:
            if o.status != "caught":
                lines.append(f"- hand-made `{o.mutant.id}`: {o.status} {o.detail}".rstrip())
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="source files (default: every core module)")
    parser.add_argument("--changed", metavar="REF", help="only modules changed since REF")
    parser.add_argument("--fresh", action="store_true", help="forget earlier mutmut results")
    parser.add_argument("--no-handmade", action="store_true", help="skip hand-made mutants")
    args = parser.parse_args(argv)
    config = handmade_mutants.load_config()
    known = list(config["modules"])
    modules = args.modules or known
    if args.changed:
        modules = [m for m in changed_modules(config, args.changed) if m in modules]
        if not modules:
            print(f"no core module changed since {args.changed}")
            return 0
    unknown = [m for m in modules if m not in known]
    if unknown:
        parser.error(f"not a core module in mutation.toml: {', '.join(unknown)}")
    if not MUTMUT.exists():
        parser.error("mutmut is not installed: make install (it is in the dev extra)")
    reports = [
        run_module(m, config, fresh=args.fresh, handmade=not args.no_handmade) for m in modules
    ]
    command = "python scripts/mutate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(reports, command.strip())
    WORK.mkdir(exist_ok=True)
    (WORK / "report.md").write_text(text, encoding="utf-8")
    print(text)
    left = sum(len(r.survivors) - r.equivalent for r in reports)
    left += sum(o.status in ("survived", "stale", "broken") for r in reports for o in r.handmade)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())

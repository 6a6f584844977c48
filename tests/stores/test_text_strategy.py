"""How SQLite reads a page of the text filter (``_text.sqlite_text_page``): which steps
run and what each asks the trigram index for.

The contract tests pin the answer, which is the same whichever way it is read (every
candidate is rechecked with LIKE). What the steps decide is the cost: a needle that
never matches must not scan a million runs, a rare one must fetch few candidates.
Here the steps are watched through SQLite's statement trace (bound values expanded),
with the step sizes made small (``RARE`` 3, ``WALKS`` (2, 5)) so that a few dozen
runs reach every branch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from exectrack.stores import NewRun, RunFilter
from exectrack.stores import _text as text_mod
from exectrack.stores._text import _fts_and, _spread, sqlite_text_page, sqlite_text_term, trigrams
from exectrack.stores.sqlite import SQLiteStore

T0 = 1_764_000_000_000_000
# The newest runs: text that shares no trigram with the needles below.
FILLER = 4


class Reader:
    """A connection to the store's file that records each statement it runs."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path)
        self.statements: list[str] = []
        self.conn.set_trace_callback(self.statements.append)

    def page(self, needle: str, limit: int) -> list[str] | None:
        self.statements.clear()
        rows = sqlite_text_page(self.conn.cursor(), "id", [], [], needle, limit)
        return None if rows is None else [r[0] for r in rows]

    def matches(self) -> list[str]:
        """The MATCH strings the page asked the index for (the probe's counts aside)."""
        return [
            s.split("MATCH '", 1)[1].split("')", 1)[0]
            for s in self.statements
            if "runs_text MATCH" in s and "COUNT(*)" not in s
        ]

    def offsets(self) -> list[int]:
        """The sizes of the steps that checked the newest runs directly (OFFSET n - 1)."""
        return [int(s.rsplit("OFFSET ", 1)[1]) + 1 for s in self.statements if "OFFSET" in s]


def _refs(path: Path, refs: list[str]) -> None:
    """Runs with these source_refs, the first the oldest; all moved into the index."""
    store = SQLiteStore(path)
    store.apply(
        [NewRun(f"r{i:03d}", "skill", T0 + i, source_ref=ref) for i, ref in enumerate(refs)]
    )
    store.index_text()
    store.close()


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod, "RARE", 3)
    monkeypatch.setattr(text_mod, "WALKS", (2, 5))
    monkeypatch.setattr(text_mod, "PROBED", 12)
    monkeypatch.setattr(text_mod, "COMMON_ANDED", 4)


@pytest.fixture
def reader(tmp_path: Path, small_steps: None) -> Iterator[Reader]:
    r = Reader(tmp_path / "runs.db")
    yield r
    r.conn.close()


def test_trigrams_are_every_distinct_three_characters_in_order() -> None:
    assert trigrams("abcd") == ["abc", "bcd"]
    assert trigrams("abc") == ["abc"]
    assert trigrams("ab") == []
    assert trigrams("aaaa") == ["aaa"]
    assert trigrams("abcabc") == ["abc", "bca", "cab"]
    assert trigrams("a\x00bcd") == []  # a NUL keeps the scan


def test_spread_keeps_the_first_and_last_and_spaces_the_rest_evenly() -> None:
    items = [str(i) for i in range(10)]
    assert _spread(items, 4) == ["0", "3", "6", "9"]
    assert _spread(items, 2) == ["0", "9"]
    assert _spread(items, 10) == items
    assert _spread(items, 12) == items
    assert _spread(items[:5], 4) == ["0", "1", "3", "4"]


def test_fts_and_quotes_each_trigram_and_ands_them() -> None:
    assert _fts_and(["abc", 'a"b', "x*:"]) == '"abc" AND "a""b" AND "x*:"'


def test_the_count_term_asks_the_index_only_with_a_trigram() -> None:
    like = "(source_ref LIKE ? ESCAPE '\\' OR error_message LIKE ? ESCAPE '\\')"
    assert sqlite_text_term("ab") == (like, ["%ab%", "%ab%"])
    term, params = sqlite_text_term("abcdefg")
    assert "runs_text MATCH ?" in term and term.endswith(like)
    # at most COMMON_ANDED (4) trigrams, spread over the needle
    assert params == ['"abc" AND "bcd" AND "def" AND "efg"', "%abcdefg%", "%abcdefg%"]


def test_a_short_needle_is_left_to_the_scan(reader: Reader, tmp_path: Path) -> None:
    _refs(tmp_path / "runs.db", ["ab", "xab"])
    assert reader.page("ab", 10) is None
    assert reader.statements == []


def test_a_page_filled_by_the_newest_runs_never_asks_the_index(
    reader: Reader, tmp_path: Path
) -> None:
    _refs(tmp_path / "runs.db", ["old-abc", "abc-1", "abc-2", "abc-3"])
    assert reader.page("abc", 2) == ["r003", "r002"]
    assert reader.offsets() == [2]  # WALKS[0]: the newest two runs
    assert not any("MATCH" in s for s in reader.statements)


def test_a_needle_in_no_indexed_run_reads_only_the_queued_ones(
    reader: Reader, tmp_path: Path
) -> None:
    _refs(tmp_path / "runs.db", [f"filler-{i}" for i in range(8)])
    assert reader.page("qqq", 10) == []
    assert reader.offsets() == [2]
    assert reader.matches() == []
    assert "runs_text_pending" in reader.statements[-1]


def test_a_rare_needle_asks_for_its_three_rarest_trigrams(reader: Reader, tmp_path: Path) -> None:
    """Postings: tuv 1, qrs 2, rst 2, stu 2 (all below RARE, 3): the index is asked for
    the rarest three, rarest first (ties by trigram), after the first step."""
    _refs(tmp_path / "runs.db", ["stu", "qrs", "rst", "qrstuv-1", *["filler"] * FILLER])
    assert reader.page("qrstuv", 2) == ["r003"]
    assert reader.offsets() == [2]
    assert reader.matches() == ['"tuv" AND "qrs" AND "rst"']


def test_a_rare_page_after_a_partial_first_step_stops_at_its_limit(
    reader: Reader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One match among the newest two runs, five below (rare: RARE is 10 here): the
    page asks the index for what is still missing (limit - found), so it holds
    exactly ``limit`` runs, the newest."""
    monkeypatch.setattr(text_mod, "RARE", 10)
    _refs(tmp_path / "runs.db", [*["uvwxyz"] * 5, "filler", "uvwxyz"])
    assert reader.page("uvwxyz", 3) == ["r006", "r004", "r003"]
    assert reader.offsets() == [2]
    asked = [s for s in reader.statements if "MATCH '" in s and "COUNT(*)" not in s]
    assert [s.rsplit(" ", 1)[1] for s in asked] == ["2"]


def test_a_needle_of_common_trigrams_walks_then_asks_the_index(
    reader: Reader, tmp_path: Path
) -> None:
    """Each trigram of "abcxyz" is in every run ("abcx cxyz"), the needle in none but
    the oldest: the newest runs are checked in the steps WALKS gives (2, then 5), and
    only a page still short asks the index, for COMMON_ANDED spread trigrams."""
    refs = ["abcxyz-old"] + ["abcx cxyz"] * 12
    _refs(tmp_path / "runs.db", refs)
    assert reader.page("abcxyz", 2) == ["r000"]
    assert reader.offsets() == [2, 5]
    assert reader.matches() == ['"abc" AND "bcx" AND "cxy" AND "xyz"']


def test_a_needle_of_common_trigrams_found_by_the_walk_never_asks_the_index(
    reader: Reader, tmp_path: Path
) -> None:
    refs = ["abcxyz-old"] + ["abcx cxyz"] * 3 + ["abcxyz-new"] + ["abcx cxyz"] * 3
    _refs(tmp_path / "runs.db", refs)
    assert reader.page("abcxyz", 1) == ["r004"]
    assert reader.offsets() == [2, 5]
    assert reader.matches() == []


def test_a_stores_text_page_is_read_in_steps_and_only_in_steps(
    tmp_path: Path, small_steps: None
) -> None:
    """``list_runs`` with a text of three characters or more reads the page through the
    steps above: the steps carry the other filters but not the text term (each step
    applies it itself), and nothing reads the page again with a plain LIKE."""
    path = tmp_path / "runs.db"
    _refs(path, ["abcxyz-old", *["abcx cxyz"] * 6, "abcxyz-new", "other"])
    store = SQLiteStore(path)
    statements: list[str] = []
    with store._read() as cur:  # this thread's connection, which list_runs reads on
        cur.connection.set_trace_callback(statements.append)
    runs = store.list_runs(RunFilter(text="abcxyz", sources=["skill"]), limit=5)
    assert [r.id for r in runs] == ["r007", "r000"]
    walks = [s for s in statements if "OFFSET" in s]
    assert [int(s.rsplit("OFFSET ", 1)[1]) + 1 for s in walks] == [2, 5]
    assert all("source IN ('skill')" in s and "LIKE" not in s for s in walks)
    plain = [s for s in statements if "LIKE" in s and "(started_at, id)" not in s]
    assert plain == [], plain  # the page after the last walk is bounded from below
    store.close()

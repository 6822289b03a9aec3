"""The leaderboard file and its ranking, on hand-made rows: what a row counts as complete and
scored, how ties and missing scores rank, and what the file keeps."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from benchmarks.leaderboard import LeaderboardRow, load_leaderboard, ranked, update_leaderboard
from facehd.errors import InputFileError


def _row(method: str, median: float | None, **kw: object) -> LeaderboardRow:
    return LeaderboardRow(method, "now", "validation", median_mm=median, **kw)


def test_counts_of_a_row() -> None:
    whole = _row("a", 1.0, n_items=10, n_missing=0, n_failed=0)
    assert whole.complete and whole.n_scored == 10
    failed = _row("b", 1.0, n_items=10, n_failed=2)
    assert not failed.complete and failed.n_scored == 8
    both = _row("c", 1.0, n_items=10, n_missing=1, n_failed=2)
    assert not both.complete and both.n_scored == 7
    assert _row("d", 1.0).n_scored is None and _row("d", 1.0).complete


def test_ranking_complete_runs_first_then_score_then_name() -> None:
    """Complete runs before those that left images unscored (missing or failed), each by their
    score, a missing or NaN score last, equal scores by the method's name."""
    rows = [
        _row("zeta", 1.0),
        _row("alpha", 1.0),
        _row("nan", math.nan),
        _row("none", None),
        _row("best-but-failed", 0.1, n_items=5, n_failed=1),
        _row("best-but-missing", 0.2, n_items=5, n_missing=1),
        _row("good", 0.5),
    ]
    ((key, order),) = ranked(rows).items()
    assert key == ("now", "validation", "")
    names = [r.method for r in order]
    assert names[:3] == ["good", "alpha", "zeta"]
    assert names[3:5] == ["nan", "none"]
    assert names[5:] == ["best-but-failed", "best-but-missing"]
    assert math.isinf(_row("nan", math.nan).primary)


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    fields = list(rows[0])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        writer.writerows(rows)


def _base(method: str, **kw: str) -> dict[str, str]:
    row = {"method": method, "dataset": "now", "split": "validation", "source": "facehd"}
    return {**row, "data": "", "median_mm": "1.0", "n_items": "4", **kw}


def test_the_file_checks_counts_and_keeps_only_facehds_rows(tmp_path: Path) -> None:
    path = tmp_path / "leaderboard.csv"
    _write(path, [_base("a", n_missing="2", n_failed="3")])
    with pytest.raises(InputFileError, match=r"n_missing \+ n_failed \(2 \+ 3\) exceed n_items"):
        load_leaderboard(path)
    # an empty source is facehd's; a published row written into the file is not read from it
    # (the published rows come from the code, once)
    _write(path, [_base("a", source=""), _base("Paper", source="reported")])
    rows = load_leaderboard(path, include_published=False)
    assert [(r.method, r.source) for r in rows] == [("a", "facehd")]


def test_updates_keep_the_file_sorted_and_facehds(tmp_path: Path) -> None:
    path = tmp_path / "leaderboard.csv"
    update_leaderboard(path, LeaderboardRow("m", "realy", "frontal", nmse_mm=1.5))
    update_leaderboard(path, _row("z", 1.0))
    update_leaderboard(path, _row("b", 2.0, source="reported"))  # a run is facehd's
    update_leaderboard(path, LeaderboardRow("m", "facescape", "wild", cd_mm=2.0))
    with open(path, newline="") as fh:
        written = [(r["dataset"], r["split"], r["method"], r["source"]) for r in csv.DictReader(fh)]
    assert written == [
        ("facescape", "wild", "m", "facehd"),
        ("now", "validation", "b", "facehd"),
        ("now", "validation", "z", "facehd"),
        ("realy", "frontal", "m", "facehd"),
    ]
    replaced = update_leaderboard(path, _row("z", 0.5))
    assert replaced is not None and replaced.median_mm == 1.0
    assert [r.median_mm for r in load_leaderboard(path, include_published=False)][2] == 0.5

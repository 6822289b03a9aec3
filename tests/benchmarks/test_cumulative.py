"""Cumulative error curves: against a counting loop, the official histogram and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cumulative import CUMULATIVE_ERRORS_MM, cumulative_percent, write_cumulative
from benchmarks.leaderboard import LeaderboardRow, update_leaderboard


def test_cumulative_percent_counts_the_distances_at_or_below_each_error() -> None:
    rng = np.random.default_rng(0)
    # ties, a NaN and an inf (a point with no distance): the non-finite ones are left out
    d = np.concatenate([rng.gamma(2.0, 0.4, 500), [0.5, 0.5, 1.0, np.nan, np.inf]])
    errors = np.array([0.0, 0.25, 0.5, 1.0, 3.0, 100.0])
    finite = d[np.isfinite(d)]
    brute = [100.0 * sum(1 for x in finite if x <= e) / len(finite) for e in errors]
    np.testing.assert_allclose(cumulative_percent(d.reshape(-1, 5), errors), brute)
    with pytest.raises(ValueError, match="no finite distance"):
        cumulative_percent(np.array([np.nan]), errors)


def test_the_curve_is_the_official_histogram_cumulative_at_its_bin_edges() -> None:
    """The official curve: a histogram of the pooled errors over their range, its cumulative
    count in percent plotted at each bin's left edge (it counts the bins up to the next edge)."""
    d = np.random.default_rng(1).gamma(2.0, 0.5, 2000)
    values, base = np.histogram(d, bins=1000)
    official = 100.0 * np.cumsum(values) / d.size
    np.testing.assert_allclose(cumulative_percent(d, base[1:]), official, atol=1e-9)


def _row(method: str, split: str = "validation", **kw: object) -> LeaderboardRow:
    values: dict = {"median_mm": 1.0, "mean_mm": 1.0, "std_mm": 1.0, "n_items": 2, **kw}
    return LeaderboardRow(method, "now", split, **values)


def test_write_cumulative_tabulates_each_run_best_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    runs = {
        "good": [rng.gamma(2.0, 0.3, 300), rng.gamma(2.0, 0.3, 200)],
        "bad": [rng.gamma(2.0, 0.8, 300)],
    }
    board = tmp_path / "leaderboard.csv"
    update_leaderboard(board, _row("bad", median_mm=2.0, n_missing=1))  # 1 of 2 images
    update_leaderboard(board, _row("good", median_mm=0.5))
    update_leaderboard(board, _row("moved", median_mm=0.7))  # its folder is gone
    update_leaderboard(board, LeaderboardRow("m", "realy", "frontal", nmse_mm=1.0))
    synthetic = _row("good", "test", data="synthetic seed 3, 2 subjects")
    update_leaderboard(board, synthetic)
    for split, names in (("validation", ("good", "bad")), ("test", ("good",))):
        for name in names:
            folder = tmp_path / f"now-{split}" / name
            folder.mkdir(parents=True)
            np.savez(folder / "distances.npz", **{f"img{k}": a for k, a in enumerate(runs[name])})

    written = {c.title: c for c in write_cumulative(tmp_path)}
    assert set(written) == {"now:validation", "now:test (synthetic seed 3, 2 subjects)"}
    val = written["now:validation"]
    assert val.labels == ("good", "bad (1 of 2 images)")  # ranked: the incomplete run last
    assert val.skipped == ("moved",)
    assert val.csv == tmp_path / "now-validation" / "cumulative.csv"
    with val.csv.open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["error_mm", "good", "bad (1 of 2 images)"]
    assert [float(r[0]) for r in table[1:]] == pytest.approx(CUMULATIVE_ERRORS_MM.tolist())
    for col, name in ((1, "good"), (2, "bad")):
        pooled = np.concatenate(runs[name])
        brute = [100.0 * np.count_nonzero(pooled <= e) / pooled.size for e in CUMULATIVE_ERRORS_MM]
        np.testing.assert_allclose([float(r[col]) for r in table[1:]], brute, atol=1e-4)
    synth = written["now:test (synthetic seed 3, 2 subjects)"]
    assert synth.csv.name == "cumulative-synthetic-seed-3-2-subjects.csv"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert val.plot is None
    else:
        assert val.plot is not None and val.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one dataset only: nothing for a dataset without per-vertex distances
    assert write_cumulative(tmp_path, "realy") == []
    assert [c.title for c in write_cumulative(tmp_path, "now:validation")] == ["now:validation"]


def test_only_now_protocol_runs_with_distances_are_drawn(tmp_path: Path) -> None:
    """A multi-view run is drawn alone: the paper's multi-view rows (no distances) are neither
    drawn nor listed as skipped; a run whose distances are all NaN is skipped; a REALY run's
    folder is not read even when it holds a distances.npz; a synthetic benchmark's label ending
    in punctuation names its file without a trailing dash."""
    board = tmp_path / "leaderboard.csv"
    update_leaderboard(board, LeaderboardRow("mine", "multiview", "facescape", n_items=1))
    update_leaderboard(board, LeaderboardRow("blank", "multiview", "facescape", n_items=1))
    update_leaderboard(board, LeaderboardRow("m", "realy", "frontal", nmse_mm=1.0))
    label = "synthetic (seed 4)"
    update_leaderboard(board, _row("synth", "test", data=label))
    runs = {
        "multiview-facescape/mine": np.linspace(0.0, 3.0, 31),
        "multiview-facescape/blank": np.full(5, np.nan),
        "realy-frontal/m": np.linspace(0.0, 1.0, 5),
        "now-test/synth": np.linspace(0.0, 1.0, 5),
    }
    for rel, d in runs.items():
        (tmp_path / rel).mkdir(parents=True)
        np.savez(tmp_path / rel / "distances.npz", a=d)
    written = {c.title: c for c in write_cumulative(tmp_path)}
    assert set(written) == {"multiview:facescape", f"now:test ({label})"}
    mv = written["multiview:facescape"]
    assert mv.labels == ("mine",) and mv.skipped == ("blank",)
    assert mv.csv == tmp_path / "multiview-facescape" / "cumulative.csv"
    assert written[f"now:test ({label})"].csv.name == "cumulative-synthetic-seed-4.csv"


def test_leaderboard_cumulative_says_where_it_wrote(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facehd.cli import app

    board = tmp_path / "leaderboard.csv"
    update_leaderboard(board, _row("mine"))
    runner = CliRunner()
    res = runner.invoke(app, ["leaderboard", "--out", str(tmp_path), "--cumulative"])
    assert res.exit_code == 0, res.output
    assert "no cumulative error curves" in res.output  # no distances.npz yet
    folder = tmp_path / "now-validation" / "mine"
    folder.mkdir(parents=True)
    np.savez(folder / "distances.npz", a=np.linspace(0.0, 2.0, 101))
    res = runner.invoke(
        app, ["leaderboard", "--out", str(tmp_path), "--dataset", "now", "--cumulative"]
    )
    assert res.exit_code == 0, res.output
    assert "cumulative.csv" in res.output.replace("\n", "")
    rows = list(csv.reader((tmp_path / "now-validation" / "cumulative.csv").open()))
    assert rows[0] == ["error_mm", "mine"] and rows[-1] == ["8.00", "100.0000"]
    assert rows[21] == ["1.00", "50.4950"]  # 51 of the 101 distances are at most 1 mm
    # a damaged distances file is an error naming it
    (folder / "distances.npz").write_bytes(b"not a zip")
    res = runner.invoke(app, ["leaderboard", "--out", str(tmp_path), "--cumulative"])
    assert res.exit_code != 0 and "distances.npz" in res.output.replace("\n", "")

"""The perf CSV: its cells are written like every other CSV of facehd."""

from __future__ import annotations

import csv
import math

import numpy as np

from facehd.perf import PerfRow, write_csv


def test_perf_csv_cells_share_the_project_format(tmp_path):
    rows = [
        PerfRow("e", "measured", np.float64(2.0) / 3.0, "s", "< 1 s", np.bool_(True), "n"),
        PerfRow("e", "not run", float("nan"), "it/s", note="no CUDA device"),
        PerfRow("e", "missed", 5.0, "s", "< 1 s", False),
    ]
    path = write_csv(rows, tmp_path / "sub" / "perf.csv")
    with open(path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["value"] == repr(2.0 / 3.0) and got[0]["passed"] == "true"
    assert got[1]["value"] == "" and got[1]["passed"] == ""  # NaN and None: empty cells
    assert got[2]["passed"] == "false" and math.isclose(float(got[2]["value"]), 5.0)
    assert all(r["cpus"].isdigit() for r in got)
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_quick_rows_are_not_judged_and_an_interrupt_keeps_the_rows_done(tmp_path, monkeypatch):
    import csv

    from typer.testing import CliRunner

    from facehd import perf
    from facehd.cli import app

    def fine(quick: bool) -> list:
        return [perf.PerfRow("a", "seconds", 0.5, "s", "< 1 s", True, "n=10")]

    def stopped(quick: bool) -> list:
        raise KeyboardInterrupt

    entries = {
        "a": perf._Entry("a", fine, "first"),
        "b": perf._Entry("b", stopped, "interrupted"),
    }
    monkeypatch.setattr(perf, "discover", lambda: entries)
    (row,) = perf.run(["a"], quick=True)
    assert row.passed is None and row.note.startswith("quick (smaller problem; not judged)")
    assert perf.run(["a"])[0].passed is True
    runner = CliRunner()
    res = runner.invoke(app, ["perf", "a", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not a folder" in res.output
    out = tmp_path / "p.csv"
    res = runner.invoke(app, ["perf", "a", "b", "--out", str(out)])
    assert res.exit_code == 130 and "interrupted" in res.output
    with open(out, newline="") as fh:
        assert [r["entry"] for r in csv.DictReader(fh)] == ["a"]

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

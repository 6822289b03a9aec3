"""CSV writing: one format for every CSV facehd writes."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

import numpy as np

from benchmarks.csvio import format_value, write_rows


@dataclass
class _Row:
    name: str
    value: float
    count: int
    ok: bool


def test_numpy_scalars_are_written_as_plain_numbers(tmp_path):
    x = float(np.float64(2.0) / 3.0)
    rows = [
        _Row("a", np.float64(2.0) / 3.0, np.int64(7), np.bool_(True)),
        _Row("b", np.float32(0.25), 3, False),
        _Row("c", float("nan"), 0, True),
    ]
    path = write_rows(tmp_path / "rows.csv", rows)
    with open(path, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert read[0] == {"name": "a", "value": repr(x), "count": "7", "ok": "true"}
    assert float(read[0]["value"]) == x  # full precision, round-trips exactly
    assert read[1]["value"] == "0.25" and read[1]["ok"] == "false"
    assert read[2]["value"] == ""  # NaN: an empty cell
    assert format_value(np.float64("nan")) == "" and format_value(None) == ""
    assert math.isclose(float(format_value(np.float32(0.1))), 0.1, rel_tol=1e-7)

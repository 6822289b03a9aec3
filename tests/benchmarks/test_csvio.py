"""CSV writing: one format for every CSV facehd writes."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from benchmarks.csvio import config_hash, format_value, read_rows, write_rows


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


def test_rows_are_read_as_text_without_a_byte_order_mark(tmp_path):
    assert read_rows(tmp_path / "missing.csv") == []
    path = tmp_path / "saved.csv"
    path.write_bytes("\ufeffmethod,error\r\nours,1.5\r\ntheirs,\r\n".encode())
    assert read_rows(path) == [
        {"method": "ours", "error": "1.5"},
        {"method": "theirs", "error": ""},
    ]


@dataclass
class _Config:
    steps: int
    lr: float


def test_a_config_hash_is_the_sha256_of_its_sorted_compact_json():
    text = '{"lr":0.001,"steps":10}'
    expected = hashlib.sha256(text.encode()).hexdigest()[:12]
    assert config_hash(_Config(10, 1e-3)) == expected
    assert config_hash({"steps": 10, "lr": 1e-3}) == expected  # key order does not count
    assert config_hash(_Config(11, 1e-3)) != expected
    path_hash = hashlib.sha256(b'{"path":"runs/a"}').hexdigest()[:12]
    assert config_hash({"path": PurePosixPath("runs/a")}) == path_hash  # hashed by its text

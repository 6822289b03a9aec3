"""Landmark readers (txt, lm7.txt, npy, MeshLab .pp) and NoW's 7-point selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facehd.errors import InputFileError
from facehd.landmarks import (
    NOW7_FROM_51,
    NOW7_FROM_68,
    load_landmarks,
    save_landmarks_pp,
    save_landmarks_txt,
    to_now7,
    written_by_facehd,
)

PP_TEMPLATE = """<!DOCTYPE PickedPoints>
<PickedPoints>
 <DocumentData>
  <DateTime time="16:00:00" date="2019-01-01"/>
  <User name="someone"/>
  <DataFileName name="scan.obj"/>
  <templateName name=""/>
 </DocumentData>
{points}
</PickedPoints>
"""


def pp_text(pts: np.ndarray) -> str:
    lines = [
        f' <point x="{x!r}" y="{y!r}" z="{z!r}" active="1" name="{k}"/>'
        for k, (x, y, z) in enumerate(pts.tolist())
    ]
    return PP_TEMPLATE.format(points="\n".join(lines))


def pts(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(k, 3)) * 40.0


def test_txt_formats_round_trip_exactly(tmp_path: Path) -> None:
    for name, k in (("a.lm7.txt", 7), ("b.txt", 51), ("c.txt", 68)):
        p = save_landmarks_txt(tmp_path / name, pts(k))
        np.testing.assert_array_equal(load_landmarks(p), pts(k))


def test_txt_accepts_commas_comments_and_blank_lines(tmp_path: Path) -> None:
    body = "# NoW landmarks\n" + "\n".join(f"{x}, {y}\t{z}  " for x, y, z in pts(7)) + "\n\n"
    (tmp_path / "l.txt").write_text(body)
    np.testing.assert_allclose(load_landmarks(tmp_path / "l.txt"), pts(7))


def test_npy_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", pts(7))
    np.save(tmp_path / "b.npy", pts(7)[None].astype(np.float32))
    np.save(tmp_path / "c.npy", pts(68))
    np.testing.assert_array_equal(load_landmarks(tmp_path / "a.npy"), pts(7))
    np.testing.assert_allclose(load_landmarks(tmp_path / "b.npy"), pts(7), rtol=1e-6)
    assert load_landmarks(tmp_path / "c.npy").shape == (68, 3)


def test_meshlab_pp_written_and_read_back(tmp_path: Path) -> None:
    path = save_landmarks_pp(tmp_path / "scan_picked_points.pp", pts(68), "scan.obj")
    np.testing.assert_array_equal(load_landmarks(path), pts(68))  # exact floats, in order
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    assert [p.attrib["name"] for p in root.iter("point")] == [str(k) for k in range(68)]
    assert root.find("./DocumentData/DataFileName").attrib["name"] == "scan.obj"
    assert written_by_facehd(path)
    # a file MeshLab saved (its user's name) or any other file is not facehd's
    (tmp_path / "other.pp").write_text(pp_text(pts(7)))
    assert not written_by_facehd(tmp_path / "other.pp")
    assert not written_by_facehd(tmp_path / "missing.pp")
    with pytest.raises(ValueError, match="NaN"):
        save_landmarks_pp(tmp_path / "bad.pp", np.full((7, 3), np.nan))


def test_meshlab_pp(tmp_path: Path) -> None:
    (tmp_path / "scan.pp").write_text(pp_text(pts(7)))
    np.testing.assert_array_equal(load_landmarks(tmp_path / "scan.pp"), pts(7))


def test_to_now7_picks_the_same_points_from_51_and_68() -> None:
    full = pts(68, seed=3)
    np.testing.assert_array_equal(to_now7(full), full[[36, 39, 42, 45, 33, 48, 54]])
    # the 51-point layout is the 68-point layout without the 17 jaw points
    np.testing.assert_array_equal(to_now7(full[17:]), to_now7(full))
    assert tuple(i + 17 for i in NOW7_FROM_51) == NOW7_FROM_68
    np.testing.assert_array_equal(to_now7(pts(7)), pts(7))
    np.testing.assert_array_equal(to_now7(pts(7)[None]), pts(7))
    with pytest.raises(InputFileError, match="pred.npy.*found 10"):
        to_now7(pts(10), "pred.npy")


@pytest.mark.parametrize(
    ("name", "writer", "problem"),
    [
        ("five.txt", lambda p: p.write_text("1 2 3\n" * 5), "expected 7 or 51 or 68.*found 5"),
        ("many.lm7.txt", lambda p: p.write_text("1 2 3\n" * 68), "expected 7 landmarks"),
        ("nan.txt", lambda p: p.write_text("1 2 nan\n" + "1 2 3\n" * 6), "NaN"),
        ("words.txt", lambda p: p.write_text("a b c\n" * 7), "line 1: cannot parse"),
        ("two.txt", lambda p: p.write_text("1 2\n" * 7), "line 1: expected 3 numbers"),
        ("empty.txt", lambda p: p.write_text(""), "no landmarks"),
        ("bin.txt", lambda p: p.write_bytes(b"\xff\xfe\x00"), "UTF-8"),
        ("shape.npy", lambda p: np.save(p, np.zeros((7, 2))), r"shape \(K, 3\)"),
        ("bad.npy", lambda p: p.write_bytes(b"not numpy"), "cannot read as .npy"),
        ("inf.npy", lambda p: np.save(p, np.full((7, 3), np.inf)), "NaN or inf"),
        ("bad.pp", lambda p: p.write_text("<PickedPoints><point x='1'"), "XML"),
        ("attr.pp", lambda p: p.write_text("<a><point x='1' y='2'/></a>"), "missing attribute"),
        ("none.pp", lambda p: p.write_text("<PickedPoints/>"), "no <point>"),
        ("pts.csv", lambda p: p.write_text("1,2,3\n" * 7), "unsupported"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, name: str, writer, problem: str) -> None:  # noqa: ANN001
    path = tmp_path / name
    writer(path)
    with pytest.raises(InputFileError, match=problem) as info:
        load_landmarks(path)
    assert info.value.path == path and str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        load_landmarks(tmp_path / "absent.npy")


def test_save_checks_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        save_landmarks_txt(tmp_path / "x.txt", np.zeros((7, 2)))

"""Landmark readers (txt, lm7.txt, npy, MeshLab .pp, iBUG .pts) and NoW's 7-point selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facehd.errors import InputFileError
from facehd.landmarks import (
    NOW7_FROM_51,
    NOW7_FROM_68,
    load_landmarks,
    load_photo_landmarks,
    photo_landmarks_path,
    save_landmarks_pp,
    save_landmarks_txt,
    save_photo_landmarks,
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
    # read by position, as the official NoW evaluation reads a scan's .pp file: lines 8-14
    # (0-based) hold the first 7 points, after MeshLab's 8-line header with its DateTime
    lines = path.read_text().splitlines()
    assert "<DateTime" in lines[3]
    by_line = [[float(ln.split('"')[k]) for k in (1, 3, 5)] for ln in lines[8:15]]
    np.testing.assert_array_equal(by_line, pts(68)[:7])
    # a file MeshLab saved (its user's name) or any other file is not facehd's
    (tmp_path / "other.pp").write_text(pp_text(pts(7)))
    assert not written_by_facehd(tmp_path / "other.pp")
    assert not written_by_facehd(tmp_path / "missing.pp")
    with pytest.raises(ValueError, match="NaN"):
        save_landmarks_pp(tmp_path / "bad.pp", np.full((7, 3), np.nan))


def test_meshlab_pp(tmp_path: Path) -> None:
    (tmp_path / "scan.pp").write_text(pp_text(pts(7)))
    np.testing.assert_array_equal(load_landmarks(tmp_path / "scan.pp"), pts(7))
    # a point unchecked in PickPoints (active="0", left at the origin) is not a landmark
    text = pp_text(pts(7)).replace('active="1"', 'active="0"', 1)
    (tmp_path / "unplaced.pp").write_text(text)
    with pytest.raises(InputFileError, match=r"unplaced\.pp: point 0 .*not placed \(active=0\)"):
        load_landmarks(tmp_path / "unplaced.pp")


def _pp_lines(points: np.ndarray, names: list[str | None]) -> str:
    lines = []
    for (x, y, z), name in zip(points.tolist(), names, strict=True):
        named = "" if name is None else f' name="{name}"'
        lines.append(f' <point x="{x!r}" y="{y!r}" z="{z!r}" active="1"{named}/>')
    return PP_TEMPLATE.format(points="\n".join(lines))


def test_meshlab_pp_points_ordered_by_their_numbers(tmp_path: Path) -> None:
    full = pts(68, seed=5)
    # point 36 deleted and picked again in MeshLab: now last in the file, named "36" again
    order = [k for k in range(68) if k != 36] + [36]
    (tmp_path / "moved.pp").write_text(_pp_lines(full[order], [str(k) for k in order]))
    got = load_landmarks(tmp_path / "moved.pp")
    np.testing.assert_array_equal(got, full)
    np.testing.assert_array_equal(to_now7(got), full[list(NOW7_FROM_68)])
    # NoW's files number their 7 points from 1; any order in the file
    shuffled = [3, 0, 6, 1, 5, 2, 4]
    (tmp_path / "now.pp").write_text(_pp_lines(pts(7)[shuffled], [str(k + 1) for k in shuffled]))
    np.testing.assert_array_equal(load_landmarks(tmp_path / "now.pp"), pts(7))
    # a file facehd wrote, then edited by moving a point to the end, reads back the same
    path = save_landmarks_pp(tmp_path / "scan_picked_points.pp", full, "scan.obj")
    lines = path.read_text().splitlines()
    lines = lines[:8] + lines[9:-1] + [lines[8], lines[-1]]  # point "0" last
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(load_landmarks(path), full)


@pytest.mark.parametrize(
    "names",
    [
        ["36", "39", "42", "45", "33", "48", "54"],  # NoW's points by their iBUG-68 index
        ["eye_l_out", "eye_l_in", "eye_r_in", "eye_r_out", "nose", "mouth_l", "mouth_r"],
        ["1", "0", "2", "3", "4", "5", "5"],  # a number twice
        ["1", "0", "2", "3", "4", "5", None],  # a point without a name
        ["1", "0", "2", "3", "4", "5", "7"],  # not 0..6 nor 1..7
        ["1", "0", "2", "3", "4", "5", "6.0"],
    ],
)
def test_meshlab_pp_other_names_keep_the_file_order(tmp_path: Path, names: list) -> None:
    (tmp_path / "l.pp").write_text(_pp_lines(pts(7), names))
    np.testing.assert_array_equal(load_landmarks(tmp_path / "l.pp"), pts(7))


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
    bad = full.copy()
    bad[5, 1] = np.inf  # a jaw point, which NoW's 7 do not take: still refused
    with pytest.raises(InputFileError, match="pred.npy.*NaN or inf"):
        to_now7(bad, "pred.npy")


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


def test_text_file_saved_with_a_byte_order_mark_and_a_file_on_one_line(tmp_path: Path) -> None:
    """Landmarks edited in an editor that marks UTF-8 (Notepad) read as without the mark (the
    first line was 'cannot parse numbers'); a file of all its numbers on one line is named by
    its count and start, not pasted whole into the message."""
    points = np.arange(51 * 3, dtype=np.float64).reshape(51, 3) / 7
    plain = tmp_path / "s_lmks.txt"
    np.savetxt(plain, points)
    marked = tmp_path / "m_lmks.txt"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    np.testing.assert_array_equal(load_landmarks(marked), load_landmarks(plain))
    flat = tmp_path / "flat_lmks.txt"
    np.savetxt(flat, points.reshape(1, -1))
    with pytest.raises(InputFileError, match=r"line 1: expected 3 numbers 'x y z', got 153: ") as e:
        load_landmarks(flat)
    assert len(str(e.value)) < len(str(flat)) + 160


def test_save_checks_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        save_landmarks_txt(tmp_path / "x.txt", np.zeros((7, 2)))


# --------------------------------------------------------------------------------------------
# photo landmarks: iBUG .pts
# --------------------------------------------------------------------------------------------
def pts_text(rows: list[str], n_points: int | str = 68) -> str:
    return "version: 1\nn_points:  {}\n{{\n{}\n}}\n".format(n_points, "\n".join(rows))


def test_pts_counts_pixels_from_one(tmp_path: Path) -> None:
    """A 300-W style file (1-based values, integers or decimals) read as 0-based pixels."""
    path = tmp_path / "face.pts"
    path.write_text(pts_text([f"{k + 1} {2 * k + 1.5}" for k in range(68)]))
    lm = load_photo_landmarks(path)
    k = np.arange(68)
    np.testing.assert_array_equal(lm, np.stack([k, 2 * k + 0.5], 1))


def test_pts_skips_comments_and_reads_header_keys_in_any_case(tmp_path: Path) -> None:
    """``//`` lines are comments anywhere; ``N_Points`` is ``n_points``."""
    path = tmp_path / "face.pts"
    rows = [f"{k + 1} {k + 2}" for k in range(68)]
    text = "// from a labelling tool\nversion: 1\nN_Points: 68\n{\n// eyes next\n"
    path.write_text(text + "\n".join(rows) + "\n}\n")
    np.testing.assert_array_equal(load_photo_landmarks(path)[:, 1], np.arange(68) + 1.0)
    path.write_text(text.replace("68", "67") + "\n".join(rows) + "\n}\n")
    with pytest.raises(InputFileError, match="n_points says 67"):
        load_photo_landmarks(path)


def test_pts_written_and_read_back(tmp_path: Path) -> None:
    lm = np.random.default_rng(3).uniform(0, 640, (68, 2))
    path = save_photo_landmarks(photo_landmarks_path(tmp_path / "img.Face.JPG"), lm)
    assert path == tmp_path / "img.Face.pts"
    lines = path.read_text().splitlines()
    assert lines[:3] == ["version: 1", "n_points: 68", "{"] and lines[-1] == "}"
    # the file holds the 1-based values
    np.testing.assert_allclose(np.loadtxt(lines[3:-1]), lm + 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(load_photo_landmarks(path), lm, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        save_photo_landmarks(tmp_path / "x.pts", np.zeros((68, 3)))


GOOD = [f"{k + 1} {k + 1}" for k in range(68)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (pts_text(GOOD[:67], 67), "expected 68 iBUG landmarks, found 67"),
        (pts_text(GOOD, 51), "n_points says 51, the file holds 68"),
        (pts_text(GOOD, "many"), "n_points is not a number"),
        ("version: 1\nn_points: 68\n{\n" + "\n".join(GOOD), r"no '\{ ... \}' block"),
        ("version: 1\nn_points: 68\n" + "\n".join(GOOD), "line 3: expected 'key: value'"),
        (pts_text(GOOD[:10] + ["1 2 3"] + GOOD[11:]), "line 14: expected 2 numbers"),
        (pts_text(GOOD[:10] + ["a b"] + GOOD[11:]), "line 14: cannot parse"),
        (pts_text(GOOD) + "1 1\n", "text after the closing"),
        ("68 points\n{\n}\n", "line 1: expected 'key: value'"),
        (pts_text(GOOD[:67] + ["nan 1"]), "NaN or inf"),
    ],
)
def test_bad_pts_files_name_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "photo.pts"
    path.write_text(text)
    with pytest.raises(InputFileError, match=problem) as info:
        load_photo_landmarks(path)
    assert info.value.path == path
    with pytest.raises(InputFileError, match="does not exist"):
        load_photo_landmarks(tmp_path / "absent.pts")


def test_suffixes_in_capitals_and_arrays_of_text(tmp_path) -> None:
    pts = np.arange(21, dtype=np.float64).reshape(7, 3)
    with open(tmp_path / "SCAN.NPY", "wb") as f:  # a file handle: np.save adds no suffix
        np.save(f, pts)
    np.testing.assert_array_equal(load_landmarks(tmp_path / "SCAN.NPY"), pts)
    np.save(tmp_path / "words.npy", np.full((7, 3), "x"))
    with pytest.raises(InputFileError, match="expected numbers, got dtype <U1"):
        load_landmarks(tmp_path / "words.npy")


def test_to_now7_of_seven_points_is_a_copy() -> None:
    pts = np.zeros((7, 3))
    out = to_now7(pts)
    out[0, 0] = 5.0
    assert pts[0, 0] == 0.0


def test_picked_points_are_named_from_first(tmp_path) -> None:
    import xml.etree.ElementTree as ET

    pts = np.arange(21, dtype=np.float64).reshape(7, 3)
    path = save_landmarks_pp(tmp_path / "s.pp", pts, "s.obj", first=1)
    names = [p.attrib["name"] for p in ET.parse(path).getroot().iter("point")]
    assert names == ["1", "2", "3", "4", "5", "6", "7"]
    np.testing.assert_array_equal(load_landmarks(path), pts)

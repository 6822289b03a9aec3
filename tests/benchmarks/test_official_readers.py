"""The benchmarks' ground-truth files read as the official tools read them (hand-written files
whose expected values are spelled out, not produced by the code under test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import readers
from benchmarks.runner import _scan_lm
from facehd.errors import InputFileError

_HEADER = [
    "<!DOCTYPE PickedPoints>",
    "<PickedPoints>",
    " <DocumentData>",
    '  <DateTime time="10:00:00" date="2019-01-01"/>',
    '  <User name="annotator"/>',
    '  <DataFileName name="scan.obj"/>',
    '  <templateName name=""/>',
    " </DocumentData>",
]

# the 7 points in the order they stand in the file
_POINTS = np.array(
    [
        [-45.5, 30.25, 10.0],
        [-15.125, 29.0, 15.5],
        [14.75, 29.5, 15.0],
        [44.0, 30.0, 10.5],
        [0.1, 0.2, 40.3],  # 0.1 etc. are no float32 values: they come back rounded
        [-25.0, -30.0, 20.0],
        [25.0, -30.5, 20.25],
    ]
)


def _pp(path: Path, points: np.ndarray, names: list[str], active: list[str] | None = None) -> Path:
    active = active or ["1"] * len(points)
    lines = list(_HEADER)
    for (x, y, z), name, act in zip(points.tolist(), names, active, strict=True):
        lines.append(f' <point x="{x!r}" y="{y!r}" z="{z!r}" active="{act}" name="{name}"/>')
    lines.append("</PickedPoints>")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_now_pp_is_read_by_position_not_by_name(tmp_path: Path) -> None:
    # names out of order (a point picked again in MeshLab): the official load_pp reads lines
    # 9-15 in file order and never looks at the names; the general reader sorts by name
    names = ["1", "2", "3", "4", "6", "5", "7"]
    path = _pp(tmp_path / "scan.pp", _POINTS, names)
    expected = _POINTS.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(readers.read_now_pp(path), expected)
    np.testing.assert_array_equal(readers.read_scan_landmarks7(path, True), expected)
    by_name = readers.read_landmarks7(path)  # facehd's MeshLab reader (multi-view sets)
    np.testing.assert_array_equal(by_name[[4, 5]], expected[[5, 4]])
    # a point unchecked in MeshLab (active="0") still has its coordinates read
    path = _pp(tmp_path / "inactive.pp", _POINTS, names, ["1", "1", "0", "1", "1", "1", "1"])
    np.testing.assert_array_equal(readers.read_now_pp(path), expected)


def test_now_pp_takes_the_first_seven_points_of_a_longer_file(tmp_path: Path) -> None:
    pts = np.arange(68 * 3, dtype=np.float64).reshape(68, 3)
    path = _pp(tmp_path / "lm68.pp", pts, [str(k) for k in range(68)])
    np.testing.assert_array_equal(readers.read_now_pp(path), pts[:7])


def test_now_pp_attribute_order_and_crlf(tmp_path: Path) -> None:
    lines = list(_HEADER)
    for x, y, z in _POINTS.tolist():
        lines.append(f' <point name="p" z="{z!r}" active="1" y="{y!r}" x="{x!r}"/>')
    path = tmp_path / "crlf.pp"
    path.write_bytes(("\r\n".join([*lines, "</PickedPoints>"]) + "\r\n").encode())
    np.testing.assert_array_equal(
        readers.read_now_pp(path), _POINTS.astype(np.float32).astype(np.float64)
    )


def test_now_pp_with_another_header_length_is_an_error(tmp_path: Path) -> None:
    # an older MeshLab header without DateTime and User: lines 9-15 are not the 7 points
    path = tmp_path / "short_header.pp"
    lines = [h for h in _HEADER if "DateTime" not in h and "User" not in h]
    lines += [
        f' <point x="{x}" y="{y}" z="{z}" name="{k}"/>'
        for k, (x, y, z) in enumerate(_POINTS.tolist())
    ]
    path.write_text("\n".join([*lines, "</PickedPoints>"]) + "\n")
    with pytest.raises(InputFileError, match="line 14 is no point"):
        readers.read_now_pp(path)
    path.write_text("\n".join(_HEADER) + "\n")
    with pytest.raises(InputFileError, match="has 8 lines"):
        readers.read_now_pp(path)


def test_now_pp_attributes_split_by_tabs_are_refused(tmp_path: Path) -> None:
    """The official reader splits a point's line on single spaces: attributes separated by a
    tab run together into one word, whose ``y`` and ``z`` it never finds (it keeps the previous
    point's). Such a file is refused, naming the line, rather than read another way."""
    lines = list(_HEADER)
    for x, y, z in _POINTS.tolist():
        lines.append(f' <point x="{x!r}"\ty="{y!r}"\tz="{z!r}" name="p"/>')
    path = tmp_path / "tabs.pp"
    path.write_text("\n".join([*lines, "</PickedPoints>"]) + "\n")
    with pytest.raises(InputFileError, match="line 9 is no point with x, y and z"):
        readers.read_now_pp(path)


def test_realy_keypoint_obj_reads_v_lines_alone_rounded_to_float32(tmp_path: Path) -> None:
    """REALY's keypoint files are OBJs of vertices: normals and texture coordinates (``vn``,
    ``vt``) are not keypoints, and the values come back rounded to float32, as the official
    reader stores them."""
    pts = np.array([[0.1, 0.2, 0.3], [1.0, -2.5, 3.75], [1e-3, 7.1, -0.3]])
    path = tmp_path / "1.obj"
    body = ["# keypoints", "vn 0 0 1", "vt 0.5 0.5"] + [
        f"v {x!r} {y!r} {z!r}" for x, y, z in pts.tolist()
    ]
    path.write_text("\n".join([*body, "vn 1 0 0"]) + "\n")
    got = readers.read_obj_vertices(path)
    np.testing.assert_array_equal(got, pts.astype(np.float32).astype(np.float64))
    assert not np.array_equal(got, pts)  # 0.1 is no float32 value


def test_now_items_read_their_scan_landmarks_as_the_official_tool(tmp_path: Path) -> None:
    root = tmp_path / "now"
    (root / "scans" / "FaMoS_1").mkdir(parents=True)
    (root / "scans" / "FaMoS_1" / "scan.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (root / "scans_lmks_onlypp" / "FaMoS_1").mkdir(parents=True)
    pp = _pp(
        root / "scans_lmks_onlypp" / "FaMoS_1" / "scan.pp",
        _POINTS,
        ["7", "6", "5", "4", "3", "2", "1"],
    )
    (root / "imagepathsvalidation.txt").write_text("FaMoS_1/selfie/IMG_0001.jpg\n")
    (root / "multiview_synth.txt").write_text("FaMoS_1/3views/set0\n")
    (it,) = readers.read_now_items(root, "validation")
    assert it.pp_by_position and it.scan_landmarks == pp
    np.testing.assert_array_equal(
        _scan_lm(it.scan_landmarks, it.pp_by_position), _POINTS.astype(np.float32)
    )
    # facehd's multi-view sets keep the MeshLab reader (points in the order of their names)
    (mv,) = readers.read_multiview_items(root, "synth")
    assert not mv.pp_by_position
    np.testing.assert_array_equal(
        _scan_lm(mv.scan_landmarks, mv.pp_by_position), _POINTS[::-1].astype(np.float32)
    )


def test_now_image_lists_as_they_come(tmp_path: Path) -> None:
    """Comment lines and trailing words skipped, Windows separators and a path prefix before
    ``subject/challenge/image`` read alike; images found under ``iphone_pictures`` of the
    official archive's ``final_release_version`` folder too."""
    root = tmp_path / "now"
    for subject in ("FaMoS_1", "FaMoS_2"):
        (root / "scans" / subject).mkdir(parents=True)
        (root / "scans" / subject / "scan.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
        (root / "scans_lmks_onlypp" / subject).mkdir(parents=True)
        _pp(root / "scans_lmks_onlypp" / subject / "scan.pp", _POINTS, list("1234567"))
    photo = root / "final_release_version" / "iphone_pictures" / "FaMoS_2" / "selfie" / "b.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"jpeg")
    (root / "imagepathsvalidation.txt").write_text(
        "# subject/challenge/image\n"
        "FaMoS_1/multiview_neutral/IMG_0001.jpg  extra words\n"
        "iphone_pictures\\FaMoS_2\\selfie\\b.jpg\n"
    )
    items = readers.read_now_items(root, "validation")
    assert [(it.subject, it.challenge, it.image) for it in items] == [
        ("FaMoS_1", "multiview_neutral", "IMG_0001"),
        ("FaMoS_2", "selfie", "b"),
    ]
    assert items[0].image_path is None and items[1].image_path == photo


def test_landmark_arrays_are_used_as_stored_and_text_rounded_to_float32(tmp_path: Path) -> None:
    """As the official tool: ``.npy`` values as they are, ``.txt`` (and ``.pp``) read as
    float32. A NoW ``.pp`` with a NaN is refused; a ground truth given as ``.txt`` is read as
    text even where ``.pp`` files are read by position."""
    np.save(tmp_path / "p.npy", _POINTS)
    np.savetxt(tmp_path / "p.txt", _POINTS, fmt="%.17g")
    np.testing.assert_array_equal(readers.read_landmarks7(tmp_path / "p.npy"), _POINTS)
    rounded = _POINTS.astype(np.float32).astype(np.float64)
    assert not np.array_equal(rounded, _POINTS)
    np.testing.assert_array_equal(readers.read_landmarks7(tmp_path / "p.txt"), rounded)
    np.testing.assert_array_equal(
        readers.read_scan_landmarks7(tmp_path / "p.txt", pp_by_position=True), rounded
    )
    bad = _POINTS.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputFileError, match=r"nan\.pp: landmarks contain NaN or inf"):
        readers.read_now_pp(_pp(tmp_path / "nan.pp", bad, list("1234567")))

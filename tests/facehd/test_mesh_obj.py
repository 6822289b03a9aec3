"""OBJ reading against a line-by-line reference: relative (negative) indices counted back from
the face line, faces in file order whatever their groups, per-vertex UVs kept across groups,
indented lines, the UVs of vertices no face uses."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from facehd.errors import InputFileError
from facehd.mesh import Mesh, MeshFileWarning, load_mesh, save_mesh

QUAD = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
QUAD_V = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
QUAD_UV = np.array([[0.0, 0], [1, 0], [1, 1], [0, 1]])


def _reference(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, triangles, corner texture coordinate numbers) of an OBJ text, line by line as
    the format says: a negative number counts back from the latest ``v`` (``vt``) read before
    the face line; polygons are fans."""
    verts: list[list[float]] = []
    n_vt = 0
    faces, corner_vt = [], []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "v":
            verts.append([float(x) for x in words[1:4]])
        elif words[0] == "vt":
            n_vt += 1
        elif words[0] == "f":
            v_idx, t_idx = [], []
            for entry in words[1:]:
                parts = entry.split("/")
                i = int(parts[0])
                v_idx.append(i - 1 if i > 0 else len(verts) + i)
                if len(parts) > 1 and parts[1]:
                    j = int(parts[1])
                    t_idx.append(j - 1 if j > 0 else n_vt + j)
            for k in range(1, len(v_idx) - 1):
                faces.append([v_idx[0], v_idx[k], v_idx[k + 1]])
                if t_idx:
                    corner_vt.append([t_idx[0], t_idx[k], t_idx[k + 1]])
    return np.array(verts), np.array(faces), np.array(corner_vt)


def _read(tmp_path: Path, text: str, name: str = "m.obj", **kw: bool) -> Mesh:
    path = tmp_path / name
    path.write_text(text)
    return load_mesh(path, **kw)


def test_relative_indices_count_back_from_the_face_line(tmp_path: Path) -> None:
    text = "v 0 0 0\nv 1 0 0\nv 1 1 0\nf -3 -2 -1\nv 0 1 0\nv 5 5 5\nf -5 -3 -2\n"
    got = _read(tmp_path, text)
    np.testing.assert_array_equal(got.faces, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(got.faces, _reference(text)[1])
    # texture coordinates count back from the latest vt before the line the same way
    text = (
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nf -4/-3 -3/-2 -2/-1\n"
        "vt 0 1\nvt 9 9\nf 1/-5 3/-3 4/-2\n"
    )
    got = _read(tmp_path, text)
    np.testing.assert_array_equal(got.faces, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(got.uvs, QUAD_UV)


def test_negative_texture_coordinate_indices(tmp_path: Path) -> None:
    got = _read(tmp_path, QUAD + "f -4/-4 -3/-3 -2/-2\n")
    np.testing.assert_array_equal(got.faces, [[0, 1, 2]])
    np.testing.assert_array_equal(got.vertices, QUAD_V)
    np.testing.assert_array_equal(got.uvs, QUAD_UV)


def test_relative_index_before_the_first_vertex_names_the_line(tmp_path: Path) -> None:
    # in range of the file's 5 vertices, but only 3 come before the face
    text = "v 0 0 0\nv 1 0 0\nv 1 1 0\nf -4 -2 -1\nv 0 1 0\nv 5 5 5\n"
    with pytest.raises(
        InputFileError,
        match=r"m\.obj: face indices out of range: line 4: 'f -4 -2 -1' refers "
        r"to vertex -4, of 3 before the line",
    ):
        _read(tmp_path, text)
    # texture coordinates out of range: the geometry is read, the UVs left out, and a warning
    # names the file and the line (a broken UV table is no reason to refuse a scan's surface)
    for body, said in (
        ("f -4/-5 -3/-3 -2/-2\n", r"line 9: .* refers to texture coordinate -5, of 4"),
        ("f 1/1 2/2 3/5\n", r"line 9: .* texture coordinate 5, of 4 in the file"),
    ):
        with pytest.warns(MeshFileWarning, match=rf"m\.obj: texture coordinates left out.*{said}"):
            got = _read(tmp_path, QUAD + body)
        assert got.uvs is None
        np.testing.assert_array_equal(got.vertices, QUAD_V)
        np.testing.assert_array_equal(got.faces, [[0, 1, 2]])


@pytest.mark.parametrize("split", ["usemtl", "g", "o"])
def test_groups_keep_per_vertex_uvs_and_face_order(tmp_path: Path, split: str) -> None:
    body = f"{split} b\nf 1/1 3/3 4/4\n{split} a\nf 1/1 2/2 3/3\n{split} b\nf 2/2 4/4 3/3\n"
    got = _read(tmp_path, QUAD + body)
    np.testing.assert_array_equal(got.vertices, QUAD_V)
    np.testing.assert_array_equal(got.faces, [[0, 2, 3], [0, 1, 2], [1, 3, 2]])
    np.testing.assert_array_equal(got.uvs, QUAD_UV)
    # as the same faces in one group, also when seams are split on request (there are none)
    np.testing.assert_array_equal(got.faces, _reference(QUAD + body)[1])
    split_read = _read(tmp_path, QUAD + body, split_seams=True)
    np.testing.assert_array_equal(split_read.vertices, QUAD_V)
    np.testing.assert_array_equal(split_read.uvs, QUAD_UV)


def test_indented_lines(tmp_path: Path) -> None:
    got = _read(tmp_path, "  v 0 0 0\n  v 1 0 0\n\tv 1 1 0\n  vt 0.5 0.5\n  f 1/1 2/1 3/1\n")
    np.testing.assert_array_equal(got.vertices, QUAD_V[:3])
    np.testing.assert_array_equal(got.faces, [[0, 1, 2]])
    np.testing.assert_array_equal(got.uvs, np.full((3, 2), 0.5))


def test_unused_vertices_keep_the_uv_of_their_number(tmp_path: Path) -> None:
    """``v i`` with ``vt i`` at every corner (as facehd writes them): a vertex no face uses
    keeps the ``vt`` of its number, so a save and load gives back the mesh."""
    uv = np.array([[0.0, 0], [1, 0], [1, 1], [0, 1], [0.25, 0.75]])
    m = Mesh(np.vstack([QUAD_V, [5, 5, 5]]), [[0, 1, 2], [0, 2, 3]], uv)
    got = load_mesh(save_mesh(tmp_path / "u.obj", m))
    np.testing.assert_array_equal(got.uvs, uv)


@pytest.mark.parametrize("seed", range(8))
def test_random_files_read_as_the_line_by_line_reference(tmp_path: Path, seed: int) -> None:
    """Vertices, texture coordinates and faces interleaved, in groups, polygons of 3 to 5
    corners, indices positive or negative at random; one UV per vertex (a texture coordinate
    per vertex, written in another order)."""
    rng = np.random.default_rng(seed)
    n = 30
    v = rng.normal(size=(n, 3)).round(5)
    uv = rng.uniform(size=(n, 2)).round(4)
    vt_of = rng.permutation(n)  # vertex i's UV is vt line vt_of[i]
    vt_line = np.argsort(vt_of)  # vt line j holds vertex vt_line[j]'s UV
    lines, n_v, n_vt = [], 0, 0
    while n_v < n or n_vt < n:
        if n_v < n and rng.uniform() < 0.5:
            lines.append(f"v {v[n_v, 0]} {v[n_v, 1]} {v[n_v, 2]}")
            n_v += 1
        elif n_vt < n:
            lines.append(f"vt {uv[vt_line[n_vt], 0]} {uv[vt_line[n_vt], 1]}")
            n_vt += 1
        usable = [i for i in range(n_v) if vt_of[i] < n_vt]
        if len(usable) >= 5 and rng.uniform() < 0.4:
            if rng.uniform() < 0.2:
                lines.append(f"{rng.choice(['g', 'o', 'usemtl'])} part{rng.integers(3)}")
            corners = rng.choice(usable, rng.integers(3, 6), replace=False)
            entries = []
            for i in corners:
                a = i + 1 if rng.uniform() < 0.5 else i - n_v
                b = vt_of[i] + 1 if rng.uniform() < 0.5 else vt_of[i] - n_vt
                entries.append(f"{a}/{b}")
            lines.append("f " + " ".join(entries))
    lines.append("f 1/" + f"{vt_of[0] + 1} 2/{vt_of[1] + 1} 3/{vt_of[2] + 1}")
    text = "\n".join(lines) + "\n"
    want_v, want_f, want_t = _reference(text)
    got = _read(tmp_path, text)
    np.testing.assert_array_equal(got.vertices, want_v)
    np.testing.assert_array_equal(got.faces, want_f)
    np.testing.assert_array_equal(vt_of[want_f], want_t)  # the reference's own pairing
    used = np.unique(want_f)
    np.testing.assert_array_equal(got.uvs[used], uv[used])


@pytest.mark.parametrize("form", ["v", "v/vt", "v//vn", "v/vt/vn", "mixed", "balanced"])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_each_corner_form_reads_as_the_line_by_line_reference(
    tmp_path: Path, form: str, ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Face lines whose corners all have one form are read in one pass; mixed forms word by
    word: both as the reference reads them, polygons of 3 to 6 corners, indices positive or
    negative, lines indented at random."""
    import facehd.mesh as mesh_mod

    rng = np.random.default_rng(len(form) + len(ending))
    n = 40
    v = rng.normal(size=(n, 3)).round(6)
    lines = [f"v {x} {y} {z}" for x, y, z in v]
    lines += [f"vt {u} {w}" for u, w in rng.uniform(size=(n, 2)).round(4)]
    lines += [f"vn {x} {y} {z}" for x, y, z in rng.normal(size=(n, 3)).round(3)]
    forms = {"mixed": ["v", "v/vt", "v//vn", "v/vt/vn"], "balanced": ["v/vt/vn", "v", "v/vt"]}
    forms = forms.get(form, [form])
    for f in range(60):
        # balanced: triangles of 0, 1 and 2 slashes, a slash a corner as in v/vt
        corners = rng.choice(n, 3 if form == "balanced" else rng.integers(3, 7), replace=False)
        words = []
        for c, i in enumerate(corners):
            k = int(i + 1 if rng.uniform() < 0.5 else i - n)
            shape = forms[(f + c) % len(forms)] if form != "balanced" else forms[c]
            words.append(shape.replace("vt", str(k)).replace("vn", str(k)).replace("v", str(k), 1))
        lines.append(" " * int(rng.integers(0, 2)) + "f " + " ".join(words))
    text = ending.join(lines) + ending
    fast = []
    real = mesh_mod._fast_face_corners
    monkeypatch.setattr(
        mesh_mod, "_fast_face_corners", lambda t: fast.append(real(t) is not None) or real(t)
    )
    path = tmp_path / "m.obj"
    path.write_bytes(text.encode())
    got = load_mesh(path)
    want_v, want_f, _ = _reference(re.sub(r"/\S*", "", text))  # the corners' vertices
    np.testing.assert_array_equal(got.vertices, want_v)
    np.testing.assert_array_equal(got.faces, want_f)
    assert fast == [form not in ("mixed", "balanced")]
    if "vt" in form:  # vertex k's corners name texture coordinate k: one UV per vertex
        used = np.unique(want_f)
        np.testing.assert_array_equal(got.uvs[used], _uvs_of(text)[used])
    else:
        assert got.uvs is None


def _uvs_of(text: str) -> np.ndarray:
    """The ``vt`` lines' numbers, in file order."""
    rows = [ln.split()[1:3] for ln in text.splitlines() if ln.startswith("vt ")]
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("f 1 2 x", "cannot parse a face line"),
        ("f 1 2 99999999999999999999", "cannot parse a face line"),
        ("f 1 2 0", "a face index 0"),
        ("f 1 2", "fewer than 3"),
        ("f 1/1/1/1 2 3", "cannot parse a face line"),
    ],
)
def test_a_bad_face_line_is_named_whichever_reading_meets_it(
    tmp_path: Path, line: str, match: str
) -> None:
    text = "v 0 0 0\nv 1 0 0\nv 1 1 0\nvt 0 0\nf 1 2 3\n" + line + "\n"
    with pytest.raises(InputFileError, match=match):
        _read(tmp_path, text)

"""Reader edge cases: OBJ trailing comments, out-of-range indices and binary data, truncated
binary STL, PLY colours of other types and names, PLY UVs of vertices no face uses, PLY triangle
strips, unused vertices with NaN coordinates, text files with a UTF-8 byte order mark."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh

from facehd.errors import InputFileError
from facehd.mesh import MeshFileWarning, load_mesh

SQUARE_V = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
SQUARE_F = np.array([[0, 1, 2], [0, 2, 3]])


# --- OBJ ------------------------------------------------------------------------------------


def test_obj_comments_after_the_data_of_a_line(tmp_path: Path) -> None:
    clean = "".join(f"v {x} {y} {z}\n" for x, y, z in SQUARE_V) + "f 1 2 3\nf 1 3 4\n"
    (tmp_path / "clean.obj").write_text(clean)
    commented = (
        "# a scan\n"
        "v 0 0 0 # chin\n"
        "v 1 0 0\t# tab before\n"
        "v 1 1 0#no space\n"
        "v 0 1 0\n"
        "usemtl skin#1\n"
        "f 1 2 3 # first\n"
        "f 1 3 4\n"
    )
    (tmp_path / "c.obj").write_text(commented)
    got = load_mesh(tmp_path / "c.obj")
    ref = trimesh.load(tmp_path / "clean.obj", process=False)
    np.testing.assert_array_equal(got.vertices, ref.vertices)
    np.testing.assert_array_equal(got.faces, ref.faces)
    # line numbers in messages stay the file's
    (tmp_path / "bad.obj").write_text("v 0 0 0 # a\nv 1 0 0\nv 0 1 0\nf 1 2 # cut\n")
    with pytest.raises(InputFileError, match=r"bad\.obj: a face with fewer than 3.*line 4"):
        load_mesh(tmp_path / "bad.obj")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("f 1 2 9\n", r"face indices out of range: line 5: 'f 1 2 9' refers to vertex 9, of 4"),
        ("f 1/1 2/2 12/3\n", r"line 5: 'f 1/1 2/2 12/3' refers to vertex 12, of 4 in"),
        ("f -1 -2 -7\n", r"face indices out of range: line 5: .* vertex -7, of 4 before"),
    ],
)
def test_obj_face_index_out_of_range_names_file_and_line(
    tmp_path: Path, body: str, problem: str
) -> None:
    head = "".join(f"v {x} {y} {z}\n" for x, y, z in SQUARE_V)
    path = tmp_path / "range.obj"
    path.write_text(head + body)
    with pytest.raises(InputFileError, match=problem) as info:
        load_mesh(path)
    assert str(path) in str(info.value) and info.value.__cause__ is None


def test_binary_data_named_obj_is_not_a_text_obj(tmp_path: Path) -> None:
    path = tmp_path / "noise.obj"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(InputFileError, match=r"noise\.obj: not a text OBJ") as info:
        load_mesh(path)
    assert "empty" not in info.value.problem and "no vertices" not in info.value.problem
    # a real OBJ with bytes above 127 (UTF-8 or Latin-1 names) is still text
    text = "# Gesicht: Müller\n" + "".join(f"v {x} {y} {z}\n" for x, y, z in SQUARE_V)
    (tmp_path / "ok.obj").write_bytes((text + "f 1 2 3\nf 1 3 4\n").encode("latin-1"))
    assert load_mesh(tmp_path / "ok.obj").n_faces == 2


# --- STL ------------------------------------------------------------------------------------


def _binary_stl(header: bytes, tris: np.ndarray) -> bytes:
    out = header.ljust(80, b" ")[:80] + struct.pack("<I", len(tris))
    for t in tris:
        out += struct.pack("<12fH", 0.0, 0.0, 1.0, *t.ravel(), 0)
    return out


@pytest.mark.parametrize("header", [b"solid scan exported by a scanner", b"binary"])
def test_truncated_binary_stl_is_named_as_such(tmp_path: Path, header: bytes) -> None:
    data = _binary_stl(header, SQUARE_V[SQUARE_F])
    whole = tmp_path / "whole.stl"
    whole.write_bytes(data)
    ref = trimesh.load(whole, process=False)  # the whole file reads, also with "solid"
    assert load_mesh(whole).n_faces == len(ref.faces) == 2
    for cut in (90, len(data) - 7):
        path = tmp_path / f"cut{cut}.stl"
        path.write_bytes(data[:cut])
        with pytest.raises(
            InputFileError,
            match=rf"cut{cut}\.stl: a truncated binary STL: its header says 2 triangles "
            rf"\(184 bytes\), the file has {cut} bytes",
        ):
            load_mesh(path)
    (tmp_path / "tiny.stl").write_bytes(data[:40])
    with pytest.raises(InputFileError, match=r"tiny\.stl: .*(truncated|no triangles)"):
        load_mesh(tmp_path / "tiny.stl")


# --- PLY colours ----------------------------------------------------------------------------


def _ply(
    names: tuple[str, str, str], kind: str, rgb: np.ndarray, binary: bool, uv: bool = False
) -> bytes:
    """A square of two triangles with the given colour properties, written by hand."""
    fmt = "binary_little_endian" if binary else "ascii"
    head = ["ply", f"format {fmt} 1.0", "element vertex 4"]
    head += [f"property float {c}" for c in "xyz"]
    head += [f"property {kind} {n}" for n in names]
    head += ["element face 2", "property list uchar int vertex_indices"]
    if uv:
        head += ["property list uchar float texcoord"]
    head += ["end_header"]
    code = {"uchar": "B", "ushort": "H", "float": "f", "double": "d"}[kind]
    # the two triangles' corner UVs: vertex 0 and 2 differ between them (a seam)
    uvs = [[0, 0, 0.5, 0, 0.5, 1], [0.6, 0, 1, 1, 0, 1]]
    if binary:
        body = b"".join(
            struct.pack("<3f", *p) + struct.pack(f"<3{code}", *c)
            for p, c in zip(SQUARE_V.tolist(), rgb.tolist(), strict=True)
        )
        for k, f in enumerate(SQUARE_F.tolist()):
            body += struct.pack("<B3i", 3, *f)
            if uv:
                body += struct.pack("<B6f", 6, *uvs[k])
    else:
        lines = [
            " ".join(map(str, p + c)) for p, c in zip(SQUARE_V.tolist(), rgb.tolist(), strict=True)
        ]
        for k, f in enumerate(SQUARE_F.tolist()):
            lines.append(
                "3 " + " ".join(map(str, f)) + (" 6 " + " ".join(map(str, uvs[k])) if uv else "")
            )
        body = ("\n".join(lines) + "\n").encode()
    return ("\n".join(head) + "\n").encode() + body


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(
    ("names", "kind", "rgb", "expected"),
    [
        (("red", "green", "blue"), "uchar", [[255, 0, 51]] * 4, [[1.0, 0.0, 0.2]] * 4),
        (("red", "green", "blue"), "ushort", [[65535, 257, 0]] * 4, [[1.0, 257 / 65535, 0]] * 4),
        (("diffuse_red", "diffuse_green", "diffuse_blue"), "uchar", [[255, 0, 51]] * 4, None),
        (("diffuse_red", "diffuse_green", "diffuse_blue"), "ushort", [[0, 65535, 0]] * 4, None),
        (("red", "green", "blue"), "float", [[1.0, 0.5, 0.25]] * 4, [[1.0, 0.5, 0.25]] * 4),
        (("red", "green", "blue"), "float", [[255.0, 51.0, 0.0]] * 4, [[1.0, 0.2, 0.0]] * 4),
    ],
)
def test_ply_colours_scaled_by_their_type(
    tmp_path: Path, binary: bool, names: tuple, kind: str, rgb: list, expected: list | None
) -> None:
    raw = np.array(rgb)
    raw[1] = raw[1] // 2 if kind != "float" else raw[1] / 2  # not all vertices alike
    path = tmp_path / "c.ply"
    path.write_bytes(_ply(names, kind, raw, binary))
    got = load_mesh(path)
    top = {"uchar": 255.0, "ushort": 65535.0}.get(kind, 255.0 if raw.max() > 1 else 1.0)
    want = raw / top
    if expected is not None:
        want_first = np.array(expected)
        np.testing.assert_allclose(want[[0, 2, 3]], want_first[[0, 2, 3]], atol=1e-7)
    assert got.colors is not None
    np.testing.assert_allclose(got.colors, want, atol=1e-7)
    assert got.colors.min() >= 0.0 and got.colors.max() <= 1.0
    # the geometry as trimesh reads it
    ref = trimesh.load(path, process=False)
    np.testing.assert_allclose(got.vertices, ref.vertices)
    np.testing.assert_array_equal(got.faces, ref.faces)


def test_ply_colours_follow_the_vertices_when_split_along_seams(tmp_path: Path) -> None:
    raw = np.array([[65535, 0, 0], [0, 65535, 0], [0, 0, 65535], [65535, 65535, 0]])
    for names in (("red", "green", "blue"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        path = tmp_path / f"{names[0]}.ply"
        path.write_bytes(_ply(names, "ushort", raw, binary=True, uv=True))
        plain = load_mesh(path)
        assert plain.uvs is None  # seams
        np.testing.assert_allclose(plain.colors, raw / 65535.0)
        split = load_mesh(path, split_seams=True)
        assert split.n_vertices == 6 and split.colors is not None
        # each split vertex has the colour of the file's vertex at its position
        for pos, col in zip(split.vertices, split.colors, strict=True):
            k = int(np.flatnonzero((SQUARE_V == pos).all(axis=1))[0])
            np.testing.assert_allclose(col, raw[k] / 65535.0)


# --- unused vertices with NaN ---------------------------------------------------------------


def _nan_files(folder: Path) -> dict[str, Path]:
    """The square with a NaN vertex between its vertices 1 and 2 that no face uses."""
    v = np.insert(SQUARE_V, 2, [np.nan, 0.0, 0.0], axis=0)
    f = np.where(SQUARE_F >= 2, SQUARE_F + 1, SQUARE_F)
    out = {}
    obj = "".join(f"v {x} {y} {z}\n" for x, y, z in v) + "".join(
        f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f
    )
    out["obj"] = folder / "s.obj"
    out["obj"].write_text(obj)
    out["off"] = folder / "s.off"
    out["off"].write_text(
        f"OFF\n{len(v)} {len(f)} 0\n"
        + "".join(f"{x} {y} {z}\n" for x, y, z in v)
        + "".join(f"3 {a} {b} {c}\n" for a, b, c in f)
    )
    out["ply"] = folder / "s.ply"
    tm = trimesh.Trimesh(v, f, process=False, validate=False)
    out["ply"].write_bytes(trimesh.exchange.ply.export_ply(tm, encoding="ascii"))
    return out


@pytest.mark.parametrize("kind", ["obj", "off", "ply"])
def test_unused_vertex_with_nan_keeps_its_number(tmp_path: Path, kind: str) -> None:
    """It takes a used vertex's place, so the file's vertex numbers (keypoints given by index)
    still hold and the surface is the file's."""
    path = _nan_files(tmp_path)[kind]
    with pytest.warns(MeshFileWarning, match=r"s\.\w+: 1 vertices with NaN .* no face uses.*2"):
        got = load_mesh(path)
    f = np.where(SQUARE_F >= 2, SQUARE_F + 1, SQUARE_F)
    np.testing.assert_array_equal(got.faces, f)
    np.testing.assert_array_equal(np.delete(got.vertices, 2, axis=0), SQUARE_V)
    np.testing.assert_array_equal(got.vertices[2], got.vertices[f[0, 0]])
    np.testing.assert_array_equal(got.vertices[got.faces], SQUARE_V[SQUARE_F])
    # a NaN vertex a face uses is still an error, naming the file and the vertex
    text = path.read_text()
    if kind == "obj":
        path.write_text(text + "f 1 2 3\n")
    elif kind == "off":
        path.write_text(text.replace(" 2 0\n", " 3 0\n", 1) + "3 0 1 2\n")
    else:
        tm = trimesh.Trimesh(
            np.insert(SQUARE_V, 2, [np.nan, 0, 0], axis=0),
            [[0, 1, 2]],
            process=False,
            validate=False,
        )
        path.write_bytes(trimesh.exchange.ply.export_ply(tm, encoding="ascii"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: an error
        with pytest.raises(InputFileError, match=r"vertices of faces have NaN.*number 2"):
            load_mesh(path)


# --- text files with a byte order mark ------------------------------------------------------


def _square_text(kind: str) -> str:
    v = "".join(f"{x} {y} {z}\n" for x, y, z in SQUARE_V)
    if kind == "obj":
        return "".join(f"v {x} {y} {z}\n" for x, y, z in SQUARE_V) + "f 1 2 3\nf 1 3 4\n"
    if kind == "off":
        return "OFF\n4 2 0\n" + v + "3 0 1 2\n3 0 2 3\n"
    if kind == "wrl":
        points = ", ".join(f"{x} {y} {z}" for x, y, z in SQUARE_V)
        return (
            "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet {\n"
            f"coord Coordinate {{ point [{points}] }}\ncoordIndex [0 1 2 -1 0 2 3 -1] }} }}\n"
        )
    tm = trimesh.Trimesh(SQUARE_V, SQUARE_F, process=False)
    return trimesh.exchange.stl.export_stl_ascii(tm)


@pytest.mark.parametrize("kind", ["obj", "off", "wrl", "stl"])
def test_text_files_with_a_utf8_byte_order_mark(tmp_path: Path, kind: str) -> None:
    """A scan saved by an editor that marks UTF-8 (Windows' Notepad) reads as without the mark:
    an OBJ lost its first vertex (its faces then out of range), an OFF or VRML file's header
    was not its own, an ASCII STL was taken for a binary one."""
    plain, marked = tmp_path / f"plain.{kind}", tmp_path / f"marked.{kind}"
    plain.write_text(_square_text(kind))
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    want, got = load_mesh(plain), load_mesh(marked)
    np.testing.assert_array_equal(got.vertices, want.vertices)
    np.testing.assert_array_equal(got.faces, want.faces)
    assert want.n_faces == 2


def test_obj_with_a_byte_order_mark_before_its_material_library(tmp_path: Path) -> None:
    """The texture is found when ``mtllib`` is the first line, after the mark."""
    from PIL import Image

    from facehd.mesh import texture_path

    Image.new("RGB", (4, 4), (200, 120, 90)).save(tmp_path / "skin.png")
    (tmp_path / "s.mtl").write_text("newmtl skin\nmap_Kd skin.png\n")
    body = (
        "mtllib s.mtl\n"
        + "".join(f"v {x} {y} {z}\n" for x, y, z in SQUARE_V)
        + "".join(f"vt {x} {y}\n" for x, y, _ in SQUARE_V)
        + "usemtl skin\nf 1/1 2/2 3/3\nf 1/1 3/3 4/4\n"
    )
    (tmp_path / "s.obj").write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert texture_path(tmp_path / "s.obj") == tmp_path / "skin.png"


# --- PLY files that do not hold what their header announces -----------------------------------


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
def test_a_ply_cut_short_is_refused_naming_where_it_ends(tmp_path: Path, encoding: str) -> None:
    """A file cut in transfer: an ASCII one read as far as it went (a third of the faces, and
    no word of it) and a binary one refused as 'PLY is unexpected length!'; both are now named
    as cut, with the element where the file ends."""
    sphere = trimesh.creation.icosphere(3)
    data = trimesh.exchange.ply.export_ply(sphere, encoding=encoding)
    (tmp_path / "whole.ply").write_bytes(data)
    assert load_mesh(tmp_path / "whole.ply").n_faces == len(sphere.faces)
    body = data.index(b"end_header") + len(b"end_header\n")
    n_v, n_f = len(sphere.vertices), len(sphere.faces)
    for where, n, cut in (("face", n_f, len(data) * 2 // 3), ("vertex", n_v, body + 200)):
        path = tmp_path / f"cut_{where}.ply"
        path.write_bytes(data[:cut])
        # records begun before the cut: lines (ASCII); whole 12-byte vertices, 13-byte faces
        if encoding == "ascii":
            begun = len(data[body:cut].splitlines())
        else:
            begun = (cut - body) // 12 if where == "vertex" else (cut - body - 12 * n_v) // 13
        seen = begun - (n_v if where == "face" and encoding == "ascii" else 0)
        with pytest.raises(
            InputFileError,
            match=rf"cut_{where}\.ply: .*the file ends after {seen} of the {n} {where}",
        ) as info:
            load_mesh(path)
        assert info.value.__cause__ is None
    if encoding == "ascii":  # the last face's line cut after its first index, or its second
        for kept in (b"3 5", b"3 5 7"):
            path = tmp_path / "cut_line.ply"
            path.write_bytes(data.rstrip()[: data.rstrip().rfind(b"\n")] + b"\n" + kept)
            words = len(kept.split())
            with pytest.raises(
                InputFileError, match=rf"its last face record is incomplete \({words} of 4"
            ):
                load_mesh(path)
        # an obj_info line in the header (MeshLab writes them) is understood: still named
        info_line = data.replace(b"end_header", b"obj_info scanned in a hurry\nend_header", 1)
        (tmp_path / "info.ply").write_bytes(info_line[: len(info_line) * 2 // 3])
        with pytest.raises(InputFileError, match=r"info\.ply: cut short"):
            load_mesh(tmp_path / "info.ply")
    else:  # a line break after the data is no data; anything more is not the header's file
        (tmp_path / "newline.ply").write_bytes(data + b"\n")
        got = load_mesh(tmp_path / "newline.ply")
        np.testing.assert_array_equal(got.faces, sphere.faces)
        (tmp_path / "long.ply").write_bytes(data + b"\x01\x02\x03\x04")
        with pytest.raises(InputFileError, match=r"longer than its header says: 4 bytes after"):
            load_mesh(tmp_path / "long.ply")


@pytest.mark.parametrize("endian", ["<", ">"])
def test_binary_ply_of_triangles_and_quads_is_read_as_their_triangles(
    tmp_path: Path, endian: str
) -> None:
    """Faces of several sizes in one binary file (a polygon mesh saved by MeshLab or Blender)
    were refused as 'PLY is unexpected length!' (trimesh takes every face's corner count from
    the first face's); they are read as the ASCII file of the same faces is, split into fans,
    with the vertices' colours."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0.5], [3, 1, 0]])
    rgb = np.arange(21).reshape(7, 3) * 10
    polygons = [[0, 1, 2, 3], [1, 4, 5, 2], [4, 6, 5], [2, 5, 3]]
    fmt = {"<": "binary_little_endian", ">": "binary_big_endian"}[endian]
    head = [
        "ply",
        f"format {fmt} 1.0",
        "comment a polygon mesh",
        "element vertex 7",
        *[f"property float {c}" for c in "xyz"],
        *[f"property uchar {c}" for c in ("red", "green", "blue")],
        "element face 4",
        "property list uchar int vertex_indices",
        "property uchar flags",
        "property list uchar float texcoord",  # per-corner UVs: another list, not indices
        "end_header",
    ]
    body = b"".join(
        struct.pack(f"{endian}3f3B", *p, *c) for p, c in zip(v, rgb.tolist(), strict=True)
    )
    for f in polygons:
        uv = [0.5] * (2 * len(f))
        body += struct.pack(f"{endian}B{len(f)}iBB{len(uv)}f", len(f), *f, 7, len(uv), *uv)
    path = tmp_path / "poly.ply"
    path.write_bytes(("\n".join(head) + "\n").encode() + body)
    got = load_mesh(path)
    want = [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2], [4, 6, 5], [2, 5, 3]]
    np.testing.assert_array_equal(got.faces, want)
    np.testing.assert_allclose(got.vertices, v, atol=1e-7)
    np.testing.assert_allclose(got.colors, rgb / 255.0)
    # cut in its faces: named as such
    path.write_bytes(path.read_bytes()[:-60])  # into the third face
    with pytest.raises(InputFileError, match=r"ends after 2 of the 4 face records"):
        load_mesh(path)


@pytest.mark.parametrize("encoding", ["ascii", "binary_little_endian"])
def test_a_ply_with_no_records_says_it_holds_no_vertices(tmp_path: Path, encoding: str) -> None:
    none = "element vertex 0\n" + "".join(f"property float {c}\n" for c in "xyz")
    none += "element face 0\nproperty list uchar int vertex_indices\n"
    for elements in ("", none):
        path = tmp_path / "empty.ply"
        path.write_bytes(f"ply\nformat {encoding} 1.0\n{elements}end_header\n".encode())
        with pytest.raises(InputFileError, match=r"empty\.ply: .*no vertices"):
            load_mesh(path)


# --- PLY texture coordinates and triangle strips ---------------------------------------------


def test_ply_round_trip_keeps_the_uv_of_vertices_no_face_uses(tmp_path: Path) -> None:
    from facehd.mesh import Mesh, save_mesh

    v = np.vstack([SQUARE_V, [[5.0, 5.0, 5.0]]])
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.25, 0.75]])
    got = load_mesh(save_mesh(tmp_path / "u.ply", Mesh(v, SQUARE_F, uv)))
    np.testing.assert_array_equal(got.vertices, v)
    np.testing.assert_array_equal(got.uvs, uv)


@pytest.mark.parametrize("encoding", ["ascii", "binary_little_endian"])
def test_ply_of_triangle_strips_says_they_are_not_read(tmp_path: Path, encoding: str) -> None:
    head = (
        f"ply\nformat {encoding} 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nelement tristrips 1\nproperty list int int vertex_indices\nend_header\n"
    )
    if encoding == "ascii":
        body = "".join(f"{x} {y} {z}\n" for x, y, z in SQUARE_V).encode() + b"4 0 1 3 2\n"
    else:
        body = SQUARE_V.astype("<f4").tobytes() + np.array([4, 0, 1, 3, 2], "<i4").tobytes()
    path = tmp_path / "strips.ply"
    path.write_bytes(head.encode() + body)
    with pytest.raises(InputFileError, match=r"strips\.ply: its faces are triangle strips"):
        load_mesh(path)

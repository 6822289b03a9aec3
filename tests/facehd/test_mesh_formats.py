"""Scan formats beyond OBJ/PLY: STL, OFF/COFF and VRML 2.0, against trimesh and hand-built
cases with known content."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from facehd.errors import InputFileError
from facehd.mesh import (
    Mesh,
    MeshFileWarning,
    height_field_mesh,
    is_scan_file,
    load_mesh,
    load_textured_mesh,
    texture_path,
)


def _surface(seed: int = 0) -> Mesh:
    rng = np.random.default_rng(seed)
    return height_field_mesh(rng.normal(size=(5, 6)), np.arange(6.0) * 2.5, np.arange(5.0) * 3.0)


def _triangle_set(vertices: np.ndarray, faces: np.ndarray, ref: np.ndarray) -> set:
    """Triangles as triples of the nearest ``ref`` vertex (each within 1e-5), rotated to start
    at the smallest index: the winding is kept."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(ref).query(vertices)
    assert dist.max() < 1e-5
    out = set()
    for tri in idx[faces].tolist():
        k = tri.index(min(tri))
        out.add(tuple(tri[k:] + tri[:k]))
    return out


# --- STL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ascii_", [False, True])
def test_stl_corners_are_merged_into_the_connected_surface(tmp_path: Path, ascii_: bool) -> None:
    m = _surface()
    tm = trimesh.Trimesh(m.vertices, m.faces, process=False)
    data = trimesh.exchange.stl.export_stl_ascii(tm) if ascii_ else tm.export(file_type="stl")
    path = tmp_path / "scan.stl"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    got = load_mesh(path)
    # every triangle corner stored on its own in the file, merged back: the grid's vertex count
    assert got.n_vertices == m.n_vertices and got.n_faces == m.n_faces
    # STL holds float32 (binary) or decimals (ASCII): the same triangles, with their winding
    ref = m.vertices.astype(np.float32).astype(np.float64)
    assert _triangle_set(got.vertices, got.faces, ref) == _triangle_set(ref, m.faces, ref)
    # first-use order and the triangles, against a plain loop over the file's corners
    corners = trimesh.load(path, process=False).triangles.reshape(-1, 3)
    seen: dict[tuple, int] = {}
    index = [seen.setdefault(tuple(c + 0.0), len(seen)) for c in corners]
    np.testing.assert_array_equal(got.vertices, np.array(list(seen)))
    np.testing.assert_array_equal(got.faces, np.array(index).reshape(-1, 3))
    # trimesh merges the same corners when it processes the file
    assert len(trimesh.load(path, process=True).vertices) == got.n_vertices
    # connected: the smooth vertex normals of the original grid, vertex by vertex
    order, order_ref = np.lexsort(got.vertices.T), np.lexsort(ref.T)
    np.testing.assert_allclose(got.vertices[order], ref[order_ref], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        got.vertex_normals[order], Mesh(ref, m.faces).vertex_normals[order_ref], atol=1e-6
    )


def test_stl_negative_zero_is_the_same_corner(tmp_path: Path) -> None:
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [-0.0, -0.0, 0]])
    # the second triangle's corner 3 is vertex 0 written as -0.0: it must be vertex 0 again
    tm = trimesh.Trimesh(v, [[0, 1, 2], [1, 3, 2]], process=False)
    (tmp_path / "z.stl").write_bytes(tm.export(file_type="stl"))
    got = load_mesh(tmp_path / "z.stl")
    assert got.n_vertices == 3


# --- OFF --------------------------------------------------------------------------------------


def test_off_matches_trimesh_export_in_file_order(tmp_path: Path) -> None:
    m = _surface(1)
    text = trimesh.exchange.off.export_off(trimesh.Trimesh(m.vertices, m.faces, process=False))
    (tmp_path / "a.off").write_text(text)
    got = load_mesh(tmp_path / "a.off")
    np.testing.assert_allclose(got.vertices, m.vertices, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.faces, m.faces)


def test_coff_polygons_and_colours(tmp_path: Path) -> None:
    text = (
        "COFF\n# a quad and a pentagon\n7 2 0\n"
        "0 0 0 255 0 0 255\n1 0 0 0 255 0 255\n1 1 0 0 0 255 255\n0 1 0 255 255 255 255\n"
        "2 0 0 0 0 0 255\n2.5 1 0 10 20 30 255\n2 2 0 51 102 153 255\n"
        "4 0 1 2 3\n5 1 4 5 6 2   200 0 0\n"
    )
    (tmp_path / "p.off").write_text(text)
    got = load_mesh(tmp_path / "p.off")
    # fans: quad (0 1 2 3) -> (0 1 2) (0 2 3); pentagon (1 4 5 6 2) -> (1 4 5) (1 5 6) (1 6 2)
    np.testing.assert_array_equal(
        got.faces, [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 6], [1, 6, 2]]
    )
    assert got.colors is not None
    np.testing.assert_allclose(got.colors[5], [10 / 255, 20 / 255, 30 / 255])
    np.testing.assert_allclose(got.colors[0], [1.0, 0.0, 0.0])
    # the header may share its line with the counts; comments anywhere
    (tmp_path / "q.off").write_text("OFF 3 1 0 # counts\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    assert load_mesh(tmp_path / "q.off").n_faces == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("NOFF\n3 1 0\n", "not an OFF file"),
        ("OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "announced"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1\n", "fewer vertex indices"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n", "out of range"),
    ],
)
def test_bad_off_files_name_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.off"
    path.write_text(content)
    with pytest.raises(InputFileError, match=problem) as info:
        load_mesh(path)
    assert info.value.path == path


# --- VRML 2.0 ---------------------------------------------------------------------------------


def _wrl_face_set(
    m: Mesh,
    *,
    def_name: str | None = None,
    use: str | None = None,
    tex: tuple[np.ndarray, np.ndarray] | None = None,
    colors: np.ndarray | None = None,
    ccw: bool = True,
    quads: bool = False,
) -> str:
    if use is not None:
        coord = f"coord USE {use}"
    else:
        pts = ",\n".join(" ".join(repr(float(c)) for c in p) for p in m.vertices)
        dn = f"DEF {def_name} " if def_name else ""
        coord = f"coord {dn}Coordinate {{ point [ {pts} ] }}"
    if quads:  # the grid's cells: triangles (i, j, k) and (i, k, l) as one quad (i, j, k, l)
        half = len(m.faces) // 2
        polys = np.concatenate([m.faces[:half], m.faces[half:, 2:]], axis=1)
    else:
        polys = m.faces
    idx = " ".join(" ".join(map(str, p)) + " -1" for p in polys)
    parts = [coord, f"coordIndex [ {idx} ]"]
    if tex is not None:
        table, corner = tex
        pts = ", ".join(f"{float(u)!r} {float(v)!r}" for u, v in table)
        tidx = " ".join(" ".join(map(str, p)) + " -1" for p in corner)
        parts += [f"texCoord TextureCoordinate {{ point [ {pts} ] }}", f"texCoordIndex [ {tidx} ]"]
    if colors is not None:
        rgb = ", ".join(" ".join(repr(float(x)) for x in c) for c in colors)
        parts.append(f"color Color {{ color [ {rgb} ] }}")
    if not ccw:
        parts.append("ccw FALSE")
    return "IndexedFaceSet {\n  " + "\n  ".join(parts) + "\n}"


def _shape(geometry: str, texture: str | None = None) -> str:
    app = ""
    if texture:
        app = f'appearance Appearance {{ texture ImageTexture {{ url "{texture}" }} }}\n'

    return f"Shape {{ {app} geometry {geometry} }}"


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#VRML V2.0 utf8\n# written by the test\n" + body + "\n")
    return path


def test_wrl_reads_points_triangles_colours_in_file_order(tmp_path: Path) -> None:
    m = _surface(2)
    rgb = np.random.default_rng(0).uniform(size=(m.n_vertices, 3))
    got = load_mesh(_write(tmp_path, "a.wrl", _shape(_wrl_face_set(m, colors=rgb))))
    np.testing.assert_array_equal(got.vertices, m.vertices)
    np.testing.assert_array_equal(got.faces, m.faces)
    np.testing.assert_array_equal(got.colors, rgb)
    # quads split into the same triangles; ccw FALSE turns the winding
    q = load_mesh(_write(tmp_path, "q.wrl", _shape(_wrl_face_set(m, quads=True))))
    assert _triangle_set(q.vertices, q.faces, m.vertices) == set(map(tuple, m.faces.tolist()))
    cw = load_mesh(_write(tmp_path, "c.wrl", _shape(_wrl_face_set(m, ccw=False))))
    np.testing.assert_array_equal(cw.faces, m.faces[:, ::-1])


def test_wrl_def_use_and_nested_transforms(tmp_path: Path) -> None:
    m = _surface(3)
    rot = Rotation.from_rotvec([0.3, -0.5, 0.2])
    axis = (rot.as_rotvec() / np.linalg.norm(rot.as_rotvec())).tolist()
    angle = float(np.linalg.norm(rot.as_rotvec()))
    inner = _shape(_wrl_face_set(m, use="pts"))
    body = (
        _shape(_wrl_face_set(m, def_name="pts"))
        + "\nTransform { translation 10 -2 5 children [ Transform { "
        + f"rotation {axis[0]!r} {axis[1]!r} {axis[2]!r} {angle!r} scale 2 2 2 "
        + f"children [ {inner} ] }} ] }}"
    )
    got = load_mesh(_write(tmp_path, "t.wrl", body))
    n = m.n_vertices
    assert got.n_vertices == 2 * n
    np.testing.assert_array_equal(got.vertices[:n], m.vertices)
    # the second copy: scaled by 2, rotated (inner transform), then translated (outer)
    expect = rot.apply(2.0 * m.vertices) + [10.0, -2.0, 5.0]
    np.testing.assert_allclose(got.vertices[n:], expect, atol=1e-9)
    np.testing.assert_array_equal(got.faces[len(m.faces) :], m.faces + n)


def test_wrl_transform_centre_and_scale_orientation(tmp_path: Path) -> None:
    m = _surface(4)
    so = Rotation.from_rotvec([0.0, 0.0, np.pi / 2])
    body = (
        "Transform { center 1 2 3 scale 2 1 1 scaleOrientation 0 0 1 1.5707963267948966 "
        f"children [ {_shape(_wrl_face_set(m))} ] }}"
    )
    got = load_mesh(_write(tmp_path, "c.wrl", body))
    # P' = C SR S SR^-1 (P - C): a stretch by 2 along the turned x axis (= y) about the centre
    c = np.array([1.0, 2.0, 3.0])
    stretch = so.as_matrix() @ np.diag([2.0, 1.0, 1.0]) @ so.as_matrix().T
    np.testing.assert_allclose(got.vertices, (m.vertices - c) @ stretch.T + c, atol=1e-9)


def _seam_uvs(m: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Per-corner UVs ``(table, corner indices)``: the grid's own UVs, except that the first
    triangle uses a second copy of its corners' UVs shifted by 0.5: a seam there."""
    n = m.n_vertices
    table = np.concatenate([m.uvs, m.uvs[m.faces[0]] + 0.5])
    corner = m.faces.copy()
    corner[0] = [n, n + 1, n + 2]
    return table, corner


def test_wrl_texture_coordinates_with_seams(tmp_path: Path) -> None:
    m = _surface(5)
    n = m.n_vertices
    table, corner = _seam_uvs(m)
    path = _write(
        tmp_path, "s.wrl", _shape(_wrl_face_set(m, tex=(table, corner)), texture="skin.png")
    )
    plain = load_mesh(path)
    assert plain.n_vertices == n and plain.uvs is None  # seams: UVs dropped, vertices kept
    split = load_mesh(path, split_seams=True)
    assert split.n_vertices == n + 3
    corners = {(tuple(split.vertices[i]), tuple(split.uvs[i])) for i in split.faces.ravel()}
    for k in range(3):
        i = m.faces[0, k]
        assert (tuple(m.vertices[i]), tuple(m.uvs[i] + 0.5)) in corners
    assert _triangle_set(split.vertices, split.faces, m.vertices) == _triangle_set(
        m.vertices, m.faces, m.vertices
    )
    # no seam (texCoordIndex equal to coordIndex): per-vertex UVs, no split
    same = load_mesh(
        _write(tmp_path, "u.wrl", _shape(_wrl_face_set(m, tex=(m.uvs, m.faces)))),
        split_seams=True,
    )
    assert same.n_vertices == n
    np.testing.assert_array_equal(same.uvs, m.uvs)
    # mirrored by a transform: the winding turns, every corner keeps its own UV
    mirrored = load_mesh(
        _write(
            tmp_path,
            "m.wrl",
            "Transform { scale -1 1 1 children [ "
            + _shape(_wrl_face_set(m, tex=(table, corner)))
            + " ] }",
        ),
        split_seams=True,
    )
    flip = np.array([-1.0, 1.0, 1.0])
    assert {
        (tuple(mirrored.vertices[i] * flip), tuple(mirrored.uvs[i])) for i in mirrored.faces.ravel()
    } == corners
    ref_mirror = _triangle_set(m.vertices * flip, m.faces[:, ::-1], m.vertices * flip)
    assert _triangle_set(mirrored.vertices, mirrored.faces, m.vertices * flip) == ref_mirror
    # the texture named by ImageTexture is found and read with the split mesh
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "skin.png")
    assert texture_path(path) == tmp_path / "skin.png"
    mesh, texture = load_textured_mesh(path)
    assert texture is not None and mesh.n_vertices == n + 3
    np.testing.assert_allclose(texture, rgb / 255.0, atol=1e-7)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (None, "VRML 1.0"),
        ("Shape { geometry Box { size 1 1 1 } }", "no IndexedFaceSet"),
        (
            "Shape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] }"
            " coordIndex [ 0 1 5 -1 ] } }",
            "coordIndex 5 out of range",
        ),
        ("Shape { geometry IndexedFaceSet { coord USE nowhere coordIndex [ 0 1 2 ] } }", "USE"),
        ("Shape { geometry IndexedFaceSet { coordIndex [ 0 1 2 ] }", "unclosed"),
        ('Inline { url "head.wrl" }', "Inline"),
        (  # a second instance of the geometry was left out, silently
            "Transform { children [ Shape { geometry DEF F IndexedFaceSet { coord Coordinate {"
            " point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2 -1 ] } } ] }\n"
            "Transform { translation 0 20 0 children [ Shape { geometry USE F } ] }",
            "USE F places the geometry of the IndexedFaceSet DEF'd as F a second time",
        ),
        (
            "DEF head Transform { children [ Shape { geometry IndexedFaceSet { coord Coordinate"
            " { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2 -1 ] } } ] }\n"
            "Transform { scale -1 1 1 children [ USE head ] }",
            "USE head places the geometry of the Transform DEF'd as head",
        ),
    ],
)
def test_bad_vrml_files_name_the_problem(tmp_path: Path, body: str | None, problem: str) -> None:
    path = tmp_path / "bad.wrl"
    if body is None:
        path.write_text("#VRML V1.0 ascii\nSeparator { }\n")
    else:
        path.write_text("#VRML V2.0 utf8\n" + body + "\n")
    with pytest.raises(InputFileError, match=problem) as info:
        load_mesh(path)
    assert info.value.path == path and info.value.__cause__ is None
    not_vrml = tmp_path / "x.wrl"
    not_vrml.write_text("solid x\n")
    with pytest.raises(InputFileError, match="not a VRML 2.0 file"):
        load_mesh(not_vrml)


def test_wrl_face_colours_comments_and_strings(tmp_path: Path) -> None:
    # two triangles sharing the edge 1-2, one red and one blue, per face; comments holding
    # braces and brackets; a texture name holding '#'
    body = (
        'Shape { appearance Appearance { texture ImageTexture { url "skin#1.png" } } # } ] {\n'
        "geometry IndexedFaceSet { # a comment { [\n"
        "  coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0, 1 1 0 ] }  # ]\n"
        "  coordIndex [ 0 1 2 -1 1 3 2 -1 ]\n"
        "  colorPerVertex FALSE color Color { color [ 1 0 0, 0 0 1 ] } } }"
    )
    path = _write(tmp_path, "f.wrl", body)
    got = load_mesh(path)
    np.testing.assert_array_equal(got.faces, [[0, 1, 2], [1, 3, 2]])
    # vertex colour: the mean of the faces around it
    np.testing.assert_allclose(got.colors, [[1, 0, 0], [0.5, 0, 0.5], [0.5, 0, 0.5], [0, 0, 1]])
    from facehd.vrml import texture_urls

    assert texture_urls(path.read_text()) == ["skin#1.png"]


def test_ply_texture_file_comment_with_per_corner_uvs(tmp_path: Path) -> None:
    # a square of two triangles whose shared corners 0 and 2 have other UVs in the second
    # triangle (a seam), as MeshLab writes a textured scan: UVs per face corner, the image in a
    # header comment
    text = (
        "ply\nformat ascii 1.0\ncomment TextureFile skin.png\nelement vertex 4\n"
        "property float x\nproperty float y\nproperty float z\nelement face 2\n"
        "property list uchar int vertex_indices\nproperty list uchar float texcoord\n"
        "end_header\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n"
        "3 0 1 2 6 0 0 0.5 0 0.5 0.5\n3 0 2 3 6 0.6 0 1 0.5 0.6 0.5\n"
    )
    path = tmp_path / "scan.ply"
    path.write_text(text)
    with pytest.warns(MeshFileWarning, match=r"scan\.ply: texture .*skin\.png not found"):
        assert texture_path(path) is None  # the image is not there (yet)
    from PIL import Image

    rgb = np.random.default_rng(2).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "skin.png")
    assert texture_path(path) == tmp_path / "skin.png"
    mesh, texture = load_textured_mesh(path)
    assert texture is not None
    np.testing.assert_allclose(texture, rgb / 255.0, atol=1e-7)
    # split along the seam: corners 0 and 2 twice, every corner keeps its own UV
    assert mesh.n_vertices == 6 and mesh.uvs is not None
    corners = {
        (tuple(mesh.vertices[i]), tuple(np.round(mesh.uvs[i], 6))) for i in mesh.faces.ravel()
    }
    assert ((0.0, 0.0, 0.0), (0.0, 0.0)) in corners and ((0.0, 0.0, 0.0), (0.6, 0.0)) in corners
    assert ((1.0, 1.0, 0.0), (0.5, 0.5)) in corners and ((1.0, 1.0, 0.0), (1.0, 0.5)) in corners


@pytest.mark.parametrize(
    ("name", "scan"),
    [
        ("s.obj", True),
        ("s.PLY", True),
        ("head.scan.stl", True),
        ("x.off", True),
        ("y.wrl", True),
        ("s.png", False),
        ("s.lm7.txt.off", False),  # a landmark file put aside
        ("s.obj.off", False),
        ("s000_e00.gt_m1.ply", False),  # facehd's outputs beside scans
        ("s000_e00.m0.ply", False),
    ],
)
def test_which_files_are_scans(name: str, scan: bool) -> None:
    assert is_scan_file(Path("/data") / name) is scan


def test_wrl_patches_and_shared_coordinates_are_merged_into_one_surface(tmp_path: Path) -> None:
    m = _surface(6)
    half = len(m.faces) // 2
    # two patches, each with its own copy of the points (the shared border twice)
    patches = [Mesh(m.vertices, m.faces[:half]), Mesh(m.vertices, m.faces[half:])]
    body = "\n".join(_shape(_wrl_face_set(p)) for p in patches)
    got = load_mesh(_write(tmp_path, "p.wrl", body))
    assert got.n_vertices == m.n_vertices and got.n_faces == m.n_faces
    ref = _triangle_set(m.vertices, m.faces, m.vertices)
    assert _triangle_set(got.vertices, got.faces, m.vertices) == ref
    # connected again: the smooth normals of the whole grid
    order, order_ref = np.lexsort(got.vertices.T), np.lexsort(m.vertices.T)
    np.testing.assert_allclose(
        got.vertex_normals[order], m.vertex_normals[order_ref], rtol=0, atol=1e-12
    )
    # three sets sharing one coordinate list through DEF/USE, each using a third of the faces
    thirds = np.array_split(m.faces, 3)
    sets = [_wrl_face_set(Mesh(m.vertices, thirds[0]), def_name="pts")]
    sets += [_wrl_face_set(Mesh(m.vertices, t), use="pts") for t in thirds[1:]]
    shared = load_mesh(_write(tmp_path, "u.wrl", "\n".join(_shape(g) for g in sets)))
    assert shared.n_vertices == m.n_vertices and shared.n_faces == m.n_faces


def _obj_by_hand(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ``v`` line in file order, and each ``f`` line's vertex numbers minus one (what the
    benchmarks' own OBJ readers do), triangles only."""
    verts, faces = [], []
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["v"]:
            verts.append([float(x) for x in parts[1:4]])
        elif parts[:1] == ["f"]:
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:4]])
    return np.array(verts), np.array(faces)


@pytest.mark.parametrize("seed", range(6))
def test_obj_with_seams_and_unused_vertices_keeps_every_vertex_in_file_order(
    tmp_path: Path, seed: int
) -> None:
    # unused vertices anywhere (also last), UV seams splitting used vertices: with as many of
    # each, the reader once took the seam-split list for the file's own
    rng = np.random.default_rng(seed)
    n = 12
    v = rng.normal(size=(n, 3)).round(4)
    unused = rng.choice(n, 3, replace=False)
    used = np.setdiff1d(np.arange(n), unused)
    tris = [rng.choice(used, 3, replace=False) for _ in range(8)]
    lines = [f"v {a} {b} {c}" for a, b, c in v]
    lines += [f"vt {rng.uniform():.3f} {rng.uniform():.3f}" for _ in range(n + 3)]
    for t in tris:  # texture coordinates not tied to the vertex: seams
        lines.append("f " + " ".join(f"{i + 1}/{rng.integers(1, n + 4)}" for i in t))
    text = "\n".join(lines) + "\n"
    path = tmp_path / "m.obj"
    path.write_text(text)
    want_v, want_f = _obj_by_hand(text)
    got = load_mesh(path)
    np.testing.assert_array_equal(got.vertices, want_v)
    np.testing.assert_array_equal(got.faces, want_f)


def test_obj_seam_split_as_long_as_the_file_is_not_taken_for_it(tmp_path: Path) -> None:
    # vertex 2 unused, vertex 4 on a seam: the split list has the file's length
    text = (
        "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nv 2 0 0\n"
        "vt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\nvt 0.5 0.5\n"
        "f 2/1 3/2 4/3\nf 3/5 5/4 4/3\n"
    )
    path = tmp_path / "seam.obj"
    path.write_text(text)
    got = load_mesh(path)
    want_v, want_f = _obj_by_hand(text)
    np.testing.assert_array_equal(got.vertices, want_v)
    np.testing.assert_array_equal(got.faces, want_f)


_TRI = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n"


@pytest.mark.parametrize(
    "body, problem",
    [
        (_TRI + "f 1 2 3\nf 1 2", r"fewer than 3 vertices \(line 6: 'f 1 2'; a cut file\?\)"),
        (_TRI + "f 1 2 3\nf\n", r"fewer than 3 vertices \(line 6: 'f'"),
        (_TRI + "f 0 1 2\n", r"face index 0 \(line 5: 'f 0 1 2'\): OBJ counts vertices from 1"),
        (_TRI + "f 2/2 3/3 0/1\n", r"face index 0 \(line 5"),
    ],
)
def test_bad_obj_faces_name_the_line(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "x.obj"
    path.write_text(body)
    with pytest.raises(InputFileError, match=problem):
        load_mesh(path)


def test_obj_keywords_followed_by_tabs(tmp_path: Path) -> None:
    spaced = tmp_path / "spaced.obj"
    spaced.write_text(_TRI + "f 1 2 3\nf 1 3 4\nf -1 -2 -3\nf 2 3 4\n")
    tabbed = tmp_path / "tabbed.obj"
    tabbed.write_text(spaced.read_text().replace("v ", "v\t").replace("f ", "f\t"))
    a, b = load_mesh(spaced), load_mesh(tabbed)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)
    assert len(a.faces) == 4


def test_an_obj_facehd_wrote_and_cut_at_a_line_end_is_refused(tmp_path):
    """An OBJ cut between lines parses as a smaller mesh; facehd's own files say their counts in
    their first line, so a partial one never reads as complete. Other OBJs are read as before."""
    import trimesh

    from facehd.errors import InputFileError
    from facehd.mesh import Mesh, load_mesh, save_mesh

    sphere = trimesh.creation.icosphere(subdivisions=2)
    path = save_mesh(tmp_path / "whole.obj", Mesh(sphere.vertices, sphere.faces))
    lines = path.read_text().splitlines(keepends=True)
    assert load_mesh(path).n_faces == len(sphere.faces)
    for keep, said in ((0.8, "320 faces, it holds 162 and"), (0.3, "162 vertices")):
        cut = tmp_path / f"cut{keep}.obj"
        cut.write_text("".join(lines[: int(len(lines) * keep)]))
        with pytest.raises(InputFileError, match=rf"cut{keep}\.obj: cut short .*{said}"):
            load_mesh(cut)
    # the same content without facehd's header line: no counts to check
    plain = tmp_path / "plain.obj"
    plain.write_text("".join(lines[1 : int(len(lines) * 0.8)]))
    assert 0 < load_mesh(plain).n_faces < len(sphere.faces)


_SQUARE = "coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0, 1 1 0 ] }"


def _ifs(fields: str, transform: str = "") -> str:
    shape = _shape(f"IndexedFaceSet {{ {fields} }}")
    return f"Transform {{ {transform} children [ {shape} ] }}" if transform else shape


def test_wrl_index_lists_as_writers_leave_them(tmp_path: Path) -> None:
    """The last polygon without its -1, empty polygons (-1 -1), a rotation about no axis (the
    identity), colours above 1 (clipped), per-face colour indices ending in -1."""
    got = load_mesh(_write(tmp_path, "a.wrl", _ifs(f"{_SQUARE} coordIndex [ 0 1 2 -1 -1 1 3 2 ]")))
    np.testing.assert_array_equal(got.faces, [[0, 1, 2], [1, 3, 2]])
    turned = _ifs(f"{_SQUARE} coordIndex [ 0 1 2 -1 ]", "rotation 0 0 0 1.2 translation 1 0 0")
    got = load_mesh(_write(tmp_path, "r.wrl", turned))
    np.testing.assert_array_equal(got.vertices[:3], [[1, 0, 0], [2, 0, 0], [1, 1, 0]])
    bright = "color Color { color [ 2 0.5 0, 0 1 0, 0 0 1, 1 1 1 ] }"
    got = load_mesh(_write(tmp_path, "c.wrl", _ifs(f"{_SQUARE} coordIndex [ 0 1 2 -1 ] {bright}")))
    np.testing.assert_array_equal(got.colors[0], [1.0, 0.5, 0.0])
    per_face = "colorPerVertex FALSE color Color { color [ 1 0 0, 0 0 1 ] } colorIndex [ 1 0 -1 ]"
    got = load_mesh(
        _write(tmp_path, "f.wrl", _ifs(f"{_SQUARE} coordIndex [ 0 1 2 -1 1 3 2 -1 ] {per_face}"))
    )
    np.testing.assert_allclose(got.colors[[0, 3]], [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (f"{_SQUARE} coordIndex [ -1 -1 ]", "coordIndex holds no polygon"),
        (f"{_SQUARE} coordIndex [ 0 1 4 -1 ]", "coordIndex 4 out of range for 4 points"),
        (
            f"{_SQUARE} coordIndex [ 0 1 2 -1 ] texCoord TextureCoordinate {{ point [ 0 0, 1 0,"
            " 0 1 ] } texCoordIndex [ 0 1 3 -1 ]",
            "texCoordIndex 3 out of range for 3",
        ),
        (
            f"{_SQUARE} coordIndex [ 0 1 2 -1 ] color Color {{ color [ 1 0 0, 0 1 0 ] }}"
            " colorIndex [ 0 1 2 -1 ]",
            "colour index out of range for 2 colours",
        ),
    ],
)
def test_wrl_indices_one_past_the_end_are_refused(
    tmp_path: Path, fields: str, problem: str
) -> None:
    with pytest.raises(InputFileError, match=rf"bad\.wrl: .*{re.escape(problem)}"):
        load_mesh(_write(tmp_path, "bad.wrl", _ifs(fields)))


def test_wrl_clockwise_faces_keep_each_corners_uv_across_seams(tmp_path: Path) -> None:
    m = _surface(7)
    n = m.n_vertices
    table, corner = _seam_uvs(m)
    ccw = _write(tmp_path, "a.wrl", _shape(_wrl_face_set(m, tex=(table, corner))))
    cw = _write(tmp_path, "b.wrl", _shape(_wrl_face_set(m, tex=(table, corner), ccw=False)))
    a, b = load_mesh(ccw, split_seams=True), load_mesh(cw, split_seams=True)

    def corners(x: Mesh) -> set:
        return {(tuple(x.vertices[i]), tuple(x.uvs[i])) for i in x.faces.ravel()}

    assert corners(a) == corners(b) and b.n_vertices == n + 3
    flipped = _triangle_set(m.vertices, m.faces[:, ::-1], m.vertices)
    assert _triangle_set(b.vertices, b.faces, m.vertices) == flipped


def test_wrl_face_sets_merge_as_one_surface(tmp_path: Path) -> None:
    """Where patches meet: points written -0 and 0 are one vertex; texture coordinates that
    differ there drop the UVs (or keep the vertices apart with ``split_seams``); a patch without
    texture beside one with seams splits nothing; points of a shared list no set uses are left
    out; an image named twice is listed once."""
    square = "coord Coordinate { point [ %s ] }"
    left = square % "0 0 0, 1 -0 0, 0 1 0, 1 1 -0"
    right = square % "1 0 0, 2 0 0, 1 1 0, 2 1 0"
    body = "\n".join(_ifs(f"{c} coordIndex [ 0 1 2 -1 1 3 2 -1 ]") for c in (left, right))
    got = load_mesh(_write(tmp_path, "m.wrl", body))
    assert got.n_vertices == 6 and got.n_faces == 4
    uv_left = "texCoord TextureCoordinate { point [ 0 0, 0.5 0, 0 1, 0.5 1 ] }"
    uv_right = "texCoord TextureCoordinate { point [ 0.6 0, 1 0, 0.6 1, 1 1 ] }"
    body = "\n".join(
        _ifs(f"{c} coordIndex [ 0 1 2 -1 1 3 2 -1 ] {t}")
        for c, t in ((left, uv_left), (right, uv_right))
    )
    path = _write(tmp_path, "t.wrl", body)
    plain = load_mesh(path)
    assert plain.n_vertices == 6 and plain.uvs is None
    assert load_mesh(path, split_seams=True).n_vertices == 8
    seam = f"{_SQUARE} coordIndex [ 0 1 2 -1 1 3 2 -1 ] " + (
        "texCoord TextureCoordinate { point [ 0 0, 1 0, 0 1, 1 1, 0.5 0.5 ] } "
        "texCoordIndex [ 0 1 2 -1 4 3 2 -1 ]"
    )
    bare = _ifs(f"{right} coordIndex [ 0 1 2 -1 ]")
    mixed = load_mesh(_write(tmp_path, "x.wrl", _ifs(seam) + "\n" + bare), split_seams=True)
    assert mixed.n_vertices == 5 and mixed.uvs is None
    shared = "coord DEF pts Coordinate { point [ 0 0 0, 1 0 0, 0 1 0, 1 1 0, 9 9 9 ] }"
    body = (
        _ifs(f"{shared} coordIndex [ 0 1 2 -1 ]")
        + "\n"
        + _ifs("coord USE pts coordIndex [ 1 3 2 -1 ]")
    )
    got = load_mesh(_write(tmp_path, "s.wrl", body))
    assert got.n_vertices == 4 and not (got.vertices == 9.0).any()
    from facehd.vrml import texture_urls

    twice = 'Shape { appearance Appearance { texture ImageTexture { url "skin.png" } } }\n'
    assert texture_urls("#VRML V2.0 utf8\n" + twice * 2) == ["skin.png"]

"""Mesh value, OBJ/PLY input and output, vertex normals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from facehd import mesh as mesh_mod
from facehd.errors import InputFileError
from facehd.mesh import (
    Mesh,
    MeshFileWarning,
    height_field_mesh,
    load_mesh,
    save_mesh,
    vertex_normals,
    weld_vertices,
)
from facehd.transforms import Similarity, rotation_from_axis_angle


def small_mesh(seed: int = 0) -> Mesh:
    rng = np.random.default_rng(seed)
    m = height_field_mesh(rng.normal(size=(6, 7)), np.arange(7.0) * 3.1, np.arange(6.0) * 2.7)
    return Mesh(m.vertices, m.faces, m.uvs, rng.uniform(size=(m.n_vertices, 3)))


# --- round trips ------------------------------------------------------------------------------


def test_obj_round_trip_is_exact(tmp_path: Path) -> None:
    m = small_mesh()
    path = save_mesh(tmp_path / "a.obj", m)
    r = load_mesh(path)
    np.testing.assert_array_equal(r.vertices, m.vertices)
    np.testing.assert_array_equal(r.faces, m.faces)
    np.testing.assert_array_equal(r.uvs, m.uvs)
    np.testing.assert_array_equal(r.colors, m.colors)


def test_ply_round_trip_quantises_only_colours(tmp_path: Path) -> None:
    m = small_mesh(1)
    r = load_mesh(save_mesh(tmp_path / "a.ply", m))
    np.testing.assert_array_equal(r.vertices, m.vertices)
    np.testing.assert_array_equal(r.faces, m.faces)
    np.testing.assert_array_equal(r.uvs, m.uvs)
    assert np.abs(r.colors - m.colors).max() <= 0.5 / 255 + 1e-12


def test_plain_mesh_round_trip_without_uvs_or_colours(tmp_path: Path) -> None:
    m = Mesh(small_mesh().vertices, small_mesh().faces)
    for suffix in (".obj", ".ply"):
        r = load_mesh(save_mesh(tmp_path / f"p{suffix}", m))
        assert r.uvs is None and r.colors is None
        np.testing.assert_array_equal(r.vertices, m.vertices)
        np.testing.assert_array_equal(r.faces, m.faces)


def test_reads_files_written_by_trimesh_in_vertex_order(tmp_path: Path) -> None:
    m = small_mesh(2)
    tm = trimesh.Trimesh(m.vertices, m.faces, process=False)
    tm.visual = trimesh.visual.TextureVisuals(uv=m.uvs)
    (tmp_path / "t.obj").write_text(trimesh.exchange.obj.export_obj(tm, include_texture=False))
    r = load_mesh(tmp_path / "t.obj")
    np.testing.assert_allclose(r.vertices, m.vertices, atol=1e-7)
    np.testing.assert_array_equal(r.faces, m.faces)
    tc = trimesh.Trimesh(m.vertices, m.faces, vertex_colors=m.colors, process=False)
    (tmp_path / "t.ply").write_bytes(trimesh.exchange.ply.export_ply(tc))
    r = load_mesh(tmp_path / "t.ply")
    np.testing.assert_allclose(r.vertices, m.vertices, atol=1e-6)
    np.testing.assert_array_equal(r.faces, m.faces)
    assert np.abs(r.colors - m.colors).max() <= 1.0 / 255 + 1e-9


SEAM_OBJ = """v 0 0 0
v 1 0 0
v 0 1 0
v 1 1 0
vt 0 0
vt 1 0
vt 0 1
vt 1 1
vt 0.9 0.1
f 1/1 2/2 3/3
f 4/4 3/3 2/5
"""


def test_uv_seams_keep_file_vertices_or_split_on_request(tmp_path: Path) -> None:
    path = tmp_path / "seam.obj"
    path.write_text(SEAM_OBJ)
    kept = load_mesh(path)
    assert kept.n_vertices == 4 and kept.uvs is None
    np.testing.assert_array_equal(kept.faces, [[0, 1, 2], [3, 2, 1]])
    split = load_mesh(path, split_seams=True)
    assert split.n_vertices == 5 and split.uvs is not None
    # every face corner keeps its own UV from the file
    corner_uv = split.uvs[split.faces]
    np.testing.assert_allclose(corner_uv[0], [[0, 0], [1, 0], [0, 1]])
    np.testing.assert_allclose(corner_uv[1], [[1, 1], [0, 1], [0.9, 0.1]])
    np.testing.assert_allclose(split.vertices[split.faces], kept.vertices[kept.faces])


def test_unreferenced_vertex_keeps_order_and_uvs(tmp_path: Path) -> None:
    text = (
        "v 0 0 0\nv 9 9 9\nv 1 0 0\nv 0 1 0\n"
        "vt 0.1 0.2\nvt 0.5 0.5\nvt 0.3 0.4\nvt 0.6 0.7\n"
        "f 1/1 3/3 4/4\n"
    )
    (tmp_path / "u.obj").write_text(text)
    r = load_mesh(tmp_path / "u.obj")
    np.testing.assert_array_equal(r.vertices[1], [9, 9, 9])
    np.testing.assert_array_equal(r.faces, [[0, 2, 3]])
    np.testing.assert_allclose(r.uvs[[0, 2, 3]], [[0.1, 0.2], [0.3, 0.4], [0.6, 0.7]])


def test_quads_become_triangles(tmp_path: Path) -> None:
    (tmp_path / "q.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    r = load_mesh(tmp_path / "q.obj")
    assert r.faces.shape == (2, 3)
    assert r.face_areas.sum() == pytest.approx(1.0)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.obj", b"", "empty"),
        ("blank.ply", b"  \n", "empty"),
        ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
        ("nan.obj", b"v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
        ("inf.obj", b"v 0 0 inf\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN or inf"),
        ("range.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 7\n", r"out of range: line 4.*vertex 7"),
        ("junk.obj", b"hello\nv 1 2\nf 1 2 3\n", "cannot parse"),
        ("junk.ply", b"ply\nformat nonsense\n\x00\x01", "cannot parse"),
        ("shape.stl", b"solid x\nendsolid x\n", "no triangles|cannot parse"),
        ("shape.dae", b"<COLLADA/>", "unsupported"),
    ],
)
def test_bad_files_raise_input_file_error(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=problem) as info:
        load_mesh(path)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None  # no library traceback chained


def test_point_cloud_ply_is_not_a_mesh(tmp_path: Path) -> None:
    cloud = trimesh.PointCloud(np.random.default_rng(0).normal(size=(10, 3)))
    (tmp_path / "c.ply").write_bytes(trimesh.exchange.ply.export_ply(cloud))
    with pytest.raises(InputFileError, match="no faces"):
        load_mesh(tmp_path / "c.ply")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        load_mesh(tmp_path / "nope.obj")
    (tmp_path / "dir.obj").mkdir()
    with pytest.raises(InputFileError, match="not a regular file"):
        load_mesh(tmp_path / "dir.obj")


# --- atomic save ------------------------------------------------------------------------------


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out" / "m.obj"
    save_mesh(dest, small_mesh())
    before = dest.read_bytes()
    calls = []

    def failing_replace(src: str, dst: str) -> None:
        calls.append((Path(src), Path(dst)))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_mesh(dest, small_mesh(5))
    # the new data went to a temporary file in the same folder, never to the destination
    ((src, dst),) = calls
    assert dst == dest and src.parent == dest.parent and src != dest
    assert dest.read_bytes() == before
    assert sorted(os.listdir(dest.parent)) == ["m.obj"]


def test_text_is_written_by_the_same_atomic_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facehd.csvtext import atomic_write_bytes, atomic_write_text

    assert mesh_mod.atomic_write_bytes is atomic_write_bytes
    dest = tmp_path / "new" / "t.csv"
    atomic_write_text(dest, "a,\u00e9\r\nb\n")
    assert dest.read_bytes() == "a,\u00e9\r\nb\n".encode()  # UTF-8, line ends untouched

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(dest, "other")
    assert dest.read_bytes() == "a,\u00e9\r\nb\n".encode()
    assert sorted(os.listdir(dest.parent)) == ["t.csv"]
    monkeypatch.undo()
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(tmp_path / "bad" / "t.txt", "\ud800")
    assert not (tmp_path / "bad").exists()


def test_the_atomic_writer_flushes_the_folder_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new name reaches the disk too: the folder is fsynced once the file is renamed into
    it (a crash of the machine after the write then leaves the file, not nothing)."""
    from facehd import csvtext

    events: list[tuple[str, object]] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src: str, dst: str) -> None:
        events.append(("replace", Path(dst)))
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    dest = tmp_path / "out" / "t.txt"
    csvtext.atomic_write_text(dest, "x")
    assert events[-2:] == [("replace", dest), ("fsync", dest.parent)]
    assert dest.read_text() == "x"


def test_save_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        save_mesh(tmp_path / "m.stl", small_mesh())


# --- the Mesh value ---------------------------------------------------------------------------


def test_mesh_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        Mesh(np.zeros((4, 2)), np.zeros((1, 3), dtype=int))
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        Mesh(np.zeros((4, 3)), np.zeros((1, 4), dtype=int))
    with pytest.raises(ValueError, match="indices"):
        Mesh(np.zeros((4, 3)), np.array([[0, 1, 4]]))
    with pytest.raises(ValueError, match=r"uvs: expected \(4, 2\)"):
        Mesh(np.zeros((4, 3)), np.array([[0, 1, 2]]), uvs=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"colors: expected \(4, 3\)"):
        Mesh(np.zeros((4, 3)), np.array([[0, 1, 2]]), colors=np.zeros((4, 4)))


def brute_vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    out = np.zeros_like(v)
    for a, b, c in f:
        n = np.cross(v[b] - v[a], v[c] - v[a])  # twice the area times the unit normal
        out[[a, b, c]] += n
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_vertex_normals_match_brute_force_and_sphere() -> None:
    m = small_mesh(3)
    np.testing.assert_allclose(m.vertex_normals, brute_vertex_normals(m.vertices, m.faces))
    ico = trimesh.creation.icosphere(subdivisions=3, radius=30.0)
    n = vertex_normals(ico.vertices, ico.faces)
    radial = ico.vertices / np.linalg.norm(ico.vertices, axis=1, keepdims=True)
    assert np.min(np.einsum("ij,ij->i", n, radial)) > 0.999
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)
    # a vertex in no face gets a zero normal
    lone = vertex_normals(np.vstack([ico.vertices, [[99.0, 0, 0]]]), ico.faces)
    np.testing.assert_array_equal(lone[-1], 0.0)


def test_vertex_normals_torch_batched_and_differentiable() -> None:
    m = small_mesh(4)
    v = torch.tensor(np.stack([m.vertices, 2 * m.vertices]), requires_grad=True)
    n = vertex_normals(v, torch.as_tensor(m.faces))
    assert n.shape == (2, m.n_vertices, 3)
    np.testing.assert_allclose(n[0].detach().numpy(), m.vertex_normals, atol=1e-12)
    np.testing.assert_allclose(
        vertex_normals(v[1].detach(), m.faces).numpy(), m.vertex_normals, atol=1e-12
    )
    tiny = torch.tensor(m.vertices[:8], requires_grad=True)
    faces = torch.tensor([[0, 1, 7], [0, 7, 6], [1, 2, 7]])
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, faces), (tiny,))
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        vertex_normals(torch.zeros(2, 2, 4, 3), faces)


def test_uniform_vertex_normals_sum_unit_face_normals() -> None:
    """``weighting="uniform"`` (the BFM's, as Deep3DFaceRecon sums ``point_buf``): each face's
    unit normal counts once whatever its area, against a loop over the faces; numpy and torch
    (batched) agree; a zero-area face adds nothing."""
    rng = np.random.default_rng(3)
    m = small_mesh(4)
    v = m.vertices + rng.normal(scale=0.2, size=m.vertices.shape)  # faces of unequal areas
    f = np.vstack([m.faces, [[0, 0, 1]]])  # a degenerate face
    want = np.zeros_like(v)
    for a, b, c in f:
        n = np.cross(v[b] - v[a], v[c] - v[a])
        if np.linalg.norm(n) > 0:
            want[[a, b, c]] += n / np.linalg.norm(n)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = vertex_normals(v, f, "uniform")
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.abs(got - vertex_normals(v, f)).max() > 1e-3  # not the area-weighted ones
    batch = torch.tensor(np.stack([v, 3 * v]))
    tn = vertex_normals(batch, torch.as_tensor(f), "uniform").numpy()
    np.testing.assert_allclose(tn[0], want, atol=1e-12)
    np.testing.assert_allclose(tn[1], want, atol=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        vertex_normals(v, f, "angle")


def test_transformed_keeps_outward_normals_under_reflection() -> None:
    ico = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    sphere = Mesh(ico.vertices, ico.faces)
    rot = Similarity(2.0, rotation_from_axis_angle(np.array([0.3, -0.2, 0.1])), np.ones(3))
    mirror = Similarity(1.0, np.diag([1.0, -1.0, 1.0]), np.zeros(3))
    for sim in (rot, mirror.compose(rot)):
        moved = sphere.transformed(sim)
        centre = sim.apply(np.zeros(3))
        radial = moved.vertices[moved.faces].mean(axis=1) - centre
        assert np.all(np.einsum("ij,ij->i", moved.face_normals, radial) > 0)
        np.testing.assert_allclose(moved.vertices, sim.apply(sphere.vertices))
    assert sphere.copy().vertices is not sphere.vertices


def test_subset_vertices_keeps_faces_with_all_corners() -> None:
    m = small_mesh(6)
    keep = m.vertices[:, 0] < 10.0
    sub, index = m.subset_vertices(keep)
    np.testing.assert_array_equal(sub.vertices, m.vertices[keep])
    np.testing.assert_array_equal(index, np.flatnonzero(keep))
    expected = m.faces[keep[m.faces].all(axis=1)]
    np.testing.assert_array_equal(index[sub.faces], expected)
    np.testing.assert_array_equal(sub.uvs, m.uvs[keep])


def test_height_field_faces_point_up() -> None:
    m = height_field_mesh(np.zeros((3, 4)), np.arange(4.0), np.arange(3.0))
    assert m.n_vertices == 12 and m.n_faces == 12
    np.testing.assert_allclose(m.face_normals, np.tile([0.0, 0.0, 1.0], (12, 1)))
    assert m.face_areas.sum() == pytest.approx(6.0)


def _textured_obj(folder: Path, mtl: str | None, images: dict[str, np.ndarray]) -> Path:
    """A unit square of two triangles whose shared edge has a UV seam, with materials."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in images.items():
        Image.fromarray(rgb).save(folder / name)
    lines = ["mtllib face.mtl"] if mtl is not None else []
    lines += ["v 0 0 0", "v 1 0 0", "v 1 1 0", "v 0 1 0"]
    lines += ["vt 0 0", "vt 0.5 0", "vt 0.5 1", "vt 0 1", "vt 0.6 0", "vt 1 1"]
    lines += ["usemtl skin", "f 1/1 2/2 3/3", "f 1/5 3/6 4/4"]  # vertices 1 and 3 on a seam
    path = folder / "face.obj"
    path.write_text("\n".join(lines) + "\n")
    if mtl is not None:
        (folder / "face.mtl").write_text(mtl)
    return path


def test_load_textured_mesh_splits_seams_and_reads_the_texture(tmp_path: Path) -> None:
    import warnings

    from facehd.mesh import MeshFileWarning, load_textured_mesh

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(8, 16, 3), dtype=np.uint8)
    mtl = "newmtl skin\nKd 1 1 1\nmap_Kd -s 1 1 1 tex/skin.png\r\n"
    path = _textured_obj(tmp_path / "ok", mtl, {})
    (tmp_path / "ok" / "tex").mkdir()
    from PIL import Image

    Image.fromarray(rgb).save(tmp_path / "ok" / "tex" / "skin.png")
    mesh, texture = load_textured_mesh(path)
    assert texture is not None and texture.shape == (8, 16, 3)
    np.testing.assert_allclose(texture, rgb / 255.0, atol=1e-7)
    # split along the seam: 6 (position, UV) pairs, the same 4 positions, every corner's UV kept
    assert mesh.n_vertices == 6 and mesh.uvs is not None
    plain = load_mesh(path)
    assert {tuple(v) for v in mesh.vertices} == {tuple(v) for v in plain.vertices}
    corners = {(tuple(mesh.vertices[i]), tuple(mesh.uvs[i])) for i in mesh.faces.ravel()}
    assert ((0.0, 0.0, 0.0), (0.6, 0.0)) in corners and ((0.0, 0.0, 0.0), (0.0, 0.0)) in corners
    # without a usable texture: the plain mesh and None, with a warning naming the file and why
    # when the files name a texture that cannot be used
    cases = {
        "no-mtllib": (None, {}),
        "missing-mtl": (None, {}),
        "no-map": ("newmtl skin\nKd 1 1 1\n", {}),
        "missing-image": ("newmtl skin\nmap_Kd gone.png\n", {}),
        "two-images": (
            "newmtl a\nmap_Kd a.png\nnewmtl b\nmap_Kd b.png\n",
            {"a.png": rgb, "b.png": rgb},
        ),
        "unreadable": ("newmtl skin\nmap_Kd bad.png\n", {}),
    }
    expected = {
        "missing-mtl": "gone.mtl not found",
        "missing-image": "gone.png not found",
        "two-images": "2 texture images",
        "unreadable": "bad.png unreadable",
    }
    for name, (text, images) in cases.items():
        p = _textured_obj(tmp_path / name, text, images)
        if name == "unreadable":
            (tmp_path / name / "bad.png").write_bytes(b"not a png")
        if name == "missing-mtl":
            p.write_text("mtllib gone.mtl\n" + p.read_text())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got, tex = load_textured_mesh(p)
        assert tex is None and got.n_vertices == 4, name
        said = [str(w.message) for w in caught if issubclass(w.category, MeshFileWarning)]
        if name in ("no-mtllib", "no-map"):
            assert said == [], name
        else:
            assert len(said) == 1 and said[0].startswith(f"{p}: "), (name, said)
            assert expected[name] in said[0] and "geometry only" in said[0], (name, said)
    # a PNG cut short (a copy interrupted): its header reads, its pixels do not
    folder = tmp_path / "cut"
    p = _textured_obj(folder, "newmtl skin\nmap_Kd skin.png\n", {"skin.png": rgb})
    whole = (folder / "skin.png").read_bytes()
    (folder / "skin.png").write_bytes(whole[: len(whole) // 2])
    with pytest.warns(MeshFileWarning, match=r"cut/face\.obj: texture .*skin\.png unreadable"):
        got, tex = load_textured_mesh(p)
    assert tex is None and got.n_vertices == 4
    ply = save_mesh(tmp_path / "s.ply", small_mesh())
    assert load_textured_mesh(ply)[1] is None
    with pytest.raises(InputFileError):
        load_textured_mesh(tmp_path / "nope.obj")


def test_large_textures_are_shrunk(tmp_path: Path) -> None:
    from facehd.mesh import load_textured_mesh, texture_path

    rgb = np.zeros((300, 600, 3), np.uint8)
    rgb[:, 300:] = 255  # right half white
    path = _textured_obj(tmp_path, "newmtl skin\nmap_Kd big.png\n", {"big.png": rgb})
    assert texture_path(path) == tmp_path / "big.png"
    _, texture = load_textured_mesh(path, max_texture_size=64)
    assert texture is not None and texture.shape == (32, 64, 3)
    np.testing.assert_allclose(texture[:, :32], 0.0)
    np.testing.assert_allclose(texture[:, 32:], 1.0)


def test_texture_named_by_a_foreign_absolute_path_is_found_beside_the_library(
    tmp_path: Path,
) -> None:
    from facehd.mesh import texture_path

    rgb = np.zeros((4, 4, 3), np.uint8)
    for name, named in {
        "windows": r"C:\scans\subject 7\skin.png",
        "posix": "/mnt/scanner/export/skin.png",
    }.items():
        path = _textured_obj(tmp_path / name, f"newmtl skin\nmap_Kd {named}\n", {"skin.png": rgb})
        assert texture_path(path) == tmp_path / name / "skin.png", name
    # a relative name with a space, and one after options
    for name, line in {"spaced": "my skin.png", "options": "-s 1 1 1 -bm 0.5 my skin.png"}.items():
        path = _textured_obj(tmp_path / name, f"newmtl skin\nmap_Kd {line}\n", {"my skin.png": rgb})
        assert texture_path(path) == tmp_path / name / "my skin.png", name
    # not beside it either: no texture
    path = _textured_obj(tmp_path / "gone", "newmtl skin\nmap_Kd D:\\x\\other.png\n", {})
    with pytest.warns(MeshFileWarning, match=r"gone/face\.obj: texture .*other\.png not found"):
        assert texture_path(path) is None


# --- pieces ----------------------------------------------------------------------------------


def _box(extents: tuple[float, float, float], at: tuple[float, float, float]) -> Mesh:
    b = trimesh.creation.box(extents=extents)
    return Mesh(np.asarray(b.vertices) + np.asarray(at), np.asarray(b.faces, np.int64))


def _join(*parts: Mesh) -> Mesh:
    offsets = np.cumsum([0] + [p.n_vertices for p in parts[:-1]])
    return Mesh(
        np.concatenate([p.vertices for p in parts]),
        np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)]),
    )


def test_connected_pieces_match_trimesh_and_ignore_seams_and_soups() -> None:
    rng = np.random.default_rng(4)
    sphere = trimesh.creation.icosphere(2)
    parts = [
        _box((1.0, 2.0, 3.0), tuple(rng.uniform(-50, 50, 3))),
        small_mesh(1),
        _box((5.0, 5.0, 5.0), (100.0, 0.0, 0.0)),
        Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)),
    ]
    m = _join(*parts)
    count, label = mesh_mod.connected_pieces(m)
    ref = trimesh.graph.connected_component_labels(
        trimesh.Trimesh(m.vertices, m.faces, process=False).face_adjacency, node_count=m.n_faces
    )
    assert count == len(parts) == len(np.unique(ref))
    # the same partition of the faces (labels may be numbered otherwise)
    pairs = set(zip(label.tolist(), ref.tolist(), strict=True))
    assert len(pairs) == count
    # every face its own three vertices (a triangle soup, an STL): still the same pieces
    soup = Mesh(m.vertices[m.faces].reshape(-1, 3), np.arange(3 * m.n_faces).reshape(-1, 3))
    count2, label2 = mesh_mod.connected_pieces(soup)
    assert count2 == count and np.array_equal(label2, label)
    # unused vertices are no piece; no faces, no pieces
    extra = Mesh(np.concatenate([m.vertices, [[1e4, 0, 0]]]), m.faces)
    assert mesh_mod.connected_pieces(extra)[0] == count
    assert mesh_mod.connected_pieces(Mesh(m.vertices, np.zeros((0, 3), np.int64)))[0] == 0


def _flip_some(m: Mesh, fraction: float, seed: int) -> tuple[Mesh, np.ndarray]:
    rng = np.random.default_rng(seed)
    turn = np.zeros(m.n_faces, dtype=bool)
    turn[rng.choice(m.n_faces, int(fraction * m.n_faces), replace=False)] = True
    faces = m.faces.copy()
    faces[turn] = faces[turn][:, ::-1]
    return Mesh(m.vertices, faces), turn


def _cyclic(faces: np.ndarray) -> np.ndarray:
    """Each face rotated to start at its smallest index (the winding kept)."""
    k = np.argmin(faces, axis=1)[:, None]
    return np.take_along_axis(faces, (k + np.arange(3)) % 3, axis=1)


def test_welded_numbers_positions_in_first_use_order_like_a_loop() -> None:
    rng = np.random.default_rng(3)
    base = small_mesh(4)
    # each position stored up to three times, in a shuffled order (a seam, a soup)
    vertices = base.vertices[rng.integers(0, base.n_vertices, 3 * base.n_vertices)]
    mesh = Mesh(vertices, base.faces)
    first: dict[tuple[float, ...], int] = {}
    expected = [first.setdefault(tuple(p), len(first)) for p in vertices]
    assert np.array_equal(mesh.welded, expected)
    assert mesh.welded is mesh.welded and not mesh.welded.flags.writeable


def test_weld_vertices_matches_a_loop_over_the_positions() -> None:
    rng = np.random.default_rng(6)
    base = small_mesh(4)
    # a triangle soup with every corner its own vertex, plus unused vertices: a repeated one, a
    # zero of either sign (equal numbers) and two NaN rows (never equal)
    soup = base.vertices[base.faces.ravel()]
    extra = np.array(
        [base.vertices[0], [0.0, 0.0, 0.0], [-0.0, 0.0, 0.0], [np.nan, 1.0, 2.0], [np.nan, 1, 2]]
    )
    vertices = np.concatenate([soup, extra])
    order = rng.permutation(len(vertices))
    inverse = np.argsort(order)
    uvs = rng.uniform(size=(len(vertices), 2))
    mesh = Mesh(vertices[order], inverse[: len(soup)].reshape(-1, 3), uvs=uvs[order])
    # the loop: a position's number is its first occurrence's, rows compared as numbers
    firsts: list[int] = []
    expected = []
    for k, p in enumerate(mesh.vertices):
        same = [j for j, f in enumerate(firsts) if np.array_equal(mesh.vertices[f], p)]
        if not same:
            firsts.append(k)
        expected.append(same[0] if same else len(firsts) - 1)
    assert len(firsts) == base.n_vertices + 3  # two zeros as one, each NaN row its own
    welded, merged = weld_vertices(mesh)
    assert merged == mesh.n_vertices - len(firsts)
    assert np.array_equal(welded.vertices, mesh.vertices[firsts], equal_nan=True)
    assert np.array_equal(welded.uvs, mesh.uvs[firsts])
    assert np.array_equal(welded.faces, np.asarray(expected)[mesh.faces])
    # the welded mesh's own weld, given with it, is what welding it again computes
    again = Mesh(welded.vertices.copy(), welded.faces.copy()).welded
    assert np.array_equal(welded.welded, again) and not welded.welded.flags.writeable
    assert weld_vertices(welded) == (welded, 0)


def test_used_vertices_are_those_a_loop_over_the_faces_meets() -> None:
    rng = np.random.default_rng(5)
    base = small_mesh(5)
    # unused vertices at random places among the used ones
    n = base.n_vertices + 7
    order = rng.permutation(n)
    faces = order[base.faces]
    vertices = rng.normal(size=(n, 3))
    mesh = Mesh(vertices, faces)
    expected = np.zeros(n, dtype=bool)
    for face in faces:
        for k in face:
            expected[k] = True
    assert expected.sum() == base.n_vertices
    assert np.array_equal(mesh.used_vertices, expected)
    assert mesh.used_vertices is mesh.used_vertices and not mesh.used_vertices.flags.writeable
    assert not Mesh(vertices, np.zeros((0, 3), dtype=np.int64)).used_vertices.any()


@pytest.mark.parametrize("pad", [0, 1 << 21])
def test_drop_duplicate_faces_matches_a_brute_force_set(pad: int) -> None:
    """``pad`` unused vertices first: the triangles' corners are numbered from 2^21 on, past
    what one integer per triangle holds, as in a scan of a few million vertices."""
    rng = np.random.default_rng(4)
    base = small_mesh(6)
    if pad:
        unused = rng.normal(size=(pad, 3)) + 100.0
        base = Mesh(np.concatenate([unused, base.vertices]), base.faces + pad)
    # copies in either winding, at random places; one copy through a duplicated vertex
    extra = base.faces[rng.choice(base.n_faces, 40, replace=False)]
    extra[::2] = extra[::2, ::-1]
    vertices = np.concatenate([base.vertices, base.vertices[extra[0, :1]]])
    extra[0, 0] = len(base.vertices)  # the same position under another index
    faces = np.concatenate([base.faces, extra])[rng.permutation(base.n_faces + 40)]
    mesh = Mesh(vertices, faces)
    out, n = mesh_mod.drop_duplicate_faces(mesh)
    seen, keep = set(), []
    for i, f in enumerate(faces):
        key = frozenset(tuple(vertices[v]) for v in f)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    assert n == 40 and np.array_equal(out.faces, faces[keep])
    assert mesh_mod.drop_duplicate_faces(base) == (base, 0)


@pytest.mark.parametrize("bits", [20, 21])
def test_triangles_that_share_packed_bits_are_not_duplicates(bits: int) -> None:
    """Corners numbered past 2^20 and 2^21: (0, 1, 5) and (0, 1, 2^b + 5) are two triangles,
    whose corner numbers OR-ed together at 21 bits apart, or at 20, would read as one."""
    n = (1 << bits) + 6
    vertices = np.zeros((n, 3))
    vertices[:, 0] = np.arange(n)  # every position its own
    vertices[:, 1] = (np.arange(n) % 7) ** 2
    faces = np.array([[0, 1, 5], [0, 1, (1 << bits) + 5], [1, 0, 5]])
    out, dropped = mesh_mod.drop_duplicate_faces(Mesh(vertices, faces))
    assert dropped == 1 and np.array_equal(out.faces, faces[:2])  # the third is the first


def test_drop_stretched_faces_matches_a_loop_over_the_triangles() -> None:
    rng = np.random.default_rng(8)
    base = small_mesh(6)
    vertices = base.vertices.copy()
    spikes = rng.choice(len(vertices), 3, replace=False)
    away = rng.normal(size=(3, 3))
    vertices[spikes] += 1000.0 * away / np.linalg.norm(away, axis=1, keepdims=True)  # still joined
    mesh = Mesh(vertices, base.faces)
    out, n = mesh_mod.drop_stretched_faces(mesh)
    lengths = [
        float(np.linalg.norm(vertices[f[i]] - vertices[f[(i + 1) % 3]]))
        for f in base.faces
        for i in range(3)
    ]
    limit = mesh_mod.STRETCH_FACTOR * float(np.median(lengths))
    keep = [
        f
        for f in base.faces
        if all(np.linalg.norm(vertices[f[i]] - vertices[f[(i + 1) % 3]]) <= limit for i in range(3))
    ]
    assert n == len(base.faces) - len(keep) > 0
    assert np.array_equal(out.faces, np.array(keep)) and out.vertices is vertices
    # every triangle with a spike corner goes, and only those
    assert not np.isin(out.faces, spikes).any()
    assert n == int(np.isin(base.faces, spikes).any(axis=1).sum())
    assert mesh_mod.drop_stretched_faces(base) == (base, 0)


def test_drop_stretched_faces_reads_all_three_edges_and_keeps_the_limit() -> None:
    """On a sheet of unit edges (median 1): a sliver whose one long edge runs from its last
    corner back to its first goes; a triangle whose longest edge is the limit itself stays."""
    grid = height_field_mesh(np.zeros((12, 12)), np.arange(12.0), np.arange(12.0))
    n = grid.n_vertices
    extra = np.array(
        [[0, 0, 5], [30, 0.01, 5], [60, 0, 5], [0, 0, 8], [50, 0, 8], [25, 1, 8]], float
    )
    sliver, limit = [n, n + 1, n + 2], [n + 3, n + 4, n + 5]
    mesh = Mesh(np.vstack([grid.vertices, extra]), np.vstack([grid.faces, [sliver, limit]]))
    assert mesh_mod.STRETCH_FACTOR == 50.0
    out, dropped = mesh_mod.drop_stretched_faces(mesh)
    assert dropped == 1
    np.testing.assert_array_equal(out.faces, np.vstack([grid.faces, [limit]]))


def test_consistent_winding_turns_the_minority_of_each_surface_back() -> None:
    sphere = trimesh.creation.icosphere(3)
    parts = [
        Mesh(np.asarray(sphere.vertices) * 50.0, np.asarray(sphere.faces, np.int64)),
        Mesh(*(lambda h: (h.vertices + (200.0, 0, 0), h.faces))(small_mesh(2))),  # open sheet
        _box((5.0, 5.0, 5.0), (0.0, 300.0, 0.0)),
    ]
    flipped, turned = [], []
    for i, p in enumerate(parts):
        f, t = _flip_some(p, 0.3, seed=i)
        flipped.append(f)
        turned.append(t)
    mixed, truth = _join(*flipped), _join(*parts)
    assert not trimesh.Trimesh(mixed.vertices, mixed.faces, process=False).is_winding_consistent
    fixed, n = mesh_mod.consistent_winding(mixed)
    assert n == sum(int(t.sum()) for t in turned)
    # each face wound back as it was
    np.testing.assert_array_equal(_cyclic(fixed.faces), _cyclic(truth.faces))
    sph = trimesh.Trimesh(fixed.vertices[: parts[0].n_vertices], parts[0].faces, process=False)
    assert sph.is_winding_consistent and sph.volume > 0
    # a triangle soup (every face its own vertices, as a mesh split along seams): the same
    soup = Mesh(
        mixed.vertices[mixed.faces].reshape(-1, 3), np.arange(3 * mixed.n_faces).reshape(-1, 3)
    )
    fixed_soup, n_soup = mesh_mod.consistent_winding(soup)
    assert n_soup == n
    np.testing.assert_allclose(fixed_soup.face_normals, truth.face_normals, atol=1e-12)
    # consistent input, inwards or outwards: the same object back
    assert mesh_mod.consistent_winding(truth) == (truth, 0)
    inward = Mesh(truth.vertices, truth.faces[:, ::-1])
    assert mesh_mod.consistent_winding(inward) == (inward, 0)
    # triangles stored twice and degenerate ones (a vertex repeated) say nothing: left alone
    f = truth.faces
    extra = np.concatenate([f, f[:50], np.stack([f[:, 0], f[:, 0], f[:, 1]], 1)[:50]])
    cluttered = Mesh(truth.vertices, extra)
    assert mesh_mod.consistent_winding(cluttered) == (cluttered, 0)
    # a lone triangle stored twice, whose copies meet only each other, and a "book" of three
    # faces on one edge (not a manifold edge: it joins no two faces) are left alone too
    lone = Mesh(np.eye(3), np.array([[0, 1, 2], [0, 1, 2]]))
    assert mesh_mod.consistent_winding(lone) == (lone, 0)
    pages = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], float)
    book = Mesh(pages, np.array([[0, 1, 2], [0, 1, 3], [0, 1, 4]]))  # each runs 0 -> 1
    assert mesh_mod.consistent_winding(book) == (book, 0)
    # most of a surface turned over: the rest follows it (the sphere then faces inwards)
    most, _ = _flip_some(parts[0], 0.7, seed=9)
    all_in, n_in = mesh_mod.consistent_winding(most)
    assert n_in == round(0.3 * parts[0].n_faces)
    assert trimesh.Trimesh(all_in.vertices, all_in.faces, process=False).volume < 0


def test_consistent_winding_keeps_the_larger_area_and_on_a_tie_the_first_face() -> None:
    """The winding kept is that of the larger part of a surface's area, not of more faces: one
    large triangle turned against three small ones keeps its winding and the three turn; two
    halves of equal area keep the winding of the first face."""
    v = np.array(
        [[0, 0, 0], [10, 0, 0], [0, 10, 0], [5, 5, 0.1], [2.5, 7.6, 0.2], [7.6, 2.5, 0.2]], float
    )
    # consistent: T1 (0, 1, 2) +z; T2 across 1-2, T3 across 2-3, T4 across 3-1
    faces = np.array([[0, 1, 2], [2, 1, 3], [2, 3, 4], [3, 1, 5]])
    whole = Mesh(v, faces)
    assert mesh_mod.consistent_winding(whole) == (whole, 0)
    areas = whole.face_areas
    assert areas[0] > areas[1:].sum() and len(areas[1:]) > 1
    big_turned = faces.copy()
    big_turned[0] = big_turned[0, [0, 2, 1]]
    fixed, n = mesh_mod.consistent_winding(Mesh(v, big_turned))
    assert n == 3
    np.testing.assert_array_equal(fixed.faces[0], big_turned[0])
    np.testing.assert_array_equal(_cyclic(fixed.faces[1:]), _cyclic(faces[1:, [0, 2, 1]]))
    # a square of two equal triangles, the second turned: the first face's winding is kept
    sq = Mesh(
        np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float),
        np.array([[0, 1, 2], [0, 3, 2]]),
    )
    fixed, n = mesh_mod.consistent_winding(sq)
    assert n == 1
    np.testing.assert_array_equal(_cyclic(fixed.faces), _cyclic(np.array([[0, 1, 2], [0, 2, 3]])))


def test_consistent_winding_leaves_a_moebius_strip_alone() -> None:
    n = 24
    u = np.arange(n) * 2 * np.pi / n
    ring = np.stack([np.cos(u), np.sin(u), np.zeros(n)], 1) * 10.0
    half = np.stack([np.cos(u) * np.cos(u / 2), np.sin(u) * np.cos(u / 2), np.sin(u / 2)], 1)
    top, bottom = ring + 2.0 * half, ring - 2.0 * half
    vertices = np.concatenate([top, bottom])  # top i is vertex i, bottom i is n + i
    faces = []
    for i in range(n):
        j = (i + 1) % n
        # after the last segment the strip has turned over: top meets bottom
        tj, bj = (j, n + j) if j else (n + j, j)
        faces += [(i, n + i, bj), (i, bj, tj)]
    strip = Mesh(vertices, np.array(faces))
    assert not trimesh.Trimesh(strip.vertices, strip.faces, process=False).is_winding_consistent
    mixed, _ = _flip_some(strip, 0.3, seed=1)
    assert mesh_mod.consistent_winding(mixed) == (mixed, 0)


def test_main_parts_drop_far_and_larger_pieces() -> None:
    head = _box((200.0, 250.0, 220.0), (0.0, 0.0, 0.0))
    ear = _box((10.0, 60.0, 30.0), (105.0 + 20.0, 0.0, 0.0))  # 15 mm from the head: stays
    speck = _box((1.0, 1.0, 1.0), (1000.0, 0.0, 0.0))  # a metre away: goes
    m = _join(head, ear, speck)
    main, ear_part, speck_part = mesh_mod.main_parts(m)  # the largest piece first
    n = head.n_faces
    assert main[: 2 * n].all() and not main[2 * n :].any()
    assert ear_part[n : 2 * n].all() and not ear_part[:n].any()  # smaller pieces: candidates too
    assert speck_part[2 * n :].all() and speck_part.sum() == n
    assert len(mesh_mod.main_parts(m, most=1)) == 1
    # a table under the head, larger than it, touching it: not part of the head, but a
    # candidate of its own first (the largest piece), with the head next
    table = _box((900.0, 20.0, 900.0), (0.0, -135.0, 0.0))
    m = _join(head, table, speck)
    first, second, _ = mesh_mod.main_parts(m)
    assert first[n : 2 * n].all() and first[:n].all()  # the table, with the smaller head near it
    assert second[:n].all() and not second[n:].any()  # the head alone
    # units do not matter; one piece is the whole mesh
    scaled = Mesh(m.vertices * 1e-3, m.faces)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(mesh_mod.main_parts(scaled), mesh_mod.main_parts(m), strict=True)
    )
    (whole,) = mesh_mod.main_parts(head)
    assert whole.all()


def test_nan_vertex_is_named_with_its_number_and_value(tmp_path: Path) -> None:
    path = tmp_path / "nan.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan 2 3\nf 1 2 3\nf 2 3 4\n")
    with pytest.raises(InputFileError, match=r"1 vertices .* number 3 counting from 0, at nan 2"):
        load_mesh(path)


def test_find_scan_files_ids_clashes_and_what_is_left_out(tmp_path: Path) -> None:
    """Ids are paths without the suffix, with it for two scans of one stem; facehd's own files
    beside scans, files put aside and build-priors' shard folders are no scans."""
    from facehd.errors import InputFileError
    from facehd.mesh import find_scan_files

    names = [
        "a/head.obj", "a/head.ply", "b/x.stl", "sub/deeper/z.off", "top.wrl",  # scans
        "b/x.gt_m1.ply", "b/x.m0.ply", "old.obj.off", "a/notes.txt", "p.h5.shards/s.obj",
        "a/._head.obj", ".hidden/y.ply",  # macOS resource forks, hidden folders
    ]  # fmt: skip
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    found = find_scan_files(tmp_path)
    assert found == [
        ("a/head.obj", tmp_path / "a/head.obj", True),
        ("a/head.ply", tmp_path / "a/head.ply", True),
        ("b/x", tmp_path / "b/x.stl", False),
        ("sub/deeper/z", tmp_path / "sub/deeper/z.off", False),
        ("top", tmp_path / "top.wrl", False),
    ]
    with pytest.raises(InputFileError, match="no scan found"):
        find_scan_files((tmp_path / "empty").mkdir() or tmp_path / "empty")
    with pytest.raises(InputFileError, match="does not exist"):
        find_scan_files(tmp_path / "missing")
    with pytest.raises(InputFileError, match="is a file: give the folder of scans"):
        find_scan_files(tmp_path / "top.wrl")


def test_links_to_nothing_and_compressed_scans_are_listed_and_fail_naming_why(
    tmp_path: Path,
) -> None:
    """A scan that cannot be read is not passed over in silence: a link whose target is gone
    (a dataset of links into a store not mounted) and a compressed scan are listed, and reading
    them says what is wrong; a folder named like a scan is searched, not listed."""
    import gzip

    from facehd.mesh import find_scan_files, is_compressed_scan_file

    save_mesh(tmp_path / "good.obj", small_mesh())
    (tmp_path / "gone.obj").symlink_to(tmp_path / "elsewhere" / "s001.obj")
    (tmp_path / "head.obj.gz").write_bytes(gzip.compress((tmp_path / "good.obj").read_bytes()))
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"not a scan"))
    (tmp_path / "folder.obj").mkdir()
    save_mesh(tmp_path / "folder.obj" / "inner.ply", small_mesh())
    # a compressed copy beside its scan is no scan of its own, and changes no other scan's id
    save_mesh(tmp_path / "kept.ply", small_mesh())
    (tmp_path / "kept.ply.bz2").write_bytes(b"BZh9")
    (tmp_path / "good.ply.zip").write_bytes(b"PK")
    found = find_scan_files(tmp_path)
    assert [(sid, p.name, clash) for sid, p, clash in found] == [
        ("folder.obj/inner", "inner.ply", False),
        ("gone", "gone.obj", False),
        ("good", "good.obj", False),
        ("good.ply.zip", "good.ply.zip", False),
        ("head.obj.gz", "head.obj.gz", False),
        ("kept", "kept.ply", False),
    ]
    assert is_compressed_scan_file(Path("s.PLY.zip")) and not is_compressed_scan_file(
        Path("s.m0.ply.gz")
    )
    with pytest.raises(InputFileError, match=r"a link to .*s001\.obj, which does not exist"):
        load_mesh(tmp_path / "gone.obj")
    with pytest.raises(InputFileError, match=r"compressed \(\.gz\): decompress it first"):
        load_mesh(tmp_path / "head.obj.gz")


def test_scans_in_formats_not_read_are_listed_and_fail_asking_for_a_conversion(
    tmp_path: Path,
) -> None:
    """A .glb (or .fbx ...) scan is listed, and reading it asks for a conversion, where it was
    passed over in silence; beside a scan of its stem that is read it is an export, left out; a
    folder of them alone says so."""
    from facehd.mesh import find_scan_files, is_other_mesh_file

    save_mesh(tmp_path / "good.obj", small_mesh())
    (tmp_path / "good.glb").write_bytes(b"glTF")  # an export of good.obj
    (tmp_path / "head.glb").write_bytes(b"glTF")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "face.FBX").write_bytes(b"Kaydara")
    found = find_scan_files(tmp_path)
    assert [(sid, p.name) for sid, p, _ in found] == [
        ("good", "good.obj"),
        ("head.glb", "head.glb"),
        ("sub/face.FBX", "face.FBX"),
    ]
    assert is_other_mesh_file(Path("x.GLTF")) and not is_other_mesh_file(Path("x.ply"))
    with pytest.raises(
        InputFileError, match=r"head\.glb: unsupported mesh format '\.glb'.*convert"
    ):
        load_mesh(tmp_path / "head.glb")
    with pytest.raises(InputFileError, match=r"\.fbx files are in a format facehd does not read"):
        find_scan_files(tmp_path / "sub")


def test_open_edges_against_trimesh() -> None:
    """Edges used by one face only: a height field's outer rim, and a hole cut in it."""
    import trimesh

    from facehd.mesh import open_edges

    m = small_mesh()
    faces = np.delete(m.faces, [20, 21, 22], axis=0)  # a hole inside the grid
    got = open_edges(faces)
    assert got.shape == faces.shape
    edges = trimesh.Trimesh(m.vertices, faces, process=False).edges_sorted  # (3F, 2), face-major
    expected = trimesh.grouping.group_rows(edges, require_count=1)
    want = np.zeros(len(edges), dtype=bool)
    want[expected] = True
    np.testing.assert_array_equal(got.reshape(-1), want)
    rim = 2 * (6 - 1) + 2 * (7 - 1)  # the grid's border edges
    assert rim < got.sum() <= rim + 9

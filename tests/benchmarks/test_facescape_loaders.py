"""FaceScape's per-method loaders: each method's native files, written here by inverting the
official loader's documented transform by hand, must land where the generic loader puts the
image-aligned original (wild and lab); the pickled-``.npy`` reader refuses foreign classes; a
missing or malformed file is named."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import types
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from benchmarks.facescape import place_image_prediction
from benchmarks.facescape_loaders import LOADERS, get_loader, read_npy
from facehd.errors import InputFileError
from facehd.mesh import Mesh, load_mesh, save_mesh

NAME = "000"


@pytest.fixture(scope="module")
def generic(synth_roots: dict) -> Mesh:
    """A prediction in the image-aligned format (pixels of the 256-px image, y up), placed by
    the synthetic benchmark over its ground truth."""
    return load_mesh(
        Path(synth_roots["facescape"]) / "pred" / "wild_pred" / "synth-fit" / "000.obj"
    )


def _ortho(px: np.ndarray) -> np.ndarray:
    """The normalised orthographic frame of image-aligned pixels (image spans [-1, 1])."""
    return px / 128.0 - np.array([1.0, 1.0, 0.0])


def _centred_z(o: np.ndarray) -> np.ndarray:
    return o[:, 2] - o[:, 2].mean()


def _flipped(faces: np.ndarray) -> np.ndarray:
    return faces[:, [1, 0, 2]]


class SimilarityTransform:
    """A stand-in for scikit-image's class, pickled under its module name."""

    def __init__(self, params: np.ndarray) -> None:
        self.params = params


def _save_tform(path: Path, params: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """``np.save`` of a scikit-image SimilarityTransform, as DECA and facescape_deep write it."""
    module = types.ModuleType("skimage.transform._geometric")
    SimilarityTransform.__module__ = module.__name__
    module.SimilarityTransform = SimilarityTransform  # type: ignore[attr-defined]
    with monkeypatch.context() as m:
        for parent in ("skimage", "skimage.transform"):  # pickle imports the module
            m.setitem(sys.modules, parent, types.ModuleType(parent))
        m.setitem(sys.modules, module.__name__, module)
        np.save(path, np.array(SimilarityTransform(params), dtype=object), allow_pickle=True)


def _similarity(scale: float, angle: float, t: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, t[0]], [s, c, t[1]], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------
# writers: the generic mesh P (image-aligned pixels) in each method's native files, by the
# inverse of the official loader's steps


def write_image_aligned(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    """PRNet, 3DDFA_V2: the image-aligned format itself."""
    save_mesh(d / f"{name}.obj", p)


def write_facescape_opti(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: (xy - 128) / 128, z / 128  ->  file = o * 128 + (128, 128, 0)
    o = _ortho(p.vertices)
    save_mesh(d / f"{name}.obj", Mesh(o * 128.0 + [128.0, 128.0, 0.0], p.faces))


def write_rafare(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: none (the file is in the normalised orthographic frame)
    save_mesh(d / f"{name}.obj", Mesh(_ortho(p.vertices), p.faces))


def write_sadrnet(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: xy - 1, y negated, winding flipped  ->  file x = o_x + 1, y = 1 - o_y
    o = _ortho(p.vertices)
    v = np.stack([o[:, 0] + 1.0, 1.0 - o[:, 1], o[:, 2]], axis=1)
    save_mesh(d / f"{name}.obj", Mesh(v, _flipped(p.faces)))


def write_df2net(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: v / 512, (x, y) -> (y, -x), y + 1, x * w + x_r, y * h, z * (h + w) / 2, then / 128
    # and xy - 1 (so the pixels P)
    h, w, x_r = 300.0, 400.0, 37.5
    px = p.vertices
    b = np.stack([(px[:, 0] - x_r) / w, px[:, 1] / h - 1.0, px[:, 2] * 2.0 / (h + w)], axis=1)
    a = np.stack([-b[:, 1], b[:, 0], b[:, 2]], axis=1)
    save_mesh(d / f"{name}.obj", Mesh(a * 512.0, _flipped(p.faces)))
    coors = {name: [[h, w, 3], x_r, 12.0], "001": [[1, 1, 3], 0, 0]}
    (d / "DF2Net_coors.json").write_text(json.dumps(coors))


def write_deep3dfacerec(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: v * c / |mean z - 10| (c = 1015 / 112), xy + 1, * 112, x + left, y - up, / scale,
    # y = 255 - (round(224 / scale) - 1 - y), then / 128 and xy - 1 (so the pixels P)
    # sizes whose scaled values are not whole: the official int32 casts then move the crop
    w0, h0, scale, t0, t1 = 301, 283, 0.9, 151.3, 142.7
    w, h = int(w0 * scale), int(h0 * scale)  # int(270.9) = 270, int(254.7) = 254
    left = int(w / 2 - 112 + (t0 - w0 / 2) * scale)  # int(23.72) = 23 (24 with w = 270.9)
    up = int(h / 2 - 112 + (h0 / 2 - t1) * scale)  # int(13.92) = 13 (14 with h = 254.7)
    assert (left, up, round(224 / scale)) == (23, 13, 249)
    u = p.vertices.copy()
    u[:, 1] = u[:, 1] - 256 + 249
    u *= scale
    u[:, 0] -= left
    u[:, 1] += up
    q = u / 112.0
    q[:, :2] -= 1.0
    # q = k n with k = c / (10 - m), m = mean(n_z)  =>  m = 10 Q / (c + Q), Q = mean(q_z)
    c = 1015.0 / 112.0
    big_q = q[:, 2].mean()
    m = 10.0 * big_q / (c + big_q)
    assert m < 10
    save_mesh(d / f"{name}.obj", Mesh(q * (10.0 - m) / c, p.faces))
    (d / "Deep3D_cons_dict.json").write_text(json.dumps({name: [w0, h0, scale, [t0], [t1]]}))


def write_dfdn(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: w = s R n; y negated; xy + t; xy - 128; / 128; y negated  =>  P_x = w_x + t_x,
    # P_y = w_y - t_y + 256, P_z = w_z
    rot = Rotation.from_rotvec([0.1, -0.25, 0.05]).as_matrix()
    s, t = 1.7, np.array([20.5, -13.25])
    px = p.vertices
    w = np.stack([px[:, 0] - t[0], px[:, 1] + t[1] - 256.0, px[:, 2]], axis=1)
    save_mesh(d / f"{name}.obj", Mesh(w @ rot / s, p.faces))
    affine = np.concatenate([s * rot, np.append(t, 0.0)[:, None]], axis=1)
    np.savetxt(d / f"{name}.affine_from_ortho.txt", affine)
    view = np.eye(4)
    view[:3, :3] = rot
    view[:3, 3] = [0.0, 0.0, -5.0]
    np.savetxt(d / f"{name}.modelview.txt", view)


def write_udl(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: w = g Rx(-pitch) Ry(-yaw) Rz(-roll) n + (tx, ty, -200), g = 1.5 exp(sth); times
    # sc = (en_x - st_x) / 300; x + cx - 128, y - (cy - 128); / 128 (no shift)  =>  P_x =
    # sc w_x + cx, P_y = sc w_y + 256 - cy, P_z = sc w_z
    pitch, yaw, roll, tx, ty, sth = 0.1, -0.2, 0.05, 3.0, -4.0, 0.3
    st_x, en_x, st_y, en_y = 40.0, 250.0, 30.0, 240.0
    sc, cx, cy = (en_x - st_x) / 300.0, (st_x + en_x) / 2, (st_y + en_y) / 2
    rot = Rotation.from_euler("XYZ", [-pitch, -yaw, -roll]).as_matrix()
    g = 1.5 * np.exp(sth)
    px = p.vertices
    w = np.stack([(px[:, 0] - cx) / sc, (px[:, 1] + cy - 256.0) / sc, px[:, 2] / sc], axis=1)
    n = (w - [tx, ty, -200.0]) @ rot / g
    save_mesh(d / f"{name}_fine.ply", Mesh(n, p.faces))
    np.save(d / f"{name}_pose.npy", np.array([[pitch, yaw, roll, tx, ty, sth]]))
    np.save(d / f"{name}_crop.npy", np.array([st_x, en_x, st_y, en_y, 0.0, 0.0]))


def write_facescape_deep(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # the file: the warped image's pixels (v / 128 - 1 = w); the photo's y-down pixels b =
    # M_inv a of the warped ones a = (w_x + 1, 1 - w_y) * 128; z = w_z * |M_inv row 0|
    params = _similarity(1.2, 0.1, (-30.0, 12.0))
    scale = 1.0 / 1.2
    px = p.vertices
    b = np.stack([px[:, 0], 256.0 - px[:, 1], np.ones(len(px))], axis=1)
    a = (b @ params.T)[:, :2] / 128.0
    w = np.stack([a[:, 0] - 1.0, 1.0 - a[:, 1], px[:, 2] / 128.0 / scale], axis=1)
    save_mesh(d / f"{name}.obj", Mesh((w + 1.0) * 128.0, p.faces))
    _save_tform(d / f"{name}_tform.npy", params, mp)


def write_deca(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # the file: DECA's crop frame before its camera, w = s (n + (tx, ty, 0)), the 224-px crop
    # at (w_x + 1, 1 - w_y) * 112 (y down); the photo's pixels = M_inv of those; z scaled by
    # 224 / 256 and |M_inv row 0|
    s, tx, ty = 8.5, 0.02, -0.05
    params = _similarity(0.9, -0.05, (-20.0, -10.0))
    scale = 1.0 / 0.9
    px = p.vertices
    b = np.stack([px[:, 0], 256.0 - px[:, 1], np.ones(len(px))], axis=1)
    a = (b @ params.T)[:, :2] / 112.0
    w = np.stack([a[:, 0] - 1.0, 1.0 - a[:, 1], px[:, 2] / 112.0 / scale], axis=1)
    save_mesh(d / f"{name}_detail.obj", Mesh(w / s - [tx, ty, 0.0], p.faces))
    np.save(d / f"{name}_cam.npy", np.array([[s, tx, ty]]))
    _save_tform(d / f"{name}_tform.npy", params, mp)


def _weak_perspective(o: np.ndarray, focal_px: float, depth: float) -> np.ndarray:
    """An OpenCV-camera mesh (y down, depth +z) at mean depth ``depth`` whose weak-perspective
    image at focal length ``focal_px`` (in 256-px image pixels) is the orthographic ``o``."""
    k = 128.0 * depth / focal_px
    return np.stack([k * o[:, 0], -k * o[:, 1], -k * _centred_z(o) + depth], axis=1)


def write_extreme3dface(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # OpenGL camera (y up, looking down -z), 500 px: v1 = weak perspective of P at depth 700;
    # the loader's crop step: v * (nw + nh) / 1000, x + bl + c, y - (bt + c), c = (nw+nh)/4-127.5
    bl, bt, nw, nh = 30.0, 40.0, 180.0, 200.0
    v1 = _weak_perspective(_ortho(p.vertices), 500.0, 700.0) * [1.0, -1.0, -1.0]
    comp = (nw + nh) / 4 - 127.5
    n = (v1 - [bl + comp, -(bt + comp), 0.0]) / ((nw + nh) / 1000.0)
    save_mesh(d / f"{name}_withBump_aligned.ply", Mesh(n, p.faces))
    (d / "extreme3d_dict.json").write_text(json.dumps({name: [bl, bt, nw, nh]}))


def write_mgcnet(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # the loader, from v1 = R n + t (R = Rx(a2) Ry(a1) Rz(a0) of the file's angles a), depth
    # Z1 = mean(v1_z): xy + 114 Z1 / f, xy = M xy + m Z1 / f, xy - 114 Z1 / f, xy / s,
    # z - Z1 (1 - 1 / s), xy - 16 Z2 / f (Z2 = Z1 / s); v2 = weak perspective of P at Z2
    f, angles, trans = 1015.0, np.array([0.1, -0.2, 0.3]), np.array([0.5, -0.3, 6.0])
    minv = np.array(
        [
            [1.3 * np.cos(0.2), -1.3 * np.sin(0.2), 20.0],
            [1.3 * np.sin(0.2), 1.3 * np.cos(0.2), -15.0],
        ]
    )
    s = 1.3
    z2 = 9.0
    v2 = _weak_perspective(_ortho(p.vertices), f, z2)
    z1 = s * z2
    v1 = v2.copy()
    v1[:, 2] = v2[:, 2] + z1 * (1.0 - 1.0 / s)
    xy = (v2[:, :2] + 16.0 / f * z2) * s + 114.0 / f * z1
    xy = np.linalg.solve(minv[:, :2], (xy - minv[:, 2] / f * z1).T).T
    v1[:, :2] = xy - 114.0 / f * z1
    rot = Rotation.from_euler("XYZ", angles[::-1]).as_matrix()
    save_mesh(d / f"{name}.ply", Mesh((v1 - trans) @ rot, p.faces))
    np.save(d / f"{name}_Minv.npy", minv)
    k = [f, 0, 112, 0, f, 112, 0, 0, 1]
    lines = ["# MGCNet camera", "intrinsics:", ",".join(map(str, k)), "extrinsics:"]
    lines.append(",".join(map(str, [*angles, *trans])))
    (d / f"{name}_cam.txt").write_text("\n".join(lines) + "\n")


def write_ringnet(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # loader: v + (cx, cy, 256 / 224), then weak perspective with focal f_norm * 128
    f_norm, cx, cy = 4.5, 0.03, -0.02
    v1 = _weak_perspective(_ortho(p.vertices), f_norm * 128.0, 256 / 224 + 0.4)
    save_mesh(d / f"{name}.obj", Mesh(v1 - [cx, cy, 256 / 224], p.faces))
    np.save(d / f"{name}.npy", {"cam": np.array([f_norm, cx, cy]), "pose": np.zeros(3)})


def write_lap(d: Path, p: Mesh, mp: pytest.MonkeyPatch, name: str = NAME) -> None:
    # the loader, from n: rotated by R about (0, 0, 1), + (-(0, 0, 1) - T) 100, x negated
    # (winding flipped), z - mean(z) (1 - 1 / cs), x + A Z, y - A Z (A = 64 (2 - 2 cs) / 2f,
    # Z the mean depth), x + (d + c1 - 128) |Z| / 2f, y - (d + c0 - 128) |Z| / 2f, d =
    # floor((1 - cs) 128): v3, at mean depth Z < 0 (OpenGL), the weak perspective of P (focal
    # 2f, mirrored through the camera: -k o + (0, 0, Z), k = Z / (2f / 128))
    f, cs, c0, c1 = 150.0, 0.8, 120.0, 135.0
    rot = Rotation.from_rotvec([0.05, 0.1, -0.02]).as_matrix()
    t = np.array([0.02, -0.01, -0.9])
    big_z = -3.0
    o = _ortho(p.vertices)
    k = big_z / (2.0 * f / 128.0)
    v3 = np.stack([-k * o[:, 0], -k * o[:, 1], -k * _centred_z(o) + big_z], axis=1)
    a_ = 64 * (2 - 2 * cs) / (2 * f)
    delta = 25.0  # floor(0.2 * 256 / 2)
    b0, b1 = (delta + c0 - 128) / (2 * f), (delta + c1 - 128) / (2 * f)
    e = v3.copy()
    e[:, 0] -= a_ * big_z + b1 * abs(big_z)
    e[:, 1] += a_ * big_z + b0 * abs(big_z)
    e[:, 2] += big_z * (cs - 1.0)
    c = e * [-1.0, 1.0, 1.0]
    b = c - [0.0, 0.0, 1.0] - (np.array([0.0, 0.0, -1.0]) - t) * 100.0
    n = b @ rot + [0.0, 0.0, 1.0]
    save_mesh(d / f"{name}.obj", Mesh(n, _flipped(p.faces)))
    kmat = [[f, 0, 64], [0, f, 64], [0, 0, 1]]
    rt = np.concatenate([rot, t[:, None]], axis=1).tolist()
    (d / f"{name}_cam.json").write_text(json.dumps([kmat, rt, [c0, c1, cs]]))


WRITERS: dict[str, Callable[..., None]] = {
    "generic": write_image_aligned,
    "facescape_opti": write_facescape_opti,
    "facescape_deep": write_facescape_deep,
    "3DDFA_V2": write_image_aligned,
    "DECA": write_deca,
    "extreme3dface": write_extreme3dface,
    "MGCNet": write_mgcnet,
    "PRNet": write_image_aligned,
    "RingNet": write_ringnet,
    "SADRNet": write_sadrnet,
    "UDL": write_udl,
    "DF2Net": write_df2net,
    "Deep3DFaceRec": write_deep3dfacerec,
    "DFDN": write_dfdn,
    "LAP": write_lap,
    "RAFaRe": write_rafare,
}


def test_every_official_loader_has_a_writer() -> None:
    assert set(WRITERS) == set(LOADERS)
    assert list(LOADERS)[0] == "generic"


@pytest.mark.parametrize("focal", [None, 1200.0, 300.0], ids=["wild", "f1200", "f300"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_native_files_are_placed_where_the_generic_loader_places_the_original(
    name: str, focal: float | None, generic: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    WRITERS[name](tmp_path, generic, monkeypatch)
    loader = get_loader(name)
    assert loader.mesh_path(tmp_path, NAME) is not None
    assert all((tmp_path / f.format(name=NAME)).is_file() for f in loader.extra)
    placed = loader.load(tmp_path, NAME, focal)
    want = place_image_prediction(generic.vertices, focal)
    assert placed.vertices.dtype == np.float64
    np.testing.assert_allclose(placed.vertices, want, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(placed.faces, generic.faces)  # flips undone


def test_a_loader_of_another_format_does_not_place_it_there(generic: Mesh, tmp_path: Path) -> None:
    """The check above can fail: image-aligned files read by SADRNet's loader land elsewhere,
    with the winding flipped."""
    write_image_aligned(tmp_path, generic, pytest.MonkeyPatch())
    placed = get_loader("SADRNet").load(tmp_path, NAME, None)
    assert not np.allclose(placed.vertices, place_image_prediction(generic.vertices), atol=1e-3)
    np.testing.assert_array_equal(placed.faces, _flipped(generic.faces))


def test_perspective_loader_on_a_point_pair(tmp_path: Path) -> None:
    """RingNet's wild placement worked by hand for three points at z = 2 with cam (f_norm 3,
    cx 0, cy 0): + (0, 0, 256/224), times 3 / mean z, y and z negated, z to mean -2."""
    d = tmp_path
    save_mesh(
        d / f"{NAME}.obj",
        Mesh(np.array([[0.0, 0.0, 2.0], [0.2, 0.1, 2.0], [0.0, 0.1, 2.0]]), [[0, 1, 2]]),
    )
    np.save(d / f"{NAME}.npy", {"cam": [3.0, 0.0, 0.0]})
    got = get_loader("RingNet").load(d, NAME, None).vertices
    z = 2.0 + 256 / 224
    want = np.array([[0.0, 0.0, -2.0], [0.6 / z, -0.3 / z, -2.0], [0.0, -0.3 / z, -2.0]])
    np.testing.assert_allclose(got, want, atol=1e-12)


# ------------------------------------------------------------------------------------------
# the .npy reader


class _Danger:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize(
    "obj, said",
    [
        (_Danger(), r"refusing to unpickle (posix|nt)\.system"),
        (OrderedDict(cam=[1.0, 2.0, 3.0]), r"refusing to unpickle collections\.OrderedDict"),
        ({"cam": Path("x")}, r"refusing to unpickle pathlib\."),
    ],
)
def test_the_npy_reader_refuses_foreign_classes(obj: object, said: str, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array(obj, dtype=object) if not isinstance(obj, dict) else obj)
    with pytest.raises(InputFileError, match=rf"x\.npy: unreadable \.npy file \({said}"):
        read_npy(path)


def test_the_npy_reader_reads_arrays_dicts_and_transforms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "a.npy", np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy"), np.arange(6.0).reshape(2, 3))
    np.save(tmp_path / "d.npy", {"cam": np.array([1.0, 2.0, 3.0]), "n": np.float32(2)})
    d = read_npy(tmp_path / "d.npy").item()
    np.testing.assert_array_equal(d["cam"], [1.0, 2.0, 3.0])
    assert d["n"] == 2 and isinstance(d["n"], np.float32)
    params = _similarity(2.0, 0.3, (1.0, 2.0))
    _save_tform(tmp_path / "t.npy", params, monkeypatch)
    np.testing.assert_array_equal(read_npy(tmp_path / "t.npy").item().params, params)


# ------------------------------------------------------------------------------------------
# errors


def test_a_missing_or_malformed_file_is_named(
    generic: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_deca(tmp_path, generic, monkeypatch)
    (tmp_path / f"{NAME}_tform.npy").unlink()
    deca = get_loader("DECA")
    with pytest.raises(InputFileError, match=rf"{NAME}_tform\.npy: file does not exist"):
        deca.load(tmp_path, NAME, None)
    np.save(tmp_path / f"{NAME}_tform.npy", np.eye(3))  # params, not the pickled transform
    with pytest.raises(InputFileError, match=r"_tform\.npy: expected a pickled scikit-image"):
        deca.load(tmp_path, NAME, None)
    np.save(tmp_path / f"{NAME}_cam.npy", np.array([1.0, 2.0]))
    with pytest.raises(InputFileError, match=r"_cam\.npy: expected the camera \[\[s, tx, ty\]\]"):
        deca.load(tmp_path, NAME, None)
    write_df2net(tmp_path, generic, monkeypatch)
    with pytest.raises(InputFileError, match=r"DF2Net_coors\.json: has no entry for image '002'"):
        save_mesh(tmp_path / "002.obj", generic)
        get_loader("DF2Net").load(tmp_path, "002", None)
    (tmp_path / f"{NAME}_cam.txt").write_text("1\n2\n3,4\n")
    save_mesh(tmp_path / f"{NAME}.ply", generic)
    np.save(tmp_path / f"{NAME}_Minv.npy", np.eye(3)[:2])
    with pytest.raises(InputFileError, match=r"_cam\.txt: expected 5 lines or more, found 3"):
        get_loader("MGCNet").load(tmp_path, NAME, None)
    with pytest.raises(InputFileError, match=r"\.modelview\.txt: file does not exist"):
        np.savetxt(tmp_path / f"{NAME}.affine_from_ortho.txt", np.eye(3, 4))
        get_loader("DFDN").load(tmp_path, NAME, None)


def test_an_unknown_loader_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown FaceScape loader 'deca'; known: generic, .*DECA"
    ):
        get_loader("deca")


# ------------------------------------------------------------------------------------------
# facehd bench --loader


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


@pytest.mark.parametrize(
    "split, loader", [("wild", "DECA"), ("lab", "MGCNet")], ids=["wild-DECA", "lab-MGCNet"]
)
def test_bench_scores_native_files_as_the_generic_run_scores_the_originals(
    split: str, loader: str, synth_roots: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.runner import run_benchmark

    root = Path(synth_roots["facescape"])
    original = root / "pred" / f"{split}_pred" / "synth-fit"
    native = tmp_path / "native"
    native.mkdir()
    names = sorted(p.stem for p in original.glob("*.obj"))
    for name in names:
        WRITERS[loader](native, load_mesh(original / f"{name}.obj"), monkeypatch, name)
    out = tmp_path / "out"
    ref = run_benchmark(f"facescape:{split}", "orig", predictions=original, root=root, out=out)
    kw = dict(root=root, out=out, loader=loader)
    res = run_benchmark(f"facescape:{split}", "native", predictions=native, **kw)
    want, got = _rows(ref.items_csv), _rows(res.items_csv)
    assert res.n_ok == len(names) and set(got) == set(want)
    for name in names:
        assert got[name]["status"] == "ok" and got[name]["warning"] == ""
        for key in ("cd_mm", "mne_rad", "cr"):
            assert float(got[name][key]) == pytest.approx(float(want[name][key]), abs=1e-6)
    # the loader is recorded, and hashed: the two runs do not pose as one configuration
    config = json.loads((res.out_dir / "config.json").read_text())
    assert config["loader"] == loader
    assert json.loads((ref.out_dir / "config.json").read_text())["loader"] == "generic"
    assert res.leaderboard_row.config_hash != ref.leaderboard_row.config_hash
    again = run_benchmark(
        f"facescape:{split}", "orig", predictions=original, root=root, out=out, loader="PRNet"
    )
    assert again.leaderboard_row.config_hash not in (
        ref.leaderboard_row.config_hash,
        res.leaderboard_row.config_hash,
    )
    # the loader's own mesh missing: missing, naming it; another of its files: an error
    first, second = names[0], names[1]
    main = get_loader(loader).mesh_path(native, first)
    assert main is not None
    main.unlink()
    extra = native / get_loader(loader).extra[0].format(name=second)
    extra.unlink()
    res = run_benchmark(f"facescape:{split}", "native", predictions=native, **kw)
    got = _rows(res.items_csv)
    assert got[first]["status"] == "missing"
    assert got[first]["error"] == f"no predicted mesh (looked for {main})"
    assert got[second]["status"] == "error"
    assert got[second]["error"] == f"{extra}: file does not exist"


def test_cli_bench_loader_refusals(synth_roots: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facehd.cli import app

    root = Path(synth_roots["facescape"])
    preds = root / "pred" / "wild_pred" / "synth-fit"
    runner = CliRunner()
    base = ["bench", "--method", "x", "--root", str(root), "--out", str(tmp_path / "out")]
    cases = [
        (["--dataset", "now", "--predictions", str(preds), "--loader", "PRNet"], "now has no"),
        (["--dataset", "facescape:wild", "--loader", "PRNet"], "reads a method's own files"),
        (
            ["--dataset", "facescape:lab", "--predictions", str(preds), "--loader", "prnet"],
            "unknown FaceScape loader 'prnet'; known: generic, facescape_opti, facescape_deep, "
            "3DDFA_V2, DECA, extreme3dface, MGCNet, PRNet, RingNet, SADRNet, UDL, DF2Net, "
            "Deep3DFaceRec, DFDN, LAP, RAFaRe",
        ),
    ]
    for args, said in cases:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and said in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_a_prediction_covering_none_of_the_ground_truth_is_scored_with_a_warning(
    synth_roots: dict, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from facehd.cli import app

    root = Path(synth_roots["facescape"])
    preds = tmp_path / "preds"
    shutil.copytree(root / "pred" / "wild_pred" / "synth-fit", preds)
    off = load_mesh(preds / "200.obj")
    save_mesh(preds / "200.obj", Mesh(off.vertices + [0.0, 5000.0, 0.0], off.faces))  # far above
    args = ["bench", "--dataset", "facescape:wild", "--method", "m", "--root", str(root)]
    args += ["--predictions", str(preds), "--out", str(tmp_path / "out"), "--loader", "PRNet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "4 scored" in text and "warning: 1 scored with a warning" in text
    rows = _rows(tmp_path / "out" / "facescape-wild" / "m" / "items.csv")
    assert rows["200"]["status"] == "ok" and float(rows["200"]["cr"]) == 0.0
    assert rows["200"]["cd_mm"] == "" and rows["200"]["mne_rad"] == ""
    assert rows["200"]["warning"] == (
        "the prediction covers none of the ground truth (CR 0): is it in the image-aligned "
        "format of the loader used (--loader PRNet)?"
    )
    assert all(rows[n]["warning"] == "" and float(rows[n]["cr"]) > 0.5 for n in ("000", "100"))


def test_the_completeness_warning_threshold() -> None:
    from benchmarks.runner import _facescape_warning

    assert _facescape_warning(0.5, "generic") == ""
    assert _facescape_warning(float("nan"), "generic") == ""
    said = _facescape_warning(0.3, "DECA")
    assert said.startswith("the prediction covers 30% of the ground truth (CR 0.300 < 0.5)")
    assert said.endswith("(--loader DECA)?")

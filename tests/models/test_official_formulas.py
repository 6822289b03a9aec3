"""facehd's coarse face against Deep3DFaceRecon's formulas, written here in numpy from its
``models/bfm.py`` (``ParametricFaceModel``): coefficient split, shape, rotation (``Rz Ry Rx``, the
official code multiplies row vectors by its transpose), camera at 10 units, focal 1015 and centre
112 with ``y`` up (facehd's rows are ``223 - y``), albedo / 255 and SH lighting with 0.8 added to
each channel's first band, on normals made from ``point_buf`` as the official code makes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from facehd.mesh import vertex_normals
from facehd.morphable import facehd_synth, load_model
from facehd.morphable.synth import GRID, grid_faces
from facehd.render import shade_sh
from models.analyzer import CoefficientLayout
from models.system import FaceSystem
from models.train import paper_train_config

K = (80, 64, 80)


def _write_bfm(tmp: Path) -> dict[str, np.ndarray]:
    synth = facehd_synth()
    keep = np.arange(0, GRID, 4)
    rows, cols = np.meshgrid(keep, keep, indexing="ij")
    idx = (rows * GRID + cols).ravel()
    v = len(idx)
    faces = grid_faces(len(keep))
    point_buf = np.full((v, 8), len(faces) + 1)  # 1-based; F + 1 pads
    fill = np.zeros(v, dtype=int)
    for f, tri in enumerate(faces):
        for i in tri:
            point_buf[i, fill[i]] = f + 1
            fill[i] += 1
    lm = synth.mean_shape[synth.landmarks68]
    keypoints = np.argmin(np.linalg.norm(synth.mean_shape[idx][None] - lm[:, None], axis=2), 1)
    rng = np.random.default_rng(4)
    smooth = np.stack([np.ones(v), *(synth.mean_shape[idx] / 100.0).T], 1)  # (V, 4)

    def basis(k: int, scale: float) -> np.ndarray:
        return np.einsum("vf,fck->vck", smooth, rng.normal(size=(4, 3, k)) * scale).reshape(-1, k)

    fields = {
        "meanshape": (synth.mean_shape[idx] / 100.0 + [0.0, 0.1, 0.4]).reshape(1, 3 * v),
        "idBase": basis(K[0], 2e-3),
        "exBase": basis(K[1], 2e-3),
        "meantex": rng.uniform(90, 180, size=(1, 3 * v)),
        "texBase": basis(K[2], 0.3),
        "tri": faces + 1,
        "point_buf": point_buf,
        "keypoints": (keypoints + 1).reshape(68, 1).astype(np.float64),
    }
    scipy.io.savemat(str(tmp / "BFM_model_front.mat"), fields)
    np.save(tmp / "uv.npy", synth.uvs[idx])
    return fields


def _official(m: dict[str, np.ndarray], coeffs: np.ndarray) -> dict[str, np.ndarray]:
    b = coeffs.shape[0]
    mean = m["meanshape"].reshape(-1, 3)
    mean = (mean - mean.mean(0)).reshape(1, -1)
    shape = (coeffs[:, :80] @ m["idBase"].T + coeffs[:, 80:144] @ m["exBase"].T + mean).reshape(
        b, -1, 3
    )
    rot = []
    for x, y, z in coeffs[:, 224:227]:
        rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
        rot.append((rz @ ry @ rx).T)
    rot = np.stack(rot)
    posed = shape @ rot + coeffs[:, None, 254:]
    cam = posed.copy()
    cam[..., 2] = 10.0 - cam[..., 2]
    proj = cam @ np.array([[1015.0, 0, 112], [0, 1015, 112], [0, 0, 1]]).T
    lm = (proj[..., :2] / proj[..., 2:])[:, m["keypoints"].ravel().astype(int) - 1]
    tex = ((coeffs[:, 144:224] @ m["texBase"].T + m["meantex"]) / 255.0).reshape(b, -1, 3)
    tri = m["tri"] - 1
    v1, v2, v3 = shape[:, tri[:, 0]], shape[:, tri[:, 1]], shape[:, tri[:, 2]]
    fn = np.cross(v1 - v2, v2 - v3)
    fn = np.concatenate([fn / np.linalg.norm(fn, axis=-1, keepdims=True), np.zeros((b, 1, 3))], 1)
    vn = fn[:, m["point_buf"] - 1].sum(2)
    n = (vn / np.linalg.norm(vn, axis=-1, keepdims=True)) @ rot
    a = (np.pi, 2 * np.pi / np.sqrt(3.0), 2 * np.pi / np.sqrt(8.0))
    c = (
        1 / np.sqrt(4 * np.pi),
        np.sqrt(3.0) / np.sqrt(4 * np.pi),
        3 * np.sqrt(5.0) / np.sqrt(12 * np.pi),
    )
    gamma = (coeffs[:, 227:254].reshape(b, 3, 9) + np.eye(9)[0] * 0.8).transpose(0, 2, 1)
    nx, ny, nz = n[..., 0], n[..., 1], n[..., 2]
    sh = np.stack(
        [
            np.full_like(nx, a[0] * c[0]),
            -a[1] * c[1] * ny,
            a[1] * c[1] * nz,
            -a[1] * c[1] * nx,
            a[2] * c[2] * nx * ny,
            -a[2] * c[2] * ny * nz,
            0.5 * a[2] * c[2] / np.sqrt(3.0) * (3 * nz**2 - 1),
            -a[2] * c[2] * nx * nz,
            0.5 * a[2] * c[2] * (nx**2 - ny**2),
        ],
        -1,
    )
    return {
        "shape": shape,
        "posed": posed,
        "lm": lm,
        "tex": tex,
        "normals": n,
        "color": (sh @ gamma) * tex,
    }


def test_coarse_face_equals_deep3dfacerecons_formulas(tmp_path):
    fields = _write_bfm(tmp_path)
    model = load_model(
        "bfm", bfm_path=tmp_path / "BFM_model_front.mat", uv_path=tmp_path / "uv.npy"
    )
    system = FaceSystem(paper_train_config().model, model, 224)
    rng = np.random.default_rng(5)
    b = 3
    coeffs = np.concatenate(
        [
            rng.normal(size=(b, 224)) * np.r_[np.ones(144), np.full(80, 0.3)],
            rng.normal(size=(b, 3)) * 0.3,
            rng.normal(size=(b, 27)) * 0.2,
            rng.normal(size=(b, 3)) * [0.1, 0.1, 1.0],
        ],
        1,
    )
    ref = _official(fields, coeffs)
    layout = CoefficientLayout.from_model(model)
    coarse = system.coarse(
        torch.zeros(b, 3, 224, 224, dtype=torch.float64),
        layout.split(torch.tensor(coeffs, dtype=torch.float64)),
    )
    np.testing.assert_allclose(coarse.shape.numpy(), ref["shape"] * 100.0, atol=1e-9)
    np.testing.assert_allclose(coarse.posed.numpy(), ref["posed"] * 100.0, atol=1e-9)
    lm = system.landmarks2d(coarse.posed).numpy()
    np.testing.assert_allclose(lm[..., 0], ref["lm"][..., 0], atol=1e-9)
    np.testing.assert_allclose(lm[..., 1], 223.0 - ref["lm"][..., 1], atol=1e-9)
    np.testing.assert_allclose(coarse.albedo.numpy(), ref["tex"], atol=1e-12)
    # the BFM's normals as point_buf sums them: unit face normals, summed and normalised
    assert model.normal_weighting == "uniform"
    normals = model.vertex_normals(coarse.posed)
    np.testing.assert_allclose(normals.numpy(), ref["normals"], atol=1e-12)
    shaded = shade_sh(normals, coarse.albedo, coarse.sh).numpy()
    np.testing.assert_allclose(shaded, ref["color"], atol=1e-12)
    # the base model's render shades with them (area-weighted normals would differ by degrees
    # on this coarse grid)
    area = vertex_normals(coarse.posed, model.faces, "area").numpy()
    cos = (area * ref["normals"]).sum(-1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() > 1.0
    renderer = system.renderer(torch.float64)
    kw = {"colors": coarse.albedo, "sh": coarse.sh, "shading": "vertex"}
    want = renderer.render(coarse.posed, system.faces, normals=normals, **kw).image
    np.testing.assert_allclose(system.render_coarse(coarse).image, want, atol=1e-12)
    other = renderer.render(coarse.posed, system.faces, normals=torch.tensor(area), **kw).image
    assert np.abs((other - want).numpy()).max() > 1e-3

"""Tests of the morphable-model interface and the built-in facehd-synth model.

References are independent of the code under test: explicit sums over basis columns, a similarity
motion basis built here from its definition, mirror images of the landmarks, anatomical ranges.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facehd.morphable import (
    KNOWN_MODELS,
    MorphableModel,
    RegionMasks,
    available_models,
    build_synth,
    facehd_synth,
    load_model,
    project_out_similarity,
    regions_from_landmarks,
)

# iBUG-68 mirror map: landmark i of a face is landmark MIRROR[i] of its mirror image
MIRROR = (
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46]
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)
NOW7 = (36, 39, 42, 45, 33, 48, 54)


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return facehd_synth()


def _motion_basis(points: np.ndarray) -> np.ndarray:
    """Translation x/y/z, rotation about x/y/z (ω × p) and scale (p), flattened (3V, 7)."""
    v = len(points)
    cols = []
    for a in range(3):
        t = np.zeros((v, 3))
        t[:, a] = 1.0
        cols.append(t.reshape(-1))
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    zero = np.zeros(v)
    cols.append(np.stack([zero, -z, y], 1).reshape(-1))  # e_x × p
    cols.append(np.stack([z, zero, -x], 1).reshape(-1))  # e_y × p
    cols.append(np.stack([-y, x, zero], 1).reshape(-1))  # e_z × p
    cols.append(points.reshape(-1))
    return np.stack(cols, 1)


# ---------------------------------------------------------------------------------------------
# sizes, units, topology
# ---------------------------------------------------------------------------------------------
def test_sizes_and_units(model: MorphableModel) -> None:
    assert model.name == "facehd-synth"
    assert model.unit_to_mm == 1.0
    assert model.n_vertices >= 10_000
    assert model.n_id >= 50 and model.n_exp >= 20 and model.n_tex >= 20
    v = model.n_vertices
    assert model.mean_shape.shape == (v, 3)
    assert model.id_basis.shape == (v, 3, model.n_id)
    assert model.exp_basis.shape == (v, 3, model.n_exp)
    assert model.albedo_basis.shape == (v, 3, model.n_tex)
    assert model.faces.dtype == np.int64 and model.faces.min() == 0 and model.faces.max() == v - 1
    assert model.landmarks68.shape == (68,) and model.landmarks68.dtype == np.int64
    assert len(model.id_names) == model.n_id and len(model.exp_names) == model.n_exp
    for name in ("jaw_open", "smile", "brow_raise", "eye_closure", "frown", "pucker"):
        assert name in model.exp_names


def test_uvs_are_grid_coordinates(model: MorphableModel) -> None:
    uv, p = model.uvs, model.mean_shape
    assert uv.min() == 0.0 and uv.max() == 1.0
    n = int(round(np.sqrt(model.n_vertices)))
    assert n * n == model.n_vertices
    grid = uv.reshape(n, n, 2)
    assert np.allclose(grid[0, :, 0], np.linspace(0, 1, n)) and np.allclose(
        grid[:, 0, 1], np.linspace(0, 1, n)
    )
    pg = p.reshape(n, n, 3)
    mid = n // 2
    assert np.all(np.diff(pg[mid, :, 0]) > 0)  # u right = +x
    face_rows = slice(n // 8, n - n // 8)
    assert np.all(np.diff(pg[face_rows, mid, 1]) > 0)  # v up = +y


def test_faces_wind_outwards(model: MorphableModel) -> None:
    p, f = model.mean_shape, model.faces
    fn = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])
    centroid = p[f].mean(1)
    on_face = model.regions.fit[f].all(1)
    assert np.mean(fn[on_face, 2] > 0) > 0.95  # the face looks towards +z
    # and the whole mask wraps around a point inside the head
    inside = np.array([0.0, 0.0, p[:, 2].min() + 40.0])
    assert np.mean(np.sum(fn * (centroid - inside), 1) > 0) > 0.97


def test_adult_face_size(model: MorphableModel) -> None:
    p = model.mean_shape
    lm = p[model.landmarks68]
    width = np.ptp(p[:, 0])
    assert 140.0 <= width <= 150.0
    assert 190.0 <= p[:, 1].max() - lm[8, 1] <= 210.0  # chin to top of the forehead region
    assert np.linalg.norm(p.mean(0)) < 1e-6  # centred
    # the nose protrudes 18-26 mm in front of the alar base, the chin is the lowest jaw point
    assert 18.0 <= lm[30, 2] - lm[[31, 35], 2].mean() <= 26.0
    assert lm[8, 1] == lm[:17, 1].min()


# ---------------------------------------------------------------------------------------------
# evaluation: numpy, batching, torch
# ---------------------------------------------------------------------------------------------
def _reference_vertices(model: MorphableModel, ident: np.ndarray, expr: np.ndarray) -> np.ndarray:
    out = model.mean_shape.copy()
    for k in np.flatnonzero(ident):
        out = out + ident[k] * model.id_basis[:, :, k]
    for k in np.flatnonzero(expr):
        out = out + expr[k] * model.exp_basis[:, :, k]
    return out * model.unit_to_mm


def test_vertices_match_explicit_sum_and_batch(model: MorphableModel) -> None:
    rng = np.random.default_rng(1)
    ident = rng.normal(size=(3, model.n_id)) * model.id_std
    expr = rng.normal(size=(3, model.n_exp)) * model.exp_std
    batch = model.vertices(ident, expr)
    assert batch.shape == (3, model.n_vertices, 3) and batch.dtype == np.float64
    for b in range(3):
        ref = _reference_vertices(model, ident[b], expr[b])
        np.testing.assert_allclose(batch[b], ref, atol=1e-9)
        np.testing.assert_allclose(model.vertices(ident[b], expr[b]), ref, atol=1e-9)
    # a single vector broadcasts against a batch; None means zeros
    mixed = model.vertices(ident, expr[0])
    np.testing.assert_allclose(mixed[2], _reference_vertices(model, ident[2], expr[0]), atol=1e-9)
    np.testing.assert_allclose(model.vertices(), model.mean_shape)
    np.testing.assert_allclose(
        model.vertices(None, expr[1]), model.vertices(np.zeros(model.n_id), expr[1])
    )
    np.testing.assert_allclose(
        model.vertices(ident[0], mm=False), model.vertices(ident[0]) / model.unit_to_mm
    )


def test_vertices_reject_bad_shapes(model: MorphableModel) -> None:
    with pytest.raises(ValueError, match=rf"\({model.n_id},\) or \(B, {model.n_id}\)"):
        model.vertices(np.zeros(model.n_id + 1))
    with pytest.raises(ValueError, match="expression"):
        model.vertices(None, np.zeros((2, 3, model.n_exp)))
    with pytest.raises(ValueError, match="batch size"):
        model.vertices(np.zeros((2, model.n_id)), np.zeros((3, model.n_exp)))
    with pytest.raises(ValueError, match="NaN"):
        model.vertices(np.full(model.n_id, np.nan))
    with pytest.raises(ValueError, match="albedo"):
        model.albedo(np.zeros(model.n_tex - 1))


def test_torch_matches_numpy_and_is_differentiable(model: MorphableModel) -> None:
    rng = np.random.default_rng(2)
    ident = rng.normal(size=(2, model.n_id)) * model.id_std
    expr = rng.normal(size=(2, model.n_exp)) * model.exp_std
    ref = model.vertices(ident, expr)
    t_id = torch.tensor(ident, dtype=torch.float64, requires_grad=True)
    t_ex = torch.tensor(expr, dtype=torch.float64, requires_grad=True)
    out = model.vertices(t_id, t_ex)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == ref.shape
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-9)
    # d/dc of sum(w * vertices) is the basis projected on w (analytic)
    w = rng.normal(size=ref.shape)
    (out * torch.from_numpy(w)).sum().backward()
    grad_id = np.einsum("bvc,vck->bk", w, model.id_basis) * model.unit_to_mm
    grad_ex = np.einsum("bvc,vck->bk", w, model.exp_basis) * model.unit_to_mm
    np.testing.assert_allclose(t_id.grad.numpy(), grad_id, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(t_ex.grad.numpy(), grad_ex, rtol=1e-9, atol=1e-9)
    # float32 follows the input dtype; numpy mixed with torch gives torch
    out32 = model.vertices(torch.tensor(ident[0], dtype=torch.float32), expr[0])
    assert out32.dtype == torch.float32 and out32.shape == (model.n_vertices, 3)
    np.testing.assert_allclose(out32.numpy(), ref[0], atol=1e-3)
    alb = model.albedo(torch.zeros(model.n_tex, dtype=torch.float64))
    np.testing.assert_allclose(alb.numpy(), model.mean_albedo)


def test_torch_bases_are_cached_per_device_and_dtype(model: MorphableModel) -> None:
    model.vertices(torch.zeros(model.n_id, dtype=torch.float32))
    first = dict(model._torch_cache)
    model.vertices(torch.ones(model.n_id, dtype=torch.float32))
    for key, tensor in first.items():
        assert model._torch_cache[key] is tensor  # reused, not rebuilt
    model.vertices(torch.zeros(model.n_id, dtype=torch.float64))
    dtypes = {key[-1] for key in model._torch_cache if key[1] == "identity"}
    assert dtypes == {torch.float32, torch.float64}


def test_landmarks_and_normals_batched(model: MorphableModel) -> None:
    verts = model.vertices(np.zeros((2, model.n_id)))
    lm = model.landmarks(verts)
    assert lm.shape == (2, 68, 3)
    np.testing.assert_array_equal(lm[1], verts[1][model.landmarks68])
    lm_t = model.landmarks(torch.from_numpy(verts))
    np.testing.assert_array_equal(lm_t.numpy(), lm)
    with pytest.raises(ValueError, match=str(model.n_vertices)):
        model.landmarks(verts[:, :10])
    n = model.vertex_normals(verts)
    assert n.shape == verts.shape
    np.testing.assert_allclose(np.linalg.norm(n[0][model.regions.fit], axis=1), 1.0, atol=1e-9)
    tip = model.landmarks68[30]
    assert n[0, tip, 2] > 0.9  # the nose tip faces the viewer


def test_mesh(model: MorphableModel) -> None:
    ident = np.zeros(model.n_id)
    ident[0] = 2.0
    mesh = model.mesh(ident, None, albedo=np.full(model.n_tex, 50.0))
    np.testing.assert_allclose(mesh.vertices, model.vertices(ident))
    np.testing.assert_array_equal(mesh.faces, model.faces)
    np.testing.assert_array_equal(mesh.uvs, model.uvs)
    assert mesh.colors.min() >= 0.0 and mesh.colors.max() <= 1.0
    with pytest.raises(ValueError, match="one"):
        model.mesh(np.zeros((2, model.n_id)))


def test_arrays_are_read_only(model: MorphableModel) -> None:
    with pytest.raises(ValueError):
        model.mean_shape[0, 0] = 1.0
    with pytest.raises(ValueError):
        model.regions.fit[0] = True


def test_component_lookup(model: MorphableModel) -> None:
    k = model.component("exp", "jaw_open")
    assert model.exp_names[k] == "jaw_open"
    with pytest.raises(ValueError, match="known"):
        model.component("exp", "yawn")


# ---------------------------------------------------------------------------------------------
# landmarks
# ---------------------------------------------------------------------------------------------
def test_landmark_anatomy(model: MorphableModel) -> None:
    lm = model.landmarks(model.mean_shape)
    right_eye, left_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    iod = np.linalg.norm(left_eye - right_eye)
    assert 60.0 <= iod <= 65.0
    assert left_eye[0] > 0 > right_eye[0]  # +x is the subject's left
    assert np.unique(model.landmarks68).size == 68
    # NoW's 7: eye corners in order along x, above the nose bottom, above the mouth corners
    p7 = lm[list(NOW7)]
    assert np.all(np.diff(p7[:4, 0]) > 0)
    assert 85.0 <= np.linalg.norm(p7[0] - p7[3]) <= 100.0
    assert min(p7[:4, 1]) > p7[4, 1] > max(p7[5:, 1])
    assert 45.0 <= np.linalg.norm(p7[5] - p7[6]) <= 60.0
    # nose tip is the most forward vertex; brows above the eyes; jaw from right (x<0) to left
    assert np.argmax(model.mean_shape[:, 2]) == model.landmarks68[30]
    assert lm[17:27, 1].min() > lm[36:48, 1].max()
    assert lm[0, 0] < -55 and lm[16, 0] > 55 and abs(lm[8, 0]) < 1e-9
    assert np.all(np.diff(lm[0:9, 1]) < 0) and np.all(np.diff(lm[8:17, 1]) > 0)
    # the upper lid sits above the lower lid, the inner upper lip above the inner lower lip
    assert lm[37, 1] > lm[41, 1] and lm[44, 1] > lm[46, 1]
    assert lm[62, 1] > lm[66, 1] and lm[51, 1] > lm[62, 1] and lm[66, 1] > lm[57, 1]


def test_landmarks_are_mirror_symmetric(model: MorphableModel) -> None:
    lm = model.landmarks(model.mean_shape)
    mirrored = lm * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirrored[MIRROR], lm, atol=1e-9)
    # the mean shape itself is symmetric: every vertex has a mirror vertex
    n = int(round(np.sqrt(model.n_vertices)))
    grid = model.mean_shape.reshape(n, n, 3)
    np.testing.assert_allclose(grid[:, ::-1] * np.array([-1.0, 1.0, 1.0]), grid, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# bases
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["id", "exp"])
def test_similarity_motion_is_projected_out(model: MorphableModel, which: str) -> None:
    basis = model.id_basis if which == "id" else model.exp_basis
    s = _motion_basis(model.mean_shape)
    flat = basis.reshape(-1, basis.shape[2])
    coef, *_ = np.linalg.lstsq(s, flat, rcond=None)
    fitted = np.linalg.norm(s @ coef, axis=0) / np.linalg.norm(flat, axis=0)
    assert fitted.max() < 1e-8
    # a pure similarity motion, by contrast, is fitted exactly (the check can fail)
    motion = s @ np.array([1.0, -2.0, 0.5, 0.01, -0.02, 0.03, 0.01])
    c, *_ = np.linalg.lstsq(s, motion, rcond=None)
    assert np.linalg.norm(s @ c - motion) < 1e-8 * np.linalg.norm(motion)


@pytest.mark.parametrize("which", ["id", "exp", "tex"])
def test_bases_orthogonal_normalised_decaying(model: MorphableModel, which: str) -> None:
    basis, std = {
        "id": (model.id_basis, model.id_std),
        "exp": (model.exp_basis, model.exp_std),
        "tex": (model.albedo_basis, model.tex_std),
    }[which]
    flat = basis.reshape(-1, basis.shape[2])
    gram = flat.T @ flat
    norms = np.sqrt(np.diag(gram))
    off = gram / np.outer(norms, norms) - np.eye(len(norms))
    assert np.abs(off).max() < 1e-9
    if which == "tex":
        np.testing.assert_allclose(np.abs(basis).max(axis=(0, 1)), 1.0)
    else:
        np.testing.assert_allclose(np.linalg.norm(basis, axis=1).max(axis=0), 1.0)
    assert np.all(std > 0) and np.all(np.diff(std) <= 0)


def test_project_out_similarity_with_weights() -> None:
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(200, 3)) * 50
    basis = rng.normal(size=(200, 3, 4))
    w = rng.uniform(0.1, 3.0, size=200)
    out = project_out_similarity(basis, pts, w)
    s = _motion_basis(pts)
    assert np.abs(s.T @ out.reshape(-1, 4)).max() < 1e-8 * np.abs(basis).max() * 200
    # the removed part is a weighted similarity motion: W⁻¹ (b - b') lies in the motion span
    removed = (basis - out).reshape(-1, 4) / np.repeat(w, 3)[:, None]
    c, *_ = np.linalg.lstsq(s, removed, rcond=None)
    np.testing.assert_allclose(s @ c, removed, atol=1e-8)
    with pytest.raises(ValueError, match="weights"):
        project_out_similarity(basis, pts, -w)


def _folded_triangles(model: MorphableModel, vertices: np.ndarray) -> int:
    """Triangles of ``vertices`` that face the other way than on the mean shape (a fold)."""
    f = model.faces

    def normals(p: np.ndarray) -> np.ndarray:
        return np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])

    return int((np.einsum("ij,ij->i", normals(vertices), normals(model.mean_shape)) < 0).sum())


def test_identities_do_not_fold_the_surface(model: MorphableModel) -> None:
    # A face drawn from the model is a surface: no lid, nostril or lip turns over, for any one
    # identity component at +-3 std and for random identities (the draw of ``facehd synth``).
    assert _folded_triangles(model, model.mean_shape) == 0
    for k in range(model.n_id):
        for s in (-3.0, 3.0):
            c = np.zeros(model.n_id)
            c[k] = s * model.id_std[k]
            assert _folded_triangles(model, model.vertices(c)) == 0, (model.id_names[k], s)
    rng = np.random.default_rng(3)
    for _ in range(20):
        c = rng.normal(size=model.n_id) * model.id_std
        assert _folded_triangles(model, model.vertices(c)) == 0
    # the check sees a fold: the eyes pushed 5 mm back along the mean shape's own normals turn
    # the lid margins over, the same smooth push straight back (-z) does not
    p = model.mean_shape
    lm = p[model.landmarks68]
    w = sum(
        np.exp(-np.sum((p - c) ** 2, axis=1) / (2 * 10.0**2))
        for c in (lm[36:42].mean(0), lm[42:48].mean(0))
    )
    n = model.mesh().vertex_normals
    assert _folded_triangles(model, p - 5.0 * w[:, None] * n) > 0
    assert _folded_triangles(model, p - 5.0 * w[:, None] * np.array([0.0, 0.0, 1.0])) == 0


def _exp(model: MorphableModel, name: str, sigmas: float = 1.0) -> np.ndarray:
    e = np.zeros(model.n_exp)
    k = model.component("exp", name)
    e[k] = sigmas * model.exp_std[k]
    return model.vertices(None, e)


def test_expressions_act_locally_and_anatomically(model: MorphableModel) -> None:
    mean = model.mean_shape
    lm0 = mean[model.landmarks68]
    forehead = model.regions.forehead
    chin = np.linalg.norm(mean - lm0[8], axis=1) < 25.0
    # jaw open: chin and lower lip go down and back, much more than the forehead moves
    v = _exp(model, "jaw_open")
    d = np.linalg.norm(v - mean, axis=1)
    assert d[chin].max() > 3.0 * d[forehead].max()
    lm = v[model.landmarks68]
    assert lm[57, 1] - lm0[57, 1] < -4.0 and lm[8, 2] < lm0[8, 2]
    opening = (lm[66, 1] - lm[62, 1]) - (lm0[66, 1] - lm0[62, 1])
    assert opening < -3.0  # the inner lips part
    # smile: mouth corners move up relative to the lower lip
    lm = _exp(model, "smile")[model.landmarks68]
    assert (lm[48, 1] - lm[57, 1]) - (lm0[48, 1] - lm0[57, 1]) > 2.0
    # brow raise: brows move away from the eyes; the chin barely moves
    v = _exp(model, "brow_raise")
    lm = v[model.landmarks68]
    gap0 = lm0[19, 1] - lm0[37, 1]
    assert lm[19, 1] - lm[37, 1] > gap0 + 2.0
    assert (
        np.linalg.norm(v - mean, axis=1)[chin].max()
        < 0.3 * model.exp_std[model.component("exp", "brow_raise")]
    )
    # eye closure: the eye opening narrows (upper lid towards lower lid)
    lm = _exp(model, "eye_closure")[model.landmarks68]
    assert lm[37, 1] - lm[41, 1] < lm0[37, 1] - lm0[41, 1]
    # wink is one-sided: the left eye (x > 0) and the right eye move oppositely
    v = _exp(model, "wink")
    d = (v - mean)[model.regions.eyes]
    x = mean[model.regions.eyes, 0]
    assert np.abs(d[x > 0]).max() > 0.5 and np.allclose(
        np.sort(np.abs(d[x > 0]).ravel())[-10:], np.sort(np.abs(d[x < 0]).ravel())[-10:], rtol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# albedo and regions
# ---------------------------------------------------------------------------------------------
def test_mean_albedo(model: MorphableModel) -> None:
    a = model.mean_albedo
    assert a.min() >= 0.0 and a.max() <= 1.0
    lm = model.landmarks68
    lips = a[lm[[61, 63, 65, 67]]]
    cheek = a[np.flatnonzero(model.regions.cheeks)]
    assert (lips[:, 0] / lips[:, 1]).min() > 1.25 * (cheek[:, 0] / cheek[:, 1]).mean()
    brow = a[lm[[19, 24]]].mean()
    assert brow < a[np.flatnonzero(model.regions.forehead)].mean() - 0.2


def test_regions(model: MorphableModel) -> None:
    r = model.regions
    assert isinstance(r, RegionMasks)
    named = ["eyes", "nose", "mouth", "forehead", "cheeks"]
    for name in [*named, "fit"]:
        assert getattr(r, name).shape == (model.n_vertices,) and getattr(r, name).sum() > 100
    for i, a in enumerate(named):
        for b in named[i + 1 :]:
            assert not np.any(getattr(r, a) & getattr(r, b)), (a, b)
    assert not np.any(r.fit & r.eyes)
    lm = model.landmarks68
    assert not r.fit[lm[[32, 34]]].any()  # nostrils excluded
    assert r.eyes[lm[[37, 38, 40, 41, 43, 44, 46, 47]]].all()
    assert r.nose[lm[[28, 29, 30]]].all() and r.mouth[lm[[51, 57, 62, 66]]].all()
    # forehead above the brows, cheeks below the eyes, along the face's up axis (mouth → eyes)
    p = model.mean_shape
    eyes_mid = p[lm[36:48]].mean(0)
    up = eyes_mid - p[lm[48:60]].mean(0)
    up /= np.linalg.norm(up)
    h = (p - eyes_mid) @ up
    assert h[r.forehead].min() > h[lm[17:27]].max()
    assert h[r.cheeks].max() < h[lm[36:48]].min()
    # fit keeps the outer border, the top (hair) and the ears out
    n = int(round(np.sqrt(model.n_vertices)))
    grid = r.fit.reshape(n, n)
    assert (
        not grid[:3].any()
        and not grid[-3:].any()
        and not grid[:, :3].any()
        and not grid[:, -3:].any()
    )
    assert r.fit.sum() > 0.35 * model.n_vertices
    assert r.cheeks.sum() + r.forehead.sum() + r.mouth.sum() <= r.fit.sum()
    assert np.all(r.fit[r.cheeks]) and np.all(r.fit[r.forehead]) and np.all(r.fit[r.mouth])


def test_regions_from_landmarks_are_scale_invariant(model: MorphableModel) -> None:
    p = model.mean_shape
    lm = p[model.landmarks68]
    a = regions_from_landmarks(p, lm)
    b = regions_from_landmarks(p * 0.01 + 3.0, lm * 0.01 + 3.0)  # decimetres, shifted
    for name in RegionMasks.names():
        # rounding may flip a vertex lying exactly on a boundary
        assert np.sum(getattr(a, name) != getattr(b, name)) <= 3, name
    with pytest.raises(ValueError, match="68"):
        regions_from_landmarks(p, lm[:60])


# ---------------------------------------------------------------------------------------------
# determinism and registry
# ---------------------------------------------------------------------------------------------
def test_two_builds_are_byte_identical(model: MorphableModel) -> None:
    other = build_synth()
    assert other is not model
    for name in (
        "mean_shape",
        "id_basis",
        "exp_basis",
        "mean_albedo",
        "albedo_basis",
        "faces",
        "uvs",
        "landmarks68",
        "id_std",
        "exp_std",
        "tex_std",
    ):
        assert getattr(other, name).tobytes() == getattr(model, name).tobytes(), name
    for name in RegionMasks.names():
        assert getattr(other.regions, name).tobytes() == getattr(model.regions, name).tobytes()
    assert facehd_synth() is model  # cached


_BUILT_ARRAYS = ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "albedo_basis")


def _array_digests(model: MorphableModel) -> dict[str, str]:
    return {
        name: hashlib.sha256(np.ascontiguousarray(getattr(model, name)).tobytes()).hexdigest()
        for name in _BUILT_ARRAYS
    }


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS runs on one thread here anyway")
def test_a_process_on_one_blas_thread_builds_the_same_model(model: MorphableModel) -> None:
    """A pool's worker and a Ray task run BLAS on one thread, the command that started them on
    one per core: each builds the model, and a build's output mixes their results (the
    parent's model in the dataset's attributes, the workers' in the fits). Built with the
    thread count of its process, the bases differed in their last bits."""
    script = (
        "import hashlib, json, numpy as np\n"
        "from facehd.morphable import build_synth\n"
        "m = build_synth()\n"
        f"names = {_BUILT_ARRAYS!r}\n"
        "print(json.dumps({n: hashlib.sha256(np.ascontiguousarray(getattr(m, n)).tobytes())"
        ".hexdigest() for n in names}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == _array_digests(model)


def test_registry() -> None:
    infos = {i.name: i for i in available_models()}
    assert set(infos) == set(KNOWN_MODELS) == {"facehd-synth", "bfm"}
    synth = infos["facehd-synth"]
    m = facehd_synth()
    assert synth.available and (synth.n_vertices, synth.n_id, synth.n_exp, synth.n_tex) == (
        m.n_vertices,
        m.n_id,
        m.n_exp,
        m.n_tex,
    )
    assert not infos["bfm"].available and "no path given" in infos["bfm"].note
    assert load_model("facehd-synth") is m and load_model("FaceHD-Synth") is m
    with pytest.raises(ValueError, match="facehd-synth, bfm"):
        load_model("flame")
    with pytest.raises(ValueError, match="bfm_path"):
        load_model("bfm")


def test_fingerprint_survives_rounding_noise_not_a_changed_basis() -> None:
    """A stored fingerprint matches the model rebuilt under other thread counts (last-bit noise)
    and no longer matches once a component changes by a fraction of a millimetre."""
    import dataclasses
    import json

    from facehd.morphable import load_model

    model = load_model("facehd-synth")
    stored = json.loads(json.dumps(model.fingerprint))  # as written into a file's attributes
    assert model.matches_fingerprint(stored)
    rng = np.random.default_rng(1)
    noisy = dataclasses.replace(
        model, id_basis=model.id_basis * (1 + 1e-13 * rng.standard_normal(model.id_basis.shape))
    )
    assert noisy.matches_fingerprint(stored)
    changed = model.id_basis.copy()
    changed[:, :, 3] += 0.05 * rng.standard_normal(changed.shape[:2])
    assert not dataclasses.replace(model, id_basis=changed).matches_fingerprint(stored)
    flipped = model.faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert not dataclasses.replace(model, faces=flipped).matches_fingerprint(stored)
    assert not model.matches_fingerprint({"topology": stored["topology"]})
    assert not model.matches_fingerprint("0890dd88de415624")

"""Tests of facehd.uv against brute force, torch's grid_sample and analytic surfaces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from facehd import uv


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def grid_topology(n: int, lo: float = 0.0, hi: float = 1.0, jitter: float = 0.0, seed: int = 0):
    """n x n vertex grid over [lo, hi]^2 in UV, two triangles per cell (CCW in UV)."""
    g = np.linspace(lo, hi, n)
    uu, vv = np.meshgrid(g, g)
    uvs = np.stack([uu.ravel(), vv.ravel()], 1)
    if jitter:
        rng = np.random.default_rng(seed)
        interior = (uvs > lo) & (uvs < hi)
        uvs = uvs + interior * rng.uniform(-jitter, jitter, uvs.shape) * (hi - lo) / (n - 1)
    idx = np.arange(n * n).reshape(n, n)  # row r = v index, col = u index
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return uvs, faces


def brute_force_raster(uvs, faces, size, tol=uv.INSIDE_TOLERANCE):
    """Per-texel loop: lowest face whose UV triangle contains the texel centre."""
    h, w = size
    face_ids = np.full((h, w), -1)
    bary = np.zeros((h, w, 3))
    tri = uvs[faces]  # (F, 3, 2)
    # barycentrics by solving [p1-p0, p2-p0] [b1, b2]^T = q - p0 for every face
    m = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], axis=2)  # (F, 2, 2)
    ok = np.abs(np.linalg.det(m)) > 1e-14
    for i in range(h):
        for j in range(w):
            q = np.array([(j + 0.5) / w, 1 - (i + 0.5) / h])
            rhs = (q - tri[ok, 0])[..., None]
            b12 = np.linalg.solve(m[ok], rhs)[..., 0]
            bb = np.concatenate([1 - b12.sum(1, keepdims=True), b12], 1)
            hit = np.flatnonzero(np.all(bb >= -tol, axis=1))
            if hit.size:
                face_ids[i, j] = np.flatnonzero(ok)[hit[0]]
                bary[i, j] = bb[hit[0]]
    return face_ids, bary


# --------------------------------------------------------------------------------------------
# convention
# --------------------------------------------------------------------------------------------
def test_texel_centres_follow_the_convention():
    h, w = 5, 7
    c = uv.texel_centers_uv((h, w))
    assert c.shape == (h, w, 2)
    assert c[0, 0] == pytest.approx([0.5 / w, 1 - 0.5 / h])
    assert c[h - 1, w - 1] == pytest.approx([1 - 0.5 / w, 0.5 / h])
    assert c[2, 3] == pytest.approx([3.5 / w, 1 - 2.5 / h])
    px = uv.uv_to_pixel(c, (h, w))
    rows, cols = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(px[..., 0], cols, atol=1e-12)
    np.testing.assert_allclose(px[..., 1], rows, atol=1e-12)
    # corners of the map
    assert uv.uv_to_pixel(np.array([0.0, 1.0]), (h, w)) == pytest.approx([-0.5, -0.5])
    assert uv.uv_to_pixel(np.array([1.0, 0.0]), (h, w)) == pytest.approx([w - 0.5, h - 0.5])


def test_pixel_uv_roundtrip_numpy_and_torch():
    rng = np.random.default_rng(1)
    q = rng.uniform(-0.3, 1.3, (10, 4, 2))
    back = uv.pixel_to_uv(uv.uv_to_pixel(q, (6, 9)), (6, 9))
    np.testing.assert_allclose(back, q, atol=1e-13)
    qt = torch.from_numpy(q)
    pt = uv.uv_to_pixel(qt, (6, 9))
    assert isinstance(pt, torch.Tensor)
    np.testing.assert_allclose(pt.numpy(), uv.uv_to_pixel(q, (6, 9)), atol=1e-13)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        uv.uv_to_pixel(np.zeros((3, 3)), 4)
    with pytest.raises(ValueError, match="size"):
        uv.uv_to_pixel(np.zeros((3, 2)), (0, 4))


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------
def _sample_points(rng, n=200):
    pts = rng.uniform(-0.2, 1.2, (n, 2))  # includes points beyond the edges (clamping)
    edges = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [0.5, 1], [1, 0.5]], float)
    return np.concatenate([pts, edges])


def test_numpy_torch_sparse_and_grid_sample_agree():
    rng = np.random.default_rng(2)
    h, w, c = 7, 9, 3
    m = rng.normal(size=(h, w, c))
    pts = _sample_points(rng)
    a = uv.sample_uv_map(m, pts)
    mat = uv.uv_sampling_matrix(pts, (h, w))
    assert isinstance(mat, sp.csr_matrix) and mat.shape == (len(pts), h * w)
    np.testing.assert_allclose(mat.sum(1).A1, 1.0, atol=1e-12)
    np.testing.assert_allclose(mat @ m.reshape(h * w, c), a, atol=1e-12)
    mt = torch.from_numpy(m).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)  # (2, C, H, W)
    mt[1] *= -2.0
    out = uv.sample_uv_map(mt, torch.from_numpy(pts))
    assert out.shape == (2, len(pts), c)
    np.testing.assert_allclose(out[0].numpy(), a, atol=1e-12)
    np.testing.assert_allclose(out[1].numpy(), -2 * a, atol=1e-12)
    grid = torch.from_numpy(np.stack([2 * pts[:, 0] - 1, 1 - 2 * pts[:, 1]], 1))
    ref = F.grid_sample(
        mt,
        grid[None, None].expand(2, 1, -1, -1),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # (B, C, 1, V)
    np.testing.assert_allclose(out.numpy(), ref[:, :, 0].permute(0, 2, 1).numpy(), atol=1e-12)
    # single-channel numpy map gives (V,)
    assert uv.sample_uv_map(m[..., 0], pts).shape == (len(pts),)
    np.testing.assert_allclose(uv.sample_uv_map(m[..., 0], pts), a[:, 0], atol=1e-12)


def test_sampling_hits_texel_values_and_reproduces_affine_maps():
    rng = np.random.default_rng(3)
    h, w = 6, 8
    m = rng.normal(size=(h, w))
    centres = uv.texel_centers_uv((h, w)).reshape(-1, 2)
    np.testing.assert_allclose(uv.sample_uv_map(m, centres), m.ravel(), atol=1e-12)
    # an affine function of (u, v) sampled anywhere between the texel centres is exact
    cuv = uv.texel_centers_uv((h, w))
    aff = 0.3 + 2.0 * cuv[..., 0] - 5.0 * cuv[..., 1]
    q = rng.uniform([0.5 / w, 0.5 / h], [1 - 0.5 / w, 1 - 0.5 / h], (100, 2))
    np.testing.assert_allclose(uv.sample_uv_map(aff, q), 0.3 + 2 * q[:, 0] - 5 * q[:, 1])


def test_batched_uvs_and_gradcheck_of_torch_sampler():
    rng = np.random.default_rng(4)
    m = torch.from_numpy(rng.normal(size=(2, 2, 4, 5))).requires_grad_(True)
    q = torch.from_numpy(rng.uniform(0.05, 0.95, (2, 6, 2))).requires_grad_(True)
    out = uv.sample_uv_map(m, q)
    for b in range(2):
        ref = uv.sample_uv_map(m[b].detach().permute(1, 2, 0).numpy(), q[b].detach().numpy())
        np.testing.assert_allclose(out[b].detach().numpy(), ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda mm, qq: uv.sample_uv_map(mm, qq), (m, q))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        uv.sample_uv_map(torch.zeros(3, 4, 5), q[0])
    with pytest.raises(ValueError, match=r"\(V, 2\)"):
        uv.sample_uv_map(torch.zeros(2, 1, 4, 5), torch.zeros(3, 6, 2))


def test_sparse_transpose_is_the_adjoint_of_the_sampler():
    """<sample(x), y> = <x, A^T y>, with sample() computed without the matrix."""
    rng = np.random.default_rng(5)
    h, w = 9, 11
    pts = _sample_points(rng, 150)
    mat = uv.uv_sampling_matrix(pts, (h, w))
    x = rng.normal(size=(h, w))
    y = rng.normal(size=len(pts))
    lhs = float(uv.sample_uv_map(x, pts) @ y)
    rhs = float(x.ravel() @ (mat.T @ y))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    # A^T y equals the vector-Jacobian product of the torch sampler (its true adjoint)
    xt = torch.from_numpy(x)[None, None].requires_grad_(True)
    out = uv.sample_uv_map(xt, torch.from_numpy(pts))[0, :, 0]
    (out * torch.from_numpy(y)).sum().backward()
    np.testing.assert_allclose(xt.grad[0, 0].numpy().ravel(), mat.T @ y, atol=1e-12)


def _second_differences(h: int, w: int) -> sp.csr_matrix:
    """Stacked interior second differences along rows and columns (zero on affine maps)."""

    def d2(n: int) -> sp.csr_matrix:
        return sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n)).tocsr()

    return sp.vstack([sp.kron(sp.eye(h), d2(w)), sp.kron(d2(h), sp.eye(w))]).tocsr()


@pytest.mark.parametrize("kind", ["affine", "smooth"])
def test_least_squares_through_the_sampler_recovers_a_map(kind):
    rng = np.random.default_rng(6)
    h, w = 16, 16
    pts = rng.uniform(0.1, 0.9, (400, 2))
    cuv = uv.texel_centers_uv((h, w))
    if kind == "affine":
        truth = 1.0 + 3.0 * cuv[..., 0] - 2.0 * cuv[..., 1]
        lam, tol = 1e-3, 1e-7
    else:
        truth = np.sin(3 * cuv[..., 0]) * np.cos(2 * cuv[..., 1])
        lam, tol = 1e-4, 2e-3
    mat = uv.uv_sampling_matrix(pts, (h, w))
    y = mat @ truth.ravel()
    reg = _second_differences(h, w)
    lhs = (mat.T @ mat + lam * reg.T @ reg).tocsc()
    fit = spla.spsolve(lhs, mat.T @ y).reshape(h, w)
    supported = (np.asarray(mat.sum(0)).ravel() > 0).reshape(h, w)
    assert supported.sum() > 0.4 * h * w and not supported.all()
    err = np.abs(fit - truth)[supported]
    assert err.max() < tol, err.max()
    # plain splatting (A^T y normalised) is biased; least squares is far better
    splat = (mat.T @ y) / np.maximum(np.asarray(mat.sum(0)).ravel(), 1e-12)
    splat_err = np.abs(splat.reshape(h, w) - truth)[supported].max()
    assert err.max() < 0.1 * splat_err


# --------------------------------------------------------------------------------------------
# rasterisation
# --------------------------------------------------------------------------------------------
def test_rasterize_matches_brute_force_loop():
    uvs, faces = grid_topology(6, 0.05, 0.93, jitter=0.3, seed=7)
    # an extra triangle overlapping the grid: texels it shares must go to the lower face ids
    uvs = np.concatenate([uvs, [[0.2, 0.1], [0.9, 0.5], [0.4, 0.97]]])
    n = len(uvs)
    faces = np.concatenate([faces, [[n - 3, n - 2, n - 1], [0, 0, 1]]])  # + a degenerate one
    faces = np.concatenate([faces[-2:], faces[:-2]])  # overlapping triangle gets face id 0
    size = (23, 19)
    table = uv.rasterize_uv(uvs, faces, size)
    ref_ids, ref_bary = brute_force_raster(uvs, faces, size)
    assert table.mask.sum() > 200
    np.testing.assert_array_equal(table.face_ids, ref_ids)
    np.testing.assert_array_equal(table.mask, ref_ids >= 0)
    np.testing.assert_allclose(table.barycentrics, ref_bary, atol=1e-9)
    assert (table.face_ids == 0).sum() > 20  # the overlapping triangle won its texels
    assert not np.any(table.face_ids == 1)  # the degenerate triangle never wins


def test_barycentrics_reproduce_texel_uvs_and_coverage():
    uvs, faces = grid_topology(40, 0.1, 0.85, jitter=0.4, seed=8)
    size = (64, 48)
    table = uv.rasterize_uv(uvs, faces, size)
    tuv = uv.texel_centers_uv(size)
    rebuilt = np.einsum("hwk,hwkc->hwc", table.barycentrics, uvs[faces[table.face_ids]])
    np.testing.assert_allclose(rebuilt[table.mask], tuv[table.mask], atol=1e-12)
    assert np.all(table.barycentrics[table.mask] >= -uv.INSIDE_TOLERANCE)
    np.testing.assert_allclose(table.barycentrics[table.mask].sum(-1), 1.0, atol=1e-12)
    # the grid covers exactly the texels whose centres lie in [0.1, 0.85]^2
    inside = np.all((tuv > 0.1 + 1e-9) & (tuv < 0.85 - 1e-9), axis=-1)
    assert np.all(table.mask[inside])
    assert not np.any(table.mask[np.any((tuv < 0.1 - 1e-9) | (tuv > 0.85 + 1e-9), axis=-1)])
    assert np.all(table.face_ids[~table.mask] == -1)
    assert np.all(table.barycentrics[~table.mask] == 0)


def test_rasterize_in_chunks_gives_the_same_table(monkeypatch):
    uvs, faces = grid_topology(12, 0.0, 1.0, jitter=0.3, seed=9)
    ref = uv.rasterize_uv(uvs, faces, 40)
    monkeypatch.setattr(uv, "_RASTER_CHUNK", 7)
    small = uv.rasterize_uv(uvs, faces, 40)
    np.testing.assert_array_equal(small.face_ids, ref.face_ids)
    np.testing.assert_array_equal(small.barycentrics, ref.barycentrics)


def test_rasterize_texel_centres_on_shared_edges_and_vertices(monkeypatch):
    """A grid whose vertices lie on texel centres, so that many texel centres lie on shared
    edges and vertices, and on the grid's outer edge: no hole, and each such texel goes to the
    lowest of its faces (the brute-force loop), in one chunk and in many."""
    size = (16, 16)
    uvs, faces = grid_topology(6, 0.5 / 16, 15.5 / 16)  # vertices 3 texels apart
    ref_ids, ref_bary = brute_force_raster(uvs, faces, size)
    assert np.all(ref_ids >= 0)  # every texel centre lies in the grid's square
    for chunk in (None, 5):
        if chunk is not None:
            monkeypatch.setattr(uv, "_RASTER_CHUNK", chunk)
        table = uv.rasterize_uv(uvs, faces, size)
        np.testing.assert_array_equal(table.face_ids, ref_ids)
        np.testing.assert_allclose(table.barycentrics, ref_bary, atol=1e-9)


def test_rasterize_rejects_bad_input():
    uvs, faces = grid_topology(3)
    with pytest.raises(ValueError, match=r"\(V, 2\)"):
        uv.rasterize_uv(uvs[:, :1], faces, 8)
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        uv.rasterize_uv(uvs, faces[:, :2], 8)
    with pytest.raises(ValueError, match="outside"):
        uv.rasterize_uv(uvs, faces + 100, 8)
    bad = uvs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        uv.rasterize_uv(bad, faces, 8)


# --------------------------------------------------------------------------------------------
# interpolation and position maps
# --------------------------------------------------------------------------------------------
def _affine_vertices(uvs):
    u, v = uvs[:, 0], uvs[:, 1]
    return np.stack([10 * u + 1, -4 * v + 2 * u, 3 * u - 7 * v + 0.5], 1)


def test_position_map_of_affine_geometry_is_exact():
    uvs, faces = grid_topology(9, 0.0, 1.0, jitter=0.35, seed=10)
    table = uv.rasterize_uv(uvs, faces, (20, 24))
    assert table.mask.all()
    verts = _affine_vertices(uvs)
    pm = uv.position_map(table, verts)
    assert pm.shape == (20, 24, 3)
    np.testing.assert_allclose(
        pm, _affine_vertices(table.texel_uvs().reshape(-1, 2)).reshape(pm.shape)
    )


def test_interpolate_numpy_torch_batched_and_zero_outside():
    uvs, faces = grid_topology(7, 0.2, 0.8, jitter=0.3, seed=11)
    table = uv.rasterize_uv(uvs, faces, 16)
    rng = np.random.default_rng(12)
    attr = rng.normal(size=(3, len(uvs), 4))
    out = table.interpolate(attr)
    assert out.shape == (3, 16, 16, 4)
    assert np.all(out[:, ~table.mask] == 0)
    # independent per-texel evaluation
    for i, j in zip(*np.nonzero(table.mask), strict=True):
        f = faces[table.face_ids[i, j]]
        np.testing.assert_allclose(out[:, i, j], table.barycentrics[i, j] @ attr[:, f], atol=1e-12)
    np.testing.assert_allclose(table.interpolate(attr[1]), out[1])
    np.testing.assert_allclose(table.interpolate(attr[0, :, 2]), out[0, ..., 2])
    at = torch.from_numpy(attr).requires_grad_(True)
    ot = table.interpolate(at)
    np.testing.assert_allclose(ot.detach().numpy(), out, atol=1e-12)
    # gradient of the sum: each vertex collects the barycentric weights it receives
    ot.sum().backward()
    weight = np.zeros(len(uvs))
    np.add.at(
        weight, faces[table.face_ids[table.mask]].ravel(), table.barycentrics[table.mask].ravel()
    )
    np.testing.assert_allclose(at.grad[0, :, 0].numpy(), weight, atol=1e-12)
    pt = uv.position_map(table, torch.from_numpy(attr[..., :3]))
    assert isinstance(pt, torch.Tensor) and pt.shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match="V = 49"):
        table.interpolate(attr[:, :10])
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        uv.position_map(table, attr)


def test_normal_map_is_unit_inside_mask():
    uvs, faces = grid_topology(8, 0.1, 0.9)
    table = uv.rasterize_uv(uvs, faces, 12)
    rng = np.random.default_rng(13)
    nm = uv.normal_map(table, rng.normal(size=(len(uvs), 3)) + [0, 0, 5])
    np.testing.assert_allclose(np.linalg.norm(nm[table.mask], axis=-1), 1.0)
    assert np.all(nm[~table.mask] == 0)


# --------------------------------------------------------------------------------------------
# detail normals
# --------------------------------------------------------------------------------------------
def _sphere_maps(size=(24, 20), radius=50.0):
    """Position and normal maps of a spherical cap through a UV table."""
    uvs, faces = grid_topology(15, 0.05, 0.95)
    th = (uvs[:, 0] - 0.5) * 1.2
    ph = (uvs[:, 1] - 0.5) * 1.2
    normals = np.stack([np.sin(th) * np.cos(ph), np.sin(ph), np.cos(th) * np.cos(ph)], 1)
    table = uv.rasterize_uv(uvs, faces, size)
    return table, uv.position_map(table, radius * normals), uv.normal_map(table, normals)


def test_zero_displacement_gives_the_coarse_normals():
    table, pm, nm = _sphere_maps()
    out = uv.detail_normals(pm, nm, np.zeros(table.size))
    assert out.shape == pm.shape
    np.testing.assert_allclose(out, nm, atol=1e-12)
    out_t = uv.detail_normals(
        torch.from_numpy(pm)[None].float(),
        torch.from_numpy(nm)[None].float(),
        torch.zeros(1, *table.size),
    )
    np.testing.assert_allclose(out_t[0].numpy(), nm, atol=1e-6)


def _plane_with_waves(h, w, length, a, k, b, m):
    cuv = uv.texel_centers_uv((h, w))
    x, y = length * cuv[..., 0], length * cuv[..., 1]
    pm = np.stack([x, y, np.zeros_like(x)], -1)
    nm = np.broadcast_to([0.0, 0.0, 1.0], pm.shape).copy()
    disp = a * np.sin(k * x) + b * np.sin(m * y)
    return x, y, pm, nm, disp


def test_detail_normals_of_a_sinusoid_on_a_plane_are_analytic():
    h, w, length = 48, 64, 40.0
    a, k = 0.8, 2 * np.pi / 13.0
    x, y, pm, nm, disp = _plane_with_waves(h, w, length, a, k, 0.0, 0.0)
    out = uv.detail_normals(pm, nm, disp)
    # continuous surface z = a sin(kx): normal ~ (-a k cos(kx), 0, 1)
    exact = np.stack([-a * k * np.cos(k * x), np.zeros_like(x), np.ones_like(x)], -1)
    exact /= np.linalg.norm(exact, axis=-1, keepdims=True)
    inner = (slice(1, -1), slice(1, -1))
    ang = np.arccos(np.clip((out * exact).sum(-1), -1, 1))
    hx = length / w
    assert ang[inner].max() < 0.5 * a * k * (k * hx) ** 2  # second-order accurate
    assert ang.max() < 0.1  # border texels use one-sided cells
    # on a regular grid the normal is the central difference: exact with a sinc factor
    sinc = np.sin(k * hx) / (k * hx)
    discrete = np.stack([-a * k * np.cos(k * x) * sinc, np.zeros_like(x), np.ones_like(x)], -1)
    discrete /= np.linalg.norm(discrete, axis=-1, keepdims=True)
    np.testing.assert_allclose(out[inner], discrete[inner], atol=1e-12)


def test_detail_normals_follow_v_up_and_both_axes():
    h, w, length = 40, 30, 20.0
    a, k, b, m = 0.3, 2 * np.pi / 7.0, 0.5, 2 * np.pi / 9.0
    x, y, pm, nm, disp = _plane_with_waves(h, w, length, a, k, b, m)
    out = uv.detail_normals(pm, nm, disp)
    sx = np.sin(k * length / w) / (k * length / w)
    sy = np.sin(m * length / h) / (m * length / h)
    ref = np.stack([-a * k * np.cos(k * x) * sx, -b * m * np.cos(m * y) * sy, np.ones_like(x)], -1)
    ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
    np.testing.assert_allclose(out[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-12)


def test_detail_normals_do_not_depend_on_uv_winding():
    table, pm, nm = _sphere_maps()
    rng = np.random.default_rng(14)
    disp = rng.normal(scale=0.3, size=table.size) * table.mask
    out = uv.detail_normals(pm, nm, disp)
    mirrored = uv.detail_normals(pm[:, ::-1], nm[:, ::-1], disp[:, ::-1])
    np.testing.assert_allclose(mirrored[:, ::-1], out, atol=1e-12)
    # a positive bump tilts the neighbouring normals away from it
    assert np.abs(out - nm)[table.mask].max() > 1e-3


def test_detail_normals_respect_the_mask():
    table, pm, nm = _sphere_maps()
    rng = np.random.default_rng(15)
    disp = rng.normal(scale=0.3, size=table.size)
    out = uv.detail_normals(pm, nm, disp, table.mask)
    garbage = pm.copy()
    garbage[~table.mask] = rng.normal(scale=1e3, size=(int((~table.mask).sum()), 3))
    disp2 = disp.copy()
    disp2[~table.mask] = 1e3
    out2 = uv.detail_normals(garbage, nm, disp2, table.mask)
    np.testing.assert_allclose(out2, out, atol=1e-12)
    # default mask (non-zero coarse normals) is the table mask here
    np.testing.assert_allclose(uv.detail_normals(pm, nm, disp), out, atol=1e-12)


def _holed_plane():
    """A wavy plane whose mask has single-texel holes inside, so that cells have a masked
    corner on either diagonal."""
    x, y, pm, nm, disp = _plane_with_waves(14, 12, 10.0, 0.3, 2 * np.pi / 5, 0.2, 2 * np.pi / 7)
    mask = np.ones((14, 12), bool)
    for r, c in ((4, 5), (9, 3), (9, 8)):
        mask[r, c] = False
    return pm, nm, disp, mask


def test_detail_normals_use_only_cells_with_four_valid_corners():
    """Garbage at the holes changes no detail normal; the holes keep their coarse normal."""
    pm, nm, disp, mask = _holed_plane()
    out = uv.detail_normals(pm, nm, disp, mask)
    pm2, disp2 = pm.copy(), disp.copy()
    pm2[~mask] = [1e3, -2e3, 5e2]
    disp2[~mask] = 1e3
    np.testing.assert_allclose(uv.detail_normals(pm2, nm, disp2, mask), out, atol=1e-12)
    np.testing.assert_allclose(out[~mask], nm[~mask], atol=1e-15)
    assert np.abs(out - nm)[mask].max() > 0.05  # the waves tilt the others


def test_dense_mesh_skips_cells_with_a_masked_corner():
    pm, nm, disp, mask = _holed_plane()
    mesh = uv.displaced_dense_mesh(pm, nm, disp, mask)
    h, w = mask.shape
    cells = [
        (r, c)
        for r in range(h - 1)
        for c in range(w - 1)
        if mask[r, c] and mask[r, c + 1] and mask[r + 1, c] and mask[r + 1, c + 1]
    ]
    assert len(mesh.faces) == 2 * len(cells) == 2 * (13 * 11 - 12)
    assert mesh.faces.min() >= 0 and mesh.faces.max() < mask.sum()
    index = -np.ones(mask.shape, int)
    index[mask] = np.arange(mask.sum())
    used = {frozenset(f) for f in mesh.faces.tolist()}
    for r, c in cells:  # each cell's two triangles share its bottom-left and top-right corners
        a, b, cc, d = index[r, c], index[r, c + 1], index[r + 1, c + 1], index[r + 1, c]
        assert {frozenset((d, cc, b)), frozenset((d, b, a))} <= used


def test_torch_detail_normals_batched_match_numpy_and_gradcheck():
    table, pm, nm = _sphere_maps((10, 9))
    rng = np.random.default_rng(16)
    disp = rng.normal(scale=0.5, size=(2, *table.size))
    pmb = np.stack([pm, pm * 1.1])
    nmb = np.stack([nm, nm])
    out = uv.detail_normals(torch.from_numpy(pmb), torch.from_numpy(nmb), torch.from_numpy(disp))
    for i in range(2):
        np.testing.assert_allclose(
            out[i].numpy(), uv.detail_normals(pmb[i], nmb[i], disp[i]), atol=1e-12
        )
    # gradient vs finite differences on a tiny fully valid case
    _, _, pm_s, nm_s, _ = _plane_with_waves(4, 5, 3.0, 0.2, 1.3, 0.1, 0.7)
    p = torch.from_numpy(pm_s + rng.normal(scale=0.1, size=pm_s.shape))[None].requires_grad_(True)
    n = torch.from_numpy(nm_s + rng.normal(scale=0.2, size=nm_s.shape))[None].requires_grad_(True)
    d = torch.from_numpy(rng.normal(scale=0.3, size=(1, 4, 5))).requires_grad_(True)
    assert torch.autograd.gradcheck(uv.detail_normals, (p, n, d))


def test_detail_normals_shape_errors():
    table, pm, nm = _sphere_maps((8, 8))
    with pytest.raises(ValueError, match="position_map"):
        uv.detail_normals(pm[..., :2], nm, np.zeros((8, 8)))
    with pytest.raises(ValueError, match="normal_map"):
        uv.detail_normals(pm, nm[:4], np.zeros((8, 8)))
    with pytest.raises(ValueError, match="displacement"):
        uv.detail_normals(pm, nm, np.zeros((8, 7)))
    with pytest.raises(ValueError, match="mask"):
        uv.detail_normals(pm, nm, np.zeros((8, 8)), np.ones((7, 8), bool))


# --------------------------------------------------------------------------------------------
# dense displaced mesh
# --------------------------------------------------------------------------------------------
def test_dense_mesh_with_zero_displacement_is_the_position_map_surface():
    table, pm, nm = _sphere_maps()
    mesh = uv.displaced_dense_mesh(pm, nm, np.zeros(table.size), table.mask)
    flat = np.flatnonzero(table.mask)
    np.testing.assert_array_equal(mesh.vertices, pm.reshape(-1, 3)[flat])
    # UVs at the texel centres, in the project convention
    np.testing.assert_allclose(mesh.uvs, table.texel_uvs().reshape(-1, 2)[flat], atol=1e-15)
    rows, cols = np.divmod(flat, table.size[1])
    np.testing.assert_allclose(mesh.uvs[:, 0], (cols + 0.5) / table.size[1])
    np.testing.assert_allclose(mesh.uvs[:, 1], 1 - (rows + 0.5) / table.size[0])
    # two triangles per grid cell with four valid corners, each within one cell
    m = table.mask
    cells = int((m[:-1, :-1] & m[:-1, 1:] & m[1:, :-1] & m[1:, 1:]).sum())
    assert mesh.faces.shape == (2 * cells, 3) and cells > 100
    fr, fc = rows[mesh.faces], cols[mesh.faces]
    assert np.all(np.ptp(fr, axis=1) == 1) and np.all(np.ptp(fc, axis=1) == 1)
    # faces are oriented like the normal map
    tri = mesh.vertices[mesh.faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    corner_n = nm.reshape(-1, 3)[flat][mesh.faces].mean(1)
    assert np.all((fn * corner_n).sum(1) > 0)
    # vertices lie on the sphere of radius 50 up to the chord error of the coarse mesh
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(r - 50.0).max() < 0.5


def test_dense_mesh_constant_displacement_offsets_a_plane():
    x, y, pm, nm, _ = _plane_with_waves(12, 10, 9.0, 0.0, 0.0, 0.0, 0.0)
    nm = nm * 3.0  # normals need not be unit
    mask = np.ones((12, 10), bool)
    mask[:3, :4] = False
    mesh = uv.displaced_dense_mesh(pm, nm, np.full((12, 10), 0.7), mask)
    assert mesh.vertices.shape == (mask.sum(), 3)
    np.testing.assert_allclose(mesh.vertices[:, 2], 0.7, atol=1e-14)
    np.testing.assert_allclose(mesh.vertices[:, :2], pm[mask][:, :2])
    # a UV layout with u -> x, v -> y is counter-clockwise seen from +z: normals along +z
    np.testing.assert_allclose(mesh.face_normals, np.tile([0.0, 0.0, 1.0], (len(mesh.faces), 1)))
    # flipping the normal map flips the offset and the winding
    flipped = uv.displaced_dense_mesh(pm, -nm, np.full((12, 10), 0.7), mask)
    np.testing.assert_allclose(flipped.vertices[:, 2], -0.7, atol=1e-14)
    np.testing.assert_allclose(flipped.face_normals[:, 2], -1.0)


def test_dense_mesh_normals_agree_with_detail_normals():
    h, w, length = 40, 40, 20.0
    x, y, pm, nm, disp = _plane_with_waves(h, w, length, 0.3, 2 * np.pi / 8.0, 0.2, 2 * np.pi / 10)
    mesh = uv.displaced_dense_mesh(pm, nm, disp, np.ones((h, w), bool))
    dn = uv.detail_normals(pm, nm, disp).reshape(-1, 3)
    inner = np.zeros((h, w), bool)
    inner[1:-1, 1:-1] = True
    cos = (mesh.vertex_normals * dn)[inner.ravel()].sum(1)
    assert np.arccos(np.clip(cos, -1, 1)).max() < 0.02


def test_dense_mesh_max_edge_drops_triangles_across_a_jump():
    _, _, pm, nm, disp = _plane_with_waves(10, 12, 12.0, 0.0, 0.0, 0.0, 0.0)
    pm = pm.copy()
    pm[:, 6:, 2] += 50.0  # two islands side by side in UV, far apart in space
    mask = np.ones((10, 12), bool)
    full = uv.displaced_dense_mesh(pm, nm, disp, mask)
    cut = uv.displaced_dense_mesh(pm, nm, disp, mask, max_edge=5.0)
    assert len(full.faces) == 2 * 9 * 11
    assert len(cut.faces) == 2 * 9 * 10  # the column of cells across the jump is gone
    tri = cut.vertices[cut.faces]
    edges = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1)
    assert edges.max() < 5.0
    assert len(cut.vertices) == len(full.vertices) == 120


def test_dense_mesh_shape_errors():
    _, _, pm, nm, disp = _plane_with_waves(6, 5, 1.0, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="position_map"):
        uv.displaced_dense_mesh(pm[..., :2], nm, disp)
    with pytest.raises(ValueError, match="normal_map"):
        uv.displaced_dense_mesh(pm, nm[:, :4], disp)
    with pytest.raises(ValueError, match="displacement"):
        uv.displaced_dense_mesh(pm, nm, disp.T)
    with pytest.raises(ValueError, match="mask"):
        uv.displaced_dense_mesh(pm, nm, disp, np.ones((5, 6), bool))


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_dense_mesh_keeps_its_uvs_on_disk(tmp_path, suffix):
    from facehd.mesh import load_mesh, save_mesh

    table, pm, nm = _sphere_maps((12, 10))
    mesh = uv.displaced_dense_mesh(pm, nm, np.full(table.size, 0.2), table.mask)
    back = load_mesh(save_mesh(tmp_path / f"dense{suffix}", mesh))
    assert back.uvs is not None
    np.testing.assert_allclose(back.uvs, mesh.uvs, atol=1e-6)
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, mesh.faces)


def test_sizes_are_checked_and_numpy_ints_taken() -> None:
    assert uv.texel_centers_uv(np.int64(4)).shape == (4, 4, 2)
    assert uv.texel_centers_uv((np.int32(3), 5)).shape == (3, 5, 2)
    for bad in ((4, 0), (0, 4), -2):
        with pytest.raises(ValueError, match="size must be positive"):
            uv.texel_centers_uv(bad)
    with pytest.raises(ValueError, match="an int or a pair"):
        uv.texel_centers_uv("big")


def test_sampling_matrix_stores_only_the_taps_that_weigh() -> None:
    """A UV at a texel centre or clamped to a corner reads one texel: one stored entry, of
    weight 1; a UV between four texel centres reads all four."""
    size = (4, 8)  # texel centres exact in binary
    centres = uv.texel_centers_uv(size).reshape(-1, 2)[[0, 9, 31]]
    outside = np.array([[-0.3, 1.4], [1.2, -0.1]])
    between = np.array([[0.3, 0.41], [0.77, 0.62]])
    mat = uv.uv_sampling_matrix(np.concatenate([centres, outside, between]), size)
    assert list(np.diff(mat.indptr)) == [1, 1, 1, 1, 1, 4, 4]
    np.testing.assert_array_equal(mat.data[:5], 1.0)
    np.testing.assert_allclose(np.asarray(mat.sum(1)).ravel(), 1.0)


def test_interpolation_is_in_floats_for_integer_and_float32_attributes() -> None:
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    table = uv.rasterize_uv(uvs, np.array([[0, 1, 2]]), 8)
    for attr in (np.array([0, 1, 2]), np.array([0.0, 1.0, 2.0], dtype=np.float32)):
        got = table.interpolate(attr)
        assert got.dtype == np.float64
        ref = table.interpolate(attr.astype(np.float64))
        np.testing.assert_allclose(got, ref, rtol=1e-7)
        assert len(np.unique(got[table.mask])) > 3  # fractions, not truncated integers


def test_degenerate_uv_triangles_are_skipped_without_a_warning() -> None:
    import warnings

    uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.9, 0.9]])
    faces = np.array([[0, 1, 2], [3, 2, 4], [3, 3, 4], [0, 2, 2]])  # the last two: no area
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = uv.rasterize_uv(uvs, faces, 32)
    assert set(np.unique(table.face_ids[table.mask])) == {0, 1}


def test_shapes_and_indices_that_are_refused() -> None:
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="integer dtype"):
        uv.rasterize_uv(uvs, np.array([[0.0, 1.0, 2.0]]), 8)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        uv.rasterize_uv(uvs, np.array([[0, 1, -1]]), 8)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        uv.sample_uv_map(np.zeros((2, 4, 4, 3)), uvs)
    table = uv.rasterize_uv(uvs, np.array([[0, 1, 2]]), 8)
    with pytest.raises(ValueError, match="vertex_normals must have shape"):
        uv.normal_map(table, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"face_ids and mask must have shape \(H, W\) = \(8, 8\)"):
        uv.UVRasterTable((8, 8), table.face_ids[:4], table.barycentrics, table.mask, table.faces, 3)
    with pytest.raises(ValueError, match=r"barycentrics must have shape \(8, 8, 3\)"):
        uv.UVRasterTable(
            (8, 8), table.face_ids, table.barycentrics[..., :2], table.mask, table.faces, 3
        )
    with pytest.raises(ValueError, match=r"position_map must have shape \(H, W, 3\)"):
        uv.detail_normals(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)), np.zeros((4, 4)))


def test_dense_mesh_takes_a_trailing_channel_and_refuses_non_finite_displacement() -> None:
    h = w = 5
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    p = np.stack([cols, -rows, np.zeros_like(cols)], -1)
    n = np.zeros_like(p)
    n[..., 2] = 1.0
    d = np.linspace(0.0, 1.0, h * w).reshape(h, w)
    flat = uv.displaced_dense_mesh(p, n, d)
    chan = uv.displaced_dense_mesh(p, n, d[..., None])
    np.testing.assert_array_equal(chan.vertices, flat.vertices)
    np.testing.assert_array_equal(flat.vertices[:, 2], d.ravel())
    d[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN/inf inside the mask"):
        uv.displaced_dense_mesh(p, n, d)
    mask = np.ones((h, w), dtype=bool)
    mask[2, 3] = False  # outside the mask it is not looked at
    assert len(uv.displaced_dense_mesh(p, n, d, mask).vertices) == h * w - 1

"""The renderer against analytic images, brute-force ray casting and finite differences.

Every backend goes through the same test functions; the nvdiffrast ones skip (with the reason)
where nvdiffrast or CUDA is missing, and the nvdiffrast backend's own code also runs everywhere on
a CPU reference of nvdiffrast's primitives (``nvdiffrast_reference.py``).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from facehd.render import (
    CpuBackend,
    PinholeCamera,
    Renderer,
    hrn_camera,
    sh_basis,
    shade_sh,
)
from facehd.render.nvdiffrast_backend import nvdiffrast_available
from facehd.render.raster import zbuffer_visibility

GPU_OK = nvdiffrast_available() and torch.cuda.is_available()
GPU_REASON = "nvdiffrast backend needs the 'gpu' extra (nvdiffrast) and a CUDA device"

BACKENDS = [
    pytest.param("zbuffer", id="cpu-zbuffer"),
    pytest.param("raycast", id="cpu-raycast"),
    pytest.param(
        "nvdiffrast", id="nvdiffrast", marks=pytest.mark.skipif(not GPU_OK, reason=GPU_REASON)
    ),
    # the GPU backend's own code on a CPU reference of nvdiffrast's primitives
    pytest.param("nvdiffrast-reference", id="nvdiffrast-reference"),
]

_spec = importlib.util.spec_from_file_location(
    "nvdiffrast_reference", Path(__file__).parent / "nvdiffrast_reference.py"
)
nvdiffrast_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nvdiffrast_reference)


def make_renderer(kind: str, camera: PinholeCamera) -> Renderer:
    if kind == "nvdiffrast":
        return Renderer(camera, "nvdiffrast")
    if kind == "nvdiffrast-reference":
        return Renderer(camera, nvdiffrast_reference.backend())
    return Renderer(camera, CpuBackend(visibility=kind))


def is_gpu(kind: str) -> bool:
    """float32 backends (nvdiffrast and its reference)."""
    return kind.startswith("nvdiffrast")


def cpu(x: torch.Tensor) -> torch.Tensor:
    return x.detach().cpu().double()


def sphere(radius: float = 90.0, subdivisions: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    m = trimesh.creation.icosphere(subdivisions=subdivisions)
    return torch.tensor(m.vertices * radius), torch.tensor(m.faces, dtype=torch.int64)


def grid_mesh(n: int, half: float, height) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A height-field patch over ``[-half, half]^2`` (mm) with planar UVs."""
    u = np.linspace(0.0, 1.0, n)
    uu, vv = np.meshgrid(u, u)
    x = (uu - 0.5) * 2 * half
    y = (vv - 0.5) * 2 * half
    verts = np.stack([x, y, height(x, y)], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = (
        idx[:-1, :-1].ravel(),
        idx[:-1, 1:].ravel(),
        idx[1:, 1:].ravel(),
        idx[1:, :-1].ravel(),
    )
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    uvs = np.stack([uu, vv], -1).reshape(-1, 2)
    return torch.tensor(verts), torch.tensor(faces, dtype=torch.int64), torch.tensor(uvs)


def analytic_sphere_hits(camera: PinholeCamera, radius: float):
    """Per pixel: hit on the exact sphere at the origin, hit mask, ray-centre distance, depth."""
    h, w = camera.image_size
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pix = torch.stack([cols, rows], -1).reshape(1, -1, 2).double()
    d_cam = camera.pixel_rays(pix)[0]
    R, t = camera.R[0], camera.t[0]
    d = d_cam @ R  # world direction (R^T d)
    c = camera.centers()[0]
    # |c + s d|^2 = r^2
    a = (d * d).sum(-1)
    b = 2 * (d * c).sum(-1)
    cc = (c * c).sum() - radius**2
    disc = b * b - 4 * a * cc
    s = (-b - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    p = c + s[:, None] * d
    ray_dist = torch.sqrt(((c - (c * d).sum(-1, keepdim=True) / a[:, None] * d) ** 2).sum(-1))
    z_cam = (p @ R.T + t)[:, 2]
    return p.reshape(h, w, 3), (disc > 0).reshape(h, w), ray_dist.reshape(h, w), z_cam.reshape(h, w)


SH = torch.tensor(
    [
        [0.8, 0.7, 0.75],
        [0.1, -0.05, 0.0],
        [0.4, 0.3, 0.35],
        [-0.2, -0.1, -0.15],
        [0.05, 0.02, 0.0],
        [0.03, -0.02, 0.01],
        [0.1, 0.05, 0.08],
        [-0.04, 0.0, 0.02],
        [0.06, 0.03, -0.01],
    ],
    dtype=torch.float64,
)


@pytest.mark.parametrize("kind", BACKENDS)
def test_sphere_matches_analytic_sh_image(kind: str) -> None:
    radius = 90.0
    cam = hrn_camera(1.0)
    v, f = sphere(radius)
    albedo = torch.tensor([0.9, 0.7, 0.6], dtype=torch.float64)
    r = make_renderer(kind, cam)
    res = r.render(v, f, normals=v / radius, colors=albedo.expand(len(v), 3), sh=SH)
    p, hit, ray_dist, z_cam = analytic_sphere_hits(cam, radius)
    expected = shade_sh((p / radius)[None], albedo, SH)[0]
    footprint = 1000.0 / 1015.0  # mm per pixel at the sphere
    interior = ray_dist < radius - 3 * footprint
    mask = cpu(res.mask).bool()[0]
    assert bool(mask[interior].all())
    # The tessellated sphere is inscribed: every covered pixel hits the exact sphere too.
    assert bool(hit[mask].all())
    missing = hit & ~mask
    assert bool((ray_dist[missing] > radius - 1.5 * footprint).all())
    img = cpu(res.image)[0]
    tol = 2e-3 if not is_gpu(kind) else 5e-3
    assert (img[interior] - expected[interior]).abs().max() < tol
    # The flat triangles sit at most 0.026 mm inside the sphere; along a grazing ray that gap
    # grows as 1 / cos(incidence).
    cos_in = torch.sqrt(1 - (ray_dist / radius).clamp(max=1) ** 2)[interior]
    depth_err = (cpu(res.depth)[0][interior] - z_cam[interior]).abs()
    assert bool((depth_err < 0.03 / cos_in).all())
    pos_err = (cpu(res.positions)[0][interior] - p[interior]).norm(dim=-1)
    assert bool((pos_err < 0.03 / cos_in).all())
    n_err = (cpu(res.normals)[0][interior] - p[interior] / radius).norm(dim=-1).max()
    assert n_err < 2e-3
    # Background untouched.
    assert float(img[~mask].abs().max()) == 0.0


def brute_force_raycast(
    verts_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, size, near: float = 0.0
):
    """Nearest triangle per pixel centre by testing every ray against every triangle (hits at
    camera depth ``near`` or closer do not count)."""
    h, w = size
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pix = np.stack([cols.ravel(), rows.ravel(), np.ones(h * w)], 1)
    d = pix @ np.linalg.inv(K).T  # (P, 3), z = 1
    v0, v1, v2 = (verts_cam[faces[:, k]] for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    pvec = np.cross(d[:, None], e2[None])  # (P, F, 3)
    det = (e1[None] * pvec).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        tvec = -v0[None]
        u = (tvec * pvec).sum(-1) * inv
        q = np.cross(tvec, e1[None])
        vv = (d[:, None] * q).sum(-1) * inv
        t = (e2[None] * q).sum(-1) * inv
        ok = (np.abs(det) > 1e-12) & (u >= 0) & (vv >= 0) & (u + vv <= 1) & (t > near)
    t = np.where(ok, t, np.inf)
    best = t.argmin(1)
    rows = np.arange(len(t))
    tmin = t[rows, best]
    face = np.where(np.isfinite(tmin), best, -1)
    point = d * np.where(np.isfinite(tmin), tmin, 0.0)[:, None]
    bu, bv = u[rows, best], vv[rows, best]  # weights of the triangle's 2nd and 3rd vertices
    bary = np.stack([1.0 - bu - bv, bu, bv], -1)
    return face.reshape(h, w), point.reshape(h, w, 3), bary.reshape(h, w, 3)


@pytest.mark.parametrize("kind", BACKENDS)
def test_visibility_matches_brute_force_ray_casting(kind: str) -> None:
    # Two overlapping bumpy patches and a sphere: occlusion between separate parts.
    v1, f1, _ = grid_mesh(9, 60.0, lambda x, y: 10 * np.sin(x / 20) * np.cos(y / 25))
    v2, f2 = sphere(35.0, subdivisions=2)
    v2 = v2 + torch.tensor([20.0, 10.0, 30.0], dtype=torch.float64)
    v3 = v1 * 0.5 + torch.tensor([-30.0, -20.0, -40.0], dtype=torch.float64)
    verts = torch.cat([v1, v2, v3])
    faces = torch.cat([f1, f2 + len(v1), f1 + len(v1) + len(v2)])
    K = np.array([[160.0, 0.0, 40.0], [0.0, 150.0, 36.0], [0.0, 0.0, 1.0]])
    ang = 0.35
    R = np.array(
        [[math.cos(ang), 0, -math.sin(ang)], [0, -1, 0], [math.sin(ang), 0, math.cos(ang)]]
    )
    R = R @ np.diag([1.0, 1.0, -1.0])
    cam = PinholeCamera.from_matrices(K, R, [3.0, -4.0, 420.0], (72, 80))
    r = make_renderer(kind, cam)
    frags = r.rasterize(verts, faces)
    vc = cam.world_to_camera(verts)[0].numpy()
    face_ref, point_ref, bary_ref = brute_force_raycast(vc, faces.numpy(), K, (72, 80))
    mask = cpu(frags.mask)[0].bool().numpy()
    mask_ref = face_ref >= 0
    # Pixel centres exactly on a silhouette edge may go either way (float32 for Embree / GPU).
    allowed = 0 if kind == "zbuffer" else 3
    assert (mask != mask_ref).sum() <= allowed
    both = mask & mask_ref
    # The same surface point is seen (ties on shared edges may name either triangle).
    pos_cam = cpu(r.interpolate(frags, cam.world_to_camera(verts)))[0].numpy()
    err = np.abs(pos_cam[both] - point_ref[both]).max()
    assert err < (1e-6 if kind == "zbuffer" else 1e-2)
    same = (cpu(frags.face_ids)[0].numpy() == face_ref)[both].mean()
    assert same > 0.99
    np.testing.assert_allclose(cpu(frags.depth)[0].numpy()[both], point_ref[both][:, 2], atol=1e-2)
    bary = cpu(frags.barycentrics)[0].numpy()[both]
    np.testing.assert_allclose(bary.sum(-1), 1.0, atol=1e-5)
    assert bary.min() > -1e-3
    # each weight belongs to its vertex: where the same triangle is seen, the ray's barycentrics
    on_same = (cpu(frags.face_ids)[0].numpy() == face_ref)[both]
    np.testing.assert_allclose(bary[on_same], bary_ref[both][on_same], atol=1e-3)


def test_zbuffer_hands_near_plane_crossings_to_ray_casting() -> None:
    # The camera sits inside a sphere: triangles straddle the near plane.
    v, f = sphere(50.0, subdivisions=3)
    cam = PinholeCamera.from_matrices(
        np.array([[30.0, 0, 24.0], [0, 30.0, 24.0], [0, 0, 1.0]]),
        np.eye(3),
        [0.0, 0.0, 0.0],
        (48, 48),
    )
    vc = cam.world_to_camera(v)[0]
    pix = cam.camera_to_pixels(vc[None])[0]
    assert zbuffer_visibility(pix.numpy(), vc[:, 2].numpy(), f.numpy(), (48, 48), 1e-6) is None
    frags = Renderer(cam, CpuBackend("zbuffer")).rasterize(v, f)
    face_ref, point_ref, _ = brute_force_raycast(vc.numpy(), f.numpy(), cam.K[0].numpy(), (48, 48))
    assert bool(frags.mask.all()) and (face_ref >= 0).all()
    np.testing.assert_allclose(frags.depth[0].numpy(), point_ref[..., 2], atol=1e-3)


@pytest.mark.parametrize("visibility", ["zbuffer", "raycast"])
def test_random_triangle_soups_match_brute_force_with_a_near_plane(visibility: str) -> None:
    # Small random meshes whose triangles overlap, leave the image, lie behind the camera,
    # straddle the near plane or are degenerate: each pixel centre sees the nearest triangle
    # that covers it beyond ``near`` (a ray from the camera against every triangle), whichever
    # path (z-buffer, or ray casting for the meshes crossing the near plane) the backend takes.
    near = 0.8
    K = np.array([[9.0, 0.0, 7.37], [0.0, 8.5, 6.21], [0.0, 0.0, 1.0]])
    cam = PinholeCamera.from_matrices(K, np.eye(3), np.zeros(3), (13, 16))
    rng = np.random.default_rng(5)
    triples = np.array(list(itertools.combinations(range(14), 3)))
    straddling = 0
    for trial in range(24):
        z = rng.uniform(0.3 if trial % 2 else 1.0, 4.0, 14)
        vc = np.c_[rng.uniform(-1.2, 1.2, (14, 2)) * z[:, None], z]
        if trial % 3 == 0:
            vc[:3, 2] *= -1.0  # behind the camera
        # distinct triangles (a repeated one ties everywhere), either winding
        faces = rng.permuted(triples[rng.choice(len(triples), 12, replace=False)], axis=1)
        faces[0] = [faces[0, 0], faces[0, 0], faces[0, 1]]  # a degenerate triangle
        zf = vc[faces, 2]
        straddling += int(((zf > near).any(1) & (zf <= near).any(1)).any())
        frags = CpuBackend(visibility, near=near).rasterize(
            torch.tensor(vc), torch.tensor(faces), cam
        )
        face_ref, point_ref, bary_ref = brute_force_raycast(vc, faces, K, (13, 16), near)
        ids = frags.face_ids[0].numpy()
        np.testing.assert_array_equal(ids, face_ref, err_msg=f"trial {trial}")
        hit = face_ref >= 0
        np.testing.assert_allclose(frags.depth[0].numpy()[hit], point_ref[hit][:, 2], atol=1e-9)
        np.testing.assert_allclose(frags.barycentrics[0].numpy()[hit], bary_ref[hit], atol=1e-9)
        assert bool((frags.depth[0].numpy()[hit] > near).all())
    assert straddling >= 8


def _fd_setup(dtype=torch.float64):
    v, f, uvs = grid_mesh(7, 40.0, lambda x, y: 8 * np.sin(x / 15) * np.cos(y / 18) + 0.05 * x)
    K = np.array([[70.0, 0.0, 24.37], [0.0, 70.0, 20.61], [0.0, 0.0, 1.0]])  # no exact ties
    cam = PinholeCamera.from_matrices(K, np.diag([1.0, -1.0, -1.0]), [0.0, 0.0, 150.0], (40, 48))
    g = torch.Generator().manual_seed(0)
    colors = torch.rand(len(v), 3, generator=g, dtype=torch.float64) * 0.8 + 0.1
    weights = torch.randn(1, 40, 48, 3, generator=g, dtype=torch.float64)
    return v.to(dtype), f, colors.to(dtype), SH.to(dtype), cam.to(dtype=dtype), weights.to(dtype)


def _loss(r: Renderer, v, f, colors, sh, weights, shading="pixel"):
    res = r.render(v, f, colors=colors, sh=sh, shading=shading)
    return (res.image * weights.to(res.image.device)).sum(), res


@pytest.mark.parametrize("shading", ["pixel", "vertex"])
@pytest.mark.parametrize("kind", BACKENDS)
def test_gradients_match_finite_differences(kind: str, shading: str) -> None:
    gpu = is_gpu(kind)
    dtype = torch.float32 if gpu else torch.float64
    v, f, colors, sh, cam, weights = _fd_setup(dtype)
    r = make_renderer(kind, cam)
    vv = v.clone().requires_grad_(True)
    cc = colors.clone().requires_grad_(True)
    ss = sh.clone().requires_grad_(True)
    loss, res = _loss(r, vv, f, cc, ss, weights, shading)
    assert int(res.mask.sum()) > 400
    loss.backward()
    eps = 1e-2 if gpu else 1e-6
    rtol = 5e-2 if gpu else 1e-5
    ids0 = res.fragments.face_ids

    def numeric(tensor_name: str, index) -> float | None:
        vals = []
        for sign in (1, -1):
            args = {"v": v.clone(), "c": colors.clone(), "s": sh.clone()}
            args[tensor_name][index] += sign * eps
            with torch.no_grad():
                val, res_p = _loss(r, args["v"], f, args["c"], args["s"], weights, shading)
            if not torch.equal(res_p.fragments.face_ids, ids0):
                return None  # a pixel changed triangle: no derivative there
            vals.append(float(val))
        return (vals[0] - vals[1]) / (2 * eps)

    g = torch.Generator().manual_seed(1)
    checked = 0
    for name, grad, shape in (
        ("v", vv.grad, v.shape),
        ("c", cc.grad, colors.shape),
        ("s", ss.grad, sh.shape),
    ):
        flat = torch.randperm(int(np.prod(shape)), generator=g)[:14]
        for k in flat.tolist():
            index = np.unravel_index(k, shape)
            num = numeric(name, index)
            if num is None:
                continue
            ana = float(grad[index])
            scale = max(1.0, abs(num))
            assert abs(ana - num) <= rtol * scale, (name, index, ana, num)
            checked += 1
    assert checked >= 36


def test_perspective_correct_uvs_on_a_slanted_plane() -> None:
    # Plane through the origin, tilted 60 degrees about y; u, v linear in the plane coordinates.
    ang = math.radians(60)
    e1 = np.array([math.cos(ang), 0.0, math.sin(ang)])
    e2 = np.array([0.0, 1.0, 0.0])
    s = 150.0
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    verts = torch.tensor(s * (corners[:, :1] * e1 + corners[:, 1:] * e2))
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor((corners + 1) / 2)
    cam = hrn_camera(1.0)
    res = Renderer(cam).render(
        verts, faces, uvs=uvs, normals=torch.zeros(4, 3, dtype=torch.float64)
    )
    # Analytic: intersect each pixel ray with the plane.
    h, w = cam.image_size
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d = cam.pixel_rays(torch.stack([cols, rows], -1).reshape(1, -1, 2).double())[0] @ cam.R[0]
    c = cam.centers()[0]
    normal = torch.tensor(np.cross(e1, e2))
    t = -(c @ normal) / (d @ normal)
    p = c + t[:, None] * d
    uv = torch.stack([(p @ torch.tensor(e1) / s + 1) / 2, (p @ torch.tensor(e2) / s + 1) / 2], -1)
    mask = res.mask[0].reshape(-1)
    assert int(mask.sum()) > 5000
    torch.testing.assert_close(res.uvs[0].reshape(-1, 2)[mask], uv[mask], atol=1e-9, rtol=0)
    # A screen-space (affine) interpolation would be off by far more than that.
    assert float((uv[mask] - uv[mask].mean(0)).abs().max()) > 0.3


@pytest.mark.parametrize("kind", BACKENDS)
def test_texture_sampling_reproduces_a_linear_texture(kind: str) -> None:
    # A textured square facing the camera; a texture linear in (u, v) is reproduced exactly by
    # bilinear sampling away from the clamped border.
    v, f, uvs = grid_mesh(2, 100.0, lambda x, y: 0 * x)
    ht, wt = 64, 48
    rows, cols = torch.meshgrid(torch.arange(ht), torch.arange(wt), indexing="ij")
    tu = (cols + 0.5) / wt
    tv = 1 - (rows + 0.5) / ht
    tex = torch.stack([tu, tv, 0.5 * tu + 0.25 * tv], 0)[None].double()
    cam = hrn_camera(1.0)
    r = make_renderer(kind, cam)
    res = r.render(
        v, f, uvs=uvs, texture=tex, normals=torch.tensor([[0, 0, 1.0]]).expand(4, 3).double()
    )
    # Analytic uv of each pixel: the plane z = 0.
    x = (torch.arange(224).double() - 112) * 1000 / 1015
    y = (111 - torch.arange(224).double()) * 1000 / 1015
    u = ((x + 100) / 200)[None, :].expand(224, 224)
    vv = ((y + 100) / 200)[:, None].expand(224, 224)
    inner = (u > 1.0 / wt) & (u < 1 - 1.0 / wt) & (vv > 1.0 / ht) & (vv < 1 - 1.0 / ht)
    img = cpu(res.image)[0]
    expected = torch.stack([u, vv, 0.5 * u + 0.25 * vv], -1)
    # (torch's grid_sample keeps ~1e-8 even in float64)
    tol = 1e-6 if not is_gpu(kind) else 2e-3
    assert (img[inner] - expected[inner]).abs().max() < tol
    uv_tol = 1e-12 if not is_gpu(kind) else 1e-5
    assert (cpu(res.uvs)[0][inner] - torch.stack([u, vv], -1)[inner]).abs().max() < uv_tol


@pytest.mark.parametrize("kind", BACKENDS)
def test_batch_equals_single_renders(kind: str) -> None:
    v, f = sphere(80.0, subdivisions=3)
    g = torch.Generator().manual_seed(2)
    verts = torch.stack([v, v * 0.7 + torch.tensor([30.0, -20.0, 10.0], dtype=torch.float64)])
    colors = torch.rand(2, len(v), 3, generator=g, dtype=torch.float64)
    sh = torch.stack([SH, SH.flip(0)])
    cam = hrn_camera(1.0)
    r = make_renderer(kind, cam)
    batch = r.render(verts, f, colors=colors, sh=sh, background=0.25)
    for i in range(2):
        single = r.render(verts[i], f, colors=colors[i], sh=sh[i : i + 1], background=0.25)
        torch.testing.assert_close(cpu(batch.image[i]), cpu(single.image[0]))
        torch.testing.assert_close(cpu(batch.depth[i]), cpu(single.depth[0]))
        assert torch.equal(batch.mask[i].cpu(), single.mask[0].cpu())
    assert float((batch.image[0] - batch.image[1]).abs().max()) > 0.1
    assert float(cpu(batch.image)[0][~batch.mask[0].cpu()].sub(0.25).abs().max()) == 0.0


def test_vertex_shading_equals_interpolated_vertex_colours() -> None:
    v, f = sphere(80.0, subdivisions=3)
    n = v / 80.0
    colors = torch.rand(len(v), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    r = Renderer(hrn_camera(1.0))
    res = r.render(v, f, colors=colors, normals=n, sh=SH, shading="vertex")
    lit = shade_sh(n[None], colors[None], SH)
    torch.testing.assert_close(res.image, r.interpolate(res.fragments, lit))
    # Pixel shading differs from vertex shading only by interpolation order (small).
    pix = r.render(v, f, colors=colors, normals=n, sh=SH, shading="pixel")
    assert float((pix.image - res.image).abs().max()) < 0.05


def test_sh_basis_is_what_the_renderer_shades_with() -> None:
    # Unlit render returns the albedo; lit render divides back to the SH irradiance.
    v, f = sphere(80.0, subdivisions=4)
    n = v / 80.0
    r = Renderer(hrn_camera(1.0))
    unlit = r.render(v, f, normals=n, colors=torch.full((len(v), 3), 0.5, dtype=torch.float64))
    lit = r.render(v, f, normals=n, colors=torch.full((len(v), 3), 0.5, dtype=torch.float64), sh=SH)
    m = lit.mask[0]
    torch.testing.assert_close(unlit.image[0][m], torch.full_like(unlit.image[0][m], 0.5))
    irr = sh_basis(lit.normals[0][m]) @ SH
    torch.testing.assert_close(lit.image[0][m], 0.5 * irr)


def test_bad_inputs_raise_clear_errors() -> None:
    v, f = sphere(80.0, subdivisions=1)
    r = Renderer(hrn_camera(1.0))
    with pytest.raises(ValueError, match=r"vertices \(B, V, 3\)"):
        r.render(v[:, :2], f)
    with pytest.raises(ValueError, match="face indices"):
        r.render(v, f + 1000)
    with pytest.raises(ValueError, match="colors"):
        r.render(v, f, colors=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="uvs"):
        r.render(v, f, texture=torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="unknown renderer backend"):
        Renderer(hrn_camera(1.0), "opengl")
    with pytest.raises(ValueError, match="visibility"):
        CpuBackend("scanline")
    two_cameras = PinholeCamera(
        torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
        torch.eye(3, dtype=torch.float64),
        torch.tensor([0.0, 0.0, 500.0], dtype=torch.float64),
        (8, 8),
    )
    with pytest.raises(ValueError, match="camera batch"):
        Renderer(two_cameras).rasterize(torch.stack([v, v, v]), f)


def test_render_refuses_what_it_cannot_draw() -> None:
    v, f = sphere(80.0, subdivisions=1)
    v2 = torch.stack([v, v])
    r = Renderer(hrn_camera(1.0))
    uvs = torch.zeros(len(v), 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="PinholeCamera"):
        Renderer("hrn")
    with pytest.raises(ValueError, match=r"colors \(2, 42, 3\)"):
        r.render(v2, f, colors=torch.zeros(3, len(v), 3))
    with pytest.raises(ValueError, match="normals"):
        r.render(v, f, normals=torch.zeros(len(v) - 1, 3))
    with pytest.raises(ValueError, match="shading must be 'pixel' or 'vertex'"):
        r.render(v, f, shading="flat")
    with pytest.raises(ValueError, match="need per-vertex uvs"):
        r.render(v, f, normal_map=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="vertex colours"):
        r.render(v, f, uvs=uvs, normal_map=torch.zeros(1, 3, 4, 4), shading="vertex")
    with pytest.raises(ValueError, match=r"normal_map_mask \(5, 4\) does not match"):
        r.render(
            v, f, uvs=uvs, normal_map=torch.zeros(1, 3, 4, 4),
            normal_map_mask=torch.ones(5, 4, dtype=torch.bool),
        )  # fmt: skip


def test_mesh_and_attribute_checks_name_what_they_refuse() -> None:
    from facehd.render.raster import check_mesh_batch

    v, f = sphere(80.0, subdivisions=1)
    with pytest.raises(TypeError, match="vertices must be a torch tensor, got ndarray"):
        check_mesh_batch(v.numpy(), f, "render")
    with pytest.raises(ValueError, match="vertices must be floating point, got torch.int64"):
        check_mesh_batch(v.long(), f, "render")
    with pytest.raises(ValueError, match=r"expected faces \(F, 3\), got \(80, 4\)"):
        check_mesh_batch(v, torch.zeros(80, 4, dtype=torch.int64), "render")
    with pytest.raises(ValueError, match=r"face indices must lie in \[0, 42\), got \[-1, "):
        check_mesh_batch(v, torch.cat([f, torch.tensor([[0, 1, -1]])]), "render")
    r = Renderer(hrn_camera(1.0))
    frags = r.rasterize(torch.stack([v, v]), f)
    with pytest.raises(ValueError, match=r"expected attributes \(B, 42, C\) or \(42, C\)"):
        r.interpolate(frags, torch.zeros(41, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="attribute batch 3 does not match 2"):
        r.interpolate(frags, torch.zeros(3, 42, 3, dtype=torch.float64))
    shared = r.interpolate(frags, torch.ones(42, 1, dtype=torch.float64))  # one for the batch
    assert shared.shape[0] == 2
    torch.testing.assert_close(shared[frags.mask], torch.ones_like(shared[frags.mask]))


def test_outside_the_mask_normals_and_albedo_are_zero() -> None:
    """Pixels that miss the mesh hold 0 in every per-pixel map, also where a normal map or
    the default white albedo would put something there; the background colour is the image's."""
    v, f, uvs = grid_mesh(5, 60.0, lambda x, y: 0 * x)
    r = Renderer(hrn_camera(1.0))
    normal_map = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    normal_map[:, 2] = 1.0
    res = r.render(v, f, uvs=uvs, normal_map=normal_map, sh=SH, background=0.25)
    m = res.mask[0]
    assert 0.1 < float(m.double().mean()) < 0.5
    assert float(res.normals[0][~m].abs().max()) == 0.0
    torch.testing.assert_close(
        res.normals[0][m],
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(int(m.sum()), 3),
    )
    assert float(res.albedo[0][~m].abs().max()) == 0.0
    assert bool((res.albedo[0][m] == 1.0).all())  # white where there are no colours
    assert bool((res.image[0][~m] == 0.25).all())


def test_vertex_shading_takes_unnormalised_normals() -> None:
    """Normals of any length shade as the unit normals in their direction (shading='vertex'
    normalises them, as 'pixel' does)."""
    v, f = sphere(80.0, subdivisions=2)
    n = v / 80.0
    r = Renderer(hrn_camera(1.0))
    unit = r.render(v, f, normals=n, sh=SH, shading="vertex")
    scale = torch.linspace(0.5, 3.0, len(v), dtype=torch.float64)[:, None]
    long = r.render(v, f, normals=n * scale, sh=SH, shading="vertex")
    torch.testing.assert_close(long.image, unit.image)


@pytest.mark.skipif(nvdiffrast_available(), reason="nvdiffrast is installed")
def test_missing_nvdiffrast_names_the_gpu_extra() -> None:
    with pytest.raises(ImportError, match=r"facehd\[gpu\]"):
        Renderer(hrn_camera(1.0), "nvdiffrast")
    assert isinstance(Renderer(hrn_camera(1.0), "auto").backend, CpuBackend)


def test_texture_lookup_follows_the_uv_convention() -> None:
    # The renderer's texture sampler equals facehd.uv's numpy bilinear sampler (edge clamping,
    # texel centres at ((j + 0.5) / W, 1 - (i + 0.5) / H)), including outside [0, 1].
    from facehd.render.raster import sample_texture_torch
    from facehd.uv import sample_uv_map

    g = torch.Generator().manual_seed(4)
    tex = torch.rand(3, 7, 9, generator=g, dtype=torch.float64)
    uv = torch.rand(1, 5, 6, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    got = sample_texture_torch(uv, tex)[0].reshape(-1, 3)
    ref = sample_uv_map(tex.permute(1, 2, 0).numpy(), uv.reshape(-1, 2).numpy())
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)


@pytest.mark.parametrize(
    ("uv_shape", "tex_shape", "message"),
    [
        ((2, 5, 6, 2), (7, 9), r"expected texture \(B, C, Ht, Wt\), got \(7, 9\)"),
        ((2, 5, 6), (3, 7, 9), r"expected uv \(B, H, W, 2\), got \(2, 5, 6\)"),
        ((2, 5, 6, 3), (3, 7, 9), r"expected uv \(B, H, W, 2\), got \(2, 5, 6, 3\)"),
        ((2, 5, 6, 2), (3, 3, 7, 9), r"texture batch 3 vs uv batch 2"),
    ],
)
def test_texture_lookup_names_bad_shapes(
    uv_shape: tuple[int, ...], tex_shape: tuple[int, ...], message: str
) -> None:
    # the checks every backend's sample_texture makes (facehd.render.raster.check_texture)
    from facehd.render.raster import sample_texture_torch

    with pytest.raises(ValueError, match=message):
        sample_texture_torch(torch.zeros(uv_shape), torch.zeros(tex_shape))
    one = sample_texture_torch(torch.zeros(2, 5, 6, 2), torch.ones(1, 3, 7, 9))  # shared texture
    assert one.shape == (2, 5, 6, 3)


@pytest.mark.parametrize("kind", ["zbuffer", "raycast"])
def test_camera_gradients_match_finite_differences(kind: str) -> None:
    v, f, colors, sh, cam, weights = _fd_setup()

    e00 = torch.zeros(3, 3, dtype=torch.float64)
    e00[0, 0] = 1.0

    def loss_for(t: torch.Tensor, focal: torch.Tensor):
        K = cam.K + (focal - cam.K[0, 0, 0]) * e00  # differentiable in the x focal length
        camera = PinholeCamera(K, cam.R, t, cam.image_size)
        return _loss(Renderer(camera, CpuBackend(kind)), v, f, colors, sh, weights)

    t = cam.t.clone().requires_grad_(True)
    focal = cam.K[0, 0, 0].clone().requires_grad_(True)
    loss, res = loss_for(t, focal)
    loss.backward()
    eps = 1e-6
    for k in range(3):
        dt = torch.zeros_like(t)
        dt[0, k] = eps
        with torch.no_grad():
            lp, rp = loss_for(t + dt, focal)
            lm, rm = loss_for(t - dt, focal)
        assert torch.equal(rp.fragments.face_ids, res.fragments.face_ids)
        assert torch.equal(rm.fragments.face_ids, res.fragments.face_ids)
        num = float(lp - lm) / (2 * eps)
        assert abs(float(t.grad[0, k]) - num) <= 1e-5 * max(1.0, abs(num))
    with torch.no_grad():
        num = float(loss_for(t, focal + eps)[0] - loss_for(t, focal - eps)[0]) / (2 * eps)
    assert abs(float(focal.grad) - num) <= 1e-5 * max(1.0, abs(num))

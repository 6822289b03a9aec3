"""Cameras and SH shading of facehd.render against the base model's formulas and SH identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facehd.render import PinholeCamera, gamma_to_sh, hrn_camera, sh_basis, sh_irradiance, shade_sh
from facehd.render.shading import SH_AMBIENT_INIT


def _random_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([-90, -110, -60], [90, 110, 90], size=(n, 3))


@pytest.mark.parametrize("unit_to_mm", [1.0, 100.0])
def test_hrn_camera_matches_base_model_formula(unit_to_mm: float) -> None:
    pts_mm = _random_points(50)
    pts = pts_mm / unit_to_mm
    d = 1000.0 / unit_to_mm
    # Deep3DFaceRecon: z_cam = d - z; x = f X / z_cam + 112; y = f Y / z_cam + 112; row = H-1-y.
    z_cam = d - pts[:, 2]
    x = 1015.0 * pts[:, 0] / z_cam + 112.0
    y = 1015.0 * pts[:, 1] / z_cam + 112.0
    expected = np.stack([x, 223.0 - y], axis=1)
    cam = hrn_camera(unit_to_mm)
    got = cam.project(torch.from_numpy(pts))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(cam.world_to_camera(torch.from_numpy(pts))[0, :, 2].numpy(), z_cam)
    np.testing.assert_allclose(cam.centers()[0].numpy(), [0.0, 0.0, d])


def test_hrn_camera_same_pixels_in_mm_and_bfm_units() -> None:
    pts_mm = torch.from_numpy(_random_points(20, seed=1))
    a = hrn_camera(1.0).project(pts_mm)
    b = hrn_camera(100.0).project(pts_mm / 100.0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_pinhole_projection_and_rays_are_inverse() -> None:
    rng = np.random.default_rng(3)
    K = np.array([[800.0, 2.0, 150.0], [0.0, 790.0, 110.0], [0.0, 0.0, 1.0]])
    angle = 0.3
    R = np.array(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
    )
    t = np.array([5.0, -3.0, 400.0])
    cam = PinholeCamera.from_matrices(K, R, t, (240, 320))
    pts = rng.uniform(-50, 50, size=(30, 3))
    cam_pts = pts @ R.T + t
    hom = cam_pts @ K.T
    expected = hom[:, :2] / hom[:, 2:]
    got = cam.project(torch.from_numpy(pts))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    rays = cam.pixel_rays(torch.from_numpy(expected)[None])[0].numpy()
    np.testing.assert_allclose(rays * cam_pts[:, 2:], cam_pts, rtol=1e-10)
    # Camera centre maps to the camera-frame origin.
    np.testing.assert_allclose(
        cam.world_to_camera(cam.centers())[0, 0].numpy(), np.zeros(3), atol=1e-9
    )


def test_batched_camera_and_shape_errors() -> None:
    K = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone()
    K[1, 0, 0] = 2.0
    cam = PinholeCamera(K, torch.eye(3, dtype=torch.float64), torch.tensor([0, 0, 5.0]), (10, 10))
    assert cam.batch_size == 2
    p = cam.project(torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64))
    assert p.shape == (2, 1, 2)
    torch.testing.assert_close(p[:, 0, 0], torch.tensor([0.2, 0.4], dtype=torch.float64))
    with pytest.raises(ValueError, match="K must be"):
        PinholeCamera(torch.eye(2), torch.eye(3), torch.zeros(3), (10, 10))
    with pytest.raises(ValueError, match="batch sizes"):
        PinholeCamera(
            torch.eye(3).expand(2, 3, 3), torch.eye(3).expand(3, 3, 3), torch.zeros(3), (4, 4)
        )
    with pytest.raises(ValueError, match="points"):
        cam.project(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="unit_to_mm"):
        hrn_camera(0.0)
    for size in ((0, 10), (10, 0)):
        with pytest.raises(ValueError, match="image_size must be positive"):
            PinholeCamera(torch.eye(3), torch.eye(3), torch.zeros(3), size)
    # the batch is the largest of the three: one K shared by two poses
    two_poses = torch.stack([torch.eye(3), torch.diag(torch.tensor([1.0, -1.0, -1.0]))])
    shared_k = PinholeCamera(torch.eye(3), two_poses, torch.tensor([0.0, 0.0, 5.0]), (4, 4))
    assert shared_k.batch_size == 2
    assert PinholeCamera(torch.eye(3), torch.eye(3), torch.zeros(2, 3), (4, 4)).batch_size == 2


def test_camera_from_matrices_takes_one_dtype() -> None:
    """numpy inputs follow K's tensor dtype (or the one asked for); a tensor K is converted when
    a dtype is asked for."""
    k32 = torch.eye(3, dtype=torch.float32)
    cam = PinholeCamera.from_matrices(k32, np.eye(3), np.array([0.0, 0.0, 5.0]))
    assert cam.K.dtype == cam.R.dtype == cam.t.dtype == torch.float32
    cam = PinholeCamera.from_matrices(np.eye(3), np.eye(3), np.zeros(3))
    assert cam.K.dtype == cam.R.dtype == cam.t.dtype == torch.float64
    cam = PinholeCamera.from_matrices(torch.eye(3, dtype=torch.float64), dtype=torch.float32)
    assert cam.K.dtype == cam.R.dtype == cam.t.dtype == torch.float32


def _unit(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


def test_sh_basis_obeys_the_addition_theorem() -> None:
    # basis_k = a_l Y_k (real SH); sum over a band of Y_k(n) Y_k(l) = (2l+1)/(4 pi) P_l(n . l),
    # whatever the signs of the individual functions.
    a = [math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0)]
    n, m = _unit(200, 0), _unit(200, 1)
    bn, bm = sh_basis(n), sh_basis(m)
    t = (n * m).sum(-1)
    legendre = [torch.ones_like(t), t, 0.5 * (3 * t * t - 1)]
    bands = [slice(0, 1), slice(1, 4), slice(4, 9)]
    for ell, sl in enumerate(bands):
        got = (bn[:, sl] * bm[:, sl]).sum(-1) / a[ell] ** 2
        expected = (2 * ell + 1) / (4 * math.pi) * legendre[ell]
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_sh_basis_matches_the_base_model_listing() -> None:
    n = _unit(5, 2)
    nx, ny, nz = n.unbind(-1)
    a0, a1, a2 = math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0)
    c0 = 1 / math.sqrt(4 * math.pi)
    c1 = math.sqrt(3.0) / math.sqrt(4 * math.pi)
    c2 = 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi)
    expected = torch.stack(
        [
            torch.full_like(nx, a0 * c0),
            -a1 * c1 * ny,
            a1 * c1 * nz,
            -a1 * c1 * nx,
            a2 * c2 * nx * ny,
            -a2 * c2 * ny * nz,
            0.5 * a2 * c2 / math.sqrt(3.0) * (3 * nz**2 - 1),
            -a2 * c2 * nx * nz,
            0.5 * a2 * c2 * (nx**2 - ny**2),
        ],
        -1,
    )
    torch.testing.assert_close(sh_basis(n), expected, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match=r"sh_basis: expected normals \(\.\.\., 3\), got \(5, 4\)"):
        sh_basis(torch.zeros(5, 4))  # homogeneous normals


def test_sh_lighting_approximates_a_clamped_cosine_light() -> None:
    # basis_k = a_l Y_k. A unit distant light along l has radiance coefficients Y_k(l), and the
    # Lambertian irradiance is sum_k A_l Y_k(n) Y_k(l) with A = (pi, 2 pi / 3, pi / 4)
    # (Ramamoorthi & Hanrahan 2001), which approximates max(0, n . l). So the coefficients
    # (A_l / a_l) Y_k(l) must shade like a clamped cosine.
    a = [math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0)]
    big_a = [math.pi, 2 * math.pi / 3, math.pi / 4]
    band = [0, 1, 1, 1, 2, 2, 2, 2, 2]
    scale = torch.tensor([big_a[b] / a[b] ** 2 for b in band], dtype=torch.float64)
    light = torch.tensor([[0.3, -0.4, 0.866]], dtype=torch.float64)
    light = light / light.norm()
    coeffs = (sh_basis(light)[0] * scale)[:, None].expand(9, 3)
    n = _unit(2000, 5)
    irr = sh_irradiance(n[None], coeffs)[0]
    t = n @ light[0]
    # Exactly the band-limited clamped cosine 1/4 + t/2 + 5/16 P2(t) ...
    torch.testing.assert_close(irr[:, 0], 0.25 + 0.5 * t + 5.0 / 32.0 * (3 * t * t - 1))
    # ... which is close to max(0, t).
    err = (irr[:, 0] - t.clamp_min(0)).abs()
    assert err.max() < 0.1
    assert err.mean() < 0.04
    torch.testing.assert_close(irr[:, 0], irr[:, 2])


def test_gamma_layout_and_ambient_offset() -> None:
    gamma = torch.arange(27, dtype=torch.float64)[None]
    sh = gamma_to_sh(gamma)
    assert sh.shape == (1, 9, 3)
    # channel-major: R = gamma[0:9], G = gamma[9:18], B = gamma[18:27], first one + 0.8
    torch.testing.assert_close(
        sh[0, :, 1],
        torch.arange(9, 18, dtype=torch.float64)
        + torch.tensor([SH_AMBIENT_INIT] + [0.0] * 8, dtype=torch.float64),
    )
    raw = gamma_to_sh(gamma, add_ambient=False)
    torch.testing.assert_close(raw[0, 0], torch.tensor([0.0, 9.0, 18.0], dtype=torch.float64))
    # Zero gamma: ambient only, colour = 0.8 * a0 c0 * albedo.
    n = _unit(10, 7)[None]
    albedo = torch.full((1, 10, 3), 0.5, dtype=torch.float64)
    col = shade_sh(n, albedo, gamma_to_sh(torch.zeros(1, 27, dtype=torch.float64)))
    torch.testing.assert_close(
        col, torch.full_like(col, 0.8 * 0.5 / (2 * math.sqrt(math.pi)) * math.pi)
    )
    with pytest.raises(ValueError, match="27"):
        gamma_to_sh(torch.zeros(1, 26))
    with pytest.raises(ValueError, match="9, 3"):
        sh_irradiance(n, torch.zeros(1, 3, 9))
    # one lighting for every face of a batch, or one per face; another count is refused
    three = torch.cat([n, -n, n])
    one = sh_irradiance(three, gamma_to_sh(torch.ones(1, 27, dtype=torch.float64)))
    each = sh_irradiance(three, gamma_to_sh(torch.ones(3, 27, dtype=torch.float64)))
    torch.testing.assert_close(one, each)
    with pytest.raises(ValueError, match="SH batch 2 does not match the batch 3"):
        sh_irradiance(three, torch.zeros(2, 9, 3))

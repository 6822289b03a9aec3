"""UV unwrapping, mirror fill and detail-normal shading against known textures and normals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facehd.render import (
    Renderer,
    hrn_camera,
    mirror_fill,
    render_with_displacement,
    shade_sh,
    unwrap_texture,
)
from facehd.uv import rasterize_uv


def grid_mesh(n: int, half: float, height):
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


def half_cylinder(radius: float = 80.0, height: float = 160.0, n_phi: int = 61, n_y: int = 41):
    """Half cylinder x = R sin(phi), z = R cos(phi); u = (phi + 90 deg) / 180 deg (symmetric)."""
    phi = np.linspace(-math.pi / 2, math.pi / 2, n_phi)
    ys = np.linspace(-height / 2, height / 2, n_y)
    pp, yy = np.meshgrid(phi, ys)
    verts = np.stack([radius * np.sin(pp), yy, radius * np.cos(pp)], -1).reshape(-1, 3)
    uvs = np.stack([(pp + math.pi / 2) / math.pi, (yy + height / 2) / height], -1).reshape(-1, 2)
    idx = np.arange(n_phi * n_y).reshape(n_y, n_phi)
    a, b, c, d = (
        idx[:-1, :-1].ravel(),
        idx[:-1, 1:].ravel(),
        idx[1:, 1:].ravel(),
        idx[1:, :-1].ravel(),
    )
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return torch.tensor(verts), torch.tensor(faces, dtype=torch.int64), torch.tensor(uvs)


def yaw(verts: torch.Tensor, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    R = torch.tensor(
        [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
        dtype=verts.dtype,
    )
    return verts @ R.T


def smooth_texture(size: int, symmetric: bool = False) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    u = (cols.double() + 0.5) / size
    v = 1 - (rows.double() + 0.5) / size
    ux = (u - 0.5).abs() if symmetric else u
    r = 0.5 + 0.3 * torch.sin(2 * math.pi * ux * 1.5 + 0.3) * torch.cos(2 * math.pi * v)
    g = 0.4 + 0.2 * torch.cos(2 * math.pi * (ux + v))
    b = 0.3 + 0.25 * v + 0.2 * ux
    return torch.stack([r, g, b], 0)[None]


def test_unwrap_then_render_reproduces_the_visible_pixels() -> None:
    verts, faces, uvs = grid_mesh(41, 90.0, lambda x, y: 80 * np.exp(-(x**2 + y**2) / 45.0**2))
    verts = yaw(verts, 45.0)
    cam = hrn_camera(1.0)
    r = Renderer(cam)
    size = 128
    truth = smooth_texture(size)
    photo = r.render(verts, faces, uvs=uvs, texture=truth).image
    table = rasterize_uv(uvs.numpy(), faces.numpy(), size)
    un = unwrap_texture(photo, verts, faces, uvs, cam, table=table, renderer=r, mirror=False)
    assert un.texture.shape == (1, 3, size, size)
    vis = un.visible[0]
    assert 0.5 < float(vis.float().mean()) < 0.95
    # Visible texels hold the true texture (resampled twice: a small smoothing error).
    err_tex = (un.texture[0] - truth[0]).abs().amax(0)[vis]
    assert float(err_tex.mean()) < 1e-3
    assert float(err_tex.max()) < 0.03
    # Rendering the unwrapped texture back reproduces every pixel whose texels were all seen.
    back = r.render(verts, faces, uvs=uvs, texture=un.texture)
    weight = r.render(verts, faces, uvs=uvs, texture=vis[None, None].double().expand(1, 3, -1, -1))
    full = back.mask[0] & (weight.image[0, ..., 0] > 1 - 1e-9)
    assert int(full.sum()) > 0.5 * int(back.mask[0].sum())
    diff = (back.image[0] - photo[0]).abs().amax(-1)[full]
    assert float(diff.mean()) < 1e-3
    assert float(diff.max()) < 0.02
    # Texels never seen stay empty.
    assert float(un.texture[0][:, ~un.filled[0]].abs().max()) == 0.0


def test_occluded_texels_are_not_visible() -> None:
    # A plane facing the camera with a square occluder 200 mm in front of its centre. The occluder
    # has degenerate UVs (no texels of its own).
    plane_v, plane_f, plane_uv = grid_mesh(21, 100.0, lambda x, y: 0 * x)
    occ_v = torch.tensor(
        [[-20, -20, 200], [20, -20, 200], [20, 20, 200], [-20, 20, 200]], dtype=torch.float64
    )
    occ_f = torch.tensor([[0, 1, 2], [0, 2, 3]]) + len(plane_v)
    verts = torch.cat([plane_v, occ_v])
    faces = torch.cat([plane_f, occ_f])
    uvs = torch.cat([plane_uv, torch.full((4, 2), 0.999, dtype=torch.float64)])
    cam = hrn_camera(1.0)
    r = Renderer(cam)
    photo = r.render(verts, faces, uvs=uvs, texture=smooth_texture(64)).image
    un = unwrap_texture(photo, verts, faces, uvs, cam, size=64, mirror=False)
    # Texel centres in plane coordinates.
    c = (torch.arange(64).double() + 0.5) / 64
    x = ((c - 0.5) * 200)[None, :].expand(64, 64)
    y = ((0.5 - c) * 200)[:, None].expand(64, 64)
    # Seen from the camera at z = 1000, the occluder (z = 200, half-size 20) hides |X|, |Y| < 25.
    hidden = (x.abs() < 23) & (y.abs() < 23)
    open_ = (x.abs() > 27) | (y.abs() > 27)
    vis = un.visible[0]
    assert int(hidden.sum()) > 20
    assert not bool(vis[hidden].any())
    assert bool(vis[open_].all())


def test_mirror_fill_copies_the_mirror_texel() -> None:
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 3, 8, 10, generator=g, dtype=torch.float64)
    visible = torch.rand(2, 8, 10, generator=g) > 0.5
    uv_mask = torch.ones(8, 10, dtype=torch.bool)
    uv_mask[0, :] = False
    masked = tex * visible[:, None]
    out, filled = mirror_fill(masked, visible, uv_mask)
    for b in range(2):
        for i in range(8):
            for j in range(10):
                jm = 9 - j
                if visible[b, i, j]:
                    expected, f = tex[b, :, i, j], True
                elif visible[b, i, jm] and uv_mask[i, j]:
                    expected, f = tex[b, :, i, jm], True
                else:
                    expected, f = torch.zeros(3, dtype=torch.float64), False
                torch.testing.assert_close(out[b, :, i, j], expected)
                assert bool(filled[b, i, j]) == f
    with pytest.raises(ValueError, match="visible"):
        mirror_fill(tex, visible[0])


def test_unwrap_fills_the_hidden_side_from_the_mirror() -> None:
    verts, faces, uvs = half_cylinder()
    verts = yaw(verts, 45.0)  # normals (sin(phi + 45), 0, cos(phi + 45)): phi > 45 deg turns away
    cam = hrn_camera(1.0)
    r = Renderer(cam)
    size = 96
    truth = smooth_texture(size, symmetric=True)
    photo = r.render(verts, faces, uvs=uvs, texture=truth).image
    un = unwrap_texture(photo, verts, faces, uvs, cam, size=size, renderer=r)
    vis, filled = un.visible[0], un.filled[0]
    mirrored_only = filled & ~vis
    u = (torch.arange(size).double() + 0.5) / size
    phi = (u * 180 - 90)[None, :].expand(size, size)
    v = (1 - u)[:, None].expand(size, size)
    # The side turned away is not visible; its mirror is, so it gets filled (away from the
    # mesh's top and bottom edges, where the bilinear lookup leaves the mesh).
    hidden_side = (phi > 50) & un.uv_mask
    assert not bool(vis[hidden_side].any())
    assert bool(filled[hidden_side & (phi < 85) & (v > 0.05) & (v < 0.95)].all())
    assert int(mirrored_only.sum()) > 0.1 * size * size
    # Filled texels equal the mirror texel exactly, and (symmetric truth) the true texture.
    cols = torch.nonzero(mirrored_only)
    torch.testing.assert_close(
        un.texture[0][:, cols[:, 0], cols[:, 1]],
        un.texture[0][:, cols[:, 0], size - 1 - cols[:, 1]],
    )
    err = (un.texture[0] - truth[0]).abs().amax(0)[mirrored_only]
    assert float(err.mean()) < 5e-3
    # Without mirroring they stay empty.
    plain = unwrap_texture(photo, verts, faces, uvs, cam, size=size, renderer=r, mirror=False)
    assert torch.equal(plain.filled, plain.visible)
    assert float(plain.texture[0][:, mirrored_only].abs().max()) == 0.0


def test_position_and_normal_maps_of_a_plane() -> None:
    verts, faces, uvs = grid_mesh(11, 100.0, lambda x, y: 0.1 * x + 5.0)
    cam = hrn_camera(1.0)
    photo = torch.zeros(1, 224, 224, 3, dtype=torch.float64)
    un = unwrap_texture(photo, verts, faces, uvs, cam, size=32, mirror=False)
    c = (torch.arange(32).double() + 0.5) / 32
    x = ((c - 0.5) * 200)[None, :].expand(32, 32)
    y = ((0.5 - c) * 200)[:, None].expand(32, 32)
    expected = torch.stack([x, y, 0.1 * x + 5.0], -1)
    torch.testing.assert_close(un.positions[0], expected)
    n = torch.tensor([-0.1, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(un.normals[0], (n / n.norm()).expand(32, 32, 3))


def test_zero_displacement_shades_like_the_coarse_mesh() -> None:
    verts, faces, uvs = grid_mesh(33, 90.0, lambda x, y: 40 * np.exp(-(x**2 + y**2) / 50.0**2))
    verts = yaw(verts, 20.0)
    r = Renderer(hrn_camera(1.0))
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0], sh[2], sh[3], sh[1] = 0.7, 0.4, -0.4, 0.2
    coarse = r.render(verts, faces, uvs=uvs, sh=sh)
    detail = render_with_displacement(
        r, verts, faces, uvs, torch.zeros(1, 1, 256, 256, dtype=torch.float64), sh=sh
    )
    m = coarse.mask[0]
    diff = (detail.image[0] - coarse.image[0]).abs().amax(-1)[m]
    assert float(diff.mean()) < 3e-3
    assert float(diff.max()) < 0.05


def test_displacement_shading_matches_analytic_normals() -> None:
    # Plane z = 0 facing the camera, u = (x + 100) / 200; displacement d = A sin(2 pi k u) along +z.
    # Detail normal of the height field: n ~ (-dd/dx, 0, 1).
    verts, faces, uvs = grid_mesh(3, 100.0, lambda x, y: 0 * x)
    a_mm, k, size = 2.0, 4, 256
    cols = (torch.arange(size).double() + 0.5) / size
    disp = (a_mm * torch.sin(2 * math.pi * k * cols))[None, :].expand(size, size)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0], sh[2], sh[3] = 0.6, 0.3, -0.8  # strong x-gradient light: -a1 c1 nx * (-0.8)
    r = Renderer(hrn_camera(1.0))
    res = render_with_displacement(r, verts, faces, uvs, disp[None, None], sh=sh)
    x = (torch.arange(224).double() - 112) * 1000 / 1015
    u = ((x + 100) / 200)[None, :].expand(224, 224)
    slope = a_mm * 2 * math.pi * k / 200 * torch.cos(2 * math.pi * k * u)
    n = torch.stack([-slope, torch.zeros_like(slope), torch.ones_like(slope)], -1)
    n = n / n.norm(dim=-1, keepdim=True)
    expected = shade_sh(n[None], torch.ones(3, dtype=torch.float64), sh)[0]
    inner = res.mask[0] & (u > 0.02) & (u < 0.98)
    inner[:30], inner[-30:] = False, False
    err = (res.image[0] - expected).abs().amax(-1)[inner]
    assert float(err.max()) < 0.01
    # The displacement visibly changes the shading (the flat plane would be uniform).
    assert float(res.image[0][inner].std(0).max()) > 0.05
    with pytest.raises(ValueError, match="displacement"):
        render_with_displacement(r, verts, faces, uvs, torch.zeros(2, 2, 8, 8), sh=sh)


def test_facehd_synth_renders_and_unwraps_with_mirror_fill() -> None:
    from facehd.morphable import facehd_synth
    from facehd.render import gamma_to_sh

    model = facehd_synth()
    verts = torch.tensor(model.mean_shape)
    faces = torch.tensor(model.faces)
    uvs = torch.tensor(model.uvs)
    cam = hrn_camera(model.unit_to_mm)
    r = Renderer(cam)
    zero_light = gamma_to_sh(torch.zeros(1, 27, dtype=torch.float64))
    res = r.render(verts, faces, colors=torch.tensor(model.mean_albedo), sh=zero_light)
    assert 0.2 < float(res.mask.float().mean()) < 0.8
    # The 68 landmarks of the frontal mean face are seen where they project, at their depth.
    lm = torch.tensor(model.landmarks(model.mean_shape))[None]
    pix = cam.project(lm)[0].round().long()
    z = cam.world_to_camera(lm)[0, :, 2]
    assert bool(res.mask[0, pix[:, 1], pix[:, 0]].all())
    assert float((res.depth[0, pix[:, 1], pix[:, 0]] - z).abs().max()) < 3.0
    # Turned 30 degrees, the hidden side of a symmetric texture comes back by mirroring.
    turned = yaw(verts, 30.0)
    truth = smooth_texture(128, symmetric=True)
    photo = r.render(turned, faces, uvs=uvs, texture=truth).image
    un = unwrap_texture(photo, turned, faces, uvs, cam, size=128, renderer=r)
    mirrored_only = un.filled[0] & ~un.visible[0]
    assert float(mirrored_only.float().mean()) > 0.1
    err = (un.texture[0] - truth[0]).abs().amax(0)
    assert float(err[un.visible[0]].mean()) < 2e-3
    assert float(err[mirrored_only].mean()) < 2e-3

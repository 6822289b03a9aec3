"""UV unwrapping, mirror fill and detail-normal shading against known textures and normals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facehd.mesh import vertex_normals
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


def _occluder_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A plane facing the camera (half-size 100 mm, at z = 0) with a square occluder 200 mm in
    front of its centre, the occluder with degenerate UVs (no texels of its own), and its photo:
    ``(vertices, faces, uvs, photo)``."""
    plane_v, plane_f, plane_uv = grid_mesh(21, 100.0, lambda x, y: 0 * x)
    occ_v = torch.tensor(
        [[-20, -20, 200], [20, -20, 200], [20, 20, 200], [-20, 20, 200]], dtype=torch.float64
    )
    occ_f = torch.tensor([[0, 1, 2], [0, 2, 3]]) + len(plane_v)
    verts = torch.cat([plane_v, occ_v])
    faces = torch.cat([plane_f, occ_f])
    uvs = torch.cat([plane_uv, torch.full((4, 2), 0.999, dtype=torch.float64)])
    photo = Renderer(hrn_camera(1.0)).render(verts, faces, uvs=uvs, texture=smooth_texture(64))
    return verts, faces, uvs, photo.image


def _texel_grid(size: int, half: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Plane coordinates ``(x, y)`` of the texel centres of a ``grid_mesh`` of half-size
    ``half`` (its UVs map ``[-half, half]`` onto ``[0, 1]``)."""
    from facehd.uv import texel_centers_uv

    uv = torch.from_numpy(texel_centers_uv(size))
    return (uv[..., 0] - 0.5) * 2 * half, (uv[..., 1] - 0.5) * 2 * half


def test_occluded_texels_are_not_visible() -> None:
    verts, faces, uvs, photo = _occluder_scene()
    un = unwrap_texture(photo, verts, faces, uvs, hrn_camera(1.0), size=64, mirror=False)
    x, y = _texel_grid(64, 100.0)
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
    # Whatever the unseen texels held, they come out as documented (copied or 0).
    out_raw, filled_raw = mirror_fill(tex, visible, uv_mask)
    torch.testing.assert_close(out_raw, out)
    assert torch.equal(filled_raw, filled)
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
    x, y = _texel_grid(32, 100.0)
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


def _taps_on_the_mesh(un, cam, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force, per texel: its projection ``(col, row)`` and whether all four pixels of its
    bilinear lookup lie in the image and on the rendered mesh (``mask`` (H, W))."""
    h, w = cam.image_size
    size = un.positions.shape[1]
    pix = cam.project(un.positions.reshape(1, -1, 3))[0].reshape(size, size, 2)
    ok = torch.zeros(size, size, dtype=torch.bool)
    for i in range(size):
        for j in range(size):
            x0, y0 = math.floor(float(pix[i, j, 0])), math.floor(float(pix[i, j, 1]))
            taps = [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]
            ok[i, j] = all(0 <= x < w and 0 <= y < h and bool(mask[y, x]) for x, y in taps)
    return pix, ok


def test_a_texel_is_visible_only_where_its_whole_lookup_is_on_the_mesh() -> None:
    """A frontal plane larger than the image: the texels seen are those whose four lookup
    pixels are all in the image (the first and last row and column of pixels are no texel's
    left or right tap beyond them); a fixed depth tolerance large enough to pass any depth still
    leaves out texels whose lookup touches the background."""
    cam = hrn_camera(1.0)
    r = Renderer(cam)
    big_v, big_f, big_uv = grid_mesh(21, 200.0, lambda x, y: 0 * x)
    photo = r.render(big_v, big_f, uvs=big_uv, texture=smooth_texture(64)).image
    un = unwrap_texture(photo, big_v, big_f, big_uv, cam, size=64, mirror=False, renderer=r)
    pix, ok = _taps_on_the_mesh(un, cam, r.render(big_v, big_f).mask[0])
    assert not bool(ok.all()) and int(ok.sum()) > 100  # some texels fall outside the image
    assert torch.equal(un.visible[0], ok)
    assert float(pix[un.visible[0]].max()) < 223 and float(pix[un.visible[0]].min()) >= 0
    # A plane inside the image, the outermost texel centres on its edges, and a huge tolerance:
    # the lookup must still stay on the mesh.
    v, f, uv = grid_mesh(21, 100.0, lambda x, y: 0 * x)
    uv = 0.495 / 64 + uv * 63.01 / 64
    photo = r.render(v, f, uvs=uv, texture=smooth_texture(64)).image
    loose = unwrap_texture(photo, v, f, uv, cam, size=64, mirror=False, depth_tolerance=1e6)
    _, ok = _taps_on_the_mesh(loose, cam, r.render(v, f).mask[0])
    assert not bool(ok.all())  # the outermost texels' lookups reach the background
    assert torch.equal(loose.visible[0], ok)


def test_a_fixed_depth_tolerance_replaces_the_default() -> None:
    """The occluder scene of ``test_occluded_texels_are_not_visible``: a tolerance larger than
    the 200 mm between occluder and plane lets the hidden texels through; a tiny one (the plane's
    own depth is exact) keeps the open ones."""
    verts, faces, uvs, photo = _occluder_scene()
    cam = hrn_camera(1.0)
    x, y = _texel_grid(64, 100.0)
    hidden = (x.abs() < 23) & (y.abs() < 23)
    open_ = ((x.abs() > 27) | (y.abs() > 27)) & (x.abs() < 95) & (y.abs() < 95)
    through = unwrap_texture(photo, verts, faces, uvs, cam, size=64, depth_tolerance=250.0)
    assert bool(through.visible[0][hidden].all())
    tight = unwrap_texture(photo, verts, faces, uvs, cam, size=64, depth_tolerance=1e-6)
    assert bool(tight.visible[0][open_].all()) and not bool(tight.visible[0][hidden].any())


def test_a_steep_surface_stays_visible_and_a_turned_away_one_does_not() -> None:
    """A plane turned 75 degrees from the camera: its depth changes by ~3.7 pixel footprints from
    one pixel to the next, and every texel away from its edges is still seen (the default
    tolerance grows as 1 / cos). Seen from behind, or more obliquely than ``min_cos``, none is."""
    cam = hrn_camera(1.0)
    r = Renderer(cam)
    v, f, uv = grid_mesh(21, 60.0, lambda x, y: 0 * x)
    x, y = _texel_grid(64, 60.0)
    inner = (x.abs() < 50) & (y.abs() < 50)
    steep = yaw(v, 75.0)
    photo = r.render(steep, f, uvs=uv, texture=smooth_texture(64)).image
    un = unwrap_texture(photo, steep, f, uv, cam, size=64, mirror=False, renderer=r)
    assert bool(un.visible[0][inner].all())
    # cos(60 deg) = 0.5 towards the camera (nearly: the camera is 1 m away, not at infinity)
    turned = yaw(v, 60.0)
    photo = r.render(turned, f, uvs=uv, texture=smooth_texture(64)).image
    kw = dict(size=64, mirror=False, renderer=r)
    assert bool(
        unwrap_texture(photo, turned, f, uv, cam, min_cos=0.4, **kw).visible[0][inner].all()
    )
    assert not bool(unwrap_texture(photo, turned, f, uv, cam, min_cos=0.6, **kw).visible.any())
    back = yaw(v, 180.0)
    photo = r.render(back, f, uvs=uv, texture=smooth_texture(64)).image
    assert bool(r.render(back, f).mask.any())
    assert not bool(unwrap_texture(photo, back, f, uv, cam, **kw).visible.any())
    # Normals given by the caller decide what faces the camera: flipped, nothing does.
    normals = vertex_normals(steep, f)
    flipped = unwrap_texture(photo, steep, f, uv, cam, normals=-normals, **kw)
    assert not bool(flipped.visible.any())
    torch.testing.assert_close(flipped.normals, -un.normals)


def test_only_texels_of_the_layout_are_seen_or_filled() -> None:
    """UVs covering the middle of the map, on a plane through the world origin: the texels
    outside the layout (position map 0 there, the origin, which the camera sees on the plane)
    are neither visible nor filled."""
    cam = hrn_camera(1.0)
    v, f, uv = grid_mesh(21, 100.0, lambda x, y: 0 * x)
    uv = 0.25 + 0.5 * uv
    photo = Renderer(cam).render(v, f, uvs=uv, texture=smooth_texture(64)).image
    for min_cos in (0.0, -1.0):  # -1: no facing test (texels outside have no normal either)
        un = unwrap_texture(photo, v, f, uv, cam, size=64, min_cos=min_cos)
        assert 0.2 < float(un.uv_mask.float().mean()) < 0.3
        assert bool(un.visible[0][un.uv_mask].any())
        assert not bool(un.filled[0][~un.uv_mask].any())
        assert float(un.texture[0][:, ~un.uv_mask].abs().max()) == 0.0


def test_texels_behind_the_camera_are_unseen_and_finite() -> None:
    """A frontal plane at z = 0 and a second one 1 m behind the camera (which sits at z = 1000),
    facing it: the second projects, mirrored through the centre of projection, onto the pixels
    where the first is seen. Even with a depth tolerance that passes any depth its texels are
    not visible, and no texel's colour is NaN."""
    cam = hrn_camera(1.0)
    front_v, f, uv = grid_mesh(21, 100.0, lambda x, y: 0 * x)
    back_v = front_v * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64) + torch.tensor(
        [0.0, 0.0, 2000.0], dtype=torch.float64
    )  # x mirrored: the winding turns, the plane faces -z
    verts = torch.cat([front_v, back_v])
    faces = torch.cat([f, f + len(front_v)])
    uvs = torch.cat(
        [
            uv * torch.tensor([0.5, 1.0]),
            uv * torch.tensor([0.5, 1.0]) + 0.5 * torch.tensor([1.0, 0.0]),
        ]
    )
    photo = torch.rand(
        1, 224, 224, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    un = unwrap_texture(photo, verts, faces, uvs, cam, size=64, depth_tolerance=1e9, mirror=False)
    behind = torch.zeros(64, 64, dtype=torch.bool)
    behind[:, 32:] = True
    z = cam.world_to_camera(un.positions.reshape(1, -1, 3))[0, :, 2].reshape(64, 64)
    assert bool((z[behind] < -900).all()) and bool((z[~behind] > 900).all())
    assert bool(un.visible[0][~behind].any())
    assert not bool(un.visible[0][behind].any())
    assert bool(torch.isfinite(un.texture).all())


def test_unwrap_and_displacement_shading_refuse_mismatched_inputs() -> None:
    cam = hrn_camera(1.0)
    r = Renderer(cam)
    v, f, uv = grid_mesh(5, 100.0, lambda x, y: 0 * x)
    photo = torch.zeros(1, 224, 224, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"uvs \(V, 2\)"):
        unwrap_texture(photo, v, f, torch.zeros(len(v), 3), cam, size=8)
    with pytest.raises(ValueError, match="matching the camera"):
        unwrap_texture(photo[:, :200], v, f, uv, cam, size=8)
    with pytest.raises(ValueError, match="matching the camera"):
        unwrap_texture(photo.expand(3, -1, -1, -1), torch.stack([v, v]), f, uv, cam, size=8)
    other = grid_mesh(6, 100.0, lambda x, y: 0 * x)
    table = rasterize_uv(other[2].numpy(), other[1].numpy(), 8)
    with pytest.raises(ValueError, match="UV table has 36 vertices, mesh has 25"):
        unwrap_texture(photo, v, f, uv, cam, table=table)
    with pytest.raises(ValueError, match="one channel"):
        render_with_displacement(r, v, f, uv, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="displacement"):
        render_with_displacement(r, torch.stack([v, v]), f, uv, torch.zeros(3, 8, 8))
    table = rasterize_uv(uv.numpy(), f.numpy(), 16)
    with pytest.raises(ValueError, match="does not match displacement"):
        render_with_displacement(r, v, f, uv, torch.zeros(8, 8), table=table)


def test_zero_displacement_keeps_the_coarse_normals_at_the_layouts_border() -> None:
    """A UV layout turned 45 degrees inside the map: near its slanted borders the four texels of
    a pixel's lookup can all lie outside the layout; such pixels take the interpolated vertex
    normal, so a zero displacement shades every pixel with (nearly) the coarse normal."""
    v, f, uv = grid_mesh(33, 90.0, lambda x, y: 60 * np.exp(-(x**2 + y**2) / 60.0**2))
    a = math.radians(45.0)
    rot = torch.tensor(
        [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64
    )
    uv = 0.5 + 0.65 * (uv - 0.5) @ rot.T
    r = Renderer(hrn_camera(1.0))
    coarse = r.render(v, f, uvs=uv)
    res = render_with_displacement(r, v, f, uv, torch.zeros(1, 1, 32, 32, dtype=torch.float64))
    m = coarse.mask[0]
    n, n0 = res.normals[0][m], coarse.normals[0][m]
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(len(n), dtype=torch.float64))
    assert float((n * n0).sum(-1).min()) > 0.999
    # Normals given by the caller are the ones shaded: flipped, the pixels' normals flip.
    flipped = render_with_displacement(
        r, v, f, uv, torch.zeros(32, 32, dtype=torch.float64), normals=-vertex_normals(v, f)
    )
    assert float((flipped.normals[0][m] * n0).sum(-1).max()) < -0.999

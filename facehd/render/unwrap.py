"""UV unwrapping of photos, position maps and detail-normal shading.

- :func:`unwrap_texture`: photo + mesh + camera → UV texture with a visibility mask (what the HRN
  paper calls the texture ``T``); texels the camera does not see are filled from their mirror
  texel ``u → 1 − u`` where that one is seen (the UV layouts of facehd's models are left-right
  symmetric). Also returns the position map.
- :func:`render_with_displacement`: renders a mesh shaded with per-pixel detail normals built from
  a displacement map by :func:`facehd.uv.detail_normals` (the HRN rule).

UV maps follow :mod:`facehd.uv` (texel ``(i, j)`` centred at ``u = (j + 0.5) / W``,
``v = 1 − (i + 0.5) / H``); textures are channels-first ``(B, C, Hu, Wu)`` as networks use them,
images channels-last ``(B, H, W, C)`` as the renderer produces them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facehd.render.camera import PinholeCamera
from facehd.render.raster import check_mesh_batch
from facehd.render.renderer import Renderer, RenderResult


@dataclass
class UnwrapResult:
    """A photo unwrapped into UV space.

    Attributes
    ----------
    texture : (B, C, Hu, Wu) float
        Photo colour per texel: sampled where ``visible``, copied from the mirror texel where only
        ``filled``, 0 elsewhere. Differentiable in the photo and the vertices.
    visible : (B, Hu, Wu) bool
        Texels whose surface point the camera sees (in the layout, in the image, facing the
        camera, not occluded).
    filled : (B, Hu, Wu) bool
        ``visible`` or filled from a visible mirror texel.
    uv_mask : (Hu, Wu) bool
        Texels covered by the UV layout.
    positions : (B, Hu, Wu, 3) float
        Position map (world frame, 0 outside ``uv_mask``).
    normals : (B, Hu, Wu, 3) float
        Unit coarse normal map (world frame, 0 outside ``uv_mask``).
    """

    texture: torch.Tensor
    visible: torch.Tensor
    filled: torch.Tensor
    uv_mask: torch.Tensor
    positions: torch.Tensor
    normals: torch.Tensor


def _uv_table(uvs: torch.Tensor | np.ndarray, faces: torch.Tensor, size, table):
    from facehd.uv import rasterize_uv

    if table is not None:
        return table
    uv_np = uvs.detach().cpu().numpy() if isinstance(uvs, torch.Tensor) else np.asarray(uvs)
    if uv_np.ndim != 2 or uv_np.shape[1] != 2:
        raise ValueError(f"expected uvs (V, 2) shared by the batch, got {tuple(uv_np.shape)}")
    return rasterize_uv(uv_np, faces.cpu().numpy(), size)


def mirror_fill(
    texture: torch.Tensor, visible: torch.Tensor, uv_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill unseen texels from their mirror texel ``u → 1 − u`` (column ``j → W − 1 − j``).

    Parameters
    ----------
    texture : (B, C, Hu, Wu) float
    visible : (B, Hu, Wu) bool
        Texels holding a measured value.
    uv_mask : (Hu, Wu) bool, optional
        Texels of the layout; only those are filled.

    Returns
    -------
    ``(texture (B, C, Hu, Wu), filled (B, Hu, Wu) bool)``: measured texels unchanged, unseen ones
    whose mirror is visible copied from it, the rest 0.
    """
    if texture.dim() != 4 or visible.shape != (texture.shape[0], *texture.shape[2:]):
        raise ValueError(
            f"mirror_fill: expected texture (B, C, Hu, Wu) and visible (B, Hu, Wu), got "
            f"{tuple(texture.shape)} and {tuple(visible.shape)}"
        )
    mirrored_visible = visible.flip(-1)
    fill = ~visible & mirrored_visible
    if uv_mask is not None:
        fill = fill & uv_mask.to(fill.device)
    keep = visible[:, None].to(texture.dtype)
    take = fill[:, None].to(texture.dtype)
    out = texture * keep + texture.flip(-1) * take
    return out, visible | fill


def unwrap_texture(
    image: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor | np.ndarray,
    camera: PinholeCamera,
    *,
    size: int | tuple[int, int] = 256,
    table=None,
    normals: torch.Tensor | None = None,
    renderer: Renderer | None = None,
    mirror: bool = True,
    min_cos: float = 0.0,
    depth_tolerance: float | None = None,
) -> UnwrapResult:
    """Unwrap a photo of a mesh into its UV layout.

    Every texel centre of the layout is a surface point (barycentric interpolation in the UV
    triangle); it is projected with ``camera`` and the photo is sampled there bilinearly. A texel is
    ``visible`` when its point faces the camera (``cos > min_cos`` between its normal and the
    direction to the camera) and all four pixels of its bilinear lookup show it: they lie in the
    image, on the mesh, and their rendered depth is within a tolerance of the texel's camera depth
    (so the texel is not occluded, and neither background nor an occluding edge blends into its
    colour). The default tolerance is two pixel footprints divided by ``max(cos, 0.2)`` (the depth
    of a slanted surface changes by about that much from one pixel to the next).

    Parameters
    ----------
    image : (B, H, W, C) or (H, W, C) float
        The photo(s), channels-last, rows top to bottom, the camera's image size.
    vertices : (B, V, 3) or (V, 3) float
        World-frame positions.
    faces : (F, 3) int
    uvs : (V, 2) float
        Per-vertex UVs (one layout for the batch).
    camera : PinholeCamera
    size : int or (Hu, Wu)
        Size of the UV maps (ignored when ``table`` is given).
    table : facehd.uv.UVRasterTable, optional
        Precomputed UV rasterisation of ``(uvs, faces)`` (reuse it across calls).
    normals : (B, V, 3) or (V, 3) float, optional
        Unit vertex normals (default: area-weighted normals of ``vertices``).
    renderer : Renderer, optional
        Renderer for the occlusion test (default: CPU backend with ``camera``).
    mirror : bool
        Fill unseen texels from their mirror texel (see :func:`mirror_fill`).
    min_cos : float
        Texels seen more obliquely than this (cosine) are not visible.
    depth_tolerance : float, optional
        Fixed occlusion tolerance in world units instead of the default.
    """
    from facehd.mesh import vertex_normals
    from facehd.uv import normal_map

    vertices, faces = check_mesh_batch(vertices, faces, "unwrap_texture")
    b, nv, _ = vertices.shape
    if image.dim() == 3:
        image = image[None]
    h, w = camera.image_size
    if image.dim() != 4 or image.shape[1:3] != (h, w) or image.shape[0] not in (1, b):
        raise ValueError(
            f"unwrap_texture: expected image ({b}, {h}, {w}, C) matching the camera, "
            f"got {tuple(image.shape)}"
        )
    table = _uv_table(uvs, faces, size, table)
    if table.n_vertices != nv:
        raise ValueError(f"unwrap_texture: UV table has {table.n_vertices} vertices, mesh has {nv}")
    hu, wu = table.size
    if normals is None:
        normals = vertex_normals(vertices, faces)
    if normals.dim() == 2:
        normals = normals[None]
    normals = normals.to(vertices.dtype).expand(b, -1, -1)
    positions = table.interpolate(vertices)  # (B, Hu, Wu, 3)
    nmap = normal_map(table, normals)
    uv_mask = torch.as_tensor(table.mask, device=vertices.device)

    flat_pos = positions.reshape(b, hu * wu, 3)
    cam_pts = camera.world_to_camera(flat_pos)
    if cam_pts.shape[0] != b:
        cam_pts = cam_pts.expand(b, -1, -1)
    z = cam_pts[..., 2]
    safe = torch.where((z > 0)[..., None], cam_pts, torch.ones_like(cam_pts))
    pix = camera.camera_to_pixels(safe)
    if pix.shape[0] != b:
        pix = pix.expand(b, -1, -1)

    # Colour: bilinear lookup of the photo at the projected texel centre.
    grid = torch.stack(
        [(2.0 * pix[..., 0] + 1.0) / w - 1.0, (2.0 * pix[..., 1] + 1.0) / h - 1.0], -1
    )
    photo = image.to(vertices.dtype).permute(0, 3, 1, 2).expand(b, -1, -1, -1)
    colors = F.grid_sample(
        photo, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False
    )[:, :, 0]  # (B, C, N)

    # Visibility.
    with torch.no_grad():
        renderer = renderer or Renderer(camera, "cpu")
        frags = renderer.rasterize(vertices.detach(), faces)
        depth = frags.depth.detach().to(device=vertices.device, dtype=vertices.dtype)
        mask_img = frags.mask.to(vertices.device)
        centers = camera.centers().to(vertices.dtype)[:, None, :]
        to_cam = centers - flat_pos.detach()
        dist = to_cam.norm(dim=-1).clamp_min(1e-12)
        cos = (nmap.reshape(b, hu * wu, 3).detach() * to_cam).sum(-1) / dist
        if depth_tolerance is None:
            fx = camera.K[:, 0, 0].to(vertices.dtype)[:, None].expand(b, 1)
            tol = 2.0 * z.detach().abs() / fx / cos.clamp_min(0.2)
        else:
            tol = torch.full_like(z, float(depth_tolerance))
        # The four pixels of the bilinear lookup must all show this surface point: on the mesh and
        # at its depth (neither occluded nor next to an occluding or background edge).
        x0 = pix[..., 0].detach().floor()
        y0 = pix[..., 1].detach().floor()
        ok = (z > 0) & (x0 >= 0) & (x0 + 1 <= w - 1) & (y0 >= 0) & (y0 + 1 <= h - 1)
        flat_depth = depth.reshape(b, h * w)
        flat_mask = mask_img.reshape(b, h * w)
        zt = z.detach()
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            idx = ((y0 + dy).clamp(0, h - 1) * w + (x0 + dx).clamp(0, w - 1)).long()
            tap_depth = torch.gather(flat_depth, 1, idx)
            ok &= torch.gather(flat_mask, 1, idx) & ((tap_depth - zt).abs() <= tol)
        visible = (uv_mask.reshape(1, -1) & ok & (cos > min_cos)).reshape(b, hu, wu)

    texture = colors.reshape(b, -1, hu, wu) * visible[:, None].to(colors.dtype)
    if mirror:
        texture, filled = mirror_fill(texture, visible, uv_mask)
    else:
        filled = visible.clone()
    return UnwrapResult(
        texture=texture,
        visible=visible,
        filled=filled,
        uv_mask=uv_mask,
        positions=positions,
        normals=nmap,
    )


def detail_normal_texels(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor | np.ndarray,
    displacement: torch.Tensor,
    *,
    table=None,
    normals: torch.Tensor | None = None,
    caller: str = "detail_normal_texels",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The detail normals of a displacement map, per texel, in the frame of ``vertices``.

    Arguments as :func:`render_with_displacement`. Returns the normals ``(B, Hd, Wd, 3)``
    (:func:`facehd.uv.detail_normals` of the coarse position and normal maps at the
    displacement map's size), the layout's texel mask ``(Hd, Wd)`` (bool: texels the mesh's UV
    triangles cover) and the vertex normals used ``(B, V, 3)``.
    """
    from facehd.mesh import vertex_normals
    from facehd.uv import detail_normals, normal_map

    vertices, faces = check_mesh_batch(vertices, faces, caller)
    b, nv, _ = vertices.shape
    d = displacement
    if d.dim() == 4:
        if d.shape[1] != 1:
            raise ValueError(f"displacement must have one channel, got {tuple(d.shape)}")
        d = d[:, 0]
    if d.dim() == 2:
        d = d[None]
    if d.dim() != 3 or d.shape[0] not in (1, b):
        raise ValueError(
            f"{caller}: expected displacement (B, 1, Hd, Wd), (B, Hd, Wd) or "
            f"(Hd, Wd), got {tuple(displacement.shape)}"
        )
    table = _uv_table(uvs, faces, tuple(d.shape[-2:]), table)
    if tuple(table.size) != tuple(d.shape[-2:]):
        raise ValueError(
            f"UV table size {table.size} does not match displacement {tuple(d.shape[-2:])}"
        )
    if normals is None:
        normals = vertex_normals(vertices, faces)
    if normals.dim() == 2:
        normals = normals[None]
    normals = normals.to(vertices.dtype).expand(b, -1, -1)
    pos_map = table.interpolate(vertices)
    coarse = normal_map(table, normals)
    mask = torch.as_tensor(table.mask, device=vertices.device)
    detail = detail_normals(pos_map, coarse, d.to(vertices.dtype).expand(b, -1, -1), mask)
    return detail, mask, normals


def render_with_displacement(
    renderer: Renderer,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor | np.ndarray,
    displacement: torch.Tensor,
    *,
    table=None,
    normals: torch.Tensor | None = None,
    colors: torch.Tensor | None = None,
    texture: torch.Tensor | None = None,
    sh: torch.Tensor | None = None,
    background: torch.Tensor | float = 0.0,
) -> RenderResult:
    """Render a mesh shaded with detail normals from a displacement map (HRN's fine level).

    The coarse position and normal maps of the mesh are built at the displacement map's size,
    :func:`facehd.uv.detail_normals` turns them and the displacement into a detail-normal map,
    and the renderer shades each pixel with the normal sampled from it (pixels near the border
    of the UV layout blend in the interpolated vertex normal, see ``normal_map_mask``).

    Parameters
    ----------
    renderer : Renderer
    vertices : (B, V, 3) or (V, 3) float
    faces : (F, 3) int
    uvs : (V, 2) float
    displacement : (B, 1, Hd, Wd), (B, Hd, Wd) or (Hd, Wd) float
        Offsets along the coarse normals, in the units of ``vertices``.
    table : facehd.uv.UVRasterTable, optional
        UV rasterisation of ``(uvs, faces)`` at ``(Hd, Wd)``.
    normals, colors, texture, sh, background
        As in :meth:`Renderer.render`.
    """
    detail, mask, normals = detail_normal_texels(
        vertices,
        faces,
        uvs,
        displacement,
        table=table,
        normals=normals,
        caller="render_with_displacement",
    )
    if isinstance(uvs, torch.Tensor):
        uvs_t = uvs.to(dtype=vertices.dtype, device=vertices.device)
    else:  # a copy: model arrays are read-only
        uvs_t = torch.as_tensor(np.array(uvs), dtype=vertices.dtype, device=vertices.device)
    return renderer.render(
        vertices,
        faces,
        uvs=uvs_t,
        normals=normals,
        normal_map=detail.permute(0, 3, 1, 2),
        normal_map_mask=mask,
        colors=colors,
        texture=texture,
        sh=sh,
        background=background,
    )

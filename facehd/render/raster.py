"""Rasterisation: which triangle each pixel sees, with differentiable barycentrics.

One interface, several backends (:class:`RasterBackend`):

- :class:`CpuBackend` (``"cpu"``): a discrete visibility pass finds the triangle seen by each
  pixel centre, then the barycentrics and depth are recomputed in PyTorch from that triangle's
  camera-frame vertices (exact ray-triangle intersection), so gradients reach vertex positions,
  colours, normals, UVs, textures and the camera. Visibility comes from a vectorised float64
  z-buffer (default; no scene to build, which matters for a single 224 x 224 render of a 35k-vertex
  mesh) or from one ray per pixel cast into Open3D's Embree scene (``visibility="raycast"``, also
  the fallback for meshes crossing the camera's near plane). Open3D's own barycentrics are never
  used.
- :class:`facehd.render.nvdiffrast_backend.NvdiffrastBackend` (``"nvdiffrast"``): GPU
  rasterisation with nvdiffrast when it is installed (the ``gpu`` extra).

Neither backend gives silhouette gradients (the set of covered pixels is piecewise constant);
HRN's losses need none (its contour loss works on projected vertices).

Pixel ``(row i, col j)`` is sampled at its centre, the continuous pixel ``(x, y) = (j, i)`` of
:class:`facehd.render.camera.PinholeCamera`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facehd.render.camera import PinholeCamera


@dataclass
class Fragments:
    """Per-pixel rasterisation result for a batch of ``B`` meshes on an ``H x W`` image.

    Attributes
    ----------
    face_ids : (B, H, W) int64
        Index of the visible triangle, -1 where no triangle covers the pixel centre.
    barycentrics : (B, H, W, 3) float
        Perspective-correct barycentrics of the pixel centre in that triangle (0 where empty);
        differentiable with respect to the vertex positions and the camera.
    depth : (B, H, W) float
        Camera-frame depth ``z_cam`` of the visible point (0 where empty); differentiable.
    mask : (B, H, W) bool
        ``face_ids >= 0``.
    pixels : (P,) int64
        Flat indices into ``B * H * W`` of the covered pixels (row-major, batch first).
    packed_faces : (P,) int64
        ``face_ids`` at ``pixels``.
    packed_barycentrics : (P, 3) float
        ``barycentrics`` at ``pixels`` (the differentiable source of the dense tensor).
    packed_batch : (P,) int64
        Batch index of each covered pixel.
    faces : (F, 3) int64
        The triangles that were rasterised.
    n_vertices : int
        Number of vertices per mesh.
    native : Any
        Backend-specific data (nvdiffrast's raster tensors), ``None`` for the CPU backend.
    """

    face_ids: torch.Tensor
    barycentrics: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    pixels: torch.Tensor
    packed_faces: torch.Tensor
    packed_barycentrics: torch.Tensor
    packed_batch: torch.Tensor
    faces: torch.Tensor
    n_vertices: int
    native: Any = None

    @property
    def batch_size(self) -> int:
        return int(self.face_ids.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.face_ids.shape[1]), int(self.face_ids.shape[2])

    def batch_index(self) -> torch.Tensor:
        """``(P,)`` batch index of each covered pixel."""
        return self.packed_batch


def check_mesh_batch(vertices: torch.Tensor, faces: torch.Tensor, where: str):
    """Validate ``vertices (B, V, 3)|(V, 3)`` and ``faces (F, 3)``; return them batched, int64."""
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"{where}: vertices must be a torch tensor, got {type(vertices).__name__}")
    if vertices.dim() == 2:
        vertices = vertices[None]
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(
            f"{where}: expected vertices (B, V, 3) or (V, 3), got {tuple(vertices.shape)}"
        )
    if not vertices.is_floating_point():
        raise ValueError(f"{where}: vertices must be floating point, got {vertices.dtype}")
    faces = torch.as_tensor(faces, device=vertices.device)
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{where}: expected faces (F, 3), got {tuple(faces.shape)}")
    faces = faces.long()
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[1]):
        raise ValueError(
            f"{where}: face indices must lie in [0, {vertices.shape[1]}), "
            f"got [{int(faces.min())}, {int(faces.max())}]"
        )
    return vertices, faces


def _check_camera_batch(camera: PinholeCamera, batch: int, where: str) -> None:
    if camera.batch_size not in (1, batch):
        raise ValueError(
            f"{where}: camera batch {camera.batch_size} does not match mesh batch {batch}"
        )


class RasterBackend:
    """Interface of a rasteriser backend.

    ``rasterize`` finds the visible triangle per pixel; ``interpolate`` and ``sample_texture``
    turn fragments into differentiable per-pixel attributes. The generic implementations of the
    latter two (plain PyTorch) serve every backend that does not override them.
    """

    name: str = "base"

    def rasterize(
        self, vertices: torch.Tensor, faces: torch.Tensor, camera: PinholeCamera
    ) -> Fragments:  # pragma: no cover - interface
        """``vertices (B, V, 3)|(V, 3)`` world frame, ``faces (F, 3)`` → :class:`Fragments`."""
        raise NotImplementedError

    def interpolate(self, fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
        """Interpolate per-vertex ``attributes (B, V, C)|(V, C)`` → per-pixel ``(B, H, W, C)``.

        Empty pixels get 0. Differentiable in the attributes and the barycentrics.
        """
        return interpolate_packed(fragments, attributes)

    def sample_texture(
        self, fragments: Fragments, uv: torch.Tensor, texture: torch.Tensor
    ) -> torch.Tensor:
        """Bilinear lookup of ``texture (B, C, Ht, Wt)|(C, Ht, Wt)`` at pixel ``uv (B, H, W, 2)``.

        Follows :mod:`facehd.uv`'s convention (texel centres at ``u = (j + 0.5) / Wt``,
        ``v = 1 - (i + 0.5) / Ht``, edge clamping); returns ``(B, H, W, C)``, 0 where empty.
        """
        return sample_texture_torch(uv, texture, fragments.mask)


def _check_attributes(fragments: Fragments, attributes: torch.Tensor, where: str) -> torch.Tensor:
    if attributes.dim() == 2:
        attributes = attributes[None]
    if attributes.dim() != 3 or attributes.shape[1] != fragments.n_vertices:
        raise ValueError(
            f"{where}: expected attributes (B, {fragments.n_vertices}, C) or "
            f"({fragments.n_vertices}, C), got {tuple(attributes.shape)}"
        )
    if attributes.shape[0] not in (1, fragments.batch_size):
        raise ValueError(
            f"{where}: attribute batch {attributes.shape[0]} does not match {fragments.batch_size}"
        )
    return attributes


def interpolate_packed(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """Generic barycentric interpolation over the covered pixels only (see ``interpolate``)."""
    attributes = _check_attributes(fragments, attributes, "interpolate")
    b, h, w = fragments.face_ids.shape
    nb, nv, c = attributes.shape
    tri = fragments.faces.index_select(0, fragments.packed_faces)  # (P, 3)
    if nb > 1:
        tri = tri + (fragments.batch_index() * nv)[:, None]
    flat = attributes.reshape(nb * nv, c)
    bary = fragments.packed_barycentrics.to(attributes.dtype)
    values = flat.index_select(0, tri[:, 0]) * bary[:, 0:1]
    values = values + flat.index_select(0, tri[:, 1]) * bary[:, 1:2]
    values = values + flat.index_select(0, tri[:, 2]) * bary[:, 2:3]
    out = attributes.new_zeros(b * h * w, c).index_copy(0, fragments.pixels, values)
    return out.reshape(b, h, w, c)


def check_texture(uv: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
    """The arguments of ``sample_texture`` checked (every backend's): ``uv (B, H, W, 2)`` and
    ``texture (B or 1, C, Ht, Wt)`` or ``(C, Ht, Wt)``; returns the texture with its batch axis.
    """
    if texture.dim() == 3:
        texture = texture[None]
    if texture.dim() != 4:
        raise ValueError(
            f"sample_texture: expected texture (B, C, Ht, Wt), got {tuple(texture.shape)}"
        )
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise ValueError(f"sample_texture: expected uv (B, H, W, 2), got {tuple(uv.shape)}")
    if texture.shape[0] not in (1, uv.shape[0]):
        raise ValueError(
            f"sample_texture: texture batch {texture.shape[0]} vs uv batch {uv.shape[0]}"
        )
    return texture


def sample_texture_torch(
    uv: torch.Tensor, texture: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Bilinear texture lookup with ``grid_sample`` (align_corners=False, border padding).

    ``uv (B, H, W, 2)`` with ``u`` right and ``v`` up; ``texture (B, C, Ht, Wt)|(C, Ht, Wt)``;
    ``mask (B, H, W)`` zeroes the output where False. Returns ``(B, H, W, C)``.
    """
    texture = check_texture(uv, texture).to(uv.dtype).expand(uv.shape[0], -1, -1, -1)
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1)
    out = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.permute(0, 2, 3, 1)
    if mask is not None:
        out = out * mask[..., None].to(out.dtype)
    return out


def pixel_barycentrics(
    rays: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics and depth where camera rays meet triangles.

    Rays start at the camera centre (the origin of the camera frame) with directions
    ``rays (P, 3)`` whose ``z`` is 1. For triangle ``(v0, v1, v2)`` (camera frame, ``(P, 3)`` each)
    the weights are the signed volumes ``w0 = d . (v1 x v2)``, ``w1 = d . (v2 x v0)``,
    ``w2 = d . (v0 x v1)`` normalised by their sum; the depth is the ``z`` of the hit point.
    Differentiable in every input. Returns ``(barycentrics (P, 3), depth (P,))``.
    """
    bary, depth = _barycentrics_xyz(
        rays[:, 0], rays[:, 1], v0.unbind(1), v1.unbind(1), v2.unbind(1)
    )
    return torch.stack(bary, dim=1), depth


def _triple(dx: torch.Tensor, dy: torch.Tensor, a, b) -> torch.Tensor:
    """``(dx, dy, 1) . (a x b)`` for component tuples ``a``, ``b``."""
    ax, ay, az = a
    bx, by, bz = b
    return dx * (ay * bz - az * by) + dy * (az * bx - ax * bz) + (ax * by - ay * bx)


def _barycentrics_xyz(dx, dy, v0, v1, v2):
    """Component form of :func:`pixel_barycentrics` (``v*``: ``(x, y, z)`` tuples of ``(P,)``)."""
    w0 = _triple(dx, dy, v1, v2)
    w1 = _triple(dx, dy, v2, v0)
    w2 = _triple(dx, dy, v0, v1)
    total = w0 + w1 + w2
    total = torch.where(total == 0, torch.full_like(total, torch.finfo(total.dtype).tiny), total)
    inv = 1.0 / total
    b0, b1, b2 = w0 * inv, w1 * inv, w2 * inv
    depth = b0 * v0[2] + b1 * v1[2] + b2 * v2[2]
    return (b0, b1, b2), depth


def _face_pixel_boxes(
    pix: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], near: float
):
    """Integer pixel boxes of the triangles (inclusive), clipped to the image.

    ``pix (V, 2)`` continuous pixels, ``z (V,)`` camera depth, ``faces (F, 3)``. Returns
    ``(x0, x1, y0, y1, all_front, straddles)``, each ``(F,)``: a triangle with every vertex in
    front of ``near`` can contain a pixel centre only when ``x0 <= x1`` and ``y0 <= y1``; one with
    some vertices in front and some not (``straddles``) has an unbounded projection.
    """
    h, w = size
    front = z > near
    fz = front[faces]
    all_front = fz.all(dim=1)
    straddles = fz.any(dim=1) & ~all_front
    fx = pix[:, 0][faces]
    fy = pix[:, 1][faces]
    xmin = torch.minimum(torch.minimum(fx[:, 0], fx[:, 1]), fx[:, 2])
    xmax = torch.maximum(torch.maximum(fx[:, 0], fx[:, 1]), fx[:, 2])
    ymin = torch.minimum(torch.minimum(fy[:, 0], fy[:, 1]), fy[:, 2])
    ymax = torch.maximum(torch.maximum(fy[:, 0], fy[:, 1]), fy[:, 2])
    x0 = torch.ceil(xmin).clamp(min=0.0)
    x1 = torch.floor(xmax).clamp(max=w - 1.0)
    y0 = torch.ceil(ymin).clamp(min=0.0)
    y1 = torch.floor(ymax).clamp(max=h - 1.0)
    return x0, x1, y0, y1, all_front, straddles


def candidate_faces(
    pix: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], near: float
) -> torch.Tensor:
    """Indices ``(Fc,)`` of the triangles whose projection may contain a pixel centre of the image.

    A triangle in front of ``near`` is kept when its pixel bounding box holds an integer point
    inside the image; one straddling the ``near`` plane is always kept; one behind it never.
    """
    x0, x1, y0, y1, all_front, straddles = _face_pixel_boxes(pix, z, faces, size, near)
    covers = (x0 <= x1) & (y0 <= y1)
    return torch.nonzero((all_front & covers) | straddles).flatten()


#: Above this many (triangle, pixel) candidate pairs the z-buffer hands the mesh to ray casting.
ZBUFFER_MAX_PAIRS = 16_000_000


def zbuffer_visibility(
    pix: np.ndarray, z: np.ndarray, faces: np.ndarray, size: tuple[int, int], near: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Visible triangle per pixel centre by a vectorised z-buffer (float64, no gradients).

    Each triangle is tested at the integer pixels of its bounding box: a pixel centre is inside
    when its three screen-space barycentrics are >= 0 (a centre on a shared edge goes to both
    triangles, so closed surfaces show no cracks). The triangle with the largest ``1 / z`` (affine
    in screen space, so exact under perspective) wins; ties go to the higher triangle index.
    Triangles whose box spans at most 2 x 2 pixels (nearly all of them on a dense mesh) are
    tested in four fixed slots without gathers; larger ones are expanded pixel by pixel.

    Parameters
    ----------
    pix : (V, 2) float
        Continuous pixels ``(x = col, y = row)`` of the vertices.
    z : (V,) float
        Camera depth of the vertices.
    faces : (F, 3) int
    size : (H, W)
    near : float
        Geometry at or closer than this depth is not rasterised.

    Returns
    -------
    ``(pixel ids (P,), face ids (P,))`` int64 with flat pixel ids ``row * W + col``, or ``None``
    when a triangle straddles the ``near`` plane or the expansion would exceed
    :data:`ZBUFFER_MAX_PAIRS` (ray casting handles those).
    """
    h, w = size
    px = np.ascontiguousarray(pix[:, 0], dtype=np.float64)
    py = np.ascontiguousarray(pix[:, 1], dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    i0, i1, i2 = (np.ascontiguousarray(faces[:, k]) for k in range(3))
    xa, xb, xc = px[i0], px[i1], px[i2]
    ya, yb, yc = py[i0], py[i1], py[i2]
    za, zb, zc = z[i0], z[i1], z[i2]
    fa, fb, fc = za > near, zb > near, zc > near
    front = fa & fb & fc
    if bool(((fa | fb | fc) & ~front).any()):
        return None
    x0 = np.maximum(np.ceil(np.minimum(np.minimum(xa, xb), xc)), 0.0)
    x1 = np.minimum(np.floor(np.maximum(np.maximum(xa, xb), xc)), w - 1.0)
    y0 = np.maximum(np.ceil(np.minimum(np.minimum(ya, yb), yc)), 0.0)
    y1 = np.minimum(np.floor(np.maximum(np.maximum(ya, yb), yc)), h - 1.0)
    nx = x1 - x0  # pixel count - 1 along x (negative: no pixel centre)
    ny = y1 - y0
    ex, ey = xa - xc, ya - yc
    gx, gy = xb - xc, yb - yc
    den = gy * ex - gx * ey  # twice the signed area
    ok = front & (nx >= 0) & (ny >= 0) & (den != 0)
    inv = 1.0 / np.where(ok, den, 1.0)
    # Screen-space barycentrics are affine: lambda0 = l0 + a0 * dx + b0 * dy from the box corner.
    a0, b0 = gy * inv, -gx * inv
    a1, b1 = -ey * inv, ex * inv
    dx, dy = x0 - xc, y0 - yc
    l0 = a0 * dx + b0 * dy
    l1 = a1 * dx + b1 * dy
    iza = 1.0 / np.where(ok, za, 1.0)
    izb = 1.0 / np.where(ok, zb, 1.0)
    izc = 1.0 / np.where(ok, zc, 1.0)
    d0, d1 = iza - izc, izb - izc
    iz = izc + l0 * d0 + l1 * d1  # 1 / z at the box corner, then its slopes
    izx = a0 * d0 + a1 * d1
    izy = b0 * d0 + b1 * d1
    small = ok & (nx <= 1) & (ny <= 1)
    corner = y0 * w + x0
    tol = 1e-9
    pids, depths, fids = [], [], []
    for ox, oy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        s0, s1, siz, m = l0, l1, iz, small
        if ox:
            s0, s1, siz, m = s0 + a0, s1 + a1, siz + izx, m & (nx >= 1)
        if oy:
            s0, s1, siz, m = s0 + b0, s1 + b1, siz + izy, m & (ny >= 1)
        sel = np.flatnonzero(m & (s0 >= -tol) & (s1 >= -tol) & (s0 + s1 <= 1.0 + tol))
        pids.append(corner[sel] + (ox + oy * w))
        depths.append(siz[sel])
        fids.append(sel)
    big = np.flatnonzero(ok & ~small)
    if big.size:
        cx = (nx[big] + 1).astype(np.int64)
        n = cx * (ny[big] + 1).astype(np.int64)
        if int(n.sum()) > ZBUFFER_MAX_PAIRS:
            return None
        rep = np.repeat(np.arange(big.size), n)
        k = np.arange(rep.size) - np.repeat(np.cumsum(n) - n, n)
        cxr = cx[rep]
        oy_ = k // cxr
        ox_ = k - oy_ * cxr
        fbig = big[rep]
        s0 = l0[fbig] + a0[fbig] * ox_ + b0[fbig] * oy_
        s1 = l1[fbig] + a1[fbig] * ox_ + b1[fbig] * oy_
        sel = np.flatnonzero((s0 >= -tol) & (s1 >= -tol) & (s0 + s1 <= 1.0 + tol))
        fbig, ox_, oy_ = fbig[sel], ox_[sel], oy_[sel]
        pids.append(corner[fbig] + ox_ + oy_ * w)
        depths.append(iz[fbig] + izx[fbig] * ox_ + izy[fbig] * oy_)
        fids.append(fbig)
    pid = torch.from_numpy(np.concatenate(pids).astype(np.int64))
    invz = torch.from_numpy(np.concatenate(depths))
    face = torch.from_numpy(np.concatenate(fids).astype(np.int64))
    best = torch.full((h * w,), -torch.inf, dtype=torch.float64)
    best = best.scatter_reduce(0, pid, invz, reduce="amax")
    win = invz >= best[pid]
    owner = torch.full((h * w,), -1, dtype=torch.int64)
    owner = owner.scatter_reduce(0, pid[win], face[win], reduce="amax")
    pixels = torch.nonzero(owner >= 0).flatten()
    return pixels.numpy(), owner[pixels].numpy()


class CpuBackend(RasterBackend):
    """CPU rasteriser: discrete visibility per pixel, then differentiable barycentrics in PyTorch.

    Parameters
    ----------
    visibility : {"raycast", "zbuffer"}
        How the visible triangle of each pixel centre is found. ``"raycast"``: one ray per pixel
        (inside the projected bounding box of the mesh) cast into Open3D's Embree scene.
        ``"zbuffer"``: a vectorised z-buffer over the integer pixels of each triangle's bounding
        box, in float64; a mesh crossing the ``near`` plane (or an oversized problem) falls back to
        ray casting. Both give the same triangle ids up to ties on shared edges; the z-buffer skips
        the scene build and is faster for single renders.
    threads : int
        Threads for Open3D's scene build and ray casting (0: all cores).
    near : float
        Camera depth (world units) in front of which geometry is ignored.
    """

    name = "cpu"

    def __init__(self, visibility: str = "zbuffer", threads: int = 0, near: float = 1e-6) -> None:
        if visibility not in ("raycast", "zbuffer"):
            raise ValueError(
                f"CpuBackend: visibility must be 'raycast' or 'zbuffer', got {visibility!r}"
            )
        self.visibility = visibility
        self.threads = int(threads)
        self.near = float(near)

    def _ray_candidates(
        self, verts_cam: torch.Tensor, pix: torch.Tensor, faces: torch.Tensor, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pixels and triangles worth ray casting for one mesh.

        ``verts_cam (V, 3)`` camera frame, ``pix (V, 2)`` their pixels, ``faces (F, 3)``. Returns
        ``(flat pixel ids inside the triangles' bounding box, candidate face ids, their faces)``.
        """
        h, w = size
        keep = candidate_faces(pix, verts_cam[:, 2], faces, size, self.near)
        if keep.numel() == 0:
            return torch.zeros(0, dtype=torch.int64), keep, faces[keep]
        sub = faces[keep]
        if bool((verts_cam[sub.reshape(-1), 2] > self.near).all()):
            used = pix[sub.reshape(-1)]
            c0 = int(max(np.ceil(float(used[:, 0].min())), 0))
            c1 = int(min(np.floor(float(used[:, 0].max())), w - 1))
            r0 = int(max(np.ceil(float(used[:, 1].min())), 0))
            r1 = int(min(np.floor(float(used[:, 1].max())), h - 1))
        else:
            c0, c1, r0, r1 = 0, w - 1, 0, h - 1
        cols = torch.arange(c0, c1 + 1)
        rows = torch.arange(r0, r1 + 1)
        pc = (rows[:, None] * w + cols[None, :]).reshape(-1)
        return pc, keep, sub

    def rasterize(
        self, vertices: torch.Tensor, faces: torch.Tensor, camera: PinholeCamera
    ) -> Fragments:
        vertices, faces = check_mesh_batch(vertices, faces, "rasterize")
        b, nv, _ = vertices.shape
        _check_camera_batch(camera, b, "rasterize")
        h, w = camera.image_size
        verts_cam = camera.world_to_camera(vertices)  # (B, V, 3), differentiable
        if verts_cam.shape[0] != b:
            verts_cam = verts_cam.expand(b, -1, -1)
        faces_cpu = faces.cpu()
        faces_np = faces_cpu.numpy()
        with torch.no_grad():
            vc = verts_cam.detach().cpu().to(torch.float64)
            cam64 = camera.to(dtype=torch.float64, device="cpu")
            pix = cam64.camera_to_pixels(vc)
            if pix.shape[0] != b:
                pix = pix.expand(b, -1, -1)
            all_pixels, all_faces = [], []
            for i in range(b):
                found = None
                if self.visibility == "zbuffer":
                    zb = zbuffer_visibility(
                        pix[i].numpy(), vc[i, :, 2].numpy(), faces_np, (h, w), self.near
                    )
                    if zb is not None:
                        found = (torch.from_numpy(zb[0]), torch.from_numpy(zb[1]))
                if found is None:
                    K = cam64.K[min(i, cam64.K.shape[0] - 1)]
                    found = self._raycast_one(vc[i], pix[i], faces_cpu, K, (h, w))
                all_pixels.append(found[0])
                all_faces.append(found[1])
        return self._fragments(verts_cam, faces, camera, all_pixels, all_faces, (h, w))

    def _raycast_one(
        self,
        vc: torch.Tensor,
        pix: torch.Tensor,
        faces: torch.Tensor,
        K: torch.Tensor,
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray-cast one mesh (camera frame ``vc (V, 3)``): ``(flat pixel ids, face ids)``."""
        from facehd._o3d import open3d

        o3d = open3d()
        h, w = size
        pc, keep, sub = self._ray_candidates(vc, pix, faces, size)
        if pc.numel() == 0:
            return pc, keep
        pxy = torch.stack([pc % w, torch.div(pc, w, rounding_mode="floor")], dim=1).to(
            torch.float64
        )
        dirs = _rays(K, pxy)
        scene = o3d.t.geometry.RaycastingScene(nthreads=self.threads)
        scene.add_triangles(
            o3d.core.Tensor(vc.numpy().astype(np.float32)),
            o3d.core.Tensor(sub.numpy().astype(np.uint32)),
        )
        # Rays start on the near plane (``dirs`` have z = 1): Embree reports hits at t >= 0, so
        # the parts of triangles straddling it that lie closer are not seen, as in the z-buffer.
        rays = torch.cat([dirs * self.near, dirs], dim=1).to(torch.float32).numpy()
        hit = scene.cast_rays(o3d.core.Tensor(rays), nthreads=self.threads)
        prim = torch.from_numpy(hit["primitive_ids"].numpy().astype(np.int64))
        ok = prim != int(scene.INVALID_ID)
        return pc[ok], keep[prim[ok]]

    def _fragments(self, verts_cam, faces, camera, all_pixels, all_faces, size):
        """Differentiable fragments from the visible (pixel, triangle) pairs of each mesh."""
        b, nv, _ = verts_cam.shape
        h, w = size
        device, dtype = verts_cam.device, verts_cam.dtype
        counts = torch.tensor([p.numel() for p in all_pixels])
        local = torch.cat(all_pixels).to(device)
        pfaces = torch.cat(all_faces).to(device)
        bidx = torch.repeat_interleave(torch.arange(b), counts).to(device)
        pixels = local + bidx * (h * w) if b > 1 else local
        pxy = _pixel_table(h, w, dtype, device).index_select(1, local)  # (2, P): x = col, y = row
        tri = faces.index_select(0, pfaces)
        if b > 1:
            tri = tri + (bidx * nv)[:, None]
        comps = verts_cam.reshape(b * nv, 3).t().contiguous()  # (3, B*V)
        corners = [comps.index_select(1, tri[:, k]).unbind(0) for k in range(3)]
        K = camera.K.to(dtype)
        if K.shape[0] > 1:
            K = K.index_select(0, bidx)
            fx, fy, sk, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 1], K[:, 0, 2], K[:, 1, 2]
        else:
            fx, fy, sk, cx, cy = K[0, 0, 0], K[0, 1, 1], K[0, 0, 1], K[0, 0, 2], K[0, 1, 2]
        dy = (pxy[1] - cy) / fy
        dx = (pxy[0] - cx - sk * dy) / fx
        (b0, b1, b2), depth = _barycentrics_xyz(dx, dy, *corners)
        bary = torch.stack([b0, b1, b2], dim=1)
        face_ids = torch.full((b * h * w,), -1, dtype=torch.int64, device=device)
        face_ids[pixels] = pfaces
        dense_bary = verts_cam.new_zeros(b * h * w, 3).index_copy(0, pixels, bary)
        dense_depth = verts_cam.new_zeros(b * h * w).index_copy(0, pixels, depth)
        face_ids = face_ids.reshape(b, h, w)
        return Fragments(
            face_ids=face_ids,
            barycentrics=dense_bary.reshape(b, h, w, 3),
            depth=dense_depth.reshape(b, h, w),
            mask=face_ids >= 0,
            pixels=pixels,
            packed_faces=pfaces,
            packed_barycentrics=bary,
            packed_batch=bidx,
            faces=faces,
            n_vertices=nv,
        )


_PIXEL_TABLES: dict = {}


def _pixel_table(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(2, H*W)`` continuous pixel coordinates ``(x = col, y = row)`` of each flat pixel id."""
    key = (h, w, dtype, str(device))
    table = _PIXEL_TABLES.get(key)
    if table is None:
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        table = torch.stack([cols.reshape(-1), rows.reshape(-1)]).to(device=device, dtype=dtype)
        _PIXEL_TABLES[key] = table
    return table


def _rays(K: torch.Tensor, pxy: torch.Tensor) -> torch.Tensor:
    """Camera-frame ray directions (z = 1) through ``pxy (P, 2)`` for intrinsics ``K (3, 3)``."""
    yy = (pxy[:, 1] - K[1, 2]) / K[1, 1]
    xx = (pxy[:, 0] - K[0, 2] - K[0, 1] * yy) / K[0, 0]
    return torch.stack([xx, yy, torch.ones_like(xx)], dim=1)


def get_backend(name: str | RasterBackend = "auto", **kwargs: Any) -> RasterBackend:
    """A backend by name: ``"cpu"``, ``"nvdiffrast"`` (``gpu`` extra and CUDA) or ``"auto"``.

    ``"auto"`` picks nvdiffrast when it is importable and CUDA is available, else the CPU backend.
    A backend instance is returned unchanged.
    """
    if isinstance(name, RasterBackend):
        return name
    if name == "auto":
        from facehd.render.nvdiffrast_backend import nvdiffrast_available

        name = "nvdiffrast" if nvdiffrast_available() and torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return CpuBackend(**kwargs)
    if name == "nvdiffrast":
        from facehd.render.nvdiffrast_backend import NvdiffrastBackend

        return NvdiffrastBackend(**kwargs)
    raise ValueError(f"unknown renderer backend {name!r}; choose 'cpu', 'nvdiffrast' or 'auto'")

"""A CPU reference of the four nvdiffrast primitives facehd's GPU backend calls, written from
nvdiffrast's documented semantics, so that the backend's own code (clip coordinates, the raster
tensor's layout, the texture's row order, devices and dtypes, gradients) runs in the test suite
on machines without CUDA. It is slow (a loop over the batch, every triangle against the pixel
centres of its bounding box) and meant for small test images only.

The semantics it follows (nvdiffrast's documentation, "Coordinate systems" and the primitives'
reference; ``interpolate.cu`` and ``texture.cu`` for the exact formulas):

- ``rasterize``: positions are clip coordinates ``(x, y, z, w)``; pixel ``(px, py)`` of the
  output, row ``py`` of the tensor, samples NDC ``((2 px + 1) / W - 1, (2 py + 1) / H - 1)``
  (the first row is NDC ``y = -1``, OpenGL's bottom). Both windings are drawn. The nearest
  surface wins: the smallest ``z / w``, which grows away from the viewer, within ``[-1, 1]``.
  Each covered pixel holds ``(u, v, z / w, triangle_id + 1)`` with perspective-correct
  barycentrics ``u`` of the triangle's first vertex and ``v`` of its second; empty pixels hold
  zeros. ``u``, ``v`` and ``z / w`` are differentiable with respect to the positions.
- ``interpolate``: ``u a0 + v a1 + (1 - u - v) a2`` per pixel, zero where empty.
- ``texture`` (``filter_mode='linear'``, ``boundary_mode='clamp'``): texel ``(i, j)`` of a
  ``(B, Ht, Wt, C)`` texture has its centre at ``uv = ((j + 0.5) / Wt, (i + 0.5) / Ht)``, so
  ``uv = (0, 0)`` is the corner of the first row in memory; bilinear between the four nearest
  texel centres, indices clamped to the edge.
"""

from __future__ import annotations

from typing import Any

import torch


class RasterizeCudaContext:
    """Stands for nvdiffrast's CUDA rasteriser context (holds only the device)."""

    def __init__(self, device: Any = None) -> None:
        self.device = device


RasterizeGLContext = RasterizeCudaContext


def _edge(ax, ay, bx, by, px, py):  # noqa: ANN001, ANN202
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _screen_weights(
    tx: torch.Tensor, ty: torch.Tensor, t: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Screen-space barycentrics ``(l0, l1, l2)`` of the points ``(qx, qy)`` in triangles ``t``
    (corners ``tx, ty (T, 3)`` in pixels) and the triangles' doubled signed areas."""
    ax, bx, cx = (tx[t, k] for k in range(3))
    ay, by, cy = (ty[t, k] for k in range(3))
    area = _edge(ax, ay, bx, by, cx, cy)
    l0 = _edge(bx, by, cx, cy, qx, qy) / area
    l1 = _edge(cx, cy, ax, ay, qx, qy) / area
    return l0, l1, 1.0 - l0 - l1, area


def rasterize(
    ctx: RasterizeCudaContext,
    pos: torch.Tensor,
    tri: torch.Tensor,
    resolution: list[int],
    ranges: Any = None,
    grad_db: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rast (B, H, W, 4), rast_db (B, H, W, 4))`` for instanced ``pos (B, V, 4)``."""
    if pos.dim() != 3 or pos.shape[-1] != 4 or ranges is not None:
        raise ValueError("reference rasterize: instanced mode only, pos (B, V, 4)")
    if pos.dtype != torch.float32 or tri.dtype != torch.int32:
        raise TypeError("nvdiffrast takes float32 positions and int32 triangles")
    h, w = (int(x) for x in resolution)
    tri = tri.long()
    n_tri = tri.shape[0]
    rows = []
    for b in range(pos.shape[0]):
        p = pos[b]
        if bool((p[:, 3] <= 0).any()):
            raise NotImplementedError("reference rasterize: no clipping of w <= 0 vertices")
        ndc = p[:, :3] / p[:, 3:4]
        # continuous pixel coordinates: the centre of pixel (px, py) is (px, py)
        sx = (ndc[:, 0] + 1.0) * (w / 2.0) - 0.5
        sy = (ndc[:, 1] + 1.0) * (h / 2.0) - 0.5
        tx, ty, tz, tw = sx[tri], sy[tri], ndc[:, 2][tri], p[:, 3][tri]  # (T, 3) each
        with torch.no_grad():
            x0 = tx.amin(1).ceil().clamp(0, w - 1).long()
            x1 = tx.amax(1).floor().clamp(-1, w - 1).long()
            y0 = ty.amin(1).ceil().clamp(0, h - 1).long()
            y1 = ty.amax(1).floor().clamp(-1, h - 1).long()
            nx = (x1 - x0 + 1).clamp(min=0)
            ny = (y1 - y0 + 1).clamp(min=0)
            counts = nx * ny
            t_of = torch.repeat_interleave(torch.arange(n_tri), counts)
            first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
            local = torch.arange(int(counts.sum())) - first
            px = x0[t_of] + local % nx[t_of]
            py = y0[t_of] + local // nx[t_of]
            l0, l1, l2, area = _screen_weights(tx, ty, t_of, px, py)
            z = l0 * tz[t_of, 0] + l1 * tz[t_of, 1] + l2 * tz[t_of, 2]
            keep = (area != 0) & (l0 >= 0) & (l1 >= 0) & (l2 >= 0) & (z >= -1) & (z <= 1)
            t_of, px, py, z = t_of[keep], px[keep], py[keep], z[keep]
            pix = py * w + px
            best = torch.full((h * w,), float("inf")).scatter_reduce(0, pix, z, "amin")
            win = z == best[pix]
            # ties (shared edges, equal depth): the lowest triangle id, one per pixel
            order = torch.argsort(pix[win] * (n_tri + 1) + t_of[win])
            wp, wt = pix[win][order], t_of[win][order]
            firsts = torch.ones_like(wp, dtype=torch.bool)
            firsts[1:] = wp[1:] != wp[:-1]
            wp, wt = wp[firsts], wt[firsts]
        # differentiable values at the winning samples
        qx, qy = (wp % w).to(pos.dtype), (wp // w).to(pos.dtype)
        l0, l1, l2, _ = _screen_weights(tx, ty, wt, qx, qy)
        z = l0 * tz[wt, 0] + l1 * tz[wt, 1] + l2 * tz[wt, 2]
        # perspective correction: screen-space weights over w, renormalised
        q0, q1, q2 = l0 / tw[wt, 0], l1 / tw[wt, 1], l2 / tw[wt, 2]
        s = q0 + q1 + q2
        vals = torch.stack([q0 / s, q1 / s, z, (wt + 1).to(pos.dtype)], dim=-1)
        out = torch.zeros(h * w, 4, dtype=pos.dtype).index_put((wp,), vals)
        rows.append(out.reshape(h, w, 4))
    rast = torch.stack(rows)
    return rast, torch.zeros_like(rast)


def interpolate(
    attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, **_: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attributes ``(B, V, C)`` or ``(V, C)`` at each pixel: ``(B, H, W, C)``."""
    if attr.dtype != torch.float32:
        raise TypeError("nvdiffrast interpolates float32 attributes")
    b = rast.shape[0]
    if attr.dim() == 2:
        attr = attr[None].expand(b, -1, -1)
    tid = rast[..., 3].round().long() - 1  # (B, H, W)
    valid = tid >= 0
    corners = tri.long()[tid.clamp(min=0)]  # (B, H, W, 3)
    u, v = rast[..., 0:1], rast[..., 1:2]
    bidx = torch.arange(b).view(b, 1, 1)
    a0, a1, a2 = (attr[bidx, corners[..., k]] for k in range(3))
    out = u * a0 + v * a1 + (1.0 - u - v) * a2
    return out * valid[..., None], torch.zeros(0)


def texture(
    tex: torch.Tensor,
    uv: torch.Tensor,
    filter_mode: str = "auto",
    boundary_mode: str = "wrap",
    **_: Any,
) -> torch.Tensor:
    """Bilinear lookup of ``tex (B, Ht, Wt, C)`` at ``uv (B, H, W, 2)``, clamped at the edges."""
    if filter_mode != "linear" or boundary_mode != "clamp":
        raise NotImplementedError("reference texture: filter_mode='linear', boundary_mode='clamp'")
    bt, ht, wt, _ = tex.shape
    x = uv[..., 0] * wt - 0.5
    y = uv[..., 1] * ht - 0.5
    x0f, y0f = x.floor(), y.floor()
    fx, fy = (x - x0f)[..., None], (y - y0f)[..., None]
    x0, y0 = x0f.long(), y0f.long()
    bidx = torch.arange(uv.shape[0]).view(-1, 1, 1) % bt

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return tex[bidx, yi.clamp(0, ht - 1), xi.clamp(0, wt - 1)]

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def backend() -> Any:
    """facehd's :class:`NvdiffrastBackend` on this reference, on the CPU (its constructor, which
    only imports nvdiffrast and checks for CUDA, is what the reference stands in for)."""
    from types import SimpleNamespace

    from facehd.render.nvdiffrast_backend import NvdiffrastBackend

    made = NvdiffrastBackend.__new__(NvdiffrastBackend)
    made._dr = SimpleNamespace(rasterize=rasterize, interpolate=interpolate, texture=texture)
    made.device = torch.device("cpu")
    made.ctx = RasterizeCudaContext(device=made.device)
    return made

"""Texture re-alignment through the reversal flow of the deformation map (paper Sec. 3.2).

The UV texture ``T`` was sampled from the photo at the projections of the coarse surface:
``T(uv) = I(x0(uv))`` with ``x0 = project(P0(uv))``. The deformation map moves the surface to
``P1 = P0 + D``, whose texels project to ``x1(uv) = project(P1(uv))``, so the texture that fits
the deformed surface is ``T'(uv) = I(x1(uv))``. Instead of re-sampling the photo, the image-space
motion ``d = x1 - x0`` is turned into a flow in UV space (the *reversal flow* ``F``) through the
local Jacobian of the coarse projection ``J = dx0/duv``::

    x0(uv + F) ~ x0(uv) + J F = x1(uv)   =>   F = J^-1 (x1 - x0)
    T'(uv) = T(uv + F)

``J`` is estimated by finite differences between neighbouring texels inside the valid mask
(central where both neighbours are valid, one-sided otherwise); texels whose Jacobian cannot be
formed or is (near) singular get zero flow. The result is exact when ``x0`` is affine in ``uv``
and the photo is linear over the moved distance.

Sampling follows facehd's single UV convention (:mod:`facehd.uv`): texel ``(i, j)`` of an
``H x W`` map has its centre at ``u = (j + 0.5)/W``, ``v = 1 - (i + 0.5)/H``; a map is read at a UV
through ``grid_sample(align_corners=False, padding_mode="border")`` with ``(gx, gy) = (2u - 1,
1 - 2v)`` (bilinear, clamped at the edges).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "RealignResult",
    "realign_texture",
    "reversal_flow",
    "texel_uv_grid",
    "uv_to_grid",
    "warp_uv_map",
]


def texel_uv_grid(
    size: tuple[int, int], *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """UVs of the texel centres of an ``H x W`` map.

    Returns ``(H, W, 2)`` with ``[i, j] = ((j + 0.5)/W, 1 - (i + 0.5)/H)``.
    """
    h, w = size
    v = 1.0 - (torch.arange(h, dtype=dtype, device=device) + 0.5) / h
    u = (torch.arange(w, dtype=dtype, device=device) + 0.5) / w
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` UVs -> ``grid_sample`` coordinates ``(2u - 1, 1 - 2v)``."""
    return torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], dim=-1)


def _check_bchw(name: str, t: torch.Tensor, channels: int | None = None) -> None:
    if t.dim() != 4 or (channels is not None and t.shape[1] != channels):
        layout = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)}")


def warp_uv_map(uv_map: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Read ``uv_map`` at every texel's UV plus ``flow``: ``out(uv) = map(uv + flow(uv))``.

    Parameters
    ----------
    uv_map : (B, C, H, W) map in facehd's UV convention.
    flow : (B, 2, H, W) displacement ``(du, dv)`` in UV units (``u`` right, ``v`` up).

    Returns
    -------
    (B, C, H, W) in ``uv_map``'s dtype (sampled in at least float32), bilinear with edge
    clamping; differentiable in both inputs. Zero flow returns the map (texel centres are hit
    exactly, up to rounding).
    """
    _check_bchw("uv_map", uv_map)
    _check_bchw("flow", flow, 2)
    b, _, h, w = uv_map.shape
    if flow.shape[0] != b or flow.shape[-2:] != (h, w):
        raise ValueError(
            f"flow {tuple(flow.shape)} must match uv_map {tuple(uv_map.shape)} in batch and size"
        )
    # at least float32: half precision cannot address texels of a 256 map (UV step 1/256)
    work = torch.promote_types(torch.promote_types(uv_map.dtype, flow.dtype), torch.float32)
    base = texel_uv_grid((h, w), dtype=work, device=flow.device)  # (H, W, 2)
    uv = base.unsqueeze(0) + flow.to(work).permute(0, 2, 3, 1)
    out = F.grid_sample(
        uv_map.to(work), uv_to_grid(uv), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.to(uv_map.dtype)


def _axis_derivative(
    f: torch.Tensor, valid: torch.Tensor, dim: int, step: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite-difference derivative of ``f (B, C, H, W)`` along ``dim`` (2: rows, 3: columns).

    Averages the forward and backward differences that join two valid texels; ``step`` is the
    coordinate change from one texel to the next. Returns the derivative and a (B, 1, H, W) bool
    of where it exists.
    """
    n = f.shape[dim]
    both = valid.narrow(dim, 1, n - 1) & valid.narrow(dim, 0, n - 1)  # pair (k, k+1) valid
    diff = (f.narrow(dim, 1, n - 1) - f.narrow(dim, 0, n - 1)) / step * both
    after, before = ((0, 1), (1, 0)) if dim == 3 else ((0, 0, 0, 1), (0, 0, 1, 0))
    fwd, bwd = F.pad(diff, after), F.pad(diff, before)  # at k: f[k+1] - f[k] and f[k] - f[k-1]
    both_f = both.to(f.dtype)
    count = F.pad(both_f, after) + F.pad(both_f, before)
    deriv = (fwd + bwd) / count.clamp_min(1.0)
    return deriv, (count > 0) & valid


def reversal_flow(
    xy_coarse: torch.Tensor,
    xy_deformed: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    min_det: float = 1e-12,
) -> torch.Tensor:
    """UV-space flow ``F = J^-1 (x1 - x0)`` that re-aligns a texture to the deformed surface.

    Parameters
    ----------
    xy_coarse : (B, 2, H, W) image position ``x0`` (pixels, any consistent convention) of every
        texel of the coarse surface.
    xy_deformed : (B, 2, H, W) image position ``x1`` of the same texels after the deformation.
    mask : (B, 1, H, W) bool or {0, 1} valid texels (``None``: all valid).
    min_det : texels whose ``|det J|`` (pixels^2 per UV^2, relative to the largest in the image)
        is below this get zero flow.

    Returns
    -------
    (B, 2, H, W) flow ``(du, dv)`` in UV units; zero outside the mask and where ``J`` is singular
    or cannot be estimated. Differentiable in both positions. Computed in (at least) float32.
    """
    _check_bchw("xy_coarse", xy_coarse, 2)
    _check_bchw("xy_deformed", xy_deformed, 2)
    if xy_deformed.shape != xy_coarse.shape:
        raise ValueError(
            f"xy_deformed {tuple(xy_deformed.shape)} must match xy_coarse {tuple(xy_coarse.shape)}"
        )
    b, _, h, w = xy_coarse.shape
    if min(h, w) < 2:
        raise ValueError(f"reversal_flow: maps must be at least 2x2, got {h}x{w}")
    # at least float32: det J (pixels^2 per UV^2) overflows half precision
    work = torch.promote_types(xy_coarse.dtype, xy_deformed.dtype)
    work = torch.promote_types(work, torch.float32)
    xy_coarse, xy_deformed = xy_coarse.to(work), xy_deformed.to(work)
    if mask is None:
        valid = torch.ones((b, 1, h, w), dtype=torch.bool, device=xy_coarse.device)
    else:
        _check_bchw("mask", mask, 1)
        if mask.shape[0] != b or mask.shape[-2:] != (h, w):
            raise ValueError(f"mask {tuple(mask.shape)} must be (B={b}, 1, {h}, {w})")
        valid = mask > 0.5 if mask.dtype != torch.bool else mask
    # u grows with the column (spacing 1/W); v decreases with the row (spacing -1/H).
    dx_du, ok_u = _axis_derivative(xy_coarse, valid, dim=3, step=1.0 / w)
    dx_dv, ok_v = _axis_derivative(xy_coarse, valid, dim=2, step=-1.0 / h)
    a, c = dx_du[:, 0:1], dx_du[:, 1:2]  # J = [[a, b], [c, d]] = [[dx/du, dx/dv], [dy/du, dy/dv]]
    bb, d = dx_dv[:, 0:1], dx_dv[:, 1:2]
    det = a * d - bb * c
    scale = det.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-30).view(b, 1, 1, 1)
    good = ok_u & ok_v & (det.detach().abs() > min_det * scale)
    safe_det = torch.where(good, det, torch.ones_like(det))
    delta = xy_deformed - xy_coarse
    du = (d * delta[:, 0:1] - bb * delta[:, 1:2]) / safe_det
    dv = (-c * delta[:, 0:1] + a * delta[:, 1:2]) / safe_det
    flow = torch.cat([du, dv], dim=1)
    return torch.where(good, flow, torch.zeros_like(flow))


class RealignResult(NamedTuple):
    """Re-aligned texture and the flow that made it.

    Attributes
    ----------
    texture : (B, C, H, W) ``T'(uv) = T(uv + F(uv))``.
    flow : (B, 2, H, W) reversal flow ``F`` in UV units.
    """

    texture: torch.Tensor
    flow: torch.Tensor


def realign_texture(
    texture: torch.Tensor,
    xy_coarse: torch.Tensor,
    xy_deformed: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> RealignResult:
    """Re-align a UV texture to the deformed surface (see the module docstring).

    Parameters
    ----------
    texture : (B, C, H, W) UV texture sampled at the coarse surface.
    xy_coarse, xy_deformed : (B, 2, H, W) image positions of each texel before / after deformation.
    mask : (B, 1, H, W) valid texels; the flow is zero outside.
    """
    _check_bchw("texture", texture)
    flow = reversal_flow(xy_coarse, xy_deformed, mask)
    if texture.shape[0] != flow.shape[0] or texture.shape[-2:] != flow.shape[-2:]:
        raise ValueError(
            f"texture {tuple(texture.shape)} must match the position maps {tuple(xy_coarse.shape)}"
        )
    return RealignResult(warp_uv_map(texture, flow), flow)

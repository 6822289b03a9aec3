"""Texture re-alignment: facehd.uv's convention, exactness on affine maps, masks, gradients."""

from __future__ import annotations

import pytest
import torch

from facehd import uv as fuv
from models.realign import realign_texture, reversal_flow, texel_uv_grid, warp_uv_map

H = W = 16
A = torch.tensor([[120.0, 20.0], [-10.0, -150.0]], dtype=torch.float64)  # pixels per UV unit
B0 = torch.tensor([40.0, 180.0], dtype=torch.float64)
C = torch.tensor(
    [[0.1, 0.004, -0.002], [0.5, -0.003, 0.001], [0.9, 0.001, 0.003]], dtype=torch.float64
)


def photo(xy: torch.Tensor) -> torch.Tensor:
    """A linear RGB 'photo' I(x, y) = c0 + c1 x + c2 y; xy (B, 2, H, W) -> (B, 3, H, W)."""
    return (
        C[:, 0].view(1, 3, 1, 1)
        + C[:, 1].view(1, 3, 1, 1) * xy[:, :1]
        + C[:, 2].view(1, 3, 1, 1) * xy[:, 1:]
    )


def uv_grid() -> torch.Tensor:
    return texel_uv_grid((H, W), dtype=torch.float64).permute(2, 0, 1)[None]  # (1, 2, H, W)


def affine_positions() -> torch.Tensor:
    u = uv_grid()
    return torch.einsum("ij,bjhw->bihw", A, u) + B0.view(1, 2, 1, 1)


def smooth_motion() -> torch.Tensor:
    u = uv_grid()
    return torch.cat([0.8 + 0.3 * u[:, :1], -0.5 + 0.2 * u[:, 1:]], dim=1)  # pixels


def test_texel_grid_is_the_facehd_uv_convention():
    grid = texel_uv_grid((5, 7), dtype=torch.float64)
    torch.testing.assert_close(grid, torch.from_numpy(fuv.texel_centers_uv((5, 7))))


def test_zero_flow_returns_the_map():
    m = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    out = warp_uv_map(m, torch.zeros(2, 2, 9, 11, dtype=torch.float64))
    torch.testing.assert_close(out, m, rtol=0, atol=1e-13)  # texel centres hit exactly


def test_warp_equals_the_facehd_uv_sampler_including_edge_clamping():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(2, 3, 8, 12, generator=g, dtype=torch.float64)
    flow = (torch.rand(2, 2, 8, 12, generator=g, dtype=torch.float64) - 0.5) * 0.4  # +-2.4 texels
    got = warp_uv_map(m, flow)
    uvs = (texel_uv_grid((8, 12), dtype=torch.float64)[None] + flow.permute(0, 2, 3, 1)).reshape(
        2, -1, 2
    )
    ref = fuv.sample_uv_map(m, uvs)  # (B, V, C), facehd's own bilinear taps
    torch.testing.assert_close(got.permute(0, 2, 3, 1).reshape(2, -1, 3), ref)


def test_reversal_flow_inverts_the_jacobian_of_an_affine_projection():
    x0 = affine_positions()
    d = smooth_motion()
    flow = reversal_flow(x0, x0 + d)
    expected = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(A), d)
    torch.testing.assert_close(flow, expected, rtol=1e-10, atol=1e-12)


def test_realigned_texture_equals_the_photo_at_the_deformed_positions():
    x0 = affine_positions()
    x1 = x0 + smooth_motion()
    texture = photo(x0)  # T(uv) = I(x0(uv))
    out = realign_texture(texture, x0, x1)
    want = photo(x1)  # T'(uv) = I(x1(uv))
    # exact away from the border (where the sampler clamps)
    torch.testing.assert_close(out.texture[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1])
    assert (texture - want)[..., 1:-1, 1:-1].abs().max() > 1e-3  # the motion mattered


def test_curved_projection_is_realigned_to_first_order():
    n = 64
    u = texel_uv_grid((n, n), dtype=torch.float64).permute(2, 0, 1)[None]
    # a curved (sphere-like) coarse projection and a smooth 1-2 px motion
    x = 112 + 90 * torch.sin((u[:, :1] - 0.5) * 2.0)
    y = 112 - 90 * torch.sin((u[:, 1:] - 0.5) * 2.0) * (1 - 0.2 * (u[:, :1] - 0.5) ** 2)
    x0 = torch.cat([x, y], 1)
    d = torch.cat([1.5 * torch.cos(3 * u[:, 1:]), 1.0 + 0.5 * u[:, :1]], 1)
    texture = photo(x0)
    out = realign_texture(texture, x0, x0 + d)
    want = photo(x0 + d)
    inner = (..., slice(4, -4), slice(4, -4))  # flows reach ~1 texel: keep clear of the clamp
    err_realigned = (out.texture - want)[inner].abs().max()
    err_unaligned = (texture - want)[inner].abs().max()
    assert err_realigned < 0.05 * err_unaligned


def test_mask_zero_flow_outside_and_values_there_are_never_read():
    x0 = affine_positions()
    d = smooth_motion()
    mask = torch.ones(1, 1, H, W, dtype=torch.bool)
    mask[:, :, :, 10:] = False  # right part invalid
    mask[:, :, 5, 3] = False  # a hole
    mask[:, :, 12, 0] = False  # (12, 1) is then valid with no valid horizontal neighbour
    mask[:, :, 12, 2] = False
    garbage = x0.clone()
    garbage[:, :, ~mask[0, 0]] = 1e6  # positions outside the mask must not matter
    flow = reversal_flow(garbage, garbage + d, mask)
    expected = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(A), d)
    ok = mask.clone()
    ok[:, :, 12, 1] = False  # isolated along u: no Jacobian column, zero flow
    assert torch.count_nonzero(flow[:, :, ~ok[0, 0]]) == 0
    torch.testing.assert_close(flow[:, :, ok[0, 0]], expected[:, :, ok[0, 0]])


def test_singular_jacobian_gives_zero_flow():
    x0 = affine_positions()
    x0[:, 1] = 5.0  # every texel on one image row: det J = 0
    flow = reversal_flow(x0, x0 + smooth_motion())
    assert torch.count_nonzero(flow) == 0


def test_half_precision_inputs_are_computed_in_float32():
    # a 512-px projection: det J ~ 3e5 px^2/UV^2 overflows float16 (max 65504)
    x0 = affine_positions() * 2.5
    d = smooth_motion()
    a, b = x0.half(), (x0 + d).half()
    flow = reversal_flow(a, b)
    assert flow.dtype == torch.float32 and torch.isfinite(flow).all()
    expected = reversal_flow(a.double(), b.double())  # the same rounded positions, in float64
    torch.testing.assert_close(flow.double(), expected, rtol=1e-5, atol=1e-9)
    assert expected.abs().max() > 1e-3
    m = torch.rand(1, 3, 256, 256)
    shift = torch.zeros(1, 2, 256, 256)
    shift[:, 0] = 1.0 / 256  # one texel to the right
    out = warp_uv_map(m.half(), shift.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out[..., :-1].float(), m[..., 1:], rtol=0, atol=2e-3)


def test_shape_checks():
    x0 = affine_positions()
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        reversal_flow(x0[:, :1], x0)
    with pytest.raises(ValueError, match="must match"):
        warp_uv_map(torch.zeros(1, 3, H, W), torch.zeros(1, 2, H, W + 1))
    with pytest.raises(ValueError, match="mask"):
        reversal_flow(x0, x0, torch.ones(1, 1, H, W - 1))


def test_gradcheck_warp():
    g = torch.Generator().manual_seed(3)
    m = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    flow = ((torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64) - 0.5) * 0.2).requires_grad_()
    assert torch.autograd.gradcheck(warp_uv_map, (m, flow))


def test_gradcheck_reversal_flow_and_realignment():
    g = torch.Generator().manual_seed(4)
    h, w = 5, 6
    u = texel_uv_grid((h, w), dtype=torch.float64).permute(2, 0, 1)[None]
    x0 = torch.einsum("ij,bjhw->bihw", A, u) + torch.rand(1, 2, h, w, generator=g).double()
    x1 = x0 + torch.rand(1, 2, h, w, generator=g).double()
    tex = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 1, h, w, dtype=torch.bool)
    mask[:, :, 0, 0] = False
    x0.requires_grad_()
    x1.requires_grad_()
    tex.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: reversal_flow(a, b, mask), (x0, x1))
    assert torch.autograd.gradcheck(
        lambda t, a, b: realign_texture(t, a, b, mask).texture, (tex, x0, x1)
    )

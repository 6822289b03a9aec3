"""De-retouching module: paper Eq. 3-6 on hand-computed cases, gradients, the network wrapper."""

from __future__ import annotations

import pytest
import torch

from models.deretouch import (
    DeRetouchingModule,
    DeRetouchUNet,
    deretouch_albedo,
    phi,
    retouch_texture,
)


def full(value: float, shape=(1, 3, 2, 2)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.float64)


def test_half_blend_is_the_identity():
    # B = 0.5: T0 = 0 * T^2 + 1 * T = T, so A' = A0 (T + phi) / (T + phi) = A0
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    albedo = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    t0 = retouch_texture(tex, torch.full_like(tex, 0.5))
    torch.testing.assert_close(t0, tex, rtol=0, atol=1e-15)
    torch.testing.assert_close(deretouch_albedo(albedo, tex, t0), albedo, rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    ("t", "b", "a0", "t0", "phi_t0", "a_new"),
    [
        # T0 = (1-2B) T^2 + 2B T ; phi = 1/(T0^3/1e-6 + 1e-6) ; A' = A0 (T+phi)/(T0+phi)
        (0.5, 0.0, 0.6, 0.25, 6.3999999995904e-05, 1.19984643931155),  # T0 = T^2
        (0.5, 1.0, 0.6, 0.75, 2.37037037036475e-06, 0.400000632096768),  # T0 = T(2-T)
        (0.8, 0.25, 0.4, 0.72, 2.67918381343589e-06, 0.444444279063343),  # 0.32 + 0.40
        (0.01, 0.0, 0.5, 1e-4, 5.0e5, 0.5000000099),  # phi dominates: no blow-up near 0
    ],
)
def test_hand_computed_cases(t, b, a0, t0, phi_t0, a_new):
    tex, blend, albedo = full(t), full(b), full(a0)
    got_t0 = retouch_texture(tex, blend)
    torch.testing.assert_close(got_t0, full(t0), rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(phi(got_t0), full(phi_t0), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        deretouch_albedo(albedo, tex, got_t0), full(a_new), rtol=1e-12, atol=0
    )


def test_black_texture_keeps_the_coarse_albedo():
    # T = 0 -> T0 = 0 -> phi = 1/eps, A' = A0 (0 + 1e6)/(0 + 1e6) = A0 for any blend layer
    albedo = full(0.7)
    for b in (0.0, 0.3, 1.0):
        t0 = retouch_texture(full(0.0), full(b))
        assert torch.equal(t0, full(0.0))
        torch.testing.assert_close(deretouch_albedo(albedo, full(0.0), t0), albedo)


def test_retouched_texture_stays_in_unit_range_and_is_monotone_in_the_blend():
    t = torch.linspace(0, 1, 11, dtype=torch.float64).view(1, 1, 1, 11).expand(1, 3, 11, 11)
    b = torch.linspace(0, 1, 11, dtype=torch.float64).view(1, 1, 11, 1).expand(1, 3, 11, 11)
    t0 = retouch_texture(t, b)
    assert t0.min() >= 0 and t0.max() <= 1
    assert (t0[:, :, 1:] - t0[:, :, :-1]).min() >= 0  # dT0/dB = 2(T - T^2) >= 0


def test_gradcheck_of_the_blend_and_albedo_equations():
    g = torch.Generator().manual_seed(1)

    def rand():
        return (
            0.1 + 0.8 * torch.rand(1, 3, 3, 3, generator=g, dtype=torch.float64)
        ).requires_grad_()

    tex, blend, albedo = rand(), rand(), rand()

    def fn(t, b, a):
        return deretouch_albedo(a, t, retouch_texture(t, b))

    assert torch.autograd.gradcheck(fn, (tex, blend, albedo))


def test_shape_checks():
    with pytest.raises(ValueError, match="blend"):
        retouch_texture(full(0.5), full(0.5, (1, 3, 3, 3)))
    with pytest.raises(ValueError, match="albedo must be"):
        deretouch_albedo(torch.zeros(3, 2, 2), full(0.5), full(0.5))
    with pytest.raises(ValueError, match=r"texture \(2, 3, 2, 2\) does not match albedo"):
        deretouch_albedo(full(0.5), full(0.5, (2, 3, 2, 2)), full(0.5))  # another batch


def test_module_outputs_blend_in_unit_range_and_applies_eq_5():
    torch.manual_seed(0)
    module = DeRetouchingModule(width=4, input_size=32).eval()
    tex = torch.rand(2, 3, 24, 24)
    albedo = torch.rand(2, 3, 24, 24)
    out = module(tex, albedo)
    assert out.blend.shape == (2, 3, 24, 24)  # network ran at 32, resized back
    assert out.blend.min() >= 0 and out.blend.max() <= 1
    torch.testing.assert_close(out.retouched, retouch_texture(tex, out.blend))
    torch.testing.assert_close(out.albedo, deretouch_albedo(albedo, tex, out.retouched))


def test_unet_input_size_check():
    with pytest.raises(ValueError, match="at least 16x16"):
        DeRetouchUNet(4)(torch.zeros(1, 3, 8, 8))


def test_unet_sizes_that_are_not_multiples_of_16():
    """A side that pooling halves to an odd size comes back one short on the way up: the
    upsampled map is padded (zeros, split as evenly as possible, the extra on the far side) to
    its skip's size. Checked against the same network with an ``_Up`` that places the upsampled
    map into a zero image of the skip's size by hand."""
    import copy

    from models import deretouch

    torch.manual_seed(0)
    net = DeRetouchUNet(4).eval()
    x = torch.rand(1, 3, 40, 56) * 2 - 1
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 3, 40, 56)

    class AlwaysPad(torch.nn.Module):
        def __init__(self, up: torch.nn.Module) -> None:
            super().__init__()
            self.conv = up.conv

        def forward(self, a: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
            a = torch.nn.functional.interpolate(
                a, scale_factor=2, mode="bilinear", align_corners=True
            )
            dy, dx = skip.shape[-2] - a.shape[-2], skip.shape[-1] - a.shape[-1]
            big = torch.zeros(*a.shape[:2], skip.shape[-2], skip.shape[-1])
            big[..., dy // 2 : dy // 2 + a.shape[-2], dx // 2 : dx // 2 + a.shape[-1]] = a
            return self.conv(torch.cat([skip, big], dim=1))

    ref = copy.deepcopy(net)
    for name in ("up1", "up2", "up3", "up4"):
        assert isinstance(getattr(ref, name), deretouch._Up)
        setattr(ref, name, AlwaysPad(getattr(ref, name)))
    with torch.no_grad():
        torch.testing.assert_close(ref(x), y)


def test_the_network_sees_the_texture_as_the_official_module_feeds_it():
    """Scaled to [-1, 1] and resized (bilinear) to ``input_size``, the blend layer resized back;
    at ``input_size=None`` or the texture's own size, no resizing; the module's epsilon is the
    one Eq. 5-6 use."""
    import torch.nn.functional as F

    torch.manual_seed(1)
    tex = torch.rand(2, 3, 24, 40)
    albedo = torch.rand(2, 3, 24, 40)
    module = DeRetouchingModule(width=4, input_size=32, eps=1e-2).eval()
    net = module.generator
    with torch.no_grad():
        x = F.interpolate(tex * 2 - 1, (32, 32), mode="bilinear")
        expected = F.interpolate(net(x), (24, 40), mode="bilinear")
        torch.testing.assert_close(module.blend_layer(tex), expected)
        module.input_size = None
        torch.testing.assert_close(module.blend_layer(tex), net(tex * 2 - 1))
        square = torch.rand(1, 3, 32, 32)
        module.input_size = 32
        torch.testing.assert_close(module.blend_layer(square), net(square * 2 - 1))
        out = module(tex, albedo)
    torch.testing.assert_close(out.albedo, deretouch_albedo(albedo, tex, out.retouched, eps=1e-2))
    assert not torch.allclose(out.albedo, deretouch_albedo(albedo, tex, out.retouched))


def test_the_blend_layer_reaches_the_ends_of_its_range():
    """A sigmoid, unclamped: an output layer biased far up or down gives a blend layer within
    1e-6 of 1 (retouch fully) or 0."""
    net = DeRetouchUNet(4).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        net.outc.conv.weight.zero_()
        for bias, end in ((20.0, 1.0), (-20.0, 0.0)):
            net.outc.conv.bias.fill_(bias)
            torch.testing.assert_close(net(x), torch.full((1, 3, 16, 16), end), rtol=0, atol=1e-6)

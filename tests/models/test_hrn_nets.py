"""HRN's generators, learnt scales, discriminators and the official checkpoint layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facehd.errors import InputFileError
from models.checkpoints import CheckpointError
from models.config import GeneratorConfig, NetworkConfig, tiny_cpu_model_config
from models.deretouch import DeRetouchUNet
from models.discriminator import HRNDiscriminators, PatchDiscriminator
from models.hrn import HRN
from models.pix2pix import ResnetGenerator
from models.realign import realign_texture


def tiny_config(**overrides) -> NetworkConfig:
    cfg = tiny_cpu_model_config().network
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def inputs(cfg: NetworkConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.high_size
    pos = torch.randn(batch, 3, s, s, generator=g) * 60.0
    tex = torch.rand(batch, 3, s, s, generator=g)
    mask = torch.ones(batch, 1, s, s)
    mask[:, :, : s // 4] = 0.0  # top quarter invalid
    return pos, tex, mask


def randomised(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Every parameter (biases too, which start at 0) drawn N(0, scale**2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def assert_pix2pix_normal_start(net: torch.nn.Module, at_least: int) -> None:
    """pix2pix's 'normal' initialisation: weights N(0, 0.02), biases 0 (at least ``at_least``
    weights, so that the sample's mean and spread say so)."""
    named = list(net.named_parameters())
    weights = torch.cat([p.flatten() for n, p in named if n.endswith("weight")])
    biases = torch.cat([p.flatten() for n, p in named if n.endswith("bias")])
    assert weights.numel() > at_least
    assert weights.mean().abs() < 1e-3 and abs(weights.std().item() - 0.02) < 5e-4
    assert torch.count_nonzero(biases) == 0


# --------------------------------------------------------------------------------------------
# generator layout (official pix2pix resnet_9blocks with dropout)
# --------------------------------------------------------------------------------------------
def expected_generator_layout(cin: int, cout: int, f: int = 64, blocks: int = 9) -> dict:
    out = {"model.1.weight": (f, cin, 7, 7), "model.1.bias": (f,)}
    out |= {"model.4.weight": (2 * f, f, 3, 3), "model.4.bias": (2 * f,)}
    out |= {"model.7.weight": (4 * f, 2 * f, 3, 3), "model.7.bias": (4 * f,)}
    for i in range(10, 10 + blocks):
        for j in (1, 6):  # conv, (IN, ReLU, Dropout, pad), conv
            out[f"model.{i}.conv_block.{j}.weight"] = (4 * f, 4 * f, 3, 3)
            out[f"model.{i}.conv_block.{j}.bias"] = (4 * f,)
    up = 10 + blocks  # ConvTranspose weights are (in, out, k, k)
    out |= {f"model.{up}.weight": (4 * f, 2 * f, 3, 3), f"model.{up}.bias": (2 * f,)}
    out |= {f"model.{up + 3}.weight": (2 * f, f, 3, 3), f"model.{up + 3}.bias": (f,)}
    out |= {f"model.{up + 7}.weight": (cout, f, 7, 7), f"model.{up + 7}.bias": (cout,)}
    return out


@pytest.mark.parametrize(("cin", "cout"), [(6, 3), (9, 1)])
def test_paper_generator_state_dict_layout(cin, cout):
    net = ResnetGenerator(cin, cout)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == expected_generator_layout(cin, cout)


def test_layout_does_not_depend_on_dropout():
    a = ResnetGenerator(6, 3, filters=4, n_blocks=2, dropout=0.5).state_dict()
    b = ResnetGenerator(6, 3, filters=4, n_blocks=2, dropout=0.0).state_dict()
    assert list(a) == list(b)


def test_generator_output_shape_range_and_input_checks():
    net = ResnetGenerator(6, 3, filters=4, n_blocks=2).eval()
    x = torch.randn(2, 6, 16, 16) * 10.0
    y = net(x)
    assert y.shape == (2, 3, 16, 16)
    assert y.abs().max() < 1.0
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        net(torch.randn(2, 5, 16, 16))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 6, 18, 18))
    with pytest.raises(ValueError, match="multiples of 4 and >= 8, got 4x8"):
        net(torch.randn(1, 6, 4, 8))
    with pytest.raises(ValueError, match="n_blocks >= 0, got in=6 out=3 filters=0"):
        ResnetGenerator(6, 3, filters=0)
    with pytest.raises(ValueError, match="n_blocks >= 0"):
        ResnetGenerator(6, 3, n_blocks=-1)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        ResnetGenerator(6, 3, dropout=1.0)


def _generator_reference(state: dict, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """The pix2pix resnet generator written out from its state dict and the architecture
    (reflection padding, instance norm without parameters, ReLU, residual blocks, tanh)."""

    def conv(h: torch.Tensor, key: str, pad: int, stride: int = 1) -> torch.Tensor:
        h = F.pad(h, (pad,) * 4, mode="reflect") if pad else h
        return F.conv2d(h, state[f"{key}.weight"], state[f"{key}.bias"], stride=stride)

    def norm_relu(h: torch.Tensor) -> torch.Tensor:
        return F.relu(F.instance_norm(h, eps=1e-5))

    h = norm_relu(conv(x, "model.1", 3))
    for key in ("model.4", "model.7"):
        h = F.conv2d(h, state[f"{key}.weight"], state[f"{key}.bias"], stride=2, padding=1)
        h = norm_relu(h)
    for i in range(10, 10 + blocks):
        r = norm_relu(conv(h, f"model.{i}.conv_block.1", 1))
        h = h + F.instance_norm(conv(r, f"model.{i}.conv_block.6", 1), eps=1e-5)
    for key in (f"model.{10 + blocks}", f"model.{13 + blocks}"):
        w, b = state[f"{key}.weight"], state[f"{key}.bias"]
        h = norm_relu(F.conv_transpose2d(h, w, b, stride=2, padding=1, output_padding=1))
    return torch.tanh(conv(h, f"model.{17 + blocks}", 3))


def test_generator_computes_the_pix2pix_resnet_function():
    torch.manual_seed(0)
    net = randomised(ResnetGenerator(6, 3, filters=4, n_blocks=2), 0, scale=0.4)
    x = torch.randn(2, 6, 16, 12)
    want = _generator_reference(net.state_dict(), x, 2)
    torch.testing.assert_close(net.eval()(x), want, rtol=1e-5, atol=1e-6)
    # dropout 0.5 in the blocks acts in train mode only
    net.train()
    assert not torch.allclose(net(x), want, atol=1e-3)
    plain = ResnetGenerator(6, 3, filters=4, n_blocks=2, dropout=0.0)
    plain.load_state_dict(net.state_dict())
    torch.testing.assert_close(plain.train()(x), want, rtol=1e-5, atol=1e-6)


def test_generator_starts_from_pix2pix_normal_initialisation():
    torch.manual_seed(0)
    assert_pix2pix_normal_start(ResnetGenerator(6, 3, filters=16, n_blocks=3), 50_000)


# --------------------------------------------------------------------------------------------
# HRN forward: alpha / beta scaling, masks, units
# --------------------------------------------------------------------------------------------
def test_hrn_forward_shapes_and_alpha_beta_scaling():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = HRN(cfg).eval()
    pos, tex, mask = inputs(cfg)
    s = cfg.map_unit_mm
    out = model(pos, tex, mask)
    assert out.deformation.shape == (2, 3, cfg.mid_size, cfg.mid_size)
    assert out.displacement.shape == (2, 1, cfg.high_size, cfg.high_size)
    assert out.flow is None and torch.equal(out.realigned_texture, tex)

    # independent evaluation of deformation = mid_net(x) * 0.1 * alpha * mask (map units -> mm)
    m = cfg.mid_size
    x_mid = torch.cat(
        [
            F.interpolate(pos / s, (m, m), mode="bilinear", align_corners=False),
            F.interpolate(tex * 2 - 1, (m, m), mode="bilinear", align_corners=False),
        ],
        1,
    )
    mask_mid = F.interpolate(mask, (m, m), mode="bilinear", align_corners=False)
    raw_mid = model.mid_net(x_mid)
    torch.testing.assert_close(out.deformation, raw_mid * 0.1 * 0.01 * mask_mid * s)
    d_up = F.interpolate(out.deformation / s, (cfg.high_size,) * 2, mode="bilinear")
    raw_high = model.high_net(torch.cat([pos / s, tex * 2 - 1, d_up], 1))
    torch.testing.assert_close(out.displacement, raw_high * 0.1 * 0.01 * mask * s)

    # bounds from tanh, zeros where the mask is 0
    assert out.deformation.abs().max() <= 0.1 * 0.01 * s
    assert torch.count_nonzero(out.displacement[:, :, : cfg.high_size // 4]) == 0

    # doubling alpha doubles the deformation; beta scales the displacement
    with torch.no_grad():
        model.alpha.fill_(0.02)
    out2 = model(pos, tex, mask)
    torch.testing.assert_close(out2.deformation, 2.0 * out.deformation)
    with torch.no_grad():
        model.alpha.fill_(0.01)
        model.beta.fill_(0.03)
    out3 = model(pos, tex, mask)
    torch.testing.assert_close(out3.displacement, 3.0 * out.displacement)


def test_alpha_and_beta_are_learnt_and_start_at_001():
    model = HRN(tiny_config())
    assert model.alpha.shape == (1,) and model.beta.shape == (1,)
    assert model.alpha.detach().item() == pytest.approx(0.01)
    assert model.beta.detach().item() == pytest.approx(0.01)
    pos, tex, mask = inputs(model.config, batch=1)
    out = model(pos, tex, mask)
    (out.deformation.sum() + out.displacement.sum()).backward()
    assert model.alpha.grad is not None and model.alpha.grad.abs() > 0
    assert model.beta.grad is not None and model.beta.grad.abs() > 0
    names = {id(p) for p in model.detail_parameters()}
    assert id(model.alpha) in names and id(model.beta) in names
    assert not any(id(p) in names for p in model.net_recon.parameters())


def test_realignment_with_zero_deformation_keeps_the_texture():
    cfg = tiny_config(alpha_init=0.0)
    model = HRN(cfg).eval()
    pos, tex, mask = inputs(cfg, batch=1)
    out = model(pos, tex, mask, project=lambda p: p[..., :2] * 0.5 + 30.0)
    assert out.flow is not None and torch.count_nonzero(out.flow) == 0
    torch.testing.assert_close(out.realigned_texture, tex)


def test_realignment_moves_the_texture_when_the_deformation_is_non_zero():
    cfg = tiny_config(alpha_init=5.0)  # large deformation on purpose
    model = HRN(cfg).eval()
    s = cfg.high_size
    uu = torch.linspace(-80, 80, s)
    pos = torch.stack(torch.meshgrid(uu, -uu, indexing="xy"), 0)  # x right, y up
    pos = torch.cat([pos, torch.zeros(1, s, s)], 0)[None]
    tex = torch.rand(1, 3, s, s)
    out = model(pos, tex, torch.ones(1, 1, s, s), project=lambda p: p[..., :2] + 100.0)
    assert out.flow.abs().max() > 1e-3
    assert not torch.allclose(out.realigned_texture, tex)
    off = model(pos, tex, torch.ones(1, 1, s, s), project=None)
    assert torch.equal(off.realigned_texture, tex)


def test_the_realigned_texture_is_the_flow_of_the_deformation_in_millimetres():
    """The high net sees the texture warped by the reversal flow between the coarse and the
    deformed positions (mm) in the photo, as a constant; the reference calls realign_texture."""
    cfg = tiny_config(alpha_init=5.0)
    model = HRN(cfg).eval()
    pos, tex, _ = inputs(cfg, batch=1, seed=3)
    mask = torch.ones(1, 1, cfg.high_size, cfg.high_size)
    scale = torch.tensor([[1.5, -0.5], [0.25, 2.0], [0.0, 0.0]])  # any linear camera

    def project(p: torch.Tensor) -> torch.Tensor:
        return p @ scale + 40.0

    out = model(pos, tex, mask, project=project)
    s, h = cfg.map_unit_mm, cfg.high_size
    d_up = F.interpolate(out.deformation, (h, h), mode="bilinear", align_corners=False)

    def image_positions(p: torch.Tensor) -> torch.Tensor:
        return project(p.permute(0, 2, 3, 1).reshape(1, h * h, 3)).reshape(1, h, h, 2)

    xy0 = image_positions(pos).permute(0, 3, 1, 2)
    xy1 = image_positions(pos + d_up).permute(0, 3, 1, 2)
    expected = realign_texture(tex, xy0, xy1, mask > 0.5)
    assert expected.flow.abs().max() > 1e-3  # the check below can tell the two textures apart
    torch.testing.assert_close(out.flow, expected.flow)
    torch.testing.assert_close(out.realigned_texture, expected.texture)
    raw_high = model.high_net(torch.cat([pos / s, expected.texture * 2 - 1, d_up / s], 1))
    torch.testing.assert_close(out.displacement, raw_high * 0.1 * model.beta * s)

    model.train()
    trained = model(pos, tex, mask, project=project)
    assert trained.flow.requires_grad and not trained.realigned_texture.requires_grad

    cfg.realign_texture = False  # the switch turns it off even with a camera
    off = model(pos, tex, mask, project=project)
    assert off.flow is None and torch.equal(off.realigned_texture, tex)


def test_hrn_input_checks():
    cfg = tiny_config()
    with pytest.raises(ValueError, match="mid_size 64 must not exceed high_size 32"):
        HRN(tiny_config(mid_size=64, high_size=32))
    model = HRN(cfg)
    pos, tex, mask = inputs(cfg, batch=1)
    with pytest.raises(ValueError, match=r"position_map must be \(B, 3, S, S\), got \(1, 2,"):
        model(pos[:, :2], tex, mask)
    with pytest.raises(ValueError, match="config.high_size"):
        model(pos[..., :32, :32], tex[..., :32, :32], mask[..., :32, :32])
    with pytest.raises(ValueError, match="texture must be"):
        model(pos, tex[:, :2], mask)
    with pytest.raises(ValueError, match="valid_mask must be"):
        model(pos, tex, mask[:, :, :, :10])


# --------------------------------------------------------------------------------------------
# discriminators
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "n_layers", "side"), [(64, 3, 6), (256, 3, 30), (32, 2, 6)])
def test_patch_discriminator_output_shape(size, n_layers, side):
    d = PatchDiscriminator(3, filters=4, n_layers=n_layers)
    y = d(torch.randn(2, 3, size, size))
    assert y.shape == (2, 1, side, side)
    assert d.output_size(size) == side


def test_paper_discriminator_layout_and_small_input_error():
    d = PatchDiscriminator(1)  # pix2pix "basic": 64, 128, 256, 512 channels
    shapes = [tuple(v.shape) for k, v in d.state_dict().items() if k.endswith("weight")]
    expect = [(64, 1, 4, 4), (128, 64, 4, 4), (256, 128, 4, 4), (512, 256, 4, 4), (1, 512, 4, 4)]
    assert shapes == expect
    assert d.min_input_size() == 24
    with pytest.raises(ValueError, match="at least 24"):
        d(torch.randn(1, 1, 16, 16))


def test_patch_discriminator_computes_the_pix2pix_patchgan_function():
    """Written out from the state dict: 4x4 convolutions with padding 1, stride 2 but for the
    last two, LeakyReLU(0.2) after all but the last, instance norm on all but the first and the
    last, no sigmoid."""
    torch.manual_seed(1)
    d = randomised(PatchDiscriminator(2, filters=4, n_layers=3), 1, scale=0.4)
    state = d.state_dict()
    keys = sorted({k.rsplit(".", 1)[0] for k in state}, key=lambda k: int(k.split(".")[1]))
    x = torch.randn(2, 2, 40, 48)
    h = x
    for i, key in enumerate(keys):
        stride = 2 if i < 3 else 1
        h = F.conv2d(h, state[f"{key}.weight"], state[f"{key}.bias"], stride=stride, padding=1)
        if i == len(keys) - 1:
            break
        h = F.leaky_relu(h if i == 0 else F.instance_norm(h, eps=1e-5), 0.2)
    got = d(x)
    assert got.shape == (2, 1, 3, 4) and got.abs().max() > 1.0  # logits, unbounded
    torch.testing.assert_close(got, h, rtol=1e-5, atol=1e-6)
    # channels double up to 8 filters, then stay
    wide = PatchDiscriminator(1, filters=2, n_layers=5)
    shapes = [tuple(v.shape[:2]) for k, v in wide.state_dict().items() if k.endswith("weight")]
    assert shapes == [(2, 1), (4, 2), (8, 4), (16, 8), (16, 16), (16, 16), (1, 16)]
    for bad in ({"filters": 0}, {"n_layers": 0}):
        with pytest.raises(ValueError, match="must be positive"):
            PatchDiscriminator(1, **bad)
    with pytest.raises(ValueError, match=r"expected \(B, 2, H, W\)"):
        d(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"input \(16, 64\) too small .* at least 24"):
        d(torch.randn(1, 2, 16, 64))  # the shorter side decides


def test_patch_discriminator_starts_from_pix2pix_normal_initialisation():
    torch.manual_seed(0)
    assert_pix2pix_normal_start(PatchDiscriminator(3, filters=16), 100_000)


def test_hrn_discriminators_take_both_maps():
    cfg = tiny_config()
    model = HRN(cfg).eval()
    discs = HRNDiscriminators(filters=4, n_layers=2)
    out = model(*inputs(cfg))
    s = cfg.map_unit_mm
    side = cfg.mid_size // 4 - 2
    assert discs.mid(out.deformation / s).shape == (2, 1, side, side)
    high_side = cfg.high_size // 4 - 2
    assert discs.high(out.displacement / s).shape == (2, 1, high_side, high_side)


# --------------------------------------------------------------------------------------------
# de-retouching network layout and the official checkpoint
# --------------------------------------------------------------------------------------------
def test_deretouch_unet_has_the_official_layout_at_width_64():
    state = DeRetouchUNet(64).state_dict()
    assert len(state) == 9 * 14 + 5 * 2  # 9 double convs (2 conv + 2 BN each), 5 1x1 outputs
    expect = {
        "inc.conv.conv.0.weight": (64, 3, 3, 3),
        "inc.conv.conv.4.running_var": (64,),
        "down1.mpconv.1.conv.0.weight": (128, 64, 3, 3),
        "down4.mpconv.1.conv.3.weight": (512, 512, 3, 3),
        "up1.conv.conv.0.weight": (256, 1024, 3, 3),
        "up4.conv.conv.3.weight": (64, 64, 3, 3),
        "outc.conv.weight": (3, 64, 1, 1),
        "dsoutc4.conv.weight": (3, 256, 1, 1),
        "dsoutc1.conv.bias": (3,),
    }
    for k, shape in expect.items():
        assert tuple(state[k].shape) == shape, k


def test_official_checkpoint_round_trip(tmp_path):
    cfg = tiny_config()
    source = randomised(HRN(cfg), 1).eval()
    hrn_ckpt, dr_ckpt = source.official_state()
    assert set(hrn_ckpt) == {"net_recon", "mid_net", "high_net", "alpha", "beta"}
    assert set(dr_ckpt) == {"generator"}
    hrn_ckpt["opt_00"] = {"state": {}, "param_groups": []}  # ignored
    torch.save(hrn_ckpt, tmp_path / "epoch_10.pth")
    torch.save(dr_ckpt, tmp_path / "de-retouching.pth")

    target = HRN(cfg).eval()
    reports = target.load_official(tmp_path / "epoch_10.pth", tmp_path / "de-retouching.pth")
    parts = ["net_recon", "mid_net", "high_net", "generator", "alpha", "beta"]
    assert [r.part for r in reports] == parts
    assert all(r.ok for r in reports)
    assert [r.loaded for r in reports[-2:]] == [1, 1]  # alpha and beta
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    pos, tex, mask = inputs(cfg)
    a, b = source(pos, tex, mask), target(pos, tex, mask)
    assert torch.equal(a.deformation, b.deformation) and torch.equal(a.displacement, b.displacement)


def test_official_checkpoint_mismatch_changes_nothing_and_names_the_parts(tmp_path):
    cfg = tiny_config()
    hrn_ckpt, _ = randomised(HRN(cfg), 2).official_state()
    other = tiny_config(mid=GeneratorConfig(n_blocks=3, filters=8, dropout=0.0))
    target = HRN(other)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    del hrn_ckpt["beta"]
    with pytest.raises(CheckpointError) as err:
        target.load_official(hrn_ckpt)
    msg = str(err.value)
    assert "[mid_net]" in msg and "model.12.conv_block.1.weight" in msg  # the extra block
    assert "[beta]" in msg and "[high_net]" not in msg
    assert "<checkpoint dict> [mid_net]" in msg  # a dict names itself so, unless named
    with pytest.raises(CheckpointError, match=r"runs/hrn\.pth \[mid_net\]"):
        target.load_official(hrn_ckpt, name="runs/hrn.pth")  # the file it was read from
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), k
    reports = target.load_official(hrn_ckpt, strict=False)
    by_part = {r.part: r for r in reports}
    assert by_part["high_net"].ok and not by_part["mid_net"].ok and not by_part["beta"].ok
    assert target.beta.detach().item() == pytest.approx(0.01)


def test_official_checkpoint_file_errors(tmp_path):
    bad = tmp_path / "hrn.pth"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(InputFileError, match="hrn.pth: not a readable PyTorch checkpoint"):
        HRN(tiny_config()).load_official(bad)


def test_official_entries_of_the_wrong_kind_are_named_and_nothing_changes():
    cfg = tiny_config()
    hrn_ckpt, _ = randomised(HRN(cfg), 3).official_state()
    hrn_ckpt["mid_net"] = [1.0, 2.0]  # not a state dict
    hrn_ckpt["alpha"] = torch.tensor([0.5, 0.5])  # one value expected
    target = HRN(cfg)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        target.load_official(hrn_ckpt)
    msg = str(err.value)
    assert "[mid_net]" in msg and "<entry 'mid_net'>" in msg
    assert "[alpha]" in msg and "(1,)" in msg and "(2,)" in msg
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(TypeError, match="expected a checkpoint path or dict, got int"):
        target.load_official(42)

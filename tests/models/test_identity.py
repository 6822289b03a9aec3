"""The perceptual loss's identity network: IResNet layout, loading, and 5-point face alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facehd.errors import InputFileError
from models.identity import (
    ARCFACE_TEMPLATE_112,
    IRESNET_LAYERS,
    IResNet,
    align_faces,
    five_points,
    iresnet_layers,
    load_identity_network,
    similarity_to_template,
)
from models.losses import PerceptualLoss


def _randomised(net: IResNet, seed: int = 0) -> IResNet:
    """Random weights and batch-norm statistics (so a wrong key or order would show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(0.05 * torch.randn(t.shape, generator=g) + (1.0 if t.ndim == 1 else 0.0))
    return net.eval()


def _param_count(layers: tuple[int, ...], features: int = 512) -> int:
    """Parameters of an IResNet counted from its description: stem conv 3x3 + BN + PReLU; per
    block BN(in), conv 3x3 in->ch, BN, PReLU, conv 3x3 ch->ch, BN, and on each stage's first
    block a 1x1 shortcut conv + BN; BN(512), linear 512*7*7 -> features, BN1d."""
    n = 3 * 64 * 9 + 2 * 64 + 64
    c_in = 64
    for blocks, ch in zip(layers, (64, 128, 256, 512), strict=True):
        for k in range(blocks):
            i = c_in if k == 0 else ch
            n += 2 * i + i * ch * 9 + 2 * ch + ch + ch * ch * 9 + 2 * ch
            if k == 0:
                n += i * ch + 2 * ch
        c_in = ch
    return n + 2 * 512 + 512 * 49 * features + features + 2 * features


@pytest.mark.parametrize("name", ["r18", "r50"])
def test_iresnet_has_arcface_torch_parameter_names_and_sizes(name):
    net = IResNet(IRESNET_LAYERS[name])
    state = net.state_dict()
    expected_shapes = {
        "conv1.weight": (64, 3, 3, 3),
        "prelu.weight": (64,),
        "layer1.0.bn1.running_var": (64,),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer1.0.downsample.1.weight": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer4.0.downsample.0.weight": (512, 256, 1, 1),
        "bn2.num_batches_tracked": (),
        "fc.weight": (512, 512 * 7 * 7),
        "features.running_mean": (512,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "layer1.1.downsample.0.weight" not in state
    assert iresnet_layers(state) == IRESNET_LAYERS[name]
    assert sum(p.numel() for p in net.parameters()) == _param_count(IRESNET_LAYERS[name])
    out = net.eval()(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert out.shape == (2, 512)
    with pytest.raises(ValueError, match="112"):
        net(torch.rand(1, 3, 224, 224))


def test_a_saved_state_dict_loads_with_its_depth_read_from_the_keys(tmp_path):
    torch.manual_seed(0)
    net = _randomised(IResNet((1, 2, 1, 1), features=64))
    # as DataParallel saves it, inside a checkpoint dict
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}
    path = tmp_path / "backbone.pth"
    torch.save(wrapped, path)
    loaded, kind = load_identity_network(path)
    assert kind == "IResNet (1, 2, 1, 1)"
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert not loaded.training
    # under "model" (another trainer's checkpoint), without a prefix: the same network
    torch.save({"model": net.state_dict(), "epoch": 20}, path)
    loaded, _ = load_identity_network(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    # a dict of other things beside tensors is no state dict, and says so
    torch.save({"weights": net.state_dict(), "epoch": 20}, path)
    with pytest.raises(InputFileError, match="expected a state dict of tensors, got dict"):
        load_identity_network(path)


# torch 2.13 marks TorchScript deprecated; the files users have still load, which is the point
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_a_torchscript_network_still_loads(tmp_path):
    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3))

    path = tmp_path / "id.pt"
    torch.jit.script(Embed()).save(str(path))
    net, kind = load_identity_network(path)
    assert kind == "TorchScript"
    assert net(torch.rand(1, 3, 112, 112)).shape == (1, 4)


def test_a_torch_export_program_loads_and_serves_the_perceptual_loss(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.BatchNorm2d(4), torch.nn.Flatten()
    ).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        net, (torch.rand(2, 3, 112, 112),), dynamic_shapes={"input": {0: batch}}
    )
    path = tmp_path / "id.pt2"
    torch.export.save(program, str(path))
    loaded, kind = load_identity_network(path)
    assert kind == "torch.export program"
    x = torch.rand(3, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    loss = PerceptualLoss(loaded, input_size=112)
    loss.train()  # the exported module itself cannot change mode; the loss must not ask it to
    rendered = torch.rand(3, 3, 112, 112, requires_grad=True)
    value = loss(rendered, x)
    value.backward()
    assert value.item() > 0 and rendered.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loaded.program.parameters())


def test_bad_identity_network_files_are_named_with_the_problem(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_identity_network(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputFileError, match="junk.pth.*not an identity network"):
        load_identity_network(junk)
    other = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(InputFileError, match="not an ArcFace IResNet state dict"):
        load_identity_network(other)
    state = IResNet((1, 1, 1, 1)).state_dict()
    del state["layer2.0.bn3.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(InputFileError, match="layer2.0.bn3.weight"):
        load_identity_network(broken)


def test_five_points_match_the_photo_front_end():
    from facehd.detect import landmarks5_from_68

    lm = np.random.default_rng(0).uniform(0, 224, (3, 68, 2))
    np.testing.assert_allclose(
        five_points(torch.from_numpy(lm)).numpy(), landmarks5_from_68(lm), rtol=0, atol=1e-12
    )


def _similarity(scale: float, degrees: float, t: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[scale * c, -scale * s, t[0]], [scale * s, scale * c, t[1]]])


def test_similarity_is_recovered_exactly_and_is_the_least_squares_one():
    template = np.array(ARCFACE_TEMPLATE_112)
    a = _similarity(0.6, -17.0, (12.0, -30.0))  # photo -> template
    inv = np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]
    pts = template @ inv[:, :2].T + inv[:, 2]  # the photo points that map onto the template
    got = similarity_to_template(torch.from_numpy(pts[None]), torch.from_numpy(template))[0]
    np.testing.assert_allclose(got.numpy(), a, atol=1e-9)
    # noisy points: the same as a brute-force linear least squares in (a, b, tx, ty)
    noisy = pts + np.random.default_rng(1).normal(scale=2.0, size=pts.shape)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(noisy, template, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    sol = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    want = np.array([[sol[0], -sol[1], sol[2]], [sol[1], sol[0], sol[3]]])
    got = similarity_to_template(torch.from_numpy(noisy[None]), torch.from_numpy(template))[0]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-9)


def test_align_faces_samples_each_output_pixel_at_its_source_point():
    h, w = 180, 200
    a = _similarity(0.55, 12.0, (-8.0, 5.0))  # source pixels -> template pixels
    inv = np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]
    template = np.array(ARCFACE_TEMPLATE_112)
    lm5 = template @ inv[:, :2].T + inv[:, 2]
    # an image whose channels are its own column and row: bilinear sampling is exact on it
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    image = torch.from_numpy(np.stack([xs, ys, xs + ys])[None])
    out = align_faces(image, torch.from_numpy(lm5[None]), 112)[0].numpy()
    v, u = np.mgrid[0:112, 0:112].astype(np.float64)
    src = np.stack([u, v], -1) @ inv[:, :2].T + inv[:, 2]
    inside = (src[..., 0] > 1) & (src[..., 0] < w - 2) & (src[..., 1] > 1) & (src[..., 1] < h - 2)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[0][inside], src[..., 0][inside], atol=1e-6)
    np.testing.assert_allclose(out[1][inside], src[..., 1][inside], atol=1e-6)
    # the 5 points land on the template: the pixel nearest each holds its source coordinates
    for (tx, ty), (sx, sy) in zip(template, lm5, strict=True):
        i, j = int(round(ty)), int(round(tx))
        assert np.hypot(out[0][i, j] - sx, out[1][i, j] - sy) < 1.0 / 0.55


def test_half_precision_images_are_sampled_at_full_precision_places():
    h = w = 224
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = torch.from_numpy(np.stack([np.sin(xs / 9.0), np.cos(ys / 7.0), xs * 0 + 0.5])[None])
    lm5 = torch.tensor(
        [[[80.0, 100.0], [140.0, 98.0], [111.0, 130.0], [86.0, 160.0], [136.0, 161.0]]]
    )
    ref = align_faces(smooth, lm5)
    half = align_faces(smooth.to(torch.bfloat16), lm5)
    assert half.dtype == torch.float32
    # only the input's rounding (bfloat16: 8 bits) remains, not misplaced samples
    assert (half - ref).abs().max() < 5e-3


def test_alignment_stays_on_the_images_device():
    """Everything the warp makes (template, pixel grid) lives on the images' device: checked on
    PyTorch's shape-only ``meta`` device, where a CPU tensor in the mix fails as on a GPU."""
    images = torch.empty(2, 3, 224, 224, device="meta")
    lm5 = torch.empty(2, 5, 2, device="meta")
    out = align_faces(images, lm5)
    assert out.device.type == "meta" and out.shape == (2, 3, 112, 112)


def test_perceptual_loss_aligns_faces_by_their_five_points():
    torch.manual_seed(0)
    net = _randomised(IResNet((1, 1, 1, 1), features=32))
    loss = PerceptualLoss(net, input_size=112)
    lm68 = torch.from_numpy(np.random.default_rng(2).uniform(60, 160, (2, 68, 2)))
    lm5 = five_points(lm68).float()
    target = torch.rand(2, 3, 224, 224)
    rendered = torch.rand(2, 3, 224, 224, requires_grad=True)
    value = loss(rendered, target, lm5)
    fa = net(align_faces(rendered, lm5) * 2 - 1)
    fb = net(align_faces(target, lm5) * 2 - 1)
    want = 1 - torch.nn.functional.cosine_similarity(fa, fb).mean()
    assert value.item() == pytest.approx(want.item(), rel=1e-5)
    value.backward()
    assert rendered.grad.abs().sum() > 0
    assert loss(target, target.clone(), lm5).item() == pytest.approx(0.0, abs=1e-6)

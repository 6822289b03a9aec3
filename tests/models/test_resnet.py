"""The analyzer's bottleneck ResNet: ResNet-50's parameters, the function written out from its
state dict, its starting weights and its refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.resnet import Bottleneck, ResNetBackbone


def test_the_default_is_resnet50_without_its_classifier() -> None:
    net = ResNetBackbone()
    # ResNet-50 has 25,557,032 parameters, of which its 1000-class fc holds 2048 * 1000 + 1000
    assert sum(p.numel() for p in net.parameters()) == 25_557_032 - 2_049_000
    assert net.out_features == 2048
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer3.5.conv3.weight"] == (1024, 256, 1, 1)
    assert shapes["layer4.2.bn3.running_var"] == (2048,)
    assert "layer2.1.downsample.0.weight" not in shapes and "fc.weight" not in shapes
    assert [len(getattr(net, f"layer{k}")) for k in range(1, 5)] == [3, 4, 6, 3]


def _reference(state: dict, x: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
    """ResNet v1.5 written out: the stride of each stage's first block on its 3x3 convolution
    and its 1x1 projection; batch norm with the running statistics (inference)."""

    def bn(h: torch.Tensor, key: str) -> torch.Tensor:
        return F.batch_norm(
            h,
            state[f"{key}.running_mean"],
            state[f"{key}.running_var"],
            state[f"{key}.weight"],
            state[f"{key}.bias"],
            training=False,
            eps=1e-5,
        )

    h = F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    h = F.max_pool2d(h, 3, stride=2, padding=1)
    for k, n in enumerate(layers, start=1):
        for i in range(n):
            p = f"layer{k}.{i}"
            stride = 2 if (k > 1 and i == 0) else 1
            y = F.relu(bn(F.conv2d(h, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
            y = F.conv2d(y, state[f"{p}.conv2.weight"], stride=stride, padding=1)
            y = F.relu(bn(y, f"{p}.bn2"))
            y = bn(F.conv2d(y, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            short = h
            if f"{p}.downsample.0.weight" in state:
                short = F.conv2d(h, state[f"{p}.downsample.0.weight"], stride=stride)
                short = bn(short, f"{p}.downsample.1")
            h = F.relu(y + short)
    return h.mean(dim=(2, 3), keepdim=True)


def test_the_backbone_computes_resnet_v15() -> None:
    torch.manual_seed(0)
    layers = (1, 2, 1, 1)
    net = ResNetBackbone(layers, width=4).eval()
    with torch.no_grad():  # every weight and statistic away from its start
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape) + 0.5)
            else:
                t.copy_(torch.randn(t.shape) * 0.4)
    x = torch.randn(2, 3, 70, 52)
    got = net(x)
    assert got.shape == (2, 4 * 8 * 4, 1, 1)
    torch.testing.assert_close(got, _reference(net.state_dict(), x, layers), rtol=1e-4, atol=1e-5)


def test_each_block_starts_as_its_shortcut() -> None:
    """The last batch norm of every block starts at 0 (the block is relu(shortcut)), the others
    at weight 1, bias 0; convolutions are Kaiming-normal with fan-out."""
    torch.manual_seed(0)
    net = ResNetBackbone((2, 1, 1, 1), width=16)
    state = net.state_dict()
    for name, t in state.items():
        if ".bn3." in name and not name.endswith(("running_var", "num_batches_tracked")):
            assert torch.count_nonzero(t) == 0, name
        elif "bn" in name or "downsample.1" in name:
            if name.endswith(".weight") or name.endswith("running_var"):
                assert torch.all(t == 1), name
            elif name.endswith(".bias") or name.endswith("running_mean"):
                assert torch.all(t == 0), name
    w = state["layer1.1.conv2.weight"]  # 16 -> 16 channels, 3 x 3: fan-out 144
    assert abs(w.std().item() - math.sqrt(2.0 / 144)) < 0.01
    w = state["layer4.0.conv3.weight"]  # 128 -> 512 channels, 1 x 1: fan-out 512
    assert abs(w.std().item() - math.sqrt(2.0 / 512)) < 0.002
    # with bn3 at 0, a block without projection gives back relu(x): its input, non-negative
    x = F.relu(torch.randn(1, 64, 8, 8))
    torch.testing.assert_close(net.layer1[1].eval()(x), x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": (3, 4, 6)}, "layers must be 4 positive ints, got \\(3, 4, 6\\)"),
        ({"layers": (1, 0, 1, 1)}, "layers must be 4 positive ints"),
        ({"width": 0}, "width must be positive, got 0"),
    ],
)
def test_impossible_sizes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResNetBackbone(**kwargs)


def test_a_batch_of_images_is_required() -> None:
    net = ResNetBackbone((1, 1, 1, 1), width=4)
    with pytest.raises(ValueError, match=r"expected images \(B, C, H, W\), got \(3, 32, 32\)"):
        net(torch.randn(3, 32, 32))
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 128, 1, 1)


def test_a_strided_block_projects_its_shortcut_even_at_equal_width() -> None:
    block = Bottleneck(16, 4, stride=2).eval()  # 16 channels in and out, half the size
    assert block.downsample is not None
    assert block(torch.randn(2, 16, 10, 8)).shape == (2, 16, 5, 4)
    assert Bottleneck(16, 4).downsample is None

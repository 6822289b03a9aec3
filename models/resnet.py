"""A bottleneck ResNet backbone (ResNet-50 by default) written for facehd.

The module tree, and therefore the state-dict key names, follow the classic ResNet-50 layout that
Deep3DFaceRecon's ``net_recon`` backbone uses::

    conv1 (7x7, stride 2, no bias) . bn1 . relu . maxpool (3x3, stride 2)
    layer1..layer4: Bottleneck blocks  conv1 (1x1) bn1 . conv2 (3x3, stride) bn2 . conv3 (1x1) bn3
                    with ``downsample.0`` (1x1 conv) / ``downsample.1`` (BN) on the first block
    avgpool (global)                                          -- no ``fc``

The stride of a block sits on its 3x3 convolution (ResNet "v1.5"). ``layers`` and ``width`` make
smaller variants for tests and CPU training (``layers=(1, 1, 1, 1), width=8``); the defaults are
ResNet-50: ``layers=(3, 4, 6, 3)``, ``width=64``, 2048 output features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Bottleneck", "ResNetBackbone"]

#: Output channels of a bottleneck block relative to its inner width.
EXPANSION = 4


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 -> 3x3 (stride) -> 1x1 (x4 channels), identity shortcut.

    Parameters
    ----------
    in_channels : channels of the input.
    planes : inner width; the block outputs ``4 * planes`` channels.
    stride : stride of the 3x3 convolution (and of the shortcut projection).
    """

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNetBackbone(nn.Module):
    """Bottleneck ResNet without its classifier: image ``(B, 3, H, W)`` -> ``(B, F, 1, 1)``.

    Parameters
    ----------
    layers : blocks per stage (ResNet-50: ``(3, 4, 6, 3)``).
    width : channels of the stem; stage ``k`` has inner width ``width * 2**k`` and the output has
        ``F = width * 8 * 4`` features (2048 for ResNet-50).
    in_channels : input channels (3 for RGB).

    BatchNorm weights start at 1 and biases at 0; convolutions use Kaiming-normal (fan-out)
    initialisation; the last BN of every block starts at 0 so each block starts as the identity.
    """

    def __init__(
        self, layers: Sequence[int] = (3, 4, 6, 3), width: int = 64, in_channels: int = 3
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"ResNetBackbone: layers must be 4 positive ints, got {layers}")
        if width < 1:
            raise ValueError(f"ResNetBackbone: width must be positive, got {width}")
        self.layers_config = layers
        self.width = int(width)
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        stages = []
        for k, n_blocks in enumerate(layers):
            planes = width * 2**k
            stride = 1 if k == 0 else 2
            blocks = [Bottleneck(channels, planes, stride)]
            channels = planes * EXPANSION
            blocks += [Bottleneck(channels, planes) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.out_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, out_features, 1, 1)`` (global average of the last stage)."""
        if x.dim() != 4:
            raise ValueError(f"ResNetBackbone: expected images (B, C, H, W), got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)

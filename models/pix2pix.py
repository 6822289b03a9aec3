"""pix2pix ResNet generator: HRN's mid-frequency (deformation) and high-frequency (displacement)
networks.

Architecture (``filters = f``, ``n_blocks = n``, two down-samplings)::

    model.0  ReflectionPad(3)   model.1  Conv 7x7 in->f    model.2 InstanceNorm  model.3 ReLU
    model.4  Conv 3x3/2 f->2f   model.5  IN  model.6 ReLU
    model.7  Conv 3x3/2 2f->4f  model.8  IN  model.9 ReLU
    model.10 .. model.(10+n-1)  residual blocks at 4f channels:
             conv_block.0 ReflectionPad(1)  .1 Conv 3x3  .2 IN  .3 ReLU  .4 Dropout
             conv_block.5 ReflectionPad(1)  .6 Conv 3x3  .7 IN          (+ identity)
    then ConvTranspose 3x3/2 4f->2f, IN, ReLU; ConvTranspose 3x3/2 2f->f, IN, ReLU;
    ReflectionPad(3), Conv 7x7 f->out, Tanh

Instance norm has no affine parameters and no running statistics; every convolution has a bias.
These module indices are those of the pix2pix ``resnet_9blocks`` generator HRN's official
checkpoint was saved from (``mid_net``: 6 -> 3 channels, ``high_net``: 9 -> 1 channel, with
dropout 0.5 in the residual blocks), so that checkpoint loads unchanged. The dropout layer is
always present (``p = 0`` when disabled) so the key names never depend on it.

Input height and width must be multiples of 4 and at least 8 (reflection padding at the
bottleneck needs 2 pixels).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResnetBlock", "ResnetGenerator"]


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """Residual block: ``x + (pad, conv3x3, IN, ReLU, dropout, pad, conv3x3, IN)(x)``."""

    def __init__(self, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            _norm(channels),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """pix2pix ResNet generator ``(B, in, H, W) -> (B, out, H, W)`` with values in ``(-1, 1)``.

    Parameters
    ----------
    in_channels, out_channels : channels of input and output.
    filters : channels after the stem (64 in the paper).
    n_blocks : residual blocks at the bottleneck (9 in the paper).
    dropout : dropout probability inside the residual blocks (0.5 in the official HRN nets;
        active in ``train()`` mode only).

    Weights are initialised N(0, 0.02), biases 0 (pix2pix's ``normal`` initialisation).
    """

    N_DOWN = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        filters: int = 64,
        n_blocks: int = 9,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, filters) < 1 or n_blocks < 0:
            raise ValueError(
                "ResnetGenerator: channels and filters must be positive and n_blocks >= 0, got "
                f"in={in_channels} out={out_channels} filters={filters} n_blocks={n_blocks}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResnetGenerator: dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels = in_channels, out_channels
        f = filters
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, f, 7, bias=True),
            _norm(f),
            nn.ReLU(True),
        ]
        for k in range(self.N_DOWN):
            c = f * 2**k
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=True), _norm(2 * c)]
            layers += [nn.ReLU(True)]
        c = f * 2**self.N_DOWN
        layers += [ResnetBlock(c, dropout) for _ in range(n_blocks)]
        for k in range(self.N_DOWN):
            c = f * 2 ** (self.N_DOWN - k)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                _norm(c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(f, out_channels, 7, bias=True), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` in ``(-1, 1)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResnetGenerator: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % 4 or w % 4 or min(h, w) < 8:
            raise ValueError(
                f"ResnetGenerator: height and width must be multiples of 4 and >= 8, got {h}x{w}"
            )
        return self.model(x)

"""PatchGAN discriminators on HRN's detail maps (paper Sec. 3.3, adversarial priors).

``PatchDiscriminator`` is the pix2pix ``n_layers`` PatchGAN: ``n_layers`` stride-2 4x4
convolutions (channels ``f, 2f, 4f, ...`` capped at ``8f``), one stride-1 4x4 convolution, and a
stride-1 4x4 convolution to one logit per patch; LeakyReLU(0.2) between them and instance norm on
every layer but the first and the last. With ``n_layers = 3`` each output judges a 70 x 70 patch.
The output is an unbounded score map (no sigmoid: LSGAN and the logistic loss both take logits).

Output size for an ``S x S`` input: ``S / 2**n_layers - 2`` (64 -> 6 and 256 -> 30 for
``n_layers = 3``); the input must be large enough that the stride-1 layers keep at least 2 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HRNDiscriminators", "PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """PatchGAN ``(B, C, S, S) -> (B, 1, S/2**n - 2, S/2**n - 2)`` logits.

    Parameters
    ----------
    in_channels : channels of the judged map (3 for the deformation map, 1 for displacement).
    filters : channels of the first layer (64 in pix2pix).
    n_layers : number of stride-2 layers (3 in pix2pix).
    """

    def __init__(self, in_channels: int, *, filters: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or filters < 1 or n_layers < 1:
            raise ValueError(
                "PatchDiscriminator: in_channels, filters and n_layers must be positive, got "
                f"{in_channels}, {filters}, {n_layers}"
            )
        self.in_channels, self.n_layers = in_channels, n_layers
        f = filters
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, f, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        c = f
        for n in range(1, n_layers + 1):
            c_next = f * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(c, c_next, 4, stride=stride, padding=1),
                nn.InstanceNorm2d(c_next, affine=False, track_running_stats=False),
                nn.LeakyReLU(0.2, True),
            ]
            c = c_next
        layers += [nn.Conv2d(c, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def output_size(self, size: int) -> int:
        """Side of the score map for an input of side ``size``."""
        s = size
        for _ in range(self.n_layers):
            s = (s + 2 - 4) // 2 + 1
        return s - 2

    def min_input_size(self) -> int:
        """Smallest input side giving a score map (the stride-1 layers then keep >= 2 pixels)."""
        s = 1
        while self.output_size(s) < 1:
            s += 1
        return s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` -> patch logits ``(B, 1, h, w)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchDiscriminator: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        smallest = min(x.shape[-2:])
        if self.output_size(smallest) < 1:
            raise ValueError(
                f"PatchDiscriminator: input {tuple(x.shape[-2:])} too small for n_layers="
                f"{self.n_layers}; need a side of at least {self.min_input_size()}"
            )
        return self.model(x)


class HRNDiscriminators(nn.Module):
    """The two discriminators of HRN: ``mid`` on deformation maps, ``high`` on displacement maps.

    Both judge maps in the networks' map units (see :mod:`models.hrn`), unconditioned.
    """

    def __init__(self, *, filters: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        self.mid = PatchDiscriminator(3, filters=filters, n_layers=n_layers)
        self.high = PatchDiscriminator(1, filters=filters, n_layers=n_layers)

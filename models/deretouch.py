"""De-retouching module (paper Sec. 3.4, Eq. 3-6): bake texture detail into the coarse albedo.

A network ``G`` maps the (re-aligned) UV texture ``T`` to a blend layer ``B`` in ``[0, 1]``; the
blend layer retouches the texture (removes blemishes) by a soft-light style blend::

    T0 = (1 - 2B) * T**2 + 2B * T                              (B = 0.5 leaves T unchanged)

Assuming the shading from the coarse albedo ``A0`` to ``T0`` equals the one from the detailed
albedo ``A'`` to ``T`` (Eq. 3-4: ``T0 = A0 S``, ``T = A' S``), the detailed albedo is (Eq. 5-6)::

    phi(T0) = 1 / (T0**3 / eps + eps)                          eps = 1e-6
    A' = A0 * (T + phi(T0)) / (T0 + phi(T0))

``phi`` keeps the ratio finite where ``T0`` is near 0 (there ``A' -> A0``).

Network
-------
:class:`DeRetouchUNet` is a four-level U-Net (double 3x3 conv + BatchNorm + ReLU, max-pool down,
bilinear up with skip concatenation, 1x1 output conv, sigmoid). At ``width = 64`` its module names
and shapes are those of the official de-retouching checkpoint (stored under ``generator``)::

    inc.conv.conv.{0,1,3,4}            down{1..4}.mpconv.1.conv.{0,1,3,4}
    up{1..4}.conv.conv.{0,1,3,4}       outc.conv        dsoutc{1..4}.conv (deep-supervision heads)

The official module feeds the network the texture scaled to ``[-1, 1]`` and resized to 512 x 512,
and resizes the blend layer back; :class:`DeRetouchingModule` does the same (``input_size``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_EPS",
    "DeRetouchResult",
    "DeRetouchUNet",
    "DeRetouchingModule",
    "deretouch_albedo",
    "phi",
    "retouch_texture",
]

#: The paper's epsilon of Eq. 6.
DEFAULT_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# Eq. 3-6
# --------------------------------------------------------------------------------------------
def retouch_texture(texture: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """Retouched texture ``T0 = (1 - 2B) T^2 + 2B T``.

    Parameters
    ----------
    texture : (B, 3, H, W) texture ``T`` in ``[0, 1]``.
    blend : (B, 3 or 1, H, W) blend layer ``B`` in ``[0, 1]``.

    Returns
    -------
    (B, 3, H, W) ``T0``, in ``[0, 1]`` when ``T`` and ``B`` are.
    """
    _check_maps("retouch_texture", texture=texture, blend=blend)
    return (1.0 - 2.0 * blend) * texture * texture + 2.0 * blend * texture


def phi(t0: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Eq. 6: ``phi(T0) = 1 / (T0^3 / eps + eps)``."""
    return 1.0 / (t0 * t0 * t0 / eps + eps)


def deretouch_albedo(
    albedo: torch.Tensor, texture: torch.Tensor, retouched: torch.Tensor, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Eq. 5: ``A' = A0 (T + phi(T0)) / (T0 + phi(T0))``.

    Parameters
    ----------
    albedo : (B, 3, H, W) coarse albedo ``A0`` in UV space.
    texture : (B, 3, H, W) texture ``T``.
    retouched : (B, 3, H, W) retouched texture ``T0``.
    eps : the epsilon of Eq. 6.
    """
    _check_maps("deretouch_albedo", albedo=albedo, texture=texture, retouched=retouched)
    p = phi(retouched, eps)
    return albedo * (texture + p) / (retouched + p)


def _check_maps(where: str, **maps: torch.Tensor) -> None:
    ref = None
    for name, m in maps.items():
        if m.dim() != 4:
            raise ValueError(f"{where}: {name} must be (B, C, H, W), got {tuple(m.shape)}")
        if ref is None:
            ref = (name, m)
            continue
        b, _, h, w = ref[1].shape
        if m.shape[0] != b or m.shape[-2:] != (h, w):
            raise ValueError(
                f"{where}: {name} {tuple(m.shape)} does not match {ref[0]} {tuple(ref[1].shape)} "
                "in batch or spatial size"
            )


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------
class _DoubleConv(nn.Module):
    """(conv3x3, BN, ReLU) x 2, under ``conv`` (indices 0, 1, 3, 4 hold parameters)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _In(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = _DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), _DoubleConv(in_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mpconv(x)


class _Up(nn.Module):
    """Bilinear x2 (corner-aligned), pad to the skip's size, concatenate ``[skip, up]``, conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = _DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dx or dy:  # (F.pad copies even when there is nothing to pad)
            x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
        return self.conv(torch.cat([skip, x], dim=1))


class _Out(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DeRetouchUNet(nn.Module):
    """U-Net ``(B, 3, H, W)`` texture in ``[-1, 1]`` -> blend layer ``(B, 3, H, W)`` in ``(0, 1)``.

    Parameters
    ----------
    width : channels of the first level (64 for the official checkpoint); levels have
        ``w, 2w, 4w, 8w, 8w`` channels.
    in_channels, out_channels : 3 and 3 (RGB texture -> RGB blend layer).

    ``H`` and ``W`` should be multiples of 16 (other sizes work through padding).
    The deep-supervision heads ``dsoutc1..4`` exist for checkpoint compatibility and are not used
    by :meth:`forward`.
    """

    def __init__(self, width: int = 64, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"DeRetouchUNet: width must be positive, got {width}")
        w = width
        self.in_channels = in_channels
        self.inc = _In(in_channels, w)
        self.down1 = _Down(w, 2 * w)
        self.down2 = _Down(2 * w, 4 * w)
        self.down3 = _Down(4 * w, 8 * w)
        self.down4 = _Down(8 * w, 8 * w)
        self.up1 = _Up(16 * w, 4 * w)
        self.up2 = _Up(8 * w, 2 * w)
        self.up3 = _Up(4 * w, w)
        self.up4 = _Up(2 * w, w)
        self.outc = _Out(w, out_channels)
        self.dsoutc4 = _Out(4 * w, out_channels)
        self.dsoutc3 = _Out(2 * w, out_channels)
        self.dsoutc2 = _Out(w, out_channels)
        self.dsoutc1 = _Out(w, out_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DeRetouchUNet: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < 16:
            raise ValueError(f"DeRetouchUNet: input must be at least 16x16, got {tuple(x.shape)}")
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        y = self.up1(x5, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        return torch.sigmoid(self.outc(y))


class DeRetouchResult(NamedTuple):
    """Output of :class:`DeRetouchingModule` (all ``(B, 3, H, W)``).

    Attributes
    ----------
    blend : blend layer ``B`` in ``[0, 1]``.
    retouched : retouched texture ``T0``.
    albedo : detailed albedo ``A'`` (Eq. 5).
    """

    blend: torch.Tensor
    retouched: torch.Tensor
    albedo: torch.Tensor


class DeRetouchingModule(nn.Module):
    """Blend-layer network plus Eq. 3-6.

    Parameters
    ----------
    width : U-Net width (64 for the official checkpoint, smaller for CPU training).
    input_size : side the texture is resized to before the network (512 in the official module);
        ``None`` runs the network at the texture's own size.
    eps : epsilon of Eq. 6.

    The network sits under ``generator``, the key of the official checkpoint.
    """

    def __init__(
        self, width: int = 64, *, input_size: int | None = 512, eps: float = DEFAULT_EPS
    ) -> None:
        super().__init__()
        self.generator = DeRetouchUNet(width)
        self.input_size = input_size
        self.eps = eps

    def blend_layer(self, texture: torch.Tensor) -> torch.Tensor:
        """Texture ``(B, 3, H, W)`` in ``[0, 1]`` -> blend layer ``(B, 3, H, W)`` in ``[0, 1]``."""
        if texture.dim() != 4 or texture.shape[1] != 3:
            raise ValueError(
                f"DeRetouchingModule: texture must be (B, 3, H, W), got {tuple(texture.shape)}"
            )
        h, w = texture.shape[-2:]
        x = texture * 2.0 - 1.0
        if self.input_size is not None and (h, w) != (self.input_size, self.input_size):
            x = F.interpolate(x, (self.input_size, self.input_size), mode="bilinear")
        blend = self.generator(x)
        if blend.shape[-2:] != (h, w):
            blend = F.interpolate(blend, (h, w), mode="bilinear")
        return blend

    def forward(self, texture: torch.Tensor, albedo: torch.Tensor) -> DeRetouchResult:
        """Detailed albedo from the texture ``T`` and the coarse albedo ``A0``.

        Parameters
        ----------
        texture : (B, 3, H, W) re-aligned UV texture in ``[0, 1]``.
        albedo : (B, 3, H, W) coarse UV albedo ``A0`` in ``[0, 1]``.
        """
        _check_maps("DeRetouchingModule", texture=texture, albedo=albedo)
        blend = self.blend_layer(texture)
        retouched = retouch_texture(texture, blend)
        detailed = deretouch_albedo(albedo, texture, retouched, self.eps)
        return DeRetouchResult(blend, retouched, detailed)

"""Random similarity jitter of the base model's training photos (``base_augment``).

Deep3DFaceRecon, whose face analyzer HRN starts from, trains it on photos shifted by up to 10
pixels, scaled by up to 10 %, turned in the image plane by up to 10 degrees and mirrored half of
the time, so that it does not learn the exact crop of its training set. :func:`augment_batch`
draws one such similarity per photo and applies it to the image, its face mask and its iBUG-68
landmarks alike (a mirrored photo's points are renumbered: the left eye's corner becomes the
right eye's). Pixel convention: x = column, y = row, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from models.data import PhotoBatch

__all__ = ["AugmentConfig", "augment_batch", "deep3d_augment", "random_similarities"]


@dataclass
class AugmentConfig:
    """The largest jitter of each kind (each drawn uniformly up to it; all 0: off)."""

    shift: float = 0.0
    """Shift along each axis, pixels of a 224 crop (Deep3DFaceRecon: 10)."""
    scale: float = 0.0
    """Relative change of size (Deep3DFaceRecon: 0.1, sizes from 0.9 to 1.1)."""
    rotation: float = 0.0
    """In-plane turn, degrees (Deep3DFaceRecon: 10)."""
    flip: bool = False
    """Mirror half of the photos left to right (Deep3DFaceRecon: on)."""

    @property
    def active(self) -> bool:
        return bool(self.shift or self.scale or self.rotation or self.flip)


def deep3d_augment() -> AugmentConfig:
    """Deep3DFaceRecon's augmentation of its training photos (``shift_scale_rot_flip``)."""
    return AugmentConfig(shift=10.0, scale=0.1, rotation=10.0, flip=True)


def random_similarities(
    n: int, config: AugmentConfig, size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(matrices (n, 2, 3), flipped (n,) bool)``: per photo the map of pixel coordinates
    ``p' = M[:, :2] p + M[:, 2]`` of an ``size`` x ``size`` photo onto its jittered copy, drawn
    on the CPU (from ``generator``, or torch's global one)."""

    def uniform(limit: float) -> torch.Tensor:
        return (2.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 1.0) * limit

    shift = torch.stack([uniform(config.shift), uniform(config.shift)], -1) * (size / 224.0)
    scale = 1.0 + uniform(config.scale)
    angle = uniform(math.radians(config.rotation))
    if config.flip:
        flipped = torch.rand(n, generator=generator) < 0.5
    else:
        flipped = torch.zeros(n, dtype=torch.bool)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    mirror = torch.ones(n, 2, dtype=torch.float64)
    mirror[flipped, 0] = -1.0
    linear = scale[:, None, None] * rotation * mirror[:, None, :]  # s R F
    centre = torch.full((2,), (size - 1) / 2.0, dtype=torch.float64)
    offset = centre + shift - linear @ centre
    return torch.cat([linear, offset[:, :, None]], -1), flipped


def augment_batch(
    batch: PhotoBatch, config: AugmentConfig, generator: torch.Generator | None = None
) -> PhotoBatch:
    """``batch`` with each photo, face mask and landmark set moved by its own random similarity
    (:func:`random_similarities`); pixels brought in from outside the photo are black and off
    the mask. Other fields are unchanged."""
    from facehd.detect import IBUG68_MIRROR

    images, masks, lm = batch.images, batch.masks, batch.landmarks
    b, _, h, w = images.shape
    if h != w:
        raise ValueError(f"augment_batch: square photos expected, got {h} x {w}")
    matrices, flipped = random_similarities(b, config, h, generator)
    linear, offset = matrices[:, :, :2], matrices[:, :, 2]
    # sampling grid: each output pixel q reads the photo at p = linear^-1 (q - offset)
    inverse = torch.linalg.inv(linear)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    q = torch.stack([xs, ys], -1).reshape(1, -1, 2) - offset[:, None, :]
    p = q @ inverse.transpose(1, 2)
    grid = ((2.0 * p + 1.0) / w - 1.0).reshape(b, h, w, 2).to(images.device, images.dtype)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    moved_masks = F.grid_sample(
        masks.to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
    ).to(masks.dtype)
    pts = lm.to(torch.float64).cpu() @ linear.transpose(1, 2) + offset[:, None, :]
    order = torch.as_tensor(IBUG68_MIRROR)
    if lm.shape[1] == len(IBUG68_MIRROR):
        pts[flipped] = pts[flipped][:, order]
    return replace(batch, images=moved, masks=moved_masks, landmarks=pts.to(lm.device, lm.dtype))

"""The face analyzer (HRN's base model): a ResNet regressor of morphable-model coefficients.

Layout
------
The analyzer is laid out exactly like Deep3DFaceRecon's ``net_recon`` (its ``ReconNetWrapper``
without the classifier ``fc``), so the state dict of that checkpoint loads unchanged::

    backbone.conv1 / backbone.bn1 / backbone.layer1..layer4     ResNet-50 (see models.resnet)
    final_layers.0 .. final_layers.6                           1x1 convolutions with bias,
        0: id (80)  1: exp (64)  2: tex (80)  3: angle (3)  4: gamma (27)  5: tx, ty (2)  6: tz (1)

The seven outputs are concatenated into one vector per image in that order: for the BFM,
``id [0:80], exp [80:144], tex [144:224], angle [224:227], gamma [227:254], trans [254:257]``
(257 numbers). Angles are radians (``R = Rz Ry Rx``); gamma holds 3 x 9 SH coefficients (the
renderer adds 0.8 to the first of each channel); translation is in model units. The sizes of the
identity, expression and albedo groups come from the morphable model (:class:`CoefficientLayout`),
so facehd-synth gets its own analyzer. The final layers start at zero (the mean face, frontal,
ambient light), as in Deep3DFaceRecon.

Input images are RGB in ``[0, 1]``, ``(B, 3, 224, 224)``, aligned as the base model expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from models.checkpoints import LoadReport, load_state_into, read_checkpoint
from models.resnet import ResNetBackbone

__all__ = [
    "N_ANGLE",
    "N_GAMMA",
    "N_TRANS",
    "CoefficientLayout",
    "Coefficients",
    "FaceAnalyzer",
    "load_face_analyzer",
]

#: Sizes of the pose and lighting groups (fixed by the base model's camera and SH lighting).
N_ANGLE = 3
N_GAMMA = 27
N_TRANS = 3


class Coefficients(NamedTuple):
    """Morphable-model coefficients of a batch of faces (all ``(B, k)`` tensors).

    Attributes
    ----------
    id : (B, n_id) identity coefficients.
    exp : (B, n_exp) expression coefficients.
    tex : (B, n_tex) albedo coefficients.
    angle : (B, 3) Euler angles in radians, ``R = Rz Ry Rx``.
    gamma : (B, 27) SH lighting, 3 colour channels x 9 bands (before the 0.8 ambient offset).
    trans : (B, 3) translation, model units.
    """

    id: torch.Tensor
    exp: torch.Tensor
    tex: torch.Tensor
    angle: torch.Tensor
    gamma: torch.Tensor
    trans: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.id.shape[0])

    def detach(self) -> Coefficients:
        return Coefficients(*(t.detach() for t in self))


@dataclass(frozen=True)
class CoefficientLayout:
    """Sizes of the coefficient groups; the flat vector is ``id, exp, tex, angle, gamma, trans``.

    Attributes
    ----------
    n_id, n_exp, n_tex : sizes of the identity, expression and albedo groups (BFM: 80, 64, 80).
    """

    n_id: int = 80
    n_exp: int = 64
    n_tex: int = 80

    def __post_init__(self) -> None:
        for name in ("n_id", "n_exp", "n_tex"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CoefficientLayout: {name} must be a positive int, got {value!r}")

    @classmethod
    def from_model(cls, model: Any) -> CoefficientLayout:
        """The layout of a morphable model (anything with ``n_id``, ``n_exp``, ``n_tex``)."""
        return cls(int(model.n_id), int(model.n_exp), int(model.n_tex))

    @property
    def sizes(self) -> tuple[int, int, int, int, int, int]:
        """Group sizes in vector order: id, exp, tex, angle, gamma, trans."""
        return (self.n_id, self.n_exp, self.n_tex, N_ANGLE, N_GAMMA, N_TRANS)

    @property
    def head_sizes(self) -> tuple[int, ...]:
        """Output channels of the analyzer's final layers (translation split as (tx, ty), tz)."""
        return (self.n_id, self.n_exp, self.n_tex, N_ANGLE, N_GAMMA, 2, 1)

    @property
    def total(self) -> int:
        """Length of the flat coefficient vector (257 for the BFM)."""
        return sum(self.sizes)

    def slices(self) -> dict[str, slice]:
        """Name -> slice of each group in the flat vector."""
        out, start = {}, 0
        for name, size in zip(Coefficients._fields, self.sizes, strict=True):
            out[name] = slice(start, start + size)
            start += size
        return out

    def split(self, vector: torch.Tensor) -> Coefficients:
        """Flat ``(B, total)`` vector -> :class:`Coefficients` (views, differentiable)."""
        if vector.dim() != 2 or vector.shape[1] != self.total:
            raise ValueError(
                f"coefficient vector must have shape (B, {self.total}) for layout "
                f"{self.sizes}, got {tuple(vector.shape)}"
            )
        return Coefficients(*(vector[:, s] for s in self.slices().values()))

    def join(self, coeffs: Coefficients) -> torch.Tensor:
        """:class:`Coefficients` -> flat ``(B, total)`` vector."""
        parts = list(coeffs)
        for name, part, size in zip(Coefficients._fields, parts, self.sizes, strict=True):
            if part.dim() != 2 or part.shape[1] != size:
                raise ValueError(
                    f"coefficients.{name} must be (B, {size}), got {tuple(part.shape)}"
                )
        return torch.cat(parts, dim=1)


class FaceAnalyzer(nn.Module):
    """ResNet regressor of coefficients, state dict laid out like Deep3DFaceRecon's ``net_recon``.

    Parameters
    ----------
    layout : coefficient group sizes (default: the BFM's 80/64/80).
    layers, width : backbone size (default ResNet-50; see :class:`models.resnet.ResNetBackbone`).
    """

    def __init__(
        self,
        layout: CoefficientLayout | None = None,
        *,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
    ) -> None:
        super().__init__()
        self.layout = layout or CoefficientLayout()
        self.backbone = ResNetBackbone(layers, width)
        features = self.backbone.out_features
        self.final_layers = nn.ModuleList(
            nn.Conv2d(features, n, 1, bias=True) for n in self.layout.head_sizes
        )
        for layer in self.final_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` RGB in ``[0, 1]`` -> flat coefficients ``(B, layout.total)``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"FaceAnalyzer: expected images (B, 3, H, W), got {tuple(images.shape)}"
            )
        features = self.backbone(images)
        return torch.cat([layer(features).flatten(1) for layer in self.final_layers], dim=1)

    def predict(self, images: torch.Tensor) -> Coefficients:
        """Images ``(B, 3, H, W)`` in ``[0, 1]`` -> typed :class:`Coefficients`."""
        return self.layout.split(self(images))


def load_face_analyzer(
    analyzer: FaceAnalyzer,
    source: str | Path | Mapping[str, Any],
    *,
    key: str = "net_recon",
    strict: bool = True,
) -> LoadReport:
    """Load a ``net_recon`` state dict (Deep3DFaceRecon, HRN or facehd) into ``analyzer``.

    Parameters
    ----------
    analyzer : the model to fill.
    source : a checkpoint path, a checkpoint dict holding ``key``, or the state dict itself.
    key : entry of the checkpoint holding the analyzer (``net_recon`` in Deep3DFaceRecon's and
        HRN's checkpoints). A dict that has no such entry is taken as the state dict itself.
    strict : raise :class:`models.checkpoints.CheckpointError` listing every missing, unexpected
        and shape-mismatched key unless all match; ``False`` loads what fits and returns the report.

    A classifier ``backbone.fc.*`` left in a state dict is reported as unexpected (the analyzer
    has no ``fc``).
    """
    if isinstance(source, (str, Path)):
        where = str(source)
        data = read_checkpoint(source)
    elif isinstance(source, Mapping):
        where, data = "<state dict>", dict(source)
    else:
        raise TypeError(f"load_face_analyzer: source must be a path or a dict, got {type(source)}")
    state = data[key] if key in data and isinstance(data[key], Mapping) else data
    return load_state_into(analyzer, state, part=key, source=where, strict=strict)

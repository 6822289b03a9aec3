"""HRN's detail networks, their forward pass (paper Sec. 3.2) and the official checkpoint layout.

Forward pass
------------
Inputs are UV maps at the high resolution ``S`` (256 in the paper): the canonical position map
``P`` of the coarse mesh M0 (millimetres, before pose), the UV texture ``T`` sampled from the photo
(``[0, 1]``) and the valid-texel mask ``V`` (visible, unoccluded face). With ``s = map_unit_mm``
(100: the networks work in BFM units of 100 mm) and ``m`` the mid resolution (64)::

    x_mid  = [down_m(P / s), down_m(2T - 1)]                                  6 channels, m x m
    D      = mid_net(x_mid) * 0.1 * alpha * down_m(V)                          deformation (units)
    D_up   = up_S(D)
    T'     = T re-aligned by the reversal flow of D (models.realign), or T
    x_high = [P / s, 2T' - 1, D_up]                                           9 channels, S x S
    H      = high_net(x_high) * 0.1 * beta * V                                 displacement (units)

``down``/``up`` are bilinear resizes (``align_corners=False``). The outputs are returned in
millimetres (``D * s``, ``H * s``): the deformation map is added to the canonical shape (sampled at
each vertex's UV), the displacement map moves M1 along its normals.

The re-aligned texture is treated as data (detached), as in the official code, where it is
re-sampled from the photo; the flow itself is returned for inspection.

Official checkpoint
-------------------
HRN's released model is two files. ``HRN.load_official`` maps them onto this module:

==========================  =================================================================
official entry              facehd module
==========================  =================================================================
``hrn['net_recon']``        ``HRN.net_recon``: :class:`models.analyzer.FaceAnalyzer`
``hrn['mid_net']``          ``HRN.mid_net``: :class:`models.pix2pix.ResnetGenerator` 6 -> 3
``hrn['high_net']``         ``HRN.high_net``: :class:`models.pix2pix.ResnetGenerator` 9 -> 1
``hrn['alpha']`` (1,)       ``HRN.alpha``
``hrn['beta']`` (1,)        ``HRN.beta``
``deretouch['generator']``  ``HRN.deretouch.generator``: :class:`models.deretouch.DeRetouchUNet`
==========================  =================================================================

Other entries (optimiser and scheduler states) are ignored. The key names inside each state dict
are unchanged, so the mapping is by prefix only; :meth:`HRN.official_state` writes the same
layout. The official nets take BFM units, hence ``map_unit_mm = 100`` (the default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.analyzer import CoefficientLayout, FaceAnalyzer
from models.checkpoints import (
    CheckpointError,
    LoadReport,
    compare_state,
    load_state_into,
    read_checkpoint,
)
from models.config import NetworkConfig
from models.deretouch import DeRetouchingModule
from models.pix2pix import ResnetGenerator
from models.realign import realign_texture

__all__ = ["OFFICIAL_PARTS", "HRN", "HRNOutput"]

#: Entries of the official HRN checkpoint holding module state dicts.
OFFICIAL_PARTS: tuple[str, ...] = ("net_recon", "mid_net", "high_net")
#: Entries holding the learnt scalar scales.
OFFICIAL_SCALARS: tuple[str, ...] = ("alpha", "beta")
#: Entry of the de-retouching checkpoint holding its network.
OFFICIAL_DERETOUCH_KEY = "generator"

#: ``project(points (B, N, 3) canonical mm) -> pixels (B, N, 2)``: pose + camera of the photo.
Projector = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class HRNOutput:
    """Result of :meth:`HRN.forward`.

    Attributes
    ----------
    deformation : (B, 3, m, m) deformation map, millimetres (canonical frame).
    displacement : (B, 1, S, S) displacement map, millimetres (along M1's normals).
    realigned_texture : (B, 3, S, S) texture given to the high net, ``[0, 1]``.
    flow : (B, 2, S, S) reversal flow in UV units, or ``None`` when no re-alignment ran.
    """

    deformation: torch.Tensor
    displacement: torch.Tensor
    realigned_texture: torch.Tensor
    flow: torch.Tensor | None


class HRN(nn.Module):
    """Face analyzer, mid / high generators, learnt scales and de-retouching module.

    Parameters
    ----------
    config : network sizes (:class:`models.config.NetworkConfig`); default the paper's.
    layout : coefficient layout of the morphable model (default the BFM's 80/64/80).
    """

    def __init__(
        self, config: NetworkConfig | None = None, layout: CoefficientLayout | None = None
    ) -> None:
        super().__init__()
        cfg = config or NetworkConfig()
        self.config = cfg
        if cfg.mid_size > cfg.high_size:
            raise ValueError(f"mid_size {cfg.mid_size} must not exceed high_size {cfg.high_size}")
        self.net_recon = FaceAnalyzer(layout, layers=cfg.analyzer.layers, width=cfg.analyzer.width)
        self.mid_net = ResnetGenerator(
            6, 3, filters=cfg.mid.filters, n_blocks=cfg.mid.n_blocks, dropout=cfg.mid.dropout
        )
        self.high_net = ResnetGenerator(
            9, 1, filters=cfg.high.filters, n_blocks=cfg.high.n_blocks, dropout=cfg.high.dropout
        )
        self.alpha = nn.Parameter(torch.full((1,), float(cfg.alpha_init)))
        self.beta = nn.Parameter(torch.full((1,), float(cfg.beta_init)))
        self.deretouch = DeRetouchingModule(
            cfg.deretouch.width, input_size=cfg.deretouch.input_size, eps=cfg.deretouch.eps
        )

    # ----------------------------------------------------------------------------------------
    def detail_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in HRN's detail stage: both generators, alpha and beta."""
        return [*self.mid_net.parameters(), *self.high_net.parameters(), self.alpha, self.beta]

    def _check_inputs(
        self, position_map: torch.Tensor, texture: torch.Tensor, valid_mask: torch.Tensor
    ) -> None:
        if position_map.dim() != 4 or position_map.shape[1] != 3:
            raise ValueError(f"position_map must be (B, 3, S, S), got {tuple(position_map.shape)}")
        b, _, h, w = position_map.shape
        if (h, w) != (self.config.high_size, self.config.high_size):
            raise ValueError(
                f"position_map must be {self.config.high_size}x{self.config.high_size} "
                f"(config.high_size), got {h}x{w}"
            )
        if texture.shape != (b, 3, h, w):
            raise ValueError(f"texture must be ({b}, 3, {h}, {w}), got {tuple(texture.shape)}")
        if valid_mask.shape != (b, 1, h, w):
            raise ValueError(
                f"valid_mask must be ({b}, 1, {h}, {w}), got {tuple(valid_mask.shape)}"
            )

    def forward(
        self,
        position_map: torch.Tensor,
        texture: torch.Tensor,
        valid_mask: torch.Tensor,
        project: Projector | None = None,
    ) -> HRNOutput:
        """Predict the deformation and displacement maps (see the module docstring).

        Parameters
        ----------
        position_map : (B, 3, S, S) canonical coarse positions, mm (0 outside the UV layout).
        texture : (B, 3, S, S) UV texture from the photo, ``[0, 1]``.
        valid_mask : (B, 1, S, S) valid texels in ``{0, 1}``.
        project : maps canonical points ``(B, N, 3)`` (mm) to photo pixels ``(B, N, 2)``; when
            given and ``config.realign_texture`` is on, the texture is re-aligned through the
            reversal flow of the deformation; otherwise it is used as is.
        """
        self._check_inputs(position_map, texture, valid_mask)
        cfg = self.config
        s = cfg.map_unit_mm
        mask = valid_mask.to(position_map.dtype)
        m = (cfg.mid_size, cfg.mid_size)
        pos_in = position_map / s

        def down(x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2:] == m:
                return x
            return F.interpolate(x, m, mode="bilinear", align_corners=False)

        x_mid = torch.cat([down(pos_in), down(texture * 2.0 - 1.0)], dim=1)
        deformation = self.mid_net(x_mid) * 0.1 * self.alpha * down(mask)
        size = position_map.shape[-2:]
        d_up = deformation
        if deformation.shape[-2:] != size:
            d_up = F.interpolate(deformation, size, mode="bilinear", align_corners=False)

        flow = None
        tex_high = texture
        if project is not None and cfg.realign_texture:
            b, _, h, w = position_map.shape
            p0 = position_map.permute(0, 2, 3, 1).reshape(b, h * w, 3)
            p1 = (position_map + d_up * s).permute(0, 2, 3, 1).reshape(b, h * w, 3)
            xy0 = project(p0).reshape(b, h, w, 2).permute(0, 3, 1, 2)
            xy1 = project(p1).reshape(b, h, w, 2).permute(0, 3, 1, 2)
            realigned = realign_texture(texture, xy0, xy1, mask > 0.5)
            tex_high, flow = realigned.texture.detach(), realigned.flow

        x_high = torch.cat([pos_in, tex_high * 2.0 - 1.0, d_up], dim=1)
        displacement = self.high_net(x_high) * 0.1 * self.beta * mask
        return HRNOutput(deformation * s, displacement * s, tex_high, flow)

    # ----------------------------------------------------------------------------------------
    def official_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """This model in the official layout: ``(hrn_checkpoint, deretouch_checkpoint)`` dicts."""
        hrn = {name: getattr(self, name).state_dict() for name in OFFICIAL_PARTS}
        hrn["alpha"] = self.alpha.detach().clone()
        hrn["beta"] = self.beta.detach().clone()
        return hrn, {OFFICIAL_DERETOUCH_KEY: self.deretouch.generator.state_dict()}

    def load_official(
        self,
        checkpoint: str | Path | Mapping[str, Any],
        deretouch: str | Path | Mapping[str, Any] | None = None,
        *,
        strict: bool = True,
        name: str | None = None,
    ) -> list[LoadReport]:
        """Load the official HRN checkpoint (and optionally the de-retouching one).

        Parameters
        ----------
        checkpoint : path or dict with ``net_recon``, ``mid_net``, ``high_net``, ``alpha``,
            ``beta``.
        deretouch : path or dict with ``generator``, or ``None`` to keep the current module.
        strict : raise :class:`models.checkpoints.CheckpointError` with the reports of every
            part unless all keys and shapes match (nothing is changed then).
        name : how reports and errors name ``checkpoint`` when it is a dict already read
            from a file (its path); a path names itself.

        Returns
        -------
        One :class:`models.checkpoints.LoadReport` per part (``alpha`` and ``beta`` included).
        """
        where, data = _open(checkpoint, name)
        sources: list[tuple[str, str, nn.Module, Any]] = []
        for part in OFFICIAL_PARTS:
            sources.append((part, where, getattr(self, part), data.get(part)))
        scalars = {part: data.get(part) for part in OFFICIAL_SCALARS}
        if deretouch is not None:
            d_where, d_data = _open(deretouch)
            key = OFFICIAL_DERETOUCH_KEY
            sources.append((key, d_where, self.deretouch.generator, d_data.get(key)))

        # dry run: collect every problem before changing anything
        reports: list[LoadReport] = []
        for part, src, module, state in sources:
            if not isinstance(state, Mapping):
                reports.append(LoadReport(part, src, missing=[f"<entry '{part}'>"]))
                continue
            reports.append(compare_state(module, state, part=part, source=src)[0])
        for part, value in scalars.items():
            rep = LoadReport(part, where)
            if not isinstance(value, torch.Tensor):
                rep.missing.append(f"<entry '{part}'>")
            elif value.numel() != 1:
                rep.mismatched.append((part, (1,), tuple(value.shape)))
            reports.append(rep)
        if strict and not all(r.ok for r in reports):
            bad = "\n".join(r.summary() for r in reports if not r.ok)
            raise CheckpointError(f"official HRN checkpoint does not fit this model:\n{bad}")

        final: list[LoadReport] = []
        for part, src, module, state in sources:
            if isinstance(state, Mapping):
                final.append(load_state_into(module, state, part=part, source=src, strict=False))
            else:
                final.append(next(r for r in reports if r.part == part))
        with torch.no_grad():
            for part, value in scalars.items():
                rep = next(r for r in reports if r.part == part)
                if rep.ok:
                    getattr(self, part).copy_(value.reshape(1).to(getattr(self, part)))
                    rep.loaded = 1
                final.append(rep)
        return final


def _open(
    source: str | Path | Mapping[str, Any], name: str | None = None
) -> tuple[str, dict[str, Any]]:
    if isinstance(source, (str, Path)):
        return str(source), read_checkpoint(source)
    if isinstance(source, Mapping):
        return name or "<checkpoint dict>", dict(source)
    raise TypeError(f"expected a checkpoint path or dict, got {type(source).__name__}")

"""Per-photo refinement of the base model's coefficients by analysis-by-synthesis.

The face analyzer regresses the morphable model's coefficients in one pass. Its self-supervised
objective (photometric loss on the skin, landmarks, coefficient and lighting regularisers,
reflectance; :func:`base_terms`, the same terms the trainer's base stage minimises) can also be
minimised for one photo directly, over the coefficients, with Adam:

1. **Start**: the analyzer's prediction, with the identity and expression set to zero (the
   mean face, ``start="mean"``, the default) or kept (``start="network"``).
2. **Warm-up** (``steps`` iterations): the shape is held; pose, lighting and albedo move, so
   that the shape's first steps are not spent explaining a wrong light or pose.
3. **Fit** (``steps`` iterations): every coefficient moves.

The objective has many shallow minima in the identity (a photo constrains a face's shape only
through shading and landmarks), so the start matters. On held-out ``facehd synth`` photos with
the ``tiny-cpu`` model (whose analyzer predicts identities uncorrelated with the truth) the mean
start reached M0 1.09 mm from the truth where the analyzer's own M0 was 2.09 mm and the mean face
1.65 mm, and the analyzer's start 1.39 mm (README, training section). A well-trained analyzer
may do better from its own start.

The perceptual (identity-network) loss is not part of the refinement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from models.analyzer import Coefficients
from models.config import BaseLossWeights

__all__ = ["RefineConfig", "base_terms", "refine_coefficients"]


@dataclass
class RefineConfig:
    """Settings of :func:`refine_coefficients`."""

    steps: int = 300
    """Adam iterations of each of the two phases (warm-up, then every coefficient)."""
    lr: float = 1e-2
    """Adam's learning rate (the coefficients are whitened: about one standard deviation per
    hundred steps at most)."""
    start: Literal["mean", "network"] = "mean"
    """Identity and expression to start from: zero (the mean face) or the analyzer's."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"refine steps must be >= 1, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"refine lr must be a finite number > 0, got {self.lr}")
        if self.start not in ("mean", "network"):
            raise ValueError(f"refine start must be 'mean' or 'network', got {self.start!r}")


def base_terms(
    system: Any,
    coeffs: Coefficients,
    images: torch.Tensor,
    masks: torch.Tensor,
    landmarks: torch.Tensor,
    weights: BaseLossWeights,
    perceptual: Callable[..., torch.Tensor] | None = None,
    skin: torch.Tensor | None = None,
):
    """The base model's loss terms (:class:`models.losses.BaseLossTerms`) of ``coeffs``.

    images : (B, 3, S, S) in ``[0, 1]`` at the system's image size; masks : (B, 1, S, S) the
    photos' face masks; landmarks : (B, 68, 2) the photos' iBUG-68 points, pixels of the ``S``
    crop (compared at 224-pixel units, the landmark weights' unit). The photometric term is
    taken on the skin (:func:`models.losses.skin_mask` of the face mask and the landmarks,
    within the render; ``skin``: that mask when the caller already has it, as a fit over one set
    of photos does). ``perceptual(rendered, images, mask, landmarks)`` gives the perceptual
    term, with the face mask; ``None``: zero.
    """
    from models.losses import (
        BaseLossTerms,
        base_landmark_weights,
        coefficient_regulariser,
        gamma_regulariser,
        landmark_loss,
        photometric_loss,
        pixels_at_224,
        reflectance_loss,
        skin_mask,
    )

    coarse = system.coarse(images, coeffs)
    render = system.render_coarse(coarse)
    mask = masks * render.mask[:, None].to(masks)
    skin = (skin_mask(masks, landmarks) if skin is None else skin) * render.mask[:, None].to(masks)
    rendered = render.image.permute(0, 3, 1, 2)
    lm_w = base_landmark_weights(emphasis=weights.landmark_emphasis).to(images.device)
    return BaseLossTerms(
        photo=photometric_loss(rendered, images, skin),
        perceptual=(
            rendered.sum() * 0.0
            if perceptual is None
            else perceptual(rendered, images, mask, landmarks)
        ),
        landmark=landmark_loss(
            pixels_at_224(system.landmarks2d(coarse.posed), system.image_size),
            pixels_at_224(landmarks, system.image_size),
            lm_w,
        ),
        coefficient=coefficient_regulariser(coeffs, weights.id, weights.exp, weights.tex),
        gamma=gamma_regulariser(coeffs.gamma),
        reflectance=reflectance_loss(coarse.albedo, system.skin_vertices),
    )


def refine_coefficients(
    system: Any,
    images: torch.Tensor,
    masks: torch.Tensor,
    landmarks: torch.Tensor,
    start: Coefficients,
    weights: BaseLossWeights,
    config: RefineConfig | None = None,
    *,
    shared_identity: bool = False,
) -> tuple[Coefficients, float, float]:
    """Minimise the base objective of each photo over its coefficients (module docstring).

    ``images``, ``masks``, ``landmarks`` as :func:`base_terms`; ``start``: the analyzer's
    prediction for them. Returns ``(coefficients, objective at the prediction, objective at
    the end)``, objectives of the batch (each photo is fitted on its own terms: the terms are
    means over the batch, so the photos do not interact). When the fit ends higher than the
    analyzer's prediction, or not finite, the prediction is returned (and its objective twice).
    The system's weights and their ``requires_grad`` flags are left as they were.

    ``shared_identity``: the photos are views of one face and take one identity (from the mean
    face, or the mean of the analyzer's), fitted on the sum of their objectives; expression,
    albedo, pose and light stay each view's own. The prediction a shared fit is compared with,
    and falls back to, is then the analyzer's with the mean of its identities in every view: a
    result always holds one identity, and a fit with one identity is not judged against views
    that each had their own.
    """
    from models.losses import base_total_loss, skin_mask

    cfg = config or RefineConfig()
    b = images.shape[0]
    # the analyzer's prediction; views of one face take the mean of its identities
    predicted = {name: t.detach().float() for name, t in start._asdict().items()}
    if shared_identity:
        predicted["id"] = predicted["id"].mean(0, keepdim=True).expand(b, -1)
    values = {name: t.clone() for name, t in predicted.items()}
    if shared_identity:
        values["id"] = predicted["id"][:1].clone()  # one row, expanded to the views

    def coefficients() -> Coefficients:
        if shared_identity:
            return Coefficients(**{**values, "id": values["id"].expand(b, -1)})
        return Coefficients(**values)

    skin = skin_mask(masks, landmarks)  # the photos' (the same at every step)

    def total(c: Coefficients) -> torch.Tensor:
        terms = base_terms(system, c, images, masks, landmarks, weights, skin=skin)
        return base_total_loss(terms, weights)

    def objective() -> torch.Tensor:
        return total(coefficients())

    params = list(system.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.no_grad():
            before = float(total(Coefficients(**predicted)))
        if cfg.start == "mean":
            values["id"].zero_()
            values["exp"].zero_()
        with torch.enable_grad():
            for free in (("tex", "angle", "gamma", "trans"), tuple(values)):
                for name, t in values.items():
                    t.requires_grad_(name in free)
                optim = torch.optim.Adam([values[n] for n in free], lr=cfg.lr)
                for _ in range(cfg.steps):
                    optim.zero_grad(set_to_none=True)
                    objective().backward()
                    optim.step()
        for t in values.values():
            t.requires_grad_(False)
        with torch.no_grad():
            after = float(objective())
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    if not math.isfinite(after) or (math.isfinite(before) and after > before):
        # diverged (or made it worse): keep the analyzer's prediction
        return Coefficients(**{n: t.clone() for n, t in predicted.items()}), before, before
    return Coefficients(*(t.detach().clone() for t in coefficients())), before, after

"""Losses of HRN and its base model, each a small function of tensors (weights live in the config).

Base model (Deep3DFaceRecon): photometric, perceptual, landmark, coefficient and gamma
regularisers, reflectance. HRN (supplementary Eq. 1-2): photometric and perceptual on both renders
R1 and R2, landmark, total variation of the deformation map, L1 of the displacement map, the
contour-aware loss (paper Eq. 1-2), adversarial losses on both maps, and supervised L1 to
ground-truth maps. :func:`hrn_total_loss` and :func:`base_total_loss` combine the terms with the
weights of :mod:`models.config`.

Images are ``(B, 3, H, W)`` RGB in ``[0, 1]``; masks ``(B, 1, H, W)`` in ``{0, 1}`` (or soft);
projected points are ``(B, N, 2)`` continuous pixel coordinates ``(x = column, y = row)`` with
pixel centres at integers (the convention of :mod:`facehd.render.camera`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from models.analyzer import Coefficients
    from models.config import BaseLossWeights, HRNLossWeights

__all__ = [
    "BaseLossTerms",
    "HRNLossTerms",
    "PerceptualLoss",
    "RowExtents",
    "base_landmark_weights",
    "base_total_loss",
    "coefficient_regulariser",
    "contour_loss",
    "contour_cost",
    "displacement_l1",
    "face_mask_row_extents",
    "gamma_regulariser",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "hrn_total_loss",
    "identity_cosine_loss",
    "landmark_loss",
    "masked_l1",
    "photometric_loss",
    "reflectance_loss",
    "skin_mask",
    "total_variation",
]

GanMode = Literal["lsgan", "vanilla"]


def _check(name: str, t: torch.Tensor, ndim: int, layout: str, channels: int | None = None):
    if t.dim() != ndim or (channels is not None and t.shape[1] != channels):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)}")


def _zero_like_graph(*ts: torch.Tensor) -> torch.Tensor:
    """A zero that stays connected to the inputs' graphs (so ``backward`` works on it)."""
    return sum((t.sum() * 0.0 for t in ts), torch.zeros((), dtype=ts[0].dtype, device=ts[0].device))


# --------------------------------------------------------------------------------------------
# reconstruction losses
# --------------------------------------------------------------------------------------------
def photometric_loss(
    rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Per-pixel colour distance ``sqrt(eps + sum_c (R - I)^2)`` averaged over the skin mask.

    Parameters
    ----------
    rendered, target : (B, 3, H, W) images.
    mask : (B, 1, H, W) skin / face mask (weights).
    eps : keeps the square root differentiable at zero.

    Returns
    -------
    Scalar ``sum(d * mask) / max(sum(mask), 1)``; identical images give ``sqrt(eps)``.
    """
    _check("rendered", rendered, 4, "(B, C, H, W)")
    if target.shape != rendered.shape:
        raise ValueError(f"target {tuple(target.shape)} != rendered {tuple(rendered.shape)}")
    _check("mask", mask, 4, "(B, 1, H, W)", 1)
    d = torch.sqrt(eps + ((rendered - target) ** 2).sum(dim=1, keepdim=True))
    return (d * mask).sum() / mask.sum().clamp_min(1.0)


# iBUG-68 (0-based) regions that are not skin: the brows (polylines), the eyes and the inner
# mouth (polygons)
_BROWS = (tuple(range(17, 22)), tuple(range(22, 27)))
_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
_INNER_MOUTH = tuple(range(60, 68))


def _segment_distance(px: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance of pixels ``px (P, 2)`` to segments ``a -> b (B, E, 2)``: ``(B, P, E)``."""
    ab = (b - a)[:, None]  # (B, 1, E, 2)
    ap = px[None, :, None] - a[:, None]  # (B, P, E, 2)
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (ap - t[..., None] * ab).norm(dim=-1)


def _inside_polygon(px: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """Even-odd test of pixels ``px (P, 2)`` against closed polygons ``poly (B, N, 2)``:
    ``(B, P)`` bool."""
    a, b = poly, poly.roll(-1, dims=1)
    x, y = px[None, :, None, 0], px[None, :, None, 1]
    ax, ay, bx, by = a[:, None, :, 0], a[:, None, :, 1], b[:, None, :, 0], b[:, None, :, 1]
    straddles = (ay > y) != (by > y)
    x_cross = ax + (y - ay) * (bx - ax) / torch.where(by == ay, torch.ones_like(by), by - ay)
    return ((straddles & (x < x_cross)).sum(-1) % 2) == 1


def skin_mask(
    face_mask: torch.Tensor,
    landmarks: torch.Tensor,
    eye_margin: float = 0.08,
    brow_width: float = 0.07,
) -> torch.Tensor:
    """The face mask without the eyes, brows and inner mouth: the skin the photometric loss
    compares (the base model's convention; the face mask itself bounds the contour loss).

    face_mask : (B, 1, S, S) face mask in ``[0, 1]``; landmarks : (B, 68, 2) iBUG-68 points in
    its pixels (x = column, y = row). Removed: each eye's polygon (points 36-41, 42-47) and
    everything within ``eye_margin`` of it (lids and lashes), each brow's polyline (17-21,
    22-26) widened by ``brow_width`` on either side, and the inner mouth's polygon (60-67; empty
    when the lips are closed); both lengths are fractions of the distance between the eye
    centres. A photo whose landmarks are not all finite keeps its face mask.
    """
    _check("face_mask", face_mask, 4, "(B, 1, H, W)", 1)
    b, _, h, w = face_mask.shape
    if landmarks.shape != (b, 68, 2):
        raise ValueError(f"landmarks: expected ({b}, 68, 2), got {tuple(landmarks.shape)}")
    lm = landmarks.detach().to(torch.float32)
    finite = torch.isfinite(lm).all(dim=(1, 2))
    lm = torch.where(finite[:, None, None], lm, torch.zeros_like(lm))
    iod = (lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1)).norm(dim=-1)[:, None]  # (B, 1)
    out = torch.zeros(b, h, w, dtype=torch.bool, device=lm.device)

    def cut(
        points: torch.Tensor,
        reach: float,
        segments: tuple[torch.Tensor, torch.Tensor] | None = None,
        polygon: torch.Tensor | None = None,
    ) -> None:
        """Mark the pixels within ``reach * iod`` of the ``segments`` (starts, ends) and those
        inside ``polygon``, testing only the pixels of ``points``' box widened by that reach
        (the rest of the image is out of the region's reach)."""
        pad = float((reach * iod).max()) + 1.0
        lo = (points.amin(dim=(0, 1)) - pad).floor().clamp_min(0)
        hi = (points.amax(dim=(0, 1)) + pad).ceil()
        x0, y0 = int(lo[0]), int(lo[1])
        x1, y1 = min(int(hi[0]) + 1, w), min(int(hi[1]) + 1, h)
        if x0 >= x1 or y0 >= y1:
            return
        ys, xs = torch.meshgrid(
            torch.arange(y0, y1, dtype=torch.float32, device=lm.device),
            torch.arange(x0, x1, dtype=torch.float32, device=lm.device),
            indexing="ij",
        )
        px = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (P, 2)
        hit = torch.zeros(b, px.shape[0], dtype=torch.bool, device=lm.device)
        if segments is not None:
            hit |= _segment_distance(px, *segments).amin(-1) <= reach * iod
        if polygon is not None:
            hit |= _inside_polygon(px, polygon)
        out[:, y0:y1, x0:x1] |= hit.reshape(b, y1 - y0, x1 - x0)

    for idx in _EYES:
        eye = lm[:, list(idx)]
        cut(eye, eye_margin, (eye, eye.roll(-1, dims=1)), eye)
    for idx in _BROWS:
        brow = lm[:, list(idx)]
        cut(brow, brow_width, (brow[:, :-1], brow[:, 1:]))
    mouth = lm[:, list(_INNER_MOUTH)]
    cut(mouth, 0.0, polygon=mouth)
    out &= finite[:, None, None]
    return face_mask * (~out)[:, None].to(face_mask.dtype)


def identity_cosine_loss(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """``mean_b (1 - cos(f_a, f_b))`` of identity features ``(B, D)``."""
    _check("features_a", features_a, 2, "(B, D)")
    if features_b.shape != features_a.shape:
        raise ValueError(f"features {tuple(features_b.shape)} != {tuple(features_a.shape)}")
    return (1.0 - F.cosine_similarity(features_a, features_b, dim=-1)).mean()


class PerceptualLoss(nn.Module):
    """Identity-network perceptual loss ``1 - cos(phi(R), phi(I))`` (Deep3DFaceRecon).

    Parameters
    ----------
    network : a face-recognition network mapping ``(B, 3, s, s)`` images in ``[-1, 1]`` to
        identity features ``(B, D)`` (e.g. an ArcFace backbone with user-supplied weights), or
        ``None``: the loss is then off (always 0, :attr:`enabled` false). This class logs
        nothing about it; whoever builds it tells the user (the trainer does, in ``train.log``,
        when a stage with a perceptual loss runs).
    input_size : side ``s`` of the network's input (112 for ArcFace).

    With the photos' 5 alignment points (``landmarks5`` of :meth:`forward`), both images are
    warped onto ArcFace's template by the similarity that aligns those points
    (:func:`models.identity.align_faces`, as Deep3DFaceRecon does); without them they are resized
    to ``s`` whole. The network is kept in eval mode and its parameters frozen; gradients still
    flow to the rendered image.
    """

    def __init__(self, network: nn.Module | Callable | None = None, input_size: int = 112) -> None:
        super().__init__()
        self.network = network
        self.input_size = int(input_size)
        if isinstance(network, nn.Module):
            network.eval()
            for p in network.parameters():
                p.requires_grad_(False)

    @property
    def enabled(self) -> bool:
        """Whether the loss runs: False without an identity network (the loss is then 0)."""
        return self.network is not None

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if isinstance(self.network, nn.Module):
            self.network.eval()  # batch-norm statistics of the identity network stay fixed
        return self

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, (s, s), mode="bilinear", align_corners=False)
        return self.network(images * 2.0 - 1.0)

    def forward(
        self,
        rendered: torch.Tensor,
        target: torch.Tensor,
        landmarks5: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rendered and input images ``(B, 3, H, W)`` in ``[0, 1]`` -> scalar loss (0 when off).

        ``landmarks5``: ``(B, 5, 2)`` alignment points of the input images (pixels; eye
        centres, nose tip, mouth corners), or None to resize the images whole.
        """
        _check("rendered", rendered, 4, "(B, 3, H, W)", 3)
        if target.shape != rendered.shape:
            raise ValueError(f"target {tuple(target.shape)} != rendered {tuple(rendered.shape)}")
        if self.network is None:
            return _zero_like_graph(rendered)
        if landmarks5 is not None:
            from models.identity import align_faces

            # one warp for both images (the same points): render and photo stacked as channels
            both = align_faces(torch.cat([rendered, target], 1), landmarks5, self.input_size)
            rendered, target = both[:, :3], both[:, 3:]
        return identity_cosine_loss(self._features(rendered), self._features(target))


def pixels_at_224(points: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates ``(..., 2)`` of a ``size``-pixel image -> the same points in pixels of
    the 224-pixel crop, the landmark loss's unit (pixel centres kept: ``(p + 0.5) 224 / size
    - 0.5``)."""
    return (points + 0.5) * (224.0 / size) - 0.5


def base_landmark_weights(
    n: int = 68, emphasis: float = 20.0, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Deep3DFaceRecon's landmark weights: 1, and ``emphasis`` on the nose (28-30) and inner
    mouth (60-67) of the iBUG-68 scheme. Returns ``(68,)``."""
    if n != 68:
        raise ValueError(f"base_landmark_weights: defined for the 68-point scheme, got n={n}")
    w = torch.ones(n, dtype=dtype)
    w[28:31] = emphasis
    w[60:68] = emphasis
    return w


def landmark_loss(
    predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted squared landmark distance ``sum_k w_k |p_k - q_k|^2 / (B K)`` (pixels^2).

    Parameters
    ----------
    predicted, target : (B, K, 2) landmarks in pixels.
    weights : (K,) or (B, K); default :func:`base_landmark_weights` for K = 68, else ones.
    """
    _check("predicted", predicted, 3, "(B, K, 2)")
    if predicted.shape[-1] != 2 or target.shape != predicted.shape:
        raise ValueError(
            f"landmarks must both be (B, K, 2), got {tuple(predicted.shape)} and "
            f"{tuple(target.shape)}"
        )
    b, k, _ = predicted.shape
    if weights is None:
        weights = base_landmark_weights() if k == 68 else torch.ones(k)
    weights = weights.to(predicted)
    if weights.shape not in ((k,), (b, k)):
        raise ValueError(f"weights must be ({k},) or ({b}, {k}), got {tuple(weights.shape)}")
    return (((predicted - target) ** 2).sum(-1) * weights).sum() / (b * k)


# --------------------------------------------------------------------------------------------
# base-model regularisers
# --------------------------------------------------------------------------------------------
def coefficient_regulariser(
    coeffs: Coefficients, w_id: float = 1.0, w_exp: float = 0.8, w_tex: float = 1.7e-2
) -> torch.Tensor:
    """``(w_id |id|^2 + w_exp |exp|^2 + w_tex |tex|^2) / B`` (Deep3DFaceRecon's defaults)."""
    b = coeffs.id.shape[0]
    return (
        w_id * (coeffs.id**2).sum() + w_exp * (coeffs.exp**2).sum() + w_tex * (coeffs.tex**2).sum()
    ) / b


def gamma_regulariser(gamma: torch.Tensor) -> torch.Tensor:
    """Near-monochromatic lighting: mean squared deviation of each SH band from its colour mean.

    Parameters
    ----------
    gamma : (B, 27) SH coefficients, laid out as 3 colour channels x 9 bands.
    """
    _check("gamma", gamma, 2, "(B, 27)")
    if gamma.shape[1] != 27:
        raise ValueError(f"gamma must have shape (B, 27), got {tuple(gamma.shape)}")
    g = gamma.reshape(-1, 3, 9)
    return ((g - g.mean(dim=1, keepdim=True)) ** 2).mean()


def reflectance_loss(albedo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Uniform skin albedo: squared deviation from the mean albedo over the skin region.

    Parameters
    ----------
    albedo : (B, N, 3) per-vertex albedo.
    mask : (N,) or (B, N) skin weights in {0, 1}.

    Returns
    -------
    ``sum((a - mean_skin(a))^2 * m) / sum_b(sum(m))``, i.e. ``/ (B sum(m))`` for a shared mask
    (Deep3DFaceRecon's definition).
    """
    _check("albedo", albedo, 3, "(B, N, 3)")
    b, n, _ = albedo.shape
    if mask.shape not in ((n,), (b, n)):
        raise ValueError(f"mask must be ({n},) or ({b}, {n}), got {tuple(mask.shape)}")
    m = mask.to(albedo).expand(b, n).unsqueeze(-1)
    count = m.sum(dim=1, keepdim=True).clamp_min(1e-12)
    mean = (albedo * m).sum(dim=1, keepdim=True) / count
    return (((albedo - mean) * m) ** 2).sum() / m.sum().clamp_min(1e-12)


# --------------------------------------------------------------------------------------------
# detail losses
# --------------------------------------------------------------------------------------------
def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Squared total variation ``2 (mean (x[i+1,j]-x[i,j])^2 + mean (x[i,j+1]-x[i,j])^2)``.

    Parameters
    ----------
    x : (B, C, H, W) map (the deformation map), ``H, W >= 2``.

    A 0/1 checkerboard gives exactly 4; a constant map gives 0.
    """
    _check("x", x, 4, "(B, C, H, W)")
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"total_variation needs H, W >= 2, got {tuple(x.shape)}")
    dh = x[:, :, 1:, :] - x[:, :, :-1, :]
    dw = x[:, :, :, 1:] - x[:, :, :, :-1]
    return 2.0 * ((dh**2).mean() + (dw**2).mean())


def displacement_l1(displacement: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute displacement over the valid texels (``L_reg`` of the paper).

    Parameters
    ----------
    displacement : (B, 1, H, W) map.
    mask : (B, 1, H, W) valid texels; ``None`` averages over all texels.
    """
    _check("displacement", displacement, 4, "(B, 1, H, W)", 1)
    if mask is None:
        return displacement.abs().mean()
    if mask.shape != displacement.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match {tuple(displacement.shape)}")
    return (displacement.abs() * mask).sum() / mask.sum().clamp_min(1.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Supervised L1 to a ground-truth map over a mask: ``sum|p - t| m / (C max(sum m, 1))``.

    Parameters
    ----------
    pred, target : (B, C, H, W) maps.
    mask : (B, 1, H, W) weights (1 where the ground truth is trusted; eyes, nostrils and hair 0).
    """
    _check("pred", pred, 4, "(B, C, H, W)")
    if target.shape != pred.shape:
        raise ValueError(f"target {tuple(target.shape)} must match pred {tuple(pred.shape)}")
    b, c, h, w = pred.shape
    if mask.shape != (b, 1, h, w):
        raise ValueError(f"mask must be ({b}, 1, {h}, {w}), got {tuple(mask.shape)}")
    return ((pred - target).abs() * mask).sum() / (c * mask.sum().clamp_min(1.0))


# --------------------------------------------------------------------------------------------
# contour-aware loss (paper Eq. 1-2)
# --------------------------------------------------------------------------------------------
class RowExtents(NamedTuple):
    """Left and right edges of a face mask in every image row.

    Attributes
    ----------
    left, right : (B, H) float column (pixel centre) of the first and last mask pixel of the row.
    valid : (B, H) bool, False for rows without any mask pixel.
    """

    left: torch.Tensor
    right: torch.Tensor
    valid: torch.Tensor


def face_mask_row_extents(mask: torch.Tensor) -> RowExtents:
    """Per-row left / right edge points of a face mask.

    Parameters
    ----------
    mask : (B, H, W) or (B, 1, H, W), bool or values (> 0.5 is face).
    """
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    _check("mask", mask, 3, "(B, H, W) or (B, 1, H, W)")
    m = mask if mask.dtype == torch.bool else mask > 0.5
    w = m.shape[-1]
    valid = m.any(dim=-1)
    mi = m.to(torch.uint8)
    left = mi.argmax(dim=-1)  # first True (0 when none)
    right = w - 1 - mi.flip(-1).argmax(dim=-1)
    return RowExtents(left.to(torch.float32), right.to(torch.float32), valid)


def contour_cost(
    x: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    margin: float = 0.01,
    scale: float = 224.0,
) -> torch.Tensor:
    """Eq. 2 for points on known rows: ``f = |relu(l.r / max(|l|, |r|) + margin) - margin|``.

    ``l = (left - x) / scale`` and ``r = (right - x) / scale`` are the horizontal vectors from the
    point to the row's edges, in units of ``scale`` pixels (the image width). Outside the mask
    ``f`` is the distance to the nearer edge; inside it is that distance up to ``margin`` and
    the constant ``margin`` deeper in (no gradient).

    Parameters
    ----------
    x, left, right : tensors of the same shape (columns in pixels).
    """
    lv = (left - x) / scale
    rv = (right - x) / scale
    denom = torch.maximum(lv.abs(), rv.abs()).clamp_min(1e-12)
    return (F.relu(lv * rv / denom + margin) - margin).abs()


def contour_loss(
    points: torch.Tensor,
    face_mask: torch.Tensor | RowExtents,
    *,
    delta: float = 100.0,
    margin: float = 0.01,
    scale: float | None = None,
    vertex_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contour-aware loss (paper Eq. 1-2): pull projected vertices of the lower face into the mask.

    Parameters
    ----------
    points : (B, N, 2) projected vertices of M1, pixels ``(x = column, y = row)``.
    face_mask : (B, H, W) / (B, 1, H, W) face mask, or its precomputed :class:`RowExtents`.
    delta : only points with ``y > delta`` (the lower part of the image) count; 100 px at 224.
    margin : soft margin ``lambda`` of Eq. 2, in units of ``scale`` (0.01).
    scale : pixels per unit of ``l`` and ``r``; default the mask width.
    vertex_mask : (N,) or (B, N) bool, optional further selection of vertices.

    Each point reads the edges of the row ``round(y)``. Points on rows outside the image or on
    rows without any mask pixel are left out. The loss is the mean of ``f`` (Eq. 2) over the
    counted points (0, still connected to the graph, when none count). Gradients flow to ``x``;
    the row choice is piecewise constant in ``y``.
    """
    _check("points", points, 3, "(B, N, 2)")
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, N, 2), got {tuple(points.shape)}")
    extents = face_mask if isinstance(face_mask, RowExtents) else face_mask_row_extents(face_mask)
    b, n, _ = points.shape
    if extents.left.shape[0] != b:
        raise ValueError(f"face mask batch {extents.left.shape[0]} != points batch {b}")
    h = extents.left.shape[1]
    if scale is None:
        if isinstance(face_mask, RowExtents):
            raise ValueError("contour_loss: give `scale` (the image width) with RowExtents")
        scale = float(face_mask.shape[-1])
    x, y = points[..., 0], points[..., 1]
    rows = torch.round(y.detach()).long()
    inside_image = (rows >= 0) & (rows < h)
    rows_c = rows.clamp(0, h - 1)
    left = torch.gather(extents.left.to(points), 1, rows_c)
    right = torch.gather(extents.right.to(points), 1, rows_c)
    row_ok = torch.gather(extents.valid, 1, rows_c)
    counted = inside_image & row_ok & (y.detach() > delta)
    if vertex_mask is not None:
        if vertex_mask.shape not in ((n,), (b, n)):
            raise ValueError(
                f"vertex_mask must be ({n},) or ({b}, {n}), got {tuple(vertex_mask.shape)}"
            )
        counted = counted & vertex_mask.to(torch.bool).expand(b, n)
    f = contour_cost(x, left, right, margin=margin, scale=scale)
    total = (f * counted).sum()
    count = counted.sum()
    if int(count) == 0:
        return _zero_like_graph(points)
    return total / count


# --------------------------------------------------------------------------------------------
# adversarial
# --------------------------------------------------------------------------------------------
def _check_mode(mode: str) -> None:
    if mode not in ("lsgan", "vanilla"):
        raise ValueError(f"GAN mode must be 'lsgan' or 'vanilla', got {mode!r}")


def gan_generator_loss(pred_fake: torch.Tensor, mode: GanMode = "lsgan") -> torch.Tensor:
    """Generator's adversarial loss on discriminator logits of generated maps.

    ``lsgan``: ``mean((D(G) - 1)^2)``; ``vanilla``: ``BCE-with-logits(D(G), 1)``.
    """
    _check_mode(mode)
    if mode == "lsgan":
        return ((pred_fake - 1.0) ** 2).mean()
    return F.binary_cross_entropy_with_logits(pred_fake, torch.ones_like(pred_fake))


def gan_discriminator_loss(
    pred_real: torch.Tensor, pred_fake: torch.Tensor, mode: GanMode = "lsgan"
) -> torch.Tensor:
    """Discriminator loss ``0.5 (loss(D(real), 1) + loss(D(fake), 0))`` (pix2pix)."""
    _check_mode(mode)
    if mode == "lsgan":
        real = ((pred_real - 1.0) ** 2).mean()
        fake = (pred_fake**2).mean()
    else:
        real = F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real))
        fake = F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
    return 0.5 * (real + fake)


# --------------------------------------------------------------------------------------------
# totals
# --------------------------------------------------------------------------------------------
@dataclass
class HRNLossTerms:
    """The terms of supplementary Eq. 1-2, each a scalar tensor (unweighted).

    ``mid`` refers to R1 / the deformation map, ``high`` to R2 / the displacement map.
    ``supervised_mid`` and ``supervised_high`` are ``None`` on self-supervised batches.
    """

    photo_mid: torch.Tensor
    photo_high: torch.Tensor
    perceptual_mid: torch.Tensor
    perceptual_high: torch.Tensor
    landmark: torch.Tensor
    tv: torch.Tensor
    displacement_l1: torch.Tensor
    contour: torch.Tensor
    adv_mid: torch.Tensor
    adv_high: torch.Tensor
    supervised_mid: torch.Tensor | None = None
    supervised_high: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        """Name -> value of every present term (for logs)."""
        return {f.name: float(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}


def hrn_total_loss(terms: HRNLossTerms, weights: HRNLossWeights) -> torch.Tensor:
    """Supplementary Eq. 1 (and Eq. 2 when the supervised terms are present)::

    L_self  = l1 (photo1 + photo2) + l2 (per1 + per2) + l3 lan + l4 tv + l5 reg + l6 con
              + l7 (adv_mid + adv_high)
    L_super = L_self + l8 (L_mid + L_high)
    """
    total = (
        weights.photometric * (terms.photo_mid + terms.photo_high)
        + weights.perceptual * (terms.perceptual_mid + terms.perceptual_high)
        + weights.landmark * terms.landmark
        + weights.tv * terms.tv
        + weights.displacement_l1 * terms.displacement_l1
        + weights.contour * terms.contour
        + weights.adversarial * (terms.adv_mid + terms.adv_high)
    )
    sup = [t for t in (terms.supervised_mid, terms.supervised_high) if t is not None]
    if len(sup) == 1:
        raise ValueError("hrn_total_loss: give both supervised terms or neither")
    if sup:
        total = total + weights.supervised * (sup[0] + sup[1])
    return total


@dataclass
class BaseLossTerms:
    """The base model's loss terms, each a scalar tensor (unweighted; the coefficient term is
    already weighted per group by :func:`coefficient_regulariser`)."""

    photo: torch.Tensor
    perceptual: torch.Tensor
    landmark: torch.Tensor
    coefficient: torch.Tensor
    gamma: torch.Tensor
    reflectance: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def base_total_loss(terms: BaseLossTerms, weights: BaseLossWeights) -> torch.Tensor:
    """Deep3DFaceRecon's objective: ``w_photo photo + w_per per + w_lm lm + w_reg reg +
    w_gamma gamma + w_reflc reflectance``."""
    return (
        weights.photometric * terms.photo
        + weights.perceptual * terms.perceptual
        + weights.landmark * terms.landmark
        + weights.coefficient * terms.coefficient
        + weights.gamma * terms.gamma
        + weights.reflectance * terms.reflectance
    )

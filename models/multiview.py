"""MV-HRN (paper Sec. 3.5): several photos of one face fitted jointly.

Each view is first reconstructed on its own (:meth:`models.reconstruct.Reconstructor.run_crops`
without the per-view outputs being kept apart). Then a canonical space is shared by all views:

- the **identity** coefficients, initialised with the mean of the per-view ones;
- the **deformation map** (mid-frequency details), initialised with the mean of the per-view maps,
  each texel averaged over the views that see it (a texel seen by one view of three keeps that
  view's value instead of a third of it; where no view sees it, the plain mean);

and each view keeps its own expression, albedo, pose, lighting and **displacement map**
(high-frequency details). All of these are optimised together with Adam (lr 1e-3, 50 iterations,
as in the public code) on the single-view objective summed over the views: photometric loss on
both renders R1 and R2 over the face mask, landmark loss, total variation of the deformation and
of the displacement maps, L1 of the displacement, the contour-aware loss and the coefficient
regulariser (weights: :class:`MultiViewConfig`, from ``protocols/hrn-conventions.md``).

The albedo texture of each view is its de-retouched albedo ``A'`` (paper Eq. 5). Eq. 5 is
``A' = A0 * (T + phi(T0)) / (T0 + phi(T0))`` with the photo's texture ``T`` fixed, so the fit keeps
each view's ratio ``A' / A0`` from the single-view pass and lets ``A0`` follow the view's albedo
coefficients.

The state with the mean identity and the mean deformation is the paper's naive baseline "simply
average the results of all views" (Table 4); :class:`MultiViewResult` returns it beside the fitted
views. The fit starts from it, or, with ``MultiViewConfig.deformation_start="zero"``, from the
mean identity and a zero deformation map.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.analyzer import Coefficients
from models.reconstruct import Reconstruction, Reconstructor

__all__ = [
    "DEFORMATION_STARTS",
    "SHARED_TEXTURE_PRIOR",
    "SINGLE_VIEW_TV_DEFORMATION",
    "VARIANTS",
    "MultiViewConfig",
    "MultiViewEvalRow",
    "MultiViewResult",
    "evaluate_multiview_synthetic",
    "fit_multiview",
    "summarise_multiview",
    "reconstruct_multiview",
    "shared_initial_state",
    "shared_turntable",
    "single_view_config",
]


DEFORMATION_STARTS = ("network", "zero")
"""The values of :attr:`MultiViewConfig.deformation_start`."""

SINGLE_VIEW_TV_DEFORMATION = 5e3
"""Weight of the deformation map's total variation when one photo is fitted alone
(:func:`single_view_config`): HRN's own weight for a single image (supplementary Eq. 1,
lambda_4), five times the multi-view fit's, whose views constrain the one shared map together."""

SHARED_TEXTURE_PRIOR = 0.1
"""Weight of the views' plain mean in ``shared_texture.png`` (the ``prior`` of
:func:`models.reconstruct.blend_textures`): where every view's weight fades out (at its face
mask's edge, at grazing angles) the shared texture fades into the views' mean instead of
following whichever view weighs a little more; a texel shown squarely by one view (weight near
1) keeps about 90% of its colour."""


def single_view_config(iterations: int, deformation_start: str = "network") -> MultiViewConfig:
    """The fit of one photo alone (``--fit-iterations``): MV-HRN's objective and schedule with one
    view, the deformation's total variation weighted as HRN weights it for a single image
    (:data:`SINGLE_VIEW_TV_DEFORMATION`)."""
    return MultiViewConfig(
        iterations=iterations,
        tv_deformation=SINGLE_VIEW_TV_DEFORMATION,
        deformation_start=deformation_start,
    )


@dataclass
class MultiViewConfig:
    """Schedule and loss weights of the multi-view fit (``protocols/hrn-conventions.md``)."""

    iterations: int = 50
    """Adam iterations (the public code: 50)."""
    lr: float = 1e-3
    """Adam learning rate."""
    photometric: float = 1.92
    """Photometric loss on R1 and on R2 (each)."""
    landmark: float = 1.6e-3
    """Weighted landmark loss (pixels^2 at 224), the base model's weight."""
    tv_deformation: float = 1e3
    """Total variation of the shared deformation map (model units)."""
    tv_displacement: float = 1e4
    """Total variation of each view's displacement map (model units)."""
    displacement_l1: float = 10.0
    """L1 of the displacement maps (HRN's lambda_5)."""
    contour: float = 20.0
    """Contour-aware loss on M1 (paper Eq. 1-2)."""
    coefficient: float = 3e-4
    """Coefficient regulariser (identity 1.0, expression 0.8, albedo 1.7e-2 inside it)."""
    gamma: float = 10.0
    """Regulariser of each view's SH lighting towards monochrome (the base model's gamma loss and
    weight, as the public code's multi-view fit)."""
    map_scale_mm: float = 10.0
    """Millimetres per unit of the optimised maps: Adam moves a parameter by about ``lr`` a step,
    so the maps move by about ``lr * map_scale_mm`` mm a step (100: the model units)."""
    deformation_start: str = "network"
    """Where the deformation map starts: ``"network"``, the mid-frequency network's map (the
    public code's start; with several views their seen-weighted mean), or ``"zero"`` (M1 starts
    as M0, and the fit draws the map from the photos alone)."""

    def __post_init__(self) -> None:
        if self.deformation_start not in DEFORMATION_STARTS:
            raise ValueError(
                f"MultiViewConfig.deformation_start must be one of {', '.join(DEFORMATION_STARTS)},"
                f" got {self.deformation_start!r}"
            )
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise ValueError(f"MultiViewConfig.iterations must be >= 0, got {self.iterations}")
        if not self.lr > 0:
            raise ValueError(f"MultiViewConfig.lr must be positive, got {self.lr}")
        if not self.map_scale_mm > 0:
            raise ValueError(
                f"MultiViewConfig.map_scale_mm must be positive, got {self.map_scale_mm}"
            )
        for name in (
            "photometric",
            "landmark",
            "tv_deformation",
            "tv_displacement",
            "displacement_l1",
            "contour",
            "coefficient",
            "gamma",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"MultiViewConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class MultiViewResult:
    """Outcome of :func:`fit_multiview`.

    Attributes
    ----------
    views : one fitted :class:`~models.reconstruct.Reconstruction` per view; all share M0's
        identity and the deformation map (M1 differs only by each view's expression).
    single : the views reconstructed on their own (the starting point).
    naive : the views with the averaged identity and deformation map, before any iteration (the
        paper's "average the results of all views"; whatever ``deformation_start`` says).
    shared : (N, 3) the canonical face of the shared space: the fitted identity with a neutral
        expression plus the shared deformation map (model topology, mm).
    history : per iteration (0 = before the first step, last = after the last), the total and
        each loss term.
    """

    views: list[Reconstruction]
    single: list[Reconstruction]
    naive: list[Reconstruction]
    shared: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)


def shared_initial_state(
    identity: torch.Tensor, deformation: torch.Tensor, seen: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The canonical space's starting point from the per-view results.

    identity : (V, n_id) per-view identity coefficients -> their mean (1, n_id).
    deformation : (V, 3, m, m) per-view deformation maps; seen : (V, 1, m, m) in [0, 1], how much
    of each texel the view sees -> per texel the seen-weighted mean (1, 3, m, m); where no view
    sees a texel, the plain mean.
    """
    if identity.dim() != 2 or deformation.dim() != 4 or seen.shape[1] != 1:
        raise ValueError(
            f"shared_initial_state: expected (V, n) identity, (V, 3, m, m) deformation and "
            f"(V, 1, m, m) seen, got {tuple(identity.shape)}, {tuple(deformation.shape)}, "
            f"{tuple(seen.shape)}"
        )
    w = seen.clamp(0.0, 1.0)
    total = w.sum(0, keepdim=True)
    weighted = (deformation * w).sum(0, keepdim=True) / total.clamp_min(1e-6)
    plain = deformation.mean(0, keepdim=True)
    shared = torch.where(total > 1e-6, weighted, plain)
    return identity.mean(0, keepdim=True), shared


def _check_views(
    crops: np.ndarray, masks: np.ndarray, landmarks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    crops = np.asarray(crops)
    masks = np.asarray(masks)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if crops.ndim != 4 or crops.shape[1:] != (224, 224, 3) or crops.dtype != np.uint8:
        raise ValueError(f"fit_multiview: crops must be (V, 224, 224, 3) uint8, got {crops.shape}")
    v = crops.shape[0]
    if v < 1:
        raise ValueError("fit_multiview: no views")
    if masks.shape != (v, 224, 224):
        raise ValueError(f"fit_multiview: masks must be ({v}, 224, 224), got {masks.shape}")
    if landmarks.shape != (v, 68, 2):
        raise ValueError(f"fit_multiview: landmarks must be ({v}, 68, 2), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("fit_multiview: landmarks hold NaN or infinite values")
    return crops, masks, landmarks


def fit_multiview(
    recon: Reconstructor,
    crops: np.ndarray,
    masks: np.ndarray,
    landmarks: np.ndarray,
    config: MultiViewConfig | None = None,
    *,
    deretouch: bool | None = None,
    coefficients: Coefficients | None = None,
    progress: Any = None,
) -> MultiViewResult:
    """Fit ``V`` aligned crops of one face jointly (MV-HRN).

    Parameters
    ----------
    recon : a loaded reconstructor (its networks give the starting point; they are not changed).
    crops : (V, 224, 224, 3) uint8 crops aligned the base model's way.
    masks : (V, 224, 224) face masks of the crops (non-zero = face), as ``prepare-images`` makes.
    landmarks : (V, 68, 2) iBUG-68 landmarks in the crops' pixels (x = column, y = row).
    config : schedule and weights.
    deretouch : render with the de-retouched albedo; default as :meth:`Reconstructor.run_crops`
        (yes unless the reconstructor writes the base texture).
    coefficients : per-view starting coefficients (``V`` rows, the analyzer's whitened layout),
        e.g. another method's estimates or an earlier fit; default the face analyzer's. The
        detail networks run on the faces they give.
    progress : called with ``(iteration, iterations)`` after each iteration.
    """
    from facehd.uv import sample_uv_map
    from models.hrn import HRNOutput
    from models.losses import (
        coefficient_regulariser,
        contour_loss,
        displacement_l1,
        gamma_regulariser,
        landmark_loss,
        photometric_loss,
        pixels_at_224,
        skin_mask,
        total_variation,
    )
    from models.system import DetailFace, masked_downsample

    cfg = config or MultiViewConfig()
    if deretouch is None:
        deretouch = not recon.base_texture
    crops, masks, landmarks = _check_views(crops, masks, landmarks)
    system = recon.system
    net = system.config.network
    unit = net.map_unit_mm
    scale = float(cfg.map_scale_mm)
    size = system.image_size
    images = recon._images(crops)
    dev, dt = images.device, images.dtype
    mask_t = torch.from_numpy((masks > 0).astype(np.float32))[:, None].to(dev)
    if mask_t.shape[-1] != size:
        mask_t = (torch.nn.functional.interpolate(mask_t, size=(size, size), mode="area") > 0.5).to(
            dt
        )
    lm_target = torch.as_tensor(landmarks, dtype=dt, device=dev)  # pixels at 224
    skin = skin_mask(mask_t, (lm_target + 0.5) * (size / 224.0) - 0.5)  # photometric loss's mask

    if coefficients is not None:
        coefficients = Coefficients(*(t.detach().to(dev, dt) for t in coefficients))
        if coefficients.batch_size != images.shape[0]:
            raise ValueError(
                f"fit_multiview: {coefficients.batch_size} rows of coefficients for "
                f"{images.shape[0]} views"
            )
    with torch.no_grad():
        coarse0 = system.coarse(images, coefficients)
        detail0 = system.details(images, coarse0, deretouch=deretouch)
        a0 = system.table.interpolate(coarse0.albedo).permute(0, 3, 1, 2)
        ratio = torch.where(a0 > 1e-4, detail0.albedo_map / a0.clamp_min(1e-4), torch.ones_like(a0))
        seen_mid = masked_downsample(detail0.valid, net.mid_size)
        ident, deform = shared_initial_state(coarse0.coeffs.id, detail0.maps.deformation, seen_mid)
    c0 = coarse0.coeffs
    params = {
        "id": ident.clone().requires_grad_(True),
        "exp": c0.exp.clone().requires_grad_(True),
        "tex": c0.tex.clone().requires_grad_(True),
        "angle": c0.angle.clone().requires_grad_(True),
        "gamma": c0.gamma.clone().requires_grad_(True),
        "trans": c0.trans.clone().requires_grad_(True),
        # the maps in units of map_scale_mm (see MultiViewConfig)
        "deformation": (deform / scale).clone().requires_grad_(True),
        "displacement": (detail0.maps.displacement / scale).clone().requires_grad_(True),
    }
    n_views = images.shape[0]
    fit_vertices = system.fit_vertices.to(dev)
    contour_cfg = system.config.contour
    base_w = system.config.base_losses

    weights = {
        "photo_mid": cfg.photometric,
        "photo_high": cfg.photometric,
        "landmark": cfg.landmark,
        "tv_deformation": cfg.tv_deformation,
        "tv_displacement": cfg.tv_displacement,
        "displacement_l1": cfg.displacement_l1,
        "contour": cfg.contour,
        "coefficient": cfg.coefficient,
        "gamma": cfg.gamma,
    }

    def forward() -> tuple[Any, DetailFace]:
        coeffs = Coefficients(
            params["id"].expand(n_views, -1),
            params["exp"],
            params["tex"],
            params["angle"],
            params["gamma"],
            params["trans"],
        )
        coarse = system.coarse(images, coeffs)
        deformation = (params["deformation"] * scale).expand(n_views, -1, -1, -1)
        offsets = sample_uv_map(deformation, system.uvs(deformation.dtype))
        shape = coarse.shape + offsets
        a0_now = system.table.interpolate(coarse.albedo).permute(0, 3, 1, 2)
        albedo_map = (a0_now * ratio).clamp(0.0, 1.0)
        maps = HRNOutput(
            deformation, params["displacement"] * scale, detail0.maps.realigned_texture, None
        )
        detail = DetailFace(
            detail0.texture,
            detail0.valid,
            detail0.position_map,
            maps,
            offsets,
            shape,
            coarse.pose(shape),
            albedo_map,
            detail0.seen,
        )
        return coarse, detail

    def losses() -> tuple[torch.Tensor, dict[str, float], Any, DetailFace]:
        coarse, detail = forward()
        r1 = system.render_mid(detail, coarse)
        r2 = system.render_high(detail, coarse)
        m1 = mask_t * r1.mask[:, None].to(dt)
        m2 = mask_t * r2.mask[:, None].to(dt)
        img1, img2 = r1.image.permute(0, 3, 1, 2), r2.image.permute(0, 3, 1, 2)
        h_units = params["displacement"] * (scale / unit)
        terms = {
            "photo_mid": photometric_loss(img1, images, skin * m1),
            "photo_high": photometric_loss(img2, images, skin * m2),
            "landmark": landmark_loss(
                pixels_at_224(system.landmarks2d(detail.posed), size), lm_target
            ),
            "tv_deformation": total_variation(params["deformation"] * (scale / unit)),
            "tv_displacement": total_variation(h_units),
            "displacement_l1": displacement_l1(h_units, detail0.valid),
            "contour": contour_loss(
                system.project(detail.posed),
                mask_t,
                delta=contour_cfg.delta_at(size),
                margin=contour_cfg.margin,
                vertex_mask=fit_vertices,
            ),
            "coefficient": coefficient_regulariser(
                coarse.coeffs, base_w.id, base_w.exp, base_w.tex
            ),
            "gamma": gamma_regulariser(coarse.coeffs.gamma),
        }
        total = sum(weights[name] * value for name, value in terms.items())
        values = {n: float(v.detach()) for n, v in terms.items()}
        values["total"] = float(total.detach())
        return total, values, coarse, detail

    single = recon.reconstructions(coarse0, detail0)
    history: list[dict[str, float]] = []
    with torch.no_grad():
        coarse, detail = forward()  # the naive state: the averaged map
        naive = recon.reconstructions(coarse, detail)
        if cfg.deformation_start == "zero":
            params["deformation"].zero_()
        _, values, _, _ = losses()
    history.append(values)
    optim = torch.optim.Adam(list(params.values()), lr=cfg.lr)
    for _ in range(int(cfg.iterations)):
        with torch.enable_grad():
            total, values, _, _ = losses()
            optim.zero_grad(set_to_none=True)
            total.backward()
        optim.step()
        history.append(values)
        if progress is not None:
            progress(len(history) - 1, int(cfg.iterations))
    with torch.no_grad():
        _, values, coarse, detail = losses()
        history.append(values)
        id_std = torch.as_tensor(np.asarray(system.model.id_std, dtype=np.float32), device=dev)
        n_exp = params["exp"].shape[1]
        neutral = system.model.vertices(
            params["id"] * id_std, torch.zeros(1, n_exp, dtype=dt, device=dev)
        )
        shared = neutral[0] + detail.offsets[0]
    return MultiViewResult(
        recon.reconstructions(coarse, detail),
        single,
        naive,
        shared.double().cpu().numpy(),
        history,
    )


def reconstruct_multiview(
    photos: list[Path],
    checkpoint: str | Path,
    out: str | Path,
    *,
    config: MultiViewConfig | None = None,
    deretouch: str | Path | None = None,
    bfm_path: str | Path | None = None,
    uv_path: str | Path | None = None,
    progress: Any = None,
    fit_progress: Any = None,
    base_texture: bool = False,
    precision: str = "float32",
    landmarks: str = "auto",
    loaded: Any = None,
    missing: Sequence[tuple[Path, str]] = (),
    names: Sequence[str] | None = None,
    refine: Any = None,
    texture_fit: Any = None,
) -> tuple[MultiViewResult | None, list[Any]]:
    """Photos of one face -> MV-HRN, written as ``out/<photo stem>/`` per view (the files of
    ``facehd reconstruct``, named as :func:`models.reconstruct.output_names` names them, with
    ``out/photos.csv``), ``out/shared.obj`` (the canonical face) with ``shared_texture.png``
    (:func:`models.reconstruct.blend_textures`), ``out/shared_turntable.png``
    (:func:`shared_turntable`) and ``out/multiview.json``.

    A photo that cannot be read or shows no face is reported (a
    :class:`models.reconstruct.PhotoResult` with its error) and the others are fitted. Returns
    ``(result, per-photo results)``; the result is ``None`` when no photo could be used.
    ``progress(photo)`` is called after each photo is prepared, ``fit_progress(i, n)`` after each
    iteration of the fit. ``base_texture``, ``precision``, ``landmarks``: see
    :class:`models.reconstruct.Reconstructor`; ``loaded(recon)`` is called once the checkpoint
    is loaded. ``missing``: inputs that are not there
    (:attr:`models.reconstruct.PhotoInputs.missing`), reported as failed views. ``names``: the
    folder names when the caller has them already (:func:`models.reconstruct.photo_folder_names`).
    ``refine`` (a :class:`models.refine.RefineConfig`): start the fit from the views' base
    coefficients refined on their photos with one shared identity
    (:meth:`models.reconstruct.Reconstructor.refined_coefficients`) instead of the face
    analyzer's; ``multiview.json`` then records the settings and the set's objective before and
    after (once per view) under ``refine``. ``texture_fit`` (a
    :class:`models.reconstruct.TextureFitConfig`): then each view's colour texture is fitted to
    its photo (:meth:`models.reconstruct.Reconstructor.fit_texture`).
    """
    from facehd.csvtext import atomic_write_text
    from facehd.errors import FacehdError
    from models.reconstruct import (
        PhotoResult,
        _said,
        check_name,
        clear_interrupted_writes,
        load_for_photos,
        missing_results,
        output_lock,
        photo_folder_names,
        photo_key,
        remove_earlier_result,
        write_photo_index,
        write_photo_result,
    )

    recon = load_for_photos(
        checkpoint,
        base_texture=base_texture,
        precision=precision,
        deretouch=deretouch,
        bfm_path=bfm_path,
        uv_path=uv_path,
        landmarks=landmarks,
        loaded=loaded,
        texture_fit=texture_fit,
    )
    with output_lock(out) as out:
        clear_interrupted_writes(out)
        views, results = [], missing_results(missing)
        for path, stem in zip(photos, photo_folder_names(photos, out, names), strict=True):
            try:
                check_name(path)
                views.append((path, stem, *recon.prepare_view_framed(path)))
            except (FacehdError, ValueError, OSError) as exc:
                remove_earlier_result(out, stem)
                results.append(PhotoResult(path, None, _said(exc, path)))
            if progress is not None:
                progress(path)
        if not views:
            write_photo_index(out, results)
            return None, results
        crops = np.stack([v[2].image for v in views])
        masks, landmarks68 = np.stack([v[3] for v in views]), np.stack([v[4] for v in views])
        start, refined = None, None
        if refine is not None:
            start, before, after = recon.refined_coefficients(
                crops, masks, landmarks68, refine, shared_identity=True
            )
            refined = {**asdict(refine), "objective_before": before, "objective_after": after}
        res = fit_multiview(
            recon, crops, masks, landmarks68, config, coefficients=start, progress=fit_progress
        )
        joint = {
            "views": [v[1] for v in views],
            "iterations": (config or MultiViewConfig()).iterations,
            "shared_mesh": "../shared.obj",
            "record": "../multiview.json",
        }
        written = []
        for (path, stem, aligned, mask, lm68, frame), rec in zip(views, res.views, strict=True):
            rec = replace(rec, landmarks68=lm68)
            if texture_fit is not None:
                rec = recon.fit_texture(rec, aligned.image, mask, texture_fit)
            written.append(rec)
            results.append(
                write_photo_result(recon, rec, aligned, path, out / stem, frame, multiview=joint)
            )
        order = {p: k for k, p in enumerate([Path(m[0]) for m in missing] + list(photos))}
        results.sort(key=lambda r: order[r.photo])
        stale, old_folders = _earlier_set(out, {v[1] for v in views}, results)
        write_photo_index(out, results, forget=stale)
        from models.export import write_png8, write_textured_obj
        from models.reconstruct import blend_textures

        # the shared face wears the views' textures (fitted to their photos, or the albedo),
        # each texel blended by how squarely each view shows it within its photo's face mask
        textures = [r.texture if r.texture_fitted is None else r.texture_fitted for r in written]
        weights = [recon.view_weights(r, v[3]) for r, v in zip(written, views, strict=True)]
        blended = blend_textures(textures, weights, prior=SHARED_TEXTURE_PRIOR)
        write_png8(out / "shared_texture.png", blended)
        shared = recon.mesh(res.shared)
        normals = recon.model.vertex_normals(shared.vertices)
        write_textured_obj(
            out / "shared.obj", shared, normals=normals, texture="shared_texture.png"
        )
        preview = shared_turntable(recon, written[0], res.shared, blended)
        write_png8(out / "shared_turntable.png", preview)
        meta = {
            "views": [{"photo": photo_key(v[0]), "folder": v[1]} for v in views],
            "failed": [{"photo": photo_key(r.photo), "error": r.error} for r in results if r.error],
            "config": asdict(config or MultiViewConfig()),
            "refine": refined,
            "texture_fit": None if texture_fit is None else asdict(texture_fit),
            "shared_texture": "shared_texture.png",
            "shared_turntable": "shared_turntable.png",
            "shared_texture_blend": {
                "weights": "seen x cos^2 (detail normal, direction to the camera) x face mask, "
                "falling to 0 over S/32 texels next to the texels a view leaves at 0",
                "prior": SHARED_TEXTURE_PRIOR,
            },
            "checkpoint": recon.checkpoint,
            "precision": recon.precision,
            "loss_first": res.history[0],
            "loss_last": res.history[-1],
        }
        atomic_write_text(out / "multiview.json", json.dumps(meta, indent=2) + "\n")
        for folder in old_folders:  # the replaced fit's views, once nothing lists them
            shutil.rmtree(folder, ignore_errors=True)
    return res, results


def shared_turntable(
    recon: Reconstructor, like: Reconstruction, shared: np.ndarray, texture: np.ndarray
) -> np.ndarray:
    """The shared face's preview ``(2S, 5S, 3)``: the ``shared`` vertices (model topology, no
    view's displacement) at the yaws of :meth:`Reconstructor.turntable`, grey-shaded above and
    wearing ``texture`` (an ``(H, W, 3)`` colour texture in ``[0, 1]`` on the UV layout) drawn
    unlit below; ``S`` is :meth:`Reconstructor.turntable`'s side. ``like`` is any of the views'
    reconstructions (its maps' sizes are taken)."""
    face = replace(
        like,
        m1=np.asarray(shared, dtype=np.float64),
        displacement=np.zeros_like(like.displacement),
        texture_fitted=np.asarray(texture, dtype=np.float32),
    )
    return np.concatenate([recon.turntable(face), recon.turntable(face, textured=True)], axis=0)


def _earlier_set(out: Path, folders: set[str], results: list[Any]) -> tuple[set[str], list[Path]]:
    """What an earlier multi-view fit into ``out`` (its ``multiview.json``) leaves that this fit,
    whose views go to ``folders``, replaces: ``(keys, view folders)``, the ``photos.csv`` keys of
    its photos (views and failures) that this run does not list anew, and its view folders that
    this fit does not redo; they belong to the shared face being replaced."""
    from models.reconstruct import _read_index, photo_key

    try:
        earlier = json.loads((out / "multiview.json").read_text(encoding="utf-8"))
        old_views = [str(v["folder"]) for v in earlier.get("views", [])]
        old_failed = [str(f["photo"]) for f in earlier.get("failed", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set(), []
    listed = {photo_key(r.photo) for r in results}
    index = _read_index(out)
    stale = {k for k, row in index.items() if row.output in old_views and row.output not in folders}
    stale |= {k for k in old_failed if k in index and not index[k].output and k not in listed}
    gone = [
        out / name
        for name in old_views
        if name not in folders and (out / name / "reconstruction.json").is_file()
    ]
    return stale, gone


# --------------------------------------------------------------------------------------------
# evaluation on synthetic photos with exact truth
# --------------------------------------------------------------------------------------------
#: The three ways of using a set of views, in the order reported.
VARIANTS: tuple[str, ...] = ("single", "naive", "mv-hrn")


@dataclass
class MultiViewEvalRow:
    """Scores of one synthetic scan's photos under one variant (means over its views; a view's
    NaN score is left out of its mean).

    ``variant``: ``single`` (each view on its own), ``naive`` (identity and deformation averaged
    over the views, no fitting) or ``mv-hrn`` (the joint fit). Distances (mm) and normal errors
    (rad) as :func:`models.evaluate.score_levels`; the detail scores at the skin point each
    texel shows (``disp_pearson_seen``, ``normal_seen_m1``, ``normal_seen_m2``) and M2's normal
    error with the true details there (``normal_m2_oracle``), as :func:`evaluate_synthetic`
    (:mod:`models.evaluate`, 6-7; NaN for a truth without its displacement map); FaceScape's
    CD (mm) and MNE (rad) of each level aligned rigidly (``cd_fs_m0`` ... ``mne_fs_m2``) and
    placed as the protocol places a prediction (``cd_cam_m0`` ... ``mne_cam_m2``), as
    :func:`evaluate_synthetic` scores them (items 9-10 there).
    """

    sample_id: str
    variant: str
    views: int
    dist_m0: float
    dist_m1: float
    dist_m2: float
    normal_m0: float
    normal_m1: float
    normal_m2: float
    disp_pearson_seen: float = float("nan")
    normal_seen_m1: float = float("nan")
    normal_seen_m2: float = float("nan")
    normal_m2_oracle: float = float("nan")
    cd_fs_m0: float = float("nan")
    cd_fs_m1: float = float("nan")
    cd_fs_m2: float = float("nan")
    mne_fs_m0: float = float("nan")
    mne_fs_m1: float = float("nan")
    mne_fs_m2: float = float("nan")
    cd_cam_m0: float = float("nan")
    cd_cam_m1: float = float("nan")
    cd_cam_m2: float = float("nan")
    mne_cam_m0: float = float("nan")
    mne_cam_m1: float = float("nan")
    mne_cam_m2: float = float("nan")


#: The scores of :class:`MultiViewEvalRow`, in its order (its fields after the set's sample,
#: variant and number of views).
MULTIVIEW_SCORES = tuple(f.name for f in fields(MultiViewEvalRow))[3:]


def evaluate_multiview_synthetic(
    recon: Reconstructor,
    scans_dir: str | Path,
    config: MultiViewConfig | None = None,
    *,
    views: int | None = None,
    max_points: int = 4000,
    progress: Any = None,
    skipped: list[str] | None = None,
    failed: list[str] | None = None,
    refine: Any = None,
    facescape: bool = True,
) -> list[MultiViewEvalRow]:
    """Fit the photos of every held-out scan of ``scans_dir`` (``facehd synth --photos V``,
    ``V >= 2``) jointly and score the single-view, naive and MV-HRN reconstructions against
    the truth; one row per scan and variant. ``views`` uses the first ``views`` photos of each
    scan (at least 2; default all). The scans are those of :func:`models.evaluate.heldout_ids`,
    as for the single-view evaluation: a folder that is not there, holds no ``*.photos.npz`` or
    lacks a scan's true surfaces raises InputFileError before any photo is fitted.

    The photos are cropped from their true landmarks with their true skin masks (no detector in
    the loop, as :func:`models.evaluate.evaluate_synthetic`). Raises InputFileError when no
    ``*.photos.npz`` of the folder holds at least two photos; the files of the scans with one
    photo are said in ``skipped`` (when given). A scan whose files cannot be read raises, or,
    when ``failed`` is given, is said there and left out
    (:func:`models.evaluate.read_heldout_scans`). ``refine`` (a
    :class:`models.refine.RefineConfig`): the views' base coefficients are refined first, on
    their photos with one shared identity, and all three variants start from them.
    ``facescape=False`` leaves out FaceScape's CD and MNE (their columns NaN), as
    :func:`models.evaluate.evaluate_synthetic` does.
    """
    from facehd.errors import InputFileError
    from models.data import align_lab_photo
    from models.evaluate import _photo_camera, heldout_ids, read_heldout_scans, truth_depth

    if views is not None and views < 2:
        raise ValueError(f"--views must be >= 2 for multi-view sets, got {views}")
    d = Path(scans_dir)
    ids = heldout_ids(d)  # the scans the single-view evaluation takes, checked alike
    jobs = []
    keys = ("images", "landmarks68", "masks", "K", "R", "t")
    for truth, photos in read_heldout_scans(d, ids, keys, failed=failed):
        if photos["images"].shape[0] >= 2:
            jobs.append((truth, photos))
        elif skipped is not None:
            skipped.append(f"{truth.photos}: one photo only, no set of views")
    if not jobs:
        raise InputFileError(
            d, "no <id>.photos.npz with two or more photos (facehd synth --photos 3)"
        )
    rows: list[MultiViewEvalRow] = []
    for k, (truth, photos) in enumerate(jobs):
        n = photos["images"].shape[0] if views is None else min(views, photos["images"].shape[0])
        crops = [align_lab_photo(photos, v, recon.template) for v in range(n)]
        images = np.stack([c["image"] for c in crops])
        masks = np.stack([c["mask"] for c in crops])
        landmarks68 = np.stack([c["landmarks"] for c in crops])
        start = None
        if refine is not None:
            start = recon.refined_coefficients(
                images, masks, landmarks68, refine, shared_identity=True
            )[0]
        res = fit_multiview(recon, images, masks, landmarks68, config, coefficients=start)
        # each view's camera and the truth's depth map in it, shared by the three variants
        cameras = [_photo_camera(photos, v, crops[v]) for v in range(n)]
        depths = [truth_depth(truth, c) if facescape else None for c in cameras]
        for variant, recs in zip(VARIANTS, (res.single, res.naive, res.views), strict=True):
            scores = [
                _view_scores(recon, r, truth, cameras[v], depths[v], v, max_points)
                for v, r in enumerate(recs)
            ]
            values = [float(x) for x in _mean_of_finite(np.array(scores))]
            rows.append(MultiViewEvalRow(truth.sample_id, variant, n, *values))
        if progress is not None:
            progress(k + 1, len(jobs))
    return rows


def _mean_of_finite(scores: np.ndarray) -> np.ndarray:
    """Column means of ``scores`` (views x scores) over the finite values (a level that one view
    cannot place scores NaN there); NaN where none is finite."""
    finite = np.isfinite(scores)
    counts = finite.sum(axis=0)
    sums = np.where(finite, scores, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _view_scores(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Any,
    camera: Any,
    gt_depth: np.ndarray | None,
    view: int,
    max_points: int,
) -> np.ndarray:
    """One view's :data:`MULTIVIEW_SCORES` (the order of :class:`MultiViewEvalRow`); ``camera``
    and ``gt_depth``: the view's camera and :func:`models.evaluate.truth_depth` in it (None:
    FaceScape's scores are left out, NaN)."""
    from models.evaluate import _score_levels, _seen_and_oracle, camera_levels, score_seed

    seed = score_seed(truth.sample_id, view)
    facescape = gt_depth is not None
    levels = _score_levels(recon, rec, truth, max_points=max_points, seed=seed, facescape=facescape)
    details = _seen_and_oracle(recon, rec, truth, camera, levels)[0]
    if facescape:
        fs = levels.facescape
        placed = camera_levels(recon, rec, truth, camera, levels.meshes, gt_depth=gt_depth)
    else:
        fs, placed = (float("nan"),) * 6, (float("nan"),) * 6
    scores = [*levels.dists, *levels.angles, *details, *fs, *placed]
    return np.array(scores, dtype=np.float64)


def summarise_multiview(rows: list[MultiViewEvalRow]) -> dict[str, dict[str, float]]:
    """Per variant, the mean of each score over the scans (NaN scores left out)."""
    out = {}
    for variant in VARIANTS:
        mine = [r for r in rows if r.variant == variant]
        if mine:
            out[variant] = {}
            for name in MULTIVIEW_SCORES:
                values = np.array([getattr(r, name) for r in mine], dtype=np.float64)
                finite = values[np.isfinite(values)]
                out[variant][name] = float(finite.mean()) if len(finite) else float("nan")
    return out

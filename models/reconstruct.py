"""``facehd reconstruct``: photo -> M0, M1 (model topology) and M2 (dense, with UVs) + maps.

Per photo: detect the face and its landmarks (mediapipe, :class:`facehd.detect.FaceDetector`),
align and crop it the base model's way (:func:`facehd.align.align_face`, the template the model
was trained with), run HRN (:class:`models.system.FaceSystem`), and write into ``OUT/<stem>/``:

=====================  =========================================================================
``coarse.obj``         M0 on the model topology (canonical frame, mm), UVs and normals
``mid.obj`` / ``.mtl`` M1 = M0 + deformation map, UVs, normals, textured with ``texture.png``
``texture.png``        the albedo texture (de-retouched A', paper Eq. 5), UV layout of the model
``detail.obj``         M2: dense mesh of M1's position map displaced along its normals
                       (:func:`facehd.uv.displaced_dense_mesh`), with UVs and the same texture
``deformation.npy``    (m, m, 3) float32 deformation map, mm; ``deformation.png`` 16-bit RGB
``displacement.npy``   (S, S) float32 displacement map, mm; ``displacement.png`` 16-bit grey
``overlay.png``        the photo region; the textured render of M2 over it; the grey-shaded
                       detailed geometry over it
``turntable.png``      the grey-shaded M2 seen from yaw -60, -30, 0, 30, 60 degrees
``reconstruction.json`` pose (``R``, ``t`` mm: posed = R p + t), crop transform, map ranges
``texture_fitted.png`` with a texture fit (:class:`TextureFitConfig`): M2's shaded colour with
                       an offset fitted to the photo, lighting baked in; the OBJs use it then
=====================  =========================================================================

16-bit PNGs map ``value = (png / 65535 * 2 - 1) * range`` with ``range`` in the JSON and in the
PNG's text chunk (:func:`models.export.read_png16`).

Checkpoints: a facehd run's ``model.pt`` or stage checkpoint (its config names the morphable model
and networks), or the official HRN checkpoint (``net_recon``, ``mid_net``, ``high_net``,
``alpha``, ``beta``; the de-retouching network under ``generator`` in a second file) with the BFM
(``BFM_model_front.mat`` and its UV file): the paper's networks are assumed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from facehd.errors import (
    FacehdError,
    InputFileError,
    check_output_folder,
    printable,
    utf8_problem,
)
from facehd.mesh import Mesh
from models.analyzer import Coefficients
from models.system import CoarseFace, DetailFace, FaceSystem, scaled_hrn_camera

if TYPE_CHECKING:
    from models.multiview import MultiViewConfig
    from models.refine import RefineConfig

__all__ = [
    "Reconstruction",
    "Reconstructor",
    "TextureFitConfig",
    "blend_textures",
    "find_photos",
    "find_photo_inputs",
    "find_photos_and_repeats",
    "load_system",
    "write_reconstruction",
]

OVERLAY_SIZE = 512
TURNTABLE_YAWS = (-60.0, -30.0, 0.0, 30.0, 60.0)


def load_system(
    checkpoint: str | Path,
    *,
    deretouch: str | Path | None = None,
    bfm_path: str | Path | None = None,
    uv_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    network: Any = None,
) -> tuple[FaceSystem, Any]:
    """Load a facehd model / training checkpoint or the official HRN checkpoint.

    Returns ``(system, train_config)``; ``system`` is in eval mode on ``device``. ``network``
    (a :class:`models.config.NetworkConfig`) replaces the paper's network sizes for a checkpoint
    in the official layout (the official file itself has the paper's).

    Raises
    ------
    InputFileError
        Missing, corrupt or foreign checkpoint; a checkpoint whose morphable model does not
        match; the official layout without the BFM files.
    """
    from facehd.morphable import load_model
    from models.checkpoints import (
        check_parts,
        load_state_into,
        morphable_brief,
        morphable_record,
        read_checkpoint,
    )
    from models.config import ConfigError, config_from_dict
    from models.train import (
        CHECKPOINT_FORMAT,
        MODEL_FORMAT,
        STAGES,
        MorphableConfig,
        TrainConfig,
        paper_train_config,
    )

    path = Path(checkpoint)
    data = read_checkpoint(path)
    fmt = data.get("format")
    if fmt in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        check_parts(path, data, {"config": dict, "morphable": dict, "state.hrn": dict})
        try:
            cfg = config_from_dict(TrainConfig, data["config"], source=str(path))
        except (ConfigError, KeyError) as exc:
            raise InputFileError(path, f"checkpoint config unreadable: {exc}") from exc
        m = cfg.morphable
        built_in = m.name.strip().lower() != "bfm"
        if built_in and (bfm_path is not None or uv_path is not None):
            raise InputFileError(
                path,
                f"checkpoint is on the built-in {m.name!r} model, which reads no files: "
                "--bfm and --uv go with BFM checkpoints",
            )
        if bfm_path is not None:
            m.bfm_path = str(bfm_path)
        if uv_path is not None:
            m.uv_path = str(uv_path)
        kwargs = {k: v for k, v in (("bfm_path", m.bfm_path), ("uv_path", m.uv_path)) if v}
        # a built-in model's run made before facehd refused them may still record BFM paths
        model = load_model(m.name, **({} if built_in else kwargs))
        info = data.get("morphable", {})
        if info.get("n_vertices") != model.n_vertices or info.get("name") != model.name:
            # sizes and topology hash, not the fingerprint's 90 numbers
            raise InputFileError(
                path,
                f"checkpoint is for the morphable model {morphable_brief(info)}, the one loaded "
                f"is {morphable_brief(morphable_record(model))}",
            )
        if info.get("fingerprint") is not None and not model.matches_fingerprint(
            info["fingerprint"]
        ):
            raise InputFileError(
                path,
                f"checkpoint was trained with another version of {model.name!r} (its shape "
                "bases differ from this one's): its coefficients do not mean the same shapes "
                "here; retrain, or use the facehd version it was made with",
            )
        system = FaceSystem(cfg.model, model, cfg.image_size, "cpu")
        load_state_into(system.hrn, data["state"]["hrn"], part="hrn", source=str(path))
        if fmt == MODEL_FORMAT and data.get("stages") is not None:
            system.trained_stages = tuple(data["stages"])
        elif fmt == CHECKPOINT_FORMAT and data.get("stage") in STAGES:
            # a stage's checkpoint: the stages before it, and itself once done
            k = STAGES.index(data["stage"])
            system.trained_stages = STAGES[: k + 1] if data.get("done") else STAGES[:k]
    elif all(k in data for k in ("net_recon", "mid_net", "high_net")):
        if bfm_path is None or uv_path is None:
            raise InputFileError(
                path,
                "the official HRN checkpoint works on the BFM: give its files "
                "(--bfm BFM_model_front.mat --uv <UV layout>)",
            )
        cfg = paper_train_config()
        if network is not None:
            cfg.model.network = network
        cfg.morphable = MorphableConfig("bfm", str(bfm_path), str(uv_path))
        cfg.template = "deep3d"  # the crops these networks were trained on
        model = load_model("bfm", bfm_path=bfm_path, uv_path=uv_path)
        system = FaceSystem(cfg.model, model, cfg.image_size, "cpu")
        system.hrn.load_official(data, deretouch, name=str(path))
        if deretouch is None:
            # its de-retouching network is in another file: without it, "no retouching" (the
            # output layer at zero: blend 0.5, T0 = T, A' = A0, as training starts it), not a
            # network at its random initialisation that would paint the texture
            out_layer = system.hrn.deretouch.generator.outc.conv
            torch.nn.init.zeros_(out_layer.weight)
            torch.nn.init.zeros_(out_layer.bias)
            system.trained_stages = ("base", "hrn")
        else:
            system.trained_stages = ("base", "deretouch", "hrn")
    else:
        raise InputFileError(
            path,
            f"not a facehd or HRN checkpoint (format {fmt!r}; entries: {sorted(data)[:8]})",
        )
    if cfg.template is None:
        cfg.template = "anthropometric"
    system.to(device).eval()
    return system, cfg


@dataclass
class Reconstruction:
    """One face reconstructed from an aligned 224 crop (canonical frame, mm).

    Attributes
    ----------
    m0, m1 : (V, 3) canonical M0 and M1 vertices (model topology).
    rotation, translation : pose: ``posed = R p + t`` (mm).
    deformation : (m, m, 3) map, mm; displacement : (S, S) map, mm.
    valid : (S, S) bool texels seen in the photo (or mirror-filled).
    texture : (S, S, 3) albedo texture in ``[0, 1]``.
    sh : (9, 3) SH lighting.
    refine_objective : ``(before, after)`` the base objective of the analyzer's prediction and of
        the refined coefficients (:meth:`Reconstructor.run_crops_refined`); None unrefined.
    fit_objective : ``(before, after)`` the objective of the per-photo fit of coefficients and
        maps (:meth:`Reconstructor.run_crops_fitted`); None when not fitted.
    landmarks68 : (68, 2) the photo's iBUG-68 landmarks (detected, or from its ``.pts`` file)
        in the 224 crop's pixels, when the reconstruction was made from a photo; None from a
        bare crop. :meth:`Reconstructor.landmark_nme` scores M1 against them.
    seen : (S, S) bool texels whose M0 point the photo's camera sees (None when not known).
    texture_fitted : (S, S, 3) in ``[0, 1]``: the colour texture fitted to the photo
        (:meth:`Reconstructor.fit_texture`, lighting baked in); None when not fitted.
    texture_fit_objective : ``(before, after)`` the texture fit's objective.
    """

    m0: np.ndarray
    m1: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    deformation: np.ndarray
    displacement: np.ndarray
    valid: np.ndarray
    texture: np.ndarray
    sh: np.ndarray
    refine_objective: tuple[float, float] | None = None
    fit_objective: tuple[float, float] | None = None
    landmarks68: np.ndarray | None = None
    seen: np.ndarray | None = None
    texture_fitted: np.ndarray | None = None
    texture_fit_objective: tuple[float, float] | None = None


@dataclass(frozen=True)
class TextureFitConfig:
    """The colour texture fitted to a photo, as the public HRN code makes the texture of its
    meshes: M2's shaded colour per texel (the albedo texture lit by the photo's SH lighting
    through the detail normals) plus an offset, optimised so that M1 rendered with it, unlit,
    matches the photo. Defaults: the public code's (``tex_iters=100``, ``w_color=1.92``,
    ``w_tex_smooth=10``, Adam at 1e-2)."""

    steps: int = 100
    """Adam steps on the offset (0: no fit)."""
    lr: float = 1e-2
    """Adam's learning rate."""
    photometric: float = 1.92
    """Weight of the photometric loss (:func:`models.losses.photometric_loss`) on the pixels
    M1 covers within the photo's face mask."""
    tv: float = 10.0
    """Weight of the offset's total variation (:func:`models.losses.total_variation`)."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"texture fit: steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and self.photometric >= 0 and self.tv >= 0):
            raise ValueError(
                f"texture fit: lr must be > 0 and the weights >= 0, got lr {self.lr}, "
                f"photometric {self.photometric}, tv {self.tv}"
            )


def blend_textures(
    textures: Sequence[np.ndarray], weights: Sequence[np.ndarray], *, prior: float = 0.0
) -> np.ndarray:
    """One texture ``(S, S, C)`` of several views' ``(S, S, C)``: per texel, their mean weighted
    by ``weights`` ``(S, S)`` each (:meth:`Reconstructor.view_weights`), with their plain mean
    added at weight ``prior``: ``(sum_i w_i t_i + prior * mean_i t_i) / (sum_i w_i + prior)``.
    A ``prior`` > 0 makes the blend fade into the plain mean where the views weigh little,
    rather than follow the one that weighs a little more; a texel no view weighs takes the
    plain mean."""
    ts = [np.asarray(x, dtype=np.float64) for x in textures]
    ws = [np.asarray(x, dtype=np.float64) for x in weights]
    shapes = {x.shape for x in ts}, {x.shape for x in ws}
    if not ts or len(ts) != len(ws) or len(shapes[0]) != 1 or shapes[1] != {ts[0].shape[:2]}:
        raise ValueError(
            f"blend_textures: expected one texture (S, S, C) and one weight map (S, S) per "
            f"view, all of one size; got textures {sorted(shapes[0])}, weights {sorted(shapes[1])}"
        )
    if not prior >= 0:
        raise ValueError(f"blend_textures: prior must be >= 0, got {prior}")
    t, w = np.stack(ts), np.stack(ws)
    plain = t.mean(0)
    total = w.sum(0) + prior
    mean = ((w[..., None] * t).sum(0) + prior * plain) / np.where(total > 0, total, 1.0)[..., None]
    return np.where(total[..., None] > 0, mean, plain)


#: A reconstruction whose :meth:`Reconstructor.landmark_nme` is above this lies off its photo:
#: the failure threshold of face-alignment benchmarks (WFLW's failure rate counts images whose
#: inter-ocular normalised mean error exceeds 0.1).
LANDMARK_NME_FAILED = 0.1

#: How ``reconstruction.json`` describes :meth:`Reconstructor.landmark_nme`.
LANDMARK_NME_CONVENTION = (
    "mean distance of M1's projected iBUG-68 points 18-68 (the jaw's left out) from the photo's "
    "landmarks in the 224 crop, over the distance of the photo's outer eye corners (points 37 "
    "and 46); above 0.1 the face lies off the photo"
)


class Reconstructor:
    """Runs a loaded :class:`~models.system.FaceSystem` on crops and photos.

    ``base_texture``: write the base model's albedo A0 as the texture and skip the de-retouching
    network (the geometry is the same; at the paper's sizes the network is most of the time of a
    reconstruction on a CPU).

    ``precision``: ``float32``, or ``bfloat16`` to run the detail generators and the
    de-retouching U-Net in bfloat16 (:mod:`models.precision`; the face analyzer, M0 and the
    geometry stay float32). Several times faster where the hardware has bfloat16 units (a CPU
    with AMX, a GPU); the maps move by bfloat16's rounding.

    In either precision the system's detail networks are rewritten in place for inference
    (:func:`models.precision.fuse_for_inference`): give the reconstructor a system it may keep.
    """

    def __init__(
        self,
        system: FaceSystem,
        config: Any,
        *,
        base_texture: bool = False,
        precision: str = "float32",
    ) -> None:
        from models.precision import check_precision, fuse_for_inference, run_in_bfloat16

        self.system = system
        self.config = config
        self.base_texture = bool(base_texture)
        self.precision = check_precision(precision)
        hrn = system.hrn
        detail_nets = [hrn.mid_net, hrn.high_net, hrn.deretouch.generator]
        if self.precision == "bfloat16":
            run_in_bfloat16(detail_nets)
        else:
            # batch norms folded into their convolutions and ReLUs fused into them (one oneDNN
            # call each): the de-retouching U-Net at the paper's size ~20% faster, its output
            # the same to float32 rounding; the face analyzer is left as trained
            for net in detail_nets:
                fuse_for_inference(net)
                if system.device.type == "cpu":
                    # oneDNN runs them faster on channels-last weights (the U-Net at 512 px by
                    # about a quarter, high_net by a tenth); the same to float32 rounding
                    net.to(memory_format=torch.channels_last)
        self.template = config.template or "anthropometric"
        self.checkpoint: str | None = None
        """The checkpoint file loaded (named in ``reconstruction.json``), when loaded from one."""
        self.landmarks = "auto"
        """Landmarks of photo files: ``auto`` from the iBUG ``.pts`` file beside a photo when it
        has one (``face.jpg`` -> ``face.pts``), else detected; ``detect``; ``given``."""
        self.refine: RefineConfig | None = None
        """Photo files: refine the base coefficients per photo on the self-supervised objective
        (:meth:`run_crops_refined`, with the photo's landmarks and its landmark face mask) before
        the detail networks; None: the networks alone."""
        self.fit: MultiViewConfig | None = None
        """Photo files: then fit each photo's coefficients and maps on MV-HRN's objective with
        the photo as its one view (:meth:`run_crops_fitted`); None: not fitted."""
        self.texture_fit: TextureFitConfig | None = None
        """Photo files: then fit a colour texture to the photo (:meth:`fit_texture`), written
        as ``texture_fitted.png`` and used by the meshes; None: not fitted."""
        self._detector = None

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        *,
        base_texture: bool = False,
        precision: str = "float32",
        **kwargs: Any,
    ) -> Reconstructor:
        """:func:`load_system` then a reconstructor."""
        from models.precision import check_precision

        check_precision(precision)  # before the checkpoint is read
        system, cfg = load_system(checkpoint, **kwargs)
        recon = cls(system, cfg, base_texture=base_texture, precision=precision)
        recon.checkpoint = str(Path(checkpoint).resolve())
        return recon

    @property
    def model(self):
        return self.system.model

    # ------------------------------------------------------------------ core
    def _images(self, crops: np.ndarray) -> torch.Tensor:
        from models.data import _resize_images

        t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
        return _resize_images(t, self.system.image_size).to(self.system.device)

    @torch.no_grad()
    def run_crops(self, crops: np.ndarray) -> list[Reconstruction]:
        """Aligned crops ``(B, 224, 224, 3)`` uint8 -> one :class:`Reconstruction` each."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if crops.ndim != 4 or crops.shape[1:] != (224, 224, 3) or crops.dtype != np.uint8:
            raise ValueError(f"run_crops: expected (B, 224, 224, 3) uint8, got {crops.shape}")
        images = self._images(crops)
        system = self.system
        coarse = system.coarse(images)
        detail = system.details(images, coarse, deretouch=not self.base_texture)
        return self.reconstructions(coarse, detail)

    def run_crops_refined(
        self,
        crops: np.ndarray,
        masks: np.ndarray,
        landmarks: np.ndarray,
        config: RefineConfig | None = None,
        *,
        shared_identity: bool = False,
    ) -> tuple[list[Reconstruction], list[float], list[float]]:
        """:meth:`run_crops` with the base model's coefficients refined per crop on its
        self-supervised objective (:func:`models.refine.refine_coefficients`) before the detail
        networks run.

        crops : (B, 224, 224, 3) uint8 aligned crops; masks : (B, 224, 224) skin masks (nonzero:
        skin); landmarks : (B, 68, 2) iBUG-68 points in the crops' pixels. Returns the
        reconstructions and each crop's objective before and after the refinement.
        ``shared_identity``: the crops are views of one face, refined with one identity
        (:func:`models.refine.refine_coefficients`; each crop's objectives are then the set's).
        """
        crops = np.asarray(crops)
        coeffs, before, after = self.refined_coefficients(
            crops, masks, landmarks, config, shared_identity=shared_identity
        )
        system = self.system
        images = self._images(crops)
        out = []
        for i in range(crops.shape[0]):
            one = Coefficients(*(t[i : i + 1] for t in coeffs))
            with torch.no_grad():
                coarse = system.coarse(images[i : i + 1], one)
                detail = system.details(images[i : i + 1], coarse, deretouch=not self.base_texture)
            (rec,) = self.reconstructions(coarse, detail)
            out.append(replace(rec, refine_objective=(before[i], after[i])))
        return out, before, after

    def run_crops_fitted(
        self,
        crops: np.ndarray,
        masks: np.ndarray,
        landmarks: np.ndarray,
        fit: MultiViewConfig,
        refine: RefineConfig | None = None,
    ) -> list[Reconstruction]:
        """Each crop (a face of its own) fitted alone on MV-HRN's objective
        (:func:`models.multiview.fit_multiview` with one view): its coefficients, deformation and
        displacement maps optimised on its photometric (R1 and R2), landmark, contour and
        regularising losses, starting from the networks' prediction, or with ``refine`` from the
        refined base coefficients (:meth:`refined_coefficients`). Arguments as
        :meth:`run_crops_refined`; each reconstruction holds its ``fit_objective`` (and
        ``refine_objective``)."""
        from models.multiview import fit_multiview

        crops = np.asarray(crops)
        masks, landmarks = np.asarray(masks), np.asarray(landmarks)
        coeffs = None
        if refine is not None:
            coeffs, before, after = self.refined_coefficients(crops, masks, landmarks, refine)
        out = []
        for i in range(crops.shape[0]):
            one = slice(i, i + 1)
            start = None if coeffs is None else Coefficients(*(t[one] for t in coeffs))
            res = fit_multiview(
                self, crops[one], masks[one], landmarks[one], fit, coefficients=start
            )
            rec = replace(
                res.views[0],
                fit_objective=(res.history[0]["total"], res.history[-1]["total"]),
            )
            if coeffs is not None:
                rec = replace(rec, refine_objective=(before[i], after[i]))
            out.append(rec)
        return out

    def refined_coefficients(
        self,
        crops: np.ndarray,
        masks: np.ndarray,
        landmarks: np.ndarray,
        config: RefineConfig | None = None,
        *,
        shared_identity: bool = False,
    ) -> tuple[Coefficients, list[float], list[float]]:
        """The base coefficients of each crop refined on its own self-supervised objective
        (:func:`models.refine.refine_coefficients`; arguments as :meth:`run_crops_refined`):
        ``(coefficients (B rows), objective before, objective after)``. With
        ``shared_identity`` the crops are views of one face, fitted together with one identity
        (the objectives are then the set's, once per crop); a multi-view fit starts from them
        (:func:`models.multiview.fit_multiview`)."""
        from models.data import _resize_images
        from models.refine import refine_coefficients

        crops, masks = np.asarray(crops), np.asarray(masks)
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if crops.ndim != 4 or crops.shape[1:] != (224, 224, 3) or crops.dtype != np.uint8:
            raise ValueError(
                f"refined_coefficients: expected (B, 224, 224, 3) uint8 crops, got {crops.shape}"
            )
        b = crops.shape[0]
        if masks.shape != (b, 224, 224) or landmarks.shape != (b, 68, 2):
            raise ValueError(
                f"refined_coefficients: expected masks ({b}, 224, 224) and landmarks "
                f"({b}, 68, 2), got {masks.shape} and {landmarks.shape}"
            )
        system = self.system
        k = system.image_size / 224.0
        images = self._images(crops)
        m = torch.from_numpy((masks != 0).astype(np.float32))[:, None]
        m = (_resize_images(m, system.image_size) > 0.5).float().to(system.device)
        lm = torch.as_tensor((landmarks + 0.5) * k - 0.5, dtype=torch.float32, device=system.device)
        weights = self.config.model.base_losses
        if shared_identity:  # views of one face: one fit, one identity (the objectives: the set's)
            with torch.no_grad():
                start = system.hrn.net_recon.predict(images)
            coeffs, e0, e1 = refine_coefficients(
                system, images, m, lm, start, weights, config, shared_identity=True
            )
            return coeffs, [e0] * b, [e1] * b
        rows, before, after = [], [], []
        for i in range(b):  # one photo at a time: each its own objective and optimiser
            with torch.no_grad():
                start = system.hrn.net_recon.predict(images[i : i + 1])
            coeffs, e0, e1 = refine_coefficients(
                system, images[i : i + 1], m[i : i + 1], lm[i : i + 1], start, weights, config
            )
            rows.append(coeffs)
            before.append(e0)
            after.append(e1)
        joined = Coefficients(*(torch.cat([r[j] for r in rows]) for j in range(len(rows[0]))))
        return joined, before, after

    @torch.no_grad()
    def reconstructions(self, coarse: CoarseFace, detail: DetailFace) -> list[Reconstruction]:
        """A batch of the system's coarse and detail levels -> one :class:`Reconstruction` each."""
        out = []
        for b in range(coarse.shape.shape[0]):
            out.append(
                Reconstruction(
                    m0=coarse.shape[b].double().cpu().numpy(),
                    m1=detail.shape[b].double().cpu().numpy(),
                    rotation=coarse.rotation[b].double().cpu().numpy(),
                    translation=coarse.translation[b].double().cpu().numpy(),
                    deformation=detail.maps.deformation[b].permute(1, 2, 0).cpu().numpy(),
                    displacement=detail.maps.displacement[b, 0].cpu().numpy(),
                    valid=detail.valid[b, 0].cpu().numpy() > 0.5,
                    texture=detail.albedo_map[b].permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
                    sh=coarse.sh[b].cpu().numpy(),
                    seen=detail.seen[b, 0].cpu().numpy() > 0.5,
                )
            )
        return out

    def detect_and_align(self, image: np.ndarray):
        """Main face of ``image (H, W, 3) uint8`` -> :class:`facehd.align.AlignedFace` (224 crop
        and a 512 HD crop). Raises :class:`facehd.detect.NoFaceError` when there is no face."""
        return self._detect_and_align(image)[1]

    def _face(self, image: np.ndarray, path: str | Path | None):
        """``(k, face, n, spread)``: the main face of ``image`` in ``np.rot90(image, k)``, from
        the photo's ``.pts`` file when :attr:`landmarks` allows (``path`` given; ``n`` and
        ``spread`` None), else detected (the largest, most central of the ``n`` faces found,
        its landmarks' spread :meth:`facehd.detect.FaceDetector.landmark_spread`); either way a
        photo that shows the face turned by quarter turns, without an orientation tag, is
        turned upright."""
        from facehd.detect import FaceDetector, face_from_landmark_file_upright, given_landmarks

        pts = given_landmarks(path, self.landmarks) if path is not None else None
        if pts is not None:
            k, face = face_from_landmark_file_upright(pts, image.shape)
            return k, face, None, None
        if self._detector is None:
            self._detector = FaceDetector(segmentation=False)
        return self._detector.main_face_checked(image)

    def _detect_and_align(self, image: np.ndarray, path: str | Path | None = None):
        """``(face, aligned, k, n, spread)``: the main face and its crops, both of
        ``np.rot90(image, k)``, the photo turned upright (``k`` quarter turns, 0 for an upright
        photo), the number of faces found and the spread of the face's landmarks (both None:
        the face is from a ``.pts`` file)."""
        from facehd.align import align_face, named_template

        k, face, n, spread = self._face(image, path)
        if k:
            image = np.ascontiguousarray(np.rot90(image, k))
        aligned = align_face(
            image, face.landmarks5, hd_size=OVERLAY_SIZE, template=named_template(self.template)
        )
        return face, aligned, k, n, spread

    def prepare_view(self, path: str | Path) -> tuple[Any, np.ndarray, np.ndarray]:
        """Load, detect and align one photo for a multi-view fit (:mod:`models.multiview`).

        Returns the :class:`facehd.align.AlignedFace`, its face mask ``(224, 224) uint8`` (the
        convex hull of the jaw, brows and forehead outline, as ``prepare-images`` without the
        person segmentation) and the iBUG-68 landmarks ``(68, 2)`` in the crop's pixels.
        """
        return self.prepare_view_framed(path)[:3]

    def prepare_view_framed(
        self, path: str | Path, photo: Any = None
    ) -> tuple[Any, np.ndarray, np.ndarray, PhotoFrame]:
        """:meth:`prepare_view`, and how the photo was turned upright (:class:`PhotoFrame`).
        ``photo``: the file already loaded (:func:`facehd.align.load_photo`), not read again."""
        from facehd.align import load_photo
        from facehd.detect import convex_hull_mask

        photo = load_photo(path) if photo is None else photo
        face, aligned, k, n, spread = self._detect_and_align(photo.image, path)
        t = aligned.transform
        mask = convex_hull_mask(t.apply(face.outline()), aligned.image.shape[:2])
        frame = PhotoFrame(photo.orientation, k, n, _box(face), spread)
        return aligned, mask.astype(np.uint8), t.apply(face.landmarks68), frame

    def run_photo(self, path: str | Path):
        """Load, detect, align and reconstruct one photo file. Returns (reconstruction, aligned)."""
        return self.run_photo_framed(path)[:2]

    def run_photo_framed(
        self, path: str | Path, photo: Any = None
    ) -> tuple[Reconstruction, Any, PhotoFrame]:
        """:meth:`run_photo`, and how the photo was turned upright (:class:`PhotoFrame`).
        ``photo``: the file already loaded (:func:`facehd.align.load_photo`), not read again."""
        from facehd.align import load_photo

        if self.fit is not None or self.refine is not None or self.texture_fit is not None:
            aligned, mask, landmarks, frame = self.prepare_view_framed(path, photo)
            if self.fit is not None:
                rec = self.run_crops_fitted(
                    aligned.image[None], mask[None], landmarks[None], self.fit, self.refine
                )[0]
            elif self.refine is not None:
                rec = self.run_crops_refined(
                    aligned.image[None], mask[None], landmarks[None], self.refine
                )[0][0]
            else:
                rec = self.run_crops(aligned.image[None])[0]
            rec = replace(rec, landmarks68=landmarks)
            if self.texture_fit is not None:
                rec = self.fit_texture(rec, aligned.image, mask, self.texture_fit)
            return rec, aligned, frame
        photo = load_photo(path) if photo is None else photo
        face, aligned, k, n, spread = self._detect_and_align(photo.image, path)
        rec = self.run_crops(aligned.image[None])[0]
        rec = replace(rec, landmarks68=aligned.transform.apply(face.landmarks68))
        return rec, aligned, PhotoFrame(photo.orientation, k, n, _box(face), spread)

    def _texel_normals(
        self, rec: Reconstruction, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posed M1 ``(1, V, 3)``, the detail normals of ``rec``'s displacement map per texel
        ``(1, S, S, 3)`` in the camera's world frame and the UV layout's texel mask ``(S, S)``
        (:func:`facehd.render.detail_normal_texels`)."""
        from facehd.render import detail_normal_texels

        v = torch.as_tensor(rec.m1 @ rec.rotation.T + rec.translation, dtype=dtype)[None]
        normals, inside, _ = detail_normal_texels(
            v,
            self.system.faces.cpu(),
            self.system.uv_layout,
            torch.as_tensor(rec.displacement, dtype=dtype)[None, None],
            table=self.system.table,
            normals=self.model.vertex_normals(v),
        )
        return v, normals, inside

    def shaded_texture(self, rec: Reconstruction) -> torch.Tensor:
        """M2's colour per texel ``(1, 3, S, S)``: the albedo texture shaded by the photo's SH
        lighting through the displacement map's detail normals (posed frame), as the renders
        of :meth:`overlay` shade each pixel; texels outside the UV layout keep the albedo."""
        from facehd.render.shading import shade_sh

        dt = torch.float32
        _, normals, inside = self._texel_normals(rec, dt)
        albedo = torch.as_tensor(rec.texture, dtype=dt)[None]  # (1, S, S, 3)
        if albedo.shape[1:3] != normals.shape[1:3]:
            raise ValueError(
                f"shaded_texture: texture {tuple(albedo.shape[1:3])} and displacement "
                f"{tuple(normals.shape[1:3])} differ in size"
            )
        unit = torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
        lit = shade_sh(unit, albedo, torch.as_tensor(rec.sh, dtype=dt)[None])
        lit = torch.where(inside[None, ..., None], lit, albedo)
        return lit.permute(0, 3, 1, 2).contiguous()

    def view_weights(
        self, rec: Reconstruction, mask: np.ndarray | None = None, *, feather: float | None = None
    ) -> np.ndarray:
        """How well the photo shows each texel ``(S, S)``, for blending several views' textures
        (:func:`blend_textures`): the squared cosine between the texel's detail normal and its
        direction to the camera, on texels the camera sees (``rec.seen``; 0 elsewhere),

        - times ``mask`` where the texel projects, when given: the ``(H, H)`` face mask of the
          crop ``rec`` was made from (nonzero: face; sampled bilinearly), so that a view lends
          no texel its photo shows as hair, background or an occluder;
        - falling linearly to 0 over the ``feather`` texels (default ``S / 32``) next to the
          texels of the UV layout it leaves at 0, so that the views' textures meet without a
          seam where one view's region ends inside another's (0: no falloff).
        """
        from scipy import ndimage

        v, normals, inside = self._texel_normals(rec, torch.float64)
        points = self.system.table.interpolate(v)[0]  # (S, S, 3) posed texel points
        shape = (224, 224) if mask is None else np.shape(mask)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"view_weights: mask must be square (H, H), got {shape}")
        size = int(shape[0])
        cam = scaled_hrn_camera(size)
        centre = -(cam.R[0].double().T @ cam.t[0].double()).numpy()
        to_cam = centre - points.numpy()
        to_cam /= np.linalg.norm(to_cam, axis=-1, keepdims=True).clip(1e-12)
        n = normals[0].numpy()
        n = n / np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)
        cos = np.clip(np.sum(n * to_cam, axis=-1), 0.0, 1.0)
        seen = np.ones(cos.shape, bool) if rec.seen is None else rec.seen
        w = np.where(seen, cos**2, 0.0)
        if mask is not None:
            xy = cam.project(points.reshape(1, -1, 3))[0].numpy()  # (x = col, y = row)
            face = np.asarray(mask, dtype=np.float64) > 0
            shown = ndimage.map_coordinates(
                face.astype(np.float64), [xy[:, 1], xy[:, 0]], order=1, mode="constant", cval=0.0
            )
            w = w * shown.reshape(w.shape)
        reach = w.shape[0] / 32.0 if feather is None else float(feather)
        left_out = (w == 0) & inside.numpy()  # outside the layout nothing is blended
        if reach > 0 and left_out.any():
            away = ndimage.distance_transform_edt(~left_out)  # texels to the nearest left out
            w = w * np.clip(away / reach, 0.0, 1.0)
        return w

    def fit_texture(
        self,
        rec: Reconstruction,
        crop: np.ndarray,
        mask: np.ndarray,
        config: TextureFitConfig | None = None,
    ) -> Reconstruction:
        """``rec`` with a colour texture fitted to its photo (:class:`TextureFitConfig`).

        crop : (H, H, 3) the aligned crop ``rec`` was made from (uint8, or float in [0, 1]);
        mask : (H, H) its face mask (nonzero: face). The texture starts as
        :meth:`shaded_texture`; an offset is optimised so that M1, rendered with the texture
        unlit by the base camera scaled to the crop, matches the crop on the pixels it covers
        within the mask. Returns ``rec`` with ``texture_fitted`` (clipped to [0, 1]) and
        ``texture_fit_objective`` (before, after).
        """
        from facehd.render import Renderer
        from models.losses import photometric_loss, total_variation

        config = TextureFitConfig() if config is None else config
        crop = np.asarray(crop)
        size = crop.shape[0]
        if crop.shape != (size, size, 3) or np.asarray(mask).shape != (size, size):
            raise ValueError(
                f"fit_texture: expected a square crop (H, H, 3) and its mask (H, H), got "
                f"{crop.shape} and {np.asarray(mask).shape}"
            )
        dt = torch.float32
        scale = 255.0 if crop.dtype == np.uint8 else 1.0
        target = torch.as_tensor(crop / scale, dtype=dt).permute(2, 0, 1)[None]
        renderer = Renderer(scaled_hrn_camera(size, dtype=dt), "cpu")
        v = torch.as_tensor(rec.m1 @ rec.rotation.T + rec.translation, dtype=dt)[None]
        faces = self.system.faces.cpu()
        uvs = torch.as_tensor(np.array(self.system.uv_layout), dtype=dt)
        normals = self.model.vertex_normals(v)
        fragments = renderer.rasterize(v, faces)  # the geometry stays: rasterised once
        weight = fragments.mask[:, None].to(dt) * torch.as_tensor(np.asarray(mask) > 0)[None, None]
        base = self.shaded_texture(rec)
        offset = torch.zeros_like(base, requires_grad=True)

        def objective() -> torch.Tensor:
            image = renderer.render(
                v, faces, uvs=uvs, normals=normals, texture=base + offset, fragments=fragments
            ).image
            photo = photometric_loss(image.permute(0, 3, 1, 2), target, weight)
            return config.photometric * photo + config.tv * total_variation(offset)

        optimiser = torch.optim.Adam([offset], lr=config.lr)
        with torch.no_grad():
            before = float(objective())
        with torch.enable_grad():
            for _ in range(config.steps):
                optimiser.zero_grad()
                loss = objective()
                loss.backward()
                optimiser.step()
        with torch.no_grad():
            after = float(objective())
            fitted = (base + offset).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        return replace(rec, texture_fitted=fitted, texture_fit_objective=(before, after))

    def landmark_nme(self, rec: Reconstruction) -> float | None:
        """How far M1 lies from its photo's landmarks: the mean distance of M1's projected
        iBUG-68 points 18-68 (1-based; the jaw's contour points, which a vertex follows only on
        a frontal face, left out) from ``rec.landmarks68``, over the distance of the photo's
        outer eye corners (points 37 and 46), the normalised mean error of face-alignment
        benchmarks. None without the photo's landmarks (a reconstruction of a bare crop).
        A placed face scores about 0.02-0.03; above :data:`LANDMARK_NME_FAILED` it lies off."""
        if rec.landmarks68 is None:
            return None
        system = self.system
        posed = rec.m1 @ rec.rotation.T + rec.translation
        with torch.no_grad():
            points = torch.as_tensor(posed[None], dtype=torch.float64, device=system.device)
            pixels = system.landmarks2d(points)[0]
        k = system.image_size / 224.0
        projected = (pixels.cpu().numpy() + 0.5) / k - 0.5  # the system's pixels -> the crop's
        given = np.asarray(rec.landmarks68, dtype=np.float64)
        eyes = float(np.linalg.norm(given[36] - given[45]))
        if not eyes > 0:
            return None
        return float(np.linalg.norm(projected[17:] - given[17:], axis=1).mean() / eyes)

    # ------------------------------------------------------------------ meshes
    def mesh(self, vertices: np.ndarray) -> Mesh:
        """A mesh on the model topology with its UVs."""
        return Mesh(
            vertices=np.asarray(vertices, dtype=np.float64),
            faces=np.array(self.model.faces),
            uvs=np.array(self.model.uvs),
        )

    def detail_mesh(self, rec: Reconstruction, displacement: np.ndarray | None = None) -> Mesh:
        """M2: the dense displaced mesh over the UV layout at the displacement map's size
        (``displacement`` replaces ``rec.displacement`` when given)."""
        from facehd.uv import displaced_dense_mesh, normal_map

        table = self.system.table
        pos = table.interpolate(rec.m1)
        nrm = normal_map(table, self.model.vertex_normals(np.asarray(rec.m1, dtype=np.float64)))
        disp = rec.displacement if displacement is None else displacement
        return displaced_dense_mesh(pos, nrm, np.asarray(disp, dtype=np.float64), table.mask)

    # ------------------------------------------------------------------ previews
    def _render_detail(
        self,
        rec: Reconstruction,
        size: int,
        rotation: np.ndarray,
        translation: np.ndarray,
        *,
        textured: bool,
    ):
        from facehd.render import Renderer, render_with_displacement

        dt = torch.float32
        cam = scaled_hrn_camera(size, dtype=dt)
        r = Renderer(cam, "cpu")
        v = torch.as_tensor(rec.m1 @ rotation.T + translation, dtype=dt)[None]
        disp = torch.as_tensor(rec.displacement, dtype=dt)[None, None]
        if textured and rec.texture_fitted is not None:  # lighting baked in: drawn unlit
            tex = torch.as_tensor(rec.texture_fitted, dtype=dt).permute(2, 0, 1)[None]
            kwargs = {"texture": tex}
        elif textured:
            tex = torch.as_tensor(rec.texture, dtype=dt).permute(2, 0, 1)[None]
            sh = torch.as_tensor(rec.sh, dtype=dt)[None]
            kwargs = {"texture": tex, "sh": sh}
        else:
            sh = torch.zeros(1, 9, 3, dtype=dt)
            sh[0, 0] = 0.55
            sh[0, 2] = 0.45  # light from the camera side (+z), a little from above
            sh[0, 1] = -0.15
            kwargs = {"colors": torch.full_like(v, 0.75), "sh": sh}
        system = self.system
        res = render_with_displacement(
            r,
            v,
            system.faces.cpu(),
            system.uv_layout,
            disp,
            table=system.table,
            normals=self.model.vertex_normals(v),
            **kwargs,
        )
        return res.image[0].clamp(0, 1).numpy(), res.mask[0].numpy()

    def overlay(self, rec: Reconstruction, image: np.ndarray) -> np.ndarray:
        """``[photo | textured render over it | grey geometry over it]`` for the crop ``image``
        (any side; the render uses the base camera scaled to it). Returns (S, 3S, 3) float."""
        size = image.shape[0]
        photo = np.asarray(image, dtype=np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
        panels = [photo]
        for textured in (True, False):
            img, mask = self._render_detail(
                rec, size, rec.rotation, rec.translation, textured=textured
            )
            a = 0.9 * mask[..., None]
            panels.append(photo * (1 - a) + img * a)
        return np.concatenate(panels, axis=1)

    def turntable(
        self, rec: Reconstruction, size: int = 256, *, textured: bool = False
    ) -> np.ndarray:
        """M2 at the yaws of :data:`TURNTABLE_YAWS` on white, one row ``(S, 5S, 3)``:
        grey-shaded, or with ``textured`` drawn with its texture as :meth:`overlay`'s middle
        panel draws it (``texture_fitted`` unlit, else the albedo lit by ``rec.sh``)."""
        centre = rec.m1[np.array(self.model.regions.fit)].mean(0)
        views = []
        for yaw in TURNTABLE_YAWS:
            a = math.radians(yaw)
            c, s = math.cos(a), math.sin(a)
            rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
            img, mask = self._render_detail(rec, size, rot, -rot @ centre, textured=textured)
            views.append(np.where(mask[..., None], img, 1.0))
        return np.concatenate(views, axis=1)


@dataclass(frozen=True)
class PhotoFrame:
    """How a photo file's pixels became the upright image its crop transform maps."""

    exif_orientation: int
    """The EXIF orientation tag applied when the file was read (1: none)."""
    turn: int
    """Quarter turns (counter-clockwise, ``np.rot90``) applied after it: a photo stored turned
    without an orientation tag, turned upright where the detector found its face turned."""
    faces_found: int | None = None
    """Faces the detector found in the photo (the largest, most central was reconstructed);
    None when the landmarks came from a ``.pts`` file."""
    face_box: tuple[float, float, float, float] | None = None
    """``(x0, y0, x1, y1)`` pixels of the face reconstructed, in the upright image."""
    landmark_spread: float | None = None
    """How far the face mesh moved the detected landmarks when fitted again in nearby crops, in
    eye distances (:meth:`facehd.detect.FaceDetector.landmark_spread`; above
    :data:`facehd.detect.MAX_LANDMARK_SPREAD` they are unsure; inf: most crops showed no face);
    None when the landmarks came from a ``.pts`` file."""

    def as_json(self) -> dict[str, Any]:
        out = {
            "convention": "crop_transform maps the image read with its EXIF orientation applied, "
            "then turned by np.rot90(image, turn)",
            "exif_orientation": self.exif_orientation,
            "turn": self.turn,
        }
        if self.faces_found is not None:
            out["faces_found"] = self.faces_found
        if self.face_box is not None:
            out["face_box"] = [round(v, 1) for v in self.face_box]
        if self.landmark_spread is not None:
            out["landmark_spread"] = spread_text(self.landmark_spread)
        return out


def spread_text(spread: float) -> str:
    """A landmark spread as ``reconstruction.json`` and ``photos.csv`` write it, as text (JSON
    has no infinity): 4 decimals, or ``inf``."""
    return f"{spread:.4f}"  # Python writes infinity as "inf"


def spread_value(text: Any) -> float | None:
    """A landmark spread read back from :func:`spread_text` (None when absent or not one)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _box(face: Any) -> tuple[float, float, float, float]:
    """A face's ``(x0, y0, x1, y1)`` pixel bounds (:attr:`facehd.detect.DetectedFace.box`)."""
    x0, y0, x1, y1 = (float(v) for v in face.box)
    return x0, y0, x1, y1


def _refine_record(recon: Reconstructor, rec: Reconstruction) -> dict[str, Any] | None:
    """``reconstruction.json``'s ``refine``: the settings and the objective before and after
    (None when the photo was not refined)."""
    return _settings_record(recon.refine, rec.refine_objective)


def _fit_record(recon: Reconstructor, rec: Reconstruction) -> dict[str, Any] | None:
    """``reconstruction.json``'s ``fit``: the per-photo fit's settings and its objective before
    and after (None when the photo was not fitted)."""
    return _settings_record(recon.fit, rec.fit_objective)


def _settings_record(settings: Any, objective: tuple[float, float] | None) -> dict[str, Any] | None:
    """A step's settings (a dataclass; None: the step was off) with its objective before and
    after (``objective_before``, ``objective_after``) when known."""
    if settings is None:
        return None
    out: dict[str, Any] = asdict(settings)
    if objective is not None:
        out["objective_before"], out["objective_after"] = (float(v) for v in objective)
    return out


def write_reconstruction(
    recon: Reconstructor,
    rec: Reconstruction,
    out: str | Path,
    *,
    photo_region: np.ndarray,
    crop_transform: Any = None,
    photo: str | Path | None = None,
    frame: PhotoFrame | None = None,
    inputs_sha256: str | None = None,
    multiview: dict[str, Any] | None = None,
) -> list[Path]:
    """Write every file of one reconstruction into the folder ``out`` (see the module docstring).

    ``photo_region`` is the crop the overlay is drawn on (the 512 HD crop of the photo, or the
    224 crop); ``photo``, the photo's file, is named in ``reconstruction.json``, with ``frame``,
    how its pixels were turned upright before ``crop_transform``, and ``inputs_sha256``, what
    the reconstruction was made from (:func:`photo_inputs_sha256`); ``multiview``: for a view of
    a joint fit, what it was fitted with (recorded as ``multiview``; null for a single photo).
    """
    from models.export import write_png8, write_png16, write_textured_obj

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    write_png8(out / "texture.png", rec.texture)
    written.append(out / "texture.png")
    texture = "texture.png"
    if rec.texture_fitted is not None:  # the photo's colours: the meshes wear them
        texture = "texture_fitted.png"
        written.append(write_png8(out / texture, rec.texture_fitted))
    m0 = recon.mesh(rec.m0)
    m1 = recon.mesh(rec.m1)
    for name, m in (("coarse.obj", m0), ("mid.obj", m1)):  # the model's own normals
        normals = recon.model.vertex_normals(m.vertices)
        written.append(write_textured_obj(out / name, m, normals=normals, texture=texture))
    m2 = recon.detail_mesh(rec)
    written.append(write_textured_obj(out / "detail.obj", m2, texture=texture))
    np.save(out / "deformation.npy", rec.deformation.astype(np.float32))
    np.save(out / "displacement.npy", rec.displacement.astype(np.float32))
    written += [out / "deformation.npy", out / "displacement.npy"]
    r_def = float(np.abs(rec.deformation).max()) or 1.0
    r_disp = float(np.abs(rec.displacement).max()) or 1.0
    written.append(write_png16(out / "deformation.png", rec.deformation, r_def))
    written.append(write_png16(out / "displacement.png", rec.displacement, r_disp))
    written.append(write_png8(out / "overlay.png", recon.overlay(rec, photo_region)))
    written.append(write_png8(out / "turntable.png", recon.turntable(rec)))
    meta = {
        "photo": None if photo is None else str(Path(photo).resolve()),
        "checkpoint": recon.checkpoint,
        "precision": recon.precision,
        "refine": _refine_record(recon, rec),
        "fit": _fit_record(recon, rec),
        "texture_fit": _settings_record(
            recon.texture_fit if rec.texture_fitted is not None else None,
            rec.texture_fit_objective,
        ),
        "multiview": multiview,
        "units": "mm",
        "pose": {
            "convention": "posed = R @ p + t (canonical model frame -> base camera world)",
            "R": rec.rotation.tolist(),
            "t": rec.translation.tolist(),
        },
        "morphable_model": recon.model.name,
        "deformation_png_range_mm": r_def,
        "displacement_png_range_mm": r_disp,
        "png16_mapping": "value = (png / 65535 * 2 - 1) * range",
        "detail_vertices": len(m2.vertices),
    }
    nme = recon.landmark_nme(rec)
    if nme is not None:
        meta["landmark_nme"] = {"convention": LANDMARK_NME_CONVENTION, "value": nme}
    if crop_transform is not None:
        meta["crop_transform"] = {
            "convention": "p_crop224 = scale * p_photo + translation",
            "scale": float(crop_transform.scale),
            "translation": [float(x) for x in crop_transform.translation],
        }
    if frame is not None:
        meta["photo_frame"] = frame.as_json()
    if inputs_sha256 is not None:
        meta["inputs_sha256"] = inputs_sha256
    tmp = out / f"reconstruction.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / "reconstruction.json")
    written.append(out / "reconstruction.json")
    return written


def find_photos(inputs: list[str | Path]) -> list[Path]:
    """Photo files among ``inputs`` (folders are searched recursively), in order, no duplicates.

    Raises InputFileError for an input that does not exist or a folder without photos.
    """
    return find_photos_and_repeats(inputs)[0]


def find_photos_and_repeats(inputs: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(photos, repeats)``: :func:`find_photos`'s photos, and the files given again (the same
    file named twice, or found again in a folder given too) that it drops.

    Raises InputFileError for the first input that does not exist or folder without photos."""
    found = find_photo_inputs(inputs)
    if found.missing:
        path, why = found.missing[0]
        raise InputFileError(path, why)
    return found.photos, found.repeats


@dataclass
class PhotoInputs:
    """What :func:`find_photo_inputs` found among a command line's photos and folders."""

    photos: list[Path]
    """Photo files, in order, each once."""
    repeats: list[Path]
    """Files given again (the same file named twice, or found again in a folder given too)."""
    missing: list[tuple[Path, str]]
    """Inputs that are no photo: ``(path, why)`` (no such file or folder, a folder without
    photos, a broken link, a photo of a format this Pillow cannot decode)."""


def find_photo_inputs(inputs: list[str | Path], out: str | Path | None = None) -> PhotoInputs:
    """Photo files among ``inputs`` (folders searched recursively, hidden names skipped), the
    repeats dropped, and the inputs that are not there, so that a batch can go on without them
    and say so. A folder search leaves out what runs wrote, which are no photos to reconstruct:
    any folder holding a reconstruction (its ``reconstruction.json``: the overlays and maps),
    and the run's own files (:data:`RESERVED_NAMES`: a multi-view run's shared texture and
    preview) beside them, in the output folder ``out`` or in a folder holding a
    ``multiview.json``. The photos in ``out`` or below it are found as anywhere else (``--out
    .`` over a folder of photos, or the photos' own folder)."""
    from facehd.align import is_photo_file, unreadable_photo

    own = None if out is None else Path(os.path.abspath(out))

    def is_input(q: Path, top: Path) -> bool:
        if not is_photo_file(q):
            return False
        if any(part.startswith(".") for part in q.relative_to(top).parts):
            return False
        if (q.parent / "reconstruction.json").is_file():
            return False
        if q.name.lower() in RESERVED_NAMES:
            where = Path(os.path.abspath(q.parent))
            return not (where == own or (where / "multiview.json").is_file())
        return True

    found: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            sub = sorted(q for q in p.rglob("*") if is_input(q, p))
            if not sub:
                missing.append((p, "folder holds no photo"))
            found += sub
        elif p.is_file() or p.is_symlink():  # a broken link is said to be one, below
            found.append(p)
        else:
            missing.append((p, "no such photo or folder"))
    # a broken link or a HEIC photo without a decoder is said so, and takes no output folder
    # name from a photo of the same name that can be read (an iPhone's IMG_1234.HEIC and .JPG)
    unreadable = [(p, why) for p in found if (why := unreadable_photo(p)) is not None]
    missing += unreadable
    left_out = {p for p, _ in unreadable}
    found = [p for p in found if p not in left_out]
    seen: set[Path] = set()
    photos, repeats = [], []
    for p in found:
        key = p.resolve()
        (repeats if key in seen else photos).append(p)
        seen.add(key)
    return PhotoInputs(photos, repeats, missing)


@dataclass
class PhotoResult:
    """Outcome of one photo of :func:`reconstruct_photos`."""

    photo: Path
    folder: Path | None
    error: str | None
    faces_found: int | None = None
    """Faces found in the photo, of which the largest, most central was reconstructed (None:
    not detected, or the landmarks came from a ``.pts`` file)."""
    kept: bool = False
    """The folder held this photo's reconstruction from the same inputs already, and was
    kept (:func:`done_before`)."""
    crop_scale: float | None = None
    """Pixels of the 224 crop per photo pixel (``crop_transform.scale`` in
    ``reconstruction.json``; None when not known)."""
    landmark_nme: float | None = None
    """How far M1 lies from the photo's landmarks (:meth:`Reconstructor.landmark_nme`,
    ``landmark_nme`` in ``reconstruction.json``; None when not known)."""
    landmark_spread: float | None = None
    """How surely the detector placed the landmarks (:attr:`PhotoFrame.landmark_spread`; None:
    given, or not known)."""


def output_names(photos: list[Path], out: str | Path | None = None) -> list[str]:
    """One output folder name per photo: its stem, ``<stem>_2``, ``<stem>_3`` ... for repeats.

    With ``out`` (a folder earlier runs may have written), a photo done there before (by
    ``photos.csv``) gets its folder again, and a name is not given to another photo when an
    earlier run's photo holds it or something not in the index (a file, a folder) lies there:
    a later run never writes over another photo's reconstruction.
    """
    earlier = _read_index(Path(out)) if out is not None else {}
    owner = {row.output: photo for photo, row in earlier.items() if row.output}
    used: set[str] = set()
    names = []
    for path in photos:
        key = photo_key(path)
        mine = earlier[key].output if key in earlier else ""
        if mine and mine not in used:
            name = mine
        else:
            name, n = path.stem, 1
            while (
                name in used
                or name.lower() in RESERVED_NAMES
                or owner.get(name, key) != key
                or (out is not None and name not in owner and (Path(out) / name).exists())
            ):
                n += 1
                name = f"{path.stem}_{n}"
        used.add(name)
        names.append(name)
    return names


def photo_folder_names(
    photos: list[Path], out: str | Path, names: Sequence[str] | None = None
) -> list[str]:
    """``names`` if given, else :func:`output_names` of ``photos`` in ``out``.

    A caller that has shown the names (``facehd reconstruct`` says which photos get another
    folder than their stem) passes them on, so they are worked out once and the folders are
    the ones it showed. They must be :func:`output_names`' for these photos and folder, worked
    out while holding :func:`output_lock` (the lock this run holds too).

    Raises
    ------
    ValueError
        ``names`` does not give one name per photo.
    """
    if names is None:
        return output_names(photos, out)
    if len(names) != len(photos):
        raise ValueError(f"{len(names)} folder names given for {len(photos)} photos")
    return list(names)


#: The files a multi-view run writes beside its views' folders.
SHARED_FILES = (
    "shared.obj",
    "shared.mtl",
    "shared_texture.png",
    "shared_turntable.png",
    "multiview.json",
)

#: Names in an output folder that belong to the run itself, never to a photo's folder.
RESERVED_NAMES = frozenset({"photos.csv", *SHARED_FILES})


def load_for_photos(
    checkpoint: str | Path,
    *,
    base_texture: bool = False,
    precision: str = "float32",
    deretouch: str | Path | None = None,
    bfm_path: str | Path | None = None,
    uv_path: str | Path | None = None,
    landmarks: str = "auto",
    loaded: Any = None,
    refine: RefineConfig | None = None,
    fit: MultiViewConfig | None = None,
    texture_fit: TextureFitConfig | None = None,
) -> Reconstructor:
    """The :class:`Reconstructor` of a photo run (:func:`reconstruct_photos` and the
    multi-view fit): ``checkpoint`` loaded with these settings, ``landmarks``, ``refine`` and
    ``fit`` set, then ``loaded(recon)`` called when given."""
    recon = Reconstructor.load(
        checkpoint,
        base_texture=base_texture,
        precision=precision,
        deretouch=deretouch,
        bfm_path=bfm_path,
        uv_path=uv_path,
    )
    recon.landmarks = landmarks
    recon.refine = refine
    recon.fit = fit
    recon.texture_fit = texture_fit
    if loaded is not None:
        loaded(recon)
    return recon


def reconstruct_photos(
    photos: list[Path],
    checkpoint: str | Path,
    out: str | Path,
    *,
    deretouch: str | Path | None = None,
    bfm_path: str | Path | None = None,
    uv_path: str | Path | None = None,
    progress: Any = None,
    base_texture: bool = False,
    precision: str = "float32",
    landmarks: str = "auto",
    loaded: Any = None,
    missing: Sequence[tuple[Path, str]] = (),
    names: Sequence[str] | None = None,
    refine: RefineConfig | None = None,
    fit: MultiViewConfig | None = None,
    redo: bool = False,
    texture_fit: TextureFitConfig | None = None,
) -> list[PhotoResult]:
    """Reconstruct every photo into ``out/<name>/`` (:func:`output_names`); a photo that fails
    (unreadable, no face, its results not writable) is reported and the others continue.
    ``base_texture``, ``precision``, ``landmarks``, ``refine``, ``fit``, ``texture_fit``: see
    :class:`Reconstructor`;
    ``loaded(recon)`` is called once the checkpoint is loaded. ``missing``: inputs that are not
    there (:attr:`PhotoInputs.missing`), reported as failed first (:func:`missing_results`).
    ``names``: the folder names when the caller has them already (:func:`photo_folder_names`).

    A photo whose folder already holds its reconstruction from the same inputs (the same
    :func:`photo_inputs_sha256`: photo, landmark file, model files and settings) is kept, not
    made again (``PhotoResult.kept``), so an interrupted run continues where it stopped;
    ``redo`` makes every photo again.

    A folder holding a multi-view fit (``multiview.json``) is refused: its views are one shared
    face, and a single-photo reconstruction written over one of them would be listed as a view
    of that fit."""
    _refuse_multiview_folder(Path(out))
    recon = load_for_photos(
        checkpoint,
        base_texture=base_texture,
        precision=precision,
        deretouch=deretouch,
        bfm_path=bfm_path,
        uv_path=uv_path,
        landmarks=landmarks,
        loaded=loaded,
        refine=refine,
        fit=fit,
        texture_fit=texture_fit,
    )
    settings = run_settings(recon, deretouch=deretouch, bfm_path=bfm_path, uv_path=uv_path)
    with output_lock(out) as out:
        clear_interrupted_writes(out)
        results = missing_results(missing)
        for path, stem in zip(photos, photo_folder_names(photos, out, names), strict=True):
            try:
                check_name(path)
                key = photo_inputs_sha256(settings, path, recon.landmarks)
                done = None if redo else done_before(path, out / stem, key)
                if done is not None:
                    results.append(done)
                else:
                    rec, aligned, frame = recon.run_photo_framed(path)
                    results.append(
                        write_photo_result(recon, rec, aligned, path, out / stem, frame, key)
                    )
            except (FacehdError, ValueError, OSError) as exc:
                remove_earlier_result(out, stem)
                results.append(PhotoResult(path, None, _said(exc, path)))
            write_photo_index(out, results)
            if progress is not None:
                progress(path)
    return results


def _refuse_multiview_folder(out: Path) -> None:
    if (out / "multiview.json").is_file():
        raise FacehdError(
            f"{out} holds a multi-view fit (multiview.json): its views are one shared face. "
            "Write single-photo reconstructions to another --out, or fit the set again there "
            "with --multiview"
        )


def run_settings(
    recon: Reconstructor,
    *,
    deretouch: str | Path | None = None,
    bfm_path: str | Path | None = None,
    uv_path: str | Path | None = None,
) -> dict[str, Any]:
    """What every photo's reconstruction of a run depends on besides the photo: the SHA-256 of
    the model files (paths left out: the same files elsewhere make the same reconstructions)
    and the settings of ``recon``."""
    import dataclasses

    from models.config import config_to_dict

    files = {"checkpoint": recon.checkpoint, "deretouch": deretouch, "bfm": bfm_path}
    out = files_sha256({**files, "uv": uv_path})
    out.update(
        base_texture=recon.base_texture,
        precision=recon.precision,
        landmarks=recon.landmarks,
        refine=None if recon.refine is None else dataclasses.asdict(recon.refine),
        fit=None if recon.fit is None else config_to_dict(recon.fit),
    )
    if recon.texture_fit is not None:  # absent when off: earlier runs' folders stay current
        out["texture_fit"] = dataclasses.asdict(recon.texture_fit)
    return out


def files_sha256(files: dict[str, str | Path | None]) -> dict[str, Any]:
    """``{"<role>_sha256": SHA-256}`` of the model files given (``None``: not given, left out),
    by content, not path: the same files elsewhere make the same reconstructions."""
    from facehd.h5io import file_sha256

    return {f"{k}_sha256": file_sha256(v) for k, v in files.items() if v is not None}


def photo_inputs_sha256(settings: dict[str, Any], photo: Path, landmarks: str) -> str:
    """SHA-256 of what one photo's reconstruction is made from: the run's ``settings``
    (:func:`run_settings`), the photo's bytes and, when its landmarks come from a ``.pts``
    file (``landmarks`` mode), that file's bytes."""
    import hashlib

    from facehd.detect import given_landmarks
    from facehd.h5io import file_sha256

    pts = given_landmarks(photo, landmarks)
    record = {
        "settings": settings,
        "photo_sha256": file_sha256(photo),
        "landmarks_sha256": None if pts is None else file_sha256(pts),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


#: The files every single-photo reconstruction folder holds (:func:`write_reconstruction`).
RESULT_FILES = (
    "texture.png",
    "coarse.obj",
    "mid.obj",
    "detail.obj",
    "deformation.npy",
    "displacement.npy",
    "deformation.png",
    "displacement.png",
    "overlay.png",
    "turntable.png",
    "reconstruction.json",
)


def done_before(photo: Path, folder: Path, inputs_sha256: str) -> PhotoResult | None:
    """The result of ``photo`` when ``folder`` already holds its reconstruction made from the
    same inputs (``inputs_sha256`` recorded in its ``reconstruction.json``, every file there);
    None otherwise. A folder is swapped in whole once written, so one that holds its
    ``reconstruction.json`` is complete."""
    try:
        meta = json.loads((folder / "reconstruction.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("inputs_sha256") != inputs_sha256:
        return None
    if meta.get("photo") != str(photo.resolve()):
        return None
    if not all((folder / name).is_file() for name in RESULT_FILES):
        return None
    if meta.get("texture_fit") and not (folder / "texture_fitted.png").is_file():
        return None
    frame = meta.get("photo_frame")
    found = frame.get("faces_found") if isinstance(frame, dict) else None
    spread = spread_value(frame.get("landmark_spread")) if isinstance(frame, dict) else None
    crop = meta.get("crop_transform")
    scale = crop.get("scale") if isinstance(crop, dict) else None
    nme = meta.get("landmark_nme")
    nme = nme.get("value") if isinstance(nme, dict) else None
    return PhotoResult(
        photo,
        folder,
        None,
        found if isinstance(found, int) else None,
        kept=True,
        crop_scale=float(scale) if isinstance(scale, (int, float)) else None,
        landmark_nme=float(nme) if isinstance(nme, (int, float)) else None,
        landmark_spread=spread,
    )


def check_name(path: Path) -> None:
    """Refuse a photo whose file name is not valid UTF-8 (its results could not be listed)."""
    if (why := utf8_problem(path)) is not None:
        raise InputFileError(printable(path), why)


_HELD: set[str] = set()


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Check the output folder (:func:`facehd.errors.check_output_folder`) and hold it for this
    run (``OUT/.reconstruct.lock``, :func:`facehd.csvtext.locked`), or refuse: two runs into
    one folder would give two photos one folder name and drop each other's rows. Re-entrant
    within a process (the command takes it around the library call that takes it too)."""
    from facehd.csvtext import LockHeld, locked

    out = check_output_folder(out, "reconstructions")
    key = os.path.abspath(out)
    if key in _HELD:
        yield out
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(out / "reconstruct", wait=False))
        except LockHeld as held:
            raise FacehdError(
                f"{out}: another facehd reconstruct is writing into this folder "
                f"({held.holder}); wait for it to end, or choose another --out"
            ) from None
        _HELD.add(key)
        try:
            yield out
        finally:
            _HELD.discard(key)


def missing_results(missing: Sequence[tuple[Path, str]]) -> list[PhotoResult]:
    """A failed :class:`PhotoResult` per input that is not there (``(path, why)``)."""
    return [PhotoResult(Path(path), None, f"{printable(path)}: {why}") for path, why in missing]


def _said(exc: BaseException, path: Path) -> str:
    """An error's message, with the photo named when it does not name it (a file system error
    on the output names its own path)."""
    text = str(exc) if not isinstance(exc, OSError) else f"writing its results: {exc}"
    text = printable(text)
    return text if printable(path) in text else f"{printable(path)}: {text}"


def remove_earlier_result(out: Path, name: str) -> None:
    """Remove ``out/name`` when an earlier run wrote it for the photo that has just failed: it
    would otherwise stand beside the failure, an older file's reconstruction under its name."""
    folder = out / name
    if (folder / "reconstruction.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _aside(folder: Path, kind: str) -> Path:
    """The hidden sibling of ``folder`` that :func:`write_photo_result` writes a new result into
    (``kind`` ``tmp``) or moves the earlier one to (``old``), named with this process's id;
    :data:`_PARTIAL` reads the name back."""
    return folder.with_name(f".{folder.name}.{kind}{os.getpid()}")


_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)(?P<pid>\d+)$")


def clear_interrupted_writes(out: Path) -> list[Path]:
    """Tidy the hidden folders a killed run of :func:`write_photo_result` left in ``out``
    (named with its process id, which a later run does not share): a new result being written
    (``.<name>.tmp<pid>``) is removed; an earlier result moved aside (``.<name>.old<pid>``) is put
    back where the swap did not complete (no ``<name>``), else removed. Folders of processes
    still running (another reconstruct into ``out``) are left. Returns what was removed or put
    back."""
    done = []
    for entry in sorted(out.iterdir()) if out.is_dir() else []:
        m = _PARTIAL.match(entry.name)
        if m is None or not entry.is_dir() or _pid_alive(int(m["pid"])):
            continue
        target = out / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.replace(entry, target)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        done.append(entry)
    return done


def write_photo_result(
    recon: Reconstructor,
    rec: Reconstruction,
    aligned: Any,
    photo: Path,
    folder: Path,
    frame: PhotoFrame | None = None,
    inputs_sha256: str | None = None,
    multiview: dict[str, Any] | None = None,
) -> PhotoResult:
    """Write one photo's reconstruction into ``folder`` (:func:`write_reconstruction`, the
    overlay on its aligned HD crop) and say so.

    The files go to a hidden sibling folder first, which then takes ``folder``'s place: an
    interrupted write leaves an earlier run's folder whole, never old and new files mixed."""
    tmp = _aside(folder, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_reconstruction(
            recon,
            rec,
            tmp,
            photo_region=aligned.image_hd,
            crop_transform=aligned.transform,
            photo=photo,
            frame=frame,
            inputs_sha256=inputs_sha256,
            multiview=multiview,
        )
        old = _aside(folder, "old")
        if folder.is_dir():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PhotoResult(
        photo,
        folder,
        None,
        None if frame is None else frame.faces_found,
        crop_scale=float(aligned.transform.scale),
        landmark_nme=recon.landmark_nme(rec),
        landmark_spread=None if frame is None else frame.landmark_spread,
    )


@dataclass(frozen=True)
class _IndexRow:
    """A ``photos.csv`` row: where a photo's reconstruction went, or why it failed."""

    photo: str
    output: str
    error: str
    landmark_nme: str = ""
    """M1's distance from the photo's landmarks (``landmark_nme`` of its
    ``reconstruction.json``), empty for a failed photo."""
    landmark_spread: str = ""
    """How surely the detector placed the landmarks (``photo_frame.landmark_spread`` of its
    ``reconstruction.json``), empty for a failed photo and for landmarks given."""


def photo_key(photo: str | Path) -> str:
    """How ``photos.csv`` (and ``multiview.json``) name a photo: its whole path, as text that
    no other path gives (:func:`facehd.errors.printable_exact`)."""
    from facehd.errors import printable_exact

    return printable_exact(Path(photo).resolve())


def write_photo_index(
    out: str | Path, results: list[PhotoResult], forget: Collection[str] = ()
) -> Path:
    """Write ``out/photos.csv``: one row per photo (its file, its output folder relative to
    ``out``, or the error); the rows of earlier runs into the same folder are kept, except a
    photo done again and one whose output folder this run wrote over. A photo that is no longer
    there (a path mistyped or moved) keeps the reconstruction an earlier run made of it: the
    failure is only written where it had none. ``forget``: keys (whole photo paths) of earlier
    rows to drop (the views of a multi-view fit that is replaced)."""

    from facehd.csvtext import write_rows

    out = Path(out)
    earlier = _read_index(out)
    rows = {}
    for r in results:
        key = photo_key(r.photo)
        gone = r.folder is None and not r.photo.exists() and key not in forget
        if gone and earlier.get(key, _NO_ROW).output:
            continue
        rows[key] = _IndexRow(
            key,
            "" if r.folder is None else r.folder.relative_to(out).as_posix(),
            r.error or "",
            "" if r.landmark_nme is None or r.folder is None else f"{r.landmark_nme:.4f}",
            "" if r.landmark_spread is None or r.folder is None else spread_text(r.landmark_spread),
        )
    written = {r.output for r in rows.values() if r.output}
    for key, old in earlier.items():
        if key not in rows and old.output not in written and key not in forget:
            rows[key] = old
    return write_rows(out / INDEX_NAME, [rows[k] for k in sorted(rows)], _IndexRow)


#: The index of an output folder of ``facehd reconstruct``.
INDEX_NAME = "photos.csv"
_NO_ROW = _IndexRow("", "", "")


def _read_index(out: Path) -> dict[str, _IndexRow]:
    """The rows of ``out/photos.csv`` by photo (none when it does not exist)."""
    import csv

    path = out / INDEX_NAME
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return {
            r["photo"]: _IndexRow(
                r["photo"],
                r.get("output") or "",
                r.get("error") or "",
                r.get("landmark_nme") or "",
                r.get("landmark_spread") or "",
            )
            for r in csv.DictReader(fh)
            if r.get("photo")
        }

"""HRN as a benchmark method (``facehd bench --method hrn``).

:class:`HRNMethod` follows :class:`benchmarks.methods.ReconstructionMethod`: one image in, the
detailed mesh M2 out (dense, with UVs, canonical model frame, mm) with NoW's 7 landmarks taken
on M1 (the model's landmark vertices; M2 only adds sub-millimetre detail). With several images
(a multi-view set) the views are fitted jointly (MV-HRN, :mod:`models.multiview`) and the first
view's mesh is returned: it carries the shared identity and deformation map.

For FaceScape, :meth:`HRNMethod.reconstruct_image_aligned` gives M2 in the photo's
image-aligned frame (:func:`image_aligned_vertices`), the format of the official generic loader.

Registration: the factory :func:`make_method` is the entry point ``hrn`` of the group
``facehd.methods``; the checkpoint comes from the environment variable
``FACEHD_HRN_CHECKPOINT`` (and ``FACEHD_HRN_DERETOUCH``, ``FACEHD_BFM``, ``FACEHD_BFM_UV`` for
the official checkpoint), which ``facehd bench --checkpoint C`` sets, and
``FACEHD_HRN_PRECISION`` (``facehd bench --precision``; see
:class:`models.reconstruct.Reconstructor`) and ``FACEHD_HRN_REFINE_STEPS`` (``facehd bench
--refine-steps``: each image's base coefficients refined on it, :mod:`models.refine`; a
multi-view set's joint MV-HRN fit starts from its views' coefficients refined with one shared
identity) and ``FACEHD_HRN_FIT_ITERATIONS`` (``facehd bench --fit-iterations``: each single
image then fitted alone on MV-HRN's objective, :func:`models.multiview.single_view_config`,
:meth:`models.reconstruct.Reconstructor.run_crops_fitted`; multi-view sets keep their joint fit;
``FACEHD_HRN_FIT_DEFORMATION_START``, ``facehd bench --fit-deformation-start``, where its
deformation map starts).
:meth:`HRNMethod.describe` gives the hashes of these files, the precision, the refinement and
the fit:
``facehd bench`` refuses to add predictions of another checkpoint or setting to a folder of
predictions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facehd.landmarks import NOW7_FROM_68

__all__ = [
    "ENV_CHECKPOINT",
    "ENV_FIT_DEFORMATION_START",
    "ENV_FIT_ITERATIONS",
    "ENV_PRECISION",
    "ENV_REFINE_STEPS",
    "HRNMethod",
    "image_aligned_vertices",
    "make_method",
]

ENV_CHECKPOINT = "FACEHD_HRN_CHECKPOINT"
ENV_PRECISION = "FACEHD_HRN_PRECISION"
ENV_REFINE_STEPS = "FACEHD_HRN_REFINE_STEPS"
ENV_FIT_ITERATIONS = "FACEHD_HRN_FIT_ITERATIONS"
ENV_FIT_DEFORMATION_START = "FACEHD_HRN_FIT_DEFORMATION_START"
ENV_DERETOUCH = "FACEHD_HRN_DERETOUCH"
ENV_BFM = "FACEHD_BFM"
ENV_BFM_UV = "FACEHD_BFM_UV"


class HRNMethod:
    """HRN reconstruction of benchmark images.

    Parameters
    ----------
    checkpoint : a facehd ``model.pt`` / training checkpoint, or the official HRN checkpoint.
    deretouch, bfm_path, uv_path : see :func:`models.reconstruct.load_system`.
    multiview : schedule and weights of MV-HRN for multi-view sets (default
        :class:`models.multiview.MultiViewConfig`).
    precision : of the detail networks, ``float32`` or ``bfloat16`` (see
        :class:`models.reconstruct.Reconstructor`).
    refine : refine each image's base coefficients (a :class:`models.refine.RefineConfig`;
        None: the networks alone); a multi-view set's joint fit starts from its refined views.
    fit : fit each single image alone on MV-HRN's objective (a
        :class:`models.multiview.MultiViewConfig`; None: not fitted); multi-view sets keep their
        joint fit (``multiview``).
    """

    name = "hrn"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        deretouch: str | Path | None = None,
        bfm_path: str | Path | None = None,
        uv_path: str | Path | None = None,
        multiview: Any = None,
        precision: str = "float32",
        refine: Any = None,
        fit: Any = None,
    ) -> None:
        from models.multiview import MultiViewConfig
        from models.reconstruct import Reconstructor

        self.multiview = multiview or MultiViewConfig()
        self.recon = Reconstructor.load(
            checkpoint,
            deretouch=deretouch,
            bfm_path=bfm_path,
            uv_path=uv_path,
            precision=precision,
        )
        self.recon.refine = refine
        self.recon.fit = fit
        self._files = {
            "checkpoint": checkpoint,
            "deretouch": deretouch,
            "bfm": bfm_path,
            "uv": uv_path,
        }

    def describe(self) -> dict[str, Any]:
        """What the predictions depend on: the SHA-256 of the checkpoint (and of the
        de-retouching checkpoint, the BFM and its UV file when given), the precision, the
        refinement (when on) and the MV-HRN settings. Paths are left out: the same files
        elsewhere make the same meshes."""
        import dataclasses

        from models.config import config_to_dict
        from models.reconstruct import files_sha256

        out = files_sha256(self._files)
        out["precision"] = self.recon.precision
        if self.recon.refine is not None:  # absent without, as before the option existed
            # multi-view sets start from the views refined with one identity (before: from the
            # analyzer's)
            out["refine"] = {**dataclasses.asdict(self.recon.refine), "multiview": "shared"}
        if self.recon.fit is not None:  # absent without, as before the option existed
            out["fit"] = {**config_to_dict(self.recon.fit), "images": "single"}
        if dataclasses.is_dataclass(self.multiview):
            out["multiview"] = config_to_dict(self.multiview)
        return out

    def reconstruct(self, images: list[Path]):
        """One image, or the views of a multi-view set (see the module docstring) ->
        ``MethodOutput``."""
        from benchmarks.methods import MethodOutput

        if not images:
            raise ValueError("HRNMethod.reconstruct: no image given")
        if len(images) == 1:
            rec, _ = self.recon.run_photo(images[0])
        else:
            from models.multiview import fit_multiview

            views = [self.recon.prepare_view(path) for path in images]
            crops = np.stack([aligned.image for aligned, _, _ in views])
            masks = np.stack([mask for _, mask, _ in views])
            landmarks68 = np.stack([lm for _, _, lm in views])
            start = None
            if self.recon.refine is not None:  # the joint fit starts from the refined views
                start = self.recon.refined_coefficients(
                    crops, masks, landmarks68, self.recon.refine, shared_identity=True
                )[0]
            fitted = fit_multiview(
                self.recon, crops, masks, landmarks68, self.multiview, coefficients=start
            )
            rec = fitted.views[0]
        mesh = self.recon.detail_mesh(rec)
        lm68 = np.array(self.recon.model.landmarks68)
        landmarks7 = rec.m1[lm68[list(NOW7_FROM_68)]]
        return MethodOutput(mesh=mesh, landmarks7=landmarks7)

    def reconstruct_template(self, image: Path):
        """One photo -> ``MethodOutput`` with M1 on the model's own topology (canonical frame,
        mm), the mesh REALY scores: its keypoints come from one file per topology, which the
        dense M2 grid has none of."""
        from benchmarks.methods import MethodOutput

        rec, _ = self.recon.run_photo(image)
        return MethodOutput(mesh=self.recon.mesh(rec.m1))

    def template_keypoints(self):
        """REALY's topology files for :meth:`reconstruct_template`'s meshes, as ``(name,
        entries, template)``: facehd-synth's are built in; for the BFM, None (pass the official
        repository's ``data/Deep3D.txt``, made for the BFM's front face, with ``--topology``)."""
        if self.recon.model.name != "facehd-synth":
            return None
        from benchmarks.synthetic import synth_realy_topology

        entries, template = synth_realy_topology(self.recon.model)
        return "facehd-synth", entries, template

    def reconstruct_image_aligned(self, image: Path):
        """One photo -> ``MethodOutput`` with M2 in the photo's image-aligned frame
        (:func:`image_aligned_vertices`; FaceScape's format), without landmarks."""
        from benchmarks.methods import MethodOutput
        from facehd.align import load_photo
        from facehd.mesh import Mesh

        photo = load_photo(image)  # read once: its size places the mesh
        rec, aligned, frame = self.recon.run_photo_framed(image, photo)
        turn = frame.turn
        mesh = self.recon.detail_mesh(rec)
        verts = image_aligned_vertices(
            mesh.vertices,
            rec.rotation,
            rec.translation,
            aligned.transform,
            photo.image.shape[:2],
            turn=turn,
        )
        return MethodOutput(mesh=Mesh(verts, mesh.faces, mesh.uvs))


def image_aligned_vertices(
    vertices: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    crop: Any,
    image_hw: tuple[int, int],
    size: int = 256,
    *,
    turn: int = 0,
) -> np.ndarray:
    """Canonical vertices of a reconstruction -> the photo's image-aligned frame.

    The format of FaceScape's generic loader (PRNet, 3DDFA-V2): ``x`` and ``y`` place each
    vertex where the reconstruction projects it in the photo, in pixels of the photo resized to
    ``size`` wide, measured from its left and bottom edges (``y`` up); ``z`` is the depth towards
    the viewer in the same pixels, at the face's mean-depth magnification (any offset).

    Parameters
    ----------
    vertices : (V, 3) canonical vertices, mm.
    rotation, translation : the reconstruction's pose (``posed = R p + t``, mm), in the base
        model's camera (:func:`facehd.render.hrn_camera`).
    crop : the 224 crop's :class:`facehd.align.CropTransform` (``p_crop = scale p_photo + t``).
    image_hw : the photo's (height, width).
    size : side of the benchmark's image (FaceScape: 256).
    turn : quarter turns the photo was turned upright by before the crop (``np.rot90(photo,
        turn)``, :meth:`facehd.detect.FaceDetector.detect_upright`): the crop's pixels are
        mapped back to the photo as given.
    """
    import torch

    from facehd.errors import DegenerateInputError
    from facehd.render import hrn_camera

    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"image_aligned_vertices: expected (V, 3) vertices, got {v.shape}")
    posed = v @ np.asarray(rotation, dtype=np.float64).T + np.asarray(translation)
    camera = hrn_camera(dtype=torch.float64)
    cam = camera.world_to_camera(torch.from_numpy(posed))[0]
    depth = cam[:, 2].numpy()
    if not np.all(depth > 0):
        raise DegenerateInputError("the reconstruction reaches behind the camera")
    pix = camera.camera_to_pixels(cam[None])[0].numpy()
    scale = float(crop.scale)
    photo = (pix - np.asarray(crop.translation, dtype=np.float64)) / scale  # pixel centres
    if turn % 4:
        from facehd.detect import unrotate_points

        photo = unrotate_points(photo, turn, image_hw)
    focal = float(camera.K[0, 0, 0])
    towards = (depth.mean() - depth) * focal / depth.mean() / scale
    h, w = image_hw
    k = size / float(w)  # one scale for all three axes (FaceScape's photos are square)
    return np.stack([(photo[:, 0] + 0.5) * k, (h - photo[:, 1] - 0.5) * k, towards * k], axis=1)


def make_method() -> HRNMethod:
    """Entry-point factory: an :class:`HRNMethod` on ``$FACEHD_HRN_CHECKPOINT``."""
    path = os.environ.get(ENV_CHECKPOINT)
    if not path:
        raise ValueError(
            f"the hrn method needs a checkpoint: pass --checkpoint to facehd bench or set "
            f"{ENV_CHECKPOINT}"
        )
    return HRNMethod(
        path,
        deretouch=os.environ.get(ENV_DERETOUCH) or None,
        bfm_path=os.environ.get(ENV_BFM) or None,
        uv_path=os.environ.get(ENV_BFM_UV) or None,
        precision=os.environ.get(ENV_PRECISION) or "float32",
        refine=_refine_from_env(),
        fit=_fit_from_env(),
    )


def _refine_from_env() -> Any:
    """The refinement ``$FACEHD_HRN_REFINE_STEPS`` asks for (unset, empty or 0: none)."""
    from models.refine import RefineConfig

    steps = _count_from_env(ENV_REFINE_STEPS)
    return RefineConfig(steps=steps) if steps else None


def _fit_from_env() -> Any:
    """The per-image fit ``$FACEHD_HRN_FIT_ITERATIONS`` asks for (unset, empty or 0: none),
    its deformation map starting as ``$FACEHD_HRN_FIT_DEFORMATION_START`` says (unset or empty:
    the network's)."""
    from models.multiview import single_view_config

    iterations = _count_from_env(ENV_FIT_ITERATIONS)
    start = os.environ.get(ENV_FIT_DEFORMATION_START) or "network"
    if not iterations:
        if start != "network":
            raise ValueError(f"{ENV_FIT_DEFORMATION_START} is set without a per-image fit")
        return None
    try:
        return single_view_config(iterations, start)
    except ValueError as exc:
        raise ValueError(f"{ENV_FIT_DEFORMATION_START}: {exc}") from None


def _count_from_env(name: str) -> int:
    """The whole number >= 0 in the environment variable ``name`` (unset or empty: 0)."""
    value = os.environ.get(name) or "0"
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if count < 0:
        raise ValueError(f"{name} must be >= 0, got {count}")
    return count

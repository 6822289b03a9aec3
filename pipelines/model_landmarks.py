"""Scan landmarks read off the morphable model fitted to the scan, where the model describes it.

The face mesh on renders of a scan places a face's corners a millimetre or more off, and on
geometry alone (a shaded scan) it barely follows the width of the eyes. A morphable model carries
its own landmark vertices: where the model, fitted to the scan from the detected points, lies on
the scan's surface all over the face, those vertices mark the same anatomy on this face as on
every face the model describes, whatever the renders showed. Where it does not (a real face the
model cannot reproduce: ``facehd-synth`` puts a real scan's eye corners 20-39 mm off), its
landmark vertices mean nothing and the detection stands.

:class:`ModelLandmarkCheck` is the ``check`` of :class:`facehd.scan_landmarks.ScanLandmarker`
that ``facehd landmarks`` and ``facehd build-priors`` use: per accepted detection,

1. fit the model's pose and M0 (identity and expression coefficients) to the scan from the
   detected NoW-7 points: steps 1-2 of ``build-priors`` (:func:`pipelines.fitting.fit_shape`),
   on its fit region and its eyes and lids, whose shape sets the eye corners;
2. measure how well it describes the scan: the median distance from the scan's face-region
   vertices to M0 (:meth:`pipelines.fitting.ShapeFit.residuals`);
3. keep the detection when that median exceeds ``max_residual_mm`` (the model does not describe
   this face), or when the fit fails;
4. else, where the fit's last step still moved M0 (by ``refine_tolerance_mm`` or more), carry
   it on until it converges (:meth:`pipelines.fitting.ShapeFit.refined`): the few steps that
   tell whether the model describes the face leave some fits millimetres short, at the lips
   most. Keep the detection when the model's NoW-7 points then lie more than
   ``max_shift_mm`` (median) from the detected ones (the fit slid off the face); else take M0's
   68 landmark vertices, moved back to the scan's frame (the landmarker puts each on its
   closest scan point);
5. except the mouth's, where the fit's mouth went wrong: the model's 20 mouth points lie more
   than ``mouth_gap_mm`` from the detected ones (median) and off the scan's surface (median
   distance above ``mouth_off_surface_mm``: the model's lips opened where the scan's are closed,
   or the other way round). There the detected mouth points are kept.

Synthetic scans of the model itself (``facehd synth``: M0 plus mid and fine detail) lie within
0.1 mm of their M0 fit; the real scan of ``../shared/data/flame-scan`` at 0.46 mm from
``facehd-synth``'s best fit, so it keeps its detection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facehd.landmarks import NOW7_FROM_68
from facehd.mesh import Mesh
from facehd.scan_landmarks import LandmarkCheck
from pipelines.fitting import FitConfig

if TYPE_CHECKING:
    from facehd.datasets import ModelEntry

__all__ = ["MOUTH", "ModelCheckConfig", "ModelLandmarkCheck", "load_fit_model"]

#: iBUG-68's mouth points: outer lips 48-59, inner lips 60-67.
MOUTH = range(48, 68)

_MODELS: dict[tuple[str, str | None, str | None], Any] = {}


def load_fit_model(name: str, bfm_path: str | None = None, uv_path: str | None = None) -> Any:
    """The morphable model ``name`` (``facehd-synth`` or ``bfm``: its files as given, else as
    registered in ``datasets.yaml``), loaded once per process."""
    from facehd.morphable import load_model

    key = (name, bfm_path, uv_path)
    if key not in _MODELS:
        if name.strip().lower() == "bfm" and (bfm_path is None or uv_path is None):
            from facehd.datasets import load_registry

            registry = load_registry()
            entry = registry.models.get("bfm")
            if entry is not None:
                bfm_path = bfm_path or entry.files.get("model")
                uv_path = uv_path or entry.files.get("uv")
                _check_registered(entry, registry.path, (bfm_path, uv_path))
        _MODELS[key] = load_model(name, bfm_path=bfm_path, uv_path=uv_path)
    return _MODELS[key]


def _check_registered(
    entry: ModelEntry, registry: Path, paths: tuple[str | Path | None, ...]
) -> None:
    """Refuse a registered BFM file that is not there, saying where the path came from and how
    to point facehd at the files (the bare 'not found' named a path the user never gave)."""
    from facehd.errors import InputFileError

    for p in paths:
        if p is not None and p in entry.files.values() and not Path(p).is_file():
            raise InputFileError(
                p,
                f"BFM file not found, at the root of models.bfm in {registry}: set {entry.env} "
                "to the folder holding "
                + " and ".join(f.name for f in entry.files.values())
                + ", point FACEHD_DATASETS at a registry of your own, or (build-priors) pass "
                "--bfm-path and --uv-path",
            )


def _check_fit() -> FitConfig:
    # build-priors' fit made lighter where it costs little, since the check runs on every scan
    # of `facehd landmarks`: fewer points and iterations for the rigid start and the residual,
    # three Gauss-Newton steps a round for M0 instead of four. That is enough to tell whether
    # the model describes the scan (a real scan costs no more), not always to converge: the
    # scans it describes are carried on (`refine_iterations`). Not fewer points for M0: with
    # half of them, 12 scans were 1.20 mm off on average instead of 1.03 mm.
    return FitConfig(
        icp_max_points=3000, icp_max_iterations=10, m0_iterations=3, residual_max_points=10000
    )


@dataclass(frozen=True)
class ModelCheckConfig:
    """Settings of :class:`ModelLandmarkCheck`."""

    model: str = "facehd-synth"
    """The morphable model fitted (as ``facehd build-priors --model``)."""
    bfm_path: str | None = None
    """``BFM_model_front.mat`` for ``model="bfm"`` (else from ``datasets.yaml``)."""
    uv_path: str | None = None
    """The BFM's UV file for ``model="bfm"``."""
    max_residual_mm: float = 0.25
    """The model describes the scan when the median distance from the scan's face-region
    vertices to its fitted M0 is at most this, mm."""
    max_shift_mm: float = 6.0
    """Largest median distance between the model's NoW-7 points and the detected ones, mm."""
    fit: FitConfig = field(default_factory=_check_fit)
    """Parameters of the fit (steps 1-2 of :func:`pipelines.fitting.fit_scan`)."""
    refine_iterations: int = 10
    """Where the model describes the scan but its fit had not converged, the most steps each
    round of the fit is carried on for before its landmark vertices are read (0: none;
    :meth:`pipelines.fitting.ShapeFit.refined`)."""
    refine_tolerance_mm: float = 0.03
    """The fit has converged when a step moves M0 by less than this (median, mm): a fit whose
    last step moved it more is carried on, and a round carried on stops there."""
    mouth_gap_mm: float = 6.0
    """The model's mouth points (iBUG 48-67) are doubted where they lie more than this from the
    detected ones (median, mm)."""
    mouth_off_surface_mm: float = 0.3
    """... and are replaced by the detected ones where they also lie more than this from the
    scan's surface (median, mm; 0.14 on most synthetic scans, 0.4-1.4 where the fit opened a
    closed mouth or closed an open one)."""

    def __post_init__(self) -> None:
        for name in (
            "max_residual_mm",
            "max_shift_mm",
            "refine_tolerance_mm",
            "mouth_gap_mm",
            "mouth_off_surface_mm",
        ):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"ModelCheckConfig.{name} must be > 0, got {value!r}")
        if self.refine_iterations < 0:
            raise ValueError(
                f"ModelCheckConfig.refine_iterations must be >= 0, got {self.refine_iterations!r}"
            )


class ModelLandmarkCheck:
    """The check (module docstring), callable as ``check(scan_mm, landmarks68_mm)``."""

    def __init__(self, config: ModelCheckConfig | None = None) -> None:
        self.config = config or ModelCheckConfig()
        self._fit_data: Any = None

    def fit_data(self) -> tuple[Any, Any]:
        """``(fitted, scored)``: the model prepared for the fit (with its eyes and lids when
        ``fit.m0_fit_eyes``, as build-priors fits it) and for the residual (build-priors' fit
        region); made on first use."""
        if self._fit_data is None:
            from pipelines.fitting import prepare_model

            cfg = self.config
            scored = prepare_model(load_fit_model(cfg.model, cfg.bfm_path, cfg.uv_path), cfg.fit)
            self._fit_data = (scored.for_shape(cfg.fit), scored)
        return self._fit_data

    def __call__(self, scan_mm: Mesh, landmarks68_mm: np.ndarray) -> LandmarkCheck:
        from facehd.errors import DegenerateInputError
        from pipelines.fitting import FitError, fit_shape

        cfg = self.config
        md, scored = self.fit_data()
        detected = np.asarray(landmarks68_mm, dtype=np.float64)
        now7 = list(NOW7_FROM_68)
        try:
            shape = fit_shape(scan_mm, detected[now7], md, cfg.fit, threads=1)
            residual = float(np.median(shape.residuals(scan_mm, scored, cfg.fit, threads=1)))
            describes = np.isfinite(residual) and residual <= cfg.max_residual_mm
            if describes and not shape.last_step_mm < cfg.refine_tolerance_mm:
                # the model describes the scan, and the few steps that tell so stopped short of
                # where the fit converges (millimetres at the lips, at worst): it is carried on
                # before its vertices are read (the residual that decided is reported: carrying
                # on moves it by hundredths of a millimetre)
                shape = shape.refined(
                    scan_mm,
                    md,
                    cfg.fit,
                    iterations=cfg.refine_iterations,
                    tolerance_mm=cfg.refine_tolerance_mm,
                    threads=1,
                )
        except (FitError, DegenerateInputError, np.linalg.LinAlgError) as exc:
            return LandmarkCheck("detected", detail=f"the {cfg.model} fit failed ({exc})")
        if not describes:
            return LandmarkCheck(
                "detected",
                residual_mm=residual,
                detail=(
                    f"{cfg.model} fits the face {residual:.2f} mm off (median; at most "
                    f"{cfg.max_residual_mm:g} to read its landmarks): detected points kept"
                ),
            )
        points = shape.transform.inverse().apply(md.model.landmarks(shape.m0))
        shift = float(np.median(np.linalg.norm(points[now7] - detected[now7], axis=1)))
        if not np.isfinite(shift) or shift > cfg.max_shift_mm:
            return LandmarkCheck(
                "detected",
                residual_mm=residual,
                detail=(
                    f"{cfg.model}'s landmarks lie {shift:.1f} mm from the detected ones (median "
                    f"of NoW's 7; at most {cfg.max_shift_mm:g}): detected points kept"
                ),
            )
        mouth = list(MOUTH)
        gap = float(np.median(np.linalg.norm(points[mouth] - detected[mouth], axis=1)))
        if gap > cfg.mouth_gap_mm:
            from facehd.distances import SurfaceQuery

            off = SurfaceQuery(scan_mm, nthreads=1).closest(points[mouth], neighbours=False)
            off_mm = float(np.median(off.distances))
            if off_mm > cfg.mouth_off_surface_mm:
                points = points.copy()
                points[mouth] = detected[mouth]
                return LandmarkCheck(
                    f"model ({cfg.model}; mouth detected)",
                    landmarks68_mm=points,
                    residual_mm=residual,
                    detail=(
                        f"{cfg.model} fits the face {residual:.2f} mm off (median): its landmark "
                        f"vertices taken but the mouth's, which lie {gap:.1f} mm from the "
                        f"detected ones and {off_mm:.2f} mm off the scan (medians): the "
                        "detected mouth kept"
                    ),
                )
        return LandmarkCheck(
            f"model ({cfg.model})",
            landmarks68_mm=points,
            residual_mm=residual,
            detail=(
                f"{cfg.model} fits the face {residual:.2f} mm off (median): its landmark "
                f"vertices taken, {shift:.1f} mm from the detected points (median of NoW's 7)"
            ),
        )

"""Automatic 3D landmarks (iBUG-68, NoW's 7) for raw face scans in any orientation and units.

A scan is rendered from virtual cameras (:class:`ScanRenderer`: one Embree scene cast per pixel,
shaded with :func:`facehd.render.shade_sh`, on the scan's colour texture or vertex colours where
it has them), the photo face detector and face mesh (mediapipe) run on the renders, and each 2D
landmark is brought back onto the scan by casting its pixel's ray
(:meth:`facehd.distances.SurfaceQuery.cast`).
Every render fills its enclosed empty areas (holes in the scan, which would show as black blots on
the face) from the surface around them (``fill_holes``), and where its outline of the scan is
mostly the scan's cut edge (a face cropped from a scan), shows the background in the outline's
tone rather than black (``blend_cut_edges``).

Steps of :meth:`ScanLandmarker.detect`
--------------------------------------
1. **Units.** Faces wound against their neighbours are turned over
   (:func:`facehd.mesh.consistent_winding`: a scan stitched or hole-filled with mixed windings
   has vertex normals that cancel, and its shading would be noise). Stray pieces apart from the
   scan (specks, a scanner table) and unused vertices are left out
   (:func:`facehd.mesh.main_parts`): they would set its size and the search's framing; where
   the largest piece shows no face (a table under the head), the next large one is tried. The
   scan's size says its unit (:func:`infer_unit_to_mm`): the largest side of its bounding box
   must be a head's, :data:`HEAD_SIZE_MM` (80–800 mm, a face mask to head and
   shoulders); the window spans a factor 10, so at most one of mm, cm and m fits. Given units
   are checked against the same window. Everything below works in millimetres.
2. **Search.** Cameras on a Fibonacci sphere of ``search_views`` directions around the scan look
   at its centre; each low-resolution render (``search_supersample`` × ``search_supersample`` rays
   per pixel, averaged: a scan's fine noise otherwise shows as grain that can hide a face some
   50 pixels wide) is searched by mediapipe's face detector at four quarter turns (it tolerates
   about ±45° of roll; ``search_rolls`` 2 adds 45° turns). The ``search_candidates`` most confident
   detections are kept, strongest first (each goes on through steps 3–6 until the face mesh
   confirms one); below ``min_detection_score`` the scan has no face.
3. **Face frame.** The winner's eye and mouth key points, cast onto the scan, give the face's
   left, up and front directions and its size (eye distance), which scales every later view.
4. **Refinement.** A face-centred, upright, frontal render (``face_fov_mm`` wide for an adult) is
   fitted by mediapipe's 468-point face mesh, mapped to iBUG-68
   (:func:`facehd.detect.landmarks68_from_mediapipe`) and cast onto the scan; the frame is
   recomputed from those 3D landmarks, twice.
5. **Voting.** Five face-centred views (frontal, turned ``±vote_yaw_deg``, from below and a
   little from above) are fitted by the face mesh; the lips, and on a scan that shows its colours
   also the eyes, come from mediapipe's attention mesh, which refines them from their appearance
   (``attention_regions``, ``attention_regions_colour``); each view's points are the mean of
   those found on the render and on its mirror image (``mirror_views``). Back-projection uses the
   mesh's predicted depth: an affine fit maps it to camera depth; a first hit far nearer than
   predicted is an occluder (the subnasale behind a long nose tip) and the ray is followed through
   it; where no surface lies along the ray within ``occlusion_mm`` of the prediction (a hole, a
   nostril), the surface point nearest to the predicted position stands in. Each landmark is the
   per-coordinate median of its views' points, moved onto the surface; its *spread* is the median
   distance of the views' points from it. The median landmarks (nose, lip and chin midpoints) are
   then moved onto the plane of symmetry fitted to the left-right pairs (``midline``), and the
   nose tip (iBUG 30, the pronasale: the nose's most prominent point) onto the scan's most
   prominent point along the face's front direction near it (``nose_tip_reach_mm``).
6. **Checks.** The scan is rejected (:class:`ScanLandmarkError` with a ``reason``, never garbage
   landmarks) when the best detection is weak (``no-face``), the face mesh fits too few of the
   voting views, one of NoW's 7 points is a guess in every view or the views disagree on it by
   more than ``max_spread_mm``, or the confidence is below ``min_confidence`` (``unsure``), the
   face is hollow (``hollow``), or its outer eye corners are not :data:`OUTER_EYE_MM` apart
   (``units``: a scan in other units than it seems).
7. **Retries.** After a ``no-face``, ``hollow`` or ``unsure`` failure, steps 2–6 run again
   with the renders shaded by smoothed vertex normals, over each radius of
   ``retry_smoothing_mm`` in turn (:meth:`ScanRenderer.smooth_normals`): a noisy scan's normals
   otherwise show as grain that hides the face or misleads the face mesh. The first success is
   kept (its ``smoothing_mm`` says which); when every try fails, the first failure is reported.
   A scan found with its own shading is never retried, so its landmarks do not change.

Triangles are one-sided: a render hides the side the winding calls inside, so the inside of an
open face scan — a hollow mask, which detectors take for a (mirrored) face — is never seen. A
scan wound inside out shows its face only as such a hollow; the nose then points into the head
(:func:`_protrusion`), and the other side is tried; when no face shows at all, both sides.

The result's ``confidence`` in [0, 1] is ``detection score × fraction of voting views fitted ×
exp(-(median spread of NoW's 7 / spread_scale_mm)²)``.

mediapipe is the optional ``photo`` extra (``pip install 'facehd[photo]'``); the renderer, the
units logic and the geometry here work without it.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facehd.errors import FacehdError
from facehd.landmarks import NOW7_FROM_68
from facehd.mesh import Mesh, vertices_in_faces

__all__ = [
    "ATTENTION_REGIONS",
    "HEAD_SIZE_MM",
    "INCH_MM",
    "OUTER_EYE_MM",
    "TYPICAL_EYE_DISTANCE_MM",
    "UNIT_TO_MM",
    "FaceFrame",
    "LandmarkCheck",
    "ScanLandmarkConfig",
    "ScanLandmarkError",
    "ScanLandmarker",
    "ScanLandmarks",
    "ScanRenderer",
    "ViewCamera",
    "colours_vary",
    "detect_scan_landmarks",
    "draw_overlay",
    "fibonacci_directions",
    "inches_hint",
    "infer_unit_to_mm",
]

UNIT_TO_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
"""Millimetres per unit of the units a scan may be in."""

INCH_MM = 25.4
"""One inch in millimetres: a unit some scans come in, which facehd does not read (it names it)."""
HEAD_SIZE_MM: tuple[float, float] = (80.0, 800.0)
"""Accepted range ``[low, high)`` of the largest bounding-box side of a face scan, mm."""

TYPICAL_EYE_DISTANCE_MM = 63.0
"""Distance between the eye centres of an adult face, mm (scales the face-centred views)."""

OUTER_EYE_MM: tuple[float, float] = (60.0, 140.0)
"""Accepted distance between the outer eye corners (iBUG 36 and 45) of a found face, mm."""

ATTENTION_REGIONS: dict[str, tuple[int, ...]] = {
    "eyes": tuple(range(36, 48)),
    "lips": tuple(range(48, 68)),
}
"""iBUG-68 points (0-based) of the regions mediapipe's attention face mesh refines."""


class ScanLandmarkError(FacehdError):
    """Landmarks could not be found reliably on a scan; ``reason`` says why, in words.

    Attributes
    ----------
    reason : str
        Short cause: ``units``, ``no-face``, ``unsure``, ``hollow`` or ``empty``.
    detail : str
        The explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


# ------------------------------------------------------------------------------------------
# configuration and results


@dataclass
class ScanLandmarkConfig:
    """Parameters of :class:`ScanLandmarker`."""

    units: str = "auto"
    """Units of the scans: ``auto`` (from their size), ``mm``, ``cm`` or ``m``."""
    search_views: int = 24
    """Camera directions on a Fibonacci sphere tried when searching for the face."""
    search_candidates: int = 3
    """Strongest search detections (one per view) tried in turn until the face mesh confirms
    one."""
    search_rolls: int = 1
    """Turns of each search render, evenly spaced over a quarter turn, each searched at four
    quarter turns. 1 leaves a face up to 45° from upright, about the face detector's limit; 2 also
    searches each render turned by 45°, which found no more faces on the scans measured (the real
    scan under 20 random rotations, synthetic scans in random frames) and costs about 0.4 s more
    per scan."""
    search_supersample: int = 2
    """Rays per search-render pixel along each side, averaged: a face only some 50 pixels wide
    in a search view otherwise shows a scan's fine noise as grain that hides it."""
    search_size: int = 128
    """Side of the search renders, pixels (the short-range face detector works at 128)."""
    refine_size: int = 256
    """Side of the face-centred renders fitted by the face mesh, pixels."""
    face_fov_mm: float = 240.0
    """Width of the scene covered by a face-centred render (centred on the eyes and mouth), mm."""
    vote_yaw_deg: float = 18.0
    """Left/right turn of the side voting views, degrees."""
    vote_pitch_deg: float = 12.0
    """Upward look (camera below the face) of the lower voting view, degrees."""
    vote_zooms: tuple[float, ...] = (1.0,)
    """Widths of the voting views relative to ``face_fov_mm``; every view is rendered at each."""
    attention_regions: tuple[str, ...] = ("lips",)
    """iBUG regions (``eyes``: points 36-47, ``lips``: 48-67) that each voting view takes from
    mediapipe's attention face mesh, which refines the eye and lip contours from their
    appearance, instead of the plain one, on renders of shaded geometry. Empty: the plain mesh
    alone (the attention mesh is not run)."""
    attention_regions_colour: tuple[str, ...] = ("eyes", "lips")
    """The same on renders that show the scan's colours (a texture, or vertex colours that
    vary: :attr:`ScanRenderer.shows_colour`), where the eyes and lips look as in a photo."""
    mirror_views: bool = True
    """Fit each voting view's face mesh also on its mirror image, and average the two (mapped
    back, left and right swapped): test-time flip augmentation, which cancels a left-right bias
    of the face mesh. On 10 synthetic seeds it lowered the NoW-7 median error, on the seeds it
    was not chosen on from 2.13 to 2.07 mm with colours and 2.66 to 2.53 mm shaded; the real
    scan went from 1.34 to 1.45 mm (largest 4.84 to 4.47 mm). About 0.1 s more per scan."""
    midline: bool = True
    """Move the median landmarks (nose, lip and chin midpoints) onto the face's plane of
    symmetry, fitted to the left-right pairs."""
    nose_tip_reach_mm: float = 10.0
    """Move the nose tip (iBUG 30, the pronasale) to the scan's most prominent point along the
    face's front direction within this distance of the voted one (the median of the most
    prominent 1% of the scan's vertices there, at least 5, by their heights median-filtered over
    :data:`NOSE_TIP_FILTER_MM` across the front, moved onto the surface, so a spike or a thin
    ridge of a few vertices out of the skin does not take it); 0: keep the voted point. The face
    mesh does not see where a nose's tip is on a render: it put point 30 a median 3.4 mm from
    the real scan's annotation (as given and in 7 random frames; 1.6 mm after this), 7.4 mm
    from the truth on shaded synthetic scans (seeds 0, 3, 7; 0.7 mm after) and 4.5 mm with
    colours (seeds 0, 3; 0.7 mm after), measured by ``python -m pipelines.landmarks_check``
    (``--model-check none`` for the synthetic figures). The median filter (2026-12-06) took the
    shaded synthetic scans' figure from 0.74 to 0.57 mm (mean 1.99 to 1.87 mm) and left the
    real scan's at 1.6 mm (one of its 8 cases from 1.38 to 0.97 mm). NoW's nose point is iBUG
    33, which this leaves alone."""
    min_detection_score: float = 0.5
    """Weakest face-detector score accepted in the search."""
    min_vote_fraction: float = 0.6
    """Least fraction of voting views the face mesh must fit."""
    max_spread_mm: float = 6.0
    """Largest accepted spread (median disagreement between views) of any of NoW's 7 points, mm."""
    occlusion_mm: float = 8.0
    """A ray's first hit this much nearer than the face mesh's predicted depth is an occluder."""
    min_nose_protrusion_mm: float = 5.0
    """Least height of the nose tip over the eye and mouth corners: a smaller (or negative) one
    means a hollow face, the inside of the surface seen from behind."""
    spread_scale_mm: float = 2.0
    """Spread at which the confidence falls to 1/e of the detection score, mm."""
    min_confidence: float = 0.15
    """Lowest confidence accepted: below it the scan fails as ``unsure``."""
    blend_cut_edges: bool = True
    """Where a render's outline of the scan is mostly its cut edge (a face cropped from a
    scan), show the background in the outline's tone rather than black, so that the crop line
    does not look like the face's outline (:func:`_blend_cut_edges`)."""
    fill_holes: bool = True
    """Fill the enclosed empty areas of the renders (holes in the scan) from the surface around
    them, so that the detectors see skin where they would see black blots."""
    retry_smoothing_mm: tuple[float, ...] = (1.5, 4.0)
    """Radii of normal smoothing (mm) tried in turn when the scan's own shading finds no face, or
    a hollow or unsure one: a noisy scan's vertex normals show as grain in the renders, which
    hides the face from the detectors (:meth:`ScanRenderer.smooth_normals`). Empty: no retry."""
    overlay_size: int = 384
    """Side of the overlay image, pixels (0: no overlay)."""

    def __post_init__(self) -> None:
        if self.units != "auto" and self.units not in UNIT_TO_MM:
            raise ValueError(
                f"units must be 'auto' or one of {sorted(UNIT_TO_MM)}, got {self.units!r}"
            )
        if self.search_candidates < 1:
            raise ValueError(f"search_candidates must be >= 1, got {self.search_candidates}")
        if self.search_views < 4:
            raise ValueError(f"search_views must be >= 4, got {self.search_views}")
        if self.search_rolls < 1 or self.search_supersample < 1:
            raise ValueError(
                f"search_rolls and search_supersample must be >= 1, got {self.search_rolls} and "
                f"{self.search_supersample}"
            )
        if self.search_size < 64 or self.refine_size < 128:
            raise ValueError("search_size must be >= 64 and refine_size >= 128 pixels")
        for regions in (self.attention_regions, self.attention_regions_colour):
            if not set(regions) <= set(ATTENTION_REGIONS):
                raise ValueError(
                    f"attention regions must be among {sorted(ATTENTION_REGIONS)}, got {regions!r}"
                )
        if not self.vote_zooms or min(self.vote_zooms) <= 0:
            raise ValueError(f"vote_zooms must be positive, got {self.vote_zooms!r}")
        if not self.nose_tip_reach_mm >= 0:
            raise ValueError(f"nose_tip_reach_mm must be >= 0, got {self.nose_tip_reach_mm!r}")
        if any(not r > 0 for r in self.retry_smoothing_mm):
            raise ValueError(
                f"retry_smoothing_mm must be positive radii, got {self.retry_smoothing_mm!r}"
            )


@dataclass
class ScanLandmarks:
    """Landmarks found on one scan (scan frame and units unless stated)."""

    landmarks68: np.ndarray
    """(68, 3) float iBUG-68 points on the scan surface, scan units."""
    landmarks7: np.ndarray
    """(7, 3) float NoW's 7 points (:data:`facehd.landmarks.NOW7_FROM_68`), scan units."""
    spread_mm: np.ndarray
    """(68,) float median distance of the voting views' hits from each landmark, mm."""
    confidence: float
    """Overall confidence in [0, 1] (see the module docstring): how surely a face was found and
    how well the views agree, not an error estimate (the detector's offsets are much the same
    from every view; on synthetic scans it did not rank the landmark error)."""
    detection_score: float
    """Best face-detector score of the search, in [0, 1]."""
    views_fitted: int
    """Voting views the face mesh fitted."""
    views_tried: int
    """Voting views rendered."""
    units: str
    """Units of the scan (``mm``, ``cm``, ``m``)."""
    unit_to_mm: float
    """Millimetres per scan unit."""
    frame: FaceFrame
    """The face's directions and centre (scan frame, centre in scan units)."""
    smoothing_mm: float = 0.0
    """Radius of the normal smoothing of the renders that found the face, mm (0: the scan's own
    normals; see ``retry_smoothing_mm``)."""
    overlay: np.ndarray | None = field(default=None, repr=False)
    """(S, S, 3) uint8 frontal render with the landmarks drawn, or None."""
    ignored_faces: int = 0
    """Faces of stray pieces apart from the scan's main part, left out of the search
    (:func:`facehd.mesh.main_parts`)."""
    rewound_faces: int = 0
    """Faces turned over to agree with their neighbours' winding before the search
    (:func:`facehd.mesh.consistent_winding`; 0 for a consistently wound scan)."""
    duplicate_faces: int = 0
    """Faces stored twice (a double-sided export), the second left out of the search
    (:func:`facehd.mesh.drop_duplicate_faces`)."""
    stretched_faces: int = 0
    """Stretched triangles (a scanner's spike) left out of the search
    (:func:`facehd.mesh.drop_stretched_faces`)."""
    check: LandmarkCheck | None = None
    """What the landmarker's ``check`` decided (None: no check ran): whether the points are the
    detected ones or another source's (:attr:`LandmarkCheck.source`)."""

    @property
    def source(self) -> str:
        """Where the points come from: ``detected``, or the check's source."""
        return self.check.source if self.check is not None else "detected"

    @property
    def now7_spread_mm(self) -> np.ndarray:
        """(7,) spread of NoW's 7 points, mm."""
        return self.spread_mm[list(NOW7_FROM_68)]


@dataclass(frozen=True)
class LandmarkCheck:
    """The verdict of a :class:`ScanLandmarker` ``check`` on one scan's detected landmarks."""

    source: str
    """Where the final points come from: ``detected`` (the detection kept) or the name of what
    replaced them."""
    landmarks68_mm: np.ndarray | None = None
    """(68, 3) the points replacing the detected ones (scan frame, mm; the landmarker moves each
    to its closest scan point), or None to keep the detection."""
    residual_mm: float | None = None
    """The check's own measure of fit, mm (None when it has none)."""
    detail: str = ""
    """Why, in words."""


@dataclass(frozen=True)
class FaceFrame:
    """A face's orientation: three orthonormal directions and a centre.

    Attributes
    ----------
    left : (3,) unit vector towards the subject's left (from the right eye to the left eye).
    up : (3,) unit vector from the mouth towards the eyes.
    front : (3,) unit vector out of the face (``left × up``).
    center : (3,) point between the eyes and the mouth.
    eye_distance : distance between the eye centres (the face's size), 0 when unknown.
    """

    left: np.ndarray
    up: np.ndarray
    front: np.ndarray
    center: np.ndarray
    eye_distance: float = 0.0

    @staticmethod
    def from_points(
        right_eye: np.ndarray, left_eye: np.ndarray, mouth: np.ndarray
    ) -> FaceFrame | None:
        """Frame from the two eye centres and the mouth centre, (3,) each; None if degenerate."""
        x = np.asarray(left_eye, float) - np.asarray(right_eye, float)
        eyes = 0.5 * (np.asarray(left_eye, float) + np.asarray(right_eye, float))
        up = eyes - np.asarray(mouth, float)
        nx = np.linalg.norm(x)
        if not np.isfinite(nx) or nx == 0:
            return None
        x = x / nx
        up = up - np.dot(up, x) * x
        nu = np.linalg.norm(up)
        if not np.isfinite(nu) or nu < 1e-3 * nx:
            return None
        up = up / nu
        front = np.cross(x, up)
        center = (2.0 * eyes + np.asarray(mouth, float)) / 3.0
        return FaceFrame(x, up, front, center, float(nx))

    def rotation(self) -> np.ndarray:
        """(3, 3) matrix whose rows are ``left``, ``up``, ``front`` (scan → face directions)."""
        return np.stack([self.left, self.up, self.front])


# ------------------------------------------------------------------------------------------
# units


def infer_unit_to_mm(vertices: np.ndarray, units: str = "auto", *, name: str = "<scan>") -> str:
    """The units of a scan from its size, or a check of given units.

    Parameters
    ----------
    vertices : (V, 3) float, the scan's vertices in its own units.
    units : ``auto`` or one of :data:`UNIT_TO_MM`.
    name : the scan (named in errors).

    Returns
    -------
    The unit name; its millimetres are ``UNIT_TO_MM[unit]``.

    Raises
    ------
    ScanLandmarkError
        (reason ``units``) when no unit (or not the given one) makes the scan's largest
        bounding-box side a head's size, :data:`HEAD_SIZE_MM`.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"infer_unit_to_mm: expected vertices (V, 3), got {v.shape}")
    size = float((v.max(0) - v.min(0)).max())
    lo, hi = HEAD_SIZE_MM
    if units != "auto":
        if units not in UNIT_TO_MM:
            raise ValueError(f"units must be 'auto' or one of {sorted(UNIT_TO_MM)}, got {units!r}")
        mm = size * UNIT_TO_MM[units]
        if not lo <= mm < hi:
            raise ScanLandmarkError(
                "units",
                f"{name} is {mm:.4g} mm across read as {units}; a face scan is {lo:g}-{hi:g} mm "
                "(wrong units?)",
            )
        return units
    for unit, k in UNIT_TO_MM.items():
        if lo <= size * k < hi:
            return unit
    raise ScanLandmarkError(
        "units",
        f"{name} is {size:.4g} units across: no unit ({', '.join(UNIT_TO_MM)}) makes that a face "
        f"scan's {lo:g}-{hi:g} mm ("
        + inches_hint(size, HEAD_SIZE_MM, "wrong units, or not a face scan?", "it is {:.0f} mm")
        + ")",
    )


def inches_hint(
    length: float, plausible: tuple[float, float], otherwise: str, what: str = "{:.0f} mm apart"
) -> str:
    """What to say of a scan with a ``length`` (in its units: its eye corners' distance, its
    size) that no unit facehd reads makes a face's: that the scan is in inches when so it would
    be (``what`` says the length in mm; inches are not read, and a head in inches is taken for
    one in centimetres, 2.54 times too small), else ``otherwise``."""
    if plausible[0] <= length * INCH_MM <= plausible[1]:
        return (
            f"in inches {what.format(length * INCH_MM)}: a scan in inches? facehd reads mm, cm "
            "and m, convert it to one of those"
        )
    return otherwise


# ------------------------------------------------------------------------------------------
# cameras and rendering


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors on the sphere (Fibonacci lattice), (n, 3)."""
    if n < 1:
        raise ValueError(f"fibonacci_directions: n must be >= 1, got {n}")
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * i
    return np.stack(
        [np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1
    )


@dataclass(frozen=True)
class ViewCamera:
    """A square pinhole view: ``x_cam = R (x - position)``, OpenCV axes (``+z`` forward, ``+y``
    down the image), pixel ``(x, y) = f x_cam[:2] / z + c`` with ``c = (size - 1) / 2``.

    Attributes
    ----------
    rotation : (3, 3) rows: image right, image down, viewing direction (world frame).
    position : (3,) camera centre (world frame).
    focal : focal length, pixels.
    size : image side, pixels.
    distance : distance from the camera to the point it looks at (world units).
    """

    rotation: np.ndarray
    position: np.ndarray
    focal: float
    size: int
    distance: float

    @staticmethod
    def looking_at(
        target: np.ndarray, towards_camera: np.ndarray, up: np.ndarray, width: float, size: int
    ) -> ViewCamera:
        """A camera on the ray ``target + s · towards_camera`` looking at ``target``, image up
        along ``up`` (made orthogonal), seeing a square of side ``width`` at the target.

        The camera stands ``3 width`` away (a 19° field of view: little perspective).
        """
        back = np.asarray(towards_camera, float)
        back = back / np.linalg.norm(back)
        fwd = -back
        right = np.cross(fwd, np.asarray(up, float))
        n = np.linalg.norm(right)
        if n < 1e-8:  # up parallel to the view: take any perpendicular
            helper = np.eye(3)[int(np.argmin(np.abs(fwd)))]
            right = np.cross(fwd, helper)
            n = np.linalg.norm(right)
        right = right / n
        down = np.cross(fwd, right)
        distance = 3.0 * width
        focal = size * distance / width
        return ViewCamera(
            rotation=np.stack([right, down, fwd]),
            position=np.asarray(target, float) + distance * back,
            focal=float(focal),
            size=int(size),
            distance=float(distance),
        )

    def pinhole(self) -> Any:
        """The same camera as a :class:`facehd.render.PinholeCamera` (float64)."""
        from facehd.render.camera import PinholeCamera

        c = (self.size - 1) / 2.0
        K = np.array([[self.focal, 0.0, c], [0.0, self.focal, c], [0.0, 0.0, 1.0]])
        t = -self.rotation @ self.position
        return PinholeCamera.from_matrices(K, self.rotation, t, (self.size, self.size))

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """World-frame directions (not unit) of the rays through ``pixels`` (N, 2) (x, y)."""
        import torch

        pix = torch.as_tensor(np.asarray(pixels, dtype=np.float64).reshape(1, -1, 2))
        d_cam = self.pinhole().pixel_rays(pix)[0].numpy()
        return d_cam @ self.rotation

    def project(self, points: np.ndarray) -> np.ndarray:
        """World ``points`` (N, 3) → pixels (N, 2) (x = column, y = row)."""
        import torch

        pts = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        return self.pinhole().project(pts)[0].numpy()


class ScanRenderer:
    """Fast repeated renders of one static mesh (millimetres) from many cameras.

    One Embree scene is built once (float32, re-centred coordinates) and every pixel's ray is cast
    into it; hits are shaded with :func:`facehd.render.shade_sh` (a frontal key light plus
    ambient) from interpolated vertex normals turned towards the camera, on the colour texture
    where one is given, else on the vertex colours where the mesh has them, else mid grey.

    Parameters
    ----------
    mesh : the scan in millimetres.
    texture : (H, W, 3) float RGB in [0, 1] (row 0 at ``v = 1``), sampled bilinearly
        (:func:`facehd.uv.sample_uv_map`) at the interpolated ``mesh.uvs`` (one UV per vertex: a
        mesh split along its seams, :func:`facehd.mesh.load_textured_mesh`).

    Attributes
    ----------
    cull : {"back", "front", "none"}
        Which side of the triangles is hidden (drawn as background): ``back`` — the side their
        winding (counter-clockwise = outside) calls inside; ``front`` — the other side (for a scan
        wound inside out); ``none`` — both sides shown.
    """

    def __init__(self, mesh: Mesh, texture: np.ndarray | None = None) -> None:
        from facehd._o3d import open3d

        o3d = open3d()
        self.mesh = mesh
        v = mesh.vertices
        self.center = 0.5 * (v.min(0) + v.max(0))
        self.radius = float(np.linalg.norm(v - self.center, axis=1).max())
        self._scene = o3d.t.geometry.RaycastingScene(nthreads=1)
        self._scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(v - self.center, dtype=np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)),
        )
        self._o3d = o3d
        self._vn0 = mesh.vertex_normals.astype(np.float32)
        self._vn = self._vn0
        self._corners_of: np.ndarray | None = None  # the normals _corners was gathered from
        self._corners = np.empty((0, 3, 3), np.float32)
        self._fn = mesh.face_normals.astype(np.float32)
        self.cull = "back"
        self._albedo = (
            np.clip(mesh.colors, 0.0, 1.0).astype(np.float32) if mesh.colors is not None else None
        )
        self._sh = _key_light()
        self._texture = None
        if texture is not None:
            tex = np.asarray(texture, dtype=np.float32)
            if tex.ndim != 3 or tex.shape[2] != 3 or min(tex.shape[:2]) < 1:
                raise ValueError(f"ScanRenderer: texture must be (H, W, 3), got {tex.shape}")
            if mesh.uvs is None:
                raise ValueError("ScanRenderer: a texture needs per-vertex UVs (mesh.uvs)")
            self._texture = np.clip(tex, 0.0, 1.0)
            self._uvs = mesh.uvs.astype(np.float32)
        self.fill_holes = False
        """Fill enclosed empty areas of the render (:class:`ScanLandmarkConfig` ``fill_holes``)."""
        self.blend_cut_edges = False
        """Show the background in the tone of the surface where the scan's outline in a render
        is mostly its cut edge (:class:`ScanLandmarkConfig` ``blend_cut_edges``)."""
        self._cut_face = _faces_on_open_edges(mesh.faces)
        self.shows_colour = colours_vary(
            self._texture if self._texture is not None else self._albedo
        )
        """Whether the renders show the scan's own colours: a texture, or vertex colours that
        vary (one uniform colour shows the shading alone, as no colour does)."""
        if not self.shows_colour:  # rendered exactly as without colours (the same grey)
            self._texture = self._albedo = None

    def cast(self, camera: ViewCamera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pixel's ray: ``(face ids (S*S,) -1 on a miss or a back face, barycentrics
        (S*S, 3), directions (S*S, 3))``."""
        pixels, faces, bary, d = self._hits(camera)
        fid = np.full(len(d), -1, dtype=np.int64)
        fid[pixels] = faces
        full = np.zeros((len(d), 3), np.float32)
        full[pixels] = bary
        return fid, full, d

    def _hits(self, camera: ViewCamera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The pixels whose ray meets a shown side of the surface: ``(their indices (N,), the
        faces hit (N,), barycentrics (N, 3), every pixel's ray direction (S*S, 3))``."""
        d = _pixel_directions(camera.size, camera.focal) @ camera.rotation.astype(np.float32)
        rays = np.empty((len(d), 6), np.float32)
        rays[:, :3] = camera.position - self.center
        rays[:, 3:] = d
        ans = self._scene.cast_rays(self._o3d.core.Tensor(rays), nthreads=1)
        ids = ans["primitive_ids"].numpy()
        pixels = np.flatnonzero(ids != self._scene.INVALID_ID)
        faces = ids[pixels].astype(np.int64)
        shown = ~self.facing_away(faces, d[pixels])
        pixels, faces = pixels[shown], faces[shown]
        uv = ans["primitive_uvs"].numpy()[pixels]
        bary = np.empty((len(pixels), 3), np.float32)
        bary[:, 1:] = uv
        bary[:, 0] = 1.0 - uv[:, 0] - uv[:, 1]
        return pixels, faces, bary, d

    def facing_away(self, face_ids: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Whether rays ``directions`` (N, 3) hit faces ``face_ids`` (N,) on their hidden side
        (see :attr:`cull`), (N,) bool."""
        if self.cull == "none":
            return np.zeros(len(face_ids), dtype=bool)
        dots = np.einsum("ij,ij->i", self._fn[face_ids], directions)
        return dots > 0 if self.cull == "back" else dots < 0

    def smooth_normals(self, radius: float) -> int:
        """Shade with the vertex normals averaged over about ``radius`` (mesh units) around
        each vertex; 0 restores the scan's own normals. Returns the averaging passes used.

        A pass replaces each normal by the normalised mean of its own and its edge neighbours'.
        ``k`` passes reach about ``sqrt(k)`` edge lengths, so ``k = ceil((radius / e)²)`` with
        ``e`` the median edge length, at most :data:`MAX_SMOOTHING_PASSES`.
        """
        import scipy.sparse as sp

        if not radius >= 0:
            raise ValueError(f"smooth_normals: radius must be >= 0, got {radius}")
        self._vn = self._vn0
        if radius == 0:
            return 0
        v, f = self.mesh.vertices, self.mesh.faces
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        lengths = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
        edge = float(np.median(lengths[lengths > 0])) if (lengths > 0).any() else 0.0
        if edge == 0:
            return 0
        passes = min(math.ceil((radius / edge) ** 2), MAX_SMOOTHING_PASSES)
        n = len(v)
        rows = np.concatenate([edges[:, 0], edges[:, 1], np.arange(n)])
        cols = np.concatenate([edges[:, 1], edges[:, 0], np.arange(n)])
        adj = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
        adj.data[:] = 1.0  # an edge shared by two triangles counts once
        nv = self._vn0.astype(np.float64)
        for _ in range(passes):
            nv = adj @ nv
            nv /= np.linalg.norm(nv, axis=1, keepdims=True).clip(1e-12)
        self._vn = nv.astype(np.float32)
        return passes

    def _corner_normals(self) -> np.ndarray:
        """(F, 3, 3) float32: the shading normals at each triangle's corners (gathered once per
        set of normals: a render reads one row per pixel instead of three scattered ones)."""
        if self._corners_of is not self._vn:
            self._corners = self._vn[self.mesh.faces]
            self._corners_of = self._vn
        return self._corners

    def render(self, camera: ViewCamera, supersample: int = 1) -> np.ndarray:
        """(S, S, 3) uint8 RGB render (black background); ``supersample`` k > 1 renders k × k
        rays per pixel and averages them (the same camera: pixel centres stay where they are)."""
        k, s = int(supersample), camera.size
        if k > 1:
            camera = replace(camera, focal=camera.focal * k, size=s * k)
        img, hit, fid = self._shade(camera)
        if self.blend_cut_edges:
            img = _blend_cut_edges(img, hit, self._cut_face[fid])
        if self.fill_holes:  # at the rays' resolution, where a hole's pixels are all empty
            img = _fill_enclosed(img, hit)
        if k > 1:  # each pixel the mean of its k x k rays (summed as slices: ~5x a .mean)
            rays = img.reshape(s, k, s, k, 3)
            img = sum(rays[:, i, :, j] for i in range(k) for j in range(k)) / (k * k)
        return (img * 255.0 + 0.5).astype(np.uint8)

    def _shade(self, camera: ViewCamera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(S, S, 3) float RGB in [0, 1] (black background), the (S, S) bool hit mask and the
        (S, S) face index seen by each pixel (-1: none)."""
        import torch

        from facehd.render.shading import shade_sh
        from facehd.uv import sample_uv_map

        pixels, faces, b, d = self._hits(camera)
        d = d[pixels]
        n = _interpolate(b, self._corner_normals()[faces])
        # seen side of each surface: normals turned towards the camera
        n *= np.where(np.einsum("ij,ij->i", n, d) > 0, -1.0, 1.0)[:, None]
        # lighting frame: camera axes with +y up and +z towards the camera
        n_cam = n @ camera.rotation.T
        n_light = np.stack([n_cam[:, 0], -n_cam[:, 1], -n_cam[:, 2]], axis=1)
        n_light /= np.linalg.norm(n_light, axis=1, keepdims=True) + 1e-12
        if self._texture is not None:
            uvs = _interpolate(b, self._uvs[self.mesh.faces[faces]])
            albedo = sample_uv_map(self._texture, uvs)
        elif self._albedo is not None:
            albedo = _interpolate(b, self._albedo[self.mesh.faces[faces]])
        else:
            albedo = np.full_like(n_light, 0.55)
        with torch.no_grad():
            color = shade_sh(
                torch.from_numpy(n_light[None].astype(np.float64)),
                torch.from_numpy(albedo[None].astype(np.float64)),
                self._sh,
            )[0].numpy()
        s = camera.size
        img = np.zeros((s * s, 3))
        img[pixels] = np.clip(color, 0.0, 1.0)
        fid = np.full(s * s, -1, dtype=np.int64)
        fid[pixels] = faces
        hit = fid >= 0
        return img.reshape(s, s, 3), hit.reshape(s, s), fid.reshape(s, s)


def _interpolate(bary: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Values at points of triangles: ``bary (N, 3)`` weights of the corner values
    ``corners (N, 3, C)`` → ``(N, C)``."""
    return (
        bary[:, 0:1] * corners[:, 0] + bary[:, 1:2] * corners[:, 1] + bary[:, 2:3] * corners[:, 2]
    )


def _faces_on_open_edges(faces: np.ndarray) -> np.ndarray:
    """(F + 1,) bool: the faces with a vertex on an edge no other face shares (the scan's cut
    edges and holes; the faces beside them too, since a pixel at the outline sees either), and
    a last False entry for the index -1 of pixels that see no face."""
    from facehd.mesh import open_edges

    f = np.asarray(faces, dtype=np.int64)
    border = open_edges(f)
    # faces with a vertex on an open edge: a pixel at the outline sees the face on the edge or
    # the one beside it
    on_edge = np.zeros(int(f.max(initial=-1)) + 1, dtype=bool)
    on_edge[f[border]] = True  # each open edge's first corner ...
    on_edge[np.roll(f, -1, axis=1)[border]] = True  # ... and its second
    return np.concatenate([on_edge[f].any(axis=1), [False]])


def _blend_cut_edges(img: np.ndarray, hit: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """``img`` with its background in the median tone of the face's outline when most of the
    outline (surface pixels beside the background) lies on the scan's cut edges (``cut``, per
    pixel): a face cropped from a scan would otherwise show its crop line as the face's outline,
    black against bright skin, and the face mesh takes it for the jaw and hairline (on the real
    scan cut 95 mm around the nose tip, it set the eye corners ~3 mm low). Where the outline is
    mostly a silhouette, the surface turning away (the synthetic scans' heads), the background
    stays black; a raw head scan's ragged outline may count as cut (the real scan's does in
    about half its views: NoW-7 median 1.11 → 1.22 mm as given and under 6 rotations, while its
    crops at 95-120 mm went from 3.0-2.0 mm to 2.1-1.6 mm)."""
    from scipy import ndimage

    outline = hit & ndimage.binary_dilation(~hit)  # beside the background, not the frame
    if not outline.any() or cut[outline].mean() <= 0.5:
        return img
    out = img.copy()
    out[~hit] = np.median(img[outline], axis=0)
    return out


_UNIFORM_COLOUR_STD = 0.02
"""Largest standard deviation (of any channel, over the vertices or texels) of colours that count
as one uniform colour."""


def colours_vary(colours: np.ndarray | None) -> bool:
    """Whether a scan's colours (vertex colours (N, 3) or a texture (H, W, 3), in [0, 1]) show
    anything: False for none, or for one uniform colour, which shows the shading alone."""
    if colours is None:
        return False
    c = np.asarray(colours, dtype=np.float32).reshape(-1, 3)
    return bool(len(c) > 1 and c.std(axis=0).max() > _UNIFORM_COLOUR_STD)


def _fill_enclosed(img: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """``img`` (S, S, 3) with its enclosed empty pixels (missed areas that do not reach the
    image border: holes in the scan, an open back face) filled from the nearest surface pixels
    and smoothed, so that the detector sees skin rather than black blots."""
    from scipy import ndimage

    labels, n = ndimage.label(~hit)
    if n == 0:
        return img
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    enclosed = (labels > 0) & ~np.isin(labels, border)
    if not enclosed.any():
        return img
    # worked on the holes' bounding box with a margin: the surface pixels nearest to a hole's
    # pixels ring the hole, and the 5-pixel smoothing reaches 2 pixels beyond it (the same
    # result as over the whole image, at a quarter of the cost on the search renders)
    ys, xs = np.nonzero(enclosed)
    m = _FILL_MARGIN
    box = (
        slice(max(int(ys.min()) - m, 0), min(int(ys.max()) + m + 1, hit.shape[0])),
        slice(max(int(xs.min()) - m, 0), min(int(xs.max()) + m + 1, hit.shape[1])),
    )
    sub_img, sub_enclosed = img[box], enclosed[box]
    _, (iy, ix) = ndimage.distance_transform_edt(~hit[box], return_indices=True)
    sub = sub_img.copy()
    sub[sub_enclosed] = sub_img[iy[sub_enclosed], ix[sub_enclosed]]
    # soften the Voronoi seams of the nearest-pixel fill, inside the holes only
    blurred = np.stack([ndimage.uniform_filter(sub[..., c], 5) for c in range(3)], axis=-1)
    out = img.copy()
    out[box][sub_enclosed] = blurred[sub_enclosed]
    return out


_FILL_MARGIN = 8
"""Pixels around the holes' bounding box that :func:`_fill_enclosed` works on."""


#: Failures of :meth:`ScanLandmarker.detect` that a retry with smoothed shading may overcome
#: (the grain of a noisy scan hides the face, misleads the face mesh or mirrors the face).
_RETRIED = ("no-face", "unsure", "hollow")

#: Most averaging passes of :meth:`ScanRenderer.smooth_normals` (bounds its cost on very dense
#: scans: about 3 ms per pass per 100k vertices).
MAX_SMOOTHING_PASSES = 64


@functools.lru_cache(maxsize=8)
def _pixel_directions(size: int, focal: float) -> np.ndarray:
    """Camera-frame ray directions (z = 1) through every pixel centre of a ``size``² view,
    row-major, (size², 3) float32."""
    c = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    d = np.stack([(xs - c) / focal, (ys - c) / focal, np.ones_like(xs)], axis=-1)
    d = d.reshape(-1, 3).astype(np.float32)
    d.setflags(write=False)
    return d


def _key_light() -> Any:
    """SH lighting (9, 3): ambient plus a light from slightly above the camera."""
    import torch

    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0] = 0.75  # ambient
    sh[2] = 0.45  # towards the camera (+z)
    sh[1] = -0.08  # a little from above (basis term 1 is -y)
    return sh


# ------------------------------------------------------------------------------------------
# the detector


def _quiet() -> Any:
    """Silence mediapipe's native log lines (TFLite delegate banners printed when a model first
    runs) so progress displays stay readable; Python errors still raise."""
    from facehd.detect import _native_stderr_silenced

    return _native_stderr_silenced()


def _import_mediapipe() -> Any:
    from facehd.detect import _import_mediapipe as imp

    return imp()


#: How far a failed detection got, most informative first.
_FAILURE_ORDER = {"units": 0, "unsure": 1, "hollow": 2, "no-face": 3}


class _WrongSize(Exception):
    """The face found has an implausible size (args: outer eye corner distance, mm)."""


@dataclass
class _Detection:
    score: float
    keypoints: np.ndarray  # (6, 2) pixels of the view: right eye, left eye, nose, mouth, ears
    camera: ViewCamera


class ScanLandmarker:
    """Finds landmarks on scans (see the module docstring). Holds mediapipe's graphs: make one
    per process and reuse it; not thread-safe. Use as a context manager or call :meth:`close`.

    Parameters
    ----------
    config : ScanLandmarkConfig, optional
    check : called as ``check(scan_mm, landmarks68_mm)`` on each accepted detection (the scan's
        searched part in its own frame, in mm; the detected points in mm); its
        :class:`LandmarkCheck` may replace the points (such as ``facehd landmarks``' morphable
        model check, :mod:`pipelines.landmarks`). The overlay shows the final points.
    """

    def __init__(
        self,
        config: ScanLandmarkConfig | None = None,
        check: Callable[[Mesh, np.ndarray], LandmarkCheck] | None = None,
    ) -> None:
        from facehd.detect import _native_stderr_silenced

        self.config = config or ScanLandmarkConfig()
        self.check = check
        mp = _import_mediapipe()
        with warnings.catch_warnings(), _native_stderr_silenced():
            warnings.simplefilter("ignore")
            # short-range face detector (faces filling much of a 128-pixel view)
            self._finder = mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=0.3
            )
            # 468-point face meshes, one face: the plain model, and the attention model (which
            # refines the eye and lip contours) where some region is taken from it
            cfg = self.config
            names = ["plain"]
            if cfg.attention_regions or cfg.attention_regions_colour:
                names.append("attention")
            self._meshes = {
                name: mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=True,
                    max_num_faces=1,
                    refine_landmarks=name == "attention",
                    min_detection_confidence=0.3,
                )
                for name in names
            }
            blank = np.full((64, 64, 3), 128, np.uint8)
            self._finder.process(blank)  # start the graphs while their banners are silenced
            for graph in self._meshes.values():
                graph.process(blank)

    def close(self) -> None:
        self._finder.close()
        for graph in self._meshes.values():
            graph.close()

    def __enter__(self) -> ScanLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- mediapipe calls ---------------------------------------------------------------------
    def _find(self, image: np.ndarray) -> tuple[float, np.ndarray] | None:
        """Best face-detector hit on ``image`` over four quarter turns: (score, keypoints (6, 2)
        in ``image`` pixels)."""
        h, w = image.shape[:2]
        best = None
        for k in range(4):
            im = np.ascontiguousarray(np.rot90(image, k))
            with warnings.catch_warnings(), _quiet():
                warnings.simplefilter("ignore")
                res = self._finder.process(im)
            for det in res.detections or []:
                score = float(det.score[0])
                if best is not None and score <= best[0]:
                    continue
                hk, wk = im.shape[:2]
                kp = np.array(
                    [(p.x * wk - 0.5, p.y * hk - 0.5) for p in det.location_data.relative_keypoints]
                )
                best = (score, _unrotate_points(kp, k, (h, w)))
        return best

    def _mesh68(self, image: np.ndarray, model: str = "plain") -> np.ndarray | None:
        """iBUG-68 points (68, 3) of the face in ``image`` by face-mesh ``model`` (``plain`` or
        ``attention``): pixels ``(x, y)`` and mediapipe's relative depth ``z`` (pixel scale,
        smaller is nearer), or None when no face is found."""
        from facehd.detect import landmarks68_from_mediapipe

        graph = self._meshes[model]
        h, w = image.shape[:2]
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            res = graph.process(np.ascontiguousarray(image))
        if not res.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark])
        # normalised -> pixels, the centre of the top-left pixel at 0 (facehd.detect's rule)
        pixels = np.stack([pts[:, 0] * w - 0.5, pts[:, 1] * h - 0.5, pts[:, 2] * w], axis=1)
        return landmarks68_from_mediapipe(pixels)

    # -- the steps -----------------------------------------------------------------------------
    def _search(self, renderer: ScanRenderer) -> list[_Detection]:
        """The face detector's hits over the search views, best first: at most
        ``search_candidates``, one per view, each at least ``min_detection_score``."""
        cfg = self.config
        hits: list[_Detection] = []
        width = 2.0 * renderer.radius
        for d in fibonacci_directions(cfg.search_views):
            up = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
            cam = ViewCamera.looking_at(renderer.center, d, up, width, cfg.search_size)
            image = renderer.render(cam, cfg.search_supersample)
            best = None
            for r in range(cfg.search_rolls):
                degrees = 90.0 * r / cfg.search_rolls
                found = self._find(rotate_image(image, degrees) if r else image)
                if found is not None and (best is None or found[0] > best.score):
                    kp = rotated_to_image(found[1], degrees, cfg.search_size) if r else found[1]
                    best = _Detection(found[0], kp, cam)
            if best is not None:
                hits.append(best)
        hits.sort(key=lambda h: -h.score)
        if not hits or hits[0].score < cfg.min_detection_score:
            got = "nothing" if not hits else f"at best a score of {hits[0].score:.2f}"
            raise ScanLandmarkError(
                "no-face",
                f"the face detector found {got} in {cfg.search_views} views around the scan "
                f"(needs {cfg.min_detection_score:.2f})",
            )
        good = [h for h in hits if h.score >= cfg.min_detection_score]
        return good[: cfg.search_candidates]

    def detect(
        self, mesh: Mesh, *, name: str = "<scan>", texture: np.ndarray | None = None
    ) -> ScanLandmarks:
        """Landmarks of one scan (any orientation; units per the config).

        Parameters
        ----------
        mesh : the scan, in its own units and frame.
        name : how errors name the scan.
        texture : its colour texture (H, W, 3) float RGB in [0, 1], with ``mesh.uvs`` one UV per
            vertex (:func:`facehd.mesh.load_textured_mesh`); the renders show it.

        Raises
        ------
        ScanLandmarkError
            No face, an unsure detection, or a size that fits no unit (``reason`` says which).
        """
        from facehd.mesh import (
            consistent_winding,
            drop_duplicate_faces,
            drop_stretched_faces,
            main_parts,
        )

        if mesh.n_faces == 0:
            raise ScanLandmarkError("empty", f"{name} has no triangles")
        # faces stored twice (double-sided exports) and mixed windings cancel in the vertex
        # normals: the shading would be noise
        mesh, doubled = drop_duplicate_faces(mesh)
        mesh, rewound = consistent_winding(mesh)
        # a spike (one vertex thrown far off, joined to its neighbours) would set the scan's
        # size, its units and the cameras' framing
        mesh, stretched = drop_stretched_faces(mesh)
        if mesh.n_faces == 0:
            raise ScanLandmarkError("empty", f"{name} has no triangles but stretched ones")
        # Stray pieces (specks, a scanner table) and unused vertices would set the scan's size
        # and the search cameras' framing: the main part alone is searched, and where a large
        # piece is no face (a table under the head), the next candidate.
        errors: list[ScanLandmarkError] = []
        for part in main_parts(mesh):
            used = vertices_in_faces(mesh.faces[part], mesh.n_vertices)
            try:
                found = self._detect_part(mesh.subset_vertices(used)[0], name, texture)
            except ScanLandmarkError as exc:
                errors.append(exc)
                continue
            found.ignored_faces = int(mesh.n_faces - part.sum())
            found.rewound_faces = rewound
            found.duplicate_faces = doubled
            found.stretched_faces = stretched
            return found
        # the candidate that got furthest speaks (a face found but unsure over no face)
        raise min(errors, key=lambda e: _FAILURE_ORDER.get(e.reason, 4))

    def _detect_part(self, mesh: Mesh, name: str, texture: np.ndarray | None) -> ScanLandmarks:
        """:meth:`detect` on one candidate part of the scan (its own units and frame)."""
        from facehd.distances import SurfaceQuery

        cfg = self.config
        units = infer_unit_to_mm(mesh.vertices, cfg.units, name=name)
        k = UNIT_TO_MM[units]
        uvs = mesh.uvs if texture is not None else None
        mm = Mesh(mesh.vertices * k, mesh.faces, uvs, mesh.colors)
        renderer = ScanRenderer(mm, texture)
        renderer.fill_holes = cfg.fill_holes
        renderer.blend_cut_edges = cfg.blend_cut_edges
        query = SurfaceQuery(mm, nthreads=1)
        # A noisy scan's grain can hide the face or mislead the face mesh: then retry with
        # smoother shading. The first failure speaks for the scan.
        radii = (0.0, *cfg.retry_smoothing_mm)
        first: ScanLandmarkError | None = None
        for smoothing in radii:
            renderer.smooth_normals(smoothing)
            try:
                return self._detect(renderer, query, name, units, smoothing)
            except ScanLandmarkError as exc:
                if first is None and exc.reason not in _RETRIED:
                    raise
                first = first or exc
        assert first is not None
        if len(radii) == 1:
            raise first
        tried = ", ".join(f"{r:g}" for r in radii[1:])
        raise ScanLandmarkError(
            first.reason, f"{first.detail}; the same with the shading smoothed over {tried} mm"
        )

    def _detect(
        self, renderer: ScanRenderer, query: Any, name: str, units: str, smoothing: float
    ) -> ScanLandmarks:
        """:meth:`detect` on a prepared renderer and query of the scan in mm."""
        cfg = self.config
        k = UNIT_TO_MM[units]
        # The file's winding first. A scan wound inside out shows its face only as a hollow
        # (seen from behind, mirrored): then the other side. Windings :meth:`detect` could not
        # make agree (surfaces joined only at a vertex, non-manifold edges): both sides.
        errors: list[ScanLandmarkError] = []
        passes = ["back"]
        while passes:
            renderer.cull = passes.pop(0)
            candidates: list[_Detection] = []
            pass_errors: list[ScanLandmarkError] = []
            try:
                candidates = self._search(renderer)
            except ScanLandmarkError as exc:
                pass_errors.append(exc)
            located = None
            # The strongest detection first; a weaker one where the face mesh does not confirm
            # it (a face-like pattern in a view of the hair or the neck can outscore a small
            # frontal face in the low-resolution search).
            for found in candidates:
                try:
                    frames = self._frames_from_keypoints(found, query, renderer)
                    located = self._locate(renderer, query, frames, found)
                    break
                except _WrongSize as exc:
                    eye, (lo, hi) = exc.args[0], OUTER_EYE_MM
                    pass_errors.append(
                        ScanLandmarkError(
                            "units",
                            f"the outer eye corners are {eye:.1f} mm apart with {name} read as "
                            f"{units} (a face: {lo:g}-{hi:g} mm); "
                            + inches_hint(
                                eye / k,
                                OUTER_EYE_MM,
                                "wrong units, or not a face",
                                "they would be {:.0f} mm apart",
                            ),
                        )
                    )
                except ScanLandmarkError as exc:
                    pass_errors.append(exc)
            if located is not None:
                lm_mm, spread, fitted, tried, frame = located
                break
            # the candidate that got furthest speaks for this pass: a face found but unsure
            # (or of the wrong size) says more than a hollow or no face at all
            exc = min(pass_errors, key=lambda e: _FAILURE_ORDER.get(e.reason, 4))
            if exc.reason == "units":
                raise exc
            errors.append(exc)
            if renderer.cull == "back":
                passes = ["front", "none"] if exc.reason == "hollow" else ["none"]
        else:
            # the most informative failure: unsure or hollow over "no face"
            raise min(errors, key=lambda e: _FAILURE_ORDER.get(e.reason, 4))
        frame = _frame_from_landmarks(lm_mm) or frame
        now7 = spread[list(NOW7_FROM_68)]
        confidence = (
            found.score
            * (fitted / tried)
            * math.exp(-((float(np.median(now7)) / cfg.spread_scale_mm) ** 2))
        )
        if confidence < cfg.min_confidence:
            raise ScanLandmarkError(
                "unsure",
                f"confidence {confidence:.2f} is below {cfg.min_confidence:g} (detection score "
                f"{found.score:.2f}, {fitted}/{tried} views, NoW-7 spreads "
                f"{np.array2string(now7, precision=1)} mm)",
            )
        check = None
        if self.check is not None:
            check = self.check(renderer.mesh, lm_mm)
            if check.landmarks68_mm is not None:
                lm_mm = query.closest(np.asarray(check.landmarks68_mm, dtype=np.float64)).points
        overlay = None
        if cfg.overlay_size:
            cam = self._face_camera(frame, 0.0, 0.0, size=cfg.overlay_size)
            source = None if check is None else check.source
            overlay = draw_overlay(renderer.render(cam), cam.project(lm_mm), confidence, source)
        lm = lm_mm / k
        return ScanLandmarks(
            landmarks68=lm,
            landmarks7=lm[list(NOW7_FROM_68)],
            spread_mm=spread,
            confidence=float(confidence),
            detection_score=float(found.score),
            views_fitted=fitted,
            views_tried=tried,
            units=units,
            unit_to_mm=k,
            frame=FaceFrame(
                frame.left, frame.up, frame.front, frame.center / k, frame.eye_distance / k
            ),
            smoothing_mm=smoothing,
            overlay=overlay,
            check=check,
        )

    def _locate(
        self, renderer: ScanRenderer, query: Any, frames: list[FaceFrame], found: _Detection
    ) -> tuple[np.ndarray, np.ndarray, int, int, FaceFrame]:
        """Refine the face frame (starting from the first candidate whose face-centred view the
        face mesh fits) and vote: (landmarks (68, 3) mm, spread (68,) mm, views fitted, views
        tried, frame). Raises ScanLandmarkError for a hollow or unsure face."""
        cfg = self.config
        frame, fitted_view = frames[0], None
        # the face mesh is fragile on some renders (closed eyes, an open mouth, holes): a frame
        # it does not fit frontally is also tried a little turned, up, down and sideways
        turns = ((0.0, 0.0), (0.0, 10.0), (0.0, -10.0), (10.0, 0.0), (-10.0, 0.0))
        for candidate in frames:
            for y, p in turns:
                cam = self._face_camera(candidate, y, p)
                pts = self._mesh68(renderer.render(cam))
                if pts is not None:
                    frame, fitted_view = candidate, (cam, pts)
                    break
            if fitted_view is not None:
                break
        for _ in range(2):
            if fitted_view is not None:
                (cam, pts), fitted_view = fitted_view, None
            else:
                cam = self._face_camera(frame, 0.0, 0.0)
                pts = self._mesh68(renderer.render(cam))
            if pts is None:
                break
            lm, q = self._cast_with_depth(query, renderer, cam, pts)
            new = _frame_from_landmarks(np.where(q[:, None] > 0, lm, np.nan))
            if new is None:
                break
            frame = new
        yaw, pitch = cfg.vote_yaw_deg, cfg.vote_pitch_deg
        views = [
            (y, p, z)
            for z in cfg.vote_zooms
            for y, p in ((0.0, 0.0), (-yaw, 0.0), (yaw, 0.0), (0.0, pitch), (0.0, -0.5 * pitch))
        ]
        regions = cfg.attention_regions_colour if renderer.shows_colour else cfg.attention_regions
        refined = [i for r in regions for i in ATTENTION_REGIONS[r]]
        hits, goods = [], []
        for y, p, z in views:
            cam = self._face_camera(frame, y, p, zoom=z)
            pts = self._view68(renderer.render(cam), refined)
            if pts is not None:
                h, g = self._cast_with_depth(query, renderer, cam, pts)
                hits.append(h)
                goods.append(g)
        fitted = len(hits)
        if fitted < max(1, math.ceil(cfg.min_vote_fraction * len(views))):
            raise ScanLandmarkError(
                "unsure",
                f"the face mesh fitted only {fitted} of {len(views)} face-centred views "
                f"(search score {found.score:.2f})",
            )
        quality = np.stack(goods)
        lm_mm, spread = _vote(np.stack(hits), quality, query)
        if cfg.midline:
            lm_mm = _onto_midline(lm_mm, query)
        eye = float(np.linalg.norm(lm_mm[36] - lm_mm[45]))
        if not OUTER_EYE_MM[0] <= eye <= OUTER_EYE_MM[1]:
            raise _WrongSize(eye)
        guessed = [i for i in NOW7_FROM_68 if quality[:, i].max() == 0]
        if guessed:
            raise ScanLandmarkError(
                "unsure",
                f"iBUG landmarks {guessed} (of NoW's 7) are off the scan (holes?) in every view",
            )
        final = _frame_from_landmarks(lm_mm)
        if final is None or _protrusion(lm_mm, final) < cfg.min_nose_protrusion_mm:
            raise ScanLandmarkError(
                "hollow",
                "the face found is hollow (the inside of the surface seen from behind); the scan "
                "may be wound inside out",
            )
        if cfg.nose_tip_reach_mm > 0:
            lm_mm = _nose_tip_forward(lm_mm, query, final.front, cfg.nose_tip_reach_mm)
        now7 = spread[list(NOW7_FROM_68)]
        worst = int(np.argmax(now7))
        if now7[worst] > cfg.max_spread_mm:
            raise ScanLandmarkError(
                "unsure",
                f"the views disagree on NoW landmark {worst} by {now7[worst]:.1f} mm "
                f"(accepted: {cfg.max_spread_mm:g} mm)",
            )
        return lm_mm, spread, fitted, len(views), frame

    # -- helpers -------------------------------------------------------------------------------
    def _view68(self, image: np.ndarray, refined: list[int]) -> np.ndarray | None:
        """A voting view's iBUG-68 points (:meth:`_meshes68`); with ``mirror_views``, the mean
        of those of the image and of its mirror image (mapped back: x mirrored, left and right
        points swapped), or the image's alone where the mirror image shows no face."""
        from facehd.detect import IBUG68_MIRROR

        pts = self._meshes68(image, refined)
        if pts is None or not self.config.mirror_views:
            return pts
        flipped = self._meshes68(np.ascontiguousarray(image[:, ::-1]), refined)
        if flipped is None:
            return pts
        back = flipped[list(IBUG68_MIRROR)].copy()
        back[:, 0] = (image.shape[1] - 1) - back[:, 0]
        return 0.5 * (pts + back)

    def _meshes68(self, image: np.ndarray, refined: list[int]) -> np.ndarray | None:
        """The plain face mesh's iBUG-68 points of ``image``, with the ``refined`` points taken
        from the attention mesh (either alone where the other finds no face)."""
        plain = self._mesh68(image)
        if not refined:
            return plain
        attention = self._mesh68(image, "attention")
        if plain is None or attention is None:
            return attention if plain is None else plain
        out = plain.copy()
        out[refined] = attention[refined]
        return out

    def _face_camera(
        self,
        frame: FaceFrame,
        yaw_deg: float,
        pitch_deg: float,
        size: int | None = None,
        zoom: float = 1.0,
    ) -> ViewCamera:
        """Camera facing the face, turned by ``yaw`` about its up axis (positive: towards the
        subject's left) and ``pitch`` about its left axis (positive: from below)."""
        yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
        d = (
            math.cos(yaw) * math.cos(pitch) * frame.front
            + math.sin(yaw) * math.cos(pitch) * frame.left
            - math.sin(pitch) * frame.up
        )
        # scale the view with the face (children, or a scan in other units than it seems)
        if frame.eye_distance > 0:
            zoom *= float(np.clip(frame.eye_distance / TYPICAL_EYE_DISTANCE_MM, 0.5, 3.0))
        return ViewCamera.looking_at(
            frame.center,
            d,
            frame.up,
            self.config.face_fov_mm * zoom,
            size or self.config.refine_size,
        )

    @staticmethod
    def _cast(
        query: Any, renderer: ScanRenderer, camera: ViewCamera, pixels: np.ndarray
    ) -> np.ndarray:
        """Back-project pixels (N, 2) onto the scan: (N, 3) first hits, NaN on a miss or a back
        face."""
        d = camera.rays(pixels[:, :2])
        o = np.repeat(camera.position[None], len(d), axis=0)
        hits = query.cast(o, d)
        pts = hits.points.copy()
        ok = np.flatnonzero(hits.face_ids >= 0)
        back = renderer.facing_away(hits.face_ids[ok], d[ok])
        pts[ok[back]] = np.nan
        return pts

    def _cast_with_depth(
        self, query: Any, renderer: ScanRenderer, camera: ViewCamera, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Back-project face-mesh points (68, 3) (pixels and mediapipe depth) onto the scan,
        looking behind occluders.

        mediapipe predicts where hidden points are (the subnasale behind a long nose tip, seen
        from level or above) and their relative depth. The depth is mapped to camera depth in mm
        by a robust affine fit over the points; a first hit far nearer than its predicted depth
        is an occluder, and the ray is followed through it to the next front-facing surface
        within the tolerance.

        Returns
        -------
        (points (68, 3) on the surface; quality (68,) int: 2 a ray hit within the depth tolerance,
        1 the surface point nearest to the predicted position, within the tolerance, 0 the same
        but farther: a guess).
        """
        tol = self.config.occlusion_mm
        d = camera.rays(points[:, :2])
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        fwd = camera.rotation[2]
        pts = self._cast(query, renderer, camera, points)
        depth = (pts - camera.position) @ fwd
        mm_per_px = camera.distance / camera.focal
        z = points[:, 2] * mm_per_px
        a, b = _robust_affine(z[27:], depth[27:], tol)  # nose, eyes, mouth
        residual = depth - (a * z + b)
        # far behind the prediction: the ray went through a hole (mediapipe's depth is rough,
        # brows and jaw can sit 20 mm off it, so only a large gap counts)
        good = np.isfinite(residual) & (residual >= -tol) & (residual <= 3.0 * tol)
        for i in np.flatnonzero(np.isfinite(residual) & (residual < -tol)):
            t = (pts[i] - camera.position) @ d[i]
            for _ in range(4):  # follow the ray through the occluder
                hit = query.cast((camera.position + (t + 0.2) * d[i])[None], d[i][None])
                if hit.face_ids[0] < 0:
                    break
                t = t + 0.2 + hit.t[0]
                p = hit.points[0]
                if renderer.facing_away(hit.face_ids, d[i][None])[0]:
                    continue
                r = (p - camera.position) @ fwd - (a * z[i] + b)
                if abs(r) <= tol:
                    pts[i], good[i] = p, True
                    break
                if r > tol:
                    break
        # No surface where the point should be along its ray (it lies in a hole, such as a
        # nostril, or behind an occluder with nothing there): the surface point nearest to the
        # predicted position stands in, when near enough. These votes count only where a
        # landmark has no direct hit in any view.
        quality = np.where(good, 2, 0)
        rest = np.flatnonzero(~good)
        if len(rest):
            depth_pred = a * z[rest] + b
            pred = camera.position + d[rest] * (depth_pred / (d[rest] @ fwd))[:, None]
            near = query.closest(pred)
            pts[rest] = near.points
            quality[rest] = np.where(near.distances <= tol, 1, 0)
        return pts, quality

    def _frames_from_keypoints(
        self, det: _Detection, query: Any, renderer: ScanRenderer
    ) -> list[FaceFrame]:
        """Candidate face frames from the detector's key points: the eye and mouth points cast
        onto the scan (when they hit and give a plausible size), then the search view's own
        direction with the key points' image directions (always)."""
        pts = self._cast(query, renderer, det.camera, det.keypoints[:4])
        frames = []
        frame = None
        if np.all(np.isfinite(pts[[0, 1, 3]])):
            frame = FaceFrame.from_points(pts[0], pts[1], pts[3])
        if frame is not None and np.all(np.isfinite(pts[2])):
            base = (pts[0] + pts[1] + pts[3]) / 3.0
            # key points from an oblique view are rough: only a clearly sunken nose counts here
            if (pts[2] - base) @ frame.front < -self.config.min_nose_protrusion_mm:
                raise ScanLandmarkError(
                    "hollow",
                    "the face found is hollow (the inside of the surface seen from behind); the "
                    "scan may be wound inside out",
                )
        if frame is not None and 0.5 <= frame.eye_distance / TYPICAL_EYE_DISTANCE_MM <= 3.0:
            frames.append(frame)
        cam = det.camera
        right, down, fwd = cam.rotation
        kp = det.keypoints
        x2 = kp[1] - kp[0]
        up2 = 0.5 * (kp[0] + kp[1]) - kp[3]
        left = x2[0] * right + x2[1] * down
        up = up2[0] * right + up2[1] * down
        centre = pts[2] if np.all(np.isfinite(pts[2])) else cam.position + cam.distance * fwd
        f = FaceFrame.from_points(centre - left, centre + left, centre - up)
        if f is None:
            if frames:
                return frames
            raise ScanLandmarkError("no-face", "the detected face's key points are degenerate")
        eye_mm = float(np.linalg.norm(x2)) * cam.distance / cam.focal
        frames.append(FaceFrame(f.left, f.up, f.front, centre, eye_mm))
        return frames


def _rotation_2d(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def rotate_image(image: np.ndarray, degrees: float) -> np.ndarray:
    """A square image (S, S, C) turned by ``degrees`` about its centre (clockwise on screen,
    i.e. from +x towards +y in pixel coordinates), bilinear, black outside the input; a feature
    at pixel ``q`` lands at ``c + R (q - c)`` with ``c = (S - 1) / 2``
    (:func:`rotated_to_image` maps back)."""
    from scipy import ndimage

    s = image.shape[0]
    c = 0.5 * (s - 1)
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64)
    # output pixel p' samples the input at q = c + R^T (p' - c)
    rt = _rotation_2d(degrees).T
    qx = c + rt[0, 0] * (xs - c) + rt[0, 1] * (ys - c)
    qy = c + rt[1, 0] * (xs - c) + rt[1, 1] * (ys - c)
    out = np.empty_like(image)
    for ch in range(image.shape[2]):
        out[..., ch] = ndimage.map_coordinates(
            image[..., ch].astype(np.float32), [qy, qx], order=1, cval=0.0
        ).round()
    return out


def rotated_to_image(points: np.ndarray, degrees: float, size: int) -> np.ndarray:
    """Pixels (N, 2) found in ``rotate_image(image, degrees)`` → pixels of ``image`` (S = size)."""
    c = 0.5 * (size - 1)
    return c + (np.asarray(points, float) - c) @ _rotation_2d(degrees)


def _unrotate_points(points: np.ndarray, k: int, size: tuple[int, int]) -> np.ndarray:
    """Pixels found in ``np.rot90(image, k)`` → pixels of ``image`` (H, W) = ``size``."""
    from facehd.detect import unrotate_points

    return unrotate_points(np.asarray(points, dtype=np.float64), k, size)


def _onto_midline(lm: np.ndarray, query: Any) -> np.ndarray:
    """Landmarks (68, 3) with the median ones (their own mirror image in
    :data:`facehd.detect.IBUG68_MIRROR`) moved onto the plane of symmetry.

    The plane is fitted to the left-right pairs of eyes, brows, nose wings and mouth: its normal
    is the mean direction from each right point to its left twin, and it passes through the mean
    of their midpoints. Each median landmark is projected onto the plane and replaced by the
    surface point nearest to its projection.
    """
    from facehd.detect import IBUG68_MIRROR

    mirror = np.asarray(IBUG68_MIRROR)
    pairs = np.array([i for i in range(17, 68) if mirror[i] > i])
    diff = lm[mirror[pairs]] - lm[pairs]
    normal = diff.mean(axis=0)
    if not np.all(np.isfinite(normal)) or np.linalg.norm(normal) == 0:
        return lm
    normal = normal / np.linalg.norm(normal)
    mid = 0.5 * (lm[pairs] + lm[mirror[pairs]])
    offset = float(np.mean(mid @ normal))
    median = np.flatnonzero(mirror == np.arange(68))
    on_plane = lm[median] - ((lm[median] @ normal) - offset)[:, None] * normal
    out = lm.copy()
    out[median] = query.closest(on_plane).points
    return out


NOSE_TIP_FILTER_MM = 2.0
"""Radius of the median filter on the scan's heights before the nose tip's search, mm (at least
three times the vertices' median spacing near the tip)."""


def _nose_tip_forward(lm: np.ndarray, query: Any, front: np.ndarray, reach: float) -> np.ndarray:
    """Landmarks (68, 3) mm with the nose tip (iBUG 30) moved to the scan's most prominent point
    along ``front`` within ``reach`` mm of it, moved onto the surface (``query``: the scan's
    :class:`facehd.distances.SurfaceQuery`). Each vertex there that belongs to a face is given the
    median height along ``front`` of the scan's vertices within :data:`NOSE_TIP_FILTER_MM` of it
    across ``front`` (or three times the vertices' median spacing there, if more), so that a spike
    or a thin ridge of a few vertices out of the skin does not count as prominent; the tip is the
    median of the most prominent 1% (at least 5) by that height, the vertex's own height deciding
    between equals. Unchanged where fewer than 5 such vertices are near."""
    from scipy.spatial import cKDTree

    tip = lm[30]
    if not np.all(np.isfinite(tip)):
        return lm
    mesh = query.mesh
    v = mesh.vertices
    d = v - tip
    dist2 = np.einsum("ij,ij->i", d, d)
    near = np.flatnonzero(dist2 <= reach * reach)
    if near.size:  # a vertex no face uses (a stray point) is not the surface
        near = near[mesh.used_vertices[near]]
    if near.size < 5:
        return lm
    front = np.asarray(front, dtype=np.float64)
    # the filter's neighbourhoods are discs across ``front`` (a ball would hold a spike alone),
    # drawn from the surface around the search's reach too, so that none is cut at its edge
    # where the surface slopes by up to 70° from across ``front``
    across = np.linalg.svd(front[None])[2][1:].T
    near_across = v[near] @ across
    spacing = cKDTree(near_across).query(near_across, k=2)[0][:, 1]
    radius = max(NOSE_TIP_FILTER_MM, 3.0 * float(np.median(spacing)))
    pool = np.flatnonzero((dist2 <= (reach + 3.0 * radius) ** 2) & mesh.used_vertices)
    discs = cKDTree(v[pool] @ across).query_ball_point(near_across, radius)
    pool_height = v[pool] @ front
    filtered = np.array([np.median(pool_height[disc]) for disc in discs])
    k = max(5, int(np.ceil(0.01 * near.size)))
    # neighbours often share their median: the higher vertex goes first among equals
    top = near[np.lexsort((v[near] @ front, filtered))[-k:]]
    out = lm.copy()
    out[30] = query.closest(np.median(v[top], axis=0)[None]).points[0]
    return out


def _protrusion(lm: np.ndarray, frame: FaceFrame) -> float:
    """How far the nose tip (iBUG 30) stands out of the eye and mouth corners along the face's
    front direction, mm: positive for a face, negative for a hollow one."""
    base = np.mean(lm[[36, 39, 42, 45, 48, 54]], axis=0)
    return float((lm[30] - base) @ frame.front)


def _robust_affine(x: np.ndarray, y: np.ndarray, tol: float) -> tuple[float, float]:
    """Fit ``y ≈ a x + b`` (x, y: (N,), NaN allowed) by least squares on the points within
    ``tol`` of the current fit, three rounds from ``a = 1, b = median(y - x)``; ``a`` is kept in
    [0.5, 2] and stays 1 with fewer than 6 points."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() == 0:
        return 1.0, 0.0
    a, b = 1.0, float(np.median(y[ok] - x[ok]))
    for _ in range(3):
        inl = ok & (np.abs(y - (a * x + b)) < tol)
        if inl.sum() < 6:
            break
        A = np.stack([x[inl], np.ones(int(inl.sum()))], axis=1)
        (a_new, b_new), *_ = np.linalg.lstsq(A, y[inl], rcond=None)
        a = float(np.clip(a_new, 0.5, 2.0))
        b = float(np.median(y[inl] - a * x[inl]))
    return a, b


def _frame_from_landmarks(lm: np.ndarray) -> FaceFrame | None:
    """Face frame from iBUG-68 points (68, 3) (eye corners and mouth corners), None when they
    missed the scan."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # both corners missed: NaN
        right_eye = np.nanmean(lm[[36, 39]], axis=0)
        left_eye = np.nanmean(lm[[42, 45]], axis=0)
        mouth = np.nanmean(lm[[48, 54]], axis=0)
    if not (np.all(np.isfinite(right_eye)) and np.all(np.isfinite(left_eye))):
        return None
    if not np.all(np.isfinite(mouth)):
        return None
    return FaceFrame.from_points(right_eye, left_eye, mouth)


def _vote(stack: np.ndarray, quality: np.ndarray, query: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-landmark consensus of several views' points.

    stack : (n, 68, 3) points on the surface; quality : (n, 68) int (see
    ``ScanLandmarker._cast_with_depth``); each landmark votes with its points of quality 1 or 2,
    or, when it has none, with its guesses.
    Returns (landmarks (68, 3) on the surface, spread (68,): median distance of the voting points
    from the consensus, mm).
    """
    floor = np.minimum(quality.max(axis=0), 1)
    use = quality >= floor[None]
    votes = np.where(use[..., None], stack, np.nan)
    med = np.nanmedian(votes, axis=0)
    out = query.closest(med).points
    spread = np.nanmedian(np.linalg.norm(votes - out[None], axis=2), axis=0)
    return out, spread


# ------------------------------------------------------------------------------------------
# overlay


def draw_overlay(
    image: np.ndarray,
    points: np.ndarray,
    confidence: float | None = None,
    source: str | None = None,
) -> Any:
    """Draw iBUG-68 pixels (68, 2) on an RGB render (S, S, 3) uint8: features joined by lines,
    NoW's 7 points as larger red dots, the confidence (and where the points come from, when
    given) in a corner. Returns (S, S, 3) uint8."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    p = np.asarray(points, dtype=np.float64)
    for a, b in ((0, 17), (17, 22), (22, 27), (27, 31), (31, 36)):
        draw.line([tuple(q) for q in p[a:b]], fill=(60, 200, 255), width=1)
    for a, b in ((36, 42), (42, 48), (48, 60), (60, 68)):
        ring = [tuple(q) for q in p[a:b]] + [tuple(p[a])]
        draw.line(ring, fill=(60, 200, 255), width=1)
    r = max(1.0, img.width / 256)
    for x, y in p:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 0))
    for i in NOW7_FROM_68:
        x, y = p[i]
        draw.ellipse([x - 2 * r, y - 2 * r, x + 2 * r, y + 2 * r], outline=(255, 40, 40), width=2)
    if confidence is not None:
        draw.text((4, 4), f"confidence {confidence:.2f}", fill=(255, 255, 0))
    if source is not None:
        draw.text((4, 16), f"points: {source}", fill=(255, 255, 0))
    return np.asarray(img)


def detect_scan_landmarks(
    mesh: Mesh | str | Path, config: ScanLandmarkConfig | None = None
) -> ScanLandmarks:
    """Landmarks of one scan (a :class:`~facehd.mesh.Mesh` or a mesh file); a one-off
    convenience that builds and closes a :class:`ScanLandmarker` (reuse one for many scans).

    Raises
    ------
    InputFileError
        An unreadable or empty mesh file.
    ScanLandmarkError
        See :meth:`ScanLandmarker.detect`.
    """
    from facehd.mesh import load_mesh

    name = "<scan>"
    if not isinstance(mesh, Mesh):
        name = str(mesh)
        mesh = load_mesh(mesh)
    with ScanLandmarker(config) as lm:
        return lm.detect(mesh, name=name)

"""The FaceScape single-view benchmark protocol (Zhu et al., arXiv 2111.01082), step by step.

What the official evaluator (``facescape/benchmark/code/evaluator.py`` with ``mesh_util.py``,
``renderer.py`` and ``pred_loader.py``) computes for one image:

1. **Placement** (no ICP, no fitted rotation or scale). A prediction is read in the image-aligned
   format of the official generic loader (PRNet / 3DDFA_V2): ``x``, ``y`` in pixels of the 256-px
   image with ``y`` up, ``z`` towards the viewer in pixel units (:func:`place_image_prediction`).
   Wild: orthographic, normalised to ``[-1, 1]``, then both meshes times the image's pupil scale
   (mm). Lab: the loader's approximate perspective placement, the ground truth times
   ``62.85`` mm (the mean pupil distance) and moved into the camera by ``Rt``. The official
   per-method loaders, reading each method's own files into the same frame, are in
   :mod:`benchmarks.facescape_loaders`.
2. **Depth alignment**: 256 x 256 depth maps of both meshes (pyrender in the official code; here
   one ray per pixel, cast where pyrender's multisampled depth read-back samples the pixel,
   :data:`facehd.depthmap.PYRENDER_SAMPLE_OFFSET`, nearest front-facing triangle, i.e. with
   back faces culled as pyrender's default single-sided material does); ``dz`` minimises the
   summed absolute depth difference over the pixels both cover, found with SciPy's SLSQP from 0
   exactly as the official code does. Wild: the prediction moves by ``dz`` along the view axis;
   lab: its vertices are scaled by ``mean_z / (mean_z - dz)`` (a slide along the camera rays).
   Exact depths differ from pyrender's on the lab split: its depth buffer, at 1.2-1.4 m from a
   1200 px camera, steps by about 0.6 mm (and depends on the graphics driver), which moves the
   official ``dz`` by up to 0.5 mm and a single image's CD by up to 0.1 mm (group means by
   about 0.01 mm); on the wild split the two agree to about 1e-4 mm.
   ``depth_renderer="pyrender"`` (``bench --facescape-depth pyrender``) renders the depth maps
   with pyrender as the official code does, so that the two agree where both run on one
   machine. Depth maps and the shift are :mod:`facehd.depthmap`'s.
3. **Cylindrical maps**: both meshes are centred on the head centre and rotated by the transpose of
   the head rotation; 256 x 256 rays cast outward from the vertical axis (rows ``y`` from +150 to
   -150 mm, columns at azimuth ``j 2 pi / 255``) record the radial distance and triangle of the
   **outermost** hit (the official code keeps the last of Embree's hits, which come nearest
   first).
4. **Metrics** on the pixels hit by both meshes: CR = common / GT-hit pixels; CD = symmetric
   point-to-surface distance between the two masked maps turned back into grid meshes
   (:func:`cylinder_to_mesh`, triangles with a radial jump >= 15 mm dropped), mean of all
   distances; MNE = mean over common pixels of ``arccos`` of the dot product of the two hit
   triangles' normals, each transformed as ``(n + 1) / |n + 1|`` first (a quirk of the official
   code, kept for comparability). Steps 3 and 4 are :mod:`facehd.cylinder`'s, which
   :mod:`models.evaluate` also scores HRN's levels with.

Deviations, all where the official code fails: the dot product is clipped to ``[-1, 1]``
(identical normals give ``arccos(1 + 4e-16) = NaN`` there, and a NaN mean); a masked map reaching
the bottom row makes the official ``cylinder2mesh`` index past the grid and crash, here those
triangles are dropped.

Summary: NaN-mean per group plus the fraction of images done. Wild groups by yaw (image index
0-99: 0-5 deg, 100-199: 5-30, 200-299: 30-60, 300-399: 60-90). Lab groups by view angle (view 0:
0 deg, 1-8: 30, 9-10: 60; as in the official ``show.py``, only the 1200 px focal length enters
these groups) and by focal length (index 0/1/2: 1200/600/300 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facehd.cylinder import (
    CylinderMap,
    chamfer_cd,
    cylinder_scores,
    cylinder_to_mesh,
    cylindrical_map,
    mean_normal_error,
)
from facehd.depthmap import (
    RENDER_SIZE,
    Orthographic,
    Perspective,
    depth_shift,
    render_depth,
    slide_to_depth,
)
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh

__all__ = [
    "STD_PUPIL_DIST",
    "RENDER_SIZE",
    "LAB_FOCAL_LENGTHS",
    "Orthographic",
    "Perspective",
    "CylinderMap",
    "FaceScapeResult",
    "place_image_prediction",
    "place_orthographic",
    "with_render_bias",
    "unit_face_width",
    "render_depth",
    "depth_shift",
    "cylindrical_map",
    "cylinder_to_mesh",
    "chamfer_cd",
    "mean_normal_error",
    "evaluate_facescape",
    "wild_group",
    "lab_groups",
]

#: Mean pupil distance of male and female adults (mm), the benchmark's scale standard.
STD_PUPIL_DIST = (64.0 + 61.7) / 2.0
#: Lab focal lengths (px) by focal index.
LAB_FOCAL_LENGTHS: tuple[float, ...] = (1200.0, 600.0, 300.0)
_ORTHO_SCALE = 128.0
_RENDER_BIAS = 2.0


@dataclass(frozen=True)
class FaceScapeResult:
    """FaceScape metrics of one image."""

    cd: float
    """Chamfer distance (mm)."""
    mne: float
    """Mean normal error (rad, with the official normal transform)."""
    cr: float
    """Completeness rate."""
    delta_z: float
    """Depth shift found in step 2 (official units: pixels for wild, mm for lab)."""


# ------------------------------------------------------------------------------------------
# placement


def place_image_prediction(vertices: np.ndarray, focal: float | None = None) -> np.ndarray:
    """Place an image-aligned prediction in the evaluation camera (the official generic loader).

    ``v / 128``, ``x, y`` shifted by -1 (so the image spans ``[-1, 1]``), then
    :func:`place_orthographic`: wild (``focal`` None), ``z`` shifted to mean ``-2``; lab,
    additionally flipped to the OpenCV camera (``y``, ``z`` negated), ``z`` re-centred at
    ``focal / 128`` and everything divided by a third of the vertical extent (the official
    approximation; the depth alignment then fixes the distance).

    Parameters
    ----------
    vertices : (V, 3) float, ``x`` = column and ``y`` = (256 - row) in pixels, ``z`` in pixels
        towards the viewer (any offset).
    focal : the lab image's focal length in pixels, or None for wild images.

    Returns
    -------
    (V, 3) float64 in normalised units (wild) or pupil-distance units (lab).
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"place_image_prediction: expected (V, 3) vertices, got {v.shape}")
    v = v / (RENDER_SIZE / 2)
    v[:, :2] -= 1.0
    return place_orthographic(v, focal)


def place_orthographic(vertices: np.ndarray, focal: float | None = None) -> np.ndarray:
    """The official loaders' common tail from the normalised orthographic frame.

    The frame: the 256-px image spans ``[-1, 1]`` in ``x`` (right) and ``y`` (up), ``z`` towards
    the viewer in the same unit. Wild (``focal`` None): ``z`` shifted to mean ``-2`` (the
    official "render bias"). Lab ("orthogonal to perspective"): ``y``, ``z`` negated (OpenCV
    camera), ``z`` re-centred at ``focal / 128``, then everything divided by a third of the
    vertical extent (:func:`unit_face_width`).

    Returns
    -------
    (V, 3) float64, a new array.
    """
    v = np.array(vertices, dtype=np.float64)
    if focal is None:
        return with_render_bias(v)
    v *= np.array([1.0, -1.0, -1.0])
    v[:, 2] -= v[:, 2].mean()
    v[:, 2] += focal / (RENDER_SIZE / 2)
    return unit_face_width(v)


def with_render_bias(vertices: np.ndarray) -> np.ndarray:
    """The official wild loaders' last step: ``z`` shifted to mean ``-2`` (in place)."""
    vertices[:, 2] -= vertices[:, 2].mean() + _RENDER_BIAS
    return vertices


def unit_face_width(vertices: np.ndarray) -> np.ndarray:
    """The official lab loaders' last step ("scale to make face width = 1"): ``v`` divided by a
    third of its vertical (``y``) extent.

    Raises
    ------
    DegenerateInputError
        The mesh has no vertical extent.
    """
    extent = vertices[:, 1].max() - vertices[:, 1].min()
    if not extent > 0:
        raise DegenerateInputError("the prediction has no vertical extent")
    return vertices / (extent / 3.0)


# ------------------------------------------------------------------------------------------
# one image


def evaluate_facescape(
    gt: Mesh,
    prediction: Mesh,
    camera: Orthographic | Perspective,
    rotation: np.ndarray,
    head_centre: np.ndarray,
    *,
    depth_scale: float = 1.0,
    size: int = RENDER_SIZE,
    depth_renderer: str = "rays",
) -> FaceScapeResult:
    """Steps 2-4 for one image, meshes already placed in the camera and scaled to mm.

    Parameters
    ----------
    gt : ground truth in the camera frame (mm).
    prediction : the placed prediction (mm), before the depth alignment.
    camera : :class:`Orthographic` for wild images (``mag`` = the pupil scale), :class:`Perspective`
        for lab images.
    rotation : (3, 3) head rotation; both meshes are rotated by its transpose for the cylinder.
    head_centre : (3,) head centre in the camera frame (mm).
    depth_scale : factor of the depth search's units (official wild: ``128 / pupil_scale``).
    size : map resolution (256).
    depth_renderer : how step 2's depth maps are made: ``rays`` (exact depths, the default) or
        ``pyrender`` (the official evaluator's OpenGL render,
        :func:`facehd.depthmap.pyrender_depth`).

    A lab prediction that covers no pixel of the ground truth's depth map cannot be slid onto it:
    it scores CR 0, with CD, MNE and ``delta_z`` NaN.
    """
    rot = np.asarray(rotation, dtype=np.float64)
    centre = np.asarray(head_centre, dtype=np.float64).reshape(3)
    if rot.shape != (3, 3):
        raise ValueError(f"evaluate_facescape: rotation must be (3, 3), got {rot.shape}")
    if isinstance(camera, Orthographic):
        dz = depth_shift(
            render_depth(gt, camera, size, renderer=depth_renderer),
            render_depth(prediction, camera, size, renderer=depth_renderer),
            depth_scale,
        )
        pv = prediction.vertices.copy()
        pv[:, 2] -= dz / depth_scale
    else:
        try:
            pv, dz = slide_to_depth(
                gt, prediction, camera, size, depth_scale=depth_scale, renderer=depth_renderer
            )
        except DegenerateInputError:
            # no pixel shows both: the official slide scales by the mean depth of no pixel (NaN)
            # and leaves nothing on the cylinder; the image counts with CR 0, as a wild
            # prediction beside its face does
            return FaceScapeResult(float("nan"), float("nan"), 0.0, float("nan"))
    gt_std = Mesh((gt.vertices - centre) @ rot, gt.faces)
    pred_std = Mesh((pv - centre) @ rot, prediction.faces)
    scores = cylinder_scores(gt_std, pred_std, size)
    return FaceScapeResult(scores.cd, scores.mne, scores.cr, dz)


# ------------------------------------------------------------------------------------------
# groups


def wild_group(index: int) -> str:
    """Yaw bin of a wild image (by its index)."""
    if index < 100:
        return "0-5"
    if index < 200:
        return "5-30"
    if index < 300:
        return "30-60"
    return "60-90"


def lab_groups(focal_index: int, view: int) -> tuple[str | None, str]:
    """(angle group or None, focal group) of a lab image.

    The angle groups (``0``, ``30``, ``60`` degrees) hold the 1200 px images only, as in the
    official ``show.py``; the focal groups hold every view.
    """
    angle = None
    if focal_index == 0:
        angle = "0" if view == 0 else ("30" if view <= 8 else "60")
    focal = f"f{int(LAB_FOCAL_LENGTHS[focal_index])}"
    return angle, focal

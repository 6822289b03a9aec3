"""Depth maps and the depth alignment of FaceScape's single-view protocol.

Before its cylindrical maps (:mod:`facehd.cylinder`), FaceScape's benchmark places a prediction in
the image's camera and slides it in depth onto the ground truth (Zhu et al., arXiv 2111.01082;
the official ``evaluator.py``): depth maps of both meshes (:func:`render_depth`: pyrender in the
official code, here one ray per pixel centre and the nearest front-facing triangle, as
pyrender's default single-sided material culls back faces), then the shift ``dz`` minimising the
summed absolute depth difference over the pixels both cover (:func:`depth_shift`, SciPy's SLSQP
from 0 as the official code runs it). An orthographic (wild) prediction moves by ``dz`` along the
view axis; a perspective (lab) one is scaled by ``mean_z / (mean_z - dz)`` about the camera,
sliding along the camera rays so that every vertex keeps its pixel (:func:`slide_to_depth`).

:mod:`benchmarks.facescape` runs the whole protocol on a benchmark's images;
:mod:`models.evaluate` places HRN's levels in a synthetic photo's camera with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facehd.cylinder import all_ray_hits
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh

__all__ = [
    "RENDER_SIZE",
    "Orthographic",
    "Perspective",
    "render_depth",
    "depth_shift",
    "slide_to_depth",
]

#: Depth-map resolution of the protocol.
RENDER_SIZE = 256


@dataclass(frozen=True)
class Orthographic:
    """Orthographic camera at the origin looking down ``-z`` (pyrender's), ``y`` up."""

    mag: float
    """Half-width and half-height of the view (``xmag = ymag``)."""
    znear: float = 0.05
    """Near clipping distance."""
    zfar: float = 10000.0
    """Far clipping distance."""


@dataclass(frozen=True)
class Perspective:
    """Pinhole camera (OpenCV convention: looking down ``+z``, ``y`` down)."""

    K: np.ndarray
    """(3, 3) intrinsics; pixel ``(row r, col c)`` has centre ``u = c + 0.5, v = r + 0.5``."""
    znear: float = 0.1
    """Near clipping depth."""
    zfar: float = 100000.0
    """Far clipping depth."""


def _pixel_rays(camera: Orthographic | Perspective, size: int) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    r = r.ravel().astype(np.float64)
    c = c.ravel().astype(np.float64)
    if isinstance(camera, Orthographic):
        x = camera.mag * ((2 * c + 1) / size - 1.0)
        y = camera.mag * (1.0 - (2 * r + 1) / size)
        origins = np.stack([x, y, np.zeros_like(x)], axis=1)
        directions = np.tile([0.0, 0.0, -1.0], (len(x), 1))
        return origins, directions
    k = np.asarray(camera.K, dtype=np.float64)
    dx = (c + 0.5 - k[0, 2]) / k[0, 0]
    dy = (r + 0.5 - k[1, 2]) / k[1, 1]
    directions = np.stack([dx, dy, np.ones_like(dx)], axis=1)
    return np.zeros_like(directions), directions


def render_depth(
    mesh: Mesh, camera: Orthographic | Perspective, size: int = RENDER_SIZE
) -> np.ndarray:
    """Depth map as pyrender renders it (back faces culled), 0 where empty.

    Parameters
    ----------
    mesh : the mesh in the camera's frame.
    camera : :class:`Orthographic` (depth = distance along ``-z``) or :class:`Perspective`
        (depth = ``z``).
    size : the image is ``size x size``.

    Returns
    -------
    (size, size) float64, row 0 at the top.
    """
    origins, directions = _pixel_rays(camera, size)
    depth = np.zeros(size * size)
    ray_ids, fids, t = all_ray_hits(mesh, origins, directions)
    if len(fids):
        n = mesh.face_normals[fids]
        front = np.einsum("ij,ij->i", n, directions[ray_ids]) < 0
        keep = front & (t >= camera.znear) & (t <= camera.zfar)
        ray_ids, t = ray_ids[keep], t[keep]
        best = np.full(size * size, np.inf)
        np.minimum.at(best, ray_ids, t)
        hit = np.isfinite(best)
        depth[hit] = best[hit]
    return depth.reshape(size, size)


def depth_shift(depth_gt: np.ndarray, depth_pred: np.ndarray, scale: float = 1.0) -> float:
    """The official ``optimize_Z``: SLSQP from 0 on ``sum |gt - z - pred|`` over common pixels.

    Parameters
    ----------
    depth_gt, depth_pred : (H, W) depth maps (0 = empty).
    scale : factor applied to both maps before the search (the official wild code uses
        ``128 / pupil_scale``); the result is in the scaled units.
    """
    from scipy.optimize import minimize

    mask = (depth_gt != 0) & (depth_pred != 0)
    a = depth_gt * mask * scale
    b = depth_pred * mask * scale

    def objective(z: np.ndarray) -> float:
        return float(np.sum(np.abs(a - z - b)[mask]))

    return float(minimize(objective, 0, method="SLSQP").x[0])


def slide_to_depth(
    gt: Mesh,
    prediction: Mesh,
    camera: Perspective,
    size: int = RENDER_SIZE,
    *,
    depth_scale: float = 1.0,
    gt_depth: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """The protocol's lab-split depth alignment: ``(vertices, dz)``, the prediction's vertices
    scaled by ``mean_z / (mean_z - dz)`` about the camera (each keeps its pixel), ``mean_z`` the
    ground truth's mean depth over the pixels both depth maps cover and ``dz`` the
    :func:`depth_shift` of the two maps (mm).

    Parameters
    ----------
    gt, prediction : both meshes in the camera's frame.
    camera : the image's :class:`Perspective` camera.
    size : depth-map resolution.
    depth_scale : factor of the depth search's units (:func:`depth_shift`'s ``scale``); ``dz`` is
        returned in those units.
    gt_depth : ``render_depth(gt, camera, size)`` when already made (several predictions slid
        onto one ground truth); made here when None.

    Raises
    ------
    DegenerateInputError
        The two meshes cover no common pixel.
    """
    depth_gt = render_depth(gt, camera, size) if gt_depth is None else np.asarray(gt_depth)
    if depth_gt.shape != (size, size):
        raise ValueError(f"slide_to_depth: gt_depth is {depth_gt.shape}, not ({size}, {size})")
    depth_pred = render_depth(prediction, camera, size)
    mask = (depth_gt != 0) & (depth_pred != 0)
    if not mask.any():
        raise DegenerateInputError("the prediction does not overlap the ground truth in the image")
    dz = depth_shift(depth_gt, depth_pred, depth_scale)
    mean_z = float(np.mean(depth_gt[mask]))
    return prediction.vertices * (mean_z / (mean_z - dz / depth_scale)), dz

"""Depth maps and the depth alignment of FaceScape's single-view protocol.

Before its cylindrical maps (:mod:`facehd.cylinder`), FaceScape's benchmark places a prediction in
the image's camera and slides it in depth onto the ground truth (Zhu et al., arXiv 2111.01082;
the official ``evaluator.py``): depth maps of both meshes (:func:`render_depth`: pyrender in the
official code, here one ray per pixel, where pyrender samples it, and the nearest front-facing
triangle, as pyrender's default single-sided material culls back faces; or pyrender itself,
:func:`pyrender_depth`), then the shift ``dz`` minimising the summed absolute depth difference
over the pixels both cover (:func:`depth_shift`, SciPy's SLSQP from 0 as the official code runs
it). An orthographic (wild) prediction moves by ``dz`` along the view axis; a perspective (lab)
one is scaled by ``mean_z / (mean_z - dz)`` about the camera, sliding along the camera rays so
that every vertex keeps its pixel (:func:`slide_to_depth`).

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
    "DEPTH_RENDERERS",
    "PYRENDER_SAMPLE_OFFSET",
    "Orthographic",
    "Perspective",
    "render_depth",
    "pyrender_depth",
    "check_pyrender",
    "depth_shift",
    "slide_to_depth",
]

#: Depth-map resolution of the protocol.
RENDER_SIZE = 256

#: How :func:`render_depth` makes a depth map: ``rays``, one ray per pixel (exact depths);
#: ``pyrender``, the official evaluator's OpenGL render, read back from its depth
#: buffer (needs pyrender and an OpenGL context; its depths step with the buffer's precision and
#: the graphics driver).
DEPTH_RENDERERS = ("rays", "pyrender")

#: Where in its pixel each ray of :func:`render_depth` samples, from the pixel's centre, in
#: pixels (columns right, rows down). pyrender draws into a 4x multisampled framebuffer and
#: reads the depth back through a blit that keeps one sample per pixel, the first, which the
#: standard 4x pattern puts 0.375 px right of and 0.125 px above the pixel's lower left corner
#: (OpenGL's window coordinates, ``y`` up). The official evaluator's depth maps are sampled
#: there, not at the centres: with the centres, an orthographic depth map of a sphere differed
#: from pyrender's (Mesa's llvmpipe) by 0.2 mm (median) on its slopes; with this offset, by its
#: depth buffer's precision (3e-4 mm), and the wild split's CDs by 1e-4 mm instead of 5e-3 mm.
PYRENDER_SAMPLE_OFFSET = (-0.125, 0.375)


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
    r = r.ravel().astype(np.float64) + PYRENDER_SAMPLE_OFFSET[1]
    c = c.ravel().astype(np.float64) + PYRENDER_SAMPLE_OFFSET[0]
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
    mesh: Mesh,
    camera: Orthographic | Perspective,
    size: int = RENDER_SIZE,
    *,
    renderer: str = "rays",
) -> np.ndarray:
    """Depth map as pyrender renders it (back faces culled), 0 where empty: with ``rays``,
    the exact depth where pyrender samples each pixel (:data:`PYRENDER_SAMPLE_OFFSET`).

    Parameters
    ----------
    mesh : the mesh in the camera's frame.
    camera : :class:`Orthographic` (depth = distance along ``-z``) or :class:`Perspective`
        (depth = ``z``).
    size : the image is ``size x size``.
    renderer : ``rays`` (exact depths) or ``pyrender`` (the official
        evaluator's render, :func:`pyrender_depth`); see :data:`DEPTH_RENDERERS`.

    Returns
    -------
    (size, size) float64, row 0 at the top.
    """
    if renderer == "pyrender":
        return pyrender_depth(mesh, camera, size)
    if renderer != "rays":
        raise ValueError(
            f"render_depth: renderer must be one of {DEPTH_RENDERERS}, got {renderer!r}"
        )
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


def pyrender_depth(
    mesh: Mesh, camera: Orthographic | Perspective, size: int = RENDER_SIZE
) -> np.ndarray:
    """The depth map FaceScape's official evaluator renders (its ``renderer.py``), by pyrender.

    Perspective: pyrender's ``IntrinsicsCamera`` from ``K`` with the camera's ``znear`` and
    ``zfar``, posed as the OpenCV camera (the official ``render_cvcam`` with ``Rt`` the
    identity). Orthographic: ``OrthographicCamera(xmag = ymag = mag)`` at the origin, and the
    official correction of pyrender's depth (pyrender turns an orthographic depth buffer into
    depths by the perspective formula; the evaluator's two lines turn it back), in float32 as
    there. Back faces are culled by pyrender's default material. The depths are those of the
    OpenGL depth buffer: a 24-bit buffer at 1.2 m with ``znear`` 0.1 steps by about 0.6 mm, and
    the values depend on the graphics driver, as the official evaluator's do; on one machine the
    two agree.

    Without a display, pyrender needs ``PYOPENGL_PLATFORM`` set to ``egl`` or ``osmesa``; it is
    set to ``egl`` here when unset and no ``DISPLAY`` is there.

    Raises
    ------
    RuntimeError
        pyrender is not installed, or no OpenGL context can be made.
    """
    import os

    if "PYOPENGL_PLATFORM" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["PYOPENGL_PLATFORM"] = "egl"
    import importlib.util

    if importlib.util.find_spec("pyrender") is None:
        raise RuntimeError("the pyrender depth renderer needs pyrender: pip install 'facehd[gl]'")
    try:
        import pyrender
        import trimesh
    except Exception as exc:  # PyOpenGL failing to load the platform's library
        raise RuntimeError(
            f"pyrender could not load OpenGL for PYOPENGL_PLATFORM="
            f"{os.environ.get('PYOPENGL_PLATFORM', '')!r} ({exc}); without a display use egl, or "
            "osmesa with libOSMesa installed"
        ) from None
    scene = pyrender.Scene()
    tm = trimesh.Trimesh(np.asarray(mesh.vertices, np.float64), mesh.faces, process=False)
    scene.add(pyrender.Mesh.from_trimesh(tm))
    n, f = float(camera.znear), float(camera.zfar)
    if isinstance(camera, Orthographic):
        cam = pyrender.OrthographicCamera(xmag=camera.mag, ymag=camera.mag, znear=n, zfar=f)
        scene.add(cam, pose=np.eye(4))
    else:
        k = np.asarray(camera.K, dtype=np.float64)
        cam = pyrender.IntrinsicsCamera(k[0, 0], k[1, 1], k[0, 2], k[1, 2], znear=n, zfar=f)
        scene.add(cam, pose=np.diag([1.0, -1.0, -1.0, 1.0]))  # OpenCV axes -> OpenGL's
    try:
        r = pyrender.OffscreenRenderer(viewport_width=size, viewport_height=size)
    except Exception as exc:  # no display, no EGL / OSMesa: pyrender's own error types vary
        raise RuntimeError(
            f"the pyrender depth renderer could not make an OpenGL context ({exc}); without a "
            "display set PYOPENGL_PLATFORM=egl (or osmesa) before starting facehd"
        ) from None
    try:
        _, depth = r.render(scene)
    finally:
        r.delete()
    depth = np.array(depth, dtype=np.float32)
    if isinstance(camera, Orthographic):
        seen = depth != 0
        d = (f + n - ((2.0 * n * f) / depth[seen])) / (f - n)
        depth[seen] = ((d + (f + n) / (f - n)) * (f - n)) / 2.0
    return depth.astype(np.float64)


def check_pyrender() -> None:
    """Render one triangle with :func:`pyrender_depth`: a ``RuntimeError`` naming what is
    missing (pyrender, an OpenGL context) or wrong (the triangle not where it lies)."""
    tri = Mesh(
        np.array([[-1.0, -1.0, 5.0], [1.0, -1.0, 5.0], [0.0, 1.0, 5.0]]), np.array([[0, 2, 1]])
    )
    depth = pyrender_depth(tri, Perspective(np.array([[8.0, 0, 8], [0, 8.0, 8], [0, 0, 1]])), 16)
    seen = depth[depth > 0]
    if not len(seen) or np.abs(seen - 5.0).max() > 0.01:
        raise RuntimeError(
            "the pyrender depth renderer drew a test triangle 5 units away at depths "
            f"{np.unique(np.round(seen, 3))[:5].tolist()}: this OpenGL context renders wrongly"
        )


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
    renderer: str = "rays",
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
    renderer : how the depth maps are made (:func:`render_depth`'s ``renderer``).

    Raises
    ------
    DegenerateInputError
        The two meshes cover no common pixel.
    """
    depth_gt = (
        render_depth(gt, camera, size, renderer=renderer)
        if gt_depth is None
        else np.asarray(gt_depth)
    )
    if depth_gt.shape != (size, size):
        raise ValueError(f"slide_to_depth: gt_depth is {depth_gt.shape}, not ({size}, {size})")
    depth_pred = render_depth(prediction, camera, size, renderer=renderer)
    mask = (depth_gt != 0) & (depth_pred != 0)
    if not mask.any():
        raise DegenerateInputError("the prediction does not overlap the ground truth in the image")
    dz = depth_shift(depth_gt, depth_pred, depth_scale)
    mean_z = float(np.mean(depth_gt[mask]))
    return prediction.vertices * (mean_z / (mean_z - dz / depth_scale)), dz

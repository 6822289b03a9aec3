"""Rigid and similarity ICP of points onto a triangle mesh.

Two solvers, one result type:

- ``method="open3d"`` (the default for rigid alignment): Open3D's legacy point-to-plane ICP
  (``o3d.pipelines.registration.registration_icp`` with ``TransformationEstimationPointToPlane``);
  correspondences are the nearest target *vertices*, whose area-weighted vertex normals give the
  planes.
- ``method="surface"`` (always used with ``with_scale=True``): facehd's Gauss-Newton on a
  similarity (or a rigid motion) with correspondences = closest points on the target *surface*
  (:class:`facehd.distances.SurfaceQuery`). Each residual is the signed distance along the
  triangle normal where the closest point is inside a triangle, and the distance along the
  point-to-closest-point direction where it lies on an edge or a vertex, so the solver minimises
  the sum of squared point-to-surface distances itself (the NoW refinement step), with a
  step-halving line search on the truncated cost ``sum(min(d, max_distance)^2)``.

With a free scale the squared distances are divided by ``s^2``: distances are measured in the
*source* frame, which is the same as moving the target mesh onto the fixed source points by the
inverse transform (NoW: the prediction moves, distances are in scan millimetres). Measured in the
target frame instead, shrinking the source towards one surface point would always lower the cost.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from facehd._o3d import open3d
from facehd.distances import QueryRangeError, SurfaceQuery
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh
from facehd.transforms import Similarity, rotation_from_axis_angle

__all__ = ["ICPResult", "icp_point_to_plane", "crop_points"]

_ITER_LINE = re.compile(r"ICP Iteration #(\d+)")


@dataclass
class ICPResult:
    """Outcome of :func:`icp_point_to_plane`."""

    transform: Similarity
    """``T_target_from_source``: maps the source points onto the target."""
    rmse: float
    """Root-mean-square distance of the inlier correspondences (target frame, mm): to the nearest
    target vertex for ``"open3d"`` (Open3D's inlier RMSE), to the target surface for
    ``"surface"``."""
    fitness: float
    """Fraction of the (cropped) source points with a correspondence within ``max_distance``."""
    iterations: int
    """Iterations performed."""
    converged: bool
    """Whether the convergence test was met before ``max_iterations``."""
    n_points: int = 0
    """Number of source points used (after cropping)."""


def crop_points(
    points: np.ndarray, center: np.ndarray | None, radius: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the points within ``radius`` of ``center``.

    Parameters
    ----------
    points : (N, 3) float
    center : (3,) float, or None (no crop; then ``radius`` must be None too).
    radius : float > 0, or None.

    Returns
    -------
    (kept points (M, 3), mask (N,) bool)
    """
    pts = np.asarray(points, dtype=np.float64)
    if (center is None) != (radius is None):
        raise ValueError("crop: give both crop_center and crop_radius, or neither")
    if center is None:
        return pts, np.ones(len(pts), dtype=bool)
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (3,):
        raise ValueError(f"crop_center: expected shape (3,), got {c.shape}")
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"crop_radius: expected a positive number, got {radius}")
    mask = np.einsum("ij,ij->i", pts - c, pts - c) <= float(radius) ** 2
    return pts[mask], mask


def icp_point_to_plane(
    source_points: np.ndarray,
    target: Mesh,
    *,
    init: Similarity | None = None,
    max_distance: float = 10.0,
    crop_center: np.ndarray | None = None,
    crop_radius: float | None = None,
    with_scale: bool = False,
    max_iterations: int = 50,
    tolerance: float = 1e-9,
    method: Literal["open3d", "surface"] = "open3d",
) -> ICPResult:
    """Align source points to a target mesh by point-to-plane ICP.

    Parameters
    ----------
    source_points : (N, 3) float, source frame (mm).
    target : Mesh, target frame (mm), with at least one face.
    init : initial ``T_target_from_source`` (identity when None). A rigid solve keeps its scale.
    max_distance : correspondences farther than this (target frame, mm) are ignored; ``inf``
        keeps all (the NoW refinement).
    crop_center, crop_radius : use only the source points within ``crop_radius`` of
        ``crop_center`` (both in the source frame).
    with_scale : also estimate the scale (the ``"surface"`` solver; see the module docstring for
        the source-frame cost).
    max_iterations : iteration cap.
    tolerance : ``"open3d"``: Open3D's criterion, stop when both the fitness and the inlier RMSE
        change by less than this; ``"surface"``: stop when an update moves no point by more than
        ``tolerance * max(radius of the points, 1)`` or the cost falls by less than
        ``tolerance`` relative.
    method : ``"open3d"`` (rigid, nearest-vertex correspondences) or ``"surface"``.

    Returns
    -------
    ICPResult

    Raises
    ------
    DegenerateInputError
        Fewer than 3 source points after cropping, or none within ``max_distance``.
    """
    src = np.asarray(source_points, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"source_points: expected an (N, 3) array, got shape {src.shape}")
    if not np.isfinite(src).all():
        raise ValueError("source_points: contains NaN or inf")
    if not isinstance(target, Mesh):
        raise ValueError(f"target: expected a Mesh, got {type(target).__name__}")
    if target.n_faces == 0:
        raise DegenerateInputError("icp_point_to_plane: the target mesh has no faces")
    if not max_distance > 0:
        raise ValueError(f"max_distance: expected > 0, got {max_distance}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations: expected >= 1, got {max_iterations}")
    if method not in ("open3d", "surface"):
        raise ValueError(f"method: expected 'open3d' or 'surface', got {method!r}")
    src, _ = crop_points(src, crop_center, crop_radius)
    if len(src) < 3:
        raise DegenerateInputError(
            f"icp_point_to_plane: {len(src)} source points left after cropping (need >= 3)"
        )
    init = Similarity.identity() if init is None else init
    if with_scale or method == "surface":
        return _icp_surface(src, target, init, max_distance, with_scale, max_iterations, tolerance)
    return _icp_open3d(src, target, init, max_distance, max_iterations, tolerance)


# ------------------------------------------------------------------------------------------
# Open3D rigid point-to-plane


def _icp_open3d(
    src: np.ndarray,
    target: Mesh,
    init: Similarity,
    max_distance: float,
    max_iterations: int,
    tolerance: float,
) -> ICPResult:
    o3d = open3d()
    reg = o3d.pipelines.registration
    normals = target.vertex_normals
    used = np.linalg.norm(normals, axis=1) > 0  # vertices in at least one non-flat face
    tgt = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(target.vertices[used]))
    tgt.normals = o3d.utility.Vector3dVector(normals[used])
    moved = init.apply(src)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(moved))
    criteria = reg.ICPConvergenceCriteria(
        relative_fitness=tolerance, relative_rmse=tolerance, max_iteration=int(max_iterations)
    )
    # Open3D reports each iteration in its debug log (routed to Python's stdout); counting those
    # lines gives the number of iterations, which its result object does not carry.
    log = io.StringIO()
    old_level = o3d.utility.get_verbosity_level()
    try:
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Debug)
        with contextlib.redirect_stdout(log):
            res = reg.registration_icp(
                pcd,
                tgt,
                float(min(max_distance, 1e30)),
                np.eye(4),
                reg.TransformationEstimationPointToPlane(),
                criteria,
            )
    finally:
        o3d.utility.set_verbosity_level(old_level)
    if res.fitness == 0:
        raise DegenerateInputError(
            f"icp_point_to_plane: no source point lies within max_distance={max_distance} of "
            "the target"
        )
    counted = [int(m) for m in _ITER_LINE.findall(log.getvalue())]
    iterations = max(counted) + 1 if counted else max_iterations
    rigid = Similarity.from_matrix(np.asarray(res.transformation))
    return ICPResult(
        transform=rigid.compose(init),
        rmse=float(res.inlier_rmse),
        fitness=float(res.fitness),
        iterations=int(iterations),
        converged=bool(iterations < max_iterations),
        n_points=len(src),
    )


# ------------------------------------------------------------------------------------------
# Gauss-Newton on closest surface points


@dataclass
class _State:
    transform: Similarity
    moved: np.ndarray  # (N, 3) transformed source points
    cost: float  # truncated source-frame cost
    residuals: np.ndarray  # (M,) signed residuals of the inliers (target frame)
    directions: np.ndarray  # (M, 3) unit residual directions
    inliers: np.ndarray  # (N,) bool
    distances: np.ndarray  # (N,) target-frame distances


def _evaluate(
    query: SurfaceQuery, src: np.ndarray, transform: Similarity, max_distance: float
) -> _State:
    moved = transform.apply(src)
    cp = query.closest(moved, neighbours=False)
    d = cp.distances
    inl = d <= max_distance
    cost = float(np.sum(np.minimum(d, max_distance) ** 2)) / transform.scale**2
    diff = moved[inl] - cp.points[inl]
    dist = d[inl]
    fn = query.mesh.face_normals[cp.face_ids[inl]]
    interior = (cp.barycentrics[inl] > 1e-9).all(axis=1)
    mesh = query.mesh
    extent = float(np.ptp(mesh.vertices[mesh.used_vertices], axis=0).max()) or 1.0
    use_dir = ~interior & (dist > 1e-12 * extent)
    u = fn.copy()
    u[use_dir] = diff[use_dir] / dist[use_dir, None]
    r = np.einsum("ij,ij->i", u, diff)
    return _State(transform, moved, cost, r, u, inl, d)


def _icp_surface(
    src: np.ndarray,
    target: Mesh,
    init: Similarity,
    max_distance: float,
    with_scale: bool,
    max_iterations: int,
    tolerance: float,
) -> ICPResult:
    query = SurfaceQuery(target)
    state = _evaluate(query, src, init, max_distance)
    min_points = 7 if with_scale else 6
    converged = False
    iterations = 0
    step = 1.0
    delta: np.ndarray | None = None
    center = np.zeros(3)
    radius = 1.0
    while iterations < max_iterations:
        if delta is None:
            if np.count_nonzero(state.inliers) < min_points:
                raise DegenerateInputError(
                    f"icp_point_to_plane: {np.count_nonzero(state.inliers)} source points within "
                    f"max_distance={max_distance} of the target (need >= {min_points})"
                )
            y = state.moved[state.inliers]
            center = y.mean(axis=0)
            yc = y - center
            radius = max(float(np.sqrt(np.einsum("ij,ij->i", yc, yc).max())), 1.0)
            u = state.directions
            r = state.residuals
            # columns: scale (about the centroid), rotation (about the centroid), translation
            jac = np.concatenate(
                [np.einsum("ij,ij->i", u, yc)[:, None], np.cross(yc, u), u], axis=1
            )
            s = state.transform.scale
            jac = jac / s
            res = r / s
            jac[:, 0] -= res  # d(1/s)/d(log s) = -1/s: distances measured in the source frame
            if not with_scale:
                jac = jac[:, 1:]
            delta = _solve(jac, res)
            step = 1.0
        iterations += 1
        candidate = _candidate(
            query, src, state.transform, step * delta, center, with_scale, max_distance
        )
        moved_by = _displacement(step * delta, radius, with_scale)
        if candidate is not None and candidate.cost <= state.cost * (1.0 + 1e-12) + 1e-300:
            decrease = state.cost - candidate.cost
            state = candidate
            delta = None
            if moved_by <= tolerance * radius or decrease <= tolerance * max(state.cost, 1e-300):
                converged = True
                break
        else:
            # the step overshot: halve it; a vanishing step means we are at the minimum
            step *= 0.5
            if moved_by * 0.5 <= tolerance * radius:
                converged = True
                break
    inl = state.inliers
    if not inl.any():
        raise DegenerateInputError(
            f"icp_point_to_plane: no source point lies within max_distance={max_distance}"
        )
    return ICPResult(
        transform=state.transform,
        rmse=float(np.sqrt(np.mean(state.distances[inl] ** 2))),
        fitness=float(inl.mean()),
        iterations=iterations,
        converged=converged,
        n_points=len(src),
    )


def _candidate(
    query: SurfaceQuery,
    src: np.ndarray,
    current: Similarity,
    delta: np.ndarray,
    center: np.ndarray,
    with_scale: bool,
    max_distance: float,
) -> _State | None:
    """The state after the step ``delta`` from ``current``, or None where the step goes where
    floats cannot follow (a scale, its inverse or its square beyond float64; points beyond the
    ray engine's float32): an overshoot, as a step that raised the cost is."""
    try:
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            moved = _update(delta, center, with_scale).compose(current)
            moved.inverse()
    except ValueError:  # Similarity refuses a scale that is not finite and positive
        return None
    if not 0.0 < moved.scale * moved.scale < np.inf:  # the cost divides by it
        return None
    try:
        return _evaluate(query, src, moved, max_distance)
    except QueryRangeError:
        return None


def _solve(jac: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Gauss-Newton step: least-squares solution of ``jac @ delta = -res``."""
    # column scaling keeps the normal equations well conditioned
    norms = np.linalg.norm(jac, axis=0)
    norms[norms == 0] = 1.0
    sol, *_ = np.linalg.lstsq(jac / norms, -res, rcond=None)
    return sol / norms


def _update(delta: np.ndarray, center: np.ndarray, with_scale: bool) -> Similarity:
    """``x -> e^sigma R(omega) (x - c) + c + tau`` for ``delta = [sigma,] omega, tau``."""
    if with_scale:
        sigma, omega, tau = delta[0], delta[1:4], delta[4:7]
    else:
        sigma, omega, tau = 0.0, delta[0:3], delta[3:6]
    scale = float(np.exp(sigma))
    rot = rotation_from_axis_angle(omega)
    return Similarity(scale, rot, center + tau - scale * rot @ center)


def _displacement(delta: np.ndarray, radius: float, with_scale: bool) -> float:
    """Upper bound of how far an update moves a point within ``radius`` of the centroid."""
    if with_scale:
        sigma, omega, tau = delta[0], delta[1:4], delta[4:7]
    else:
        sigma, omega, tau = 0.0, delta[0:3], delta[3:6]
    with np.errstate(over="ignore"):  # a step past float64's scales moves points "inf"
        grow = abs(np.expm1(sigma))
    return float(grow * radius + np.linalg.norm(omega) * radius + np.linalg.norm(tau))

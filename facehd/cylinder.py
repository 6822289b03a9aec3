"""Cylindrical maps of a face and the scores FaceScape's benchmark takes on them.

FaceScape's single-view protocol (Zhu et al., arXiv 2111.01082; the paper's Tables 1 and 3 report
its CD and MNE) compares two meshes, both already centred on the head centre and turned to face
``+z`` with ``y`` up, through their cylindrical maps:

1. :func:`cylindrical_map`: 256 x 256 rays cast outward from the vertical axis (rows ``y`` from
   +150 to -150 mm, columns at azimuth ``j 2 pi / 255``) keep the radial distance and triangle of
   the **outermost** hit.
2. :func:`cylinder_scores` on the pixels hit by both maps: CR = common / ground-truth pixels; CD
   (:func:`chamfer_cd`) = symmetric point-to-surface distance between the two masked maps turned
   back into grid meshes (:func:`cylinder_to_mesh`); MNE (:func:`mean_normal_error`) = mean angle
   between the two hit triangles' normals, each transformed as ``(n + 1) / |n + 1|`` first (a
   quirk of the official code, kept for comparability).

:mod:`benchmarks.facescape` places a benchmark's meshes before these steps;
:mod:`models.evaluate` scores HRN's levels against synthetic truth with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facehd._o3d import open3d
from facehd.distances import SurfaceQuery, surface_centre
from facehd.mesh import Mesh

__all__ = [
    "CYLINDER_SIZE",
    "CylinderMap",
    "CylinderScores",
    "all_ray_hits",
    "cylindrical_map",
    "cylinder_to_mesh",
    "chamfer_cd",
    "mean_normal_error",
    "cylinder_scores",
]

#: Cylindrical-map resolution of the protocol.
CYLINDER_SIZE = 256


@dataclass(frozen=True)
class CylinderMap:
    """Outermost hits of the cylindrical rays."""

    radius: np.ndarray
    """(H, W) radial distance of the outermost hit, 0 where the ray misses."""
    normals: np.ndarray
    """(H, W, 3) unit normal of the triangle hit there (zero where missed or degenerate)."""


def _ray_scene(mesh: Mesh) -> tuple[object, np.ndarray]:
    o3d = open3d()
    centre = surface_centre(mesh, "ray casting")
    scene = o3d.t.geometry.RaycastingScene(nthreads=1)
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(mesh.vertices - centre, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)),
    )
    return scene, centre


def all_ray_hits(
    mesh: Mesh, origins: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every intersection of every ray: (ray ids, face ids, t) with ``t`` recomputed in float64."""
    o3d = open3d()
    scene, centre = _ray_scene(mesh)
    rays = np.concatenate([origins - centre, directions], axis=1).astype(np.float32)
    ans = scene.list_intersections(o3d.core.Tensor(np.ascontiguousarray(rays)), nthreads=1)
    ray_ids = ans["ray_ids"].numpy().astype(np.int64)
    fids = ans["primitive_ids"].numpy().astype(np.int64)
    if len(fids) == 0:
        return ray_ids, fids, np.zeros(0)
    tri = mesh.vertices[mesh.faces[fids]]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    o, d = origins[ray_ids], directions[ray_ids]
    den = np.einsum("ij,ij->i", n, d)
    num = np.einsum("ij,ij->i", n, tri[:, 0] - o)
    t32 = ans["t_hit"].numpy().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(np.abs(den) > 0, num / den, t32)
    t = np.where(np.isfinite(t), t, t32)
    return ray_ids, fids, t


def cylindrical_map(
    mesh: Mesh,
    size: int = CYLINDER_SIZE,
    half_height: float = 150.0,
) -> CylinderMap:
    """Outermost hits of rays cast outward from the ``y`` axis (mesh already centred/rotated).

    Row ``i`` casts at ``y = linspace(half_height, -half_height, size)[i]``, column ``j`` in the
    direction ``(-sin a, 0, -cos a)`` with ``a = j 2 pi / (size - 1)``.
    """
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ang = j.ravel() * 2.0 * np.pi / (size - 1)
    directions = np.stack([-np.sin(ang), np.zeros_like(ang), -np.cos(ang)], axis=1)
    origins = np.zeros_like(directions)
    origins[:, 1] = np.linspace(half_height, -half_height, size)[i.ravel()]
    radius = np.zeros(size * size)
    normals = np.zeros((size * size, 3))
    ray_ids, fids, t = all_ray_hits(mesh, origins, directions)
    keep = t >= 0
    ray_ids, fids, t = ray_ids[keep], fids[keep], t[keep]
    if len(t):
        order = np.lexsort((t, ray_ids))  # by ray, then t ascending: the last per ray is outermost
        last = np.ones(len(order), dtype=bool)
        last[:-1] = ray_ids[order][1:] != ray_ids[order][:-1]
        sel = order[last]
        radius[ray_ids[sel]] = t[sel]
        normals[ray_ids[sel]] = mesh.face_normals[fids[sel]]
    return CylinderMap(radius.reshape(size, size), normals.reshape(size, size, 3))


def cylinder_to_mesh(cyl: np.ndarray, threshold: float = 15.0, half_height: float = 150.0) -> Mesh:
    """The official ``cylinder2mesh``: a grid mesh of a (masked) cylindrical radius map.

    Pixel ``(i, j)`` becomes the vertex ``(-r sin a_j, y_i, -r cos a_j)``; it starts the two
    triangles ``(k, k+1, k+W)`` and ``(k+W+1, k+W, k+1)`` (``k = i W + j``) when it is non-zero and
    its radius differs by less than ``threshold`` from its lower, right and lower-right neighbours
    (wrapping around, as ``np.roll`` does). Triangles that would index past the grid (bottom row)
    are dropped; unreferenced vertices are removed.

    Parameters
    ----------
    cyl : (H, W) radial distances, 0 = background.
    """
    cyl = np.asarray(cyl, dtype=np.float64)
    h, w = cyl.shape
    ii, jj = np.indices((h, w))
    phi = jj * 2.0 * np.pi / (w - 1)
    # row i at y = half_height - 2 half_height i / (H - 1), as cylindrical_map casts it (the
    # official code builds this from W: the same for its square maps)
    ys = np.repeat(-np.linspace(-half_height, half_height, h)[:, None], w, axis=1)
    verts = np.stack((cyl * (-np.sin(phi)), ys, cyl * (-np.cos(phi))), axis=2).reshape(h * w, 3)
    diff = np.stack(
        [
            cyl - np.roll(cyl, -1, axis=0),
            cyl - np.roll(cyl, -1, axis=1),
            cyl - np.roll(np.roll(cyl, -1, axis=0), -1, axis=1),
        ],
        axis=2,
    )
    valid = (np.abs(diff).max(axis=2) < threshold) & (cyl != 0)
    k = (ii * w + jj)[valid]
    faces = np.concatenate(
        [np.stack([k, k + 1, k + w], axis=1), np.stack([k + w + 1, k + w, k + 1], axis=1)]
    )
    # keep the official face order: the two triangles of a pixel are consecutive
    faces = faces.reshape(2, -1, 3).transpose(1, 0, 2).reshape(-1, 3)
    faces = faces[(faces < h * w).all(axis=1)]
    mesh = Mesh(verts, faces)
    return mesh.subset_vertices(mesh.used_vertices)[0]


def chamfer_cd(mesh_a: Mesh, mesh_b: Mesh) -> float:
    """The official ``compute_chamfer``: mean of all vertex-to-surface distances, both ways.

    Every vertex of ``a`` to the surface of ``b`` and every vertex of ``b`` to the surface of
    ``a``, concatenated, NaNs dropped. NaN when either mesh has no faces.

    The queries run on Open3D's automatic thread count (every core; one in a pool's worker,
    :func:`facehd._o3d.limit_threads`): each distance is the same on any number of threads.
    """
    if mesh_a.n_faces == 0 or mesh_b.n_faces == 0:
        return float("nan")
    b2a = SurfaceQuery(mesh_a).closest(mesh_b.vertices, neighbours=False).distances
    a2b = SurfaceQuery(mesh_b).closest(mesh_a.vertices, neighbours=False).distances
    allv = np.concatenate([a2b, b2a])
    allv = allv[~np.isnan(allv)]
    return float(allv.mean()) if allv.size else float("nan")


def mean_normal_error(normals_gt: np.ndarray, normals_pred: np.ndarray) -> float:
    """The official ``compute_mne_full`` (with the dot product clipped to ``[-1, 1]``).

    Pixels where both normal maps are non-zero count; each normal is mapped to
    ``(n + 1) / |n + 1|`` before ``arccos`` of the dot product.

    Parameters
    ----------
    normals_gt, normals_pred : (H, W, 3) normal maps (zero where nothing was hit).
    """
    a = np.asarray(normals_gt, dtype=np.float64)
    b = np.asarray(normals_pred, dtype=np.float64)
    mask = (a != 0).any(axis=2) & (b != 0).any(axis=2)
    if not mask.any():
        return float("nan")
    a = a[mask] + 1.0
    b = b[mask] + 1.0
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.arccos(np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)).mean())


@dataclass(frozen=True)
class CylinderScores:
    """FaceScape's scores of a prediction against a ground truth (:func:`cylinder_scores`)."""

    cd: float
    """Chamfer distance (mm, or the meshes' units)."""
    mne: float
    """Mean normal error (rad, with the official normal transform)."""
    cr: float
    """Completeness rate: the share of the ground truth's pixels the prediction also covers."""


def cylinder_scores(
    gt: Mesh | CylinderMap, prediction: Mesh | CylinderMap, size: int = CYLINDER_SIZE
) -> CylinderScores:
    """CD, MNE and CR of ``prediction`` against ``gt`` (step 2 of the module docstring), both
    centred on the head centre and turned to face ``+z`` with ``y`` up, or their cylindrical maps
    (:func:`cylindrical_map`: a ground truth scored against several predictions is mapped once).
    NaN where the maps share no pixel (CR 0, or NaN when ``gt`` hits none)."""
    cyl_gt = gt if isinstance(gt, CylinderMap) else cylindrical_map(gt, size)
    cyl_pred = (
        prediction if isinstance(prediction, CylinderMap) else cylindrical_map(prediction, size)
    )
    if cyl_gt.radius.shape != cyl_pred.radius.shape:
        raise ValueError(
            f"cylinder_scores: maps of different sizes, {cyl_gt.radius.shape} and "
            f"{cyl_pred.radius.shape}"
        )
    mask = (cyl_gt.radius != 0) & (cyl_pred.radius != 0)
    n_gt = int((cyl_gt.radius != 0).sum())
    cr = float(mask.sum() / n_gt) if n_gt else float("nan")
    cd = chamfer_cd(
        cylinder_to_mesh(cyl_gt.radius * mask), cylinder_to_mesh(cyl_pred.radius * mask)
    )
    return CylinderScores(cd, mean_normal_error(cyl_gt.normals, cyl_pred.normals), cr)

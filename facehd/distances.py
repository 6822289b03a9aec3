"""Point-to-surface distances, closest points, ray casting, Chamfer and normal errors.

:class:`SurfaceQuery` builds Open3D's Embree ``RaycastingScene`` once per mesh. Embree works in
float32, which alone would limit accuracy to about 1e-7 of the coordinates' magnitude and could pick
the wrong one of two nearly equidistant triangles. So:

1. coordinates are re-centred on the bounding-box centre of the vertices the faces use before they
   go to float32 (a vertex of a face with a NaN or inf coordinate is refused, naming it);
2. Embree's answer gives a candidate triangle; the exact closest point is then recomputed in
   float64 on that triangle **and** on every triangle sharing a vertex with it (which includes
   its edge neighbours), and the nearest is kept (the Embree triangle wins exact ties).

Results are accurate to float64 round-off whenever the true closest triangle is the candidate or
one of its neighbours, which holds except in pathological near-ties between far-apart triangles
(then the distance is still right to float32 precision of the re-centred coordinates).
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np

from facehd._o3d import open3d
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh
from facehd.transforms import as_points

__all__ = [
    "ClosestPoints",
    "RayHits",
    "ChamferResult",
    "SurfaceQuery",
    "point_to_surface",
    "chamfer_distance",
    "normal_angle_error",
    "closest_points_on_triangles",
    "spatial_order",
    "surface_centre",
]

#: Points processed per block (bounds the memory of the float64 refinement).
_BLOCK = 1 << 16


class ClosestPoints(NamedTuple):
    """Closest points on a surface to query points."""

    points: np.ndarray
    """(N, 3) float64 closest points on the surface."""
    distances: np.ndarray
    """(N,) float64 unsigned distances from the queries to ``points``."""
    face_ids: np.ndarray
    """(N,) int64 triangle containing each closest point."""
    barycentrics: np.ndarray
    """(N, 3) float64 weights of the triangle's 3 vertices (sum 1, all >= 0)."""


class RayHits(NamedTuple):
    """First intersections of rays with a surface."""

    t: np.ndarray
    """(N,) float64 ray parameter of the hit (``origin + t * direction``), inf on a miss."""
    face_ids: np.ndarray
    """(N,) int64 hit triangle, -1 on a miss."""
    barycentrics: np.ndarray
    """(N, 3) float64 weights of the hit triangle's vertices; zeros on a miss."""
    points: np.ndarray
    """(N, 3) float64 hit points; NaN on a miss."""


class ChamferResult(NamedTuple):
    """Both directions of a Chamfer distance (unsigned, not squared, in the inputs' units)."""

    a_to_b: np.ndarray
    """(N,) distance from each point of ``a`` to ``b``."""
    b_to_a: np.ndarray
    """(M,) distance from each point of ``b`` to ``a``."""
    mean: float
    """``(mean(a_to_b) + mean(b_to_a)) / 2``."""


def closest_points_on_triangles(
    points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closest point on triangle ``(a_i, b_i, c_i)`` to ``points_i``, vectorised, float64.

    Voronoi-region classification of the point against the triangle's vertices, edges and face
    (Ericson, *Real-Time Collision Detection*, 5.1.5). Zero-area triangles fall back to the
    nearest of their three edges.

    Parameters
    ----------
    points, a, b, c : (M, 3) float.

    Returns
    -------
    (closest (M, 3), barycentrics (M, 3)) with
    ``closest = bary[:, 0] a + bary[:, 1] b + bary[:, 2] c``.
    """
    p = np.asarray(points, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    if not (p.ndim == 2 and p.shape[1] == 3 and p.shape == a.shape == b.shape == c.shape):
        raise ValueError("closest_points_on_triangles: expected four (M, 3) arrays")
    m = len(p)
    v = np.empty(m)
    w = np.empty(m)
    cols = [np.ascontiguousarray(x[:, k]) for x in (p, a, b, c) for k in range(3)]
    for s in range(0, m, _KERNEL_BLOCK):
        sl = slice(s, s + _KERNEL_BLOCK)
        v[sl], w[sl], _ = _closest_weights(*(x[sl] for x in cols))
    bary = np.stack([1.0 - v - w, v, w], axis=1)
    closest = a + v[:, None] * (b - a) + w[:, None] * (c - a)
    return closest, bary


#: Elements per call of the region kernel (temporaries stay in cache; ~10x faster than one call).
_KERNEL_BLOCK = 16384


def _closest_weights(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    ax: np.ndarray,
    ay: np.ndarray,
    az: np.ndarray,
    bx: np.ndarray,
    by: np.ndarray,
    bz: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    cz: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights ``(v, w)`` of ``b`` and ``c`` of the closest point, and its squared distance.

    Coordinates come as separate 1-D arrays (structure of arrays) for speed. With
    ``ab = b - a``, ``ac = c - a``, ``ap = p - a``: ``d1 = ab.ap``, ``d2 = ac.ap``,
    ``d3 = ab.(p - b)``, ``d4 = ac.(p - b)``, ``d5 = ab.(p - c)``, ``d6 = ac.(p - c)``.
    """
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    abab = abx * abx + aby * aby + abz * abz
    acac = acx * acx + acy * acy + acz * acz
    abac = abx * acx + aby * acy + abz * acz
    d3, d4 = d1 - abab, d2 - abac
    d5, d6 = d1 - abac, d2 - acac
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        # face interior by default; then regions in reverse order of Ericson's tests so that
        # earlier tests take precedence
        denom = va + vb + vc
        v = vb / denom
        w = vc / denom
        m = (va <= 0) & (d4 >= d3) & (d5 >= d6)
        if m.any():
            t = (d4[m] - d3[m]) / ((d4[m] - d3[m]) + (d5[m] - d6[m]))
            v[m], w[m] = 1.0 - t, t
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        if m.any():
            v[m], w[m] = 0.0, d2[m] / (d2[m] - d6[m])
        m = (d6 >= 0) & (d5 <= d6)
        v[m], w[m] = 0.0, 1.0
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        if m.any():
            v[m], w[m] = d1[m] / (d1[m] - d3[m]), 0.0
        m = (d3 >= 0) & (d4 <= d3)
        v[m], w[m] = 1.0, 0.0
        m = (d1 <= 0) & (d2 <= 0)
        v[m], w[m] = 0.0, 0.0
    # zero-area triangles (Lagrange: |ab x ac|^2 = |ab|^2 |ac|^2 - (ab.ac)^2)
    flat = abab * acac - abac * abac <= 1e-14 * abab * acac
    bad = flat | ~(np.isfinite(v) & np.isfinite(w))
    if bad.any():
        pb = np.stack([px[bad], py[bad], pz[bad]], 1)
        a3 = np.stack([ax[bad], ay[bad], az[bad]], 1)
        b3 = np.stack([bx[bad], by[bad], bz[bad]], 1)
        c3 = np.stack([cx[bad], cy[bad], cz[bad]], 1)
        v[bad], w[bad] = _degenerate_triangles(pb, a3, b3, c3)
    qx = apx - v * abx - w * acx
    qy = apy - v * aby - w * acy
    qz = apz - v * abz - w * acz
    return v, w, qx * qx + qy * qy + qz * qz


def _degenerate_triangles(
    p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (v of b, w of c) of the closest point on the nearest edge of flat triangles."""
    best = np.full(len(p), np.inf)
    v = np.zeros(len(p))
    w = np.zeros(len(p))
    for start, end, kind in ((a, b, 0), (a, c, 1), (b, c, 2)):
        seg = end - start
        ll = np.einsum("ij,ij->i", seg, seg)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(ll > 0, np.einsum("ij,ij->i", p - start, seg) / ll, 0.0)
        t = np.clip(t, 0.0, 1.0)
        q = start + t[:, None] * seg
        d = np.einsum("ij,ij->i", p - q, p - q)
        better = d < best
        best[better] = d[better]
        if kind == 0:
            v[better], w[better] = t[better], 0.0
        elif kind == 1:
            v[better], w[better] = 0.0, t[better]
        else:
            v[better], w[better] = 1.0 - t[better], t[better]
    return v, w


#: Queries with more points than this are processed in spatial (Morton) order.
_SORT_MIN = 2048


def _morton_codes(points: np.ndarray) -> np.ndarray:
    """Z-order (Morton) codes of (N, 3) points on a 1024^3 grid over their bounding box."""
    lo = points.min(axis=0)
    span = np.maximum(points.max(axis=0) - lo, 1e-300)
    q = ((points - lo) / span * 1023.0).astype(np.uint64)
    code = np.zeros(len(points), dtype=np.uint64)
    for k in range(3):
        x = q[:, k]
        # spread the 10 bits of x to every third bit
        x = (x | (x << np.uint64(16))) & np.uint64(0x030000FF)
        x = (x | (x << np.uint64(8))) & np.uint64(0x0300F00F)
        x = (x | (x << np.uint64(4))) & np.uint64(0x030C30C3)
        x = (x | (x << np.uint64(2))) & np.uint64(0x09249249)
        code |= x << np.uint64(k)
    return code


def spatial_order(points: np.ndarray) -> np.ndarray:
    """Permutation sorting (N, 3) points along a Z-order (Morton) curve of a 1024^3 grid over
    their bounding box, points of one cell by their coordinates: the same points in any order
    come out in the same order, and evenly spaced entries of it spread over the space."""
    return np.lexsort((points[:, 2], points[:, 1], points[:, 0], _morton_codes(points)))


def surface_centre(mesh: Mesh, who: str) -> np.ndarray:
    """(3,) centre of the bounding box of the vertices ``mesh``'s faces use, where Embree's
    float32 coordinates are re-centred (vertices no face uses, NaN or far away, play no part).

    Raises
    ------
    DegenerateInputError
        A vertex of a face has a NaN or infinite coordinate (``who`` names the caller).
    """
    used = mesh.vertices[mesh.used_vertices]
    finite = np.isfinite(used).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(mesh.used_vertices)[np.argmin(finite)])
        raise DegenerateInputError(
            f"{who}: {int((~finite).sum())} vertices of faces have NaN or inf coordinates (the "
            f"first: number {i} counting from 0)"
        )
    if len(used) == 0:
        return np.zeros(3)
    return 0.5 * (used.min(axis=0) + used.max(axis=0))


class QueryRangeError(DegenerateInputError):
    """Query points (or a mesh's vertices) too far from the mesh's centre for the float32 ray
    engine to hold."""


def _float32_or_raise(x: np.ndarray, what: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``x`` as contiguous float32, or :class:`QueryRangeError` where that overflows (in the
    ``rows`` that matter, a boolean mask; all when None)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out if rows is None else out[rows]).all():
        raise QueryRangeError(
            f"SurfaceQuery: {what} lie beyond the float32 range (about 3.4e38) of the mesh's "
            "centre, where the ray engine cannot hold them"
        )
    return out


class SurfaceQuery:
    """Closest-point and ray queries against one triangle mesh (built once, queried often).

    Parameters
    ----------
    mesh : the surface (at least one face).
    nthreads : Embree threads (0: automatic).
    """

    def __init__(self, mesh: Mesh, *, nthreads: int = 0) -> None:
        if not isinstance(mesh, Mesh):
            raise ValueError(f"SurfaceQuery: expected a Mesh, got {type(mesh).__name__}")
        if mesh.n_faces == 0:
            raise DegenerateInputError("SurfaceQuery: the mesh has no faces")
        o3d = open3d()
        self.mesh = mesh
        self.nthreads = int(nthreads)
        self._v = mesh.vertices
        self._f = mesh.faces
        self.center = surface_centre(mesh, "SurfaceQuery")
        self._scene = o3d.t.geometry.RaycastingScene(nthreads=self.nthreads)
        v32 = _float32_or_raise(self._v - self.center, "vertices", mesh.used_vertices)
        # Open3D's point-triangle test divides 0 by 0 on a triangle whose first two corners
        # coincide (in float32), so its closest-point query never reports such a triangle (a
        # segment, a welded or collapsed face): hand those to Embree starting from their second
        # corner, the same triangle under the same face id
        first_two = np.all(v32[self._f[:, 0]] == v32[self._f[:, 1]], axis=1)
        f_embree = np.where(first_two[:, None], self._f[:, [1, 2, 0]], self._f)
        self._scene.add_triangles(
            o3d.core.Tensor(v32),
            o3d.core.Tensor(np.ascontiguousarray(f_embree, dtype=np.uint32)),
        )
        # per-face corner coordinates as 9 contiguous arrays (structure of arrays) for the kernel
        self._corners = tuple(
            np.ascontiguousarray(self._v[self._f[:, i], k]) for i in range(3) for k in range(3)
        )

    @cached_property
    def _fans(self) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """Vertex -> incident faces as CSR ``(faces, pointers)`` and the faces' corner columns,
        to gather each candidate's neighbour triangles (built on the first query that tests
        neighbours: a query made for ``neighbours=False`` alone never needs them)."""
        flat = self._f.ravel()
        vf = (np.argsort(flat, kind="stable") // 3).astype(np.int64)
        counts = np.bincount(flat, minlength=len(self._v))
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return vf, ptr, tuple(np.ascontiguousarray(self._f[:, k]) for k in range(3))

    # ---------------------------------------------------------------------------------------
    def closest(self, points: np.ndarray, *, neighbours: bool = True) -> ClosestPoints:
        """Closest points on the surface.

        Parameters
        ----------
        points : (N, 3) float query points (mesh units).
        neighbours : also test the triangles sharing a vertex with Embree's triangle (exact
            near-ties, the default). ``False`` only refines Embree's triangle in float64 (faster).

        Returns
        -------
        ClosestPoints
        """
        pts = as_points("SurfaceQuery.closest points", points)
        if len(pts) <= _SORT_MIN:
            return self._closest(pts, neighbours)
        # nearby queries one after another keep Embree's tree and the gathers in cache
        order = np.argsort(_morton_codes(pts), kind="stable")  # for the cache: no ties needed
        res = self._closest(pts[order], neighbours)
        out = [np.empty_like(x) for x in res]
        for o, x in zip(out, res, strict=True):
            o[order] = x
        return ClosestPoints(*out)

    def _closest(self, pts: np.ndarray, neighbours: bool) -> ClosestPoints:
        n = len(pts)
        fid = np.empty(n, dtype=np.int64)
        o3d = open3d()
        for s in range(0, n, _BLOCK):
            q = _float32_or_raise(pts[s : s + _BLOCK] - self.center, "query points")
            ans = self._scene.compute_closest_points(o3d.core.Tensor(q), nthreads=self.nthreads)
            ids = ans["primitive_ids"].numpy()
            none = ids == self._scene.INVALID_ID  # squared distances beyond float32: no triangle
            if none.any():
                raise QueryRangeError(
                    f"SurfaceQuery: {int(none.sum())} query points lie so far "
                    f"from the mesh (up to {float(np.abs(q).max()):.3g} from its centre) that "
                    "the float32 ray engine finds no closest triangle"
                )
            fid[s : s + _BLOCK] = ids
        px, py, pz = (np.ascontiguousarray(pts[:, k]) for k in range(3))
        if neighbours:
            step = max(1, _KERNEL_BLOCK // 20)  # ~20 candidates per point on typical meshes
            for s in range(0, n, step):
                sl = slice(s, s + step)
                fid[sl] = self._best_neighbour(px[sl], py[sl], pz[sl], fid[sl])
        v = np.empty(n)
        w = np.empty(n)
        d2 = np.empty(n)
        for s in range(0, n, _KERNEL_BLOCK):
            sl = slice(s, s + _KERNEL_BLOCK)
            v[sl], w[sl], d2[sl] = _closest_weights(
                px[sl], py[sl], pz[sl], *self._corner_coords(fid[sl])
            )
        tri = self._v[self._f[fid]]
        cp = tri[:, 0] + v[:, None] * (tri[:, 1] - tri[:, 0]) + w[:, None] * (tri[:, 2] - tri[:, 0])
        bary = np.stack([1.0 - v - w, v, w], axis=1)
        return ClosestPoints(cp, np.sqrt(d2), fid, bary)

    def _corner_coords(self, fid: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(c[fid] for c in self._corners)

    def _best_neighbour(
        self, px: np.ndarray, py: np.ndarray, pz: np.ndarray, fid: np.ndarray
    ) -> np.ndarray:
        """Nearest of Embree's face and the faces around its 3 corners (Embree's wins ties)."""
        n = len(fid)
        vf, vf_ptr, face_cols = self._fans
        corners = self._f[fid]  # (n, 3)
        starts = vf_ptr[corners].ravel()  # (3n,) fan of corner j of point i at 3i + j
        counts = vf_ptr[corners + 1].ravel() - starts
        run_offsets = np.cumsum(counts) - counts
        nb = vf[np.arange(int(counts.sum())) + np.repeat(starts - run_offsets, counts)]
        run = np.repeat(np.arange(3 * n), counts)
        owner, corner = run // 3, run % 3
        # each fan face once: at the first corner of Embree's face that it contains
        g0, g1, g2 = (c[nb] for c in face_cols)
        c0, c1 = corners[:, 0][owner], corners[:, 1][owner]
        has0 = (g0 == c0) | (g1 == c0) | (g2 == c0)
        has1 = (g0 == c1) | (g1 == c1) | (g2 == c1)
        keep = (nb != fid[owner]) & ~((corner >= 1) & has0) & ~((corner == 2) & has1)
        nb, owner = nb[keep], owner[keep]
        _, _, d2_nb = _closest_weights(px[owner], py[owner], pz[owner], *self._corner_coords(nb))
        _, _, d2_f = _closest_weights(px, py, pz, *self._corner_coords(fid))
        best = np.full(n, np.inf)
        np.minimum.at(best, owner, d2_nb)
        better = best < d2_f  # strictly: Embree's face wins exact ties
        out = fid.copy()
        if better.any():
            hit = np.flatnonzero(better[owner] & (d2_nb == best[owner]))
            first = np.concatenate([[True], owner[hit][1:] != owner[hit][:-1]])
            out[owner[hit[first]]] = nb[hit[first]]
        return out

    # ---------------------------------------------------------------------------------------
    def cast(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        """First hits of rays ``origin + t * direction``, ``t >= 0``.

        ``t`` is measured in units of ``|direction|`` (directions need not be unit vectors).
        Embree finds the hit triangle; ``t`` and the barycentrics are then recomputed in float64
        on that triangle (Möller-Trumbore).

        Parameters
        ----------
        origins : (N, 3) float
        directions : (N, 3) float, non-zero.

        Returns
        -------
        RayHits
        """
        o = as_points("SurfaceQuery.cast origins", origins)
        d = as_points("SurfaceQuery.cast directions", directions)
        if o.shape != d.shape:
            raise ValueError(f"cast: origins {o.shape} and directions {d.shape} differ")
        if np.any(np.linalg.norm(d, axis=1) == 0):
            raise ValueError("cast: directions must be non-zero")
        o3d = open3d()
        n = len(o)
        t = np.full(n, np.inf)
        fids = np.full(n, -1, dtype=np.int64)
        bary = np.zeros((n, 3))
        for s in range(0, n, _BLOCK):
            rays = np.concatenate([o[s : s + _BLOCK] - self.center, d[s : s + _BLOCK]], axis=1)
            ans = self._scene.cast_rays(
                o3d.core.Tensor(np.ascontiguousarray(rays, dtype=np.float32)),
                nthreads=self.nthreads,
            )
            pid = ans["primitive_ids"].numpy()
            hit = pid != self._scene.INVALID_ID
            idx = s + np.flatnonzero(hit)
            f = pid[hit].astype(np.int64)
            fids[idx] = f
            t_e = ans["t_hit"].numpy()[hit].astype(np.float64)
            uv_e = ans["primitive_uvs"].numpy()[hit].astype(np.float64)
            tri = self._v[self._f[f]]
            e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
            dd = d[idx]
            pvec = np.cross(dd, e2)
            det = np.einsum("ij,ij->i", e1, pvec)
            tvec = o[idx] - tri[:, 0]
            qvec = np.cross(tvec, e1)
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.einsum("ij,ij->i", tvec, pvec) / det
                v = np.einsum("ij,ij->i", dd, qvec) / det
                tt = np.einsum("ij,ij->i", e2, qvec) / det
            ok = np.isfinite(u) & np.isfinite(v) & np.isfinite(tt)
            u = np.where(ok, u, uv_e[:, 0])
            v = np.where(ok, v, uv_e[:, 1])
            t[idx] = np.where(ok, tt, t_e)
            bary[idx] = np.stack([1.0 - u - v, u, v], axis=1)
        points = np.full((n, 3), np.nan)
        hit_all = fids >= 0
        points[hit_all] = o[hit_all] + t[hit_all, None] * d[hit_all]
        return RayHits(t, fids, bary, points)


def point_to_surface(points: np.ndarray, mesh: Mesh) -> ClosestPoints:
    """Closest points on ``mesh``'s surface (point-to-triangle, float64-exact; see module doc).

    Parameters
    ----------
    points : (N, 3) float
    mesh : Mesh

    Returns
    -------
    ClosestPoints with ``distances`` (N,) unsigned.
    """
    return SurfaceQuery(mesh).closest(points)


def _nearest(src: np.ndarray, dst: Mesh | np.ndarray) -> np.ndarray:
    if isinstance(dst, Mesh):
        return SurfaceQuery(dst).closest(src).distances
    from scipy.spatial import cKDTree

    return cKDTree(dst).query(src)[0]


def chamfer_distance(a: Mesh | np.ndarray, b: Mesh | np.ndarray) -> ChamferResult:
    """Symmetric Chamfer distance between two shapes.

    Each side is either a point set (N, 3) or a :class:`Mesh`. Distances are measured *from* the
    points (a mesh's vertices) of one side *to* the other side: to its surface when it is a Mesh
    (point-to-triangle), to its nearest point when it is a point set.

    Returns
    -------
    ChamferResult(a_to_b (N,), b_to_a (M,), mean) with unsigned (not squared) distances.
    """
    pa = a.vertices if isinstance(a, Mesh) else as_points("chamfer_distance a", a)
    pb = b.vertices if isinstance(b, Mesh) else as_points("chamfer_distance b", b)
    if len(pa) == 0 or len(pb) == 0:
        raise ValueError("chamfer_distance: both shapes need at least one point")
    ab = _nearest(pa, b if isinstance(b, Mesh) else pb)
    ba = _nearest(pb, a if isinstance(a, Mesh) else pa)
    return ChamferResult(ab, ba, float(0.5 * (ab.mean() + ba.mean())))


def normal_angle_error(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Angle between corresponding normals, in radians.

    Both inputs are normalised first; the angle is ``atan2(|a x b|, a . b)``, accurate to
    rounding at every angle (``arccos`` of the dot product cannot resolve angles under about
    1.5e-8 rad, nor those within that of pi).

    Parameters
    ----------
    n_a, n_b : (N, 3) float, non-zero rows.

    Returns
    -------
    (N,) float64 angles in [0, pi].
    """
    a = as_points("normal_angle_error n_a", n_a)
    b = as_points("normal_angle_error n_b", n_b)
    if a.shape != b.shape:
        raise ValueError(f"normal_angle_error: shapes differ: {a.shape} vs {b.shape}")
    la = np.linalg.norm(a, axis=1)
    lb = np.linalg.norm(b, axis=1)
    zero = (la == 0) | (lb == 0)
    if zero.any():
        raise DegenerateInputError(
            f"normal_angle_error: {int(zero.sum())} normals have zero length (first row "
            f"{int(np.argmax(zero))})"
        )
    a = a / la[:, None]
    b = b / lb[:, None]
    sin = np.linalg.norm(np.cross(a, b), axis=1)
    return np.arctan2(sin, np.einsum("ij,ij->i", a, b))

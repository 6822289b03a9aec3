"""Point-to-surface distances, ray casting, Chamfer and normal errors against references."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.distance import cdist

from facehd.distances import (
    QueryRangeError,
    SurfaceQuery,
    chamfer_distance,
    closest_points_on_triangles,
    normal_angle_error,
    point_to_surface,
    spatial_order,
)
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh, height_field_mesh


def bumpy_sphere(subdivisions: int, seed: int = 0, radius: float = 60.0) -> Mesh:
    ico = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    rng = np.random.default_rng(seed)
    v = ico.vertices * (1.0 + 0.04 * rng.uniform(-1, 1, size=(len(ico.vertices), 1)))
    return Mesh(v + np.array([120.0, -40.0, 300.0]), ico.faces)


def near_surface_points(mesh: Mesh, n: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    pts, _ = trimesh.sample.sample_surface(tm, n, seed=int(rng.integers(1 << 30)))
    return pts + rng.normal(size=pts.shape) * spread


def reference_point_triangle(p: np.ndarray, tri: np.ndarray) -> float:
    """Distance by another route: plane projection if inside, else nearest of the 3 edges."""
    a, b, c = tri
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n)
    q = p - np.dot(p - a, n) * n
    inside = all(np.dot(np.cross(e1 - e0, q - e0), n) >= 0 for e0, e1 in ((a, b), (b, c), (c, a)))
    if inside:
        return float(np.linalg.norm(p - q))
    best = np.inf
    for e0, e1 in ((a, b), (b, c), (c, a)):
        t = np.clip(np.dot(p - e0, e1 - e0) / np.dot(e1 - e0, e1 - e0), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(p - (e0 + t * (e1 - e0)))))
    return best


def test_agrees_with_trimesh_on_a_random_mesh() -> None:
    mesh = bumpy_sphere(subdivisions=4)  # 2562 vertices, 5120 faces
    assert mesh.n_vertices > 2000
    pts = near_surface_points(mesh, 600, spread=3.0, seed=1)
    ours = point_to_surface(pts, mesh)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    _, ref_d, _ = trimesh.proximity.closest_point(tm, pts)
    np.testing.assert_allclose(ours.distances, ref_d, rtol=0, atol=1e-5)
    # the returned points are consistent: on their face, at the returned distance
    tri = mesh.vertices[mesh.faces[ours.face_ids]]
    np.testing.assert_allclose(np.einsum("ni,nij->nj", ours.barycentrics, tri), ours.points)
    np.testing.assert_allclose(np.linalg.norm(pts - ours.points, axis=1), ours.distances)
    assert ours.barycentrics.min() >= -1e-12
    np.testing.assert_allclose(ours.barycentrics.sum(axis=1), 1.0)


def test_points_too_far_for_the_float32_engine_are_refused_by_name() -> None:
    """The ray engine holds coordinates in float32 about the mesh's centre: a query point at
    1e27 (its squared distance beyond float32) finds no triangle, one at 1e39 does not even
    convert, and a vertex at 1e39 cannot be stored. Each is a QueryRangeError, not an index
    out of bounds; a point at 1e15 is still answered, by the nearest corner."""
    mesh = height_field_mesh(
        np.zeros((3, 3)), np.array([-1.0, 0.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    )
    q = SurfaceQuery(mesh)
    far = q.closest(np.array([[1e15, 1e15, 0.0]]))
    np.testing.assert_allclose(far.points, [[1.0, 1.0, 0.0]])
    for x in (1e27, 1e39):
        with pytest.raises(QueryRangeError, match="query points"):
            q.closest(np.array([[0.0, 0.0, 0.0], [x, 0.0, 0.0]]))
    v = mesh.vertices.copy()
    v[0] = [1e39, 0.0, 0.0]
    with pytest.raises(QueryRangeError, match="vertices"):
        SurfaceQuery(Mesh(v, mesh.faces))


def test_large_queries_sorted_internally_keep_input_order() -> None:
    mesh = bumpy_sphere(subdivisions=3)
    pts = near_surface_points(mesh, 5000, spread=4.0, seed=9)
    q = SurfaceQuery(mesh)
    whole = q.closest(pts)  # above the size where queries are processed in Morton order
    parts = [q.closest(pts[i : i + 1000]) for i in range(0, 5000, 1000)]
    for k, field in enumerate(whole):
        np.testing.assert_array_equal(field, np.concatenate([p[k] for p in parts]))


def test_one_thread_and_every_core_give_the_same_answers(open3d_uncapped) -> None:
    """The scoring's queries run on Open3D's automatic threads outside a pool's workers and on
    one inside them (facehd._o3d.limit_threads): every answer must be the same either way."""
    mesh = bumpy_sphere(subdivisions=5)
    pts = near_surface_points(mesh, 50_000, spread=4.0, seed=3)
    up = np.tile([0.0, 0.0, 1.0], (len(pts), 1))
    every = SurfaceQuery(mesh).closest(pts)
    hits = SurfaceQuery(mesh).cast(pts, up)
    open3d_uncapped.limit_threads(1)
    for a, b in zip(every, SurfaceQuery(mesh).closest(pts), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(hits, SurfaceQuery(mesh).cast(pts, up), strict=True):
        np.testing.assert_array_equal(a, b)


def test_matches_brute_force_point_triangle_loop() -> None:
    rng = np.random.default_rng(2)
    ico = trimesh.creation.icosphere(subdivisions=1, radius=5.0)
    v = ico.vertices + rng.normal(size=ico.vertices.shape) * 0.8
    mesh = Mesh(v, ico.faces)
    pts = rng.normal(size=(60, 3)) * 6.0
    ours = SurfaceQuery(mesh).closest(pts)
    ref = np.array([min(reference_point_triangle(p, v[f]) for f in mesh.faces) for p in pts])
    np.testing.assert_allclose(ours.distances, ref, rtol=0, atol=1e-10)


def test_triangle_kernel_handles_every_region_and_flat_triangles() -> None:
    rng = np.random.default_rng(3)
    tri = rng.normal(size=(3000, 3, 3))
    tri[:50, 2] = tri[:50, 0] + 0.5 * (tri[:50, 1] - tri[:50, 0])  # zero area
    tri[50:60, 1] = tri[50:60, 0]  # two coincident corners
    pts = rng.normal(size=(3000, 3)) * 2.0
    cp, bary = closest_points_on_triangles(pts, tri[:, 0], tri[:, 1], tri[:, 2])
    ref = np.array([_flat_safe_reference(p, t) for p, t in zip(pts, tri, strict=True)])
    np.testing.assert_allclose(np.linalg.norm(pts - cp, axis=1), ref, atol=1e-10)
    np.testing.assert_allclose(np.einsum("ni,nij->nj", bary, tri), cp, atol=1e-12)


def _edges_reference(p: np.ndarray, tri: np.ndarray) -> float:
    """Distance to the nearest of the triangle's three edges (segments), by projection."""
    a, b, c = tri
    best = np.inf
    for e0, e1 in ((a, b), (b, c), (c, a)):
        ll = np.dot(e1 - e0, e1 - e0)
        t = 0.0 if ll == 0 else np.clip(np.dot(p - e0, e1 - e0) / ll, 0.0, 1.0)
        best = min(best, float(np.linalg.norm(p - (e0 + t * (e1 - e0)))))
    return best


def _flat_safe_reference(p: np.ndarray, tri: np.ndarray) -> float:
    a, b, c = tri
    if np.linalg.norm(np.cross(b - a, c - a)) < 1e-9:
        return _edges_reference(p, tri)
    return reference_point_triangle(p, tri)


def test_plane_offset_gives_exact_distance_far_from_origin() -> None:
    xs = np.linspace(-50, 50, 21) + 5000.0
    ys = np.linspace(-40, 40, 17) - 3000.0
    plane = height_field_mesh(np.full((17, 21), 800.0), xs, ys)
    rng = np.random.default_rng(4)
    xy = np.c_[rng.uniform(4960, 5040, 500), rng.uniform(-3030, -2970, 500)]
    for d in (1e-4, 0.37, 12.0):
        pts = np.c_[xy, np.full(500, 800.0 + d)]
        res = point_to_surface(pts, plane)
        np.testing.assert_allclose(res.distances, d, rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.points, np.c_[xy, np.full(500, 800.0)], atol=1e-9)


def test_sphere_against_scaled_sphere() -> None:
    ico = trimesh.creation.icosphere(subdivisions=4, radius=50.0)
    sphere = Mesh(ico.vertices, ico.faces)
    bigger = Mesh(1.2 * ico.vertices, ico.faces)
    # vertices of the bigger sphere lie radially outside vertices of the smaller: distance 10 mm
    out = point_to_surface(bigger.vertices, sphere)
    np.testing.assert_allclose(out.distances, 10.0, atol=1e-9)
    res = chamfer_distance(bigger, sphere)
    np.testing.assert_allclose(res.a_to_b, 10.0, atol=1e-9)
    # inner vertices to the outer polyhedron: 10 mm minus at most the outer facets' sag
    edge = np.linalg.norm(np.diff(bigger.vertices[bigger.faces[:, :2]], axis=1), axis=-1).max()
    sag = 60.0 - np.sqrt(60.0**2 - (edge / np.sqrt(3)) ** 2)
    assert np.all(res.b_to_a <= 10.0 + 1e-9) and np.all(res.b_to_a >= 10.0 - sag)
    assert res.mean == pytest.approx(0.5 * (res.a_to_b.mean() + res.b_to_a.mean()))


def test_near_ties_between_neighbour_triangles_resolved_in_float64() -> None:
    # a concave V crease z = 0.5 |x|; points just beside its bisector are nearly equidistant from
    # the two faces along the crease, closer than float32 can tell apart
    xs = np.linspace(-500.0, 500.0, 101)  # a grid line at x = 0
    ys = np.linspace(-500.0, 500.0, 101)
    gx, _ = np.meshgrid(xs, ys)
    crease = height_field_mesh(0.5 * np.abs(gx), xs, ys)
    rng = np.random.default_rng(5)
    n = 400
    x0 = rng.choice([-1.0, 1.0], n) * rng.uniform(1e-9, 3e-9, n)
    pts = np.c_[x0, rng.uniform(-400, 400, n), np.full(n, 1.0)]
    res = SurfaceQuery(crease).closest(pts)
    expected = (1.0 - 0.5 * np.abs(x0)) / np.sqrt(1.25)
    np.testing.assert_allclose(res.distances, expected, rtol=0, atol=1e-13)
    face_x = crease.vertices[crease.faces[res.face_ids]][:, :, 0].mean(axis=1)
    np.testing.assert_array_equal(np.sign(face_x), np.sign(x0))


def test_cast_hits_plane_and_sphere_analytically() -> None:
    xs = np.linspace(0, 100, 11)
    plane = height_field_mesh(np.zeros((11, 11)), xs, xs)
    q = SurfaceQuery(plane)
    rng = np.random.default_rng(6)
    o = np.c_[rng.uniform(10, 90, (200, 2)), rng.uniform(1, 50, 200)]
    d = np.c_[rng.uniform(-0.05, 0.05, (200, 2)), -np.ones(200)] * 2.0
    hits = q.cast(o, d)
    np.testing.assert_allclose(hits.t, o[:, 2] / 2.0, rtol=1e-12)  # t in units of |direction|
    np.testing.assert_allclose(hits.points[:, 2], 0.0, atol=1e-12)
    tri = plane.vertices[plane.faces[hits.face_ids]]
    np.testing.assert_allclose(
        np.einsum("ni,nij->nj", hits.barycentrics, tri), hits.points, atol=1e-9
    )
    up = q.cast(o[:3], -d[:3])
    assert np.all(np.isinf(up.t)) and np.all(up.face_ids == -1) and np.isnan(up.points).all()

    ico = trimesh.creation.icosphere(subdivisions=3, radius=40.0)
    sphere = Mesh(ico.vertices, ico.faces)
    origin = np.array([0.0, 0.0, 200.0])
    centroids = sphere.vertices[sphere.faces].mean(axis=1)
    visible = np.einsum("ij,ij->i", sphere.face_normals, origin - centroids) > 0
    pick = rng.choice(np.flatnonzero(visible), 100, replace=False)
    o = np.tile(origin, (100, 1))
    hits = SurfaceQuery(sphere).cast(o, centroids[pick] - o)
    np.testing.assert_allclose(hits.t, 1.0, atol=1e-12)  # each direction ends at its target
    np.testing.assert_array_equal(hits.face_ids, pick)
    np.testing.assert_allclose(hits.barycentrics, 1.0 / 3.0, atol=1e-9)


def test_chamfer_of_point_sets_matches_cdist() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(size=(80, 3))
    b = rng.normal(size=(50, 3)) + 0.3
    res = chamfer_distance(a, b)
    dm = cdist(a, b)
    np.testing.assert_allclose(res.a_to_b, dm.min(axis=1))
    np.testing.assert_allclose(res.b_to_a, dm.min(axis=0))
    assert res.mean == pytest.approx(0.5 * (dm.min(axis=1).mean() + dm.min(axis=0).mean()))


def test_normal_angle_error() -> None:
    a = np.array([[0.0, 0, 1], [0, 0, 2], [1, 0, 0], [1, 1, 0]])
    b = np.array([[0.0, 0, 1], [0, 3, 0], [-1, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(
        normal_angle_error(a, b), [0.0, np.pi / 2, np.pi, np.pi / 4], atol=1e-12
    )
    same = np.random.default_rng(8).normal(size=(1000, 3))
    assert np.all(normal_angle_error(same, same * 3.0) < 1e-7)  # clipped: never NaN
    for zero in (np.zeros((2, 3)), np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])):
        with pytest.raises(DegenerateInputError, match="zero length"):
            normal_angle_error(zero, np.ones((2, 3)))  # in the first
        with pytest.raises(DegenerateInputError, match="zero length"):
            normal_angle_error(np.ones((2, 3)), zero)  # in the second


def test_normal_angle_error_resolves_small_angles_and_angles_near_pi() -> None:
    """Analytic case: a normal turned by ``t`` about a random axis, for ``t`` from 1e-12 rad to
    pi - 1e-12 rad and lengths 1e-3..1e3 (``arccos`` of the dot product gave 0 under 1.5e-8)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    t = np.concatenate([np.logspace(-12, 0, 40), np.pi - np.logspace(-12, -1, 20)])
    a = rng.normal(size=(t.size, 3))
    axis = np.cross(a, rng.normal(size=(t.size, 3)))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    b = Rotation.from_rotvec(axis * t[:, None]).apply(a)
    scale = 10.0 ** rng.uniform(-3, 3, size=(t.size, 2))
    got = normal_angle_error(a * scale[:, :1], b * scale[:, 1:])
    small = t < 1
    np.testing.assert_allclose(got[small], t[small], rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(np.pi - got[~small], np.pi - t[~small], rtol=1e-3, atol=1e-15)


def test_shape_checks() -> None:
    q = SurfaceQuery(bumpy_sphere(1))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        q.closest(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        q.closest(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="differ"):
        q.cast(np.zeros((3, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        normal_angle_error(np.ones((3, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-zero"):
        q.cast(np.zeros((2, 3)), np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))


def test_triangles_whose_first_two_corners_coincide_are_found() -> None:
    """Open3D's closest-point query never reports a triangle whose first two corners are at one
    point (a segment: a collapsed or welded face), by index or by (float32) position; such a
    triangle can be the nearest part of the surface."""
    rng = np.random.default_rng(5)
    v = rng.normal(size=(40, 3)) * 10.0
    f = rng.integers(0, 40, size=(30, 3))
    f[:10, 1] = f[:10, 0]  # repeated index
    v[30] = v[31] + 1e-9 * v[31]  # equal in float32, not in float64 (a 1e-8 mm edge)
    f[10] = [30, 31, 32]
    mesh = Mesh(v, f)
    pts = np.concatenate(
        [
            rng.normal(size=(300, 3)) * 12.0,
            0.5 * (v[f[:11, 0]] + v[f[:11, 2]]) + rng.normal(size=(11, 3)) * 0.01,
        ]
    )
    got = SurfaceQuery(mesh).closest(pts)
    ref = np.array([min(reference_segment_or_triangle(p, v[t]) for t in f) for p in pts])
    np.testing.assert_allclose(got.distances, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(pts - got.points, axis=1), got.distances)
    # a surface made only of such triangles: Embree alone reports none of them
    seg = Mesh(np.array([[0.0, 0, 0], [4, 0, 0], [1, 1, 0]]), np.array([[0, 0, 1]]))
    got = SurfaceQuery(seg).closest(np.array([[2.0, 0.0, 0.5], [5.0, 0.0, 0.0]]))
    np.testing.assert_allclose(got.distances, [0.5, 1.0])


def reference_segment_or_triangle(p: np.ndarray, tri: np.ndarray) -> float:
    """Distance to a triangle, or to the segments of its corners when it has no area."""
    a, b, c = tri
    if np.linalg.norm(np.cross(b - a, c - a)) > 1e-9 * max(np.ptp(tri, axis=0).max(), 1e-300):
        return reference_point_triangle(p, tri)
    return _edges_reference(p, tri)


def test_vertices_no_face_uses_play_no_part_and_nan_corners_are_named() -> None:
    mesh = bumpy_sphere(2)
    pts = near_surface_points(mesh, 200, spread=2.0, seed=3)
    ref = SurfaceQuery(mesh).closest(pts)
    for extra in ([np.nan, 0.0, 0.0], [np.inf, 1.0, 2.0], [1e9, -1e9, 1e9]):
        # an unused vertex (a NaN one made every answer an index error; a far one cost float32
        # precision of the whole surface)
        with_unused = Mesh(np.vstack([mesh.vertices, [extra]]), mesh.faces)
        got = SurfaceQuery(with_unused).closest(pts)
        np.testing.assert_allclose(got.distances, ref.distances, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(got.face_ids, ref.face_ids)
    v = mesh.vertices.copy()
    v[7, 1] = np.nan
    with pytest.raises(DegenerateInputError, match=r"1 vertices of faces have NaN.*number 7"):
        SurfaceQuery(Mesh(v, mesh.faces))


def test_spatial_order_does_not_depend_on_the_input_order() -> None:
    """The same points listed in any order come out in one order: points sharing a cell of the
    1024³ grid (here clusters a few µm across in a box a metre wide) by their coordinates. Points
    next in the order lie near each other (the median step a seventh of a sort along x's), and
    evenly spaced entries of it spread over the box (each octant holds about its share)."""
    rng = np.random.default_rng(6)
    spread = rng.uniform(0.0, 1000.0, (3000, 3))
    centres = rng.uniform(0.0, 1000.0, (20, 3))
    clusters = (centres[:, None, :] + rng.uniform(0.0, 0.005, (20, 30, 3))).reshape(-1, 3)
    pts = np.concatenate([spread, clusters])
    ordered = pts[spatial_order(pts)]
    for seed in range(3):
        shuffled = pts[np.random.default_rng(seed).permutation(len(pts))]
        np.testing.assert_array_equal(shuffled[spatial_order(shuffled)], ordered)
    np.testing.assert_array_equal(np.sort(spatial_order(pts)), np.arange(len(pts)))

    def median_step(a: np.ndarray) -> float:
        return float(np.median(np.linalg.norm(np.diff(a, axis=0), axis=1)))

    # measured: 74 against 511 (x-sorted) and 650 (as drawn)
    assert median_step(spread[spatial_order(spread)]) < 0.25 * median_step(
        spread[np.argsort(spread[:, 0])]
    )
    picked = pts[spatial_order(pts)][:: len(pts) // 400][:400]
    octant = (picked[:, 0] > 500) * 4 + (picked[:, 1] > 500) * 2 + (picked[:, 2] > 500)
    assert np.bincount(octant, minlength=8).min() > 25


def test_points_on_a_plane_are_ordered_and_queried_without_warnings() -> None:
    """Query points with one coordinate shared (a flat grid: no extent along z) order along the
    other two without a division by zero, and a query of more than the sorting threshold returns
    each point's own answer (against trimesh)."""
    import warnings

    x, y = np.meshgrid(np.linspace(-80.0, 80.0, 60), np.linspace(-80.0, 80.0, 60))
    grid = np.stack([x.ravel(), y.ravel(), np.full(x.size, 25.0)], axis=1)  # 3600 points
    sphere = bumpy_sphere(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        order = spatial_order(grid)
        got = SurfaceQuery(sphere).closest(grid)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(grid)))
    steps = np.linalg.norm(np.diff(grid[order], axis=0), axis=1)
    assert np.median(steps) < 5.0  # neighbours follow each other (grid spacing 2.7)
    tm = trimesh.Trimesh(sphere.vertices, sphere.faces, process=False)
    _, d, _ = trimesh.proximity.closest_point(tm, grid)
    np.testing.assert_allclose(got.distances, d, atol=1e-9)


def test_exact_ties_keep_the_ray_engines_triangle() -> None:
    """Above the shared edges and corners of a flat grid every triangle there is exactly as
    near: the neighbour search changes no triangle then (it takes another only when strictly
    nearer), so its face ids are those of the ray engine's own answer."""
    xs = np.linspace(0.0, 10.0, 11)
    plane = height_field_mesh(np.zeros((11, 11)), xs, xs)
    x, y = np.meshgrid(np.arange(1.0, 10.0), np.arange(1.0, 10.0))
    corners = np.stack([x.ravel(), y.ravel(), np.full(x.size, 0.5)], axis=1)
    edges = corners + [0.5, 0.0, 0.0]
    pts = np.concatenate([corners, edges])
    q = SurfaceQuery(plane)
    both, engine = q.closest(pts), q.closest(pts, neighbours=False)
    np.testing.assert_allclose(both.distances, 0.5, atol=1e-12)
    np.testing.assert_array_equal(both.face_ids, engine.face_ids)

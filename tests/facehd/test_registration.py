"""Rigid and similarity ICP on a face-like surface with known ground-truth motion."""

from __future__ import annotations

import numpy as np
import pytest

from facehd.distances import SurfaceQuery
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh, height_field_mesh
from facehd.registration import crop_points, icp_point_to_plane
from facehd.transforms import Similarity, rotation_from_axis_angle


def face_like_surface(n: int = 71) -> Mesh:
    """A ~160 x 200 mm height field in mm: a dome with a nose, eye sockets, brow and mouth.

    The features break every rotational symmetry, so the alignment is well posed.
    """
    xs = np.linspace(-80.0, 80.0, n)
    ys = np.linspace(-100.0, 100.0, int(n * 1.25))
    x, y = np.meshgrid(xs, ys)

    def bump(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)

    z = (
        55.0 * np.sqrt(np.clip(1.0 - (x / 95.0) ** 2 - (y / 125.0) ** 2, 0.0, None))
        + 20.0 * bump(0.0, -5.0, 9.0, 22.0)  # nose
        - 9.0 * bump(-30.0, 25.0, 13.0, 8.0)  # eye sockets
        - 9.0 * bump(30.0, 25.0, 13.0, 8.0)
        + 5.0 * bump(0.0, 42.0, 40.0, 6.0)  # brow
        - 4.0 * bump(0.0, -45.0, 20.0, 4.0)  # mouth
        + 3.0 * bump(45.0, -20.0, 10.0, 10.0)  # one cheek only
    )
    return height_field_mesh(z, xs, ys)


def known_motion(deg: float, mm: float, scale: float = 1.0, seed: int = 0) -> Similarity:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    shift = rng.normal(size=3)
    rot = rotation_from_axis_angle(np.radians(deg) * axis / np.linalg.norm(axis))
    return Similarity(scale, rot, mm * shift / np.linalg.norm(shift))


def scan_of(surface: Mesh, truth: Similarity, n: int, seed: int, noise: float = 0.0) -> np.ndarray:
    """Surface points (inside its outline) in a frame that ``truth`` maps back onto it."""
    rng = np.random.default_rng(seed)
    inside = np.flatnonzero(np.abs(surface.vertices[:, 0]) < 70)
    pick = rng.choice(inside, n, replace=False)
    pts = surface.vertices[pick] + rng.normal(size=(n, 3)) * noise
    return truth.inverse().apply(pts)


@pytest.fixture(scope="module")
def surface() -> Mesh:
    return face_like_surface()


@pytest.mark.parametrize("method", ["open3d", "surface"])
def test_rigid_icp_recovers_small_motion(surface: Mesh, method: str) -> None:
    truth = known_motion(deg=2.0, mm=3.0)
    src = scan_of(surface, truth, 3000, seed=1)
    res = icp_point_to_plane(src, surface, method=method)
    assert res.transform.rotation_angle_deg(truth) < 0.01
    assert np.linalg.norm(res.transform.translation - truth.translation) < 0.01
    assert res.transform.scale == 1.0
    assert res.converged and 1 <= res.iterations < 50
    assert res.fitness == 1.0 and res.rmse < 1e-6
    assert res.n_points == 3000


def test_rigid_icp_from_an_initial_guess(surface: Mesh) -> None:
    truth = known_motion(deg=25.0, mm=40.0, seed=2)
    src = scan_of(surface, truth, 2000, seed=3)
    guess = known_motion(deg=1.5, mm=2.0, seed=4).compose(truth)
    without = icp_point_to_plane(src, surface, max_iterations=50)
    res = icp_point_to_plane(src, surface, init=guess)
    assert res.transform.rotation_angle_deg(truth) < 0.01
    assert np.linalg.norm(res.transform.translation - truth.translation) < 0.01
    assert without.transform.rotation_angle_deg(truth) > 1.0  # the guess mattered


def test_similarity_icp_recovers_scale(surface: Mesh) -> None:
    truth = known_motion(deg=3.0, mm=4.0, scale=1.06, seed=5)
    src = scan_of(surface, truth, 3000, seed=6)
    res = icp_point_to_plane(src, surface, with_scale=True)
    assert res.transform.scale == pytest.approx(1.06, abs=1e-7)
    assert res.transform.rotation_angle_deg(truth) < 1e-4
    np.testing.assert_allclose(res.transform.translation, truth.translation, atol=1e-4)
    assert res.converged


@pytest.mark.parametrize(("noise", "scale_atol"), [(0.3, 2e-3), (2.0, 2e-2)])
def test_similarity_icp_reaches_a_minimum_of_the_distance_cost(
    surface: Mesh, noise: float, scale_atol: float
) -> None:
    """With noise there is no exact answer: check the result is a minimum of
    sum(dist(p, T^-1 surface)^2), by perturbing each of the 7 parameters both ways. With more
    noise the cost's scale derivative differs more from the target-frame one (a Gauss-Newton
    step without the source frame's term stopped 1.4% off in scale at 3 mm noise)."""
    truth = known_motion(deg=2.0, mm=2.0, scale=0.97, seed=7)
    src = scan_of(surface, truth, 1500, seed=8, noise=noise)
    res = icp_point_to_plane(src, surface, with_scale=True, max_distance=np.inf)
    query = SurfaceQuery(surface)

    def cost(t: Similarity) -> float:
        d = query.closest(t.apply(src)).distances / t.scale
        return float(np.sum(d**2))

    best = cost(res.transform)
    centre = res.transform.apply(src).mean(axis=0)
    for k in range(7):
        for sign in (-1.0, 1.0):
            step = np.zeros(7)
            step[k] = sign * (1e-3 if k < 4 else 1e-2)  # log-scale/radians, mm
            rot = rotation_from_axis_angle(step[1:4])
            s = float(np.exp(step[0]))
            move = Similarity(s, rot, centre + step[4:] - s * rot @ centre)
            assert cost(move.compose(res.transform)) >= best * (1 - 1e-9)
    assert res.transform.rotation_angle_deg(truth) < 0.1 * noise / 0.3
    assert res.transform.scale == pytest.approx(0.97, abs=scale_atol)


@pytest.mark.parametrize("half", [40.0, 90.0, 200.0])
def test_similarity_icp_onto_a_plane_rejects_steps_past_what_floats_hold(
    surface: Mesh, half: float
) -> None:
    """A face fitted with its scale onto a plane: the Gauss-Newton model asks for log-scale
    steps of hundreds (a plane looks the same at any scale), whose scale, inverse or squared
    cost overflow float64, or whose points leave the ray engine's float32. Those count as
    overshoots, the step is halved, and the fit ends on a finite transform with a cost (in
    the source frame, the quantity each accepted step lowers) no higher than at the start."""
    xs, ys = np.linspace(-half, half, 30), np.linspace(-1.2 * half, 1.2 * half, 34)
    plane = height_field_mesh(np.zeros((len(ys), len(xs))), xs, ys)
    src = scan_of(surface, Similarity.identity(), 3000, seed=4)
    start = SurfaceQuery(plane).closest(src).distances
    res = icp_point_to_plane(
        src, plane, with_scale=True, method="surface", max_distance=np.inf, max_iterations=100
    )
    assert np.isfinite(res.transform.scale) and res.transform.scale > 0
    moved = res.transform.apply(src)
    end = SurfaceQuery(plane).closest(moved).distances / res.transform.scale
    assert np.mean(end**2) <= np.mean(start**2) * (1 + 1e-9)
    assert res.rmse == pytest.approx(np.sqrt(np.mean((end * res.transform.scale) ** 2)), rel=1e-9)


@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("deg", [4.0, 25.0])
def test_surface_icp_recovers_a_turn_about_the_points_centre(
    surface: Mesh, deg: float, with_scale: bool
) -> None:
    """A rotation about the points' own centre: each Gauss-Newton step turns them without
    shifting them, and the fit runs until the turn is found to rounding (a step counts by how
    far it moves the farthest point, the turn included)."""
    src0 = scan_of(surface, Similarity.identity(), 3000, seed=21)
    c = src0.mean(axis=0)
    axis = np.array([0.2, 1.0, 0.3]) / np.linalg.norm([0.2, 1.0, 0.3])
    rot = rotation_from_axis_angle(np.radians(deg) * axis)
    truth = Similarity(1.0, rot, c - rot @ c)
    res = icp_point_to_plane(
        truth.inverse().apply(src0),
        surface,
        method="surface",
        with_scale=with_scale,
        max_distance=np.inf,
    )
    # measured: 1e-15 degrees and mm, in 4 to 6 iterations
    assert res.transform.rotation_angle_deg(truth) < 1e-9
    np.testing.assert_allclose(res.transform.translation, truth.translation, atol=1e-9)
    assert res.transform.scale == pytest.approx(1.0, abs=1e-12)
    assert res.converged
    # Gauss-Newton on a problem with zero residual at the answer converges quadratically: a
    # step that turned about the origin instead (and left the line search to mend the shift)
    # took 6 and 8 iterations
    assert res.iterations <= (5 if deg < 10 else 7)


def test_surface_icp_scores_the_points_within_reach(surface: Mesh) -> None:
    """Points beyond ``max_distance`` take no part: ``fitness`` is the share within it, and
    ``rmse`` the root mean square distance of those alone (trimesh's closest points); fewer
    points within reach than the motion has parameters is an error saying how many."""
    import trimesh

    truth = known_motion(deg=1.0, mm=1.0, seed=13)
    src = scan_of(surface, truth, 1000, seed=14, noise=0.2)
    far = src[:100] + truth.inverse().rotation @ np.array([0.0, 0.0, 40.0])
    res = icp_point_to_plane(np.vstack([src, far]), surface, method="surface", max_distance=5.0)
    assert res.fitness == pytest.approx(1000 / 1100)
    tm = trimesh.Trimesh(surface.vertices, surface.faces, process=False)
    _, d, _ = trimesh.proximity.closest_point(tm, res.transform.apply(src))
    assert res.rmse == pytest.approx(float(np.sqrt(np.mean(d**2))), rel=1e-6)
    for with_scale, need in ((False, 6), (True, 7)):
        pts = np.vstack([src[: need - 1], far])
        with pytest.raises(
            DegenerateInputError, match=rf"{need - 1} source points within .*>= {need}"
        ):
            icp_point_to_plane(
                pts, surface, init=truth, with_scale=with_scale, max_distance=5.0, method="surface"
            )


def test_crop_ignores_points_outside_the_sphere(surface: Mesh) -> None:
    truth = known_motion(deg=2.0, mm=3.0, seed=9)
    src = scan_of(surface, truth, 2000, seed=10)
    centre = src.mean(axis=0)
    clutter = centre + np.random.default_rng(11).normal(size=(800, 3)) * 5 + [0, 0, 300]
    pts = np.vstack([src, clutter])
    res = icp_point_to_plane(
        pts, surface, crop_center=centre, crop_radius=150.0, max_distance=np.inf, method="surface"
    )
    assert res.n_points == 2000
    assert res.transform.rotation_angle_deg(truth) < 0.01
    kept, mask = crop_points(pts, centre, 150.0)
    assert mask[:2000].all() and not mask[2000:].any() and len(kept) == 2000


def test_crop_keeps_points_on_the_sphere_against_a_loop() -> None:
    """``within`` the radius includes it: a point exactly at the radius (3-4-5) stays."""
    rng = np.random.default_rng(3)
    pts = np.vstack([rng.uniform(-10, 10, size=(500, 3)), [[3.0, 4.0, 0.0], [0.0, -5.0, 0.0]]])
    kept, mask = crop_points(pts, np.zeros(3), 5.0)
    loop = [float(np.sqrt(x * x + y * y + z * z)) <= 5.0 for x, y, z in pts]
    np.testing.assert_array_equal(mask, loop)
    assert mask[-2:].all()
    np.testing.assert_array_equal(kept, pts[mask])


def test_open3d_icp_counts_its_iterations_and_stops_at_the_cap(surface: Mesh) -> None:
    """The iteration count read from Open3D's log: capped runs report the cap and are not
    converged; a run capped at the free run's count gives its transform."""
    truth = known_motion(deg=8.0, mm=10.0, seed=31)
    src = scan_of(surface, truth, 1500, seed=32)
    free = icp_point_to_plane(src, surface, max_iterations=100)
    assert free.converged and 2 <= free.iterations < 100
    for cap in (1, 2, 3):
        capped = icp_point_to_plane(src, surface, max_iterations=cap)
        assert capped.iterations == cap and not capped.converged
    same = icp_point_to_plane(src, surface, max_iterations=free.iterations)
    assert same.transform.allclose(free.transform, atol=1e-12)
    # the first iterations move the points by millimetres (the motion is 10 mm)
    first = icp_point_to_plane(src, surface, max_iterations=1)
    assert not first.transform.allclose(free.transform, atol=0.1)


def test_open3d_icp_ignores_vertices_no_face_uses(surface: Mesh) -> None:
    """Vertices outside every face (a scan's stray points, NaN ones) are not targets: stray
    copies of the surface's vertices 0.2 mm above it, nearer to many of the noisy points than
    the surface's own vertices, change neither the motion nor the score."""
    truth = known_motion(deg=2.0, mm=2.0, seed=33)
    src = scan_of(surface, truth, 1500, seed=34, noise=0.3)
    ref = icp_point_to_plane(src, surface)
    stray = surface.vertices + [0.0, 0.0, 0.2]
    extra = np.vstack([surface.vertices, stray, [[np.nan, 0.0, 0.0]]])
    got = icp_point_to_plane(src, Mesh(extra, surface.faces))
    assert got.transform.allclose(ref.transform, atol=1e-9)
    assert got.rmse == pytest.approx(ref.rmse, abs=1e-12) and got.fitness == ref.fitness
    assert got.iterations == ref.iterations


def test_bad_inputs(surface: Mesh) -> None:
    src = scan_of(surface, Similarity.identity(), 100, seed=12)
    with pytest.raises(DegenerateInputError, match="after cropping"):
        icp_point_to_plane(src, surface, crop_center=np.full(3, 1e4), crop_radius=1.0)
    with pytest.raises(DegenerateInputError, match="max_distance"):
        icp_point_to_plane(src + [0, 0, 500], surface, max_distance=1.0)
    with pytest.raises(DegenerateInputError, match="max_distance"):
        icp_point_to_plane(src + [0, 0, 500], surface, max_distance=1.0, with_scale=True)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        icp_point_to_plane(src[:, :2], surface)
    with pytest.raises(ValueError, match="both"):
        icp_point_to_plane(src, surface, crop_radius=5.0)
    with pytest.raises(ValueError, match="method"):
        icp_point_to_plane(src, surface, method="gicp")  # type: ignore[arg-type]


def test_a_vertex_no_face_uses_changes_no_surface_solve(surface: Mesh) -> None:
    """A NaN vertex no face uses made the mesh's extent NaN, and with it every residual on an
    edge or corner a distance along the face normal instead of to the closest point."""
    truth = known_motion(4.0, 3.0, scale=1.05, seed=8)
    pts = scan_of(surface, truth, 600, seed=8, noise=0.3) * 1.02
    ref = icp_point_to_plane(pts, surface, with_scale=True, max_distance=np.inf)
    for extra in ([np.nan, 0.0, 0.0], [1e6, 0.0, 0.0]):
        unused = Mesh(np.vstack([surface.vertices, [extra]]), surface.faces)
        got = icp_point_to_plane(pts, unused, with_scale=True, max_distance=np.inf)
        assert got.iterations == ref.iterations
        assert got.transform.allclose(ref.transform, atol=1e-9)

"""NoW protocol: crop, landmark alignment, refinement and pooled statistics on analytic cases."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from bench_shapes import grid_plane, icosphere

from benchmarks.now import (
    NowConfig,
    crop_scan,
    drop_degenerate_faces,
    evaluate_now,
    face_crop_sphere,
    landmark_alignment,
    pooled_statistics,
    refine_dogleg,
    refine_scan_to_mesh,
    rotation_derivatives,
)
from facehd.distances import point_to_surface
from facehd.mesh import Mesh
from facehd.transforms import Similarity, rotation_from_axis_angle


def _sphere_landmarks(radius: float) -> np.ndarray:
    """7 points on a sphere placing NoW's crop sphere around the whole sphere."""
    s = 1.0 / np.sqrt(2.0)
    dirs = np.array(
        [[-1, 0, 0], [0, 0, 1], [0, 0, -1], [1, 0, 0], [0, -1, 0], [0, s, s], [0, s, -s]], float
    )
    return radius * dirs


def _bumpy_face(n: int = 60) -> tuple[Mesh, np.ndarray]:
    """A face-like height field (nose, brows, cheeks) and 7 landmarks on it."""
    from facehd.mesh import height_field_mesh

    xs = np.linspace(-90, 90, n)
    ys = np.linspace(-110, 110, n)
    x, y = np.meshgrid(xs, ys)

    def h(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (
            40 * np.exp(-(x**2) / 4000 - y**2 / 8000)
            + 20 * np.exp(-(x**2) / 120 - (y + 5) ** 2 / 500)
            - 6 * np.exp(-((np.abs(x) - 30) ** 2) / 150 - (y - 25) ** 2 / 80)
        )

    mesh = height_field_mesh(h(x, y), xs, ys)
    lx = np.array([-45.0, -15.0, 15.0, 45.0, 0.0, -25.0, 25.0])
    ly = np.array([25.0, 25.0, 25.0, 25.0, -20.0, -45.0, -45.0])
    return mesh, np.stack([lx, ly, h(lx, ly)], axis=1)


def _height_prediction(
    h: Callable[[np.ndarray, np.ndarray], np.ndarray],
    xs: np.ndarray,
    ys: np.ndarray,
    landmark_noise: float,
    seed: int = 7,
    *,
    inverted: bool = False,
    landmark_spread: float = 1.0,
) -> tuple[Mesh, np.ndarray, Mesh, np.ndarray]:
    """(the bumpy face, its landmarks, a prediction, its landmarks): the prediction is the
    height field ``h`` on the grid ``xs`` x ``ys`` (mm) (``-h``, inside out, when
    ``inverted``), moved to metres, turned and shifted; its landmarks sit on ``h`` under the
    scan's, their spread about their mean scaled by ``landmark_spread``, and are off by
    ``landmark_noise`` mm (normal noise drawn with ``seed``)."""
    from facehd.mesh import height_field_mesh

    scan, lm = _bumpy_face()
    x, y = np.meshgrid(xs, ys)
    shape = height_field_mesh(-h(x, y) if inverted else h(x, y), xs, ys)
    rot = rotation_from_axis_angle(np.array([0.3, -0.5, 0.2]))
    true = Similarity(0.001, rot, [0.05, -0.1, 0.2])
    lm_pred = np.stack([lm[:, 0], lm[:, 1], h(lm[:, 0], lm[:, 1])], axis=1)
    lm_pred = (lm_pred - lm_pred.mean(axis=0)) * landmark_spread + lm_pred.mean(axis=0)
    lm_pred += np.random.default_rng(seed).normal(scale=landmark_noise, size=lm_pred.shape)
    return scan, lm.astype(np.float32), shape.transformed(true), true.apply(lm_pred)


def _official_case() -> tuple[Mesh, np.ndarray, Mesh, np.ndarray]:
    """A scan (the bumpy face, mm) and a prediction of another shape, in metres, turned and
    moved, with landmarks off by ~1 mm: (scan, its landmarks, prediction, its landmarks)."""

    def h(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (
            37 * np.exp(-(x**2) / 4300 - y**2 / 7600)
            + 23 * np.exp(-(x**2) / 100 - (y + 8) ** 2 / 450)
            - 4 * np.exp(-((np.abs(x) - 32) ** 2) / 170 - (y - 22) ** 2 / 90)
            + 0.8 * np.sin(x / 9.0) * np.cos(y / 13.0)
        )

    return _height_prediction(h, np.linspace(-95, 95, 50), np.linspace(-115, 115, 56), 1.0)


def test_crop_sphere_formula_and_kept_vertices() -> None:
    lm = np.array(
        [
            [-40, 30, 0],
            [-10, 30, 0],
            [10, 30, 0],
            [40, 30, 0],
            [0, -10, 20],
            [-20, -40, 0],
            [20, -40, 0],
        ],
        dtype=float,
    )
    centre, radius = face_crop_sphere(lm)
    eyes_mid = np.array([0.0, 30.0, 0.0])
    np.testing.assert_allclose(centre, lm[4] + 0.3 * (eyes_mid - lm[4]))
    assert radius == pytest.approx(1.4 * (80.0 + np.linalg.norm(eyes_mid - lm[4])) / 2)
    # a vertex in no face still counts when it is inside the sphere
    v = np.array(
        [centre, centre + [radius, 0, 0], centre + [radius + 1e-6, 0, 0], centre + [1, 1, 0]]
    )
    scan = Mesh(v, np.array([[0, 2, 3]]))
    cropped = crop_scan(scan, lm)
    np.testing.assert_allclose(cropped.vertices, v[[0, 1, 3]])  # boundary kept (<=)
    assert cropped.n_faces == 0  # the face lost a vertex


def test_plane_against_offset_plane_every_distance_is_the_offset() -> None:
    # the prediction is stored in metres; the transform's scale brings it to mm
    d = 2.5
    scan = grid_plane(41, 100.0)
    pred_m = grid_plane(21, 0.2, z=-d / 1000.0)  # 200 mm wide, offset by d, in metres
    init = Similarity(1000.0, np.eye(3), np.zeros(3))
    pts = scan.vertices[np.abs(scan.vertices[:, :2]).max(axis=1) < 45]
    res = refine_scan_to_mesh(pts, pred_m, init, max_iterations=0)
    np.testing.assert_allclose(res.distances, d, rtol=0, atol=1e-9)


@pytest.mark.parametrize("r_scan, r_pred", [(60.0, 55.0), (60.0, 66.0)])
def test_sphere_against_scaled_sphere(r_scan: float, r_pred: float) -> None:
    centre = np.array([5.0, -3.0, 20.0])
    scan = icosphere(r_scan, 4, centre)
    rot = rotation_from_axis_angle(np.array([0.3, -0.2, 0.5]))
    pred = icosphere(r_pred, 5)  # fine, so the facets sag < 0.01 mm
    pred_m = Mesh(pred.vertices @ rot.T, pred.faces)
    lm_scan = _sphere_landmarks(r_scan) + centre
    lm_pred = _sphere_landmarks(r_pred) @ rot.T
    # with scale: the spheres coincide
    res = evaluate_now(scan, lm_scan, pred_m, lm_pred)
    assert res.distances.size == scan.n_vertices  # the crop keeps the whole sphere
    assert res.transform.scale == pytest.approx(r_scan / r_pred, rel=1e-4)
    assert res.distances.max() < 0.02
    # metrical (mm, scale 1): the best rigid fit is concentric, every distance |r - r'|
    minimum = NowConfig(metrical=True, unit="mm", solver="minimum")
    res = evaluate_now(scan, lm_scan, pred_m, lm_pred, minimum)
    assert res.transform.scale == 1.0
    np.testing.assert_allclose(res.transform.apply(np.zeros(3)), centre, atol=1e-3)
    np.testing.assert_allclose(res.distances, abs(r_scan - r_pred), atol=0.02)


def test_alignment_recovers_a_known_similarity() -> None:
    scan, lm = _bumpy_face()
    true = Similarity(0.001, rotation_from_axis_angle(np.array([0.4, -0.7, 0.2])), [0.1, 0.2, -0.3])
    pred = scan.transformed(true)  # the prediction is the scan, in another frame (metres)
    noisy_lm = true.apply(lm) + np.random.default_rng(0).normal(scale=2e-3, size=lm.shape)
    res = evaluate_now(scan, lm, pred, noisy_lm)
    back = res.transform.compose(true)  # should be the identity
    assert back.scale == pytest.approx(1.0, abs=1e-7)
    assert back.rotation_angle_deg() < 1e-5
    np.testing.assert_allclose(back.translation, 0.0, atol=1e-4)
    assert res.distances.max() < 1e-5
    # the landmark step alone is off (noisy landmarks); the refinement fixed it
    assert res.landmark_transform.compose(true).rotation_angle_deg() > 1e-3
    assert res.converged
    # a refinement cut short says so
    short = evaluate_now(scan, lm, pred, noisy_lm, NowConfig(max_iterations=1, solver="minimum"))
    assert not short.converged and short.iterations <= 2


@pytest.mark.parametrize("metrical", [False, True])
def test_official_solver_stops_where_the_official_dogleg_stops(metrical: bool) -> None:
    """Against distances chumpy's own ``minimize`` wrote on this case (dogleg, the official
    options: delta_0 0.1, e_3 1e-4, conjugate gradients; the official objective: the scan
    vertices' distances to the surface ``s R(r) a + t``, ``r`` by Rodrigues; closest points by
    trimesh): every distance to 1e-5 mm. The minimum itself lies 1e-3 mm or more away at
    some vertices, and its objective is lower."""
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "now_chumpy_dogleg.npz")
    scan, lm, pred, lm_pred = _official_case()
    key, kw = ("metrical_m", {"metrical": True, "unit": "m"}) if metrical else ("similarity", {})
    official = evaluate_now(scan, lm, pred, lm_pred, NowConfig(**kw))
    assert official.distances.shape == ref[key].shape
    np.testing.assert_allclose(official.distances, ref[key], rtol=0, atol=1e-5)
    assert official.converged
    minimum = evaluate_now(scan, lm, pred, lm_pred, NowConfig(solver="minimum", **kw))
    assert np.abs(minimum.distances - ref[key]).max() > 1e-3
    assert minimum.distances @ minimum.distances < official.distances @ official.distances


def _rippled_face(ripple: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The height (mm) of a face like the bumpy one, with ripples ``ripple`` mm high."""

    def h(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (
            37 * np.exp(-(x**2) / 4300 - y**2 / 7600)
            + 23 * np.exp(-(x**2) / 100 - (y + 8) ** 2 / 450)
            + ripple * np.sin(x / 5.0) * np.cos(y / 7.0)
        )

    return h


def _small_prediction_case(
    ripple: float = 1.5, landmark_noise: float = 3.0, seed: int = 7
) -> tuple[Mesh, np.ndarray, Mesh, np.ndarray]:
    """The bumpy face and a prediction that covers only the middle of its crop (a face 80 mm
    wide with ripples ``ripple`` mm high, in metres, turned and moved; landmarks off by
    ``landmark_noise`` mm, drawn with ``seed``): the scan's outer vertices meet the prediction's
    rim, and the dogleg rejects steps."""
    xs, ys = np.linspace(-40, 40, 30), np.linspace(-48, 48, 34)
    return _height_prediction(_rippled_face(ripple), xs, ys, landmark_noise, seed=seed)


@pytest.mark.parametrize("max_iterations", [10, 200])
def test_official_solver_follows_the_official_dogleg_through_rejected_steps(
    max_iterations: int,
) -> None:
    """Against chumpy's own ``minimize`` (dogleg, the official options and objective, its
    ``maxiter`` 10 and its default 200) on a case where steps are rejected and the trust region
    shrinks: every distance to 1e-5 mm. Without a step rejected, the 10 iterations would take
    10 evaluations."""
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "now_chumpy_dogleg_rejected.npz")
    scan, lm, pred, lm_pred = _small_prediction_case()
    cropped = crop_scan(scan, lm)
    init = landmark_alignment(lm_pred, lm)
    res = refine_dogleg(cropped.vertices, pred, init, max_iterations=max_iterations)
    assert res.iterations > max_iterations  # evaluations: at least one step was rejected
    assert not res.converged  # the cap, not the stopping test, ended it
    expected = ref[f"similarity_{max_iterations}"]
    assert res.distances.shape == expected.shape
    np.testing.assert_allclose(res.distances, expected, rtol=0, atol=1e-5)


def test_a_prediction_that_is_the_scan_stops_at_rounding_noise() -> None:
    """The scan scored as its own prediction. Chumpy's stopping test (a gain under 1e-4 of the
    objective) would go on stepping through rounding noise, 24 evaluations here and 31 from
    landmarks 2 mm off; the refinement stops before its first step, and from the landmarks
    off, in a few steps, once the distances are down to ~1e-9 of the scan's size."""
    scan, lm = _bumpy_face()
    exact = evaluate_now(scan, lm, scan, lm)
    assert exact.converged and exact.iterations == 0 and exact.distances.max() < 1e-9
    noisy = lm + np.random.default_rng(0).normal(0, 2.0, lm.shape)
    moved = evaluate_now(scan, lm, scan, noisy)
    assert moved.converged and 1 <= moved.iterations <= 8 and moved.distances.max() < 1e-6


def test_official_solver_shrinks_the_region_after_a_step_of_low_gain() -> None:
    """Against chumpy's ``minimize`` (the official options, ``maxiter`` 10) on a case whose
    fourth step is accepted with a gain ratio of 0.024: below the official 0.05 the trust region
    is quartered, though the step lowered the objective. Every distance to 1e-5 mm; a bound of
    0.01 instead (no shrink after that step) ends up to 1.8 mm elsewhere."""
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "now_chumpy_dogleg_low_gain.npz")
    scan, lm, pred, lm_pred = _small_prediction_case(ripple=3.0, landmark_noise=1.0, seed=26)
    init = landmark_alignment(lm_pred, lm)
    res = refine_dogleg(crop_scan(scan, lm).vertices, pred, init, max_iterations=10)
    assert not res.converged
    expected = ref["similarity_10"]
    assert res.distances.shape == expected.shape
    np.testing.assert_allclose(res.distances, expected, rtol=0, atol=1e-5)


def test_official_solver_takes_a_negative_scale_as_the_official_dogleg_does() -> None:
    """Against chumpy's ``minimize`` (the official options and objective) on a prediction
    turned inside out, a patch 20 mm wide whose landmarks sit where an upright face's would,
    their spread halved: the dogleg's steps take the scale below 0, where the official
    ``100 (|s| - s)`` applies, and it ends there, the mesh mirrored. Every distance to 1e-5 mm;
    without the penalty they end up to 0.07 mm elsewhere."""
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "now_chumpy_dogleg_negative_scale.npz")
    xs, ys = np.linspace(-10, 10, 30), np.linspace(-12, 12, 34)
    scan, lm, pred, lm_pred = _height_prediction(
        _rippled_face(1.5), xs, ys, 0.5, seed=31, inverted=True, landmark_spread=0.5
    )
    init = landmark_alignment(lm_pred, lm)
    cropped = crop_scan(scan, lm).vertices
    res = refine_dogleg(cropped, pred, init)
    assert res.converged
    expected = ref["similarity_200"]
    assert res.distances.shape == expected.shape
    np.testing.assert_allclose(res.distances, expected, rtol=0, atol=1e-5)
    # the scale ended negative: the returned transform mirrors where the landmark fit did not
    assert np.linalg.det(init.rotation) > 0 > np.linalg.det(res.transform.rotation)
    again = point_to_surface(cropped, pred.transformed(res.transform)).distances
    np.testing.assert_allclose(again, res.distances, rtol=0, atol=1e-9)


def test_minimum_solver_fits_a_flat_prediction_as_the_best_plane() -> None:
    """A prediction that is a plane (180 x 216 mm, under the scan's own landmarks): the least
    ``sum d^2`` over similarities is the total-least-squares plane's, the cropped scan's
    smallest scatter eigenvalue. The plane's scale is free, and Levenberg-Marquardt tries
    steps whose scale underflows float64; those count as rejected steps."""
    from facehd.mesh import height_field_mesh

    scan, lm = _bumpy_face()
    xs, ys = np.linspace(-90, 90, 30), np.linspace(-108, 108, 34)
    plane = height_field_mesh(np.zeros((len(ys), len(xs))), xs, ys)
    res = evaluate_now(scan, lm, plane, lm, NowConfig(solver="minimum"))
    pts = crop_scan(scan, lm).vertices
    centred = pts - pts.mean(axis=0)
    least = np.linalg.eigvalsh(centred.T @ centred)[0]
    assert res.converged
    assert res.distances @ res.distances == pytest.approx(least, rel=1e-6)


def test_rotation_derivatives_match_finite_differences() -> None:
    for v in (np.array([0.3, -1.2, 0.7]), np.array([1e-14, 0.0, -2e-14]), np.zeros(3)):
        rot, d_rot = rotation_derivatives(v)
        np.testing.assert_allclose(rot, rotation_from_axis_angle(v), atol=1e-15)
        for k in range(3):
            e = np.eye(3)[k] * 1e-6
            fd = (rotation_from_axis_angle(v + e) - rotation_from_axis_angle(v - e)) / 2e-6
            np.testing.assert_allclose(d_rot[k], fd, atol=1e-8)


def test_metrical_variant_keeps_the_unit_scale() -> None:
    scan, lm = _bumpy_face()
    true = Similarity(0.1, rotation_from_axis_angle(np.array([0.1, 0.2, -0.1])), [1.0, 2.0, 3.0])
    pred = scan.transformed(true)  # centimetres
    res = evaluate_now(scan, lm, pred, true.apply(lm), NowConfig(metrical=True, unit="cm"))
    assert res.transform.scale == 10.0
    assert res.transform.compose(true).rotation_angle_deg() < 1e-5
    assert res.distances.max() < 1e-5


def test_landmark_alignment_takes_a_reflection_when_it_fits_better() -> None:
    _, lm = _bumpy_face()
    mirror = lm * np.array([-1.0, 1.0, 1.0])
    t = landmark_alignment(mirror, lm)
    assert t.is_reflection
    np.testing.assert_allclose(t.apply(mirror), lm, atol=1e-9)


def test_pooled_statistics_pool_all_distances() -> None:
    a = np.array([1.0, 1.0, 1.0])
    b = np.array([5.0])
    st = pooled_statistics([a, b])
    allv = np.concatenate([a, b])
    assert (st.median, st.mean, st.std) == (np.median(allv), allv.mean(), allv.std())
    assert st.median != np.mean([np.median(a), np.median(b)])  # not a mean of per-image values
    assert (st.n_images, st.n_points) == (2, 4)
    assert np.isnan(pooled_statistics([]).median)


def test_drop_degenerate_faces() -> None:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0]], float)
    f = np.array([[0, 1, 2], [0, 1, 3], [0, 0, 2]])  # 2nd collinear, 3rd has a repeated vertex
    out = drop_degenerate_faces(Mesh(v, f))
    np.testing.assert_array_equal(out.faces, [[0, 1, 2]])
    # a sliver of tiny but non-zero area is a face: only exact zeros go, as in the official code
    sliver = np.array([[0, 0, 0], [1, 0, 0], [0.5, 1e-13, 0]], float)
    assert drop_degenerate_faces(Mesh(sliver, np.array([[0, 1, 2]]))).n_faces == 1


def test_evaluation_with_degenerate_faces_dropped_ignores_a_needle_face() -> None:
    """``NowConfig(drop_degenerate_faces=True)``: a zero-area face (three points on a line)
    lying through the scan's points, which would take their closest points, is dropped before
    the fit, and the prediction scores as it does without it; left in, it scores lower."""
    scan, lm, pred, pred_lm = _official_case()
    drop = NowConfig(drop_degenerate_faces=True)
    clean = evaluate_now(scan, lm, pred, pred_lm, drop)
    # the needle: three points on a line (exactly: along the prediction's x axis) through the
    # scan's point at the top of its nose, 16 mm long, where the prediction lies ~1 mm off
    top = scan.vertices[np.argmin(np.linalg.norm(scan.vertices[:, :2] - [0.0, -5.0], axis=1))]
    ends = clean.transform.inverse().apply(top) + np.outer([-1.0, 0.0, 1.0], [0.008, 0.0, 0.0])
    n = pred.n_vertices
    needled = Mesh(np.vstack([pred.vertices, ends]), np.vstack([pred.faces, [[n, n + 1, n + 2]]]))
    dropped = evaluate_now(scan, lm, needled, pred_lm, drop)
    kept = evaluate_now(scan, lm, needled, pred_lm)
    np.testing.assert_array_equal(dropped.distances, clean.distances)
    assert not np.array_equal(kept.distances, clean.distances)


def test_bad_landmarks_are_clear_errors() -> None:
    scan, lm = _bumpy_face(20)
    with pytest.raises(ValueError, match=r"\(7, 3\)"):
        evaluate_now(scan, lm[:6], scan, lm)
    bad = lm.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_now(scan, lm, scan, bad)


def test_crop_of_float32_landmarks_follows_the_official_float32_arithmetic() -> None:
    # The official compute_mask works on the float32 landmarks load_pp returns: the centre and
    # the two distances in float32, the radius in float64 from their float32 sum (NumPy 1.23).
    # Reference: that arithmetic spelled out with NumPy float32 scalars, one vertex at a time.
    rng = np.random.default_rng(5)
    lm = np.array(
        [
            [-45.13, 1030.27, 412.9],
            [-15.71, 1029.83, 418.1],
            [14.37, 1030.41, 417.6],
            [44.91, 1030.02, 411.3],
            [0.33, 990.17, 441.7],
            [-24.6, 960.55, 425.2],
            [25.1, 960.81, 424.9],
        ]
    )
    lm = lm.astype(np.float32).astype(np.float64)  # as read from a .pp file
    f = [np.float32(c) for c in lm.ravel()]
    p = [f[3 * k : 3 * k + 3] for k in range(7)]
    mid = [(p[1][i] + p[2][i]) / np.float32(2) for i in range(3)]
    c32 = [p[4][i] + np.float32(0.3) * (mid[i] - p[4][i]) for i in range(3)]
    # the distances by np.linalg.norm of float32 vectors, as the official code takes them
    eye = np.linalg.norm(np.array(p[0], np.float32) - np.array(p[3], np.float32))
    nose = np.linalg.norm(np.array(mid, np.float32) - np.array(p[4], np.float32))
    assert eye.dtype == np.float32 and nose.dtype == np.float32
    r32 = 1.4 * float(eye + nose) / 2
    c32 = np.array([float(c) for c in c32])
    # candidates within a few rounding errors of that sphere, in many directions
    dirs = rng.normal(size=(4000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    radii = r32 + rng.uniform(-3e-5, 3e-5, size=len(dirs))
    v = c32 + dirs * radii[:, None]
    keep_ref = np.array([np.sqrt(((x - c32) ** 2).sum()) <= r32 for x in v])
    centre, radius = face_crop_sphere(lm)
    np.testing.assert_array_equal(centre, c32)
    assert radius == r32
    cropped = crop_scan(Mesh(v, np.array([[0, 1, 2]])), lm)
    np.testing.assert_array_equal(cropped.vertices, v[keep_ref])
    # the float64 formula keeps another set here: the test tells the two apart
    eyes_mid = 0.5 * (lm[1] + lm[2])
    c64 = lm[4] + 0.3 * (eyes_mid - lm[4])
    r64 = 1.4 * (np.linalg.norm(lm[0] - lm[3]) + np.linalg.norm(eyes_mid - lm[4])) / 2
    assert ((np.linalg.norm(v - c64, axis=1) <= r64) != keep_ref).sum() > 100
    # landmarks that are no float32 values keep the float64 arithmetic
    lm64 = lm + 1e-9
    c, r = face_crop_sphere(lm64)
    mid64 = 0.5 * (lm64[1] + lm64[2])
    np.testing.assert_array_equal(c, lm64[4] + 0.3 * (mid64 - lm64[4]))
    assert r == 1.4 * (np.linalg.norm(lm64[0] - lm64[3]) + np.linalg.norm(mid64 - lm64[4])) / 2


def test_settings_and_inputs_the_protocol_cannot_take_are_named() -> None:
    from facehd.errors import DegenerateInputError

    scan, lm = _bumpy_face(20)
    with pytest.raises(ValueError, match=r"NowConfig.unit: expected one of \['cm', 'm', 'mm'\]"):
        NowConfig(unit="inch")
    with pytest.raises(ValueError, match="NowConfig.solver: expected one of official, minimum"):
        NowConfig(solver="lbfgs")
    with pytest.raises(ValueError, match=r"unit: expected one of .*got 'dm'"):
        landmark_alignment(lm, lm, metrical=True, unit="dm")
    far = lm + np.array([0.0, 0.0, 5000.0])  # the face sphere lies beside the scan
    with pytest.raises(DegenerateInputError, match="no scan vertex lies within the face sphere"):
        crop_scan(scan, far)
    faceless = Mesh(scan.vertices, np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(DegenerateInputError, match=r"has no \(non-degenerate\) faces"):
        evaluate_now(scan, lm, faceless, lm)
    needles = Mesh(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]]))
    with pytest.raises(DegenerateInputError, match=r"has no \(non-degenerate\) faces"):
        evaluate_now(scan, lm, needles, lm, NowConfig(drop_degenerate_faces=True))
    identity = Similarity(1.0, np.eye(3), np.zeros(3))
    for refine in (refine_scan_to_mesh, refine_dogleg):
        with pytest.raises(ValueError, match=r"expected \(N, 3\) scan points, got \(5, 2\)"):
            refine(np.zeros((5, 2)), scan, identity)

"""Similarity transforms, Procrustes (Umeyama) and Euler rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facehd.errors import DegenerateInputError
from facehd.transforms import (
    Similarity,
    euler_from_rotation_matrix,
    procrustes,
    rotation_from_axis_angle,
    rotation_matrix_from_euler,
)


def random_similarity(rng: np.random.Generator, scale: bool = True) -> Similarity:
    rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    s = float(rng.uniform(0.5, 2.0)) if scale else 1.0
    return Similarity(s, rot, rng.normal(size=3) * 50.0)


# --- Similarity -------------------------------------------------------------------------------


def test_similarity_apply_matrix_inverse_compose_agree() -> None:
    rng = np.random.default_rng(0)
    a, b = random_similarity(rng), random_similarity(rng)
    pts = rng.normal(size=(20, 3)) * 30
    homo = np.c_[pts, np.ones(len(pts))] @ a.matrix().T
    np.testing.assert_allclose(a.apply(pts), homo[:, :3], atol=1e-10)
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-10)
    np.testing.assert_allclose(a.compose(b).apply(pts), a.apply(b.apply(pts)), atol=1e-10)
    assert a.compose(a.inverse()).allclose(Similarity.identity(), atol=1e-12)
    assert Similarity.from_matrix(a.matrix()).allclose(a, atol=1e-12)


def test_similarity_apply_torch_matches_numpy_and_keeps_grad() -> None:
    rng = np.random.default_rng(1)
    a = random_similarity(rng)
    pts = rng.normal(size=(2, 5, 3))
    t = torch.tensor(pts, requires_grad=True)
    out = a.apply(t)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.detach().numpy(), a.apply(pts), atol=1e-12)
    out.sum().backward()
    assert t.grad is not None


def test_rotation_angle_deg_known_angle() -> None:
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    for deg in (1e-6, 2.0, 90.0, 179.0):
        r = Similarity(1.0, rotation_from_axis_angle(np.radians(deg) * axis), np.zeros(3))
        assert r.rotation_angle_deg(Similarity.identity()) == pytest.approx(deg, rel=1e-9)
    np.testing.assert_allclose(
        rotation_from_axis_angle(0.3 * axis), Rotation.from_rotvec(0.3 * axis).as_matrix()
    )


def test_similarity_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="scale"):
        Similarity(0.0, np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        Similarity(1.0, np.eye(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        Similarity(1.0, np.eye(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        Similarity.identity().apply(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="orthogonal"):
        Similarity.from_matrix(np.diag([1.0, 2.0, 3.0, 1.0]))
    # a projective bottom row would be dropped silently: x -> (M x) / w is no similarity
    projective = np.eye(4)
    projective[3, 2] = 0.1
    with pytest.raises(ValueError, match=r"bottom row must be \[0, 0, 0, 1\]"):
        Similarity.from_matrix(projective)
    scaled = 2.0 * np.eye(4)  # the homogeneous w = 2 too: not [[s R, t], [0, 1]]
    with pytest.raises(ValueError, match="bottom row"):
        Similarity.from_matrix(scaled)
    for bad in (np.inf, np.nan, -1.0):
        with pytest.raises(ValueError, match="finite positive"):
            Similarity(bad, np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        Similarity.identity().apply(np.float64(3.0))  # a scalar: no last axis


def test_from_matrix_takes_the_rms_column_scale_within_the_orthogonality_tolerance() -> None:
    """A block a little off a scaled rotation (within the 1e-6 orthogonality test): the scale is
    the root-mean-square column norm, not any one column's."""
    rot = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    m = np.eye(4)
    m[:3, :3] = 2.5 * rot * np.array([1.0 + 3e-7, 1.0, 1.0 - 1e-7])  # column norms differ
    norms = np.linalg.norm(m[:3, :3], axis=0)
    got = Similarity.from_matrix(m)
    assert got.scale == pytest.approx(float(np.sqrt(np.mean(norms**2))), rel=1e-12)
    assert abs(got.scale - norms[0]) > 1e-7


def test_allclose_compares_the_scale_too() -> None:
    a = Similarity(1.0, np.eye(3), np.zeros(3))
    assert a.allclose(Similarity(1.0 + 1e-10, np.eye(3), np.zeros(3)))
    assert not a.allclose(Similarity(1.001, np.eye(3), np.zeros(3)))
    assert not a.allclose(Similarity(1.0, np.eye(3), [0.0, 0.0, 1e-3]))


def test_reflections_print_and_refuse_an_angle() -> None:
    """A mirror has no rotation angle: asking for one is an error; its repr gives the angle of
    the proper rotation it negates and says it is a reflection."""
    mirror = Similarity(1.0, np.diag([1.0, 1.0, -1.0]), np.zeros(3))
    assert mirror.is_reflection and not Similarity.identity().is_reflection
    with pytest.raises(ValueError, match="reflection"):
        mirror.rotation_angle_deg()
    with pytest.raises(ValueError, match="reflection"):
        Similarity.identity().rotation_angle_deg(mirror)
    text = repr(mirror)
    assert text.endswith(", reflection)") and "angle=180 deg" in text
    assert repr(Similarity.identity()).startswith("Similarity(scale=1, angle=0 deg")


def test_axis_angle_rotations_match_scipy_at_every_size() -> None:
    """Rodrigues' formula and its series near zero agree with SciPy to rounding, from 1e-12 to
    3 radians (a series used too far from zero drifts by theta^3 / 6)."""
    axis = np.array([0.6, -0.3, 0.74]) / np.linalg.norm([0.6, -0.3, 0.74])
    for theta in (1e-12, 1e-9, 3e-8, 1e-6, 1e-4, 1e-3, 0.1, 1.0, 3.0):
        np.testing.assert_allclose(
            rotation_from_axis_angle(theta * axis),
            Rotation.from_rotvec(theta * axis).as_matrix(),
            rtol=0,
            atol=1e-15,
        )


# --- Procrustes -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_procrustes_recovers_random_similarity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = random_similarity(rng)
    src = rng.normal(size=(12, 3)) * 40
    est = procrustes(src, truth.apply(src))
    assert est.allclose(truth, atol=1e-9)
    assert not est.is_reflection


def test_procrustes_rigid_keeps_unit_scale_and_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    truth = random_similarity(rng, scale=False)
    src = rng.normal(size=(30, 3)) * 40
    dst = truth.apply(src) + rng.normal(size=src.shape) * 0.5  # noisy: least squares
    w = rng.uniform(0.1, 2.0, size=len(src))
    est = procrustes(src, dst, with_scale=False, weights=w)
    assert est.scale == 1.0
    # independent reference: scipy's weighted Kabsch on the weighted-centred points
    mu_s = w @ src / w.sum()
    mu_d = w @ dst / w.sum()
    ref, _ = Rotation.align_vectors(dst - mu_d, src - mu_s, weights=w)
    np.testing.assert_allclose(est.rotation, ref.as_matrix(), atol=1e-9)
    np.testing.assert_allclose(est.translation, mu_d - ref.as_matrix() @ mu_s, atol=1e-8)


def test_procrustes_weights_of_ones_change_nothing() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(size=(9, 3)) * 20
    dst = random_similarity(rng).apply(src) + rng.normal(size=src.shape)
    plain = procrustes(src, dst)
    assert procrustes(src, dst, weights=np.ones(9)).allclose(plain, atol=1e-12)
    assert procrustes(src, dst, weights=np.full(9, 7.5)).allclose(plain, atol=1e-12)


def test_procrustes_zero_weights_ignore_outliers() -> None:
    rng = np.random.default_rng(4)
    truth = random_similarity(rng)
    src = rng.normal(size=(10, 3)) * 20
    dst = truth.apply(src)
    dst[:3] += 100.0  # corrupted correspondences
    w = np.ones(10)
    w[:3] = 0.0
    assert procrustes(src, dst, weights=w).allclose(truth, atol=1e-9)
    assert not procrustes(src, dst).allclose(truth, atol=1e-3)


def test_procrustes_reflection_only_when_allowed() -> None:
    rng = np.random.default_rng(5)
    truth = random_similarity(rng)
    mirror = Similarity(1.0, np.diag([-1.0, 1.0, 1.0]), np.zeros(3))
    mirrored = truth.compose(mirror)  # det(R) = -1
    src = rng.normal(size=(15, 3)) * 30
    dst = mirrored.apply(src)
    est = procrustes(src, dst, allow_reflection=True)
    assert est.is_reflection
    assert est.allclose(mirrored, atol=1e-9)
    proper = procrustes(src, dst, allow_reflection=False)
    assert not proper.is_reflection
    assert np.linalg.norm(proper.apply(src) - dst) > 1.0
    # a proper rotation is still returned when it fits exactly, even if reflections are allowed
    assert not procrustes(src, truth.apply(src), allow_reflection=True).is_reflection


def test_procrustes_planar_points_keep_a_rotation_even_when_reflections_are_allowed() -> None:
    """Points on a plane: a reflection through the plane fits as well as the rotation, so it
    does not fit strictly better, and a rotation (the true one) is returned however the SVD
    signs its null direction."""
    rng = np.random.default_rng(8)
    for _ in range(20):
        truth = random_similarity(rng)
        src = np.column_stack([rng.normal(size=(12, 2)) * 30, np.zeros(12)])
        est = procrustes(src, truth.apply(src), allow_reflection=True)
        assert not est.is_reflection
        assert est.allclose(truth, atol=1e-8)


def test_procrustes_scale_is_the_best_for_the_rotation_it_returns() -> None:
    """Mirrored data fitted with rotations only: no rotation fits, and the scale returned is the
    least-squares scale for the rotation returned, ``Σ w (R x_s)·x_d / Σ w |x_s|²`` (the
    smallest singular value counts negatively)."""
    rng = np.random.default_rng(9)
    src = rng.normal(size=(30, 3)) * np.array([40.0, 20.0, 10.0])
    mirrored = Similarity(1.7, np.diag([1.0, 1.0, -1.0]), np.array([5.0, -3.0, 2.0]))
    dst = mirrored.apply(src) + rng.normal(size=src.shape) * 0.1
    w = rng.uniform(0.5, 2.0, 30)
    for weights in (None, w):
        est = procrustes(src, dst, weights=weights)
        assert not est.is_reflection
        ww = np.full(30, 1 / 30) if weights is None else weights / weights.sum()
        xs, xd = src - ww @ src, dst - ww @ dst
        best = float(ww @ np.sum((xs @ est.rotation.T) * xd, axis=1) / (ww @ np.sum(xs**2, 1)))
        assert est.scale == pytest.approx(best, rel=1e-9)
        assert est.scale < 1.7 * 0.9  # the flipped axis pulls it down


def test_procrustes_degenerate_inputs_raise() -> None:
    with pytest.raises(DegenerateInputError, match="coincident"):
        procrustes(np.ones((5, 3)), np.random.default_rng(0).normal(size=(5, 3)))
    line = np.outer(np.arange(6.0), [1.0, 2.0, 3.0])
    with pytest.raises(DegenerateInputError, match="collinear"):
        procrustes(line, line + 1.0)
    with pytest.raises(DegenerateInputError, match="at least 3"):
        procrustes(np.eye(3)[:2], np.eye(3)[:2])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        procrustes(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        procrustes(np.eye(5, 3), np.eye(4, 3))
    with pytest.raises(ValueError, match="weights"):
        procrustes(np.eye(5, 3), np.eye(5, 3), weights=-np.ones(5))
    pts = np.random.default_rng(1).normal(size=(5, 3))
    for bad in ([1.0, 1.0, 1.0, 1.0, -0.5], [1.0, 1.0, np.nan, 1.0, 1.0], [1, 1, np.inf, 1, 1]):
        with pytest.raises(ValueError, match="finite, >= 0"):
            procrustes(pts, pts, weights=np.array(bad))
    # coincident up to rounding, far from the origin: still coincident
    spread = np.arange(18.0).reshape(6, 3) ** 1.5
    for far, noise in ((1000.0, 1e-13), (1e6, 1e-9)):  # a few units in the last place
        jitter = far + noise * np.random.default_rng(2).normal(size=(6, 3))
        assert np.ptp(jitter, axis=0).min() > 0
        with pytest.raises(DegenerateInputError, match="coincident"):
            procrustes(jitter, pts[:1].repeat(6, axis=0) + spread)
    # collinear up to rounding: a line with a sideways wobble of 1e-12 of its length
    wobble = line + 1e-12 * np.random.default_rng(3).normal(size=line.shape) * 10.0
    with pytest.raises(DegenerateInputError, match="collinear"):
        procrustes(wobble, wobble + 1.0)


# --- Euler angles -----------------------------------------------------------------------------


def test_euler_matches_scipy_rz_ry_rx_and_round_trips() -> None:
    rng = np.random.default_rng(6)
    angles = rng.uniform(-1.5, 1.5, size=(10, 3))
    r = rotation_matrix_from_euler(angles)
    # extrinsic x, then y, then z about fixed axes == Rz @ Ry @ Rx
    ref = Rotation.from_euler("xyz", angles).as_matrix()
    np.testing.assert_allclose(r, ref, atol=1e-12)
    np.testing.assert_allclose(euler_from_rotation_matrix(r), angles, atol=1e-10)
    assert rotation_matrix_from_euler(angles[0]).shape == (3, 3)


def test_euler_at_gimbal_lock_round_trips_with_x_zero() -> None:
    """At y = ±π/2 only x ∓ z is determined: x is set to 0 and z carries the rest, and the
    angles give back the rotation."""
    rng = np.random.default_rng(7)
    for y in (np.pi / 2, -np.pi / 2):
        for x, z in rng.uniform(-3.0, 3.0, size=(8, 2)):
            r = rotation_matrix_from_euler(np.array([x, y, z]))
            got = euler_from_rotation_matrix(r)
            assert got[0] == 0.0 and got[1] == pytest.approx(y, abs=1e-7)
            np.testing.assert_allclose(rotation_matrix_from_euler(got), r, atol=1e-7)


def test_euler_near_gimbal_lock_round_trips() -> None:
    """Close to y = ±π/2 the angles are still regular and come back to rounding (y from
    arcsin(-r[2, 0]) alone was 4e-11 off at 1e-7 from the lock); a matrix whose -r[2, 0]
    rounds past 1 gives y = ±π/2, not NaN."""
    for y in (np.pi / 2 - 1e-4, -np.pi / 2 + 1e-5, np.pi / 2 - 1e-7, np.pi / 2 - 1e-10):
        angles = np.array([0.4, y, -1.1])
        r = rotation_matrix_from_euler(angles)
        got = euler_from_rotation_matrix(r)
        np.testing.assert_allclose(rotation_matrix_from_euler(got), r, rtol=0, atol=1e-15)
        np.testing.assert_allclose(got, angles, rtol=0, atol=1e-14)
    past = rotation_matrix_from_euler(np.array([0.0, np.pi / 2, 0.3]))
    past[2, 0] = -1.0 - 4e-16
    got = euler_from_rotation_matrix(past)
    assert np.isfinite(got).all() and got[1] == pytest.approx(np.pi / 2)


def test_euler_torch_matches_numpy_and_is_differentiable() -> None:
    angles = torch.tensor([[0.1, -0.2, 0.3], [1.0, 0.5, -0.7]], dtype=torch.float64)
    r = rotation_matrix_from_euler(angles)
    np.testing.assert_allclose(r.numpy(), rotation_matrix_from_euler(angles.numpy()), atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a: rotation_matrix_from_euler(a), (angles.clone().requires_grad_(True),)
    )
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        rotation_matrix_from_euler(np.zeros(4))

"""The morphable model check of scan landmarks (pipelines.model_landmarks), against the exact
landmarks of synthetic scans: on a face the model describes, its landmark vertices come closer to
the truth than the detected points it started from; on a face it does not describe (a scan whose
mid-frequency shape lies outside the model's span), or where its points disagree with the
detection, the detection stands."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from facehd.errors import DegenerateInputError
from facehd.landmarks import NOW7_FROM_68
from facehd.mesh import Mesh
from facehd.morphable import facehd_synth
from facehd.scan_landmarks import LandmarkCheck
from facehd.transforms import Similarity
from pipelines.model_landmarks import ModelCheckConfig, ModelLandmarkCheck
from pipelines.synth import SynthConfig, make_scan

NOW7 = list(NOW7_FROM_68)


@pytest.fixture(scope="module")
def check() -> ModelLandmarkCheck:
    return ModelLandmarkCheck()


def _scan(seed: int, expression: int = 1, **kw: float) -> tuple[Mesh, np.ndarray]:
    """A synthetic raw scan (random frame, holes, neck, hair) in mm, its true iBUG-68 points."""
    model = facehd_synth()
    config = SynthConfig(subjects=1, expressions=2, seed=seed, **kw)
    scan, truth, _, _, _ = make_scan(model, config, 0, expression)
    t = Similarity(float(truth["scale"]), truth["rotation"], truth["translation"])
    k = float(truth["scale"])  # the scan's unit in mm (its frame is rigid otherwise)
    return Mesh(scan.vertices * k, scan.faces), t.inverse().apply(truth["landmarks68"]) * k


def _detected(truth: np.ndarray, seed: int, mm: float = 2.5) -> np.ndarray:
    """The truth moved ``mm`` in a random direction per point: a detection's typical error."""
    d = np.random.default_rng(seed).normal(size=truth.shape)
    return truth + mm * d / np.linalg.norm(d, axis=1, keepdims=True)


def _now7_error(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[NOW7] - truth[NOW7], axis=1)


@pytest.mark.parametrize("seed", [4, 9])
def test_a_face_the_model_describes_gets_its_landmark_vertices(
    check: ModelLandmarkCheck, seed: int
) -> None:
    scan, truth = _scan(seed)
    detected = _detected(truth, seed)
    result = check(scan, detected)
    assert result.source == "model (facehd-synth)", result.detail
    assert result.residual_mm is not None and result.residual_mm < 0.25
    err = _now7_error(result.landmarks68_mm, truth)
    # 2.5 mm off per point before; the truth is the model's own vertices on the true M1 (M0
    # plus a mid-frequency field the fit's M0 does not hold), so not exactly zero after
    assert np.median(err) < 1.5 and err.max() < 4.0, err
    assert np.median(err) < 0.6 * np.median(_now7_error(detected, truth))


@pytest.fixture(scope="module")
def slow_to_fit() -> tuple[Mesh, np.ndarray]:
    """Seed 13's neutral face: three steps a round leave its M0 short at the lips."""
    return _scan(13, expression=0, dense_resolution=120)


def test_a_fit_stopped_short_is_carried_on_to_where_it_converges(
    slow_to_fit: tuple[Mesh, np.ndarray],
) -> None:
    """Carried on, the check's fit ends where a fit of many more steps does, and nearer the
    truth. Where it ends is checked with M0's fold at 30°: there this scan's fit settles within
    16 steps (its landmark vertices then move < 0.1 mm in 8 more), while at the default 60° its
    lips keep moving (10.7, 1.2, then 0.3 mm in each 8 steps). Nearer the truth is checked at
    both. The fits' own points are compared: the guard that keeps the detected mouth where a
    fit's mouth went wrong (which a fit stopped short here sets off) is off."""
    scan, truth = slow_to_fit
    detected = _detected(truth, 13)

    def run(**kw: object) -> LandmarkCheck:
        return ModelLandmarkCheck(ModelCheckConfig(mouth_gap_mm=1e6, **kw))(scan, detected)

    at30 = dataclasses.replace(ModelCheckConfig().fit, m0_fold_angle_deg=30.0)
    short = run(refine_iterations=0, fit=at30)
    carried = run(fit=at30)
    long = run(refine_iterations=0, fit=dataclasses.replace(at30, m0_iterations=16))
    default_short = run(refine_iterations=0)
    default_carried = run()
    for result in (short, carried, long, default_short, default_carried):
        assert result.source == "model (facehd-synth)", result.detail

    def gap(result: LandmarkCheck) -> float:
        return float(np.linalg.norm(result.landmarks68_mm - long.landmarks68_mm, axis=1).max())

    assert gap(short) > 5.0 and gap(carried) < 0.5, (gap(short), gap(carried))
    # and nearer the truth where NoW measures
    for stopped, on in ((short, carried), (default_short, default_carried)):
        short_err = _now7_error(stopped.landmarks68_mm, truth)
        carried_err = _now7_error(on.landmarks68_mm, truth)
        assert carried_err.max() < 0.6 * short_err.max(), (carried_err, short_err)


def test_carrying_on_stops_when_a_step_barely_moves_the_fit(
    check: ModelLandmarkCheck,
    slow_to_fit: tuple[Mesh, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines import fitting

    scan, truth = slow_to_fit
    md, _ = check.fit_data()
    cfg = check.config.fit
    start = fitting.fit_shape(scan, truth[NOW7], md, cfg, threads=1)
    steps = []
    match = fitting._match_to_model
    monkeypatch.setattr(
        fitting, "_match_to_model", lambda *a, **k: steps.append(1) or match(*a, **k)
    )
    rounds = len(cfg.m0_max_distance_mm)

    def taken(
        fit: fitting.ShapeFit, iterations: int, tolerance: float
    ) -> tuple[fitting.ShapeFit, int]:
        steps.clear()
        out = fit.refined(scan, md, cfg, iterations=iterations, tolerance_mm=tolerance)
        return out, len(steps)

    assert taken(start, 4, 1e-9)[1] == 4 * rounds  # never that still: every step taken
    assert taken(start, 4, 1e3)[1] == rounds  # any step is small enough: one a round
    converged, n = taken(start, 30, 0.03)
    assert rounds < n < 30 * rounds
    again, n = taken(converged, 30, 0.03)
    assert n <= 2 * rounds  # a converged fit stops at once, or nearly (rounds change the points)

    def moved(a: fitting.ShapeFit, b: fitting.ShapeFit) -> np.ndarray:
        """How far M0's fit region moved relative to the scan from ``a`` to ``b`` (mm)."""
        pa, pb = (f.transform.inverse().apply(f.m0)[md.fit] for f in (a, b))
        return np.linalg.norm(pb - pa, axis=1)

    assert moved(start, converged).max() > 3.0
    assert np.median(moved(converged, again)) < 0.1 and moved(converged, again).max() < 0.5
    unchanged, n = taken(start, 0, 0.03)
    assert n == 0 and np.array_equal(unchanged.coefficients, start.coefficients)
    assert unchanged.last_step_mm == start.last_step_mm


def test_only_a_fit_still_moving_is_carried_on(
    check: ModelLandmarkCheck,
    slow_to_fit: tuple[Mesh, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines import fitting

    last_steps = []
    refined = fitting.ShapeFit.refined

    def recorded(self: fitting.ShapeFit, *args: object, **kwargs: object) -> fitting.ShapeFit:
        last_steps.append(self.last_step_mm)
        return refined(self, *args, **kwargs)

    monkeypatch.setattr(fitting.ShapeFit, "refined", recorded)
    scan, truth = _scan(5, dense_resolution=120)
    detected = _detected(truth, 5)
    md, _ = check.fit_data()
    fit = fitting.fit_shape(scan, detected[NOW7], md, check.config.fit, threads=1)
    assert fit.last_step_mm < check.config.refine_tolerance_mm  # converged in the few steps
    assert check(scan, detected).source == "model (facehd-synth)"
    assert last_steps == []
    scan, truth = slow_to_fit
    assert check(scan, _detected(truth, 13)).source == "model (facehd-synth)"
    assert len(last_steps) == 1 and last_steps[0] > 10 * check.config.refine_tolerance_mm


def test_a_mouth_the_fit_got_wrong_keeps_its_detection(check: ModelLandmarkCheck) -> None:
    """Seed 0's open mouth: from one detection the fit closes it, and its mouth points land
    ~11 mm from the truth, far from the detected ones and off the scan; there the detected mouth
    is kept, the model's other points taken. From another detection the fit is right, and all
    of the model's points are taken."""
    from pipelines.model_landmarks import MOUTH

    scan, truth = _scan(0, 1)
    mouth, rest = list(MOUTH), list(range(48))
    wrong = _detected(truth, 1)
    result = check(scan, wrong)
    assert result.source == "model (facehd-synth; mouth detected)", result.detail
    assert "the detected mouth kept" in result.detail
    np.testing.assert_array_equal(result.landmarks68_mm[mouth], wrong[mouth])
    unguarded = ModelLandmarkCheck(ModelCheckConfig(mouth_gap_mm=1e6))(scan, wrong)
    assert unguarded.source == "model (facehd-synth)"
    np.testing.assert_array_equal(result.landmarks68_mm[rest], unguarded.landmarks68_mm[rest])
    # far from the detection but on the scan's surface: the model's mouth is not doubted
    on_surface = ModelLandmarkCheck(ModelCheckConfig(mouth_off_surface_mm=1e6))(scan, wrong)
    assert on_surface.source == "model (facehd-synth)"
    np.testing.assert_array_equal(on_surface.landmarks68_mm, unguarded.landmarks68_mm)
    err = np.linalg.norm(result.landmarks68_mm[mouth] - truth[mouth], axis=1)
    err_model = np.linalg.norm(unguarded.landmarks68_mm[mouth] - truth[mouth], axis=1)
    assert np.median(err_model) > 8.0 and np.median(err) < 3.0
    right = check(scan, _detected(truth, 0))
    assert right.source == "model (facehd-synth)", right.detail
    assert np.median(np.linalg.norm(right.landmarks68_mm[mouth] - truth[mouth], axis=1)) < 1.0


def test_a_face_outside_the_models_span_keeps_its_detection(check: ModelLandmarkCheck) -> None:
    # a mid-frequency deformation four times the synthetic default: no M0 follows it
    scan, truth = _scan(4, deformation_mm=6.0)
    result = check(scan, _detected(truth, 4))
    assert result.source == "detected" and result.landmarks68_mm is None
    assert result.residual_mm is not None and result.residual_mm > 0.25
    assert "kept" in result.detail and f"{result.residual_mm:.2f} mm" in result.detail


def test_a_residual_of_exactly_the_limit_describes_the_face(check: ModelLandmarkCheck) -> None:
    """max_residual_mm is the largest residual at which the model's vertices are read: the
    same fit, judged with the limit at its residual and one float below."""
    scan, truth = _scan(9)
    detected = _detected(truth, 9)
    first = check(scan, detected)
    r = first.residual_mm
    assert first.source == "model (facehd-synth)" and r is not None
    at = ModelLandmarkCheck(ModelCheckConfig(max_residual_mm=r))
    at._fit_data = check.fit_data()  # the same prepared model (made once per check)
    assert at(scan, detected).source == "model (facehd-synth)"
    below = ModelLandmarkCheck(ModelCheckConfig(max_residual_mm=float(np.nextafter(r, 0.0))))
    below._fit_data = check.fit_data()
    assert below(scan, detected).source == "detected"


@pytest.mark.parametrize(
    "error", [DegenerateInputError("flat"), np.linalg.LinAlgError("singular matrix")]
)
def test_a_fit_that_fails_keeps_the_detection_and_says_why(
    check: ModelLandmarkCheck, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    import pipelines.fitting

    def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(pipelines.fitting, "fit_shape", failing)
    scan, truth = _scan(4)
    result = check(scan, truth)
    assert result.source == "detected" and result.landmarks68_mm is None
    assert result.detail == f"the facehd-synth fit failed ({error})"
    assert check.fit_data() is check.fit_data()  # the model is prepared once


def test_points_far_from_the_detection_are_not_taken() -> None:
    scan, truth = _scan(4)
    strict = ModelLandmarkCheck(ModelCheckConfig(max_shift_mm=0.5))
    result = strict(scan, _detected(truth, 4))
    assert result.source == "detected" and result.landmarks68_mm is None
    assert result.residual_mm is not None and result.residual_mm < 0.25  # it did fit
    assert "from the detected ones" in result.detail


def test_no_face_keeps_the_detection(check: ModelLandmarkCheck) -> None:
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=5, radius=90.0)
    sphere = Mesh(np.asarray(ball.vertices), np.asarray(ball.faces))
    # the model's mean landmarks pushed onto the sphere: a "detection" on a face-less surface
    model = facehd_synth()
    lm = model.landmarks(model.mean_shape.reshape(-1, 3))
    lm = lm - lm.mean(0)
    lm = 90.0 * lm / np.linalg.norm(lm, axis=1, keepdims=True)
    result = check(sphere, lm)
    assert result.source == "detected" and result.landmarks68_mm is None


@pytest.mark.parametrize(
    "name",
    [
        "max_residual_mm",
        "max_shift_mm",
        "refine_tolerance_mm",
        "mouth_gap_mm",
        "mouth_off_surface_mm",
    ],
)
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_bad_settings_are_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        ModelCheckConfig(**{name: value})


def test_a_negative_number_of_steps_is_refused() -> None:
    with pytest.raises(ValueError, match="refine_iterations"):
        ModelCheckConfig(refine_iterations=-1)

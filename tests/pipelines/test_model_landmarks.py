"""The morphable model check of scan landmarks (pipelines.model_landmarks), against the exact
landmarks of synthetic scans: on a face the model describes, its landmark vertices come closer to
the truth than the detected points it started from; on a face it does not describe (a scan whose
mid-frequency shape lies outside the model's span), or where its points disagree with the
detection, the detection stands."""

from __future__ import annotations

import numpy as np
import pytest

from facehd.landmarks import NOW7_FROM_68
from facehd.mesh import Mesh
from facehd.morphable import facehd_synth
from facehd.transforms import Similarity
from pipelines.model_landmarks import ModelCheckConfig, ModelLandmarkCheck
from pipelines.synth import SynthConfig, make_scan

NOW7 = list(NOW7_FROM_68)


@pytest.fixture(scope="module")
def check() -> ModelLandmarkCheck:
    return ModelLandmarkCheck()


def _scan(seed: int, **kw: float) -> tuple[Mesh, np.ndarray]:
    """A synthetic raw scan (random frame, holes, neck, hair) in mm, its true iBUG-68 points."""
    model = facehd_synth()
    config = SynthConfig(subjects=1, expressions=2, seed=seed, **kw)
    scan, truth, _, _, _ = make_scan(model, config, 0, 1)
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


def test_a_face_outside_the_models_span_keeps_its_detection(check: ModelLandmarkCheck) -> None:
    # a mid-frequency deformation four times the synthetic default: no M0 follows it
    scan, truth = _scan(4, deformation_mm=6.0)
    result = check(scan, _detected(truth, 4))
    assert result.source == "detected" and result.landmarks68_mm is None
    assert result.residual_mm is not None and result.residual_mm > 0.25
    assert "kept" in result.detail and f"{result.residual_mm:.2f} mm" in result.detail


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


@pytest.mark.parametrize("name", ["max_residual_mm", "max_shift_mm"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_bad_settings_are_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        ModelCheckConfig(**{name: value})

"""The landmark accuracy check's per-scan CSV (``python -m pipelines.landmarks_check --csv``):
errors known by construction, from a landmarker that misplaces known points by known amounts."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from facehd.landmarks import NOW7_FROM_68
from facehd.mesh import Mesh
from pipelines import landmarks_check


class _Offset:
    """Detects the reference moved by ``offsets`` (one (68, 3) array per scan), in cm."""

    def __init__(self, refs: list[np.ndarray], offsets: list[np.ndarray]) -> None:
        self.answers = [ref + off for ref, off in zip(refs, offsets, strict=True)]

    def detect(self, mesh: Mesh, name: str) -> SimpleNamespace:
        return SimpleNamespace(
            landmarks68=self.answers.pop(0), unit_to_mm=10.0, confidence=0.5, source="detected"
        )


def test_csv_rows_hold_each_scans_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    mesh = Mesh(np.eye(3), np.array([[0, 1, 2]]))
    refs = [rng.normal(size=(68, 3)) for _ in range(3)]
    refs[2][:17] = np.nan  # a reference without the jaw line
    offsets = [rng.normal(size=(68, 3)) * 0.2 for _ in range(3)]
    rows: list[dict[str, object]] = []
    cases = [(f"case{i}", mesh, ref) for i, ref in enumerate(refs)]
    summary = landmarks_check._run("synth", cases, _Offset(refs, offsets), None, rows)
    expected = np.array([[np.sqrt(np.sum(o[k] ** 2)) * 10.0 for k in range(68)] for o in offsets])
    expected[2, :17] = np.nan
    assert [r["case"] for r in rows] == ["case0", "case1", "case2"]
    got = np.array([[float(r[f"e{k}"]) for k in range(68)] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.isnan(got[2, :17]).all() and np.isfinite(got[:2]).all()
    now7 = expected[:, list(NOW7_FROM_68)]
    assert summary["median"] == pytest.approx(np.median(now7))

    # main writes them: one row per scan, in the order checked
    out = tmp_path / "sub" / "errors.csv"
    written = [{"set": "real", "case": "as-given", "e0": "1.0000"}]

    def fake_run(name, cases, landmarker, overlays, rows):  # noqa: ANN001, ANN202
        rows.extend(written)
        return {}

    monkeypatch.setattr(landmarks_check, "_run", fake_run)
    monkeypatch.setattr(landmarks_check, "real_cases", lambda folder, rotations: iter(()))
    assert (
        landmarks_check.main(["--real", str(tmp_path), "--model-check", "none", "--csv", str(out)])
        == 0
    )
    with open(out, newline="") as f:
        assert list(csv.DictReader(f)) == written


def test_m0_fold_angle_reaches_the_model_checks_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--m0-fold-angle`` sets the model check's fold angle, its other settings kept."""
    import pipelines.model_landmarks as model_landmarks

    made = []

    class Capture:
        def __init__(self, config: model_landmarks.ModelCheckConfig) -> None:
            made.append(config)

    monkeypatch.setattr(model_landmarks, "ModelLandmarkCheck", Capture)
    monkeypatch.setattr(landmarks_check, "real_cases", lambda folder, rotations: iter(()))
    monkeypatch.setattr(landmarks_check, "_run", lambda *args: {})
    default = model_landmarks.ModelCheckConfig()
    for argv, angle in (([], default.fit.m0_fold_angle_deg), (["--m0-fold-angle", "30"], 30.0)):
        assert landmarks_check.main(["--real", str(tmp_path), *argv]) == 0
        config = made.pop()
        assert config.fit.m0_fold_angle_deg == angle
        assert config.fit == dataclasses.replace(default.fit, m0_fold_angle_deg=angle)
    assert default.fit.m0_fold_angle_deg == 60.0

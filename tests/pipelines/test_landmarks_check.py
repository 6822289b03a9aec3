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


def test_real_cases_move_the_reference_with_the_scan(tmp_path: Path) -> None:
    """A reference of 51 points (no jaw line) placed on scan vertices: every case's reference
    sits on the same vertices of its moved scan, the jaw NaN; another count is refused."""
    from facehd.mesh import save_mesh

    rng = np.random.default_rng(1)
    verts = rng.normal(size=(80, 3)) * 50.0
    save_mesh(tmp_path / "scan.obj", Mesh(verts, np.array([[0, 1, 2], [2, 3, 4]])))
    on = rng.choice(80, size=51, replace=False)
    np.save(tmp_path / "scan_lmks.npy", verts[on])
    cases = list(landmarks_check.real_cases(tmp_path, rotations=3))
    assert [c[0] for c in cases] == ["as-given", "rot00", "rot01", "rot02"]
    for name, scan, ref68 in cases:
        assert ref68.shape == (68, 3) and np.isnan(ref68[:17]).all()
        np.testing.assert_allclose(ref68[17:], scan.vertices[on], atol=1e-6, err_msg=name)
    assert not np.allclose(cases[1][1].vertices, verts, atol=1.0)  # moved
    on68 = rng.choice(80, size=68, replace=False)
    np.save(tmp_path / "scan_lmks.npy", verts[on68])
    _, scan, ref68 = next(landmarks_check.real_cases(tmp_path, rotations=0))
    np.testing.assert_array_equal(ref68, verts[on68])
    np.save(tmp_path / "scan_lmks.npy", verts[:7])  # NoW's 7: a landmark file, not this one
    with pytest.raises(ValueError, match=r"scan_lmks\.npy: expected 51 or 68 landmarks, got 7"):
        next(landmarks_check.real_cases(tmp_path, rotations=0))


def test_synthetic_cases_give_the_truth_in_the_scans_frame() -> None:
    """The true landmarks of a synthetic scan, taken into its random frame, lie on the scan
    (within a millimetre, 0.3% of its size); colour cases carry vertex colours."""
    from scipy.spatial import cKDTree

    # with both flags a case carries the subject's own albedo, named so
    for colour, subject, suffix in ((True, False, "-colour"), (True, True, "-subject")):
        cases = list(landmarks_check.synthetic_cases(1, 0, colour, subject_colours=subject))
        assert [c[0] for c in cases] == [f"s000_e00{suffix}", f"s000_e01{suffix}"]
        for _, scan, ref68 in cases:
            assert scan.colors is not None and scan.colors.shape == scan.vertices.shape
            dist, _ = cKDTree(scan.vertices).query(ref68)
            assert float(dist.max()) < 1.0


class _Failing(_Offset):
    """As :class:`_Offset`, but the scan named ``fail`` has no landmarks."""

    def detect(self, mesh: Mesh, name: str) -> SimpleNamespace:
        from facehd.scan_landmarks import ScanLandmarkError

        if name == "fail":
            raise ScanLandmarkError("no-face", "no face found")
        return super().detect(mesh, name)


def test_the_summary_counts_failures_and_takes_region_medians(capsys) -> None:
    rng = np.random.default_rng(2)
    mesh = Mesh(np.eye(3), np.array([[0, 1, 2]]))
    refs = [rng.normal(size=(68, 3)) for _ in range(3)]
    refs[1][:17] = np.nan  # no jaw line in this reference
    offsets = [rng.normal(size=(68, 3)) * 0.2 for _ in range(3)]
    cases = [("a", mesh, refs[0]), ("fail", mesh, refs[0]), ("b", mesh, refs[1])]
    cases.append(("c", mesh, refs[2]))
    summary = landmarks_check._run("synth", cases, _Failing(refs, offsets), None)
    err = np.array([np.linalg.norm(o, axis=1) * 10.0 for o in offsets])  # mm
    err[1, :17] = np.nan
    assert summary["failures"] == 1 and summary["scans"] == 3
    now7 = err[:, list(NOW7_FROM_68)]
    assert summary["worst_scan_median"] == pytest.approx(np.median(now7, axis=1).max())
    assert summary["max"] == pytest.approx(now7.max())
    for region, lo, hi in landmarks_check.REGIONS:
        block = err[:, lo:hi]
        assert summary[region] == pytest.approx(np.median(block[np.isfinite(block)])), region
    assert summary["nose tip"] == pytest.approx(np.median(err[:, 30]))
    assert summary["inner 51"] == pytest.approx(np.median(err[:, 17:]))
    assert "synth  fail             FAILED " in capsys.readouterr().out
    # every scan failing: said, and no summary
    assert landmarks_check._run("synth", cases[1:2], _Failing([], []), None) == {}
    assert "synth: every scan failed (1)" in capsys.readouterr().out

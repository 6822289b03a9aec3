"""build-priors, the dataset: the command end to end, failures.csv, the stored transform against
the exported meshes, previews, inspect and verify. (Process pool, Ray and kill-and-resume:
test_build_priors_resume.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh
from PIL import Image
from typer.testing import CliRunner

from facehd.cli import app
from facehd.h5io import open_dataset, read_failures
from facehd.landmarks import save_landmarks_pp, save_landmarks_txt
from facehd.mesh import Mesh, load_mesh, save_mesh
from facehd.transforms import Similarity
from pipelines.build_priors import SCHEMA, discover_scans, inspect_priors, verify_priors
from pipelines.synth import SynthConfig, synth_scans

GOOD = ("s000_e00", "s001_e00")
BAD = {
    "empty": "empty",
    "nan": "NaN",
    "nolm": "automatic landmarks failed",
    "coincident": "coincide",
    "collinear": "collinear",
}

_NAN_PLY = """ply
format ascii 1.0
element vertex 3
property float x
property float y
property float z
element face 1
property list uchar int vertex_indices
end_header
0 0 0
1 nan 0
0 1 0
3 0 1 2
"""


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good synthetic scans and five bad ones."""
    root = tmp_path_factory.mktemp("scans")
    synth_scans(root, SynthConfig(subjects=2, expressions=1, seed=1, dense_resolution=160))
    lm = np.loadtxt(root / "s000_e00.lm7.txt")
    (root / "empty.ply").write_bytes(b"")
    save_landmarks_txt(root / "empty.lm7.txt", lm)
    (root / "nan.ply").write_text(_NAN_PLY)
    save_landmarks_txt(root / "nan.lm7.txt", lm)
    # no landmark file and no face to find them on: automatic landmarks must fail, not guess
    sphere = trimesh.creation.icosphere(4, radius=100.0)
    save_mesh(root / "nolm.ply", Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces)))
    shutil.copy(root / "s000_e00.ply", root / "coincident.ply")
    save_landmarks_txt(root / "coincident.lm7.txt", np.repeat(lm[:1], 7, axis=0))
    shutil.copy(root / "s000_e00.ply", root / "collinear.ply")
    line = lm[0] + np.linspace(0, 1, 7)[:, None] * (lm[3] - lm[0])
    save_landmarks_txt(root / "collinear.lm7.txt", line)
    return root


@pytest.fixture(scope="module")
def built(scans: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """``facehd build-priors`` with exports and previews."""
    out = tmp_path_factory.mktemp("a")
    args = ["build-priors", "--scans", str(scans), "--out", str(out / "priors.h5")]
    args += ["--export-meshes", str(out / "meshes")]
    args += ["--previews", str(out / "previews")]
    result = CliRunner().invoke(app, args)
    return out, result


def test_discovery_skips_truth_files(scans: Path) -> None:
    found = {s.sample_id: s for s in discover_scans(scans)}
    assert set(found) == set(GOOD) | set(BAD)
    assert found["s000_e00"].landmarks_path.endswith("s000_e00.lm7.txt")
    assert (found["s001_e00"].subject, found["s001_e00"].expression) == ("s001", "e00")
    assert found["nolm"].landmarks_path is None


def test_points_picked_in_meshlab_come_first(tmp_path: Path) -> None:
    (tmp_path / "a.ply").write_text("read later")
    save_landmarks_txt(tmp_path / "a.lm7.txt", np.zeros((7, 3)))
    (found,) = discover_scans(tmp_path)
    assert found.landmarks_path.endswith("a.lm7.txt")
    save_landmarks_pp(tmp_path / "a_picked_points.pp", np.ones((7, 3)))
    (found,) = discover_scans(tmp_path)
    assert found.landmarks_path.endswith("a_picked_points.pp")


def test_a_scan_sharing_its_stem_reads_its_own_landmarks_first(tmp_path: Path) -> None:
    """head.obj and head.ply: each reads ``<name>.lm7.txt`` (as facehd landmarks writes them for
    such scans) before the shared ``head.lm7.txt``, which a scan without its own file reads."""
    for name in ("head.obj", "head.ply", "face.obj", "face.ply"):
        (tmp_path / name).write_text("read later")
    save_landmarks_txt(tmp_path / "head.lm7.txt", np.zeros((7, 3)))
    save_landmarks_txt(tmp_path / "head.ply.lm7.txt", np.ones((7, 3)))
    save_landmarks_txt(tmp_path / "face.lm7.txt", np.ones((7, 3)))
    found = {s.sample_id: Path(s.landmarks_path).name for s in discover_scans(tmp_path)}
    assert found == {
        "head.obj": "head.lm7.txt",
        "head.ply": "head.ply.lm7.txt",
        "face.obj": "face.lm7.txt",
        "face.ply": "face.lm7.txt",
    }


def test_bad_scans_fail_others_finish(built: tuple[Path, object]) -> None:
    out, result = built
    assert result.exit_code == 1, result.output  # some scans failed
    failures = {f.sample_id: f for f in read_failures(out / "failures.csv", out / "priors.h5")}
    assert set(failures) == set(BAD)
    for sid, words in BAD.items():
        assert words.lower() in failures[sid].reason.lower(), failures[sid]
        assert Path(failures[sid].source).name == f"{sid}.ply"
    with open_dataset(out / "priors.h5") as ds:
        assert ds.schema == SCHEMA
        assert ds.sample_ids == list(GOOD)
        assert ds.attrs["units"] == "mm" and ds.attrs["model"] == "facehd-synth"
        assert ds.attrs["config"]["fit"]["deformation_size"] == 64
        for i, sid in enumerate(GOOD):
            row = ds[i]
            assert row.deformation.shape == (64, 64, 3) and row.displacement.shape == (256, 256)
            assert row.identity.shape == (64,) and row.expression.shape == (24,)
            assert row.residual[0] > row.residual[1] > row.residual[2]
            assert (row.subject, row.expression_name, row.units) == (sid[:4], "e00", "mm")
            assert row.source.endswith(f"{sid}.ply") and len(row.source_sha256) == 64


def test_stored_transform_maps_scan_onto_exported_meshes(scans: Path, built: tuple) -> None:
    out, _ = built
    with open_dataset(out / "priors.h5") as ds:
        row = ds[0]
    t = Similarity(float(row.scale), row.rotation, row.translation)
    scan = load_mesh(scans / "s000_e00.ply")
    m2 = load_mesh(out / "meshes" / "s000_e00.m2.ply")
    m1 = load_mesh(out / "meshes" / "s000_e00.m1.ply")
    assert m1.uvs is not None and m2.uvs is not None and len(m2.vertices) > 30_000
    from facehd.distances import SurfaceQuery

    # the scan's points near M2, mapped with the stored transform, lie on it (sub-0.1 mm)
    d = SurfaceQuery(m2).closest(t.apply(scan.vertices)).distances
    assert np.median(d[d < 5.0]) < 0.1
    assert (d < 5.0).mean() > 0.3


def test_previews(built: tuple) -> None:
    out, _ = built
    for sid in GOOD:
        with Image.open(out / "previews" / f"{sid}.png") as im:
            assert im.mode == "RGB" and im.width > 4 * 256 and im.height > 256
            pixels = np.asarray(im)
        # four panels, each with more than one colour
        for k in range(4):
            panel = pixels[30:250, 6 + k * 262 : 6 + k * 262 + 256]
            assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 10


def test_inspect_and_verify(built: tuple, tmp_path: Path) -> None:
    out, _ = built
    path = out / "priors.h5"
    summary = inspect_priors(path)
    assert summary.n_samples == 2 and summary.subjects == 2 and summary.n_failed == len(BAD)
    med = summary.residual_median
    assert med[0] > med[1] > med[2] and med[2] < 0.1
    assert 0.3 < summary.displacement_coverage < 0.9
    # the summary's numbers, sample by sample from the file
    with h5py.File(path) as f:
        res = f["residual"][()]
        masks, disps = f["displacement_mask"][()], f["displacement"][()]
        dmask = f["deformation_mask"][()]
    np.testing.assert_allclose(summary.residual_median, np.median(res, axis=0))
    np.testing.assert_allclose(summary.residual_max, res.max(axis=0))
    assert summary.displacement_coverage == pytest.approx(np.mean([m.mean() for m in masks]))
    assert summary.deformation_coverage == pytest.approx(dmask.mean())
    valid = np.concatenate([d[m] for d, m in zip(disps, masks, strict=True)]).astype(np.float64)
    assert summary.displacement_rms == pytest.approx(np.sqrt(np.mean(valid**2)), rel=1e-6)
    assert masks[0].mean() != masks[1].mean()  # the mean of the two is not either one
    runner = CliRunner()
    shown = runner.invoke(app, ["inspect", str(path)])
    assert shown.exit_code == 0 and SCHEMA in shown.output and "M2" in shown.output
    assert "2 subjects" in shown.output
    # --samples: one line per sample with its small fields, read back from the file
    per_sample = runner.invoke(app, ["inspect", str(path), "--samples"], terminal_width=400)
    assert per_sample.exit_code == 0, per_sample.output
    with open_dataset(path) as ds:
        ids, sources = ds.sample_ids, list(ds.read_field("landmarks_source"))
        residuals = ds.read_field("residual")
    lines = {ln.split(":", 1)[0]: ln for ln in per_sample.output.splitlines() if ": " in ln}
    for sid, source, res in zip(ids, sources, residuals, strict=True):
        line = lines[sid]
        assert f"landmarks_source={source}" in line
        assert "residual=" + " ".join(f"{x:.4g}" for x in res) in line
        assert "deformation=" not in line  # maps are left out
    # scans whose layout names no subject: said so, not "0 subjects"
    anon = tmp_path / "anon.h5"
    shutil.copy(path, anon)
    with h5py.File(anon, "r+") as f:
        f["subject"][...] = b""
    shown = runner.invoke(app, ["inspect", str(anon)])
    assert shown.exit_code == 0 and "subjects not named" in shown.output, shown.output
    assert verify_priors(path) == []
    ok = runner.invoke(app, ["verify", str(path)])
    assert ok.exit_code == 0 and "OK" in ok.output
    # damage a copy: a mirrored rotation and displacement off its mask
    bad = tmp_path / "bad.h5"
    shutil.copy(path, bad)
    with h5py.File(bad, "r+") as f:
        f["rotation"][0] = f["rotation"][0] @ np.diag([1.0, 1.0, -1.0])
        disp = f["displacement"][1]
        mask = f["displacement_mask"][1]
        disp[~mask] = 1.0
        f["displacement"][1] = disp
    problems = verify_priors(bad)
    assert any("proper rotation" in p and "s000_e00" in p for p in problems)
    assert any("off its mask" in p and "s001_e00" in p for p in problems)
    # and another: a rotation that also scales (det > 0), a zero scale, a malformed hash
    worse = tmp_path / "worse.h5"
    shutil.copy(path, worse)
    with h5py.File(worse, "r+") as f:
        f["rotation"][1] = f["rotation"][1] * 1.01
        f["scale"][0] = 0.0
        f["source_sha256"][0] = b"not-a-sha256"
    problems = verify_priors(worse)
    assert any("s001_e00': rotation is not a proper rotation" in p for p in problems), problems
    assert any("s000_e00': scale is not positive" in p for p in problems), problems
    assert any("source hash 'not-a-sha256' malformed" in p for p in problems), problems
    assert len(problems) == 3, problems
    assert runner.invoke(app, ["verify", str(bad)]).exit_code == 1
    assert runner.invoke(app, ["verify", str(tmp_path / "missing.h5")]).exit_code == 1
    # relabelled: another schema, one facehd does not write, another layout version
    for attr, value, problem in (
        ("schema", "facehd.photos/1", "fields ['crop_scale'"),
        ("schema", "facehd.foo/1", "none facehd writes"),
        ("facehd_h5io", 99, "layout version 99"),
    ):
        other = tmp_path / "relabelled.h5"
        shutil.copy(path, other)
        with h5py.File(other, "r+") as f:
            f.attrs[attr] = value
        res = runner.invoke(app, ["verify", str(other)], terminal_width=300)
        assert res.exit_code == 1 and problem in res.output, res.output

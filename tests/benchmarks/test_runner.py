"""Synthetic benchmarks end to end through the CSV outputs; bad input rows; leaderboards; CLI."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import readers
from benchmarks.leaderboard import (
    PUBLISHED,
    LeaderboardRow,
    load_leaderboard,
    ranked,
    update_leaderboard,
)
from benchmarks.runner import BenchmarkSpec, run_benchmark
from facehd.errors import InputFileError
from facehd.mesh import Mesh, load_mesh, save_mesh
from facehd.transforms import Similarity, procrustes, rotation_from_axis_angle


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_spec_parsing() -> None:
    assert BenchmarkSpec.parse("facescape") == BenchmarkSpec("facescape", "wild")
    assert BenchmarkSpec.parse("FaceScape:lab").slug == "facescape-lab"
    assert BenchmarkSpec.parse("now:val").split == "validation"
    with pytest.raises(ValueError, match="no split"):
        BenchmarkSpec.parse("realy:profile")
    with pytest.raises(ValueError, match="unknown dataset"):
        BenchmarkSpec.parse("aflw")


def test_now_end_to_end_with_a_perfect_and_bad_predictions(
    synth_roots: dict, tmp_path: Path
) -> None:
    root = synth_roots["now"]
    preds = _copy(root / "predictions" / "synth-fit", tmp_path / "preds")
    items = readers.read_now_items(root, "validation")
    assert len(items) == 4 and {it.challenge for it in items} == {
        "multiview_neutral",
        "multiview_expressions",
        "multiview_occlusions",
        "selfie",
    }
    # 1: the scan itself in another frame (in metres) is a perfect prediction
    it = items[0]
    scan = load_mesh(it.scan)
    lm = readers.read_landmarks7(it.scan_landmarks)
    t = Similarity(0.001, rotation_from_axis_angle(np.array([0.2, 0.5, -0.1])), [0.01, 0.0, 0.02])
    base = preds / it.subject / it.challenge / it.image
    save_mesh(base.with_suffix(".obj"), scan.transformed(t))
    np.save(base.with_suffix(".npy"), t.apply(lm)[None])  # (1, 7, 3) is accepted
    base.with_suffix(".txt").unlink()
    # 2: a mesh with NaN vertices; 3: a point cloud; 4: missing
    bad = [
        preds / items[k].subject / items[k].challenge / f"{items[k].image}.obj" for k in (1, 2, 3)
    ]
    bad[0].write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    bad[1].write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    bad[2].unlink()
    out = tmp_path / "out"
    res = run_benchmark("now", "m1", predictions=preds, root=root, out=out)
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    ok = rows[it.name]
    assert ok["status"] == "ok" and float(ok["median_mm"]) < 1e-4 and ok["converged"] == "true"
    assert float(ok["scale"]) == pytest.approx(1000.0, rel=1e-6)
    assert rows[items[1].name]["status"] == "error" and "NaN" in rows[items[1].name]["error"]
    assert str(bad[0]) in rows[items[1].name]["error"]
    assert rows[items[2].name]["status"] == "error" and "no faces" in rows[items[2].name]["error"]
    assert rows[items[3].name]["status"] == "missing"
    # where it was looked for, so a misnamed file can be found
    assert rows[items[3].name]["error"] == f"no predicted mesh (looked for {bad[2]} or .ply)"
    assert (res.n_ok, res.n_failed, res.n_missing) == (1, 2, 1)
    summary = {r["group"]: r for r in _rows(res.summary_csv)}
    dist = np.load(res.out_dir / "distances.npz")
    assert float(summary["all"]["median_mm"]) == pytest.approx(np.median(dist[it.name]))
    assert summary["all"]["n_failed"] == "2" and summary["all"]["n_missing"] == "1"
    # the official tool's output file, as its plotting script loads it: failures count as missing
    official = np.load(res.out_dir / "m1_computed_distances.npy", allow_pickle=True).item()
    assert official["num_missing_files"] == 3 and len(official["computed_distances"]) == 1
    np.testing.assert_array_equal(official["computed_distances"][0], dist[it.name])
    # the rough synth-fit method on the untouched folder: a realistic error, pooled statistics
    res = run_benchmark(
        "now", "synth-fit", predictions=root / "predictions" / "synth-fit", root=root, out=out
    )
    assert res.n_ok == 4
    dist = np.load(res.out_dir / "distances.npz")
    pooled = np.concatenate([dist[k] for k in dist.files])
    summary = {r["group"]: r for r in _rows(res.summary_csv)}
    assert float(summary["all"]["median_mm"]) == pytest.approx(np.median(pooled))
    assert float(summary["all"]["std_mm"]) == pytest.approx(pooled.std())
    official = np.load(res.out_dir / "synth-fit_computed_distances.npy", allow_pickle=True).item()
    stacked = np.hstack(official["computed_distances"])  # how that tool pools them
    assert official["num_missing_files"] == 0 and len(official["computed_distances"]) == 4
    assert float(summary["all"]["median_mm"]) == pytest.approx(np.median(stacked))
    assert float(summary["all"]["mean_mm"]) == pytest.approx(np.mean(stacked))
    assert 0.1 < float(summary["all"]["median_mm"]) < 3.0
    board = {
        (r.method, r.dataset, r.split)
        for r in load_leaderboard(res.leaderboard_csv, include_published=False)
    }
    assert board == {("m1", "now", "validation"), ("synth-fit", "now", "validation")}


def test_realy_end_to_end_and_topology_errors(synth_roots: dict, tmp_path: Path) -> None:
    root = synth_roots["realy"]
    preds = _copy(root / "predictions" / "synth-fit", tmp_path / "preds")
    v = load_mesh(preds / "1_0.obj")
    keep = (v.faces < 3000).all(axis=1)  # the first 3000 vertices: too few for the topology
    save_mesh(preds / "1_1.obj", Mesh(v.vertices[:3000], v.faces[keep]))
    (preds / "notes.obj").write_text("v 0 0 0\n")  # not <subject>_<name>: ignored
    out = tmp_path / "out"
    # a synthetic benchmark written before the side split was drawn has a frontal one only:
    # its predictions are not ranked as side's
    frontal_only = _copy(root, tmp_path / "frontal-only")
    shutil.rmtree(frontal_only / "images" / "side")
    with pytest.raises(InputFileError, match="synthetic REALY benchmark has no side split"):
        run_benchmark("realy:side", "synth-fit", predictions=preds, root=frontal_only, out=out)
    assert not out.exists()
    res = run_benchmark("realy:frontal", "synth-fit", predictions=preds, root=root, out=out)
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert set(rows) == {"1_0", "1_1"}
    good = rows["1_0"]
    errs = [float(good[f"{r}_mm"]) for r in ("nose", "mouth", "forehead", "cheek")]
    assert all(0.05 < e < 5.0 for e in errs)
    assert float(good["mean_mm"]) == pytest.approx(np.mean(errs))
    assert rows["1_1"]["status"] == "error" and "does not fit" in rows["1_1"]["error"]
    summary = {r["region"]: r for r in _rows(res.summary_csv)}
    assert float(summary["all"]["mean_mm"]) == pytest.approx(np.mean(errs))
    assert summary["nose"]["std_mm"] == ""  # ddof 1 of one image: undefined
    # the official tool's REALY_error.txt layout, parsed as its summary step parses it
    lines = (res.items_csv.parent / "REALY_error.txt").read_text().splitlines()
    assert len(lines) == 1  # the scored image only
    name, empty, *values = lines[0].split("\t")
    assert (name, empty) == ("1_0", "") and len(values) == 4
    assert [float(x) for x in values] == pytest.approx(errs, abs=1e-6)
    assert all(len(x) <= 9 for x in values)
    before = res.items_csv.read_bytes()
    (preds / "facehd-synth.txt").write_text("[[0, 0.5, 0.5]]")
    with pytest.raises(InputFileError, match="85 entries"):
        run_benchmark("realy:frontal", "synth-fit", predictions=preds, root=root, out=out)
    assert res.items_csv.read_bytes() == before  # a failing run leaves results as they were


def test_synthetic_realy_side_split_scores_each_side_view(
    synth_roots: dict, tmp_path: Path
) -> None:
    """The synthetic REALY benchmark has the official data's side-view split too: 4 photos of
    each subject turned aside, named as the frontal one is (``<subject>_<view>``), each with a
    ``synth-fit`` prediction of its own. Scored as ``realy:side`` with the photos, every photo's
    prediction is scored against its subject's truth, with errors of the frontal prediction's
    size, and the run is ranked apart from the frontal split's."""
    root = synth_roots["realy"]
    side = root / "images" / "side"
    assert sorted(p.name for p in side.iterdir()) == [f"1_{j}.jpg" for j in range(1, 5)]
    preds = root / "predictions" / "synth-fit-side"
    assert sorted(p.stem for p in preds.glob("1_*.obj")) == [f"1_{j}" for j in range(1, 5)]
    out = tmp_path / "out"
    res = run_benchmark(
        "realy:side", "synth-fit", predictions=preds, root=root, images=side, out=out
    )
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert set(rows) == {f"1_{j}" for j in range(1, 5)}
    assert {(r["status"], r["subject"]) for r in rows.values()} == {("ok", "1")}
    errors = [float(r["mean_mm"]) for r in rows.values()]
    assert len(set(errors)) == 4  # four fits, not one copied
    frontal = run_benchmark(
        "realy:frontal",
        "synth-fit",
        predictions=root / "predictions" / "synth-fit",
        root=root,
        out=out,
    )
    (front,) = [float(r["mean_mm"]) for r in _rows(frontal.items_csv)]
    assert all(0.2 * front < e < 5.0 * front for e in errors)
    board = {
        (r.dataset, r.split)
        for r in load_leaderboard(out / "leaderboard.csv", include_published=False)
    }
    assert board == {("realy", "side"), ("realy", "frontal")}


def test_realy_warns_of_keypoints_read_from_the_wrong_vertices(
    synth_roots: dict, tmp_path: Path
) -> None:
    """A topology file whose entries are in another order still scores (REALY aligns by them),
    but the row says its keypoints are far from the scan's: tens of mm RMS against a
    reconstruction's few, checked here by hand from the keypoints and the global alignment."""
    import json

    from benchmarks.realy import global_alignment, load_topology

    root = synth_roots["realy"]
    preds = _copy(root / "predictions" / "synth-fit", tmp_path / "preds")
    out = tmp_path / "out"
    res = run_benchmark("realy", "m", predictions=preds, root=root, out=out)
    (good,) = _rows(res.items_csv)
    assert good["status"] == "ok" and good["warning"] == "" and res.n_warned == 0
    # the RMS by hand: the topology's keypoints on the prediction, aligned as step 1 does
    data = readers.realy_data_dir(root)
    subject_kp = np.loadtxt(data / "REALY_HIFI3D_keypoints" / "1.obj", usecols=(1, 2, 3))
    scale = float((data / "metrical_scale.txt").read_text().split()[0])
    topo = load_topology(preds / "facehd-synth.txt", preds / "facehd-synth.obj")
    kp = topo.keypoints(load_mesh(preds / "1_0.obj").vertices)
    moved = global_alignment(kp, subject_kp).apply(kp)
    rms = float(np.sqrt(((moved - subject_kp) ** 2).sum(1).mean())) * scale
    assert float(good["keypoint_rms_mm"]) == pytest.approx(rms, rel=1e-6) and rms < 5.0
    entries = json.loads((preds / "facehd-synth.txt").read_text())
    order = np.random.default_rng(0).permutation(len(entries))
    (preds / "facehd-synth.txt").write_text(json.dumps([entries[i] for i in order]))
    res = run_benchmark("realy", "m", predictions=preds, root=root, out=out)
    (bad,) = _rows(res.items_csv)
    assert bad["status"] == "ok" and res.n_warned == 1
    assert float(bad["keypoint_rms_mm"]) > 20.0 and "85 keypoints are" in bad["warning"]


def test_realy_scores_a_mirrored_prediction_as_itself_with_a_warning(
    synth_roots: dict, tmp_path: Path
) -> None:
    """The official fits take the SVD's orthogonal matrix without a reflection check, so a
    prediction mirrored (``x`` negated, a mesh written in a left-handed frame) scores as the
    prediction itself; its row says that its alignment mirrors it."""
    root = synth_roots["realy"]
    preds = _copy(root / "predictions" / "synth-fit", tmp_path / "preds")
    res = run_benchmark("realy", "m", predictions=preds, root=root, out=tmp_path / "a")
    (good,) = _rows(res.items_csv)
    assert good["warning"] == ""
    mesh = load_mesh(preds / "1_0.obj")
    flipped = Mesh(mesh.vertices * np.array([-1.0, 1.0, 1.0]), mesh.faces[:, ::-1])
    save_mesh(preds / "1_0.obj", flipped)
    res = run_benchmark("realy", "m", predictions=preds, root=root, out=tmp_path / "b")
    (mirrored,) = _rows(res.items_csv)
    assert mirrored["status"] == "ok" and res.n_warned == 1
    assert "its alignment to the scan mirrors it" in mirrored["warning"]
    assert "85 keypoints are" not in mirrored["warning"]
    for key in ("nose_mm", "mouth_mm", "forehead_mm", "cheek_mm", "keypoint_rms_mm"):
        assert float(mirrored[key]) == pytest.approx(float(good[key]), abs=1e-3), key


def test_realy_counts_subjects_and_photos_without_a_prediction(
    synth_roots: dict, tmp_path: Path
) -> None:
    # a clone of the official repository: the data under data/, with a second subject
    data = _copy(synth_roots["realy"], tmp_path / "REALY" / "data")
    kp = data / "REALY_HIFI3D_keypoints"
    shutil.copy(kp / "1.obj", kp / "2.obj")
    shutil.copytree(data / "REALY_scan_region" / "1", data / "REALY_scan_region" / "2")
    scales = (data / "metrical_scale.txt").read_text().split()
    (data / "metrical_scale.txt").write_text("\n".join(scales + scales[:1]) + "\n")
    preds = _copy(data / "predictions" / "synth-fit", tmp_path / "preds")
    assert sorted(p.name for p in preds.glob("*.obj")) == ["1_0.obj", "facehd-synth.obj"]
    save_mesh(preds / "1_0.ply", load_mesh(preds / "1_0.obj"))  # read like the .obj
    (preds / "1_0.obj").unlink()
    out = tmp_path / "out"
    res = run_benchmark("realy", "m", predictions=preds, root=tmp_path / "REALY", out=out)
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert set(rows) == {"1_0", "2"}
    assert rows["1_0"]["status"] == "ok" and rows["1_0"]["prediction"].endswith("1_0.ply")
    assert rows["2"]["status"] == "missing" and rows["2"]["subject"] == "2"
    assert (res.n_ok, res.n_missing) == (1, 1) and not res.leaderboard_row.complete
    # with the photos named, each photo needs its prediction (and subject 2 has no photo here)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("1_0", "1_1"):
        (photos / f"{name}.jpg").write_bytes(b"")
    res = run_benchmark("realy", "m", predictions=preds, root=data, out=out, images=photos)
    assert [(r["name"], r["status"]) for r in _rows(res.items_csv)] == [
        ("1_0", "ok"),
        ("1_1", "missing"),
    ]
    with pytest.raises(InputFileError, match="REALY_HIFI3D_keypoints"):
        run_benchmark("realy", "m", predictions=preds, root=tmp_path, out=out)


def test_realy_error_text_orders_and_cuts_as_the_official_tool() -> None:
    from benchmarks.runner import RealyItemRow, realy_error_text

    def ok(name: str, v: float) -> RealyItemRow:
        return RealyItemRow(name, int(name.split("_")[0]), "ok", "", v, v, v, 1.0 / 3.0)

    rows = [
        ok("10_0", 1.0),
        RealyItemRow("3_0", 3, "error", "does not fit"),
        ok("2_1", 2.123456789123),
        ok("1_frontal", 0.5),
        ok("1_2", 1e-5),
    ]
    text = realy_error_text(rows)
    # by the digits of the name (12, 21, 100), names of other forms after; failures left out
    assert [ln.split("\t")[0] for ln in text.splitlines()] == ["1_2", "2_1", "10_0", "1_frontal"]
    assert text.splitlines()[1] == "2_1\t\t2.1234567\t2.1234567\t2.1234567\t0.3333333"
    assert text.splitlines()[0].split("\t")[2] == "1e-05"  # str() of the float, as written there


def test_facescape_end_to_end_wild_and_lab(synth_roots: dict, tmp_path: Path) -> None:
    root = synth_roots["facescape"]
    preds = _copy(root / "pred" / "wild_pred" / "synth-fit", tmp_path / "wild")
    # a perfect prediction: the ground truth written in the image-aligned format
    gt = load_mesh(root / "data" / "wild_gt_mesh" / "100.obj")
    px = (gt.vertices + [1.0, 1.0, 0.0]) * 128.0
    save_mesh(preds / "100.obj", Mesh(px, gt.faces))
    (preds / "300.obj").unlink()
    out = tmp_path / "out"
    res = run_benchmark("facescape:wild", "synth-fit", predictions=preds, root=root, out=out)
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert set(rows) == {"000", "100", "200", "300"}
    assert float(rows["100"]["cd_mm"]) < 1e-3 and float(rows["100"]["cr"]) == pytest.approx(1.0)
    assert 0.2 < float(rows["000"]["cd_mm"]) < 5.0 and 0.0 < float(rows["000"]["mne_rad"]) < 0.3
    assert rows["300"]["status"] == "missing" and rows["300"]["cd_mm"] == ""
    assert rows["300"]["error"] == f"no predicted mesh (looked for {preds / '300.obj'} or .ply)"
    summary = {r["group"]: r for r in _rows(res.summary_csv)}
    assert set(summary) == {"0-5", "5-30", "30-60", "60-90", "all"}
    assert float(summary["60-90"]["done_rate"]) == 0.0
    assert float(summary["all"]["done_rate"]) == 0.75
    cds = [float(rows[k]["cd_mm"]) for k in ("000", "100", "200")]
    assert float(summary["all"]["cd_mm"]) == pytest.approx(np.mean(cds))
    # the official evaluator's per-image files, read as its table script reads them (np.loadtxt,
    # one value per image in index order, NaN where not scored)
    cd = np.loadtxt(res.out_dir / "CD_full.txt")
    mne = np.loadtxt(res.out_dir / "MNE_full.txt")
    cr = np.loadtxt(res.out_dir / "CR_full.txt")
    names = ("000", "100", "200", "300")
    np.testing.assert_allclose(cd[:3], [float(rows[k]["cd_mm"]) for k in names[:3]], rtol=1e-12)
    np.testing.assert_allclose(mne[:3], [float(rows[k]["mne_rad"]) for k in names[:3]], rtol=1e-12)
    np.testing.assert_allclose(cr[:3], [float(rows[k]["cr"]) for k in names[:3]], rtol=1e-12)
    assert np.isnan(cd[3]) and np.isnan(mne[3]) and np.isnan(cr[3])
    assert np.nanmean(cd) == pytest.approx(float(summary["all"]["cd_mm"]))
    lab = run_benchmark(
        "facescape:lab",
        "synth-fit",
        predictions=root / "pred" / "lab_pred" / "synth-fit",
        root=root,
        out=out,
    )
    rows = _rows(lab.items_csv)
    assert [r["name"] for r in rows] == ["00_0_00", "00_0_09"]
    assert [(r["group"], r["focal_group"]) for r in rows] == [("0", "f1200"), ("60", "f1200")]
    assert all(r["status"] == "ok" and 0.2 < float(r["cd_mm"]) < 5.0 for r in rows)
    lab_cd = np.loadtxt(lab.out_dir / "CD_full.txt")
    np.testing.assert_allclose(lab_cd, [float(r["cd_mm"]) for r in rows], rtol=1e-12)
    # a camera file whose Rt puts the face behind the camera: that item's error names the file
    import json

    moved = _copy(root, tmp_path / "moved")
    cam = moved / "data" / "lab_cam" / "00_0_09.json"
    k_rt = json.loads(cam.read_text())
    for row in k_rt[1]:
        row[3] = -row[3]
    cam.write_text(json.dumps(k_rt))
    lab = run_benchmark(
        "facescape:lab",
        "synth-fit",
        predictions=moved / "pred" / "lab_pred" / "synth-fit",
        root=moved,
        out=tmp_path / "moved-out",
    )
    rows = {r["name"]: r for r in _rows(lab.items_csv)}
    assert rows["00_0_00"]["status"] == "ok"
    assert rows["00_0_09"]["status"] == "error"
    assert f"{cam}: its Rt puts the ground-truth face behind the camera" in rows["00_0_09"]["error"]


def test_facescape_full_texts_follow_the_official_index_order() -> None:
    from benchmarks.runner import FaceScapeItemRow, facescape_full_texts

    rows = [
        FaceScapeItemRow(n, "0", "f1200", "ok", cd_mm=float(i), mne_rad=0.1, cr=0.9)
        for i, n in enumerate(["01_0_00", "00_2_10", "00_1_03", "00_0_09"])
    ]
    rows.append(FaceScapeItemRow("00_0_00", "0", "f1200", "error", "no overlap"))
    cd = np.loadtxt(io.StringIO(facescape_full_texts(rows)["CD_full.txt"]))
    # subject, then focal length, then view (the evaluator's mono index); failures NaN
    np.testing.assert_array_equal(cd, [np.nan, 3.0, 2.0, 1.0, 0.0])


def test_leaderboard_published_rows_update_and_ranking(tmp_path: Path) -> None:
    by_key = {(r.method, r.dataset, r.split): r for r in PUBLISHED}
    assert len(PUBLISHED) == 7 * 4 + 5
    hrn = "HRN"
    assert by_key[(hrn, "facescape", "wild")].cd_mm == 2.91
    assert by_key[(hrn, "facescape", "lab")].mne_rad == 0.087
    assert by_key[(hrn, "realy", "side")].nmse_mm == 1.468
    assert by_key[(hrn, "multiview", "esrc")].std_mm == 1.72
    assert ("MVFNet", "multiview", "esrc") not in by_key  # N.A. in Table 2
    assert all(r.source == "reported" and "Table" in r.reference for r in PUBLISHED)
    path = tmp_path / "leaderboard.csv"
    update_leaderboard(
        path, LeaderboardRow("mine", "facescape", "wild", cd_mm=3.0, config_hash="a")
    )
    update_leaderboard(
        path, LeaderboardRow("mine", "facescape", "wild", cd_mm=2.5, config_hash="b")
    )
    update_leaderboard(path, LeaderboardRow("other", "facescape", "wild", cd_mm=9.0))
    own = load_leaderboard(path, include_published=False)
    assert [(r.method, r.cd_mm, r.config_hash) for r in own] == [
        ("mine", 2.5, "b"),
        ("other", 9.0, ""),
    ]
    assert "reported" not in path.read_text()  # published rows are added when read, not stored
    wild = ranked(load_leaderboard(path), "facescape:wild")[("facescape", "wild", "")]
    assert [r.method for r in wild[:3]] == ["mine", hrn, "3DDFA"]
    assert wild[-1].method == "other"
    # a run that left images unscored comes after every complete one, whatever its number
    partial = LeaderboardRow("partial", "facescape", "wild", cd_mm=0.1, n_items=8, n_missing=2)
    update_leaderboard(path, partial)
    wild = ranked(load_leaderboard(path), "facescape:wild")[("facescape", "wild", "")]
    assert wild[-1].method == "partial" and not wild[-1].complete and wild[-1].n_scored == 6
    assert all(r.complete for r in wild[:-1]) and wild[0].method == "mine"
    assert set(ranked(load_leaderboard(path), "REALY")) == {
        ("realy", "frontal", ""),
        ("realy", "side", ""),
    }
    # each dataset ranks by its own metric: REALY by the mean region error, whose published
    # rows put HRN (1.537 mm on the frontal set) first
    frontal = ranked(load_leaderboard(path), "realy:frontal")[("realy", "frontal", "")]
    assert [r.nmse_mm for r in frontal] == sorted(r.nmse_mm for r in frontal)
    assert frontal[0].method == hrn and len(frontal) > 2
    # a run on a synthetic benchmark ranks apart from the published (real-data) rows
    update_leaderboard(
        path, LeaderboardRow("synth", "now", "validation", median_mm=0.1, data="synthetic")
    )
    groups = ranked(load_leaderboard(path), "now:val")
    assert [r.method for r in groups[("now", "validation", "synthetic")]] == ["synth"]
    assert "synth" not in {r.method for r in groups.get(("now", "validation", ""), [])}
    # a malformed file: an error naming the file and the line, not a traceback or a wrong rank
    good = path.read_text()
    header, *lines = good.splitlines()
    first = lines[0].split(",")
    first[header.split(",").index("n_items")] = "x"
    path.write_text("\n".join([header, ",".join(first), *lines[1:]]) + "\n")
    with pytest.raises(InputFileError, match="line 2: n_items 'x' is not a number"):
        load_leaderboard(path)
    path.write_text(good[: len(good) - 40])  # cut inside its last row
    with pytest.raises(InputFileError, match=f"line {len(lines) + 1}: not as many fields"):
        load_leaderboard(path)
    with pytest.raises(InputFileError, match="line"):
        update_leaderboard(path, partial)
    path.write_text("name,score\nmine,1\n")
    with pytest.raises(InputFileError, match="no column method, dataset, split, data"):
        load_leaderboard(path)
    # without its data column, the synthetic row would rank beside the published ones
    import csv
    import io

    table = list(csv.reader(io.StringIO(good)))
    keep = [i for i, c in enumerate(table[0]) if c != "data"]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([r[i] for i in keep] for r in table)
    with pytest.raises(InputFileError, match="not a facehd leaderboard: no column data"):
        load_leaderboard(path)
    path.write_bytes(b"method,dataset,split\n\xff\xfe,now,validation\n")
    with pytest.raises(InputFileError, match="not a readable CSV"):
        load_leaderboard(path)
    # hand edits that would rank a wrong row or lose a column on the next update
    cols = header.split(",")

    def edited(column: str, value: str, **more: str) -> str:
        row = lines[0].split(",")
        for c, v in {column: value, **more}.items():
            row[cols.index(c)] = v
        return "\n".join([header, ",".join(row), *lines[1:]]) + "\n"

    for text, said in (
        (edited("median_mm", "-5"), "line 2: median_mm '-5' must be a finite number >= 0"),
        (edited("cd_mm", "nan"), "line 2: cd_mm 'nan' must be a finite number >= 0"),
        (edited("n_missing", "99", n_items="8"), r"line 2: n_missing \+ n_failed \(99 \+ "),
        (edited("n_items", "0", n_missing="0", n_failed="0"), "line 2: n_items 0: a run scores"),
        (edited("dataset", "NOW"), "line 2: unknown dataset 'NOW' \\(one of facescape, "),
        (edited("dataset", "bogus"), "line 2: unknown dataset 'bogus'"),
        (good.replace("median_mm", "medianmm", 1), "unknown column.*'medianmm'"),
        (good + lines[0] + "\n", f"line {len(lines) + 2}: the same run .* as line 2"),
    ):
        path.write_text(text)
        with pytest.raises(InputFileError, match=said):
            load_leaderboard(path)
        with pytest.raises(InputFileError, match=said):
            update_leaderboard(path, partial)
        assert path.read_text() == text  # nothing rewritten
    path.unlink()
    path.mkdir()
    with pytest.raises(InputFileError, match="is a folder"):
        load_leaderboard(path)


def test_cli_bench_and_leaderboard(synth_roots: dict, tmp_path: Path) -> None:
    from facehd.cli import app

    root = synth_roots["facescape"]
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["bench", "--dataset", "facescape:lab", "--method", "cli-test", "--root", str(root)]
    args += ["--predictions", str(root / "pred" / "lab_pred" / "synth-fit"), "--out", str(out)]
    args += ["--workers", "2"]  # a process pool
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "facescape-lab" / "cli-test" / "items.csv").exists()
    assert (out / "facescape-lab" / "cli-test" / "config.json").exists()
    rows = _rows(out / "facescape-lab" / "cli-test" / "items.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    result = runner.invoke(app, ["leaderboard", "--dataset", "facescape:lab", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "cli-test" in result.output and "HRN" in result.output and "Table 1" in result.output
    result = runner.invoke(
        app, ["bench", "--dataset", "now", "--method", "x", "--root", str(tmp_path / "nope")]
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    # predictions for one image of two: status 1, and the run listed unranked after the others
    partial = _copy(root / "pred" / "lab_pred" / "synth-fit", tmp_path / "partial")
    first = sorted(p for p in partial.iterdir() if p.suffix == ".obj")[0]
    first.unlink()
    args = ["bench", "--dataset", "facescape:lab", "--method", "half", "--root", str(root)]
    result = runner.invoke(app, [*args, "--predictions", str(partial), "--out", str(out)])
    assert result.exit_code == 1 and "1 missing" in result.output, result.output
    result = runner.invoke(app, ["leaderboard", "--dataset", "facescape:lab", "--out", str(out)])
    lines = result.output.splitlines()
    half = next(line for line in lines if " half " in line)
    assert "1 of 2 scored" in half and half.split()[1] == "-"  # no rank
    assert lines.index(half) > max(i for i, line in enumerate(lines) if "cli-test" in line)
    # a predictions folder in another layout: nothing scored, no leaderboard row, and the
    # earlier run of that method (its files, its row) left as it was
    half_dir = out / "facescape-lab" / "half"
    before = {p.name: p.read_bytes() for p in half_dir.iterdir() if p.is_file()}
    board_before = (out / "leaderboard.csv").read_bytes()
    result = runner.invoke(app, [*args, "--predictions", str(tmp_path), "--out", str(out)])
    assert (
        result.exit_code == 1
        and "0 scored" in result.output
        and "no leaderboard row" in (" ".join(result.output.split()))
    )
    methods = {r.method for r in load_leaderboard(out / "leaderboard.csv", include_published=False)}
    assert methods == {"cli-test", "half"}
    assert {p.name: p.read_bytes() for p in half_dir.iterdir() if p.is_file()} == before
    assert (out / "leaderboard.csv").read_bytes() == board_before
    unscored = [r["status"] for r in _rows(half_dir / "unscored" / "items.csv")]
    assert unscored == ["missing", "missing"]
    # a run that scores again replaces the files and drops the unscored attempt's rows
    result = runner.invoke(app, [*args, "--predictions", str(partial), "--out", str(out)])
    assert result.exit_code == 1 and not (half_dir / "unscored").exists()
    # leaderboard: an unknown dataset, a folder without a leaderboard
    result = runner.invoke(app, ["leaderboard", "--dataset", "bogus", "--out", str(out)])
    assert result.exit_code == 2 and "unknown dataset" in result.output
    # an unknown split is named, not shown as a leaderboard without rows
    result = runner.invoke(app, ["leaderboard", "--dataset", "facescape:foo", "--out", str(out)])
    assert result.exit_code == 2 and "facescape has no split 'foo'" in result.output
    result = runner.invoke(app, ["leaderboard", "--dataset", "now", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_cli_bench_now_solver_reaches_the_refinement(synth_roots: dict, tmp_path: Path) -> None:
    """--now-solver picks the rigid refinement (recorded in config.json); the minimum solver
    ends at a lower objective than the official dogleg, which stops short of it."""
    from facehd.cli import app

    root = synth_roots["now"]
    runner = CliRunner()
    args = ["bench", "--dataset", "now", "--root", str(root), "--out", str(tmp_path)]
    args += ["--predictions", str(root / "predictions" / "synth-fit")]
    result = runner.invoke(app, [*args, "--method", "x", "--now-solver", "newton"])
    assert result.exit_code == 2 and "--now-solver: expected one of official, minimum" in (
        " ".join(result.output.split())
    )
    for solver in ("official", "minimum"):
        result = runner.invoke(app, [*args, "--method", solver, "--now-solver", solver])
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / "now-validation" / solver / "config.json").read_text())
        assert config["now"]["solver"] == solver
    sums = {}
    for solver in ("official", "minimum"):
        with np.load(tmp_path / "now-validation" / solver / "distances.npz") as npz:
            sums[solver] = sum(float(npz[k] @ npz[k]) for k in npz.files)
    assert sums["minimum"] < sums["official"]


def test_multiview_sets_on_the_now_layout(synth_roots: dict, tmp_path: Path) -> None:
    root = _copy(synth_roots["now"], tmp_path / "mv")
    subject = readers.read_now_items(root, "validation")[0].subject
    (root / "multiview_esrc.txt").write_text(
        f"{subject}/2views/set0 a.jpg b.jpg\n{subject}/2views/set1\n"
    )
    preds = tmp_path / "preds"
    src = root / "predictions" / "synth-fit" / subject / "multiview_neutral"
    dst = preds / subject / "2views"
    dst.mkdir(parents=True)
    for ext in (".obj", ".txt"):
        shutil.copy(next(src.glob(f"*{ext}")), dst / f"set0{ext}")
    res = run_benchmark("multiview:esrc", "mv", predictions=preds, root=root, out=tmp_path / "out")
    rows = _rows(res.items_csv)
    assert [(r["image"], r["status"]) for r in rows] == [("set0", "ok"), ("set1", "missing")]
    summary = {r["group"]: r for r in _rows(res.summary_csv)}
    assert set(summary) == {"2views", "all"}
    assert summary["all"]["median_mm"] == summary["2views"]["median_mm"] != ""
    assert res.leaderboard_row.split == "esrc" and res.leaderboard_row.median_mm is not None
    # the official NoW tool's file, as for NoW: the scored set's distances, the missing counted
    official = np.load(res.out_dir / "mv_computed_distances.npy", allow_pickle=True).item()
    assert official["num_missing_files"] == 1 and len(official["computed_distances"]) == 1
    with np.load(res.out_dir / "distances.npz") as dist:
        np.testing.assert_array_equal(official["computed_distances"][0], dist[dist.files[0]])


def test_a_sets_photos_are_its_image_files_in_name_order(tmp_path: Path) -> None:
    from benchmarks.multiview import view_images

    folder = tmp_path / "images" / "s0" / "3views" / "set0"
    folder.mkdir(parents=True)
    for name in ("c.bmp", "a.JPG", "b.png", "d.jpeg", "notes.txt", "e.obj"):
        (folder / name).write_bytes(b"")
    assert [p.name for p in view_images(folder)] == ["a.JPG", "b.png", "c.bmp", "d.jpeg"]
    assert view_images(tmp_path / "absent") == [] and view_images(None) == []
    assert view_images(folder / "b.png") == []  # a file is no set folder


def test_a_synthetic_benchmark_scored_as_another_dataset_is_refused(
    synth_roots: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    preds = synth_roots["now"] / "predictions" / "synth-fit"
    for dataset, kind, use in (
        ("realy:frontal", "now", "now"),
        ("facescape:lab", "realy", "realy:frontal"),
        ("now", "facescape", "facescape:wild or facescape:lab"),
    ):
        with pytest.raises(InputFileError) as err:
            run_benchmark(dataset, "m", predictions=preds, root=synth_roots[kind], out=out)
        assert err.value.path == synth_roots[kind]
        said = str(err.value)
        assert f"a synthetic {kind} benchmark" in said and f"--dataset {use}" in said
    assert not out.exists()
    # a folder without the record is read as the dataset asked for
    plain = _copy(synth_roots["now"], tmp_path / "plain")
    (plain / "synth.json").unlink()
    with pytest.raises(InputFileError, match="REALY_HIFI3D_keypoints|REALY"):
        run_benchmark("realy:frontal", "m", predictions=preds, root=plain, out=out)


def test_a_multiview_split_not_there_names_the_splits_that_are(tmp_path: Path) -> None:
    root = tmp_path / "mv"
    root.mkdir()
    with pytest.raises(InputFileError, match="image list does not exist$"):
        readers.read_multiview_items(root, "esrc")
    for name in ("synth", "lab"):
        (root / f"multiview_{name}.txt").write_text("s/2views/set0\n")
    with pytest.raises(InputFileError) as err:
        readers.read_multiview_items(root, "esrc")
    assert err.value.path == root / "multiview_esrc.txt"
    assert str(err.value).endswith("--dataset multiview:lab and --dataset multiview:synth")


def test_registered_method_runs_in_process(
    synth_roots: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    import benchmarks.methods as methods

    ep = EntryPoint("scan-lookup", "bench_fake_method:make", methods.ENTRY_POINT_GROUP)
    monkeypatch.setattr(methods, "entry_points", lambda group: [ep] if group == ep.group else [])
    assert set(methods.available_methods()) == {"scan-lookup"}
    with pytest.raises(ValueError, match="registered: scan-lookup"):
        methods.load_method("nope")
    root = _copy(synth_roots["now"], tmp_path / "now")
    items = readers.read_now_items(root, "validation")
    item = items[0]
    for other in items[1:]:
        other.image_path.unlink()  # a photo missing from the disk: nothing to reconstruct
    res = run_benchmark("now", "scan-lookup", root=root, out=tmp_path / "out")
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert rows[item.name]["status"] == "ok" and float(rows[item.name]["median_mm"]) < 1e-6
    assert (res.n_ok, res.n_missing) == (1, 3)  # the other images have no photo on disk
    # each recorded with why, in predictions/failures.csv and in its items.csv row
    failed = {r["item"]: r for r in _rows(res.out_dir / "predictions" / "failures.csv")}
    assert set(failed) == {it.name for it in items[1:]}
    for other in items[1:]:
        assert "no photo of this name" in failed[other.name]["error"]
        assert rows[other.name]["status"] == "missing"
        assert rows[other.name]["error"].startswith("no predicted mesh: no photo of this name")
    # the photos back: a rerun reconstructs them and leaves no failures behind
    for other in items[1:]:
        shutil.copy(item.image_path, other.image_path)
    res = run_benchmark("now", "scan-lookup", root=root, out=tmp_path / "out")
    assert res.n_ok == 4 and not (res.out_dir / "predictions" / "failures.csv").exists()
    assert (
        res.out_dir / "predictions" / item.subject / item.challenge / f"{item.image}.obj"
    ).exists()

    # a rerun keeps the predictions made from the photos as they are, and makes again the one
    # whose photo changed (another benchmark's photo under the same name)
    def stamps() -> dict[str, int]:
        preds = res.out_dir / "predictions"
        return {
            it.name: (preds / it.subject / it.challenge / f"{it.image}.obj").stat().st_mtime_ns
            for it in items
        }

    def run_counted() -> tuple[list, list]:
        """The (done, total) calls of the reconstruction's and the scoring's progress."""
        made: list[tuple[int, int]] = []
        scored: list[tuple[int, int]] = []
        run_benchmark(
            "now", "scan-lookup", root=root, out=tmp_path / "out",
            predict_progress=lambda *a: made.append(a), progress=lambda *a: scored.append(a),
        )  # fmt: skip
        return made, scored

    before = stamps()
    made, scored = run_counted()
    assert stamps() == before
    assert made == [] and scored == [(k, 4) for k in range(5)]  # nothing left to reconstruct
    with open(items[2].image_path, "ab") as fh:
        fh.write(b"another photo")
    made, scored = run_counted()
    assert made == [(0, 1), (1, 1)] and scored == [(k, 4) for k in range(5)]
    after = stamps()
    assert [n for n in before if after[n] != before[n]] == [items[2].name]
    # ... and the one whose landmark file beside its photo appeared (a method may align by it)
    items[1].image_path.with_suffix(".pts").write_text("version: 1\n")
    run_benchmark("now", "scan-lookup", root=root, out=tmp_path / "out")
    again = stamps()
    assert [n for n in after if again[n] != after[n]] == [items[1].name]


def test_labels_rank_runs_of_one_method_side_by_side(
    synth_roots: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registered method run with two checkpoints: --label gives each its own row and folder in
    one leaderboard, the rows' config hashes differ by what made the meshes (method.json), and a
    row replaced by another configuration's is said."""
    import json
    from importlib.metadata import EntryPoint

    import benchmarks.methods as methods
    from facehd.cli import app

    ep = EntryPoint("lookup", "bench_fake_method:make_described", methods.ENTRY_POINT_GROUP)
    monkeypatch.setattr(methods, "entry_points", lambda group: [ep] if group == ep.group else [])
    root = synth_roots["now"]
    out = tmp_path / "out"
    results = {}
    for checkpoint in ("a", "b"):
        monkeypatch.setenv("FAKE_METHOD_CHECKPOINT", checkpoint)
        res = run_benchmark("now", "lookup", root=root, out=out, label=f"lookup-{checkpoint}")
        assert res.n_ok == 4 and res.replaced is None
        assert res.out_dir == out / "now-validation" / f"lookup-{checkpoint}"
        made = {"method": "lookup", "describe": {"checkpoint": checkpoint}}
        assert json.loads((res.out_dir / "predictions" / "method.json").read_text()) == made
        config = json.loads((res.out_dir / "config.json").read_text())
        assert config["made_by"] == made and config["method"] == f"lookup-{checkpoint}"
        results[checkpoint] = res
    rows = {r.method: r for r in load_leaderboard(out / "leaderboard.csv", include_published=False)}
    assert set(rows) == {"lookup-a", "lookup-b"}
    assert rows["lookup-a"].config_hash != rows["lookup-b"].config_hash
    # the same meshes scored again: the same hash (it is of what made them, not of the run)
    again = run_benchmark("now", "lookup", root=root, out=out, label="lookup-b")
    assert again.replaced is not None
    assert again.replaced.config_hash == again.leaderboard_row.config_hash
    # a folder of meshes made elsewhere (no method.json) hashes by the protocol alone
    plain = _copy(results["a"].out_dir / "predictions", tmp_path / "plain")
    (plain / "method.json").unlink()
    mine = run_benchmark("now", "mine", predictions=plain, root=root, out=out)
    assert json.loads((mine.out_dir / "config.json").read_text())["made_by"] is None
    # without --label, a run of another checkpoint replaces the row and the CLI says so
    runner = CliRunner()
    args = ["bench", "--dataset", "now", "--method", "lookup", "--root", str(root)]
    args += ["--out", str(out)]
    monkeypatch.setenv("FAKE_METHOD_CHECKPOINT", "a")
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "replaced" not in first.output, first.output
    shutil.rmtree(out / "now-validation" / "lookup" / "predictions")  # to redo them
    monkeypatch.setenv("FAKE_METHOD_CHECKPOINT", "b")
    second = runner.invoke(app, args)
    said = " ".join(second.output.split())
    assert second.exit_code == 0 and "replaced the leaderboard's earlier 'lookup' row" in said
    assert "--label" in said
    # the same for a folder of meshes: other meshes under the same name replace the row
    made = results["a"].out_dir / "predictions"
    mine = ["bench", "--dataset", "now", "--method", "mine", "--root", str(root)]
    mine += ["--out", str(out), "--predictions"]
    res = runner.invoke(app, [*mine, str(plain)])
    assert res.exit_code == 0 and "replaced" not in res.output, res.output
    res = runner.invoke(app, [*mine, str(made)])
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "earlier 'mine' row" in said and "--method name" in said
    # --label is for a registered method's run; a label that is no folder name is refused
    res = runner.invoke(app, [*args, "--predictions", str(plain), "--label", "x"])
    assert res.exit_code == 2 and "--label names the run of a registered method" in res.output
    res = runner.invoke(app, [*args, "--label", "a/b"])
    assert res.exit_code == 2 and "label 'a/b' must be" in res.output


def test_cli_now_metrical_variant_fixes_the_unit_scale(synth_roots: dict, tmp_path: Path) -> None:
    """--metrical UNIT: predictions in metres under ``--metrical m`` score as their copy in mm
    under ``--metrical mm``, with the unit's scale exactly (not a fitted one); the rows rank apart
    from the non-metrical ones."""
    from facehd.cli import app

    root = synth_roots["now"]
    metres = root / "predictions" / "synth-fit"  # the synthetic predictions are in metres
    mm_copy = _copy(metres, tmp_path / "mm")
    for path in mm_copy.rglob("*.obj"):
        mesh = load_mesh(path)
        save_mesh(path, Mesh(mesh.vertices * 1000.0, mesh.faces))
    for path in mm_copy.rglob("*.txt"):
        np.savetxt(path, np.loadtxt(path) * 1000.0)
    out = tmp_path / "out"
    runner = CliRunner()

    said = {}

    def run(method: str, preds: Path, unit: str, code: int = 0) -> dict[str, dict[str, str]]:
        args = ["bench", "--dataset", "now", "--method", method, "--root", str(root)]
        args += ["--predictions", str(preds), "--out", str(out), "--metrical", unit]
        result = runner.invoke(app, args)
        assert result.exit_code == code, result.output
        said[method] = " ".join(result.output.split())
        return {r["name"]: r for r in _rows(out / "now-validation-metrical" / method / "items.csv")}

    m = run("m", metres, "m")
    mm = run("mm", mm_copy, "mm")
    assert len(m) == 4
    for name, row in m.items():
        assert float(row["scale"]) == 1000.0 and float(mm[name]["scale"]) == 1.0
        assert float(mm[name]["median_mm"]) == pytest.approx(float(row["median_mm"]), abs=1e-3)
        assert 0.1 < float(row["median_mm"]) < 5.0
    assert all(row["warning"] == "" for row in [*m.values(), *mm.values()])
    # a metre prediction given as millimetres: scored as asked, and named as such (one image:
    # the refinement of a mesh a thousandth of the scan's size takes ~10 s, not 0.3 s)
    first = sorted(metres.rglob("*.obj"))[0].parent
    one = _copy(first, tmp_path / "one" / first.relative_to(metres)).parents[1]
    wrong = run("wrong", one, "mm", code=1)  # images unscored
    (scored,) = [r for r in wrong.values() if r["status"] == "ok"]
    assert "--metrical mm scales the prediction by 1, its landmarks" in scored["warning"]
    assert "in another unit?" in scored["warning"]
    assert float(scored["median_mm"]) > 20 * float(m[scored["name"]]["median_mm"])
    # said before scoring (a whole benchmark would take days to say it in its summary), naming
    # the landmarks file; the runs in the right unit say nothing of the kind
    lm_file = next(one.rglob("*.txt"))
    before, _, after = said["wrong"].partition(f"warning: {lm_file}: --metrical mm scales")
    assert after and "Every image is scored as asked" in after
    assert "median_mm" not in before and "median_mm" in after
    assert all("in another unit" not in said[k] for k in ("m", "mm"))
    board = {(r.method, r.split) for r in load_leaderboard(out / "leaderboard.csv")}
    assert ("m", "validation-metrical") in board
    bad = ["bench", "--dataset", "facescape", "--method", "x", "--root", str(root)]
    result = runner.invoke(app, [*bad, "--predictions", str(metres), "--metrical", "mm"])
    assert result.exit_code != 0 and "metrical" in result.output
    result = runner.invoke(
        app, ["bench", "--dataset", "now", "--method", "x", "--root", str(root), "--metrical", "km"]
    )
    assert result.exit_code != 0 and "unit" in result.output


def test_the_unit_notice_reads_the_first_prediction_it_can(synth_roots: dict, tmp_path: Path):
    """The early wrong-unit warning skips images whose landmarks are missing or unreadable (their
    rows say why) and judges by the first it can read; predictions in the unit say nothing."""
    from benchmarks.now import NowConfig
    from benchmarks.runner import _NowTask, _unit_notice

    root = synth_roots["now"]
    metres = _copy(root / "predictions" / "synth-fit", tmp_path / "metres")
    items = readers.read_now_items(root, "validation")
    first, second, third = (readers.find_prediction(metres, it)[1] for it in items[:3])
    first.write_text("not landmarks\n")
    second.unlink()

    def tasks(unit: str) -> list:
        cfg = NowConfig(metrical=True, unit=unit)
        return [_NowTask(it, *readers.find_prediction(metres, it), cfg, metres) for it in items]

    said = _unit_notice(tasks("mm"))
    assert said.startswith(f"{third}: --metrical mm scales the prediction by 1, its landmarks")
    assert "in another unit?" in said
    assert _unit_notice(tasks("m")) == ""
    for path in metres.rglob("*.txt"):
        path.unlink()
    assert _unit_notice(tasks("mm")) == ""  # nothing to judge by


def _photo_fits(cover: np.ndarray, image: np.ndarray) -> None:
    """A synthetic photo shows its face exactly where ``cover`` (a GT depth map's pixels) says:
    every pixel 2 px or more outside it is background (a vertical colour ramp, read off the
    photo's left and right edges), at least 90% of those 2 px or more inside it are not, and
    the same cover moved by 3 px in any direction lies worse."""
    from scipy import ndimage

    img = image.astype(np.float64)
    background = img[:, [0, 1, -2, -1]].mean(axis=1, keepdims=True)
    face = np.abs(img - background).max(axis=2) > 30.0

    def clean_outside(c: np.ndarray) -> float:
        return float(1.0 - face[~ndimage.binary_dilation(c, iterations=2)].mean())

    assert clean_outside(cover) > 0.9995
    assert face[ndimage.binary_erosion(cover, iterations=2)].mean() > 0.9
    for shift in ((3, 0), (-3, 0), (0, 3), (0, -3)):
        assert clean_outside(np.roll(cover, shift, axis=(0, 1))) < clean_outside(cover)


def test_synthetic_facescape_photos_show_the_ground_truth(synth_roots: dict) -> None:
    """Each photo shows its ground-truth mesh where the benchmark's own cameras put it (wild:
    the orthographic [-1, 1] view; lab: K and Rt of the camera file)."""
    import json

    from PIL import Image

    from benchmarks.facescape import Orthographic, Perspective, render_depth

    root = synth_roots["facescape"]
    for split in ("wild", "lab"):
        photos = readers.find_facescape_images(root, split)
        for it in readers.read_facescape_items(root, split):
            gt = load_mesh(it.gt_mesh)
            if split == "wild":
                cover = render_depth(gt, Orthographic(1.0)) > 0
            else:
                k, rt = (np.array(m) for m in json.loads(it.camera.read_text()))
                cam = Mesh(gt.vertices @ rt[:, :3].T + rt[:, 3], gt.faces)
                cover = render_depth(cam, Perspective(k)) > 0
            _photo_fits(cover, np.asarray(Image.open(photos[it.name]).convert("RGB")))


def test_synthetic_facescape_photos_cover_the_ground_truth_to_the_subpixel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pixels a synthetic FaceScape photo draws the face on (the photo renderer's own
    coverage, before JPEG) are those whose centres, in the benchmark's conventions, see the
    ground-truth mesh: a ray cast by trimesh through each pixel centre (lab: ``K`` of the
    camera file with centres at +0.5, as pyrender has them; wild: the orthographic [-1, 1]
    square). The same rays moved half a pixel miss by far more, so the test resolves it."""
    import trimesh

    import benchmarks.synthetic as synthetic
    import pipelines.synth_photos as synth_photos

    seen: list = []
    render, save = synth_photos.render_photos, synthetic._save_jpeg

    def spy_render(*args: Any, **kwargs: Any) -> Any:
        photos = render(*args, **kwargs)
        seen.append(photos.arrays["visible"][0])
        return photos

    def spy_save(path: Path, photo: np.ndarray) -> None:
        seen[-1] = (Path(path).stem, seen[-1])
        save(path, photo)

    monkeypatch.setattr(synth_photos, "render_photos", spy_render)
    monkeypatch.setattr(synthetic, "_save_jpeg", spy_save)
    root = synthetic.make_synthetic_benchmark(
        "facescape", tmp_path / "fs", seed=5, n_subjects=1, lab_views=(0, 9), lab_focals=(1,)
    )
    drawn = dict(seen)
    photos = {p.stem for p in (root / "data").rglob("*.jpg")}
    assert sorted(drawn) == sorted(photos) and len(photos) == 6  # 4 wild, 2 lab
    size = 256
    grid = np.arange(float(size))
    row, col = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))
    cams = root / "data" / "lab_cam"

    def misses(mesh: Mesh, name: str, shift: float) -> int:
        tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        c, r = col + 0.5 + shift, row + 0.5 + shift  # pixel centres, benchmark convention
        if "_" in name:  # lab: the camera file's K and Rt
            k, rt = (np.array(m) for m in json.loads((cams / f"{name}.json").read_text()))
            tm.vertices = mesh.vertices @ rt[:, :3].T + rt[:, 3]
            d = np.stack([(c - k[0, 2]) / k[0, 0], (r - k[1, 2]) / k[1, 1], np.ones_like(c)], 1)
            o = np.zeros_like(d)
        else:  # wild: orthographic, looking down -z
            o = np.stack([2 * c / size - 1, 1 - 2 * r / size, np.zeros_like(c)], 1)
            d = np.tile([0.0, 0.0, -1.0], (len(c), 1))
        # a ray through a pixel outside the box of the projected vertices hits nothing (the
        # vertices lie in front of the camera): trimesh casts the others, one R-tree query each
        if "_" in name:
            v = tm.vertices
            assert (v[:, 2] > 0).all()
            uv = v[:, :2] / v[:, 2:] * [k[0, 0], k[1, 1]] + [k[0, 2], k[1, 2]]
        else:
            uv = (tm.vertices[:, :2] * [1, -1] + 1) * size / 2
        lo, hi = uv.min(0), uv.max(0)
        inside = (c >= lo[0]) & (c <= hi[0]) & (r >= lo[1]) & (r <= hi[1])
        hit = np.zeros(len(c), dtype=bool)
        hit[inside] = tm.ray.intersects_any(o[inside], d[inside])
        hit = hit.reshape(size, size)
        return int((hit != drawn[name]).sum())

    for name in sorted(drawn):
        split, stem = ("lab", name[:2]) if "_" in name else ("wild", name)
        gt = load_mesh(root / "data" / f"{split}_gt_mesh" / f"{stem}.obj")
        exact, moved = misses(gt, name, 0.0), misses(gt, name, 0.5)
        # lab: the same pinhole, so only ties; wild: a pinhole 100 m away against the
        # orthographic rays, a few pixels of the silhouette's edge
        assert exact <= (2 if split == "lab" else 40), (name, exact)
        assert moved > 4 * max(exact, 20), (name, exact, moved)


def test_find_facescape_images_prefers_the_split_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "wild_gt_mesh").mkdir(parents=True)
    for rel in ("a/000.jpg", "wild_img/000.png", "lab_img/000.jpg", "x/00_0_01.JPEG"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"")
    (data / "x" / ".01_0_00.tmp.jpg").write_bytes(b"")  # a temporary file is no photo
    wild = readers.find_facescape_images(tmp_path, "wild")
    assert wild == {"000": data / "wild_img/000.png", "00_0_01": data / "x/00_0_01.JPEG"}
    assert readers.find_facescape_images(tmp_path, "lab")["000"] == data / "lab_img/000.jpg"


def test_facescape_methods_run_in_process_on_the_photos(
    synth_roots: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench --dataset facescape --method M``: M's image-aligned meshes of the split's photos,
    written in the layout and scored; a photo missing from the disk is a failure row."""
    from importlib.metadata import EntryPoint

    import benchmarks.methods as methods

    eps = [
        EntryPoint("truth-in-image", "bench_fake_method:make_truth", methods.ENTRY_POINT_GROUP),
        EntryPoint("scan-lookup", "bench_fake_method:make", methods.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(methods, "entry_points", lambda group: eps)
    root = _copy(synth_roots["facescape"], tmp_path / "fs")
    photos = readers.find_facescape_images(root, "wild")
    photos["300"].unlink()
    res = run_benchmark("facescape:wild", "truth-in-image", root=root, out=tmp_path / "out")
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert (res.n_ok, res.n_missing) == (3, 1) and rows["300"]["status"] == "missing"
    for name in ("000", "100", "200"):
        assert float(rows[name]["cd_mm"]) < 1e-3 and float(rows[name]["cr"]) == pytest.approx(1)
    pred_dir = res.out_dir / "predictions"
    assert sorted(p.name for p in pred_dir.glob("*.obj")) == ["000.obj", "100.obj", "200.obj"]
    failed = _rows(pred_dir / "failures.csv")
    assert len(failed) == 1 and "300" in failed[0]["image"] and "no photo" in failed[0]["error"]
    with pytest.raises(ValueError, match="reconstruct_image_aligned"):
        run_benchmark("facescape:wild", "scan-lookup", root=root, out=tmp_path / "out2")
    for photo in readers.find_facescape_images(root, "lab").values():
        photo.unlink()
    with pytest.raises(InputFileError, match="no photo of the lab split"):
        run_benchmark("facescape:lab", "truth-in-image", root=root, out=tmp_path / "out3")


def test_realy_methods_run_in_process_on_a_photo_folder(
    synth_roots: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench --dataset realy --method M --images DIR``: M's template-topology meshes of the
    folder's photos, with M's topology files, score as the same meshes given as predictions;
    a photo M fails on scores as missing."""
    from importlib.metadata import EntryPoint

    from PIL import Image

    import benchmarks.methods as methods

    eps = [
        EntryPoint("copy", "bench_fake_method:make_synth_fit_copy", methods.ENTRY_POINT_GROUP),
        EntryPoint("truth-in-image", "bench_fake_method:make_truth", methods.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(methods, "entry_points", lambda group: eps)
    root = _copy(synth_roots["realy"], tmp_path / "realy")
    photos = root / "images" / "frontal"
    assert sorted(p.name for p in photos.iterdir()) == ["1_0.jpg"]
    given = run_benchmark(
        "realy:frontal",
        "given",
        predictions=root / "predictions" / "synth-fit",
        root=root,
        out=tmp_path / "out",
    )
    ran = run_benchmark("realy:frontal", "copy", root=root, images=photos, out=tmp_path / "out")
    assert ran.n_ok == 1 and ran.leaderboard_row.nmse_mm == given.leaderboard_row.nmse_mm
    assert (ran.out_dir / "predictions" / "facehd-synth.txt").is_file()
    # a second photo whose prediction the method cannot make: recorded, scored as missing
    Image.new("RGB", (64, 64)).save(photos / "1_extra.jpg")
    (photos / "notes.jpg").write_bytes(b"")  # not a REALY name: not a photo of the set
    again = run_benchmark("realy:frontal", "copy", root=root, images=photos, out=tmp_path / "out")
    assert (again.n_items, again.n_ok, again.n_missing) == (2, 1, 1)
    failed = _rows(again.out_dir / "predictions" / "failures.csv")
    assert [Path(r["image"]).name for r in failed] == ["1_extra.jpg"]
    with pytest.raises(ValueError, match="--images"):
        run_benchmark("realy:frontal", "copy", root=root, out=tmp_path / "out2")
    with pytest.raises(ValueError, match="reconstruct_template"):
        run_benchmark("realy", "truth-in-image", root=root, images=photos, out=tmp_path / "o3")


def test_synthetic_benchmark_records_its_settings_and_refuses_others(tmp_path: Path) -> None:
    from benchmarks.synthetic import is_synthetic_benchmark, make_synthetic_benchmark
    from facehd.cli import app

    root = make_synthetic_benchmark("realy", tmp_path / "realy", seed=4, n_subjects=1)
    truth = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert is_synthetic_benchmark(root) and not is_synthetic_benchmark(tmp_path)
    make_synthetic_benchmark("realy", root, seed=4, n_subjects=1)  # same settings, same bytes
    assert {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == truth
    for kwargs, named in (
        ({"seed": 5, "n_subjects": 1}, "seed 4 there, 5 now"),
        ({"seed": 4, "n_subjects": 2}, "subjects 1 there, 2 now"),
    ):
        with pytest.raises(InputFileError, match=named):
            make_synthetic_benchmark("realy", root, **kwargs)
    with pytest.raises(InputFileError, match="benchmark 'realy' there, 'now' now"):
        make_synthetic_benchmark("now", root, seed=4, n_subjects=1)
    assert {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == truth
    # a folder of someone else's files (a real benchmark's root) is never written into
    real = tmp_path / "NoW_Dataset"
    real.mkdir()
    (real / "imagepathsvalidation.txt").write_text("x\n")
    with pytest.raises(InputFileError, match="did not write"):
        make_synthetic_benchmark("now", real)
    assert [p.name for p in real.iterdir()] == ["imagepathsvalidation.txt"]
    # the CLI: the scans' options are refused, --subjects applies
    runner = CliRunner()
    args = ["synth", "--benchmark", "now", "--out", str(tmp_path / "now")]
    result = runner.invoke(app, [*args, "--units", "m", "--colours"])
    assert result.exit_code == 2 and "--units, --colours: not for --benchmark" in result.output
    assert not (tmp_path / "now").exists()
    result = runner.invoke(app, [*args, "--subjects", "3"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "now" / "scans").iterdir())) == 3
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert result.exit_code == 2 and "seed 0 there, 1 now" in " ".join(result.output.split())


def test_a_benchmark_stopped_part_way_is_refused_until_a_rerun_finishes_it(
    synth_roots: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """facehd synth --benchmark killed part way (here at its second photo, after the scans and
    predictions) leaves a folder marked unfinished: bench refuses it, naming the folder and the
    command that finishes it, and adds no leaderboard row; the same command run again writes
    the very bytes of an uninterrupted run, which bench scores. A record from before the mark
    counts as finished."""
    import json

    import benchmarks.synthetic as synthetic
    from facehd.cli import app

    photo, calls = synthetic._now_photo, []

    def killed(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        photo(*args, **kwargs)

    root = tmp_path / "now"
    make = ["synth", "--benchmark", "now", "--out", str(root), "--subjects", "1", "--seed", "3"]
    runner = CliRunner()
    monkeypatch.setattr(synthetic, "_now_photo", killed)
    res = runner.invoke(app, make)
    assert res.exit_code == 130 and "is unfinished" in " ".join(res.output.split()), res.output
    assert (root / "imagepathsvalidation.txt").is_file()  # what bench reads is there, partly
    assert json.loads((root / "synth.json").read_text())["complete"] is False
    bench = ["bench", "--dataset", "now", "--method", "synth-fit", "--root", str(root)]
    bench += ["--predictions", str(root / "predictions" / "synth-fit"), "--out"]
    res = runner.invoke(app, [*bench, str(tmp_path / "out")])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and f"{root}: an unfinished synthetic benchmark" in said, said
    assert f"run {' '.join(['facehd', *make])} again to finish it" in said
    assert not (tmp_path / "out").exists()
    board = runner.invoke(app, ["leaderboard", "--out", str(tmp_path / "out"), "--dataset", "now"])
    assert "synth-fit" not in board.output
    monkeypatch.setattr(synthetic, "_now_photo", photo)
    assert runner.invoke(app, make).exit_code == 0
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    whole = synth_roots["now"]  # the same settings, never interrupted
    assert files == sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (whole / f).read_bytes() for f in files)
    res = runner.invoke(app, [*bench, str(tmp_path / "out")])
    assert res.exit_code == 0 and (tmp_path / "out" / "leaderboard.csv").is_file(), res.output
    record = json.loads((root / "synth.json").read_text())
    del record["complete"]  # written before the record said whether it was finished
    (root / "synth.json").write_text(json.dumps(record))
    assert runner.invoke(app, [*bench, str(tmp_path / "out2")]).exit_code == 0


def test_now_subject_without_its_scan_fails_its_own_items(tmp_path: Path) -> None:
    """A subject whose ground-truth scan (or landmark file) is gone fails its own images, named;
    the other subjects are scored (before, the whole run stopped)."""
    from benchmarks.runner import run_benchmark
    from benchmarks.synthetic import make_synthetic_benchmark

    root = Path(make_synthetic_benchmark("now", tmp_path / "now", seed=5, n_subjects=2))
    preds = root / "predictions" / "synth-fit"
    items = readers.read_now_items(root, "validation")
    gone = items[0].subject
    for f in (root / "scans" / gone).glob("*.obj"):
        f.unlink()
    res = run_benchmark("now", "m", predictions=preds, root=root, out=tmp_path / "o")
    rows = _rows(res.items_csv)
    mine = [r for r in rows if r["subject"] == gone]
    assert mine and all(r["status"] == "error" for r in mine)
    assert all(f"scans/{gone}: no scan (*.obj, *.ply)" in r["error"] for r in mine)
    assert all(r["status"] == "ok" for r in rows if r["subject"] != gone)
    assert (res.n_failed, res.n_ok) == (len(mine), len(rows) - len(mine))
    shutil.rmtree(root / "scans_lmks_onlypp" / gone)
    res = run_benchmark("now", "m", predictions=preds, root=root, out=tmp_path / "o2")
    assert res.n_failed == len(mine) and res.n_ok == len(rows) - len(mine)


def test_now_predictions_that_are_no_face_are_scored_with_a_warning(
    tmp_path: Path, now_copy: Path
) -> None:
    """Landmarks given in reverse order, or a prediction of 3 vertices, are scored as the
    official tool would score them, but named in the warning column and counted; the untouched
    predictions have none."""
    from types import SimpleNamespace

    from benchmarks.runner import _now_warning, run_benchmark
    from facehd.cli import app
    from facehd.mesh import Mesh
    from facehd.transforms import Similarity

    root = now_copy
    preds = root / "predictions" / "synth-fit"
    items = readers.read_now_items(root, "validation")
    second = preds / items[1].subject / items[1].challenge / f"{items[1].image}.txt"
    lines = second.read_text().splitlines()
    second.write_text("\n".join(reversed(lines)) + "\n")
    res = run_benchmark("now", "m", predictions=preds, root=root, out=tmp_path / "o")
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert rows[items[1].name]["status"] == "ok"
    assert "mm RMS from the scan's after the similarity fit" in rows[items[1].name]["warning"]
    assert all(rows[it.name]["warning"] == "" for it in items if it != items[1])
    assert res.n_warned == 1 and res.n_ok == len(items)
    cli = CliRunner().invoke(
        app,
        ["bench", "--dataset", "now", "--method", "m", "--predictions", str(preds)]
        + ["--root", str(root), "--out", str(tmp_path / "o2")],
    )
    assert "1 scored with a warning" in cli.output, cli.output
    # a prediction of 3 vertices whose landmarks fit exactly
    lm = readers.read_landmarks7(second)
    tri = Mesh(lm[:3], np.array([[0, 1, 2]]))
    same = Similarity(1.0, np.eye(3), np.zeros(3))
    fit = SimpleNamespace(landmark_transform=same, transform=same)
    assert _now_warning(tri, lm, lm, fit) == "the prediction has 3 vertices"


def test_now_mirrored_prediction_is_scored_as_itself_with_a_warning(
    tmp_path: Path, now_copy: Path
) -> None:
    """A prediction mirrored with its landmarks (x negated: a mesh written in a left-handed
    frame) scores as the prediction itself, since the official alignment allows a reflection;
    its row says that the alignment mirrors it, and the others say nothing."""

    root = now_copy
    preds = root / "predictions" / "synth-fit"
    items = readers.read_now_items(root, "validation")
    first = run_benchmark("now", "m", predictions=preds, root=root, out=tmp_path / "a")
    before = {r["name"]: r for r in _rows(first.items_csv)}
    stem = preds / items[0].subject / items[0].challenge / items[0].image
    mesh = load_mesh(stem.with_suffix(".obj"))
    flip = np.array([-1.0, 1.0, 1.0])
    save_mesh(stem.with_suffix(".obj"), Mesh(mesh.vertices * flip, mesh.faces[:, ::-1]))
    lm = readers.read_landmarks7(stem.with_suffix(".txt"))
    np.savetxt(stem.with_suffix(".txt"), lm * flip)
    res = run_benchmark("now", "m", predictions=preds, root=root, out=tmp_path / "b")
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    assert rows[items[0].name]["status"] == "ok"
    assert "its alignment to the scan mirrors it" in rows[items[0].name]["warning"]
    assert all(rows[it.name]["warning"] == "" for it in items[1:])
    assert res.n_warned == 1
    for key in ("median_mm", "mean_mm"):
        assert float(rows[items[0].name][key]) == pytest.approx(
            float(before[items[0].name][key]), abs=1e-4
        )


def test_now_mesh_and_landmarks_in_other_units_are_scored_with_a_warning(
    tmp_path: Path, now_copy: Path
) -> None:
    """A prediction whose mesh is written in millimetres beside landmarks left in metres is
    scored as the official tool scores it (far off), and its row says that its landmarks lie
    far from its own surface, in millimetres at the landmark fit's scale; the others lie on
    theirs and say nothing."""

    root = now_copy
    preds = root / "predictions" / "synth-fit"
    items = readers.read_now_items(root, "validation")
    stem = preds / items[0].subject / items[0].challenge / items[0].image
    mesh = load_mesh(stem.with_suffix(".obj"))
    save_mesh(stem.with_suffix(".obj"), Mesh(mesh.vertices * 1000.0, mesh.faces))
    res = run_benchmark("now", "m", predictions=preds, root=root, out=tmp_path / "o")
    rows = {r["name"]: r for r in _rows(res.items_csv)}
    warning = rows[items[0].name]["warning"]
    assert "mm RMS from its own surface (the mesh and the landmarks in other frames" in warning
    assert "from the scan's" not in warning  # the landmarks themselves fit the scan
    # the figure, by trimesh's closest points and the landmark fit's scale (mm per metre)
    import trimesh

    lm = readers.read_landmarks7(stem.with_suffix(".txt"))
    big = trimesh.Trimesh(mesh.vertices * 1000.0, mesh.faces, process=False)
    off = trimesh.proximity.closest_point(big, lm)[1]
    scan_lm = readers.read_scan_landmarks7(items[0].scan_landmarks)
    fit = procrustes(lm, scan_lm, with_scale=True, allow_reflection=True)
    said = float(warning.split("its 7 landmarks lie ")[1].split(" mm")[0])
    assert said == pytest.approx(np.sqrt(np.mean(off**2)) * fit.scale, abs=0.051)
    assert said > 1000.0
    assert all(rows[it.name]["warning"] == "" for it in items[1:])
    assert res.n_warned == 1 and res.n_ok == len(items)


def test_config_hash_follows_the_settings_not_the_folders(tmp_path: Path) -> None:
    from benchmarks.now import NowConfig
    from benchmarks.runner import RunConfig, scoring_hash

    a = RunConfig("now", "validation", "m", "/data/now", "/home/a/preds", "", NowConfig(), "1.0")
    moved = RunConfig("now", "validation", "m", "/mnt/now", "/tmp/b/preds", "", NowConfig(), "1.0")
    assert scoring_hash(a) == scoring_hash(moved)
    assert scoring_hash(
        RunConfig("now", "validation", "m", "/x", "/y", "", NowConfig(), "2.0")
    ) != (scoring_hash(a))
    metrical = RunConfig("now", "validation", "m", "/x", "/y", "", NowConfig(metrical=True), "1.0")
    assert scoring_hash(metrical) != scoring_hash(a)
    assert scoring_hash(RunConfig("now", "test", "m", "/x", "/y", "", NowConfig(), "1.0")) != (
        scoring_hash(a)
    )
    # REALY: the topology files' content counts, not their place
    txt, obj = tmp_path / "k.txt", tmp_path / "t.obj"
    txt.write_text("1 2 3\n")
    obj.write_text("v 0 0 0\n")
    r = RunConfig("realy", "all", "m", "/x", "/y", str(txt))
    first = scoring_hash(r, (txt, obj))
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(txt, copy / "k.txt")
    shutil.copy(obj, copy / "t.obj")
    r2 = RunConfig("realy", "all", "m", "/x", "/y", str(copy / "k.txt"))
    assert scoring_hash(r2, (copy / "k.txt", copy / "t.obj")) == first
    txt.write_text("1 2 4\n")
    assert scoring_hash(r, (txt, obj)) != first


def test_official_facescape_counts_ground_truth_missing_from_the_disk(
    synth_roots: dict, tmp_path: Path
) -> None:
    """On the official data (no synthetic record) the items are the protocol's whole set: a
    ground-truth mesh or lab camera missing from the disk is an error row naming the file, and
    the run is not complete, where it used to be a smaller benchmark that looked complete."""
    from benchmarks.synthetic import BENCHMARK_RECORD

    root = _copy(synth_roots["facescape"], tmp_path / "official")
    (root / BENCHMARK_RECORD).unlink()
    data = root / "data"
    (data / "wild_gt_mesh" / "200.obj").unlink()
    wild = run_benchmark(
        "facescape:wild",
        "synth-fit",
        predictions=root / "pred" / "wild_pred" / "synth-fit",
        root=root,
        out=tmp_path / "out",
    )
    rows = {r["name"]: r for r in _rows(wild.items_csv)}
    assert list(rows) == [f"{i:03d}" for i in range(400)]
    assert [rows[k]["status"] for k in ("000", "100", "300")] == ["ok"] * 3
    gone = data / "wild_gt_mesh" / "200.obj"
    assert rows["200"]["status"] == "error"
    assert rows["200"]["error"] == f"ground truth: {gone} does not exist"
    assert (
        rows["001"]["error"] == f"ground truth: {data / 'wild_gt_mesh' / '001.obj'} does not exist"
    )
    assert (wild.n_ok, wild.n_failed, wild.n_missing) == (3, 397, 0)
    # lab: every subject found has its 3 focal lengths x 11 views; a deleted camera is named
    cam = data / "lab_cam" / "00_0_09.json"
    cam.unlink()
    lab = run_benchmark(
        "facescape:lab",
        "synth-fit",
        predictions=root / "pred" / "lab_pred" / "synth-fit",
        root=root,
        out=tmp_path / "out",
    )
    rows = {r["name"]: r for r in _rows(lab.items_csv)}
    assert len(rows) == 33 and rows["00_0_00"]["status"] == "ok"
    assert rows["00_0_09"]["error"] == f"ground truth: {cam} does not exist"
    assert (lab.n_ok, lab.n_failed) == (1, 32)


def test_leaderboard_says_when_it_has_no_runs_to_show(tmp_path: Path) -> None:
    """A mistyped --out, a file as --out or an empty leaderboard.csv is said, where only the
    published tables were printed (as if there were no runs); a file saved with a byte-order
    mark by a spreadsheet program reads as it is."""
    from facehd.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["leaderboard", "--out", str(tmp_path / "typo")])
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and f"{tmp_path / 'typo' / 'leaderboard.csv'} does not exist" in said
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    res = runner.invoke(app, ["leaderboard", "--out", str(a_file)])
    assert res.exit_code == 2 and "is a file: --out is the folder" in " ".join(res.output.split())
    board = tmp_path / "lb" / "leaderboard.csv"
    board.parent.mkdir()
    board.write_bytes(b"")
    res = runner.invoke(app, ["leaderboard", "--out", str(board.parent)])
    assert res.exit_code == 0 and "is empty: the published numbers only" in res.output
    board.unlink()
    update_leaderboard(board, LeaderboardRow("mine", "now", "validation", median_mm=1.0))
    board.write_bytes(b"\xef\xbb\xbf" + board.read_bytes())
    assert [r.method for r in load_leaderboard(board, include_published=False)] == ["mine"]


def test_runs_on_two_synthetic_benchmarks_rank_apart(synth_roots: dict, tmp_path: Path) -> None:
    """A synthetic benchmark's leaderboard rows carry the settings that made it (seed,
    subjects), so a run on another one is ranked in its own table, and one that replaces a row
    scored on other data says so."""
    from typer.testing import CliRunner

    from benchmarks.leaderboard import load_leaderboard, ranked
    from benchmarks.synthetic import benchmark_data, make_synthetic_benchmark
    from facehd.cli import app

    other = make_synthetic_benchmark("now", tmp_path / "now4", seed=4, n_subjects=1)
    assert benchmark_data(synth_roots["now"]) == "synthetic seed 3, 1 subject"
    assert benchmark_data(other) == "synthetic seed 4, 1 subject"
    assert benchmark_data(synth_roots["facescape"]) == (
        "synthetic seed 3, 1 subject, lab views [0, 9], focals [0]"
    )
    assert benchmark_data(tmp_path) == ""
    out = tmp_path / "out"
    runner = CliRunner()
    said = []
    for root in (synth_roots["now"], other):
        args = ["bench", "--dataset", "now", "--method", "synth-fit", "--root", str(root)]
        args += ["--predictions", str(root / "predictions" / "synth-fit"), "--out", str(out)]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        said.append(" ".join(res.output.split()))
    assert "other data" not in said[0]
    assert (
        "scored on other data (synthetic seed 3, 1 subject -> synthetic seed 4, 1 subject)"
        in (said[1])
    )
    (row,) = load_leaderboard(out / "leaderboard.csv", include_published=False)
    assert row.data == "synthetic seed 4, 1 subject"
    assert list(ranked([row])) == [("now", "validation", "synthetic seed 4, 1 subject")]
    res = runner.invoke(app, ["leaderboard", "--dataset", "now", "--out", str(out)])
    assert res.exit_code == 0 and "seed 4, 1 subject" in " ".join(res.output.split())


def test_now_computed_distances_are_the_same_bytes_from_a_pool() -> None:
    """The distances of a run with --workers come back pickled from the workers: the file
    holds the same bytes as a run in one process (each array's own copy of the dtype was
    stored in the pickle: 238 bytes more for the 8 images of a synthetic NoW)."""
    import pickle

    from benchmarks.runner import NowItemRow, now_computed_distances

    rng = np.random.default_rng(0)
    rows = [NowItemRow(f"s{k}/img", f"s{k}", "neutral", "img.jpg", "ok") for k in range(4)]
    here = {r.name: rng.random(50 + k) for k, r in enumerate(rows)}
    from_workers = {name: pickle.loads(pickle.dumps(d)) for name, d in here.items()}
    assert now_computed_distances(rows, from_workers) == now_computed_distances(rows, here)
    got = np.load(io.BytesIO(now_computed_distances(rows, here)), allow_pickle=True).item()
    assert got["num_missing_files"] == 0
    for d, want in zip(got["computed_distances"], here.values(), strict=True):
        np.testing.assert_array_equal(d, want)


def evaluate_or_die(task: Any) -> tuple:
    """The runner's scoring of one item, but the worker process of the item named by
    ``$FACEHD_TEST_DIE_ON`` (the workers inherit it) dies a moment after it starts, as on a
    crash in compiled code or the out-of-memory killer."""
    import os
    import time

    from benchmarks import runner

    time.sleep(0.3)  # the others are in flight when it dies
    if task.item.name == os.environ["FACEHD_TEST_DIE_ON"]:
        os._exit(3)
    if isinstance(task, runner._NowTask):
        return runner._eval_now(task)
    return runner._eval_facescape(task)


@pytest.mark.parametrize(
    ("dataset", "predictions"),
    [("now", "predictions/synth-fit"), ("facescape:lab", "pred/lab_pred/synth-fit")],
)
def test_an_item_whose_worker_dies_fails_alone(
    synth_roots: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dataset: str,
    predictions: str,
) -> None:
    """A worker process dying on one item (run in a pool) failed the whole run with a
    BrokenProcessPool traceback and wrote nothing: the item's row now says so, and the others
    are scored as a run without the pool scores them."""
    from benchmarks import runner

    root = synth_roots[dataset.split(":")[0]]
    preds = root / predictions
    reference = run_benchmark(dataset, "m", predictions=preds, root=root, out=tmp_path / "ref")
    expected = _rows(reference.items_csv)
    monkeypatch.setattr(runner, "_evaluate", evaluate_or_die)
    monkeypatch.setenv("FACEHD_TEST_DIE_ON", expected[0]["name"])
    res = run_benchmark(dataset, "m", predictions=preds, root=root, out=tmp_path / "out", workers=2)
    rows = _rows(res.items_csv)
    assert [r["name"] for r in rows] == [r["name"] for r in expected]
    assert rows[0]["status"] == "error" and rows[0]["prediction"] == expected[0]["prediction"]
    assert rows[0]["error"].startswith("RuntimeError: worker process died while processing")
    assert rows[1:] == expected[1:]
    assert (res.n_ok, res.n_failed) == (len(rows) - 1, 1)


def test_cli_bench_facescape_depth(synth_roots: dict, tmp_path: Path) -> None:
    """--facescape-depth: FaceScape's only, a known renderer, recorded in config.json and the
    config hash (the default hashes as before the option); with pyrender, where it renders,
    each image's depth shift within the depth buffer's steps of the exact maps'."""
    import dataclasses

    from benchmarks.runner import RunConfig, scoring_hash
    from facehd.cli import app

    root = synth_roots["facescape"]
    runner = CliRunner()
    out = tmp_path / "out"
    base = ["bench", "--method", "d", "--root", str(root), "--out", str(out)]
    preds = ["--predictions", str(root / "pred" / "lab_pred" / "synth-fit")]
    result = runner.invoke(app, [*base, "--dataset", "now", *preds, "--facescape-depth", "rays"])
    assert result.exit_code == 2 and "now has none" in result.output, result.output
    lab = [*base, "--dataset", "facescape:lab", *preds]
    result = runner.invoke(app, [*lab, "--facescape-depth", "opengl"])
    assert result.exit_code == 2 and "expected one of rays, pyrender" in result.output
    result = runner.invoke(app, [*lab, "--facescape-depth", "rays"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "facescape-lab" / "d" / "config.json").read_text())
    assert config["facescape_depth"] == "rays"
    version = config["facehd_version"]
    plain = RunConfig("facescape", "lab", "d", "/x", "/y", facehd_version=version, loader="generic")
    # the default hashes as a run from before the option, which had no facescape_depth
    assert config["config_hash"] == scoring_hash(plain)
    assert scoring_hash(dataclasses.replace(plain, facescape_depth="rays")) == scoring_hash(plain)
    gl = dataclasses.replace(plain, facescape_depth="pyrender")
    assert scoring_hash(gl) != scoring_hash(plain)
    from bench_shapes import pyrender_renders

    if not pyrender_renders():
        return
    rays = {r["name"]: r for r in _rows(out / "facescape-lab" / "d" / "items.csv")}
    result = runner.invoke(app, [*lab, "--facescape-depth", "pyrender", "--method", "d-gl"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "facescape-lab" / "d-gl" / "config.json").read_text())
    assert config["facescape_depth"] == "pyrender"
    for row in _rows(out / "facescape-lab" / "d-gl" / "items.csv"):
        assert row["status"] == "ok"
        assert abs(float(row["delta_z"]) - float(rays[row["name"]]["delta_z"])) < 1.5
        assert abs(float(row["cd_mm"]) - float(rays[row["name"]]["cd_mm"])) < 0.2

"""HRN as a benchmark method: a synthetic NoW benchmark reconstructed in-process and scored."""

from __future__ import annotations

import csv

import pytest
from PIL import Image
from typer.testing import CliRunner

from benchmarks import methods
from benchmarks.readers import read_now_items
from benchmarks.runner import run_benchmark
from benchmarks.synthetic import make_synthetic_benchmark
from facehd.cli import app
from models.bench import ENV_CHECKPOINT, ENV_PRECISION, HRNMethod, make_method


def test_hrn_method_on_a_synthetic_now_benchmark(model_path, tmp_path, monkeypatch, one_thread):
    pytest.importorskip("mediapipe")
    root = make_synthetic_benchmark("now", tmp_path / "now", seed=0, n_subjects=1)
    items = read_now_items(root, "validation")
    # the benchmark's own rendered photos, one replaced by a picture without a face
    assert all(it.image_path is not None and it.image_path.is_file() for it in items)
    Image.new("RGB", (320, 240), (90, 120, 150)).save(items[2].image_path)

    # registered by the package's metadata (pyproject's facehd.methods entry points)
    assert methods.available_methods()["hrn"].value == "models.bench:make_method"
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    with pytest.raises(ValueError, match="checkpoint"):
        make_method()
    monkeypatch.setenv(ENV_CHECKPOINT, str(model_path))
    assert isinstance(methods.load_method("hrn"), HRNMethod)

    result = run_benchmark("now", "hrn", root=root, out=tmp_path / "bench")
    # the faceless image is recorded as a failure and scored as missing, the run goes on
    assert result.n_items == 4 and result.n_ok == 3 and result.n_missing == 1
    row = result.leaderboard_row
    assert row.method == "hrn" and row.median_mm is not None and row.median_mm > 0
    pred_dir = result.out_dir / "predictions"
    preds = sorted(pred_dir.rglob("*.obj"))
    assert len(preds) == 3 and all(p.with_suffix(".txt").is_file() for p in preds)
    with open(pred_dir / "failures.csv") as fh:
        failed = list(csv.DictReader(fh))
    assert len(failed) == 1 and failed[0]["image"].endswith(f"{items[2].image}.jpg")
    assert not list(pred_dir.rglob(".*tmp*"))  # no temporary file left behind
    # each prediction's 7 landmarks name the scan's 7 points, in NoW's order: after the best
    # rotation and scale (SciPy's, no reflection) they match their own points, far better than
    # with the eyes' or the mouth's corners swapped or the order reversed
    import numpy as np
    from scipy.spatial.transform import Rotation

    from benchmarks.readers import read_scan_landmarks7

    def misfit(truth: np.ndarray, got: np.ndarray) -> float:
        a, b = truth - truth.mean(0), got - got.mean(0)
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        return float(Rotation.align_vectors(a, b)[1])

    swaps = (
        [1, 0, 3, 2, 4, 5, 6],
        [3, 2, 1, 0, 4, 6, 5],
        [0, 1, 2, 3, 4, 6, 5],
        [6, 5, 4, 3, 2, 1, 0],
    )
    for it in items[:2]:
        got = np.loadtxt(pred_dir / f"{it.name}.txt")
        truth = read_scan_landmarks7(it.scan_landmarks, it.pp_by_position)
        assert got.shape == (7, 3)
        assert misfit(truth, got) < 0.1
        assert min(misfit(truth, got[o]) for o in swaps) > 4 * misfit(truth, got)

    # the CLI: --checkpoint; a rerun keeps finished predictions and retries the failure only
    stamps = {p: p.stat().st_mtime_ns for p in preds}
    monkeypatch.delenv(ENV_CHECKPOINT)
    args = ["bench", "--dataset", "now", "--method", "hrn", "--root", str(root)]
    args += ["--out", str(tmp_path / "bench"), "--checkpoint", str(model_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output  # the faceless image is still unscored
    assert {p: p.stat().st_mtime_ns for p in preds} == stamps
    with open(pred_dir / "failures.csv") as fh:
        again = list(csv.DictReader(fh))  # the faceless image tried once more, listed once
    assert len(again) == 1 and again[0]["item"] == items[2].name
    said = " ".join(res.output.split())  # a bar for each phase: the one image retried, 4 scored
    assert "now hrn: reconstructed" in said and "1/1" in said and "now hrn: scored" in said
    # a damaged checkpoint is said alone, without a bar of images that will not be made
    cut = tmp_path / "cut.pt"
    cut.write_bytes(model_path.read_bytes()[:5000])
    res = CliRunner().invoke(app, args[:-1] + [str(cut)])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "cut.pt: not a readable PyTorch checkpoint" in said, said
    assert "now hrn" not in said, said
    missing = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "nope.pt")])
    assert (
        missing.exit_code == 2 and "nope.pt: checkpoint (--checkpoint) not found" in missing.output
    )
    missing = CliRunner().invoke(app, [*args, "--bfm", str(tmp_path / "BFM.mat")])
    assert missing.exit_code == 2 and "BFM.mat: BFM model file (--bfm) not found" in missing.output

    # what the predictions depend on is kept beside them; another precision or checkpoint is
    # refused (the finished meshes would be scored with the new model's), the same checkpoint
    # under another path is not
    import hashlib
    import json
    import shutil

    stored = json.loads((pred_dir / "method.json").read_text())
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert stored == {
        "method": "hrn",
        "describe": {**stored["describe"], "checkpoint_sha256": digest, "precision": "float32"},
    }
    monkeypatch.setenv(ENV_PRECISION, "float32")  # restored after the test (the CLI sets it)
    res = CliRunner().invoke(app, [*args, "--precision", "bfloat16"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "precision 'float32' -> 'bfloat16'" in said, res.output
    assert "method.json" in said and {p: p.stat().st_mtime_ns for p in preds} == stamps
    assert "its own --label" in said  # the way to score both
    moved = tmp_path / "elsewhere.pt"
    shutil.copy(model_path, moved)
    res = CliRunner().invoke(app, [*args[:-1], str(moved), "--precision", "float32"])
    assert res.exit_code == 1 and "another" not in res.output, res.output
    other = {**stored, "describe": {**stored["describe"], "checkpoint_sha256": "0" * 64}}
    (pred_dir / "method.json").write_text(json.dumps(other))
    res = CliRunner().invoke(app, args)
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and f"checkpoint_sha256 '{'0' * 64}' -> '{digest}'" in said
    res = CliRunner().invoke(app, [*args, "--precision", "fp8"])
    assert res.exit_code == 2 and "--precision must be float32 or bfloat16" in res.output


def test_hrn_method_fits_multiview_sets_jointly(model_path, tmp_path, monkeypatch, one_thread):
    pytest.importorskip("mediapipe")
    from benchmarks.readers import read_multiview_items
    from benchmarks.synthetic import MULTIVIEW_SPLIT, MULTIVIEW_VIEWS

    root = make_synthetic_benchmark("multiview", tmp_path / "mv", seed=2, n_subjects=1)
    items = read_multiview_items(root, MULTIVIEW_SPLIT)
    assert len(items) == 1 and len(list(items[0].image_path.iterdir())) == MULTIVIEW_VIEWS
    calls = []
    import models.multiview as mv

    real_fit = mv.fit_multiview

    starts = []
    fits = []  # (reconstructor, fitted set) of each call

    def spy(recon, crops, *args, **kwargs):
        calls.append(crops.shape[0])
        starts.append(kwargs.get("coefficients"))
        fits.append((recon, real_fit(recon, crops, *args, **kwargs)))
        return fits[-1][1]

    monkeypatch.setattr(mv, "fit_multiview", spy)
    monkeypatch.setenv(ENV_CHECKPOINT, str(model_path))
    result = run_benchmark(f"multiview:{MULTIVIEW_SPLIT}", "hrn", root=root, out=tmp_path / "bench")
    assert calls == [MULTIVIEW_VIEWS]  # one joint fit of the set's three photos
    assert starts == [None]  # from the face analyzer's coefficients
    assert result.n_items == 1 and result.n_ok == 1
    assert result.leaderboard_row.median_mm is not None and result.leaderboard_row.median_mm > 0
    # the set's mesh is its first view's M2 (the views differ in expression and details), its
    # landmarks that view's M1 at NoW's 7 points
    import numpy as np

    from facehd.landmarks import NOW7_FROM_68
    from facehd.mesh import load_mesh

    recon, fitted = fits[0]
    (obj,) = (result.out_dir / "predictions").rglob("*.obj")
    got = load_mesh(obj).vertices
    first, last = (recon.detail_mesh(v).vertices for v in (fitted.views[0], fitted.views[-1]))
    np.testing.assert_allclose(got, first, atol=1e-4)
    assert np.abs(last - first).max() > 1e-2
    lm7 = np.array(recon.model.landmarks68)[list(NOW7_FROM_68)]
    np.testing.assert_allclose(
        np.loadtxt(obj.with_suffix(".txt")), fitted.views[0].m1[lm7], atol=1e-4
    )
    # refined: the joint fit starts from each view's refined coefficients
    from models.bench import ENV_REFINE_STEPS

    monkeypatch.setenv(ENV_REFINE_STEPS, "2")
    refined = run_benchmark(
        f"multiview:{MULTIVIEW_SPLIT}", "hrn", root=root, out=tmp_path / "bench-refined"
    )
    assert refined.n_ok == 1 and len(starts) == 2 and starts[1] is not None
    assert starts[1].id.shape[0] == MULTIVIEW_VIEWS
    # refined with one identity for the set's views (the joint fit's start)
    assert (starts[1].id == starts[1].id[:1]).all()


def test_the_method_takes_its_files_from_the_environment_and_hashes_each(
    model_path, tmp_path, monkeypatch
) -> None:
    """make_method hands the loader every file the environment names (the official checkpoint's
    de-retouching network and BFM files too); describe() holds the SHA-256 of each and MV-HRN's
    settings; a call without images is refused."""
    import hashlib

    import models.bench as bench
    from models.config import config_to_dict
    from models.multiview import MultiViewConfig
    from models.reconstruct import Reconstructor

    files = {}
    for env, role, name in (
        (bench.ENV_DERETOUCH, "deretouch", "deretouch.pth"),
        (bench.ENV_BFM, "bfm", "BFM_model_front.mat"),
        (bench.ENV_BFM_UV, "uv", "uv.npy"),
    ):
        files[role] = tmp_path / name
        files[role].write_bytes(name.encode() * (len(files) + 1))
        monkeypatch.setenv(env, str(files[role]))
    monkeypatch.setenv(ENV_CHECKPOINT, str(model_path))
    for env in (ENV_PRECISION, bench.ENV_REFINE_STEPS, bench.ENV_FIT_ITERATIONS):
        monkeypatch.delenv(env, raising=False)
    asked = []
    real_load = Reconstructor.load.__func__

    def load(cls, checkpoint, **kwargs):
        asked.append((checkpoint, kwargs))  # the built-in model reads no BFM: loaded without
        return real_load(cls, checkpoint, precision=kwargs["precision"])

    monkeypatch.setattr(Reconstructor, "load", classmethod(load))
    method = make_method()
    assert asked == [
        (
            str(model_path),
            {
                "deretouch": str(files["deretouch"]),
                "bfm_path": str(files["bfm"]),
                "uv_path": str(files["uv"]),
                "precision": "float32",
            },
        )
    ]
    said = method.describe()
    for role, path in {"checkpoint": model_path, **files}.items():
        assert said[f"{role}_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), role
    assert said["multiview"] == config_to_dict(MultiViewConfig())
    assert "refine" not in said and "fit" not in said
    with pytest.raises(ValueError, match="no image given"):
        method.reconstruct([])


def test_image_aligned_vertices_follow_the_photo_camera() -> None:
    """x, y: the base camera's projection carried back through the crop into the photo, written
    as one 3x3 photo camera; z: towards the viewer at the same scale, so a sphere stays round."""
    import numpy as np

    from facehd.align import CropTransform
    from facehd.errors import DegenerateInputError
    from facehd.transforms import rotation_from_axis_angle
    from models.bench import image_aligned_vertices

    rng = np.random.default_rng(5)
    directions = rng.normal(size=(4000, 3))
    sphere = 80.0 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    axis = np.array([0.3, -1.0, 0.2])
    rot = rotation_from_axis_angle(axis / np.linalg.norm(axis) * np.deg2rad(25.0))
    trans = np.array([12.0, -7.0, -30.0])
    crop = CropTransform(0.7, (13.0, -9.0), 224)
    h, w = 300, 400  # not square: one scale, the width's
    got = image_aligned_vertices(sphere, rot, trans, crop, (h, w))
    # the photo camera: the base camera (focal 1015, centre (112, 111), 1000 mm away on +z,
    # looking down -z) followed by the crop's inverse
    f, s, (tx, ty) = 1015.0, crop.scale, crop.translation
    k_photo = np.array([[f / s, 0, (112 - tx) / s], [0, f / s, (111 - ty) / s], [0, 0, 1]])
    cam = (sphere @ rot.T + trans) * [1.0, -1.0, -1.0] + [0.0, 0.0, 1000.0]
    uv = (cam @ k_photo.T)[:, :2] / cam[:, 2:3]
    np.testing.assert_allclose(got[:, 0], (uv[:, 0] + 0.5) * 256 / w, atol=1e-9)
    np.testing.assert_allclose(got[:, 1], (h - uv[:, 1] - 0.5) * 256 / w, atol=1e-9)
    # towards the viewer: the point nearest the camera is the highest; extents agree to the
    # perspective's few percent (80 mm radius at ~1 m)
    assert np.argmax(got[:, 2]) == np.argmin(cam[:, 2])
    ext = np.ptp(got, axis=0)
    assert abs(ext[2] / ext[0] - 1) < 0.06 and abs(ext[2] / ext[1] - 1) < 0.06
    with pytest.raises(DegenerateInputError, match="behind the camera"):
        image_aligned_vertices(sphere, rot, [0.0, 0.0, 1000.0], crop, (h, w))
    # A photo turned upright before the crop (np.rot90(given, k)): x and y are measured in the
    # photo as given. k = 1: the upright pixel (u, v) was the given pixel (W_given - 1 - v, u),
    # with the given photo w x h (the upright one h x w turned).
    given_h, given_w = w, h
    got1 = image_aligned_vertices(sphere, rot, trans, crop, (given_h, given_w), turn=1)
    gx, gy = (given_w - 1) - uv[:, 1], uv[:, 0]
    np.testing.assert_allclose(got1[:, 0], (gx + 0.5) * 256 / given_w, atol=1e-9)
    np.testing.assert_allclose(got1[:, 1], (given_h - gy - 0.5) * 256 / given_w, atol=1e-9)
    # k = 2: (u, v) was (w - 1 - u, h - 1 - v) in a photo of the same size
    got2 = image_aligned_vertices(sphere, rot, trans, crop, (h, w), turn=2)
    np.testing.assert_allclose(got2[:, 0], (w - 1 - uv[:, 0] + 0.5) * 256 / w, atol=1e-9)
    np.testing.assert_allclose(got2[:, 1], (h - (h - 1 - uv[:, 1]) - 0.5) * 256 / w, atol=1e-9)
    np.testing.assert_allclose(got2[:, 2], got[:, 2] * 1.0, atol=1e-9)


def test_hrn_method_on_a_synthetic_facescape_benchmark(
    model_path, tmp_path, monkeypatch, one_thread
):
    """``facehd bench --dataset facescape:wild --method hrn``: the photos are reconstructed into
    image-aligned meshes that lie on their faces in the photo, and scored."""
    pytest.importorskip("mediapipe")
    import numpy as np

    from benchmarks.readers import find_facescape_images, read_facescape_items
    from facehd.mesh import load_mesh

    root = make_synthetic_benchmark(
        "facescape", tmp_path / "fs", seed=1, n_subjects=1, lab_views=(0,), lab_focals=(0,)
    )
    photos = find_facescape_images(root, "wild")
    Image.new("RGB", (256, 256), (90, 120, 150)).save(photos["200"])
    monkeypatch.setenv(ENV_CHECKPOINT, str(model_path))
    result = run_benchmark("facescape:wild", "hrn", root=root, out=tmp_path / "bench")
    with open(result.items_csv) as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert rows["200"]["status"] == "missing"
    scored = [n for n, r in rows.items() if r["status"] == "ok"]
    assert len(scored) >= 2 and all(float(rows[n]["cr"]) > 0.3 for n in scored)
    items = {it.name: it for it in read_facescape_items(root, "wild")}
    for name in scored:  # the reconstruction covers the ground truth's place in the photo
        pred = load_mesh(result.out_dir / "predictions" / f"{name}.obj").vertices / 128 - 1
        gt = load_mesh(items[name].gt_mesh).vertices
        assert np.linalg.norm(np.median(pred[:, :2], 0) - np.median(gt[:, :2], 0)) < 0.1
        assert abs(np.ptp(pred[:, 1]) / np.ptp(gt[:, 1]) - 1) < 0.25
    # a photo turned a quarter (no orientation tag) is turned upright for the crop, and its mesh
    # is placed in the photo as given: the upright photo's (x, y, z) -> (256 - y, x, z). (The
    # detector tells the turn of some of these rendered faces only: one of those is taken.)
    from facehd.detect import FaceDetector

    turned = {n: np.ascontiguousarray(np.rot90(np.asarray(Image.open(photos[n])))) for n in scored}
    with FaceDetector() as detector:
        quarter = [n for n in scored if detector.orientation(turned[n]) == 3]
    assert quarter, "no rendered photo whose quarter turn the detector finds"
    name = quarter[0]
    assert turned[name].shape[0] == turned[name].shape[1]  # square, as FaceScape's: one scale
    Image.fromarray(turned[name]).save(tmp_path / "turned.png")
    method = HRNMethod(model_path)
    upright = method.reconstruct_image_aligned(photos[name]).mesh.vertices
    # the detailed mesh M2 (a vertex per texel of the UV layout), not M1 on the model's topology
    texels = np.count_nonzero(method.recon.system.table.mask)
    assert len(upright) == texels != method.recon.model.n_vertices
    got = method.reconstruct_image_aligned(tmp_path / "turned.png").mesh.vertices
    expected = np.stack([256 - upright[:, 1], upright[:, 0], upright[:, 2]], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_hrn_method_on_a_synthetic_realy_benchmark(model_path, tmp_path, monkeypatch, one_thread):
    """``facehd bench --dataset realy:frontal --method hrn --images DIR``: M1 on the model's
    topology per photo, facehd-synth's topology files beside them, scored."""
    pytest.importorskip("mediapipe")
    import json
    import math

    from facehd.mesh import load_mesh
    from facehd.morphable import load_model

    root = make_synthetic_benchmark("realy", tmp_path / "realy", seed=2, n_subjects=2)
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    args = ["bench", "--dataset", "realy:frontal", "--method", "hrn", "--root", str(root)]
    args += ["--out", str(tmp_path / "bench"), "--checkpoint", str(model_path)]
    res = CliRunner().invoke(app, args + ["--images", str(root / "images" / "frontal")])
    assert res.exit_code == 0, res.output
    pred = tmp_path / "bench" / "realy-frontal" / "hrn" / "predictions"
    model = load_model("facehd-synth")
    for name in ("1_0", "2_0"):
        mesh = load_mesh(pred / f"{name}.obj")
        assert mesh.vertices.shape == (model.n_vertices, 3)
        assert (mesh.faces == model.faces).all()
    assert len(json.loads((pred / "facehd-synth.txt").read_text())) == 85
    with open(tmp_path / "bench" / "realy-frontal" / "hrn" / "items.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(
        0.1 < float(r["nose_mm"]) < 10 and not math.isnan(float(r["cheek_mm"])) for r in rows
    )
    res = CliRunner().invoke(app, args)  # no photos to run on
    assert res.exit_code == 2 and "--images" in res.output


def test_refined_hrn_runs_are_their_own_configuration(
    model_path, tmp_path, monkeypatch, one_thread
):
    """--refine-steps: the refined run's meshes differ, its method.json says so, a refined run
    into the plain run's folder is refused, and with --label both are ranked side by side."""
    pytest.importorskip("mediapipe")
    import json

    from models.bench import ENV_FIT_DEFORMATION_START, ENV_FIT_ITERATIONS, ENV_REFINE_STEPS

    root = make_synthetic_benchmark("now", tmp_path / "now", seed=0, n_subjects=1)
    monkeypatch.setenv(ENV_REFINE_STEPS, "0")  # restored after the test (the CLI sets it)
    monkeypatch.setenv(ENV_PRECISION, "float32")
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "now", "--method", "hrn", "--root", str(root)]
    args += ["--out", str(out), "--checkpoint", str(model_path)]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    refused = CliRunner().invoke(app, [*args, "--refine-steps", "2"])
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "refine None ->" in said and "--label" in said, said
    res = CliRunner().invoke(app, [*args, "--refine-steps", "2", "--label", "hrn-refined"])
    assert res.exit_code == 0, res.output
    folder = out / "now-validation"
    made = json.loads((folder / "hrn-refined" / "predictions" / "method.json").read_text())
    assert made["describe"]["refine"] == {
        "steps": 2,
        "lr": 0.01,
        "start": "mean",
        "multiview": "shared",
    }
    assert "refine" not in json.loads((folder / "hrn" / "predictions" / "method.json").read_text())
    a = sorted((folder / "hrn" / "predictions").rglob("*.obj"))
    b = sorted((folder / "hrn-refined" / "predictions").rglob("*.obj"))
    assert [p.relative_to(folder / "hrn") for p in a] == [
        p.relative_to(folder / "hrn-refined") for p in b
    ]
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(a, b, strict=True))
    # each image then fitted alone: another configuration again, its meshes the fitted ones
    monkeypatch.setenv(ENV_FIT_ITERATIONS, "0")
    res = CliRunner().invoke(
        app, [*args, "--refine-steps", "0", "--fit-iterations", "2", "--label", "hrn-fitted"]
    )
    assert res.exit_code == 0, res.output
    made = json.loads((folder / "hrn-fitted" / "predictions" / "method.json").read_text())
    assert "refine" not in made["describe"]
    assert made["describe"]["fit"]["iterations"] == 2
    assert made["describe"]["fit"]["images"] == "single"
    c = sorted((folder / "hrn-fitted" / "predictions").rglob("*.obj"))
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(a, c, strict=True))
    with open(out / "leaderboard.csv", newline="") as fh:
        rows = {r["method"] for r in csv.DictReader(fh) if r["dataset"] == "now"}
    assert {"hrn", "hrn-refined", "hrn-fitted"} <= rows
    for option in ("--refine-steps", "--fit-iterations"):
        res = CliRunner().invoke(
            app, ["bench", "--dataset", "now", "--method", "mine", "--root", str(root),
                  "--predictions", str(tmp_path), option, "2"],
        )  # fmt: skip
        assert res.exit_code == 2 and f"{option} applies" in res.output
        assert "not to --predictions" in res.output
    monkeypatch.setenv(ENV_CHECKPOINT, str(model_path))
    # where the fit's deformation starts is part of the configuration
    monkeypatch.setenv(ENV_FIT_ITERATIONS, "2")
    monkeypatch.setenv(ENV_FIT_DEFORMATION_START, "zero")
    fit = make_method().describe()["fit"]
    assert fit["deformation_start"] == "zero" and fit["tv_deformation"] == 5e3
    for settings, match in (
        ({ENV_FIT_DEFORMATION_START: "mean"}, "FIT_DEFORMATION_START.*one of network, zero"),
        ({ENV_FIT_ITERATIONS: "0", ENV_FIT_DEFORMATION_START: "zero"}, "without a per-image fit"),
        ({ENV_FIT_DEFORMATION_START: "", ENV_FIT_ITERATIONS: "-1"}, "ITERATIONS must be >= 0"),
        ({ENV_FIT_ITERATIONS: "0", ENV_REFINE_STEPS: "many"}, "whole number"),
    ):
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=match):
            make_method()
    res = CliRunner().invoke(app, [*args, "--fit-deformation-start", "zero"])
    assert res.exit_code == 2 and "give --fit-iterations" in " ".join(res.output.split())

"""The train / reconstruct / evaluate commands: argument handling and a tiny end-to-end run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from hrn_testdata import tiny_config
from typer.testing import CliRunner

from facehd.cli import app
from facehd.mesh import load_mesh
from models.config import save_config

runner = CliRunner()


def test_print_config_and_bad_config(tmp_path):
    res = runner.invoke(app, ["train", "--print-config"])  # no run folder needed to print
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert cfg["morphable"]["name"] == "facehd-synth" and "hrn" in cfg
    res = runner.invoke(app, ["train", "--photos", str(tmp_path / "p.h5")])
    assert res.exit_code == 2 and "--out" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nmodel:\n  networkk: {}\n")
    res = runner.invoke(app, ["train", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "networkk" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--stage", "detail"])
    assert res.exit_code == 2 and "unknown stage" in res.output
    weights = tmp_path / "backbone.pth"
    args = ["train", "--out", str(tmp_path / "r"), "--identity-network", str(weights)]
    res = runner.invoke(app, [*args, "--print-config"])
    assert res.exit_code == 0 and yaml.safe_load(res.output)["identity_network"] == str(weights)
    res = runner.invoke(app, args)  # the file does not exist: named, nothing trained
    assert res.exit_code == 2 and "backbone.pth" in res.output and "not found" in res.output
    assert not (tmp_path / "r" / "model.pt").exists()
    # --set: one setting of the resolved config changed, a key it lacks named
    res = runner.invoke(
        app, ["train", "--set", "model.hrn_losses.adversarial=0.2", "--print-config"]
    )
    assert res.exit_code == 0, res.output
    changed = yaml.safe_load(res.output)
    assert changed["model"]["hrn_losses"]["adversarial"] == 0.2
    default = yaml.safe_load(runner.invoke(app, ["train", "--print-config"]).output)
    assert default["model"]["hrn_losses"]["adversarial"] == 0.0  # tiny-cpu
    default["model"]["hrn_losses"]["adversarial"] = 0.2
    assert changed == default
    res = runner.invoke(app, ["train", "--set", "hrn.stepz=3", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "stepz" in res.output and "steps" in res.output
    assert not (tmp_path / "r").exists()


def test_resume_without_a_run_is_refused(hrn_data, tmp_path):
    # a mistyped --out: not a new run on the default preset, but named; nothing is made
    for out in (tmp_path / "runs" / "tinny", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        args = ["train", "--resume", "--out", str(out), "--photos", str(hrn_data.photos)]
        res = runner.invoke(app, [*args, "--priors", str(hrn_data.priors)])
        assert res.exit_code == 2, res.output
        assert str(out) in res.output and "no training run to resume" in res.output
        if out.exists():
            assert list(out.iterdir()) == []
    assert not (tmp_path / "runs").exists()


def test_under_torchrun_the_first_process_speaks_for_the_run(hrn_data, tmp_path, one_thread):
    cfg = tiny_config()
    cfg.base.steps = 1
    path = save_config(tmp_path / "cfg.yaml", cfg)
    args = ["train", "--config", str(path), "--photos", str(hrn_data.photos), "--stage", "base"]
    # another process (RANK 1) trains without a progress bar or table of its own ...
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a")], env={"RANK": "1"})
    assert res.exit_code == 0 and res.output == "", res.output
    assert (tmp_path / "a" / "model.pt").is_file()
    # ... and leaves saying what went wrong to the first (its exit status still says so)
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a")], env={"RANK": "1"})
    assert res.exit_code == 2 and res.output == "", res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a")], env={"RANK": "0"})
    assert res.exit_code == 2 and "already holds a training run" in res.output


def test_train_reconstruct_evaluate(hrn_data, one_scan, tmp_path, one_thread):
    cfg = tiny_config()
    cfg.base.steps, cfg.deretouch.steps, cfg.hrn.steps = 1, 1, 2
    cfg.threads = 1
    path = save_config(tmp_path / "cfg.yaml", cfg)
    run = tmp_path / "run"
    args = ["train", "--config", str(path), "--out", str(run), "--photos", str(hrn_data.photos)]
    res = runner.invoke(app, [*args, "--priors", str(hrn_data.priors)])
    assert res.exit_code == 0, res.output
    assert (run / "model.pt").is_file() and "stages done: base, deretouch, hrn" in res.output
    # a second start on the same folder is refused; --resume finds everything done
    res = runner.invoke(app, [*args, "--priors", str(hrn_data.priors)])
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(app, [*args, "--priors", str(hrn_data.priors), "--resume"])
    assert res.exit_code == 0, res.output
    # without --config a resume takes the run's own (the tiny-cpu preset would differ from it)
    own = ["train", "--out", str(run), "--photos", str(hrn_data.photos)]
    res = runner.invoke(app, [*own, "--priors", str(hrn_data.priors), "--resume"])
    assert res.exit_code == 0 and "stages done" in res.output, res.output
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(hrn_data.scans),
              "--views", "1", "--out", str(tmp_path / "eval.csv")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "M2" in res.output and (tmp_path / "eval.csv").is_file()
    # the mean face's row, and the note exactly when M0 is further off on average
    with open(tmp_path / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    floor = np.mean([float(r["dist_mean_face"]) for r in rows])
    m0 = np.mean([float(r["dist_m0"]) for r in rows])
    assert "mean face" in res.output and 0 < floor < 20
    assert ("has not learnt the faces' identity" in res.output) == (m0 > floor)
    # the table's FaceScape columns: the CSV's means
    for level, name in (("m2", "M2"), ("mean_face", "mean face")):
        cells = next(
            [c.strip() for c in line.split("│")[1:-1]]
            for line in res.output.splitlines()
            if line.split("│")[1:2] and line.split("│")[1].strip() == name
        )
        cd = np.mean([float(r[f"cd_fs_{level}"]) for r in rows])
        mne = np.mean([float(r[f"mne_fs_{level}"]) for r in rows])
        assert cells[3:5] == [f"{cd:.3f}", f"{mne:.4f}"] and 0 < cd < 20 and 0 < mne < 1
        if level == "mean_face":  # no pose to place it by
            assert cells[5:] == ["–", "–"]
        else:  # placed by the photo's camera and slid in depth
            cd = np.mean([float(r[f"cd_cam_{level}"]) for r in rows])
            mne = np.mean([float(r[f"mne_cam_{level}"]) for r in rows])
            assert cells[5:] == [f"{cd:.3f}", f"{mne:.4f}"] and 0 < cd < 50 and 0 < mne < 1
    # the per-photo counts, against the CSV's rows
    n = len(rows)
    nearer = sum(float(r["dist_m1"]) < float(r["dist_m0"]) for r in rows)
    better = sum(float(r["normal_m2"]) < float(r["normal_m1"]) for r in rows)
    seen = sum(float(r["normal_seen_m2"]) < float(r["normal_seen_m1"]) for r in rows)
    fs = sum(float(r["mne_fs_m2"]) < float(r["mne_fs_m1"]) for r in rows)
    cam = sum(float(r["mne_cam_m2"]) < float(r["mne_cam_m1"]) for r in rows)
    assert (
        f"per photo: M1 nearer the truth than M0 on {nearer} of {n}; M2's normals better than "
        f"M1's on {better} of {n} by closest points, on {seen} of {n} at the skin point each "
        f"texel shows, on {fs} of {n} by FaceScape's MNE, on {cam} of {n} by FaceScape's MNE "
        f"placed"
    ) in " ".join(res.output.split()), res.output
    # base coefficients refined per photo: same photos and points, another M0 (the options
    # below are scored on the first scan alone)
    from models.evaluate import heldout_ids

    (first_id,) = heldout_ids(one_scan)
    first = [r for r in rows if r["sample_id"] == first_id]
    assert len(first) == 1
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(one_scan),
              "--views", "1", "--out", str(tmp_path / "eval-refined.csv"), "--refine-steps", "3",
              "--no-facescape"],
    )  # fmt: skip
    said = " ".join(res.output.split())  # the title may wrap
    assert res.exit_code == 0 and "refined per photo (3 + 3 steps)" in said, res.output
    # without FaceScape's scores: neither their columns in the table nor the counts by them
    assert "not scored: --no-facescape" in said and "CD mm" not in said, said
    assert "FaceScape's MNE" not in said, said
    with open(tmp_path / "eval-refined.csv", newline="") as f:
        refined = list(csv.DictReader(f))
    assert [r["sample_id"] for r in refined] == [r["sample_id"] for r in first]
    assert all(a["dist_m0"] != b["dist_m0"] for a, b in zip(refined, first, strict=True))
    # then each photo fitted alone on MV-HRN's objective: with no iterations, the refined scores;
    # with some, M1 moves
    for n in ("0", "2"):
        res = runner.invoke(
            app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(one_scan),
                  "--views", "1", "--out", str(tmp_path / f"eval-fit{n}.csv"),
                  "--refine-steps", "3", "--fit-iterations", n, "--no-facescape"],
        )  # fmt: skip
        said = " ".join(res.output.split())
        assert res.exit_code == 0, res.output
        assert (f"fitted alone on MV-HRN's objective ({n} iterations)" in said) == (n != "0")
        with open(tmp_path / f"eval-fit{n}.csv", newline="") as f:
            fit_rows = list(csv.DictReader(f))
        for a, b in zip(fit_rows, refined, strict=True):
            if n == "0":
                assert float(a["dist_m1"]) == pytest.approx(float(b["dist_m1"]), abs=1e-4)
            else:
                assert abs(float(a["dist_m1"]) - float(b["dist_m1"])) > 1e-4
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(hrn_data.scans),
              "--multiview", "--fit-iterations", "2"],
    )  # fmt: skip
    assert res.exit_code == 2 and "--multiview fits the views with --iterations" in res.output
    # sets of views start from each view's refined coefficients (test_multiview.py checks how)
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(one_scan),
              "--multiview", "--iterations", "0", "--refine-steps", "3", "--no-facescape",
              "--out", str(tmp_path / "eval-mv-refined.csv")],
    )  # fmt: skip
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "refined first, one identity (3 + 3 steps)" in said, res.output
    assert "FaceScape's CD and MNE: not scored (--no-facescape)" in said and "CD mm" not in said
    with open(tmp_path / "eval-mv-refined.csv", newline="") as f:
        refined_rows = list(csv.DictReader(f))
    assert {r["variant"] for r in refined_rows} == {"single", "naive", "mv-hrn"}
    # the joint fit from a zero deformation map: before any iteration its M1 is its M0, while
    # the naive baseline is still the views' averaged map
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(one_scan),
              "--multiview", "--iterations", "0", "--refine-steps", "3",
              "--fit-deformation-start", "zero", "--out", str(tmp_path / "eval-mv-zero.csv"),
              "--no-facescape"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with open(tmp_path / "eval-mv-zero.csv", newline="") as f:
        zero_rows = list(csv.DictReader(f))
    assert len(zero_rows) == len(refined_rows)
    for z, r in zip(zero_rows, refined_rows, strict=True):
        assert z["variant"] == r["variant"]
        if z["variant"] == "mv-hrn":
            assert float(z["dist_m1"]) == pytest.approx(float(z["dist_m0"]), rel=1e-9)
            assert float(r["dist_m1"]) != pytest.approx(float(r["dist_m0"]), rel=1e-6)
        else:
            assert float(z["dist_m1"]) == pytest.approx(float(r["dist_m1"]), abs=1e-6)
    # the same in bfloat16: the coarse level is float32's (to summation order), the others close
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(one_scan),
              "--views", "1", "--out", str(tmp_path / "eval-bf16.csv"), "--precision", "bfloat16",
              "--no-facescape"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with open(tmp_path / "eval-bf16.csv") as b:
        rows16 = list(csv.DictReader(b))
    assert [r["sample_id"] for r in first] == [r["sample_id"] for r in rows16]
    fs_columns = [k for k in rows16[0] if k.startswith(("cd_", "mne_"))]
    assert len(fs_columns) == 16
    for r32, r16 in zip(first, rows16, strict=True):
        assert abs(float(r32["dist_m0"]) - float(r16["dist_m0"])) < 1e-9
        assert abs(float(r32["dist_m2"]) - float(r16["dist_m2"])) < 0.05
        # scored with FaceScape's CD and MNE in the first run, left out (empty) with --no-facescape
        assert all(r32[k] and not r16[k] for k in fs_columns), (r32, r16)
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(hrn_data.scans),
              "--precision", "half"],
    )  # fmt: skip
    assert res.exit_code == 2 and "--precision must be" in res.output
    # a held-out scan whose photos file is damaged is named; the others are scored (exit 1)
    import shutil

    held = tmp_path / "held"
    shutil.copytree(hrn_data.scans, held)
    damaged = held / "s001_e00.photos.npz"
    damaged.write_bytes(damaged.read_bytes()[:300])
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(held),
              "--views", "1", "--out", str(tmp_path / "eval-held.csv"), "--no-facescape"],
    )  # fmt: skip
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and f"not scored, unreadable: {damaged}" in said, res.output
    with open(tmp_path / "eval-held.csv", newline="") as fh:
        assert [r["sample_id"] for r in csv.DictReader(fh)] == ["s000_e00"]
    assert "1 photos" in said
    # --out a folder, or a path under a file: named before anything is scored
    for bad, problem in ((tmp_path, "is a folder"), (tmp_path / "eval.csv" / "x.csv", "is a file")):
        res = runner.invoke(
            app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans",
                  str(hrn_data.scans), "--out", str(bad)],
        )  # fmt: skip
        assert res.exit_code == 2 and problem in res.output and "M2" not in res.output
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(run / "model.pt"), "--scans", str(tmp_path / "no")]
    )
    assert res.exit_code == 2 and "does not exist" in res.output
    assert "has not trained the detail stage" not in res.output
    # a model of the base stage alone: its M1 and M2 are said to be untrained
    args = ["train", "--config", str(path), "--out", str(tmp_path / "base"), "--stage", "base"]
    res = runner.invoke(app, [*args, "--photos", str(hrn_data.photos)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["evaluate", "--checkpoint", str(tmp_path / "base" / "model.pt"), "--scans",
              str(one_scan), "--views", "1", "--no-facescape"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "has not trained the detail stage (stages base)" in " ".join(res.output.split())
    # reconstruct says so too, and of a stage checkpoint: base.pt, done, is the base stage
    photo0 = str(hrn_data.scans / "photos" / "s000_e00_v00.png")
    for ckpt in (tmp_path / "base" / "model.pt", tmp_path / "base" / "checkpoints" / "base.pt"):
        res = runner.invoke(
            app, ["reconstruct", photo0, "--checkpoint", str(ckpt), "--out", str(tmp_path / "r")]
        )
        assert res.exit_code == 0, res.output
        assert "has not trained the detail stage (stages base)" in " ".join(res.output.split())
    res = runner.invoke(
        app, ["reconstruct", str(tmp_path / "nope.jpg"), "--checkpoint", str(run / "model.pt")]
    )
    assert res.exit_code == 2 and "no such photo" in res.output
    photo = str(hrn_data.scans / "photos" / "s000_e00_v00.png")
    # a damaged checkpoint is said alone: no progress bar of photos that will not be made
    cut = tmp_path / "cut.pt"
    cut.write_bytes((run / "model.pt").read_bytes()[:5000])
    for extra in ([], ["--multiview"]):
        res = runner.invoke(
            app, ["reconstruct", photo, "--checkpoint", str(cut), "--out", str(tmp_path / "rc"),
                  *extra],
        )  # fmt: skip
        said = " ".join(res.output.split())
        assert res.exit_code == 2 and "cut.pt: not a readable PyTorch checkpoint" in said, said
        assert "photos" not in said and "MV-HRN fit" not in said, said
    res = runner.invoke(
        app, ["reconstruct", photo, "--checkpoint", str(run / "model.pt"), "--landmarks", "mesh"]
    )
    assert res.exit_code == 2 and "--landmarks must be auto, detect or given" in res.output
    res = runner.invoke(
        app, ["reconstruct", photo, "--checkpoint", str(run / "model.pt"), "--precision", "fp16"]
    )
    assert res.exit_code == 2 and "--precision must be float32 or bfloat16" in res.output
    # bfloat16: the run's json says so; M0 is the float32 run's, the maps within its rounding
    outs = {}
    for precision in ("float32", "bfloat16"):
        folder = tmp_path / f"r-{precision}"
        res = runner.invoke(
            app, ["reconstruct", photo, "--checkpoint", str(run / "model.pt"), "--out",
                  str(folder), "--precision", precision],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        rec = folder / "s000_e00_v00"
        meta = json.loads((rec / "reconstruction.json").read_text())
        assert meta["precision"] == precision
        outs[precision] = (
            load_mesh(rec / "coarse.obj").vertices,
            np.load(rec / "displacement.npy"),
            np.load(rec / "deformation.npy"),
        )
    (m0_a, disp_a, def_a), (m0_b, disp_b, def_b) = outs["float32"], outs["bfloat16"]
    np.testing.assert_array_equal(m0_a, m0_b)
    for a, b in ((disp_a, disp_b), (def_a, def_b)):
        scale = float(np.abs(a).max())
        assert scale > 0 and not np.array_equal(a, b)  # it did run in another precision
        assert float(np.abs(a - b).max()) < 0.1 * scale


def test_ablation_names_a_missing_identity_network_before_training(hrn_data, tmp_path):
    out = tmp_path / "abl"
    weights = tmp_path / "backbone.pth"
    args = ["ablation", "--out", str(out), "--photos", str(hrn_data.photos)]
    args += ["--priors", str(hrn_data.priors), "--heldout", str(hrn_data.scans)]
    res = runner.invoke(app, [*args, "--identity-network", str(weights)])
    assert res.exit_code == 2 and "backbone.pth" in res.output and "not found" in res.output
    assert not (out / "ablation.csv").exists()
    assert not list(out.rglob("model.pt"))


def test_refused_ablation_and_training_runs_create_no_folder(hrn_data, tmp_path):
    """Bad inputs to an ablation (a held-out folder that is not there, a priors file that is
    photos, a detail stage of 0 or -1 steps) are refused naming the problem, and leave no --out
    folder (nor the folders above it they would have made); a folder that was there stays.
    facehd train refuses a foreign priors or pairs file before its run folder is made."""
    new = tmp_path / "new"
    out = new / "abl"
    base = ["ablation", "--out", str(out), "--photos", str(hrn_data.photos)]
    good = ["--priors", str(hrn_data.priors), "--heldout", str(hrn_data.scans)]
    cases = (
        (["--priors", str(hrn_data.priors), "--heldout", str(tmp_path / "no")], "does not exist"),
        (["--priors", str(hrn_data.photos), "--heldout", str(hrn_data.scans)], "priors dataset"),
        ([*good, "--steps", "0"], "must be at least 1, got 0"),
        ([*good, "--steps", "-1"], "must be at least 1, got -1"),
        ([*good, "--set", "hrn.steps=0"], "must be at least 1, got 0"),  # --set is taken
        ([*good, "--set", "hrn_options.refine_step=3"], "refine_step"),
    )
    for extra, problem in cases:
        res = runner.invoke(app, [*base, *extra])
        said = " ".join(res.output.split())
        assert res.exit_code == 2 and problem in said, (extra, res.output)
        assert not new.exists(), extra
    out.mkdir(parents=True)  # the user's own folder: refused into, kept
    (out / "notes.txt").write_text("mine")
    for extra, _ in cases[1:3]:
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 2 and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    run = tmp_path / "run"
    for extra in (
        ["--priors", str(hrn_data.photos)],
        ["--pairs", str(hrn_data.photos), "--stage", "deretouch"],
    ):
        res = runner.invoke(app, ["train", "--out", str(run), "--photos", str(hrn_data.photos),
                                  *extra, "--steps", "1"])  # fmt: skip
        assert res.exit_code == 2 and str(hrn_data.photos) in res.output, res.output
        assert not run.exists(), extra
    # an --init that is no checkpoint: refused before the run folder (which would record it in
    # init.json) is made, so the same command with the right file starts afresh
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"no checkpoint " * 20)
    args = ["train", "--out", str(run), "--photos", str(hrn_data.photos), "--stage", "base"]
    res = runner.invoke(app, [*args, "--init", str(bad), "--steps", "1"])
    assert res.exit_code == 2 and "not a readable PyTorch checkpoint" in res.output, res.output
    assert not run.exists()


def test_an_interrupt_outside_a_training_step_is_said(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, raised as it) where no step is running to be saved: at a run's
    start-up, a second Ctrl-C, inside reconstruct, evaluate or an ablation's scoring. Each
    command says what is kept and exits 130, instead of ending silently."""
    import models.ablation
    import models.evaluate
    import models.reconstruct
    import models.train

    def stop(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models.train, "train", stop)
    monkeypatch.setattr(models.reconstruct, "reconstruct_photos", stop)
    monkeypatch.setattr(models.reconstruct.Reconstructor, "load", stop)
    monkeypatch.setattr(models.ablation, "run_ablation", stop)
    photo = tmp_path / "face.png"
    photo.write_bytes(b"")
    out = str(tmp_path / "o")
    ckpt = str(tmp_path / "model.pt")
    commands = {
        "train": ["train", "--out", out, "--photos", str(photo)],
        "reconstruct": ["reconstruct", str(photo), "--checkpoint", ckpt, "--out", out],
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--scans", str(tmp_path)],
        "ablation": [
            "ablation",
            "--out",
            out,
            "--photos",
            str(photo),
            "--priors",
            str(photo),
            "--heldout",
            str(tmp_path),
        ],
    }
    said = {
        "train": "--resume continues",
        "reconstruct": "listed in photos.csv",
        "evaluate": "nothing was written",
        "ablation": "run the same command again to resume",
    }
    for name, args in commands.items():
        res = runner.invoke(app, args)
        assert res.exit_code == 130, (name, res.output, res.exception)
        assert "interrupted:" in res.output and said[name] in res.output, (name, res.output)

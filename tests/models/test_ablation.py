"""The ablation (paper Table 3): every row trained and measured, the table written, resumable."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hrn_testdata import tiny_config

from facehd.h5io import file_sha256
from models.ablation import ABLATION_ROWS, run_ablation
from models.evaluate import heldout_ids
from models.train import load_train_config


def test_ablation_rows_are_trained_measured_and_resumed(hrn_data, one_scan, tmp_path, one_thread):
    cfg = tiny_config()
    cfg.base.steps, cfg.deretouch.steps, cfg.hrn.steps = 2, 1, 2
    cfg.hrn_options.scale_warmup, cfg.hrn_options.discriminator_lr = 0.25, 3e-4
    out = tmp_path / "abl"
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "heldout": one_scan}
    # a held-out folder without its truth is refused before anything trains
    from facehd.errors import InputFileError

    for heldout, problem in ((tmp_path / "nothere", "does not exist"), (tmp_path, "photos.npz")):
        with pytest.raises(InputFileError, match=problem):
            run_ablation(cfg, out, views=1, log=lambda _: None, **{**kw, "heldout": heldout})
    assert not (out / "shared" / "checkpoints").exists()
    rows = run_ablation(cfg, out, views=1, log=lambda _: None, **kw)
    assert [r.row for r in rows] == [name for name, _, _ in ABLATION_ROWS]
    # the switches of each row, as in the paper's table
    assert [(r.hierarchy, r.contour, r.priors, r.deretouch) for r in rows] == [
        (False, False, False, False),
        (True, False, False, False),
        (True, True, False, False),
        (True, True, True, False),
        (True, True, True, True),
    ]
    # each row sets its switches and keeps the config's other detail-stage options
    for _, slug, opts in ABLATION_ROWS[1:]:
        saved = load_train_config(out / slug / "config.yaml").hrn_options
        assert (saved.contour, saved.priors, saved.deretouch) == (
            opts.contour,
            opts.priors,
            opts.deretouch,
        )
        assert saved.scale_warmup == 0.25 and saved.discriminator_lr == 3e-4
    for r in rows:
        assert math.isfinite(r.cd_mm) and r.cd_mm > 0 and math.isfinite(r.mne_rad)
        assert -1.0 <= r.disp_pearson <= 1.0 and r.normal_uv_m2 > 0
        assert -1.0 <= r.disp_pearson_seen <= 1.0 and r.normal_seen_m2 > 0
    # the base row scores M0, the others their M2, by FaceScape's protocol (the paper's Table 3);
    # every HRN row shares the base model's M0
    assert (rows[0].cd_mm, rows[0].mne_rad) == (rows[0].cd_fs_m0, rows[0].mne_fs_m0)
    assert all((r.cd_mm, r.mne_rad) == (r.cd_fs_m2, r.mne_fs_m2) for r in rows[1:])
    assert all(r.dist_m0 == pytest.approx(rows[0].dist_m0, rel=1e-9) for r in rows[1:])
    assert all(r.cd_fs_m0 == pytest.approx(rows[0].cd_fs_m0, rel=1e-9) for r in rows[1:])
    with open(out / "ablation.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [t["row"] for t in table] == [r.row for r in rows]
    # each row's per-photo counts, against its own per-photo CSV
    for (_, slug, _), t in zip(ABLATION_ROWS, table, strict=True):
        with open(out / f"eval_{slug}.csv") as fh:
            per = list(csv.DictReader(fh))
        nearer = sum(float(p["dist_m1"]) < float(p["dist_m0"]) for p in per)
        better = sum(float(p["normal_m2"]) < float(p["normal_m1"]) for p in per)
        fs = sum(float(p["mne_fs_m2"]) < float(p["mne_fs_m1"]) for p in per)
        cam = sum(float(p["mne_cam_m2"]) < float(p["mne_cam_m1"]) for p in per)
        assert (int(t["m1_nearer"]), int(t["m2_normals_better"])) == (nearer, better)
        assert (int(t["m2_mne_fs_better"]), int(t["m2_mne_cam_better"])) == (fs, cam)
        assert int(t["seen_photos"]) == len(per) == int(t["photos"])
    md = (out / "ablation.md").read_text().splitlines()
    assert len(md) == 3 + len(rows) and md[3].startswith("| base |")
    # each row's ticks under its switches, as the paper's table marks them
    head = [c.strip() for c in md[0].split("|")]
    switches = [head.index(c) for c in ("base", "HRM", "L_con", "detail priors", "DRM")]
    ticks = [[[c.strip() for c in line.split("|")][k] == "✓" for k in switches] for line in md[3:]]
    assert ticks == [[True, r.hierarchy, r.contour, r.priors, r.deretouch] for r in rows]
    # the mean face's reference row: the floor, as the base row's evaluation scored it, under
    # the same columns as the rows' CD and MNE and their closest-point distance and normal error
    floor = [c.strip() for c in md[2].split("|")]
    assert md[2].startswith("| mean face") and len(floor) == len(head)
    assert floor[head.index("CD (mm)")] == f"{rows[0].cd_fs_mean_face:.3f}"
    assert floor[head.index("MNE (rad)")] == f"{rows[0].mne_fs_mean_face:.4f}"
    at = head.index("M0 / M1 / M2 dist, closest points (mm)")
    assert floor[at : at + 2] == [
        f"{rows[0].dist_mean_face:.3f}",
        f"{rows[0].normal_mean_face:.4f}",
    ]
    base = [c.strip() for c in md[3].split("|")]
    assert base[head.index("CD (mm)")] == f"{rows[0].cd_mm:.3f}"
    # the base row's model has untrained detail networks: its M1, M2 and detail scores are left
    # out of the table (kept in the CSV); the HRN rows show every level
    at = head.index("M0 / M1 / M2 CD (mm)")
    assert base[at] == f"{rows[0].cd_fs_m0:.3f} / – / –"
    assert base[head.index("displacement r")] == "–"
    last = [c.strip() for c in md[-1].split("|")]
    assert last[at] == " / ".join(f"{getattr(rows[-1], f'cd_fs_m{k}'):.3f}" for k in range(3))
    # the levels placed as FaceScape's protocol places a prediction; the mean face has no camera
    placed = head.index("M0 / M1 / M2 placed MNE (rad)")
    assert base[placed] == f"{rows[0].mne_cam_m0:.4f} / – / –" and floor[placed] == ""
    assert last[placed] == " / ".join(f"{getattr(rows[-1], f'mne_cam_m{k}'):.4f}" for k in range(3))
    assert last[placed - 1] == " / ".join(
        f"{getattr(rows[-1], f'cd_cam_m{k}'):.3f}" for k in range(3)
    )
    assert all(len(line.split("|")) == len(head) for line in md)
    assert last[head.index("displacement r")] == f"{rows[-1].disp_pearson:.3f}"
    assert all(0 < r.dist_mean_face < 20 and 0 < r.normal_mean_face < 1 for r in rows)
    # a second run retrains nothing: the trained rows are kept, the scores are the same, and
    # each row keeps the training time it took (not the 0 s of this run)
    said: list[str] = []
    again = run_ablation(cfg, out, views=1, log=said.append, **kw)
    # nothing trained or scored: each row's scores are kept, made from the same model and photos
    kept = "scores kept (eval_{}.csv: the same model and photos)"
    assert said == [f"ablation row {n}: {kept.format(slug)}" for n, slug, _ in ABLATION_ROWS]
    assert all(r.train_seconds > 0.0 for r in rows)
    assert [r.train_seconds for r in again] == [r.train_seconds for r in rows]
    assert [r.cd_mm for r in again] == pytest.approx([r.cd_mm for r in rows], rel=1e-9)
    # a time the table holds that is no number (the file edited by hand) is not known: that
    # row's is 0 s (nothing trained now), the others' are kept
    with open(out / "ablation.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    table[2]["train_seconds"] = "n/a"
    with open(out / "ablation.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    third = run_ablation(cfg, out, views=1, log=lambda _: None, **kw)
    assert [r.train_seconds for r in third] == [
        0.0 if k == 2 else r.train_seconds for k, r in enumerate(rows)
    ]
    # a row is scored again when its record names another model file, or is gone, or its CSV
    # was edited; to the same numbers
    record = json.loads((out / "eval_contour.json").read_text())
    assert record["model_sha256"] == file_sha256(out / "contour" / "model.pt")
    (scan,) = heldout_ids(one_scan)  # its truth and photos files, not the folder's synth.json
    assert sorted(record["heldout"]) == sorted(p.name for p in one_scan.glob(f"{scan}.*"))
    assert len(record["heldout"]) >= 4
    (out / "eval_contour.json").write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    (out / "eval_priors.json").unlink()
    edited = out / "eval_base.csv"
    edited.write_text(edited.read_text().replace("sample_id", "sample", 1))
    said = []
    fourth = run_ablation(cfg, out, views=1, log=said.append, **kw)
    assert [s.split(": ", 1)[1].split(" ")[0] for s in said] == [
        "scoring", "scores", "scoring", "scoring", "scores"
    ]  # fmt: skip
    assert json.loads((out / "eval_contour.json").read_text()) == record
    for a, b in zip(rows, fourth, strict=True):
        assert (b.cd_mm, b.dist_m0, b.dist_m2) == pytest.approx(
            (a.cd_mm, a.dist_m0, a.dist_m2), rel=1e-9
        )
    # finished rows are reused only on the data they were trained on
    import shutil

    from hrn_testdata import write_truth_priors

    from facehd.errors import FacehdError

    fewer = tmp_path / "fewer"  # the priors of all scans but the first
    fewer.mkdir()
    for gt in sorted(Path(hrn_data.scans).glob("*.gt.npz"))[1:]:
        for f in Path(hrn_data.scans).glob(gt.name[: -len(".gt.npz")] + ".*"):
            shutil.copy(f, fewer / f.name)
    other = write_truth_priors(fewer, tmp_path / "other.h5")
    kw_other = {**kw, "priors": other}
    with pytest.raises(FacehdError, match=r"shared: the run was trained on other priors"):
        run_ablation(cfg, out, views=1, log=lambda _: None, **kw_other)
    # a finished row trained on other data than the shared stages (its record says so)
    slug = ABLATION_ROWS[1][1]
    record = json.loads((out / slug / "data.json").read_text())
    record["priors"]["sha256"] = record["priors"]["content_sha256"] = "0" * 64
    (out / slug / "data.json").write_text(json.dumps(record))
    with pytest.raises(FacehdError, match=rf"{slug}: the run was trained on other priors"):
        run_ablation(cfg, out, views=1, log=lambda _: None, **kw)


def test_an_ablation_on_refined_faces_refines_once_and_scores_refined(
    hrn_data, one_scan, tmp_path, one_thread
):
    """With hrn_options.refine_steps the first row that trains refines the training photos, the
    later rows take its faces (only the lab photos are refined again, by the first row with the
    priors), and every row is scored on refined held-out faces, as evaluate --refine-steps."""
    from models.evaluate import evaluate_synthetic
    from models.reconstruct import Reconstructor
    from models.refine import RefineConfig

    cfg = tiny_config()
    cfg.base.steps, cfg.deretouch.steps, cfg.hrn.steps = 2, 1, 2
    cfg.hrn_options.refine_steps = 2
    out = tmp_path / "abl"
    said: list[str] = []
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "heldout": one_scan}
    rows = run_ablation(cfg, out, views=1, log=said.append, **kw)
    assert any("scored on refined faces" in s for s in said)
    logs = {slug: (out / slug / "train.log").read_text() for _, slug, o in ABLATION_ROWS if o}
    assert [slug for slug, t in logs.items() if "of 4 photos" in t] == ["hierarchy"]
    assert [slug for slug, t in logs.items() if "of 4 lab photos" in t] == ["priors"]
    refine = RefineConfig(steps=2)
    for k, ((_, slug, _), row) in enumerate(zip(ABLATION_ROWS, rows, strict=True)):
        model = out / ("shared" if slug == "base" else slug) / "model.pt"
        last = k == len(rows) - 1  # FaceScape's scores too (the slow part) for the last row
        _, s = evaluate_synthetic(
            Reconstructor.load(model), one_scan, views=1, refine=refine, facescape=last
        )
        assert (row.dist_m0, row.dist_m2) == pytest.approx((s.dist_m0, s.dist_m2), rel=1e-6)
        if last:
            assert row.mne_fs_m2 == pytest.approx(s.mne_fs_m2, rel=1e-6), slug


def test_an_ablation_stopped_before_it_wrote_a_file_leaves_no_folder(
    hrn_data, one_scan, tmp_path, monkeypatch
):
    """Ctrl-C (or an error) before the first file is written: the folders the run made are
    removed, deepest first, the folders above --out it made too; a folder holding a file
    stays, with its file."""
    import models.ablation

    def stop_after(file: bool):  # noqa: ANN202
        def stop(config, out, *args):  # noqa: ANN001, ANN202
            for sub in ("shared/checkpoints", "hierarchy/refined/photos", "contour"):
                (out / sub).mkdir(parents=True)
            if file:
                (out / "hierarchy" / "refined" / "photos" / "0.npz").write_bytes(b"kept")
            raise KeyboardInterrupt

        return stop

    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "heldout": one_scan}
    new = tmp_path / "new"
    for file in (False, True):
        monkeypatch.setattr(models.ablation, "_run_rows", stop_after(file))
        with pytest.raises(KeyboardInterrupt):
            run_ablation(tiny_config(), new / "abl", views=1, log=lambda _: None, **kw)
        assert new.exists() == file
    left = sorted(p.relative_to(tmp_path).as_posix() for p in new.rglob("*"))
    assert left == [
        "new/abl",
        "new/abl/hierarchy",
        "new/abl/hierarchy/refined",
        "new/abl/hierarchy/refined/photos",
        "new/abl/hierarchy/refined/photos/0.npz",
    ]

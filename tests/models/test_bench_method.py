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
from models.bench import ENV_CHECKPOINT, HRNMethod, make_method


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

    # the CLI: --checkpoint; a rerun keeps finished predictions and retries the failure only
    stamps = {p: p.stat().st_mtime_ns for p in preds}
    monkeypatch.delenv(ENV_CHECKPOINT)
    args = ["bench", "--dataset", "now", "--method", "hrn", "--root", str(root)]
    args += ["--out", str(tmp_path / "bench"), "--checkpoint", str(model_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in preds} == stamps
    with open(pred_dir / "failures.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2  # the faceless image tried once more
    missing = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "nope.pt" in missing.output


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

    def spy(recon, crops, *args, **kwargs):
        calls.append(crops.shape[0])
        return real_fit(recon, crops, *args, **kwargs)

    monkeypatch.setattr(mv, "fit_multiview", spy)
    monkeypatch.setenv(ENV_CHECKPOINT, str(model_path))
    result = run_benchmark(f"multiview:{MULTIVIEW_SPLIT}", "hrn", root=root, out=tmp_path / "bench")
    assert calls == [MULTIVIEW_VIEWS]  # one joint fit of the set's three photos
    assert result.n_items == 1 and result.n_ok == 1
    assert result.leaderboard_row.median_mm is not None and result.leaderboard_row.median_mm > 0

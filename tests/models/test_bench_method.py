"""HRN as a benchmark method: a synthetic NoW benchmark reconstructed in-process and scored."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from PIL import Image

from benchmarks import methods
from benchmarks.readers import read_now_items
from benchmarks.runner import run_benchmark
from benchmarks.synthetic import make_synthetic_benchmark
from models.bench import ENV_CHECKPOINT, HRNMethod, make_method


def test_hrn_method_on_a_synthetic_now_benchmark(
    hrn_data, model_path, tmp_path, monkeypatch, one_thread
):
    pytest.importorskip("mediapipe")
    root = make_synthetic_benchmark("now", tmp_path / "now", seed=0, n_subjects=1)
    items = read_now_items(root, "validation")
    photos = sorted((hrn_data.scans / "photos").glob("*.png"))
    for item, photo in zip(items[:2], photos, strict=False):  # two images, the rest missing
        dest = root / "iphone_pictures" / item.subject / item.challenge / f"{item.image}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.open(photo).convert("RGB").save(dest, quality=95)

    ep = EntryPoint("hrn", "models.bench:make_method", methods.ENTRY_POINT_GROUP)
    monkeypatch.setattr(methods, "available_methods", lambda: {"hrn": ep})
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    with pytest.raises(ValueError, match="checkpoint"):
        make_method()
    monkeypatch.setenv(ENV_CHECKPOINT, str(model_path))
    assert isinstance(methods.load_method("hrn"), HRNMethod)

    result = run_benchmark("now", "hrn", root=root, out=tmp_path / "bench")
    assert result.n_items == 4 and result.n_ok == 2 and result.n_missing == 2
    row = result.leaderboard_row
    assert row.method == "hrn" and row.median_mm is not None and row.median_mm > 0
    preds = sorted((result.out_dir / "predictions").rglob("*.obj"))
    assert len(preds) == 2 and all(p.with_suffix(".txt").is_file() for p in preds)

"""Shared fixtures of the trainer / reconstruction tests: a tiny synthetic training set."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
import torch


class HRNData(NamedTuple):
    scans: Path
    priors: Path
    photos: Path
    pairs: Path


@pytest.fixture(scope="session")
def hrn_data(tmp_path_factory: pytest.TempPathFactory) -> HRNData:
    from hrn_testdata import make_scans, write_truth_photos, write_truth_priors

    root = tmp_path_factory.mktemp("hrn_data")
    make_scans(root / "scans", subjects=2, expressions=1, views=2)
    return HRNData(
        root / "scans",
        write_truth_priors(root / "scans", root / "priors.h5"),
        write_truth_photos(root / "scans", root / "photos.h5"),
        write_truth_photos(root / "scans", root / "pairs.h5", clean=True),
    )


@pytest.fixture(scope="session")
def model_path(hrn_data: HRNData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.pt`` of a very short tiny run (all three stages)."""
    from hrn_testdata import tiny_config

    from models.train import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_config()
    cfg.base.steps, cfg.deretouch.steps, cfg.hrn.steps = 2, 1, 2
    out = tmp_path_factory.mktemp("short_run") / "run"
    try:
        train(cfg, out, photos=hrn_data.photos, priors=hrn_data.priors)
    finally:
        torch.set_num_threads(before)
    return out / "model.pt"


@pytest.fixture()
def one_thread():
    """Single-threaded torch (the test machine is small and shared; results do not depend on
    it, but a run and its resumed twin must use the same thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

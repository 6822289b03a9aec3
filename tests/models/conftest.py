"""Shared fixtures of the trainer / reconstruction tests: a tiny synthetic training set."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest


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
def one_scan(hrn_data: HRNData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hrn_data.scans`` holding its first held-out scan alone (its files and photos, the
    folder's ``synth.json``): for the tests that score one scan, at half the cost."""
    import shutil

    from models.evaluate import heldout_ids

    others = heldout_ids(hrn_data.scans)[1:]
    assert others, "hrn_data has one scan"

    def theirs(_: str, names: list[str]) -> list[str]:
        return [n for n in names if any(n.startswith((f"{o}.", f"{o}_")) for o in others)]

    out = tmp_path_factory.mktemp("one_scan") / "scans"
    shutil.copytree(hrn_data.scans, out, ignore=theirs)
    assert heldout_ids(out) == heldout_ids(hrn_data.scans)[:1]
    return out


@pytest.fixture(scope="session")
def model_path(hrn_data: HRNData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.pt`` of a very short tiny run (all three stages)."""
    from hrn_testdata import one_torch_thread, tiny_config

    from models.train import train

    cfg = tiny_config()
    cfg.base.steps, cfg.deretouch.steps, cfg.hrn.steps = 2, 1, 2
    out = tmp_path_factory.mktemp("short_run") / "run"
    with one_torch_thread():
        train(cfg, out, photos=hrn_data.photos, priors=hrn_data.priors)
    return out / "model.pt"


@pytest.fixture()
def one_thread():
    """Single-threaded torch for the test (:func:`hrn_testdata.one_torch_thread`)."""
    from hrn_testdata import one_torch_thread

    with one_torch_thread():
        yield

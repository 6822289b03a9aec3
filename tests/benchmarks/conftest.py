"""Shared fixtures: the synthetic benchmarks (built once per test session) and small surfaces."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three synthetic benchmarks in their real layouts (one subject each, small)."""
    from benchmarks.synthetic import make_synthetic_benchmark

    base = tmp_path_factory.mktemp("synth")
    return {
        "now": make_synthetic_benchmark("now", base / "now", seed=3, n_subjects=1),
        "realy": make_synthetic_benchmark("realy", base / "realy", seed=3, n_subjects=1),
        "facescape": make_synthetic_benchmark(
            "facescape", base / "facescape", seed=3, n_subjects=1, lab_views=(0, 9), lab_focals=(0,)
        ),
    }


@pytest.fixture
def now_copy(synth_roots: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the session's synthetic NoW benchmark, for a test that edits its files (a copy
    takes a fraction of a second, writing one anew seconds)."""
    return Path(shutil.copytree(synth_roots["now"], tmp_path / "now"))

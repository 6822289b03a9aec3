"""Shared fixtures: the synthetic benchmarks (built once per test session) and small surfaces."""

from __future__ import annotations

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

"""The prepared GPU check (``.ci/gpu_check.py``) runs its steps here on the CPU, so that it is
ready for a machine with a GPU: a killed and resumed tiny run equals the uninterrupted one."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_the_cpu(tmp_path: Path) -> None:
    # one torch thread, as the other training tests have: the tiny networks gain nothing from
    # more, and beside the suite's other process they would fight it for the cores
    run = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "gpu_check.py"), "--device", "cpu", "--out",
         str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    report = (tmp_path / "check.txt").read_text()
    assert "== resume: done" in report
    assert "networks equal bit for bit: True" in report
    assert "bit for bit: True" in (tmp_path / "resume.txt").read_text()


def test_without_cuda_the_gpu_check_says_so(tmp_path: Path) -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    run = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "gpu_check.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert "no CUDA device" in (tmp_path / "check.txt").read_text()

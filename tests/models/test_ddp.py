"""DistributedDataParallel training: two CPU processes with the gloo backend under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def test_two_process_training_keeps_ranks_in_step(hrn_data, tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    out = tmp_path / "ddp"
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(worker), str(hrn_data.photos), str(hrn_data.priors), str(out),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot spawn two training processes here: {exc}")
    if proc.returncode != 0 and "Address already in use" in proc.stderr:
        pytest.skip("no free port for the gloo rendezvous")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the weights' layout is the gradients' (a 1 x 1 convolution fed channels-last photos):
    # DistributedDataParallel has nothing to warn about
    assert "Grad strides do not match" not in proc.stderr, proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    # the ranks drew different batches (their losses differ) ...
    assert r0["losses"] != r1["losses"]
    # ... yet hold identical parameters after every step: gradients were averaged
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    # and training moved them
    moved = [k for k, v in r0["state"].items() if not torch.equal(v, r0["initial"][k])]
    assert any(k.startswith("net_recon.") for k in moved)
    assert any(k.startswith("mid_net.") for k in moved)
    # rank 0 alone wrote the checkpoints and logs
    assert (out / "checkpoints" / "hrn.pt").is_file() and (out / "log_hrn.csv").is_file()

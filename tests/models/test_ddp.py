"""DistributedDataParallel training: two CPU processes with the gloo backend under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _torchrun(tmp: Path, *argv: object) -> subprocess.CompletedProcess:
    """``torchrun ARGV`` with 2 CPU processes (skips where it cannot spawn them or find a port);
    torchrun's own files (it leaves a ``torchelastic_*`` folder) go under ``tmp``."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env["TMPDIR"] = str(tmp)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        *map(str, argv),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot spawn two training processes here: {exc}")
    if proc.returncode != 0 and "Address already in use" in proc.stderr:
        pytest.skip("no free port for the gloo rendezvous")
    return proc


def _two_processes(tmp: Path, *args: object) -> subprocess.CompletedProcess:
    """``ddp_worker.py ARGS`` under :func:`_torchrun`, which must succeed."""
    proc = _torchrun(tmp, Path(__file__).with_name("ddp_worker.py"), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_process_training_keeps_ranks_in_step(hrn_data, tmp_path):
    out = tmp_path / "ddp"
    proc = _two_processes(tmp_path, hrn_data.photos, hrn_data.priors, out)
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


def _first_photos(src: Path, dst: Path, n: int) -> Path:
    """A photos dataset of the first ``n`` samples of ``src``."""
    from facehd.h5io import ShardedDatasetWriter, open_dataset

    with open_dataset(src) as ds:
        fields = {k: (spec.shape, spec.dtype) for k, spec in ds.fields.items()}
        with ShardedDatasetWriter(dst, ds.schema, ds.attrs, fields, overwrite=True) as w:
            for i in range(n):
                sample = ds[i]
                w.add(sample.sample_id, {k: sample.get(k) for k in fields})
            w.finalize()
    return dst


def test_two_process_run_resumes_exactly_on_photos_shared_unevenly(hrn_data, tmp_path):
    # 3 photos, 2 processes: one draws from 2 photos an epoch, the other from 1, so their data
    # positions part after the first step; each must resume from its own
    photos = _first_photos(hrn_data.photos, tmp_path / "photos3.h5", 3)
    _two_processes(tmp_path, "--resume", photos, tmp_path)
    for rank in (0, 1):
        params = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for k, v in params["whole"].items():
            assert torch.equal(v, params["resumed"][k]), (rank, k)


def test_two_processes_share_the_refinement_of_the_training_faces(hrn_data, tmp_path, one_thread):
    """Each process refines its share of the photos (here the photos a one-process run left
    unfinished) and both get the whole table, that of one process."""
    sys.path.insert(0, str(Path(__file__).parent))
    from hrn_testdata import tiny_config

    from models.refined_faces import read_entries, write_entries
    from models.train import Trainer

    cfg = tiny_config()
    cfg.hrn_options.refine_steps = 2
    one = Trainer(cfg, tmp_path / "one", photos=hrn_data.photos)
    (tmp_path / "one").mkdir()
    expected = one.refined_faces(one.photos(), "photos")
    settings = one._refine_settings()
    entries, why = read_entries(tmp_path / "one" / "refined" / "photos.pt", settings)
    assert why is None and sorted(entries) == [0, 1, 2, 3]
    # a one-process run stopped after photo 2: its share file holds photos 0 and 1
    out = tmp_path / "two"
    write_entries(out / "refined" / "photos.rank0.pt", settings, {i: entries[i] for i in (0, 1)})
    _two_processes(tmp_path, "--refine", hrn_data.photos, out)
    for rank in (0, 1):
        got = torch.load(out / f"faces{rank}.pt", weights_only=True)["flat"]
        assert torch.equal(got, expected.flat), rank
    log = (out / "train.log").read_text()
    assert "refining the base faces of 2 of 4 photos" in log
    assert sorted(p.name for p in (out / "refined").iterdir()) == ["photos.pt"]


def test_a_gpu_run_has_a_backend_for_its_cpu_tensors():
    from models.train import process_group_backend

    # every run exchanges CPU tensors (each step's finite-loss flag, the random states and data
    # positions of a checkpoint): NCCL alone takes CUDA tensors only, and would stop a GPU run
    # at its first step
    for device, cpu_backend in (("cpu", "gloo"), ("cuda", "gloo"), ("cuda:1", "gloo")):
        spec = process_group_backend(torch.device(device))
        pairs = dict(p.split(":") for p in spec.split(",")) if ":" in spec else {"cpu": spec}
        assert pairs["cpu"] == cpu_backend, (device, spec)
        if device.startswith("cuda"):
            assert pairs["cuda"] == "nccl", spec


def test_a_problem_the_first_process_finds_is_one_error(hrn_data, tmp_path):
    # a run folder that holds a run, given without --resume: the first process checks the
    # folder; the other, waiting for it, stops too, without a connection error of its own
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "base.pt").write_bytes(b"")
    proc = _torchrun(
        tmp_path, "-m", "models.train", "--out", out, "--photos", hrn_data.photos, "--stage", "base"
    )
    assert proc.returncode != 0
    said = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1 and "already holds a training run" in said[0], proc.stderr[-3000:]
    assert "[rank" not in proc.stderr and "Connection closed" not in proc.stderr

"""The Ray executor on a real local Ray instance: it records what a local pool records (the
same failures.csv, the same bytes), keeps the command's SIGTERM handling, and refuses a cluster
it cannot reach at once, before anything is written."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from facehd.errors import FacehdError
from facehd.h5io import (
    RunSummary,
    ShardedDatasetWriter,
    WorkItem,
    process_items,
    read_failures,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "facehd"))
from test_h5io import ATTRS, FIELDS, SCHEMA, digest, task  # noqa: E402

pytest.importorskip("ray", reason="ray is not installed (optional extra facehd[ray])")


@pytest.fixture
def ray_tmp(monkeypatch: pytest.MonkeyPatch, one_ray_at_a_time: None) -> Iterator[str]:
    """Ray's session files in a folder of the test's own (a short path: its sockets' paths
    must fit in 107 characters), no cluster named by the environment, and no other test's Ray
    running."""
    folder = tempfile.mkdtemp(prefix="facehd-ray-")
    monkeypatch.setenv("RAY_TMPDIR", folder)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _items() -> list[WorkItem]:
    """Good items, a FacehdError, a NaN, an InputFileError (whose constructor takes the path),
    one that kills its worker process and one whose id cannot name a sample (edge spaces)."""
    items = [WorkItem(f"subject{k:03d}", f"/in/{k}.obj", k) for k in range(7)]
    return [
        *items,
        WorkItem("crash", "/in/crash.obj", -1),
        WorkItem(" spaced ", "/in/spaced.obj", 0),
    ]


def _build(out: Path, run) -> Path:  # noqa: ANN001
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2) as w:
        run(w)
        w.finalize()
    return out


def _ignore(signum: int, frame: object) -> None:
    pass


def test_ray_records_what_a_local_pool_records(
    tmp_path: Path, ray_tmp: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.executor import ray_session, run_ray

    # Ray's workers import the task's module from the path the Ray instance starts with
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))

    summaries, seen = [], []
    local = _build(
        tmp_path / "local" / "d.h5",
        lambda w: summaries.append(process_items(w, _items(), task, workers=2)),
    )
    before = signal.signal(signal.SIGTERM, _ignore)  # the command line's handler, say
    try:
        with ray_session() as ray:
            assert ray.is_initialized()
            # Ray sets its own (it exits with status 1, saying nothing of what was kept)
            assert signal.getsignal(signal.SIGTERM) is _ignore
            remote = _build(
                tmp_path / "ray" / "d.h5",
                lambda w: summaries.append(
                    run_ray(w, _items(), task, progress=lambda d, t: seen.append((d, t)))
                ),
            )
        assert not ray.is_initialized()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert digest(remote) == digest(local)
    got = read_failures(remote.with_name("failures.csv"))
    assert got == read_failures(local.with_name("failures.csv"))
    reasons = {f.sample_id: f.reason for f in got}
    assert set(reasons) == {"subject003", "subject005", "subject006", "crash", "' spaced '"}
    # the same counts as the pool's (the unnamed item among the failures), and progress after
    # each of the 8 items that ran
    assert summaries[0] == summaries[1] == RunSummary(9, 0, 4, 5)
    assert seen == [(k, 8) for k in range(9)]
    assert reasons["subject006"] == "/in/6.obj: truncated file"  # not Ray's wrapper of it
    assert reasons["crash"].startswith("RuntimeError: worker process died while processing")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["closed", "auto"])
def test_a_cluster_that_cannot_be_reached_is_said_at_once(
    tmp_path: Path, ray_tmp: str, address: str
) -> None:
    """Ray retried an address where nothing listens for minutes (killed after 5 here), and
    'auto' with no cluster running was a ConnectionError traceback; both left a shard folder."""
    from pipelines.build_priors import PriorsConfig, ScanInput, build_priors

    if address == "closed":
        address = f"127.0.0.1:{_closed_port()}"
    scans = [ScanInput("a", str(tmp_path / "a.ply"), None)]
    out = tmp_path / "out" / "priors.h5"
    start = time.monotonic()
    with pytest.raises(FacehdError, match=f"Ray cluster at {address}"):
        build_priors(scans, out, PriorsConfig(executor="ray", ray_address=address))
    assert time.monotonic() - start < 20
    assert not out.parent.exists() or not any(out.parent.iterdir())

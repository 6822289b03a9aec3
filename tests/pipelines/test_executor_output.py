"""The Ray executor stops on an output that cannot be written (a full disk) instead of
recording it as the failure of every item after it (Ray replaced by an in-process stand-in)."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import facehd.h5io as h5io
import pipelines.executor as executor
from facehd.h5io import OutputWriteError, ShardedDatasetWriter, WorkItem

sys.path.insert(0, str(Path(__file__).parents[1] / "facehd"))
from test_h5io import ATTRS, FIELDS, SCHEMA, sample, sid  # noqa: E402


class _Ref:
    """A task's result (``kind`` ok) or the exception it raised (``kind`` err)."""

    def __init__(self, kind: str, value: object) -> None:
        self.kind, self.value = kind, value


def _fake_ray() -> SimpleNamespace:
    """Tasks run when submitted; a reference is its result (or the exception raised)."""

    def remote(**_):
        def wrap(fn):
            def submit(*args):
                try:
                    return _Ref("ok", fn(*args))
                except Exception as exc:
                    return _Ref("err", exc)

            return SimpleNamespace(remote=submit)

        return wrap

    def get(ref):
        if ref.kind == "err":
            raise ref.value
        return ref.value

    return SimpleNamespace(
        is_initialized=lambda: True,
        remote=remote,
        cluster_resources=lambda: {"CPU": 1},
        wait=lambda refs, num_returns: (refs[:num_returns], refs[num_returns:]),
        get=get,
        exceptions=SimpleNamespace(WorkerCrashedError=type("WorkerCrashedError", (Exception,), {})),
    )


def test_a_full_disk_stops_a_ray_build_and_blames_no_input(tmp_path, monkeypatch):
    monkeypatch.setattr(executor, "import_ray", _fake_ray)

    def full(path, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(h5io, "_write_file", full)
    out = tmp_path / "d.h5"
    items = [WorkItem(sid(k), f"/in/{k}") for k in range(5)]
    with pytest.raises(OutputWriteError, match="disk full"):
        with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2) as w:
            executor.run_ray(w, items, lambda it: sample(int(it.sample_id[-3:])))
    assert not (tmp_path / "failures.csv").exists()
    monkeypatch.undo()
    monkeypatch.setattr(executor, "import_ray", _fake_ray)
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2) as w:
        summary = executor.run_ray(w, items, lambda it: sample(int(it.sample_id[-3:])))
        assert summary.n_written == 5 and w.finalize().n_samples == 5

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
from facehd.errors import FacehdError
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


def test_an_address_is_tried_only_when_it_names_a_host_and_port(monkeypatch) -> None:
    """None, 'auto', 'local' and addresses without a numeric port are Ray's to resolve; a
    HOST:PORT (with a scheme, or an IPv6 host in brackets) is tried, and a silence or a refusal
    is said with the address."""
    tried = []

    class Conn:
        def close(self) -> None:
            pass

    def connect(where, timeout):  # noqa: ANN001, ANN202
        tried.append((where, timeout))
        return Conn()

    monkeypatch.setattr(executor.socket, "create_connection", connect)
    for address in (None, "auto", "local", "headnode", "headnode:port"):
        executor.check_ray_address(address)
    assert tried == []
    executor.check_ray_address("ray://10.0.0.5:10001", timeout=2.5)
    executor.check_ray_address("[::1]:6379")
    assert tried == [(("10.0.0.5", 10001), 2.5), (("::1", 6379), 10.0)]

    def silent(where, timeout):  # noqa: ANN001, ANN202
        raise TimeoutError("timed out")

    monkeypatch.setattr(executor.socket, "create_connection", silent)
    with pytest.raises(FacehdError, match=r"no Ray cluster at h:1 \(no answer within 0.5 s\)"):
        executor.check_ray_address("h:1", timeout=0.5)


def test_tasks_go_in_order_a_window_at_a_time_and_wrapped_errors_name_their_cause(
    tmp_path, monkeypatch
):
    """Items are submitted in their order, at most twice the cluster's CPUs at once (at least
    2), each reserving num_cpus and never retried (a retried crash runs twice); an error Ray
    raises around a task's own exception is recorded by that exception."""
    ray = _fake_ray()
    ray.cluster_resources = lambda: {"CPU": 3}
    submitted, windows, options = [], [], []
    plain_remote, plain_wait = ray.remote, ray.wait

    def remote(**kw):
        options.append(kw)
        return plain_remote(**kw)

    def wait(refs, num_returns):
        windows.append(len(refs))
        return plain_wait(refs, num_returns)

    class Wrapped(Exception):
        def __init__(self, cause: Exception) -> None:
            super().__init__("task failed")
            self.cause = cause

    def get(ref):
        value = ref.value
        if getattr(value, "payload", None) == "wrap":
            raise Wrapped(ValueError("the task's own reason"))
        return value

    ray.remote, ray.wait, ray.get = remote, wait, get
    monkeypatch.setattr(executor, "import_ray", lambda: ray)
    monkeypatch.setattr(executor, "call_task", lambda fn, item: fn(item))

    def task(item):
        submitted.append(item.sample_id)
        return item if item.payload == "wrap" else sample(int(item.sample_id[-3:]))

    items = [WorkItem(sid(k), f"/in/{k}", "wrap" if k == 4 else None) for k in range(10)]
    with ShardedDatasetWriter(tmp_path / "d.h5", SCHEMA, ATTRS, FIELDS, shard_size=4) as w:
        summary = executor.run_ray(w, items, task, num_cpus=0.5)
    assert submitted == [it.sample_id for it in items]
    assert max(windows) == 6 and options == [{"num_cpus": 0.5, "max_retries": 0}]
    assert (summary.n_written, summary.n_failed) == (9, 1)
    (failure,) = h5io.read_failures(tmp_path / "failures.csv")
    assert failure.sample_id == sid(4) and failure.reason == "ValueError: the task's own reason"

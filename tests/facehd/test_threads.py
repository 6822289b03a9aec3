"""Thread limits: one_blas_thread (NumPy's and SciPy's OpenBLAS on one thread inside, restored
after) and the one thread of each worker of a pool."""

from __future__ import annotations

import os

import numpy as np
import pytest

from facehd.threads import _openblas_libs, one_blas_thread


def test_blas_threads_are_one_inside_and_restored_after():
    fns = _openblas_libs()
    if not fns:
        pytest.skip("no bundled OpenBLAS with per-thread counts in this install")
    before = [fn(3) for fn in fns]  # a known count to restore to
    try:
        with one_blas_thread():
            # setting the count returns the one in force: 1 inside the context
            assert [fn(1) for fn in fns] == [1] * len(fns)
            a = np.random.default_rng(0).normal(size=(200, 200))
            np.testing.assert_allclose(a @ np.linalg.inv(a), np.eye(200), atol=1e-8)
        assert [fn(3) for fn in fns] == [3] * len(fns)
    finally:
        for fn, n in zip(fns, before, strict=True):
            fn(n)


def _threads_in_worker() -> tuple[list[int], int, str | None, int]:
    """A pool's worker's BLAS thread counts (NumPy's, SciPy's), torch's (imported only now, as
    a task of the batch commands first imports it), OMP_NUM_THREADS and Open3D's thread cap
    (imported only now too)."""
    import os

    counts = [fn(1) for fn in _openblas_libs()]  # setting returns the count in force
    import torch

    from facehd._o3d import open3d

    return (
        counts,
        torch.get_num_threads(),
        os.environ.get("OMP_NUM_THREADS"),
        open3d().utility.get_max_threads(),
    )


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: one thread anyway")
def test_pool_workers_compute_on_one_thread():
    """N workers must not each start a thread per core (N times as many threads as cores): NumPy's
    OpenBLAS, loaded before any initializer could set OMP_NUM_THREADS, ran on every core."""
    if not _openblas_libs():
        pytest.skip("no bundled OpenBLAS with per-thread counts in this install")
    from facehd.pools import running_pool

    with running_pool(2) as pool:
        results = [f.result() for f in [pool.submit(_threads_in_worker) for _ in range(2)]]
    for counts, torch_threads, omp, o3d_threads in results:
        assert counts == [1] * len(counts) and torch_threads == 1 and omp == "1"
        assert o3d_threads == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: one thread anyway")
def test_open3d_thread_cap_applies_whether_open3d_is_imported_or_not(open3d_uncapped):
    o3d_mod = open3d_uncapped
    util = o3d_mod.open3d().utility  # imported: the cap applies at once
    every = util.get_max_threads()
    assert every >= 2
    o3d_mod.limit_threads(1)
    assert util.get_max_threads() == 1
    with pytest.raises(ValueError, match="n must be >= 1"):
        o3d_mod.limit_threads(0)
    # a process where open3d() has not run yet: the cap applies as it runs (it is cached)
    util.set_max_threads(0)
    o3d_mod.open3d.cache_clear()
    assert util.get_max_threads() == every
    o3d_mod.open3d()
    assert util.get_max_threads() == 1


def test_a_scan_is_fitted_on_one_blas_thread(monkeypatch):
    """build-priors fits each scan on one BLAS thread in this process too, as its pool's
    workers and Ray's tasks do (on a busy machine threads made a fit 5-9 times slower)."""
    fns = _openblas_libs()
    if not fns:
        pytest.skip("no bundled OpenBLAS with per-thread counts in this install")
    import pipelines.build_priors as bp
    from facehd.h5io import WorkItem

    seen = []

    def fit_one(scan, config, threads):  # noqa: ANN001, ANN202
        seen.extend(fn(1) for fn in fns)  # setting returns the count in force
        raise RuntimeError("stop here")

    monkeypatch.setattr(bp, "fit_one", fit_one)
    before = [fn(2) for fn in fns]
    try:
        scan = bp.ScanInput("a", "/in/a.ply", None)
        with pytest.raises(RuntimeError, match="stop here"):
            bp.process_scan(WorkItem("a", "/in/a.ply", (scan, bp.PriorsConfig(), 0)))
        assert seen == [1] * len(fns)
        assert [fn(2) for fn in fns] == [2] * len(fns)  # restored after
    finally:
        for fn, n in zip(fns, before, strict=True):
            fn(n)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: one thread anyway")
def test_perf_entries_run_open3d_on_one_thread_and_restore_the_cap(open3d_uncapped):
    """facehd.perf.single_thread caps Open3D too (threads_limited), and gives back the cap in
    force before it, not Open3D's every-core default (a pool's worker or a pytest-xdist worker
    stays capped after a perf entry)."""
    from facehd.perf import single_thread

    o3d_mod = open3d_uncapped
    util = o3d_mod.open3d().utility
    every = util.get_max_threads()
    with single_thread():
        assert util.get_max_threads() == 1
    assert util.get_max_threads() == every and o3d_mod._thread_limit is None
    # a capped process (a pool's worker) stays capped after it, also after an exception; its
    # cap must differ from every core to be told apart (Open3D reads a larger cap as every core)
    o3d_mod.limit_threads(1)
    with pytest.raises(RuntimeError), single_thread():
        raise RuntimeError
    assert util.get_max_threads() == 1 < every and o3d_mod._thread_limit == 1

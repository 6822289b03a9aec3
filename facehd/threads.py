"""Thread limits for code that must run on one core (benchmarks, many small BLAS calls, the
worker processes of the batch commands)."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["WORKER_THREAD_VARS", "one_blas_thread", "one_thread_per_worker"]

WORKER_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that set the thread pools of OpenMP, OpenBLAS and MKL as they load."""


@functools.cache
def _openblas_libs() -> tuple:
    """The OpenBLAS copies bundled with NumPy and SciPy that offer per-thread thread counts."""
    import numpy
    import scipy

    out = []
    for pkg, name in ((numpy, "numpy.libs"), (scipy, "scipy.libs")):
        for path in sorted((Path(pkg.__file__).parent.parent / name).glob("lib*openblas*.so*")):
            try:
                fn = ctypes.CDLL(str(path)).openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            out.append(fn)
    return tuple(out)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the body with NumPy's and SciPy's BLAS on one thread (for this thread only).

    For many small BLAS calls (the fronts of :class:`benchmarks.mesh_cholesky.MeshCholesky`)
    threads barely help on an idle machine, and on a busy one each call waits for descheduled
    threads (measured on the REALY protocol: 150 s per image instead of 5 s). Where the
    bundled OpenBLAS is not found, nothing changes.
    """
    fns = _openblas_libs()
    old = [fn(1) for fn in fns]
    try:
        yield
    finally:
        for fn, n in zip(fns, old, strict=True):
            fn(n)


def one_thread_per_worker() -> None:
    """Make this process, one of a pool's workers, compute on one thread (for good).

    ``N`` workers then use ``N`` cores instead of each starting a BLAS and a torch thread per
    core (``N`` times as many threads as cores: on a busy machine each call waits for
    descheduled threads). NumPy's and SciPy's OpenBLAS run on one thread for this (the calling)
    thread, which runs the tasks; torch runs on one thread; Open3D's calls with automatic threads
    run on one (:func:`facehd._o3d.limit_threads`); the variables of
    :data:`WORKER_THREAD_VARS` are set to 1 for libraries loaded later and for child processes
    (an environment variable alone does not reach a library already loaded: NumPy's OpenBLAS
    read its count when NumPy was imported).
    """
    for var in WORKER_THREAD_VARS:
        os.environ[var] = "1"
    for fn in _openblas_libs():
        fn(1)
    torch = sys.modules.get("torch")  # not imported here: it reads OMP_NUM_THREADS when it is
    if torch is not None:
        torch.set_num_threads(1)
    from facehd._o3d import limit_threads

    limit_threads(1)  # Open3D's automatic thread count ignores OMP_NUM_THREADS

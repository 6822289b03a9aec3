"""Thread limits for code that must run on one core (benchmarks, many small BLAS calls)."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["one_blas_thread"]


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

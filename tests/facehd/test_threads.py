"""one_blas_thread: NumPy's and SciPy's OpenBLAS on one thread inside, restored after."""

from __future__ import annotations

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

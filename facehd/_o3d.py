"""Import Open3D on machines that lack ``libusb-1.0.so.0``.

Open3D 0.20 links against ``libusb-1.0.so.0``. The ``libusb-package`` wheel ships that library;
loading it globally before Open3D lets the import succeed without a system package.

:func:`limit_threads` caps the threads of Open3D's parallel calls made with ``nthreads=0``
(automatic) in this process, whether Open3D is imported yet or not: a pool's workers are capped to
one (:func:`facehd.threads.one_thread_per_worker`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

#: The cap :func:`limit_threads` set (None: Open3D's own default, every core).
_thread_limit: int | None = None


def limit_threads(n: int) -> None:
    """Run Open3D's automatic-thread calls (``nthreads=0``) on at most ``n`` threads in this
    process: now if Open3D is imported, else as :func:`open3d` imports it."""
    global _thread_limit
    if n < 1:
        raise ValueError(f"limit_threads: n must be >= 1, got {n}")
    _thread_limit = int(n)
    _apply_limit()


@contextmanager
def threads_limited(n: int) -> Iterator[None]:
    """:func:`limit_threads` for the body alone; the cap in force before it after."""
    global _thread_limit
    old = _thread_limit
    limit_threads(n)
    try:
        yield
    finally:
        _thread_limit = old
        _apply_limit()


def _apply_limit() -> None:
    """Give an imported Open3D the cap in force (none: 0, Open3D's every-core default)."""
    if "open3d" in sys.modules:
        open3d().utility.set_max_threads(_thread_limit or 0)


@functools.cache
def open3d() -> ModuleType:
    """Return the ``open3d`` module, preloading libusb from ``libusb-package`` if needed."""
    if ctypes.util.find_library("usb-1.0") is None:
        try:
            import libusb_package

            path = libusb_package.get_library_path()
            if path is not None:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except ImportError:  # pragma: no cover - depends on the install
            pass
    try:
        import open3d as o3d
    except ImportError as exc:
        from facehd.errors import raise_if_interrupted

        raise_if_interrupted(exc)  # Ctrl-C during the import: not a missing package
        raise ImportError(
            "facehd needs open3d==0.20.0 (and libusb-1.0, shipped by the 'libusb-package' "
            "wheel): pip install open3d==0.20.0 libusb-package"
        ) from exc
    if _thread_limit is not None:
        o3d.utility.set_max_threads(_thread_limit)
    return o3d

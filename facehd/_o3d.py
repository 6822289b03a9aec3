"""Import Open3D on machines that lack ``libusb-1.0.so.0``.

Open3D 0.20 links against ``libusb-1.0.so.0``. The ``libusb-package`` wheel ships that library;
loading it globally before Open3D lets the import succeed without a system package.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from types import ModuleType


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
    return o3d

"""Fixtures shared by the test folders."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the workers share the machine's cores: each computes with torch and
    Open3D on its share of them, not on every core (on 2 cores, 2 workers of 2 torch threads each
    ran the suite in 1249 s, of 1 thread each in 1139 s). Open3D's automatic threads are capped
    the same way, as a pool's workers cap them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        from facehd._o3d import limit_threads

        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        limit_threads(share)


@pytest.fixture
def open3d_uncapped(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """``facehd._o3d`` with no thread cap and Open3D on every core for the test (whatever cap
    the session set, as under pytest-xdist); Open3D's count in force before it, after."""
    import facehd._o3d as o3d_mod

    util = o3d_mod.open3d().utility
    before = util.get_max_threads()
    monkeypatch.setattr(o3d_mod, "_thread_limit", None)
    util.set_max_threads(0)
    try:
        yield o3d_mod
    finally:
        util.set_max_threads(before)


@pytest.fixture
def one_ray_at_a_time() -> Iterator[None]:
    """Hold the tests' Ray lock while a test starts or looks for a Ray instance. ``address=
    "auto"`` finds any Ray instance running on the machine (by its processes, whatever their
    session folder): under pytest-xdist another worker's local instance would be found by the
    test that none is running."""
    import fcntl
    import tempfile

    with open(os.path.join(tempfile.gettempdir(), "facehd-tests-ray.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture
def no_heif_decoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pillow as installed without pillow-heif: no HEIC/HEIF decoder registered, none to add."""
    from PIL import Image

    from facehd import align

    registered = Image.registered_extensions

    def without_heif() -> dict[str, str]:
        return {k: v for k, v in registered().items() if k not in (".heic", ".heif")}

    monkeypatch.setattr(Image, "registered_extensions", without_heif)
    monkeypatch.setattr(align, "register_photo_decoders", lambda: ())
    yield

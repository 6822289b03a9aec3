"""Small analytic surfaces for the benchmark tests."""

from __future__ import annotations

import functools

import numpy as np

from facehd.mesh import Mesh


def icosphere(radius: float, subdivisions: int = 4, centre: np.ndarray | None = None) -> Mesh:
    """A sphere mesh with outward faces and every vertex exactly at ``radius``."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    v = np.asarray(m.vertices, dtype=np.float64)
    v = radius * v / np.linalg.norm(v, axis=1, keepdims=True)
    if centre is not None:
        v = v + centre
    return Mesh(v, np.asarray(m.faces))


def grid_plane(n: int, size: float, z: float = 0.0) -> Mesh:
    """A square grid in the plane ``z`` (faces towards +z), ``n x n`` vertices over ``size`` mm."""
    from facehd.mesh import height_field_mesh

    xs = np.linspace(-size / 2, size / 2, n)
    return height_field_mesh(np.full((n, n), z), xs, xs)


@functools.cache
def pyrender_renders() -> bool:
    """Whether pyrender can draw here (installed, with an OpenGL context: a display, EGL or
    OSMesa), asked once in a child process: a broken GL driver may take down the process that
    tries."""
    import subprocess
    import sys

    probe = "from facehd.depthmap import check_pyrender; check_pyrender()"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0

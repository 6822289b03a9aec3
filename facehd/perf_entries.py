"""Speed benchmarks of facehd's core (run with ``facehd perf``).

Each entry is a plain function registered with :func:`facehd.perf.register`; problems are built
procedurally, so the entries need no data files.
"""

from __future__ import annotations

import os
import time

import numpy as np

from facehd.perf import PerfRow, interrupts_deferred, register, single_thread


def _face_heights(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A face-like height field in mm (dome, nose, eye sockets, brow, mouth, one cheek bump)."""

    def bump(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)

    return (
        55.0 * np.sqrt(np.clip(1.0 - (x / 95.0) ** 2 - (y / 125.0) ** 2, 0.0, None))
        + 20.0 * bump(0.0, -5.0, 9.0, 22.0)
        - 9.0 * bump(-30.0, 25.0, 13.0, 8.0)
        - 9.0 * bump(30.0, 25.0, 13.0, 8.0)
        + 5.0 * bump(0.0, 42.0, 40.0, 6.0)
        - 4.0 * bump(0.0, -45.0, 20.0, 4.0)
        + 3.0 * bump(45.0, -20.0, 10.0, 10.0)
    )


def _face_mesh(n_vertices: int):  # noqa: ANN202 - returns facehd.mesh.Mesh
    """A ~160 x 200 mm face-like grid mesh with about ``n_vertices`` vertices."""
    from facehd.mesh import height_field_mesh

    w = int(round(np.sqrt(n_vertices / 1.25)))
    h = int(round(w * 1.25))
    xs = np.linspace(-80.0, 80.0, w)
    ys = np.linspace(-100.0, 100.0, h)
    x, y = np.meshgrid(xs, ys)
    return height_field_mesh(_face_heights(x, y), xs, ys)


def _surface_samples(mesh, n: int, noise: float, seed: int) -> np.ndarray:  # noqa: ANN001
    """``n`` uniform random points on the mesh plus Gaussian noise of ``noise`` mm per axis."""
    rng = np.random.default_rng(seed)
    area = mesh.face_areas
    faces = rng.choice(mesh.n_faces, n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    tri = mesh.vertices[mesh.faces[faces]]
    pts = tri[:, 0] + r1[:, None] * (tri[:, 1] - tri[:, 0]) + r2[:, None] * (tri[:, 2] - tri[:, 0])
    return pts + rng.normal(size=pts.shape) * noise


def _cpu_and_wall(fn, repeat: int = 1) -> tuple[float, float, object]:  # noqa: ANN001
    """Best process-CPU seconds and best wall seconds of ``repeat`` calls, and the last result."""
    cpu = wall = float("inf")
    out = None
    for _ in range(max(1, repeat)):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu = min(cpu, time.process_time() - c0)
        wall = min(wall, time.perf_counter() - w0)
    return cpu, wall, out


@register("distance", "point-to-surface distance (Open3D + float64 refinement) vs trimesh")
def distance_entry(quick: bool) -> list[PerfRow]:
    import trimesh

    from facehd.distances import point_to_surface

    n_mesh, n_pts, n_ref = (10_000, 10_000, 1_000) if quick else (100_000, 100_000, 5_000)
    mesh = _face_mesh(n_mesh)
    # scan-to-reconstruction errors are ~1 mm (NoW medians): 1 mm Gaussian noise per axis
    pts = _surface_samples(mesh, n_pts, noise=1.0, seed=0)
    size = f"{n_pts} points ~1 mm from a {mesh.n_vertices}-vertex mesh"
    with single_thread():
        point_to_surface(pts[:100], mesh)  # warm-up: Open3D import
        cpu, wall, ours = _cpu_and_wall(lambda: point_to_surface(pts, mesh), repeat=2)
        tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        with interrupts_deferred():  # rtree drops an interrupt and goes on with a wrong result
            build_cpu, _, _ = _cpu_and_wall(lambda: tm.triangles_tree)
            query_cpu, _, ref = _cpu_and_wall(
                lambda: trimesh.proximity.closest_point(tm, pts[:n_ref])
            )
    ref_cpu = build_cpu + query_cpu * n_pts / n_ref
    _, all_wall, _ = _cpu_and_wall(lambda: point_to_surface(pts, mesh), repeat=2)
    ratio = ref_cpu / cpu
    diff = float(np.abs(ours.distances[:n_ref] - ref[1]).max())
    one = "one thread, scene build included"
    return [
        PerfRow("distance", "facehd seconds", wall, "s", note=f"{size}; wall, {one}"),
        PerfRow("distance", "facehd CPU seconds", cpu, "s", note=f"{size}; {one}"),
        PerfRow(
            "distance",
            "trimesh CPU seconds",
            ref_cpu,
            "s",
            note=f"trimesh.proximity.closest_point: r-tree build ({build_cpu:.2f} s) once + query "
            f"timed on {n_ref} points and scaled linearly to {n_pts}",
        ),
        PerfRow(
            "distance",
            "speed ratio",
            ratio,
            "x",
            ">= 50x",
            ratio >= 50.0,
            "trimesh CPU / facehd CPU, both one thread (CPU time: robust to machine load); "
            "facehd's time includes Open3D's Embree scene build and query",
        ),
        PerfRow(
            "distance",
            "max |difference|",
            diff,
            "mm",
            "<= 1e-6 mm",
            diff <= 1e-6,
            f"facehd vs trimesh distances on the {n_ref} common points",
        ),
        PerfRow(
            "distance",
            "facehd seconds, all cores",
            all_wall,
            "s",
            note=f"{size}; wall, Open3D's default threads ({os.cpu_count()} CPUs here)",
        ),
    ]


@register("mesh-read", "reading a raw scan's OBJ (positions, UVs, normals) and PLY vs trimesh")
def mesh_read_entry(quick: bool) -> list[PerfRow]:
    import tempfile
    from pathlib import Path

    import trimesh

    from facehd.mesh import load_mesh, save_mesh, vertex_normals

    mesh = _face_mesh(20_000 if quick else 500_000)
    normals = vertex_normals(mesh.vertices, mesh.faces)
    rows: list[PerfRow] = []
    with tempfile.TemporaryDirectory() as tmp, single_thread():
        obj = Path(tmp) / "scan.obj"  # as scanners write them: every corner v/vt/vn
        f1 = mesh.faces + 1
        corners = np.repeat(f1[:, :, None], 3, axis=2).reshape(len(f1), 9)
        with open(obj, "w") as out:
            np.savetxt(out, mesh.vertices, fmt="v %.6f %.6f %.6f")
            np.savetxt(out, mesh.uvs, fmt="vt %.6f %.6f")
            np.savetxt(out, normals, fmt="vn %.5f %.5f %.5f")
            np.savetxt(out, corners, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
        ply = Path(tmp) / "scan.ply"
        save_mesh(ply, mesh)
        for path, kind in ((obj, "OBJ, v/vt/vn corners"), (ply, "binary PLY")):
            ours_cpu, ours_wall, got = _cpu_and_wall(lambda p=path: load_mesh(p), repeat=3)
            ref_cpu, _, ref = _cpu_and_wall(
                lambda p=path: trimesh.load(p, process=False, maintain_order=True), repeat=3
            )
            same = bool(
                np.array_equal(got.faces, ref.faces)
                and np.allclose(got.vertices, ref.vertices, atol=1e-6)
            )
            size = (
                f"{mesh.n_vertices} vertices, {mesh.n_faces} triangles, "
                f"{path.stat().st_size / 1e6:.0f} MB; trimesh {ref_cpu:.2f} s "
                f"(process=False, maintain_order=True), same vertices and faces: {same}"
            )
            rows.append(PerfRow("mesh-read", kind, ours_cpu, "s", note=f"CPU time; {size}"))
            rows.append(
                PerfRow(
                    "mesh-read",
                    f"{kind}: trimesh / facehd",
                    ref_cpu / ours_cpu,
                    "x",
                    note=f"load_mesh also checks the file (cut short, indices, NaN); wall "
                    f"{ours_wall:.2f} s",
                )
            )
    return rows


@register("procrustes-icp", "7-landmark Procrustes + rigid point-to-plane ICP of a scan, one core")
def procrustes_icp_entry(quick: bool) -> list[PerfRow]:
    from facehd.registration import icp_point_to_plane
    from facehd.transforms import Similarity, procrustes, rotation_from_axis_angle

    n_target, n_scan = (4_000, 20_000) if quick else (16_000, 100_000)
    target = _face_mesh(n_target)
    rng = np.random.default_rng(1)
    # NoW's 7: eye corners (outer, inner, inner, outer), nose bottom, mouth corners
    lm_xy = np.array(
        [[-45, 25], [-15, 25], [15, 25], [45, 25], [0, -25], [-22, -45], [22, -45]], dtype=float
    )
    lm_target = np.c_[lm_xy, _face_heights(lm_xy[:, 0], lm_xy[:, 1])]
    axis = rng.normal(size=3)
    truth = Similarity(
        1.0, rotation_from_axis_angle(np.radians(12.0) * axis / np.linalg.norm(axis)), [8, -5, 20]
    )  # T_target_from_scan
    scan_mesh = _face_mesh(n_scan)
    scan = truth.inverse().apply(
        scan_mesh.vertices + rng.normal(size=scan_mesh.vertices.shape) * 0.1
    )
    lm_scan = truth.inverse().apply(lm_target + rng.normal(size=(7, 3)) * 1.0)  # picking error

    def align():  # noqa: ANN202
        init = procrustes(lm_scan, lm_target, with_scale=False)  # both in mm
        return icp_point_to_plane(scan, target, init=init, max_distance=5.0)

    with single_thread():
        align()  # warm-up: Open3D import
        cpu, seconds, res = _cpu_and_wall(align, repeat=3)
    size = (
        f"{len(scan)}-point scan to a {target.n_vertices}-vertex surface, one thread "
        "(torch and Open3D limited to 1)"
    )
    angle = res.transform.rotation_angle_deg(truth)
    shift = float(np.linalg.norm(res.transform.translation - truth.translation))
    return [
        PerfRow("procrustes-icp", "seconds", seconds, "s", "< 1 s", seconds < 1.0, f"{size}; wall"),
        PerfRow("procrustes-icp", "CPU seconds", cpu, "s", "< 1 s", cpu < 1.0, size),
        PerfRow("procrustes-icp", "ICP iterations", res.iterations, "", note=size),
        PerfRow(
            "procrustes-icp",
            "rotation error",
            angle,
            "deg",
            note="vs the known pose; scan noise 0.1 mm, landmark noise 1 mm",
        ),
        PerfRow("procrustes-icp", "translation error", shift, "mm", note="vs the known pose"),
    ]


@register("render", "differentiable render, 224 x 224, of a 35k-vertex face mesh on one core")
def render_entry(quick: bool) -> list[PerfRow]:
    import torch

    from facehd.mesh import vertex_normals
    from facehd.render import CpuBackend, Renderer, gamma_to_sh, hrn_camera

    mesh = _face_mesh(5_000 if quick else 35_709)  # the BFM's vertex count
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    colors = 0.4 + 0.4 * torch.rand(len(verts), 3, generator=g)
    sh = gamma_to_sh(0.1 * torch.randn(1, 27, generator=g))
    weights = torch.randn(1, 224, 224, 3, generator=g)
    camera = hrn_camera(1.0, dtype=torch.float32)
    renderer = Renderer(camera, CpuBackend("zbuffer", threads=1))
    raycast = Renderer(camera, CpuBackend("raycast", threads=1))

    def forward() -> None:
        with torch.no_grad():
            renderer.render(verts, faces, colors=colors, sh=sh)

    def forward_backward() -> None:
        v = verts.clone().requires_grad_(True)
        c = colors.clone().requires_grad_(True)
        s = sh.clone().requires_grad_(True)
        res = renderer.render(v, faces, colors=c, sh=s)
        (res.image * weights).sum().backward()

    def rasterize() -> None:
        with torch.no_grad():
            renderer.rasterize(verts, faces)

    def rasterize_raycast() -> None:
        with torch.no_grad():
            raycast.rasterize(verts, faces)

    def normals() -> None:
        with torch.no_grad():
            vertex_normals(verts, faces)

    with single_thread():
        forward_backward()  # warm-up (Open3D import, allocator)
        rasterize_raycast()
        fwd_cpu, fwd_wall, _ = _cpu_and_wall(forward, repeat=7)
        fb_cpu, fb_wall, _ = _cpu_and_wall(forward_backward, repeat=7)
        rast_cpu, _, _ = _cpu_and_wall(rasterize, repeat=7)
        rc_cpu, _, _ = _cpu_and_wall(rasterize_raycast, repeat=3)
        nrm_cpu, _, _ = _cpu_and_wall(normals, repeat=7)
        covered = int(renderer.rasterize(verts, faces).mask.sum())
    size = (
        f"{len(verts)} vertices, {len(faces)} triangles, {covered} covered pixels of 224 x 224, "
        "float32, vertex colours + SH, per-pixel shading, one thread"
    )
    cpu_note = f"{size}; CPU time (robust to machine load)"
    ms = 1e3
    return [
        PerfRow("render", "forward", fwd_cpu * ms, "ms", "< 30 ms", fwd_cpu < 0.03, cpu_note),
        PerfRow(
            "render", "forward + backward", fb_cpu * ms, "ms", "< 100 ms", fb_cpu < 0.1, cpu_note
        ),
        PerfRow("render", "forward, wall", fwd_wall * ms, "ms", note=size),
        PerfRow("render", "forward + backward, wall", fb_wall * ms, "ms", note=size),
        PerfRow(
            "render",
            "rasterize (z-buffer)",
            rast_cpu * ms,
            "ms",
            note="CPU time: visibility + differentiable barycentrics (part of forward)",
        ),
        PerfRow(
            "render",
            "rasterize (Open3D ray casting)",
            rc_cpu * ms,
            "ms",
            note="CPU time: the same fragments with visibility from Open3D's Embree scene "
            "(build + cast; the BVH build dominates)",
        ),
        PerfRow(
            "render",
            "vertex normals",
            nrm_cpu * ms,
            "ms",
            note="CPU time of facehd.mesh.vertex_normals (part of forward)",
        ),
    ]

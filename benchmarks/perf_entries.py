"""Speed of the benchmark protocols (``facehd perf bench-now bench-realy bench-facescape``).

Each entry scores one image on meshes of realistic size: a 100k-vertex ground-truth head scan and
a 35k-vertex prediction (``quick``: 10k and 3.5k), built procedurally (a head with nose, eye
sockets, brow, lips, chin and cheekbones, as a grid over azimuth and elevation) so no data files
are needed. Times are seconds per image on one core (Open3D and BLAS limited to one thread), with
the meshes already in memory; reading a 100k-vertex OBJ adds its own time (reported separately).

Targets (issue 4): NoW under 1 s, FaceScape under 2 s, REALY (all four regions) under 4 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from facehd.perf import PerfRow, register, single_thread, timeit

__all__ = [
    "procedural_head",
    "head_point",
    "head_keypoints85",
    "grid_keypoint_entries",
    "NOW7_ANGLES",
]

_THETA = (-100.0, 100.0)  # azimuth range (deg), 0 = front (+z)
_PHI = (-75.0, 80.0)  # elevation range (deg)
#: (azimuth, elevation, width_azimuth, width_elevation, amplitude mm) of the facial features
_FEATURES = (
    (0.0, -5.0, 7.0, 11.0, 24.0),  # nose
    (-17.0, 12.0, 6.0, 5.0, -6.0),  # eye sockets
    (17.0, 12.0, 6.0, 5.0, -6.0),
    (0.0, 22.0, 28.0, 4.0, 3.0),  # brow ridge
    (0.0, -28.0, 11.0, 4.0, 4.0),  # lips
    (0.0, -45.0, 12.0, 8.0, 5.0),  # chin
    (-35.0, -10.0, 12.0, 12.0, 3.0),  # cheekbones
    (35.0, -10.0, 12.0, 12.0, 3.0),
)
#: NoW's 7 landmarks as (azimuth, elevation): eye corners, nose bottom, mouth corners.
NOW7_ANGLES = np.array(
    [(-28, 12), (-8, 12), (8, 12), (28, 12), (0, -14), (-13, -28), (13, -28)], dtype=np.float64
)


def head_point(theta: np.ndarray, phi: np.ndarray, amps: np.ndarray | None = None) -> np.ndarray:
    """Points of the procedural head at azimuth/elevation (deg); ``amps`` scales the features.

    Returns
    -------
    (..., 3) float64, mm, face towards +z, y up.
    """
    t = np.deg2rad(theta)
    p = np.deg2rad(phi)
    u = np.stack([np.sin(t) * np.cos(p), np.sin(p), np.cos(t) * np.cos(p)], axis=-1)
    r = 1.0 / np.sqrt((u[..., 0] / 75.0) ** 2 + (u[..., 1] / 100.0) ** 2 + (u[..., 2] / 88.0) ** 2)
    amps = np.ones(len(_FEATURES)) if amps is None else np.asarray(amps, dtype=np.float64)
    for (ct, cp, st, sp, a), k in zip(_FEATURES, amps, strict=True):
        r = r + k * a * np.exp(-(((theta - ct) / st) ** 2) - ((phi - cp) / sp) ** 2)
    return r[..., None] * u


def procedural_head(n_vertices: int, amps: np.ndarray | None = None):  # noqa: ANN201 - Mesh
    """The head as a grid mesh with about ``n_vertices`` vertices (outward faces).

    Returns
    -------
    (mesh, theta (V,), phi (V,), (n_theta, n_phi))
    """
    from facehd.mesh import Mesh

    ratio = (_THETA[1] - _THETA[0]) / (_PHI[1] - _PHI[0])
    n_phi = int(round(np.sqrt(n_vertices / ratio)))
    n_theta = int(round(n_phi * ratio))
    th, ph = np.meshgrid(
        np.linspace(*_THETA, n_theta), np.linspace(*_PHI, n_phi), indexing="ij"
    )  # (n_theta, n_phi)
    v = head_point(th, ph, amps).reshape(-1, 3)
    idx = np.arange(n_theta * n_phi).reshape(n_theta, n_phi)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    mesh = Mesh(v, faces)
    if np.mean(np.einsum("ij,ij->i", mesh.face_normals, mesh.vertices[faces[:, 0]])) < 0:
        mesh = Mesh(v, faces[:, [0, 2, 1]])
    return mesh, th.ravel(), ph.ravel(), (n_theta, n_phi)


def head_keypoints85() -> np.ndarray:
    """(85, 2) azimuth/elevation of REALY-style keypoints (iBUG-68 layout plus 17 extras)."""
    kp = []
    for k in range(17):  # jaw
        s = (k - 8) / 8.0
        kp.append((65.0 * s, -20.0 - 28.0 * (1 - s**2)))
    kp += [(-32 + 6.5 * k, 20.0) for k in range(5)] + [(6 + 6.5 * k, 20.0) for k in range(5)]
    kp += [(0.0, 10.0), (0.0, 4.0), (0.0, -2.0), (0.0, -8.0)]
    kp += [(-8.0 + 4.0 * k, -14.0) for k in range(5)]
    angles = np.deg2rad([180, 120, 60, 0, -60, -120])  # outer/inner corner at 180/0 degrees
    for cx in (-18.0, 18.0):
        kp += [(cx + 10.0 * np.cos(a), 12.0 + 3.0 * np.sin(a)) for a in angles]
    kp += [
        (13.0 * np.cos(a), -28.0 + 5.0 * np.sin(a)) for a in np.deg2rad(np.arange(180, -180, -30))
    ]
    kp += [
        (8.0 * np.cos(a), -28.0 + 2.0 * np.sin(a)) for a in np.deg2rad(np.arange(180, -180, -45))
    ]
    kp += [
        (0, 17), (0, 8), (-10, -10), (10, -10), (-20, 35), (20, 35), (0, 40), (0, 28), (-35, -5),
        (35, -5), (-30, -25), (30, -25), (0, -45), (-12, -43), (12, -43), (-45, 15), (45, 15),
    ]  # fmt: skip
    arr = np.asarray(kp, dtype=np.float64)
    assert arr.shape == (85, 2)
    return arr


def grid_keypoint_entries(angles: np.ndarray, shape: tuple[int, int]) -> list[list[float]]:
    """REALY ``[triangle, w0, w1]`` of points given in angles on :func:`procedural_head`'s grid."""
    n_theta, n_phi = shape
    ft = (angles[:, 0] - _THETA[0]) / (_THETA[1] - _THETA[0]) * (n_theta - 1)
    fp = (angles[:, 1] - _PHI[0]) / (_PHI[1] - _PHI[0]) * (n_phi - 1)
    i = np.clip(np.floor(ft).astype(int), 0, n_theta - 2)
    j = np.clip(np.floor(fp).astype(int), 0, n_phi - 2)
    s, t = ft - i, fp - j
    cell = i * (n_phi - 1) + j
    n_cells = (n_theta - 1) * (n_phi - 1)
    out = []
    for c, ss, tt in zip(cell, s, t, strict=True):
        if ss >= tt:  # triangle (a, b, d): a + s (b - a) + t (d - b)
            out.append([int(c), 1.0 - ss, ss - tt])
        else:  # triangle (a, d, c): a + t (c - a) + s (d - c)
            out.append([int(n_cells + c), 1.0 - tt, ss])
    return out


# ------------------------------------------------------------------------------------------


def _sizes(quick: bool) -> tuple[int, int]:
    return (10_000, 3_500) if quick else (100_000, 35_000)


_PRED_AMPS = np.array([0.9, 1.15, 1.1, 0.8, 1.2, 0.85, 1.1, 0.9])


def _random_similarity(seed: int, scale: float):  # noqa: ANN202 - Similarity
    from facehd.transforms import Similarity, rotation_from_axis_angle

    rng = np.random.default_rng(seed)
    return Similarity(
        scale, rotation_from_axis_angle(rng.normal(size=3) * 0.3), rng.normal(size=3) * 30
    )


@register("bench-now", "NoW protocol: seconds per image (100k-vertex scan, 35k prediction)")
def _perf_now(quick: bool) -> list[PerfRow]:
    from benchmarks.now import NowConfig, evaluate_now

    n_gt, n_pred = _sizes(quick)
    scan, *_ = procedural_head(n_gt)
    pred, *_ = procedural_head(n_pred, _PRED_AMPS)
    t = _random_similarity(1, 0.001)
    pred_m = pred.transformed(t)
    lm_gt = head_point(NOW7_ANGLES[:, 0], NOW7_ANGLES[:, 1])
    lm_pred = t.apply(head_point(NOW7_ANGLES[:, 0], NOW7_ANGLES[:, 1], _PRED_AMPS))
    with single_thread():
        res = evaluate_now(scan, lm_gt, pred_m, lm_pred)
        sec = timeit(lambda: evaluate_now(scan, lm_gt, pred_m, lm_pred), 1 if quick else 3)
        minimum = NowConfig(solver="minimum")
        sec_min = timeit(
            lambda: evaluate_now(scan, lm_gt, pred_m, lm_pred, minimum), 1 if quick else 3
        )
        load = _load_seconds(scan)
    note = (
        f"scan {scan.n_vertices} v ({res.distances.size} after crop), "
        f"prediction {pred.n_vertices} v; the official dogleg, {res.iterations} evaluations"
    )
    return [
        PerfRow("bench-now", "seconds per image", sec, "s", "< 1 s", sec < 1.0, note),
        PerfRow(
            "bench-now",
            "seconds per image, --now-solver minimum",
            sec_min,
            "s",
            "",
            None,
            "Levenberg-Marquardt to the minimum",
        ),
        PerfRow(
            "bench-now", "read the scan OBJ", load, "s", "", None, f"{scan.n_vertices} vertices"
        ),
    ]


def _load_seconds(mesh) -> float:  # noqa: ANN001
    from facehd.mesh import load_mesh, save_mesh

    with tempfile.TemporaryDirectory() as tmp:
        path = save_mesh(Path(tmp) / "scan.obj", mesh)
        return timeit(lambda: load_mesh(path), 1)


@register("bench-facescape", "FaceScape protocol: seconds per image (100k GT, 35k prediction)")
def _perf_facescape(quick: bool) -> list[PerfRow]:
    from benchmarks.facescape import Orthographic, evaluate_facescape
    from facehd.mesh import Mesh
    from facehd.transforms import rotation_matrix_from_euler

    n_gt, n_pred = _sizes(quick)
    gt, *_ = procedural_head(n_gt)
    pred, *_ = procedural_head(n_pred, _PRED_AMPS)
    rot = rotation_matrix_from_euler(np.deg2rad([5.0, 20.0, 0.0]))
    centre = np.array([0.0, 0.0, -300.0])
    gt_c = Mesh(gt.vertices @ rot.T + centre, gt.faces)
    pred_c = Mesh(pred.vertices @ rot.T + centre + [0.0, 0.0, 7.0], pred.faces)
    cam = Orthographic(mag=130.0)
    with single_thread():
        res = evaluate_facescape(gt_c, pred_c, cam, rot, centre, depth_scale=128.0 / 130.0)
        sec = timeit(
            lambda: evaluate_facescape(gt_c, pred_c, cam, rot, centre, depth_scale=128.0 / 130.0),
            1 if quick else 3,
        )
    note = f"wild-style, GT {gt.n_vertices} v, prediction {pred.n_vertices} v, CD {res.cd:.3f} mm"
    return [PerfRow("bench-facescape", "seconds per image", sec, "s", "< 2 s", sec < 2.0, note)]


def _realy_case(n_gt: int, n_pred: int):  # noqa: ANN202 - (prediction, topology, subject)
    """REALY ground truth cut from the procedural head (4 regions) and a rough prediction."""
    from benchmarks.realy import RealyRegion, RealySubject, RealyTopology

    gt, th, ph, _ = procedural_head(n_gt)
    pred, _, _, shape = procedural_head(n_pred, _PRED_AMPS)
    kp_angles = head_keypoints85()
    entries = np.asarray(grid_keypoint_entries(kp_angles, shape))
    w = np.stack([entries[:, 1], entries[:, 2], 1.0 - entries[:, 1] - entries[:, 2]], axis=1)
    topo = RealyTopology("procedural", pred.faces, entries[:, 0].astype(np.int64), w)
    scale = 8.0  # ground-truth units -> mm
    boxes = {
        "nose": (np.abs(th) <= 14) & (ph >= -18) & (ph <= 12),
        "mouth": (np.abs(th) <= 22) & (ph >= -38) & (ph <= -19),
        "forehead": (np.abs(th) <= 45) & (ph >= 5) & (ph <= 55) & ~((np.abs(th) <= 5) & (ph <= 12)),
        "cheek": (np.abs(th) >= 15) & (np.abs(th) <= 60) & (ph >= -40) & (ph <= 5),
    }
    gt_units = gt.__class__(gt.vertices / scale, gt.faces)
    regions = {k: RealyRegion.from_mesh(gt_units.subset_vertices(m)[0]) for k, m in boxes.items()}
    kp = head_point(kp_angles[:, 0], kp_angles[:, 1]) / scale
    return pred.transformed(_random_similarity(2, 1.0)), topo, RealySubject(1, kp, regions, scale)


@register("bench-realy", "REALY protocol: seconds per image, 4 regions (100k-vertex scan)")
def _perf_realy(quick: bool) -> list[PerfRow]:
    from benchmarks.realy import evaluate_realy

    cases = [(25_000 if not quick else 6_000, _sizes(quick)[1], "small regions")]
    if not quick:
        cases.append((100_000, 35_000, "regions of a 100k scan"))
    rows = []
    for n_gt, n_pred, label in cases:
        pred, topo, subject = _realy_case(n_gt, n_pred)
        stats: dict = {}
        with single_thread():
            t0 = time.perf_counter()
            res = evaluate_realy(pred, topo, subject, stats=stats)
            sec = time.perf_counter() - t0
        sizes = ", ".join(f"{k} {v.merged.n_vertices}" for k, v in subject.regions.items())
        note = (
            f"regions of a {n_gt}-v scan ({sizes}), prediction {pred.n_vertices} v, "
            f"{stats.get('solves', 0)} sparse solves, {stats.get('factorisations', 0)} "
            f"factorisations, mean {res.mean:.3f} mm"
        )
        if label == "small regions":
            note += "; the official code took 42-47 s on regions of 600-3,600 v (issue 4)"
        rows.append(
            PerfRow(
                "bench-realy", f"seconds per image, {label}", sec, "s", "< 4 s", sec < 4.0, note
            )
        )
    return rows

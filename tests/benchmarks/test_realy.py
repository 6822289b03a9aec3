"""REALY protocol: the official rigid fits, the non-rigid ICP against a stacked least-squares
reference, region ICP and whole-image errors on known cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

from benchmarks.mesh_cholesky import MeshCholesky
from benchmarks.perf_entries import (
    grid_keypoint_entries,
    head_keypoints85,
    head_point,
    procedural_head,
)
from benchmarks.realy import (
    RICP_KEYPOINTS,
    RealyRegion,
    RealySubject,
    RealyTopology,
    _keypoint_repeats,
    _NormalEquations,
    evaluate_realy,
    fit_rt,
    global_alignment,
    load_topology,
    nicp,
    read_obj_faces,
    realy_statistics,
    region_icp,
)
from facehd.distances import SurfaceQuery
from facehd.errors import DegenerateInputError, InputFileError
from facehd.mesh import Mesh, height_field_mesh
from facehd.transforms import Similarity, rotation_from_axis_angle


def test_fit_rt_uses_the_l1_scale_ratio() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(7, 3)) * 30
    dst = rng.normal(size=(7, 3)) * 20
    t = fit_rt(src, dst, with_scale=True)
    s1, t1 = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = np.linalg.svd(t1.T @ s1)
    rot = u @ vt
    scale = np.abs(t1).sum() / np.abs(s1 @ rot.T).sum()
    np.testing.assert_allclose(t.rotation, rot, atol=1e-12)
    assert t.scale == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(t.translation, (dst - scale * src @ rot.T).mean(0), atol=1e-9)
    # differs from Umeyama's least-squares scale on noisy data
    umeyama = np.trace(np.diag(np.linalg.svd(t1.T @ s1, compute_uv=False))) / (s1**2).sum()
    assert abs(t.scale - umeyama) > 1e-3


def test_global_alignment_recovers_a_similarity_from_exact_keypoints() -> None:
    kp = head_point(*head_keypoints85().T)
    true = Similarity(0.125, rotation_from_axis_angle(np.array([0.2, 1.0, -0.3])), [3.0, -1.0, 2.0])
    est = global_alignment(true.inverse().apply(kp), true.apply(true.inverse().apply(kp)) * 1.0)
    np.testing.assert_allclose(est.apply(true.inverse().apply(kp)), kp, atol=1e-9)
    pred_kp = kp * 4.0 @ rotation_from_axis_angle(np.array([0.0, 0.5, 0.0])).T
    est = global_alignment(pred_kp, kp)
    assert est.scale == pytest.approx(0.25, rel=1e-12)  # exact pairs: the L1 ratio is exact


def test_obj_faces_split_quads_as_the_official_reader(tmp_path: Path) -> None:
    p = tmp_path / "t.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 2 0 0\nf 1/1 2/2 3/3 4/4\nf 2 5 3\n")
    np.testing.assert_array_equal(read_obj_faces(p), [[0, 1, 2], [0, 2, 3], [1, 4, 2]])


def test_topology_keypoints_and_bad_files(tmp_path: Path) -> None:
    tpl = tmp_path / "tpl.obj"
    tpl.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    entries = [[k % 2, 0.2 + 0.004 * k, 0.3] for k in range(85)]
    (tmp_path / "tpl.txt").write_text(json.dumps(entries))
    topo = load_topology(tmp_path / "tpl.txt")
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    kp = topo.keypoints(v)
    np.testing.assert_allclose(kp[0], 0.2 * v[0] + 0.3 * v[1] + 0.5 * v[2])
    np.testing.assert_allclose(kp[1], 0.204 * v[0] + 0.3 * v[2] + 0.496 * v[3])
    with pytest.raises(InputFileError, match="does not fit"):
        topo.check_mesh(Mesh(v[:3], np.array([[0, 1, 2]])), tmp_path / "pred.obj")
    (tmp_path / "tpl.txt").write_text(json.dumps(entries[:84]))
    with pytest.raises(InputFileError, match="85 entries"):
        load_topology(tmp_path / "tpl.txt")
    (tmp_path / "tpl.txt").write_text(json.dumps([[5, 0.2, 0.3]] * 85))
    with pytest.raises(InputFileError, match="does not fit its template"):
        load_topology(tmp_path / "tpl.txt")
    # weights outside the triangle; one keypoint given for all (a degenerate file)
    bad = [*entries[:10], [1, 5.0, -7.0], *entries[11:]]
    (tmp_path / "tpl.txt").write_text(json.dumps(bad))
    with pytest.raises(InputFileError, match=r"tpl\.txt: entry 10: weights 5, -7 put"):
        load_topology(tmp_path / "tpl.txt")
    (tmp_path / "tpl.txt").write_text(json.dumps([[0, 0, 0]] * 85))
    with pytest.raises(InputFileError, match=r"tpl\.txt: entry 0 is given 85 times"):
        load_topology(tmp_path / "tpl.txt")


def _reference_nicp(src, dst, faces, kp_idx=None, kp_tgt=None, eps=1.0, gamma=1.0):  # noqa: ANN001, ANN202
    """REALY's non-rigid ICP written literally: stacked sparse A, B and the normal equations."""
    alpha, alpha2, kpw = 50.0, 150.0, 50.0
    n = len(src)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [0, 2]], faces[:, [1, 2]]])
    e = np.unique(np.sort(e, 1), axis=0)
    m = len(e)
    inc = sp.csc_matrix(
        (
            np.r_[np.ones(m), -np.ones(m)],
            (np.r_[np.arange(m), np.arange(m)], np.r_[e[:, 0], e[:, 1]]),
        ),
        shape=(m, n),
    )
    a1 = sp.kron(inc, sp.diags(np.array([1, 1, 1, gamma], np.float32)))
    a1k = sp.kron(inc, sp.diags(np.array([2, 2, 3, 2 * gamma], np.float32)))
    tree = cKDTree(dst)
    cur, cur_x, x, count = src.copy(), np.zeros((4 * n, 3)), np.ones((4 * n, 3)), 0
    with_kp = kp_idx is not None
    for decay in range(4) if with_kp else range(3):
        ca = (
            (alpha2 if decay == 0 else alpha * np.exp(-0.5 * (decay - 1)))
            if with_kp
            else alpha * np.exp(-0.5 * decay)
        )
        ep = eps * 0.5 ** (decay - 1) if with_kp else eps * 0.5**decay
        step = 0
        while not (np.linalg.norm(x - cur_x) <= ep or (with_kp and step > 10)):
            cur_x = x.copy()
            d, idx = tree.query(cur, 1)
            d = d.astype(np.float32)
            rows = np.repeat(np.arange(n), 4)
            dmat = sp.csc_matrix(
                (np.c_[cur, np.ones(n)].ravel(), (rows, np.arange(4 * n))),
                shape=(n, 4 * n),
                dtype=np.float32,
            )
            w = (d < max(np.mean(d) * 2, 1)).astype(np.float32)
            blocks_a, blocks_b = (
                [a1k * ca if with_kp and decay == 0 else a1 * ca],
                [np.zeros((a1.shape[0], 3))],
            )
            if not (with_kp and decay == 0):
                blocks_a.append(dmat.multiply(w[:, None]))
                blocks_b.append(dst[idx] * w[:, None])
            if with_kp:
                kw = np.zeros((n, 1))
                kw[kp_idx] = kpw if decay == 0 else kpw * np.exp(-0.9 * count) / 10
                tgt = dst[idx].copy()
                tgt[kp_idx] = kp_tgt
                blocks_a.append(dmat.multiply(kw))
                blocks_b.append(tgt * kw)
            a = sp.vstack(blocks_a).tocsc()
            b = np.vstack(blocks_b)
            x = spla.spsolve((a.T @ a).tocsc(), a.T @ b)
            cur = np.asarray(dmat @ x)
            step += 1
            count += 1
            if with_kp and decay == 0:
                break
    return cur


def test_normal_equations_solve_equals_a_sparse_lu_solve() -> None:
    """The non-rigid ICP's system (stiffness on the edges, one rank-one data block per vertex)
    solved by the nested-dissection Cholesky equals SuperLU's solve, at each stiffness."""
    rng = np.random.default_rng(11)
    xs = np.linspace(-3, 3, 30)
    mesh = height_field_mesh(0.4 * np.sin(xs)[None, :] * np.cos(xs)[:, None], xs, xs)
    n = mesh.n_vertices
    eq = _NormalEquations(mesh.faces, n)
    chol = MeshCholesky(mesh.vertices, eq.indptr, eq.indices, 4, leaf_size=16)
    assert chol.n_fronts > 10
    d = np.concatenate([mesh.vertices + rng.normal(0, 0.1, (n, 3)), np.ones((n, 1))], axis=1)
    w = (rng.random(n) > 0.2).astype(np.float64)
    rhs = rng.normal(size=(4 * n, 3))
    for stiffness, g2 in [
        (150.0, np.array([4.0, 4.0, 9.0, 4.0])),
        (50.0, np.ones(4)),
        (18.4, np.ones(4)),
    ]:
        h = eq.matrix(stiffness, g2, w[:, None, None] * d[:, :, None] * d[:, None, :])
        chol.factorise(h.data)
        ref = spla.spsolve(h.tocsc(), rhs)
        np.testing.assert_allclose(chol.solve(rhs), ref, rtol=0, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("with_keypoints", [False, True])
def test_nicp_matches_the_stacked_least_squares_reference(with_keypoints: bool) -> None:
    rng = np.random.default_rng(5)
    xs = np.linspace(-3, 3, 24)
    mesh = height_field_mesh(0.4 * np.sin(xs)[None, :] * np.cos(xs)[:, None], xs, xs)
    src = mesh.vertices
    dst = (
        src
        + [0.05, -0.02, 0.1]
        + 0.05 * np.sin(2 * src[:, [1, 2, 0]])
        + rng.normal(0, 0.01, src.shape)
    )
    kp_idx = np.array([30, 100, 250, 333, 400, 480, 520]) if with_keypoints else None
    kp_tgt = src[kp_idx] + [0.05, 0.02, 0.08] if with_keypoints else None
    stats: dict = {}
    ours = nicp(src, dst, mesh.faces, keypoint_index=kp_idx, keypoint_targets=kp_tgt, stats=stats)
    ref = _reference_nicp(src, dst, mesh.faces, kp_idx, kp_tgt)
    np.testing.assert_allclose(ours, ref, atol=1e-7)
    assert stats["solves"] >= 3
    assert np.abs(ours - src).max() > 0.05  # it did deform


@pytest.mark.parametrize("with_keypoints", [False, True])
def test_nicp_matches_the_reference_with_far_correspondences_and_capped_stages(
    with_keypoints: bool,
) -> None:
    """A case that reaches the rules the small one does not: at 10x the size, distances of
    several units, a tenth of the targets thrown far off (beyond twice the mean distance, which
    the rejection rule drops), and a tolerance so small that every stage with keypoints runs to
    its cap of 11 solves."""
    rng = np.random.default_rng(8)
    xs = np.linspace(-30, 30, 20)
    mesh = height_field_mesh(4.0 * np.sin(xs / 10)[None, :] * np.cos(xs / 10)[:, None], xs, xs)
    src = mesh.vertices
    dst = (
        src + [0.8, -0.3, 1.5] + 0.6 * np.sin(src[:, [1, 2, 0]] / 5) + rng.normal(0, 0.2, src.shape)
    )
    far = rng.random(len(dst)) < 0.1
    dst[far] += rng.normal(0, 25.0, (far.sum(), 3))
    kp_idx = np.array([21, 90, 150, 222, 301, 377]) if with_keypoints else None
    kp_tgt = src[kp_idx] + [0.9, 0.4, 1.2] if with_keypoints else None
    eps = 1e-9 if with_keypoints else 1.0
    stats: dict = {}
    ours = nicp(
        src,
        dst,
        mesh.faces,
        keypoint_index=kp_idx,
        keypoint_targets=kp_tgt,
        epsilon=eps,
        stats=stats,
    )
    ref = _reference_nicp(src, dst, mesh.faces, kp_idx, kp_tgt, eps=eps)
    np.testing.assert_allclose(ours, ref, atol=1e-6 * np.abs(ref).max())
    if with_keypoints:
        assert stats["solves"] == 1 + 3 * 11


def _head_subject(n: int, scale: float = 8.0) -> tuple[RealySubject, RealyTopology, Mesh]:
    """GT regions of the procedural head and a topology of the same grid whose keypoints sit
    on grid vertices (so a prediction identical to the ground truth is exactly it)."""
    gt, th, ph, shape = procedural_head(n)
    n_phi = shape[1]
    angles = head_keypoints85()
    ut, up = np.unique(th), np.unique(ph)
    it = np.abs(ut[None, :] - angles[:, :1]).argmin(axis=1)
    ip = np.abs(up[None, :] - angles[:, 1:]).argmin(axis=1)
    snapped = np.stack([ut[it], up[ip]], axis=1)
    kp_vertex = it * n_phi + ip
    e = np.asarray(grid_keypoint_entries(snapped, shape))
    w = np.stack([e[:, 1], e[:, 2], 1.0 - e[:, 1] - e[:, 2]], axis=1)
    topo = RealyTopology("procedural", gt.faces, e[:, 0].astype(np.int64), w)
    np.testing.assert_allclose(topo.keypoints(gt.vertices), gt.vertices[kp_vertex], atol=1e-9)
    boxes = {
        "nose": (np.abs(th) <= 14) & (ph >= -18) & (ph <= 12),
        "mouth": (np.abs(th) <= 22) & (ph >= -38) & (ph <= -19),
        "forehead": (np.abs(th) <= 45) & (ph >= 5) & (ph <= 55) & ~((np.abs(th) <= 5) & (ph <= 12)),
        "cheek": (np.abs(th) >= 15) & (np.abs(th) <= 60) & (ph >= -40) & (ph <= 5),
    }
    units = Mesh(gt.vertices / scale, gt.faces)
    regions = {k: RealyRegion.from_mesh(units.subset_vertices(m)[0]) for k, m in boxes.items()}
    return RealySubject(1, units.vertices[kp_vertex], regions, scale), topo, gt


def test_region_icp_recovers_a_small_rigid_motion() -> None:
    subject, _, gt = _head_subject(4000)
    motion = Similarity(
        1.0, rotation_from_axis_angle(np.array([0.0, 0.02, 0.01])), [0.05, -0.03, 0.02]
    )
    moved = Mesh(motion.apply(gt.vertices / subject.metrical_scale), gt.faces)
    q = SurfaceQuery(moved)
    region = subject.regions["cheek"]
    kp = subject.keypoints
    t, iters = region_icp(q, region.vertices, motion.apply(kp)[[76, 77]], kp[[76, 77]], "cheek")
    back = t.compose(motion)  # should undo the motion
    assert back.rotation_angle_deg() < 0.05
    np.testing.assert_allclose(back.translation, 0.0, atol=0.02)
    assert 1 < iters <= 100


@pytest.mark.parametrize("region, repeats", [("forehead", 40), ("cheek", 10)])
def test_region_icp_steps_are_weighted_rigid_fits_and_the_last_is_not_applied(
    region: str, repeats: int
) -> None:
    """Each iteration is the rigid fit (no scale) of the region's vertices to their closest
    prediction points, with its keypoint pairs each counted ``int(N / K)`` times (a quarter of
    that on the cheek), as a weighted Procrustes fit computes it; with a cap of 1 iteration the
    loop computes two steps and applies the first alone, with a cap of 2 the first two."""
    from facehd.transforms import procrustes

    subject, _, gt = _head_subject(4000)
    motion = Similarity(
        1.0, rotation_from_axis_angle(np.array([0.04, 0.03, -0.02])), [0.1, -0.06, 0.04]
    )
    moved = Mesh(motion.apply(gt.vertices / subject.metrical_scale), gt.faces)
    q = SurfaceQuery(moved)
    src = subject.regions[region].vertices[:400]  # N = 400 vertices, K = 10 keypoints
    assert len(src) == 400
    gk = subject.keypoints[:10]
    pk = motion.apply(gk) + 0.01  # the prediction's keypoints, a little off its surface
    w = np.r_[np.ones(len(src)), np.full(len(gk), float(repeats))]
    target = np.r_[src, gk]

    def step(t: Similarity) -> Similarity:
        cp = q.closest(t.inverse().apply(src), neighbours=False).points
        moving = np.r_[t.apply(cp), t.apply(pk)]
        return procrustes(moving, target, with_scale=False, allow_reflection=True, weights=w)

    first = step(Similarity.identity())
    second = step(first).compose(first)
    for cap, expected in ((1, first), (2, second)):
        t, iters = region_icp(q, src, pk, gk, region, max_iteration=cap)
        assert iters == cap
        assert t.allclose(expected, atol=1e-9), (t, expected)


def test_bidirectional_error_is_the_mean_distance_to_a_tilted_plane() -> None:
    """A flat region over a tilted plane: its closest points are an affine image of it, which
    the non-rigid ICP reaches at no stiffness cost, so each vertex's error is its distance to
    the plane; the region's error is their mean (not, say, their median: the vertices crowd
    where the plane is near)."""
    from benchmarks.realy import bidirectional_error

    xs = np.linspace(0.0, 1.0, 15) ** 2 * 4.0  # crowded near x = 0
    region = RealyRegion.from_mesh(height_field_mesh(np.zeros((15, 15)), xs, np.linspace(0, 4, 15)))
    n = np.array([-0.15, 0.0, 1.0]) / np.linalg.norm([-0.15, 0.0, 1.0])
    plane = height_field_mesh(
        -0.1 + 0.15 * np.linspace(-6, 10, 33)[None, :] * np.ones((33, 1)),
        np.linspace(-6, 10, 33),
        np.linspace(-6, 10, 33),
    )  # z = -0.1 + 0.15 x
    off = np.abs((region.merged.vertices - [0.0, 0.0, -0.1]) @ n)
    assert abs(np.median(off) - off.mean()) > 0.02
    err = bidirectional_error(
        SurfaceQuery(plane),
        Similarity.identity(),
        region,
        "cheek",
        np.zeros((85, 3)),
        np.zeros((85, 3)),
    )
    assert err == pytest.approx(off.mean(), abs=1e-9)


def test_perfect_prediction_scores_zero_and_imperfect_scores_more() -> None:
    subject, topo, gt = _head_subject(6000)
    true = Similarity(2.0, rotation_from_axis_angle(np.array([0.3, -0.4, 0.2])), [10.0, 0, 5])
    res = evaluate_realy(gt.transformed(true), topo, subject)
    assert max(res.errors.values()) < 1e-4  # mm
    assert res.keypoint_rms_mm < 1e-6
    # one keypoint (not one of the 7 that align) 1 mm off: 1 mm / sqrt(85) RMS, in mm whatever
    # the ground truth's units (here 1/8 mm) and the prediction's scale
    moved = gt.vertices.copy()
    moved[np.argmin(np.linalg.norm(gt.vertices - topo.keypoints(gt.vertices)[0], axis=1)), 1] += 1
    off = evaluate_realy(Mesh(moved, gt.faces).transformed(true), topo, subject)
    assert off.keypoint_rms_mm == pytest.approx(1.0 / np.sqrt(85.0), rel=1e-6)
    bumpy, _, _, _ = procedural_head(6000, np.array([0.8, 1.2, 1.2, 0.7, 1.3, 0.8, 1.2, 0.8]))
    res2 = evaluate_realy(bumpy.transformed(true), topo, subject)
    assert all(0.05 < res2.errors[r] < 5.0 for r in res2.errors)
    # each region's transform maps the prediction to the ground truth's frame: the perfect one
    # exactly, the other through its own region ICP after the global alignment
    for r in res.region_transforms:
        np.testing.assert_allclose(
            res.region_transforms[r].apply(gt.transformed(true).vertices),
            gt.vertices / subject.metrical_scale,
            atol=1e-6,
        )
    assert not res2.region_transforms["nose"].allclose(res2.region_transforms["cheek"], atol=1e-6)
    # ... each the global alignment first, then its region's ICP, retraced here step by step
    pred = bumpy.transformed(true)
    gk = np.asarray(subject.keypoints, dtype=np.float64)
    t_global = global_alignment(topo.keypoints(pred.vertices), gk)
    aligned = pred.transformed(t_global)
    kp = topo.keypoints(aligned.vertices)
    for r in res2.region_transforms:
        idx = list(RICP_KEYPOINTS[r])
        region = subject.regions[r].vertices
        t_r, _ = region_icp(SurfaceQuery(aligned), region, kp[idx], gk[idx], r)
        np.testing.assert_allclose(
            res2.region_transforms[r].apply(pred.vertices),
            t_r.apply(t_global.apply(pred.vertices)),
            atol=1e-9,
        )


def test_collapsed_and_flat_predictions_are_named_errors() -> None:
    """A prediction collapsed to a point has no scale to fit (the L1 ratio divides by 0); a
    flat one leaves the non-rigid ICP's normal equations singular (every deformed vertex in
    one plane frees an affine direction). Each is an error naming the cause, not a bare
    ``Similarity`` or Cholesky message."""
    subject, topo, gt = _head_subject(4000)
    point = Mesh(np.repeat(gt.vertices[:1], gt.n_vertices, axis=0), gt.faces)
    with pytest.raises(DegenerateInputError, match="7 alignment keypoints lie at one point"):
        evaluate_realy(point, topo, subject)
    flat = gt.vertices.copy()
    flat[:, 2] = 0.0  # the head seen from the front, pressed onto the image plane
    with pytest.raises(DegenerateInputError, match="non-rigid ICP of the forehead") as info:
        evaluate_realy(Mesh(flat, gt.faces), topo, subject)
    assert "flat or collapsed" in str(info.value)
    assert "not positive definite" in str(info.value)


def test_statistics_ddof1_and_mean_of_region_means() -> None:
    errors = {
        "nose": [1.0, 2.0, 3.0],
        "mouth": [2.0, 2.0, 2.0],
        "forehead": [1.0, 1.0, 4.0],
        "cheek": [0.0, 0.0, 3.0],
    }
    rows = {s.region: s for s in realy_statistics(errors)}
    assert rows["nose"].std == pytest.approx(1.0)  # ddof = 1
    assert rows["forehead"].median == 1.0
    assert rows["all"].mean == pytest.approx((2.0 + 2.0 + 2.0 + 1.0) / 4)
    assert rows["all"].n_images == 3
    # a region scored on fewer images: the "all" row counts the images every region scored
    rows = {s.region: s for s in realy_statistics({**errors, "mouth": [2.0, 2.0]})}
    assert rows["mouth"].n_images == 2 and rows["all"].n_images == 2


def test_keypoint_weights_are_truncated_as_the_official_tool_does() -> None:
    """Each keypoint counts as int(vertices / keypoints) region vertices (a quarter of that for
    the cheek), cut down, not rounded."""
    assert _keypoint_repeats("nose", 20, 3) == 6  # 6.67
    assert _keypoint_repeats("forehead", 29, 10) == 2  # 2.9
    assert _keypoint_repeats("cheek", 100, 3) == 8  # 33.3 / 4 = 8.33
    assert _keypoint_repeats("cheek", 95, 4) == 5  # 23.75 / 4 = 5.94


def test_prediction_names_as_the_official_tool_reads_them(tmp_path: Path) -> None:
    from benchmarks.readers import read_realy_items, realy_name

    # the official tool: subject = int(name.split("_")[0]); other files are not predictions
    for name in ("12_frontal", "3_a_b", "12", "007"):
        assert realy_name(name), name
    for name in ("facehd-synth", "x_12", "12a", "", "_12"):
        assert not realy_name(name), name
    for name in ("12", "2_x", "facehd-synth"):
        (tmp_path / f"{name}.obj").write_text("v 0 0 0\n")
    items = read_realy_items(tmp_path)
    assert sorted((it.name, it.subject_id) for it in items) == [("12", 12), ("2_x", 2)]


def test_facehd_synths_topology_puts_each_keypoint_on_its_vertex() -> None:
    """The built-in REALY topology of facehd-synth, read as REALY reads an entry (``w0 v[f0] +
    w1 v[f1] + (1 - w0 - w1) v[f2]`` on the template, the mean face), lands on each of the 85
    keypoint vertices; so do entries made for other vertices, whichever corner of its triangle
    the vertex is."""
    from benchmarks.synthetic import _topology_entries, synth_keypoints85, synth_realy_topology
    from facehd.morphable import facehd_synth

    model = facehd_synth()
    entries, template = synth_realy_topology(model)
    v, f = template.vertices, template.faces
    np.testing.assert_array_equal(v, np.asarray(model.vertices()))

    def located(rows: list[list[float]]) -> np.ndarray:
        return np.array([w0 * v[f[t, 0]] + w1 * v[f[t, 1]] + (1 - w0 - w1) * v[f[t, 2]]
                         for t, w0, w1 in rows])  # fmt: skip

    np.testing.assert_allclose(located(entries), v[synth_keypoints85(model)], atol=1e-9)
    ids = np.random.default_rng(0).choice(len(v), size=200, replace=False)
    rows = _topology_entries(model, ids)
    np.testing.assert_allclose(located(rows), v[ids], atol=1e-9)
    corners = {
        int(np.flatnonzero(f[int(t)] == i)[0]) for (t, _, _), i in zip(rows, ids, strict=True)
    }
    assert corners == {0, 1, 2}  # each weight is used

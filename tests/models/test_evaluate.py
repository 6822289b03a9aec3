"""Scoring M0, M1, M2 against exact truth, checked on oracle reconstructions built from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hrn_testdata import tiny_config

from facehd.morphable import load_model
from models.evaluate import Truth, detail_scores, evaluate_synthetic, score_levels
from models.reconstruct import Reconstruction, Reconstructor
from models.system import FaceSystem
from pipelines.synth import SynthConfig, make_scan


@pytest.fixture(scope="module")
def oracle():
    """A true face (dense detail at 256 texels) and a 256-texel reconstructor around it."""
    model = load_model("facehd-synth")
    cfg = tiny_config()
    cfg.model.network.high_size = 256
    cfg.template = "facehd-synth"
    recon = Reconstructor(FaceSystem(cfg.model, model, 224), cfg)
    synth = SynthConfig(dense_resolution=256, holes=0, extras=())
    _, gt, m1, m2, _ = make_scan(model, synth, 0, 1)
    truth = Truth("oracle", m1, m2, None)
    m0 = model.vertices(gt["identity"], gt["expression"])
    return recon, truth, gt, m0


def reconstruction(gt, m0, m1, displacement, rotation=None, translation=None) -> Reconstruction:
    s = displacement.shape[0]
    return Reconstruction(
        m0=m0,
        m1=m1,
        rotation=np.eye(3) if rotation is None else rotation,
        translation=np.zeros(3) if translation is None else translation,
        deformation=gt["deformation"],
        displacement=displacement,
        valid=np.ones((s, s), bool),
        texture=np.zeros((s, s, 3)),
        sh=np.zeros((9, 3)),
    )


def test_oracle_levels_rank_as_the_hierarchy_says(oracle):
    recon, truth, gt, m0 = oracle
    disp = gt["displacement"]  # 256 x 256, the reconstructor's size
    rec = reconstruction(gt, m0, truth.m1.vertices, disp)
    n, dist, ang = score_levels(recon, rec, truth, max_points=3000)
    assert n == 3000
    # M0 misses the mid-frequency deformation (mm); M1 only the sub-mm detail; M2 has it all
    assert dist[0] > 0.5 and dist[1] < 0.2 and dist[2] < 0.6 * dist[1]
    assert ang[2] < 0.5 * ang[1] and ang[1] < ang[0]
    # a zero displacement map makes M2 exactly M1 (both on the same texel grid)
    flat = reconstruction(gt, m0, truth.m1.vertices, np.zeros_like(disp))
    _, dist0, ang0 = score_levels(recon, flat, truth, max_points=3000)
    assert dist0[2] == pytest.approx(dist0[1], rel=1e-9)
    assert ang0[2] == pytest.approx(ang0[1], rel=1e-9)
    # and an M0 equal to M1 scores exactly as M1 does: every level on the same texel grid (the
    # model mesh's normals would put M0 about a milliradian off the same face)
    same = reconstruction(gt, truth.m1.vertices, truth.m1.vertices, np.zeros_like(disp))
    _, dist1, ang1 = score_levels(recon, same, truth, max_points=3000)
    assert dist1[0] == pytest.approx(dist1[1], rel=1e-9)
    assert ang1[0] == pytest.approx(ang1[1], rel=1e-9)


def test_scores_ignore_the_frame_of_the_prediction(oracle):
    """A prediction in another canonical frame (rigidly moved) scores the same: alignment."""
    recon, truth, gt, m0 = oracle
    disp = gt["displacement"]
    base = score_levels(
        recon, reconstruction(gt, m0, truth.m1.vertices, disp), truth, max_points=1500
    )
    a = np.radians(12.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    moved = reconstruction(gt, m0 @ rot.T + 30.0, truth.m1.vertices @ rot.T + 30.0, disp)
    other = score_levels(recon, moved, truth, max_points=1500)
    np.testing.assert_allclose(other[1], base[1], rtol=0.05, atol=0.01)
    np.testing.assert_allclose(other[2], base[2], rtol=0.05, atol=0.005)
    # a blurred displacement map (the details at a quarter resolution) scores worse than the truth
    blur = F.interpolate(torch.tensor(disp)[None, None], (64, 64), mode="area")
    blur = F.interpolate(blur, (256, 256), mode="bilinear", align_corners=False)[0, 0].numpy()
    worse = score_levels(
        recon, reconstruction(gt, m0, truth.m1.vertices, blur), truth, max_points=1500
    )
    assert worse[2][2] > base[2][2]


def test_detail_scores_by_uv_correspondence(oracle):
    """The true map correlates perfectly and gives the true normals; none gives M1's; the
    negated map anti-correlates and is worse than none; a rotated frame changes nothing."""
    recon, truth, gt, m0 = oracle
    disp = gt["displacement"]
    truth = Truth(truth.sample_id, truth.m1, truth.m2, None, disp)
    eye = np.eye(3)
    m1 = truth.m1.vertices
    r, n1, n2 = detail_scores(recon, reconstruction(gt, m0, m1, disp), truth, eye)
    assert r == pytest.approx(1.0, abs=1e-9) and n2 == pytest.approx(0.0, abs=1e-6)
    assert n1 > 0.05  # the detail's share of the true normals
    r0, n10, n20 = detail_scores(recon, reconstruction(gt, m0, m1, 0 * disp), truth, eye)
    assert n20 == pytest.approx(n10, abs=1e-12) and n10 == pytest.approx(n1, abs=1e-12)
    rn, _, n2n = detail_scores(recon, reconstruction(gt, m0, m1, -disp), truth, eye)
    assert rn == pytest.approx(-1.0, abs=1e-9) and n2n > n1
    # a half-resolution prediction (upsampled inside) still correlates strongly
    half = F.interpolate(torch.tensor(disp)[None, None], (128, 128), mode="area")[0, 0].numpy()
    rh, _, n2h = detail_scores(recon, reconstruction(gt, m0, m1, half), truth, eye)
    assert 0.5 < rh < 1.0 and n2h < n1
    # the prediction in another canonical frame: its normals are rotated back
    a = np.radians(12.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    moved = reconstruction(gt, m0 @ rot.T, m1 @ rot.T, disp)
    rm, n1m, n2m = detail_scores(recon, moved, truth, rot.T)
    assert rm == pytest.approx(1.0, abs=1e-9) and n2m < 1e-6 and n1m == pytest.approx(n1)
    # no truth map: nothing to score
    bare = Truth(truth.sample_id, truth.m1, truth.m2, None)
    assert all(np.isnan(detail_scores(recon, reconstruction(gt, m0, m1, disp), bare, eye)))


def test_evaluate_a_trained_model_on_held_out_photos(hrn_data, model_path, one_thread):
    recon = Reconstructor.load(model_path)
    rows, summary = evaluate_synthetic(recon, hrn_data.scans, max_points=500, views=1)
    assert len(rows) == 2 and summary.photos == 2  # the first photo of each of the two scans
    assert {r.sample_id for r in rows} == {"s000_e00", "s001_e00"}
    for r in rows:
        assert 0 < r.points <= 500
        assert all(np.isfinite([r.dist_m0, r.dist_m1, r.dist_m2, r.normal_m2]))
    assert summary.dist_m1 == pytest.approx(np.mean([r.dist_m1 for r in rows]))
    # the oracle's FaceScape MNE: M2 of the first photo with the true displacement of the skin
    # each texel shows, placed by M1's alignment, against the truth, rebuilt from the parts
    from dataclasses import replace

    from models.data import align_lab_photo, crop_camera
    from models.evaluate import (
        _align,
        facescape_levels,
        load_truth,
        oracle_displacement,
        read_photos,
    )

    truth = load_truth(hrn_data.scans, rows[0].sample_id)
    photos = read_photos(truth.photos)
    crop = align_lab_photo(photos, rows[0].view, recon.template)
    rec = recon.run_crops(crop["image"][None])[0]
    camera = crop_camera(
        photos["K"][rows[0].view],
        photos["R"][rows[0].view],
        photos["t"][rows[0].view],
        crop["crop_transform"],
    )
    ideal = replace(rec, displacement=oracle_displacement(recon, rec, truth, camera))
    to_truth = _align(rec.m1, truth, np.array(recon.model.regions.fit, dtype=bool))
    by_hand = facescape_levels(truth, [(recon.detail_mesh(ideal), to_truth)])
    assert rows[0].mne_fs_m2_oracle == pytest.approx(by_hand[1], rel=1e-9)
    assert all(0 < r.mne_fs_m2_oracle < 1 for r in rows)
    # placed by the photo's camera: the same levels and oracle, rebuilt from the public parts
    from models.evaluate import camera_levels, level_mesh

    meshes = (
        level_mesh(recon, rec, rec.m0),
        level_mesh(recon, rec, rec.m1),
        recon.detail_mesh(rec),
        recon.detail_mesh(ideal),
    )
    cd0, cd1, cd2, _, mne0, mne1, mne2, mne_o = camera_levels(recon, rec, truth, camera, meshes)
    r = rows[0]
    got = (r.cd_cam_m0, r.cd_cam_m1, r.cd_cam_m2, r.mne_cam_m0, r.mne_cam_m1, r.mne_cam_m2)
    np.testing.assert_allclose(got, (cd0, cd1, cd2, mne0, mne1, mne2), rtol=1e-9)
    assert r.mne_cam_m2_oracle == pytest.approx(mne_o, rel=1e-9)


def test_a_photo_scores_the_same_whatever_else_the_folder_holds(
    hrn_data, model_path, one_thread, tmp_path
):
    """The truth points a photo is scored at are drawn from its sample id and view, not from
    its place among the folder's photos: without the other scan, the same numbers."""
    import shutil

    from models.evaluate import score_seed

    recon = Reconstructor.load(model_path)
    rows, _ = evaluate_synthetic(recon, hrn_data.scans, max_points=500, facescape=False)
    alone = tmp_path / "alone"
    alone.mkdir()
    for f in hrn_data.scans.glob("s001_e00.*"):
        shutil.copy(f, alone / f.name)
    single, _ = evaluate_synthetic(recon, alone, max_points=500, facescape=False)
    before = [r for r in rows if r.sample_id == "s001_e00"]
    assert [r.view for r in single] == [r.view for r in before] == [0, 1]
    for a, b in zip(before, single, strict=True):
        assert (a.dist_m0, a.dist_m2, a.normal_m1) == pytest.approx(
            (b.dist_m0, b.dist_m2, b.normal_m1), rel=1e-12
        )
    assert score_seed("s001_e00", 0) != score_seed("s001_e00", 1)
    assert score_seed("s001_e00", 1) == score_seed("s001_e00", 1)


def test_a_damaged_true_displacement_is_named(hrn_data, tmp_path):
    """A truth file whose displacement map is cut or holds NaN is refused with its name when it
    is read (evaluate then leaves that scan out, naming it), not deep in the scoring."""
    import shutil

    from facehd.errors import InputFileError
    from models.evaluate import load_truth

    for f in hrn_data.scans.glob("s001_e00.*"):
        shutil.copy(f, tmp_path / f.name)
    gt_path = tmp_path / "s001_e00.gt.npz"
    gt = dict(np.load(gt_path))
    assert load_truth(tmp_path, "s001_e00").displacement.shape == gt["displacement"].shape
    cut = dict(gt, displacement=gt["displacement"][:100])
    np.savez(gt_path, **cut)
    with pytest.raises(InputFileError, match=r"gt\.npz: displacement must be a square"):
        load_truth(tmp_path, "s001_e00")
    holed = gt["displacement"].copy()
    holed[10:20, 10:20] = np.nan
    np.savez(gt_path, **dict(gt, displacement=holed))
    with pytest.raises(InputFileError, match=r"gt\.npz: displacement holds NaN"):
        load_truth(tmp_path, "s001_e00")


def _oracle_camera(recon, rec):
    """The truth's photo camera (model frame) that sees the truth exactly as the reconstruction's
    pose and the system's camera see the prediction; an identity crop."""
    from models.data import crop_camera

    cam = recon.system.camera(torch.float64)
    r_cam, t_cam = cam.R[0].numpy(), cam.t[0].numpy()
    return crop_camera(
        cam.K[0].numpy(),
        r_cam @ rec.rotation,
        r_cam @ rec.translation + t_cam,
        np.array([1.0, 0.0, 0.0]),
    )


def test_seen_detail_scores_follow_the_skin_not_the_parameterisation(oracle):
    """A prediction whose M1 and maps slide along the true surface (UV shifted by a few texels)
    is the same face: the seen-point scores stay near perfect, the texel-by-texel ones do not.
    The true map at the true layout is perfect in both; a zero map gives M1's normals."""
    from facehd.uv import rasterize_uv, sample_uv_map, texel_centers_uv
    from models.evaluate import seen_detail_scores

    recon, truth, gt, m0 = oracle
    disp = gt["displacement"]
    truth = Truth(truth.sample_id, truth.m1, truth.m2, None, disp)
    eye = np.eye(3)
    m1 = truth.m1.vertices
    model = recon.model
    rec = reconstruction(gt, m0, m1, disp)
    camera = _oracle_camera(recon, rec)
    r, n1, n2 = seen_detail_scores(recon, rec, truth, eye, camera)
    assert r > 0.97 and n2 < 0.3 * n1
    _, n10, n20 = seen_detail_scores(
        recon, reconstruction(gt, m0, m1, 0 * disp), truth, eye, camera
    )
    assert n20 == pytest.approx(n10, abs=1e-12) and n10 == pytest.approx(n1, abs=1e-12)
    # slide: vertex i sits on the true surface at uv_i + delta, the map is read at u + delta
    delta = np.array([0.012, -0.008])
    uvs = np.asarray(model.uvs, dtype=np.float64)
    pos = rasterize_uv(uvs, model.faces, (512, 512)).interpolate(m1)
    slid_m1 = sample_uv_map(pos, uvs + delta)
    centres = texel_centers_uv(disp.shape).reshape(-1, 2)
    slid_disp = sample_uv_map(disp, centres + delta).reshape(disp.shape)
    slid = reconstruction(gt, m0, slid_m1, slid_disp)
    rs, n1s, n2s = seen_detail_scores(recon, slid, truth, eye, camera)
    ruv, _, n2uv = detail_scores(recon, slid, truth, eye)
    assert rs > 0.9 and n2s < 0.5 * n1s, (rs, n1s, n2s)
    assert ruv < rs - 0.3 and n2uv > 1.5 * n2s, (ruv, n2uv)
    # a negated map anti-correlates
    rn, _, n2n = seen_detail_scores(recon, reconstruction(gt, m0, m1, -disp), truth, eye, camera)
    assert rn < -0.9 and n2n > n1


def test_oracle_displacement_is_the_seen_truth_and_its_gain_shrinks_with_misfit(oracle):
    """With the true M1 the oracle map is the true map and makes M2 far better than M1; on a
    slid parameterisation it is the slid map; with M1 a few mm off (grown 4% about its centre)
    the same perfect details help much less, which is what the column is there to show."""
    from facehd.uv import rasterize_uv, sample_uv_map, texel_centers_uv
    from models.evaluate import oracle_displacement

    recon, truth, gt, m0 = oracle
    disp = gt["displacement"]
    truth = Truth(truth.sample_id, truth.m1, truth.m2, None, disp)
    m1 = truth.m1.vertices
    rec = reconstruction(gt, m0, m1, np.zeros_like(disp))
    camera = _oracle_camera(recon, rec)
    ideal = oracle_displacement(recon, rec, truth, camera)
    assert ideal.shape == disp.shape
    shown = ideal != 0
    assert shown.mean() > 0.2
    assert np.corrcoef(ideal[shown], disp[shown])[0, 1] > 0.97
    _, _, ang = score_levels(recon, reconstruction(gt, m0, m1, ideal), truth, max_points=3000)
    assert ang[2] < 0.6 * ang[1]
    exact_gain = ang[1] - ang[2]
    # slid parameterisation: the oracle reads the truth where each texel's pixel lands
    model = recon.model
    delta = np.array([0.01, 0.006])
    uvs = np.asarray(model.uvs, dtype=np.float64)
    pos = rasterize_uv(uvs, model.faces, (512, 512)).interpolate(m1)
    slid = reconstruction(gt, m0, sample_uv_map(pos, uvs + delta), np.zeros_like(disp))
    slid_ideal = oracle_displacement(recon, slid, truth, camera)
    centres = texel_centers_uv(disp.shape).reshape(-1, 2)
    slid_true = sample_uv_map(disp, centres + delta).reshape(disp.shape)
    on = slid_ideal != 0
    assert np.corrcoef(slid_ideal[on], slid_true[on])[0, 1] > 0.9
    assert np.corrcoef(slid_ideal[on], disp[on])[0, 1] < 0.5
    # a misfit M1: the perfect details land off their skin and gain much less
    from facehd.mesh import vertex_normals

    bumps = 4.0 * np.sin(m1[:, 0] / 9.0) * np.cos(m1[:, 1] / 11.0)
    grown = m1 + bumps[:, None] * vertex_normals(m1, model.faces)
    off = reconstruction(gt, m0, grown, np.zeros_like(disp))
    off_ideal = oracle_displacement(recon, off, truth, camera)
    _, dist_off, ang_off = score_levels(
        recon, reconstruction(gt, m0, grown, off_ideal), truth, max_points=3000
    )
    assert dist_off[1] > 1.0
    assert ang_off[1] - ang_off[2] < 0.5 * exact_gain, (ang_off, exact_gain)


def test_a_score_some_photos_lack_is_averaged_over_the_others_and_bad_npz_named(tmp_path):
    import dataclasses

    from facehd.errors import InputFileError
    from models.evaluate import EvalRow, read_photos, summarise

    n = len(dataclasses.fields(EvalRow)) - 3
    a = EvalRow("a", 0, 10, *([1.0] * n))
    b = dataclasses.replace(EvalRow("b", 0, 10, *([3.0] * n)), disp_pearson=float("nan"))
    s = summarise([a, b])
    assert s.photos == 2 and s.dist_m0 == 2.0 and s.disp_pearson == 1.0
    assert np.isnan(summarise([b]).disp_pearson)
    # the per-photo counts, against a loop over random rows (a row without seen scores is not
    # counted among the seen ones)
    rng = np.random.default_rng(3)
    many = [EvalRow(str(i), 0, 10, *rng.uniform(0.1, 1.0, n)) for i in range(40)]
    many[5] = dataclasses.replace(many[5], normal_seen_m1=float("nan"))
    r7 = many[7]  # a tie is no win (an untrained detail stage draws M2 as M1)
    many[7] = dataclasses.replace(
        r7,
        dist_m1=r7.dist_m0,
        normal_m2=r7.normal_m1,
        normal_seen_m2=r7.normal_seen_m1,
        mne_fs_m2=r7.mne_fs_m1,
        mne_cam_m2=r7.mne_cam_m1,
    )
    s = summarise(many)
    want = [0, 0, 0, 0, 0, 0]
    for r in many:
        want[0] += r.dist_m1 < r.dist_m0
        want[1] += r.normal_m2 < r.normal_m1
        if r.normal_seen_m1 == r.normal_seen_m1:
            want[2] += r.normal_seen_m2 < r.normal_seen_m1
            want[3] += 1
        want[4] += r.mne_fs_m2 < r.mne_fs_m1
        want[5] += r.mne_cam_m2 < r.mne_cam_m1
    got = [
        s.m1_nearer,
        s.m2_normals_better,
        s.m2_seen_better,
        s.seen_photos,
        s.m2_mne_fs_better,
        s.m2_mne_cam_better,
    ]
    assert got == want and want[3] == 39 and 0 < want[0] < 40, (got, want)
    # every score of a row is averaged, under its own name (the summary's fields, in the rows'
    # order after their key, then the counts)
    scores = [f.name for f in dataclasses.fields(EvalRow)][3:]
    names = [f.name for f in dataclasses.fields(s)]
    assert names[0] == "photos" and names[1 : 1 + n] == scores
    for k in scores:
        values = [getattr(r, k) for r in many if getattr(r, k) == getattr(r, k)]
        assert getattr(s, k) == pytest.approx(sum(values) / len(values), rel=1e-12), k
    bad = tmp_path / "x.photos.npz"
    bad.write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(InputFileError, match=r"x\.photos\.npz: not a readable \.npz"):
        read_photos(bad)
    np.savez(bad, images=np.zeros((1, 2, 2, 3)))
    with pytest.raises(InputFileError, match=r"lacks \['landmarks68'"):
        read_photos(bad)


def test_a_level_scores_its_mean_distance_and_normal_error_at_the_truth_points():
    """Distance and normal error of a mesh moved onto the truth by a similarity, at truth points
    spread at uneven distances (so that a median would differ), against trimesh's closest
    points and the mesh's vertex normals interpolated there, turned into the truth's frame."""
    import trimesh

    from facehd.mesh import Mesh
    from facehd.transforms import Similarity, rotation_from_axis_angle
    from models.evaluate import _score_mesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
    mesh = Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    t = Similarity(1.5, rotation_from_axis_angle(np.array([0.2, -0.3, 0.1])), [5.0, -2.0, 9.0])
    rng = np.random.default_rng(12)
    dirs = rng.normal(size=(300, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    local = dirs * (50.0 + rng.exponential(2.0, (300, 1)))  # skewed distances
    pts = t.apply(local)
    nrm = rng.normal(size=(300, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    closest, dist, tri = trimesh.proximity.closest_point(sphere, local)
    assert abs(np.median(dist) - dist.mean()) > 0.1
    bary = trimesh.triangles.points_to_barycentric(sphere.triangles[tri], closest)
    n_pred = np.einsum("nk,nkj->nj", bary, mesh.vertex_normals[mesh.faces[tri]])
    n_pred = n_pred / np.linalg.norm(n_pred, axis=1, keepdims=True) @ t.rotation.T
    angle = np.arccos(np.clip(np.einsum("ij,ij->i", n_pred, nrm), -1.0, 1.0))
    d, a = _score_mesh(mesh, t, pts, nrm)
    assert d == pytest.approx(dist.mean(), abs=1e-9)
    assert a == pytest.approx(angle.mean(), abs=1e-6)


def test_photo_arrays_that_disagree_are_named(tmp_path):
    """A hand-made ``.photos.npz`` whose arrays disagree (one landmark row for two photos, masks
    of another size, NaN cameras) is an error naming the file and the array, where evaluating
    it died with an IndexError after the photos were run."""
    from facehd.errors import InputFileError
    from models.data import check_photo_arrays
    from models.evaluate import read_photos

    good = {
        "images": np.zeros((2, 8, 8, 3), np.uint8),
        "landmarks68": np.zeros((2, 68, 2)),
        "masks": np.zeros((2, 8, 8), bool),
        "K": np.tile(np.eye(3), (2, 1, 1)),
        "R": np.tile(np.eye(3), (2, 1, 1)),
        "t": np.zeros((2, 3)),
    }
    path = tmp_path / "s.photos.npz"
    np.savez(path, **good)
    assert set(read_photos(path)) == set(good)
    for change, said in (
        ({"landmarks68": np.zeros((1, 68, 2))}, r"disagree on the number of photos \(.*68 1"),
        ({"masks": np.zeros((2, 9, 8), bool)}, r"'masks' has shape \(2, 9, 8\), expected"),
        ({"landmarks68": np.zeros((2, 5, 2))}, r"'landmarks68' has shape \(2, 5, 2\)"),
        ({"t": np.full((2, 3), np.nan)}, r"'t' holds NaN"),
        ({k: v[:0] for k, v in good.items()}, r"no photo"),
    ):
        np.savez(path, **{**good, **change})
        with pytest.raises(InputFileError, match=rf"s\.photos\.npz: .*{said}"):
            read_photos(path)
    other = {"albedo": np.zeros(3)}  # arrays that are not per view are left alone
    assert check_photo_arrays(path, other) is other


def test_mean_face_floor(oracle):
    """The mean face is scored as M0 is, at the same points: zero on a truth that is the mean
    face, and further off than the true coefficients' M0 on a subject."""
    from facehd.mesh import Mesh, vertex_normals
    from facehd.uv import displaced_dense_mesh, normal_map, rasterize_uv
    from models.evaluate import score_mean_face

    recon, truth, gt, m0 = oracle
    model = recon.model
    mean = np.asarray(model.vertices(None, None), dtype=np.float64)
    disp = gt["displacement"]
    floor = score_mean_face(recon, reconstruction(gt, m0, truth.m1.vertices, disp), truth, seed=3)
    # the same number as M0's score when M0 is the mean face, at the same points
    as_m0 = reconstruction(gt, mean, truth.m1.vertices, disp)
    _, dist, ang = score_levels(recon, as_m0, truth, seed=3)
    assert floor == pytest.approx((dist[0], ang[0]), rel=1e-9)
    # the true identity and expression are closer to the subject than the mean face
    _, true_dist, _ = score_levels(recon, reconstruction(gt, m0, truth.m1.vertices, disp), truth)
    assert true_dist[0] < floor[0] - 0.5
    # a truth that is the mean face (no deformation, no detail), in another frame: ~no error
    faces = np.asarray(model.faces)
    table = rasterize_uv(model.uvs, faces, (256, 256))
    pos = table.interpolate(mean)
    nrm = normal_map(table, vertex_normals(mean, faces))
    a = np.radians(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    flat = displaced_dense_mesh(pos, nrm, np.zeros((256, 256)), table.mask)
    m1 = Mesh(mean @ rot.T + 5.0, faces, uvs=np.asarray(model.uvs))
    m2 = Mesh(flat.vertices @ rot.T + 5.0, flat.faces, uvs=flat.uvs)
    d, n = score_mean_face(recon, as_m0, Truth("mean", m1, m2, None), seed=3)
    # not exactly zero: the alignment (Kabsch on the model's vertices, then ICP to the dense
    # surface) stops a few microns off
    assert d < 0.02 and n < 0.005


def test_facescape_scores_of_the_levels(oracle):
    """FaceScape's CD and MNE of each level (the paper's Table 3 metrics): the levels rank as
    the hierarchy says on the oracle, a zero displacement map makes M2 score as M1, and a
    prediction in another frame scores the same (the rigid alignment places it)."""
    from models.evaluate import _score_levels

    recon, truth, gt, m0 = oracle
    disp = gt["displacement"]

    def fs(rec):
        return np.array(_score_levels(recon, rec, truth, max_points=500, facescape=True).facescape)

    base = fs(reconstruction(gt, m0, truth.m1.vertices, disp))
    cd, mne = base[:3], base[3:]
    assert cd[2] < cd[1] < cd[0] and mne[2] < mne[1] < mne[0]
    flat = fs(reconstruction(gt, m0, truth.m1.vertices, np.zeros_like(disp)))
    assert flat[2] == pytest.approx(flat[1], rel=1e-9)
    assert flat[5] == pytest.approx(flat[4], rel=1e-9)
    a = np.radians(12.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    moved = fs(reconstruction(gt, m0 @ rot.T + 30.0, truth.m1.vertices @ rot.T + 30.0, disp))
    np.testing.assert_allclose(moved, base, rtol=0.05, atol=0.005)


def test_facescape_levels_on_coaxial_tubes():
    """Analytic case: about a vertical axis, a tube 2 mm wider than the truth's is 2 mm off by
    FaceScape's CD (its facets parallel to the truth's: no normal error); the truth itself,
    moved away and given the transform back, is not off at all."""
    import trimesh

    from facehd.mesh import Mesh
    from facehd.transforms import Similarity
    from models.evaluate import facescape_levels

    centre = np.array([3.0, -2.0, 1.0])

    def tube(r: float) -> Mesh:
        m = trimesh.creation.cylinder(radius=r, height=200.0, sections=256)
        # trimesh's axis is z; the cylindrical maps' is y
        return Mesh(np.asarray(m.vertices)[:, [0, 2, 1]] + centre, np.asarray(m.faces)[:, ::-1])

    truth = Truth("tube", tube(80.0), tube(80.0), None)
    a = np.radians(25.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    away = Similarity(1.0, rot, np.array([10.0, 5.0, -40.0]))
    same = Mesh(away.apply(truth.m2.vertices), truth.m2.faces)
    levels = [(tube(82.0), Similarity.identity()), (same, away.inverse())]
    cd_wide, cd_same, mne_wide, mne_same = facescape_levels(truth, levels)
    # the facets of two similar 256-gons 2 mm apart (at their corners) are 2 cos(pi / 256) apart
    assert cd_wide == pytest.approx(2.0 * np.cos(np.pi / 256), abs=2e-3)
    assert mne_wide < 1e-6
    assert cd_same < 1e-6 and mne_same < 1e-6


def _turn(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_camera_placement_keeps_the_pixels_and_the_relief(oracle):
    """In the reconstruction's own camera the placement is the posed reconstruction itself; in
    a photo camera of another focal length every vertex keeps its pixel and the face its relief
    (mm), at the distance where that camera sees it as large."""
    from models.data import crop_camera
    from models.evaluate import place_in_camera

    recon, truth, gt, m0 = oracle
    rec = reconstruction(
        gt, m0, truth.m1.vertices, gt["displacement"], _turn(10.0), np.array([5.0, -3.0, 20.0])
    )
    camera = _oracle_camera(recon, rec)
    K, R, t = camera.K[0].numpy(), camera.R[0].numpy(), camera.t[0].numpy()
    in_cam = truth.m1.vertices @ R.T + t  # the truth, seen as the reconstruction sees itself
    np.testing.assert_allclose(place_in_camera(recon, rec, rec.m1, camera), in_cam, atol=1e-6)
    k2 = K.copy()
    k2[0, 0] *= 1.7
    k2[1, 1] *= 1.7
    longer = crop_camera(k2, R, t, np.array([1.0, 0.0, 0.0]))
    placed = place_in_camera(recon, rec, rec.m1, longer)

    def pixels(k, v):
        return (v @ k.T)[:, :2] / v[:, 2:]

    np.testing.assert_allclose(pixels(k2, placed), pixels(K, in_cam), atol=1e-6)
    relief = placed[:, 2] - placed[:, 2].mean()
    np.testing.assert_allclose(relief, in_cam[:, 2] - in_cam[:, 2].mean(), atol=1e-6)
    assert placed[:, 2].mean() == pytest.approx(1.7 * in_cam[:, 2].mean(), rel=1e-9)


def test_levels_placed_as_the_protocol_places_them(oracle):
    """FaceScape's scores of the levels placed by the photo's camera and the depth slide: the
    oracle's levels rank as the hierarchy says, its M2 scores as the truth itself and its M1 as
    when aligned rigidly; a pose error counts here (the rigid alignment forgives it); a face 10%
    larger and further along the same rays slides back; one drawn beside the face scores NaN."""
    from models.evaluate import _score_levels, camera_levels, level_mesh

    recon, truth, gt, m0 = oracle
    disp = gt["displacement"]
    turn, shift = _turn(10.0), np.array([5.0, -3.0, 20.0])
    rec = reconstruction(gt, m0, truth.m1.vertices, disp, turn, shift)
    camera = _oracle_camera(recon, rec)

    def placed(r):
        meshes = (level_mesh(recon, r, r.m0), level_mesh(recon, r, r.m1), recon.detail_mesh(r))
        return np.array(camera_levels(recon, r, truth, camera, meshes))

    exact = placed(rec)
    cd, mne = exact[:3], exact[3:]
    assert cd[2] < cd[1] < cd[0] and mne[2] < mne[1] < mne[0]
    # the true M2 in its true camera is the truth: no fit stops short of it (the rigid ICP does)
    assert cd[2] < 1e-4 and mne[2] < 1e-4
    rigid = np.array(_score_levels(recon, rec, truth, max_points=500, facescape=True).facescape)
    np.testing.assert_allclose(exact[[1, 4]], rigid[[1, 4]], rtol=0.05)
    # the head turned 3 degrees more than the photo shows it
    tilted = reconstruction(gt, m0, truth.m1.vertices, disp, _turn(13.0), shift)
    off = placed(tilted)
    assert off[1] > 10 * cd[1] and off[4] > mne[1] + 0.01, (off, exact)
    rigid_off = _score_levels(recon, tilted, truth, max_points=500, facescape=True).facescape
    np.testing.assert_allclose(rigid_off, rigid, rtol=0.1, atol=0.01)
    # 10% larger about the camera's centre: the same pixels, 10% further
    cam = recon.system.camera(torch.float64)
    centre = -cam.R[0].numpy().T @ cam.t[0].numpy()  # the camera's centre, posed frame
    big = reconstruction(
        gt, 1.1 * m0, 1.1 * truth.m1.vertices, 1.1 * disp, turn, 1.1 * shift - 0.1 * centre
    )
    slid = placed(big)
    # one depth shift makes one scale (the protocol's approximation): it undoes the 10% to a
    # fraction of a mm along the rays, where 10% is about a metre at the base model's camera
    assert np.all(np.abs(slid[:3] - cd) < 0.3), (slid, exact)
    np.testing.assert_allclose(slid[3:5], mne[:2], atol=0.005)
    # drawn beside the face in the photo: nothing to place it on, NaN rather than an error
    aside = reconstruction(gt, m0, truth.m1.vertices, disp, turn, shift + [900.0, 0.0, 0.0])
    assert np.all(np.isnan(placed(aside)))

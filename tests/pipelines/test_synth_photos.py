"""Synthetic photos: truth consistent with the pixels, blemish pairs, determinism."""

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pipelines.synth import SynthConfig, synth_scans

CFG = {"subjects": 1, "expressions": 1, "dense_resolution": 120, "photos": 2, "photo_size": 256}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("photos")
    synth_scans(out, SynthConfig(seed=4, **CFG))
    return out, dict(np.load(out / "s000_e00.photos.npz"))


def test_files_and_shapes(photos: tuple[Path, dict]) -> None:
    out, z = photos
    pngs = sorted((out / "photos").glob("*.png"))
    assert [p.name for p in pngs] == ["s000_e00_v00.png", "s000_e00_v01.png"]
    for k, p in enumerate(pngs):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), z["images"][k])
    assert z["images"].shape == (2, 256, 256, 3) and z["images"].dtype == np.uint8
    assert z["crops"].shape == (2, 224, 224, 3)
    assert z["landmarks68"].shape == (2, 68, 2) and z["masks"].shape == (2, 256, 256)
    assert np.all(np.abs(z["pose_deg"][:, 0]) <= 60.0)


def test_cameras_are_proper_and_landmarks_land_on_the_rendered_face(
    photos: tuple[Path, dict],
) -> None:
    _, z = photos
    gt = dict(np.load(photos[0] / "s000_e00.gt.npz"))
    for k in range(2):
        R, t, K = z["R"][k], z["t"][k], z["K"][k]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        # the landmarks are the 3D truth projected with the stored camera
        cam = gt["landmarks68"] @ R.T + t
        np.testing.assert_allclose((cam @ K.T)[:, :2] / cam[:, 2:], z["landmarks68"][k])
        # visible inner-face landmarks (nose, eyes, mouth) fall on skin or eye/mouth pixels of the
        # render: inside the bounding box of the skin mask, and the nose tip on rendered skin
        mask = z["masks"][k]
        rows, cols = np.nonzero(mask)
        inner = z["landmarks68"][k][27:68]
        assert np.all(inner[:, 0] > cols.min() - 2) and np.all(inner[:, 0] < cols.max() + 2)
        assert np.all(inner[:, 1] > rows.min() - 2) and np.all(inner[:, 1] < rows.max() + 2)
        x, y = np.round(z["landmarks68"][k][30]).astype(int)
        assert mask[y - 2 : y + 3, x - 2 : x + 3].any()


def test_scan_frame_cameras_project_the_scan_like_the_model_frame_camera(
    photos: tuple[Path, dict],
) -> None:
    """The scan (random frame, metres or mm) seen through ``scan_R, scan_t`` lands on the same
    pixels as the true M1 through the model-frame camera: a rig calibrated in the scan's frame."""
    from facehd.mesh import load_mesh

    out, z = photos
    gt = dict(np.load(out / "s000_e00.gt.npz"))
    m1 = load_mesh(out / "s000_e00.gt_m1.ply").vertices
    # the M1 vertices as scan-frame points: x_scan = R^T (x_model - t) / s
    scan_pts = (m1 - gt["translation"]) @ gt["rotation"] / gt["scale"]
    for k in range(2):
        K = z["K"][k]
        a = m1 @ z["R"][k].T + z["t"][k]
        b = scan_pts @ z["scan_R"][k].T + z["scan_t"][k]
        np.testing.assert_allclose(z["scan_R"][k] @ z["scan_R"][k].T, np.eye(3), atol=1e-12)
        assert np.all(b[:, 2] > 0)
        pa = (a @ K.T)[:, :2] / a[:, 2:]
        pb = (b @ K.T)[:, :2] / b[:, 2:]
        np.testing.assert_allclose(pb, pa, atol=1e-6)


def test_blemish_pairs_differ_only_at_blemishes(photos: tuple[Path, dict]) -> None:
    _, z = photos
    alpha = z["blemish_mask"]
    assert alpha.max() > 0.3
    same = alpha == 0
    np.testing.assert_array_equal(z["texture"][same], z["texture_blemish"][same])
    spots = alpha > 0.5
    # blemishes are darker than the clean skin under them
    assert np.all(z["texture_blemish"][spots].sum(-1) < z["texture"][spots].sum(-1))
    diff = np.abs(z["images"].astype(int) - z["images_clean"].astype(int)).sum(-1) > 6
    assert diff.any()
    # every clearly different pixel is on the rendered face, most of them on skin
    assert np.all(z["visible"][diff])
    assert z["masks"][diff].mean() > 0.8


def test_same_seed_same_bytes(tmp_path: Path, photos: tuple[Path, dict]) -> None:
    synth_scans(tmp_path, SynthConfig(seed=4, **CFG))
    a = (photos[0] / "s000_e00.photos.npz").read_bytes()
    b = (tmp_path / "s000_e00.photos.npz").read_bytes()
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()


def test_rerun_resumes_without_rebuilding(photos: tuple[Path, dict]) -> None:
    out, _ = photos
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    scans = synth_scans(out, SynthConfig(seed=4, **CFG))
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert before == after and scans[0].n_vertices > 0


def test_cavity_map_darkens_pits_not_bumps() -> None:
    """Ambient occlusion of the synthetic photos: a pit is dark, a bump and flat skin are not."""
    from pipelines.synth_photos import cavity_map

    d = np.zeros((64, 64))
    d[20, 20] = -0.3  # a pore 0.3 mm deep
    d[40, 40] = +0.3  # a raised spot
    c = cavity_map(d, 64)
    assert c[20, 20] == 1.0  # deeper than depth_mm below its blurred surroundings
    assert c[40, 40] == 0.0 and c[5, 5] == 0.0
    assert np.all((c >= 0) & (c <= 1))
    # a shallow groove: partial darkening, proportional to its depth below the surroundings
    g = np.zeros((64, 64))
    g[:, 30] = -0.05
    cg = cavity_map(g, 64)
    assert 0.1 < cg[32, 30] < 0.35 and cg[32, 10] == 0.0
    # resampled to another texture size
    assert cavity_map(d, 128).shape == (128, 128)


def test_scan_frame_camera_with_units_scale() -> None:
    """Scan in metres (x_model_mm = 1000 Q x_scan + c): the same pixels, depth in metres."""
    from facehd.transforms import Similarity
    from pipelines.synth import random_rotation
    from pipelines.synth_photos import cameras_in_scan_frame

    rng = np.random.default_rng(3)
    q, r = random_rotation(rng), random_rotation(rng)
    c, t = rng.normal(size=3) * 100, np.array([5.0, -3.0, 1000.0])
    model_from_scan = Similarity(1000.0, q, c)
    scan = rng.normal(size=(50, 3)) * 0.05
    model = model_from_scan.apply(scan)
    sr, st = cameras_in_scan_frame(r[None], t[None], model_from_scan)
    a = model @ r.T + t
    b = scan @ sr[0].T + st[0]
    np.testing.assert_allclose(b * 1000.0, a, rtol=1e-12, atol=1e-9)


def test_visible_mask_and_crops_follow_from_the_stored_camera(photos: tuple[Path, dict]) -> None:
    """The true M1 seen through the stored camera by an independent ray caster (Open3D, one ray
    per pixel centre) covers exactly the ``visible`` pixels, and each stored crop is the photo
    warped by its stored ``crop_transform``."""
    from facehd._o3d import open3d
    from facehd.align import CropTransform, warp
    from facehd.mesh import load_mesh

    o3d = open3d()
    out, z = photos
    m1 = load_mesh(out / "s000_e00.gt_m1.ply")
    size = z["images"].shape[1]
    rows, cols = np.mgrid[0:size, 0:size]
    pix = np.stack([cols.ravel(), rows.ravel(), np.ones(size * size)], 1)
    for k in range(len(z["images"])):
        K, R, t = z["K"][k], z["R"][k], z["t"][k]
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor((m1.vertices @ R.T + t).astype(np.float32)),
            o3d.core.Tensor(np.asarray(m1.faces, dtype=np.uint32)),
        )
        d = pix @ np.linalg.inv(K).T
        rays = np.concatenate([np.zeros_like(d), d], 1).astype(np.float32)
        prim = scene.cast_rays(o3d.core.Tensor(rays))["primitive_ids"].numpy()
        seen = (prim != scene.INVALID_ID).reshape(size, size)
        assert (seen != z["visible"][k]).sum() <= 2  # float32 rays on silhouette edges
        assert not (z["masks"][k] & ~z["visible"][k]).any()
        scale, tx, ty = z["crop_transform"][k]
        crop = warp(z["images"][k], CropTransform(float(scale), (float(tx), float(ty)), 224))
        np.testing.assert_array_equal(crop, z["crops"][k])


def test_the_key_light_falls_on_the_face_from_the_cameras_side() -> None:
    """Irradiance (facehd's SH basis) of normals facing the camera (+z) beats that of normals
    facing away in nearly every draw, and the light comes from either side and from above or
    below alike. (It used to come from the subject's right in 98% of the photos, and from
    behind the head in half.)"""
    import torch

    from facehd.render.shading import sh_basis
    from pipelines.synth_photos import _random_sh

    normals = torch.tensor(
        [[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]],
        dtype=torch.float64,
    )
    basis = sh_basis(normals).numpy()
    rng = np.random.default_rng(0)
    irr = np.stack([basis @ _random_sh(rng).mean(1) for _ in range(1000)])
    assert (irr[:, 0] > irr[:, 1]).mean() > 0.95  # +z over -z
    assert 0.4 < (irr[:, 2] > irr[:, 3]).mean() < 0.6  # +x over -x
    assert 0.4 < (irr[:, 4] > irr[:, 5]).mean() < 0.6  # +y over -y


def test_head_rotation_is_yaw_then_pitch_then_roll() -> None:
    from scipy.spatial.transform import Rotation

    from pipelines.synth_photos import euler_to_matrix

    rng = np.random.default_rng(1)
    for yaw, pitch, roll in rng.uniform(-60, 60, size=(5, 3)):
        want = Rotation.from_euler("YXZ", [yaw, pitch, roll], degrees=True).as_matrix()
        np.testing.assert_allclose(euler_to_matrix(yaw, pitch, roll), want, atol=1e-12)
    # yawing 90 degrees turns the face (+z) towards the subject's left (+x)
    np.testing.assert_allclose(euler_to_matrix(90, 0, 0) @ [0, 0, 1], [1, 0, 0], atol=1e-12)


def test_albedo_textures_have_skin_grain_and_blemishes_on_the_skin_only() -> None:
    from facehd.morphable import facehd_synth
    from facehd.uv import rasterize_uv
    from pipelines.synth_photos import PhotoConfig, albedo_textures

    synth = facehd_synth()
    # its UV layout shrunk to the middle of the square, leaving texels outside it (as the
    # BFM's layout does; facehd-synth's fills the square)
    model = SimpleNamespace(
        uvs=0.2 + 0.6 * synth.uvs,
        faces=synth.faces,
        albedo=synth.albedo,
        regions=synth.regions,
        n_tex=synth.n_tex,
    )
    config = PhotoConfig(texture_size=128, blemishes=60)
    coeffs = np.zeros(model.n_tex)
    clean, blemished, alpha = albedo_textures(model, coeffs, np.random.default_rng(2), config)
    table = rasterize_uv(model.uvs, model.faces, (128, 128))
    smooth = table.interpolate(np.clip(model.albedo(coeffs), 0, 1))
    # outside the UV layout: the mean albedo, times the grain
    mean = np.clip(model.albedo(coeffs), 0, 1).mean(0)
    ratio = clean[~table.mask] / mean
    assert 0.005 < ratio.std() < 0.05 and abs(ratio.mean() - 1) < 0.01
    ratio = clean[table.mask] / smooth[table.mask]  # a few percent of smoothed grain
    assert 0.005 < ratio.std() < 0.05
    # blemishes: opacity of at most one spot's strength (spots do not add up), on the skin
    assert 0.4 < alpha.max() <= 0.9
    skin = table.interpolate(model.regions.fit.astype(np.float64)) > 0.99
    from scipy.ndimage import binary_dilation

    assert not (alpha[~binary_dilation(skin, iterations=8)] > 0.05).any()
    changed = np.abs(blemished - clean).max(-1) > 1e-6
    assert not (changed & (alpha == 0)).any() and changed.any()
    none = albedo_textures(model, coeffs, np.random.default_rng(2), PhotoConfig(blemishes=0))
    assert not none[2].any() and np.array_equal(none[0], none[1])


def test_cavity_map_is_resampled_bilinearly() -> None:
    """A texture of another size gets the cavity map interpolated, not repeated: new values
    between the native ones appear (nearest-neighbour resampling would only repeat them)."""
    from pipelines.synth_photos import cavity_map

    d = np.zeros((64, 64))
    d[20, 20] = -0.3
    native = cavity_map(d, 64)
    up = cavity_map(d, 96)
    assert up.max() <= 1.0 and up.min() >= 0.0
    assert not np.isin(up, native).all()


def _tiny_camera(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = 1015.0 * size / 224.0
    K = np.array([[f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]])
    return K, np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, 1000.0])


def test_fixed_cameras_and_the_cavity_darkening_of_both_textures() -> None:
    from facehd.morphable import facehd_synth
    from pipelines.synth import SynthConfig, make_scan
    from pipelines.synth_photos import PhotoConfig, cavity_map, render_photos

    model = facehd_synth()
    _, truth, m1, _, _ = make_scan(model, SynthConfig(subjects=1, expressions=1, seed=4), 0, 0)
    camera = _tiny_camera(64)
    args = (model, m1.vertices, truth["displacement"], truth["landmarks68"])

    def photos(cavity: float) -> dict:
        config = PhotoConfig(image_size=64, texture_size=64, cavity=cavity)
        rng = np.random.default_rng(5)
        return render_photos(*args, rng, config, cameras=[camera]).arrays

    dark, flat = photos(0.35), photos(0.0)
    assert dark["images"].shape == (1, 64, 64, 3) and np.isnan(dark["pose_deg"]).all()
    np.testing.assert_array_equal(dark["K"][0], camera[0])
    occlusion = 1.0 - 0.35 * cavity_map(truth["displacement"], 64)
    assert (occlusion < 0.9).any()
    for key in ("texture", "texture_blemish"):
        np.testing.assert_allclose(dark[key], flat[key] * occlusion[..., None], atol=1e-6)

    with pytest.raises(ValueError, match=r"m1_vertices must be \(\d+, 3\)"):
        render_photos(model, m1.vertices[:-1], *args[2:], np.random.default_rng(0), PhotoConfig())
    with pytest.raises(ValueError, match=r"landmarks68 must be \(68, 3\)"):
        render_photos(*args[:3], truth["landmarks68"][:7], np.random.default_rng(0), PhotoConfig())
    with pytest.raises(ValueError, match=r"displacement must be \(Hd, Wd\)"):
        bad = truth["displacement"][None]
        render_photos(model, m1.vertices, bad, *args[3:], np.random.default_rng(0), PhotoConfig())


def test_random_cameras_follow_the_photo_size_and_skin_is_part_of_what_is_seen(
    photos: tuple[Path, dict],
) -> None:
    out, z = photos
    size = z["images"].shape[1]
    for k in range(len(z["K"])):
        K = z["K"][k]
        assert K[0, 2] == K[1, 2] == (size - 1) / 2  # the centre of the pixel grid
        assert 0.9 * 1015 * size / 224 <= K[0, 0] == K[1, 1] <= 1.1 * 1015 * size / 224
        skin, seen = z["masks"][k], z["visible"][k]
        assert not (skin & ~seen).any() and (seen & ~skin).sum() > 0.05 * seen.sum()
    assert not list((out / "photos").glob("*.tmp"))  # every photo renamed into place


def test_side_views_turn_the_head_aside_to_either_side() -> None:
    """``min_yaw_deg`` draws side views: every yaw's magnitude lies in [min, max], both sides
    come up, and the rendered face is turned that way (the nose tip's landmark lies on the
    yaw's side of the eyes' midpoint, by a share of the eye distance that grows with the yaw).
    A minimum above the maximum is refused."""
    from facehd.morphable import facehd_synth
    from pipelines.synth import SynthConfig, make_scan
    from pipelines.synth_photos import PhotoConfig, render_photos

    model = facehd_synth()
    _, truth, m1, _, _ = make_scan(model, SynthConfig(subjects=1, expressions=1, seed=4), 0, 0)
    args = (model, m1.vertices, truth["displacement"], truth["landmarks68"])
    config = PhotoConfig(views=8, image_size=64, texture_size=64, min_yaw_deg=20, max_yaw_deg=45)
    z = render_photos(*args, np.random.default_rng(2), config).arrays
    yaw = z["pose_deg"][:, 0]
    assert np.all((np.abs(yaw) >= 20.0) & (np.abs(yaw) <= 45.0))
    assert (yaw > 0).any() and (yaw < 0).any()
    lm = z["landmarks68"]
    eyes = 0.5 * (lm[:, 36:42].mean(axis=1) + lm[:, 42:48].mean(axis=1))
    eye_distance = np.linalg.norm(lm[:, 36:42].mean(axis=1) - lm[:, 42:48].mean(axis=1), axis=1)
    aside = (lm[:, 30, 0] - eyes[:, 0]) / eye_distance
    assert np.all(np.sign(aside) == np.sign(yaw))
    assert np.all(np.abs(aside) > 0.3)  # heads within 5 degrees of frontal: 0.01-0.14
    order = np.argsort(np.abs(yaw))
    assert np.abs(aside)[order[-1]] > np.abs(aside)[order[0]]
    with pytest.raises(ValueError, match="min_yaw_deg must be in"):
        render_photos(*args, np.random.default_rng(0), PhotoConfig(min_yaw_deg=70.0))

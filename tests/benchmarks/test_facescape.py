"""FaceScape protocol: cylinder maps and meshes, depth maps and alignment, CD and MNE on
analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
from bench_shapes import grid_plane, icosphere, pyrender_renders

from benchmarks.facescape import (
    Orthographic,
    Perspective,
    chamfer_cd,
    cylinder_to_mesh,
    cylindrical_map,
    depth_shift,
    evaluate_facescape,
    lab_groups,
    mean_normal_error,
    place_image_prediction,
    render_depth,
    wild_group,
)
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh
from facehd.transforms import rotation_from_axis_angle


def test_cylinder_map_of_a_sphere_is_its_section_radius() -> None:
    r = 80.0
    cyl = cylindrical_map(icosphere(r, 5), size=64)
    ys = np.linspace(150, -150, 64)
    inside = np.abs(ys) < r - 5
    expected = np.sqrt(r**2 - ys[inside] ** 2)
    # vertices lie on the sphere, facets inside it: within the chord sag (< 0.2 mm here)
    assert np.all(cyl.radius[inside] <= expected[:, None] + 1e-9)
    np.testing.assert_allclose(cyl.radius[inside], expected[:, None] * np.ones(64), atol=0.2)
    assert np.all(cyl.radius[np.abs(ys) > r] == 0)
    # the outermost of two nested spheres
    two = icosphere(r, 4)
    both = Mesh(
        np.concatenate([two.vertices, 0.5 * two.vertices]),
        np.concatenate([two.faces, two.faces + two.n_vertices]),
    )
    np.testing.assert_allclose(cylindrical_map(both, 64).radius, cylindrical_map(two, 64).radius)


def test_cylinder_map_of_an_off_axis_sphere_follows_the_official_grid() -> None:
    """Rays of row ``i`` start at ``y_i`` (150 down to -150 mm) and column ``j`` points at the
    azimuth ``2 pi j / (size - 1)`` (the official 255ths of a turn at 256): against a sphere off
    the axis, where the radius changes with the azimuth, each pixel holds the outermost
    intersection of its ray, solved in closed form."""
    r, size = 80.0, 64
    centre = np.array([25.0, 10.0, -15.0])
    cyl = cylindrical_map(icosphere(r, 5, centre=centre), size=size)
    ys = np.linspace(150, -150, size)
    ang = np.arange(size) * 2 * np.pi / (size - 1)
    d = np.stack([-np.sin(ang), np.zeros(size), -np.cos(ang)], axis=1)  # (size, 3)
    expected = np.zeros((size, size))
    for i, y in enumerate(ys):
        oc = centre - np.array([0.0, y, 0.0])  # from the ray's origin to the centre
        b = d @ oc
        disc = b**2 - oc @ oc + r**2
        if disc.min() > 1.0:  # the origin inside the sphere: every ray leaves it once
            expected[i] = b + np.sqrt(disc)
    rows = expected[:, 0] > 0
    assert rows.sum() > size // 3
    # vertices lie on the sphere, facets inside it: within the chord sag (< 0.3 mm here)
    np.testing.assert_allclose(cyl.radius[rows], expected[rows], atol=0.3)


def test_cylinder_to_mesh_grid_jump_rule_and_bottom_row() -> None:
    cyl = np.zeros((8, 8))
    cyl[2:5, 1:6] = 50.0
    m = cylinder_to_mesh(cyl)
    # a pixel starts 2 triangles when its right, lower and lower-right neighbours are set too
    assert m.n_faces == 2 * (2 * 4)
    phi = 1 * 2 * np.pi / 7
    assert np.any(
        np.all(
            np.isclose(m.vertices, [-50 * np.sin(phi), 150 - 2 * 300 / 7, -50 * np.cos(phi)]),
            axis=1,
        )
    )
    jump = cyl.copy()
    jump[2:5, 3:6] = 70.0  # a 20 mm step between columns 2 and 3
    assert cylinder_to_mesh(jump).n_faces == 2 * (2 * 4) - 2 * 2
    full = np.full((8, 8), 50.0)  # a map covering the last row (and the seam)
    m = cylinder_to_mesh(full)
    assert m.faces.max() < m.n_vertices
    # the bottom row's 16 triangles and the one of pixel (6, 7) reaching past the grid are
    # dropped instead of crashing
    assert m.n_faces == 2 * 8 * 8 - 2 * 8 - 1


def test_cylinder_to_mesh_matches_the_official_loop_face_for_face() -> None:
    """The grid mesh of a ragged map, against a loop written as the official ``cylinder2mesh``
    reads: pixel by pixel in row order, two triangles for each pixel whose lower, right and
    lower-right neighbours (wrapping round) are within 15 mm of it, then the vertices no
    triangle uses dropped in their order; the same vertices and the same faces in the same
    order."""
    rng = np.random.default_rng(4)
    h = w = 12
    cyl = 60.0 + rng.uniform(-3.0, 3.0, (h, w))
    cyl[rng.random((h, w)) < 0.15] = 0.0  # background pixels
    cyl[3, 4] += 20.0  # a jump
    cyl[h - 1, :] = 0.0  # the official loop indexes past the grid from the last row
    faces = []
    for i in range(h):
        for j in range(w):
            c = cyl[i, j]
            near = (cyl[(i + 1) % h, j], cyl[i, (j + 1) % w], cyl[(i + 1) % h, (j + 1) % w])
            if c != 0 and all(abs(c - n) < 15.0 for n in near):
                k = i * w + j
                faces += [(k, k + 1, k + w), (k + w + 1, k + w, k + 1)]
    faces = np.array([f for f in faces if max(f) < h * w])
    used = np.unique(faces)
    phi = np.arange(w) * 2 * np.pi / (w - 1)
    y = -np.linspace(-150.0, 150.0, w)[:, None] * np.ones((1, w))  # the official's y grid
    verts = np.stack(
        [cyl * -np.sin(phi), np.broadcast_to(y, (h, w)), cyl * -np.cos(phi)], axis=2
    ).reshape(-1, 3)
    m = cylinder_to_mesh(cyl)
    np.testing.assert_array_equal(m.faces, np.searchsorted(used, faces))
    np.testing.assert_allclose(m.vertices, verts[used], atol=1e-12)


def test_plane_against_offset_plane_chamfer_is_the_offset() -> None:
    d = 1.75
    a = grid_plane(30, 100.0)
    b = grid_plane(30, 100.0, z=d)
    assert chamfer_cd(a, b) == pytest.approx(d, abs=1e-9)


def test_chamfer_against_trimesh_on_random_meshes() -> None:
    import trimesh

    rng = np.random.default_rng(2)
    a = icosphere(40.0, 2)
    b = Mesh(
        icosphere(43.0, 2).vertices + rng.normal(scale=1.0, size=(162, 3)), icosphere(1, 2).faces
    )
    ta = trimesh.Trimesh(a.vertices, a.faces, process=False)
    tb = trimesh.Trimesh(b.vertices, b.faces, process=False)
    ref = np.concatenate(
        [tb.nearest.on_surface(a.vertices)[1], ta.nearest.on_surface(b.vertices)[1]]
    ).mean()
    assert chamfer_cd(a, b) == pytest.approx(ref, abs=1e-6)


def test_normal_error_of_a_known_rotation() -> None:
    theta = np.deg2rad(12.0)
    rot = rotation_from_axis_angle(np.array([0.0, theta, 0.0]))
    plane = grid_plane(60, 120.0, z=60.0)  # in front of the axis, facing +z
    turned = Mesh(plane.vertices @ rot.T, plane.faces)
    a = cylindrical_map(plane, 64)
    b = cylindrical_map(turned, 64)
    n, m = np.array([0.0, 0.0, 1.0]), rot @ [0.0, 0.0, 1.0]
    expected = np.arccos((n + 1) @ (m + 1) / np.linalg.norm(n + 1) / np.linalg.norm(m + 1))
    assert mean_normal_error(a.normals, b.normals) == pytest.approx(expected, abs=1e-9)
    assert expected < theta  # the official transform shrinks the angle
    # identical normals: 0, not NaN (the official arccos of 1 + 4e-16)
    assert mean_normal_error(a.normals, a.normals) == 0.0


def test_normal_error_is_the_mean_over_pixels_both_maps_hit() -> None:
    """Against a pixel-by-pixel loop of the official formula on random normal maps with holes:
    the pixels where either map is empty are left out, and the rest are averaged."""
    rng = np.random.default_rng(9)
    a = rng.normal(size=(20, 24, 3))
    b = a + rng.normal(scale=0.6, size=a.shape)
    a /= np.linalg.norm(a, axis=2, keepdims=True)
    b /= np.linalg.norm(b, axis=2, keepdims=True)
    a[rng.random((20, 24)) < 0.2] = 0.0
    b[rng.random((20, 24)) < 0.2] = 0.0
    angles = []
    for i in range(20):
        for j in range(24):
            if a[i, j].any() and b[i, j].any():
                u = (a[i, j] + 1) / np.linalg.norm(a[i, j] + 1)
                v = (b[i, j] + 1) / np.linalg.norm(b[i, j] + 1)
                angles.append(np.arccos(min(1.0, max(-1.0, float(u @ v)))))
    assert 200 < len(angles) < 20 * 24
    assert mean_normal_error(a, b) == pytest.approx(np.mean(angles), rel=1e-12)


def test_cylinder_scores_take_meshes_or_their_maps() -> None:
    """A ground truth mapped once scores each prediction as its mesh does (the analytic CD of
    coaxial tubes is in tests/models/test_evaluate.py); a larger sphere about the same centre is
    hit by every ray that hits the smaller one."""
    from facehd.cylinder import cylinder_scores

    gt, pred = icosphere(80.0, 5), icosphere(83.0, 5)
    by_mesh = cylinder_scores(gt, pred, 64)
    by_map = cylinder_scores(cylindrical_map(gt, 64), cylindrical_map(pred, 64))
    assert by_map == by_mesh
    assert by_mesh.cd > 3.0 and by_mesh.cr == 1.0
    with pytest.raises(ValueError, match="different sizes"):
        cylinder_scores(cylindrical_map(gt, 64), pred)  # mapped at the default 256


def test_cylinder_scores_compare_only_the_pixels_both_maps_hit() -> None:
    """A prediction that is the ground truth over half of its pixels: CR one half, and CD and
    MNE zero (both maps are cut to the common pixels before they are compared); a ground truth
    hitting nothing gives NaN, without a warning."""
    import warnings

    from facehd.cylinder import CylinderMap, cylinder_scores

    size = 64
    radius = np.zeros((size, size))
    radius[10:50, :] = 80.0 + np.linspace(0.0, 5.0, size)[None, :]
    normals = np.zeros((size, size, 3))
    normals[radius > 0] = [0.0, 0.0, 1.0]
    gt = CylinderMap(radius, normals)
    half = radius.copy()
    half[:, size // 2 :] = 0.0
    pred = CylinderMap(half, np.where((half > 0)[..., None], normals, 0.0))
    scores = cylinder_scores(gt, pred)
    assert scores.cr == pytest.approx(0.5)
    assert scores.cd == pytest.approx(0.0, abs=1e-9) and scores.mne == pytest.approx(0.0)
    empty = CylinderMap(np.zeros((size, size)), np.zeros((size, size, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nothing = cylinder_scores(empty, pred)
    assert np.isnan(nothing.cr) and np.isnan(nothing.cd) and np.isnan(nothing.mne)


def test_cylinder_to_mesh_cuts_at_a_jump_of_the_threshold_itself() -> None:
    """The official rule keeps a pixel when its jumps are below the threshold: a step of
    exactly 15 cuts the grid there."""
    cyl = np.full((6, 6), 80.0)
    cyl[:, 3:] = 95.0  # a step of exactly 15 between columns 2 and 3
    cyl[:, 5] = 0.0
    kept = cylinder_to_mesh(cyl, threshold=15.0)
    assert kept.n_faces == 2 * 5 * (2 + 1)  # rows 0-4, columns 0-1 and 3
    assert cylinder_to_mesh(cyl, threshold=15.0 + 1e-9).n_faces == 2 * 5 * (3 + 1)
    assert np.isnan(chamfer_cd(kept, Mesh(kept.vertices, np.zeros((0, 3), dtype=np.int64))))
    # a map of other height than width: row i at y = 150 - 300 i / (H - 1)
    tall = cylinder_to_mesh(np.full((5, 8), 80.0))
    assert sorted(set(np.round(tall.vertices[:, 1], 9))) == [-150.0, -75.0, 0.0, 75.0, 150.0]
    np.testing.assert_allclose(np.hypot(tall.vertices[:, 0], tall.vertices[:, 2]), 80.0)


def test_depth_maps_orthographic_perspective_and_culling() -> None:
    plane = grid_plane(11, 400.0, z=-250.0)  # faces +z, towards the orthographic camera
    depth = render_depth(plane, Orthographic(mag=100.0), size=32)
    np.testing.assert_allclose(depth, 250.0)
    back = Mesh(plane.vertices, plane.faces[:, [0, 2, 1]])
    assert np.all(render_depth(back, Orthographic(mag=100.0), size=32) == 0)
    k = np.array([[300.0, 0, 16.0], [0, 300.0, 16.0], [0, 0, 1]])
    front = Mesh(plane.vertices * [1, 1, -1], plane.faces[:, [0, 2, 1]])  # at z = +250, facing -z
    np.testing.assert_allclose(render_depth(front, Perspective(k), size=32), 250.0)


def test_depth_shift_is_the_l1_minimiser() -> None:
    rng = np.random.default_rng(0)
    a = 300.0 + rng.normal(size=(32, 32))
    b = a - 7.25
    b[:20] = 0.0  # empty pixels do not count, in either map, however many
    a[-4:, :] = 0.0
    assert depth_shift(a, b) == pytest.approx(7.25, abs=1e-4)
    # a tenth of the common pixels 40 mm further back: the L1 minimiser stays with the rest
    # (the median), where a least-squares one would move 4 mm towards them
    b[(rng.random(b.shape) < 0.1) & (a != 0) & (b != 0)] -= 40.0
    assert depth_shift(a, b) == pytest.approx(7.25, abs=1e-3)


def test_identical_meshes_score_zero_and_a_depth_offset_is_removed() -> None:
    centre = np.array([0.0, 0.0, -300.0])
    head = icosphere(70.0, 4, centre)
    rot = np.eye(3)
    res = evaluate_facescape(head, head, Orthographic(mag=100.0), rot, centre)
    assert res.cd == pytest.approx(0.0, abs=1e-6)  # float32 ray casting picks the triangle
    # SLSQP stops ~1e-7 mm off; rays grazing an edge may then hit the neighbouring facet
    assert res.mne < 1e-3 and res.cr == 1.0
    shifted = Mesh(head.vertices + [0.0, 0.0, 12.5], head.faces)
    res = evaluate_facescape(head, shifted, Orthographic(mag=100.0), rot, centre, depth_scale=1.28)
    assert res.delta_z / 1.28 == pytest.approx(12.5, abs=1e-3)  # depth gt - depth pred
    assert res.cd < 1e-3
    # lab: a scaled copy slides back along the rays
    k = np.array([[600.0, 0, 128], [0, 600.0, 128], [0, 0, 1]])
    cam_centre = np.array([0.0, 0.0, 700.0])
    lab = icosphere(70.0, 4, cam_centre)
    far = Mesh(lab.vertices * 1.2, lab.faces)
    res = evaluate_facescape(lab, far, Perspective(k), rot, cam_centre)
    # one depth shift (the median of a depth difference proportional to depth, ~ -0.2 x 650 mm)
    # becomes one scale: it undoes the 1.2 almost exactly (unaligned, CD would be ~130 mm)
    assert -140.0 < res.delta_z < -120.0
    assert res.cd < 0.5


def test_a_lab_prediction_beside_its_face_scores_cr_zero() -> None:
    """No pixel shows both meshes: nothing is slid onto the ground truth, the image counts with
    CR 0 and no CD or MNE, as the official slide by the mean depth of no pixel (NaN) leaves it."""
    k = np.array([[600.0, 0, 128], [0, 600.0, 128], [0, 0, 1]])
    cam_centre = np.array([0.0, 0.0, 700.0])
    lab = icosphere(70.0, 4, cam_centre)
    aside = Mesh(lab.vertices + [2000.0, 0.0, 0.0], lab.faces)  # out of the 256-px image
    res = evaluate_facescape(lab, aside, Perspective(k), np.eye(3), cam_centre)
    assert res.cr == 0.0
    assert np.isnan(res.cd) and np.isnan(res.mne) and np.isnan(res.delta_z)
    partly = Mesh(lab.vertices + [30.0, 0.0, 0.0], lab.faces)  # overlaps: scored as before
    res = evaluate_facescape(lab, partly, Perspective(k), np.eye(3), cam_centre)
    assert 0.0 < res.cr and np.isfinite(res.cd)


def test_place_image_prediction_and_groups() -> None:
    px = np.array([[0.0, 0.0, 10.0], [256.0, 256.0, 30.0]])
    v = place_image_prediction(px)
    np.testing.assert_allclose(v[:, :2], [[-1, -1], [1, 1]])
    assert v[:, 2].mean() == pytest.approx(-2.0)
    lab = place_image_prediction(
        np.array([[0.0, 0.0, 0.0], [256.0, 128.0, 0.0], [128.0, 256.0, 0.0]]), 1200.0
    )
    assert lab[:, 1].max() - lab[:, 1].min() == pytest.approx(3.0)
    # every boundary of the official bins: 100 images a yaw bin; views 0 | 1-8 | 9-10
    bins = {0: "0-5", 99: "0-5", 100: "5-30", 199: "5-30", 200: "30-60", 299: "30-60"}
    bins.update({300: "60-90", 399: "60-90"})
    assert {i: wild_group(i) for i in bins} == bins
    views = {0: "0", 1: "30", 8: "30", 9: "60", 10: "60"}
    assert {v: lab_groups(0, v) for v in views} == {v: (a, "f1200") for v, a in views.items()}
    assert lab_groups(1, 3) == (None, "f600")
    assert lab_groups(2, 0) == (None, "f300")
    with pytest.raises(DegenerateInputError, match="no vertical extent"):
        place_image_prediction(np.array([[0.0, 5.0, 0.0], [9.0, 5.0, 1.0]]), 1200.0)


def test_a_turned_head_is_scored_in_its_own_frame() -> None:
    """An egg-shaped head with a nose, turned by a head rotation about an oblique axis: against
    itself it scores zero only when ground truth and prediction are both turned back by that
    rotation; a rotation that is no (3, 3) matrix is refused."""
    centre = np.array([10.0, -5.0, -300.0])
    base = icosphere(1.0, 4, np.zeros(3))
    v = base.vertices * [70.0, 90.0, 60.0]
    v[:, 2] += 25.0 * np.exp(-((v[:, 0] / 15.0) ** 2 + (v[:, 1] / 25.0) ** 2)) * (v[:, 2] > 0)
    axis = np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])
    rot = rotation_from_axis_angle(np.radians(25.0) * axis)
    head = Mesh(v @ rot.T + centre, base.faces)
    res = evaluate_facescape(head, head, Orthographic(mag=100.0), rot, centre)
    # (SLSQP's shift of ~1e-7 mm moves a few rays grazing the silhouette onto other facets)
    assert res.cd < 1e-6 and res.cr > 0.99 and res.mne < 1e-3
    with pytest.raises(ValueError, match=r"rotation must be \(3, 3\)"):
        evaluate_facescape(head, head, Orthographic(mag=100.0), np.eye(4), centre)


def test_a_lab_camera_file_that_is_no_camera_is_named(synth_roots, tmp_path):
    """K with NaN, zero focal lengths or a broken last row, and an Rt whose 3x3 part is no
    rotation, are errors naming the camera file (a scaled rotation scored 12 mm as ok)."""
    import json
    from pathlib import Path

    from benchmarks.readers import read_lab_camera
    from facehd.errors import InputFileError

    cams = sorted((Path(synth_roots["facescape"]) / "data" / "lab_cam").glob("*.json"))
    k, rt = read_lab_camera(cams[0])
    assert np.allclose(rt[:, :3] @ rt[:, :3].T, np.eye(3), atol=1e-6)
    raw = json.loads(cams[0].read_text())

    def broken(edit) -> Path:
        data = json.loads(json.dumps(raw))
        edit(data)
        path = tmp_path / "00_0_01.json"
        path.write_text(json.dumps(data))
        return path

    for edit, said in (
        (lambda d: d[1][0].__setitem__(0, 5.0), "no rotation"),
        (lambda d: [row.__setitem__(0, -row[0]) for row in d[1]], "det < 0"),
        (lambda d: d[0][0].__setitem__(0, float("nan")), "NaN or infinite"),
        (lambda d: d.__setitem__(0, [[0, 0, 0], [0, 0, 0], [0, 0, 1]]), "no pinhole camera"),
        (lambda d: d[0].__setitem__(2, [0, 0, 0]), "no pinhole camera"),
    ):
        with pytest.raises(InputFileError, match=rf"00_0_01\.json: .*{said}"):
            read_lab_camera(broken(edit))


def test_depth_maps_sample_where_pyrender_reads_each_pixel() -> None:
    """A tilted plane, both cameras: each pixel's depth is the plane's at the first sample of
    the standard 4x multisample pattern, 0.375 px right of and 0.125 px above the pixel's
    lower left corner (OpenGL's window, y up), the sample pyrender's depth read-back keeps:
    (column + 0.375, row + 0.875) from the image's top left corner, rows down."""
    grid = grid_plane(31, 800.0, z=0.0)
    x, y = grid.vertices[:, 0], grid.vertices[:, 1]

    def away(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # distance from the camera plane
        return 300.0 + 0.5 * x + 0.25 * y

    plane = Mesh(np.stack([x, y, -away(x, y)], axis=1), grid.faces)
    size, mag = 32, 100.0
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    px = mag * (2.0 * (cols + 0.375) / size - 1.0)
    py = mag * (1.0 - 2.0 * (rows + 0.875) / size)
    depth = render_depth(plane, Orthographic(mag=mag), size=size)
    np.testing.assert_allclose(depth, away(px, py), atol=1e-9)
    # perspective (OpenCV axes, y down): the ray through (column + 0.375, row + 0.875)
    k = np.array([[40.0, 0, 16.0], [0, 40.0, 16.0], [0, 0, 1]])
    flipped = Mesh(plane.vertices * [1, -1, -1], plane.faces)  # z = away(x, -y) > 0, facing -z
    u, v = (cols + 0.375 - 16.0) / 40.0, (rows + 0.875 - 16.0) / 40.0
    # along (u, v, 1) the plane z = 300 + 0.5 x - 0.25 y meets it at z = 300 / (1 - 0.5 u + 0.25 v)
    expected = 300.0 / (1.0 - 0.5 * u + 0.25 * v)
    np.testing.assert_allclose(
        render_depth(flipped, Perspective(k), size=size), expected, atol=1e-9
    )


needs_pyrender = pytest.mark.skipif(
    not pyrender_renders(), reason="pyrender cannot render here (no OpenGL context)"
)


@needs_pyrender
def test_pyrender_depth_maps_match_the_rays_to_the_depth_buffer() -> None:
    """pyrender's depth maps (the official evaluator's) of an off-centre sphere, both cameras:
    the same pixels as the rays' (the camera, its axes and the culling agree), depths within a
    few of the depth buffer's steps (perspective: 24 bits over znear 0.1, ~0.6 mm at 1.3 m;
    orthographic: the official round trip, ~1e-3 mm). Rays at the pixel centres instead lay
    0.2 mm (median) off the orthographic map on the sphere's slopes."""
    k = np.array([[1200.0, 0, 128], [0, 1200.0, 128], [0, 0, 1]])
    ball = icosphere(60.0, 5, np.array([25.0, -40.0, 1300.0]))  # right of and above the axis
    rays = render_depth(ball, Perspective(k))
    gl = render_depth(ball, Perspective(k), renderer="pyrender")
    both = (rays > 0) & (gl > 0)
    assert both.sum() > 5000
    assert ((rays > 0) != (gl > 0)).sum() < 0.02 * both.sum()  # the outline's pixels only
    # the ball's image centre: u = 1200 * 25 / 1300 + 128, v = 1200 * -40 / 1300 + 128 (y down)
    for depth in (rays, gl):
        rows, cols = np.nonzero(depth)
        assert abs(cols.mean() + 0.5 - 151.1) < 1.0 and abs(rows.mean() + 0.5 - 91.1) < 1.0
    inner = both & (rays < 1255.0)  # away from the grazing outline
    diff = gl[inner] - rays[inner]
    # a few steps of the buffer, and an offset of one or two that depends on the driver
    assert np.median(np.abs(diff)) < 2.5 and np.abs(diff).max() < 5.0
    assert len(np.unique(gl[inner])) < 0.2 * inner.sum()  # depths on the buffer's steps
    # wild: the image spans [-1, 1] times the pupil scale (~130 mm), the face near z = -2 x 130
    cam = Orthographic(mag=130.0)
    small = icosphere(90.0, 5, np.array([35.0, 25.0, -260.0]))
    rays = render_depth(small, cam)
    gl = render_depth(small, cam, renderer="pyrender")
    both = (rays > 0) & (gl > 0)
    assert ((rays > 0) != (gl > 0)).sum() < 0.03 * both.sum()
    # x right and y up: column (35 / 130 + 1) * 128, row (1 - 25 / 130) * 128
    for depth in (rays, gl):
        rows, cols = np.nonzero(depth)
        assert abs(cols.mean() + 0.5 - 162.5) < 1.0 and abs(rows.mean() + 0.5 - 103.4) < 1.0
    inner = both & (rays < 240.0)
    diff = np.abs(gl[inner] - rays[inner])
    assert np.median(diff) < 1e-3 and diff.max() < 5e-3  # at pyrender's sample, not the centre


@needs_pyrender
def test_facescape_depth_alignment_by_pyrender_finds_the_same_shift() -> None:
    """A lab prediction 30 mm too far: with pyrender's depth maps the alignment still undoes it,
    within the depth buffer's steps of the exact maps' shift."""
    k = np.array([[1200.0, 0, 128], [0, 1200.0, 128], [0, 0, 1]])
    centre = np.array([10.0, -5.0, 1300.0])
    head = icosphere(70.0, 4, centre)
    far = Mesh(head.vertices * (1330.0 / 1300.0), head.faces)
    exact = evaluate_facescape(head, far, Perspective(k), np.eye(3), centre)
    gl = evaluate_facescape(head, far, Perspective(k), np.eye(3), centre, depth_renderer="pyrender")
    assert -35.0 < exact.delta_z < -25.0
    assert abs(gl.delta_z - exact.delta_z) < 1.0
    assert gl.cd < 1.0 and gl.cr > 0.9


def test_render_depth_refuses_an_unknown_renderer() -> None:
    k = np.array([[300.0, 0, 16.0], [0, 300.0, 16.0], [0, 0, 1]])
    with pytest.raises(ValueError, match="renderer must be one of"):
        render_depth(icosphere(1.0, 1, np.array([0, 0, 5.0])), Perspective(k), 32, renderer="gl")


def test_pyrender_depth_says_when_pyrender_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from facehd.depthmap import check_pyrender

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyrender" else real(name, *a)
    )
    with pytest.raises(RuntimeError, match=r"needs pyrender: pip install 'facehd\[gl\]'"):
        check_pyrender()

"""Tests of face detection and landmark conventions (facehd.detect).

The pure parts run everywhere; detection runs mediapipe on a cartoon face drawn by the test
(``drawn_face.py``) and skips, with the reason, when the optional ``photo`` extra is missing.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from drawn_face import draw_face, feature
from scipy.spatial import Delaunay

from facehd.detect import (
    FIVE_POINT_NAMES,
    FOREHEAD_RISE,
    IBUG68_MIRROR,
    IBUG68_REGIONS,
    MEDIAPIPE_FACE_OVAL,
    MEDIAPIPE_IBUG68_DOWN,
    MEDIAPIPE_IBUG68_OUTWARD,
    MEDIAPIPE_TO_IBUG68,
    TILE_MIN,
    DetectedFace,
    _suppress_overlaps,
    _tile_starts,
    convex_hull_mask,
    face_from_landmark_file,
    given_landmarks,
    landmarks5_from_68,
    landmarks68_from_mediapipe,
    mask_outline,
    mask_outline_68,
    mediapipe_available,
    refine_mask,
    select_main_face,
    unrotate_points,
)

needs_mediapipe = pytest.mark.skipif(
    not mediapipe_available(), reason="mediapipe (the optional 'photo' extra) is not installed"
)

# -- the index tables --------------------------------------------------------------------------


def test_ibug68_table_is_a_valid_injective_map():
    t = np.array(MEDIAPIPE_TO_IBUG68)
    assert t.shape == (68,) and len(set(t.tolist())) == 68
    assert t.min() >= 0 and t.max() < 468
    m = np.array(IBUG68_MIRROR)
    assert sorted(m.tolist()) == list(range(68))
    np.testing.assert_array_equal(m[m], np.arange(68))  # an involution
    # Points on the midline are their own mirror: chin, nose bridge and tip, subnasale, lip middles.
    assert {i for i in range(68) if m[i] == i} == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    spans = sorted(IBUG68_REGIONS.values())
    assert spans[0][0] == 0 and spans[-1][1] == 68
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert len(MEDIAPIPE_FACE_OVAL) == len(set(MEDIAPIPE_FACE_OVAL)) == 36


def test_landmark_selection_shapes_and_values():
    rng = np.random.default_rng(0)
    mesh = rng.normal(size=(2, 478, 3))
    lm = landmarks68_from_mediapipe(mesh)
    assert lm.shape == (2, 68, 3)
    np.testing.assert_array_equal(lm[1, 30], mesh[1, MEDIAPIPE_TO_IBUG68[30]])
    # the corners, blended with the next vertex outward, written out by hand; then the outer eye
    # corners moved 1.5% of the way from the eyes' centre to the mouth's, the mouth corners 0.75%
    for b in range(2):
        m = mesh[b]
        corners = {
            36: 0.5 * (m[33] + m[130]),
            39: 0.5 * (m[133] + m[243]),
            42: 0.5 * (m[362] + m[463]),
            45: 0.5 * (m[263] + m[359]),
            48: 0.7 * m[61] + 0.3 * m[57],
            54: 0.7 * m[291] + 0.3 * m[287],
        }
        eyes = (corners[36] + corners[39] + corners[42] + corners[45]) / 4
        down = (corners[48] + corners[54]) / 2 - eyes
        for point, expected in corners.items():
            if point in (36, 45):
                expected = expected + 0.015 * down
            elif point in (48, 54):
                expected = expected + 0.0075 * down
            np.testing.assert_allclose(lm[b, point], expected, rtol=1e-6, atol=1e-6)
    assert set(MEDIAPIPE_IBUG68_DOWN) == {36, 45, 48, 54}
    plain = set(range(68)) - set(MEDIAPIPE_IBUG68_OUTWARD)
    np.testing.assert_array_equal(
        lm[:, sorted(plain)], mesh[:, [MEDIAPIPE_TO_IBUG68[i] for i in sorted(plain)]]
    )
    lm5 = landmarks5_from_68(lm[..., :2])
    assert lm5.shape == (2, 5, 2)
    np.testing.assert_allclose(lm5[:, 0], 0.5 * (lm[:, 36, :2] + lm[:, 39, :2]))
    np.testing.assert_allclose(lm5[:, 1], 0.5 * (lm[:, 42, :2] + lm[:, 45, :2]))
    np.testing.assert_allclose(lm5[:, 2:], lm[:, [30, 48, 54], :2])
    assert FIVE_POINT_NAMES[2] == "nose_tip"
    with pytest.raises(ValueError, match="468 or 478"):
        landmarks68_from_mediapipe(np.zeros((100, 3)))
    with pytest.raises(ValueError, match="68"):
        landmarks5_from_68(np.zeros((51, 2)))
    face = DetectedFace.from_mesh(mesh[0, :468])  # no iris points: filled with eye centres
    assert face.mesh.shape == (478, 3)
    np.testing.assert_allclose(face.mesh[468], mesh[0, [33, 160, 158, 133, 153, 144]].mean(0))


# -- masks and face choice -----------------------------------------------------------------------


def test_convex_hull_mask_matches_brute_force():
    rng = np.random.default_rng(1)
    pts = rng.uniform([10, 5], [70, 50], size=(30, 2))
    mask = convex_hull_mask(pts, (60, 80))
    ys, xs = np.mgrid[0:60, 0:80]
    ref = Delaunay(pts).find_simplex(np.stack([xs.ravel(), ys.ravel()], 1)) >= 0
    ref = ref.reshape(60, 80)
    # Pixel centres exactly on the hull boundary may go either way.
    assert np.count_nonzero(mask != ref) <= 2
    assert mask.sum() > 1000
    # Points partly outside the image, and degenerate input.
    assert convex_hull_mask(pts - 40, (60, 80)).sum() < mask.sum()
    assert not convex_hull_mask(np.array([[0, 0], [5, 5], [10, 10.0]]), (20, 20)).any()
    assert not convex_hull_mask(pts + 1000, (60, 80)).any()


def test_convex_hull_mask_keeps_pixels_on_its_edges_and_at_the_photos_edges():
    """Pixel centres on the hull's edges are inside (a square with corners on pixel centres
    covers 5 x 5 of them); a hull running past the photo fills it to its last row and column."""
    square = np.array([[2.0, 3.0], [6.0, 3.0], [6.0, 7.0], [2.0, 7.0]])
    mask = convex_hull_mask(square, (12, 10))
    expected = np.zeros((12, 10), bool)
    expected[3:8, 2:7] = True
    np.testing.assert_array_equal(mask, expected)
    big = convex_hull_mask(
        np.array([[5.0, 4.0], [100.0, 4.0], [100.0, 90.0], [5.0, 90.0]]), (20, 30)
    )
    expected = np.zeros((20, 30), bool)
    expected[4:, 5:] = True
    np.testing.assert_array_equal(big, expected)


def _rolled_face(deg: float) -> np.ndarray:
    """68 landmarks of an upright face (chin at the bottom, brows on one row) rolled by ``deg``."""
    rng = np.random.default_rng(2)
    lm = rng.uniform([40, 60], [160, 180], (68, 2))
    lm[17:27] = np.stack([np.linspace(50, 150, 10), np.full(10, 60.0)], 1)  # brows, y = 60
    lm[8] = [100.0, 210.0]  # chin, 150 px below the brows
    a = np.deg2rad(deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (lm - 100.0) @ rot.T + 100.0, rot


@pytest.mark.parametrize("deg", [0.0, 30.0, -90.0])
def test_mask_outline_68_raises_the_brows_along_the_face(deg):
    lm, rot = _rolled_face(deg)
    out = mask_outline_68(lm)
    np.testing.assert_array_equal(out[:68], lm)
    # upright, the forehead row lies FOREHEAD_RISE x 150 px above the brows; rolled, it turns along
    expected = np.stack([np.linspace(50, 150, 10), np.full(10, 60.0 - FOREHEAD_RISE * 150)], 1)
    np.testing.assert_allclose(out[68:], (expected - 100.0) @ rot.T + 100.0, atol=1e-9)


def test_face_from_given_landmarks(tmp_path):
    from facehd.errors import InputFileError
    from facehd.landmarks import save_photo_landmarks

    lm, _ = _rolled_face(0.0)
    face = DetectedFace.from_landmarks68(lm)
    assert not face.has_mesh and np.isnan(face.mesh).all()
    np.testing.assert_array_equal(face.landmarks5, landmarks5_from_68(lm))
    np.testing.assert_array_equal(face.box, [*lm.min(0), *lm.max(0)])
    np.testing.assert_array_equal(face.outline(), mask_outline_68(lm))
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        DetectedFace.from_landmarks68(lm[:51])
    # a detected face keeps the face-mesh outline
    mesh = np.random.default_rng(0).uniform(0, 200, (478, 3))
    detected = DetectedFace.from_mesh(mesh)
    assert detected.has_mesh
    np.testing.assert_array_equal(detected.outline(), mask_outline(mesh))

    # which file a photo's landmarks come from, per mode
    photo = tmp_path / "a.b.jpg"
    assert given_landmarks(photo, "auto") is None and given_landmarks(photo, "detect") is None
    with pytest.raises(InputFileError, match="no landmark file a.b.pts beside the photo"):
        given_landmarks(photo, "given")
    save_photo_landmarks(tmp_path / "a.b.pts", lm)
    assert given_landmarks(photo, "auto") == given_landmarks(photo, "given") == tmp_path / "a.b.pts"
    assert given_landmarks(photo, "detect") is None
    with pytest.raises(ValueError, match="auto, detect or given"):
        given_landmarks(photo, "mediapipe")
    got = face_from_landmark_file(tmp_path / "a.b.pts", (240, 200, 3))
    np.testing.assert_allclose(got.landmarks68, lm, atol=1e-12)
    # landmarks of another, larger photo (or in another scale) are refused
    with pytest.raises(InputFileError, match="far outside the 60x50 photo"):
        face_from_landmark_file(tmp_path / "a.b.pts", (50, 60, 3))
    save_photo_landmarks(tmp_path / "dot.pts", np.full((68, 2), 5.0))
    with pytest.raises(InputFileError, match="within one pixel"):
        face_from_landmark_file(tmp_path / "dot.pts", (240, 200, 3))
    # far outside in y alone (a photo cropped to its top strip) is refused the same way
    with pytest.raises(InputFileError, match="far outside the 200x60 photo"):
        face_from_landmark_file(tmp_path / "a.b.pts", (60, 200, 3))
    bad = lm.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        DetectedFace.from_landmarks68(bad)
    # the box bounds the 468 face points, not the 10 iris points after them
    irises = mesh.copy()
    irises[468:, :2] = -500.0
    box = DetectedFace.from_mesh(irises).box
    np.testing.assert_array_equal(box, [*mesh[:468, :2].min(0), *mesh[:468, :2].max(0)])


def test_refine_mask_cuts_only_when_segmentation_agrees():
    face = np.zeros((10, 10), bool)
    face[2:8, 2:8] = True
    person = np.ones((10, 10), np.float32)
    person[:, 7:] = 0.0  # background eats one column of the face
    np.testing.assert_array_equal(refine_mask(face, person), face & (person > 0.5))
    person[:, 7:] = 0.5  # a probability of one half is not a person
    np.testing.assert_array_equal(refine_mask(face, person), face & (np.arange(10) < 7))
    person[:, 4:] = 0.0  # segmentation lost most of the face: keep the landmark mask
    np.testing.assert_array_equal(refine_mask(face, person), face)
    np.testing.assert_array_equal(refine_mask(face, None), face)
    with pytest.raises(ValueError, match="shape"):
        refine_mask(face, np.ones((5, 5)))


def test_select_main_face_prefers_large_and_central():
    size = (1000, 1000)
    central_small = [450, 450, 550, 550]
    corner_large = [0, 0, 300, 300]
    central_large = [350, 350, 650, 650]
    assert select_main_face(np.array([corner_large, central_large]), size) == 1
    assert select_main_face(np.array([central_small, corner_large]), size) == 1
    assert select_main_face(np.array([central_small, [0, 0, 110, 110]]), size) == 0
    with pytest.raises(ValueError):
        select_main_face(np.zeros((0, 4)), size)
    # equal boxes: the one centred on the middle pixel (5 of 0..10) wins over one 0.9 px off
    boxes = np.array([[3.9, 3.9, 7.9, 7.9], [3.0, 3.0, 7.0, 7.0]])  # centres 5.9 and 5.0
    assert select_main_face(boxes, (11, 11)) == 1


def test_convex_hull_mask_of_points_with_nan_is_empty():
    pts = np.array([[2.0, 2.0], [30.0, 4.0], [12.0, 25.0], [np.nan, 5.0]])
    assert not convex_hull_mask(pts, (40, 40)).any()
    assert convex_hull_mask(pts[:3], (40, 40)).any()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_unrotate_inverts_rot90(k):
    img = np.zeros((7, 11))
    pts = np.array([[9.0, 1.0, 0.5], [0.0, 6.0, 0.0], [3.0, 3.0, 2.0]])
    rotated_pts = []
    for x, y, _ in pts:
        img[:] = 0
        img[int(y), int(x)] = 1
        yy, xx = np.argwhere(np.rot90(img, k) == 1)[0]
        rotated_pts.append([xx, yy, 0.0])
    back = unrotate_points(np.array(rotated_pts, dtype=float), k, img.shape)
    np.testing.assert_array_equal(back[:, :2], pts[:, :2])


# -- mediapipe -----------------------------------------------------------------------------------


def test_missing_mediapipe_names_the_extra(monkeypatch):
    from facehd import detect

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(ImportError, match=r"facehd\[photo\]"):
        detect.FaceDetector()
    assert not detect.mediapipe_available()


@pytest.fixture(scope="module")
def detector():
    if not mediapipe_available():
        pytest.skip("mediapipe (the optional 'photo' extra) is not installed")
    from facehd.detect import FaceDetector

    with FaceDetector() as det:
        yield det


@needs_mediapipe
def test_table_uses_mediapipes_own_feature_contours():
    import mediapipe as mp

    c = mp.solutions.face_mesh_connections

    def verts(edges):
        return {v for e in edges for v in e}

    t = MEDIAPIPE_TO_IBUG68
    assert set(t[0:17]) <= verts(c.FACEMESH_FACE_OVAL)
    assert set(MEDIAPIPE_FACE_OVAL) == verts(c.FACEMESH_FACE_OVAL)
    assert set(t[17:22]) <= verts(c.FACEMESH_RIGHT_EYEBROW)
    assert set(t[22:27]) <= verts(c.FACEMESH_LEFT_EYEBROW)
    assert set(t[27:36]) - {168} <= verts(c.FACEMESH_NOSE)
    assert set(t[36:42]) <= verts(c.FACEMESH_RIGHT_EYE)
    assert set(t[42:48]) <= verts(c.FACEMESH_LEFT_EYE)
    assert set(t[48:68]) <= verts(c.FACEMESH_LIPS)


@needs_mediapipe
def test_detects_the_drawn_face_with_landmarks_on_its_features(detector):
    img = draw_face(512)
    faces = detector.detect_all(img)
    assert len(faces) == 1
    face = faces[0]
    for i, name in enumerate(FIVE_POINT_NAMES):
        err = np.linalg.norm(face.landmarks5[i] - feature(name))
        assert err < 12.0, (name, face.landmarks5[i], feature(name))
    # Eye centres sit inside the drawn eyes (sclera 60 x 26 px).
    for i, name in ((0, "right_eye"), (1, "left_eye")):
        dx, dy = np.abs(face.landmarks5[i] - feature(name))
        assert dx < 15 and dy < 8
    assert np.linalg.norm(face.landmarks68[8] - feature("chin")) < 15
    # The image left eye is the subject's right: iBUG 36-41 lie left of 42-47.
    assert face.landmarks68[36:42, 0].max() < face.landmarks68[42:48, 0].min()
    assert face.landmarks68[19, 1] < face.landmarks68[37, 1] < face.landmarks68[30, 1]
    assert face.landmarks68[30, 1] < face.landmarks68[51, 1] < face.landmarks68[57, 1]


@needs_mediapipe
def test_corner_blends_move_the_corners_outwards(detector):
    """Each blended corner moves away from its feature's centre along the line of its two corners,
    by part of the distance to its outward vertex: outer canthi and mouth corners away from the
    midline, inner canthi towards it."""
    f = detector.detect(draw_face(512))
    m, t = f.mesh[:, :2], MEDIAPIPE_TO_IBUG68
    pairs = {36: 39, 39: 36, 42: 45, 45: 42, 48: 54, 54: 48}
    assert set(MEDIAPIPE_IBUG68_OUTWARD) == set(pairs)
    for point, (vertex, weight) in MEDIAPIPE_IBUG68_OUTWARD.items():
        assert 0 < weight < 1
        # the outward vertex of a point's mirror is the mirror image of the point's outward
        # vertex (the drawn face is symmetric about x = 255.5)
        mirror_vertex = MEDIAPIPE_IBUG68_OUTWARD[IBUG68_MIRROR[point]][0]
        assert MEDIAPIPE_IBUG68_OUTWARD[IBUG68_MIRROR[point]][1] == weight
        reflected = np.array([511.0 - m[mirror_vertex, 0], m[mirror_vertex, 1]])
        assert np.linalg.norm(reflected - m[vertex]) < 4.0, (point, vertex, mirror_vertex)
        gap = m[vertex] - m[t[point]]
        axis = m[t[point]] - m[t[pairs[point]]]
        axis /= np.linalg.norm(axis)
        assert gap @ axis > 0.6 * np.linalg.norm(gap), (point, vertex)  # outwards, along the line
        blended = m[t[point]] + weight * gap
        shift = f.landmarks68[point] - blended
        if point in MEDIAPIPE_IBUG68_DOWN:
            # then moved a little towards the chin (image down on this upright face): 1.5% of
            # the eye-mouth distance at the eyes (2-3 px here), half that at the mouth
            assert shift[1] > 0.9 * np.linalg.norm(shift), (point, shift)
            low, high = (1.0, 5.0) if point in (36, 45) else (0.5, 2.5)
            assert low < np.linalg.norm(shift) < high, (point, shift)
        else:
            np.testing.assert_allclose(shift, 0.0, atol=1e-9)


@needs_mediapipe
def test_table_is_mirror_consistent_on_a_symmetric_face(detector):
    """The mirror of iBUG point i, found in the mirrored photo, lands on point i itself."""
    img = draw_face(512)
    f = detector.detect(img)
    g = detector.detect(np.ascontiguousarray(img[:, ::-1]))
    mirrored = g.landmarks68[list(IBUG68_MIRROR)].copy()
    mirrored[:, 0] = 511 - mirrored[:, 0]
    err = np.linalg.norm(mirrored - f.landmarks68, axis=1)
    assert np.median(err) < 2.5 and err.max() < 6.0, err.round(1)


@needs_mediapipe
def test_several_faces_main_one_chosen(detector):
    img = np.full((600, 900, 3), (70, 90, 110), np.uint8)
    img[40:552, 200:712] = draw_face(512, seed=1)
    img[380:572, 720:900] = draw_face(192, seed=2)[:, :180]
    faces = detector.detect_all(img)
    assert len(faces) == 2
    main = detector.detect(img)
    assert main.size == max(f.size for f in faces)
    np.testing.assert_allclose(main.landmarks5[0], feature("right_eye") + [200, 40], atol=12)


@pytest.mark.parametrize("n,side", [(3000, 1000), (2000, 500), (1001, 500), (500, 500), (777, 384)])
def test_tiles_cover_the_photo_half_overlapping(n, side):
    starts = _tile_starts(n, side)
    covered = np.zeros(n, bool)
    for a in starts:
        assert 0 <= a and a + side <= n
        covered[a : a + side] = True
    assert covered.all()
    assert all(0 < b - a <= side // 2 for a, b in zip(starts, starts[1:], strict=False))


def test_overlapping_boxes_keep_the_strongest():
    boxes = [
        np.array([0.6, 100.0, 100.0, 40.0, 40.0]),
        np.array([0.9, 105.0, 102.0, 40.0, 40.0]),  # IoU with the first ~0.66
        np.array([0.7, 300.0, 100.0, 40.0, 40.0]),  # apart
        np.array([0.8, 128.0, 100.0, 40.0, 40.0]),  # IoU with the second ~0.22: kept
    ]
    kept = _suppress_overlaps(boxes)
    assert [b[0] for b in kept] == [0.9, 0.8, 0.7]


@needs_mediapipe
def test_tiny_face_in_a_very_large_photo_is_found_by_tiles(detector):
    """A face 64 px wide in a 3000 x 2000 photo is too small for the detectors on the whole
    photo; the tiled search finds it, with its landmarks on the drawn features."""
    img = np.full((2000, 3000, 3), (70, 90, 110), np.uint8)
    img[1200:1264, 1900:1964] = draw_face(64, seed=3)
    assert detector._run_mesh(detector._mesh, img) == []
    assert detector._mesh_in_boxes(img, detector._boxes(img)) == []
    assert 2000 // 2 >= TILE_MIN
    face = detector.detect(img)
    for i, name in ((0, "right_eye"), (1, "left_eye")):
        np.testing.assert_allclose(face.landmarks5[i], feature(name, 64) + [1900, 1200], atol=3)


@needs_mediapipe
@pytest.mark.parametrize("size", [(200, 3000), (600, 4000), (3000, 200)])
def test_a_face_in_a_narrow_strip_is_found_by_tiles_of_its_height(detector, size):
    """A panorama (or a tall strip) whose short side is under twice the smallest tile: the whole
    photo shows its face at a few pixels, and half its height is below the smallest tile, so it
    is searched in squares of the smallest tile, or of its short side."""
    h, w = size
    face_px = min(200, min(h, w) // 2)
    y0, x0 = (h - face_px) // 2, min(w // 3, 1000)
    if h > w:  # a tall strip: the face a third of the way down
        y0, x0 = min(h // 3, 1000), (w - face_px) // 2
    img = np.full((h, w, 3), (150, 140, 120), np.uint8)
    img[y0 : y0 + face_px, x0 : x0 + face_px] = draw_face(face_px, seed=3)
    assert min(h, w) // 2 < TILE_MIN
    assert detector._mesh_in_boxes(img, detector._boxes(img)) == []
    face = detector.detect(img)
    for i, name in ((0, "right_eye"), (1, "left_eye")):
        np.testing.assert_allclose(
            face.landmarks5[i], feature(name, face_px) + [x0, y0], atol=0.03 * face_px
        )


@needs_mediapipe
def test_small_face_in_a_large_photo_and_no_face(detector):
    img = np.full((1600, 1600, 3), (70, 90, 110), np.uint8)
    img[1300:1428, 100:228] = draw_face(128, seed=3)
    face = detector.detect(img)
    np.testing.assert_allclose(face.landmarks5[0], feature("right_eye", 128) + [100, 1300], atol=5)
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3)).astype(np.uint8)
    assert detector.detect_all(noise) == []
    from facehd.detect import NoFaceError

    with pytest.raises(NoFaceError, match="no face"):
        detector.detect(noise)


@needs_mediapipe
@pytest.mark.parametrize("k", [1, 2, 3])
def test_turned_photo_is_detected_upright(detector, k):
    img = draw_face(512)
    upright = detector.detect(img)
    turned = detector.detect(np.ascontiguousarray(np.rot90(img, k)))
    expected = unrotate_points(np.c_[turned.landmarks5, np.zeros(5)], k, img.shape[:2])[:, :2]
    np.testing.assert_allclose(expected, upright.landmarks5, atol=1.0)


@needs_mediapipe
def test_person_probability(detector):
    img = draw_face(256)
    p = detector.person_probability(img)
    assert p.shape == (256, 256) and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(img.astype(np.float32))


@needs_mediapipe
def test_small_face_on_a_plain_backdrop_is_not_taken_for_a_turned_one(detector):
    # A face 150 px wide in a 3000 x 2000 photo: the whole-photo detector finds nothing upright
    # and scores a turned copy; at the face's scale (the tiles) upright wins.
    img = np.full((2000, 3000, 3), (90, 110, 100), np.uint8)
    img[400:550, 1800:1950] = draw_face(150, seed=3)
    assert detector.orientation(img) == 0
    face = detector.detect(img)
    np.testing.assert_allclose(face.landmarks5[0], feature("right_eye", 150) + [1800, 400], atol=5)


@needs_mediapipe
def test_small_face_turned_in_a_large_photo_is_turned_upright(detector):
    img = np.full((2000, 3000, 3), (90, 110, 100), np.uint8)
    img[400:700, 1800:2100] = draw_face(300, seed=3)
    turned = np.ascontiguousarray(np.rot90(img, 2))
    k, face = detector.detect_upright(turned)
    assert k == 2
    # in the photo turned upright, the face is where it was drawn
    np.testing.assert_allclose(face.landmarks5[0], feature("right_eye", 300) + [1800, 400], atol=6)
    # detect() gives it in the pixels of the photo as given
    back = detector.detect(turned).landmarks5
    np.testing.assert_allclose(unrotate_points(face.landmarks5, 2, turned.shape[:2]), back)


@needs_mediapipe
@pytest.mark.parametrize("backdrop", ["plain", "gradient"])
def test_a_sideways_face_scoring_high_in_the_whole_photo_is_turned_upright(detector, backdrop):
    """A face turned a quarter, 300-600 px wide in a 3000 x 2000 photo: the whole-photo detector
    scores it 0.75 or more as it lies, which kept the photo sideways; at the face's own scale,
    in crops around it, it scores highest turned upright."""
    if backdrop == "plain":
        img = np.full((2000, 3000, 3), (190, 46, 134), np.uint8)
        img[1151:1751, 1895:2495] = draw_face(600, seed=1)
    else:
        ramp = np.tile(np.linspace(60, 200, 3000).astype(np.uint8), (2000, 1))
        img = np.repeat(ramp[..., None], 3, axis=2)
        img[101:401, 1163:1463] = draw_face(300, seed=3)
    assert detector.orientation(img) == 0
    assert detector.orientation(np.ascontiguousarray(np.rot90(img, 1))) == 3
    assert detector.orientation(np.ascontiguousarray(np.rot90(img, 3))) == 1


@needs_mediapipe
@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("size", "box"),
    [(512, (190, 410, 130, 382)), (2048, (190, 410, 130, 382)), (512, (230, 390, 170, 342))],
    ids=["small", "large", "tighter"],
)
def test_a_face_larger_than_its_photo_is_found_in_any_turn(detector, size, box, k):
    """Crops cutting the drawn face's forehead, chin and cheeks (rows and columns ``box`` of
    the 512 px drawing, scaled with it: 252 x 220 px, 1008 x 880 of the 2048 px drawing, and
    172 x 160 px; tight crops of a face, as aligned crops are): the full-range detector boxes
    nothing in the small ones in any turn, and the face mesh finds nothing in any as given.
    The photo itself is then the face's box: its turns are scored in crops around it, and the
    mesh fitted in a crop twice its size around it (in a copy shrunk to 384 px, for the large
    one), where the eyes land where they were drawn; the tighter crop's face is not found in a
    crop of the photo's own size."""
    f = size // 512
    y0, y1, x0, x1 = (v * f for v in box)
    crop = draw_face(size)[y0:y1, x0:x1]
    turned = np.ascontiguousarray(np.rot90(crop, k))
    if size == 512:
        assert all(detector._boxes(np.ascontiguousarray(np.rot90(crop, q))) == [] for q in range(4))
    assert detector._run_mesh(detector._mesh, turned) == []
    assert detector.orientation(turned) == (-k) % 4
    face = detector.detect(turned)
    eyes = unrotate_points(face.landmarks5, k, crop.shape[:2])[:2] if k else face.landmarks5[:2]
    drawn = np.stack([feature("right_eye", size), feature("left_eye", size)]) - [x0, y0]
    np.testing.assert_allclose(eyes, drawn, atol=7 * f)
    if box[0] == 230 and k == 0:
        h, w = crop.shape[:2]
        own_size = np.array([1.0, w / 2, h / 2, max(h, w) / 2, max(h, w) / 2])
        assert detector._mesh_in_boxes(np.ascontiguousarray(crop), [own_size]) == []


@needs_mediapipe
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_a_tight_crop_is_not_turned_by_boxes_on_parts_of_its_face(detector, k):
    """A tight crop of the drawn face, 584 x 540 px: the full-range detector boxes nothing in the
    whole photo in any turn, but one tile of the search for small faces (the photo turned upside
    down) shows part of the face and boxes it. Scored alone, that box turned the upright photo
    upside down (and each turn of it a half turn off); with the whole photo scored as a candidate
    too, every turn comes upright, and the eyes land where they were drawn."""
    y0, x0 = 300, 220
    crop = draw_face(1024, seed=1)[y0:840, x0:804]
    turned = np.ascontiguousarray(np.rot90(crop, k))
    turns = [np.ascontiguousarray(np.rot90(turned, q)) for q in range(4)]
    assert all(detector._boxes(t) == [] for t in turns)
    assert any(detector._tile_boxes(t) for t in turns)
    assert detector.orientation(turned) == (-k) % 4
    face = detector.detect(turned)
    eyes = unrotate_points(face.landmarks5, k, crop.shape[:2])[:2] if k else face.landmarks5[:2]
    drawn = np.stack([feature("right_eye", 1024), feature("left_eye", 1024)]) - [x0, y0]
    np.testing.assert_allclose(eyes, drawn, atol=10)


def _synthetic_wild_photo(folder, seed: int, name: str) -> np.ndarray:
    """Wild photo ``name`` (256 px RGB) of facehd-synth's FaceScape benchmark of ``seed``, one
    subject per yaw group, written under ``folder``."""
    from PIL import Image

    from benchmarks.synthetic import make_synthetic_benchmark

    root = make_synthetic_benchmark(
        "facescape", folder, seed=seed, n_subjects=1, lab_views=(0,), lab_focals=(0,)
    )
    return np.asarray(Image.open(root / "data" / "wild_image" / f"{name}.jpg").convert("RGB"))


@needs_mediapipe
@pytest.mark.parametrize(("seed", "name"), [(9, "300"), (1, "200")])
def test_a_turned_face_found_in_no_turn_is_not_turned_on_the_whole_photo(
    detector, tmp_path, seed, name
):
    """Synthetic photos of faces turned far aside, upright, 256 px (facehd-synth's FaceScape
    wild photos; 300 of seed 9 in profile, 200 of seed 1 at 30-60 degrees): no detector box in
    any turn. In the crops around the whole photo a quarter turn scores above upright, but the
    profile's best turn scores under WHOLE_PHOTO_TURN_SCORE (too faint to turn a photo on), and
    in the other the face mesh finds the face as it is given (so it is not a face filling the
    photo, larger than the detector finds): neither is turned."""
    from facehd.detect import WHOLE_PHOTO_TURN_SCORE

    photo = _synthetic_wild_photo(tmp_path, seed, name)
    turns = [np.ascontiguousarray(np.rot90(photo, q)) for q in range(4)]
    assert all(detector._boxes(t) == [] and detector._tile_boxes(t) == [] for t in turns)
    scores = detector._whole_photo_scores(photo)
    assert scores[1:].max() > scores[0] + detector.orientation_margin
    meshes = detector._run_mesh(detector._mesh, photo)
    if name == "300":
        assert meshes == [] and 0 < scores[1:].max() < WHOLE_PHOTO_TURN_SCORE
    else:
        assert len(meshes) == 1 and scores[1:].max() > WHOLE_PHOTO_TURN_SCORE
    assert detector.orientation(photo) == 0


@needs_mediapipe
def test_a_mesh_around_the_whole_photo_that_spans_little_of_it_is_not_taken(detector, tmp_path):
    """facehd-synth's FaceScape wild photo 300 of seed 13 (a profile, 256 px): nothing finds
    its face, but the face mesh fitted in a crop twice the photo's size around it draws one
    spanning half the photo: no face filling the photo, so it is dropped, and the photo fails
    with NoFaceError rather than giving landmarks fitted loosely."""
    from facehd.detect import WHOLE_PHOTO_MIN_EXTENT, NoFaceError

    photo = _synthetic_wild_photo(tmp_path, 13, "300")
    (raw,) = detector._mesh_in_boxes(photo, [np.array([1.0, 128.0, 128.0, 256.0, 256.0])])
    assert 0.3 < np.ptp(raw[:468, :2], axis=0).max() / 256 < WHOLE_PHOTO_MIN_EXTENT
    assert detector._run_mesh(detector._mesh, photo) == []
    assert detector._mesh_in_whole_photo(photo) == []
    with pytest.raises(NoFaceError):
        detector.detect(photo)


@needs_mediapipe
def test_a_small_face_found_in_the_whole_photo_is_fitted_again_in_a_crop(detector, monkeypatch):
    """The whole-photo face mesh fits a face a few hundred pixels wide in a large photo loosely;
    such a face is fitted again in a crop around it (a large one is not), and lands where drawn."""
    from facehd.detect import REFIT_BELOW

    calls = []
    original = detector._mesh_in_boxes

    def recording(image, boxes):
        calls.append([b.copy() for b in boxes])
        return original(image, boxes)

    monkeypatch.setattr(detector, "_mesh_in_boxes", recording)
    img = np.full((1200, 1600, 3), (90, 110, 100), np.uint8)
    img[240:540, 960:1260] = draw_face(300, seed=3)  # 300 px: under REFIT_BELOW of 1200
    assert 300 < REFIT_BELOW * 1200
    (face,) = detector.detect_all(img)  # (detect also fits it in crops for its spread)
    assert len(calls) == 1
    ((_, cx, cy, w, h),) = calls[0]
    assert abs(cx - 1110) < 40 and abs(cy - 390) < 60 and 150 < w < 330
    np.testing.assert_allclose(face.landmarks5[0], feature("right_eye", 300) + [960, 240], atol=5)
    calls.clear()
    detector.detect_all(draw_face(512))  # the face fills the photo: its whole-photo fit is kept
    assert calls == []


def test_mirrored_landmark_files_are_refused(tmp_path):
    """The model's mean face drawn in an image (x right, y down), turned any way, is a face;
    its points with x and y swapped, or relabelled left for right, are its mirror image."""
    from facehd.detect import IBUG68_MIRROR, mirrored_landmarks
    from facehd.errors import InputFileError
    from facehd.landmarks import save_photo_landmarks
    from facehd.morphable import load_model

    model = load_model("facehd-synth")
    p = np.asarray(model.landmarks(model.mean_shape))[:, :2] * model.unit_to_mm
    face = np.stack([p[:, 0], -p[:, 1]], axis=1) * 1.5 + 120.0  # y down, in a 240 px photo
    centre = face.mean(0)
    for deg in (0, 37, 90, 180, 250):
        a = np.radians(deg)
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        turned = (face - centre) @ r.T + centre
        assert not mirrored_landmarks(turned), deg
        assert mirrored_landmarks(turned[:, ::-1]), deg  # x and y swapped
        assert mirrored_landmarks(turned[list(IBUG68_MIRROR)]), deg  # left for right
    save_photo_landmarks(tmp_path / "ok.pts", face)
    assert face_from_landmark_file(tmp_path / "ok.pts", (240, 240, 3)).landmarks68.shape == (68, 2)
    # the same file beside a smaller copy of the photo (2/3 of its size): every point lies
    # within twice its size, but most fall outside it
    n_out = int(((face > 160.0).any(axis=1)).sum())
    assert n_out > 34 and face.max() < 320.0
    with pytest.raises(InputFileError, match=rf"ok\.pts: {n_out} of its 68 landmarks lie outside"):
        face_from_landmark_file(tmp_path / "ok.pts", (160, 160, 3))
    # a face cut by the photo's lower edge (its chin below it) is kept
    low = face[:, 1].max()
    cut_h = int(np.ceil(face[:, 1].max() - 0.2 * np.ptp(face[:, 1])))
    assert 0 < int((face[:, 1] > cut_h).sum()) <= 34 and low > cut_h
    got = face_from_landmark_file(tmp_path / "ok.pts", (cut_h, 240, 3))
    np.testing.assert_allclose(got.landmarks68, face, atol=1e-4)
    save_photo_landmarks(tmp_path / "swapped.pts", face[:, ::-1])
    with pytest.raises(InputFileError, match=r"swapped\.pts: the landmarks are a mirror image"):
        face_from_landmark_file(tmp_path / "swapped.pts", (240, 240, 3))


@needs_mediapipe
def test_landmark_spread_is_small_for_a_face_found_wherever_it_lies_in_the_photo(detector):
    """A drawn face found by the detector: the face mesh, fitted again in the nearby crops,
    gives its landmarks back to a few hundredths of the eye distance, whether the face lies in
    a photo of its own size, off-centre in a larger one, or in that photo enlarged 2.5 times
    (the crops are cut from a copy in which the face has one size)."""
    from PIL import Image

    from facehd.detect import MAX_LANDMARK_SPREAD

    face = draw_face(320, seed=1)
    canvas = np.full((600, 800, 3), (120, 140, 130), np.uint8)
    canvas[91:411, 437:757] = face
    big = np.asarray(Image.fromarray(canvas).resize((2000, 1500), Image.Resampling.BICUBIC))
    spreads = []
    for photo in (face, canvas, big):
        found = detector.detect(photo)
        spreads.append(detector.landmark_spread(photo, found))
    assert max(spreads) < 0.05 < MAX_LANDMARK_SPREAD
    assert max(spreads) - min(spreads) < 0.02


@needs_mediapipe
@pytest.mark.parametrize("enlarged", [1, 3])
def test_landmark_spread_is_the_refits_distance_in_eye_distances(detector, monkeypatch, enlarged):
    """Refits moved by a known amount: half an eye distance to the side in every crop spreads
    half an eye distance (give or take the refits' own spread), in a photo where the face is
    about 250 px wide and in one 3 times as large (whose face is 750 px wide: the photo is
    averaged over blocks first); refits in which no face is found spread infinitely; landmarks
    given without a face mesh are refused."""
    from PIL import Image

    from facehd.detect import SPREAD_PX, DetectedFace

    photo = draw_face(320, seed=1)
    if enlarged > 1:
        big = (320 * enlarged, 320 * enlarged)
        photo = np.asarray(Image.fromarray(photo).resize(big, Image.Resampling.BICUBIC))
    face = detector.detect(photo)
    own = detector.landmark_spread(photo, face)
    size = float(np.ptp(face.mesh[:468, :2], axis=0).max())
    lm = face.landmarks68
    eye = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    real = detector._mesh_in_boxes

    def moved(image, boxes):
        out = real(image, boxes)
        for mesh in out:  # half an eye distance in the copy's pixels (the face SPREAD_PX wide)
            mesh[:, 0] += 0.5 * eye * SPREAD_PX / size
        return out

    monkeypatch.setattr(detector, "_mesh_in_boxes", moved)
    assert abs(detector.landmark_spread(photo, face) - 0.5) < own + 0.01
    monkeypatch.setattr(detector, "_mesh_in_boxes", lambda image, boxes: [])
    assert detector.landmark_spread(photo, face) == np.inf
    with pytest.raises(ValueError, match="face mesh"):
        detector.landmark_spread(photo, DetectedFace.from_landmarks68(face.landmarks68))


@needs_mediapipe
def test_landmarks_placed_off_the_face_spread_far(detector):
    """Landmarks that lie off the face the photo shows (the found face's mesh moved by half its
    size, or shrunk to half about its centre): the refits around them find the real face, or
    none, and the spread is far above the limit."""
    from facehd.detect import MAX_LANDMARK_SPREAD, DetectedFace

    photo = draw_face(320, seed=1)
    mesh = detector.detect(photo).mesh
    size = float(np.ptp(mesh[:468, :2], axis=0).max())
    centre = 0.5 * (mesh[:468, :2].min(0) + mesh[:468, :2].max(0))
    shifted = mesh.copy()
    shifted[:, 0] += 0.5 * size
    shrunk = mesh.copy()
    shrunk[:, :2] = centre + 0.5 * (mesh[:, :2] - centre)
    for wrong in (shifted, shrunk):
        assert detector.landmark_spread(photo, DetectedFace.from_mesh(wrong)) > 2 * (
            MAX_LANDMARK_SPREAD
        )


@needs_mediapipe
def test_a_face_fitted_in_the_wrong_turn_is_looked_for_in_the_others(detector, monkeypatch):
    """The orientation scores turn the drawn face's photo wrongly (forced here): turned a
    quarter, the face mesh fits it loosely (spread far above TURN_AGAIN_SPREAD), so the other
    turns are searched, and the upright one, whose landmarks hold, is taken, with the eyes where
    they were drawn. A spread above the limit but under TURN_AGAIN_SPREAD (forced) searches no
    other turn, and is left for the caller to refuse; nor does a detector without automatic
    orientation search one."""
    from facehd.detect import MAX_LANDMARK_SPREAD, TURN_AGAIN_SPREAD

    photo = draw_face(320, seed=1)
    searched = []
    real = detector._meshes_in_turn

    def counting(work, *args):
        searched.append(work.shape)
        return real(work, *args)

    monkeypatch.setattr(detector, "_meshes_in_turn", counting)
    monkeypatch.setattr(detector, "_orientation", lambda image: (1, None, None))
    k, face, n, spread = detector.main_face_checked(photo)
    assert len(searched) == 4  # the forced turn, then the three others
    assert (k, n) == (0, 1) and spread < 0.05
    np.testing.assert_allclose(face.landmarks5[0], feature("right_eye", 320), atol=4)
    np.testing.assert_allclose(face.landmarks5[1], feature("left_eye", 320), atol=4)

    between = 0.5 * (MAX_LANDMARK_SPREAD + TURN_AGAIN_SPREAD)
    monkeypatch.setattr(detector, "landmark_spread", lambda image, face: between)
    searched.clear()
    k, _, _, spread = detector.main_face_checked(photo)
    assert len(searched) == 1 and k == 1 and spread == between
    monkeypatch.undo()
    monkeypatch.setattr(detector, "_meshes_in_turn", counting)
    monkeypatch.setattr(detector, "_orientation", lambda image: (1, None, None))
    monkeypatch.setattr(detector, "auto_orient", False)
    searched.clear()
    k, _, _, spread = detector.main_face_checked(photo)
    assert len(searched) == 1 and k == 1 and spread > TURN_AGAIN_SPREAD


@needs_mediapipe
def test_a_turn_showing_no_face_has_the_face_looked_for_in_the_others(detector, monkeypatch):
    """The orientation scores may choose a turn in which no face is found at all (a face seen
    upright in the whole photo, its mouth covered, scored higher upside down in the crops about
    it): the other turns are looked at, whole, and the one whose face's landmarks hold is taken,
    the eyes where they were drawn, rather than "no face found". A turn whose landmarks do not
    hold (every spread raised by 0.5, forced) is not taken, unless the limit is raised past it.
    Without automatic orientation, or with a face in no turn, it is still no face."""
    from facehd.detect import FaceDetector, NoFaceError

    photo = draw_face(320, seed=1)
    searched = []
    real = detector._meshes_in_turn

    def none_in_the_first(work, *args):
        searched.append((work.shape, args))
        return [] if len(searched) == 1 else real(work, *args)

    monkeypatch.setattr(detector, "_meshes_in_turn", none_in_the_first)
    monkeypatch.setattr(detector, "_orientation", lambda image: (2, None, None))
    k, face, n, spread = detector.main_face_checked(photo)
    # the chosen turn, then the three others, whole (no second tiled search)
    assert len(searched) == 4 and all(args == ([],) for _, args in searched[1:])
    assert (k, n) == (0, 1) and spread < 0.05
    np.testing.assert_allclose(face.landmarks5[0], feature("right_eye", 320), atol=4)
    np.testing.assert_allclose(face.landmarks5[1], feature("left_eye", 320), atol=4)

    raised = FaceDetector.landmark_spread
    monkeypatch.setattr(
        detector, "landmark_spread", lambda image, face: raised(detector, image, face) + 0.5
    )
    searched.clear()
    with pytest.raises(NoFaceError):
        detector.main_face_checked(photo)
    searched.clear()
    k, _, _, spread = detector.main_face_checked(photo, max_spread=0.6)
    assert k == 0 and 0.5 < spread < 0.55

    monkeypatch.setattr(detector, "auto_orient", False)
    searched.clear()
    with pytest.raises(NoFaceError):
        detector.main_face_checked(photo)
    assert len(searched) == 1
    monkeypatch.setattr(detector, "auto_orient", True)
    monkeypatch.setattr(detector, "_meshes_in_turn", lambda work, *args: [])
    with pytest.raises(NoFaceError):
        detector.main_face_checked(photo)


@needs_mediapipe
def test_detect_finds_the_face_a_turn_without_one_hides(detector, monkeypatch):
    """``detect`` and ``detect_upright`` take the main face as ``main_face_checked`` does: when
    the orientation scores choose a turn showing no face (forced here: upside down, and nothing
    found in it), the face is looked for in the other turns, rather than "no face found". The
    upright turn is taken, the eyes where they were drawn, in the photo's own pixels for
    ``detect``; with the upright turn hidden too, it is no face."""
    from facehd.detect import NoFaceError

    photo = draw_face(320, seed=1)
    real = detector._meshes_in_turn
    calls = []

    def none_in_turn(hidden):
        def search(work, *args):
            calls.append(work.shape)
            return [] if len(calls) in hidden else real(work, *args)

        return search

    monkeypatch.setattr(detector, "_orientation", lambda image: (2, None, None))
    monkeypatch.setattr(detector, "_meshes_in_turn", none_in_turn({1}))
    k, face = detector.detect_upright(photo)
    assert k == 0
    np.testing.assert_allclose(face.landmarks5[0], feature("right_eye", 320), atol=4)
    calls.clear()
    face = detector.detect(photo)
    np.testing.assert_allclose(face.landmarks5[1], feature("left_eye", 320), atol=4)
    calls.clear()
    assert detector.main_face_upright(photo)[::2] == (0, 1)

    # the chosen turn, then turns 3, 0 (the upright one, hidden too) and 1: a quarter turn
    # fits no face whose landmarks hold, so none is taken
    monkeypatch.setattr(detector, "_meshes_in_turn", none_in_turn({1, 3}))
    calls.clear()
    with pytest.raises(NoFaceError):
        detector.detect(photo)


@needs_mediapipe
def test_another_turn_is_taken_only_when_its_landmarks_hold(detector, monkeypatch):
    """Looking in the other turns takes one only when its face's landmarks spread within the
    limit: with every spread raised by 0.2 (forced here), the upright turn's face no longer
    holds (0.2 and more), and the photo stays in the wrong turn the orientation gave it, its
    spread above the limit, for the caller to refuse; with the limit raised past it, the upright
    turn is taken."""
    from facehd.detect import MAX_LANDMARK_SPREAD, FaceDetector

    photo = draw_face(320, seed=1)
    real = FaceDetector.landmark_spread
    monkeypatch.setattr(detector, "_orientation", lambda image: (1, None, None))
    monkeypatch.setattr(
        detector, "landmark_spread", lambda image, face: real(detector, image, face) + 0.2
    )
    k, _, _, spread = detector.main_face_checked(photo)
    assert k == 1 and spread > 0.2 + MAX_LANDMARK_SPREAD
    k, _, _, spread = detector.main_face_checked(photo, max_spread=0.3)
    assert k == 0 and 0.2 < spread < 0.25


@needs_mediapipe
def test_landmark_spread_crops_lie_where_they_are_said_to(detector, monkeypatch):
    """The refits' crops, found again independently: the face detected in the copy the crops
    are cut from (its mesh's centre and size there) must lie at each box's centre less the
    box's shift, the box SPREAD_REFITS' scale times its size, and every crop (twice the box)
    inside the copy, so that no crop shows black where the photo has pixels."""
    from facehd.detect import SPREAD_REFITS

    canvas = np.full((600, 800, 3), (120, 140, 130), np.uint8)
    canvas[91:411, 437:757] = draw_face(320, seed=1)
    face = detector.detect(canvas)
    seen = []
    real = detector._mesh_in_boxes

    def spy(image, boxes):
        seen.append((image, boxes[0].copy()))
        return real(image, boxes)

    monkeypatch.setattr(detector, "_mesh_in_boxes", spy)
    detector.landmark_spread(canvas, face)
    monkeypatch.setattr(detector, "_mesh_in_boxes", real)
    assert len(seen) == len(SPREAD_REFITS)
    copy = seen[0][0]
    assert all(image is copy for image, _ in seen)
    mesh = detector.detect(copy).mesh[:468, :2]
    centre, size = 0.5 * (mesh.min(0) + mesh.max(0)), np.ptp(mesh, axis=0).max()
    for (_, (_, cx, cy, w, h)), (m, dx, dy) in zip(seen, SPREAD_REFITS, strict=True):
        np.testing.assert_allclose([cx, cy], centre + size * np.array([dx, dy]), atol=0.03 * size)
        assert w == h and abs(w - m * size) < 0.05 * size
        # pixel centres at integers: the copy spans -0.5 .. side - 0.5
        assert cx + 0.5 - w > -0.01 and cy + 0.5 - w > -0.01
        assert cx + 0.5 + w < copy.shape[1] + 0.01 and cy + 0.5 + w < copy.shape[0] + 0.01


@needs_mediapipe
def test_one_crop_without_a_face_does_not_make_landmarks_unsure(detector, monkeypatch):
    """The spread is a median: a face the mesh misses in one of the five crops (forced here)
    keeps its spread; missed in three, it is infinite. A degenerate face (every mesh point in
    one pixel) is infinitely unsure, not an error."""
    from facehd.detect import DetectedFace

    photo = draw_face(320, seed=1)
    face = detector.detect(photo)
    own = detector.landmark_spread(photo, face)
    real = detector._mesh_in_boxes
    for missed, finite in ((1, True), (3, False)):
        calls = []

        def missing(image, boxes, n=missed, calls=calls):
            calls.append(1)
            return [] if len(calls) <= n else real(image, boxes)

        monkeypatch.setattr(detector, "_mesh_in_boxes", missing)
        spread = detector.landmark_spread(photo, face)
        assert (abs(spread - own) < 0.02) if finite else spread == np.inf
    monkeypatch.setattr(detector, "_mesh_in_boxes", real)
    flat = DetectedFace.from_mesh(np.full((478, 3), 100.0))
    assert detector.landmark_spread(photo, flat) == np.inf

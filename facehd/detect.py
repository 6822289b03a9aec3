"""Face detection and landmarks in photos (mediapipe), mapped to iBUG-68 and 5 alignment points.

mediapipe is an optional dependency (``pip install 'facehd[photo]'``, ``mediapipe==0.10.14``, whose
wheel carries the face-detection, 468-point face-mesh and selfie-segmentation models). Everything
here but :class:`FaceDetector` is pure numpy and works without it.

Pixel convention: points are ``(x, y)`` = (column, row) in continuous pixel coordinates with the
centre of the top-left pixel at ``(0, 0)`` (the convention of ``facehd.render`` and ``facehd.uv``).
mediapipe's normalised coordinates (0 and 1 at the image edges) are converted by
``x = u * W - 0.5``, ``y = v * H - 0.5``.

From the 468-point mesh to iBUG-68
----------------------------------
:data:`MEDIAPIPE_TO_IBUG68` picks, for each iBUG-68 point (0-based: jaw 0-16, brows 17-26, nose
27-35, eyes 36-47, outer lips 48-59, inner lips 60-67, the subject's right side first, i.e. the left
of the image), one vertex of mediapipe's canonical face mesh. The vertices come from the mesh's own
feature contours (``mediapipe.solutions.face_mesh_connections``: ``FACEMESH_FACE_OVAL``,
``_EYEBROW``, ``_EYE``, ``_LIPS``, ``_NOSE``), chosen to divide each contour as iBUG does:

- jaw 0-8: face oval from the upper ear (127) down to the chin (152), spaced evenly along the
  contour: 127, 234, 93, 132, 58, 136, 150, 176, 152; 9-16 their mirror images.
- brows: the upper brow contour, outer to inner (70, 63, 105, 66, 107) and its mirror.
- nose: bridge 168, 197, 5 and the tip 4 (the pronasale, the most anterior vertex); nostril base
  98, 97, 2 (subnasale), 326, 327.
- eyes: corners 33/133 and 362/263; upper and lower lids at a third and two thirds of each lid
  contour (160, 158, 153, 144 and 385, 387, 373, 380).
- lips: corners 61/291, outer contour at thirds between corner and midline (40, 37 | 267, 270
  above, 321, 314 | 84, 91 below), midline 0 and 17; inner corners 78/308, inner thirds 81, 13,
  311 above and 402, 14, 178 below.

The eye and mouth corners are then moved outwards (:data:`MEDIAPIPE_IBUG68_OUTWARD`): mediapipe's
eye contours end inside the canthi and its lip contour inside the commissures, as iBUG annotates
them. Measured on a real scan against its own annotation (automatic scan landmarks, 9 views of
it), the contour ends lay 0.6-1.1 mm medial of the outer canthi, 1.0-1.6 mm lateral of the inner
canthi and 2.8-4.9 mm medial of the mouth corners, and the same way round on synthetic faces.
Each of these six points is a blend of its contour vertex and the next vertex of the mesh outward
along the same line (1.5-2.3 mm away at the eyes, about 3.8 mm at the mouth): halfway at the eye
corners (33 with 130, 133 with 243, and their mirrors 263/359, 362/463), three tenths at the
mouth corners (61 with 57, 291 with 287). The NoW-7 median error of the scan landmarks went from
2.48 to 1.32 mm on that scan, and from 2.8-3.6 to 2.2-3.0 mm on synthetic scans the blend was not
chosen on (seeds 3, 8, 11).

Last, the outer eye corners are moved about 1 mm towards the chin and the mouth corners half
that (:data:`MEDIAPIPE_IBUG68_DOWN`: 1.5% and 0.75% of the vector from the eyes' centre to the
mouth's, so that the shift turns and scales with the face): mediapipe places them above the
annotated points in every view, frontal or turned. Measured with the automatic scan landmarks
(NoW-7 errors in the face's frame, before the shift), the outer canthi lay 0.8-1.2 mm above the
real scan's annotation and 1.2-1.4 mm above the true points of 80 synthetic scans (10 seeds), the
mouth corners 0.5 and 1.3 mm above on the real scan and 1.3-1.5 mm on the synthetic ones. At the
mouth the full 1 mm overshot the real scan's right corner and, moving the point onto the lower
lip, put it 1.3 mm too deep (its error 1.0 -> 1.8 mm); half of it left the synthetic scans as good
(NoW-7 median 1.71 and 1.72 mm) and the real scan better (1.68 -> 1.16 mm). The two sources
disagree on the left-right offsets and on the inner canthi (0.5 mm above on the real scan, 0.5 mm
below on the synthetic ones), which are left as they are.

The table is left-right consistent: the mirror image of each iBUG point is picked at the mirror
vertex of the mesh (tested against mediapipe itself on a mirrored photo).

The 5 alignment points (Deep3DFaceRecon's order): centre of the subject's right eye (mean of iBUG 36
and 39), centre of the left eye (42, 45), nose tip (30), right and left mouth corners (48, 54).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facehd.errors import FacehdError

PHOTO_EXTRA_HINT = "pip install 'facehd[photo]'  (mediapipe==0.10.14)"
"""How to install the optional photo front end."""

# fmt: off
MEDIAPIPE_TO_IBUG68: tuple[int, ...] = (
    # jaw 0-16
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    # right brow 17-21 (outer -> inner), left brow 22-26 (inner -> outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nostril base 31-35
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # right eye 36-41, left eye 42-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67
    78, 81, 13, 311, 308, 402, 14, 178,
)
"""For each iBUG-68 point (0-based), the index of the mediapipe face-mesh vertex used."""

MEDIAPIPE_IBUG68_OUTWARD: dict[int, tuple[int, float]] = {
    36: (130, 0.5),  # right eye, outer corner (33)
    39: (243, 0.5),  # right eye, inner corner (133)
    42: (463, 0.5),  # left eye, inner corner (362)
    45: (359, 0.5),  # left eye, outer corner (263)
    48: (57, 0.3),  # right mouth corner (61)
    54: (287, 0.3),  # left mouth corner (291)
}
"""iBUG point -> (the next mediapipe vertex outward, weight): the point is
``(1 - weight) * mesh[MEDIAPIPE_TO_IBUG68[point]] + weight * mesh[vertex]`` (see the module
docstring)."""

MEDIAPIPE_IBUG68_DOWN: dict[int, float] = {36: 0.015, 45: 0.015, 48: 0.0075, 54: 0.0075}
"""iBUG point -> how far it is then moved towards the chin, as a fraction of the vector from
the eyes' centre (mean of the four eye corners) to the mouth's (mean of its corners): 0.015 is
about 1 mm on an adult face, 0.0075 half of it (see the module docstring)."""

IBUG68_MIRROR: tuple[int, ...] = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
    27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    64, 63, 62, 61, 60, 67, 66, 65,
)
"""The iBUG-68 point that is the mirror image of each point (left-right swap)."""

MEDIAPIPE_FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
"""mediapipe's face-oval silhouette vertices in order around the face (forehead top first)."""
# fmt: on

IBUG68_REGIONS: dict[str, tuple[int, int]] = {
    "jaw": (0, 17),
    "right_brow": (17, 22),
    "left_brow": (22, 27),
    "nose_bridge": (27, 31),
    "nostrils": (31, 36),
    "right_eye": (36, 42),
    "left_eye": (42, 48),
    "outer_lips": (48, 60),
    "inner_lips": (60, 68),
}
"""iBUG-68 index ranges ``[start, stop)`` of each feature."""

FIVE_POINT_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth", "left_mouth")
"""Order of the 5 alignment points (the subject's right = the image left in a frontal photo)."""
FIVE_POINT_FROM_68: tuple[tuple[int, int], ...] = ((36, 39), (42, 45), (30, 30), (48, 48), (54, 54))
"""Each alignment point (order :data:`FIVE_POINT_NAMES`) as the mean of two iBUG-68 points."""


def landmarks68_from_mediapipe(mesh: np.ndarray) -> np.ndarray:
    """iBUG-68 landmarks from mediapipe face-mesh vertices.

    mesh : (..., 468 or 478, D) float -> (..., 68, D)
    """
    mesh = np.asarray(mesh)
    if mesh.ndim < 2 or mesh.shape[-2] not in (468, 478):
        raise ValueError(f"expected mediapipe mesh points (..., 468 or 478, D), got {mesh.shape}")
    out = mesh[..., list(MEDIAPIPE_TO_IBUG68), :].astype(np.result_type(mesh.dtype, np.float32))
    for point, (vertex, weight) in MEDIAPIPE_IBUG68_OUTWARD.items():
        out[..., point, :] += weight * (mesh[..., vertex, :] - out[..., point, :])
    down = out[..., [48, 54], :].mean(-2) - out[..., [36, 39, 42, 45], :].mean(-2)
    for point, fraction in MEDIAPIPE_IBUG68_DOWN.items():
        out[..., point, :] += fraction * down
    return out


def landmarks5_from_68(lm68: np.ndarray) -> np.ndarray:
    """The 5 alignment points from iBUG-68 landmarks (order :data:`FIVE_POINT_NAMES`).

    lm68 : (..., 68, D) float -> (..., 5, D): eye centres as the mean of each eye's two corners
    (Deep3DFaceRecon's rule), the nose tip (30) and the mouth corners (48, 54)
    (:data:`FIVE_POINT_FROM_68`).
    """
    lm68 = np.asarray(lm68, dtype=np.float64)
    if lm68.ndim < 2 or lm68.shape[-2] != 68:
        raise ValueError(f"expected iBUG-68 landmarks (..., 68, D), got {lm68.shape}")
    a, b = zip(*FIVE_POINT_FROM_68, strict=True)
    return 0.5 * (lm68[..., list(a), :] + lm68[..., list(b), :])


def mask_outline(mesh: np.ndarray) -> np.ndarray:
    """Points whose convex hull is the face mask: the iBUG jaw and brows plus mediapipe's face
    oval (which adds the forehead). mesh : (468|478, D) -> (K, 2)."""
    mesh = np.asarray(mesh)
    lm68 = landmarks68_from_mediapipe(mesh)
    return np.concatenate([lm68[:27, :2], mesh[list(MEDIAPIPE_FACE_OVAL), :2]], axis=0)


FOREHEAD_RISE = 0.2
"""How far above the brows the 68-point face mask reaches, as a fraction of the height from the
chin (8) to the brows' centre. Chosen to match the mask of mediapipe's face oval: on the 8 real
photos of the project's sample data the two masks overlap best at 0.2 (IoU 0.964 on average,
0.954 at worst; 0.944 at 0.15 and 0.946 at 0.25)."""


def mask_outline_68(landmarks68: np.ndarray, rise: float = FOREHEAD_RISE) -> np.ndarray:
    """Points whose convex hull is the face mask when only the iBUG-68 landmarks are known: the
    68 points (jaw and brows bound a frontal face; in a turned one the nose and the far eye and
    mouth corner can lie beyond the jaw line), plus the brows moved up by ``rise`` × the
    chin-to-brow vector (the forehead). landmarks68 : (68, >=2) -> (78, 2)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] != 68 or lm.shape[1] < 2:
        raise ValueError(f"expected iBUG-68 landmarks (68, 2), got {lm.shape}")
    lm = lm[:, :2]
    brows = lm[17:27]
    up = brows.mean(0) - lm[8]
    return np.concatenate([lm, brows + rise * up], axis=0)


def convex_hull_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raster of the convex hull of ``points`` at pixel centres.

    points : (K, 2) float, (x, y) pixels; size : (H, W) -> (H, W) bool. Empty when the points
    span no area.
    """
    from scipy.spatial import ConvexHull, QhullError

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected points (K, 2), got {points.shape}")
    h, w = int(size[0]), int(size[1])
    out = np.zeros((h, w), dtype=bool)
    if len(points) < 3 or not np.all(np.isfinite(points)):
        return out
    try:
        hull = ConvexHull(points)
    except QhullError:
        return out
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 < x0 or y1 < y0:
        return out
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    inside = np.ones(xs.shape, dtype=bool)
    # Each facet: normal . p + offset <= 0 inside.
    for nx, ny, off in hull.equations:
        inside &= nx * xs + ny * ys + off <= 1e-9
    out[y0 : y1 + 1, x0 : x1 + 1] = inside
    return out


def refine_mask(
    face: np.ndarray, person: np.ndarray | None, *, threshold: float = 0.5, min_keep: float = 0.7
) -> np.ndarray:
    """Cut the landmark face mask by a person segmentation where it helps.

    face : (H, W) bool, person : (H, W) float probability in [0, 1] or None -> (H, W) bool.
    ``face & (person > threshold)``, unless that keeps less than ``min_keep`` of the face area (the
    segmentation then failed on this face, and the landmark mask is kept as it is).
    """
    face = np.asarray(face, dtype=bool)
    if person is None:
        return face
    person = np.asarray(person)
    if person.shape != face.shape:
        raise ValueError(f"person mask {person.shape} and face mask {face.shape} differ in shape")
    cut = face & (person > threshold)
    area = int(face.sum())
    if area == 0 or cut.sum() < min_keep * area:
        return face
    return cut


def select_main_face(boxes: np.ndarray, image_size: tuple[int, int]) -> int:
    """Index of the main face among several: the largest and most central.

    boxes : (F, 4) float ``(x0, y0, x1, y1)`` pixels; image_size ``(H, W)``. Score = box diagonal
    x (1 - 0.5 d), d = distance of the box centre from the image centre over the half-diagonal of
    the image: a face half as large wins only when it is much more central.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("no face boxes to choose from")
    h, w = image_size
    diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    d = np.hypot(centre[:, 0] - (w - 1) / 2, centre[:, 1] - (h - 1) / 2) / (0.5 * np.hypot(w, h))
    return int(np.argmax(diag * (1.0 - 0.5 * np.clip(d, 0.0, 1.0))))


@dataclass(frozen=True)
class DetectedFace:
    """One face found in a photo (pixel coordinates of that photo).

    Attributes
    ----------
    mesh : (478, 3) float
        mediapipe face-mesh vertices (468) and iris points (10): ``x``, ``y`` pixels and mediapipe's
        relative depth ``z`` in the same pixel scale (smaller = nearer the camera).
    landmarks68 : (68, 2) float
        iBUG-68 landmarks.
    landmarks5 : (5, 2) float
        The alignment points, order :data:`FIVE_POINT_NAMES`.
    box : (4,) float
        ``(x0, y0, x1, y1)`` bounds of the mesh.
    """

    mesh: np.ndarray
    landmarks68: np.ndarray
    landmarks5: np.ndarray
    box: np.ndarray

    @staticmethod
    def from_mesh(mesh: np.ndarray) -> DetectedFace:
        mesh = np.asarray(mesh, dtype=np.float64)
        if mesh.shape not in ((468, 3), (478, 3)):
            raise ValueError(f"expected mesh (468 or 478, 3), got {mesh.shape}")
        if mesh.shape[0] == 468:  # no iris points: fill them with the eye contours' centres
            t = MEDIAPIPE_TO_IBUG68
            r, l = mesh[list(t[36:42])].mean(0), mesh[list(t[42:48])].mean(0)
            mesh = np.concatenate([mesh, np.repeat(r[None], 5, 0), np.repeat(l[None], 5, 0)])
        lm68 = landmarks68_from_mediapipe(mesh)[:, :2]
        box = np.concatenate([mesh[:468, :2].min(0), mesh[:468, :2].max(0)])
        return DetectedFace(mesh, lm68, landmarks5_from_68(lm68), box)

    @staticmethod
    def from_landmarks68(landmarks68: np.ndarray) -> DetectedFace:
        """A face whose iBUG-68 landmarks are given (an annotation or another detector): no
        face mesh (``mesh`` is NaN), the box bounds the landmarks."""
        lm68 = np.asarray(landmarks68, dtype=np.float64)
        if lm68.shape != (68, 2):
            raise ValueError(f"expected iBUG-68 landmarks (68, 2), got {lm68.shape}")
        if not np.isfinite(lm68).all():
            raise ValueError("landmarks contain NaN or inf")
        mesh = np.full((478, 3), np.nan)
        box = np.concatenate([lm68.min(0), lm68.max(0)])
        return DetectedFace(mesh, lm68, landmarks5_from_68(lm68), box)

    @property
    def has_mesh(self) -> bool:
        """Whether the face mesh is known (False for :meth:`from_landmarks68`)."""
        return bool(np.isfinite(self.mesh).all())

    def outline(self) -> np.ndarray:
        """Points whose convex hull is the face mask: :func:`mask_outline` of the face mesh, or
        :func:`mask_outline_68` of the landmarks when there is no mesh. (K, 2) pixels."""
        if self.has_mesh:
            return mask_outline(self.mesh)
        return mask_outline_68(self.landmarks68)

    @property
    def size(self) -> float:
        """Diagonal of the box, pixels."""
        return float(np.hypot(self.box[2] - self.box[0], self.box[3] - self.box[1]))


LANDMARK_MODES: tuple[str, ...] = ("auto", "detect", "given")
"""Where a photo's landmarks come from (:func:`given_landmarks`)."""


def given_landmarks(path: str | Path, mode: str = "auto") -> Path | None:
    """The landmark file to use for photo ``path``, or None to run the detector.

    ``mode``: ``auto`` the photo's ``.pts`` file (:func:`facehd.landmarks.photo_landmarks_path`)
    when it has one; ``detect`` never; ``given`` always (InputFileError when it has none).
    """
    from facehd.errors import InputFileError
    from facehd.landmarks import photo_landmarks_path

    if mode not in LANDMARK_MODES:
        raise ValueError(f"landmarks: expected auto, detect or given, got {mode!r}")
    if mode == "detect":
        return None
    pts = photo_landmarks_path(path)
    if pts.is_file():
        return pts
    if mode == "given":
        raise InputFileError(path, f"no landmark file {pts.name} beside the photo")
    return None


def face_from_landmark_file_upright(
    pts_path: str | Path, image_shape: tuple[int, ...]
) -> tuple[int, DetectedFace]:
    """``(k, face)``: :func:`face_from_landmark_file`, with the face in ``np.rot90(image, k)``,
    the photo turned by the quarter turns that show the face upright (:func:`upright_turn`), as
    the detector turns a photo stored turned: the crop only scales and shifts."""
    face = face_from_landmark_file(pts_path, image_shape)
    k = upright_turn(face.landmarks68)
    if k == 0:
        return 0, face
    lm = rotate_points(face.landmarks68, k, (int(image_shape[0]), int(image_shape[1])))
    return k, DetectedFace.from_landmarks68(lm)


def upright_turn(landmarks68: np.ndarray) -> int:
    """Quarter turns ``k`` (counter-clockwise, ``np.rot90``) after which the face of 68 iBUG
    points (x right, y down) is nearest upright: its eyes above its mouth, the line from the
    mouth to the eyes within 45 degrees of the vertical."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    up = 0.5 * (lm[36:42].mean(0) + lm[42:48].mean(0)) - lm[48:68].mean(0)
    # one turn takes a direction (dx, dy) to (dy, -dx); upright is (0, -1)
    ups = [up, np.array([up[1], -up[0]]), -up, np.array([-up[1], up[0]])]
    return int(np.argmin([u[1] for u in ups]))


def rotate_points(points: np.ndarray, k: int, size: tuple[int, int]) -> np.ndarray:
    """Points (N, 2 or more; ``x``, ``y`` pixels first) of an image of size (H, W) where they
    lie in ``np.rot90(image, k)``; further columns are kept (:func:`unrotate_points` undoes
    it)."""
    h, w = size
    # np.rot90(image, k) turned by the remaining quarter turns is the image again
    turned = (h, w) if k % 2 == 0 else (w, h)
    return unrotate_points(np.array(points, dtype=np.float64), (4 - k) % 4, turned)


def face_from_landmark_file(pts_path: str | Path, image_shape: tuple[int, ...]) -> DetectedFace:
    """The face whose landmarks the ``.pts`` file gives (a :class:`DetectedFace` without a
    mesh), checked against the photo's size ``(H, W, ...)``: points more than one photo size
    outside it, or most of the 68 outside it, mean the file belongs to another photo or another
    scale of it (InputFileError). A face cut by the photo's edge keeps most of its points
    inside. The points are those of the photo as stored (after its orientation tag); a face
    shown sideways or upside down there is turned upright by
    :func:`face_from_landmark_file_upright`."""
    from facehd.errors import InputFileError
    from facehd.landmarks import load_photo_landmarks

    lm = load_photo_landmarks(pts_path)
    h, w = int(image_shape[0]), int(image_shape[1])
    lo, hi = lm.min(0), lm.max(0)
    if lo[0] < -w or lo[1] < -h or hi[0] > 2 * w or hi[1] > 2 * h:
        raise InputFileError(
            pts_path,
            f"landmarks span x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}: far outside "
            f"the {w}x{h} photo",
        )
    outside = (lm[:, 0] < 0) | (lm[:, 1] < 0) | (lm[:, 0] > w) | (lm[:, 1] > h)
    if outside.sum() > len(lm) // 2:
        raise InputFileError(
            pts_path,
            f"{int(outside.sum())} of its {len(lm)} landmarks lie outside the {w}x{h} photo "
            f"(x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}): it was made for another "
            "photo, or for another size of this one",
        )
    if np.ptp(lm[:, 0]) < 1.0 and np.ptp(lm[:, 1]) < 1.0:
        raise InputFileError(pts_path, "all 68 landmarks lie within one pixel")
    if mirrored_landmarks(lm):
        raise InputFileError(
            pts_path,
            "the landmarks are a mirror image of a face (x and y swapped, or left and right "
            "exchanged): iBUG's points 37-42 are the subject's right eye, on the image's left, "
            "and y grows downwards",
        )
    return DetectedFace.from_landmarks68(lm)


def mirrored_landmarks(landmarks68: np.ndarray) -> bool:
    """Whether 68 iBUG points in an image (x right, y down) are a mirror image of a face: the
    turn from the right eye to the left eye to the mouth goes the other way round than on any
    face, whatever its rotation in the image (x and y swapped, left and right exchanged, y
    upwards)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    right, left = lm[36:42].mean(0), lm[42:48].mean(0)
    eyes = left - right
    mouth = lm[48:68].mean(0) - 0.5 * (left + right)
    return bool(eyes[0] * mouth[1] - eyes[1] * mouth[0] < 0.0)


class NoFaceError(FacehdError):
    """No face was found in a photo."""


class LandmarkSpreadError(NoFaceError):
    """A face was found, but the face mesh does not hold its landmarks firmly
    (:meth:`FaceDetector.landmark_spread` above the limit): they are likely off the face."""


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send the process's file descriptor 2 to /dev/null for a while: mediapipe's native code
    logs banners (TFLite delegate, absl warnings) when its graphs start, which would clutter the
    progress display. Python-level errors are unaffected (mediapipe raises them as exceptions)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _import_mediapipe() -> Any:
    """Import mediapipe quietly, or fail with the install hint."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mediapipe as mp
    except ImportError as exc:
        raise ImportError(
            f"face detection needs mediapipe, an optional extra: {PHOTO_EXTRA_HINT}"
        ) from exc
    return mp


def mediapipe_available() -> bool:
    """Whether the optional photo front end (mediapipe) can be imported."""
    try:
        _import_mediapipe()
    except ImportError:
        return False
    return True


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB image (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


class FaceDetector:
    """Faces and landmarks in RGB photos with mediapipe (face mesh with iris refinement).

    Strategy: first the orientation (:meth:`orientation`): a photo turned by quarter turns
    without an orientation tag is turned upright for detection (mediapipe's face mesh fits
    sideways and upside-down faces poorly). Then the face mesh on the whole photo (it finds faces
    with mediapipe's short-range detector; a small one, under :data:`REFIT_BELOW` of the short
    side, is fitted again in a crop around it); when that finds nothing, the full-range face
    detector locates faces (small, far ones) and the mesh runs on a square crop around each;
    when that finds nothing either, the full-range detector searches half-overlapping tiles of
    the photo (faces a few dozen pixels wide in a large photo); when that finds nothing either,
    the face may fill the photo (a tight crop, larger than the detectors find), and the mesh runs
    on a crop padded around the whole photo. Landmarks are returned in the
    pixels of the photo as given (:meth:`detect_all`) or of the photo turned upright
    (:meth:`detect_all_upright`).

    Not thread-safe; make one per process. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        max_faces: int = 5,
        min_confidence: float = 0.5,
        segmentation: bool = True,
        auto_orient: bool = True,
        upright_score: float = 0.75,
        orientation_margin: float = 0.05,
    ) -> None:
        mp = _import_mediapipe()
        self.max_faces = int(max_faces)
        self.min_confidence = float(min_confidence)
        self.auto_orient = bool(auto_orient)
        self.upright_score = float(upright_score)
        self.orientation_margin = float(orientation_margin)
        with warnings.catch_warnings(), _native_stderr_silenced():
            warnings.simplefilter("ignore")
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=self.max_faces,
                refine_landmarks=True,
                min_detection_confidence=self.min_confidence,
            )
            self._mesh_single = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=1,
                refine_landmarks=True,
                min_detection_confidence=0.3,
            )
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self.min_confidence
            )
            self._segmenter = (
                mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
                if segmentation
                else None
            )
            # Run every graph once now, while its start-up banners are silenced.
            blank = np.full((64, 64, 3), 128, dtype=np.uint8)
            for solution in (self._mesh, self._mesh_single, self._detector, self._segmenter):
                if solution is not None:
                    solution.process(blank)

    # -- mediapipe calls -------------------------------------------------------------------

    def _process(self, solution: Any, image: np.ndarray) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return solution.process(image)

    def _run_mesh(self, solution: Any, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        result = self._process(solution, image)
        faces = []
        for lms in result.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y, p.z) for p in lms.landmark], dtype=np.float64)
            # normalised -> pixels (centre of the top-left pixel at 0); z is scaled like x.
            faces.append(np.stack([pts[:, 0] * w - 0.5, pts[:, 1] * h - 0.5, pts[:, 2] * w], 1))
        return faces

    def _boxes(self, image: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> list[np.ndarray]:
        """Full-range detections in ``image``, each ``(score, cx, cy, width, height)`` in pixels,
        offset by ``(x0, y0)``."""
        h, w = image.shape[:2]
        out = []
        for det in self._process(self._detector, image).detections or []:
            b = det.location_data.relative_bounding_box
            cx, cy = (b.xmin + b.width / 2) * w + x0, (b.ymin + b.height / 2) * h + y0
            out.append(np.array([float(det.score[0]), cx, cy, b.width * w, b.height * h]))
        return out

    def _tile_boxes(self, image: np.ndarray) -> list[np.ndarray]:
        """:meth:`_boxes` over half-overlapping square tiles, for faces too small to be seen in
        the whole photo: tiles of half the photo's short side first, but at least
        :data:`TILE_MIN` (or the whole short side, in a narrow strip: a panorama whose height is
        under twice :data:`TILE_MIN` is searched in squares of its height), then halved down to
        :data:`TILE_MIN`, stopping at the first size that finds a face; overlapping boxes of
        neighbouring tiles are merged (the stronger kept)."""
        h, w = image.shape[:2]
        short = min(h, w)
        side = min(short, max(short // 2, TILE_MIN))
        while side >= TILE_MIN or (side == short and side < max(h, w)):
            found = [
                box
                for y0 in _tile_starts(h, side)
                for x0 in _tile_starts(w, side)
                for box in self._boxes(
                    np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side]), x0, y0
                )
            ]
            if found:
                return _suppress_overlaps(found)
            side //= 2
        return []

    def _mesh_in_boxes(self, image: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Face meshes fitted in square crops around detector ``boxes`` (strongest first)."""
        faces = []
        for _, cx, cy, bw, bh in sorted(boxes, key=lambda b: -b[0])[: self.max_faces]:
            half = 1.0 * max(bw, bh)
            x0, y0 = cx - half, cy - half
            side = 2 * half
            out = max(256, min(768, int(round(side))))
            crop = _padded_box(image, x0, y0, side, out)
            for mesh in self._run_mesh(self._mesh_single, crop):
                k = side / out  # crop pixel -> photo pixel (edge coordinates scale)
                mesh[:, 0] = (mesh[:, 0] + 0.5) * k + x0 - 0.5
                mesh[:, 1] = (mesh[:, 1] + 0.5) * k + y0 - 0.5
                mesh[:, 2] *= k
                faces.append(mesh)
        return faces

    def _refit_small(self, image: np.ndarray, meshes: list[np.ndarray]) -> list[np.ndarray]:
        """``meshes`` found in the whole ``image``, each small one (spanning less than
        :data:`REFIT_BELOW` of the short side) fitted again in a square crop around it: the
        face mesh fits a face a few hundred pixels wide in a large photo loosely from the whole
        photo (a 300 px face in a 2000 x 1500 photo: 10.5% of the eye distance off, 1.6% so)."""
        out = []
        for mesh in meshes:
            lo, hi = mesh[:468, :2].min(axis=0), mesh[:468, :2].max(axis=0)
            side = float((hi - lo).max())
            if side < REFIT_BELOW * min(image.shape[:2]):
                cx, cy = 0.5 * (lo + hi)
                again = self._mesh_in_boxes(image, [np.array([1.0, cx, cy, side, side])])
                mesh = again[0] if again else mesh
            out.append(mesh)
        return out

    def _whole_photo_scores(self, image: np.ndarray) -> np.ndarray:
        """:meth:`_box_turn_scores` of the whole photo taken for a face's box (in a copy shrunk
        to :data:`WHOLE_PHOTO_PX`)."""
        small, _ = _shrunk(image, WHOLE_PHOTO_PX)
        h, w = small.shape[:2]
        return self._box_turn_scores(small, w / 2, h / 2, min(h, w))

    def _mesh_in_whole_photo(self, image: np.ndarray) -> list[np.ndarray]:
        """Face meshes fitted in a crop padded around the whole ``image``, twice its size: a face
        larger than the photo (a crop cutting forehead and chin) is there at a size the mesh
        finds. The photo is first shrunk to :data:`WHOLE_PHOTO_PX` (the crop's resolution); a
        mesh spanning less than :data:`WHOLE_PHOTO_MIN_EXTENT` of the photo is no face filling
        it, and is dropped."""
        small, scale = _shrunk(image, WHOLE_PHOTO_PX)
        h, w = small.shape[:2]
        side = float(max(h, w))
        meshes = []
        for mesh in self._mesh_in_boxes(small, [np.array([1.0, w / 2, h / 2, side, side])]):
            extent = np.ptp(mesh[:468, :2], axis=0).max()
            if extent < WHOLE_PHOTO_MIN_EXTENT * min(h, w):
                continue  # not a face filling the photo: a face too hard to find, fitted loosely
            mesh[:, :2] = (mesh[:, :2] + 0.5) * scale - 0.5  # pixel centres at integers
            mesh[:, 2] *= scale[0]
            meshes.append(mesh)
        return meshes

    def _best_score(self, image: np.ndarray) -> float:
        return max((float(b[0]) for b in self._boxes(image)), default=0.0)

    def orientation(self, image: np.ndarray) -> int:
        """Quarter turns ``k`` such that ``np.rot90(image, k)`` shows the faces upright.

        The full-range face detector scores a face higher upright than turned when it sees the
        face at its own scale, in a crop a few times the face's size, but not reliably in a photo
        where the face is small (a face 60-300 px wide in a 3000 x 2000 photo can score higher
        turned, in the whole photo and in its tiles, or 0.75 and more sideways). So the turns are
        told apart at the face's scale: the strongest box found upright in the whole photo or,
        when none scores ``upright_score`` there, the strongest each quarter turn of the photo
        gives, whole and over its tiles (the search of :meth:`detect_all` for small faces), is
        cut out at :data:`ORIENTATION_CROPS` times its size, and each crop scored in its four
        turns; a turn's score is the mean over the crop sizes, the best over the faces (when no
        crop shows a face in any turn, a faint face, the photo's own best score in each turn). A
        turn wins when it beats upright by ``orientation_margin``. A face filling the photo (a
        tight crop) can be too large for the detector, which then boxes nothing or parts of the
        face in the tiles: when every turn was searched, the whole photo is a candidate too
        (unless no box was found and the face mesh finds a face in the photo as given), whose
        turns count from :data:`WHOLE_PHOTO_TURN_SCORE`.
        """
        return self._orientation(_check_image(image))[0]

    def _orientation(
        self, image: np.ndarray
    ) -> tuple[int, list[np.ndarray] | None, list[np.ndarray] | None]:
        """:meth:`orientation`, the tiled search's boxes in the turned photo where it ran, and
        the face meshes of the photo as given where they were fitted (none found)."""
        if not self.auto_orient:
            return 0, None, None
        boxes = {0: self._boxes(image)}
        tiles = None
        if max((float(b[0]) for b in boxes[0]), default=0.0) < self.upright_score:
            # no face found surely upright in the whole photo: look in every turn, and for a
            # small face at its own scale too, over the tiles
            turned = {0: image} | {k: np.ascontiguousarray(np.rot90(image, k)) for k in (1, 2, 3)}
            tiles = {k: self._tile_boxes(img) for k, img in turned.items()}
            found = {k: boxes[0] if k == 0 else self._boxes(img) for k, img in turned.items()}
            boxes = {k: found[k] + tiles[k] for k in turned}
        candidates = self._orientation_candidates(boxes, image.shape[:2])
        meshes = None if candidates else self._run_mesh(self._mesh, image)
        scores = np.zeros(4)
        for cx, cy, side in candidates:
            scores = np.maximum(scores, self._box_turn_scores(image, cx, cy, side))
        if tiles is not None and (candidates or not meshes):
            # no face found surely upright: the face may fill the photo (a tight crop), too
            # large for the detector, which then finds nothing (and the face mesh nothing
            # either), or parts of it in the tiles; the photo itself is a candidate too, whose
            # turns must show a face surely (a faint score is no reason to turn a photo)
            whole = self._whole_photo_scores(image)
            whole[1:] = np.where(whole[1:] < WHOLE_PHOTO_TURN_SCORE, 0.0, whole[1:])
            scores = np.maximum(scores, whole)
        if not scores.any():  # no crop shows the face (a faint one): the photo's scores decide
            best = {k: max((float(b[0]) for b in found), default=0.0) for k, found in boxes.items()}
            scores = np.array([best.get(k, 0.0) for k in range(4)])
        k = max((1, 2, 3), key=lambda q: scores[q])
        k = k if scores[k] > scores[0] + self.orientation_margin else 0
        return k, None if tiles is None else tiles[k], meshes

    @staticmethod
    def _orientation_candidates(
        boxes: dict[int, list[np.ndarray]], size: tuple[int, int]
    ) -> list[tuple[float, float, float]]:
        """The strongest of ``boxes[k]`` (found in ``np.rot90(image, k)``) of each turn, as
        ``(cx, cy, side)`` in the pixels of ``image`` (size ``(H, W)``)."""
        out: list[tuple[float, float, float]] = []
        for k, found in boxes.items():
            if found:
                _, cx, cy, bw, bh = max(found, key=lambda b: float(b[0]))
                ((x, y),) = unrotate_points(np.array([[cx, cy]]), k, size)
                out.append((float(x), float(y), float(max(bw, bh))))
        return out

    def _box_turn_scores(self, image: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
        """The four turns' scores of a face box ``side`` wide about ``(cx, cy)``: the mean of
        :meth:`_turn_scores` over crops :data:`ORIENTATION_CROPS` times its size."""
        per_size = [self._turn_scores(image, cx, cy, m * side) for m in ORIENTATION_CROPS]
        return np.mean(per_size, axis=0)

    def _turn_scores(self, image: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
        """The best face score of the square ``side`` around ``(cx, cy)`` in each of its four
        quarter turns (``np.rot90(crop, k)``, ``k`` = 0..3), at :data:`ORIENTATION_CROP_PX`."""
        crop = _padded_box(image, cx - side / 2, cy - side / 2, side, ORIENTATION_CROP_PX)
        return np.array(
            [self._best_score(np.ascontiguousarray(np.rot90(crop, k))) for k in range(4)]
        )

    def detect_all_upright(self, image: np.ndarray) -> tuple[int, list[DetectedFace]]:
        """Every face found in ``image`` (H, W, 3) uint8 RGB, in the pixels of the photo turned
        upright: ``(k, faces)`` with the faces in ``np.rot90(image, k)`` (:meth:`orientation`;
        ``k`` is 0 for an upright photo). Empty when none."""
        image = _check_image(image)
        k, tiles, given = self._orientation(image)
        work = _turned(image, k)
        meshes = self._meshes_in_turn(work, tiles, None if k else given)
        return k, [DetectedFace.from_mesh(m) for m in meshes]

    def _meshes_in_turn(
        self,
        work: np.ndarray,
        tiles: list[np.ndarray] | None = None,
        given: list[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """The face meshes of ``work``, a photo already turned as it is to be read: the face
        mesh in the whole photo (``given``: its meshes, fitted already), else in the crops
        around the detector's boxes in the whole photo, else in its tiles (``tiles``: their
        boxes, found already), else around the whole photo."""
        return (
            self._refit_small(work, self._run_mesh(self._mesh, work) if given is None else given)
            or self._mesh_in_boxes(work, self._boxes(work))
            or self._mesh_in_boxes(work, self._tile_boxes(work) if tiles is None else tiles)
            # a face larger than the photo (a crop cutting forehead and chin): fitted in a
            # padded crop twice the photo's size, where it is at the size the mesh finds
            or self._mesh_in_whole_photo(work)
        )

    def detect_all(self, image: np.ndarray) -> list[DetectedFace]:
        """Every face found in ``image`` (H, W, 3) uint8 RGB, in its pixels; empty when none."""
        k, faces = self.detect_all_upright(image)
        if k:
            faces = [
                DetectedFace.from_mesh(unrotate_points(f.mesh, k, image.shape[:2])) for f in faces
            ]
        return faces

    def detect_upright(self, image: np.ndarray) -> tuple[int, DetectedFace]:
        """The main face of ``image`` (largest, most central) in the pixels of the photo turned
        upright, ``np.rot90(image, k)``: ``(k, face)``. :class:`NoFaceError` when none.

        A photo turned by quarter turns without an orientation tag is turned upright here, so
        that its crop shows the face upright (the crop transform scales and shifts only). The
        face is :meth:`main_face_checked`'s: a turn that shows no face, or a face whose
        landmarks do not hold, has the face looked for in the other turns too."""
        k, face, _ = self.main_face_upright(image)
        return k, face

    def main_face_upright(self, image: np.ndarray) -> tuple[int, DetectedFace, int]:
        """:meth:`detect_upright`, and the number of faces found: ``(k, face, n)``."""
        k, face, n, _ = self.main_face_checked(image)
        return k, face, n

    def main_face_checked(
        self, image: np.ndarray, max_spread: float | None = None
    ) -> tuple[int, DetectedFace, int, float]:
        """The main face (largest, most central) of the photo turned as :meth:`orientation`
        says, the number of faces found there and the face's :meth:`landmark_spread`: ``(k,
        face, n, spread)``, the face in ``np.rot90(image, k)``. :class:`NoFaceError` when no
        face is found.

        A spread above :data:`TURN_AGAIN_SPREAD` is what a face fitted in a photo turned the
        wrong way gives: with automatic orientation the face is then looked for in each other
        quarter turn of the photo as well, and the turn whose main face spreads least is taken
        when that is within ``max_spread`` (default :data:`MAX_LANDMARK_SPREAD`; a tight crop
        turned sideways, which the orientation scores turned upside down, comes upright this
        way). A photo showing no face at all in the turn the orientation scores chose is looked
        at in the other turns too (whole, without a second tiled search), under the same rule:
        a face the detector sees upright in the whole photo can score higher upside down in the
        crops around it when its mouth is covered. What to do with a spread left above
        ``max_spread`` is the caller's choice (``prepare-images`` refuses the photo,
        ``reconstruct`` names it).
        """
        limit = MAX_LANDMARK_SPREAD if max_spread is None else float(max_spread)
        image = _check_image(image)
        k, faces = self.detect_all_upright(image)
        best = self._main_face_spread(_turned(image, k), k, faces) if faces else None
        if self.auto_orient and (best is None or best[3] > TURN_AGAIN_SPREAD):
            for q in (1, 2, 3):
                turn = (k + q) % 4
                work = _turned(image, turn)
                # a photo with no face in the turn chosen is looked at whole in the others: a
                # second tiled search of every turn would take seconds on a large photo
                meshes = self._meshes_in_turn(work, None if faces else [])
                if meshes:
                    found = [DetectedFace.from_mesh(m) for m in meshes]
                    other = self._main_face_spread(work, turn, found)
                    if other[3] <= limit and (best is None or other[3] < best[3]):
                        best = other
        if best is None:
            raise NoFaceError("no face found")
        return best

    def _main_face_spread(
        self, work: np.ndarray, k: int, faces: list[DetectedFace]
    ) -> tuple[int, DetectedFace, int, float]:
        """``(k, face, n, spread)`` of the main one of ``faces``, found in ``work`` (the photo
        turned by ``k``)."""
        face = _main_face(faces, work.shape[:2])
        return k, face, len(faces), self.landmark_spread(work, face)

    def detect(self, image: np.ndarray) -> DetectedFace:
        """The main face of ``image`` (largest, most central), in its pixels; :class:`NoFaceError`
        when none."""
        k, face = self.detect_upright(image)
        return DetectedFace.from_mesh(unrotate_points(face.mesh, k, image.shape[:2])) if k else face

    def landmark_spread(self, image: np.ndarray, face: DetectedFace) -> float:
        """How far the face mesh moves ``face``'s landmarks when fitted again in nearby crops:
        the median, over the crops :data:`SPREAD_REFITS`, of the mean distance of the 51 inner
        iBUG-68 landmarks (brows, nose, eyes, mouth) from ``face``'s, in ``face``'s eye
        distances (between the eye centres); a crop in which no face is found counts as
        infinite.

        ``image`` is the photo whose pixels ``face``'s landmarks are in (the photo turned
        upright, for :meth:`detect_upright`'s face). A face the mesh fits well gives the same
        landmarks from any crop around it (0.006-0.043 on real photos, whole, tightly cropped,
        turned or small in a large photo); landmarks fitted to a face seen turned the wrong
        way, or loosely to a face the detector barely sees, move by 0.15 of the eye distance
        and more (:data:`MAX_LANDMARK_SPREAD`). The crops are cut from a copy in which the
        face is :data:`SPREAD_PX` pixels wide.
        """
        image = _check_image(image)
        if not face.has_mesh:
            raise ValueError(
                "landmark_spread needs a face the face mesh found (given landmarks have no mesh)"
            )
        lo, hi = face.mesh[:468, :2].min(axis=0), face.mesh[:468, :2].max(axis=0)
        size = float((hi - lo).max())
        lm = face.landmarks68
        eye = float(np.linalg.norm(lm[36:42].mean(axis=0) - lm[42:48].mean(axis=0)))
        if not (size > 0 and eye > 0):
            return float("inf")
        centre = 0.5 * (lo + hi)
        blocks = int(size // (2 * SPREAD_PX))
        if blocks >= 2:  # a large face: the photo averaged over blocks first, the face still
            # twice SPREAD_PX wide or more (the copy below then reads far fewer pixels)
            from PIL import Image

            image = np.asarray(Image.fromarray(image).reduce(blocks))
            centre, lm = (centre + 0.5) / blocks - 0.5, (lm + 0.5) / blocks - 0.5
            size, eye = size / blocks, eye / blocks
        # one copy of the region every crop covers (edge coordinates), the face SPREAD_PX wide
        reach = max(m + max(abs(dx), abs(dy)) for m, dx, dy in SPREAD_REFITS) * size
        x0, y0 = centre + 0.5 - reach
        side = 2.0 * reach
        out = max(1, int(round(side * SPREAD_PX / size)))
        copy = _padded_box(image, float(x0), float(y0), side, out)
        k = out / side  # photo pixel -> copy pixel
        inner = (lm[17:] + 0.5 - np.array([x0, y0])) * k - 0.5
        c = (centre + 0.5 - np.array([x0, y0])) * k - 0.5
        moved = []
        for m, dx, dy in SPREAD_REFITS:
            w = m * size * k
            box = np.array([1.0, c[0] + dx * size * k, c[1] + dy * size * k, w, w])
            found = self._mesh_in_boxes(copy, [box])
            if not found:
                moved.append(float("inf"))
                continue
            again = landmarks68_from_mediapipe(found[0])[17:, :2]
            moved.append(float(np.linalg.norm(again - inner, axis=1).mean() / (eye * k)))
        return float(np.median(moved))

    def person_probability(self, image: np.ndarray) -> np.ndarray | None:
        """Selfie-segmentation person probability (H, W) float32 in [0, 1]; None when the
        detector was made without segmentation."""
        if self._segmenter is None:
            return None
        image = _check_image(image)
        result = self._process(self._segmenter, image)
        return np.clip(np.asarray(result.segmentation_mask, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        for s in (self._mesh, self._mesh_single, self._detector, self._segmenter):
            if s is not None:
                s.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The crops of :meth:`FaceDetector.landmark_spread`: ``(scale, dx, dy)``, a face box ``scale``
#: times the face's size (the mesh's extent), its centre moved by ``(dx, dy)`` times the size
#: (each cut, as the detector's boxes are, twice the box's size).
SPREAD_REFITS: tuple[tuple[float, float, float], ...] = (
    (0.8, 0.0, 0.0),
    (1.0, 0.0, 0.0),
    (1.3, 0.0, 0.0),
    (1.0, 0.15, 0.0),
    (1.0, 0.0, 0.15),
)

#: The face's size in the copy :meth:`FaceDetector.landmark_spread` cuts its crops from, pixels
#: (crops of 205-333 pixels: the face mesh's detector and landmark models see 128 and 192).
SPREAD_PX = 128

#: The landmark spread above which ``prepare-images`` refuses a photo's detected landmarks
#: (:meth:`FaceDetector.landmark_spread`; eye distances). On 102 synthetic photos with exact
#: landmarks, the 65 detections within 0.1 eye distances of the truth spread at most 0.075 and
#: the 18 a quarter and more off at least 0.158; the 27 this refuses were 0.168 and more off.
#: On real photos (whole, tightly cropped, turned, small in a large photo), the 300 faces found
#: the right way up spread at most 0.043, the 12 fitted turned the wrong way 0.329 and more.
MAX_LANDMARK_SPREAD = 0.12

#: A landmark spread above which :meth:`FaceDetector.main_face_checked` looks for the face in
#: the photo's other quarter turns too: faces fitted in real photos turned the wrong way spread
#: 0.329 and more. (Above the limit but under this, trying the other turns took an upside-down
#: face for one of 102 synthetic photos given upright; from 0.25, none.)
TURN_AGAIN_SPREAD = 0.25

#: A face whose mesh spans less than this fraction of the photo's short side is fitted again
#: in a crop around it (:meth:`FaceDetector.detect_all_upright`).
REFIT_BELOW = 0.35

#: Smallest tile of the tiled search for small faces (:meth:`FaceDetector.detect_all`), pixels.
TILE_MIN = 384

#: Sizes, in multiples of a face's detector box, of the crops around it in which the quarter
#: turns of a photo are scored (:meth:`FaceDetector.orientation`), and the crops' side in pixels
#: (the full-range detector's input). On 480 cases, 8 real photos and 2 drawn faces pasted 130,
#: 300 and 600 px wide into 3000 x 2000 and 6000 x 4000 photos and given in each quarter turn
#: (two draws of places and backdrops), the scores of the whole photo and its tiles turned 100
#: wrongly (54 and 46 a draw; 7 of the 120 given upright); crops of 2 box sizes alone 14 (3 and
#: 11), these two sizes' mean none (chosen on the first draw, the second held out). The whole
#: search on 112 of them (7 faces): 36 photos turned wrongly before, none now.
ORIENTATION_CROPS = (2.0, 3.0)
ORIENTATION_CROP_PX = 192


#: The score a quarter turn must reach in the crops around the whole photo, taken for a face's
#: box (:meth:`FaceDetector.orientation`): a face filling the photo (a tight crop) scores 0.7-0.9
#: upright; a profile the detector cannot find scores 0.3-0.6 in some turns. Measured on the 8
#: real photos of the project's trials cut to their faces (crops 0.8-1.5 times the extent of
#: their landmarks, at 224 px) and on 108 synthetic FaceScape wild photos (18 seeds, yaw up to
#: 90 degrees), each given in its four turns: turned crops were turned wrongly 47 of 96 times
#: before, 4 now; no face was found in 49 of the 128 crops before, in none now (their 68
#: landmarks 0.8-7% of the eye distance from those found in the whole photo, on average; at
#: 1024 px, 56 and 0); synthetic photos given turned were turned wrongly 152 of 324 times before,
#: 120 now, given upright 4 and 3 of 108 times, and no face was found in 108 and 72 of 432.
WHOLE_PHOTO_TURN_SCORE = 0.65


#: Long side, in pixels, of the copy of a photo in which a face filling it is looked for
#: (:meth:`FaceDetector._mesh_in_whole_photo`): the crop twice its size is resampled to at most
#: 768 px, the face mesh's largest crop, so a larger copy adds no detail.
WHOLE_PHOTO_PX = 384


#: The least extent of a face mesh fitted around the whole photo (:data:`WHOLE_PHOTO_PX`), in
#: parts of the photo's short side, for it to be taken: the faces of the 8 real photos of the
#: project's trials cut to 0.8-1.5 times the extent of their landmarks span 0.79-1.45 of theirs
#: there, while in synthetic photos where mediapipe finds no face otherwise (turned 60 degrees
#: and more) such a mesh spans 0.46-0.63 of the photo and lies 35-40 px off the face's landmarks
#: (0.36-0.42 of the eye distance).
WHOLE_PHOTO_MIN_EXTENT = 0.75


def _turned(image: np.ndarray, k: int) -> np.ndarray:
    """``np.rot90(image, k)``, contiguous (mediapipe's input); ``image`` itself for no turn."""
    return np.ascontiguousarray(np.rot90(image, k)) if k % 4 else image


def _main_face(faces: list[DetectedFace], size: tuple[int, int]) -> DetectedFace:
    """The main one of ``faces`` (largest, most central; :func:`select_main_face`) in a photo
    of ``size`` ``(H, W)``."""
    return faces[select_main_face(np.stack([f.box for f in faces]), size)]


def _shrunk(image: np.ndarray, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` resized so that its long side is at most ``longest`` pixels, and the scales
    ``(x, y)`` from its pixels' edges to the photo's (1 when it is small enough already)."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(h, w) / longest
    if scale <= 1.0:
        return image, np.ones(2)
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
    return np.ascontiguousarray(small), np.array([w / size[0], h / size[1]])


def _tile_starts(n: int, side: int) -> list[int]:
    """Starts of tiles of ``side`` pixels, half overlapping, covering ``0..n`` (the last flush
    with the end)."""
    starts = list(range(0, max(n - side, 0) + 1, max(side // 2, 1)))
    if starts[-1] + side < n:
        starts.append(n - side)
    return starts


def _suppress_overlaps(boxes: list[np.ndarray], iou: float = 0.3) -> list[np.ndarray]:
    """``boxes`` ``(score, cx, cy, width, height)`` without those overlapping a stronger one by
    more than ``iou`` (intersection over union)."""
    kept: list[np.ndarray] = []
    for b in sorted(boxes, key=lambda b: -b[0]):
        lo, hi = b[1:3] - b[3:5] / 2, b[1:3] + b[3:5] / 2
        clash = False
        for k in kept:
            klo, khi = k[1:3] - k[3:5] / 2, k[1:3] + k[3:5] / 2
            inter = np.prod(np.clip(np.minimum(hi, khi) - np.maximum(lo, klo), 0, None))
            union = np.prod(b[3:5]) + np.prod(k[3:5]) - inter
            clash |= bool(union > 0 and inter / union > iou)
        if not clash:
            kept.append(b)
    return kept


def _padded_box(image: np.ndarray, x0: float, y0: float, side: float, out: int) -> np.ndarray:
    """Resample the square ``(x0, y0, side)`` (edge coordinates) of ``image`` to ``out`` pixels,
    black outside the photo."""
    from PIL import Image

    h, w = image.shape[:2]
    pad = int(np.ceil(max(0.0, -x0, -y0, x0 + side - w, y0 + side - h))) + 2
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 3), dtype=np.uint8)
    canvas[pad : pad + h, pad : pad + w] = image
    resized = Image.fromarray(canvas).resize(
        (out, out),
        Image.Resampling.BICUBIC,
        box=(x0 + pad, y0 + pad, x0 + pad + side, y0 + pad + side),
    )
    return np.ascontiguousarray(np.asarray(resized))


def unrotate_points(mesh: np.ndarray, k: int, size: tuple[int, int]) -> np.ndarray:
    """Map points (N, 2 or more; ``x``, ``y`` pixels first) found in ``np.rot90(image, k)`` back
    to ``image`` of size (H, W); further columns are kept."""
    h, w = size
    out = mesh.copy()
    x, y = mesh[:, 0].copy(), mesh[:, 1].copy()
    # One turn of np.rot90 takes (x, y) in an image of width w_j to (y, w_j - 1 - x); undo the
    # turns last first. The width before turn j is W for even j, H for odd j.
    for j in reversed(range(k % 4)):
        w_j = w if j % 2 == 0 else h
        x, y = (w_j - 1) - y, x
    out[:, 0], out[:, 1] = x, y
    return out

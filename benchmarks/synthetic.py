"""Small synthetic benchmarks in the real on-disk layouts, so every protocol runs out of the box.

:func:`make_synthetic_benchmark` draws faces from the facehd-synth morphable model and writes the
ground truth exactly as the real benchmark distributes it (see :mod:`benchmarks.readers`), plus a
predictions folder from a simple method, ``synth-fit``: the model refitted roughly (the true
identity shrunk towards the mean plus noise, part of the expression), placed in a frame of its
own (NoW, REALY) or image-aligned (FaceScape). Scoring that folder exercises the readers on the
real formats and the whole protocol, with errors of a realistic size (about 1-2 mm).

Layouts written under ``out``:

- ``now``: ``imagepathsvalidation.txt`` (4 challenges per subject),
  ``scans/<subject>/<subject>.obj`` (a neutral scan in a scanner frame, mm),
  ``scans_lmks_onlypp/<subject>/<subject>.pp`` (7 MeshLab picked points) and
  ``predictions/synth-fit/<subject>/<challenge>/<image>.obj`` with ``.txt``
  landmarks (in metres and rotated, as a method's own frame would be).
- ``realy``: ``REALY_HIFI3D_keypoints/<k>.obj`` (85 keypoints), ``REALY_scan_region/<k>/*.obj``,
  ``metrical_scale.txt`` (the ground truth is stored divided by it), the topology
  ``facehd-synth.txt`` / ``facehd-synth.obj`` (85 keypoints located on facehd-synth's mesh),
  ``predictions/synth-fit/<k>_0.obj`` with a copy of the topology files, and a frontal photo
  of each subject, ``images/frontal/<k>_0.jpg``; the side-view split as the official data has
  it (4 side views a subject): ``images/side/<k>_<j>.jpg`` (``j`` 1-4, the head turned 20-45
  degrees to either side) and their ``synth-fit`` predictions,
  ``predictions/synth-fit-side/<k>_<j>.obj`` (the official data's photo folders have their own
  layout: ``facehd bench --images`` names the folder).
- ``facescape``: ``data/wild_gt_mesh/<NNN>.obj`` (one image per yaw bin and subject),
  ``data/lab_gt_mesh/<SS>.obj``, ``data/lab_cam/<SS>_<F>_<VV>.json``, ``code/predef/*.npy`` and
  ``pred/{wild,lab}_pred/synth-fit/<name>.obj`` (image-aligned meshes), and the photos
  ``data/wild_image/<NNN>.jpg`` and ``data/lab_image/<SS>_<F>_<VV>.jpg`` (256 px), drawn by
  the benchmark's own cameras (wild: the orthographic ``[-1, 1]`` view, from a camera 100 m
  away; lab: ``K`` and ``Rt`` of the camera file).

NoW and the multi-view sets get rendered photos too (``iphone_pictures/...``).

``synth.json`` records what the folder was made with (the benchmark, seed, subjects, lab views
and focals). The same settings rewrite the same bytes; other settings, or a folder holding files
that no such run wrote (a real benchmark's root, say), are refused with the reason named, so the
ground truth under a method's predictions and results never changes silently. The record also
says whether the folder is finished (``complete``, as a dataset's HDF5 attribute does): false
from before the first file is written until the last one is, so a run stopped part way leaves a
folder that ``facehd bench`` refuses (:func:`check_benchmark_finished`) until the same command,
run again, has written it whole.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facehd.csvtext import atomic_write_bytes, atomic_write_text
from facehd.errors import InputFileError, check_output_folder
from facehd.mesh import Mesh, save_mesh
from facehd.transforms import rotation_from_axis_angle, rotation_matrix_from_euler

__all__ = [
    "BENCHMARK_RECORD",
    "check_benchmark_finished",
    "check_benchmark_kind",
    "is_synthetic_benchmark",
    "benchmark_data",
    "check_benchmark_out",
    "make_synthetic_benchmark",
    "SYNTH_METHOD",
    "synth_keypoints85",
    "synth_realy_topology",
    "write_pp",
]

#: Name of the simple method whose predictions are written.
SYNTH_METHOD = "synth-fit"

_NOW7 = (36, 39, 42, 45, 33, 48, 54)
_PP_DATE = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through :func:`facehd.csvtext.atomic_write_bytes`: no half-written file."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_pp(path: Path, points: np.ndarray) -> Path:
    """Write points as a MeshLab ``.pp`` file (header of 8 lines, then one ``<point>`` per line,
    named 1, 2, ...) as the NoW dataset ships them, with a fixed date so the files are the same
    on every run."""
    from facehd.landmarks import save_landmarks_pp

    return save_landmarks_pp(
        path, points, f"{path.stem}.obj", first=1, user="facehd", when=_PP_DATE
    )


def _model():  # noqa: ANN202 - MorphableModel
    from facehd.morphable import facehd_synth

    return facehd_synth()


def _faces_of(model, rng: np.random.Generator, n: int, exp_scale: float = 0.0) -> list[tuple]:  # noqa: ANN001
    out = []
    for _ in range(n):
        ident = rng.normal(size=model.n_id) * model.id_std
        expr = rng.normal(size=model.n_exp) * model.exp_std * exp_scale
        out.append((ident, expr))
    return out


def _rough_fit(model, ident: np.ndarray, expr: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # noqa: ANN001
    """The simple method: identity shrunk towards the mean plus noise, half the expression."""
    i2 = 0.7 * ident + 0.3 * rng.normal(size=model.n_id) * model.id_std
    e2 = 0.5 * expr
    return np.asarray(model.vertices(i2, e2), dtype=np.float64)


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return rotation_from_axis_angle(axis * np.deg2rad(rng.uniform(0.3, 1.0) * max_deg))


def synth_keypoints85(model) -> np.ndarray:  # noqa: ANN001
    """Vertex indices of 85 REALY-style keypoints on facehd-synth's mesh.

    0-67 are the iBUG-68 landmarks; 68-84 are extra points (brow and forehead points, nose wings
    70 and 71, cheek centres 76 and 77, jaw and chin points), each the mean-shape vertex nearest
    to a fixed combination of landmarks.
    """
    v = np.asarray(model.vertices(), dtype=np.float64)
    lm_idx = np.asarray(model.landmarks68, dtype=np.int64)
    lm = v[lm_idx]

    def mid(a: int, b: int, t: float = 0.5) -> np.ndarray:
        return lm[a] + t * (lm[b] - lm[a])

    extra = [
        mid(21, 22),  # 68 glabella
        mid(27, 28),  # 69 upper nose bridge
        lm[31] + 0.6 * (lm[31] - lm[33]),  # 70 left nose wing
        lm[35] + 0.6 * (lm[35] - lm[33]),  # 71 right nose wing
        lm[19] + 0.9 * (lm[19] - lm[37]),  # 72 forehead left
        lm[24] + 0.9 * (lm[24] - lm[44]),  # 73 forehead right
        mid(19, 24) + 0.9 * (mid(19, 24) - mid(37, 44)),  # 74 forehead centre
        mid(21, 22) + 0.5 * (mid(21, 22) - lm[27]),  # 75 lower forehead
        mid(2, 31, 0.55),  # 76 left cheek
        mid(14, 35, 0.55),  # 77 right cheek
        mid(4, 48, 0.5),  # 78 left lower cheek
        mid(12, 54, 0.5),  # 79 right lower cheek
        mid(57, 8, 0.5),  # 80 chin
        mid(6, 57, 0.5),  # 81 left chin
        mid(10, 57, 0.5),  # 82 right chin
        mid(0, 36, 0.5),  # 83 left temple
        mid(16, 45, 0.5),  # 84 right temple
    ]
    from scipy.spatial import cKDTree

    _, idx = cKDTree(v).query(np.asarray(extra), k=1)
    return np.concatenate([lm_idx, np.asarray(idx, dtype=np.int64)])


def _topology_entries(model, vertex_ids: np.ndarray) -> list[list[float]]:  # noqa: ANN001
    """REALY ``[triangle, w0, w1]`` entries putting each keypoint on its vertex."""
    faces = np.asarray(model.faces)
    entries = []
    for vid in vertex_ids:
        f, c = np.argwhere(faces == vid)[0]
        w = [0.0, 0.0]
        if c < 2:
            w[c] = 1.0
        entries.append([int(f), w[0], w[1]])
    return entries


def _realy_regions(model) -> dict[str, np.ndarray]:  # noqa: ANN001
    """REALY-like region masks on facehd-synth: the forehead reaches down over brows and eyes
    (REALY's forehead keypoints are the brow and eye points)."""
    r = model.regions
    v = np.asarray(model.vertices(), dtype=np.float64)
    n = np.asarray(model.vertex_normals(v), dtype=np.float64)
    fh = np.asarray(r.forehead, dtype=bool)
    eyes = np.asarray(r.eyes, dtype=bool)
    nose = np.asarray(r.nose, dtype=bool)
    y0 = v[eyes, 1].min() - 2.0
    band = (
        (v[:, 1] >= y0) & (v[:, 1] <= v[fh, 1].max()) & (np.abs(v[:, 0]) <= np.abs(v[fh, 0]).max())
    )
    upper = (fh | eyes | (band & (n[:, 2] > 0.3))) & ~nose
    return {
        "nose": nose,
        "mouth": np.asarray(r.mouth, bool),
        "forehead": upper,
        "cheek": np.asarray(r.cheeks, bool),
    }


def _region_mesh(mesh: Mesh, mask: np.ndarray) -> Mesh:
    sub, _ = mesh.subset_vertices(np.asarray(mask, dtype=bool))
    used = np.zeros(sub.n_vertices, dtype=bool)
    used[sub.faces.ravel()] = True
    return sub.subset_vertices(used)[0]


# ------------------------------------------------------------------------------------------


def _now(out: Path, rng: np.random.Generator, n_subjects: int, model) -> None:  # noqa: ANN001
    challenges = ("multiview_neutral", "multiview_expressions", "multiview_occlusions", "selfie")
    lines = []
    pred_root = out / "predictions" / SYNTH_METHOD
    identities = []
    for s, (ident, _) in enumerate(_faces_of(model, rng, n_subjects)):
        identities.append(ident)
        subject = f"SYNTH_{s:03d}"
        v = np.asarray(model.vertices(ident, None), dtype=np.float64)
        lm7 = np.asarray(model.landmarks(v), dtype=np.float64)[list(_NOW7)]
        # the scanner's frame
        r = _random_rotation(rng, 20.0)
        t = rng.normal(size=3) * 50.0
        scan = Mesh(v @ r.T + t, model.faces)
        save_mesh(out / "scans" / subject / f"{subject}.obj", scan)
        write_pp(out / "scans_lmks_onlypp" / subject / f"{subject}.pp", lm7 @ r.T + t)
        for c, ch in enumerate(challenges):
            image = f"IMG_{s:03d}{c}"
            lines.append(f"{subject}/{ch}/{image}.jpg")
            pv = _rough_fit(model, ident, np.zeros(model.n_exp), rng)
            plm = np.asarray(model.landmarks(pv), dtype=np.float64)[list(_NOW7)]
            rp = _random_rotation(rng, 40.0)
            sp_ = 0.001  # the method writes metres
            tp = rng.normal(size=3) * 0.05
            base = pred_root / subject / ch / image
            save_mesh(base.with_suffix(".obj"), Mesh(sp_ * pv @ rp.T + tp, model.faces))
            from facehd.landmarks import save_landmarks_txt

            save_landmarks_txt(base.with_suffix(".txt"), sp_ * plm @ rp.T + tp)
    atomic_write_text(out / "imagepathsvalidation.txt", "\n".join(lines) + "\n")
    # the photos, one per image of the list, so that a method can reconstruct them
    # (`facehd bench --method hrn --checkpoint C`)
    for s, ident in enumerate(identities):
        for c, ch in enumerate(challenges):
            _now_photo(
                model,
                ident,
                rng,
                out / "iphone_pictures" / f"SYNTH_{s:03d}" / ch / f"IMG_{s:03d}{c}.jpg",
            )


def _save_jpeg(path: Path, photo: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 photo as a JPEG (quality 95), atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=95)
    atomic_write_bytes(path, buf.getvalue())


def _now_photo(
    model,  # noqa: ANN001
    identity: np.ndarray,
    rng: np.random.Generator,
    path: Path,
    max_yaw_deg: float = 30.0,
    min_yaw_deg: float = 0.0,
) -> None:
    """Render one photo of the neutral face (synthetic albedo, lighting and background, head
    turned up to ``max_yaw_deg``, and at least ``min_yaw_deg`` to either side) to ``path``
    (JPEG, written atomically)."""

    from pipelines.synth_photos import PhotoConfig, render_photos

    v = np.asarray(model.vertices(identity, None), dtype=np.float64)
    lm68 = np.asarray(model.landmarks(v), dtype=np.float64)
    config = PhotoConfig(
        views=1, image_size=512, max_yaw_deg=max_yaw_deg, min_yaw_deg=min_yaw_deg, blemishes=10
    )
    photo = render_photos(model, v, np.zeros((64, 64)), lm68, rng, config).arrays["images"][0]
    _save_jpeg(path, photo)


#: Views per set of the synthetic multi-view benchmark (FaceScape's sets have 3).
MULTIVIEW_VIEWS = 3
#: Its split: ``<root>/multiview_synth.txt``.
MULTIVIEW_SPLIT = "synth"


def _multiview(out: Path, rng: np.random.Generator, n_subjects: int, model) -> None:  # noqa: ANN001
    """NoW's layout with a multi-view set list: one set of ``MULTIVIEW_VIEWS`` photos of each
    subject's face (one expression, head yaw within 30 degrees each side), the scan in a scanner
    frame with NoW's 7 landmarks, and rough ``synth-fit`` predictions."""

    from facehd.landmarks import save_landmarks_txt
    from pipelines.synth_photos import PhotoConfig, render_photos

    lines = []
    pred_root = out / "predictions" / SYNTH_METHOD
    challenge = f"{MULTIVIEW_VIEWS}views"
    for s, (ident, expr) in enumerate(_faces_of(model, rng, n_subjects, exp_scale=0.5)):
        subject = f"SYNTH_{s:03d}"
        v = np.asarray(model.vertices(ident, expr), dtype=np.float64)
        lm68 = np.asarray(model.landmarks(v), dtype=np.float64)
        r = _random_rotation(rng, 20.0)
        t = rng.normal(size=3) * 50.0
        save_mesh(out / "scans" / subject / f"{subject}.obj", Mesh(v @ r.T + t, model.faces))
        write_pp(out / "scans_lmks_onlypp" / subject / f"{subject}.pp", lm68[list(_NOW7)] @ r.T + t)
        name = f"SET_{s:03d}"
        lines.append(f"{subject}/{challenge}/{name}")
        config = PhotoConfig(views=MULTIVIEW_VIEWS, image_size=512, max_yaw_deg=30.0, blemishes=10)
        photos = render_photos(model, v, np.zeros((64, 64)), lm68, rng, config).arrays["images"]
        folder = out / "images" / subject / challenge / name
        for k, photo in enumerate(photos):
            _save_jpeg(folder / f"view{k}.jpg", photo)
        pv = _rough_fit(model, ident, expr, rng)
        plm = np.asarray(model.landmarks(pv), dtype=np.float64)[list(_NOW7)]
        base = pred_root / subject / challenge / name
        save_mesh(base.with_suffix(".obj"), Mesh(pv, model.faces))
        save_landmarks_txt(base.with_suffix(".txt"), plm)
    atomic_write_text(out / f"multiview_{MULTIVIEW_SPLIT}.txt", "\n".join(lines) + "\n")


def synth_realy_topology(model) -> tuple[list[list[float]], Mesh]:  # noqa: ANN001
    """REALY's topology files for facehd-synth's mesh: the 85 keypoint entries
    (``[triangle, w0, w1]``, :func:`synth_keypoints85`) and the template (the mean face)."""
    entries = _topology_entries(model, synth_keypoints85(model))
    return entries, Mesh(np.asarray(model.vertices(), dtype=np.float64), model.faces)


#: Side views a subject of the synthetic REALY benchmark has (the official data's 400 side-view
#: images are 4 of each of its 100 subjects), and the range of their heads' yaw, degrees.
REALY_SIDE_VIEWS = 4
REALY_SIDE_YAW_DEG = (20.0, 45.0)


def _realy(out: Path, rng: np.random.Generator, n_subjects: int, model) -> None:  # noqa: ANN001
    kp_ids = synth_keypoints85(model)
    entries, template = synth_realy_topology(model)
    pred_dir = out / "predictions" / SYNTH_METHOD
    side_dir = out / "predictions" / f"{SYNTH_METHOD}-side"
    for folder in (out, pred_dir, side_dir):
        atomic_write_text(folder / "facehd-synth.txt", json.dumps(entries) + "\n")
        save_mesh(folder / "facehd-synth.obj", template)
    scales = rng.uniform(6.5, 10.2, size=n_subjects)
    atomic_write_text(out / "metrical_scale.txt", "".join(f"{float(s)!r}\n" for s in scales))
    regions = _realy_regions(model)
    subjects = []
    for k, (ident, _) in enumerate(_faces_of(model, rng, n_subjects), start=1):
        subjects.append(ident)
        v_mm = np.asarray(model.vertices(ident, None), dtype=np.float64)
        gt = Mesh(v_mm / scales[k - 1], model.faces)
        atomic_write_text(
            out / "REALY_HIFI3D_keypoints" / f"{k}.obj",
            "".join("v {!r} {!r} {!r}\n".format(*map(float, p)) for p in gt.vertices[kp_ids]),
        )
        for name, mask in regions.items():
            save_mesh(out / "REALY_scan_region" / str(k) / f"{name}.obj", _region_mesh(gt, mask))
        save_mesh(pred_dir / f"{k}_0.obj", _realy_prediction(model, ident, rng))
    # a frontal photo of each subject, named as its prediction (drawn after every other file,
    # from a stream of its own)
    photo_rng = np.random.default_rng(rng.integers(2**63))
    side_rng = np.random.default_rng(rng.integers(2**63))
    for k, ident in enumerate(subjects, start=1):
        path = out / "images" / "frontal" / f"{k}_0.jpg"
        _now_photo(model, ident, photo_rng, path, max_yaw_deg=10.0)
    # the side-view split: REALY_SIDE_VIEWS photos of each subject turned aside, each with a
    # synth-fit prediction of its own (from a stream of their own, after the frontal split's)
    low, high = REALY_SIDE_YAW_DEG
    for k, ident in enumerate(subjects, start=1):
        for j in range(1, REALY_SIDE_VIEWS + 1):
            path = out / "images" / "side" / f"{k}_{j}.jpg"
            _now_photo(model, ident, side_rng, path, max_yaw_deg=high, min_yaw_deg=low)
            save_mesh(side_dir / f"{k}_{j}.obj", _realy_prediction(model, ident, side_rng))


def _realy_prediction(model, ident: np.ndarray, rng: np.random.Generator) -> Mesh:  # noqa: ANN001
    """A ``synth-fit`` REALY prediction of the neutral face ``ident``: :func:`_rough_fit`,
    turned up to 30 degrees and moved about 20 mm, a frame of its own."""
    pv = _rough_fit(model, ident, np.zeros(model.n_exp), rng)
    rp = _random_rotation(rng, 30.0)
    return Mesh(pv @ rp.T + rng.normal(size=3) * 20.0, model.faces)


def _image_format(points_norm: np.ndarray) -> np.ndarray:
    """Normalised orthographic coordinates -> the image-aligned prediction format (pixels)."""
    px = np.empty_like(points_norm)
    px[:, 0] = (points_norm[:, 0] + 1.0) * 128.0
    px[:, 1] = (points_norm[:, 1] + 1.0) * 128.0
    px[:, 2] = points_norm[:, 2] * 128.0 + 500.0
    return px


def _facescape(
    out: Path,
    rng: np.random.Generator,
    n_subjects: int,
    model,  # noqa: ANN001
    lab_views: tuple[int, ...],
    lab_focals: tuple[int, ...],
) -> None:
    from benchmarks.facescape import LAB_FOCAL_LENGTHS, STD_PUPIL_DIST

    data = out / "data"
    predef = out / "code" / "predef"
    predef.mkdir(parents=True, exist_ok=True)
    wild_pred = out / "pred" / "wild_pred" / SYNTH_METHOD
    lab_pred = out / "pred" / "lab_pred" / SYNTH_METHOD
    faces = model.faces
    # photos to render once every other draw is done: (folder, name, identity, expression, K, R, t)
    shots: list[tuple[Path, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    flip = np.diag([1.0, -1.0, -1.0])  # model frame (y up, z to the viewer) -> OpenCV camera
    # ---- wild: n_subjects images per yaw bin, image index = 100 * bin + k
    bins = ((0.0, 5.0), (5.0, 30.0), (30.0, 60.0), (60.0, 90.0))
    n_wild = 400
    pupil = np.ones(n_wild)
    centres = np.zeros((n_wild, 3))
    rots = np.tile(np.eye(3), (n_wild, 1, 1))
    for b, (lo, hi) in enumerate(bins):
        for k, (ident, expr) in enumerate(_faces_of(model, rng, n_subjects, exp_scale=1.0)):
            idx = 100 * b + k
            v = np.asarray(model.vertices(ident, expr), dtype=np.float64)
            lm = np.asarray(model.landmarks(v), dtype=np.float64)
            yaw = np.deg2rad(rng.uniform(lo, hi)) * rng.choice([-1.0, 1.0])
            r = rotation_matrix_from_euler(
                np.array([rng.normal() * 0.05, yaw, rng.normal() * 0.05])
            )
            k_norm = 1.0 / rng.uniform(100.0, 130.0)  # normalised units per mm
            shift = np.array([rng.normal() * 0.05, rng.normal() * 0.05, -2.0])
            to_norm = lambda p, r=r, k_norm=k_norm, shift=shift: k_norm * p @ r.T + shift  # noqa: E731
            gt = Mesh(to_norm(v), faces)
            eyes = lm[36:42].mean(0) - lm[42:48].mean(0)
            pupil[idx] = STD_PUPIL_DIST / (k_norm * np.linalg.norm(eyes))
            centres[idx] = gt.vertices.mean(axis=0)
            rots[idx] = r
            save_mesh(data / "wild_gt_mesh" / f"{idx:03d}.obj", gt)
            pv = _rough_fit(model, ident, expr, rng)
            save_mesh(wild_pred / f"{idx:03d}.obj", Mesh(_image_format(to_norm(pv)), faces))
            # the photo: a camera 100 m away whose pixels are the orthographic [-1, 1] square
            # (pixel centre j at x = (j + 0.5) / 128 - 1, the official renderer's convention)
            focal = 128.0 * k_norm * _WILD_DISTANCE_MM
            kmat = np.array([[focal, 0.0, 127.5], [0.0, focal, 127.5], [0.0, 0.0, 1.0]])
            t_cam = flip @ np.array([shift[0] / k_norm, shift[1] / k_norm, 0.0])
            t_cam[2] = _WILD_DISTANCE_MM
            shots.append((data / "wild_image", f"{idx:03d}", ident, expr, kmat, flip @ r, t_cam))
    _save_npy(predef / "wild_pupil_scales.npy", pupil)
    _save_npy(predef / "wild_head_centers.npy", centres)
    _save_npy(predef / "wild_rotations.npy", rots)
    # ---- lab: subjects x focal lengths x views
    yaws = [0.0] + [30.0 * s for s in (1, -1, 1, -1, 1, -1, 1, -1)] + [60.0, -60.0]
    pitches = [0.0, 0.0, 0.0, 15.0, 15.0, -15.0, -15.0, 8.0, -8.0, 0.0, 0.0]
    lab_rot = np.stack(
        [
            rotation_matrix_from_euler(np.deg2rad([p, y, 0.0]))
            for p, y in zip(pitches, yaws, strict=True)
        ]
    )
    distances = np.array([LAB_FOCAL_LENGTHS[f] * 230.0 / 200.0 for f in range(3)])  # mm
    lab_centres = np.stack([np.array([0.0, 0.0, d]) for d in distances])
    _save_npy(predef / "lab_rotations.npy", lab_rot)
    _save_npy(predef / "lab_head_centers.npy", lab_centres)
    for s, (ident, expr) in enumerate(_faces_of(model, rng, n_subjects, exp_scale=1.0)):
        v = np.asarray(model.vertices(ident, expr), dtype=np.float64)
        centre = v.mean(axis=0)
        canon = (v - centre) @ flip.T
        save_mesh(data / "lab_gt_mesh" / f"{s:02d}.obj", Mesh(canon / STD_PUPIL_DIST, faces))
        pv = (_rough_fit(model, ident, expr, rng) - centre) @ flip.T
        for f in lab_focals:
            focal = LAB_FOCAL_LENGTHS[f]
            kmat = np.array([[focal, 0.0, 128.0], [0.0, focal, 128.0], [0.0, 0.0, 1.0]])
            for view in lab_views:
                rt = np.concatenate(
                    [lab_rot[view], lab_centres[f][:, None] / STD_PUPIL_DIST], axis=1
                )
                name = f"{s:02d}_{f}_{view:02d}"
                atomic_write_text(
                    data / "lab_cam" / f"{name}.json",
                    json.dumps([kmat.tolist(), rt.tolist()]) + "\n",
                )
                pc = pv @ lab_rot[view].T + lab_centres[f]  # camera frame, mm
                u = focal * pc[:, 0] / pc[:, 2] + 128.0
                vv = focal * pc[:, 1] / pc[:, 2] + 128.0
                zbar = pc[:, 2].mean()
                img = np.stack([u, 256.0 - vv, -(pc[:, 2] - zbar) * focal / zbar], axis=1)
                save_mesh(lab_pred / f"{name}.obj", Mesh(img, faces))
                r_cam = lab_rot[view] @ flip
                t_cam = lab_centres[f] - r_cam @ centre
                # the benchmark's K puts pixel centres at +0.5 (pyrender); the renderer's at 0
                k_px = kmat - np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
                shots.append((data / "lab_image", name, ident, expr, k_px, r_cam, t_cam))
    _facescape_photos(model, shots, np.random.default_rng(rng.integers(2**63)))


#: Distance of the near-orthographic camera of the synthetic FaceScape wild photos, mm.
_WILD_DISTANCE_MM = 100_000.0


def _facescape_photos(model, shots: list, rng: np.random.Generator) -> None:  # noqa: ANN001
    """Render the synthetic FaceScape photos (256 px JPEG, written atomically)."""

    from pipelines.synth_photos import PhotoConfig, render_photos

    config = PhotoConfig(views=1, image_size=256, blemishes=10)
    flip = np.diag([1.0, -1.0, -1.0])
    front = (flip, np.zeros(3))  # OpenCV camera at the origin of a y-up, z-to-viewer frame
    for folder, name, ident, expr, kmat, r_cam, t_cam in shots:
        v = np.asarray(model.vertices(ident, expr), dtype=np.float64)
        lm68 = np.asarray(model.landmarks(v), dtype=np.float64)
        # the face is posed in front of the camera rather than the camera moved around it, so
        # that the light (fixed in the frame the face is given in) comes from the camera's side,
        # as in a studio; the picture is the same
        v, lm68 = ((p @ r_cam.T + t_cam) @ flip for p in (v, lm68))
        disp = np.zeros((64, 64))
        photo = render_photos(model, v, disp, lm68, rng, config, cameras=[(kmat, *front)])
        _save_jpeg(folder / f"{name}.jpg", photo.arrays["images"][0])


#: The settings record of a synthetic benchmark's folder.
BENCHMARK_RECORD = "synth.json"
#: FaceScape's lab views and focal-length indices by default (and from the command line).
_LAB_VIEWS, _LAB_FOCALS = [0, 1, 9], [0, 1, 2]
#: The ``tool`` its record names (``facehd synth`` without ``--benchmark`` writes
#: :data:`pipelines.synth.RECORD_TOOL` in a file of the same name).
RECORD_TOOL = "facehd synth --benchmark"


def _benchmark_record(root: str | Path) -> tuple[Path, dict] | None:
    """``(folder, record)`` of the benchmark :func:`make_synthetic_benchmark` wrote at ``root``
    (or the folder above it, for a data folder inside), None when there is none."""
    root = Path(root)
    for folder in (root, root.parent):
        try:
            record = json.loads((folder / BENCHMARK_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("tool") == RECORD_TOOL:
            return folder, record
    return None


def is_synthetic_benchmark(root: str | Path) -> bool:
    """Whether ``root`` (or the folder above it, for a data folder inside) is a benchmark
    written by :func:`make_synthetic_benchmark` (its ``synth.json`` says so)."""
    return _benchmark_record(root) is not None


def benchmark_data(root: str | Path) -> str:
    """What data a benchmark at ``root`` holds, for its leaderboard rows: empty for the
    benchmark's own data; for one :func:`make_synthetic_benchmark` wrote, ``synthetic`` and the
    settings that make it (``synthetic seed 0, 2 subjects``; FaceScape's lab views and focal
    indices too when not the defaults), so runs on two synthetic benchmarks rank apart."""
    found = _benchmark_record(root)
    if found is None:
        return ""
    record = found[1]
    n = record.get("subjects", "?")
    said = [f"seed {record.get('seed', '?')}", f"{n} subject{'' if n == 1 else 's'}"]
    lab = (record.get("lab_views", _LAB_VIEWS), record.get("lab_focals", _LAB_FOCALS))
    if record.get("benchmark") == "facescape" and lab != (_LAB_VIEWS, _LAB_FOCALS):
        said.append(f"lab views {lab[0]}, focals {lab[1]}")
    return "synthetic " + ", ".join(said)


def check_benchmark_finished(root: str | Path) -> None:
    """Refuse a synthetic benchmark whose writing has not finished (stopped part way, or being
    written now): it would be scored as a smaller benchmark that looks complete. Folders that
    are no synthetic benchmark, and records from before they said so, pass.

    Raises
    ------
    InputFileError
        Naming the folder and the command that finishes it.
    """
    found = _benchmark_record(root)
    if found is None or found[1].get("complete", True) is not False:
        return
    folder, record = found
    command = "the facehd synth --benchmark command that made it"
    # FaceScape's lab views and focals are the command line's unless set from Python
    lab = (record.get("lab_views", _LAB_VIEWS), record.get("lab_focals", _LAB_FOCALS))
    if lab == (_LAB_VIEWS, _LAB_FOCALS):
        command = (
            f"facehd synth --benchmark {record.get('benchmark')} --out {folder} "
            f"--subjects {record.get('subjects')} --seed {record.get('seed')}"
        )
    raise InputFileError(
        folder,
        "an unfinished synthetic benchmark (its writing was stopped part way, or is still "
        f"going: {BENCHMARK_RECORD} says complete false); run {command} again to finish it",
    )


#: How ``facehd bench`` scores each kind of synthetic benchmark (the splits it writes).
SCORED_AS = {
    "now": "now (its validation split)",
    "realy": "realy:frontal or realy:side",
    "facescape": "facescape:wild or facescape:lab",
    "multiview": "multiview:synth",
}


def check_benchmark_kind(root: str | Path, dataset: str) -> None:
    """Refuse to score a synthetic benchmark as another dataset (a NoW benchmark given to
    ``--dataset realy``, say): its files would be reported missing one by one, or as a list
    file that is not there, without saying what the folder holds. Folders that are no
    synthetic benchmark, and records without their kind, pass, and so do multi-view sets
    listed on a NoW benchmark (the multi-view sets' layout is NoW's).

    Raises
    ------
    InputFileError
        Naming the folder, its kind and the ``--dataset`` that scores it.
    """
    found = _benchmark_record(root)
    if found is None:
        return
    folder, record = found
    kind = record.get("benchmark")
    if kind == "now" and dataset == "multiview":
        return  # multi-view sets are read from NoW's layout: a list file of sets can be added
    if kind in SCORED_AS and kind != dataset:
        raise InputFileError(
            folder,
            f"a synthetic {kind} benchmark ({BENCHMARK_RECORD} says so), not {dataset}: score it "
            f"with --dataset {SCORED_AS[kind]}",
        )


#: Estimated bytes and seconds (one core) a subject of each benchmark takes, measured on this
#: project's 2-core CI machine: NoW 5 meshes and 4 photos, REALY its regions, 5 predictions and
#: 5 photos (frontal and side, 1.6 MB a prediction; and 4.7 MB of topology files once),
#: multi-view 2 meshes and 3 photos; FaceScape 4 wild images (truth, prediction, photo:
#: 3.2 MB), the lab truth (1.6 MB) and per lab image a prediction and a photo (1.6 MB), about
#: 1.5 s an image.
_SUBJECT_ESTIMATES = {"now": (8.7e6, 5.0), "realy": (9.1e6, 14.0), "multiview": (3.4e6, 4.5)}


def subject_estimate(name: str, lab_images: int = 9) -> tuple[float, float]:
    """``(bytes, seconds)`` of one subject of the synthetic benchmark ``name`` (FaceScape: with
    ``lab_images`` lab views × focal lengths)."""
    if name == "facescape":
        return 4 * 3.2e6 + 1.6e6 + lab_images * 1.6e6, 1.5 * (4 + lab_images)
    return _SUBJECT_ESTIMATES[name]


def _written_before_records(out: Path) -> bool:
    """Whether ``out`` holds a synthetic benchmark written before they had a record (its
    ``synth-fit`` predictions folder): written again, and recorded, as before."""
    return (out / "predictions" / SYNTH_METHOD).is_dir() or any(
        (out / "pred").glob(f"*_pred/{SYNTH_METHOD}")
    )


#: Subjects of a synthetic benchmark by default.
DEFAULT_SUBJECTS = 2


def _benchmark_settings(
    name: str,
    seed: int,
    n_subjects: int,
    lab_views: tuple[int, ...] = tuple(_LAB_VIEWS),
    lab_focals: tuple[int, ...] = tuple(_LAB_FOCALS),
) -> dict[str, Any]:
    """What a benchmark's ``synth.json`` records of how it was made (without the tool's name
    and whether it is complete)."""
    settings: dict[str, Any] = {"benchmark": name, "seed": int(seed), "subjects": int(n_subjects)}
    if name == "facescape":
        settings.update(lab_views=list(lab_views), lab_focals=list(lab_focals))
    return settings


def check_benchmark_out(
    name: str, out: str | Path, seed: int = 0, n_subjects: int = DEFAULT_SUBJECTS
) -> None:
    """Refuse, before any work, a folder :func:`make_synthetic_benchmark` would refuse to write
    ``name`` into with these settings (the command line's FaceScape lab views and focals): a
    file, a benchmark of other settings, someone else's files. Raises InputFileError."""
    out = Path(out)
    if out.exists():
        settings = _benchmark_settings(name, seed, n_subjects)
        _check_record(check_output_folder(out, "benchmark"), settings)


def _record(out: Path, settings: dict) -> None:
    """Check ``out`` against ``settings`` and write its ``synth.json`` (see the module), marked
    unfinished until :func:`_record_finished`."""
    _check_record(out, settings)
    _write_record(out, {"tool": RECORD_TOOL, **settings, "complete": False})


def _check_record(out: Path, settings: dict) -> None:
    """Refuse ``out`` when it holds a benchmark of other settings, or files this tool did not
    write (see :func:`_record`)."""
    from pipelines.synth import RECORD_TOOL as SCANS_RECORD_TOOL

    path = out / BENCHMARK_RECORD
    mine = {"tool": RECORD_TOOL, **settings}
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
            scans = isinstance(theirs, dict) and theirs.get("tool") == SCANS_RECORD_TOOL
            if not scans and (not isinstance(theirs, dict) or theirs.get("tool") != RECORD_TOOL):
                raise ValueError("not written by facehd synth --benchmark")
        except ValueError as exc:
            raise InputFileError(
                path, f"not a synthetic benchmark's settings record ({exc})"
            ) from None
        if scans:
            raise InputFileError(
                out,
                "holds synthetic scans (facehd synth without --benchmark), not a benchmark: "
                "write the benchmark to another --out",
            )
        diff = [
            f"{k} {theirs.get(k)!r} there, {v!r} now" for k, v in mine.items() if theirs.get(k) != v
        ]
        if diff:
            raise InputFileError(
                out,
                "holds a synthetic benchmark made with other settings ("
                + "; ".join(diff)
                + "); write to another --out, or delete the folder to start over",
            )
    elif out.is_dir() and any(out.iterdir()) and not _written_before_records(out):
        raise InputFileError(
            out,
            f"holds files that facehd synth --benchmark did not write (no {BENCHMARK_RECORD}); "
            "write to an empty or new --out",
        )


def _write_record(out: Path, record: dict) -> None:
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write_text(out / BENCHMARK_RECORD, text)


def make_synthetic_benchmark(
    name: Literal["now", "realy", "facescape", "multiview"],
    out: Path,
    seed: int = 0,
    n_subjects: int = DEFAULT_SUBJECTS,
    *,
    lab_views: tuple[int, ...] = tuple(_LAB_VIEWS),
    lab_focals: tuple[int, ...] = tuple(_LAB_FOCALS),
) -> Path:
    """Write a small synthetic benchmark in ``name``'s real on-disk layout under ``out``.

    Parameters
    ----------
    name : ``now``, ``realy``, ``facescape`` or ``multiview`` (NoW's layout with the split
        ``multiview_synth.txt`` of 3-view sets, scored with ``--dataset multiview:synth``).
    out : destination folder (created).
    seed : random seed (the same seed writes the same files).
    n_subjects : subjects (NoW, REALY, FaceScape lab) and images per yaw bin (FaceScape wild).
    lab_views : FaceScape lab views written (indices 0-10).
    lab_focals : FaceScape lab focal-length indices written (0-2).

    Returns
    -------
    ``out``; the predictions of the ``synth-fit`` method are in ``out/predictions/synth-fit``
    (NoW, REALY, multi-view) or ``out/pred/{wild,lab}_pred/synth-fit`` (FaceScape).
    """
    if name not in ("now", "realy", "facescape", "multiview"):
        raise ValueError(
            f"make_synthetic_benchmark: unknown benchmark {name!r} (now, realy, facescape, "
            "multiview)"
        )
    if n_subjects < 1:
        raise ValueError(f"make_synthetic_benchmark: n_subjects must be >= 1, got {n_subjects}")
    if seed < 0:
        raise ValueError(f"make_synthetic_benchmark: seed must be >= 0, got {seed}")
    if name == "facescape" and n_subjects > 100:
        raise ValueError("FaceScape has 100 images per yaw bin: n_subjects must be <= 100")
    if not set(lab_views) <= set(range(11)) or not set(lab_focals) <= {0, 1, 2}:
        raise ValueError("lab_views must lie in 0..10 and lab_focals in 0..2")
    found = _benchmark_record(out)
    if found is None or found[0] != Path(out):  # a rewrite replaces files of the same sizes
        from facehd.diskspace import check_room

        size, seconds = subject_estimate(name, len(lab_views) * len(lab_focals))
        check_room(
            out,
            request=f"--benchmark {name} --subjects {n_subjects}",
            items=n_subjects,
            item="subject",
            bytes_each=size,
            seconds_each=seconds,
        )
    out = check_output_folder(out, "benchmark")
    settings = _benchmark_settings(name, seed, n_subjects, tuple(lab_views), tuple(lab_focals))
    _record(out, settings)  # unfinished from here: a run stopped part way is not a benchmark
    rng = np.random.default_rng(seed)
    model = _model()
    if name == "now":
        _now(out, rng, n_subjects, model)
    elif name == "realy":
        _realy(out, rng, n_subjects, model)
    elif name == "multiview":
        _multiview(out, rng, n_subjects, model)
    else:
        _facescape(out, rng, n_subjects, model, tuple(lab_views), tuple(lab_focals))
    _write_record(out, {"tool": RECORD_TOOL, **settings, "complete": True})
    return out

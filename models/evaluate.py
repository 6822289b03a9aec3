"""How close HRN's three levels come to the truth, on synthetic photos with exact ground truth.

For every held-out synthetic scan written by ``facehd synth --photos V`` (files ``<id>.gt.npz``,
``<id>.gt_m1.ply``, ``<id>.gt_m2.ply``, ``<id>.photos.npz``) and each of its photos: crop the
photo the base model's way from its true landmarks (no detector in the loop), reconstruct it
(:class:`models.reconstruct.Reconstructor`) and score M0, M1 and M2 against the true detailed
surface (the dense ``gt_m2``, model frame, mm):

1. Truth points: the vertices of ``gt_m2`` on the model's fit region (no eyes, no nostrils) whose
   texel the photo shows (the reconstruction's valid mask), an even random subset of at most
   ``max_points`` (seeded).
2. Alignment: each predicted level (canonical frame) is moved rigidly onto the truth: Kabsch on
   the corresponding model vertices of the fit region (predicted M0 or M1 vs the true M1, same
   topology), refined by rigid point-to-plane ICP of those vertices to ``gt_m2``. M2 uses M1's
   transform (M2 is M1 displaced).
3. Distance: mean |closest-point distance| from the truth points to the predicted surface, mm.
   Normal error: mean angle between the true normal at each truth point and the predicted
   surface's interpolated vertex normal at its closest point, radians. Every level is measured
   on the same mesh: M2's texel grid (:func:`level_mesh`; M0 and M1 resampled on it with zero
   displacement), so that the levels differ by their geometry alone and not by how their
   normals are estimated. (The dense grid's normals are smoother than the model mesh's: M0
   scored on the model mesh came out about 0.001 rad off the same face on the grid.)

Distances are one-sided (truth -> prediction, like FaceScape's benchmark) and rigid (no scale):
a reconstruction of the wrong size pays for it.

Detail scores, by UV correspondence (prediction and truth share the model's UV layout; needs the
scan's ``<id>.gt.npz``), over the fit-region texels the photo shows, at the true displacement
map's resolution:

4. ``disp_pearson``: Pearson correlation of the predicted and the true displacement maps (the
   prediction upsampled bilinearly).
5. ``normal_uv_m1`` / ``normal_uv_m2``: mean angle between the true detailed normal of each
   texel (:func:`facehd.uv.detail_normals` of the true M1 and displacement) and the predicted
   M1 normal / M2 detail normal of the same texel, rotated by M1's alignment. Closest points
   cannot tell whether details are right when M1 is millimetres off (a wrinkle a few mm wide
   lands on a random phase); the same texel can.

Detail scores by the skin point each texel shows (:func:`seen_detail_scores`; needs the photo's
camera, ``K``, ``R``, ``t`` of the ``.photos.npz``), at the predicted map's resolution:

6. ``disp_pearson_seen``, ``normal_seen_m1`` / ``normal_seen_m2``: as 4-5, but the truth is read
   at the true surface point seen at the pixel where the predicted texel projects (the
   reconstruction's pose and camera), over the texels the prediction itself shows. This is the
   correspondence a photo carries, and the one the trainer supervises with
   (:meth:`models.system.FaceSystem.target_displacement`): a prediction whose parameterisation
   slides along the true surface keeps its scores here, not in 4-5.

The ceiling of the detail level for this reconstruction:

7. ``normal_m2_oracle``: M2's normal error (3) when the predicted displacement is replaced by
   :func:`oracle_displacement`, the truth of the skin point each texel shows (what a perfect
   detail network would output for this M0/M1). Details a few millimetres wide only help where
   M1 is close enough for them to land on the right place: when ``normal_m2_oracle`` is not
   below ``normal_m1``, the coarse fit, not the detail network, limits M2.

The floor the base model must beat:

8. ``dist_mean_face`` / ``normal_mean_face``: distance and normal error (3, on the same grid) of
   the morphable model's mean face (every coefficient zero), aligned to the truth as M0 is (2) and
   scored at the same truth points: the score of a base model that ignores the photo. An M0
   further off than this has not learnt the faces' identity from the training photos.

The metrics of the paper's Tables 1 and 3:

9. ``cd_fs_m0`` ... ``cd_fs_m2`` (mm) and ``mne_fs_m0`` ... ``mne_fs_m2`` (rad): FaceScape's CD
   and MNE (:func:`facehd.cylinder.cylinder_scores`: cylindrical maps of both surfaces about
   the vertical axis through the true M1's centroid, symmetric Chamfer distance and the official
   code's normal error on the pixels both hit) of each level aligned as in 2, against the whole
   true detailed surface. The protocol places a prediction by its camera and a depth shift; here
   the rigid alignment of 2 does it, so that the levels differ by their shape alone. The
   normals compared are those of the triangles each ray hits, along rays from the axis, not at
   closest points as in 3. ``cd_fs_mean_face`` and ``mne_fs_mean_face``: the same for the mean
   face of 8; ``mne_fs_m2_oracle``: the MNE of the oracle's M2 of 7.
10. ``cd_cam_m0`` ... ``cd_cam_m2``, ``mne_cam_m0`` ... ``mne_cam_m2`` and ``mne_cam_m2_oracle``:
   the same scores with each level placed as the protocol places a prediction, without any
   fitted rotation (:func:`camera_levels`): in the photo's camera, every vertex on the ray of the
   pixel where the reconstruction projects it, with the prediction's own size and relief
   (:func:`place_in_camera`), then slid along the camera rays onto the truth by the protocol's
   depth alignment (:func:`facehd.depthmap.slide_to_depth`). The reconstruction's pose errors
   count here, as in the benchmark, and its details stay on the skin the photo shows at their
   pixels, which is where the detail network reads them: the rigid alignment of 2 moves the face
   to fit its shape, and a detail a few millimetres wide moved with it lands off its skin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from facehd.csvtext import write_rows
from facehd.errors import FacehdError, InputFileError
from facehd.mesh import Mesh, load_mesh
from models.reconstruct import Reconstruction, Reconstructor

if TYPE_CHECKING:
    from facehd.cylinder import CylinderMap
    from facehd.morphable import MorphableModel

__all__ = [
    "EvalRow",
    "EvalSummary",
    "LevelScores",
    "Truth",
    "camera_levels",
    "detail_scores",
    "evaluate_synthetic",
    "facescape_levels",
    "seen_detail_scores",
    "seen_and_oracle_scores",
    "heldout_ids",
    "heldout_without_photos",
    "level_mesh",
    "read_heldout_scans",
    "read_photos",
    "load_truth",
    "oracle_displacement",
    "place_in_camera",
    "score_levels",
    "score_mean_face",
    "truth_depth",
    "write_rows",
]


@dataclass
class Truth:
    """Ground truth of one synthetic scan (model frame, mm)."""

    sample_id: str
    m1: Mesh
    """True M1 on the model topology."""
    m2: Mesh
    """True detailed surface (dense, with UVs)."""
    photos: Path
    """Its ``.photos.npz``."""
    displacement: np.ndarray | None = None
    """True displacement map (model UV layout, mm) from ``<id>.gt.npz``, or None."""
    _normals: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _mean_face: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _cylinder: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def cylinder_map(self) -> tuple[np.ndarray, CylinderMap]:
        """``(centre, map)``: the true detailed surface's cylindrical map about the vertical axis
        through the true M1's centroid (:func:`facehd.cylinder.cylindrical_map`; made once per
        truth, shared by its photos and levels)."""
        if self._cylinder is None:
            from facehd.cylinder import cylindrical_map

            centre = self.m1.vertices.mean(axis=0)
            self._cylinder = (
                centre,
                cylindrical_map(Mesh(self.m2.vertices - centre, self.m2.faces)),
            )
        return self._cylinder

    def detail_normal_map(self, model: Any) -> tuple[Any, np.ndarray]:
        """``(table, normals)``: the model's UV table at the true displacement map's size and
        the true detailed normal of each texel (made once per truth, shared by its photos)."""
        if self._normals is None:
            from facehd.uv import rasterize_uv

            size = self.displacement.shape[0]
            table = rasterize_uv(model.uvs, model.faces, (size, size))
            _, normals = _level_normals(table, model, self.m1.vertices, self.displacement)
            self._normals = (table, normals)
        return self._normals

    def mean_face(self, model: Any) -> tuple[Mesh, Any]:
        """``(mesh, transform)``: ``model``'s mean face (every coefficient zero) and its rigid
        alignment to this truth, as M0's (:func:`_align`); made once per truth, shared by its
        photos (the alignment's ICP costs more than scoring a photo's three levels)."""
        if self._mean_face is None:
            mean = np.asarray(model.vertices(None, None), dtype=np.float64)
            mesh = Mesh(mean, np.array(model.faces), uvs=np.array(model.uvs))
            self._mean_face = (mesh, _align(mean, self, np.array(model.regions.fit, dtype=bool)))
        return self._mean_face


def heldout_ids(scans_dir: str | Path) -> list[str]:
    """The scans of a held-out folder (``facehd synth --photos V``), each with its truth files;
    InputFileError naming the folder or the first missing file otherwise (cheap: nothing is
    read)."""
    d = Path(scans_dir)
    if d.is_file():
        raise InputFileError(d, "is a file: give the held-out folder (facehd synth --photos V)")
    if not d.is_dir():
        raise InputFileError(d, "held-out folder does not exist")
    ids = sorted(p.name[: -len(".photos.npz")] for p in d.glob("*.photos.npz"))
    if not ids:
        raise InputFileError(d, "no <id>.photos.npz (make them with facehd synth --photos V)")
    for sid in ids:
        _truth_files(d, sid)
    return ids


def heldout_without_photos(scans_dir: str | Path) -> list[str]:
    """The scans of a held-out folder with their true surface (``<id>.gt_m1.ply``) but no
    ``<id>.photos.npz``: nothing of theirs can be scored, and a table over the others should
    say so."""
    d = Path(scans_dir)
    with_truth = {p.name[: -len(".gt_m1.ply")] for p in d.glob("*.gt_m1.ply")}
    return sorted(s for s in with_truth if not (d / f"{s}.photos.npz").is_file())


def _truth_files(d: Path, sample_id: str) -> dict[str, Path]:
    """The truth files of ``sample_id`` in ``d`` by kind; InputFileError for a missing one."""
    paths = {k: d / f"{sample_id}.{k}" for k in ("gt_m1.ply", "gt_m2.ply", "photos.npz")}
    for p in paths.values():
        if not p.is_file():
            raise InputFileError(p, "missing (a facehd synth --photos V folder is expected)")
    return paths


def load_truth(scans_dir: str | Path, sample_id: str) -> Truth:
    """Read the truth files of ``sample_id`` (raises InputFileError when one is missing)."""
    d = Path(scans_dir)
    paths = _truth_files(d, sample_id)
    m2 = load_mesh(paths["gt_m2.ply"])
    if m2.uvs is None:
        raise InputFileError(paths["gt_m2.ply"], "true detailed surface has no UVs")
    displacement = None
    gt = d / f"{sample_id}.gt.npz"
    if gt.is_file():
        from models.data import read_npz

        found = read_npz(gt, (), ("displacement",), what="truth file").get("displacement")
        if found is not None:
            displacement = np.asarray(found, dtype=np.float64)
            # a damaged map would fail later, inside the scoring, without the file's name
            if displacement.ndim != 2 or displacement.shape[0] != displacement.shape[1]:
                raise InputFileError(
                    gt,
                    f"displacement must be a square (S, S) map, got shape {displacement.shape}",
                )
            if displacement.shape[0] < 2:
                raise InputFileError(gt, f"displacement is a {displacement.shape} map")
            if not np.isfinite(displacement).all():
                raise InputFileError(gt, "displacement holds NaN or infinite values")
    return Truth(sample_id, load_mesh(paths["gt_m1.ply"]), m2, paths["photos.npz"], displacement)


@dataclass
class _PhotoKey:
    sample_id: str
    view: int
    points: int


@dataclass
class _PhotoCount:
    photos: int


@dataclass
class LevelScores:
    """The scores :func:`evaluate_synthetic` takes of each photo and :func:`summarise` averages:
    distances (mm) and normal errors (rad) of M0, M1, M2 by closest points, the detail and seen
    scores, the mean face's, and FaceScape's CD and MNE aligned (``*_fs_*``) and placed
    (``*_cam_*``). One list for :class:`EvalRow` and :class:`EvalSummary`, so that a score
    added to the rows is averaged too."""

    dist_m0: float
    dist_m1: float
    dist_m2: float
    normal_m0: float
    normal_m1: float
    normal_m2: float
    disp_pearson: float = float("nan")
    normal_uv_m1: float = float("nan")
    normal_uv_m2: float = float("nan")
    disp_pearson_seen: float = float("nan")
    normal_seen_m1: float = float("nan")
    normal_seen_m2: float = float("nan")
    normal_m2_oracle: float = float("nan")
    dist_mean_face: float = float("nan")
    normal_mean_face: float = float("nan")
    cd_fs_m0: float = float("nan")
    cd_fs_m1: float = float("nan")
    cd_fs_m2: float = float("nan")
    mne_fs_m0: float = float("nan")
    mne_fs_m1: float = float("nan")
    mne_fs_m2: float = float("nan")
    cd_fs_mean_face: float = float("nan")
    mne_fs_mean_face: float = float("nan")
    mne_fs_m2_oracle: float = float("nan")
    cd_cam_m0: float = float("nan")
    cd_cam_m1: float = float("nan")
    cd_cam_m2: float = float("nan")
    mne_cam_m0: float = float("nan")
    mne_cam_m1: float = float("nan")
    mne_cam_m2: float = float("nan")
    mne_cam_m2_oracle: float = float("nan")


@dataclass
class EvalRow(LevelScores, _PhotoKey):
    """Scores of one photo (:class:`LevelScores`) after its ``sample_id``, ``view`` and the
    number of truth ``points`` scored: the fields in that order, the CSV's columns."""


@dataclass
class EvalSummary(LevelScores, _PhotoCount):
    """Means of :class:`LevelScores` over ``photos`` photos, then counts of the photos on which
    a level beats the one below it."""

    m1_nearer: int = 0
    """Photos whose M1 is nearer the truth than their M0 (``dist_m1 < dist_m0``)."""
    m2_normals_better: int = 0
    """Photos whose M2 normals are better than their M1's by closest points
    (``normal_m2 < normal_m1``)."""
    m2_seen_better: int = 0
    """Photos whose M2 normals are better than their M1's at the skin point each texel shows
    (``normal_seen_m2 < normal_seen_m1``), out of :attr:`seen_photos`."""
    seen_photos: int = 0
    """Photos with scores at the skin point each texel shows (a true displacement map)."""
    m2_mne_fs_better: int = 0
    """Photos whose M2 normals are better than their M1's by FaceScape's MNE
    (``mne_fs_m2 < mne_fs_m1``)."""
    m2_mne_cam_better: int = 0
    """Photos whose M2 normals are better than their M1's by FaceScape's MNE with the levels
    placed as the protocol places a prediction (``mne_cam_m2 < mne_cam_m1``)."""


def _texel(uvs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    j = np.clip(np.floor(uvs[:, 0] * size).astype(int), 0, size - 1)
    i = np.clip(np.floor((1.0 - uvs[:, 1]) * size).astype(int), 0, size - 1)
    return i, j


def _surface_normals(mesh: Mesh, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    n = mesh.vertex_normals[mesh.faces[face_ids]]  # (N, 3, 3)
    out = (n * bary[..., None]).sum(1)
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)


def _align(pred: np.ndarray, truth: Truth, fit: np.ndarray):
    """Rigid transform (R, t) taking predicted canonical vertices onto the truth frame."""
    from facehd.registration import icp_point_to_plane
    from facehd.transforms import Similarity, procrustes

    src, dst = pred[fit], truth.m1.vertices[fit]
    init = procrustes(src, dst, with_scale=False)
    res = icp_point_to_plane(src, truth.m2, init=init, max_distance=10.0, max_iterations=30)
    t = res.transform if res.fitness > 0.5 else init
    return Similarity(1.0, t.rotation, t.translation)


def score_seed(sample_id: str, view: int) -> int:
    """The seed of the truth points a photo is scored at (:func:`score_levels`): of its sample
    id and view alone, so a photo scores the same whichever other scans the folder holds, and in
    ``evaluate`` as in ``evaluate --multiview``'s single-view rows."""
    import zlib

    return zlib.crc32(f"{sample_id}#v{view}".encode("utf-8", "surrogateescape"))


def score_levels(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Truth,
    *,
    max_points: int = 4000,
    seed: int = 0,
) -> tuple[int, tuple[float, float, float], tuple[float, float, float]]:
    """Score M0, M1 and M2 of ``rec`` against ``truth`` (see the module docstring).

    Returns ``(points, (dist_m0, dist_m1, dist_m2) mm, (normal_m0, normal_m1, normal_m2) rad)``.
    """
    r = _score_levels(recon, rec, truth, max_points=max_points, seed=seed)
    return r.points, r.dists, r.angles


class _LevelScores(NamedTuple):
    points: int
    dists: tuple[float, float, float]
    angles: tuple[float, float, float]
    m1_transform: Any
    """M1's alignment (a :class:`facehd.transforms.Similarity`), M2's too."""
    truth_points: tuple[np.ndarray, np.ndarray]
    """The truth points and normals scored (:func:`_truth_points`)."""
    facescape: tuple[float, ...] | None
    """``(cd_fs_m0, cd_fs_m1, cd_fs_m2, mne_fs_m0, mne_fs_m1, mne_fs_m2)`` when asked for."""
    meshes: tuple[Mesh, Mesh, Mesh]
    """M0, M1 and M2 on M2's texel grid (:func:`level_mesh`), canonical frame."""


def _score_levels(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Truth,
    *,
    max_points: int = 4000,
    seed: int = 0,
    facescape: bool = False,
) -> _LevelScores:
    """:func:`score_levels`, M1's alignment, the truth points and, with ``facescape``, the
    levels' scores by FaceScape's protocol (:func:`facescape_levels`)."""
    model = recon.model
    fit = np.array(model.regions.fit, dtype=bool)
    pts, nrm = _truth_points(recon, rec, truth, max_points=max_points, seed=seed)
    # every level on M2's texel grid: they then differ by their geometry alone, not by how
    # their normals are estimated
    m0 = level_mesh(recon, rec, rec.m0)
    m1 = level_mesh(recon, rec, rec.m1)
    m2 = recon.detail_mesh(rec)
    t0 = _align(rec.m0, truth, fit)
    t1 = _align(rec.m1, truth, fit)
    levels = ((m0, t0), (m1, t1), (m2, t1))
    scores = [_score_mesh(mesh, t, pts, nrm) for mesh, t in levels]
    dists = tuple(d for d, _ in scores)
    angles = tuple(a for _, a in scores)
    fs = facescape_levels(truth, levels) if facescape else None
    return _LevelScores(
        len(pts),
        dists,  # type: ignore[arg-type]
        angles,  # type: ignore[arg-type]
        t1,
        (pts, nrm),
        fs,
        (m0, m1, m2),
    )


def facescape_levels(truth: Truth, levels: Sequence[tuple[Mesh, Any]]) -> tuple[float, ...]:
    """FaceScape's CD (mm) and MNE (rad) of each level (item 9 of the module docstring):
    ``(cd per level..., mne per level...)``. ``levels``: each level's mesh (canonical frame) and
    the rigid transform that moves it onto the truth."""
    from facehd.cylinder import cylinder_scores

    centre, gt = truth.cylinder_map()
    scores = [
        cylinder_scores(gt, Mesh(t.apply(mesh.vertices) - centre, mesh.faces)) for mesh, t in levels
    ]
    return (*(s.cd for s in scores), *(s.mne for s in scores))


def place_in_camera(
    recon: Reconstructor, rec: Reconstruction, vertices: np.ndarray, camera: Any
) -> np.ndarray:
    """A level of ``rec`` placed in the photo's camera the way FaceScape's protocol places a
    prediction, before its depth slide (item 10 of the module docstring).

    Each vertex goes on the ray of the crop pixel where the reconstruction projects it (its pose
    and the base model's camera), at the depth ``z0 + (z - z_mean)``: ``z - z_mean`` is its
    depth in the reconstruction's camera about the face's mean (the prediction's own relief, mm)
    and ``z0 = f z_mean / f_rec`` the distance at which the photo's camera (focal ``f``) sees the
    face as large as the reconstruction's camera (``f_rec``) does. The prediction keeps its
    size, shape and every pixel; only its distance is the protocol's to set
    (:func:`facehd.depthmap.slide_to_depth`).

    Parameters
    ----------
    vertices : (V, 3) canonical vertices (mm) of a level of ``rec``.
    camera : the photo's camera through its 224 crop (:func:`models.data.crop_camera`).

    Returns
    -------
    (V, 3) float64 in the camera's frame (``x_cam = R x + t``), mm.
    """
    import torch

    from facehd.errors import DegenerateInputError
    from models.data import CROP

    system = recon.system
    v = np.asarray(vertices, dtype=np.float64)
    posed = v @ np.asarray(rec.rotation, dtype=np.float64).T + np.asarray(rec.translation)
    cam = system.camera(torch.float64)
    in_cam = cam.world_to_camera(torch.as_tensor(posed)[None].to(system.device))
    z = in_cam[0, :, 2].cpu().numpy()
    if not np.all(z > 0):
        raise DegenerateInputError("the reconstruction reaches behind its camera")
    px = cam.camera_to_pixels(in_cam)[0].cpu().numpy()
    k = CROP / system.image_size
    px = (px + 0.5) * k - 0.5  # the 224 crop's pixels
    f_rec = float(cam.K[0, 0, 0]) * k
    K = camera.K[0].cpu().numpy().astype(np.float64)
    depth = z.mean() * K[0, 0] / f_rec + (z - z.mean())
    rays = np.linalg.solve(K, np.column_stack([px, np.ones(len(px))]).T).T
    return rays * depth[:, None]


def _depth_view(camera: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """The protocol's 256 x 256 depth maps of the photo's 224 crop view (``Perspective``), and
    the camera's pose ``R``, ``t`` (``x_cam = R x + t``)."""
    from facehd.depthmap import RENDER_SIZE, Perspective
    from models.data import CROP

    K = camera.K[0].cpu().numpy().astype(np.float64)
    R = camera.R[0].cpu().numpy().astype(np.float64)
    t = camera.t[0].cpu().numpy().astype(np.float64)
    s = RENDER_SIZE / CROP
    k_maps = K.copy()
    k_maps[:2] *= s
    k_maps[:2, 2] += 0.5 * s  # pixel (r, c) has its centre at c + 0.5 there
    return Perspective(k_maps), R, t


def truth_depth(truth: Truth, camera: Any) -> np.ndarray:
    """The true detailed surface's depth map in the photo's camera, the one
    :func:`camera_levels` slides the levels onto: made once per photo where several
    reconstructions of it are placed (the variants of ``evaluate --multiview``)."""
    from facehd.depthmap import render_depth

    maps, R, t = _depth_view(camera)
    return render_depth(Mesh(truth.m2.vertices @ R.T + t, truth.m2.faces), maps)


def camera_levels(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Truth,
    camera: Any,
    meshes: Sequence[Mesh],
    *,
    gt_depth: np.ndarray | None = None,
) -> tuple[float, ...]:
    """FaceScape's CD (mm) and MNE (rad) of each of ``meshes`` (levels of ``rec``, canonical
    frame) placed as the protocol places a prediction (item 10 of the module docstring):
    ``(cd per mesh..., mne per mesh...)``.

    Each is put in the photo's camera (:func:`place_in_camera`), slid along the camera rays onto
    the true detailed surface by the protocol's depth alignment
    (:func:`facehd.depthmap.slide_to_depth`, 256 x 256 depth maps of the crop's view), taken
    back to the model frame by the camera's pose and scored on cylindrical maps about the true
    M1's centroid as in item 9. ``camera``: :func:`models.data.crop_camera` of the photo. A mesh
    the protocol cannot place (drawn off the true face in the photo, or reaching behind the
    reconstruction's camera) scores NaN, as a benchmark image whose prediction fails.
    ``gt_depth``: :func:`truth_depth` of this truth and camera, when made already.
    """
    from facehd.cylinder import cylinder_scores
    from facehd.depthmap import render_depth, slide_to_depth
    from facehd.errors import DegenerateInputError

    maps, R, t = _depth_view(camera)
    gt = Mesh(truth.m2.vertices @ R.T + t, truth.m2.faces)
    if gt_depth is None:
        gt_depth = render_depth(gt, maps)
    centre, gt_map = truth.cylinder_map()
    cds, mnes = [], []
    for mesh in meshes:
        try:
            placed = Mesh(place_in_camera(recon, rec, mesh.vertices, camera), mesh.faces)
            slid, _ = slide_to_depth(gt, placed, maps, gt_depth=gt_depth)
        except DegenerateInputError:
            cds.append(float("nan"))
            mnes.append(float("nan"))
            continue
        x = cylinder_scores(gt_map, Mesh((slid - t) @ R - centre, mesh.faces))
        cds.append(x.cd)
        mnes.append(x.mne)
    return (*cds, *mnes)


def level_mesh(recon: Reconstructor, rec: Reconstruction, vertices: np.ndarray) -> Mesh:
    """A face on the model topology (``vertices``, canonical frame) resampled on the dense texel
    grid of ``rec``'s displacement map, with zero displacement: the mesh M0, M1 and the mean
    face are scored on, as M2 is the same grid displaced (step 3 of the module docstring)."""
    flat = replace(rec, m1=np.asarray(vertices, dtype=np.float64))
    return recon.detail_mesh(flat, displacement=np.zeros_like(rec.displacement))


def _truth_points(
    recon: Reconstructor, rec: Reconstruction, truth: Truth, *, max_points: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(points, normals)`` of the true surface scored for ``rec`` (step 1 of the module
    docstring): fit-region vertices of ``gt_m2`` whose texel the photo shows, at most
    ``max_points`` of them (an even random subset drawn with ``seed``)."""
    from facehd.uv import rasterize_uv

    model = recon.model
    fit = np.array(model.regions.fit, dtype=bool)
    size = 512
    fit_uv = rasterize_uv(model.uvs, model.faces, (size, size)).interpolate(fit.astype(float))
    i, j = _texel(truth.m2.uvs, size)
    keep = fit_uv[i, j] > 0.99
    s = rec.valid.shape[0]
    i, j = _texel(truth.m2.uvs, s)
    keep &= rec.valid[i, j]
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise ValueError(f"{truth.sample_id}: no true surface point is seen in the photo")
    rng = np.random.default_rng(seed)
    if idx.size > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
    return truth.m2.vertices[idx], truth.m2.vertex_normals[idx]


def _score_mesh(mesh: Mesh, t: Any, pts: np.ndarray, nrm: np.ndarray) -> tuple[float, float]:
    """Mean closest-point distance (mm) and normal error (rad) of ``mesh`` (moved onto the
    truth by ``t``) at the truth ``pts`` with normals ``nrm`` (step 3 of the module docstring)."""
    from facehd.distances import SurfaceQuery, normal_angle_error

    local = t.inverse().apply(pts)
    hit = SurfaceQuery(mesh).closest(local)
    n_pred = _surface_normals(mesh, hit.face_ids, hit.barycentrics) @ t.rotation.T
    return float(np.mean(np.abs(hit.distances))), float(np.mean(normal_angle_error(n_pred, nrm)))


def score_mean_face(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Truth,
    *,
    max_points: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """``(distance mm, normal error rad)`` of the morphable model's mean face (every
    coefficient zero) at the truth points scored for ``rec`` (the same ``max_points`` and
    ``seed`` give the same points as :func:`score_levels`), aligned to the truth as M0 is: the
    score of a base model that ignores the photo (item 8 of the module docstring)."""
    pts, nrm = _truth_points(recon, rec, truth, max_points=max_points, seed=seed)
    mean, transform = truth.mean_face(recon.model)
    return _score_mesh(level_mesh(recon, rec, mean.vertices), transform, pts, nrm)


def _level_normals(
    table, model: MorphableModel, vertices: np.ndarray, displacement: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(coarse, detailed)`` normal maps on ``table`` of a mesh level on ``model``'s topology
    (its normals, :meth:`MorphableModel.vertex_normals`) and its displacement."""
    from facehd.uv import detail_normals, normal_map

    pos = table.interpolate(vertices)
    coarse = normal_map(table, model.vertex_normals(vertices))
    return coarse, detail_normals(pos, coarse, displacement, table.mask)


def _pearson(p: np.ndarray, q: np.ndarray) -> float:
    """Pearson correlation, 0 when either side is constant."""
    return float(np.corrcoef(p, q)[0, 1]) if p.std() > 0 and q.std() > 0 else 0.0


def detail_scores(
    recon: Reconstructor, rec: Reconstruction, truth: Truth, rotation: np.ndarray
) -> tuple[float, float, float]:
    """``(disp_pearson, normal_uv_m1, normal_uv_m2)`` of ``rec`` (see the module docstring);
    ``rotation`` takes predicted canonical directions into the truth's frame (M1's alignment).
    NaNs when the truth has no displacement map."""
    import torch

    from facehd.distances import normal_angle_error

    if truth.displacement is None:
        return float("nan"), float("nan"), float("nan")
    model = recon.model
    size = truth.displacement.shape[0]
    table, true_n = truth.detail_normal_map(model)
    fit = table.interpolate(np.asarray(model.regions.fit, dtype=np.float64)) > 0.99

    def up(a: np.ndarray, mode: str) -> np.ndarray:
        t = torch.as_tensor(np.asarray(a, dtype=np.float64))[None, None]
        kw = {"align_corners": False} if mode == "bilinear" else {}
        return torch.nn.functional.interpolate(t, (size, size), mode=mode, **kw)[0, 0].numpy()

    pred_disp = up(rec.displacement, "bilinear")
    seen = up(rec.valid.astype(np.float64), "nearest") > 0.5
    mask = table.mask & fit & seen
    if mask.sum() < 10:
        raise ValueError(f"{truth.sample_id}: no detail texel is seen in the photo")

    m1_n, m2_n = _level_normals(table, model, np.asarray(rec.m1, dtype=np.float64), pred_disp)
    ref = true_n[mask]
    e1 = normal_angle_error(m1_n[mask] @ rotation.T, ref)
    e2 = normal_angle_error(m2_n[mask] @ rotation.T, ref)
    pearson = _pearson(pred_disp[mask], truth.displacement[mask])
    return pearson, float(np.mean(e1)), float(np.mean(e2))


def _at_pixels(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of an ``(H, W)`` or ``(H, W, C)`` image at pixel centres ``xy (N, 2)``
    (x = column, y = row); edge-clamped."""
    from scipy.ndimage import map_coordinates

    coords = np.stack([xy[:, 1], xy[:, 0]])
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        return map_coordinates(img, coords, order=1, mode="nearest")
    return np.stack(
        [
            map_coordinates(img[..., c], coords, order=1, mode="nearest")
            for c in range(img.shape[2])
        ],
        -1,
    )


@dataclass
class _Seen:
    """Where each predicted texel's photo pixel lands on the true surface."""

    table: Any
    """UV table of the predicted map's texel grid."""
    keep: np.ndarray
    """(s*s,) texels scored (see :func:`seen_detail_scores`)."""
    ustar: np.ndarray
    """(s*s, 2) UV of the true surface point seen at each texel's pixel."""
    true_disp: np.ndarray
    """(s, s) the true displacement at the predicted map's resolution (area average), mm."""
    true_normals: np.ndarray
    """The truth's detailed normal map (:meth:`Truth.detail_normal_map`)."""


def _seen_correspondence(recon: Reconstructor, rec: Reconstruction, truth: Truth, camera) -> _Seen:
    import torch

    from facehd.uv import rasterize_uv, sample_uv_map, texel_centers_uv
    from models.data import CROP, uv_image
    from models.system import continuous_uv

    model = recon.model
    faces = np.asarray(model.faces)
    uvs = np.asarray(model.uvs, dtype=np.float64)
    fit_v = np.asarray(model.regions.fit, dtype=np.float64)
    s = rec.displacement.shape[0]
    table = rasterize_uv(uvs, faces, (s, s))
    fit = table.interpolate(fit_v) > 0.99
    # predicted M1 texels, posed and projected (pixels at the system's size and at 224)
    system = recon.system
    pos = table.interpolate(np.asarray(rec.m1, dtype=np.float64))
    posed = pos.reshape(-1, 3) @ np.asarray(rec.rotation).T + np.asarray(rec.translation)
    cam = system.camera(torch.float64)
    px = cam.project(torch.as_tensor(posed)[None].to(system.device))[0].cpu().numpy()
    k = system.image_size
    px224 = (px + 0.5) * CROP / k - 0.5
    # visible in the prediction's own render: the UV seen at that pixel is the texel's own
    verts = np.asarray(rec.m1, dtype=np.float64) @ np.asarray(rec.rotation).T + rec.translation
    pred_uv, pred_on = uv_image(verts, faces, uvs, cam)
    texel_uv = texel_centers_uv((s, s)).reshape(-1, 2)
    back = _at_pixels(pred_uv, px)
    visible = (np.abs(back - texel_uv).max(1) < 1.5 / s) & (_at_pixels(pred_on, px) > 0.999)
    # the true surface seen at those pixels
    true_uv, true_on = uv_image(truth.m1.vertices, faces, uvs, camera)
    ustar = _at_pixels(true_uv, px224)
    smooth = continuous_uv(torch.as_tensor(true_uv).permute(2, 0, 1)[None])[0, 0].numpy()
    on = _at_pixels(true_on * smooth, px224) > 0.999
    table_t, t_n = truth.detail_normal_map(model)
    fit_t = table_t.interpolate(fit_v)
    on &= sample_uv_map(fit_t, ustar) > 0.99
    keep = (table.mask & fit).reshape(-1) & visible & on
    # the truth at the predicted map's resolution (area average)
    t_disp = torch.as_tensor(truth.displacement, dtype=torch.float64)[None, None]
    if t_disp.shape[-1] > s:
        t_disp = torch.nn.functional.interpolate(t_disp, (s, s), mode="area")
    return _Seen(table, keep, ustar, t_disp[0, 0].numpy(), t_n)


def seen_detail_scores(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Truth,
    rotation: np.ndarray,
    camera,
) -> tuple[float, float, float]:
    """``(disp_pearson_seen, normal_seen_m1, normal_seen_m2)``: detail scores by the skin point
    each predicted texel shows in the photo.

    A predicted texel ``u`` shows the photo where its predicted M1 point projects (the
    reconstruction's pose and camera); the truth is read at the UV ``u*`` of the true surface
    seen at that pixel (``camera``: the photo's camera through its crop, model frame,
    :func:`models.data.crop_camera`). Texels kept: on the fit region in both layouts, visible in
    the prediction's own render, on the true surface away from its occlusion edges. This is the
    correspondence the network can learn from a photo; the UV one (:func:`detail_scores`) also
    asks for the truth's parameterisation, which a photo does not show. ``rotation`` takes
    predicted canonical directions into the truth's frame. NaNs without a true displacement map.
    """
    if truth.displacement is None:
        return float("nan"), float("nan"), float("nan")
    seen = _seen_correspondence(recon, rec, truth, camera)
    return _seen_scores(recon, rec, truth, seen, rotation)


def _seen_scores(
    recon: Reconstructor, rec: Reconstruction, truth: Truth, seen: _Seen, rotation: np.ndarray
) -> tuple[float, float, float]:
    """:func:`seen_detail_scores` on a correspondence already made."""
    from facehd.distances import normal_angle_error
    from facehd.uv import sample_uv_map

    keep = seen.keep
    if keep.sum() < 10:
        raise ValueError(f"{truth.sample_id}: no detail texel is seen in the photo")
    true_d = sample_uv_map(seen.true_disp, seen.ustar[keep])
    pred_d = np.asarray(rec.displacement, dtype=np.float64).reshape(-1)[keep]
    pearson = _pearson(pred_d, true_d)
    # normals: true detailed normal at u*, predicted M1 / M2 normal at u (rotated)
    ref = sample_uv_map(seen.true_normals, seen.ustar[keep])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True).clip(1e-12)
    m1_n, m2_n = _level_normals(
        seen.table,
        recon.model,
        np.asarray(rec.m1, dtype=np.float64),
        np.asarray(rec.displacement, dtype=np.float64),
    )
    e1 = normal_angle_error(m1_n.reshape(-1, 3)[keep] @ rotation.T, ref)
    e2 = normal_angle_error(m2_n.reshape(-1, 3)[keep] @ rotation.T, ref)
    return pearson, float(np.mean(e1)), float(np.mean(e2))


def oracle_displacement(
    recon: Reconstructor, rec: Reconstruction, truth: Truth, camera
) -> np.ndarray:
    """The displacement map a perfect detail network would predict for ``rec``: at each texel
    the true displacement of the skin point its pixel shows (as in :func:`seen_detail_scores`),
    zero on texels that show none. Same shape as ``rec.displacement``, mm."""
    return _oracle_map(rec, _seen_correspondence(recon, rec, truth, camera))


def _oracle_map(rec: Reconstruction, seen: _Seen) -> np.ndarray:
    from facehd.uv import sample_uv_map

    out = np.zeros(seen.keep.shape[0])
    out[seen.keep] = sample_uv_map(seen.true_disp, seen.ustar[seen.keep])
    return out.reshape(rec.displacement.shape).astype(rec.displacement.dtype)


def evaluate_synthetic(
    recon: Reconstructor,
    scans_dir: str | Path,
    *,
    max_points: int = 4000,
    views: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    failed: list[str] | None = None,
    refine: Any = None,
    fit: Any = None,
    facescape: bool = True,
) -> tuple[list[EvalRow], EvalSummary]:
    """Reconstruct and score every photo of every scan in ``scans_dir``.

    ``views`` limits the photos per scan. ``refine`` (a :class:`models.refine.RefineConfig`):
    refine each photo's base coefficients on the self-supervised objective, with the crop's
    skin mask and landmarks, before the detail networks (:meth:`Reconstructor.run_crops_refined`);
    None: the networks alone. ``fit`` (a :class:`models.multiview.MultiViewConfig`): then fit
    each photo's coefficients and maps on MV-HRN's objective with the photo as its one view
    (:meth:`Reconstructor.run_crops_fitted`). ``facescape=False`` leaves out FaceScape's CD and
    MNE (items 9 and 10 of the module docstring, most of the scoring time): their columns are
    NaN. Raises InputFileError when the folder holds no ``*.photos.npz``. A scan whose truth or
    photos cannot be read (a damaged file, arrays that disagree) raises its InputFileError, or,
    when ``failed`` is given, is said there (the error, naming the file) and left out while the
    others are scored (:func:`read_heldout_scans`).
    """
    from models.data import align_lab_photo

    d = Path(scans_dir)
    jobs: list[tuple[Truth, dict, int]] = []
    for truth, photos in read_heldout_scans(d, heldout_ids(d), failed=failed):
        n = photos["images"].shape[0] if views is None else min(views, photos["images"].shape[0])
        jobs += [(truth, photos, v) for v in range(n)]
    rows: list[EvalRow] = []
    for k, (truth, photos, v) in enumerate(jobs):
        crop = align_lab_photo(photos, v, recon.template)
        if fit is not None:
            rec = recon.run_crops_fitted(
                crop["image"][None], crop["mask"][None], crop["landmarks"][None], fit, refine
            )[0]
        elif refine is None:
            rec = recon.run_crops(crop["image"][None])[0]
        else:
            rec = recon.run_crops_refined(
                crop["image"][None], crop["mask"][None], crop["landmarks"][None], refine
            )[0][0]
        seed = score_seed(truth.sample_id, v)
        levels = _score_levels(
            recon, rec, truth, max_points=max_points, seed=seed, facescape=facescape
        )
        n, dist, ang, to_truth, _, fs, meshes = levels
        detail = detail_scores(recon, rec, truth, to_truth.rotation)
        camera = _photo_camera(photos, v, crop)
        seen, oracle_m2 = _seen_and_oracle(recon, rec, truth, camera, levels)
        # the mean face's floor (score_mean_face), at the truth points the levels were scored at
        mean, mean_to_truth = truth.mean_face(recon.model)
        mean_mesh = level_mesh(recon, rec, mean.vertices)
        floor = _score_mesh(mean_mesh, mean_to_truth, *levels.truth_points)
        nan = float("nan")
        if not facescape:
            fs, fs_floor, fs_oracle = (nan,) * 6, (nan,) * 2, nan
            cam, cam_oracle = (nan,) * 6, nan
        else:
            fs_oracle = (
                nan if oracle_m2 is None else facescape_levels(truth, [(oracle_m2, to_truth)])[1]
            )
            placed = camera_levels(
                recon, rec, truth, camera, meshes if oracle_m2 is None else (*meshes, oracle_m2)
            )
            cam_oracle = nan if oracle_m2 is None else placed[-1]
            cam = (*placed[:3], *placed[4:7]) if oracle_m2 is not None else placed
            fs_floor = facescape_levels(truth, [(mean_mesh, mean_to_truth)])
        rows.append(
            EvalRow(
                truth.sample_id,
                v,
                n,
                *dist,
                *ang,
                *detail,
                *seen,
                *floor,
                *fs,
                *fs_floor,
                fs_oracle,
                *cam,
                cam_oracle,
            )
        )
        if progress is not None:
            progress(k + 1, len(jobs))
    return rows, summarise(rows)


def seen_and_oracle_scores(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Truth,
    photos: dict[str, np.ndarray],
    view: int,
    crop: dict[str, Any],
    *,
    max_points: int = 4000,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """``(disp_pearson_seen, normal_seen_m1, normal_seen_m2, normal_m2_oracle)`` of the
    reconstruction ``rec`` of photo ``view`` (cropped as ``crop``; its levels scored and aligned
    with ``max_points`` and ``seed`` as :func:`score_levels` does): the scores 6 and 7 of the
    module docstring, from one correspondence of the photo's texels to the skin they show; NaN
    for a truth without its displacement map."""
    levels = _score_levels(recon, rec, truth, max_points=max_points, seed=seed)
    return _seen_and_oracle(recon, rec, truth, _photo_camera(photos, view, crop), levels)[0]


def _photo_camera(photos: dict[str, np.ndarray], view: int, crop: dict[str, Any]) -> Any:
    """Photo ``view``'s camera through its 224 crop (:func:`models.data.crop_camera`)."""
    from models.data import crop_camera

    return crop_camera(
        photos["K"][view], photos["R"][view], photos["t"][view], crop["crop_transform"]
    )


def _seen_and_oracle(
    recon: Reconstructor,
    rec: Reconstruction,
    truth: Truth,
    camera: Any,
    levels: _LevelScores,
) -> tuple[tuple[float, float, float, float], Mesh | None]:
    """:func:`seen_and_oracle_scores` of a reconstruction whose levels are scored already
    (``levels``: M1's alignment and the truth points are reused; ``camera``: the photo's,
    :func:`_photo_camera`), and the oracle's M2 (``rec`` with the true displacement of the skin
    each texel shows, canonical frame), None without a true displacement map."""
    if truth.displacement is None:
        return (float("nan"),) * 4, None  # type: ignore[return-value]
    where = _seen_correspondence(recon, rec, truth, camera)
    oracle_m2 = recon.detail_mesh(replace(rec, displacement=_oracle_map(rec, where)))
    # M2 is M1 displaced: the oracle's M2 takes M1's alignment, at the same truth points
    oracle = _score_mesh(oracle_m2, levels.m1_transform, *levels.truth_points)[1]
    rotation = levels.m1_transform.rotation
    return (*_seen_scores(recon, rec, truth, where, rotation), oracle), oracle_m2


def read_heldout_scans(
    scans_dir: Path,
    ids: Sequence[str],
    keys: tuple[str, ...] = ("images", "landmarks68", "masks", "K", "R", "t"),
    *,
    failed: list[str] | None = None,
) -> list[tuple[Truth, dict[str, np.ndarray]]]:
    """The truth (:func:`load_truth`) and photo arrays ``keys`` (:func:`read_photos`) of each
    held-out scan ``ids``. A scan whose files cannot be read raises its InputFileError, or, when
    ``failed`` is given, has the error appended there and is left out; when none is left, an
    InputFileError names the folder and the first error."""
    out = []
    for sid in ids:
        try:
            truth = load_truth(scans_dir, sid)
            out.append((truth, read_photos(truth.photos, keys)))
        except FacehdError as exc:
            if failed is None:
                raise
            failed.append(str(exc))
    if ids and not out and failed:
        raise InputFileError(scans_dir, f"no held-out scan could be read; first: {failed[0]}")
    return out


def summarise(rows: list[EvalRow]) -> EvalSummary:
    """Means of the rows; a score some rows lack (the detail scores of a scan without its
    ``<id>.gt.npz``) is the mean of the rows that have it (NaN when none has). Also counts the
    photos on which each level beats the one below it (a mean can hide a gain on few photos)."""
    means = {}
    for k in (f.name for f in fields(LevelScores)):
        values = np.array([getattr(r, k) for r in rows], dtype=np.float64)
        known = values[~np.isnan(values)]
        means[k] = float(known.mean()) if known.size else float("nan")
    seen = [r for r in rows if not np.isnan(r.normal_seen_m1) and not np.isnan(r.normal_seen_m2)]
    return EvalSummary(
        photos=len(rows),
        **means,
        m1_nearer=sum(r.dist_m1 < r.dist_m0 for r in rows),
        m2_normals_better=sum(r.normal_m2 < r.normal_m1 for r in rows),
        m2_seen_better=sum(r.normal_seen_m2 < r.normal_seen_m1 for r in seen),
        seen_photos=len(seen),
        m2_mne_fs_better=sum(r.mne_fs_m2 < r.mne_fs_m1 for r in rows),
        m2_mne_cam_better=sum(r.mne_cam_m2 < r.mne_cam_m1 for r in rows),
    )


def read_photos(
    path: Path, keys: tuple[str, ...] = ("images", "landmarks68", "masks", "K", "R", "t")
) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a held-out scan's ``<id>.photos.npz``
    (:func:`models.data.read_npz`: a damaged file or a missing array is an error naming it)."""
    from models.data import check_photo_arrays, read_npz

    hint = " (facehd synth --photos V writes them)"
    return check_photo_arrays(path, read_npz(path, keys, what="held-out photos file", hint=hint))

"""``facehd bench``: run a protocol over a dataset and write its CSVs and leaderboard row.

:func:`run_benchmark` reads the benchmark's layout, scores every image (in a process pool with
``workers > 1``), then writes, under ``OUT/<dataset>-<split>/<method>/``:

- ``items.csv``: one row per image with the protocol's per-image numbers; a missing prediction
  is a row with ``status = missing``, a prediction that cannot be evaluated (unreadable, NaN
  vertices, no faces, a topology that does not fit ...) a row with ``status = error`` and the
  reason naming the file;
- ``summary.csv``: the protocol's reported statistics per group (challenge, yaw bin, region ...);
- ``config.json``: the resolved configuration, whose hash goes to the leaderboard;
- ``distances.npz`` (NoW and multi-view): each image's distance array;
- the official tool's own output (NoW ``<method>_computed_distances.npy``, REALY
  ``REALY_error.txt``, FaceScape ``CD_full.txt``, ``CR_full.txt``, ``MNE_full.txt``);

and replaces the (method, dataset, split) row of ``OUT/leaderboard.csv``. Every file is written
atomically after all images are done, so a failing run leaves earlier results as they were. A
run that scored no image writes its ``items.csv``, ``summary.csv`` and ``config.json`` under
``unscored/`` instead and leaves the run's files and leaderboard row (an earlier run's) alone.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import readers
from benchmarks.csvio import atomic_write_text, config_hash, write_rows
from benchmarks.leaderboard import LeaderboardRow, load_leaderboard, update_leaderboard
from benchmarks.now import NowConfig
from benchmarks.synthetic import (
    benchmark_data,
    check_benchmark_finished,
    check_benchmark_kind,
    is_synthetic_benchmark,
)
from facehd.errors import InputFileError, raise_if_interrupted
from facehd.pools import TaskFailed, run_tasks

__all__ = [
    "DATASETS",
    "BenchmarkSpec",
    "RunConfig",
    "RunResult",
    "NowItemRow",
    "NowSummaryRow",
    "RealyItemRow",
    "RealySummaryRow",
    "FaceScapeItemRow",
    "FaceScapeSummaryRow",
    "facescape_full_texts",
    "now_computed_distances",
    "realy_error_text",
    "run_benchmark",
    "resolve_root",
]

#: Where a run that scored no image writes its rows, under the run's folder.
UNSCORED_DIR = "unscored"

#: Dataset -> (default split, known splits or None for any).
DATASETS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "now": ("validation", ("validation", "test")),
    "realy": ("frontal", ("frontal", "side")),
    "facescape": ("wild", ("wild", "lab")),
    "multiview": ("facescape", None),
}


@dataclass(frozen=True)
class BenchmarkSpec:
    """A dataset and one of its splits, written ``dataset[:split]``."""

    dataset: str
    """``now``, ``realy``, ``facescape`` or ``multiview``."""
    split: str
    """The split (default per dataset: validation, frontal, wild, facescape)."""

    @classmethod
    def parse(cls, text: str) -> BenchmarkSpec:
        """Parse ``now``, ``facescape:lab``, ``multiview:esrc`` ..."""
        name, _, split = text.strip().lower().partition(":")
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
        default, known = DATASETS[name]
        split = split or default
        if split == "val":
            split = "validation"
        if known is not None and split not in known:
            raise ValueError(f"{name} has no split {split!r}; known: {', '.join(known)}")
        return cls(name, split)

    @property
    def slug(self) -> str:
        """Folder name of the run: ``<dataset>-<split>``."""
        return f"{self.dataset}-{self.split}"


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one ``facehd bench`` run (saved as ``config.json``)."""

    dataset: str
    """Dataset name."""
    split: str
    """Split name."""
    method: str
    """Method name."""
    root: str
    """Dataset root folder."""
    predictions: str
    """Folder of the predictions scored."""
    topology: str = ""
    """REALY: the topology keypoint file used."""
    made_by: dict[str, Any] | None = None
    """What made the predictions, from their folder's ``method.json`` (a registered method's
    name and what its meshes depend on: for hrn the checkpoint's hash and the precision); None
    for a folder without one."""
    now: NowConfig = field(default_factory=NowConfig)
    """NoW / multi-view protocol settings."""
    facehd_version: str = ""
    """facehd version."""
    loader: str = ""
    """FaceScape: the official loader placing the predictions (``--loader``; ``generic``, the
    image-aligned format, by default; see :mod:`benchmarks.facescape_loaders`); empty for the
    other datasets."""
    facescape_depth: str = ""
    """FaceScape: how the depth alignment's depth maps are made (``--facescape-depth``: ``rays``
    by default, or ``pyrender`` as the official evaluator; :data:`facehd.depthmap.DEPTH_RENDERERS`);
    empty for the other datasets."""


def scoring_hash(config: RunConfig, topology: tuple[Path, Path] | None = None) -> str:
    """The leaderboard's ``config_hash``: of what decides the scores (dataset, split, method,
    protocol settings, facehd version, the REALY topology files' content, and what made the
    predictions where their folder says: a registered method's checkpoint hash and precision),
    not of where the folders lie, so the same run on another machine or from another folder
    hashes the same."""
    import hashlib

    data = dataclasses.asdict(config)
    for key in ("root", "predictions", "topology"):
        data.pop(key)
    if data["made_by"] is None:  # folders of meshes made elsewhere hash as before
        data.pop("made_by")
    if data["loader"] in ("", "generic"):  # the default placement hashes as before --loader
        data.pop("loader")
    if data["facescape_depth"] in ("", "rays"):  # the default depth maps hash as before
        data.pop("facescape_depth")
    if topology is not None:
        data["topology_sha256"] = [hashlib.sha256(p.read_bytes()).hexdigest() for p in topology]
    return config_hash(data)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_benchmark` wrote."""

    out_dir: Path
    """``OUT/<dataset>-<split>/<method>``."""
    items_csv: Path
    """Per-image CSV."""
    summary_csv: Path
    """Summary CSV."""
    leaderboard_csv: Path
    """The leaderboard updated (not when no image was scored)."""
    leaderboard_row: LeaderboardRow
    """The row written to it (not when no image was scored)."""
    n_items: int
    """Images in the split."""
    n_ok: int
    """Images evaluated."""
    n_missing: int
    """Images without a prediction."""
    n_failed: int
    """Images whose evaluation failed."""
    n_warned: int = 0
    """Images scored with a warning (``warning`` column of ``items.csv``)."""
    replaced: LeaderboardRow | None = None
    """The leaderboard's earlier row of the same method, dataset and split that this run's
    replaced (None when there was none, or nothing was scored)."""


# ------------------------------------------------------------------------------------------
# rows


@dataclass(frozen=True)
class NowItemRow:
    """``items.csv`` row of NoW and multi-view runs (distances in mm)."""

    name: str
    subject: str
    challenge: str
    image: str
    status: str
    error: str = ""
    n_points: int | None = None
    median_mm: float | None = None
    mean_mm: float | None = None
    std_mm: float | None = None
    scale: float | None = None
    iterations: int | None = None
    converged: bool | None = None
    prediction: str = ""
    warning: str = ""
    """Why a scored prediction looks like no face reconstruction (too few vertices, landmarks
    that no similarity maps onto the scan's): scored as the official tool would, and named."""


@dataclass(frozen=True)
class NowSummaryRow:
    """``summary.csv`` row of NoW and multi-view runs (distances pooled over the group's images)."""

    group: str
    n_images: int
    n_missing: int
    n_failed: int
    n_points: int
    median_mm: float
    mean_mm: float
    std_mm: float


@dataclass(frozen=True)
class RealyItemRow:
    """``items.csv`` row of REALY runs (errors in mm)."""

    name: str
    subject: int
    status: str
    error: str = ""
    nose_mm: float | None = None
    mouth_mm: float | None = None
    forehead_mm: float | None = None
    cheek_mm: float | None = None
    mean_mm: float | None = None
    prediction: str = ""
    keypoint_rms_mm: float | None = None
    """RMS distance of the 85 keypoints from the scan's after the global alignment, mm."""
    warning: str = ""
    """What makes a scored prediction implausible (empty when nothing does)."""


@dataclass(frozen=True)
class RealySummaryRow:
    """``summary.csv`` row of REALY runs."""

    region: str
    mean_mm: float
    median_mm: float
    std_mm: float
    n_images: int
    n_missing: int
    n_failed: int


@dataclass(frozen=True)
class FaceScapeItemRow:
    """``items.csv`` row of FaceScape runs."""

    name: str
    group: str
    focal_group: str
    status: str
    error: str = ""
    cd_mm: float | None = None
    mne_rad: float | None = None
    cr: float | None = None
    delta_z: float | None = None
    prediction: str = ""
    warning: str = ""
    """Why a scored prediction looks misplaced: it covers none, or under half, of the ground
    truth (CR below 0.5), as a prediction in another format than the loader's does."""


@dataclass(frozen=True)
class FaceScapeSummaryRow:
    """``summary.csv`` row of FaceScape runs (NaN-means over the group)."""

    group: str
    cd_mm: float
    mne_rad: float
    cr: float
    done_rate: float
    n_images: int
    n_missing: int
    n_failed: int


# ------------------------------------------------------------------------------------------
# tasks (picklable; evaluated in worker processes)


@dataclass(frozen=True)
class _NowTask:
    item: readers.NowItem
    mesh: Path | None
    landmarks: Path | None
    config: NowConfig
    predictions: Path


@dataclass(frozen=True)
class _RealyTask:
    item: readers.RealyItem
    root: Path
    topology: tuple[Path, Path]


@dataclass(frozen=True)
class _FaceScapeTask:
    item: readers.FaceScapeItem
    prediction: Path | None
    root: Path
    predictions: Path
    loader: str = "generic"
    depth_renderer: str = "rays"


def _official(root: Path) -> bool:
    """Whether ``root`` holds the official data (not a synthetic benchmark of
    :func:`benchmarks.synthetic.make_synthetic_benchmark`): its items are the protocol's whole
    image set, ground truth on the disk or not."""
    return not is_synthetic_benchmark(root)


_LOOKED_FOR = " (looked for "


def _no_prediction(what: str, stem: Path, suffixes: tuple[str, ...]) -> str:
    """The error of a missing prediction, with where it was looked for:
    ``no predicted mesh (looked for <stem>.obj or .ply)``."""
    return _no_prediction_at(what, [stem.with_name(stem.name + s) for s in suffixes])


def _no_prediction_at(what: str, paths: list[Path]) -> str:
    """The error of a missing prediction looked for at ``paths``: ``no predicted mesh (looked
    for <dir>/<name>_detail.obj)``; alternatives of the same stem by their suffix (``<dir>/
    <name>.obj or .ply``)."""
    first = paths[0]
    rest = [p.suffix if p.with_suffix("") == first.with_suffix("") else str(p) for p in paths[1:]]
    return f"no predicted {what}{_LOOKED_FOR}{' or '.join([str(first), *rest])})"


def _err(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, (InputFileError, ValueError)):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


def _stamp(path: Path) -> tuple[int, int]:
    """(modification time, size) of a file, so caches notice a changed file."""
    try:
        st = path.stat()
    except OSError:
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _scan_cached(path: Path, stamp: tuple[int, int]) -> Any:
    from facehd.mesh import load_mesh

    return load_mesh(path)


def _scan(path: Path) -> Any:
    """A ground-truth mesh, cached per process (many images share a subject's scan)."""
    return _scan_cached(path, _stamp(path))


@functools.lru_cache(maxsize=4)
def _scan_lm_cached(path: Path, by_position: bool, stamp: tuple[int, int]) -> np.ndarray:
    return readers.read_scan_landmarks7(path, by_position)


def _scan_lm(path: Path, by_position: bool = False) -> np.ndarray:
    return _scan_lm_cached(path, by_position, _stamp(path))


#: Fewest vertices of a prediction that can show a face (NoW's FLAME meshes have 5023).
MIN_PREDICTION_VERTICES = 100
#: Largest RMS (mm) of the predicted landmarks from the scan's after their similarity fit; a
#: reconstruction's are a few millimetres off, landmarks in another order tens.
MAX_LANDMARK_RMS_MM = 15.0
#: Largest RMS (mm, at the landmark fit's scale) of the predicted landmarks from the predicted
#: surface: a method's landmarks lie on its mesh; a mesh and landmarks written in other frames
#: or units lie far apart.
MAX_LANDMARK_SURFACE_MM = 10.0


def _unit_contradiction(lm: np.ndarray, scan_lm: np.ndarray, config: Any) -> str:
    """In NoW's metrical variant, what the landmarks' own scale says against ``config.unit``
    (empty when they agree to a factor of 2)."""
    from benchmarks.now import UNIT_TO_MM
    from facehd.transforms import procrustes

    free = procrustes(lm, scan_lm, with_scale=True, allow_reflection=True).scale
    given = UNIT_TO_MM[config.unit]
    if 0.5 <= free / given <= 2.0:
        return ""
    return (
        f"--metrical {config.unit} scales the prediction by {given:g}, its landmarks fit the "
        f"scan's at {free:.3g}: in another unit?"
    )


def _unit_notice(tasks: list[Any]) -> str:
    """Before a metrical NoW run: the first prediction whose landmarks contradict the unit, said
    at once (empty when the first readable pair agrees). Aligning a prediction at another
    scale than the scan's takes many slow iterations: a whole benchmark would take days before
    its summary said so."""
    for task in tasks:
        it = task.item
        if it.ground_truth_problem or task.mesh is None or task.landmarks is None:
            continue
        try:
            lm = readers.read_landmarks7(task.landmarks)
            scan_lm = _scan_lm(it.scan_landmarks, it.pp_by_position)
            said = _unit_contradiction(lm, scan_lm, task.config)
        except Exception as exc:  # noqa: BLE001 - the item's row will say what is wrong
            raise_if_interrupted(exc)
            continue
        if not said:
            return ""
        return (
            f"{task.landmarks}: {said} Every image is scored as asked, and aligning a "
            "prediction at another scale than its scan's takes many times longer: stop and "
            "rerun with the predictions' unit if this one is wrong"
        )
    return ""


def _now_warning(
    pred: Any, lm: np.ndarray, scan_lm: np.ndarray, res: Any, config: Any = None
) -> str:
    """What makes a scored NoW prediction implausible (empty when nothing does): too few
    vertices, landmarks far from the scan's or from its own surface, an alignment that mirrors
    it; in the metrical variant also a unit that the landmarks' own scale contradicts."""
    said = []
    if config is not None and config.metrical:
        unit = _unit_contradiction(lm, scan_lm, config)
        if unit:
            said.append(unit)
    if pred.n_vertices < MIN_PREDICTION_VERTICES:
        said.append(f"the prediction has {pred.n_vertices} vertices")
    rms = float(np.sqrt(((res.landmark_transform.apply(lm) - scan_lm) ** 2).sum(1).mean()))
    if not rms <= MAX_LANDMARK_RMS_MM:
        said.append(
            f"its 7 landmarks are {rms:.1f} mm RMS from the scan's after the similarity fit "
            "(in another order, or not the face's?)"
        )
    if pred.n_faces:
        from facehd.distances import point_to_surface

        off = point_to_surface(lm, pred).distances * res.landmark_transform.scale
        off_rms = float(np.sqrt(np.mean(off**2)))
        if not off_rms <= MAX_LANDMARK_SURFACE_MM:
            said.append(
                f"its 7 landmarks lie {off_rms:.1f} mm RMS from its own surface (the mesh and "
                "the landmarks in other frames or units?)"
            )
    if res.transform.is_reflection:
        said.append(
            "its alignment to the scan mirrors it (a reflection: a mirrored or inside-out mesh, "
            "or landmarks in mirrored order?)"
        )
    return "; ".join(said)


def _eval_now(task: _NowTask) -> tuple[NowItemRow, np.ndarray | None]:
    it = task.item
    base = dict(name=it.name, subject=it.subject, challenge=it.challenge, image=it.image)
    if it.ground_truth_problem:
        error = f"ground truth: {it.ground_truth_problem}"
        return NowItemRow(**base, status="error", error=error), None
    if task.mesh is None or task.landmarks is None:
        what, suffixes = (
            ("mesh", readers.MESH_SUFFIXES)
            if task.mesh is None
            else ("landmarks", readers.LANDMARK_SUFFIXES)
        )
        stem = task.predictions / it.subject / it.challenge / it.image
        error = _no_prediction(what, stem, suffixes)
        return NowItemRow(**base, status="missing", error=error), None
    try:
        from benchmarks.now import evaluate_now
        from facehd.mesh import load_mesh

        pred = load_mesh(task.mesh)
        lm = readers.read_landmarks7(task.landmarks)
        scan_lm = _scan_lm(it.scan_landmarks, it.pp_by_position)
        res = evaluate_now(_scan(it.scan), scan_lm, pred, lm, task.config)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        raise_if_interrupted(exc)
        return _failed(task, _err(exc))
    d = res.distances
    row = NowItemRow(
        **base,
        warning=_now_warning(pred, lm, scan_lm, res, task.config),
        status="ok",
        n_points=int(d.size),
        median_mm=float(np.median(d)),
        mean_mm=float(d.mean()),
        std_mm=float(d.std()),
        scale=float(res.transform.scale),
        iterations=res.iterations,
        converged=res.converged,
        prediction=str(task.mesh),
    )
    return row, d


def _realy_subject(root: Path, subject_id: int) -> Any:
    """A REALY subject's ground truth, cached per process (its files' stamps in the key)."""
    kp_path, region_paths = readers.realy_subject_paths(root, subject_id)
    paths = [kp_path, root / "metrical_scale.txt", *region_paths.values()]
    return _realy_subject_cached(root, subject_id, tuple(_stamp(p) for p in paths))


@functools.lru_cache(maxsize=2)
def _realy_subject_cached(root: Path, subject_id: int, stamps: tuple) -> Any:
    from benchmarks.realy import RealyRegion, RealySubject
    from facehd.mesh import Mesh, load_mesh

    kp_path, region_paths = readers.realy_subject_paths(root, subject_id)
    kp = readers.read_obj_vertices(kp_path)
    if kp.shape != (85, 3):
        raise InputFileError(kp_path, f"expected 85 keypoints, found {len(kp)}")
    scales_path = root / "metrical_scale.txt"
    scales = readers.read_metrical_scales(scales_path)
    if not 1 <= subject_id <= len(scales):
        raise InputFileError(scales_path, f"has no line {subject_id} for subject {subject_id}")
    regions = {}
    for name, p in region_paths.items():
        faces = load_mesh(p).faces  # checked triangles, indices in file order
        raw = readers.read_obj_vertices(p)  # every `v` line, float32 as the official reader
        regions[name] = RealyRegion.from_mesh(Mesh(raw, faces))
    return RealySubject(subject_id, kp, regions, float(scales[subject_id - 1]))


def _topology(txt: Path, obj: Path) -> Any:
    """A REALY topology, cached per process (its files' stamps in the key)."""
    return _topology_cached(txt, obj, (_stamp(txt), _stamp(obj)))


@functools.lru_cache(maxsize=2)
def _topology_cached(txt: Path, obj: Path, stamps: tuple) -> Any:
    from benchmarks.realy import load_topology

    return load_topology(txt, obj)


def _eval_realy(task: _RealyTask) -> tuple[RealyItemRow, None]:
    it = task.item
    if it.prediction is None:
        return RealyItemRow(it.name, it.subject_id, "missing", "no predicted mesh"), None
    try:
        from benchmarks.realy import evaluate_realy
        from facehd.mesh import Mesh, load_mesh

        topo = _topology(*task.topology)
        pred = load_mesh(it.prediction)
        topo.check_mesh(pred, it.prediction)
        pred = Mesh(pred.vertices.astype(np.float32).astype(np.float64), pred.faces)
        res = evaluate_realy(pred, topo, _realy_subject(task.root, it.subject_id))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        raise_if_interrupted(exc)
        return _failed(task, _err(exc))
    e = res.errors
    row = RealyItemRow(
        it.name,
        it.subject_id,
        "ok",
        nose_mm=e["nose"],
        mouth_mm=e["mouth"],
        forehead_mm=e["forehead"],
        cheek_mm=e["cheek"],
        mean_mm=res.mean,
        prediction=str(it.prediction),
        keypoint_rms_mm=res.keypoint_rms_mm,
        warning=_realy_warning(
            res.keypoint_rms_mm,
            mirrored=any(t.is_reflection for t in res.region_transforms.values()),
        ),
    )
    return row, None


#: Largest RMS (mm) of a REALY prediction's 85 keypoints from the scan's after the global
#: alignment; a reconstruction's are a few millimetres off, keypoints read from the wrong
#: vertices tens.
MAX_REALY_KEYPOINT_RMS_MM = 20.0


def _realy_warning(keypoint_rms_mm: float, mirrored: bool = False) -> str:
    """Why a scored REALY prediction looks implausible (empty when it does not): keypoints far
    from the scan's, or an alignment that mirrors it (the official fits take the SVD's
    orthogonal matrix without a reflection check)."""
    said = []
    if not keypoint_rms_mm <= MAX_REALY_KEYPOINT_RMS_MM:
        said.append(
            f"its 85 keypoints are {keypoint_rms_mm:.1f} mm RMS from the scan's after the "
            "global alignment (the topology's keypoint file of another template, 1-based, or "
            "in another order?)"
        )
    if mirrored:
        said.append(
            "its alignment to the scan mirrors it (a reflection: a mesh written in a "
            "left-handed frame?)"
        )
    return "; ".join(said)


def _predef(root: Path) -> readers.FaceScapePredef:
    d = readers.predef_dir(root)
    return _predef_cached(root, tuple(_stamp(p) for p in sorted(d.glob("*.npy"))))


@functools.lru_cache(maxsize=1)
def _predef_cached(root: Path, stamps: tuple) -> readers.FaceScapePredef:
    return readers.read_facescape_predef(root)


def _fs_groups(item: readers.FaceScapeItem) -> tuple[str, str]:
    from benchmarks.facescape import lab_groups, wild_group

    if item.split == "wild":
        return wild_group(item.index), ""
    angle, focal = lab_groups(item.focal_index, item.view)
    return angle or "", focal


def _eval_facescape(task: _FaceScapeTask) -> tuple[FaceScapeItemRow, None]:
    it = task.item
    group, focal_group = _fs_groups(it)
    base = dict(name=it.name, group=group, focal_group=focal_group)
    missing = it.ground_truth_missing
    if missing is not None:
        error = f"ground truth: {missing} does not exist"
        return FaceScapeItemRow(**base, status="error", error=error), None
    if task.prediction is None:
        from benchmarks.facescape_loaders import get_loader

        expected = get_loader(task.loader).expected(task.predictions, it.name)
        error = _no_prediction_at("mesh", expected)
        return FaceScapeItemRow(**base, status="missing", error=error), None
    try:
        res = _facescape_item(it, task.prediction, task.root, task.loader, task.depth_renderer)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        raise_if_interrupted(exc)
        return _failed(task, _err(exc))
    return (
        FaceScapeItemRow(
            **base,
            status="ok",
            cd_mm=res.cd,
            mne_rad=res.mne,
            cr=res.cr,
            delta_z=res.delta_z,
            prediction=str(task.prediction),
            warning=_facescape_warning(res.cr, task.loader),
        ),
        None,
    )


#: Smallest completeness rate (CR) of a FaceScape prediction scored without a warning.
MIN_FACESCAPE_CR = 0.5


def _facescape_warning(cr: float, loader: str) -> str:
    """Why a scored FaceScape prediction looks misplaced (empty when it does not): it covers
    none, or under half, of the ground truth; CD and MNE are then of that part only (none: no
    numbers at all)."""
    if math.isnan(cr) or cr >= MIN_FACESCAPE_CR:
        return ""
    where = f"is it in the image-aligned format of the loader used (--loader {loader})?"
    if cr == 0:
        return f"the prediction covers none of the ground truth (CR 0): {where}"
    return (
        f"the prediction covers {cr:.0%} of the ground truth (CR {cr:.3f} < "
        f"{MIN_FACESCAPE_CR}): CD and MNE are of that part only; {where}"
    )


def _facescape_item(
    it: readers.FaceScapeItem,
    prediction: Path,
    root: Path,
    loader: str = "generic",
    depth_renderer: str = "rays",
) -> Any:
    """Score image ``it``: its predicted mesh ``prediction`` (with the other files ``loader``
    reads beside it) placed by ``loader`` (in the official loaders' frame), then scaled to mm
    as the official evaluator does (wild: the image's pupil scale, lab: the standard pupil
    distance); the depth maps by ``depth_renderer``."""
    from benchmarks.facescape import (
        STD_PUPIL_DIST,
        Orthographic,
        Perspective,
        evaluate_facescape,
    )
    from benchmarks.facescape_loaders import get_loader
    from facehd.mesh import Mesh

    predef = _predef(root)

    def load(focal: float | None) -> Any:
        return get_loader(loader).load(prediction.parent, it.name, focal, prediction)

    gt = _scan(it.gt_mesh)
    if it.split == "wild":
        arrays = (predef.wild_pupil_scales, predef.wild_head_centers, predef.wild_rotations)
        if any(a is None or len(a) <= it.index for a in arrays):
            raise InputFileError(root, f"the wild predef arrays have no entry for image {it.index}")
        p = float(predef.wild_pupil_scales[it.index])
        gt_mm = Mesh(gt.vertices * p, gt.faces)
        placed = load(None)
        pred_mm = Mesh(placed.vertices * p, placed.faces)
        return evaluate_facescape(
            gt_mm,
            pred_mm,
            Orthographic(mag=p),
            predef.wild_rotations[it.index],
            predef.wild_head_centers[it.index] * p,
            depth_scale=128.0 / p,
            depth_renderer=depth_renderer,
        )
    if predef.lab_head_centers is None or predef.lab_rotations is None:
        raise InputFileError(root, "lab_head_centers.npy or lab_rotations.npy is missing")
    if len(predef.lab_head_centers) <= it.focal_index or len(predef.lab_rotations) <= it.view:
        raise InputFileError(root, f"the lab predef arrays have no entry for {it.name}")
    assert it.camera is not None
    k, rt = readers.read_lab_camera(it.camera)
    v = gt.vertices * STD_PUPIL_DIST
    gt_cam = Mesh(v @ rt[:, :3].T + rt[:, 3] * STD_PUPIL_DIST, gt.faces)
    depth = float(np.median(gt_cam.vertices[:, 2]))
    if not depth > 0:  # OpenCV cameras look down +z
        raise InputFileError(
            it.camera,
            f"its Rt puts the ground-truth face behind the camera (median depth {depth:.4g} mm; "
            "the camera looks down +z)",
        )
    placed = load(float(k[0, 0]))
    pred_cam = Mesh(placed.vertices * STD_PUPIL_DIST, placed.faces)
    return evaluate_facescape(
        gt_cam,
        pred_cam,
        Perspective(k),
        predef.lab_rotations[it.view],
        predef.lab_head_centers[it.focal_index],
        depth_renderer=depth_renderer,
    )


def _evaluate(task: Any) -> tuple[Any, np.ndarray | None]:
    if isinstance(task, _NowTask):
        return _eval_now(task)
    if isinstance(task, _RealyTask):
        return _eval_realy(task)
    return _eval_facescape(task)


def _failed(task: Any, error: str) -> tuple[Any, None]:
    """The row of an item whose scoring failed (``status`` ``error``), as :func:`_evaluate`
    returns it: an exception's message, or why its worker process died."""
    if isinstance(task, _NowTask):
        it = task.item
        pred = str(task.mesh) if task.mesh is not None else ""
        base = dict(name=it.name, subject=it.subject, challenge=it.challenge, image=it.image)
        return NowItemRow(**base, status="error", error=error, prediction=pred), None
    if isinstance(task, _RealyTask):
        it = task.item
        pred = str(it.prediction) if it.prediction is not None else ""
        return RealyItemRow(it.name, it.subject_id, "error", error, prediction=pred), None
    it = task.item
    group, focal_group = _fs_groups(it)
    pred = str(task.prediction) if task.prediction is not None else ""
    row = FaceScapeItemRow(it.name, group, focal_group, "error", error, prediction=pred)
    return row, None


# ------------------------------------------------------------------------------------------
# summaries


def _now_summary(
    rows: list[NowItemRow], dist: dict[str, np.ndarray], groups: list[str]
) -> list[NowSummaryRow]:
    from benchmarks.now import pooled_statistics

    out = []
    for g in [*groups, "all"]:
        sel = [r for r in rows if g == "all" or r.challenge == g]
        st = pooled_statistics([dist[r.name] for r in sel if r.status == "ok"])
        out.append(
            NowSummaryRow(
                g,
                st.n_images,
                sum(r.status == "missing" for r in sel),
                sum(r.status == "error" for r in sel),
                st.n_points,
                st.median,
                st.mean,
                st.std,
            )
        )
    return out


def now_computed_distances(rows: list[NowItemRow], dist: dict[str, np.ndarray]) -> bytes:
    """The bytes of the official NoW tool's ``<method>_computed_distances.npy``: a pickled dict
    ``{"computed_distances": [one (N,) array per scored image, in the image list's order],
    "num_missing_files": images without a prediction}``, read back with
    ``np.load(path, allow_pickle=True).item()``. An image that failed to evaluate counts as
    missing here (that tool stops on it); its own shuffling of each array changes no statistic
    and is left out. The arrays are pickled with NumPy's one float64 dtype: arrays from a pool's
    workers each bring their own copy of it, which the pickle would store once per array (the
    same values, other bytes than a run without ``--workers``)."""
    scored = [np.asarray(dist[r.name], dtype=np.float64) for r in rows if r.name in dist]
    payload = {"computed_distances": scored, "num_missing_files": len(rows) - len(scored)}
    buf = io.BytesIO()
    np.save(buf, np.array(payload, dtype=object), allow_pickle=True)
    return buf.getvalue()


def facescape_full_texts(rows: list[FaceScapeItemRow]) -> dict[str, str]:
    """The official FaceScape evaluator's ``CD_full.txt``, ``CR_full.txt`` and ``MNE_full.txt``:
    one value per image (``np.savetxt``), NaN where it was not scored, in its order (wild by
    index, lab by subject, focal length, view), which its table scripts read by position."""

    def order(row: FaceScapeItemRow) -> tuple[int, ...]:
        parts = row.name.split("_")
        return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (1 << 30,)

    ordered = sorted(rows, key=lambda r: (order(r), r.name))
    out = {}
    for name, field_name in (
        ("CD_full.txt", "cd_mm"),
        ("CR_full.txt", "cr"),
        ("MNE_full.txt", "mne_rad"),
    ):
        values = [
            float(v) if r.status == "ok" and (v := getattr(r, field_name)) is not None else np.nan
            for r in ordered
        ]
        buf = io.StringIO()
        np.savetxt(buf, np.asarray(values, dtype=np.float64))
        out[name] = buf.getvalue()
    return out


def realy_error_text(rows: list[RealyItemRow]) -> str:
    """The scored images in the layout of the official tool's ``REALY_error.txt``, for reading
    or diffing beside it: one line per image, ``name``, an empty field, then the nose, mouth,
    forehead and cheek errors (mm, cut to 9 characters as that tool writes them), tab-separated,
    ordered as it orders its predictions (by the name's digits, names of other forms after)."""

    lines = []
    ok = (r for r in rows if r.status == "ok")
    for r in sorted(ok, key=lambda r: readers.realy_sort_key(r.name)):
        errs = (r.nose_mm, r.mouth_mm, r.forehead_mm, r.cheek_mm)
        lines.append(r.name + "\t" + "".join(f"\t{str(float(e))[:9]}" for e in errs) + "\n")
    return "".join(lines)


def _realy_summary(rows: list[RealyItemRow]) -> list[RealySummaryRow]:
    from benchmarks.realy import REALY_REGIONS, realy_statistics

    ok = [r for r in rows if r.status == "ok"]
    errors = {reg: [getattr(r, f"{reg}_mm") for r in ok] for reg in REALY_REGIONS}
    n_miss = sum(r.status == "missing" for r in rows)
    n_fail = sum(r.status == "error" for r in rows)
    return [
        RealySummaryRow(s.region, s.mean, s.median, s.std, s.n_images, n_miss, n_fail)
        for s in realy_statistics(errors)
    ]


def _nanmean(values: list[float | None]) -> float:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _facescape_summary(rows: list[FaceScapeItemRow], split: str) -> list[FaceScapeSummaryRow]:
    if split == "wild":
        order = ["0-5", "5-30", "30-60", "60-90"]
        groups = [(g, [r for r in rows if r.group == g]) for g in order]
    else:
        groups = [(f"angle {g}", [r for r in rows if r.group == g]) for g in ("0", "30", "60")]
        groups += [(g, [r for r in rows if r.focal_group == g]) for g in ("f1200", "f600", "f300")]
    groups.append(("all", rows))
    out = []
    for name, sel in groups:
        if not sel:
            continue
        done = sum(r.cd_mm is not None and not math.isnan(r.cd_mm) for r in sel)
        out.append(
            FaceScapeSummaryRow(
                name,
                _nanmean([r.cd_mm for r in sel]),
                _nanmean([r.mne_rad for r in sel]),
                _nanmean([r.cr for r in sel]),
                done / len(sel),
                len(sel),
                sum(r.status == "missing" for r in sel),
                sum(r.status == "error" for r in sel),
            )
        )
    return out


# ------------------------------------------------------------------------------------------
# the run


def resolve_root(spec: BenchmarkSpec, root: str | Path | None) -> Path:
    """The dataset root: ``root`` if given, else the ``datasets.yaml`` entry's root."""
    hint = ""  # how to point facehd at the root, when it came from the registry
    if root is not None:
        path = Path(root)
    else:
        from facehd.datasets import load_registry

        name = spec.dataset
        if spec.dataset == "multiview":
            name = "esrc" if spec.split == "esrc" else ""
        reg = load_registry()
        if not name or name not in reg.datasets:
            raise ValueError(
                f"no registry entry gives the root of {spec.dataset}:{spec.split}; pass --root"
            )
        entry = reg.dataset(name)
        path = entry.root
        hint = f" (pass --root, set {entry.env}, or set its root in {reg.path})"
    if not path.exists():
        raise InputFileError(path, f"dataset root of {spec.dataset} does not exist{hint}")
    return path


def _tasks(
    spec: BenchmarkSpec,
    root: Path,
    predictions: Path,
    config: RunConfig,
    topology: tuple[Path, Path] | None,
    expected: list[str] | None = None,
) -> list[Any]:
    """The split's items, each with its prediction (None when missing).

    REALY has no list of images: with ``expected`` (the photos' names) each name is an item,
    otherwise the predictions found, plus one missing item for every ground-truth subject that
    has none."""
    if spec.dataset in ("now", "multiview"):
        items = (
            readers.read_now_items(root, spec.split)
            if spec.dataset == "now"
            else readers.read_multiview_items(root, spec.split)
        )
        return [
            _NowTask(it, *readers.find_prediction(predictions, it), config.now, predictions)
            for it in items
        ]
    if spec.dataset == "realy":
        assert topology is not None
        subjects = readers.realy_subjects(root) if expected is None else None
        items = readers.read_realy_items(predictions, expected, subjects)
        return [_RealyTask(it, root, topology) for it in items]
    items = readers.read_facescape_items(root, spec.split, complete=_official(root))
    from benchmarks.facescape_loaders import DEFAULT_LOADER, get_loader

    loader = get_loader(config.loader or DEFAULT_LOADER)
    return [
        _FaceScapeTask(
            it,
            loader.mesh_path(predictions, it.name),
            root,
            predictions,
            loader.name,
            config.facescape_depth or "rays",
        )
        for it in items
    ]


def realy_photos(folder: str | Path) -> dict[str, Path]:
    """REALY photos of a folder by name: ``<subject>_<anything>.jpg|.jpeg|.png`` (the names the
    predictions must carry)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "REALY photos folder does not exist")
    found = {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in readers.IMAGE_SUFFIXES and readers.realy_name(p.stem)
    }
    if not found:
        raise InputFileError(folder, "no REALY photos (<subject>_<name>.jpg|.jpeg|.png) found")
    return found


def _generate_predictions(
    spec: BenchmarkSpec,
    method_name: str,
    root: Path,
    folder: Path,
    images: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str] | None, dict[str, str]]:
    """Run a registered method over the split's images into ``folder`` (benchmark layout).

    Returns ``(names, failed)``: for REALY, the names of the photos (every one is scored, those
    the method failed on as missing), None for the other benchmarks, whose items come from their
    lists; and why each item without a prediction has none, by item name.

    FaceScape: the photos are found by name under the data folder
    (:func:`benchmarks.readers.find_facescape_images`) and the method's
    ``reconstruct_image_aligned`` writes ``<name>.obj`` in the photo's image-aligned frame.
    REALY: the photos of ``images`` (:func:`realy_photos`), each reconstructed by the method's
    ``reconstruct_template`` (a mesh of its fixed template topology) into ``<name>.obj``.

    Resumable: an image whose mesh and landmark files both exist, made from the photos there
    now (their SHA-256, recorded per item in ``folder/sources.json`` after each prediction), is
    skipped (each file is written under a temporary name and renamed, so a file that exists is
    complete); one whose photos changed (another benchmark's under the same names, say) is made
    again. An image
    the method fails on (no face found, an unreadable photo) or missing from the disk is
    recorded in ``folder/failures.csv`` (item, image, error; rewritten by each run) and the run
    goes on; scoring then counts it missing, with that reason.

    ``progress(done, total)`` is called once the method has loaded (``done`` 0) and after each
    image it is run on (``total``: those not kept from an earlier run).
    """
    from benchmarks.methods import load_method, write_prediction
    from benchmarks.multiview import view_images
    from facehd.errors import FacehdError

    todo: list[tuple[str, list[Path], Path, Path | None]] = []
    failures: list[tuple[str, str, str]] = []
    made = _Sources(folder)
    per_image = {"facescape": "reconstruct_image_aligned", "realy": "reconstruct_template"}
    names = None
    if spec.dataset == "realy":
        if images is None:
            raise ValueError(
                "REALY: give the folder of the split's photos (--images DIR; named "
                "<subject>_<name>.jpg as the predictions must be) to run a method on them, or "
                "pass --predictions"
            )
        found = realy_photos(images)
        names = list(found)
        for name, photo in found.items():
            mesh_path = folder / f"{name}.obj"
            if not made.done(name, [photo], mesh_path):
                todo.append((name, [photo], mesh_path, None))
    elif spec.dataset == "facescape":
        photos = readers.find_facescape_images(root, spec.split)
        items = readers.read_facescape_items(root, spec.split, complete=_official(root))
        if not any(it.name in photos for it in items):
            raise InputFileError(
                readers.facescape_data_dir(root),
                f"no photo of the {spec.split} split found (<name>.jpg|.jpeg|.png, e.g. "
                f"{items[0].name}.jpg, anywhere under this folder) to run a method on",
            )
        for it in items:
            mesh_path = folder / f"{it.name}.obj"
            if it.name not in photos:
                exts = "|".join(s.lstrip(".") for s in readers.IMAGE_SUFFIXES)
                failures.append(
                    (it.name, f"{it.name}.{exts}", f"no photo of this name under {root}")
                )
            elif not made.done(it.name, [photos[it.name]], mesh_path):
                todo.append((it.name, [photos[it.name]], mesh_path, None))
    else:
        items = (
            readers.read_now_items(root, spec.split)
            if spec.dataset == "now"
            else readers.read_multiview_items(root, spec.split)
        )
        for it in items:
            images = (
                view_images(it.image_path)
                if spec.dataset == "multiview"
                else ([it.image_path] if it.image_path else [])
            )
            base = folder / it.subject / it.challenge / it.image
            mesh_path, lm_path = base.with_suffix(".obj"), base.with_suffix(".txt")
            if images:
                if not made.done(it.name, images, mesh_path, lm_path):
                    todo.append((it.name, images, mesh_path, lm_path))
            else:
                failures.append((it.name, it.name, f"no photo of this name under {root}"))
    stored = _read_method_json(folder)
    if todo or stored is not None:
        method = load_method(method_name)
        _check_method_identity(folder, method_name, method, stored)
    if todo:
        one = None
        if spec.dataset in per_image:
            one = getattr(method, per_image[spec.dataset], None)
            if one is None:
                why = (
                    "FaceScape scores meshes in the photo's image-aligned frame"
                    if spec.dataset == "facescape"
                    else "REALY scores meshes of one template topology"
                )
                raise ValueError(
                    f"method {method_name!r} has no {per_image[spec.dataset]} ({why}); write its "
                    "meshes yourself and pass --predictions"
                )
        keypoints = getattr(method, "template_keypoints", None)
        given = keypoints() if spec.dataset == "realy" and keypoints is not None else None
        if given is not None:
            from facehd.mesh import atomic_write_bytes, save_mesh

            name, entries, template = given  # (name, [[triangle, w0, w1]] * 85, template)
            save_mesh(folder / f"{name}.obj", template)
            atomic_write_bytes(folder / f"{name}.txt", (json.dumps(entries) + "\n").encode())
    if todo and progress is not None:
        progress(0, len(todo))
    for k, (name, photos, mesh_path, lm_path) in enumerate(todo, 1):
        try:
            out = method.reconstruct(photos) if one is None else one(photos[0])
        except (FacehdError, ValueError, OSError) as exc:
            failures.append((name, str(photos[0]), str(exc)))
        else:
            write_prediction(out, mesh_path, lm_path)
            made.record(name, photos)
        if progress is not None:
            progress(k, len(todo))
    # this run's failures (a rerun retries the earlier ones: they have no prediction)
    path = folder / "failures.csv"
    if failures:
        write_rows(path, [_GenerationFailure(*f) for f in failures], _GenerationFailure)
    else:
        path.unlink(missing_ok=True)
    return names, {name: error for name, _, error in failures}


class _Sources:
    """``folder/sources.json``: the SHA-256 of the photos (with their ``.pts`` files) each
    prediction of a registered method was made from, by item name, written after each
    prediction (a prediction not recorded there yet, one made before this record existed or
    cut off before it, is made again)."""

    NAME = "sources.json"

    def __init__(self, folder: Path) -> None:
        self.path = folder / self.NAME
        self.hashes: dict[str, str] = {}
        self._now: dict[str, str] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                data = {}  # unreadable: every prediction is made again
            if isinstance(data, dict):
                self.hashes = {str(k): str(v) for k, v in data.items()}

    def _sha(self, name: str, photos: list[Path]) -> str:
        """Of the photos and, where one lies beside a photo, its ``.pts`` landmark file (which
        a method may align the photo by)."""
        if name not in self._now:
            from facehd.h5io import file_sha256
            from facehd.landmarks import photo_landmarks_path

            parts = []
            for photo in photos:
                pts = photo_landmarks_path(photo)
                parts.append(file_sha256(photo) + (file_sha256(pts) if pts.is_file() else ""))
            self._now[name] = hashlib.sha256("".join(parts).encode()).hexdigest()
        return self._now[name]

    def done(self, name: str, photos: list[Path], *paths: Path | None) -> bool:
        """Whether item ``name``'s prediction files exist, made from ``photos`` as they are."""
        if not all(p is None or p.is_file() for p in paths):
            return False
        return self.hashes.get(name) == self._sha(name, photos)

    def record(self, name: str, photos: list[Path]) -> None:
        """Record that item ``name``'s prediction was made from ``photos`` (as they are)."""
        from facehd.mesh import atomic_write_bytes

        self.hashes[name] = self._sha(name, photos)
        text = json.dumps(dict(sorted(self.hashes.items())), indent=1) + "\n"
        atomic_write_bytes(self.path, text.encode())


METHOD_JSON = "method.json"
"""Written into a folder of predictions a registered method made: its name and what its
predictions depend on (:meth:`describe`, e.g. the checkpoint's hash and the precision)."""


def _read_method_json(folder: Path) -> dict[str, Any] | None:
    path = folder / METHOD_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(path, f"unreadable ({exc}); remove it, or the folder") from exc
    if not isinstance(data, dict):
        raise InputFileError(path, "not a JSON object; remove it, or the folder")
    return data


def _has_predictions(folder: Path) -> bool:
    """Whether ``folder`` holds any mesh already (a method.json is not one)."""
    if not folder.is_dir():
        return False
    return any(p.suffix.lower() in readers.MESH_SUFFIXES for p in folder.rglob("*") if p.is_file())


def _check_method_identity(
    folder: Path, name: str, method: Any, stored: dict[str, Any] | None
) -> None:
    """Refuse to add to ``folder`` the predictions of a method whose description
    (``method.describe()``: what its meshes depend on) differs from ``stored``, the one its
    predictions were made with; record the description in a folder that has no predictions yet.
    Methods without ``describe`` are not checked."""
    describe = getattr(method, "describe", None)
    if describe is None:
        return
    now = {"method": name, "describe": describe()}
    # serialised before any image: a description that cannot be stored fails here
    text = json.dumps(now, indent=2) + "\n"
    if stored is None:
        if not _has_predictions(folder):  # a folder of meshes made before: provenance unknown
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / METHOD_JSON, text)
        return
    if stored != now:
        before = stored.get("describe")
        before = before if isinstance(before, dict) else {}
        said = (
            ", ".join(
                f"{k} {before.get(k)!r} -> {v!r}"
                for k, v in now["describe"].items()
                if before.get(k) != v
            )
            or f"{stored!r} -> {now!r}"
        )
        raise InputFileError(
            folder / METHOD_JSON,
            f"these predictions were made by another {name!r} ({said}); scoring them with this "
            "run's would mix two models: give this run its own --label (or another --out), or "
            "remove the predictions folder to redo them",
        )


@dataclass(frozen=True)
class _GenerationFailure:
    """A ``predictions/failures.csv`` row: an item the method made no prediction for."""

    item: str
    image: str
    error: str


def run_benchmark(
    dataset: str,
    method: str,
    *,
    predictions: str | Path | None = None,
    root: str | Path | None = None,
    out: str | Path = "facehd-out/bench",
    workers: int = 1,
    topology: str | Path | None = None,
    now_config: NowConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    images: str | Path | None = None,
    label: str | None = None,
    loader: str | None = None,
    predict_progress: Callable[[int, int], None] | None = None,
    facescape_depth: str | None = None,
    notice: Callable[[str], None] | None = None,
) -> RunResult:
    """Score ``method`` on ``dataset`` and write the CSVs (see the module docstring).

    Parameters
    ----------
    dataset : ``now``, ``realy``, ``facescape`` or ``multiview``, optionally ``:split``.
    method : method name (a label for a predictions folder, or a registered method).
    predictions : folder of the method's meshes in the benchmark's layout; None runs the
        registered method ``method`` first.
    root : dataset root (default: from ``datasets.yaml``).
    out : output folder.
    workers : processes evaluating images in parallel.
    topology : REALY only: the topology keypoint file or template name (default: the one in the
        predictions folder).
    now_config : NoW / multi-view settings (default: the official non-metrical protocol).
    progress : called as ``progress(done, total)`` before the first image is scored (``done``
        0) and after each.
    images : REALY: the folder of the split's photos (the official data's frontal or
        multi-view set). With a registered method each is reconstructed; with ``predictions``
        each must have a prediction of its name. Every photo is scored, those without a
        prediction as missing. Without it a REALY run scores the predictions found and counts
        a ground-truth subject with none as missing.
    label : a registered method's run only: the name its leaderboard row and output folder
        get (default: ``method``), so runs of one method with other checkpoints or settings
        rank side by side in one ``out``.
    loader : FaceScape with ``predictions`` only: the official loader reading the method's own
        files (:data:`benchmarks.facescape_loaders.LOADERS`; default ``generic``, the
        image-aligned format).
    predict_progress : a registered method's run: called as ``predict_progress(done, total)``
        once the method has loaded and after each image it reconstructs (those kept from an
        earlier run not counted); never when nothing is left to reconstruct.
    notice : called with a warning that should not wait for the run's end: in NoW's metrical
        variant, the first prediction's landmarks at another scale than ``--metrical`` says
        (each such image's row says so too).
    facescape_depth : FaceScape: how the depth alignment's depth maps are made, ``rays``
        (exact depths, the default) or ``pyrender`` (the official evaluator's OpenGL render;
        needs pyrender and an OpenGL context); recorded in ``config.json`` and the config hash.
    """
    from facehd import __version__

    spec = BenchmarkSpec.parse(dataset)
    for what, value in (("method name", method), ("label", label)):
        if value is not None and (
            not value or value in (".", "..") or any(c in value for c in "/\\:")
        ):
            raise ValueError(
                f"{what} {value!r} must be non-empty, not '.' or '..', without '/', '\\' or ':'"
            )
    if label is not None and predictions is not None:
        raise ValueError(
            "--label names the run of a registered method; with --predictions, --method is the "
            "label of the folder's meshes"
        )
    if loader is not None:
        from benchmarks.facescape_loaders import get_loader

        if spec.dataset != "facescape":
            raise ValueError(
                f"--loader places FaceScape predictions (an official loader's files); "
                f"{spec.dataset} has no loaders"
            )
        if predictions is None:
            raise ValueError(
                "--loader reads a method's own files from --predictions; a registered method's "
                "run writes the image-aligned format (the generic loader)"
            )
        get_loader(loader)  # an unknown name fails here, listing the known ones
    if facescape_depth is not None:
        from facehd.depthmap import DEPTH_RENDERERS

        if spec.dataset != "facescape":
            raise ValueError(
                f"--facescape-depth sets FaceScape's depth alignment; {spec.dataset} has none"
            )
        if facescape_depth not in DEPTH_RENDERERS:
            raise ValueError(
                f"--facescape-depth: expected one of {', '.join(DEPTH_RENDERERS)}, got "
                f"{facescape_depth!r}"
            )
        if facescape_depth == "pyrender":
            from facehd.depthmap import check_pyrender

            try:  # once here, rather than an error row for every image
                check_pyrender()
            except RuntimeError as exc:
                raise ValueError(f"--facescape-depth pyrender: {exc}") from None
    name = method if label is None else label
    metrical = now_config is not None and now_config.metrical
    if metrical and spec.dataset not in ("now", "multiview"):
        raise ValueError(f"the metrical variant is NoW's; {spec.dataset} has none")
    # NoW ranks the metrical variant apart: its runs and leaderboard rows carry their own split
    ranked_as = BenchmarkSpec(spec.dataset, f"{spec.split}-metrical") if metrical else spec
    root_path = resolve_root(spec, root)
    check_benchmark_finished(root_path)  # one stopped part way would score as a smaller one
    check_benchmark_kind(root_path, spec.dataset)
    board = Path(out) / "leaderboard.csv"
    load_leaderboard(board)  # a malformed leaderboard fails the run before anything runs
    topology_root = root_path
    if spec.dataset == "realy":
        synth_split = root_path / "images" / spec.split
        if is_synthetic_benchmark(root_path) and not synth_split.is_dir():
            # the predictions alone do not say their split: they would be ranked as this one
            raise InputFileError(
                root_path,
                f"this synthetic REALY benchmark has no {spec.split} split ({synth_split.name} "
                "under images/ is not there; benchmarks written before the side split was "
                "drawn have the frontal one only: the facehd synth --benchmark realy command "
                "that wrote it, run again, adds it)",
            )
        root_path = readers.realy_data_dir(root_path)  # a clone of the repository: its data/
        readers.realy_subjects(root_path)  # not a REALY data folder: fail before anything runs
    out = Path(out)
    out_dir = out / ranked_as.slug / name
    expected = None  # REALY run in-process: every photo, those the method failed on missing
    failed: dict[str, str] = {}  # why the method made no prediction, by item
    if predictions is None:
        pred_dir = out_dir / "predictions"
        expected, failed = _generate_predictions(
            spec,
            method,
            root_path,
            pred_dir,
            Path(images) if images is not None else None,
            predict_progress,
        )
    else:
        pred_dir = Path(predictions)
        if spec.dataset == "realy" and images is not None:
            expected = list(realy_photos(images))  # each photo must have its prediction
    if not pred_dir.is_dir():
        raise InputFileError(pred_dir, "predictions folder does not exist")
    topo = None
    if spec.dataset == "realy":
        topo = readers.find_topology(topology, topology_root, pred_dir)
        _topology(*topo)  # a malformed topology fails the run before anything is written
    config = RunConfig(
        spec.dataset,
        spec.split,
        name,
        str(root_path.resolve()),
        str(pred_dir.resolve()),
        str(topo[0].resolve()) if topo else "",
        _read_method_json(pred_dir),
        now_config or NowConfig(),
        __version__,
        (loader or "generic") if spec.dataset == "facescape" else "",
        (facescape_depth or "rays") if spec.dataset == "facescape" else "",
    )
    tasks = _tasks(spec, root_path, pred_dir, config, topo, expected)
    if metrical and notice is not None:
        said = _unit_notice(tasks)
        if said:
            notice(said)
    if progress:
        progress(0, len(tasks))
    by_index: dict[int, tuple[Any, np.ndarray | None]] = {}

    def done(i: int, outcome: Any) -> None:
        if isinstance(outcome, TaskFailed):  # its worker died (or an error _evaluate let by)
            outcome = _failed(tasks[i], outcome.reason)
        by_index[i] = outcome
        if progress:
            progress(len(by_index), len(tasks))

    pool_size = workers if len(tasks) > 1 else 1
    run_tasks(_evaluate, tasks, done, workers=pool_size)
    results = [by_index[i] for i in range(len(tasks))]
    rows = [  # the method's own failure says more than where its files were looked for
        dataclasses.replace(r, error=f"{r.error.partition(_LOOKED_FOR)[0]}: {failed[r.name]}")
        if r.status == "missing" and r.name in failed
        else r
        for r, _ in results
    ]
    n_ok = sum(r.status == "ok" for r in rows)
    n_missing = sum(r.status == "missing" for r in rows)
    n_failed = sum(r.status == "error" for r in rows)
    chash = scoring_hash(config, topo)
    now_date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    lb = dict(
        method=name,
        dataset=spec.dataset,
        split=ranked_as.split,
        n_items=len(rows),
        n_missing=n_missing,
        n_failed=n_failed,
        facehd_version=__version__,
        date=now_date,
        config_hash=chash,
        data=benchmark_data(root_path),
    )
    # --- compute everything first, then write (atomically)
    files: list[tuple[Path, Any]] = []
    if spec.dataset in ("now", "multiview"):
        dist = {r.name: d for r, d in results if d is not None}
        groups = sorted({r.challenge for r in rows})
        summary = _now_summary(rows, dist, groups)
        allrow = summary[-1]
        lb.update(median_mm=allrow.median_mm, mean_mm=allrow.mean_mm, std_mm=allrow.std_mm)
        row_type, summary_type = NowItemRow, NowSummaryRow
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: v for k, v in dist.items()})
        files.append((out_dir / "distances.npz", buf.getvalue()))
        if spec.dataset in ("now", "multiview"):
            # the official tool's output, which its cumulative-error plots read (multi-view
            # sets are scored by the same protocol, so their distances compare beside them)
            ident = f"{name}_metrical" if metrical else name
            files.append(
                (out_dir / f"{ident}_computed_distances.npy", now_computed_distances(rows, dist))
            )
    elif spec.dataset == "realy":
        summary = _realy_summary(rows)
        lb.update(nmse_mm=summary[-1].mean_mm)
        row_type, summary_type = RealyItemRow, RealySummaryRow
        files.append((out_dir / "REALY_error.txt", realy_error_text(rows).encode()))
    else:
        summary = _facescape_summary(rows, spec.split)
        allrow = summary[-1]
        lb.update(cd_mm=allrow.cd_mm, mne_rad=allrow.mne_rad, cr=allrow.cr)
        row_type, summary_type = FaceScapeItemRow, FaceScapeSummaryRow
        for name, text in facescape_full_texts(rows).items():
            files.append((out_dir / name, text.encode()))
    lb = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in lb.items()}
    lb_row = LeaderboardRow(**lb)
    # A run that scored nothing (a wrong folder, say) has no numbers to rank: its rows go to
    # unscored/, and the run's files (an earlier run's results, which its leaderboard row
    # describes) stay as they were.
    unscored = out_dir / UNSCORED_DIR
    replaced = None
    write_dir = out_dir if n_ok else unscored
    write_dir.mkdir(parents=True, exist_ok=True)
    items_csv = write_rows(write_dir / "items.csv", rows, row_type)
    summary_csv = write_rows(write_dir / "summary.csv", summary, summary_type)
    atomic_write_text(
        write_dir / "config.json",
        json.dumps({**dataclasses.asdict(config), "config_hash": chash}, indent=2, sort_keys=True)
        + "\n",
    )
    if n_ok:
        for path, data in files:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        replaced = update_leaderboard(board, lb_row)
        shutil.rmtree(unscored, ignore_errors=True)  # an earlier unscored attempt's rows
    n_warned = sum(bool(getattr(r, "warning", "")) for r in rows)
    return RunResult(
        out_dir,
        items_csv,
        summary_csv,
        board,
        lb_row,
        len(rows),
        n_ok,
        n_missing,
        n_failed,
        n_warned,
        replaced,
    )

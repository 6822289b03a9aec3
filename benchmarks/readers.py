"""Readers for the benchmarks' real on-disk layouts (read as they are distributed).

NoW (``<root>`` = the dataset folder)::

    imagepathsvalidation.txt, imagepathstest.txt  image lists: .../<subject>/<challenge>/<image>.jpg
    scans/<subject>/*.obj                         the subject's scan (the first in sorted order)
    scans_lmks_onlypp/<subject>/*.pp              its 7 landmarks (MeshLab picked points, read
                                                  by position from lines 9-15 as the official
                                                  tool reads them: :func:`read_now_pp`)
    iphone_pictures/<subject>/<challenge>/*.jpg   images (or under final_release_version/)
    predictions: <pred>/<subject>/<challenge>/<image>.obj|.ply, <image>.npy|.txt landmarks

Multi-view (NoW-style, facehd's layout for FaceScape 3-view and ESRC 2-view sets)::

    multiview_<split>.txt    one set per line: <subject>/<n>views/<set> (text after a space ignored)
    scans/, scans_lmks_onlypp/ as for NoW (``.pp``, or ``.txt``/``.npy`` with 7 rows)
    predictions: <pred>/<subject>/<n>views/<set>.obj|.ply with <set>.npy|.txt landmarks

REALY (``<root>`` = the folder holding the benchmark data, like the official ``data/``)::

    REALY_HIFI3D_keypoints/<subject>.obj              85 keypoints as OBJ vertices
    REALY_scan_region/<subject>/{nose,mouth,forehead,cheek}.obj
    metrical_scale.txt                                line k: subject k's factor to mm
    <template>.txt + <template>.obj                   topology keypoint files (HIFI3D, BFM09, ...)
    predictions: a flat folder of <subject>_<anything>.obj

FaceScape (``<root>`` = the official ``benchmark/`` folder, or its ``data/`` folder)::

    data/wild_gt_mesh/<NNN>.obj                       fswild ground truth, NNN = 000..399
    data/lab_gt_mesh/<SS>.obj                         fslab ground truth (pupil-distance units)
    data/lab_cam/<SS>_<F>_<VV>.json                   [K (3x3), Rt (3x4)]
    code/predef/{wild_pupil_scales,wild_head_centers,wild_rotations,lab_head_centers,lab_rotations}.npy
    images: <name>.jpg|.jpeg|.png anywhere under data/ (facehd bench --method runs a method on
            them; a name found twice: the copy under a folder naming the split wins)
    predictions: <pred>/<name>.obj|.ply               image-aligned (see benchmarks.facescape)
                 or a method's own files, read by its official loader (benchmarks.facescape_loaders)

Ground-truth files that are missing or malformed raise :class:`facehd.errors.InputFileError`
naming the file; a missing prediction is not an error (the item is reported as missing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facehd.errors import InputFileError

__all__ = [
    "NowItem",
    "layout_problem",
    "read_now_items",
    "read_multiview_items",
    "find_prediction",
    "read_landmarks7",
    "read_now_pp",
    "read_scan_landmarks7",
    "RealyItem",
    "read_realy_items",
    "realy_data_dir",
    "realy_subjects",
    "read_metrical_scales",
    "read_obj_vertices",
    "realy_subject_paths",
    "find_topology",
    "FaceScapeItem",
    "FaceScapePredef",
    "facescape_data_dir",
    "read_facescape_predef",
    "predef_dir",
    "read_facescape_items",
    "find_facescape_images",
    "realy_name",
    "realy_sort_key",
    "read_lab_camera",
    "NOW_LIST_FILES",
]

#: NoW split -> image list file.
NOW_LIST_FILES: dict[str, str] = {
    "validation": "imagepathsvalidation.txt",
    "val": "imagepathsvalidation.txt",
    "test": "imagepathstest.txt",
}

MESH_SUFFIXES = (".obj", ".ply")
LANDMARK_SUFFIXES = (".npy", ".txt")


# ------------------------------------------------------------------------------------------
# NoW and multi-view


@dataclass(frozen=True)
class NowItem:
    """One evaluated image (NoW) or view set (multi-view)."""

    subject: str
    """Subject folder name."""
    challenge: str
    """Challenge (NoW) or view-count group (multi-view)."""
    image: str
    """Image (or set) name without extension."""
    scan: Path
    """The subject's ground-truth scan."""
    scan_landmarks: Path
    """Its landmark file."""
    image_path: Path | None
    """The image on disk, when found (needed only to run a method)."""
    ground_truth_problem: str = ""
    """Why the subject's ground truth cannot be read (its scan or landmark file missing), or
    empty: such an item is scored as failed, the others of the split as usual."""
    pp_by_position: bool = False
    """Read a ``.pp`` scan landmark file as the official NoW tool does (:func:`read_now_pp`:
    the points on lines 9-15, in file order) instead of as MeshLab XML; True for NoW splits."""

    @property
    def name(self) -> str:
        """``subject/challenge/image``."""
        return f"{self.subject}/{self.challenge}/{self.image}"


def _first(folder: Path, patterns: tuple[str, ...], what: str) -> Path:
    if not folder.is_dir():
        raise InputFileError(folder, f"{what} folder does not exist")
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise InputFileError(folder, f"no {what} ({', '.join(patterns)}) in this folder")


def _list_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputFileError(path, "image list does not exist")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln.split()[0] for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InputFileError(path, "image list is empty")
    return lines


def _scan_items(
    root: Path,
    list_file: Path,
    image_roots: tuple[Path, ...],
    lm_patterns: tuple[str, ...],
    pp_by_position: bool = False,
) -> list[NowItem]:
    items = []
    cache: dict[str, tuple[Path, Path]] = {}
    for k, line in enumerate(_list_lines(list_file), start=1):
        parts = line.replace("\\", "/").split("/")
        if len(parts) < 3:
            raise InputFileError(
                list_file, f"line {k}: expected <subject>/<challenge>/<image>, got {line!r}"
            )
        subject, challenge, filename = parts[-3], parts[-2], parts[-1]
        if subject not in cache:
            scan, lms = root / "scans" / subject, root / "scans_lmks_onlypp" / subject
            try:  # a subject whose ground truth is gone fails its own items, not the split
                scan = _first(scan, ("*.obj", "*.ply"), "scan")
                lms = _first(lms, lm_patterns, "scan landmarks")
                problem = ""
            except InputFileError as exc:
                problem = str(exc)
            cache[subject] = (scan, lms, problem)
        scan, lms, problem = cache[subject]
        image_path = None
        for base in image_roots:
            cand = base / subject / challenge / filename
            if cand.exists():
                image_path = cand
                break
        items.append(
            NowItem(
                subject,
                challenge,
                Path(filename).stem,
                scan,
                lms,
                image_path,
                problem,
                pp_by_position,
            )
        )
    return items


def read_now_items(root: str | Path, split: str = "validation") -> list[NowItem]:
    """The images of a NoW split, with their subject's scan and landmark files.

    Parameters
    ----------
    root : the NoW dataset folder.
    split : ``validation`` (``val``) or ``test``, or the name of an image-list file in ``root``.
    """
    root = Path(root)
    list_file = root / NOW_LIST_FILES.get(split, split)
    bases = (root / "iphone_pictures", root / "final_release_version" / "iphone_pictures", root)
    return _scan_items(root, list_file, bases, ("*.pp",), pp_by_position=True)


def read_multiview_items(root: str | Path, split: str) -> list[NowItem]:
    """The view sets of a multi-view split (``<root>/multiview_<split>.txt``)."""
    root = Path(root)
    list_file = root / f"multiview_{split}.txt"
    if not list_file.is_file():
        # a split's name is read from the file name: say which ones this folder has
        others = sorted(p.stem.removeprefix("multiview_") for p in root.glob("multiview_*.txt"))
        if others:
            raise InputFileError(
                list_file,
                "image list does not exist; this folder has the sets of "
                + " and ".join(f"--dataset multiview:{name}" for name in others),
            )
    return _scan_items(root, list_file, (root / "images",), ("*.pp", "*.txt", "*.npy"))


def find_prediction(predictions: Path, item: NowItem) -> tuple[Path | None, Path | None]:
    """The predicted mesh and landmark files of ``item`` (None where missing)."""
    folder = predictions / item.subject / item.challenge
    mesh = next(
        (
            folder / f"{item.image}{s}"
            for s in MESH_SUFFIXES
            if (folder / f"{item.image}{s}").is_file()
        ),
        None,
    )
    lms = next(
        (
            folder / f"{item.image}{s}"
            for s in LANDMARK_SUFFIXES
            if (folder / f"{item.image}{s}").is_file()
        ),
        None,
    )
    return mesh, lms


def read_landmarks7(path: str | Path) -> np.ndarray:
    """7 NoW landmarks from a ``.pp``, ``.npy`` ((7,3) or (1,7,3)) or ``.txt`` (7 rows) file.

    Files with 51 or 68 rows (iBUG conventions) are reduced to the 7 NoW points. Values of
    ``.pp`` and ``.txt`` files are rounded to float32, as the official tool reads them (``.npy``
    arrays are used as stored).

    Returns
    -------
    (7, 3) float64
    """
    path = Path(path)
    from facehd.landmarks import load_landmarks, to_now7

    arr = to_now7(load_landmarks(path), path)
    if path.suffix.lower() == ".npy":
        return arr
    return arr.astype(np.float32).astype(np.float64)


#: Lines (0-based) of a NoW ``.pp`` file that the official tool reads the 7 points from.
NOW_PP_LINES = range(8, 15)


def read_now_pp(path: str | Path) -> np.ndarray:
    """A NoW scan's 7 landmarks, read as the official tool's ``load_pp`` reads them.

    The official evaluation does not parse the XML: it takes lines 9-15 of the file (0-based
    8-14, after MeshLab's 8 header lines) by position, whatever the points' ``name`` (and
    ``active``) attributes say and however many points follow, and on each line the words
    ``x="..."``, ``y="..."`` and ``z="..."`` (split on single spaces), rounded to float32. A file
    whose lines 9-15 are not 7 such points (another header length: the official tool then reads
    a header or closing line and fails, or keeps the previous line's value) is an error here.

    Returns
    -------
    (7, 3) float64 holding float32 values.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "landmark file does not exist")
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise InputFileError(path, f"cannot read file: {exc.strerror or exc}") from exc
    out = np.zeros((7, 3), dtype=np.float32)
    for row, j in enumerate(NOW_PP_LINES):
        if j >= len(lines):
            raise InputFileError(
                path,
                f"has {len(lines)} lines; the official NoW tool reads the 7 points from lines "
                f"{NOW_PP_LINES[0] + 1}-{NOW_PP_LINES[-1] + 1}",
            )
        found: dict[str, float] = {}
        for word in lines[j].split(" "):
            parts = word.split("=")
            if parts[0] in ("x", "y", "z"):
                key = parts[0]
                try:
                    found[key] = float(parts[1].split('"')[1])
                except (IndexError, ValueError):
                    raise InputFileError(
                        path, f"line {j + 1}: cannot read {key} from {word.strip()!r}"
                    ) from None
        if len(found) != 3:
            raise InputFileError(
                path,
                f"line {j + 1} is no point with x, y and z ({lines[j].strip()[:60]!r}); the "
                f"official NoW tool reads the 7 points by position from lines "
                f"{NOW_PP_LINES[0] + 1}-{NOW_PP_LINES[-1] + 1} (MeshLab's 8 header lines "
                "first)",
            )
        out[row] = (found["x"], found["y"], found["z"])
    if not np.isfinite(out).all():
        raise InputFileError(path, "landmarks contain NaN or inf")
    return out.astype(np.float64)


def read_scan_landmarks7(path: str | Path, pp_by_position: bool = False) -> np.ndarray:
    """A ground-truth scan's 7 landmarks: :func:`read_now_pp` for a ``.pp`` file when
    ``pp_by_position`` (NoW), else :func:`read_landmarks7`."""
    if pp_by_position and Path(path).suffix.lower() == ".pp":
        return read_now_pp(path)
    return read_landmarks7(path)


# ------------------------------------------------------------------------------------------
# REALY

REALY_KEYPOINT_DIR = "REALY_HIFI3D_keypoints"
REALY_REGION_DIR = "REALY_scan_region"
# the official tool takes the subject as int(name.split("_")[0]): "12_x" and "12" alike
_REALY_NAME = re.compile(r"^(\d+)(?:_.*)?$")


def realy_name(stem: str) -> bool:
    """Whether ``stem`` is a REALY image name, ``<subject>_<anything>`` or ``<subject>``."""
    return _REALY_NAME.match(stem) is not None


@dataclass(frozen=True)
class RealyItem:
    """One REALY prediction (one image)."""

    name: str
    """The prediction's file stem (the image name)."""
    subject_id: int
    """Subject number (the integer before the first ``_``)."""
    prediction: Path | None
    """The predicted mesh, None when missing."""


def read_realy_items(
    predictions: str | Path,
    expected: list[str] | None = None,
    subjects: list[int] | None = None,
) -> list[RealyItem]:
    """REALY predictions of a flat folder, sorted as the official tool sorts them.

    Parameters
    ----------
    predictions : folder of ``<subject>_<anything>.obj`` (or ``<subject>.obj``) files; ``.ply``
        files are read too (an ``.obj`` of the same name comes first; other files are ignored).
    expected : image stems that should have a prediction (those without one are returned with
        ``prediction=None``); default: the predictions present.
    subjects : subjects that should each have at least one prediction (the ground truth's, when
        the image names are not known): a subject without any is returned as one item named by
        its number with ``prediction=None``, so that a run missing a subject is not complete.
    """
    predictions = Path(predictions)
    if not predictions.is_dir():
        raise InputFileError(predictions, "predictions folder does not exist")
    found: dict[str, Path] = {}
    for suffix in reversed(MESH_SUFFIXES):  # .obj last: it wins over a .ply of the same name
        for p in predictions.glob(f"*{suffix}"):
            if _REALY_NAME.match(p.stem):
                found[p.stem] = p
    names = sorted(set(found) | set(expected or []), key=realy_sort_key)
    if expected is not None:
        names = [n for n in names if n in set(expected)]
    items = []
    for n in names:
        m = _REALY_NAME.match(n)
        if not m:
            raise ValueError(f"REALY image name {n!r} does not start with '<subject>_'")
        items.append(RealyItem(n, int(m.group(1)), found.get(n)))
    if subjects is not None:
        covered = {it.subject_id for it in items}
        items += [RealyItem(str(s), s, None) for s in subjects if s not in covered]
        items.sort(key=lambda it: realy_sort_key(it.name))
    return items


def realy_subjects(root: str | Path) -> list[int]:
    """The subjects with ground truth under a REALY data folder (``REALY_HIFI3D_keypoints/
    <subject>.obj``), in order."""
    folder = Path(root) / REALY_KEYPOINT_DIR
    if not folder.is_dir():
        raise InputFileError(
            folder, "not a REALY data folder: no REALY_HIFI3D_keypoints/ (pass --root)"
        )
    return sorted(int(p.stem) for p in folder.glob("*.obj") if p.stem.isdigit())


def realy_data_dir(root: str | Path) -> Path:
    """The folder holding ``REALY_HIFI3D_keypoints`` (``root``, or ``root/data`` as in a clone
    of the official repository); ``root`` when neither does."""
    root = Path(root)
    for cand in (root, root / "data"):
        if (cand / REALY_KEYPOINT_DIR).is_dir():
            return cand
    return root


def realy_sort_key(name: str) -> tuple:
    """How the official REALY tool orders image names: by their digits (``_`` left out), names
    of other forms after."""
    digits = name.replace("_", "")
    return (0, int(digits), name) if digits.isdigit() else (1, 0, name)


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The ``v`` lines of an OBJ (e.g. REALY's keypoint files, which have no faces).

    Values are rounded to float32, as the official REALY reader stores them.

    Returns
    -------
    (V, 3) float64
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file does not exist")
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("v "):
                    rows.append([float(t) for t in line.split()[1:4]])
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read OBJ vertices: {exc}") from exc
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    if len(arr) == 0:
        raise InputFileError(path, "no vertices")
    if not np.isfinite(arr).all():
        raise InputFileError(path, "vertices contain NaN or inf")
    return arr.astype(np.float32).astype(np.float64)


def read_metrical_scales(path: str | Path) -> np.ndarray:
    """``metrical_scale.txt``: one factor per line (line k = subject k)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "metrical scale file does not exist")
    try:
        arr = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise InputFileError(path, f"not one number per line: {exc}") from exc
    if arr.ndim != 1 or not np.isfinite(arr).all() or (arr <= 0).any():
        raise InputFileError(path, "expected one positive finite number per line")
    return arr


def realy_subject_paths(root: str | Path, subject_id: int) -> tuple[Path, dict[str, Path]]:
    """The keypoint OBJ and the four region OBJs of a subject."""
    root = Path(root)
    kp = root / REALY_KEYPOINT_DIR / f"{subject_id}.obj"
    regions = {
        r: root / REALY_REGION_DIR / str(subject_id) / f"{r}.obj"
        for r in ("nose", "mouth", "forehead", "cheek")
    }
    return kp, regions


def find_topology(
    topology: str | Path | None, root: Path | None, predictions: Path | None
) -> tuple[Path, Path]:
    """Resolve a REALY topology to its (keypoint ``.txt``, template ``.obj``) files.

    ``topology`` may be a path to the ``.txt`` file, or a template name looked up in ``root``
    (``HIFI3D``, ``BFM09``, ``Deep3D``, ``3DDFA_v2``, ``FLAME`` in the official data folder).
    Without it, the predictions folder must hold exactly one keypoint ``.txt`` with its ``.obj``.
    """
    if topology is not None:
        p = Path(topology)
        cands = [p, p.with_suffix(".txt")]
        if root is not None:
            cands += [root / f"{topology}.txt", root / "data" / f"{topology}.txt"]
        for c in cands:
            if c.suffix == ".txt" and c.is_file():
                return c, c.with_suffix(".obj")
        raise InputFileError(
            p, "REALY topology keypoint file not found (give a path or a template name)"
        )
    if predictions is not None:
        txts = sorted(t for t in predictions.glob("*.txt") if t.with_suffix(".obj").is_file())
        if len(txts) == 1:
            return txts[0], txts[0].with_suffix(".obj")
    raise InputFileError(
        predictions or Path("."),
        "no REALY topology: pass one, or put one keypoint file <name>.txt with its template "
        "<name>.obj in the predictions folder",
    )


# ------------------------------------------------------------------------------------------
# FaceScape


@dataclass(frozen=True)
class FaceScapeItem:
    """One FaceScape benchmark image."""

    split: str
    """``wild`` or ``lab``."""
    name: str
    """``NNN`` (wild) or ``SS_F_VV`` (lab)."""
    index: int
    """Image index (wild) or subject index (lab)."""
    focal_index: int
    """Lab: focal-length index 0/1/2 (1200/600/300 px); wild: -1."""
    view: int
    """Lab: view index 0..10; wild: -1."""
    gt_mesh: Path
    """The ground-truth mesh."""
    camera: Path | None
    """Lab: the camera JSON; wild: None."""

    @property
    def ground_truth_missing(self) -> Path | None:
        """The ground-truth file (mesh, lab camera) that is not on the disk, or None."""
        for path in (self.gt_mesh, self.camera):
            if path is not None and not path.is_file():
                return path
        return None


@dataclass(frozen=True)
class FaceScapePredef:
    """The official predefined per-image arrays (``code/predef``)."""

    wild_pupil_scales: np.ndarray | None
    """(400,) wild: mesh units -> mm."""
    wild_head_centers: np.ndarray | None
    """(400, 3) wild head centres (mesh units)."""
    wild_rotations: np.ndarray | None
    """(400, 3, 3) wild head rotations."""
    lab_head_centers: np.ndarray | None
    """(3, 3) lab head centres per focal-length index (mm, camera frame)."""
    lab_rotations: np.ndarray | None
    """(11, 3, 3) lab head rotations per view index."""


def facescape_data_dir(root: str | Path) -> Path:
    """The folder holding ``wild_gt_mesh``/``lab_gt_mesh`` (``root/data`` or ``root``)."""
    root = Path(root)
    for cand in (root / "data", root):
        if (cand / "wild_gt_mesh").is_dir() or (cand / "lab_gt_mesh").is_dir():
            return cand
    raise InputFileError(
        root, "no data/wild_gt_mesh or data/lab_gt_mesh folder: not a FaceScape benchmark root"
    )


def predef_dir(root: Path) -> Path:
    """The folder of FaceScape's predefined arrays (``code/predef`` or ``predef``)."""
    for cand in (root / "code" / "predef", root / "predef", root.parent / "code" / "predef"):
        if cand.is_dir():
            return cand
    raise InputFileError(
        root, "no code/predef folder with the predefined pupil scales, centres and rotations"
    )


def _load_npy(path: Path, shape_tail: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot read as .npy: {exc}") from exc
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape[1:] != shape_tail or not np.isfinite(arr).all():
        raise InputFileError(
            path, f"expected shape (N, {', '.join(map(str, shape_tail))}) finite, got {arr.shape}"
        )
    return arr


def read_facescape_predef(root: str | Path) -> FaceScapePredef:
    """Read the predefined arrays (those absent are None)."""
    d = predef_dir(Path(root))
    return FaceScapePredef(
        _load_npy(d / "wild_pupil_scales.npy", ()),
        _load_npy(d / "wild_head_centers.npy", (3,)),
        _load_npy(d / "wild_rotations.npy", (3, 3)),
        _load_npy(d / "lab_head_centers.npy", (3,)),
        _load_npy(d / "lab_rotations.npy", (3, 3)),
    )


_LAB_NAME = re.compile(r"^(\d{2})_(\d)_(\d{2})$")


#: Image files a FaceScape photo may come as.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_facescape_images(root: str | Path, split: str) -> dict[str, Path]:
    """The photos of a FaceScape split by item name: every ``<name>.jpg|.jpeg|.png`` under the
    data folder. When a name occurs more than once, the file whose folder path names the split
    (``wild`` or ``lab``) wins, then the first in sorted order."""
    data = facescape_data_dir(root)
    found: dict[str, list[Path]] = {}
    for p in sorted(data.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."):
            found.setdefault(p.stem, []).append(p)

    def pick(paths: list[Path]) -> Path:
        named = [p for p in paths if split in str(p.relative_to(data).parent).lower()]
        return (named or paths)[0]

    return {name: pick(paths) for name, paths in found.items()}


#: The protocol's image sets (``protocols/facescape.md``): 400 wild images ``000``-``399``; per
#: lab subject 3 focal lengths x 11 views.
FACESCAPE_WILD_IMAGES = 400
FACESCAPE_LAB_FOCALS = 3
FACESCAPE_LAB_VIEWS = 11


def read_facescape_items(
    root: str | Path, split: str, *, complete: bool = False
) -> list[FaceScapeItem]:
    """The images of a FaceScape split, in the official order.

    Wild: one item per ``wild_gt_mesh/NNN.obj``. Lab: one item per ``lab_cam/SS_F_VV.json`` whose
    subject mesh exists. With ``complete`` (the official data), the protocol's whole set instead:
    the 400 wild images, and for every lab subject found (a camera or a mesh of it) its 3 x 11
    images, so that a ground-truth file missing from the disk is an item that cannot be scored
    (:attr:`FaceScapeItem.ground_truth_missing`), not a smaller benchmark that looks complete.
    """
    data = facescape_data_dir(root)
    items = []
    if split == "wild":
        folder = data / "wild_gt_mesh"
        if not folder.is_dir():
            raise InputFileError(folder, "wild ground-truth folder does not exist")
        found = {int(p.stem): p for p in sorted(folder.glob("*.obj")) if p.stem.isdigit()}
        if complete:
            for i in range(FACESCAPE_WILD_IMAGES):
                found.setdefault(i, folder / f"{i:03d}.obj")
        for i in sorted(found):
            items.append(FaceScapeItem("wild", found[i].stem, i, -1, -1, found[i], None))
    elif split == "lab":
        cams = data / "lab_cam"
        if not cams.is_dir():
            raise InputFileError(cams, "lab camera folder does not exist")
        keys: set[tuple[int, ...]] = set()
        for c in cams.glob("*.json"):
            m = _LAB_NAME.match(c.stem)
            if m:
                keys.add(tuple(int(g) for g in m.groups()))
        if complete:
            subjects = {k[0] for k in keys} | {
                int(p.stem) for p in (data / "lab_gt_mesh").glob("*.obj") if p.stem.isdigit()
            }
            keys |= {
                (s, f, v)
                for s in subjects
                for f in range(FACESCAPE_LAB_FOCALS)
                for v in range(FACESCAPE_LAB_VIEWS)
            }
        for s, f, v in sorted(keys):
            name = f"{s:02d}_{f}_{v:02d}"
            gt = data / "lab_gt_mesh" / f"{s:02d}.obj"
            items.append(FaceScapeItem("lab", name, s, f, v, gt, cams / f"{name}.json"))
    else:
        raise ValueError(f"FaceScape split must be 'wild' or 'lab', got {split!r}")
    if not items:
        raise InputFileError(data, f"no {split} images found")
    return items


def read_lab_camera(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A lab camera file: ``[K (3x3), Rt (3x4)]`` (translation in pupil-distance units)."""
    path = Path(path)
    try:
        raw = json.loads(Path(path).read_text())
        k = np.asarray(raw[0], dtype=np.float64)
        rt = np.asarray(raw[1], dtype=np.float64)
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise InputFileError(path, f"not a camera file [K, Rt]: {exc}") from exc
    if k.shape != (3, 3) or rt.shape != (3, 4):
        raise InputFileError(path, f"expected K (3, 3) and Rt (3, 4), got {k.shape} and {rt.shape}")
    if not (np.isfinite(k).all() and np.isfinite(rt).all()):
        raise InputFileError(path, "K or Rt holds NaN or infinite values")
    if not (k[0, 0] > 0 and k[1, 1] > 0 and np.allclose(k[2], (0.0, 0.0, 1.0), atol=1e-6)):
        raise InputFileError(
            path, "K is no pinhole camera matrix (positive focal lengths, last row 0 0 1)"
        )
    r = rt[:, :3]
    err = float(np.abs(r @ r.T - np.eye(3)).max())
    mirrored = np.linalg.det(r) < 0
    if err > 1e-2 or mirrored:
        raise InputFileError(
            path,
            f"Rt's 3x3 part is no rotation (R R^T differs from the identity by {err:.3g}"
            + (", det < 0" if mirrored else "")
            + ")",
        )
    return k, rt


def layout_problem(dataset: str, root: str | Path) -> str | None:
    """Why ``root``, a folder registered for ``dataset`` in ``datasets.yaml``, is not laid out
    as ``facehd bench`` reads that benchmark (the folders its ground truth lies in), or None when
    it is, or when facehd reads no benchmark of that name. ``esrc`` is read in the multi-view
    layout (``bench --dataset multiview:esrc``)."""
    root = Path(root)

    def missing(*names: str) -> str | None:
        gone = [n for n in names if not (root / n).is_dir()]
        return f"no {', '.join(g + '/' for g in gone)} folder" if gone else None

    if dataset in ("now", "esrc"):  # ESRC's sets are read in the NoW layout
        why = missing("scans", "scans_lmks_onlypp")
        layout = "the NoW layout" if dataset == "now" else "the multi-view layout bench reads"
        return None if why is None else f"{why}: not {layout}"
    if dataset == "realy":
        data = realy_data_dir(root)
        if not (data / REALY_KEYPOINT_DIR).is_dir() or not (data / REALY_REGION_DIR).is_dir():
            return (
                f"no {REALY_KEYPOINT_DIR}/ and {REALY_REGION_DIR}/ here or under data/: not the "
                "REALY benchmark data"
            )
        return None
    if dataset == "facescape":
        try:
            facescape_data_dir(root)
            predef_dir(root)
        except InputFileError as exc:
            return exc.problem
        return None
    return None

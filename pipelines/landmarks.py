"""``facehd landmarks``: automatic 3D landmarks for a folder of raw scans.

Per scan (:func:`landmark_scan`): read the mesh (with the colour texture its OBJ names, if any:
:func:`facehd.mesh.load_textured_mesh`), find its landmarks with
:class:`facehd.scan_landmarks.ScanLandmarker` (any orientation; units from the scan's size or
given), check them against a morphable model fitted to the scan (``model_check``,
:mod:`pipelines.model_landmarks`: where the model describes the face, its landmark vertices are
written instead), and write

- ``<id>.lm68.txt``: the 68 iBUG points, one ``x y z`` line each, in the scan's frame and units,
  under a :data:`HEADER` comment line with the SHA-256 of the scan file and of the points;
- ``<id>.lm7.txt``: NoW's 7 points (:data:`facehd.landmarks.NOW7_FROM_68`), same format — the
  file ``facehd build-priors`` looks for beside a scan;
- ``<id>_picked_points.pp`` (with ``meshlab``): the 68 points as MeshLab's picked-points file,
  to check and correct by hand in its PickPoints tool (never replacing one saved there);
- ``<id>.png`` under the overlays folder (when asked): the face-centred render with the landmarks
  drawn, NoW's 7 circled in red, the confidence in the corner; a PNG text field
  (:data:`OVERLAY_KEY`) records the SHA-256 of the scan and of the pixels, so that the tool knows
  its own overlays from files drawn or edited since.

Files go beside each scan, or under ``out`` (keeping the scans' sub-folders); two scans of the
same stem side by side (``head.obj``, ``head.ply``) are told apart by their whole names
(``head.obj.lm7.txt``), which ``facehd build-priors`` reads first. Every scan gets a
row in ``landmarks.csv`` (under ``out``, else in the scans folder): its confidence and spreads, or
why it failed — no face (a sphere, a box), unsure (the views disagree), hollow, wrong units, an
unreadable or empty file, a file name that is not UTF-8, an output file that cannot be written
(the others go on). A failed scan gets no landmark files, never guessed ones: those this tool
wrote for it before (found on an earlier version of the file) are removed (put aside as
``<name>.stale`` when an earlier version of the tool wrote them), and so is its overlay in the
overlays folder of this run (one without the text field, of an earlier version, put aside; one
whose pixels changed since it was drawn, kept), so that no earlier result stands for it; its
row says so. The
rows of scans of other folders sent to the same ``out`` are kept (merged by scan file); a scan
whose files there would take the names of another folder's scan fails (``clash``).

Scans (:func:`find_scans`): every mesh file under the folder (:func:`facehd.mesh.is_scan_file`)
except files the tools write beside scans (``*.gt_*.ply`` of ``facehd synth``,
``*.m0|m1|m2.ply`` exports), files put aside by an appended suffix and build-priors'
``*.shards`` work folders (:func:`facehd.mesh.find_scan_files`). The id is the path
relative to the folder without the suffix (with it, when two scans share a stem). A scan whose
``.lm68.txt`` is already at the destination is skipped (an interrupted run resumes; ``overwrite``
redoes it) unless the scan file changed since (the SHA-256 in the file's header, or for files
without one, in ``landmarks.csv``, differs: its landmarks are found again).

A scan with landmarks someone gave is skipped (``given``, naming the file), whatever
``overwrite`` says: any file ``facehd build-priors`` reads beside it that this tool did not
write (``.npy``, ``.txt``, ``.pp``, ``_lmks.*``, ... or a ``.lm7.txt`` alone), or one it wrote
that was edited since (points changed, a ``_picked_points.pp`` saved in MeshLab). Those files are
never replaced, and ``facehd build-priors`` reads them before detected ones
(:func:`written_by_landmarks`); move one aside to have the scan's landmarks found. One that
cannot be read (another count, NaN) fails the scan (``given``, naming the file and its problem).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from facehd.errors import InputFileError, check_output_folder, printable, utf8_problem
from facehd.landmarks import (
    PICKED_POINTS_SUFFIX,
    load_landmarks,
    save_landmarks_pp,
    to_now7,
)
from facehd.mesh import STRETCH_FACTOR, find_scan_files
from facehd.scan_landmarks import ScanLandmarkConfig
from pipelines.model_landmarks import ModelCheckConfig

__all__ = [
    "CSV_NAME",
    "LandmarkRow",
    "LandmarksConfig",
    "LandmarksResult",
    "detect_landmarks7",
    "detected_scan_sha256",
    "find_scans",
    "landmark_scan",
    "landmark_scans",
    "read_rows",
    "written_by_landmarks",
]

_DEFAULT_CHECK = ModelCheckConfig()

CSV_NAME = "landmarks.csv"
"""Name of the per-scan table written under the output (or scans) folder."""


@dataclass
class LandmarksConfig:
    """Configuration of ``facehd landmarks``."""

    out: str | None = None
    """Folder for the landmark files and the CSV (None: beside each scan / in the scans folder)."""
    overlays: str | None = None
    """Folder for one ``<id>.png`` overlay per scan (None: no overlays)."""
    overwrite: bool = False
    """Redo scans that already have landmark files at the destination."""
    workers: int = 1
    """Processes working in parallel (each holds its own mediapipe graphs)."""
    meshlab: bool = False
    """Also write ``<id>_picked_points.pp``, MeshLab's picked-points file with the 68 points (to
    check and move by hand in its PickPoints tool, which opens the file with the scan when it lies
    beside it). A ``.pp`` file someone saved again in MeshLab is never replaced; ``facehd
    build-priors`` takes it before the ``.lm7.txt``."""
    detector: ScanLandmarkConfig = field(default_factory=ScanLandmarkConfig)
    """Parameters of the landmark finder (units, views, thresholds)."""
    model_check: ModelCheckConfig | None = field(default_factory=ModelCheckConfig)
    """The morphable model check (:mod:`pipelines.model_landmarks`): where the model fitted to
    the scan describes it, its landmark vertices replace the detected points (None: off)."""


@dataclass
class LandmarkRow:
    """One scan's line in ``landmarks.csv``."""

    scan_id: str
    """Path of the scan relative to the scans folder, without suffix."""
    mesh: str
    """The scan file."""
    status: str
    """``ok``, ``failed`` or ``skipped``."""
    reason: str = ""
    """Why it failed or was skipped, in a word (``no-face``, ``unsure``, ``hollow``, ``units``,
    ``empty``, ``unreadable``, ``unwritable``, ``name``, ``clash``, ``done``, ``given``; ``error``
    for an unforeseen error or a worker process that died on the scan)."""
    detail: str = ""
    """The explanation."""
    confidence: float | None = None
    """Confidence in [0, 1]."""
    detection_score: float | None = None
    """Best face-detector score of the search."""
    now7_spread_max_mm: float | None = None
    """Largest disagreement between views over NoW's 7 points, mm."""
    spread_median_mm: float | None = None
    """Median disagreement over the 68 points, mm."""
    views: str = ""
    """Face-centred views the face mesh fitted, ``fitted/tried``."""
    units: str = ""
    """Units of the scan."""
    appearance: str = ""
    """What the renders showed: ``texture``, ``vertex colours`` or ``shaded`` (geometry only)."""
    smoothing_mm: float | None = None
    """Radius over which the renders' normals were smoothed to find the face, mm: 0 for the
    scan's own normals, more for a noisy scan retried (``retry_smoothing_mm``)."""
    source: str = ""
    """Where the points written come from: ``detected`` (the renders' face mesh) or
    ``model (NAME)`` (the landmark vertices of the morphable model fitted to the scan)."""
    model_residual_mm: float | None = None
    """Median distance from the scan's face to the morphable model fitted to it, mm (the model
    check's measure; empty when no check ran or the fit failed)."""
    model_note: str = ""
    """The model check's verdict in words."""
    lm68: str = ""
    """Path of the ``.lm68.txt`` written."""
    lm7: str = ""
    """Path of the ``.lm7.txt`` written."""
    overlay: str = ""
    """Path of the overlay PNG written."""
    seconds: float | None = None
    """Time spent on the scan."""
    source_sha256: str = ""
    """SHA-256 of the scan file the landmarks were found on: a rerun finds them again when the
    file has changed since."""


@dataclass
class LandmarksResult:
    """Outcome of :func:`landmark_scans`."""

    rows: list[LandmarkRow]
    """One per scan, sorted by id."""
    csv_path: Path
    """The table written."""
    earlier: frozenset[str] = frozenset()
    """Ids of the ``ok`` rows found by an earlier run and kept (not redone)."""

    @property
    def n_earlier(self) -> int:
        return sum(r.status == "ok" and r.scan_id in self.earlier for r in self.rows)

    @property
    def n_ok(self) -> int:
        return sum(r.status == "ok" for r in self.rows)

    @property
    def n_failed(self) -> int:
        return sum(r.status == "failed" for r in self.rows)

    @property
    def n_skipped(self) -> int:
        return sum(r.status == "skipped" for r in self.rows)


def find_scans(root: str | Path) -> list[tuple[str, Path]]:
    """``(scan id, path)`` of every scan under ``root`` (see the module docstring), by id
    (:func:`facehd.mesh.find_scan_files`).

    Raises
    ------
    InputFileError
        ``root`` is not a folder or holds no scan.
    """
    return [(sid, path) for sid, path, _ in find_scan_files(root)]


def _destinations(scan_id: str, mesh: Path, config: LandmarksConfig) -> tuple[Path, Path, Path]:
    """(``.lm68.txt``, ``.lm7.txt``, overlay PNG or an empty path) of one scan; the MeshLab file
    is ``<.lm68.txt without its suffix>_picked_points.pp`` (:func:`_picked_points`)."""
    if config.out is None:
        # the id's name: the file's stem, or its whole name when another scan beside it has the
        # same stem (scan.obj and scan.ply: scan.obj.lm7.txt, scan.ply.lm7.txt)
        base = mesh.parent / PurePosixPath(scan_id).name
    else:
        base = Path(config.out) / scan_id
    overlay = Path(config.overlays) / f"{scan_id}.png" if config.overlays else Path()
    return (
        base.with_name(base.name + ".lm68.txt"),
        base.with_name(base.name + ".lm7.txt"),
        overlay,
    )


def _picked_points(lm68: Path) -> Path:
    """MeshLab's picked-points file beside the ``.lm68.txt`` of a scan."""
    return lm68.with_name(lm68.name[: -len(".lm68.txt")] + PICKED_POINTS_SUFFIX)


HEADER = "# facehd landmarks:"
"""Start of the first line of the ``.lm68.txt`` and ``.lm7.txt`` files this tool writes:
``# facehd landmarks: scan sha256 <hex>, points sha256 <hex>``, the SHA-256 of the scan file
the points were found on and of the point lines below (a file whose points were edited since is
someone's: never replaced or removed). Readers skip ``#`` lines
(:func:`facehd.landmarks.load_landmarks`, ``numpy.loadtxt``)."""

_HEADER_LINE = re.compile(
    rb"# facehd landmarks: scan sha256 ([0-9a-f]{64}|unknown), points sha256 ([0-9a-f]{64})\r?"
)


def _save_points(path: Path, pts: Any, scan_sha256: str) -> Path:
    """Write landmarks as ``x y z`` lines (shortest exact floats) under the :data:`HEADER`
    line, atomically."""
    import hashlib

    from facehd.landmarks import landmarks_text
    from facehd.mesh import atomic_write_bytes

    body = landmarks_text(pts).encode()
    head = (
        f"{HEADER} scan sha256 {scan_sha256 or 'unknown'}, "
        f"points sha256 {hashlib.sha256(body).hexdigest()}\n"
    )
    return atomic_write_bytes(path, head.encode() + body)


def _header(path: Path) -> tuple[str, bool] | None:
    """``(scan SHA-256, points unchanged)`` of a file with the :data:`HEADER` line, None for
    any other file (or one that cannot be read)."""
    import hashlib

    try:
        with open(path, "rb") as fh:
            first = fh.readline(256)
            body = fh.read()
    except OSError:
        return None
    m = _HEADER_LINE.fullmatch(first.rstrip(b"\n"))
    if m is None:
        return None
    return m[1].decode(), hashlib.sha256(body).hexdigest() == m[2].decode()


def _ours(path: Path) -> str:
    """Whether a landmark file is one this tool wrote and nobody edited since: ``yes``;
    ``legacy`` for the ``.lm68.txt`` (and the ``.lm7.txt`` beside one) that versions before
    the :data:`HEADER` line wrote (nothing tells whether they were edited); ``no`` otherwise
    (a file someone made or edited: MeshLab's ``.pp`` saved again, points changed)."""
    from facehd.landmarks import written_by_facehd

    name = path.name
    if name.endswith(PICKED_POINTS_SUFFIX):
        # written with its .lm68.txt by --meshlab, and nobody saved it again in MeshLab
        lm68 = path.with_name(name[: -len(PICKED_POINTS_SUFFIX)] + ".lm68.txt")
        return "yes" if written_by_facehd(path) and lm68.is_file() else "no"
    if not name.endswith((".lm68.txt", ".lm7.txt")) or not path.is_file():
        return "no"
    head = _header(path)
    if head is not None:
        return "yes" if head[1] else "no"
    lm68 = path.with_name(name[: -len(".lm7.txt")] + ".lm68.txt")
    if name.endswith(".lm68.txt") or (lm68.is_file() and _header(lm68) is None):
        return "legacy"
    return "no"


def detected_scan_sha256(path: str | Path) -> str | None:
    """The SHA-256 of the scan a landmark file's points were found on, as its :data:`HEADER`
    records it, for a file this tool wrote and nobody edited; None for any other file (or an
    unknown scan)."""
    path = Path(path)
    if not path.name.endswith((".lm68.txt", ".lm7.txt")):
        return None
    head = _header(path)
    if head is None or not head[1] or head[0] == "unknown":
        return None
    return head[0]


def written_by_landmarks(path: str | Path) -> bool:
    """Whether a landmark file holds points ``facehd landmarks`` found (not made or edited by
    hand): a ``.lm68.txt`` or ``.lm7.txt`` it wrote (:data:`HEADER`, or from an earlier version
    a ``.lm7.txt`` beside its ``.lm68.txt``) or a ``_picked_points.pp`` it wrote beside its
    ``.lm68.txt`` that nobody saved again in MeshLab.
    ``facehd build-priors`` takes any other landmark file of a scan first."""
    return _ours(Path(path)) != "no"


def _put_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.stale`` (``.stale2``, ... when taken); nothing reads it then."""
    k = 1
    while True:
        aside = path.with_name(f"{path.name}.stale{k if k > 1 else ''}")
        if not aside.exists():
            os.replace(path, aside)
            return aside
        k += 1


def _clear_ours(scan_id: str, mesh_path: Path, config: LandmarksConfig) -> str:
    """Remove the landmark files this tool wrote for a scan at its destination (those of an
    earlier version put aside as ``.stale``: they may have been edited), and its overlay in
    ``config.overlays`` likewise (:func:`_overlay_ours`); files someone made or edited stay.
    Returns what was done, for the CSV (empty when nothing)."""
    lm68, lm7, overlay = _destinations(scan_id, mesh_path, config)
    removed, aside, kept = [], [], []
    # judged before any goes: a .lm7.txt of an earlier version is ours by its .lm68.txt
    kinds = [(p, _ours(p)) for p in (lm68, lm7, _picked_points(lm68)) if p.is_file()]
    for path, kind in kinds:
        try:
            if kind == "yes":
                path.unlink()
                removed.append(str(path))
            elif kind == "legacy":
                aside.append(f"{path} as {_put_aside(path).name}")
        except OSError as exc:
            kept.append(f"{path} ({exc.strerror or exc})")
    notes = []
    if removed:
        notes.append(f"landmark files found before removed: {', '.join(removed)}")
    if aside:
        notes.append(f"landmark files of an earlier version put aside: {', '.join(aside)}")
    if kept:
        notes.append(f"could not remove the landmark files found before: {', '.join(kept)}")
    if config.overlays and overlay.is_file():
        notes.append(_clear_overlay(overlay))
    return "; ".join(n for n in notes if n)


OVERLAY_KEY = "facehd landmarks"
"""Key of the PNG text field of the overlays this tool draws: ``scan sha256 <hex>, pixels
sha256 <hex>``, the SHA-256 of the scan file the landmarks were found on and of the image
(:func:`_pixels_sha256`)."""

_OVERLAY_TEXT = re.compile(r"scan sha256 (?:[0-9a-f]{64}|unknown), pixels sha256 ([0-9a-f]{64})")


def _pixels_sha256(image: Any) -> str:
    """SHA-256 of an (H, W, 3) uint8 image: its shape, then its bytes in row order."""
    import hashlib

    import numpy as np

    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    digest = hashlib.sha256("x".join(map(str, pixels.shape)).encode() + b"\n")
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def _overlay_ours(path: Path) -> str:
    """Whether an overlay PNG is one this tool drew and nobody changed since: ``yes`` (its
    :data:`OVERLAY_KEY` field names its pixels); ``legacy`` for a PNG without the field (a
    version before it drew it; nothing tells whether it was edited); ``no`` for a PNG whose
    pixels changed since, or a file that is no readable PNG."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                return "no"
            text = getattr(im, "text", {}).get(OVERLAY_KEY)
            pixels = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError):  # PIL's errors of a damaged or foreign file
        return "no"
    if text is None:
        return "legacy"
    m = _OVERLAY_TEXT.fullmatch(text)
    return "yes" if m is not None and m[1] == _pixels_sha256(pixels) else "no"


def _clear_overlay(path: Path) -> str:
    """Remove the overlay this tool drew at ``path`` (put one of an earlier version aside as
    ``.stale``; keep one changed since). Returns what was done, for the CSV."""
    kind = _overlay_ours(path)
    try:
        if kind == "yes":
            path.unlink()
            return f"overlay drawn before removed: {path}"
        if kind == "legacy":
            return f"overlay of an earlier version put aside: {path} as {_put_aside(path).name}"
    except OSError as exc:
        return f"could not remove the overlay drawn before: {path} ({exc.strerror or exc})"
    return f"{path} is not the overlay this tool drew (changed since, or no PNG): kept"


# one landmarker per process (mediapipe graphs are costly to start)
_LANDMARKER: dict[str, Any] = {}


def _landmarker(config: ScanLandmarkConfig, check: ModelCheckConfig | None = None) -> Any:
    from facehd.scan_landmarks import ScanLandmarker
    from pipelines.model_landmarks import ModelLandmarkCheck

    key = repr((config, check))
    if key not in _LANDMARKER:
        for old in _LANDMARKER.values():
            old.close()
        _LANDMARKER.clear()
        _LANDMARKER[key] = ScanLandmarker(
            config, check=None if check is None else ModelLandmarkCheck(check)
        )
    return _LANDMARKER[key]


def landmark_scan(scan_id: str, mesh_path: str | Path, config: LandmarksConfig) -> LandmarkRow:
    """Find, write and report the landmarks of one scan; failures become a ``failed`` row."""
    import numpy as np

    from facehd.h5io import file_sha256
    from facehd.landmarks import written_by_facehd
    from facehd.mesh import MeshFileWarning, load_textured_mesh
    from facehd.scan_landmarks import ScanLandmarkError

    mesh_path = Path(mesh_path)
    row = LandmarkRow(scan_id=scan_id, mesh=str(mesh_path), status="failed")
    t0 = time.perf_counter()
    result = None
    file_notes: list[str] = []
    try:
        if mesh_path.is_file():
            try:
                row.source_sha256 = file_sha256(mesh_path)
            except OSError as exc:
                raise InputFileError(
                    mesh_path, f"cannot read file: {exc.strerror or exc}"
                ) from None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MeshFileWarning)
            mesh, texture = load_textured_mesh(mesh_path)
        # what the file named but could not be used (a missing texture: rendered shaded)
        file_notes = [str(w.message) for w in caught if issubclass(w.category, MeshFileWarning)]
        row.appearance = _appearance(mesh, texture)
        detector = config.detector
        if not config.overlays:  # no overlay asked for: none rendered
            detector = dataclasses.replace(detector, overlay_size=0)
        landmarker = _landmarker(detector, config.model_check)
        result = landmarker.detect(mesh, name=str(mesh_path), texture=texture)
    except ScanLandmarkError as exc:
        row.reason, row.detail = exc.reason, exc.detail
    except InputFileError as exc:
        empty = any(w in exc.problem for w in ("empty", "no faces", "no vertices", "no usable"))
        row.reason = "empty" if empty else "unreadable"
        row.detail = str(exc)
    else:
        lm68, lm7, overlay = _destinations(scan_id, mesh_path, config)
        pp = _picked_points(lm68)
        notes = []
        target = lm68
        try:  # a file that cannot be written fails this scan, naming it; the others go on
            lm68.parent.mkdir(parents=True, exist_ok=True)
            _save_points(lm68, result.landmarks68, row.source_sha256)
            target = lm7
            _save_points(lm7, result.landmarks7, row.source_sha256)
            if config.meshlab:
                if not pp.exists() or written_by_facehd(pp):
                    target = pp
                    save_landmarks_pp(pp, result.landmarks68, mesh_path.name)
                else:
                    notes.append(f"{pp} was edited by hand: kept")
            if config.overlays and result.overlay is not None:
                target = overlay
                row.overlay = str(_save_png(overlay, result.overlay, row.source_sha256))
        except OSError as exc:
            row.reason = "unwritable"
            row.detail = f"cannot write {target}: {exc.strerror or exc}"
            row.overlay = ""
            result = None
    if result is None:
        if file_notes:
            row.detail = "; ".join([*file_notes, row.detail] if row.detail else file_notes)
        # no landmark files of a failed scan: those an earlier run (or this one, before a file
        # could not be written) wrote for it go, so nothing fits another scan's points
        cleared = _clear_ours(scan_id, mesh_path, config)
        if cleared:
            row.detail = f"{row.detail}; {cleared}" if row.detail else cleared
    else:
        row.status = "ok"
        row.lm68, row.lm7 = str(lm68), str(lm7)
        if result.ignored_faces:
            notes.append(
                f"{result.ignored_faces} faces of stray pieces apart from the scan ignored"
            )
        if result.duplicate_faces:
            notes.append(f"{result.duplicate_faces} faces stored twice left out")
        if result.stretched_faces:
            notes.append(
                f"{result.stretched_faces} stretched faces (edges over "
                f"{STRETCH_FACTOR:g} times the median edge: a spike) left out"
            )
        if result.rewound_faces:
            notes.append(f"{result.rewound_faces} faces wound against their neighbours turned over")
        row.detail = "; ".join(file_notes + notes)
        row.confidence = round(result.confidence, 4)
        row.detection_score = round(result.detection_score, 4)
        row.now7_spread_max_mm = round(float(result.now7_spread_mm.max()), 3)
        row.spread_median_mm = round(float(np.median(result.spread_mm)), 3)
        row.views = f"{result.views_fitted}/{result.views_tried}"
        row.units = result.units
        row.smoothing_mm = result.smoothing_mm
        row.source = result.source
        if result.check is not None:
            residual = result.check.residual_mm
            row.model_residual_mm = None if residual is None else round(residual, 4)
            row.model_note = result.check.detail
    row.seconds = round(time.perf_counter() - t0, 3)
    return row


def _appearance(mesh: Any, texture: Any) -> str:
    """What the renders showed (the renderer's rule: a uniform colour shows the shading alone)."""
    from facehd.scan_landmarks import colours_vary

    if texture is not None:
        return "texture" if colours_vary(texture) else "shaded (uniform texture)"
    if mesh.colors is not None:
        return "vertex colours" if colours_vary(mesh.colors) else "shaded (uniform colours)"
    return "shaded"


def detect_landmarks7(
    mesh: Any,
    mesh_path: str | Path,
    units: str = "auto",
    model_check: ModelCheckConfig | None = _DEFAULT_CHECK,
) -> tuple[Any, float, str]:
    """NoW's 7 landmarks of a scan that came without a landmark file, for jobs such as
    ``facehd build-priors``.

    Parameters
    ----------
    mesh : the scan (:class:`facehd.mesh.Mesh`, its own frame and units).
    mesh_path : its file (named in errors); a colour texture its OBJ names is shown in the renders
        (:func:`facehd.mesh.load_textured_mesh`: the same surface, split along its UV seams).
    units : ``auto``, ``mm``, ``cm`` or ``m``.
    model_check : the morphable model check (:mod:`pipelines.model_landmarks`), by default
        ``facehd landmarks``' own, so that both find the same points (None: the detection alone).

    Returns
    -------
    ((7, 3) float landmarks in the scan's frame and units, confidence in [0, 1], where the points
    come from: ``detected``, or the check's source, e.g. ``model (facehd-synth)``, as the
    ``source`` column of ``facehd landmarks``' CSV).

    Raises
    ------
    InputFileError
        Naming the scan, when the landmarks cannot be found reliably (no face, unsure, wrong
        units) or mediapipe (the ``photo`` extra) is not installed.
    """
    from facehd.mesh import load_textured_mesh, texture_path
    from facehd.scan_landmarks import ScanLandmarkError

    detector = ScanLandmarkConfig(units=units, overlay_size=0)
    texture = None
    if texture_path(mesh_path) is not None:
        textured, texture = load_textured_mesh(mesh_path)
        if texture is not None:
            mesh = textured
    try:
        landmarker = _landmarker(detector, model_check)
        result = landmarker.detect(mesh, name=str(mesh_path), texture=texture)
    except ImportError as exc:
        raise InputFileError(
            mesh_path, f"no landmark file, and automatic landmarks need mediapipe ({exc})"
        ) from exc
    except ScanLandmarkError as exc:
        raise InputFileError(
            mesh_path, f"no landmark file, and automatic landmarks failed: {exc}"
        ) from exc
    return result.landmarks7, float(result.confidence), result.source


def _save_png(path: Path, image: Any, scan_sha256: str = "") -> Path:
    """Write an RGB uint8 overlay as PNG with its :data:`OVERLAY_KEY` field, atomically."""
    import io

    from PIL import Image, PngImagePlugin

    from facehd.mesh import atomic_write_bytes

    info = PngImagePlugin.PngInfo()
    info.add_text(
        OVERLAY_KEY,
        f"scan sha256 {scan_sha256 or 'unknown'}, pixels sha256 {_pixels_sha256(image)}",
    )
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buf.getvalue())


def _task(args: tuple[str, str, LandmarksConfig]) -> LandmarkRow:
    return landmark_scan(*args)


def read_rows(path: str | Path) -> dict[str, LandmarkRow]:
    """Rows of an earlier ``landmarks.csv`` by scan id (empty when the file is missing; of two
    scans of one id from different folders, the last)."""
    return {r.scan_id: r for r in _read_all(path)}


def _read_all(path: str | Path) -> list[LandmarkRow]:
    """Every row of a ``landmarks.csv``, in file order (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    names = {f.name for f in dataclasses.fields(LandmarkRow)}
    # the number columns are the fields typed ``float | None``
    hints = typing.get_type_hints(LandmarkRow)
    numbers = {k for k in names if float in typing.get_args(hints[k])}
    rows: list[LandmarkRow] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for rec in csv.DictReader(fh):
            kw: dict[str, Any] = {}
            for k, v in rec.items():
                if k in numbers:
                    try:
                        kw[k] = float(v) if v else None
                    except ValueError:
                        kw[k] = None
                elif k in names:
                    kw[k] = v or ""
            if kw.get("scan_id") and kw.get("mesh") and kw.get("status"):
                rows.append(LandmarkRow(**kw))
    return rows


def _key(mesh: str | Path) -> str:
    """A scan's file as one spelling, whatever folder a run started from: the CSV's rows are
    merged by it."""
    return os.path.realpath(mesh)


def _write_csv(path: Path, rows: list[LandmarkRow]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    names = [f.name for f in dataclasses.fields(LandmarkRow)]
    # a file name in another encoding (read with surrogate escapes) is written with its bytes
    # as \xNN, as every message says it
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    k: "" if v is None else printable(v) if isinstance(v, str) else v
                    for k, v in dataclasses.asdict(r).items()
                }
            )
    os.replace(tmp, path)
    return path


def landmark_scans(
    scans_dir: str | Path,
    config: LandmarksConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LandmarksResult:
    """Landmarks for every scan under ``scans_dir`` (see the module docstring).

    ``progress(done, total)`` is called before the first scan and after each one. The CSV is
    rewritten after every scan, so an interrupted run leaves an up-to-date table; its rows of
    scans outside ``scans_dir`` (another folder sent to the same ``out``) are kept.
    """
    from facehd.h5io import file_sha256

    config = config or LandmarksConfig()
    scans = find_scans(scans_dir)
    # a folder that cannot be written fails here, before any scan is rendered
    check_output_folder(config.out if config.out is not None else scans_dir, "landmark files")
    if config.overlays:
        check_output_folder(config.overlays, "overlays")
    csv_path = Path(config.out if config.out is not None else scans_dir) / CSV_NAME
    if csv_path.exists() and not csv_path.is_file():
        raise InputFileError(csv_path, "is in the way of the table: not a regular file")
    root = _key(scans_dir)
    current = {_key(path) for _, path in scans}
    ids = {sid for sid, _ in scans}
    previous: dict[str, LandmarkRow] = {}  # this folder's scans' earlier rows
    others: dict[str, LandmarkRow] = {}  # rows of scans elsewhere (kept), by file
    for r in _read_all(csv_path):
        k = _key(r.mesh)
        if k in current:
            previous[k] = r
        elif os.path.isfile(k):
            others[k] = r  # another folder's scan, or one this run no longer finds
        elif not k.startswith(root + os.sep) and r.scan_id not in ids:
            others[k] = r  # another folder's scan, not reachable from here: kept as it was
        # else: a scan of this folder since deleted, or a file moved away whose landmark files
        # are now this folder's scan's of the same id: its row goes
    # a scan elsewhere whose files under ``out`` have the same id: same file names
    holders = {
        r.scan_id: r
        for r in others.values()
        if config.out is not None and (r.status == "ok" or r.reason == "done")
    }
    rows: dict[str, LandmarkRow] = {}  # by file
    todo: list[tuple[str, str, LandmarksConfig]] = []
    earlier: set[str] = set()
    changed: set[str] = set()
    for sid, path in scans:
        k = _key(path)
        old = previous.get(k)
        lm68, lm7, overlay = _destinations(sid, path, config)

        if why := _name_problem(sid):
            rows[k] = LandmarkRow(sid, str(path), "failed", "name", why)
            continue
        given = _given_file(sid, path, config)
        if given is not None:
            try:  # build-priors reads it first: one it cannot read fails this scan there
                to_now7(load_landmarks(given), given)
            except InputFileError as exc:
                rows[k] = LandmarkRow(
                    sid,
                    str(path),
                    "failed",
                    "given",
                    f"has given landmarks that cannot be read: {exc} (build-priors reads them "
                    "before detected points): correct the file, or move it aside to detect",
                )
                continue
            rows[k] = LandmarkRow(
                sid,
                str(path),
                "skipped",
                "given",
                f"has given landmarks: {given} (not found by this tool, or edited since: made by "
                "hand, by facehd synth or another tool; build-priors reads it before detected "
                "points), kept and not detected (move it aside to detect)",
            )
            continue
        holder = holders.get(sid)
        if holder is not None:
            rows[k] = LandmarkRow(
                sid,
                str(path),
                "failed",
                "clash",
                f"{lm68} is the name of the landmarks of {holder.mesh} (another scans folder "
                f"sent to the same --out, {CSV_NAME}): give this folder another --out",
            )
            continue
        if config.overwrite or not lm68.is_file():
            todo.append((sid, str(path), config))
            continue
        try:
            sha = file_sha256(path)
        except OSError:
            todo.append((sid, str(path), config))  # for its row to say why
            continue
        head = _header(lm68)
        if head is not None:
            found_on = head[0]
        elif old is not None and old.status != "failed":
            found_on = old.source_sha256  # files of an earlier version: its row says
        else:  # legacy files beside a failure row: not this file's points
            found_on = "" if old is None else "stale"
        if found_on and found_on != sha:
            changed.add(k)  # the scan was replaced after its landmarks were found
            todo.append((sid, str(path), config))
            continue
        notes = []
        if old is not None and old.status != "failed" and old.source_sha256 == sha:
            row = old
        else:  # the files are there but not the row (a run killed between the two)
            row = LandmarkRow(
                sid, str(path), "skipped", "done", f"{lm68} exists", lm68=str(lm68), lm7=str(lm7)
            )
            if not found_on:
                notes.append(
                    f"{lm68} has no record of the scan it was found on (an earlier version "
                    "wrote it): taken as this scan's from now on (--overwrite finds it again)"
                )
        row = dataclasses.replace(row, source_sha256=sha)
        rows[k] = row
        earlier.add(sid)
        if not lm7.is_file():  # deleted since: NoW's 7 are the 68's
            try:
                _save_points(lm7, to_now7(load_landmarks(lm68), lm68), sha)
                notes.append(f"{lm7.name} written again from {lm68.name}")
            except InputFileError as exc:
                notes.append(f"no {lm7.name}: {exc}")
            except OSError as exc:
                notes.append(f"no {lm7.name}: cannot write {lm7}: {exc.strerror or exc}")
        if config.overlays and not overlay.is_file():
            notes.append("no overlay: found by an earlier run (--overwrite draws it)")
        if config.meshlab and not _picked_points(lm68).exists():
            pp = _picked_points(lm68)
            try:  # from the points found before
                save_landmarks_pp(pp, load_landmarks(lm68), path.name)
            except InputFileError as exc:  # a damaged file: say so, go on with the rest
                notes.append(f"no MeshLab file written: {exc}")
            except OSError as exc:
                notes.append(f"no MeshLab file written: cannot write {pp}: {exc.strerror or exc}")
        if notes:
            rows[k] = dataclasses.replace(rows[k], detail="; ".join(notes))
    total = len(todo)
    if progress is not None:
        progress(0, total)

    def ordered() -> list[LandmarkRow]:
        return sorted(rows.values(), key=lambda r: (r.scan_id, r.mesh))

    def save() -> None:
        merged = {**others, **rows}
        _write_csv(csv_path, sorted(merged.values(), key=lambda r: (r.scan_id, r.mesh)))

    def record(row: LandmarkRow, done: int) -> None:
        if _key(row.mesh) in changed:
            note = "the scan changed since its landmarks were found: found again"
            row.detail = f"{note}; {row.detail}" if row.detail else note
        rows[_key(row.mesh)] = row
        save()
        if progress is not None:
            progress(done, total)

    from facehd.pools import TaskFailed, run_tasks

    finished = 0

    def done(i: int, outcome: LandmarkRow | TaskFailed) -> None:
        nonlocal finished
        finished += 1
        if isinstance(outcome, TaskFailed):  # not one of the failures it says: a bug, a crash
            sid, mesh, _ = todo[i]
            outcome = LandmarkRow(sid, mesh, "failed", "error", outcome.reason)
        record(outcome, finished)

    run_tasks(_task, todo, done, workers=config.workers if total > 1 else 1)
    save()
    return LandmarksResult(ordered(), csv_path, frozenset(earlier))


def _name_problem(scan_id: str) -> str:
    """Why a scan's name cannot be written in the CSV and build-priors' dataset (empty when it
    can): bytes of another encoding, read with surrogate escapes."""
    why = utf8_problem(scan_id)
    return "" if why is None else f"{why} (build-priors refuses it too)"


def _given_file(scan_id: str, mesh_path: Path, config: LandmarksConfig) -> Path | None:
    """The first landmark file of a scan that someone gave (made or edited by hand), among the
    files ``facehd build-priors`` reads beside it and this tool's files at its destination;
    None when there is none."""
    from pipelines.build_priors import landmark_files

    lm68, lm7, _ = _destinations(scan_id, mesh_path, config)
    clash = PurePosixPath(scan_id).name == mesh_path.name
    found = landmark_files(scan_id, mesh_path, clash) + [lm68, lm7, _picked_points(lm68)]
    return next((f for f in found if f.is_file() and _ours(f) == "no"), None)

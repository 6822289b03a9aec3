"""``facehd build-priors``: raw scans → aligned → fitted hierarchical maps → one HDF5 dataset.

The ground-truth detail maps of HRN (paper Sec. 3.3, supplementary Sec. 3.1), made from 3D scans.
Per scan (:func:`process_scan`): read and check the mesh and its landmarks, infer the units, align
to the morphable model and fit M0, the 64×64×3 deformation map and the 256×256 displacement map
(:mod:`pipelines.fitting`), optionally export the three meshes and a preview PNG, and return one
row of the dataset. :func:`build_priors` runs that over a folder, locally (``workers`` processes)
or on Ray, through the resumable sharded writer of :mod:`facehd.h5io`.

Inputs (:func:`discover_scans`)
-------------------------------
Every mesh file (:func:`facehd.mesh.is_scan_file`: ``.obj``, ``.ply``, ``.stl``, ``.off``,
``.wrl``) under the scans folder is a scan, except files the tools themselves write beside scans
(``*.gt_*.ply`` ground truth of ``facehd synth``, ``*.m0|m1|m2.ply`` exports), files put
aside by an appended suffix and anything in a ``*.shards`` work folder
(:func:`facehd.mesh.find_scan_files`, which :mod:`pipelines.landmarks` shares). Its landmarks
are the first file found among
``<stem>_picked_points.pp`` (MeshLab's, from its PickPoints tool or ``facehd landmarks
--meshlab``: points checked or moved by hand come first), ``<stem>.lm7.txt``, ``<stem>.pp``,
``<stem>.npy``, ``<stem>.txt``, ``<stem>_lmks.npy``, ``<stem>_lmks.txt``,
``<stem>_landmarks.npy``, ``<stem>_landmarks.txt`` (7, 51 or 68 iBUG points; for two scans of
the same stem, ``<name>`` before ``<stem>`` in each: ``head.obj.lm7.txt``), then under the
``landmarks_dir`` given to :func:`discover_scans` (``facehd landmarks --out``'s layout). A file
someone gave (made or edited by hand) comes before any that ``facehd landmarks`` found
(:func:`choose_landmark_file`): hand points are never replaced by detected ones. A scan with none
gets NoW's 7 found automatically (:func:`pipelines.landmarks.detect_landmarks7`, the ``photo``
extra, with ``facehd landmarks``' check against the model being fitted,
:mod:`pipelines.model_landmarks`) unless ``auto_landmarks`` is off, and the ``landmarks_source``
field says which were given (the file) and which found (``detected``, or ``detected; model
(facehd-synth)`` where the model check supplied its landmark vertices). The sample id is
the scan's path relative to the folder without its suffix. Subject and expression come from the
layout: ``<subject>_e<NN>`` file names (``facehd synth``), otherwise ``<subject>/.../<name>``
(the first folder is the subject, the file name the expression); empty when neither applies.

Output (schema ``facehd.priors/1``)
-----------------------------------
One row per scan, sorted by sample id (see :data:`FIELDS`); attributes ``units`` ("mm"),
``model``, ``transform`` (the convention ``x_model_mm = scale · rotation @ x_scan +
translation``), ``config`` (the resolved :class:`PriorsConfig` minus run-only options) and the map
sizes. Failed scans go to ``failures.csv`` beside the output.

Resuming
--------
Rerun the same command after an interruption: finished shards are kept, the rest is fitted, and
the merged file is byte-identical to an uninterrupted build's on the same machine (the fit is
deterministic; another machine's BLAS may change the last bits of the floats). A scan whose file
changed since an earlier run fitted it (its SHA-256 differs from the stored ``source_sha256``)
stops the rerun before any work, naming it: its sample would otherwise stay the old file's. So
do changed landmarks (``landmarks_source`` and ``landmarks_sha256``): a landmark file edited, or
another one now read first (points moved and saved in MeshLab as ``<stem>_picked_points.pp``).

Cluster use (Ray)
-----------------
Start Ray on the machines (``ray start --head`` on one, ``ray start --address=HEAD:6379`` on the
others), put the scans on a file system every machine sees at the same path, and run
``facehd build-priors --scans DIR --out priors.h5 --executor ray --ray-address auto`` on the head.
Each scan is one Ray task (1 CPU); the driver writes the shards and merges them into the output,
so an interrupted cluster build resumes exactly like a local one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facehd.errors import (
    DegenerateInputError,
    FacehdError,
    InputFileError,
    check_output_folder,
    printable,
)
from facehd.h5io import (
    FieldSpec,
    SettingsDiffer,
    ShardedDatasetWriter,
    WorkItem,
    changed_inputs,
    check_dataset_output,
    file_sha256,
    name_some,
    open_dataset,
    process_items,
    read_failures,
    verify,
)
from facehd.landmarks import PICKED_POINTS_SUFFIX
from facehd.mesh import (
    Mesh,
    drop_duplicate_faces,
    find_scan_files,
    load_mesh,
    save_mesh,
    weld_vertices,
)
from pipelines.fitting import (
    UNIT_TO_MM,
    FitConfig,
    LandmarkMismatch,
    ScanFit,
    detect_units,
    fit_scan,
)
from pipelines.model_landmarks import ModelCheckConfig

__all__ = [
    "SCHEMA",
    "LANDMARK_SUFFIXES",
    "PriorsConfig",
    "ScanInput",
    "BuildResult",
    "PriorsSummary",
    "choose_landmark_file",
    "discover_scans",
    "landmark_files",
    "fields_for",
    "process_scan",
    "build_priors",
    "inspect_priors",
    "found_by",
    "is_detected",
    "verify_priors",
]

SCHEMA = "facehd.priors/1"
"""Schema name and version of the dataset."""

TRANSFORM_CONVENTION = "x_model_mm = scale * rotation @ x_scan + translation"

DETECTED = "detected"
"""``landmarks_source`` of a scan whose points were found automatically; followed by ``; model
(NAME)`` where the morphable model check supplied them (:func:`read_scan`)."""


def detected_source(found: str) -> str:
    """The ``landmarks_source`` of points found automatically, given where
    :func:`pipelines.landmarks.detect_landmarks7` says they came from (``detected``, or the model
    check's source such as ``model (facehd-synth)``)."""
    return DETECTED if found == DETECTED else f"{DETECTED}; {found}"


def found_by(landmarks_source: str) -> str | None:
    """For a stored ``landmarks_source`` of points found automatically, where they came from
    (the inverse of :func:`detected_source`); None for a landmark file."""
    if landmarks_source == DETECTED:
        return DETECTED
    if landmarks_source.startswith(f"{DETECTED}; "):
        return landmarks_source[len(DETECTED) + 2 :]
    return None


def is_detected(landmarks_source: str) -> bool:
    """Whether a stored ``landmarks_source`` names points found automatically (not a file)."""
    return found_by(landmarks_source) is not None


LANDMARK_SUFFIXES: tuple[str, ...] = (
    PICKED_POINTS_SUFFIX,
    ".lm7.txt",
    ".pp",
    ".npy",
    ".txt",
    "_lmks.npy",
    "_lmks.txt",
    "_landmarks.npy",
    "_landmarks.txt",
)
"""Landmark file names tried next to a scan ``<stem>.<ext>``, in order: ``<stem><suffix>``."""

_SYNTH_ID = re.compile(r"^(?P<subject>.+)_(?P<expression>e\d+)$")

Units = Literal["auto", "mm", "cm", "m"]


@dataclass
class PriorsConfig:
    """Configuration of ``facehd build-priors``."""

    model: str = "facehd-synth"
    """Morphable model: ``facehd-synth`` (built in) or ``bfm``."""
    bfm_path: str | None = None
    """``BFM_model_front.mat`` for ``--model bfm`` (else taken from datasets.yaml)."""
    uv_path: str | None = None
    """The BFM's UV layout file for ``--model bfm``."""
    units: Units = "auto"
    """Units of the scans; ``auto`` infers them from the landmarks' outer-eye-corner distance."""
    auto_landmarks: bool = True
    """Find NoW's 7 landmarks automatically for scans without a landmark file."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Parameters of the per-scan fit."""
    workers: int = 1
    """Processes on this machine (run-only: not stored)."""
    executor: Literal["local", "ray"] = "local"
    """Where the per-scan tasks run (run-only)."""
    ray_address: str | None = None
    """Ray cluster address (``auto`` for the running cluster; None starts a local Ray)."""
    export_meshes: str | None = None
    """Folder for ``<id>.m0.ply``, ``<id>.m1.ply``, ``<id>.m2.ply`` (model space, mm) (run-only)."""
    previews: str | None = None
    """Folder for one ``<id>.png`` per scan: both maps and an error heat-map (run-only)."""
    shard_size: int = 16
    """Samples per shard: the most an interrupted build can lose (run-only)."""
    overwrite: bool = False
    """Start afresh instead of resuming (run-only)."""

    #: Fields that do not change the dataset's content (not stored in its attributes).
    RUN_ONLY = (
        "workers",
        "executor",
        "ray_address",
        "export_meshes",
        "previews",
        "shard_size",
        "overwrite",
    )

    #: Fit settings added after datasets were first written, with the value that fits as the
    #: code before them did: left out of ``config`` while they hold it, so that a dataset
    #: written before they existed resumes with that value (with another it is refused, and
    #: the refusal names the value to resume with).
    FIT_ADDED_WITH = {"m0_fold_angle_deg": 30.0}
    #: ``facehd build-priors`` options of :attr:`FIT_ADDED_WITH`'s settings.
    FIT_ADDED_OPTION = {"m0_fold_angle_deg": "--m0-fold-angle"}

    def stored(self) -> dict[str, Any]:
        """The part of the configuration that determines the dataset (stored as ``config``)."""
        d = dataclasses.asdict(self)
        for k in self.RUN_ONLY:
            d.pop(k)
        d["fit"] = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in d["fit"].items()
            if not (k in self.FIT_ADDED_WITH and v == self.FIT_ADDED_WITH[k])
        }
        return d


@dataclass(frozen=True)
class ScanInput:
    """One scan found by :func:`discover_scans`."""

    sample_id: str
    """Relative path without suffix (``s000_e00``, ``subject/expr``)."""
    mesh_path: str
    """The scan mesh."""
    landmarks_path: str | None
    """Its landmark file, None when none was found."""
    subject: str = ""
    """Subject named by the layout (empty when unknown)."""
    expression: str = ""
    """Expression named by the layout (empty when unknown)."""


def _layout_names(sample_id: str) -> tuple[str, str]:
    parts = sample_id.split("/")
    m = _SYNTH_ID.match(parts[-1])
    if m:
        return m.group("subject"), m.group("expression")
    if len(parts) >= 2:
        return parts[0], parts[-1]
    return "", ""


def landmark_files(
    sample_id: str, mesh_path: str | Path, clash: bool, landmarks_dir: str | Path | None = None
) -> list[Path]:
    """The landmark files of one scan that exist, in the order they are tried: beside the scan
    (:data:`LANDMARK_SUFFIXES`; for a scan sharing its stem with another, ``<name>`` before
    ``<stem>`` in each), then under ``landmarks_dir`` as ``facehd landmarks --out`` writes them
    (``<landmarks_dir>/<sample id><suffix>``)."""
    p = Path(mesh_path)
    stem = p.name[: -len(p.suffix)]
    # a scan sharing its stem with another (head.obj, head.ply) has its own files first
    # (head.obj.lm7.txt, as facehd landmarks writes them), then the shared ones
    names = [p.name, stem] if clash else [stem]
    found = [p.with_name(n + s) for s in LANDMARK_SUFFIXES for n in names]
    if landmarks_dir is not None:
        base = Path(landmarks_dir) / sample_id
        found += [base.with_name(base.name + s) for s in LANDMARK_SUFFIXES]
    return [f for f in found if f.is_file()]


def choose_landmark_file(candidates: Sequence[Path]) -> Path | None:
    """The file a scan's landmarks are read from: the first one someone gave (made or edited by
    hand, :func:`pipelines.landmarks.written_by_landmarks` false), else the first one ``facehd
    landmarks`` found (None when there is none)."""
    from pipelines.landmarks import written_by_landmarks

    given = [c for c in candidates if not written_by_landmarks(c)]
    return (given or list(candidates) or [None])[0]


def found_on_this_scan(candidates: Sequence[Path], scan: Path) -> list[Path]:
    """``candidates`` without the files holding points ``facehd landmarks`` found on another
    version of ``scan`` (the scan SHA-256 in their header differs from the scan file's): a scan
    replaced since its landmarks were detected, whose landmarks are then detected anew (or it
    has none). Files without that record are kept; the scan is read only when one has it."""
    from pipelines.landmarks import detected_scan_sha256

    recorded = {c: detected_scan_sha256(c) for c in candidates}
    if not any(recorded.values()):
        return list(candidates)
    sha = file_sha256(scan)
    return [c for c in candidates if recorded[c] in (None, sha)]


def discover_scans(root: str | Path, landmarks_dir: str | Path | None = None) -> list[ScanInput]:
    """The scans under ``root`` with their landmark files (see the module docstring), by id.

    ``landmarks_dir``: a folder of landmark files laid out as ``facehd landmarks --out`` writes
    them, searched after the files beside each scan (:func:`landmark_files`); a file someone gave
    comes before files ``facehd landmarks`` found, wherever each lies
    (:func:`choose_landmark_file`).

    Raises
    ------
    InputFileError
        When ``root`` is not a folder or holds no scan, or ``landmarks_dir`` is not a folder.
    """
    if landmarks_dir is not None:
        landmarks_dir = os.path.abspath(landmarks_dir)
        if not os.path.isdir(landmarks_dir):
            raise InputFileError(
                landmarks_dir, "landmarks folder does not exist or is not a folder"
            )
    out = []
    # whole paths, the same for every run of a build whatever folder it ran from or spelling
    # it was given (a resumed build would otherwise store some of each)
    for sid, p, clash in find_scan_files(os.path.abspath(root)):
        found = landmark_files(sid, p, clash, landmarks_dir)
        lm = choose_landmark_file(found_on_this_scan(found, p))
        subject, expression = _layout_names(sid)
        out.append(ScanInput(sid, str(p), None if lm is None else str(lm), subject, expression))
    return out


# --------------------------------------------------------------------------------------------
# Dataset fields
# --------------------------------------------------------------------------------------------
def fields_for(n_id: int, n_exp: int, config: FitConfig) -> dict[str, FieldSpec]:
    """Fields of a ``facehd.priors/1`` dataset (per sample; ``sample_id`` is implicit)."""
    s, s2 = config.deformation_size, config.displacement_size
    return {
        "deformation": FieldSpec((s, s, 3), "float32"),
        "deformation_mask": FieldSpec((s, s), "bool"),
        "displacement": FieldSpec((s2, s2), "float32"),
        "displacement_mask": FieldSpec((s2, s2), "bool"),
        "identity": FieldSpec((n_id,), "float32"),
        "expression": FieldSpec((n_exp,), "float32"),
        "scale": FieldSpec((), "float64"),
        "rotation": FieldSpec((3, 3), "float64"),
        "translation": FieldSpec((3,), "float64"),
        "residual": FieldSpec((3,), "float32"),
        "residual_mean": FieldSpec((3,), "float32"),
        "landmark_rms": FieldSpec((), "float32"),
        "face_points": FieldSpec((), "int64"),
        "units": FieldSpec((), "str"),
        "source": FieldSpec((), "str"),
        "source_sha256": FieldSpec((), "str"),
        "subject": FieldSpec((), "str"),
        "expression_name": FieldSpec((), "str"),
        "landmarks_source": FieldSpec((), "str"),
        "landmarks_sha256": FieldSpec((), "str"),
    }


# --------------------------------------------------------------------------------------------
# One scan
# --------------------------------------------------------------------------------------------
def _model(config: PriorsConfig) -> Any:
    from pipelines.model_landmarks import load_fit_model

    return load_fit_model(config.model, config.bfm_path, config.uv_path)


def read_scan(
    scan: ScanInput,
    *,
    auto_landmarks: bool = False,
    units: str = "auto",
    model_check: ModelCheckConfig | None = None,
) -> tuple[Mesh, np.ndarray, str]:
    """Load and check a scan and its 7 landmarks (file units); with ``auto_landmarks`` a scan
    without a landmark file gets them from :func:`pipelines.landmarks.detect_landmarks7`, with
    the morphable model check ``model_check`` (as ``facehd landmarks`` finds them).

    Returns ``(mesh, landmarks, source)``: ``source`` is the landmark file, or for points found
    automatically ``detected`` (the face mesh's detection) or ``detected; model (NAME)`` (the
    model's landmark vertices, which passed the check).

    Raises
    ------
    InputFileError
        Unreadable/empty/NaN mesh, missing or bad landmark file, landmarks far from the scan.
    """
    from facehd.landmarks import load_landmarks, to_now7

    # vertices listed twice (a triangle soup) weld into one surface point; double-sided
    # exports store each face twice
    mesh, _ = drop_duplicate_faces(weld_vertices(load_mesh(scan.mesh_path))[0])
    if scan.landmarks_path is None and auto_landmarks:
        from pipelines.landmarks import detect_landmarks7

        lm, _, found = detect_landmarks7(mesh, scan.mesh_path, units, model_check)
        source = detected_source(found)
    elif scan.landmarks_path is None:
        looked = ", ".join(Path(scan.mesh_path).stem + s for s in LANDMARK_SUFFIXES)
        raise InputFileError(scan.mesh_path, f"no landmark file found (looked for {looked})")
    else:
        lm = to_now7(load_landmarks(scan.landmarks_path), scan.landmarks_path)
        source = scan.landmarks_path
    extent = float(np.linalg.norm(mesh.vertices.max(0) - mesh.vertices.min(0)))
    if extent <= 0:
        raise InputFileError(scan.mesh_path, "all vertices coincide")
    spread = np.linalg.norm(lm - lm.mean(0), axis=1).max()
    if spread < 1e-6 * extent:
        raise InputFileError(
            scan.landmarks_path or scan.mesh_path, "the 7 landmarks coincide (degenerate)"
        )
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    margin = 0.25 * (hi - lo)
    outside = np.any((lm < lo - margin) | (lm > hi + margin), axis=1)
    if outside.any():
        raise InputFileError(
            scan.landmarks_path or scan.mesh_path,
            f"{int(outside.sum())} of the 7 landmarks lie outside the scan's bounding box "
            "(another scan's landmarks, or other units?)",
        )
    if scan.landmarks_path is not None:
        check_landmarks_on_surface(mesh, lm, scan.landmarks_path)
    return mesh, lm, source


#: Largest median distance of a landmark file's 7 points from its scan's surface, as a share of
#: their outer eye corners' distance (about 4.5 mm on a face). Points picked on a scan lie on it
#: (the real scan of this project's examples: 0.1 mm); points of the same scan in another frame,
#: or in other units, lie off it, where the fit would follow them to another part of the head.
LANDMARK_SURFACE_MAX = 0.05


def check_landmarks_on_surface(mesh: Mesh, landmarks7: np.ndarray, path: str | Path) -> None:
    """Refuse 7 landmarks (the scan's units) that do not lie on the scan's surface.

    Raises
    ------
    InputFileError
        Naming ``path``: the landmarks' median distance from the surface is over
        :data:`LANDMARK_SURFACE_MAX` of their outer eye corners' distance.
    """
    from facehd.distances import point_to_surface

    lm = np.asarray(landmarks7, dtype=np.float64)
    span = float(np.linalg.norm(lm[3] - lm[0]))
    if not span > 0:
        return  # degenerate points are refused by the fit, with their own message
    off = float(np.median(point_to_surface(lm, mesh).distances))
    if off > LANDMARK_SURFACE_MAX * span:
        raise InputFileError(
            path,
            f"the 7 landmarks lie {off:.3g} (the scan's units; median) from the scan's surface, "
            f"{off / span:.0%} of their outer eye corners' distance, where points picked on the "
            "scan lie on it: were they picked on the scan in another pose or frame, or are they "
            "in other units? (--auto-landmarks, or facehd landmarks, finds them on the scan)",
        )


def fit_one(
    scan: ScanInput, config: PriorsConfig, *, threads: int = 0
) -> tuple[ScanFit, str, float, Mesh]:
    """Read, check and fit one scan. Returns (fit, units name, mm per unit, where its
    landmarks came from: :func:`read_scan`'s ``source``)."""
    from pipelines.fitting import prepare_model

    check = ModelCheckConfig(model=config.model, bfm_path=config.bfm_path, uv_path=config.uv_path)
    mesh, lm, source = read_scan(
        scan, auto_landmarks=config.auto_landmarks, units=config.units, model_check=check
    )
    if config.units == "auto":
        try:
            units, factor = detect_units(lm)
        except DegenerateInputError as exc:
            raise InputFileError(scan.landmarks_path or scan.mesh_path, str(exc)) from exc
    else:
        if config.units not in UNIT_TO_MM:
            raise ValueError(f"units must be auto, mm, cm or m, got {config.units!r}")
        units, factor = config.units, UNIT_TO_MM[config.units]
    md = prepare_model(_model(config), config.fit)
    scan_mm = Mesh(mesh.vertices * factor, mesh.faces)
    try:
        fit = fit_scan(scan_mm, lm * factor, md, config.fit, unit_to_mm=factor, threads=threads)
    except DegenerateInputError as exc:
        raise InputFileError(scan.landmarks_path or scan.mesh_path, str(exc)) from exc
    except LandmarkMismatch as exc:  # the landmark file's fault: named, as the other checks do
        if scan.landmarks_path is None:
            raise
        raise LandmarkMismatch(f"{printable(scan.landmarks_path)}: {exc}") from exc
    return fit, units, factor, source


def process_scan(item: WorkItem) -> dict[str, Any]:
    """The per-scan task: fit one scan, write its exports, return its dataset row.

    ``item.payload`` is ``(ScanInput, PriorsConfig, threads)``. Picklable, module level (runs in
    worker processes and Ray tasks). NumPy's and SciPy's BLAS run on one thread
    (:func:`facehd.threads.one_blas_thread`), as in a pool's worker or a Ray task: the fit's
    products are small, and on a machine busy with other jobs each waits for descheduled
    threads (a scan took 2-4 s on one thread against 12-19 s on two, on a shared 2-core
    machine; the fit's values are the same to the bit).
    """
    from facehd.threads import one_blas_thread

    scan, config, threads = item.payload
    with one_blas_thread():
        fit, units, _, landmarks_source = fit_one(scan, config, threads=threads)
    if config.export_meshes:
        export_meshes(fit, Path(config.export_meshes), scan.sample_id)
    if config.previews:
        from pipelines.previews import write_preview

        path = Path(config.previews) / f"{scan.sample_id}.png"
        write_preview(path, fit, title=scan.sample_id)
    t = fit.transform
    return {
        "deformation": fit.deformation.astype(np.float32),
        "deformation_mask": fit.deformation_mask,
        "displacement": fit.displacement.astype(np.float32),
        "displacement_mask": fit.displacement_mask,
        "identity": fit.identity.astype(np.float32),
        "expression": fit.expression.astype(np.float32),
        "scale": np.float64(t.scale),
        "rotation": t.rotation,
        "translation": t.translation,
        "residual": fit.residuals.median.astype(np.float32),
        "residual_mean": fit.residuals.mean.astype(np.float32),
        "landmark_rms": np.float32(fit.landmark_rms_mm),
        "face_points": np.int64(fit.residuals.n_points),
        "units": units,
        "source": scan.mesh_path,
        "source_sha256": file_sha256(scan.mesh_path),
        "subject": scan.subject,
        "expression_name": scan.expression,
        "landmarks_source": landmarks_source,
        "landmarks_sha256": file_sha256(scan.landmarks_path) if scan.landmarks_path else "",
    }


def export_meshes(fit: ScanFit, folder: Path, sample_id: str) -> list[Path]:
    """Write ``<id>.m0.ply``, ``<id>.m1.ply``, ``<id>.m2.ply`` (model space, mm, with UVs)."""
    base = folder / sample_id
    base.parent.mkdir(parents=True, exist_ok=True)
    return [
        save_mesh(base.with_name(base.name + f".{name}.ply"), mesh)
        for name, mesh in (("m0", fit.m0), ("m1", fit.m1), ("m2", fit.m2))
    ]


def _worker_init() -> None:
    """A pooled worker runs its ray queries on one thread (set per query) and torch on one."""
    import torch

    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildResult:
    """Outcome of :func:`build_priors`."""

    path: Path
    """The dataset written."""
    n_scans: int
    """Scans found."""
    n_samples: int
    """Samples in the dataset."""
    n_skipped: int
    """Scans already done by an earlier (interrupted) run."""
    n_written: int
    """Scans fitted by this run."""
    n_failed: int
    """Scans recorded in ``failures.csv`` (this output)."""
    failures_path: Path
    """``failures.csv`` (absent when nothing failed)."""


def build_priors(
    scans: str | Path | Sequence[ScanInput],
    out: str | Path,
    config: PriorsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """Fit every scan and write the dataset ``out`` (resuming an interrupted build).

    Parameters
    ----------
    scans : the scans folder, or scans from :func:`discover_scans`.
    out : the ``.h5`` file to write.
    config : :class:`PriorsConfig`.
    progress : called as ``progress(done, total)`` after each scan of this run.
    """
    config = config or PriorsConfig()
    if config.units not in ("auto", *UNIT_TO_MM):
        raise ValueError(f"units must be auto, mm, cm or m, got {config.units!r}")
    if config.executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {config.executor!r}")
    items_in = discover_scans(scans) if isinstance(scans, (str, Path)) else list(scans)
    # outputs that cannot be written fail here, before any scan is fitted
    out = check_dataset_output(out)
    for folder, role in ((config.previews, "previews"), (config.export_meshes, "meshes")):
        if folder:
            check_output_folder(folder, role)
    model = _model(config)
    attrs = {
        "units": "mm",
        "model": model.name,
        "model_fingerprint": model.fingerprint,
        "transform": TRANSFORM_CONVENTION,
        "deformation_size": config.fit.deformation_size,
        "displacement_size": config.fit.displacement_size,
        "residual_levels": ["M0", "M1", "M2"],
        "config": config.stored(),
    }
    fields = fields_for(model.n_id, model.n_exp, config.fit)
    threads = 1 if (config.workers > 1 or config.executor == "ray") else 0
    items = [WorkItem(s.sample_id, s.mesh_path, (s, config, threads)) for s in items_in]
    with contextlib.ExitStack() as stack:
        if config.executor == "ray":
            from pipelines.executor import ray_session, run_ray

            # joined before anything is written: a cluster that cannot be reached is said at once
            stack.enter_context(ray_session(config.ray_address))
        try:
            writer = ShardedDatasetWriter(
                out, SCHEMA, attrs, fields, shard_size=config.shard_size, overwrite=config.overwrite
            )
        except SettingsDiffer as exc:
            refusal = _added_setting_refusal(exc, config)
            if refusal is None:
                raise
            raise refusal from exc
        with writer:
            _check_unchanged(writer, items_in)
            if config.executor == "ray":
                summary = run_ray(writer, items, process_scan, config.ray_address, progress)
            else:
                summary = process_items(
                    writer,
                    items,
                    process_scan,
                    workers=config.workers,
                    progress=progress,
                    initializer=_worker_init if config.workers > 1 else None,
                )
            result = writer.finalize()
    return BuildResult(
        path=result.path,
        n_scans=len(items),
        n_samples=result.n_samples,
        n_skipped=summary.n_skipped,
        n_written=summary.n_written,
        n_failed=result.n_failed,
        failures_path=result.failures_path,
    )


def _added_setting_refusal(exc: SettingsDiffer, config: PriorsConfig) -> InputFileError | None:
    """The dataset writer's refusal ``exc`` said again with the value to resume with, where the
    setting that differs is one of :attr:`PriorsConfig.FIT_ADDED_WITH` the dataset does not
    record (built before it existed, or at the value it fitted with then); else None."""
    for name, before in PriorsConfig.FIT_ADDED_WITH.items():
        if exc.setting == f"config.fit.{name}" and exc.absent_there:
            option = PriorsConfig.FIT_ADDED_OPTION[name]
            now = getattr(config.fit, name)
            return InputFileError(
                exc.path,
                f"holds fits with {name}={before:g} (not recorded at that value, which "
                f"datasets built before the setting existed were fitted with) and this run has "
                f"{now:g}: resume it with {name}={before:g} (facehd build-priors {option} "
                f"{before:g}), or start afresh with --overwrite",
            )
    return None


def _check_unchanged(writer: ShardedDatasetWriter, scans: Sequence[ScanInput]) -> None:
    """Refuse to resume over scans whose file, or whose landmarks, changed since an earlier run
    fitted them (their samples would stay those of the old inputs, under records that no longer
    match them): a scan replaced, a landmark file edited (points moved in MeshLab), or another
    landmark file now taken first (a ``_picked_points.pp`` saved beside a scan fitted from its
    ``.lm7.txt``, a file given for a scan whose points were detected)."""
    if not writer.done_ids:
        return
    items = [WorkItem(s.sample_id, s.mesh_path) for s in scans]
    replaced = {it.sample_id for it in changed_inputs(writer, items)}
    changed = [f"{s.sample_id} ({s.mesh_path})" for s in scans if s.sample_id in replaced]
    sources = writer.done_values("landmarks_source")
    hashes = writer.done_values("landmarks_sha256")
    moved = []
    for s in scans:
        if s.sample_id not in sources or s.sample_id in replaced:
            continue
        was = sources[s.sample_id]
        if s.landmarks_path is None:
            if not is_detected(was):  # the file it was fitted from is gone: detected now
                moved.append(f"{s.sample_id} ({was} gone)")
        elif Path(s.landmarks_path).name != Path(was).name:  # the folder may have moved
            moved.append(f"{s.sample_id} ({s.landmarks_path} now, {was} then)")
        elif (
            Path(s.landmarks_path).is_file()
            and file_sha256(s.landmarks_path) != hashes[s.sample_id]
        ):
            moved.append(f"{s.sample_id} ({s.landmarks_path} edited)")

    problems = []
    if changed:
        problems.append(
            f"{len(changed)} scans changed since an earlier run fitted them (their SHA-256 "
            f"differs from the stored source_sha256): {name_some(changed)}"
        )
    if moved:
        problems.append(
            f"the landmarks of {len(moved)} scans changed since an earlier run fitted them: "
            f"{name_some(moved)}"
        )
    if problems:
        raise FacehdError(
            f"{writer.out_path}: {'; '.join(problems)}; rebuild with --overwrite, or write to "
            "another --out"
        )


# --------------------------------------------------------------------------------------------
# Inspect and verify
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriorsSummary:
    """What :func:`inspect_priors` reports about a dataset."""

    path: Path
    schema: str
    n_samples: int
    model: str
    units: str
    fields: dict[str, tuple[tuple[int, ...], str]]
    """name -> (sample shape, dtype)."""
    subjects: int
    """Distinct non-empty subjects."""
    residual_median: np.ndarray
    """(3,) median over samples of the per-sample median residual (M0, M1, M2), mm."""
    residual_max: np.ndarray
    """(3,) largest per-sample median residual, mm."""
    deformation_coverage: float
    """Mean fraction of valid deformation texels."""
    displacement_coverage: float
    """Mean fraction of valid displacement texels."""
    displacement_rms: float
    """RMS of the displacement over valid texels, mm."""
    n_failed: int
    """Rows of ``failures.csv`` for this dataset."""
    config: dict[str, Any]
    """The stored configuration."""


def inspect_priors(path: str | Path) -> PriorsSummary:
    """Summarise a ``facehd.priors/1`` dataset (reads the small fields and the masks)."""
    path = Path(path)
    with open_dataset(path) as ds:
        n = len(ds)
        res = ds.read_field("residual") if n else np.zeros((0, 3))
        dcov = float(ds.read_field("deformation_mask").mean()) if n else 0.0
        sq = cnt = 0.0
        cov = []
        for i in range(n):
            m = ds.read_field("displacement_mask", i)
            d = ds.read_field("displacement", i)
            sq += float(np.sum(d[m].astype(np.float64) ** 2))
            cnt += int(m.sum())
            cov.append(m.mean())
        subjects = len({s for s in ds.read_field("subject") if s}) if n else 0
        summary = PriorsSummary(
            path=path,
            schema=ds.schema,
            n_samples=n,
            model=str(ds.attrs.get("model", "")),
            units=str(ds.attrs.get("units", "")),
            fields={k: (v.shape, v.dtype) for k, v in ds.fields.items()},
            subjects=subjects,
            residual_median=np.median(res, axis=0) if n else np.full(3, np.nan),
            residual_max=res.max(axis=0) if n else np.full(3, np.nan),
            deformation_coverage=dcov,
            displacement_coverage=float(np.mean(cov)) if cov else 0.0,
            displacement_rms=float(np.sqrt(sq / cnt)) if cnt else 0.0,
            n_failed=len(read_failures(path.with_name("failures.csv"), path)),
            config=dict(ds.attrs.get("config", {})),
        )
    return summary


def verify_priors(path: str | Path) -> list[str]:
    """Check a dataset: the generic checks of :func:`facehd.h5io.verify` with the schema, then
    the priors' own: every field of the schema present, rotations proper (``RᵀR = I``,
    ``det R = 1``), scales positive, residuals finite and non-negative, displacement zero outside
    its mask, source hashes well-formed. Returns the problems (empty when the file is fine)."""
    path = Path(path)
    report = verify(path, expected_schema=SCHEMA)
    problems = list(report.problems)
    if problems:
        return problems
    with open_dataset(path) as ds:
        model_fields = set(fields_for(1, 1, FitConfig()))
        missing = sorted(model_fields - set(ds.fields))
        if missing:
            return [f"fields missing for {SCHEMA}: {missing}"]
        n = len(ds)
        if n == 0:
            return problems
        rot = ds.read_field("rotation")
        err = np.abs(np.einsum("nji,njk->nik", rot, rot) - np.eye(3)).max(axis=(1, 2))
        det = np.linalg.det(rot)
        for i in np.flatnonzero((err > 1e-6) | (det < 0)):
            problems.append(f"sample {ds.sample_ids[i]!r}: rotation is not a proper rotation")
        for i in np.flatnonzero(~(ds.read_field("scale") > 0)):
            problems.append(f"sample {ds.sample_ids[i]!r}: scale is not positive")
        res = np.concatenate([ds.read_field("residual"), ds.read_field("residual_mean")], 1)
        for i in np.flatnonzero(~np.all(np.isfinite(res) & (res >= 0), axis=1)):
            problems.append(f"sample {ds.sample_ids[i]!r}: residuals not finite and >= 0")
        hashes = ds.read_field("source_sha256")
        for i, h in enumerate(hashes):
            if not re.fullmatch(r"[0-9a-f]{64}", h):
                problems.append(f"sample {ds.sample_ids[i]!r}: source hash {h!r} malformed")
        for i in range(n):
            d = ds.read_field("displacement", i)
            m = ds.read_field("displacement_mask", i)
            if np.any(d[~m] != 0):
                problems.append(f"sample {ds.sample_ids[i]!r}: displacement non-zero off its mask")
    return problems

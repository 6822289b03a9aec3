"""Photos -> aligned face crops in one HDF5 dataset (``facehd prepare-images``).

Per photo: read it upright as 8-bit RGB (grey, CMYK, 16-bit and EXIF-rotated files are converted,
:func:`facehd.align.load_photo`; a photo turned by quarter turns without an orientation tag is
turned upright where the detector finds its face turned), find the main face and its landmarks
(mediapipe, :class:`facehd.detect.FaceDetector`; several faces: the largest, most central) or
take the landmarks given beside it (below), align and crop it the base model's way (224 x 224)
plus an HD crop of the same region (:func:`facehd.align.align_face`), and make the face mask:
the convex hull of the jaw, brows and forehead outline, cut by the selfie-segmentation person
mask where that keeps most of it (:func:`facehd.detect.refine_mask`).

Output: one dataset, schema ``facehd.photos/1``, one row per photo, sorted by sample id (the photo's
path relative to the images folder, ``/``-separated):

=================  ====================  =========================================================
field              shape, dtype          meaning
=================  ====================  =========================================================
image              (224, 224, 3) uint8   the aligned crop
image_hd           (S, S, 3) uint8       the same region at S x S (``hd_size``, default 512)
mask               (224, 224) uint8      face mask, 1 = face
mask_hd            (S, S) uint8          face mask of the HD crop
landmarks68        (68, 2) float32       iBUG-68 landmarks in the 224 crop (x = col, y = row)
landmarks5         (5, 2) float32        the 5 alignment points in the 224 crop
mesh478            (478, 3) float32      mediapipe face mesh + irises in the 224 crop (x, y, z px)
crop_scale         () float64            ``p_crop = crop_scale * p_photo + crop_translation``
crop_translation   (2,) float64          (photo pixels of the upright photo, x = col, y = row)
photo_size         (2,) int32            width, height of the upright photo
exif_orientation   () int8               EXIF orientation applied to the file (1 = none)
turn               () int8               quarter turns (counter-clockwise, ``np.rot90``) applied
                                         after it: a photo turned without an orientation tag,
                                         found by the detector (0 = none)
n_faces            () int16              faces found in the photo (the main one is stored); -1
                                         when the landmarks were given
photo_mode         str                   Pillow mode of the file (RGB, L, CMYK, I;16 ...)
landmarks_source   str                   ``mediapipe``, or the ``.pts`` file's name
landmark_spread    () float32            how far the face mesh moves the detected landmarks when
                                         fitted again in nearby crops, in eye distances
                                         (:meth:`facehd.detect.FaceDetector.landmark_spread`;
                                         NaN when the landmarks were given)
source             str                   the photo's path
source_sha256      str                   SHA-256 of the file's bytes
=================  ====================  =========================================================

Given landmarks: an iBUG ``.pts`` file beside the photo (``face.jpg`` -> ``face.pts``, 68
points in the pixels of the upright photo, 1-based as in the 300-W annotations;
:func:`facehd.landmarks.load_photo_landmarks`) replaces the detector's landmarks with
``landmarks="auto"`` (the default) or ``"given"`` (then a photo without one fails);
``"detect"`` ignores such files. ``facehd synth --photos`` writes one per photo with the exact
projected landmarks. With given landmarks no face mesh is run: ``mesh478`` is NaN, ``n_faces``
is -1, the face mask is the hull of the 68 points and the brows raised towards the forehead
(:func:`facehd.detect.mask_outline_68`), and ``landmarks_source`` names the file (else
``mediapipe``).

Pixel coordinates put the centre of the top-left pixel at (0, 0). The HD crop's transform is
``CropTransform(crop_scale, crop_translation, 224).resized(S)``. A photo that cannot be read or
shows no face goes to ``failures.csv`` beside the output with the reason; the others finish. So
does a photo whose detected landmarks spread more than ``max_landmark_spread`` (0.12 eye
distances by default, :data:`facehd.detect.MAX_LANDMARK_SPREAD`): a face fitted turned the wrong
way, or loosely where the detector barely sees it, whose landmarks would be off the face. The
build is resumable (:mod:`facehd.h5io`): rerun the same command after an interruption, or after
adding photos, and only what is missing is processed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facehd.align import (
    CROP_SIZE,
    HD_CROP_MAX,
    HD_CROP_SIZE,
    PHOTO_SUFFIXES,
    PX_PER_MM,
    CropTransform,
    align_face,
    is_photo_file,
    load_photo,
)
from facehd.detect import MAX_LANDMARK_SPREAD
from facehd.errors import InputFileError

SCHEMA = "facehd.photos/1"
"""Schema name and version of the photo dataset."""


@dataclass(frozen=True)
class PrepareImagesConfig:
    """Configuration of ``facehd prepare-images`` (saved in the dataset's attributes)."""

    hd_size: int = HD_CROP_SIZE
    """Side of the HD crop (same region as the 224 crop), pixels."""
    px_per_mm: float = PX_PER_MM
    """Crop pixels per mm at the face (the base model: 1.02)."""
    max_faces: int = 5
    """Faces looked for per photo (the main one is kept)."""
    min_confidence: float = 0.5
    """Minimum face-detection confidence."""
    segmentation: bool = True
    """Cut the landmark face mask by the selfie-segmentation person mask where it helps."""
    recursive: bool = True
    """Look for photos in sub-folders too."""
    template: str = "anthropometric"
    """5-point alignment template: ``anthropometric`` (mean adult proportions, the default) or a
    model name (``facehd-synth``: crops that overlay that model's renders exactly)."""
    landmarks: Literal["auto", "detect", "given"] = "auto"
    """Where the landmarks come from: ``auto`` a ``.pts`` file beside the photo when there is
    one, else the detector; ``detect`` always the detector; ``given`` always the file."""
    max_landmark_spread: float = MAX_LANDMARK_SPREAD
    """Detected landmarks that the face mesh moves by more than this when fitted again in
    nearby crops (:meth:`facehd.detect.FaceDetector.landmark_spread`, eye distances) fail the
    photo: they are likely off the face. ``inf`` keeps every face found."""


@dataclass(frozen=True)
class PreparedPhoto:
    """One photo, aligned and cropped (see the module docstring for the fields)."""

    image: np.ndarray
    image_hd: np.ndarray
    mask: np.ndarray
    mask_hd: np.ndarray
    landmarks68: np.ndarray
    landmarks5: np.ndarray
    mesh478: np.ndarray
    transform: CropTransform
    photo_size: tuple[int, int]
    exif_orientation: int
    turn: int
    n_faces: int
    photo_mode: str
    landmarks_source: str = "mediapipe"
    landmark_spread: float = float("nan")


@dataclass(frozen=True)
class PrepareImagesResult:
    """Summary of a :func:`prepare_images` run."""

    out_path: Path
    """The dataset written."""
    n_photos: int
    """Photos found in the folder."""
    n_written: int
    """Photos added by this run."""
    n_skipped: int
    """Photos already in the dataset from an earlier run."""
    n_failed: int
    """Photos that failed (in ``failures_path``)."""
    n_samples: int
    """Rows of the dataset."""
    failures_path: Path
    """The failures file (absent when nothing failed)."""
    n_small: int = 0
    """Faces of the dataset whose 224 crop enlarges their photo more than
    :data:`facehd.align.ENLARGED_CROP` times (``crop_scale``): too small for skin detail."""


def fields_spec(hd_size: int) -> dict[str, tuple]:
    """The dataset's fields: name -> (shape, dtype)."""
    return {
        "image": ((CROP_SIZE, CROP_SIZE, 3), "uint8"),
        "image_hd": ((hd_size, hd_size, 3), "uint8"),
        "mask": ((CROP_SIZE, CROP_SIZE), "uint8"),
        "mask_hd": ((hd_size, hd_size), "uint8"),
        "landmarks68": ((68, 2), "float32"),
        "landmarks5": ((5, 2), "float32"),
        "mesh478": ((478, 3), "float32", True),  # NaN when the landmarks were given
        "crop_scale": ((), "float64"),
        "crop_translation": ((2,), "float64"),
        "photo_size": ((2,), "int32"),
        "exif_orientation": ((), "int8"),
        "turn": ((), "int8"),
        "n_faces": ((), "int16"),
        "photo_mode": ((), "str"),
        "landmarks_source": ((), "str"),
        "landmark_spread": ((), "float32", True),  # NaN when the landmarks were given
        "source": ((), "str"),
        "source_sha256": ((), "str"),
    }


FIELDS_ADDED_LATER: tuple[str, ...] = ("landmark_spread",)
"""Fields of :func:`fields_spec` that datasets written by earlier versions lack (readers do
without them; ``facehd verify`` does not ask for them)."""


def find_photos(images_dir: str | Path, *, recursive: bool = True) -> list[tuple[str, Path]]:
    """Photos under ``images_dir`` as ``(sample id, path)``, sorted by id.

    The id is the path relative to ``images_dir`` with ``/`` separators. Hidden files and folders
    are skipped; suffixes :data:`facehd.align.PHOTO_SUFFIXES` in any case count as photos, and
    links of those names whose target is gone (:func:`facehd.align.is_photo_file`: they fail by
    name).
    """
    root = Path(images_dir)
    if not root.exists():
        raise InputFileError(root, "does not exist (the folder of photos to prepare)")
    if not root.is_dir():
        raise InputFileError(root, "is a file, not a folder of photos")
    # whole paths, the same for every run of a build whatever folder it ran from or spelling
    # it was given (a resumed build would otherwise store some of each)
    root = Path(os.path.abspath(root))
    pattern = "**/*" if recursive else "*"
    found = []
    for p in root.glob(pattern):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if is_photo_file(p):
            found.append((rel.as_posix(), p))
    return sorted(found)


def prepare_photo(
    path: str | Path,
    detector: Any,
    config: PrepareImagesConfig,
    landmarks: str | Path | None = None,
) -> PreparedPhoto:
    """Read, detect, align, crop and mask one photo (``detector``: a FaceDetector).

    ``landmarks``: a ``.pts`` file whose landmarks replace the detector's (it then only runs the
    person segmentation). Raises InputFileError for an unreadable photo or landmark file and
    NoFaceError when no face is found, LandmarkSpreadError when the detected landmarks spread
    more than ``config.max_landmark_spread``.
    """
    from facehd.detect import (
        LandmarkSpreadError,
        convex_hull_mask,
        face_from_landmark_file_upright,
        refine_mask,
    )

    photo = load_photo(path)
    image, turn = photo.image, 0
    if landmarks is not None:
        # points of a face shown sideways or upside down: turned upright with the photo
        turn, face = face_from_landmark_file_upright(landmarks, image.shape)
        if turn:
            image = np.ascontiguousarray(np.rot90(image, turn))
        n_faces, source, spread = -1, Path(landmarks).name, float("nan")
    else:
        # a photo turned by quarter turns without an orientation tag is turned upright, as
        # the tag would have done: the crop scales and shifts only, and must show the face upright
        turn, face, n_faces, spread = detector.main_face_checked(image, config.max_landmark_spread)
        if turn:
            image = np.ascontiguousarray(np.rot90(image, turn))
        source = "mediapipe"
        if not spread <= config.max_landmark_spread:
            moved = (
                "finds no face in most of them"
                if np.isinf(spread)
                else f"moves them {spread:.2f} eye distances"
            )
            raise LandmarkSpreadError(
                f"landmarks unsure: fitted again in nearby crops, the face mesh {moved} "
                f"(above --max-landmark-spread {config.max_landmark_spread:g}); the face may be "
                "seen turned or too faint; give its landmarks in a .pts file beside the photo"
            )
    aligned = align_face(
        image,
        face.landmarks5,
        hd_size=config.hd_size,
        px_per_mm=config.px_per_mm,
        template=_template(config.template),
    )
    t, t_hd = aligned.transform, aligned.transform_hd
    outline = face.outline()
    hull = convex_hull_mask(t.apply(outline), (CROP_SIZE, CROP_SIZE))
    hull_hd = convex_hull_mask(t_hd.apply(outline), (config.hd_size, config.hd_size))
    if config.segmentation:
        from PIL import Image

        person_hd = detector.person_probability(aligned.image_hd)
        person = np.asarray(
            Image.fromarray(person_hd).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BOX)
        )
        mask, mask_hd = refine_mask(hull, person), refine_mask(hull_hd, person_hd)
    else:
        mask, mask_hd = hull, hull_hd
    mesh = face.mesh.copy()
    mesh[:, :2] = t.apply(mesh[:, :2])
    mesh[:, 2] *= t.scale
    h, w = image.shape[:2]
    return PreparedPhoto(
        image=aligned.image,
        image_hd=aligned.image_hd,
        mask=mask.astype(np.uint8),
        mask_hd=mask_hd.astype(np.uint8),
        landmarks68=t.apply(face.landmarks68).astype(np.float32),
        landmarks5=aligned.landmarks5.astype(np.float32),
        mesh478=mesh.astype(np.float32),
        transform=t,
        photo_size=(w, h),
        exif_orientation=photo.orientation,
        turn=turn,
        n_faces=n_faces,
        photo_mode=photo.mode,
        landmarks_source=source,
        landmark_spread=spread,
    )


_DETECTORS: dict[tuple, Any] = {}


@functools.lru_cache(maxsize=4)
def _template(name: str) -> np.ndarray:
    from facehd.align import named_template

    return named_template(name)


def _detector_for(config: PrepareImagesConfig) -> Any:
    """One FaceDetector per process and configuration (mediapipe graphs are costly to build)."""
    from facehd.detect import FaceDetector

    key = (config.max_faces, config.min_confidence, config.segmentation)
    if key not in _DETECTORS:
        _DETECTORS[key] = FaceDetector(
            max_faces=config.max_faces,
            min_confidence=config.min_confidence,
            segmentation=config.segmentation,
        )
    return _DETECTORS[key]


def _photo_task(item: Any, config: PrepareImagesConfig) -> dict[str, Any]:
    """Worker task: one photo -> the dataset fields of its sample."""
    from facehd.detect import given_landmarks
    from facehd.h5io import file_sha256

    pts = given_landmarks(item.source, config.landmarks)
    p = prepare_photo(item.source, _detector_for(config), config, landmarks=pts)
    return {
        "image": p.image,
        "image_hd": p.image_hd,
        "mask": p.mask,
        "mask_hd": p.mask_hd,
        "landmarks68": p.landmarks68,
        "landmarks5": p.landmarks5,
        "mesh478": p.mesh478,
        "crop_scale": p.transform.scale,
        "crop_translation": np.asarray(p.transform.translation),
        "photo_size": np.asarray(p.photo_size),
        "exif_orientation": p.exif_orientation,
        "turn": p.turn,
        "n_faces": p.n_faces,
        "photo_mode": p.photo_mode,
        "landmarks_source": p.landmarks_source,
        "landmark_spread": p.landmark_spread,
        "source": str(item.source),
        "source_sha256": file_sha256(item.source),
    }


def dataset_attrs(config: PrepareImagesConfig) -> dict[str, Any]:
    """The dataset's attributes: units, conventions, detector version and the resolved config."""
    from facehd.detect import (
        MEDIAPIPE_IBUG68_DOWN,
        MEDIAPIPE_IBUG68_OUTWARD,
        MEDIAPIPE_TO_IBUG68,
        _import_mediapipe,
    )

    mp = _import_mediapipe()
    return {
        "units": "px",
        "pixel_convention": "x = column, y = row; centre of the top-left pixel at (0, 0)",
        "crop_convention": "p_crop = crop_scale * p_photo + crop_translation (upright photo)",
        "crop_size": CROP_SIZE,
        "detector": f"mediapipe=={mp.__version__} face mesh (refined), selfie segmentation",
        "ibug68_from_mediapipe": list(MEDIAPIPE_TO_IBUG68),
        "ibug68_outward_blend": {str(k): list(v) for k, v in MEDIAPIPE_IBUG68_OUTWARD.items()},
        "ibug68_down_shift": {str(k): v for k, v in MEDIAPIPE_IBUG68_DOWN.items()},
        "template_5p_mm": np.round(_template(config.template), 6).tolist(),
        "config": asdict(config),
    }


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (by their real paths)."""
    import os

    return os.path.realpath(a) == os.path.realpath(b)


def prepare_images(
    images_dir: str | Path,
    out_h5: str | Path,
    *,
    workers: int = 1,
    config: PrepareImagesConfig | None = None,
    overwrite: bool = False,
    shard_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareImagesResult:
    """Prepare every photo of ``images_dir`` into the dataset ``out_h5`` (resumable).

    ``workers > 1`` runs photos in a process pool; ``shard_size`` photos are written at a time (the
    most an interruption loses; it does not change the result); ``progress(done, total)`` is
    called per photo of this run. Raises ImportError (naming the ``photo`` extra) without
    mediapipe; InputFileError when the folder holds no photo or ``out_h5`` cannot be written
    (a folder, in a read-only folder, a file other than a dataset with ``overwrite``); FacehdError
    when another build is writing ``out_h5``.
    """
    from facehd.detect import _import_mediapipe
    from facehd.errors import FacehdError
    from facehd.h5io import (
        ShardedDatasetWriter,
        WorkItem,
        changed_inputs,
        check_dataset_output,
        inputs_done_under_other_ids,
        name_some,
        process_items,
    )

    check_dataset_output(out_h5)  # an output that cannot be written fails before any work
    _import_mediapipe()  # fail before any work when the optional extra is missing
    config = config or PrepareImagesConfig()
    if not CROP_SIZE <= config.hd_size <= HD_CROP_MAX:
        raise ValueError(
            f"hd_size must lie in [{CROP_SIZE}, {HD_CROP_MAX}] pixels, got {config.hd_size}"
        )
    photos = find_photos(images_dir, recursive=config.recursive)
    if not photos:
        raise InputFileError(images_dir, f"no photos ({', '.join(PHOTO_SUFFIXES)}) found")
    items = [WorkItem(sid, str(path)) for sid, path in photos]
    task = functools.partial(_photo_task, config=config)
    with ShardedDatasetWriter(
        out_h5,
        SCHEMA,
        dataset_attrs(config),
        fields_spec(config.hd_size),
        shard_size=shard_size,
        overwrite=overwrite,
    ) as writer:
        changed = changed_inputs(writer, items)
        if changed:  # their crops would stay those of the old files
            sources = writer.done_values("source")
            same = [it for it in changed if _same_file(sources[it.sample_id], it.source)]
            other = [it for it in changed if it not in same]
            problems = []
            if same:
                problems.append(
                    f"{len(same)} photos changed since an earlier run prepared them (their "
                    f"SHA-256 differs from the stored source_sha256): "
                    f"{name_some([str(it.source) for it in same])}"
                )
            if other:
                problems.append(
                    f"{len(other)} photos have the sample id of another photo an earlier run "
                    "prepared from another --images folder (ids are paths relative to it): "
                    + name_some(
                        [
                            f"{it.source} ({it.sample_id!r}, was {sources[it.sample_id]})"
                            for it in other
                        ]
                    )
                )
            raise FacehdError(
                f"{writer.out_path}: {'; '.join(problems)}; rebuild with --overwrite, or write "
                "to another --out"
            )
        again = inputs_done_under_other_ids(writer, items)
        if again:  # the same files would be stored twice, under two ids
            raise FacehdError(
                f"{writer.out_path}: {len(again)} photos were prepared by an earlier run under "
                "other sample ids, from another --images folder (ids are paths relative to it): "
                + name_some(
                    [f"{it.source} (was {sid!r}, now {it.sample_id!r})" for it, sid in again]
                )
                + "; give the folder the earlier run was given, rebuild with --overwrite, or "
                "write to another --out"
            )
        summary = process_items(writer, items, task, workers=workers, progress=progress)
        final = writer.finalize()
    n_small = 0
    if final.n_samples:
        from facehd.align import ENLARGED_CROP
        from facehd.h5io import open_dataset

        with open_dataset(final.path) as ds:
            n_small = int((np.asarray(ds.read_field("crop_scale")) > ENLARGED_CROP).sum())
    return PrepareImagesResult(
        out_path=final.path,
        n_photos=len(items),
        n_written=summary.n_written,
        n_skipped=summary.n_skipped,
        n_failed=final.n_failed,
        n_samples=final.n_samples,
        failures_path=final.failures_path,
        n_small=n_small,
    )

"""Training data of HRN: in-the-wild photos, lab photos with ground-truth maps, texture pairs.

Three sources feed :mod:`models.train`:

- :class:`PhotoDataset` -- the self-supervised photos, a ``facehd prepare-images`` dataset (schema
  ``facehd.photos/1``): the aligned 224 crop, its face mask and its 68 landmarks.
- :class:`LabDataset` -- the supervised samples: every sample of a ``facehd build-priors`` dataset
  (schema ``facehd.priors/1``, ground-truth deformation and displacement maps, M0 coefficients)
  combined with each of its lab photos. The photos of a scan are found by
  :func:`lab_photos_path` (``<scan stem>.photos.npz`` beside the scan, the layout written by
  ``facehd synth --photos V``); one item is one (sample, view) pair. The photo is aligned and
  cropped the base model's way from its true 68 landmarks, with the same 5-point template as the
  in-the-wild photos, so both sources look alike to the networks.
- Texture pairs for the de-retouching module: the lab photos carry a clean twin
  (``images_clean``, the same render without the blemish layer); a user's own pairs come as a
  photos dataset with one extra field ``image_clean`` (``(224, 224, 3) uint8``), see
  :class:`PairDataset`.

Items are numpy dictionaries; :func:`collate` stacks them into a typed :class:`PhotoBatch` of
torch tensors at the training resolution (images area-resized from 224, landmarks moved with
the pixel-centre convention ``x_S = (x_224 + 0.5) S / 224 - 0.5``).

:class:`EpochSampler` gives reproducible batches: epoch ``e`` visits the samples in the order of
``numpy.random.default_rng([seed, e]).permutation(n)``, rank ``r`` of ``w`` processes takes every
``w``-th of them, and batches run on across epoch ends. Its whole state is ``(epoch, cursor)``,
saved in checkpoints so a resumed run draws exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facehd.errors import InputFileError

__all__ = [
    "CROP",
    "EpochSampler",
    "LabDataset",
    "PairDataset",
    "PhotoBatch",
    "PhotoDataset",
    "collate",
    "lab_photos_path",
    "photos_dataset_from_synthetic",
    "resize_map",
]

#: Side of the aligned crops stored in the datasets.
CROP = 224
PHOTOS_SCHEMA = "facehd.photos/"
PRIORS_SCHEMA = "facehd.priors/"


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------
class EpochSampler:
    """Reproducible, resumable batches of sample indices (see the module docstring).

    Parameters
    ----------
    n : number of samples.
    batch_size : indices per batch (per process).
    seed : seed of the epoch permutations.
    rank, world : this process and the number of processes (DistributedDataParallel).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < 1:
            raise ValueError("EpochSampler: the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"EpochSampler: batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"EpochSampler: rank {rank} outside [0, {world})")
        if n < world:
            raise ValueError(f"EpochSampler: {n} samples cannot be shared by {world} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self.cursor = 0

    def _share(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return order[self.rank :: self.world]

    def next_batch(self) -> list[int]:
        """The next ``batch_size`` indices (continuing into the next epoch when needed)."""
        out: list[int] = []
        while len(out) < self.batch_size:
            share = self._share(self.epoch)
            take = share[self.cursor : self.cursor + self.batch_size - len(out)]
            out.extend(int(i) for i in take)
            self.cursor += len(take)
            if self.cursor >= len(share):
                self.epoch += 1
                self.cursor = 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(
                f"the checkpoint's data position is for {state['n']} samples, the dataset has "
                f"{self.n}: the training data changed since the checkpoint"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------
@dataclass
class PhotoBatch:
    """A batch of aligned face photos at the training resolution ``S``.

    Attributes
    ----------
    images : (B, 3, S, S) float RGB in ``[0, 1]``.
    masks : (B, 1, S, S) float face mask in ``{0, 1}``.
    landmarks : (B, 68, 2) float iBUG-68 landmarks, pixels at ``S`` (x = column, y = row).
    images_clean : (B, 3, S, S) the same photos without skin blemishes, or ``None``.
    identity, expression : (B, K) ground-truth M0 coefficients of supervised samples, or ``None``.
    deformation : (B, 3, 64, 64) ground-truth deformation map, mm (priors' size), or ``None``.
    deformation_mask : (B, 1, 64, 64) float, or ``None``.
    displacement : (B, 1, 256, 256) ground-truth displacement map, mm, or ``None``.
    displacement_mask : (B, 1, 256, 256) float, or ``None``.
    priors_uv : (B, 2, 224, 224) the priors' UV seen at each pixel of the crop, or ``None``.
    priors_uv_mask : (B, 1, 224, 224) float, pixels on the priors' surface, or ``None``.
    ids : sample ids (for logs and evaluation).
    """

    images: torch.Tensor
    masks: torch.Tensor
    landmarks: torch.Tensor
    images_clean: torch.Tensor | None = None
    identity: torch.Tensor | None = None
    expression: torch.Tensor | None = None
    deformation: torch.Tensor | None = None
    deformation_mask: torch.Tensor | None = None
    displacement: torch.Tensor | None = None
    displacement_mask: torch.Tensor | None = None
    priors_uv: torch.Tensor | None = None
    priors_uv_mask: torch.Tensor | None = None
    ids: tuple[str, ...] = ()

    @property
    def supervised(self) -> bool:
        return self.deformation is not None

    def to(self, device: torch.device | str) -> PhotoBatch:
        moved = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()
        }
        return PhotoBatch(**moved)


def _resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    mode = "area" if size < x.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, (size, size), mode=mode, **kwargs)


def collate(items: Sequence[dict[str, Any]], image_size: int) -> PhotoBatch:
    """Stack dataset items into a :class:`PhotoBatch` at ``image_size`` pixels.

    Items hold ``image (224, 224, 3) uint8``, ``mask (224, 224)``, ``landmarks (68, 2)`` at 224,
    optionally ``image_clean`` and the ground truth of :class:`LabDataset`.
    """
    if not items:
        raise ValueError("collate: no items")

    def stack(key: str) -> np.ndarray | None:
        if any(key not in it for it in items):
            return None
        return np.stack([np.asarray(it[key]) for it in items])

    def image(key: str) -> torch.Tensor | None:
        a = stack(key)
        if a is None:
            return None
        t = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0
        return _resize_images(t, image_size)

    masks = torch.from_numpy(stack("mask").astype(np.float32))[:, None]
    masks = (_resize_images(masks, image_size) > 0.5).float()
    k = image_size / CROP
    lm = torch.from_numpy(stack("landmarks").astype(np.float32))
    lm = (lm + 0.5) * k - 0.5

    def gt(key: str, channels_last: bool = False) -> torch.Tensor | None:
        a = stack(key)
        if a is None:
            return None
        t = torch.from_numpy(a.astype(np.float32))
        if channels_last:
            return t.permute(0, 3, 1, 2)
        return t[:, None] if t.dim() == 3 else t

    return PhotoBatch(
        images=image("image"),
        masks=masks,
        landmarks=lm,
        images_clean=image("image_clean"),
        identity=gt("identity"),
        expression=gt("expression"),
        deformation=gt("deformation", channels_last=True),
        deformation_mask=gt("deformation_mask"),
        displacement=gt("displacement"),
        displacement_mask=gt("displacement_mask"),
        priors_uv=gt("priors_uv", channels_last=True),
        priors_uv_mask=gt("priors_uv_mask"),
        ids=tuple(str(it.get("id", "")) for it in items),
    )


def resize_map(
    values: torch.Tensor, mask: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a masked UV map: masked area average (down) or bilinear (up).

    Parameters
    ----------
    values : (B, C, H, W) map; mask : (B, 1, H, W) in ``{0, 1}``.

    Returns
    -------
    ``(values (B, C, size, size), mask (B, 1, size, size))``: each output texel is the average of
    the valid input texels it covers; it is valid when every input texel it covers is.
    """
    if values.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(
            f"resize_map: expected values (B, C, H, W) and mask (B, 1, H, W), got "
            f"{tuple(values.shape)} and {tuple(mask.shape)}"
        )
    if values.shape[-1] == size:
        return values, mask
    if size < values.shape[-1]:
        num = F.interpolate(values * mask, (size, size), mode="area")
        den = F.interpolate(mask, (size, size), mode="area")
        out = num / den.clamp_min(1e-6)
        valid = (den > 0.999).float()
        return out * valid, valid
    up = F.interpolate(values, (size, size), mode="bilinear", align_corners=False)
    m = F.interpolate(mask, (size, size), mode="bilinear", align_corners=False)
    valid = (m > 0.999).float()
    return up * valid, valid


# --------------------------------------------------------------------------------------------
# in-the-wild photos
# --------------------------------------------------------------------------------------------
class _H5Source:
    """A finalized facehd dataset opened lazily (one handle per process)."""

    def __init__(self, path: str | Path, schema_prefix: str, what: str) -> None:
        from facehd.h5io import name_rows, open_dataset

        self.path = Path(path)
        with open_dataset(self.path) as ds:
            if not ds.schema.startswith(schema_prefix):
                raise InputFileError(
                    self.path, f"expected {what} (schema {schema_prefix}*), found {ds.schema!r}"
                )
            bad = ds.nonfinite_rows()
            if bad:
                name, rows = next(iter(bad.items()))
                raise InputFileError(
                    self.path,
                    f"field {name!r} holds NaN or infinite values in "
                    f"{name_rows(rows, ds.sample_ids)} (`facehd verify {self.path}` lists every "
                    "such field)",
                )
            self.schema = ds.schema
            self.attrs = dict(ds.attrs)
            self.fields = dict(ds.fields)
            self.sample_ids = list(ds.sample_ids)
        self._ds = None
        self._pid = None

    def handle(self):
        import os

        from facehd.h5io import open_dataset

        if self._ds is None or self._pid != os.getpid():
            self._ds = open_dataset(self.path)
            self._pid = os.getpid()
        return self._ds

    def read(self, name: str, index: int) -> Any:
        return self.handle().read_field(name, index)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = None
        return state


class PhotoDataset:
    """Self-supervised photos from a ``facehd prepare-images`` dataset.

    Items: ``image (224, 224, 3) uint8``, ``mask (224, 224) uint8``, ``landmarks (68, 2)`` (crop
    pixels), ``id``; with ``clean=True`` also ``image_clean`` (the dataset must have that field).

    Raises
    ------
    InputFileError
        The file is not a finalized photos dataset, is empty, or lacks a needed field.
    """

    def __init__(self, path: str | Path, *, clean: bool = False) -> None:
        self.source = _H5Source(path, PHOTOS_SCHEMA, "a photos dataset (facehd prepare-images)")
        need = ["image", "mask", "landmarks68"] + (["image_clean"] if clean else [])
        missing = [f for f in need if f not in self.source.fields]
        if missing:
            raise InputFileError(self.source.path, f"photos dataset lacks fields {missing}")
        if not self.source.sample_ids:
            raise InputFileError(self.source.path, "photos dataset holds no sample")
        self.clean = clean
        self.template = str(self.source.attrs.get("config", {}).get("template", "anthropometric"))

    @property
    def path(self) -> Path:
        return self.source.path

    def __len__(self) -> int:
        return len(self.source.sample_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.source
        item = {
            "image": s.read("image", i),
            "mask": s.read("mask", i),
            "landmarks": s.read("landmarks68", i),
            "id": s.sample_ids[i],
        }
        if self.clean:
            item["image_clean"] = s.read("image_clean", i)
        return item


class PairDataset(PhotoDataset):
    """De-retouching pairs given as a photos dataset with an extra ``image_clean`` field."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, clean=True)


# --------------------------------------------------------------------------------------------
# lab photos with ground-truth maps
# --------------------------------------------------------------------------------------------
def lab_photos_path(source: str, sample_id: str, priors_path: str | Path) -> Path | None:
    """Where the lab photos of a priors sample are: ``<scan stem>.photos.npz`` beside the scan.

    ``source`` is the scan path stored in the sample (absolute, or relative to the working
    directory of the build or to the priors file's folder); ``<sample_id>.photos.npz`` beside
    the priors file is tried last. Returns ``None`` when none exists.
    """
    src = Path(source)
    stem = src.name[: -len(src.suffix)] if src.suffix else src.name
    priors_dir = Path(priors_path).parent
    candidates = [src.with_name(stem + ".photos.npz")]
    if not src.is_absolute():
        candidates.append((priors_dir / src).with_name(stem + ".photos.npz"))
    candidates.append(priors_dir / f"{sample_id}.photos.npz")
    return next((c for c in candidates if c.is_file()), None)


def read_npz(
    path: str | Path,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    what: str = "file",
    hint: str = "",
) -> dict[str, np.ndarray]:
    """The ``required`` arrays and those of ``optional`` present of an ``.npz`` file.

    Raises
    ------
    InputFileError
        Naming the file: it lacks a required array (``<what> lacks [...]<hint>``), or it is no
        readable ``.npz`` archive (cut, damaged, pickled objects).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise InputFileError(path, f"{what} lacks {missing}{hint}")
            return {k: z[k] for k in (*required, *optional) if k in z.files}
    except InputFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read is a bad file
        raise InputFileError(path, f"not a readable .npz archive: {what} ({exc})") from None


#: Per-view arrays of a ``.photos.npz`` and their shapes after the view axis (``H``, ``W``: the
#: photos' size, the same in every array that has it).
PHOTO_ARRAY_SHAPES: dict[str, tuple[int | str, ...]] = {
    "images": ("H", "W", 3),
    "images_clean": ("H", "W", 3),
    "masks": ("H", "W"),
    "landmarks68": (68, 2),
    "K": (3, 3),
    "R": (3, 3),
    "t": (3,),
    "scan_R": (3, 3),
    "scan_t": (3,),
}


def check_photo_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check that the per-view arrays of a ``.photos.npz`` (:data:`PHOTO_ARRAY_SHAPES`) have
    their shapes and all the same number of views, and hold finite numbers (a hand-made file
    with one landmark row for two photos would otherwise fail deep inside with an IndexError).

    Raises InputFileError naming the file and the array."""
    sizes: dict[str, int] = {}
    views: dict[str, int] = {}
    for key, arr in arrays.items():
        shape = PHOTO_ARRAY_SHAPES.get(key)
        if shape is None:
            continue
        ok = arr.ndim == 1 + len(shape)
        for dim, want in zip(arr.shape[1:], shape, strict=False):
            if isinstance(want, str):
                ok = ok and sizes.setdefault(want, dim) == dim
            else:
                ok = ok and dim == want
        if not ok:
            want_text = ", ".join(str(d) for d in ("V", *shape))
            raise InputFileError(
                path, f"array '{key}' has shape {arr.shape}, expected ({want_text})"
            )
        views[key] = arr.shape[0]
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise InputFileError(path, f"array '{key}' holds NaN or infinite values")
    if len(set(views.values())) > 1:
        said = ", ".join(f"{k} {n}" for k, n in views.items())
        raise InputFileError(path, f"the arrays disagree on the number of photos ({said})")
    if views and min(views.values()) == 0:
        raise InputFileError(path, "holds no photo (0 views)")
    return arrays


@functools.lru_cache(maxsize=32)
def _load_npz(path: str) -> dict[str, np.ndarray]:
    arrays = read_npz(
        path,
        ("images", "landmarks68", "masks"),
        ("images_clean", "K", "scan_R", "scan_t"),
        what="lab photos file",
    )
    return check_photo_arrays(path, arrays)


@functools.lru_cache(maxsize=4)
def _template(name: str) -> np.ndarray:
    from facehd.align import named_template

    return named_template(name)


def align_lab_photo(
    photos: dict[str, np.ndarray], view: int, template: str
) -> dict[str, np.ndarray]:
    """Crop view ``view`` of a ``.photos.npz`` the base model's way from its true landmarks.

    Returns ``image``, ``mask`` (skin), ``landmarks`` in the 224 crop, ``crop_transform``
    ``(scale, tx, ty)`` (``p_crop = scale p_photo + t``), and ``image_clean`` when the file has
    the clean twin.
    """
    from facehd.align import align_face, warp
    from facehd.detect import landmarks5_from_68

    lm = np.asarray(photos["landmarks68"][view], dtype=np.float64)
    aligned = align_face(
        photos["images"][view], landmarks5_from_68(lm), hd_size=CROP, template=_template(template)
    )
    t = aligned.transform
    mask = warp(photos["masks"][view].astype(np.uint8) * 255, t) > 127
    out = {
        "image": aligned.image,
        "mask": mask.astype(np.uint8),
        "landmarks": t.apply(lm),
        "crop_transform": np.array([t.scale, *t.translation], dtype=np.float64),
    }
    if "images_clean" in photos:
        out["image_clean"] = warp(photos["images_clean"][view], t)
    return out


def crop_camera(
    K: np.ndarray, R: np.ndarray, t: np.ndarray, crop_transform: np.ndarray, size: int = CROP
) -> Any:
    """The photo's pinhole camera (``x_cam = R x + t``, intrinsics ``K``) seen through its 224
    crop (``p_crop = s p_photo + t``, :func:`align_lab_photo`), at ``size`` pixels."""
    from facehd.render import PinholeCamera

    c, tx, ty = (float(x) for x in crop_transform)
    K = np.asarray(K, dtype=np.float64)
    k = np.array(
        [
            [c * K[0, 0], c * K[0, 1], c * K[0, 2] + tx],
            [0.0, c * K[1, 1], c * K[1, 2] + ty],
            [0, 0, 1],
        ]
    )
    k[:2] *= size / CROP
    k[:2, 2] += 0.5 * size / CROP - 0.5
    rot = np.asarray(R, dtype=np.float64)
    return PinholeCamera.from_matrices(k, rot, np.asarray(t, dtype=np.float64), (size, size))


def uv_image(
    vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, camera: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a mesh with its vertex UVs: ``uv (H, W, 2) float32`` and ``mask (H, W) bool``
    (pixels on the surface), the UV of the surface point each pixel sees."""
    from facehd.render import Renderer

    renderer = Renderer(camera)
    with torch.no_grad():  # the UVs alone: no normals, no shading
        fragments = renderer.rasterize(
            torch.as_tensor(np.array(vertices, dtype=np.float64))[None],
            torch.as_tensor(np.array(faces, dtype=np.int64)),
        )
        uv = renderer.interpolate(fragments, torch.as_tensor(np.array(uvs, dtype=np.float64)))
    return uv[0].numpy().astype(np.float32), fragments.mask[0].numpy().astype(bool)


def priors_uv_image(
    model: Any,
    priors: dict[str, Any],
    K: np.ndarray,
    scan_R: np.ndarray,
    scan_t: np.ndarray,
    crop_transform: np.ndarray,
    size: int = CROP,
) -> tuple[np.ndarray, np.ndarray]:
    """Which point of the priors' surface each pixel of a lab photo's crop sees, as its UV.

    The priors' M1 (``model(identity, expression) + deformation``, model frame, mm) is taken to
    the scan's frame by the priors' transform (``x_model = scale rotation x_scan + translation``),
    then through the photo's scan-frame camera (``x_cam = scan_R x_scan + scan_t``, intrinsics
    ``K``) and the crop (``p_crop = s p + t``), and rasterised with its vertex UVs.

    This is what lets the trainer compare a predicted displacement texel with the ground truth
    at the skin point the network actually sees there: a texel's predicted surface point
    projects to a pixel, and this image names the priors' UV seen at that pixel.

    Returns
    -------
    ``uv (size, size, 2) float32`` and ``mask (size, size) bool`` (pixels on the surface).
    """
    from facehd.uv import sample_uv_map

    uvs = np.array(model.uvs, dtype=np.float64)
    verts = np.asarray(
        model.vertices(np.asarray(priors["identity"]), np.asarray(priors["expression"])),
        dtype=np.float64,
    )
    verts = verts + sample_uv_map(np.asarray(priors["deformation"], dtype=np.float64), uvs)
    s = float(priors["scale"])
    rot = np.asarray(priors["rotation"], dtype=np.float64)
    tr = np.asarray(priors["translation"], dtype=np.float64)
    # x_cam ∝ scan_R R^T (v - t) + s scan_t (the common factor 1/s does not change a projection)
    cam_r = np.asarray(scan_R, dtype=np.float64) @ rot.T
    cam_t = s * np.asarray(scan_t, dtype=np.float64) - cam_r @ tr
    camera = crop_camera(K, cam_r, cam_t, crop_transform, size)
    return uv_image(verts, model.faces, uvs, camera)


class LabDataset:
    """Supervised samples: priors (ground-truth maps) x their lab photos.

    Parameters
    ----------
    path : a ``facehd build-priors`` dataset.
    template : 5-point alignment template of the crops (``anthropometric`` or a model name);
        use the one of the in-the-wild photos dataset.
    model_name : the morphable model the trainer uses; a priors file of another model is refused.
    model : that morphable model itself (optional). With it, and where a lab photos file holds
        its camera in the scan's frame (``K``, ``scan_R``, ``scan_t``), items also carry
        ``priors_uv (224, 224, 2)`` and ``priors_uv_mask`` (:func:`priors_uv_image`): the
        priors' UV seen at each pixel of the crop.

    Items: the photo fields of :func:`align_lab_photo` plus ``identity``, ``expression``,
    ``deformation (64, 64, 3)`` mm, ``deformation_mask``, ``displacement (256, 256)`` mm,
    ``displacement_mask``, ``id`` (``<sample_id>#v<k>``).

    Raises
    ------
    InputFileError
        Not a priors dataset, a priors file of another morphable model, or no sample with lab
        photos.
    """

    GT_FIELDS = (
        "identity",
        "expression",
        "deformation",
        "deformation_mask",
        "displacement",
        "displacement_mask",
    )

    CAMERA_FIELDS = ("K", "scan_R", "scan_t")

    def __init__(
        self,
        path: str | Path,
        *,
        template: str = "anthropometric",
        model_name: str | None = None,
        model: Any | None = None,
    ) -> None:
        if model is not None and model_name is None:
            model_name = str(model.name)
        self.model = model
        self.source = _H5Source(path, PRIORS_SCHEMA, "a priors dataset (facehd build-priors)")
        s = self.source
        missing = [f for f in (*self.GT_FIELDS, "source") if f not in s.fields]
        if missing:
            raise InputFileError(s.path, f"priors dataset lacks fields {missing}")
        self.model_name = str(s.attrs.get("model", ""))
        if model_name is not None and self.model_name.lower() != model_name.lower():
            raise InputFileError(
                s.path,
                f"priors were fitted with the morphable model {self.model_name!r}, but training "
                f"uses {model_name!r}; build the priors with --model {model_name}",
            )
        stored = s.attrs.get("model_fingerprint")
        if model is not None and stored is not None and not model.matches_fingerprint(stored):
            raise InputFileError(
                s.path,
                f"priors were fitted with another version of {self.model_name!r} (its shape "
                "bases differ from this one's); rebuild them with facehd build-priors",
            )
        self.template = template
        self.items: list[tuple[int, str, int]] = []  # (row, photos file, view)
        self.without_photos: list[str] = []
        for row, sid in enumerate(s.sample_ids):
            found = lab_photos_path(s.read("source", row), sid, s.path)
            if found is None:
                self.without_photos.append(sid)
                continue
            with np.load(found) as z:
                if "images" not in z.files:
                    raise InputFileError(found, "lab photos file lacks 'images'")
                views = int(z["images"].shape[0])
            self.items += [(row, str(found), v) for v in range(views)]
        if not self.items:
            raise InputFileError(
                s.path,
                "no sample has lab photos (looked for <scan stem>.photos.npz beside each scan; "
                "make them with facehd synth --photos V)",
            )

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def has_clean(self) -> bool:
        return "images_clean" in _load_npz(self.items[0][1])

    @property
    def has_cameras(self) -> bool:
        """Every lab photos file holds its camera in the scan's frame."""
        for path in sorted({p for _, p, _ in self.items}):
            with np.load(path) as z:
                if not all(k in z.files for k in self.CAMERA_FIELDS):
                    return False
        return True

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row, photos_path, view = self.items[i]
        photos = _load_npz(photos_path)
        item = align_lab_photo(photos, view, self.template)
        for name in self.GT_FIELDS:
            item[name] = self.source.read(name, row)
        item["id"] = f"{self.source.sample_ids[row]}#v{view}"
        if self.model is not None and all(k in photos for k in self.CAMERA_FIELDS):
            priors = {k: item[k] for k in ("identity", "expression", "deformation")}
            for k in ("scale", "rotation", "translation"):
                priors[k] = self.source.read(k, row)
            item["priors_uv"], item["priors_uv_mask"] = priors_uv_image(
                self.model,
                priors,
                photos["K"][view],
                photos["scan_R"][view],
                photos["scan_t"][view],
                item["crop_transform"],
            )
        return item


def photos_dataset_from_synthetic(
    scans_dir: str | Path,
    out: str | Path,
    *,
    clean: bool = False,
    template: str = "facehd-synth",
) -> Path:
    """A ``facehd.photos/1`` dataset from the truth of ``facehd synth --photos V`` (no detector).

    Every view of every ``<id>.photos.npz`` in ``scans_dir`` becomes one sample ``<id>_vKK``:
    the 224 crop aligned from the photo's true 68 landmarks with ``template``, the skin mask and
    the true landmarks in the crop (fields ``image``, ``mask``, ``landmarks68``; with ``clean``
    also ``image_clean``, which makes it a de-retouching pairs file). Use it instead of
    ``facehd prepare-images`` where the detector's landmarks are not what is being studied.
    """
    from facehd.h5io import ShardedDatasetWriter

    files = sorted(Path(scans_dir).glob("*.photos.npz"))
    if not files:
        raise InputFileError(scans_dir, "no <id>.photos.npz (make them with facehd synth --photos)")
    fields = {
        "image": ((CROP, CROP, 3), "uint8"),
        "mask": ((CROP, CROP), "uint8"),
        "landmarks68": ((68, 2), "float32"),
    }
    if clean:
        fields["image_clean"] = ((CROP, CROP, 3), "uint8")
    attrs = {"source": "facehd synth truth", "config": {"template": template}}
    with ShardedDatasetWriter(out, "facehd.photos/1", attrs, fields, overwrite=True) as w:
        for path in files:
            sid = path.name[: -len(".photos.npz")]
            z = _load_npz(str(path))
            for v in range(z["images"].shape[0]):
                a = align_lab_photo(z, v, template)
                values = {
                    "image": a["image"],
                    "mask": a["mask"],
                    "landmarks68": a["landmarks"].astype(np.float32),
                }
                if clean:
                    values["image_clean"] = a["image_clean"]
                w.add(f"{sid}_v{v:02d}", values)
        w.finalize()
    return Path(out)

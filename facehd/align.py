"""Photos in, aligned face crops out: loading, 5-point alignment, the 224 crop and an HD crop.

Alignment follows the base model (Deep3DFaceRecon, used by HRN): the 5 photo landmarks (eye
centres, nose tip, mouth corners) are fitted by least squares to a 3D landmark template under an
affine camera, ``p ≈ M X + c`` (``M`` 2 x 3, ``c`` 2); the photo's scale is the mean norm of the two
rows of ``M`` (pixels per mm) and ``c`` is where the template origin lies in the photo. The photo is
then scaled (no rotation) so that 1 mm at the face spans :data:`PX_PER_MM` = 1.02 crop pixels
(the base model's rescale factor: 102 px per BFM unit of 100 mm) and cropped to 224 x 224 with the
template origin on the base camera's principal point: column 112, row 111
(``facehd.render.camera.hrn_camera``: ``row = H - 1 - 112``). A model placed at the origin and
rendered with the base camera therefore overlays the crop. Unlike the base model's code, the crop
is not rounded to whole pixels: the :class:`CropTransform` is exact, ``p_crop = s p_photo + t``.

The HD crop (default 512 x 512, for textures) covers exactly the same region at a higher
resolution (:meth:`CropTransform.resized`).

Pixel convention: ``(x, y)`` = (column, row), the centre of the top-left pixel at ``(0, 0)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from facehd.errors import (
    DegenerateInputError,
    InputFileError,
    InputFileWarning,
    is_broken_link,
    is_file_or_broken_link,
)

CROP_SIZE = 224
"""Side of the base model's input crop, pixels."""
HD_CROP_SIZE = 512
"""Default side of the HD crop (same region as the 224 crop), pixels."""
HD_CROP_MAX = 4096
"""Largest side of the HD crop, pixels: 4096² is eight times the area of a 12-megapixel
photo's face region; a mistyped larger size would hold tens of GB per photo in memory."""
PX_PER_MM = 1.02
"""Scale of the crop at the face: 102 px per 100 mm (the base model's rescale factor)."""
ENLARGED_CROP = 1.5
"""A face whose 224 crop enlarges its photo more than this (the crop transform's scale: crop
pixels per photo pixel) is too small in its photo for skin detail: the UV texture the detail
networks see is sampled from that crop. ``reconstruct`` and ``prepare-images`` name such faces."""

TEMPLATE_5P_MM = np.array(
    [
        [-30.5, 31.0, 15.0],  # centre of the subject's right eye (image left)
        [30.5, 31.0, 15.0],  # centre of the left eye
        [0.0, -5.0, 45.0],  # nose tip (pronasale)
        [-26.0, -30.0, 15.0],  # right mouth corner (cheilion)
        [26.0, -30.0, 15.0],  # left mouth corner
    ]
)
"""The 3D 5-point landmark template (mm; x to the subject's left, y up, z towards the camera).

Derived from mean adult face proportions (Farkas, *Anthropometry of the Head and Face*, 1994,
North American young adults, men and women averaged): intercanthal width en-en 32.5 mm and biocular
width ex-ex 89.5 mm give eye centres (mid-points of the corners, as in the alignment points) 61 mm
apart; mouth width ch-ch 52 mm; canthal line to subnasale 40 mm and subnasale to stomion 21 mm
put the mouth corners 61 mm below the eye line (cheilion ~1-2 mm above stomion); the nose tip
projects 36 mm below the eye line and 30 mm in front of the canthi; the mouth corners lie at the
depth of the eye corners. The origin sits on the midline 31 mm below the eye line and 45 mm
behind the nose tip, about the centroid of a front-face mesh, so that the face is centred in the
crop (eyes at row ~79, mouth at row ~142 of the 224 crop).
"""


TEMPLATE_DEEP3D_MM = 100.0 * np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],
        [0.30979887, 0.28972036, 0.13179526],
        [0.0032535, -0.04617932, 0.55244243],
        [-0.25216928, -0.38133916, 0.22405732],
        [0.2484662, -0.38128236, 0.22235769],
    ]
)
"""The 5-point template of Deep3DFaceRecon and HRN (mm, same axes and order as
:data:`TEMPLATE_5P_MM`): the points its ``load_lm3d`` takes from ``similarity_Lm3D_all.mat`` (eye
centres as the means of the eye corners, nose tip, mouth corners), in the BFM's decimetres times
100. Their official checkpoints were trained on crops aligned to it: against the anthropometric
template its crop is ~6% larger and the mouth sits ~10 px lower, so facehd aligns photos with it
for those checkpoints (``named_template("deep3d")``)."""


def template_from_model(model: Any) -> np.ndarray:
    """The 5-point template of a morphable model: its mean face's landmarks (mm, model frame).

    model : a ``facehd.morphable.MorphableModel`` -> (5, 3) float mm, order of
    ``facehd.detect.FIVE_POINT_NAMES`` (eye centres = mean of the eye corners, as for photos). With
    this template, the model's mean face placed at the origin and rendered by the base camera
    lands on the landmarks of the crop.
    """
    from facehd.detect import landmarks5_from_68

    vertices = model.vertices(None, None, mm=True)
    return landmarks5_from_68(np.asarray(model.landmarks(vertices), dtype=np.float64))


def named_template(name: str) -> np.ndarray:
    """A 5-point template by name: ``"anthropometric"`` (:data:`TEMPLATE_5P_MM`, the default),
    ``"deep3d"`` (:data:`TEMPLATE_DEEP3D_MM`, for Deep3DFaceRecon's and HRN's own checkpoints) or
    the name of a morphable model that loads without files (``"facehd-synth"``)."""
    if name == "anthropometric":
        return TEMPLATE_5P_MM.copy()
    if name == "deep3d":
        return TEMPLATE_DEEP3D_MM.copy()
    from facehd.morphable import load_model

    try:
        model = load_model(name)
    except Exception as exc:  # unknown name or a model that needs files
        raise ValueError(
            f"unknown 5-point template {name!r}: use 'anthropometric', 'deep3d' or a model name "
            f"({exc})"
        ) from exc
    return template_from_model(model)


# --------------------------------------------------------------------------------------------
# The crop transform
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropTransform:
    """A crop of a photo: ``p_crop = scale * p_photo + translation`` (pixels, x = col, y = row).

    Attributes
    ----------
    scale : float
        Crop pixels per photo pixel.
    translation : (2,) float
        Crop position of the photo's ``(0, 0)`` pixel centre.
    size : int
        Side of the square crop, pixels.
    """

    scale: float
    translation: tuple[float, float]
    size: int

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"crop scale must be positive and finite, got {self.scale}")
        if len(self.translation) != 2 or not np.all(np.isfinite(self.translation)):
            raise ValueError(f"crop translation must be 2 finite numbers, got {self.translation}")
        if int(self.size) <= 0:
            raise ValueError(f"crop size must be positive, got {self.size}")

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Photo pixels -> crop pixels. points : (..., 2) -> (..., 2)."""
        points = _check_points(points)
        return self.scale * points + np.asarray(self.translation)

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels -> photo pixels. points : (..., 2) -> (..., 2)."""
        points = _check_points(points)
        return (points - np.asarray(self.translation)) / self.scale

    def matrix(self) -> np.ndarray:
        """(3, 3) homogeneous matrix of :meth:`apply`."""
        tx, ty = self.translation
        return np.array([[self.scale, 0.0, tx], [0.0, self.scale, ty], [0.0, 0.0, 1.0]])

    def resized(self, size: int) -> CropTransform:
        """The same photo region sampled at ``size`` x ``size`` pixels.

        Pixel edges scale by ``k = size / self.size``: ``p' + 0.5 = k (p + 0.5)``.
        """
        k = size / self.size
        tx, ty = self.translation
        return CropTransform(
            self.scale * k, (k * tx + 0.5 * k - 0.5, k * ty + 0.5 * k - 0.5), int(size)
        )

    def photo_box(self) -> tuple[float, float, float, float]:
        """The cropped region ``(x0, y0, x1, y1)`` in photo *edge* coordinates (pixel ``i``
        spans ``[i, i + 1)``), as Pillow's ``resize(box=...)`` takes it."""
        tx, ty = self.translation
        x0 = (-0.5 - tx) / self.scale + 0.5
        y0 = (-0.5 - ty) / self.scale + 0.5
        side = self.size / self.scale
        return (x0, y0, x0 + side, y0 + side)


def _check_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim < 1 or points.shape[-1] != 2:
        raise ValueError(f"expected points (..., 2), got {points.shape}")
    return points


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateFit:
    """Least-squares affine-camera fit of the template to 5 photo landmarks."""

    px_per_mm: float
    """Photo pixels per template millimetre (mean norm of the rows of ``M``)."""
    origin: tuple[float, float]
    """Photo position of the template origin, pixels."""
    rms: float
    """Root-mean-square residual of the fit, pixels."""


def fit_template(landmarks5: np.ndarray, template: np.ndarray = TEMPLATE_5P_MM) -> TemplateFit:
    """Fit ``p ≈ M X + c`` (M 2 x 3, c 2) by least squares.

    landmarks5 : (5, 2) photo pixels (order of ``facehd.detect.FIVE_POINT_NAMES``);
    template : (5, 3) mm. Raises DegenerateInputError when the landmarks span no area.
    """
    p = np.asarray(landmarks5, dtype=np.float64)
    X = np.asarray(template, dtype=np.float64)
    if p.shape != (5, 2):
        raise ValueError(f"expected landmarks5 (5, 2), got {p.shape}")
    if X.shape != (5, 3):
        raise ValueError(f"expected template (5, 3), got {X.shape}")
    if not np.all(np.isfinite(p)):
        raise DegenerateInputError("landmarks contain NaN or inf")
    centred = p - p.mean(0)
    if np.linalg.matrix_rank(centred, tol=1e-6 * max(1.0, np.abs(p).max())) < 2:
        raise DegenerateInputError("the 5 landmarks are coincident or collinear")
    A = np.concatenate([X, np.ones((5, 1))], axis=1)  # (5, 4)
    sol, *_ = np.linalg.lstsq(A, p, rcond=None)  # (4, 2): rows of M transposed, then c
    M, c = sol[:3].T, sol[3]
    s = 0.5 * (np.linalg.norm(M[0]) + np.linalg.norm(M[1]))
    rms = float(np.sqrt(np.mean(np.sum((A @ sol - p) ** 2, axis=1))))
    if not np.isfinite(s) or s <= 0:
        raise DegenerateInputError(f"alignment scale is not positive ({s})")
    return TemplateFit(float(s), (float(c[0]), float(c[1])), rms)


def crop_transform(
    landmarks5: np.ndarray,
    *,
    size: int = CROP_SIZE,
    px_per_mm: float = PX_PER_MM,
    template: np.ndarray = TEMPLATE_5P_MM,
) -> CropTransform:
    """The base model's crop for a photo with these 5 landmarks (see the module docstring).

    The template origin lands on ``(size / 2, size - 1 - size / 2)`` and the face at
    ``px_per_mm`` crop pixels per mm (for ``size = 224``: (112, 111), the base camera's centre).
    """
    fit = fit_template(landmarks5, template)
    s = px_per_mm / fit.px_per_mm
    target = np.array([size / 2, size - 1 - size / 2])
    t = target - s * np.asarray(fit.origin)
    return CropTransform(float(s), (float(t[0]), float(t[1])), int(size))


def warp(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Resample ``image`` into the crop of ``transform`` (bicubic, antialiased when shrinking;
    black outside the photo).

    image : (H, W, 3) uint8, (H, W) uint8 or (H, W) float32 -> (size, size[, 3]) same dtype.
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        mode = "RGB"
    elif image.ndim == 2 and image.dtype == np.uint8:
        mode = "L"
    elif image.ndim == 2 and image.dtype == np.float32:
        mode = "F"
    else:
        raise ValueError(
            f"expected (H, W, 3) uint8, (H, W) uint8 or (H, W) float32, got {image.shape} "
            f"{image.dtype}"
        )
    h, w = image.shape[:2]
    x0, y0, x1, y1 = transform.photo_box()
    # The photo region the filter reads: the box plus the bicubic support (2 px, scaled when
    # shrinking), clipped to the photo and pasted on black where it leaves it.
    margin = int(np.ceil(2.0 / min(1.0, transform.scale))) + 2
    rx0, ry0 = int(np.floor(x0)) - margin, int(np.floor(y0)) - margin
    rx1, ry1 = int(np.ceil(x1)) + margin, int(np.ceil(y1)) + margin
    canvas = np.zeros((ry1 - ry0, rx1 - rx0, *image.shape[2:]), dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(rx0, 0), max(ry0, 0), min(rx1, w), min(ry1, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - ry0 : sy1 - ry0, sx0 - rx0 : sx1 - rx0] = image[sy0:sy1, sx0:sx1]
    pil = Image.fromarray(canvas)
    assert pil.mode == mode
    out = pil.resize(
        (transform.size, transform.size),
        Image.Resampling.BICUBIC,
        box=(x0 - rx0, y0 - ry0, x1 - rx0, y1 - ry0),
    )
    return np.asarray(out).copy()


@dataclass(frozen=True)
class AlignedFace:
    """A face cropped the base model's way, with its HD twin.

    Attributes
    ----------
    image : (224, 224, 3) uint8
    image_hd : (S, S, 3) uint8, the same region at ``S = transform_hd.size``
    transform : CropTransform, photo -> 224 crop
    transform_hd : CropTransform, photo -> HD crop
    landmarks5 : (5, 2) float, the alignment points in the 224 crop
    """

    image: np.ndarray
    image_hd: np.ndarray
    transform: CropTransform
    transform_hd: CropTransform
    landmarks5: np.ndarray


def align_face(
    image: np.ndarray,
    landmarks5: np.ndarray,
    *,
    size: int = CROP_SIZE,
    hd_size: int = HD_CROP_SIZE,
    px_per_mm: float = PX_PER_MM,
    template: np.ndarray = TEMPLATE_5P_MM,
) -> AlignedFace:
    """Align and crop ``image`` (H, W, 3) uint8 given its 5 landmarks (5, 2) photo pixels."""
    t = crop_transform(landmarks5, size=size, px_per_mm=px_per_mm, template=template)
    t_hd = t.resized(hd_size)
    return AlignedFace(warp(image, t), warp(image, t_hd), t, t_hd, t.apply(landmarks5))


# --------------------------------------------------------------------------------------------
# Loading photos
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    """A photo as facehd uses it: upright 8-bit RGB.

    Attributes
    ----------
    image : (H, W, 3) uint8, after the EXIF orientation was applied
    path : the file
    orientation : the EXIF orientation tag that was applied (1 = none)
    mode : the Pillow mode of the file (``RGB``, ``L``, ``CMYK``, ``I;16`` ...)
    """

    image: np.ndarray
    path: Path
    orientation: int
    mode: str


PHOTO_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jfif",
    ".jpe",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".avif",
    ".heic",
    ".heif",
)
"""File suffixes treated as photos (any case). JPEG's other names (``.jfif``, as browsers save
it, ``.jpe``) and the phone formats HEIC/HEIF and AVIF count too, so that a folder search lists
them rather than passing over them without a word. HEIC/HEIF (iPhone photos) are decoded by
pillow-heif, which the ``photo`` extra installs (:func:`register_photo_decoders`); without it, or
with a Pillow that lacks AVIF, such a photo fails by name (:func:`unreadable_photo`)."""


@cache
def register_photo_decoders() -> tuple[str, ...]:
    """Register with Pillow the optional photo decoders installed, once; the suffixes they add.

    pillow-heif (HEIC/HEIF, the ``photo`` extra) applies the container's rotation as it decodes,
    sets the photo's EXIF orientation to 1 and keeps the original under
    ``info["original_orientation"]`` (:func:`load_photo` records that one), and reads 10- and
    12-bit photos as 8-bit.
    """
    try:
        import pillow_heif
    except ImportError:
        return ()
    pillow_heif.register_heif_opener()
    return (".heic", ".heif")


def is_photo_file(path: Path) -> bool:
    """Whether a folder search takes ``path`` for a photo: a file with a suffix of
    :data:`PHOTO_SUFFIXES`, or a link of that name whose target is gone (listed, so that it
    fails by name rather than go missing without a word)."""
    return path.suffix.lower() in PHOTO_SUFFIXES and is_file_or_broken_link(path)


#: Suffixes of photo formats Pillow reads only with a decoder it may lack, and their names.
_OPTIONAL_FORMATS = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF"}


def unreadable_photo(path: Path) -> str | None:
    """Why the photo ``path`` cannot be read, known without reading it, or None: a link whose
    target is gone, or a format this Pillow has no decoder for (HEIC/HEIF without pillow-heif)."""
    from PIL import Image

    if is_broken_link(path):
        return f"broken link: {path.readlink()} is not there"
    fmt = _OPTIONAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        return None
    register_photo_decoders()
    if path.suffix.lower() in Image.registered_extensions():
        return None
    plugin = "" if fmt == "AVIF" else "install pillow-heif (pip install 'facehd[photo]') or "
    return f"this Pillow has no {fmt} decoder; {plugin}convert the photo to JPEG or PNG"


#: Gaussian blur (sigma, pixels) that turns the black and white dots of a bi-level photo back
#: into its greys (:func:`to_rgb8`). Five real face photos at 1024² and 400², and the drawn
#: test face, dithered to 1 bit (Floyd-Steinberg): mediapipe found a face in none as read,
#: in all with a blur from 1 px up (0.7 px: 7 of the 10 real ones).
BILEVEL_BLUR_PX = 1.5


def to_rgb8(img: object) -> np.ndarray:
    """A Pillow image as (H, W, 3) uint8 RGB.

    - 16-bit grey (``I;16*``) and 32-bit integer (``I``) are scaled by 255 / 65535, or, when
      their largest value is at most 255, taken as they are (8-bit data in a 16-bit file, as
      Pillow writes an integer numpy array: scaled, the photo would be black), or above 65535, by
      255 / (2^31 - 1) (32-bit data: clipped, it would be white). 10-14-bit data stored unscaled
      read as dark as a viewer shows them. Float (``F``) is scaled by 255 when its maximum is
      <= 1, else clipped to 255.
      (Pillow already reads 16-bit RGB PNGs as 8-bit RGB, scaled.)
    - CMYK goes through its embedded ICC profile to sRGB when it has one (ImageCms), else through
      Pillow's conversion.
    - Any other photo with an embedded RGB or grey ICC profile (Adobe RGB, Display P3, ProPhoto,
      a linear profile, a grey gamma) is converted from it to sRGB, as a viewer shows it: its
      numbers are not sRGB's (an Adobe RGB skin tone read as sRGB loses a tenth of its red). A
      profile that is sRGB already (within one level), or one that cannot be read, changes
      nothing (:func:`_icc_to_srgb`).
    - Transparency (RGBA, LA, PA, P with a transparent colour) is composited over white.
    - Bi-level (``1``, each pixel black or white: a photo dithered for a fax or a laser
      printer) is read as the grey its dots stand for, blurred by :data:`BILEVEL_BLUR_PX`;
      the face detector finds no face in the dots themselves.
    - Grey, palette, YCbCr, LAB, HSV: Pillow's conversion.
    """
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    icc = img.info.get("icc_profile") if img.mode != "CMYK" else None
    rgb = _to_rgb8_raw(img)
    return _icc_to_srgb(rgb, icc) if icc else rgb


def _to_rgb8_raw(img: Any) -> np.ndarray:
    """:func:`to_rgb8` without the ICC profile of an RGB or grey photo."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float64)
        top = a.max(initial=0.0)
        full = 255.0 if top <= 255 else 65535.0 if top <= 65535 else float(2**31 - 1)
        g = np.clip(np.round(a * (255.0 / full)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
        g = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "CMYK":
        icc = img.info.get("icc_profile")
        if icc:
            try:
                import io

                from PIL import ImageCms

                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                dst = ImageCms.createProfile("sRGB")
                out = ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
                if out is not None:
                    return np.asarray(out, dtype=np.uint8).copy()
            except (ImportError, OSError, ImageCms.PyCMSError):
                pass
        return np.asarray(img.convert("RGB")).copy()
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB")).copy()
    if mode == "1":
        from PIL import ImageFilter

        img = img.convert("L").filter(ImageFilter.GaussianBlur(BILEVEL_BLUR_PX))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img).copy()


def _icc_to_srgb(rgb: np.ndarray, icc: bytes) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 in the colours of the ICC profile ``icc`` -> sRGB.

    An RGB profile converts the three channels; a grey profile the grey of a photo whose
    channels are equal (a grey photo read by :func:`to_rgb8`). The photo is returned unchanged
    when the profile is sRGB already (no level of a 17-step grid, or of the 256 greys, moves by
    more than 1), does not fit the photo, or cannot be read."""
    import io

    from PIL import Image

    try:
        from PIL import ImageCms
    except ImportError:  # Pillow built without littlecms
        return rgb
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = src.profile.xcolor_space.strip()
        if space == "RGB":
            levels = np.linspace(0, 255, 17).round().astype(np.uint8)
            grid = np.meshgrid(levels, levels, levels, indexing="ij")
            mode, probe, pixels = "RGB", np.stack(grid, -1).reshape(1, -1, 3), rgb
        elif space == "GRAY" and grey:
            mode, probe, pixels = "L", np.arange(256, dtype=np.uint8)[None], rgb[..., 0]
        else:
            return rgb
        transform = ImageCms.buildTransform(src, ImageCms.createProfile("sRGB"), mode, "RGB")
        seen = np.asarray(ImageCms.applyTransform(Image.fromarray(probe, mode), transform))
        wanted = probe if mode == "RGB" else np.repeat(probe[..., None], 3, axis=-1)
        if np.abs(seen.astype(np.int16) - wanted).max() <= 1:
            return rgb
        out = ImageCms.applyTransform(
            Image.fromarray(np.ascontiguousarray(pixels), mode), transform
        )
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return rgb  # a damaged profile must not lose the photo
    return np.asarray(out, dtype=np.uint8).copy()


#: The largest photo :func:`load_photo` reads, in pixels (250 MP: 750 MB as 8-bit RGB). Pillow's
#: own guard against decompression bombs (a warning from 89 MP, an error from 179 MP) is
#: replaced by this limit, so a 100 MP medium-format photo reads without a word.
MAX_PHOTO_PIXELS = 250_000_000


def load_photo(path: str | Path, *, min_side: int = 32) -> Photo:
    """Read a photo upright (EXIF orientation applied) as 8-bit RGB (see :func:`to_rgb8`).

    Raises InputFileError naming the file for a missing, unreadable, truncated, tiny or too large
    (:data:`MAX_PHOTO_PIXELS`) image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    register_photo_decoders()  # HEIC/HEIF are read by content, whatever the file's name
    if (why := unreadable_photo(path)) is not None:
        raise InputFileError(path, why)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    if path.stat().st_size == 0:
        raise InputFileError(path, "empty file (0 bytes)")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size is checked below, with its own message
    # Pillow's warnings (a damaged EXIF block) are said below, with the photo's path
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        try:
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PHOTO_PIXELS:
                    raise InputFileError(
                        path,
                        f"image too large to read: {w} x {h} px ({w * h / 1e6:.0f} MP; photos "
                        f"up to {MAX_PHOTO_PIXELS / 1e6:.0f} MP are read): downscale it",
                    )
                try:
                    # read before the pixels: Pillow's TIFF reader turns the pixels upright as it
                    # loads them and drops the tag, so the tag read after would say 1
                    orientation = int(img.getexif().get(0x0112, 1))
                    # HEIF: the decoder turned the pixels already (tag now 1); the file's tag
                    orientation = int(img.info.get("original_orientation") or orientation)
                except Exception:  # a broken EXIF block must not lose the photo
                    orientation = 1
                img.load()
                mode = img.mode
                upright = ImageOps.exif_transpose(img) or img
                rgb = to_rgb8(upright)
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,
            OSError,
            SyntaxError,
            ValueError,
        ) as exc:
            if "truncated" in str(exc).lower():
                # Pillow's words say neither what is wrong with the file nor what to do
                raise InputFileError(
                    path,
                    "truncated: the file ends before its image data does (a download or copy "
                    "cut short?); copy it again, or, when a viewer shows it whole (only its end "
                    "marker is missing), save it again from that viewer",
                ) from exc
            raise InputFileError(path, f"unreadable image ({type(exc).__name__}: {exc})") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    for said in dict.fromkeys(str(n.message).strip() for n in notes):
        warnings.warn(f"{path}: {said} (read as far as it goes)", InputFileWarning, stacklevel=2)
    if min(rgb.shape[:2]) < min_side:
        raise InputFileError(path, f"image too small ({rgb.shape[1]} x {rgb.shape[0]} px)")
    return Photo(rgb, path, orientation if 1 <= orientation <= 8 else 1, mode)

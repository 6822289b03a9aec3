"""Synthetic photos with exact ground truth (``facehd synth --photos V``).

For each synthetic scan (same subject, expression and detail maps as :mod:`pipelines.synth`), V
photos are rendered with the differentiable renderer (:mod:`facehd.render`): the true M1 shaded
with the detail normals of the true displacement map, an albedo texture with skin detail and
blemishes, random pose (yaw within ±``max_yaw_deg``), SH lighting, background and camera.

Files per scan ``<id>``:

- ``photos/<id>_vKK.png`` — the photos, readable by ``facehd prepare-images`` as in-the-wild photos;
- ``<id>.photos.npz`` — the truth, so that ``facehd build-priors`` can attach the photos to the
  scan's sample (lab images with ground-truth maps):

  ===================== ================== =====================================================
  ``images``            (V, S, S, 3) uint8 the photos (skin with blemishes)
  ``images_clean``      (V, S, S, 3) uint8 the same renders without the blemish layer
  ``K``                 (V, 3, 3)          intrinsics (pixels, x = column, y = row)
  ``R``, ``t``          (V, 3, 3), (V, 3)  ``x_cam = R @ x_model_mm + t`` (OpenCV: +z forward)
  ``scan_R``, ``scan_t`` (V, 3, 3), (V, 3)  the same camera in the scan's frame and units:
                                           ``x_cam = scan_R @ x_scan + scan_t`` (as a calibrated
                                           capture rig gives it; projects identically with ``K``)
  ``pose_deg``          (V, 3)             yaw, pitch, roll of the head, degrees
  ``sh``                (V, 9, 3)          SH lighting (the renderer's, ambient included)
  ``landmarks68``       (V, 68, 2)         true iBUG-68 landmarks in the photo (visible or not)
  ``masks``             (V, S, S) bool     skin pixels (the model's fit region, visible)
  ``visible``           (V, S, S) bool     every pixel that sees the face mesh
  ``crops``             (V, 224, 224, 3)   the base model's aligned crop of each photo
  ``crop_transform``    (V, 3)             ``(scale, tx, ty)``: ``p_crop = scale p_photo + t``
  ``albedo``            (K_tex,)           albedo coefficients of the subject
  ``texture``           (T, T, 3) float32  clean albedo texture in [0, 1] (UV convention of
                                           :mod:`facehd.uv`)
  ``texture_blemish``   (T, T, 3) float32  the same with the blemish layer
  ``blemish_mask``      (T, T) float32     blemish opacity in [0, 1]
  ===================== ================== =====================================================

Pairs (``images``, ``images_clean``) and (``texture_blemish``, ``texture``) are the training pairs
of the de-retouching module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facehd.align import align_face
from facehd.detect import landmarks5_from_68
from facehd.morphable import MorphableModel
from facehd.render import PinholeCamera, Renderer, render_with_displacement
from facehd.transforms import Similarity
from facehd.uv import rasterize_uv, texel_centers_uv


@dataclass
class PhotoConfig:
    """Configuration of the synthetic photos."""

    views: int = 3
    """Photos per scan."""
    image_size: int = 512
    """Side of each photo, pixels."""
    max_yaw_deg: float = 60.0
    """Head yaw is uniform in ±this."""
    min_yaw_deg: float = 0.0
    """Above 0, side views: the yaw's magnitude is uniform in [this, ``max_yaw_deg``], its side
    (left or right) drawn at random."""
    max_pitch_deg: float = 15.0
    """Head pitch is uniform in ±this."""
    max_roll_deg: float = 10.0
    """Head roll is uniform in ±this."""
    texture_size: int = 256
    """Side of the albedo texture."""
    blemishes: int = 40
    """Number of blemishes (spots, moles) painted on the skin."""
    cavity: float = 0.35
    """Darkening of creases and pores (ambient occlusion, which the SH shading lacks): the albedo
    is multiplied by ``1 - cavity * c``, with ``c`` in [0, 1] growing as the displacement lies
    below its surroundings (by up to 0.15 mm). In photos creases look dark whatever the light;
    with shading alone their contrast flips with the light's direction."""


@dataclass
class SynthPhotos:
    """The rendered photos of one scan and their truth (see the module docstring for fields)."""

    arrays: dict[str, np.ndarray]
    """The ``.photos.npz`` arrays."""


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head rotation (3, 3) from yaw (about +y), pitch (about +x), roll (about +z), degrees.

    ``R = Ry(yaw) · Rx(pitch) · Rz(roll)`` in the model frame (+x subject's left, +y up, +z out).
    """
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def albedo_textures(
    model: MorphableModel, albedo_coeffs: np.ndarray, rng: np.random.Generator, config: PhotoConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean and blemished albedo textures (T, T, 3) and the blemish opacity (T, T).

    The clean texture is the model's albedo rasterised into UV space with fine skin detail (a
    smoothed multiplicative noise of a few percent); blemishes are brownish-red spots of 1–4 texels
    placed on the skin (the model's fit region).
    """
    size = config.texture_size
    table = rasterize_uv(model.uvs, model.faces, (size, size))
    vertex_albedo = np.clip(model.albedo(albedo_coeffs), 0.0, 1.0)
    tex = table.interpolate(vertex_albedo)
    mean = vertex_albedo.mean(axis=0)
    tex[~table.mask] = mean
    noise = rng.normal(size=(size, size))
    k = np.array([0.25, 0.5, 0.25])
    for axis in (0, 1):
        noise = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), axis, noise)
    clean = np.clip(tex * (1.0 + 0.06 * noise[..., None]), 0.0, 1.0)

    skin = table.interpolate(model.regions.fit.astype(np.float64)) > 0.99
    candidates = np.argwhere(skin)
    alpha = np.zeros((size, size))
    if len(candidates) and config.blemishes > 0:
        picks = candidates[rng.choice(len(candidates), size=config.blemishes, replace=True)]
        rows, cols = np.mgrid[0:size, 0:size]
        for (r, c), radius, strength in zip(
            picks,
            rng.uniform(0.8, 2.5, config.blemishes),
            rng.uniform(0.4, 0.9, config.blemishes),
            strict=True,
        ):
            spot = strength * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * radius**2))
            alpha = np.maximum(alpha, spot)
    spot_colour = clean * np.array([0.62, 0.42, 0.38])
    blemished = clean * (1.0 - alpha[..., None]) + spot_colour * alpha[..., None]
    return clean.astype(np.float32), blemished.astype(np.float32), alpha.astype(np.float32)


def cavity_map(displacement: np.ndarray, size: int, depth_mm: float = 0.15) -> np.ndarray:
    """How far each texel lies below its surroundings, (size, size) in [0, 1].

    ``c = clip((blur(d) - d) / depth_mm, 0, 1)`` with a Gaussian blur of 2 texels (of the
    displacement map ``d``, mm), resampled to ``size`` bilinearly: 1 in creases and pores
    ``depth_mm`` deep, 0 on flat or raised skin.
    """
    from scipy.ndimage import gaussian_filter, zoom

    d = np.asarray(displacement, dtype=np.float64)
    c = np.clip((gaussian_filter(d, 2.0, mode="nearest") - d) / depth_mm, 0.0, 1.0)
    if c.shape != (size, size):
        c = np.clip(zoom(c, (size / c.shape[0], size / c.shape[1]), order=1), 0.0, 1.0)
    return c


def _random_sh(rng: np.random.Generator) -> np.ndarray:
    """SH lighting (9, 3): ambient near 1, a random key light from the camera's side of the
    face (+z in the model frame, the lighting frame of the renders), a little colour.

    The key light ``l`` (direction times strength, model frame) makes the first-order terms of
    the irradiance ``n . l``: the band-1 basis functions of :mod:`facehd.render.shading` are
    ``-ny, nz, -nx`` (times a constant), so their coefficients are ``-ly, lz, -lx``.
    """
    sh = np.zeros((9, 3))
    sh[0] = rng.uniform(0.75, 1.05) + rng.normal(scale=0.03, size=3)
    light = rng.normal(scale=0.25, size=3)
    light[2] = abs(light[2])  # from the camera side
    sh[1:4] = np.array([-light[1], light[2], -light[0]])[:, None]
    sh[1:4] += rng.normal(scale=0.02, size=(3, 3))
    sh[4:] = rng.normal(scale=0.05, size=(5, 1)) + rng.normal(scale=0.01, size=(5, 3))
    return sh


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    top, bottom = rng.uniform(0.05, 0.95, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    bg = top * (1 - ramp) + bottom * ramp
    return np.clip(bg + rng.normal(scale=0.02, size=(size, size, 3)), 0.0, 1.0)


def render_photos(
    model: MorphableModel,
    m1_vertices: np.ndarray,
    displacement: np.ndarray,
    landmarks68: np.ndarray,
    rng: np.random.Generator,
    config: PhotoConfig,
    cameras: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> SynthPhotos:
    """Render ``config.views`` photos of one face (model frame, mm) with their truth.

    Parameters
    ----------
    model : the morphable model the face comes from (topology, UVs, albedo basis, regions).
    m1_vertices : (V, 3) float, the true M1 in the model frame, mm.
    displacement : (Hd, Wd) float, the true displacement map, mm.
    landmarks68 : (68, 3) float, the true 3D landmarks, model frame, mm.
    rng : random stream (the caller derives it from the seed, so photos are reproducible).
    config : PhotoConfig.
    cameras : fixed cameras ``(K, R, t)`` (``x_cam = R x_model + t``, OpenCV axes, pixels of a
        ``config.image_size`` square) instead of ``config.views`` random ones; their
        ``pose_deg`` is NaN. Lighting, background and skin are still drawn from ``rng``.
    """
    nv = model.n_vertices
    if m1_vertices.shape != (nv, 3):
        raise ValueError(f"m1_vertices must be ({nv}, 3), got {m1_vertices.shape}")
    if landmarks68.shape != (68, 3):
        raise ValueError(f"landmarks68 must be (68, 3), got {landmarks68.shape}")
    if displacement.ndim != 2:
        raise ValueError(f"displacement must be (Hd, Wd), got {displacement.shape}")
    if not 0.0 <= config.min_yaw_deg <= config.max_yaw_deg:
        raise ValueError(
            f"min_yaw_deg must be in [0, max_yaw_deg = {config.max_yaw_deg:g}], got "
            f"{config.min_yaw_deg:g}"
        )
    size = config.image_size
    albedo = rng.normal(size=model.n_tex) * model.tex_std
    clean_tex, blemish_tex, alpha = albedo_textures(model, albedo, rng, config)
    if config.cavity > 0:
        occlusion = 1.0 - config.cavity * cavity_map(displacement, config.texture_size)
        clean_tex = (clean_tex * occlusion[..., None]).astype(np.float32)
        blemish_tex = (blemish_tex * occlusion[..., None]).astype(np.float32)
    faces_t = torch.as_tensor(np.array(model.faces))
    verts_t = torch.as_tensor(m1_vertices, dtype=torch.float64)
    disp_t = torch.as_tensor(displacement, dtype=torch.float64)
    disp_table = rasterize_uv(model.uvs, model.faces, displacement.shape)
    skin_faces = model.regions.fit[model.faces].all(axis=1)

    out: dict[str, list[np.ndarray]] = {k: [] for k in _VIEW_KEYS}
    for view in range(config.views if cameras is None else len(cameras)):
        if cameras is None:
            if config.min_yaw_deg > 0:  # a side view
                yaw = rng.uniform(config.min_yaw_deg, config.max_yaw_deg) * rng.choice((-1, 1))
            else:
                yaw = rng.uniform(-config.max_yaw_deg, config.max_yaw_deg)
            pitch = rng.uniform(-config.max_pitch_deg, config.max_pitch_deg)
            roll = rng.uniform(-config.max_roll_deg, config.max_roll_deg)
            head = euler_to_matrix(yaw, pitch, roll)
            distance = rng.uniform(900.0, 1300.0)
            focal = 1015.0 * size / 224.0 * rng.uniform(0.9, 1.1)
            flip = np.diag([1.0, -1.0, -1.0])  # camera on +z looking down -z, image y down
            R = flip @ head
            t = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), distance])
            c = (size - 1) / 2
            K = np.array([[focal, 0.0, c], [0.0, focal, c], [0, 0, 1.0]])
        else:
            K, R, t = (np.asarray(a, dtype=np.float64) for a in cameras[view])
            yaw = pitch = roll = float("nan")
        camera = PinholeCamera.from_matrices(K, R, t, (size, size))
        renderer = Renderer(camera)
        sh = _random_sh(rng)
        bg = torch.as_tensor(_background(rng, size))[None]
        images = []
        for tex in (blemish_tex, clean_tex):
            texture = torch.as_tensor(tex, dtype=torch.float64).permute(2, 0, 1)[None]
            result = render_with_displacement(
                renderer,
                verts_t,
                faces_t,
                model.uvs,
                disp_t,
                table=disp_table,
                normals=model.vertex_normals(verts_t),
                texture=texture,
                sh=torch.as_tensor(sh)[None],
                background=bg,
            )
            images.append(result.image[0].clamp(0, 1).numpy())
        face_ids = result.fragments.face_ids[0].numpy()
        skin = (face_ids >= 0) & skin_faces[np.clip(face_ids, 0, None)]
        cam_pts = landmarks68 @ R.T + t
        lm2d = (cam_pts @ K.T)[:, :2] / cam_pts[:, 2:3]
        photo = np.round(images[0] * 255).astype(np.uint8)
        aligned = align_face(photo, landmarks5_from_68(lm2d))
        tr = aligned.transform
        out["images"].append(photo)
        out["images_clean"].append(np.round(images[1] * 255).astype(np.uint8))
        out["K"].append(K)
        out["R"].append(R)
        out["t"].append(t)
        out["pose_deg"].append(np.array([yaw, pitch, roll]))
        out["sh"].append(sh)
        out["landmarks68"].append(lm2d)
        out["masks"].append(skin)
        out["visible"].append(face_ids >= 0)
        out["crops"].append(aligned.image)
        out["crop_transform"].append(np.array([tr.scale, *tr.translation]))
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays.update(albedo=albedo, texture=clean_tex, texture_blemish=blemish_tex, blemish_mask=alpha)
    return SynthPhotos(arrays=arrays)


_VIEW_KEYS = (
    "images",
    "images_clean",
    "K",
    "R",
    "t",
    "pose_deg",
    "sh",
    "landmarks68",
    "masks",
    "visible",
    "crops",
    "crop_transform",
)


def cameras_in_scan_frame(
    rotations: np.ndarray, translations: np.ndarray, model_from_scan: Similarity
) -> tuple[np.ndarray, np.ndarray]:
    """Camera extrinsics ``x_cam = R x_model + t`` re-expressed for scan-frame points.

    With ``x_model = s Q x_scan + c`` (``model_from_scan``) the camera sees
    ``s (R Q x_scan + (R c + t) / s)``; a pinhole projection ignores the common factor ``s``, so
    the scan-frame camera is ``(R Q, (R c + t) / s)`` in scan units.

    Parameters
    ----------
    rotations : (V, 3, 3); translations : (V, 3) model-frame extrinsics (mm).

    Returns
    -------
    ``(scan_R (V, 3, 3), scan_t (V, 3))``.
    """
    q = np.asarray(model_from_scan.rotation, dtype=np.float64)
    c = np.asarray(model_from_scan.translation, dtype=np.float64)
    rot = np.asarray(rotations, dtype=np.float64)
    scan_r = rot @ q
    scan_t = (rot @ c + np.asarray(translations, dtype=np.float64)) / model_from_scan.scale
    return scan_r, scan_t


def texture_uvs(size: int) -> np.ndarray:
    """Texel-centre UVs of a size×size texture, (size, size, 2) (re-exported for readers)."""
    return texel_centers_uv((size, size))


def save_photos(out: Path, sample_id: str, photos: SynthPhotos) -> list[Path]:
    """Write ``photos/<id>_vKK.png``, its exact iBUG-68 landmarks ``photos/<id>_vKK.pts`` (which
    ``facehd prepare-images`` takes instead of detecting) and ``<id>.photos.npz`` under ``out``
    (atomically)."""
    from PIL import Image

    from facehd.landmarks import photo_landmarks_path, save_photo_landmarks
    from pipelines.synth import save_npz_deterministic

    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, img in enumerate(photos.arrays["images"]):
        path = folder / f"{sample_id}_v{k:02d}.png"
        tmp = path.with_name(path.name + ".tmp")
        Image.fromarray(img).save(tmp, format="PNG")
        tmp.replace(path)
        written.append(path)
        lm = photos.arrays["landmarks68"][k]
        written.append(save_photo_landmarks(photo_landmarks_path(path), lm))
    written.append(save_npz_deterministic(out / f"{sample_id}.photos.npz", **photos.arrays))
    return written

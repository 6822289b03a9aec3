"""Synthetic raw scans with exact ground truth (``facehd synth``).

Each scan is what a capture rig would produce from a face that the morphable model cannot fully
express:

- M0 = model(identity, expression);
- M1 = M0 + a smooth mid-frequency deformation field (a few mm), stored as a 64×64×3 UV map and
  sampled at the vertex UVs (the project's one UV convention, :mod:`facehd.uv`);
- M2 = M1 displaced along its normals by a high-frequency displacement map (256×256, wrinkles and
  pores of 0.05–0.5 mm), densified to a grid of at least 100k vertices;
- the scan = M2 with sensor noise, a few holes and extra geometry the model lacks (a neck and a hair
  cap), expressed in a random frame (any rotation, a translation, the chosen units).

Files per scan ``<id>`` (``<id> = sNNN_eKK``): ``<id>.ply`` (the scan), ``<id>.lm7.txt`` (NoW's 7
landmarks in the scan frame with ~1 mm noise), ``<id>.gt.npz`` (truth: ``scale``, ``rotation``,
``translation`` with ``x_model_mm = scale · rotation @ x_scan + translation``, ``identity``,
``expression``, ``deformation`` (64, 64, 3) mm, ``displacement`` (256, 256) mm, ``landmarks68``
(68, 3) model frame mm), ``<id>.gt_m1.ply`` (model topology with the deformation, model space, mm)
and ``<id>.gt_m2.ply`` (the dense detailed surface, model space, mm). The same seed gives
byte-identical files.

``synth.json`` records the settings the folder's scans were made with. A later run into the same
folder resumes or extends it (more subjects, expressions or photos) with the same settings, and
refuses other ones (another seed, other units, ...) with an error that names them: files of two
settings never mix in one folder under one name.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from facehd.csvtext import atomic_write_bytes, atomic_write_text
from facehd.errors import InputFileError, check_output_folder
from facehd.landmarks import NOW7_FROM_68, save_landmarks_txt
from facehd.mesh import Mesh, load_mesh, save_mesh
from facehd.morphable import MorphableModel, load_model, similarity_motion_basis
from facehd.transforms import Similarity
from facehd.uv import (
    displaced_dense_mesh,
    normal_map,
    rasterize_uv,
    sample_uv_map,
    uv_sampling_matrix,
)

Units = Literal["mm", "cm", "m"]
UNIT_TO_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0, "m": 1000.0}

DEFORMATION_SIZE = 64
DISPLACEMENT_SIZE = 256


@dataclass
class SynthConfig:
    """Configuration of ``facehd synth`` (scans)."""

    subjects: int = 3
    """Number of synthetic subjects (identities)."""
    expressions: int = 2
    """Scans per subject; the first is neutral, the others random expressions."""
    seed: int = 0
    """Master random seed; every scan derives its own stream from (seed, subject, expression)."""
    units: Units = "mm"
    """Units of the written scans and landmarks (``.gt.npz`` maps them to mm)."""
    model: str = "facehd-synth"
    """Morphable model the faces are drawn from."""
    dense_resolution: int = 352
    """Side of the UV grid the detailed surface is sampled on (352² ≈ 124k vertices)."""
    deformation_mm: float = 1.5
    """Typical amplitude (std over the face) of the mid-frequency deformation field, mm."""
    noise_mm: float = 0.05
    """Standard deviation of the sensor noise, mm."""
    landmark_noise_mm: float = 1.0
    """Standard deviation of the noise added to the written 7 landmarks, mm (per axis / √3)."""
    holes: int = 3
    """Number of holes cut into each scan."""
    extras: tuple[str, ...] = ("neck", "hair")
    """Extra geometry the model lacks."""
    colours: bool = False
    """Give the raw scan vertex colours, as a scanner's colour capture (``facehd synth
    --colours``): the subject's skin albedo (the model's albedo with coefficients of the
    subject's own, drawn from a stream of their own, so the geometry does not change), read at
    the nearest point of the true M1."""
    photos: int = 0
    """Synthetic photos rendered per scan (``facehd synth --photos V``); 0 for none."""
    photo_size: int = 512
    """Side of each synthetic photo, pixels."""


@dataclass
class SynthScan:
    """Summary of one written synthetic scan."""

    sample_id: str
    """``sNNN_eKK``."""
    subject: int
    """Subject index."""
    expression: int
    """Expression index (0 = neutral)."""
    n_vertices: int
    """Vertices of the written scan."""
    n_faces: int
    """Triangles of the written scan."""
    units: str
    """Units of the scan file."""
    interocular_mm: float
    """Distance between the outer eye corners of the true face, mm."""
    deformation_rms_mm: float
    """RMS of the deformation field over the model's vertices, mm."""
    displacement_rms_mm: float
    """RMS of the displacement map, mm."""
    files: list[Path] = field(default_factory=list)
    """Files of the scan (written now or by an earlier run)."""
    made_now: bool = True
    """Whether this run wrote the scan (False: an earlier run had finished it)."""
    photos_added: bool = False
    """This run wrote the scan to add its photos to the files of an earlier run made without
    them (its other files are written again, the same bytes)."""


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (3, 3) (from a random unit quaternion)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _grid_uv(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Texel-centre UVs of a size×size map: u (size, size), v (size, size)."""
    c = (np.arange(size) + 0.5) / size
    u, v = np.meshgrid(c, 1.0 - c)
    return u, v


def smooth_field(
    rng: np.random.Generator,
    size: int,
    channels: int,
    n_bumps: int = 12,
    widths: tuple[float, float] = (0.08, 0.2),
) -> np.ndarray:
    """A smooth random field on a size×size UV map: a sum of Gaussian bumps of the given UV widths.

    Returns (size, size, channels), each channel of unit RMS.
    """
    u, v = _grid_uv(size)
    out = np.zeros((size, size, channels))
    for c in range(channels):
        for _ in range(n_bumps):
            cu, cv = rng.uniform(0.15, 0.85, size=2)
            width = rng.uniform(*widths)
            amp = rng.normal()
            out[..., c] += amp * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * width**2))
        out[..., c] /= np.sqrt(np.mean(out[..., c] ** 2)) + 1e-12
    return out


def _grid_gradient(size: int) -> sp.csr_matrix:
    """Forward differences along rows and columns of a size×size map (row-major), stacked."""
    eye = sp.identity(size, format="csr")
    diff = sp.diags([-np.ones(size - 1), np.ones(size - 1)], [0, 1], shape=(size - 1, size))
    return sp.vstack([sp.kron(eye, diff), sp.kron(diff, eye)]).tocsr()


def mid_frequency_deformation(
    model: MorphableModel,
    m0: np.ndarray,
    rng: np.random.Generator,
    amplitude_mm: float,
    size: int = DEFORMATION_SIZE,
) -> np.ndarray:
    """A smooth mid-frequency deformation map (size, size, 3) in mm with no rigid motion.

    A sum of Gaussian bumps (0.08–0.2 UV wide, per channel) is sampled at the vertices; the
    linearised similarity motion (translation, rotation, scale) is projected out of those vertex
    offsets, so a pose change explains none of it; the map whose bilinear samples best give the
    remaining offsets is found by least squares through the UV sampler with a small smoothness
    term. Scaled so the vertex offsets have RMS ``amplitude_mm``. The model's identity and
    expression bases can still explain part of such a field: ground-truth M1 is what is exact.
    """
    if amplitude_mm == 0:
        return np.zeros((size, size, 3))
    field = smooth_field(rng, size, 3)
    sampler = uv_sampling_matrix(model.uvs, size)
    offsets = (sampler @ field.reshape(-1, 3)).reshape(-1)
    # a pose change explains nothing of it: remove the linearised similarity motion
    q, _ = np.linalg.qr(similarity_motion_basis(m0))
    offsets = (offsets - q @ (q.T @ offsets)).reshape(-1, 3)
    grad = _grid_gradient(size)
    lhs = (sampler.T @ sampler + 1e-3 * (grad.T @ grad)).tocsc()
    deformation = spla.splu(lhs).solve(np.asarray(sampler.T @ offsets))
    sampled = sampler @ deformation
    rms = np.sqrt(np.mean(np.sum(sampled**2, axis=1)))
    return (deformation * (amplitude_mm / max(rms, 1e-12))).reshape(size, size, 3)


def detail_field(rng: np.random.Generator, size: int = DISPLACEMENT_SIZE) -> np.ndarray:
    """High-frequency displacement (size, size) in mm: wrinkles and pores of 0.05–0.5 mm.

    Forehead lines (horizontal sinusoids in the upper face), crow's-feet (radial lines near the
    outer eye corners), nasolabial folds (two curved grooves), a band-limited skin texture and
    pores (sparse small pits), all with random phases, amplitudes and positions.
    """
    u, v = _grid_uv(size)
    disp = np.zeros((size, size))
    # forehead lines: horizontal sinusoids of 4–7 periods over the forehead band
    centre_v = rng.uniform(0.78, 0.84)
    band = np.exp(-(((v - centre_v) / 0.06) ** 2)) * np.exp(-(((u - 0.5) / 0.22) ** 2))
    freq = rng.uniform(35, 55)
    phase = rng.uniform(0, 2 * np.pi)
    disp += rng.uniform(0.15, 0.45) * band * np.sin(2 * np.pi * freq * v + phase)
    # crow's feet: radial ripples around both outer eye corners
    for side in (-1, 1):
        cu, cv = 0.5 + side * rng.uniform(0.2, 0.24), rng.uniform(0.6, 0.64)
        r = np.hypot(u - cu, v - cv)
        ang = np.arctan2(v - cv, u - cu)
        env = np.exp(-(((r - 0.05) / 0.03) ** 2))
        disp += rng.uniform(0.1, 0.3) * env * np.sin(rng.uniform(14, 20) * ang)
    # nasolabial folds: grooves along a curve from the nose wing to the mouth corner
    for side in (-1, 1):
        u0 = 0.5 + side * rng.uniform(0.08, 0.1)
        curve_u = u0 + side * 0.6 * (0.45 - v) ** 2
        d = np.abs(u - curve_u)
        on = (v > 0.25) & (v < 0.48)
        disp -= rng.uniform(0.2, 0.5) * np.exp(-((d / 0.008) ** 2)) * on
    k = np.array([0.25, 0.5, 0.25])

    def blur(a: np.ndarray) -> np.ndarray:
        a = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 0, a)
        return np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, a)

    # skin texture: band-limited noise of ~0.08 mm RMS
    texture = blur(blur(rng.normal(size=(size, size))))
    disp += 0.08 * texture / np.sqrt(np.mean(texture**2))
    # pores: sparse pits of 0.08–0.2 mm, 1–2 texels wide
    n_pores = int(size * size * 0.02)
    iy = rng.integers(0, size, n_pores)
    ix = rng.integers(0, size, n_pores)
    pores = np.zeros((size, size))
    np.add.at(pores, (iy, ix), -rng.uniform(0.08, 0.2, n_pores))
    disp += blur(pores) * 4.0
    return disp


def _sample_coefficients(
    model: MorphableModel, rng: np.random.Generator, neutral: bool
) -> tuple[np.ndarray, np.ndarray]:
    identity = rng.normal(size=model.n_id) * model.id_std
    expression = np.zeros(model.n_exp)
    if not neutral:
        k = rng.integers(2, 5)
        idx = rng.choice(model.n_exp, size=k, replace=False)
        # expression components are activations: negative values fold lips and lids
        expression[idx] = rng.uniform(0.4, 1.2, size=k) * model.exp_std[idx]
    return identity, expression


def _neck(model_vertices: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> Mesh:
    """An elliptic tube under the chin (model frame, mm)."""
    chin = landmarks[8]
    # the tube starts behind the jaw line so that, seen from the front, it meets the chin
    centre = np.array([0.0, chin[1] + 20.0, chin[2] - 65.0])
    rx, rz = rng.uniform(48, 56), rng.uniform(40, 46)
    n_t, n_h = 200, 60
    th = np.linspace(0, 2 * np.pi, n_t, endpoint=False)
    hs = np.linspace(0, -110.0, n_h)
    x = centre[0] + rx * np.cos(th)[None, :] + 0 * hs[:, None]
    z = centre[2] + rz * np.sin(th)[None, :] + 0 * hs[:, None]
    y = centre[1] + hs[:, None] + 0 * th[None, :]
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    faces = _grid_faces(n_h, n_t, wrap=True)
    return Mesh(vertices=verts, faces=faces)


def _hair_cap(model_vertices: np.ndarray, rng: np.random.Generator) -> Mesh:
    """A spherical cap over the top and back of the head, behind the face surface (mm)."""
    top = model_vertices[:, 1].max()
    back = model_vertices[:, 2].min()
    r = rng.uniform(95, 105)
    centre = np.array([0.0, top - r + 25.0, back - 20.0])
    n_a, n_p = 160, 50
    az = np.linspace(0, 2 * np.pi, n_a, endpoint=False)
    polar = np.linspace(0.05, 1.2, n_p)
    x = centre[0] + r * np.sin(polar)[:, None] * np.cos(az)[None, :]
    z = centre[2] + r * np.sin(polar)[:, None] * np.sin(az)[None, :]
    y = centre[1] + r * np.cos(polar)[:, None] + 0 * az[None, :]
    # keep the cap behind the face: push points with z in front of the face's back plane backwards
    z = np.minimum(z, back - 5.0)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    faces = _grid_faces(n_p, n_a, wrap=True)
    return Mesh(vertices=verts, faces=faces)


def _grid_faces(rows: int, cols: int, wrap: bool = False) -> np.ndarray:
    """Triangles of a rows×cols vertex grid (row-major), optionally wrapping the columns.

    Wound so that, for a grid whose rows run down a surface and whose columns run
    counter-clockwise seen from above (the neck tube, the hair cap), the normals point outwards,
    as a scanner's do."""
    c_end = cols if wrap else cols - 1
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(c_end), indexing="ij")
    r, c = r.ravel(), c.ravel()
    c1 = (c + 1) % cols
    a, b = r * cols + c, r * cols + c1
    d, e = (r + 1) * cols + c, (r + 1) * cols + c1
    return np.concatenate([np.stack([a, b, d], 1), np.stack([b, e, d], 1)]).astype(np.int64)


def colours_at_nearest(m1: Mesh, albedo: np.ndarray, points: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (N, 3) of ``points`` (model frame): the per-vertex ``albedo`` (V, 3) of
    ``m1`` (clipped to [0, 1]) interpolated at each point's nearest point of ``m1``."""
    from facehd.distances import SurfaceQuery

    rgb = np.clip(np.asarray(albedo, dtype=np.float64), 0.0, 1.0)
    near = SurfaceQuery(m1).closest(points)
    tri = np.asarray(m1.faces)[near.face_ids]
    return np.clip(np.einsum("nk,nkj->nj", near.barycentrics, rgb[tri]), 0.0, 1.0)


def _skin_colours(
    model: MorphableModel, m1: Mesh, points: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """:func:`colours_at_nearest` of a subject's albedo (coefficients drawn from ``rng``)."""
    coeffs = rng.normal(size=model.n_tex) * model.tex_std
    return colours_at_nearest(m1, model.albedo(coeffs), points)


def _merge(meshes: list[Mesh]) -> Mesh:
    verts, faces, offset = [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + offset)
        offset += len(m.vertices)
    return Mesh(vertices=np.concatenate(verts), faces=np.concatenate(faces))


def _cut_holes(mesh: Mesh, centres: np.ndarray, radii: np.ndarray) -> Mesh:
    """Remove the vertices within the given balls, the faces touching them, unused vertices."""
    keep = np.ones(len(mesh.vertices), bool)
    for c, r in zip(centres, radii, strict=True):
        keep &= np.linalg.norm(mesh.vertices - c, axis=1) > r
    face_ok = keep[mesh.faces].all(axis=1)
    cut = Mesh(mesh.vertices, mesh.faces[face_ok])
    return cut.subset_vertices(cut.used_vertices)[0]


def save_npz_deterministic(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write an ``.npz`` whose bytes depend only on the arrays (fixed zip dates), atomically
    (:func:`facehd.csvtext.atomic_write_bytes`: an interrupted write leaves no file under
    ``path``, and no temporary file beside it)."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.save(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    return atomic_write_bytes(path, data.getvalue())


def make_scan(
    model: MorphableModel, config: SynthConfig, subject: int, expression_index: int
) -> tuple[Mesh, dict[str, np.ndarray], Mesh, Mesh, np.ndarray]:
    """Build one synthetic scan in memory.

    Returns
    -------
    scan : Mesh in the scan frame and units.
    truth : dict of the ``.gt.npz`` arrays.
    m1 : the true M1 (model topology, model space, mm, with UVs).
    m2 : the true dense detailed surface (model space, mm, with UVs).
    landmarks7 : (7, 3) noisy landmarks in the scan frame and units.
    """
    rng_id = _rng(config.seed, subject)
    rng = _rng(config.seed, subject, expression_index, 1)
    identity, _ = _sample_coefficients(model, rng_id, neutral=True)
    _, expression = _sample_coefficients(model, rng, neutral=expression_index == 0)

    m0 = model.vertices(identity, expression)  # (V, 3) mm
    # mid-frequency deformation the model cannot express, a few mm
    deformation = mid_frequency_deformation(model, m0, rng, config.deformation_mm)
    v1 = m0 + sample_uv_map(deformation, model.uvs)
    displacement = detail_field(rng)

    # dense detailed surface: position and normal maps of M1 at the dense resolution, displaced
    res = config.dense_resolution
    table = rasterize_uv(model.uvs, model.faces, (res, res))
    pos = table.interpolate(v1)
    nrm = normal_map(table, model.vertex_normals(v1))
    u, v = _grid_uv(res)
    disp_dense = sample_uv_map(displacement, np.stack([u.ravel(), v.ravel()], 1)).reshape(res, res)
    m2 = displaced_dense_mesh(pos, nrm, disp_dense, table.mask)
    m1 = Mesh(vertices=v1, faces=model.faces, uvs=model.uvs)

    # the raw scan: noise, holes, extra geometry
    lm68 = v1[model.landmarks68]
    noisy = m2.vertices + rng.normal(scale=config.noise_mm, size=m2.vertices.shape)
    parts = [Mesh(vertices=noisy, faces=m2.faces)]
    if "neck" in config.extras:
        parts.append(_neck(v1, lm68, rng))
    if "hair" in config.extras:
        parts.append(_hair_cap(v1, rng))
    scan_model = _merge(parts)
    if config.holes:
        fit = np.flatnonzero(model.regions.fit)
        centres = v1[rng.choice(fit, size=config.holes, replace=False)]
        scan_model = _cut_holes(scan_model, centres, rng.uniform(3.0, 7.0, size=config.holes))

    if config.colours:
        scan_model = Mesh(
            scan_model.vertices,
            scan_model.faces,
            None,
            _skin_colours(model, m1, scan_model.vertices, _rng(config.seed, subject, 3)),
        )
    # random frame: x_model = s R x_scan + t  ⇔  x_scan = R^T (x_model − t) / s
    scale = UNIT_TO_MM[config.units]
    rotation = random_rotation(rng)
    translation = rng.uniform(-200, 200, size=3)
    t_model_from_scan = Similarity(scale=scale, rotation=rotation, translation=translation)
    t_scan_from_model = t_model_from_scan.inverse()
    scan = Mesh(
        t_scan_from_model.apply(scan_model.vertices), scan_model.faces, None, scan_model.colors
    )
    lm7 = lm68[list(NOW7_FROM_68)]
    lm7_noisy = lm7 + rng.normal(scale=config.landmark_noise_mm / np.sqrt(3), size=lm7.shape)
    landmarks7 = t_scan_from_model.apply(lm7_noisy)

    truth = {
        "scale": np.float64(scale),
        "rotation": rotation,
        "translation": translation,
        "identity": identity,
        "expression": expression,
        "deformation": deformation,
        "displacement": displacement,
        "landmarks68": lm68,
    }
    return scan, truth, m1, m2, landmarks7


def sample_id(subject: int, expression_index: int) -> str:
    """The id of a synthetic scan: ``sNNN_eKK``."""
    return f"s{subject:03d}_e{expression_index:02d}"


def expected_files(out: Path, sid: str, config: SynthConfig) -> list[Path]:
    """Every file of a finished scan ``sid`` under ``out`` (``.photos.npz`` is written last)."""
    names = [f"{sid}{s}" for s in (".ply", ".lm7.txt", ".gt.npz", ".gt_m1.ply", ".gt_m2.ply")]
    if config.photos > 0:
        names.append(f"{sid}.photos.npz")
    return [out / n for n in names]


def write_scan(
    model: MorphableModel, config: SynthConfig, subject: int, expression_index: int, out: Path
) -> SynthScan:
    """Build one scan and write its files under ``out`` (see the module docstring)."""
    sid = sample_id(subject, expression_index)
    files = expected_files(out, sid, config)
    made_now = not all(f.is_file() for f in files)
    # only the photos missing: an earlier run without them (record_settings allows adding them)
    photos_added = made_now and all(f.is_file() for f in files if f.name != f"{sid}.photos.npz")
    if not made_now:  # finished by an earlier run: summarise, don't rebuild
        try:
            truth = dict(np.load(out / f"{sid}.gt.npz"))
            m1 = load_mesh(out / f"{sid}.gt_m1.ply")
            scan = load_mesh(out / f"{sid}.ply")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):
            made_now = True  # a file damaged since: made again, the same bytes
    if made_now:
        scan, truth, m1, m2, lm7 = make_scan(model, config, subject, expression_index)
        save_mesh(out / f"{sid}.ply", scan)
        save_landmarks_txt(out / f"{sid}.lm7.txt", lm7)
        save_npz_deterministic(out / f"{sid}.gt.npz", **truth)
        save_mesh(out / f"{sid}.gt_m1.ply", m1)
        save_mesh(out / f"{sid}.gt_m2.ply", m2)
        if config.photos > 0:
            from pipelines.synth_photos import PhotoConfig, render_photos, save_photos

            photo_config = PhotoConfig(views=config.photos, image_size=config.photo_size)
            rng = _rng(config.seed, subject, expression_index, 2)
            photos = render_photos(
                model, m1.vertices, truth["displacement"], truth["landmarks68"], rng, photo_config
            )
            from pipelines.synth_photos import cameras_in_scan_frame

            model_from_scan = Similarity(
                float(truth["scale"]), truth["rotation"], truth["translation"]
            )
            a = photos.arrays
            a["scan_R"], a["scan_t"] = cameras_in_scan_frame(a["R"], a["t"], model_from_scan)
            save_photos(out, sid, photos)
    lm = truth["landmarks68"]
    d = m1.vertices - model.vertices(truth["identity"], truth["expression"])
    return SynthScan(
        sample_id=sid,
        subject=subject,
        expression=expression_index,
        n_vertices=len(scan.vertices),
        n_faces=len(scan.faces),
        units=config.units,
        interocular_mm=float(np.linalg.norm(lm[36] - lm[45])),
        deformation_rms_mm=float(np.sqrt(np.mean(np.sum(d**2, axis=1)))),
        displacement_rms_mm=float(np.sqrt(np.mean(truth["displacement"] ** 2))),
        files=files,
        made_now=made_now,
        photos_added=photos_added,
    )


#: The settings record of a folder of synthetic scans.
SETTINGS_NAME = "synth.json"
#: The ``tool`` its record names (a synthetic benchmark's record, of the same file name, names
#: :data:`benchmarks.synthetic.RECORD_TOOL`).
RECORD_TOOL = "facehd synth"


def _settings(config: SynthConfig) -> dict[str, object]:
    """The fields of ``config`` that decide the bytes of a scan (not how many scans)."""
    keep = {k: v for k, v in dataclasses.asdict(config).items() if k not in _COUNTS}
    keep["extras"] = list(config.extras)
    return keep


#: Fields that only say how many scans (and photos) a folder gets.
_COUNTS = ("subjects", "expressions", "photos")


def record_settings(out: Path, config: SynthConfig) -> None:
    """Check ``out``'s settings record against ``config`` (:func:`check_settings`) and write it
    (``synth.json``)."""
    text = json.dumps(check_settings(out, config), indent=2, sort_keys=True) + "\n"
    path = out / SETTINGS_NAME
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def check_settings(out: Path, config: SynthConfig) -> dict[str, Any]:
    """Check ``out``'s settings record (``synth.json``, if any) against ``config``, writing
    nothing; the record to write.

    A folder made with other settings (seed, units, model, noise, ...) is refused: its finished
    scans would otherwise be kept and reported as made now. The number of subjects, expressions
    and photos may grow between runs; a folder's photos per scan may not change once made.

    Raises
    ------
    InputFileError
        ``synth.json`` is unreadable, or records other settings (the message names them).
    """
    if config.seed < 0:  # numpy refuses it, after the record was written
        raise ValueError(f"seed must be >= 0, got {config.seed}")
    from benchmarks.synthetic import RECORD_TOOL as BENCHMARK_RECORD_TOOL

    path = out / SETTINGS_NAME
    mine = {"tool": RECORD_TOOL, "settings": _settings(config), "photos": config.photos}
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputFileError(path, f"not a facehd synth settings record ({exc})") from exc
        if isinstance(theirs, dict) and theirs.get("tool") == BENCHMARK_RECORD_TOOL:
            raise InputFileError(
                out,
                f"holds a synthetic {theirs.get('benchmark', '')} benchmark (facehd synth "
                "--benchmark), not scans: write the scans to another --out",
            )
        try:
            old_settings, old_photos = dict(theirs["settings"]), int(theirs["photos"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFileError(path, f"not a facehd synth settings record ({exc})") from exc
        # a setting newer than the record had its default value there
        default = _settings(SynthConfig())
        diff = [
            f"{k} {old_settings.get(k, default[k])!r} there, {v!r} now"
            for k, v in mine["settings"].items()
            if old_settings.get(k, default[k]) != v
        ]
        if old_photos and config.photos and old_photos != config.photos:
            diff.append(f"photos {old_photos} there, {config.photos} now")
        if diff:
            raise InputFileError(
                out,
                "holds synthetic scans made with other settings ("
                + "; ".join(diff)
                + "); write to another --out, or delete the folder to start over",
            )
        mine["photos"] = max(old_photos, config.photos)
    return mine


#: A scan id as :func:`sample_id` writes it (3 digits of subject and 2 of expression at least).
_SCAN_ID = r"s(\d{3,})_e(\d{2,})"
_SCAN_NAME = re.compile(rf"^{_SCAN_ID}[._]")
_SCAN_FILE = re.compile(rf"^{_SCAN_ID}\.ply$")


def own_scans(out: str | Path) -> dict[str, tuple[int, int]]:
    """The scans of ``facehd synth`` in ``out`` (its ``<id>.ply`` files at the top, not in any
    sub-folder), each with its ``(subject, expression)``; empty for a folder that is not there."""
    try:
        names = os.listdir(out)
    except OSError:
        return {}
    found = {}
    for name in names:
        m = _SCAN_FILE.match(name)
        if m is not None:
            found[name[: -len(".ply")]] = (int(m[1]), int(m[2]))
    return found


#: The estimates :func:`check_scans_room` works with, measured at the defaults on this project's
#: 2-core CI machine (one core): a scan's files at ``dense_resolution`` 352 take 17.0 MB, of which
#: the dense surface (in the scan and ``.gt_m2.ply``) 14.3 MB, growing with the resolution
#: squared, and the rest (the model-topology M1, the truth, the neck and hair cap) 2.7 MB; vertex
#: colours add 0.45 MB; photos add 1.45 MB a scan (the textures) and 1.8 MB a photo at 512 px. A
#: scan takes about 4 s to make, a photo about 4 s to render.
SCAN_BYTES_FIXED, SCAN_BYTES_DENSE, COLOUR_BYTES = 2.7e6, 14.3e6, 0.45e6
PHOTO_BYTES_FIXED, PHOTO_BYTES_EACH = 1.45e6, 1.8e6
SCAN_SECONDS, PHOTO_SECONDS = 4.0, 4.0


def scan_estimate(config: SynthConfig) -> tuple[float, float]:
    """``(bytes, seconds)`` of one scan of ``config`` with its photos (:data:`SCAN_BYTES_FIXED`)."""
    dense = (config.dense_resolution / 352) ** 2
    size = SCAN_BYTES_FIXED + (SCAN_BYTES_DENSE + COLOUR_BYTES * config.colours) * dense
    if config.photos > 0:
        size += (
            PHOTO_BYTES_FIXED + config.photos * PHOTO_BYTES_EACH * (config.photo_size / 512) ** 2
        )
    return size, SCAN_SECONDS + config.photos * PHOTO_SECONDS


def check_scans_room(out: str | Path, config: SynthConfig) -> None:
    """Refuse, before anything is written, a request whose scans would not fit on the disk of
    ``out`` (:func:`facehd.diskspace.check_room`; the scans finished before are not counted).

    Raises
    ------
    InputFileError
        Naming ``out``, the estimated size and time, and the free space.
    """
    from facehd.diskspace import check_room

    out = Path(out)
    done = 0  # scans of the request finished before (every file there)
    for sid, (s, e) in own_scans(out).items():
        if s < config.subjects and e < config.expressions:
            done += all(f.is_file() for f in expected_files(out, sid, config))
    size, seconds = scan_estimate(config)
    request = f"--subjects {config.subjects} --expressions {config.expressions}"
    if config.photos:
        request += f" --photos {config.photos}"
    check_room(
        out,
        request=request,
        items=config.subjects * config.expressions - done,
        item="scan",
        bytes_each=size,
        seconds_each=seconds,
    )


def check_scans_folder(out: str | Path) -> Path:
    """Make the output folder, checked (:func:`facehd.errors.check_output_folder`), and refuse
    one without a settings record (``synth.json``) that holds files named as this command names
    its own (``s000_e00.ply`` ...): someone else's, which a run would replace or, being
    complete, keep and report as made now."""
    out = check_output_folder(out, "synthetic scans")
    if (out / SETTINGS_NAME).exists():
        return out
    foreign = sorted(p.name for p in out.iterdir() if _SCAN_NAME.match(p.name))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise InputFileError(
            out,
            f"holds files named as facehd synth's ({', '.join(foreign[:3])}{more}) that it did "
            "not make (no synth.json): write to another --out",
        )
    return out


def synth_scans(
    out: str | Path,
    config: SynthConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[SynthScan]:
    """Write ``config.subjects × config.expressions`` synthetic scans into ``out``.

    ``progress`` is called with each finished sample id. Scans whose files all exist are not
    rebuilt (an interrupted run resumes where it stopped); every file is written atomically, so
    a partial file never looks complete. A request whose scans would not fit on the disk is
    refused before anything is written (:func:`check_scans_room`).
    """
    config = config or SynthConfig()
    if config.subjects < 1 or config.expressions < 1:
        raise ValueError("subjects and expressions must be >= 1")
    if config.units not in UNIT_TO_MM:
        raise ValueError(f"units must be one of {sorted(UNIT_TO_MM)}, got {config.units!r}")
    check_scans_room(out, config)  # before the folder is made
    out = check_scans_folder(out)
    model = load_model(config.model)
    record_settings(out, config)
    results = []
    for s in range(config.subjects):
        for e in range(config.expressions):
            results.append(write_scan(model, config, s, e, out))
            if progress is not None:
                progress(results[-1].sample_id)
    return results

"""facehd-synth: a procedural face model generated deterministically by code.

The model needs no data file: its mean shape, bases, albedo, landmarks and regions are built from
the analytic description below the first time :func:`facehd_synth` is called (about a second),
then cached. Two builds give byte-identical arrays (all randomness comes from a fixed-seed
counter-based generator written here, independent of numpy's generators; BLAS runs on one thread
whatever the process's thread count, which would change the last bits of the bases).

Topology and UVs
    A 129 × 129 vertex grid (16,641 vertices, 32,768 triangles), row-major from the bottom row.
    The UV of vertex (row i, column j) is ``(j / 128, i / 128)``: u grows to the viewer's right
    (+x), v upwards (+y). Column 64 is the midline; the triangulation is mirror symmetric.

Units and frame
    Millimetres (``unit_to_mm = 1``); +x towards the subject's left (the viewer's right), +y up,
    +z out of the face towards the viewer, as in the BFM. The mean shape is centred on its mean
    vertex (y and z; x is exactly symmetric about 0).

Mean shape
    A head-like implicit surface (elliptic cross-sections whose width, depth and front profile vary
    with height, joined smoothly to a neck) is sampled by rays from a point inside the head: the
    grid columns sweep the azimuth (±105°, denser in front), the rows the elevation (spaced for
    equal arc length along the profile, denser on the face). The surface wraps around like a mask,
    from the forehead above the hairline to just under the chin, the jaw curving back towards the
    ears. Facial features are smooth height fields along the surface normal: nose (dorsum, tip,
    alae, nostrils), orbits, eyeballs and lids, brow ridge, cheekbones, lips meeting at a mouth
    line, philtrum, labiomental fold and chin. Adult size: about 145 mm wide, 210 mm from under the
    chin to the top edge (200 mm from the chin landmark), 61.5 mm between the eye centres, 92 mm
    between the outer eye corners, nose tip 20 mm in front of the alar base.

Bases
    Each component is first written as a displacement field with a meaning (see ``id_names``,
    ``exp_names``, ``tex_names``) and a typical size in mm. The global similarity motion of the mean
    shape (translation, rotation, scale, linearised) is projected out of every identity and
    expression field (orthogonal projection: a least-squares similarity fit to any basis vector
    is zero). The expression fields are local by design, so what the projection adds is a small
    rigid counter-motion: opening the jaw moves the forehead by about a quarter of the chin's
    motion, the way a head-fitted pose would see it. Then the fields are Gram–Schmidt
    orthogonalised in order (so early components keep their meaning), and every basis vector is
    scaled so that its largest vertex displacement is 1 mm (albedo: a largest change of 1): a
    coefficient is the displacement in mm of the vertex that moves most. The stds are the
    designed sizes (mm, or albedo units), non-increasing within each basis. A field that changes a
    height (eye depth, nose size, lip thickness, the eye closure...) moves the surface along the
    base head's smooth normals, as the features were raised, so that no identity folds a lid, a
    nostril or the lips over (a triangle turning its back). Identity: 28 named
    shape variations plus 36 smooth random fields; expression: 24 named, local expressions (a
    positive coefficient does what the name says; negative jaw_open or eye_closure push the lips
    or lids through each other); albedo: 18 named plus 6 random (mixtures of skin-like colours).

Regions
    Eyes, nose, mouth, forehead, cheeks and fit come from the landmark geometry
    (:func:`~facehd.morphable.model.regions_from_landmarks`); forehead, cheeks and fit also leave
    out the hair (above the hairline, the sideburns), the outermost three grid rows and columns and
    the parts that face sideways.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.interpolate import PchipInterpolator

from facehd.morphable.model import (
    MorphableModel,
    RegionMasks,
    project_out_similarity,
    regions_from_landmarks,
)

__all__ = ["GRID", "N_EXP", "N_ID", "N_TEX", "build_synth", "facehd_synth"]

#: Vertices per side of the UV grid.
GRID = 129
#: Numbers of identity, expression and albedo components.
N_ID, N_EXP, N_TEX = 64, 24, 24
_MID = (GRID - 1) // 2

# ray sampling of the base head
_RAY_CENTRE = np.array([0.0, -10.0, -90.0])
_PHI_MAX = np.deg2rad(105.0)  # azimuth of the grid's side columns
_PHI_LINEAR = 0.55  # share of the azimuth map that is linear (the rest cubic: denser in front)
_PSI_MIN = np.deg2rad(-72.0)  # elevation of the bottom row on the midline
_PSI_MAX = np.deg2rad(76.0)  # elevation of the top row on the midline
_BOTTOM_RISE = np.deg2rad(30.0)  # the bottom row rises by this at the side columns
_TOP_DROP = np.deg2rad(20.0)  # the top row drops by this at the side columns
_ROW_WEIGHT_OUT = 0.3  # row density outside the face band relative to inside
_MARCH_STEP = 3.0  # mm

# Design frame: eye corners at y = 0, nose tip near z = 0, midline x = 0. Profiles of the base
# head's horizontal cross-sections, by height y: half width, half depth, front z, exponent.
_PROFILE_Y = [-135, -128, -120, -112, -100, -85, -70, -50, -30, 0, 30, 60, 90, 110, 122, 130]
_PROFILE_W = [1, 4, 16, 30, 45, 57, 63, 68, 71, 73, 73, 70, 61, 45, 25, 4]
_PROFILE_D = [2, 6, 22, 38, 55, 72, 82, 88, 92, 96, 98, 95, 85, 62, 38, 6]
_PROFILE_ZF = [-90, -66, -48, -36, -28, -25, -23, -22, -25, -30, -34, -47, -68, -86, -102, -118]
_PROFILE_P = [2.0, 2.0, 2.1, 2.2, 2.3, 2.35, 2.4, 2.4, 2.4, 2.4, 2.35, 2.3, 2.2, 2.1, 2.0, 2.0]

# eyes and mouth
EYE_X = 31.5  # |x| of the eye centres
EYE_HALF = 15.0  # half the corner-to-corner eye width
MOUTH_HALF = 26.0  # |x| of the mouth corners
HAIRLINE_Y = 70.0  # hairline height on the midline


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _pchip(xs: list[float], vals: list[float]) -> Callable[[np.ndarray], np.ndarray]:
    """Monotone cubic interpolation, clamped outside the knots."""
    x = np.asarray(xs, dtype=np.float64)
    v = np.asarray(vals, dtype=np.float64)
    order = np.argsort(x)
    f = PchipInterpolator(x[order], v[order], extrapolate=False)
    lo, hi = float(x.min()), float(x.max())
    return lambda t: f(np.clip(t, lo, hi))


def _g(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Anisotropic Gaussian bump with peak 1."""
    return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)


def _sig(t: np.ndarray) -> np.ndarray:
    """Smooth step from 0 to 1 (logistic)."""
    return 0.5 * (1.0 + np.tanh(t))


def _pos(t: np.ndarray) -> np.ndarray:
    return np.maximum(t, 0.0)


_width = _pchip(_PROFILE_Y, _PROFILE_W)
_depth = _pchip(_PROFILE_Y, _PROFILE_D)
_front = _pchip(_PROFILE_Y, _PROFILE_ZF)
_power = _pchip(_PROFILE_Y, _PROFILE_P)


class _Random:
    """Counter-based random numbers (splitmix64): identical on every platform and numpy."""

    def __init__(self, seed: int) -> None:
        self._key = np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        self._counter = 0

    def _bits(self, n: int) -> np.ndarray:
        idx = np.arange(self._counter, self._counter + n, dtype=np.uint64)
        self._counter += n
        with np.errstate(over="ignore"):
            z = idx * np.uint64(0xD1B54A32D192ED03) + self._key
            z = z + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        return z

    def uniform(self, n: int) -> np.ndarray:
        """(n,) floats in [0, 1)."""
        return (self._bits(n) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def normal(self, n: int) -> np.ndarray:
        """(n,) standard normal floats (Box–Muller)."""
        u1 = 1.0 - self.uniform(n)
        u2 = self.uniform(n)
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# --------------------------------------------------------------------------------------------
# base head and grid
# --------------------------------------------------------------------------------------------
def _head_implicit(p: np.ndarray) -> np.ndarray:
    """Negative inside the base head (design frame, mm)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    w, d, zf, pw = _width(y), _depth(y), _front(y), _power(y)
    zc = zf - d
    head = ((np.abs(x) / w) ** pw + (np.abs(z - zc) / d) ** pw) ** (1.0 / pw) - 1.0
    head = head + _pos(-(y + 134.0)) * 0.1 + _pos(y - 129.0) * 0.1
    neck = np.sqrt((x / 56.0) ** 2 + ((z + 122.0) / 48.0) ** 2) - 1.0
    neck = neck + (_pos(y + 45.0) / 35.0) ** 2
    k = 0.06  # smooth union
    m = np.minimum(head, neck)
    return m - k * np.log(np.exp(-(head - m) / k) + np.exp(-(neck - m) / k))


def _cast(d: np.ndarray) -> np.ndarray:
    """Outermost intersection of the rays ``_RAY_CENTRE + r d`` with the base head."""
    radii = np.arange(260.0, 4.0, -_MARCH_STEP)
    inside = _head_implicit(_RAY_CENTRE + d[..., None, :] * radii[:, None]) < 0
    if not inside.any(axis=-1).all():  # pragma: no cover - a design error
        raise RuntimeError("facehd-synth: a ray missed the base head")
    first = np.argmax(inside, axis=-1)
    lo, hi = radii[first], radii[first] + _MARCH_STEP
    for _ in range(32):
        mid = 0.5 * (lo + hi)
        ins = _head_implicit(_RAY_CENTRE + d * mid[..., None]) < 0
        lo = np.where(ins, mid, lo)
        hi = np.where(ins, hi, mid)
    return _RAY_CENTRE + d * (0.5 * (lo + hi))[..., None]


def _row_parameter() -> np.ndarray:
    """(GRID,) normalised elevation of each row: equal weighted arc length on the midline."""
    fine = np.linspace(0.0, 1.0, 4001)
    psi = _PSI_MIN + (_PSI_MAX - _PSI_MIN) * fine
    pts = _cast(np.stack([np.zeros_like(psi), np.sin(psi), np.cos(psi)], -1))
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    ymid = 0.5 * (pts[1:, 1] + pts[:-1, 1])
    band = _sig((ymid + 108.0) / 6.0) * _sig((30.0 - ymid) / 6.0)
    cum = np.concatenate([[0.0], np.cumsum(seg * (_ROW_WEIGHT_OUT + (1 - _ROW_WEIGHT_OUT) * band))])
    return np.interp(np.arange(GRID) / (GRID - 1) * cum[-1], cum, fine)


def _grid_angles() -> tuple[np.ndarray, np.ndarray]:
    """(GRID, GRID) azimuth and elevation of every vertex ray (rows: elevation)."""
    s = (np.arange(GRID) - _MID) / _MID  # exactly antisymmetric
    phi = _PHI_MAX * (_PHI_LINEAR * s + (1 - _PHI_LINEAR) * s**3)
    side = s**2
    lo = _PSI_MIN + _BOTTOM_RISE * side
    hi = _PSI_MAX - _TOP_DROP * side
    t = _row_parameter()
    psi = lo[None, :] + (hi - lo)[None, :] * t[:, None]
    return np.broadcast_to(phi[None, :], psi.shape).copy(), psi


def _grid_normals(p: np.ndarray) -> np.ndarray:
    """Unit normals of a (GRID, GRID, 3) surface grid by central differences (outwards)."""
    n = np.cross(np.gradient(p, axis=1), np.gradient(p, axis=0))
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def grid_faces(n: int = GRID) -> np.ndarray:
    """(2 (n-1)², 3) triangles of an n × n row-major vertex grid, counter-clockwise from +z.

    Quads left of the middle column are split along one diagonal, quads right of it along the
    other, so the triangulation is mirror symmetric about the middle column (n odd).
    """
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a = (i * n + j).ravel()
    b, c, d = a + 1, a + n + 1, a + n
    left = (j < (n - 1) // 2).ravel()[:, None]
    t1 = np.where(left, np.stack([a, b, c], 1), np.stack([a, b, d], 1))
    t2 = np.where(left, np.stack([a, c, d], 1), np.stack([b, c, d], 1))
    return np.concatenate([t1, t2]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# facial features (height fields along the base normal; x, y are base coordinates in mm)
# --------------------------------------------------------------------------------------------
def eye_curves(ax: np.ndarray) -> tuple[np.ndarray, ...]:
    """Eye coordinate, corner line, upper and lower lid margins (y) at ``|x| = ax``."""
    ex = (ax - EYE_X) / EYE_HALF
    inside = np.clip(1 - ex**2, 0, None)
    yc = 0.25 + 0.75 * ex  # the outer corner sits 1.5 mm above the inner one
    yu = yc + 5.8 * inside**0.65 * (1 - 0.12 * ex)
    yl = yc - 3.6 * inside**0.8 * (1 + 0.1 * ex)
    return ex, yc, yu, yl


def mouth_curves(ax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mouth line y, upper and lower vermilion heights at ``|x| = ax``."""
    ym = -67.0 - 1.2 * (ax / 25.0) ** 2
    hu = 7.5 * np.clip(1 - (ax / 26.5) ** 2, 0, 1) ** 0.5 - 0.8 * np.exp(-((ax / 3.5) ** 2))
    hl = 9.0 * np.clip(1 - (ax / 25.0) ** 2, 0, 1) ** 0.6
    return ym, hu, hl


def brow_curve(ax: np.ndarray) -> np.ndarray:
    """Height of the eyebrow's centre line at ``|x| = ax``."""
    return 18.5 + 5.5 * np.clip(1 - ((ax - 34.0) / 26.0) ** 2, 0, 1)


def hairline(ax: np.ndarray) -> np.ndarray:
    """Height of the hairline at ``|x| = ax`` (lower at the temples)."""
    return HAIRLINE_Y - 10.0 * np.clip(ax / 55.0, 0, 1) ** 2


def _eye_field(x: np.ndarray, y: np.ndarray, closure: float = 0.0) -> np.ndarray:
    """Eyeball, lids and lid crease; ``closure`` in [0, 1] closes the lids."""
    ax = np.abs(x)
    ex, yc, yu, yl = eye_curves(ax)
    if closure:
        yj = yl + 0.3 * (yu - yl)  # the lids meet a third of the way up
        yu = yu + closure * (yj - yu)
        yl = yl + closure * (yj - yl)
    span = _sig((1.0 - np.abs(ex)) * 9.0)
    window = _sig((1.2 - np.abs(ex)) * 6.0)
    cy = yc + 1.2
    r2 = ((ax - EYE_X) / 15.0) ** 2 + ((y - cy) / 12.0) ** 2
    h = 3.0 * np.clip(1 - r2, 0, 1) ** 1.5
    opening = _sig((yu - y) / 0.6) * _sig((y - yl) / 0.6) * span
    r2i = ((ax - EYE_X) / 14.0) ** 2 + ((y - cy) / 6.0) ** 2
    h += opening * (0.4 * np.clip(1 - r2i, 0, 1) + 0.8 * _g(ax, y, EYE_X, cy, 5.0, 5.0))
    du, dl = y - yu, yl - y
    h += 3.0 * np.exp(-((_pos(du) / 3.5) ** 2)) * _sig(du / 0.6) * window
    h += 2.0 * np.exp(-((_pos(dl) / 2.5) ** 2)) * _sig(dl / 0.6) * window
    h -= (
        (1.0 - 0.6 * closure)
        * np.exp(-(((y - yu - 6.5) / 1.8) ** 2))
        * _sig((1.05 - np.abs(ex)) * 5)
    )
    h -= 0.6 * np.exp(-(((y - yl + 5.5) / 2.0) ** 2)) * _sig((0.9 - np.abs(ex)) * 5)
    return h


_NOSE_PROFILE = _pchip(
    [16, 8, 0, -10, -20, -28, -33, -37, -41, -45, -48, -53],
    [0, 1.5, 4, 9, 15, 21, 24.5, 24, 18, 8, 3, 0],
)
_NOSE_WIDTH = _pchip([16, 8, 0, -15, -26, -33, -40, -48], [8, 6.5, 5.5, 5.5, 7.0, 7.5, 7.5, 7.0])


def _nose_field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    h = _NOSE_PROFILE(y) * np.exp(-((ax / _NOSE_WIDTH(y)) ** 2.2))
    h += 1.0 * (_g(x, y, 3.5, -32.5, 3.5, 3.5) + _g(x, y, -3.5, -32.5, 3.5, 3.5))  # tip domes
    h += 4.0 * _g(ax, y, 13.0, -40.0, 4.5, 4.0)  # alae
    ring = np.hypot(ax - 13.0, (y + 40.0) / 0.9)
    h -= (
        1.2
        * np.exp(-(((ring - 6.0) / 1.3) ** 2))
        * _sig((ax - 14.0) / 1.5)
        * _sig((y + 44.0) / 1.5)
    )
    h -= 3.0 * _g(ax, y, 6.0, -44.5, 2.8, 2.0)  # nostrils
    return h


def _lip_fields(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip height fields."""
    ax = np.abs(x)
    ym, hu, hl = mouth_curves(ax)
    au = 4.5 * np.clip(1 - (ax / 27.0) ** 2, 0, 1) ** 0.8
    al = 4.5 * np.clip(1 - (ax / 25.5) ** 2, 0, 1) ** 0.8
    tu = _pos(y - ym) / (hu + 0.3)
    upper = au * (1 - np.exp(-3.5 * tu)) * np.exp(-((_pos(tu - 0.85) / 1.1) ** 2))
    tl = _pos(ym - y) / (hl + 0.3)
    lower = al * np.sin(np.pi * np.clip(tl, 0, 1) ** 0.8) ** 0.7 * _sig((1.3 - tl) * 4)
    return upper, lower


def _features(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of all facial features over the base head at base coordinates (x, y)."""
    ax = np.abs(x)
    h = _nose_field(x, y)
    h -= 7.0 * _g(ax, y, EYE_X, 2.0, 15.0, 11.0)  # orbits
    yb = 17.0 + 5.0 * np.clip(1 - ((ax - 34.0) / 26.0) ** 2, 0, 1)
    h += 2.5 * np.exp(-(((y - yb) / 7.0) ** 2)) * _sig((ax - 8) / 5) * _sig((58 - ax) / 5)
    h += 2.0 * _g(x, y, 0.0, 13.0, 11.0, 8.0)  # glabella
    h += 5.0 * _g(ax, y, 47.0, -12.0, 13.0, 9.0)  # cheekbones
    h += 3.0 * _g(ax, y, 35.0, -36.0, 14.0, 12.0)  # malar fat
    h -= 3.0 * _g(ax, y, 62.0, 25.0, 10.0, 15.0)  # temples
    h += _eye_field(x, y)
    # nasolabial folds: a shallow groove from the ala past the mouth corner
    t = np.clip(((ax - 17.0) * 16.0 - (y + 42.0) * 33.0) / (16.0**2 + 33.0**2), 0, 1)
    dist = np.hypot(ax - 17.0 - 16.0 * t, y + 42.0 + 33.0 * t)
    h -= 1.0 * np.exp(-((dist / 2.5) ** 2)) * np.sin(np.pi * t) ** 0.5
    upper, lower = _lip_fields(x, y)
    ym = mouth_curves(ax)[0]
    h += upper + lower
    h -= 1.2 * np.exp(-(((y - ym) / 0.8) ** 2)) * _sig((MOUTH_HALF - ax) / 1.0)  # mouth line
    h -= 1.3 * _g(ax, y, 26.5, -68.5, 2.5, 2.5)  # mouth corners
    h += 1.5 * _g(x, y, 0.0, -54.0, 14.0, 6.0)  # upper lip skin
    h -= 0.6 * _g(x, y, 0.0, -53.0, 2.5, 5.0)  # philtrum
    h -= 2.5 * _g(x, y, 0.0, -87.0, 18.0, 3.5)  # labiomental fold
    h += 5.0 * _g(x, y, 0.0, -101.0, 15.0, 9.0)  # chin
    return h


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
@dataclass
class _Geometry:
    """Everything about the mean shape needed to build the model (design frame, flattened)."""

    base: np.ndarray  # (V, 3) base head points
    base_normals: np.ndarray  # (V, 3)
    mean: np.ndarray  # (V, 3) mean shape
    normals: np.ndarray  # (V, 3) normals of the mean shape
    front: np.ndarray  # (V,) 1 on the face front, fading to 0 towards the sides
    phi: np.ndarray  # (V,) azimuth of each vertex ray
    faces: np.ndarray
    uvs: np.ndarray

    @property
    def x(self) -> np.ndarray:
        return self.base[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.base[:, 1]

    @property
    def ax(self) -> np.ndarray:
        return np.abs(self.base[:, 0])


def _front_weight(normals: np.ndarray) -> np.ndarray:
    t = np.clip((normals[..., 2] - 0.05) / 0.4, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _geometry() -> _Geometry:
    phi, psi = _grid_angles()
    dirs = np.stack([np.cos(psi) * np.sin(phi), np.sin(psi), np.cos(psi) * np.cos(phi)], -1)
    base = _cast(dirs)
    base_n = _grid_normals(base)
    front = _front_weight(base_n)
    h = _features(base[..., 0], base[..., 1]) * front
    mean = base + h[..., None] * base_n
    normals = _grid_normals(mean)
    jj, ii = np.meshgrid(np.arange(GRID), np.arange(GRID))
    uvs = np.stack([jj.ravel() / (GRID - 1), ii.ravel() / (GRID - 1)], 1).astype(np.float64)
    return _Geometry(
        base=base.reshape(-1, 3),
        base_normals=base_n.reshape(-1, 3),
        mean=mean.reshape(-1, 3),
        normals=normals.reshape(-1, 3),
        front=front.reshape(-1),
        phi=phi.reshape(-1),
        faces=grid_faces(GRID),
        uvs=uvs,
    )


# --------------------------------------------------------------------------------------------
# landmarks
# --------------------------------------------------------------------------------------------
def _landmark_targets() -> np.ndarray:
    """(68, 2) base-frame (x, y) targets of landmarks 17–67 (rows 0–16 unused)."""
    t = np.zeros((68, 2))
    bx = np.array([54.0, 45.0, 35.0, 25.0, 15.0])  # brows, outer to inner
    t[17:22] = np.stack([-bx, brow_curve(bx)], 1)
    t[22:27] = np.stack([bx[::-1], brow_curve(bx[::-1])], 1)
    t[27:31] = [[0, 4.0], [0, -8.0], [0, -20.0], [0, -32.0]]
    t[31:36] = [[-11.5, -43.0], [-6.0, -45.5], [0.0, -47.0], [6.0, -45.5], [11.5, -43.0]]

    def eye(sign: float, order: list[float], lids: list[str]) -> np.ndarray:
        pts = []
        for e, lid in zip(order, lids, strict=True):
            ax = np.array([EYE_X + e * EYE_HALF])
            _, yc, yu, yl = eye_curves(ax)
            yy = {"c": yc, "u": yu, "l": yl}[lid][0]
            pts.append([sign * ax[0], yy])
        return np.array(pts)

    # subject's right eye (x < 0): outer corner, upper lid outer→inner, inner corner, lower lid
    t[36:42] = eye(-1.0, [1.0, 0.35, -0.35, -1.0, -0.35, 0.35], ["c", "u", "u", "c", "l", "l"])
    t[42:48] = eye(1.0, [-1.0, -0.35, 0.35, 1.0, 0.35, -0.35], ["c", "u", "u", "c", "l", "l"])
    ox = np.array(
        [-MOUTH_HALF, -17.0, -7.0, 0.0, 7.0, 17.0, MOUTH_HALF, 17.0, 7.0, 0.0, -7.0, -17.0]
    )
    ym, hu, hl = mouth_curves(np.abs(ox))
    oy = ym.copy()
    oy[1:6] += hu[1:6]
    oy[7:12] -= hl[7:12]
    t[48:60] = np.stack([ox, oy], 1)
    ix = np.array([-24.0, -8.0, 0.0, 8.0, 24.0, 8.0, 0.0, -8.0])
    t[60:68] = np.stack([ix, mouth_curves(np.abs(ix))[0]], 1)
    return t


def _landmarks(geo: _Geometry) -> np.ndarray:
    """(68,) vertex indices of the iBUG-68 landmarks on the grid."""
    idx = np.zeros(68, dtype=np.int64)
    rows = np.arange(GRID * GRID) // GRID
    cols = np.arange(GRID * GRID) % GRID
    interior = (rows > 1) & (rows < GRID - 2) & (cols > 1) & (cols < GRID - 2)
    frontal = interior & (geo.base_normals[:, 2] > 0.3)
    targets = _landmark_targets()
    ym = mouth_curves(geo.ax)[0]
    for k in range(17, 68):
        cand = frontal
        if k in (61, 62, 63):  # inner upper lip: keep on the upper lip's side of the mouth line
            cand = frontal & (geo.y > ym)
        elif k in (65, 66, 67):
            cand = frontal & (geo.y < ym)
        d = np.sum((geo.base[:, :2] - targets[k]) ** 2, axis=1)
        idx[k] = int(np.argmin(np.where(cand, d, np.inf)))
    # nose tip: the most forward vertex of the midline
    mid = np.flatnonzero(cols == _MID)
    idx[30] = int(mid[np.argmax(geo.mean[mid, 2])])
    # jaw contour: where the surface turns away from the viewer (base normal·z ≈ 0.3 at the
    # sides, 0.6 under the chin, where the grid ends before the surface faces down), at evenly
    # spaced angles around a point between the eyes and the mouth, from the subject's right ear
    # (landmark 0) round the chin (8) to the left ear (16)
    origin = np.array([0.0, -35.0])
    rel = geo.base[:, :2] - origin
    ang = np.arctan2(rel[:, 1], rel[:, 0])
    for k in range(17):
        level = 0.3 + 0.3 * (1.0 - abs(k - 8) / 8.0) ** 2
        band = interior & (np.abs(geo.base_normals[:, 2] - level) < 0.05)
        theta = np.deg2rad(150.0 + k * 240.0 / 16.0)
        diff = np.abs(np.angle(np.exp(1j * (ang - theta))))
        idx[k] = int(np.argmin(np.where(band, diff, np.inf)))
    return idx


# --------------------------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------------------------
def _hair(geo: _Geometry) -> np.ndarray:
    """(V,) weight in [0, 1] of hair: above the hairline and the sideburns at the sides."""
    top = _sig((geo.y - hairline(geo.ax)) / 1.5)
    side = _sig((np.abs(geo.phi) - np.deg2rad(80.0)) / 0.05) * _sig((geo.y + 15.0) / 3.0)
    return np.maximum(top, side)


def _regions(geo: _Geometry, landmarks: np.ndarray) -> RegionMasks:
    r = regions_from_landmarks(geo.mean, geo.mean[landmarks])
    rows = np.arange(GRID * GRID) // GRID
    cols = np.arange(GRID * GRID) % GRID
    border = (rows < 3) | (rows > GRID - 4) | (cols < 3) | (cols > GRID - 4)
    keep = (_hair(geo) < 0.5) & ~border & (geo.front > 0.2)
    return RegionMasks(
        eyes=r.eyes,
        nose=r.nose,
        mouth=r.mouth,
        forehead=r.forehead & keep,
        cheeks=r.cheeks & keep,
        fit=r.fit & keep,
    )


# --------------------------------------------------------------------------------------------
# bases
# --------------------------------------------------------------------------------------------
def _along(normals: np.ndarray, h: np.ndarray) -> np.ndarray:
    return normals * h[:, None]


def _vec(
    dx: np.ndarray | float, dy: np.ndarray | float, dz: np.ndarray | float, n: int
) -> np.ndarray:
    out = np.zeros((n, 3))
    out[:, 0], out[:, 1], out[:, 2] = dx, dy, dz
    return out


def _rbf_fields(geo: _Geometry, rng: _Random, count: int, sigmas: np.ndarray) -> list[np.ndarray]:
    """Smooth random displacement fields: sums of 4 Gaussian blobs on the face."""
    p = geo.mean
    centres_pool = np.flatnonzero((geo.front > 0.5) & (_hair(geo) < 0.5))
    out = []
    for c in range(count):
        field = np.zeros_like(p)
        pick = centres_pool[(rng.uniform(4) * len(centres_pool)).astype(np.int64)]
        amp = rng.normal(4)
        tang = rng.normal(12).reshape(4, 3) * 0.35
        for i, v in enumerate(pick):
            w = np.exp(-np.sum((p - p[v]) ** 2, axis=1) / (2 * sigmas[c] ** 2))
            field += w[:, None] * (geo.normals[v] * amp[i] + tang[i])
        out.append(field)
    return out


def _jaw_weight(geo: _Geometry) -> np.ndarray:
    """1 on the chin and lower lip (sharp across the lips), fading towards the ears, 0 above."""
    ax, y = geo.ax, geo.y
    ym = mouth_curves(np.minimum(ax, MOUTH_HALF))[0]
    boundary = np.where(ax <= MOUTH_HALF, ym, ym + (ax - MOUTH_HALF) * (48.0 / 44.0))
    width = 0.35 + 6.0 * _sig((ax - 28.0) / 2.0)
    return _sig((boundary - y) / width) * np.exp(-((ax / 45.0) ** 2)) * geo.front


def _identity_fields(geo: _Geometry) -> tuple[list[np.ndarray], list[float], list[str]]:
    n = len(geo.mean)
    # Height changes go along the base head's smooth normals, the direction the features were
    # raised along. The mean shape's own normals turn by up to 70° between neighbouring vertices
    # (1.3 mm apart) across a lid margin, a nostril or the mouth line, and moving a few mm along
    # them folds the surface there.
    p, nrm, f = geo.mean, geo.base_normals, geo.front
    x, y, ax = geo.x, geo.y, geo.ax
    sx = np.tanh(x / 4.0)  # smooth sign
    nose_lower = _g(ax, y, 0.0, -40.0, 20.0, 9.0) * f
    eye_region = _g(ax, y, EYE_X, 1.5, 17.0, 11.0) * f
    mouth = _g(ax, y, 0.0, -69.0, 30.0, 11.0) * f
    chin = _g(x, y, 0.0, -100.0, 22.0, 14.0)
    jaw = _sig((-55.0 - y) / 10.0)
    upper, lower = _lip_fields(x, y)
    designed = [
        ("face_width", 4.0, _vec(p[:, 0] * 0.06, 0, 0, n)),
        ("face_length", 4.0, _vec(0, p[:, 1] * 0.04, 0, n)),
        ("lower_face_length", 4.0, _vec(0, np.minimum(y + 45.0, 0) * 0.07, 0, n)),
        ("face_depth", 3.5, _vec(0, 0, (p[:, 2] + 55.0) * 0.05 * f, n)),
        ("jaw_width", 3.5, _vec(p[:, 0] * 0.07 * jaw, 0, 0, n)),
        ("nose_size", 3.0, _along(nrm, _nose_field(x, y) * f * 0.15)),
        ("forehead_slope", 3.0, _vec(0, 0, -_pos(y - 15.0) * 0.06 * f, n)),
        ("chin_prominence", 3.0, _vec(0, 0, chin * f, n)),
        ("cheek_fullness", 3.0, _along(nrm, (_g(ax, y, 38.0, -45.0, 16.0, 16.0)) * f)),
        ("nose_length", 2.5, _vec(0, -_sig((-15.0 - y) / 6.0) * nose_lower, 0, n)),
        ("nose_width", 2.5, _vec(x * 0.15 * nose_lower, 0, 0, n)),
        ("eye_depth", 2.5, _along(nrm, -eye_region)),
        ("cheekbones", 2.5, _along(nrm, _g(ax, y, 47.0, -12.0, 14.0, 10.0) * f)),
        ("chin_height", 2.5, _vec(0, chin * f, 0, n)),
        ("jaw_angle", 2.5, _vec(sx * jaw * _g(ax, y, 55.0, -85.0, 15.0, 20.0), 0, 0, n)),
        ("brow_ridge", 2.0, _along(nrm, _g(ax, y, 30.0, 18.0, 22.0, 6.0) * f)),
        ("nose_bridge", 2.0, _along(nrm, _g(x, y, 0.0, -10.0, 6.0, 12.0) * f)),
        ("eye_spacing", 2.0, _vec(sx * eye_region, 0, 0, n)),
        ("mouth_width", 2.0, _vec(x * 0.1 * mouth, 0, 0, n)),
        ("lip_thickness", 2.0, _along(nrm, (upper + lower) * f * 0.4)),
        ("mouth_height", 2.0, _vec(0, mouth, 0, n)),
        ("nose_tip_rotation", 1.8, _vec(0, _g(x, y, 0.0, -36.0, 10.0, 7.0), 0, n)),
        ("temple_hollows", 1.8, _along(nrm, -_g(ax, y, 60.0, 25.0, 12.0, 16.0) * f)),
        (
            "eye_size",
            1.5,
            _vec((ax - EYE_X) * sx * 0.1 * eye_region, (y - 1.5) * 0.1 * eye_region, 0, n),
        ),
        ("eye_tilt", 1.5, _vec(0, (ax - EYE_X) * 0.1 * eye_region, 0, n)),
        ("chin_width", 1.5, _vec(x * 0.1 * chin * f, 0, 0, n)),
        ("nose_deviation", 1.2, _vec(_g(x, y, 0.0, -25.0, 12.0, 20.0) * f, 0, 0, n)),
        ("face_asymmetry", 1.2, _vec(0, np.tanh(x / 30.0) * _g(x, y, 0, -20, 70, 60), 0, n)),
    ]
    rng = _Random(20230601)
    count = 36
    sigmas = np.linspace(32.0, 12.0, count)
    random_fields = _rbf_fields(geo, rng, count, sigmas)
    random_std = 1.2 * 0.95 ** np.arange(count)
    names = [d[0] for d in designed] + [f"random_{i:02d}" for i in range(count)]
    stds = [d[1] for d in designed] + list(random_std)
    fields = [d[2] for d in designed] + random_fields
    return fields, stds, names


def _expression_fields(geo: _Geometry) -> tuple[list[np.ndarray], list[float], list[str]]:
    n = len(geo.mean)
    p, nrm, f = geo.mean, geo.base_normals, geo.front  # smooth normals, as for identity
    x, y, ax = geo.x, geo.y, geo.ax
    sx = np.tanh(x / 4.0)  # smooth sign
    ym = mouth_curves(ax)[0]
    jaw = _jaw_weight(geo)
    pivot = np.array([0.0, -15.0, -85.0])  # jaw hinge line (parallel to x)
    r = p - pivot
    corners = _g(ax, y, MOUTH_HALF, -68.0, 9.0, 8.0) * f
    cheeks = _g(ax, y, 36.0, -38.0, 13.0, 12.0) * f
    lower_lid = _g(ax, y, EYE_X, -5.0, 12.0, 3.0) * f
    brows = (
        _sig((y - 8.0) / 3.0) * np.exp(-((_pos(y - 25.0) / 35.0) ** 2)) * _sig((62.0 - ax) / 5.0)
    )
    brows = brows * f
    inner_brows = _g(ax, y, 15.0, 17.0, 12.0, 8.0) * f
    lips = _g(ax, y, 0.0, -68.0, 22.0, 9.0) * f
    above = _sig((y - ym) / 0.35)
    below = 1.0 - above
    _, _, yu, yl = eye_curves(ax)
    closure = _along(nrm, (_eye_field(x, y, 1.0) - _eye_field(x, y)) * f)
    closure[:, 1] -= (
        0.4
        * (yu - yl)
        * np.exp(-(((y - yu) / 3.5) ** 2))
        * _sig((1.1 - np.abs((ax - EYE_X) / EYE_HALF)) * 6)
        * f
    )
    smile = _vec(
        sx * 2.5 * corners + sx * 0.8 * cheeks,
        3.5 * corners + 2.0 * cheeks + lower_lid,
        -2.0 * corners,
        n,
    ) + _along(nrm, 1.5 * cheeks)
    brow_raise = _vec(0, brows, 0, n)
    anti = np.tanh(x / 6.0)
    designed = [
        ("jaw_open", 9.0, jaw[:, None] * np.stack([np.zeros(n), -r[:, 2], r[:, 1]], 1)),
        ("smile", 5.0, smile),
        ("brow_raise", 5.0, brow_raise),
        ("cheek_puff", 4.0, _along(nrm, _g(ax, y, 40.0, -55.0, 16.0, 16.0) * f + 0.3 * lips)),
        ("pucker", 4.0, _vec(-x * 0.15 * lips, 0, 4.0 * lips, n)),
        ("eye_closure", 3.5, closure),
        (
            "frown",
            3.0,
            _vec(-sx * 2.0 * inner_brows, -2.5 * inner_brows, 0, n)
            + _along(nrm, _g(x, y, 0, 12, 6, 6) * f),
        ),
        ("smile_asymmetric", 3.0, smile * anti[:, None]),
        ("mouth_sideways", 3.0, _vec(_g(ax, y, 0.0, -72.0, 30.0, 14.0) * f, 0, 0, n)),
        ("lower_lip_down", 3.0, _vec(0, -lips * below, -0.5 * lips * below, n)),
        ("upper_lip_raise", 3.0, _vec(0, lips * above, 0.3 * lips * above, n)),
        ("jaw_sideways", 3.0, jaw[:, None] * np.stack([r[:, 2], np.zeros(n), -r[:, 0]], 1)),
        ("brow_raise_asymmetric", 2.5, brow_raise * anti[:, None]),
        ("wink", 2.5, closure * anti[:, None]),
        ("jaw_forward", 2.5, _vec(0, 0, jaw, n)),
        ("mouth_stretch", 2.5, _vec(sx * corners, 0, -0.3 * corners, n)),
        ("mouth_corners_down", 2.5, _vec(0, -corners, -0.3 * corners, n)),
        ("lip_press", 2.0, _vec(0, -0.7 * lips * above + 0.7 * lips * below, -lips, n)),
        (
            "nose_wrinkle",
            2.0,
            _vec(0, _g(ax, y, 13.0, -36.0, 8.0, 9.0) * f, 0, n) - 0.4 * _vec(0, inner_brows, 0, n),
        ),
        ("squint", 2.0, _vec(0, lower_lid, 0, n) + 0.3 * closure),
        ("cheek_suck", 2.0, _along(nrm, -_g(ax, y, 42.0, -58.0, 12.0, 12.0) * f)),
        ("inner_brow_raise", 2.0, _vec(0, inner_brows, 0, n)),
        (
            "chin_raise",
            2.0,
            _vec(
                0,
                _g(x, y, 0.0, -95.0, 18.0, 12.0) * f,
                0.5 * _g(x, y, 0.0, -95.0, 18.0, 12.0) * f,
                n,
            ),
        ),
        ("nostril_flare", 1.5, _vec(sx * _g(ax, y, 14.0, -40.0, 5.0, 5.0) * f, 0, 0, n)),
    ]
    return [d[2] for d in designed], [d[1] for d in designed], [d[0] for d in designed]


def _orthogonalise(fields: list[np.ndarray]) -> np.ndarray:
    """Orthonormal vectors spanning the fields in order (Gram–Schmidt, done as a QR).

    Column k is the part of field k orthogonal to fields 0..k-1, normalised, with the field's own
    sign (so a component keeps its designed direction).
    """
    flat = np.stack([fld.reshape(-1) for fld in fields], 1)
    q, r = np.linalg.qr(flat)
    diag = np.diag(r)
    scale = np.linalg.norm(flat, axis=0)
    if np.any(np.abs(diag) < 1e-9 * scale):  # pragma: no cover - a design error
        k = int(np.argmax(np.abs(diag) < 1e-9 * scale))
        raise RuntimeError(f"facehd-synth: component {k} is linearly dependent on earlier ones")
    return q * np.sign(diag)


def _shape_basis(geo: _Geometry, fields: list[np.ndarray]) -> np.ndarray:
    """Similarity-free, orthogonal, max-normalised basis (V, 3, K) from displacement fields."""
    v = len(geo.mean)
    raw = np.stack(fields, -1)  # (V, 3, K)
    free = project_out_similarity(raw, geo.mean)
    q = _orthogonalise([free[:, :, k] for k in range(free.shape[2])]).reshape(v, 3, -1)
    mags = np.linalg.norm(q, axis=1).max(axis=0)
    return q / mags


# --------------------------------------------------------------------------------------------
# albedo
# --------------------------------------------------------------------------------------------
_SKIN = np.array([0.80, 0.60, 0.50])
_LIPS = np.array([0.70, 0.36, 0.36])
_BROW = np.array([0.30, 0.22, 0.17])
_HAIR = np.array([0.24, 0.17, 0.12])
_SCLERA = np.array([0.92, 0.88, 0.85])
_IRIS = np.array([0.33, 0.22, 0.14])
_PUPIL = np.array([0.05, 0.04, 0.04])
_LASHES = np.array([0.15, 0.10, 0.08])
_NOSTRIL = np.array([0.35, 0.20, 0.18])


class _AlbedoMasks(NamedTuple):
    """Soft (V,) masks in [0, 1] of the coloured parts of the face."""

    eye_open: np.ndarray
    iris: np.ndarray
    pupil: np.ndarray
    lashes: np.ndarray
    lips: np.ndarray
    brows: np.ndarray
    nostrils: np.ndarray
    hair: np.ndarray


def _masks_for_albedo(geo: _Geometry) -> _AlbedoMasks:
    y, ax = geo.y, geo.ax
    ex, yc, yu, yl = eye_curves(ax)
    span = _sig((1.0 - np.abs(ex)) * 12.0)
    eye_open = _sig((yu - y) / 0.4) * _sig((y - yl) / 0.4) * span
    ym, hu, hl = mouth_curves(ax)
    lips = (
        _sig((ym + hu - y) / 0.5) * _sig((y - ym + hl) / 0.5) * _sig((MOUTH_HALF + 0.5 - ax) / 0.8)
    )
    brow_w = 3.2 * np.clip(1 - ((ax - 30.0) / 28.0) ** 2, 0, 1) ** 0.4
    brows = (
        _sig((brow_w - np.abs(y - brow_curve(ax))) / 0.7)
        * _sig((ax - 9.0) / 1.0)
        * _sig((57.0 - ax) / 1.5)
    )
    cy = yc + 1.2
    r = np.hypot(ax - EYE_X, y - cy)
    return _AlbedoMasks(
        eye_open=eye_open,
        iris=_sig((5.5 - r) / 0.35) * eye_open,
        pupil=_sig((2.2 - r) / 0.3) * eye_open,
        lashes=np.exp(-(((y - yu - 0.3) / 0.7) ** 2)) * span,
        lips=lips,
        brows=brows,
        nostrils=_g(ax, y, 6.0, -44.5, 2.6, 1.8),
        hair=_hair(geo),
    )


def _mean_albedo(geo: _Geometry) -> np.ndarray:
    m = _masks_for_albedo(geo)
    c = np.tile(_SKIN, (len(geo.mean), 1))
    ax, y = geo.ax, geo.y

    def blend(col: np.ndarray, w: np.ndarray) -> None:
        c[:] = c * (1 - w[:, None]) + col * w[:, None]

    c[:, 0] += 0.04 * _g(ax, y, 38.0, -30.0, 14.0, 12.0)  # rosy cheeks
    blend(_LIPS, m.lips)
    blend(_BROW, 0.85 * m.brows)
    blend(_SCLERA, m.eye_open)
    blend(_IRIS, m.iris)
    blend(_PUPIL, m.pupil)
    blend(_LASHES, 0.8 * m.lashes * (1 - m.eye_open * 0.5))
    blend(_NOSTRIL, 0.8 * m.nostrils)
    blend(_HAIR, m.hair)
    return np.clip(c, 0.0, 1.0)


def _albedo_fields(
    geo: _Geometry, mean: np.ndarray
) -> tuple[list[np.ndarray], list[float], list[str]]:
    n = len(geo.mean)
    m = _masks_for_albedo(geo)
    ax, y = geo.ax, geo.y
    skin = (1 - m.hair) * (1 - m.eye_open) * (1 - 0.7 * m.brows)

    def col(rgb: tuple[float, float, float], w: np.ndarray) -> np.ndarray:
        return w[:, None] * np.asarray(rgb)[None, :]

    beard = (
        _g(geo.x, y, 0.0, -95.0, 30.0, 22.0)
        + _g(ax, y, 45.0, -80.0, 15.0, 25.0)
        + _g(geo.x, y, 0, -55, 16, 5)
    ) * (1 - m.lips)
    designed = [
        ("brightness", 0.08, mean * skin[:, None]),
        ("tone", 0.06, col((0.25, 0.5, 1.0), skin)),
        ("redness", 0.04, col((1.0, -0.3, -0.2), skin)),
        ("cheek_blush", 0.035, col((1.0, -0.2, -0.1), _g(ax, y, 40.0, -32.0, 14.0, 12.0))),
        ("lip_colour", 0.035, col((1.0, 0.2, 0.3), m.lips)),
        ("brow_darkness", 0.035, col((1.0, 1.0, 1.0), m.brows)),
        ("hair_lightness", 0.03, col((1.0, 0.85, 0.7), m.hair)),
        ("iris_colour", 0.03, col((-1.0, 0.2, 1.0), m.iris * (1 - m.pupil))),
        ("beard_shadow", 0.025, col((-1.0, -0.9, -0.7), beard * skin)),
        ("under_eye", 0.025, col((-1.0, -1.0, -0.6), _g(ax, y, EYE_X, -7.0, 12.0, 4.0))),
        ("nose_redness", 0.02, col((1.0, -0.3, -0.3), _g(ax, y, 0.0, -35.0, 10.0, 10.0))),
        ("vertical_gradient", 0.02, col((1.0, 1.0, 1.0), np.tanh(y / 60.0) * skin)),
        ("horizontal_gradient", 0.02, col((1.0, 1.0, 1.0), np.tanh(geo.x / 50.0) * skin)),
        ("saturation", 0.02, (mean - mean.mean(1, keepdims=True)) * skin[:, None]),
        ("eyelid_shade", 0.02, col((-0.8, -1.0, -0.9), _g(ax, y, EYE_X, 9.0, 14.0, 4.0))),
        ("temple_shade", 0.015, col((-1.0, -1.0, -1.0), _g(ax, y, 60.0, 10.0, 12.0, 30.0) * skin)),
        ("sclera", 0.015, col((-0.6, -0.8, -1.0), m.eye_open * (1 - m.iris))),
        ("chin_highlight", 0.015, col((1.0, 1.0, 1.0), _g(geo.x, y, 0.0, -100.0, 14.0, 10.0))),
    ]
    rng = _Random(20230602)
    count = 6
    fields = []
    centres_pool = np.flatnonzero((geo.front > 0.5) & (m.hair < 0.5))
    # random colours are mixtures of skin-like directions: lightness, redness, yellowness
    skin_dirs = np.array([[1.0, 1.0, 1.0], [1.0, -0.3, -0.3], [0.4, 0.5, -1.0]]) / np.sqrt(3.0)
    for _ in range(count):
        fld = np.zeros((n, 3))
        pick = centres_pool[(rng.uniform(3) * len(centres_pool)).astype(np.int64)]
        rgb = rng.normal(9).reshape(3, 3) @ skin_dirs
        for i, v in enumerate(pick):
            w = np.exp(-np.sum((geo.mean - geo.mean[v]) ** 2, axis=1) / (2 * 25.0**2))
            fld += w[:, None] * rgb[i] * skin[:, None]
        fields.append(fld)
    names = [d[0] for d in designed] + [f"random_{i}" for i in range(count)]
    stds = [d[1] for d in designed] + list(0.012 * 0.9 ** np.arange(count))
    return [d[2] for d in designed] + fields, stds, names


# --------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------
def build_synth() -> MorphableModel:
    """Build facehd-synth from scratch (uncached; :func:`facehd_synth` caches it).

    Its bases come out of BLAS products whose last bits depend on the number of threads that
    sum them: they are built on one thread, so that every process builds the same model (a
    worker of a pool or a Ray task, which run on one thread, as the command that started it,
    and a machine with other cores as this one).
    """
    from facehd.threads import one_blas_thread

    with one_blas_thread():
        return _build_synth()


def _build_synth() -> MorphableModel:
    geo = _geometry()
    landmarks = _landmarks(geo)
    regions = _regions(geo, landmarks)
    id_fields, id_std, id_names = _identity_fields(geo)
    exp_fields, exp_std, exp_names = _expression_fields(geo)
    id_basis = _shape_basis(geo, id_fields)
    exp_basis = _shape_basis(geo, exp_fields)
    mean_albedo = _mean_albedo(geo)
    tex_fields, tex_std, tex_names = _albedo_fields(geo, mean_albedo)
    q = _orthogonalise(tex_fields).reshape(len(geo.mean), 3, -1)
    tex_basis = q / np.abs(q).max(axis=(0, 1))
    if (id_basis.shape[2], exp_basis.shape[2], tex_basis.shape[2]) != (N_ID, N_EXP, N_TEX):
        raise RuntimeError("facehd-synth: component counts differ from N_ID, N_EXP, N_TEX")
    centre = geo.mean.mean(axis=0)
    centre[0] = 0.0  # keep the exact mirror symmetry
    return MorphableModel(
        name="facehd-synth",
        unit_to_mm=1.0,
        mean_shape=geo.mean - centre,
        id_basis=id_basis,
        exp_basis=exp_basis,
        mean_albedo=mean_albedo,
        albedo_basis=tex_basis,
        faces=geo.faces,
        uvs=geo.uvs,
        landmarks68=landmarks,
        regions=regions,
        id_std=np.array(id_std),
        exp_std=np.array(exp_std),
        tex_std=np.array(tex_std),
        description="facehd-synth: procedural face model generated by code (mm, 129x129 UV grid)",
        id_names=tuple(id_names),
        exp_names=tuple(exp_names),
        tex_names=tuple(tex_names),
    )


@functools.cache
def facehd_synth() -> MorphableModel:
    """The built-in facehd-synth model (built on first use, then cached; read-only arrays)."""
    return build_synth()

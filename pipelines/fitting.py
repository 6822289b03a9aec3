"""Fitting the hierarchical face representation (M0, deformation, displacement) to a scan.

The per-scan mathematics of ``facehd build-priors`` (paper Sec. 3.3, supplementary Sec. 3.1). All
geometry is in millimetres; the scan has already been converted to mm (:func:`detect_units`).

1. **Align** (:func:`fit_scan`): rigid Procrustes from the scan's 7 landmarks to the model's
   (mean shape), then rigid point-to-plane ICP (:func:`facehd.registration.icp_point_to_plane`)
   of the scan's NoW-style face crop (:func:`now_crop`) onto the mean shape's fit region. The
   scale of the scan → model transform is the unit factor only (a face keeps its size).
2. **M0 with the pose**: a joint Gauss-Newton of the rigid pose and the identity + expression
   coefficients (Tikhonov prior), point-to-plane from the face-crop scan points to their closest
   points on M0, correspondences recomputed each step; then pose and coefficients are frozen.
   Distances go from the scan to the model surface, so the fit is unbiased where the model's
   facets fold, and solving pose and shape together avoids the slow zig-zag of alternating them.
   Steps 1-2 take the model's eyes and lids beside its fit region (``m0_fit_eyes``): the
   lids' shape holds the eye corners, which would otherwise slide along the surface.
3. **Deformation map** (64×64×3): ``M1 = M0 + A D`` with ``A`` the bilinear UV sampler
   (:func:`facehd.uv.uv_sampling_matrix`); ``D`` minimises the scan points' point-to-plane (and a
   small point-to-point) distances to M1 plus ``λ ||∇D||²`` (forward differences on the UV grid):
   one sparse least-squares solve through the sampler's adjoint per correspondence update.
4. **Displacement map** (256×256): per texel of M1's UV raster, the signed distance along M1's
   interpolated normal to the scan, by casting a ray both ways (nearest hit within
   ``displacement_max_mm``); masked where there is no hit, the hit surface is too oblique, both
   ways hit (a fold), the texel lies on a fold or outside the valid deformation area, or M2 still
   misses the scan there. It is measured from M1, so the mid frequencies M1 already holds are not
   counted twice. M2 is the dense grid mesh of M1's position map displaced along its normals
   (:func:`facehd.uv.displaced_dense_mesh`), the construction of the synthetic scans.
5. **Quality**: median and mean distance from the scan's face-region vertices (closest M1 point on
   the fit region, away from its border, within ``residual_max_mm``) to M0, M1 and M2.

Masks: correspondences and texels are used only on the model's fit region (no eyes, no nostrils;
the eyes and lids join it in steps 1-2),
away from its border (scan data beyond the face: hair, neck, clutter) and off folds (triangles
meeting at a sharp dihedral angle: closed lips, lid creases). A deformation texel is valid when
the scan points matched around it carry enough sampling weight (holes and hair fail).

What geometry cannot tell: a rigid motion or a sliding of M1 along its own surface changes nothing
a scan shows, so only the surface of M1 and the pose that best aligns M0 are determined; the
deformation's tangential part stays near zero (smoothness, point-to-point term).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from facehd.distances import SurfaceQuery, spatial_order
from facehd.errors import DegenerateInputError, FacehdError
from facehd.landmarks import NOW7_FROM_68
from facehd.mesh import Mesh, open_edges
from facehd.morphable import MorphableModel
from facehd.registration import icp_point_to_plane
from facehd.transforms import Similarity, procrustes, rotation_from_axis_angle
from facehd.uv import (
    UVRasterTable,
    displaced_dense_mesh,
    normal_map,
    rasterize_uv,
    sample_uv_map,
    uv_sampling_matrix,
)

__all__ = [
    "UNIT_TO_MM",
    "FitConfig",
    "FitError",
    "ModelFitData",
    "Residuals",
    "ScanFit",
    "ShapeFit",
    "detect_units",
    "face_region_points",
    "fit_scan",
    "fit_shape",
    "now_crop",
    "prepare_model",
]

UNIT_TO_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
"""Length of one unit in millimetres."""

#: Typical distance between the outer eye corners of an adult face, mm (unit detection).
TYPICAL_OUTER_EYE_MM = 95.0
#: Outer-eye-corner distances accepted as a face once converted to mm.
PLAUSIBLE_OUTER_EYE_MM = (50.0, 170.0)


class FitError(FacehdError):
    """A scan could not be fitted (alignment did not converge, too little face data...)."""


class LandmarkMismatch(FitError):
    """The 7 landmarks given do not fit the model's face (mirrored, wrong order, other units):
    a fault of the landmark file, which callers name."""


@dataclass
class FitConfig:
    """Parameters of the per-scan fit (defaults are those of ``facehd build-priors``)."""

    landmark_rms_max_mm: float = 20.0
    """Largest RMS distance between the scan's 7 landmarks and the model's after the landmark
    alignment; more means the landmarks do not belong to a face (wrong order, wrong file)."""
    icp_max_distance_mm: float = 10.0
    """Correspondence distance of the rigid ICP of the face crop on the mean shape (mm)."""
    icp_max_iterations: int = 30
    """ICP iterations per round."""
    icp_max_points: int = 8000
    """Face-crop scan points used by the ICP (an even subset when there are more)."""
    m0_max_distance_mm: tuple[float, ...] = (8.0, 4.0)
    """Correspondence distance of each round of the joint pose + M0 fit (mm)."""
    m0_iterations: int = 4
    """Gauss-Newton steps (correspondence updates) per round of the pose + M0 fit."""
    m0_max_points: int = 6000
    """Face-crop scan points used by the pose + M0 fit (an even subset when there are more)."""
    deformation_max_points: int = 30000
    """Face-crop scan points used by the deformation fit (an even subset when there are more)."""
    min_points: int = 200
    """Fewest accepted scan points with which the alignment is trusted."""
    m0_prior_weight: float = 0.01
    """Weight of the coefficient prior ``Σ (c_k / std_k)²`` relative to one mm² of point-to-plane
    misfit per 1000 vertices."""
    m0_fit_eyes: bool = True
    """Fit the pose and M0 (steps 1-2) to the model's eyes and lids too, beside its fit region:
    the lids' shape sets the eye corners, which the fit region alone leaves free to slide (on 48
    synthetic scans, seeds 0, 1, 3, 5, 7 and 8, M0's 68 landmark vertices lay 1.05 mm from the
    truth at the median and 4.2 mm at the 95th percentile without them, 0.85 and 2.9 mm with
    them; its eye corners 1.52 and 0.60 mm). The deformation, the displacement and the
    residuals keep to the fit region."""
    fold_angle_deg: float = 30.0
    """Model triangles meeting a neighbour at a sharper dihedral angle are folds (closed lips,
    lid creases): no correspondences there and no displacement (masked)."""
    m0_fold_angle_deg: float = 60.0
    """``fold_angle_deg`` for the pose + M0 fit (steps 1-2) alone. With a closed-mouth M0 the
    lips' inner faces are folds at 30°, so an open mouth can stay fitted closed; 60° lets it
    open (on 48 synthetic scans, seeds 0, 1, 3, 5, 7 and 8, M1's 68 landmark vertices came
    0.787 → 0.719 and 0.782 → 0.748 mm from the truth at the median, M1 vertex by vertex
    0.883 → 0.865 and 0.839 → 0.830 mm; the real scan's M1 residual 0.118 → 0.119 mm; the
    landmark check's NoW-7 median on 160 synthetic scans 0.59 → 0.51 mm shaded and
    0.58 → 0.52 mm with colours). Datasets built before this setting existed were fitted at
    30° (:attr:`pipelines.build_priors.PriorsConfig.FIT_ADDED_WITH`)."""
    point_weight: float = 0.1
    """Weight of the point-to-point term next to the point-to-plane term of the deformation
    fit (keeps the deformation's tangential part, which the surface cannot tell, near zero)."""
    reject_distance_mm: float = 5.0
    """Scan correspondences farther than this are rejected (holes, hair, extra geometry)."""
    reject_angle_deg: float = 60.0
    """Correspondences whose scan normal is more oblique to the model normal are rejected."""
    deformation_size: int = 64
    """Side of the deformation map (texels)."""
    deformation_smoothness: float = 3.0
    """Weight ``λ`` of the squared UV gradient of the deformation map (per texel pair, mm²)."""
    deformation_iterations: int = 4
    """Correspondence updates of the deformation fit."""
    mask_coverage: float = 0.25
    """A deformation texel is valid when the scan points matched around it carry at least this
    fraction of the median covered texel's sampling weight (holes, eyes, hair fail)."""
    displacement_size: int = 256
    """Side of the displacement map (texels)."""
    displacement_max_mm: float = 2.0
    """Largest displacement searched along the normal, both ways (mm)."""
    displacement_max_angle_deg: float = 45.0
    """Ray hits whose surface is more oblique to the ray are rejected."""
    displacement_error_factor: float = 4.0
    """Displacement texels whose scan-to-M2 error exceeds this many times the median texel
    error (and ``displacement_error_min_mm``) are masked: the scan there is not a displaced M1
    (folds, clutter)."""
    displacement_error_min_mm: float = 0.05
    """Floor of that limit (mm)."""
    residual_max_points: int = 40000
    """Face-region scan vertices the residuals are measured on (an even subset when more)."""
    residual_max_mm: float = 10.0
    """Scan vertices farther than this from M1 are not counted as face region (hair, clutter)."""
    converged_median_mm: float = 2.0
    """The fit fails when the median M1 residual on the face region exceeds this."""
    min_face_fraction: float = 0.3
    """The fit fails when fewer fit-region vertices than this fraction find scan data."""


# --------------------------------------------------------------------------------------------
# Units and crop
# --------------------------------------------------------------------------------------------
def detect_units(landmarks7: np.ndarray) -> tuple[str, float]:
    """Units of a scan from its 7 landmarks (NoW order): the unit among mm, cm and m that puts
    the outer-eye-corner distance closest (in ratio) to a typical adult's 95 mm.

    Parameters
    ----------
    landmarks7 : (7, 3) float, scan units.

    Returns
    -------
    (name, millimetres per unit).

    Raises
    ------
    DegenerateInputError
        When no unit gives a plausible face size (50–170 mm between the outer eye corners).
    """
    lm = np.asarray(landmarks7, dtype=np.float64)
    if lm.shape != (7, 3):
        raise ValueError(f"landmarks7 must have shape (7, 3), got {lm.shape}")
    d = float(np.linalg.norm(lm[0] - lm[3]))
    if not np.isfinite(d) or d <= 0:
        raise DegenerateInputError("the outer eye corners coincide; units cannot be inferred")
    name = min(UNIT_TO_MM, key=lambda u: abs(np.log(d * UNIT_TO_MM[u] / TYPICAL_OUTER_EYE_MM)))
    mm = d * UNIT_TO_MM[name]
    lo, hi = PLAUSIBLE_OUTER_EYE_MM
    if not lo <= mm <= hi:
        from facehd.scan_landmarks import inches_hint

        raise DegenerateInputError(
            f"outer-eye-corner distance {d:.4g} (file units) is not a face size in mm, cm or m; "
            + inches_hint(
                d, PLAUSIBLE_OUTER_EYE_MM, "give the units explicitly", "they are {:.0f} mm apart"
            )
        )
    return name, UNIT_TO_MM[name]


def now_crop(landmarks7: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and radius of the NoW face crop (``protocols/now.md`` step 1).

    Parameters
    ----------
    landmarks7 : (7, 3) float, NoW order.

    Returns
    -------
    (centre (3,), radius): centre = nose + 0.3 (eyes_mid − nose),
    radius = 1.4 (‖lm0 − lm3‖ + ‖eyes_mid − nose‖) / 2.
    """
    lm = np.asarray(landmarks7, dtype=np.float64)
    if lm.shape != (7, 3):
        raise ValueError(f"landmarks7 must have shape (7, 3), got {lm.shape}")
    nose = lm[4]
    eyes_mid = 0.5 * (lm[1] + lm[2])
    centre = nose + 0.3 * (eyes_mid - nose)
    radius = 1.4 * (np.linalg.norm(lm[0] - lm[3]) + np.linalg.norm(eyes_mid - nose)) / 2.0
    return centre, float(radius)


# --------------------------------------------------------------------------------------------
# Model data shared by all scans
# --------------------------------------------------------------------------------------------
def gradient_operator(size: int) -> sp.csr_matrix:
    """Forward differences of a row-major ``size × size`` map along rows and columns.

    Returns
    -------
    csr_matrix (2·size·(size−1), size²): one row per pair of neighbouring texels.
    """
    idx = np.arange(size * size).reshape(size, size)
    pairs = [
        (idx[:, :-1].ravel(), idx[:, 1:].ravel()),
        (idx[:-1, :].ravel(), idx[1:, :].ravel()),
    ]
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    n = a.size
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([a, b])
    vals = np.concatenate([-np.ones(n), np.ones(n)])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, size * size))


@dataclass(eq=False)
class ModelFitData:
    """Everything about a morphable model that the per-scan fit reuses (built once)."""

    model: MorphableModel
    deformation_size: int
    displacement_size: int
    mean_mm: np.ndarray
    """(V, 3) mean shape, mm."""
    basis_mm: np.ndarray
    """(V, 3, K) identity then expression basis, mm per coefficient."""
    std: np.ndarray
    """(K,) prior standard deviation of each coefficient."""
    fit: np.ndarray
    """(V,) bool: the model's fit region (no eyes, no nostrils)."""
    fit_faces: np.ndarray
    """(F,) bool: faces with all three vertices in the fit region."""
    fit_border_faces: np.ndarray
    """(F,) bool: fit faces on the border of the fit region (or of the mesh)."""
    landmarks7: np.ndarray
    """(7, 3) the mean shape's NoW landmarks, mm."""
    landmark7_index: np.ndarray
    """(7,) int64 vertex indices of the NoW landmarks."""
    face_pairs: np.ndarray
    """(E, 2) int64 the two faces of every interior edge."""

    def for_shape(self, config: FitConfig) -> ModelFitData:
        """What steps 1-2 fit the pose and M0 on: this model with its eyes and lids in the fit
        region when ``config.m0_fit_eyes`` (made once), else (or when its fit region holds
        them already) this one."""
        r = self.model.regions
        if not config.m0_fit_eyes or not (r.eyes & ~r.fit).any():
            return self
        return self._with_eyes

    @cached_property
    def _with_eyes(self) -> ModelFitData:
        from facehd.morphable.model import RegionMasks

        r = self.model.regions
        masks = {name: getattr(r, name) for name in RegionMasks.names()}
        masks["fit"] = r.fit | r.eyes
        model = replace(self.model, regions=RegionMasks(**masks))
        return _prepare(model, self.deformation_size, self.displacement_size)

    def fold_faces(
        self, verts: np.ndarray, angle_deg: float, face_normals: np.ndarray | None = None
    ) -> np.ndarray:
        """(F,) bool: faces meeting a neighbour at a dihedral angle above ``angle_deg`` (folds:
        closed lips, lid creases), where the closest points and the normal are ambiguous.
        ``face_normals``: those of ``verts``' faces where the caller has them already."""
        fn = Mesh(verts, self.model.faces).face_normals if face_normals is None else face_normals
        a, b = self.face_pairs[:, 0], self.face_pairs[:, 1]
        sharp = np.sum(fn[a] * fn[b], axis=1) < np.cos(np.radians(angle_deg))
        out = np.zeros(len(fn), dtype=bool)
        out[a[sharp]] = True
        out[b[sharp]] = True
        return out

    @cached_property
    def sampler(self) -> sp.csr_matrix:
        """(V, S²) bilinear sampler of the deformation map at the vertex UVs."""
        return uv_sampling_matrix(self.model.uvs, self.deformation_size)

    @cached_property
    def gradient(self) -> sp.csr_matrix:
        """Forward-difference operator of the deformation map."""
        return gradient_operator(self.deformation_size)

    @cached_property
    def table(self) -> UVRasterTable:
        """UV raster of the model at the displacement size."""
        return rasterize_uv(self.model.uvs, self.model.faces, self.displacement_size)

    @cached_property
    def texel_fit(self) -> np.ndarray:
        """(S2, S2) bool: displacement texels on a fit-region, non-border triangle."""
        t = self.table
        ok = self.fit_faces & ~self.fit_border_faces
        out = np.zeros(t.size, dtype=bool)
        out[t.mask] = ok[t.face_ids[t.mask]]
        return out

    @cached_property
    def texel_uvs_disp(self) -> np.ndarray:
        """(S2·S2, 2) texel-centre UVs of the displacement map."""
        return self.table.texel_uvs().reshape(-1, 2)

    def m0_vertices(self, coeffs: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """M0 vertices (mm) for stacked identity+expression coefficients ``(K,)``."""
        if index is None:
            return self.mean_mm + self.basis_mm @ coeffs
        return self.mean_mm[index] + self.basis_mm[index] @ coeffs


_PREPARED: dict[tuple[int, int, int, int], ModelFitData] = {}


def prepare_model(model: MorphableModel, config: FitConfig | None = None) -> ModelFitData:
    """Precompute (and cache per model and map sizes) what the fit needs from ``model``."""
    config = config or FitConfig()
    key = (id(model), config.deformation_size, config.displacement_size)
    if key in _PREPARED and _PREPARED[key].model is model:
        return _PREPARED[key]
    data = _prepare(model, config.deformation_size, config.displacement_size)
    _PREPARED[key] = data
    return data


def _prepare(model: MorphableModel, deformation_size: int, displacement_size: int) -> ModelFitData:
    """:func:`prepare_model` without the cache."""
    u = float(model.unit_to_mm)
    mean_mm = np.asarray(model.mean_shape, dtype=np.float64) * u
    basis_mm = np.concatenate([model.id_basis, model.exp_basis], axis=2).astype(np.float64) * u
    std = np.concatenate([model.id_std, model.exp_std]).astype(np.float64)
    fit = np.asarray(model.regions.fit, dtype=bool)
    faces = np.asarray(model.faces, dtype=np.int64)
    fit_faces = fit[faces].all(axis=1)
    border = np.zeros(len(faces), dtype=bool)
    border[fit_faces] = open_edges(faces[fit_faces]).any(axis=1)  # faces on the region's edge
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    owner = np.tile(np.arange(len(faces)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, owner = edges[order], owner[order]
    same = np.all(edges[1:] == edges[:-1], axis=1)
    face_pairs = np.stack([owner[:-1][same], owner[1:][same]], axis=1)
    lm7_index = np.asarray(model.landmarks68, dtype=np.int64)[list(NOW7_FROM_68)]
    lm7 = mean_mm[lm7_index]
    return ModelFitData(
        model=model,
        deformation_size=deformation_size,
        displacement_size=displacement_size,
        mean_mm=mean_mm,
        basis_mm=basis_mm,
        std=std,
        fit=fit,
        fit_faces=fit_faces,
        fit_border_faces=border,
        landmarks7=lm7,
        landmark7_index=lm7_index,
        face_pairs=face_pairs,
    )


# --------------------------------------------------------------------------------------------
# Correspondences
# --------------------------------------------------------------------------------------------
@dataclass
class _Matches:
    """Scan points (model frame) matched to their closest points on a model-topology surface."""

    face_ids: np.ndarray  # (N,) model triangle of the closest point
    bary: np.ndarray  # (N, 3) its barycentric coordinates
    normals: np.ndarray  # (N, 3) unit normal of that triangle
    distances: np.ndarray  # (N,)
    ok: np.ndarray  # (N,) bool: accepted correspondence


def _match_to_model(
    md: ModelFitData,
    points: np.ndarray,
    point_normals: np.ndarray,
    verts: np.ndarray,
    max_distance: float,
    config: FitConfig,
    threads: int,
    fold_angle_deg: float,
) -> _Matches:
    """Closest points of model-frame scan ``points`` on the model surface ``verts``, filtered.

    Accepted: the closest point lies inside the fit region (not on its border: scan points beyond
    the face, over the eyes or nostrils land there), within ``max_distance``, roughly along the
    triangle's normal (not off a border to the side), not on a fold sharper than
    ``fold_angle_deg`` (:meth:`ModelFitData.fold_faces`), and the scan's normal agrees with the
    model's within ``reject_angle_deg`` (either orientation).
    """
    mesh = Mesh(verts, md.model.faces)
    cp = SurfaceQuery(mesh, nthreads=threads).closest(points, neighbours=False)
    f = cp.face_ids
    all_fn = mesh.face_normals
    fn = all_fn[f]
    d = cp.distances
    cos_max = np.cos(np.radians(config.reject_angle_deg))
    along = np.abs(np.sum((points - cp.points) * fn, axis=1)) >= cos_max * d
    agree = np.abs(np.sum(point_normals * fn, axis=1)) >= cos_max
    usable = md.fit_faces & ~md.fit_border_faces & ~md.fold_faces(verts, fold_angle_deg, all_fn)
    interior = usable[f]
    ok = interior & (d <= max_distance) & agree & (along | (d < 0.25))
    return _Matches(f, cp.barycentrics, fn, d, ok)


def _bary_matrix(
    faces: np.ndarray, face_ids: np.ndarray, bary: np.ndarray, n_v: int
) -> sp.csr_matrix:
    """(N, V) sparse: row ``i`` interpolates vertex values at the ``i``-th surface point."""
    n = len(face_ids)
    rows = np.repeat(np.arange(n), 3)
    return sp.csr_matrix((bary.ravel(), (rows, faces[face_ids].ravel())), shape=(n, n_v))


class _ScanSurface:
    """The scan (mm, its own frame): ray queries from the model frame, sampled face points."""

    def __init__(self, scan_mm: Mesh, threads: int) -> None:
        self.mesh = scan_mm
        self.threads = threads
        self.query = SurfaceQuery(scan_mm, nthreads=threads)
        self.face_normals = scan_mm.face_normals
        self.vertex_normals = scan_mm.vertex_normals


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class Residuals:
    """Scan-to-surface distances on the face region (mm)."""

    median: np.ndarray
    """(3,) median distance for M0, M1, M2."""
    mean: np.ndarray
    """(3,) mean distance for M0, M1, M2."""
    n_points: int
    """Scan vertices in the face region."""
    distances: np.ndarray
    """(3, n_points) the distances themselves."""
    points: np.ndarray
    """(n_points, 3) the face-region scan vertices, model frame."""


@dataclass
class ScanFit:
    """Everything fitted for one scan (model frame, mm)."""

    transform: Similarity
    """Scan (file units) → model (mm): ``x_model = scale · R @ x_scan + t``."""
    identity: np.ndarray
    """(K_id,) identity coefficients of M0."""
    expression: np.ndarray
    """(K_exp,) expression coefficients of M0."""
    deformation: np.ndarray
    """(S, S, 3) deformation map, mm (fitted everywhere; trust it where the mask is set)."""
    deformation_mask: np.ndarray
    """(S, S) bool."""
    displacement: np.ndarray
    """(S2, S2) displacement map, mm (0 where masked)."""
    displacement_mask: np.ndarray
    """(S2, S2) bool."""
    m0: Mesh
    """Coarse mesh (model topology, UVs)."""
    m1: Mesh
    """M0 + deformation (model topology, UVs)."""
    m2: Mesh
    """Dense displaced grid mesh over the displacement map (UVs at texel centres)."""
    residuals: Residuals
    """Quality on the face region."""
    landmark_rms_mm: float
    """RMS landmark distance after the landmark alignment."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (align, m0, deformation, displacement, quality)."""
    error_map: np.ndarray | None = None
    """(S2, S2) unsigned scan-to-M2 distance per displacement texel (NaN where unknown)."""
    normal_weighting: str = "area"
    """How the model weighs its vertex normals (:attr:`MorphableModel.normal_weighting`): the
    normals M2 was displaced along are M1's, weighted so."""


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
def _even_subset(index: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` entries of ``index``, evenly spaced along it (deterministic; spread in
    space when ``index`` is in :func:`facehd.distances.spatial_order`, as the face crop is)."""
    if index.size <= n:
        return index
    return index[np.unique(np.linspace(0, index.size - 1, n).round().astype(np.int64))]


def _normal_basis(
    basis: np.ndarray, tri: np.ndarray, beta: np.ndarray, normals: np.ndarray
) -> np.ndarray:
    """(N, K): ``normals[i] · Σ_k beta[i, k] basis[tri[i, k]]`` for a basis (V, 3, K).

    One sparse (N, 3V) × (3V, K) product over the 9 (corner, axis) weights of each point,
    instead of gathering the (N, 3, 3, K) basis rows of the points' corners."""
    n_points, n_vertices = len(tri), basis.shape[0]
    weights = (beta[:, :, None] * normals[:, None, :]).ravel()
    columns = (3 * tri[:, :, None] + np.arange(3)).ravel()
    rows = np.repeat(np.arange(n_points), 9)
    w = sp.csr_matrix((weights, (rows, columns)), shape=(n_points, 3 * n_vertices))
    return np.asarray(w @ basis.reshape(3 * n_vertices, -1))


def _fit_pose_and_coefficients(
    md: ModelFitData,
    pts: np.ndarray,
    nrm: np.ndarray,
    transform: Similarity,
    coeffs: np.ndarray,
    verts: np.ndarray,
    config: FitConfig,
    max_distance: float,
    iterations: int,
    threads: int,
    tolerance_mm: float = 0.0,
) -> tuple[Similarity, np.ndarray, np.ndarray, float]:
    """Joint Gauss-Newton of the rigid pose and the M0 coefficients (correspondences iterated).

    ``pts``, ``nrm`` : (N, 3) scan face points and their normals, scan frame (mm). Each scan point
    ``s`` (model frame) is matched to its closest M0 point ``x = Σ β_k v_k`` (triangle normal
    ``n``); the scan moves by a small rigid motion ``s -> s + ω × s + τ`` while M0 takes new
    coefficients ``c``: residuals ``n · (μ_x + B_x c − s − ω × s − τ)`` plus the prior
    ``λ Σ (c_k / std_k)²``. Measuring from the scan to the model surface (not from model
    vertices to the scan) keeps the fit unbiased where the model's facets fold; solving pose
    and shape together avoids the slow zig-zag of alternating them. ``verts`` is M0 for
    ``coeffs``. Returns the pose, the coefficients, their M0 and how far the last step moved
    M0's fit-region vertices relative to the scan (median, mm; NaN after no step); with
    ``tolerance_mm`` > 0 it stops before ``iterations`` steps once a step moves them less.
    """
    k = md.basis_mm.shape[2]
    prior = np.zeros((6 + k, 6 + k))
    prior[6:, 6:] = np.diag(1.0 / np.maximum(md.std, 1e-12) ** 2)
    faces = md.model.faces
    moved = float("nan")
    for _ in range(iterations):
        s = transform.apply(pts)
        m = _match_to_model(
            md,
            s,
            nrm @ transform.rotation.T,
            verts,
            max_distance,
            config,
            threads,
            config.m0_fold_angle_deg,
        )
        if m.ok.sum() < config.min_points:
            raise FitError(
                f"only {int(m.ok.sum())} face-crop scan points lie within {max_distance:g} mm of "
                "the model's face region; the alignment did not converge"
            )
        s, n = s[m.ok], m.normals[m.ok]
        tri = faces[m.face_ids[m.ok]]
        beta = m.bary[m.ok]
        mu_x = np.einsum("nk,nkc->nc", beta, md.mean_mm[tri])
        # n · Σ_k β_k B_k
        nb = _normal_basis(md.basis_mm, tri, beta, n)
        jac = np.concatenate([-np.cross(s, n), -n, nb], axis=1)
        y = np.sum(n * (s - mu_x), axis=1)
        lam = config.m0_prior_weight * len(s) / 1000.0
        h = jac.T @ jac + lam * prior + 1e-9 * np.eye(6 + k)
        x = np.linalg.solve(h, jac.T @ y)
        coeffs = x[6:]
        step = Similarity(1.0, rotation_from_axis_angle(x[:3]), x[3:6])
        transform = step.compose(transform)
        before = verts
        verts = md.m0_vertices(coeffs)
        # the step moved the scan by `step`: in the new model frame the old M0 lies at
        # step(before), and M0 moved relative to the scan by the difference
        moved = float(np.median(np.linalg.norm(verts[md.fit] - step.apply(before[md.fit]), axis=1)))
        if moved < tolerance_mm:
            break
    return transform, coeffs, verts, moved


def _fit_rounds(
    md: ModelFitData,
    pts: np.ndarray,
    nrm: np.ndarray,
    transform: Similarity,
    coeffs: np.ndarray,
    config: FitConfig,
    iterations: int,
    threads: int,
    tolerance_mm: float = 0.0,
    last_step_mm: float = float("nan"),
) -> tuple[Similarity, np.ndarray, np.ndarray, float]:
    """Each round of :func:`_fit_pose_and_coefficients` in turn (``m0_max_distance_mm``), up
    to ``iterations`` steps each: the pose, the coefficients, their M0 and how far the last
    step taken moved M0 (``last_step_mm`` when none was)."""
    verts = md.m0_vertices(coeffs)
    for dmax in config.m0_max_distance_mm:
        transform, coeffs, verts, moved = _fit_pose_and_coefficients(
            md, pts, nrm, transform, coeffs, verts, config, dmax, iterations, threads, tolerance_mm
        )
        if not np.isnan(moved):
            last_step_mm = moved
    return transform, coeffs, verts, last_step_mm


def _icp_round(
    md: ModelFitData,
    crop_pts: np.ndarray,
    transform: Similarity,
    coeffs: np.ndarray,
    max_distance: float,
    config: FitConfig,
    threads: int,
) -> Similarity:
    """Rigid point-to-plane ICP (:func:`facehd.registration.icp_point_to_plane`) of scan
    face-crop points (mm, scan frame) onto M0's fit region; only the points whose closest M0
    point is inside the fit region (not on its border) and within ``max_distance`` take part."""
    verts = md.m0_vertices(coeffs)
    target = Mesh(verts, md.model.faces[md.fit_faces])
    q = SurfaceQuery(target, nthreads=threads)
    cp = q.closest(transform.apply(crop_pts), neighbours=False)
    border = md.fit_border_faces[md.fit_faces][cp.face_ids]
    idx = _even_subset(
        np.flatnonzero((cp.distances <= max_distance) & ~border), config.icp_max_points
    )
    if idx.size < config.min_points:
        raise FitError(
            f"alignment failed: only {idx.size} face-crop scan points lie within "
            f"{max_distance:g} mm of the model after the landmark alignment"
        )
    res = icp_point_to_plane(
        crop_pts[idx],
        target,
        init=transform,
        max_distance=max_distance,
        max_iterations=config.icp_max_iterations,
        method="surface",
    )
    return res.transform


def _fit_deformation(
    md: ModelFitData,
    pts_model: np.ndarray,
    nrm_model: np.ndarray,
    m0: np.ndarray,
    config: FitConfig,
    threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Deformation map by sparse least squares through the UV sampler (correspondences iterated).

    Each scan point ``s`` (model frame) matched to its closest M1 point ``x = W (M0 + A D)``
    (``W`` barycentric rows, ``A`` the sampler) gives the point-to-plane row
    ``n · (W A D) = n · (s − W M0)`` and, weighted by ``point_weight``, the three point-to-point
    rows; the regulariser is ``λ Σ_c ||∇ D_c||²``. Solved by conjugate gradients on the normal
    equations ``(Jᵀ J + λ I₃ ⊗ ∇ᵀ∇) x = Jᵀ y`` (``Aᵀ`` is the sampler's adjoint).

    Returns
    -------
    (deformation (S², 3), texel data weight (S²,): summed sampling weight of the accepted scan
    points' correspondences).
    """
    a = md.sampler
    s2 = a.shape[1]
    n_v = md.model.n_vertices
    gtg = (md.gradient.T @ md.gradient).tocsr()
    reg = sp.block_diag([gtg] * 3, format="csr") * config.deformation_smoothness
    reg = reg + sp.identity(3 * s2, format="csr") * 1e-6
    d = np.zeros((s2, 3))
    beta = config.point_weight
    faces = md.model.faces
    coverage = np.zeros(s2)
    for _ in range(config.deformation_iterations):
        v1 = m0 + a @ d
        m = _match_to_model(
            md,
            pts_model,
            nrm_model,
            v1,
            config.reject_distance_mm,
            config,
            threads,
            config.fold_angle_deg,
        )
        ok = m.ok
        wmat = _bary_matrix(faces, m.face_ids[ok], m.bary[ok], n_v)
        wa = (wmat @ a).tocsr()
        n = m.normals[ok]
        rhs = pts_model[ok] - wmat @ m0  # (N, 3)
        j_pl = sp.hstack([sp.diags(n[:, c]) @ wa for c in range(3)], format="csr")
        ata = (wa.T @ wa).tocsr()
        h = j_pl.T @ j_pl + beta * sp.block_diag([ata] * 3, format="csr") + reg
        g = j_pl.T @ np.sum(n * rhs, axis=1)
        g = g + beta * np.concatenate([wa.T @ rhs[:, c] for c in range(3)])
        d = _solve_spd(h, g, d.T.reshape(-1)).reshape(3, s2).T
        coverage = np.asarray(wa.sum(axis=0)).ravel()
    return d, coverage


def _solve_spd(h: sp.spmatrix, g: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Solve the sparse symmetric positive definite system ``h x = g``: Jacobi-preconditioned
    conjugate gradients from ``x0``, or a sparse direct solve if they stall."""
    h = h.tocsr()
    pre = sp.diags(1.0 / np.maximum(h.diagonal(), 1e-12))
    x, info = spla.cg(h, g, x0=x0, rtol=1e-10, atol=0.0, maxiter=5000, M=pre)
    if info != 0:
        x = spla.spsolve(h.tocsc(), g, permc_spec="MMD_AT_PLUS_A")
    return np.asarray(x)


def _deformation_mask(md: ModelFitData, coverage: np.ndarray, config: FitConfig) -> np.ndarray:
    """(S, S) bool: texels with scan data (coverage at least ``mask_coverage`` × the median of
    the covered texels') whose sampling weight falls mostly on fit-region vertices."""
    s = md.deformation_size
    covered = coverage[coverage > 0]
    if covered.size == 0:
        return np.zeros((s, s), dtype=bool)
    enough = coverage >= config.mask_coverage * np.median(covered)
    a = md.sampler
    total = np.asarray(a.sum(axis=0)).ravel()
    on_fit = a.T @ md.fit.astype(np.float64)
    mostly_fit = on_fit >= 0.5 * np.maximum(total, 1e-12)
    return (enough & mostly_fit & (total > 0)).reshape(s, s)


def _fit_displacement(
    md: ModelFitData,
    scan: _ScanSurface,
    transform: Similarity,
    v1: np.ndarray,
    deformation_mask: np.ndarray,
    config: FitConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Displacement map by two-way ray casting from M1 along its normals.

    Returns (displacement (S2, S2), mask (S2, S2), position map (S2, S2, 3), normal map).
    """
    t = md.table
    s2 = md.displacement_size
    pos = t.interpolate(v1)
    nmap = normal_map(t, md.model.vertex_normals(v1))
    # deformation validity at each displacement texel: bilinear sample of the mask >= 0.5
    dm = deformation_mask.astype(np.float64)
    dm_at = sample_uv_map(dm, md.texel_uvs_disp).reshape(s2, s2) >= 0.5
    fold = md.fold_faces(v1, config.fold_angle_deg)
    on_fold = np.zeros(t.size, dtype=bool)
    on_fold[t.mask] = fold[t.face_ids[t.mask]]
    cand = md.texel_fit & dm_at & ~on_fold
    flat = np.flatnonzero(cand.ravel())
    p = pos.reshape(-1, 3)[flat]
    n = nmap.reshape(-1, 3)[flat]
    inv = transform.inverse()
    origins = inv.apply(p)
    dirs = n @ inv.rotation.T
    up = scan.query.cast(origins, dirs)
    down = scan.query.cast(origins, -dirs)
    t_up = np.where(np.isfinite(up.t), up.t, np.inf)
    t_dn = np.where(np.isfinite(down.t), down.t, np.inf)
    use_up = t_up <= t_dn
    dist = np.where(use_up, t_up, t_dn)
    fid = np.where(use_up, up.face_ids, down.face_ids)
    hit = np.isfinite(dist) & (dist <= config.displacement_max_mm)
    cos_hit = np.zeros(len(flat))
    fn = scan.face_normals[np.maximum(fid, 0)]
    cos_hit[hit] = np.abs(np.sum(fn[hit] * dirs[hit], axis=1))
    # a second sheet within reach the other way: a fold (closed lips, an eyelid) - ambiguous
    other = np.where(use_up, t_dn, t_up)
    fold = other <= config.displacement_max_mm
    good = hit & ~fold & (cos_hit >= np.cos(np.radians(config.displacement_max_angle_deg)))
    disp = np.zeros(s2 * s2)
    mask = np.zeros(s2 * s2, dtype=bool)
    disp[flat[good]] = np.where(use_up[good], dist[good], -dist[good])
    mask[flat[good]] = True
    return disp.reshape(s2, s2), mask.reshape(s2, s2), pos, nmap


def face_region_points(
    md: ModelFitData,
    scan_model_pts: np.ndarray,
    v1: np.ndarray,
    config: FitConfig,
    threads: int = 0,
) -> np.ndarray:
    """(N,) bool: scan vertices (model frame) whose closest M1 point lies on the fit region,
    away from its border, within ``residual_max_mm``."""
    q = SurfaceQuery(Mesh(v1, md.model.faces), nthreads=threads)
    cp = q.closest(scan_model_pts, neighbours=False)
    f = cp.face_ids
    return md.fit_faces[f] & ~md.fit_border_faces[f] & (cp.distances <= config.residual_max_mm)


def _face_points(
    md: ModelFitData, scan_model_pts: np.ndarray, v1: np.ndarray, config: FitConfig, threads: int
) -> np.ndarray:
    """The scan's face-region vertices (model frame), at most ``residual_max_points`` of them."""
    sel = np.flatnonzero(face_region_points(md, scan_model_pts, v1, config, threads))
    if sel.size == 0:
        raise FitError("no scan vertex lies on the model's face region after fitting")
    return scan_model_pts[_even_subset(sel, config.residual_max_points)]


def _m2_errors(
    md: ModelFitData, m2: Mesh, pts: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of ``pts`` to M2, and per displacement texel their mean over the points whose
    closest M2 point falls in it (NaN where none does): ``(distances (N,), error map (S2, S2))``."""
    s2 = md.displacement_size
    cp = SurfaceQuery(m2, nthreads=threads).closest(pts, neighbours=False)
    uv = np.einsum("nk,nkc->nc", cp.barycentrics, m2.uvs[m2.faces[cp.face_ids]])
    col = np.clip(np.floor(uv[:, 0] * s2), 0, s2 - 1).astype(np.int64)
    row = np.clip(np.floor((1.0 - uv[:, 1]) * s2), 0, s2 - 1).astype(np.int64)
    flat = row * s2 + col
    total = np.bincount(flat, weights=cp.distances, minlength=s2 * s2)
    count = np.bincount(flat, minlength=s2 * s2)
    out = np.full(s2 * s2, np.nan)
    out[count > 0] = total[count > 0] / count[count > 0]
    return cp.distances, out.reshape(s2, s2)


# --------------------------------------------------------------------------------------------
# The whole fit
# --------------------------------------------------------------------------------------------
def _rms_after(transform: Similarity, source: np.ndarray, target: np.ndarray) -> float:
    """RMS distance (target units) of ``transform(source)`` from ``target``."""
    return float(np.sqrt(np.mean(np.sum((transform.apply(source) - target) ** 2, axis=1))))


@dataclass
class ShapeFit:
    """Steps 1-2 of :func:`fit_scan`: the scan's pose and M0 (model frame, mm)."""

    transform: Similarity
    """Scan (mm) → model, rigid: ``x_model = R @ x_scan + t``."""
    coefficients: np.ndarray
    """(K_id + K_exp,) identity then expression coefficients of M0."""
    m0: np.ndarray
    """(V, 3) M0's vertices."""
    crop: np.ndarray
    """Indices of the scan vertices inside the NoW face crop (:func:`now_crop`) that a face uses,
    in :func:`facehd.distances.spatial_order`."""
    landmark_rms_mm: float
    """RMS landmark distance after the landmark alignment."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds of the steps (``align``, ``m0``)."""
    last_step_mm: float = float("nan")
    """How far the last Gauss-Newton step moved M0's fit-region vertices relative to the scan
    (median, mm): a fit still moving by more than a few hundredths stopped short of where it
    converges (:meth:`refined`)."""

    def residuals(
        self, scan_mm: Mesh, md: ModelFitData, config: FitConfig, threads: int = 0
    ) -> np.ndarray:
        """Distances (mm) from the scan's face-region vertices (step 5's points, with M0 in
        M1's place) to M0: how far the model's own span describes the scan."""
        # an even subset before the region test: the residual is a median, not a census
        crop = _even_subset(self.crop, 2 * config.residual_max_points)
        pts = _face_points(
            md, self.transform.apply(scan_mm.vertices[crop]), self.m0, config, threads
        )
        mesh0 = Mesh(self.m0, md.model.faces)
        return SurfaceQuery(mesh0, nthreads=threads).closest(pts, neighbours=False).distances

    def refined(
        self,
        scan_mm: Mesh,
        md: ModelFitData,
        config: FitConfig,
        *,
        iterations: int,
        tolerance_mm: float,
        threads: int = 0,
    ) -> ShapeFit:
        """The fit carried on from here: each round of the pose + M0 fit again (its
        correspondence distance, the same scan points), from where this one ended, until a
        step moves M0's fit-region vertices relative to the scan by less than ``tolerance_mm``
        (median, mm) or after ``iterations`` steps. A fit stopped short of convergence (few
        steps a round) ends where a longer one would; a converged one stops after a step or
        two a round."""
        t1 = time.perf_counter()
        sub = _even_subset(self.crop, config.m0_max_points)
        transform, coeffs, m0, last = _fit_rounds(
            md.for_shape(config),
            scan_mm.vertices[sub],
            scan_mm.vertex_normals[sub],
            self.transform,
            self.coefficients,
            config,
            iterations,
            threads,
            tolerance_mm,
            self.last_step_mm,
        )
        timings = dict(self.timings)
        timings["m0"] = timings.get("m0", 0.0) + time.perf_counter() - t1
        return replace(
            self,
            transform=transform,
            coefficients=coeffs,
            m0=m0,
            timings=timings,
            last_step_mm=last,
        )


def fit_shape(
    scan_mm: Mesh,
    landmarks7_mm: np.ndarray,
    md: ModelFitData,
    config: FitConfig | None = None,
    *,
    threads: int = 0,
) -> ShapeFit:
    """Steps 1-2 of :func:`fit_scan`: the landmark alignment, the rigid ICP of the face crop and
    the joint pose + M0 fit (arguments and errors as :func:`fit_scan`'s)."""
    config = config or FitConfig()
    lm = np.asarray(landmarks7_mm, dtype=np.float64)
    if lm.shape != (7, 3):
        raise ValueError(f"landmarks7_mm must have shape (7, 3), got {lm.shape}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. landmark alignment (rigid; the scale is the unit factor)
    transform = procrustes(lm, md.landmarks7, with_scale=False)
    lm_rms = _rms_after(transform, lm, md.landmarks7)
    # Left and right swapped (the image's left taken for the subject's): the points are the
    # face's mirror image, which no rotation fits but a reflection does; rotated half a turn
    # they can still pass the RMS limit, with the model fitted to the back of the head.
    mirrored = procrustes(lm, md.landmarks7, with_scale=False, allow_reflection=True)
    mirrored_rms = _rms_after(mirrored, lm, md.landmarks7)
    if mirrored.is_reflection and mirrored_rms < 0.5 * lm_rms:
        raise LandmarkMismatch(
            f"the 7 landmarks are mirrored, left and right swapped (RMS {lm_rms:.1f} mm from the "
            f"model's as given, {mirrored_rms:.1f} mm mirrored): NoW's order starts at the "
            "subject's right outer eye corner, on the image's left"
        )
    if lm_rms > config.landmark_rms_max_mm:
        span = float(np.linalg.norm(lm[3] - lm[0]))
        hint = "check their order and file"
        if not 40.0 <= span <= 200.0:  # a face's outer eye corners lie ~90 mm apart
            hint = (
                f"the outer eye corners are {span:.3g} mm apart where a face's are ~90 mm: check "
                "the scan's units (--units)"
            )
        raise LandmarkMismatch(
            f"the 7 landmarks do not match a face: RMS {lm_rms:.1f} mm from the model's after "
            f"alignment (limit {config.landmark_rms_max_mm:g} mm); {hint}"
        )
    centre, radius = now_crop(lm)
    inside = np.linalg.norm(scan_mm.vertices - centre, axis=1) <= radius
    crop = np.flatnonzero(inside & scan_mm.used_vertices)  # an unused vertex is no surface
    # in space order: the even subsets below spread over the face and do not depend on the
    # order the file lists its vertices in
    crop = crop[spatial_order(scan_mm.vertices[crop])]
    if crop.size < config.min_points:
        raise FitError(f"only {crop.size} scan vertices inside the face crop")
    verts, vnrm = scan_mm.vertices, scan_mm.vertex_normals
    coeffs = np.zeros(md.basis_mm.shape[2])
    md = md.for_shape(config)
    timings["align"] = time.perf_counter() - t0

    # 2. rigid ICP of the face crop on the mean shape, then pose and M0 jointly (on the fit
    # region, and the eyes and lids with `m0_fit_eyes`)
    t1 = time.perf_counter()
    sub = _even_subset(crop, 3 * config.icp_max_points)
    transform = _icp_round(
        md, verts[sub], transform, coeffs, config.icp_max_distance_mm, config, threads
    )
    timings["align"] += time.perf_counter() - t1
    t1 = time.perf_counter()
    sub = _even_subset(crop, config.m0_max_points)
    transform, coeffs, m0, last = _fit_rounds(
        md, verts[sub], vnrm[sub], transform, coeffs, config, config.m0_iterations, threads
    )
    timings["m0"] = time.perf_counter() - t1
    return ShapeFit(transform, coeffs, m0, crop, lm_rms, timings, last)


def fit_scan(
    scan_mm: Mesh,
    landmarks7_mm: np.ndarray,
    md: ModelFitData,
    config: FitConfig | None = None,
    *,
    unit_to_mm: float = 1.0,
    threads: int = 0,
) -> ScanFit:
    """Align a scan to the model and fit M0, the deformation map and the displacement map.

    Parameters
    ----------
    scan_mm : the scan, already converted to mm (its own frame).
    landmarks7_mm : (7, 3) its NoW landmarks, mm, same frame.
    md : :func:`prepare_model` of the morphable model.
    unit_to_mm : the factor that converted the scan to mm (folded into the returned transform's
        scale, so that ``transform`` maps the file's coordinates).
    threads : Embree threads of the surface queries (0: automatic; 1 in a pooled worker).

    Raises
    ------
    DegenerateInputError
        For coincident or collinear landmarks.
    FitError
        When the alignment or the fit does not converge.
    """
    config = config or FitConfig()
    shape = fit_shape(scan_mm, landmarks7_mm, md, config, threads=threads)
    transform, coeffs, crop, lm_rms = (
        shape.transform,
        shape.coefficients,
        shape.crop,
        shape.landmark_rms_mm,
    )
    timings = dict(shape.timings)
    t1 = time.perf_counter()
    scan = _ScanSurface(scan_mm, threads)
    timings["align"] += time.perf_counter() - t1
    verts, vnrm = scan_mm.vertices, scan.vertex_normals

    # 3. deformation map (pose and coefficients frozen)
    t1 = time.perf_counter()
    m0 = shape.m0
    sub = _even_subset(crop, config.deformation_max_points)
    d, coverage = _fit_deformation(
        md,
        transform.apply(verts[sub]),
        vnrm[sub] @ transform.rotation.T,
        m0,
        config,
        threads,
    )
    dmask = _deformation_mask(md, coverage, config)
    on_face = _deformation_mask(md, np.ones_like(coverage), config)
    fraction = dmask.sum() / max(1, on_face.sum())
    if fraction < config.min_face_fraction:
        raise FitError(
            f"only {100 * fraction:.0f}% of the model's face region found scan data within "
            f"{config.reject_distance_mm:g} mm; the alignment did not converge"
        )
    v1 = m0 + md.sampler @ d
    timings["deformation"] = time.perf_counter() - t1

    # 5. displacement, then M2; texels where M2 still misses the scan are unreliable
    t1 = time.perf_counter()
    disp, disp_mask, pos, nmap = _fit_displacement(md, scan, transform, v1, dmask, config)
    m2 = _dense_mesh(md, pos, nmap, disp)
    pts = _face_points(md, transform.apply(verts[crop]), v1, config, threads)
    d2, err = _m2_errors(md, m2, pts, threads)
    known = disp_mask & np.isfinite(err)
    if known.any():
        limit = max(
            config.displacement_error_factor * float(np.median(err[known])),
            config.displacement_error_min_mm,
        )
        bad = known & (err > limit)
        if bad.any():
            disp[bad] = 0.0
            disp_mask &= ~bad
            m2 = _dense_mesh(md, pos, nmap, disp)
            d2, err = _m2_errors(md, m2, pts, threads)
    timings["displacement"] = time.perf_counter() - t1

    # 6. quality: scan-to-surface distances on the face region
    t1 = time.perf_counter()
    faces, uvs = md.model.faces, md.model.uvs
    mesh0 = Mesh(m0, faces, uvs)
    mesh1 = Mesh(v1, faces, uvs)
    dist = np.stack(
        [
            SurfaceQuery(mesh, nthreads=threads).closest(pts, neighbours=False).distances
            for mesh in (mesh0, mesh1)
        ]
        + [d2]
    )
    res = Residuals(
        median=np.median(dist, axis=1),
        mean=dist.mean(axis=1),
        n_points=int(pts.shape[0]),
        distances=dist,
        points=pts,
    )
    timings["quality"] = time.perf_counter() - t1
    if res.median[1] > config.converged_median_mm:
        raise FitError(
            f"the fit did not converge: median scan-to-M1 distance {res.median[1]:.2f} mm on the "
            f"face region (limit {config.converged_median_mm:g} mm)"
        )
    s = md.deformation_size
    k_id = md.model.n_id
    # every step is rigid (its scale is 1 up to round-off): the scale is exactly the unit factor
    full = Similarity(unit_to_mm, transform.rotation, transform.translation)
    return ScanFit(
        transform=full,
        identity=coeffs[:k_id].copy(),
        expression=coeffs[k_id:].copy(),
        deformation=d.reshape(s, s, 3),
        deformation_mask=dmask,
        displacement=disp,
        displacement_mask=disp_mask,
        m0=mesh0,
        m1=mesh1,
        m2=m2,
        residuals=res,
        landmark_rms_mm=lm_rms,
        timings=timings,
        error_map=err,
        normal_weighting=md.model.normal_weighting,
    )


def _dense_mesh(md: ModelFitData, pos: np.ndarray, nmap: np.ndarray, disp: np.ndarray) -> Mesh:
    """M2: the dense grid mesh over the displacement map (cells spanning a UV seam dropped)."""
    mask = md.table.mask
    both = mask[:, 1:] & mask[:, :-1]
    step = np.linalg.norm(pos[:, 1:] - pos[:, :-1], axis=-1)[both]
    max_edge = 8.0 * float(np.median(step)) if step.size else None
    return displaced_dense_mesh(pos, nmap, disp, mask, max_edge=max_edge)

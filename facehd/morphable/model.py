"""The morphable-model interface shared by every model source (BFM, facehd-synth).

A morphable model maps coefficients to a face mesh on a fixed topology::

    vertices = (mean_shape + id_basis @ identity + exp_basis @ expression) * unit_to_mm
    albedo   = mean_albedo + albedo_basis @ albedo_coefficients

Shapes and units
----------------
- ``mean_shape (V, 3)`` and the bases ``(V, 3, K)`` are in model units; ``unit_to_mm`` converts
  them (BFM: 1 unit = 100 mm; facehd-synth: millimetres already). Every geometry that leaves the
  model through :meth:`MorphableModel.vertices` (``mm=True``, the default) or
  :meth:`MorphableModel.mesh` is in millimetres.
- Coefficients are ``(K,)`` for one face or ``(B, K)`` for a batch; results are ``(V, 3)`` or
  ``(B, V, 3)``. Typical coefficients are distributed as ``N(0, std**2)`` with the model's
  ``id_std`` / ``exp_std`` / ``tex_std``.
- numpy in, numpy (float64) out; a torch tensor in gives a torch tensor out on the tensor's device
  and dtype, differentiable with respect to the coefficients. Torch copies of the bases are made
  once per (device, dtype) and cached on the model.

Frame: +x towards the subject's left (the viewer's right), +y up, +z out of the face towards the
viewer (the BFM convention).

This module also holds two tools used to build and check models: the linearised similarity motion
of a shape (:func:`similarity_motion_basis`, :func:`project_out_similarity`) and region masks
derived from the iBUG-68 landmark geometry (:func:`regions_from_landmarks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from facehd.mesh import Mesh

__all__ = [
    "MorphableModel",
    "RegionMasks",
    "project_out_similarity",
    "regions_from_landmarks",
    "similarity_motion_basis",
]

#: Index groups of the iBUG-68 landmarks (0-based).
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE_BRIDGE = tuple(range(27, 31))
NOSE_BOTTOM = tuple(range(31, 36))
RIGHT_EYE = tuple(range(36, 42))  # the subject's right eye (image left)
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------------
# Region masks
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class RegionMasks:
    """Per-vertex face regions of a model, each a ``(V,) bool`` array.

    ``eyes``, ``nose``, ``mouth``, ``forehead`` and ``cheeks`` are pairwise disjoint. ``fit`` is the
    part of the face a fitting loss should use: the face inside the jaw contour and below the
    forehead's top, without the eyes and the nostrils (and, where the model has them, without its
    outer border, ears or hair).
    """

    eyes: np.ndarray
    """(V,) bool: eyeballs and lids."""
    nose: np.ndarray
    """(V,) bool: the external nose."""
    mouth: np.ndarray
    """(V,) bool: lips and the skin just around them."""
    forehead: np.ndarray
    """(V,) bool: above the brows."""
    cheeks: np.ndarray
    """(V,) bool: between the eyes, nose, mouth corners and jaw contour."""
    fit: np.ndarray
    """(V,) bool: the face region for fitting, without eyes and nostrils."""

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            a = np.asarray(getattr(self, f.name))
            if a.ndim != 1:
                raise ValueError(f"RegionMasks.{f.name}: expected a (V,) bool array, got {a.shape}")
            if n is not None and a.shape[0] != n:
                raise ValueError(
                    f"RegionMasks.{f.name}: expected ({n},) like the other masks, got {a.shape}"
                )
            n = a.shape[0]
            setattr(self, f.name, _readonly(a.astype(bool, copy=True)))

    @staticmethod
    def names() -> tuple[str, ...]:
        """The region names, in field order."""
        return tuple(f.name for f in fields(RegionMasks))

    @property
    def n_vertices(self) -> int:
        """Number of vertices V."""
        return int(self.fit.shape[0])


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class MorphableModel:
    """A linear face model: shape (identity + expression) and albedo bases on one topology.

    Arrays are stored read-only (float64 for geometry and albedo, int64 for indices); treat a
    model as immutable (it is shared through caches).
    """

    name: str
    """Model name (``facehd-synth``, ``bfm``)."""
    unit_to_mm: float
    """Millimetres per model unit (BFM: 100.0, facehd-synth: 1.0)."""
    mean_shape: np.ndarray
    """(V, 3) mean shape in model units."""
    id_basis: np.ndarray
    """(V, 3, K_id) identity basis in model units per coefficient."""
    exp_basis: np.ndarray
    """(V, 3, K_exp) expression basis in model units per coefficient."""
    mean_albedo: np.ndarray
    """(V, 3) mean RGB albedo in [0, 1]."""
    albedo_basis: np.ndarray
    """(V, 3, K_tex) albedo basis (RGB per coefficient)."""
    faces: np.ndarray
    """(F, 3) int64 triangles, 0-based, counter-clockwise seen from outside."""
    uvs: np.ndarray
    """(V, 2) per-vertex UVs in [0, 1] (u right, v up)."""
    landmarks68: np.ndarray
    """(68,) int64 vertex indices of the iBUG-68 landmarks."""
    regions: RegionMasks
    """Per-vertex region masks."""
    id_std: np.ndarray
    """(K_id,) typical scale of each identity coefficient (coefficients ~ N(0, std²))."""
    exp_std: np.ndarray
    """(K_exp,) typical scale of each expression coefficient."""
    tex_std: np.ndarray
    """(K_tex,) typical scale of each albedo coefficient."""
    description: str = ""
    """One line saying what the model is and where it came from."""
    id_names: tuple[str, ...] = ()
    """Names of the identity components (empty when the source has none)."""
    exp_names: tuple[str, ...] = ()
    """Names of the expression components (empty when the source has none)."""
    tex_names: tuple[str, ...] = ()
    """Names of the albedo components (empty when the source has none)."""
    normal_weighting: str = "area"
    """How :meth:`vertex_normals` weighs a vertex's faces (:func:`facehd.mesh.vertex_normals`):
    ``area``, or ``uniform`` for the BFM, whose normals Deep3DFaceRecon and HRN sum from unit
    face normals (``point_buf``); the renders, unwrap and detail maps of the model's faces use
    them."""
    _torch_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from facehd.mesh import NORMAL_WEIGHTINGS

        if self.normal_weighting not in NORMAL_WEIGHTINGS:
            raise ValueError(
                f"normal_weighting must be one of {NORMAL_WEIGHTINGS}, "
                f"got {self.normal_weighting!r}"
            )
        f64 = np.float64
        mean = np.array(self.mean_shape, dtype=f64)
        if mean.ndim != 2 or mean.shape[1] != 3:
            raise ValueError(f"mean_shape: expected (V, 3), got {mean.shape}")
        v = mean.shape[0]

        def basis(name: str, value: Any) -> np.ndarray:
            b = np.array(value, dtype=f64)
            if b.ndim != 3 or b.shape[:2] != (v, 3):
                raise ValueError(f"{name}: expected ({v}, 3, K), got {b.shape}")
            return np.ascontiguousarray(b)

        def std(name: str, value: Any, k: int) -> np.ndarray:
            s = np.array(value, dtype=f64).reshape(-1)
            if s.shape != (k,):
                raise ValueError(f"{name}: expected ({k},), got {s.shape}")
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise ValueError(f"{name}: must be finite and positive")
            return s

        def names(name: str, value: tuple[str, ...], k: int) -> tuple[str, ...]:
            value = tuple(value)
            if value and len(value) != k:
                raise ValueError(f"{name}: expected {k} names or none, got {len(value)}")
            return value

        self.unit_to_mm = float(self.unit_to_mm)
        if not np.isfinite(self.unit_to_mm) or self.unit_to_mm <= 0:
            raise ValueError(f"unit_to_mm must be positive, got {self.unit_to_mm}")
        self.mean_shape = _readonly(mean)
        self.id_basis = _readonly(basis("id_basis", self.id_basis))
        self.exp_basis = _readonly(basis("exp_basis", self.exp_basis))
        self.albedo_basis = _readonly(basis("albedo_basis", self.albedo_basis))
        alb = np.array(self.mean_albedo, dtype=f64)
        if alb.shape != (v, 3):
            raise ValueError(f"mean_albedo: expected ({v}, 3), got {alb.shape}")
        self.mean_albedo = _readonly(alb)
        faces = np.array(self.faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"faces: expected (F, 3) integers, got {faces.shape} {faces.dtype}")
        if faces.size and (faces.min() < 0 or faces.max() >= v):
            raise ValueError(f"faces: indices must lie in [0, {v - 1}]")
        self.faces = _readonly(faces.astype(np.int64))
        uvs = np.array(self.uvs, dtype=f64)
        if uvs.shape != (v, 2):
            raise ValueError(f"uvs: expected ({v}, 2), got {uvs.shape}")
        self.uvs = _readonly(uvs)
        lm = np.array(self.landmarks68).reshape(-1)
        if lm.shape != (68,) or not np.issubdtype(lm.dtype, np.integer):
            raise ValueError(f"landmarks68: expected (68,) integer indices, got {lm.shape}")
        if lm.min() < 0 or lm.max() >= v:
            raise ValueError(f"landmarks68: indices must lie in [0, {v - 1}]")
        self.landmarks68 = _readonly(lm.astype(np.int64))
        if not isinstance(self.regions, RegionMasks) or self.regions.n_vertices != v:
            raise ValueError(f"regions: expected RegionMasks over {v} vertices")
        self.id_std = _readonly(std("id_std", self.id_std, self.n_id))
        self.exp_std = _readonly(std("exp_std", self.exp_std, self.n_exp))
        self.tex_std = _readonly(std("tex_std", self.tex_std, self.n_tex))
        self.id_names = names("id_names", self.id_names, self.n_id)
        self.exp_names = names("exp_names", self.exp_names, self.n_exp)
        self.tex_names = names("tex_names", self.tex_names, self.n_tex)

    # ---- identity ------------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict[str, Any]:
        """What coefficients and maps refer to, in a form that survives rounding noise.

        ``topology``: a hash of the triangles and landmark indices (integers, exact);
        ``projections``: the mean shape, every identity and expression component and the UVs,
        each projected on a fixed pseudo-random field (floats). Files made with one version of a
        model (priors, checkpoints) store it; :meth:`matches_fingerprint` refuses another
        version whose bases differ. Floats are compared with a tolerance because a procedural
        model built under another thread count differs in its last bits.
        """
        cached = self._torch_cache.get("fingerprint")
        if cached is None:
            import hashlib

            h = hashlib.sha256()
            for a in (self.faces, self.landmarks68):
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
            field_ = np.random.default_rng(0).standard_normal((self.n_vertices, 3))
            proj = [float(np.sum(self.mean_shape * field_))]
            proj += np.einsum("vc,vck->k", field_, self.id_basis).tolist()
            proj += np.einsum("vc,vck->k", field_, self.exp_basis).tolist()
            proj.append(float(np.sum(self.uvs * field_[:, :2])))
            cached = {"topology": h.hexdigest()[:16], "projections": proj}
            self._torch_cache["fingerprint"] = cached
        return {"topology": cached["topology"], "projections": list(cached["projections"])}

    def matches_fingerprint(self, stored: Any) -> bool:
        """Whether a stored :attr:`fingerprint` is this model's (relative tolerance 1e-6)."""
        mine = self.fingerprint
        try:
            if str(stored["topology"]) != mine["topology"]:
                return False
            a = np.asarray(stored["projections"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return False
        b = np.asarray(mine["projections"])
        if a.shape != b.shape:
            return False
        return bool(np.allclose(a, b, rtol=1e-6, atol=1e-6 * (1.0 + np.abs(b).max())))

    # ---- sizes ---------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        """Number of vertices V."""
        return int(self.mean_shape.shape[0])

    @property
    def n_faces(self) -> int:
        """Number of triangles F."""
        return int(self.faces.shape[0])

    @property
    def n_id(self) -> int:
        """Number of identity coefficients K_id."""
        return int(self.id_basis.shape[2])

    @property
    def n_exp(self) -> int:
        """Number of expression coefficients K_exp."""
        return int(self.exp_basis.shape[2])

    @property
    def n_tex(self) -> int:
        """Number of albedo coefficients K_tex."""
        return int(self.albedo_basis.shape[2])

    def component(self, kind: str, name: str) -> int:
        """Index of the named component of ``kind`` (``id``, ``exp`` or ``tex``).

        Example: ``model.component("exp", "jaw_open")``.
        """
        table = {"id": self.id_names, "exp": self.exp_names, "tex": self.tex_names}
        if kind not in table:
            raise ValueError(f"kind must be 'id', 'exp' or 'tex', got {kind!r}")
        if name not in table[kind]:
            raise ValueError(
                f"model {self.name!r} has no {kind} component {name!r}; known: {list(table[kind])}"
            )
        return table[kind].index(name)

    # ---- evaluation ----------------------------------------------------------------------
    def vertices(self, identity: Any = None, expression: Any = None, mm: bool = True) -> Any:
        """Vertex positions for the given coefficients.

        Parameters
        ----------
        identity : (K_id,) or (B, K_id) numpy array or torch tensor, or None (zeros).
        expression : (K_exp,) or (B, K_exp), or None (zeros). A (K,) vector is broadcast
            against a (B, K) batch of the other.
        mm : return millimetres (default) rather than model units.

        Returns
        -------
        (V, 3) when both inputs are 1-D (or None), else (B, V, 3). numpy float64 for numpy
        input; a torch tensor (differentiable) when either input is a tensor.
        """
        scale = self.unit_to_mm if mm else 1.0
        return self._linear(
            "shape",
            self.mean_shape,
            ((self.id_basis, identity, "identity"), (self.exp_basis, expression, "expression")),
            scale,
        )

    def albedo(self, coeffs: Any = None) -> Any:
        """Per-vertex RGB albedo (not clipped; the mean lies in [0, 1]).

        Parameters
        ----------
        coeffs : (K_tex,) or (B, K_tex) numpy array or torch tensor, or None (the mean).

        Returns
        -------
        (V, 3) or (B, V, 3), numpy or torch like the input.
        """
        return self._linear(
            "albedo", self.mean_albedo, ((self.albedo_basis, coeffs, "albedo"),), 1.0
        )

    def landmarks(self, vertices: Any) -> Any:
        """The iBUG-68 landmark positions of ``vertices``.

        Parameters
        ----------
        vertices : (..., V, 3) numpy array or torch tensor (e.g. from :meth:`vertices`).

        Returns
        -------
        (..., 68, 3) of the same type.
        """
        shape = tuple(vertices.shape)
        if len(shape) < 2 or shape[-2:] != (self.n_vertices, 3):
            raise ValueError(f"landmarks: expected (..., {self.n_vertices}, 3), got {shape}")
        if _is_torch(vertices):
            import torch

            idx = torch.tensor(self.landmarks68, device=vertices.device)
            return vertices.index_select(-2, idx)
        return np.asarray(vertices)[..., self.landmarks68, :]

    def vertex_normals(self, vertices: Any) -> Any:
        """Unit vertex normals of ``vertices`` on the model topology, weighted as
        :attr:`normal_weighting` says.

        Parameters
        ----------
        vertices : (V, 3) or (B, V, 3), numpy or torch (differentiable).

        Returns
        -------
        Same shape and type.
        """
        from facehd.mesh import vertex_normals

        shape = tuple(vertices.shape)
        if len(shape) not in (2, 3) or shape[-2:] != (self.n_vertices, 3):
            raise ValueError(f"vertex_normals: expected (V, 3) or (B, V, 3), got {shape}")
        w = self.normal_weighting
        if _is_torch(vertices) or len(shape) == 2:
            return vertex_normals(vertices, self.faces, w)
        return np.stack([vertex_normals(v, self.faces, w) for v in np.asarray(vertices)])

    def mesh(self, identity: Any = None, expression: Any = None, albedo: Any = None) -> Mesh:
        """The face as a :class:`~facehd.mesh.Mesh` in millimetres, with UVs and colours.

        Parameters
        ----------
        identity : (K_id,) or None.
        expression : (K_exp,) or None.
        albedo : (K_tex,) or None; the vertex colours are the albedo clipped to [0, 1].
        """
        from facehd.mesh import Mesh

        def vec(a: Any, name: str) -> Any:
            if a is None:
                return None
            if _is_torch(a):
                a = a.detach().cpu().numpy()
            a = np.asarray(a, dtype=np.float64)
            if a.ndim != 1:
                raise ValueError(f"mesh: {name} must be one (K,) vector, got shape {a.shape}")
            return a

        verts = self.vertices(vec(identity, "identity"), vec(expression, "expression"))
        colors = np.clip(self.albedo(vec(albedo, "albedo")), 0.0, 1.0)
        return Mesh(vertices=verts, faces=self.faces.copy(), uvs=self.uvs.copy(), colors=colors)

    # ---- internals -----------------------------------------------------------------------
    def _linear(self, key: str, mean: np.ndarray, terms: tuple, scale: float) -> Any:
        """mean + Σ basis @ coeffs, batched, numpy or torch."""
        checked = []
        batch = None
        any_torch = False
        for basis, coeffs, name in terms:
            if coeffs is None:
                continue
            k = basis.shape[2]
            shape = tuple(coeffs.shape) if hasattr(coeffs, "shape") else np.shape(coeffs)
            if len(shape) not in (1, 2) or shape[-1] != k:
                raise ValueError(
                    f"{name} coefficients: expected ({k},) or (B, {k}), got shape {shape}"
                )
            if len(shape) == 2:
                if batch is not None and batch != shape[0]:
                    raise ValueError(
                        f"{name} coefficients: batch size {shape[0]} does not match {batch}"
                    )
                batch = shape[0]
            any_torch |= _is_torch(coeffs)
            checked.append((basis, coeffs, name))
        v = mean.shape[0]
        if any_torch:
            return self._linear_torch(key, mean, checked, batch, scale)
        out = mean.reshape(-1).copy()
        if batch is not None:
            out = np.broadcast_to(out, (batch, out.size)).copy()
        for basis, coeffs, _ in checked:
            c = np.asarray(coeffs, dtype=np.float64)
            if not np.all(np.isfinite(c)):
                raise ValueError("coefficients contain NaN or inf")
            out = out + c @ basis.reshape(3 * v, -1).T
        if scale != 1.0:
            out = out * scale
        return out.reshape(*out.shape[:-1], v, 3)

    def _linear_torch(
        self, key: str, mean: np.ndarray, checked: list, batch: int | None, scale: float
    ) -> torch.Tensor:
        import torch

        tensors = [c for _, c, _ in checked if _is_torch(c)]
        device = tensors[0].device
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            if t.device != device:
                raise ValueError(f"coefficients on different devices: {device} and {t.device}")
            dtype = torch.promote_types(dtype, t.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        v = mean.shape[0]
        out = self._torch_array(key, "mean", mean.reshape(-1), device, dtype)
        if batch is not None:
            out = out.expand(batch, out.shape[0])
        for basis, coeffs, name in checked:
            if _is_torch(coeffs):
                c = coeffs.to(device=device, dtype=dtype)
            else:
                c = torch.tensor(np.asarray(coeffs, dtype=np.float64), dtype=dtype, device=device)
            flat = self._torch_array(key, name, basis.reshape(3 * v, -1), device, dtype)
            out = out + c @ flat.T
        if scale != 1.0:
            out = out * scale
        return out.reshape(*out.shape[:-1], v, 3)

    def _torch_array(self, key: str, part: str, array: np.ndarray, device: Any, dtype: Any) -> Any:
        import torch

        cache_key = (key, part, str(device), dtype)
        t = self._torch_cache.get(cache_key)
        if t is None:
            t = torch.tensor(np.array(array), dtype=dtype, device=device)  # a copy, never a view
            self._torch_cache[cache_key] = t
        return t


# --------------------------------------------------------------------------------------------
# Similarity motion
# --------------------------------------------------------------------------------------------
def similarity_motion_basis(points: np.ndarray) -> np.ndarray:
    """The linearised similarity motions of a shape, as displacement fields.

    A similarity ``x -> (1 + s) R(ω) x + t`` close to the identity moves point ``x`` by
    ``t + ω × x + s x`` to first order. The 7 columns are the displacement fields of
    ``t = e_x, e_y, e_z``, ``ω = e_x, e_y, e_z`` and ``s = 1``.

    Parameters
    ----------
    points : (V, 3) float

    Returns
    -------
    (3V, 7) float64, rows ordered like ``points.reshape(-1)`` (x, y, z of vertex 0, then 1...).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"similarity_motion_basis: expected (V, 3) points, got {p.shape}")
    v = p.shape[0]
    cols = np.zeros((v, 3, 7))
    for a in range(3):
        cols[:, a, a] = 1.0
        axis = np.zeros(3)
        axis[a] = 1.0
        cols[:, :, 3 + a] = np.cross(axis, p)
    cols[:, :, 6] = p
    return cols.reshape(3 * v, 7)


def project_out_similarity(
    basis: np.ndarray, points: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Remove the linearised similarity motion of ``points`` from every basis vector.

    Each column ``b`` becomes ``b - W S (Sᵀ W S)⁻¹ Sᵀ b`` with ``S`` the (3V, 7) motion basis of
    :func:`similarity_motion_basis` and ``W`` a diagonal weight per vertex. The result satisfies
    ``Sᵀ b' = 0`` for any positive weights: a least-squares similarity fit to ``b'`` is zero, so
    a model built on these bases cannot express a change of pose. With ``weights=None`` (all
    ones) this is the orthogonal projection; other weights choose where the correcting motion
    goes (more where the weight is larger).

    Parameters
    ----------
    basis : (V, 3, K) float
    points : (V, 3) float, the shape the motion is linearised at.
    weights : (V,) positive float or None.

    Returns
    -------
    (V, 3, K) float64.
    """
    b = np.asarray(basis, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"project_out_similarity: expected (V, 3) points, got {p.shape}")
    if b.ndim != 3 or b.shape[:2] != p.shape:
        raise ValueError(
            f"project_out_similarity: expected basis ({p.shape[0]}, 3, K), got {b.shape}"
        )
    v, _, k = b.shape
    s = similarity_motion_basis(p)
    w = np.ones(v) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (v,) or np.any(w <= 0):
        raise ValueError(f"project_out_similarity: weights must be ({v},) and positive")
    ws = s * np.repeat(w, 3)[:, None]
    flat = b.reshape(3 * v, k)
    coef = np.linalg.solve(s.T @ ws, s.T @ flat)
    return (flat - ws @ coef).reshape(v, 3, k)


# --------------------------------------------------------------------------------------------
# Region masks from landmarks
# --------------------------------------------------------------------------------------------
def _face_frame(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Origin, rotation (rows = face axes) and inter-ocular distance from 68 landmarks."""
    right_eye = lm[list(RIGHT_EYE)].mean(0)
    left_eye = lm[list(LEFT_EYE)].mean(0)
    mouth = lm[list(OUTER_LIPS)].mean(0)
    origin = 0.5 * (right_eye + left_eye)
    ex = left_eye - right_eye
    iod = float(np.linalg.norm(ex))
    if iod <= 0:
        raise ValueError("regions_from_landmarks: the two eye centres coincide")
    ex = ex / iod
    up = origin - mouth
    ey = up - ex * (up @ ex)
    ny = np.linalg.norm(ey)
    if ny <= 0:
        raise ValueError("regions_from_landmarks: the mouth lies on the eye line")
    ey = ey / ny
    ez = np.cross(ex, ey)
    return origin, np.stack([ex, ey, ez]), iod


def _convex_offset_inside(points2d: np.ndarray, hull_pts: np.ndarray, margin: float) -> np.ndarray:
    """Whether 2-D points lie inside the convex hull of ``hull_pts`` grown by ``margin``."""
    from scipy.spatial import ConvexHull

    hull = ConvexHull(hull_pts)
    # equations: a·p + c <= 0 inside, with |a| = 1
    d = points2d @ hull.equations[:, :2].T + hull.equations[:, 2]
    return d.max(axis=1) <= margin


def _polygon_inside(points2d: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for a closed polygon ``poly (M, 2)``."""
    x, y = points2d[:, 0], points2d[:, 1]
    inside = np.zeros(len(points2d), dtype=bool)
    m = len(poly)
    for i in range(m):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % m]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xc)
    return inside


def regions_from_landmarks(vertices: np.ndarray, landmarks: np.ndarray) -> RegionMasks:
    """Region masks derived from the geometry of the iBUG-68 landmarks.

    The vertices are expressed in a face frame: origin between the eye centres, x from the
    subject's right eye centre to the left one, y towards the eyes from the mouth centre
    (orthogonalised), z out of the face; lengths are scaled so that the inter-ocular distance
    (between the eye centres) is 62 mm, so the same rules serve any face size and unit. Then
    (``d`` = 62 mm):

    - eyes: for each eye, an ellipse around the centre of its 6 landmarks with semi-axes
      0.62 w (horizontal) and 0.36 w (vertical), ``w`` the corner-to-corner width, and within
      0.6 w in depth;
    - nose: the convex hull of landmarks 27–35 (bridge and nose bottom) grown by 0.1 d,
      in front of the depth of the eye corners;
    - mouth: the convex hull of the outer lip landmarks 48–59 grown by 0.07 d;
    - nostrils (used only to cut ``fit``): within 0.08 d of landmarks 32 and 34;
    - face: inside the polygon of the jaw contour 0–16 closed over the forehead at
      0.85 d above the highest brow landmark, and at most 0.25 d behind the deepest contour
      landmark;
    - forehead: face vertices more than 0.08 d above the highest brow landmark;
    - cheeks: face vertices between the mouth corners' height and 0.1 d below the lowest
      lower-lid landmark, laterally outside the nose bottom (landmarks 31/35) by 0.05 d;
    - fit: face without eyes and nostrils.

    Earlier regions win where rules overlap (eyes, nose, mouth, forehead, cheeks), so the five
    named regions are disjoint.

    Parameters
    ----------
    vertices : (V, 3) float, any unit.
    landmarks : (68, 3) float, same unit and frame.

    Returns
    -------
    RegionMasks over V vertices.
    """
    v = np.asarray(vertices, dtype=np.float64)
    lm = np.asarray(landmarks, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"regions_from_landmarks: expected (V, 3) vertices, got {v.shape}")
    if lm.shape != (68, 3):
        raise ValueError(f"regions_from_landmarks: expected (68, 3) landmarks, got {lm.shape}")
    origin, rot, iod = _face_frame(lm)
    d = 62.0
    k = d / iod
    p = (v - origin) @ rot.T * k
    q = (lm - origin) @ rot.T * k
    xy = p[:, :2]

    eyes = np.zeros(len(p), dtype=bool)
    for group in (RIGHT_EYE, LEFT_EYE):
        e = q[list(group)]
        c = e.mean(0)
        w = float(np.linalg.norm(e[0] - e[3]))
        r = ((p[:, 0] - c[0]) / (0.62 * w)) ** 2 + ((p[:, 1] - c[1]) / (0.36 * w)) ** 2
        eyes |= (r <= 1.0) & (np.abs(p[:, 2] - c[2]) <= 0.6 * w)

    eye_corner_z = q[[36, 39, 42, 45], 2].min()
    nose = _convex_offset_inside(xy, q[27:36, :2], 0.1 * d) & (p[:, 2] > eye_corner_z)
    nose &= ~eyes
    contour_z = q[list(JAW), 2].min()
    mouth = _convex_offset_inside(xy, q[48:60, :2], 0.07 * d) & (p[:, 2] > contour_z)
    mouth &= ~eyes & ~nose
    nostrils = (np.linalg.norm(p - q[32], axis=1) <= 0.08 * d) | (
        np.linalg.norm(p - q[34], axis=1) <= 0.08 * d
    )

    brow_top = q[list(BROWS), 1].max()
    top = brow_top + 0.85 * d
    jaw = q[list(JAW), :2]
    poly = np.concatenate([jaw, [[jaw[-1, 0], top], [jaw[0, 0], top]]])
    face = _polygon_inside(xy, poly) & (p[:, 2] >= contour_z - 0.25 * d)

    forehead = face & (p[:, 1] > brow_top + 0.08 * d) & ~(eyes | nose | mouth)
    mouth_y = 0.5 * (q[48, 1] + q[54, 1])
    lower_lid = q[[40, 41, 46, 47], 1].min()
    nose_x = 0.5 * (abs(q[31, 0]) + abs(q[35, 0])) + 0.05 * d
    cheeks = (
        face
        & (p[:, 1] > mouth_y)
        & (p[:, 1] < lower_lid - 0.1 * d)
        & (np.abs(p[:, 0]) > nose_x)
        & ~(eyes | nose | mouth | forehead)
    )
    fit = face & ~eyes & ~nostrils
    return RegionMasks(eyes=eyes, nose=nose, mouth=mouth, forehead=forehead, cheeks=cheeks, fit=fit)

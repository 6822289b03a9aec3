"""Similarity transforms, Procrustes alignment and Euler-angle rotations.

A similarity maps a point ``x`` of one frame to ``s * R @ x + t`` in another. Name values by their
frames: ``T_model_from_scan.apply(points_scan) -> points_model``. Composition reads the same way:
``T_a_from_c = T_a_from_b.compose(T_b_from_c)``.

All rotations act on column vectors; for row-stacked points ``(N, 3)`` this is
``points @ R.T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facehd.errors import DegenerateInputError

__all__ = [
    "Similarity",
    "as_points",
    "procrustes",
    "rotation_matrix_from_euler",
    "euler_from_rotation_matrix",
    "rotation_from_axis_angle",
    "cross_matrix",
]


def as_points(
    name: str, value: Any, *, dim: int = 3, n: int | None = None, rows: str = "N"
) -> np.ndarray:
    """Return ``value`` as a finite float64 ``(N, dim)`` array (``n`` rows when given), or raise
    a ``ValueError`` naming ``name``; ``rows`` is the letter the caller's docs give the count."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name}: expected an ({rows}, {dim}) array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name}: expected ({n}, {dim}) to match the other points, got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


@dataclass(frozen=True, eq=False)
class Similarity:
    """A similarity transform ``x -> scale * rotation @ x + translation``.

    ``rotation`` is orthogonal; its determinant is normally +1 (a rotation) but may be -1 when a
    reflection was allowed (see :func:`procrustes`). Values are immutable; compare them with
    :meth:`allclose`.
    """

    scale: float
    """Isotropic scale factor (> 0)."""
    rotation: np.ndarray
    """(3, 3) float64 orthogonal matrix acting on column vectors."""
    translation: np.ndarray
    """(3,) float64 translation, applied after scale and rotation."""

    def __post_init__(self) -> None:
        rot = np.array(self.rotation, dtype=np.float64)
        tr = np.array(self.translation, dtype=np.float64).reshape(-1)
        if rot.shape != (3, 3):
            raise ValueError(f"Similarity.rotation: expected shape (3, 3), got {rot.shape}")
        if tr.shape != (3,):
            raise ValueError(f"Similarity.translation: expected shape (3,), got {tr.shape}")
        scale = float(self.scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"Similarity.scale: expected a finite positive number, got {scale}")
        if not (np.all(np.isfinite(rot)) and np.all(np.isfinite(tr))):
            raise ValueError("Similarity: rotation and translation must be finite")
        rot.setflags(write=False)
        tr.setflags(write=False)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "rotation", rot)
        object.__setattr__(self, "translation", tr)

    # construction -------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> Similarity:
        """The identity transform."""
        return cls(1.0, np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Similarity:
        """Build from a (4, 4) homogeneous matrix ``[[s R, t], [0, 1]]``.

        The scale is the root-mean-square column norm of the upper-left block; the block divided by
        it must be orthogonal (to 1e-6) and the bottom row ``[0, 0, 0, 1]`` (to 1e-9: a projective
        matrix is not a similarity), otherwise a ``ValueError`` is raised.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"from_matrix: expected a (4, 4) matrix, got {m.shape}")
        if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=1e-9):
            raise ValueError(
                f"from_matrix: the bottom row must be [0, 0, 0, 1] (a similarity), got {m[3]}"
            )
        block = m[:3, :3]
        scale = float(np.sqrt(np.mean(np.sum(block**2, axis=0))))
        if scale <= 0 or not np.isfinite(scale):
            raise ValueError("from_matrix: the linear block has zero or non-finite scale")
        rot = block / scale
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-6):
            raise ValueError("from_matrix: the linear block is not a scaled orthogonal matrix")
        return cls(scale, rot, m[:3, 3])

    # use ------------------------------------------------------------------------------------
    def apply(self, points: Any) -> Any:
        """Map points: ``scale * points @ rotation.T + translation``.

        Parameters
        ----------
        points : (..., 3) float, numpy array or torch tensor (torch in, torch out, differentiable).

        Returns
        -------
        (..., 3) transformed points, same type as the input.
        """
        if _is_torch(points):
            import torch

            if points.shape[-1] != 3:
                raise ValueError(f"apply: expected (..., 3) points, got {tuple(points.shape)}")
            rot = torch.tensor(self.rotation, dtype=points.dtype, device=points.device)
            tr = torch.tensor(self.translation, dtype=points.dtype, device=points.device)
            return self.scale * (points @ rot.T) + tr
        arr = np.asarray(points, dtype=np.float64)
        if arr.ndim < 1 or arr.shape[-1] != 3:
            raise ValueError(f"apply: expected (..., 3) points, got shape {arr.shape}")
        return self.scale * (arr @ self.rotation.T) + self.translation

    def inverse(self) -> Similarity:
        """The inverse map ``y -> R.T @ (y - t) / s``."""
        rt = self.rotation.T
        return Similarity(1.0 / self.scale, rt, -(rt @ self.translation) / self.scale)

    def compose(self, other: Similarity) -> Similarity:
        """``self ∘ other``: apply ``other`` first, then ``self``."""
        return Similarity(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            self.scale * (self.rotation @ other.translation) + self.translation,
        )

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix ``[[s R, t], [0, 0, 0, 1]]``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def is_reflection(self) -> bool:
        """True when ``rotation`` has determinant -1."""
        return bool(np.linalg.det(self.rotation) < 0)

    def rotation_angle_deg(self, other: Similarity | None = None) -> float:
        """Angle in degrees of the relative rotation ``R_self @ R_other.T`` (of ``R_self`` alone
        when ``other`` is None)."""
        rel = self.rotation if other is None else self.rotation @ other.rotation.T
        if np.linalg.det(rel) < 0:
            raise ValueError("rotation_angle_deg: the relative transform is a reflection")
        # sin from the skew part, cos from the trace: accurate at small and large angles
        skew = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
        return float(np.degrees(np.arctan2(0.5 * np.linalg.norm(skew), 0.5 * (np.trace(rel) - 1))))

    def allclose(self, other: Similarity, *, atol: float = 1e-9) -> bool:
        """Whether scale, rotation and translation agree with ``other`` to ``atol``."""
        return bool(
            abs(self.scale - other.scale) <= atol
            and np.allclose(self.rotation, other.rotation, rtol=0, atol=atol)
            and np.allclose(self.translation, other.translation, rtol=0, atol=atol)
        )

    def __repr__(self) -> str:
        t = np.array2string(self.translation, precision=6)
        proper = -self.rotation if self.is_reflection else self.rotation
        angle = Similarity(1.0, proper, np.zeros(3)).rotation_angle_deg()
        refl = ", reflection" if self.is_reflection else ""
        return f"Similarity(scale={self.scale:.9g}, angle={angle:.6g} deg, translation={t}{refl})"


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def procrustes(
    source: np.ndarray,
    target: np.ndarray,
    *,
    with_scale: bool = True,
    allow_reflection: bool = False,
    weights: np.ndarray | None = None,
) -> Similarity:
    """Least-squares similarity mapping ``source`` onto ``target`` (Umeyama 1991).

    Minimises ``sum_i w_i * || s R source_i + t - target_i ||^2``.

    Parameters
    ----------
    source : (N, 3) float, N >= 3, not all collinear.
    target : (N, 3) float, corresponding points.
    with_scale : estimate ``s``; otherwise ``s = 1`` (rigid).
    allow_reflection : allow ``det(R) = -1`` when that fits strictly better than any rotation.
    weights : (N,) float >= 0 with a positive sum, or None for equal weights.

    Returns
    -------
    Similarity ``T_target_from_source``.

    Raises
    ------
    DegenerateInputError
        When the (weighted) points of either set are coincident or collinear, so the rotation is
        not determined.
    """
    src = as_points("procrustes source", source)
    dst = as_points("procrustes target", target, n=src.shape[0])
    n = src.shape[0]
    if weights is None:
        w = np.full(n, 1.0 / n)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"procrustes weights: expected shape ({n},), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("procrustes weights: must be finite, >= 0, with a positive sum")
        w = w / w.sum()
    if np.count_nonzero(w) < 3:
        raise DegenerateInputError(
            f"procrustes needs at least 3 points with positive weight, got {np.count_nonzero(w)}"
        )
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    for name, x in (("source", xs), ("target", xd)):
        sv = np.linalg.svd(x * np.sqrt(w)[:, None], compute_uv=False)
        extent = max(float(np.abs(src).max()), float(np.abs(dst).max()), 1.0)
        if sv[0] <= 1e-12 * extent:
            raise DegenerateInputError(
                f"procrustes: the {name} points are coincident; the alignment is undetermined"
            )
        if sv[1] <= 1e-9 * sv[0]:
            raise DegenerateInputError(
                f"procrustes: the {name} points are collinear; the rotation about their line "
                "is undetermined"
            )
    # cross-covariance: cov = sum_i w_i xd_i xs_i^T
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    # Best orthogonal matrix: u @ vt (trace of sigma). Restricted to rotations, the smallest
    # singular direction is flipped when u @ vt is a reflection.
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        # u @ vt is a reflection: it fits strictly better than any rotation iff sigma_3 > 0
        if not (allow_reflection and sig[2] > 1e-12 * sig[0]):
            d[2] = -1.0
    rot = (u * d) @ vt
    var_s = float(w @ np.sum(xs**2, axis=1))
    scale = float(sig @ d / var_s) if with_scale else 1.0
    if scale <= 0:
        raise DegenerateInputError("procrustes: the best scale is not positive")
    trans = mu_d - scale * rot @ mu_s
    return Similarity(scale, rot, trans)


def cross_matrix(v: np.ndarray) -> np.ndarray:
    """The (3, 3) matrix ``[v]_x`` with ``[v]_x w = v x w`` for a (3,) vector ``v``."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def rotation_from_axis_angle(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula.

    Parameters
    ----------
    rotvec : (3,) float, axis times angle in radians.

    Returns
    -------
    (3, 3) rotation matrix.
    """
    v = np.asarray(rotvec, dtype=np.float64)
    if v.shape != (3,):
        raise ValueError(f"rotation_from_axis_angle: expected shape (3,), got {v.shape}")
    theta = float(np.linalg.norm(v))
    k = cross_matrix(v)
    if theta < 1e-8:
        # second-order series; exact to double precision at this size
        return np.eye(3) + k + 0.5 * (k @ k)
    k /= theta
    return np.eye(3) + np.sin(theta) * k + (1.0 - np.cos(theta)) * (k @ k)


def rotation_matrix_from_euler(angles: Any) -> Any:
    """Rotation ``R = Rz(z) @ Ry(y) @ Rx(x)`` from angles ``(x, y, z)`` in radians.

    This is the Deep3DFaceRecon / HRN pose convention (coefficients ``angle[224:227]``), written
    for column vectors: a point ``p`` maps to ``R @ p``.

    Parameters
    ----------
    angles : (..., 3) float, numpy array or torch tensor (torch in, torch out, differentiable).

    Returns
    -------
    (..., 3, 3) rotation matrices.
    """
    if _is_torch(angles):
        import torch

        if angles.shape[-1] != 3:
            raise ValueError(f"expected (..., 3) angles, got {tuple(angles.shape)}")
        cx, cy, cz = torch.cos(angles).unbind(-1)
        sx, sy, sz = torch.sin(angles).unbind(-1)
        rows = _euler_entries(cx, cy, cz, sx, sy, sz)
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
    a = np.asarray(angles, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) angles, got shape {a.shape}")
    c, s = np.cos(a), np.sin(a)
    rows = _euler_entries(c[..., 0], c[..., 1], c[..., 2], s[..., 0], s[..., 1], s[..., 2])
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _euler_entries(cx, cy, cz, sx, sy, sz):  # noqa: ANN001, ANN202 - numpy or torch
    """Entries of Rz @ Ry @ Rx by rows."""
    return (
        (cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx),
        (sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx),
        (-sy, cy * sx, cy * cx),
    )


def euler_from_rotation_matrix(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_matrix_from_euler` (numpy).

    Parameters
    ----------
    rotation : (..., 3, 3) rotation matrices.

    Returns
    -------
    (..., 3) angles ``(x, y, z)`` in radians with ``y`` in [-pi/2, pi/2]; at ``|y| = pi/2``
    (gimbal lock) ``x`` is set to 0.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) matrices, got shape {r.shape}")
    # y from both its sine and its cosine: arcsin(-r[2, 0]) alone loses half the digits near
    # y = ±pi/2, where its slope grows without bound
    cy = np.sqrt(r[..., 0, 0] ** 2 + r[..., 1, 0] ** 2)
    y = np.arctan2(-r[..., 2, 0], cy)
    regular = cy > 1e-12
    x = np.where(regular, np.arctan2(r[..., 2, 1], r[..., 2, 2]), 0.0)
    z = np.where(
        regular,
        np.arctan2(r[..., 1, 0], r[..., 0, 0]),
        np.arctan2(-r[..., 0, 1], r[..., 1, 1]),
    )
    return np.stack([x, y, z], axis=-1)

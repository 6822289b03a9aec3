"""The NoW scan-to-mesh protocol (Sanyal et al., CVPR 2019), step by step.

What the official evaluation (``now_evaluation``: ``scan2mesh_computations.py`` and
``compute_error.py``) computes for one image:

1. **Crop** the ground-truth scan around the face with its 7 landmarks ``lm``:
   ``centre = lm[4] + 0.3 (eyes_mid - lm[4])`` with ``eyes_mid = (lm[1] + lm[2]) / 2`` and
   ``radius = 1.4 (|lm[0] - lm[3]| + |eyes_mid - lm[4]|) / 2``; vertices with
   ``|v - centre| <= radius`` are kept (and the faces whose 3 vertices are kept). The scan's
   landmarks are float32 numbers (the official ``load_pp`` reads them so), and the centre and
   radius follow the official float32 arithmetic (:func:`face_crop_sphere`).
2. **Landmark Procrustes** of the predicted 7 landmarks onto the scan's, with scale and the best
   orthogonal matrix (a reflection when it fits better: the official ``reflection='best'``).
3. **Rigid refinement**: minimise ``sum_i dist(p_i, s R M + t)^2`` over the cropped-scan vertices
   ``p_i`` and the similarity ``(s, R, t)`` applied to the predicted mesh ``M``, from step 2. The
   official tool uses chumpy's dogleg, which stops once a step gains less than 0.01% of the
   objective, a little short of the minimum: :func:`refine_dogleg` takes its steps and stops where
   it stops (``NowConfig.solver="official"``, the default; every distance within 1e-5 mm of
   chumpy's own run). :func:`refine_scan_to_mesh` runs Levenberg-Marquardt on the exact
   point-to-surface residuals to the minimum itself (``solver="minimum"``; single images' medians
   move by up to ~2e-3 mm, pooled statistics by ~1e-4 mm).
   Metrical variant: ``s`` is fixed by the unit (mm 1, cm 10, m 1000) and only ``R, t`` move; as in
   the official code, the starting translation is the one of the *scaled* Procrustes fit.
4. **Distances**: for every cropped-scan vertex, the unsigned distance to the closest point on the
   aligned predicted *surface* (point-to-triangle).

Statistics (:func:`pooled_statistics`): median, mean and std (ddof 0) of all distances **pooled**
over the images, not a mean of per-image values.

Similarity transforms preserve closest points (up to the scale of the distance), so the predicted
mesh is indexed once (:class:`facehd.distances.SurfaceQuery`) and the scan points are mapped into
its frame instead of moving the mesh at every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from facehd.distances import QueryRangeError, SurfaceQuery
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh
from facehd.transforms import Similarity, cross_matrix, procrustes, rotation_from_axis_angle

__all__ = [
    "NOW_CHALLENGES",
    "NOW_SOLVERS",
    "UNIT_TO_MM",
    "NowConfig",
    "RefineResult",
    "NowResult",
    "NowStatistics",
    "face_crop_sphere",
    "crop_scan",
    "landmark_alignment",
    "refine_scan_to_mesh",
    "refine_dogleg",
    "rotation_derivatives",
    "drop_degenerate_faces",
    "evaluate_now",
    "pooled_statistics",
]

#: The four NoW challenges (folder names under each subject).
NOW_CHALLENGES: tuple[str, ...] = (
    "multiview_neutral",
    "multiview_expressions",
    "multiview_occlusions",
    "selfie",
)

#: The rigid refinement's solvers (:attr:`NowConfig.solver`).
NOW_SOLVERS: tuple[str, ...] = ("official", "minimum")

#: Unit of the predicted meshes -> millimetres (metrical variant).
UNIT_TO_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


@dataclass(frozen=True)
class NowConfig:
    """Settings of the NoW protocol (the defaults are the official non-metrical evaluation)."""

    metrical: bool = False
    """Metrical variant: the scale is fixed by ``unit`` and only the rotation and translation are
    refined."""
    unit: Literal["mm", "cm", "m"] = "mm"
    """Unit of the predicted meshes (used by the metrical variant only)."""
    drop_degenerate_faces: bool = False
    """Drop zero-area faces of the prediction first (the official ``clean_mesh`` option)."""
    crop_factor: float = 1.4
    """Radius factor of the face crop (the official value; older releases used 1.2)."""
    max_iterations: int = 100
    """Cap on the refinement's Gauss-Newton iterations (each phase)."""
    coarse_points: int = 6000
    """The refinement first converges on this many scan points drawn at random (seed 0), then
    finishes on all of them; the minimum reached is the one of the full objective."""
    rel_tolerance: float = 1e-7
    """Stop when the objective decreases (or is predicted to decrease) by less than this
    fraction; what remains moves the distances by about ``sqrt(2 rel f / N)``, ~1e-4 mm
    (``solver="minimum"``)."""
    solver: Literal["official", "minimum"] = "official"
    """``official``: the official tool's trust-region dogleg, its parameters, steps and stopping
    rule (:func:`refine_dogleg`), which stops once a step gains less than 0.01% of the
    objective, a little short of the minimum; ``minimum``: Levenberg-Marquardt run to the
    minimum itself (:func:`refine_scan_to_mesh`, ``max_iterations``, ``coarse_points``,
    ``rel_tolerance``)."""

    def __post_init__(self) -> None:
        if self.unit not in UNIT_TO_MM:
            raise ValueError(
                f"NowConfig.unit: expected one of {sorted(UNIT_TO_MM)}, got {self.unit!r}"
            )
        if self.solver not in NOW_SOLVERS:
            raise ValueError(
                f"NowConfig.solver: expected one of {', '.join(NOW_SOLVERS)}, got {self.solver!r}"
            )


@dataclass(frozen=True)
class RefineResult:
    """Outcome of :func:`refine_scan_to_mesh`."""

    transform: Similarity
    """``T_scan_from_prediction``: apply it to the predicted mesh. Its rotation may include a
    reflection: the landmark fit allows one, and so does the official dogleg (a negative
    scale, penalised)."""
    distances: np.ndarray
    """(N,) unsigned distance from each scan point to the transformed predicted surface."""
    iterations: int
    """Gauss-Newton iterations done (both phases)."""
    converged: bool
    """Whether the last phase stopped on the tolerance (not on the iteration cap)."""


@dataclass(frozen=True)
class NowResult:
    """NoW evaluation of one prediction."""

    distances: np.ndarray
    """(N,) scan-to-mesh distance of every cropped-scan vertex (scan units, mm)."""
    transform: Similarity
    """``T_scan_from_prediction`` after the rigid refinement."""
    landmark_transform: Similarity
    """``T_scan_from_prediction`` of the landmark Procrustes (step 2)."""
    n_scan_vertices: int
    """Vertices of the scan before cropping."""
    iterations: int
    """Refinement iterations."""
    converged: bool = True
    """Whether the refinement's last phase met its stopping test (False: it stopped at
    ``max_iterations``, and the distances may be those of a point short of the minimum)."""


@dataclass(frozen=True)
class NowStatistics:
    """The reported statistics of a set of images (distances pooled)."""

    median: float
    """Median distance (mm)."""
    mean: float
    """Mean distance (mm)."""
    std: float
    """Standard deviation of the distances (mm, ddof 0)."""
    n_images: int
    """Images whose distances were pooled."""
    n_points: int
    """Distances pooled."""


def _lm7(name: str, lm: np.ndarray) -> np.ndarray:
    arr = np.asarray(lm, dtype=np.float64)
    if arr.shape == (1, 7, 3):
        arr = arr[0]
    if arr.shape != (7, 3):
        raise ValueError(f"{name}: expected 7 landmarks of shape (7, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: landmarks contain NaN or inf")
    return arr


def face_crop_sphere(landmarks: np.ndarray, factor: float = 1.4) -> tuple[np.ndarray, float]:
    """Centre and radius of NoW's face crop.

    Parameters
    ----------
    landmarks : (7, 3) float, the scan's NoW landmarks (eye corners, nose bottom, mouth corners).
    factor : radius factor (1.4 in the current official code).

    Returns
    -------
    (centre (3,), radius)

    Landmarks whose values are all float32 numbers (those of every ``.pp`` and ``.txt`` file,
    which the official tool reads as float32) get the official tool's arithmetic: the centre and
    the two distances in float32, the radius from their float32 sum in float64 (NumPy 1.23, the
    version its Docker image pins), so that a scan vertex within a rounding error of the sphere
    is kept or left out as there. Other landmarks are computed in float64.
    """
    lm = _lm7("face_crop_sphere", landmarks)
    lm32 = lm.astype(np.float32)
    if np.array_equal(lm32, lm):
        nose32 = lm32[4]
        mid32 = (lm32[1] + lm32[2]) / np.float32(2.0)
        centre32 = nose32 + np.float32(0.3) * (mid32 - nose32)
        dist32 = np.float32(np.linalg.norm(lm32[0] - lm32[3])) + np.float32(
            np.linalg.norm(mid32 - nose32)
        )
        return centre32.astype(np.float64), factor * float(dist32) / 2.0
    nose = lm[4]
    eyes_mid = 0.5 * (lm[1] + lm[2])
    centre = nose + 0.3 * (eyes_mid - nose)
    radius = factor * (np.linalg.norm(lm[0] - lm[3]) + np.linalg.norm(eyes_mid - nose)) / 2.0
    return centre, float(radius)


def crop_scan(scan: Mesh, landmarks: np.ndarray, factor: float = 1.4) -> Mesh:
    """Keep the scan vertices within NoW's face sphere (``<=``) and the faces all inside it.

    Every kept vertex counts in the evaluation, including those left in no face.
    """
    centre, radius = face_crop_sphere(landmarks, factor)
    keep = np.linalg.norm(scan.vertices - centre, axis=1) <= radius
    if not keep.any():
        raise DegenerateInputError("NoW crop: no scan vertex lies within the face sphere")
    return scan.subset_vertices(keep)[0]


def landmark_alignment(
    predicted: np.ndarray,
    scan: np.ndarray,
    *,
    metrical: bool = False,
    unit: str = "mm",
) -> Similarity:
    """Step 2: ``T_scan_from_prediction`` from the 7 landmark pairs.

    Non-metrical: the Procrustes similarity with scale and the best orthogonal matrix (reflection
    allowed when it fits better). Metrical: the same fit's rotation and translation with the scale
    replaced by the unit factor (the official code keeps the translation of the scaled fit; the
    rigid refinement then corrects it).

    Parameters
    ----------
    predicted, scan : (7, 3) float landmarks of the prediction and of the scan.
    """
    src = _lm7("predicted landmarks", predicted)
    dst = _lm7("scan landmarks", scan)
    fit = procrustes(src, dst, with_scale=True, allow_reflection=True)
    if not metrical:
        return fit
    if unit not in UNIT_TO_MM:
        raise ValueError(f"unit: expected one of {sorted(UNIT_TO_MM)}, got {unit!r}")
    return Similarity(UNIT_TO_MM[unit], fit.rotation, fit.translation)


def drop_degenerate_faces(mesh: Mesh) -> Mesh:
    """The mesh without its zero-area faces (the official ``clean_degenerated_faces``).

    A face is dropped when the cross product of its two edge directions (each normalised, zero
    edges left as they are) is exactly zero, as in the official code.
    """
    v, f = mesh.vertices, mesh.faces
    e1 = v[f[:, 1]] - v[f[:, 0]]
    e2 = v[f[:, 2]] - v[f[:, 0]]
    l1 = np.linalg.norm(e1, axis=1, keepdims=True)
    l2 = np.linalg.norm(e2, axis=1, keepdims=True)
    l1[l1 == 0.0] = 1.0
    l2[l2 == 0.0] = 1.0
    n = np.linalg.norm(np.cross(e1 / l1, e2 / l2), axis=1)
    keep = n != 0.0
    return Mesh(v, f[keep], mesh.uvs, mesh.colors)


# ------------------------------------------------------------------------------------------
# rigid / similarity scan-to-mesh refinement


class _Evaluation:
    """Residuals of the scan points against the transformed mesh at one transform."""

    __slots__ = ("transform", "x", "u", "d", "f")

    def __init__(self, query: SurfaceQuery, normals: np.ndarray, pts: np.ndarray, t: Similarity):
        local = t.inverse().apply(pts)
        cp = query.closest(local, neighbours=False)
        x = t.apply(cp.points)  # closest points, scan frame
        r = x - pts
        d = np.linalg.norm(r, axis=1)
        n = normals[cp.face_ids] @ t.rotation.T
        tiny = d <= 1e-12 * max(1.0, float(np.abs(pts).max()))
        u = np.where(tiny[:, None], n, r / np.where(tiny, 1.0, d)[:, None])
        self.transform = t
        self.x = x
        self.u = u
        self.d = d
        self.f = float(d @ d)


def _step(ev: _Evaluation, lam: float, fixed_scale: bool) -> tuple[Similarity | None, float]:
    """One damped Gauss-Newton step on ``sum d_i^2``: (new transform, predicted decrease)."""
    c = ev.x.mean(axis=0)
    y = ev.x - c
    u = ev.u
    cols = [np.cross(y, u), u]  # rotation (omega), translation (tau)
    if not fixed_scale:
        cols.insert(0, np.einsum("ij,ij->i", u, y)[:, None])  # log-scale (sigma)
    jac = np.concatenate(cols, axis=1)
    # residual e_i = u_i . (x_i - p_i) = d_i
    jtj = jac.T @ jac
    g = jac.T @ ev.d
    damp = np.diag(np.maximum(np.diag(jtj), 1e-12 * max(1.0, np.trace(jtj))))
    delta = np.linalg.solve(jtj + lam * damp, -g)
    predicted = -(2.0 * g @ delta + delta @ jtj @ delta)
    if fixed_scale:
        sigma, omega, tau = 0.0, delta[0:3], delta[3:6]
    else:
        sigma, omega, tau = delta[0], delta[1:4], delta[4:7]
    rot = rotation_from_axis_angle(omega)
    try:
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            s = float(np.exp(sigma))
            new = Similarity(s, rot, c - s * rot @ c + tau).compose(ev.transform)
            new.inverse()
    except ValueError:  # a scale (or its inverse) or a shift beyond float64: a step to reject
        return None, float(predicted)
    return new, float(predicted)


def _evaluation_or_none(
    query: SurfaceQuery, normals: np.ndarray, pts: np.ndarray, t: Similarity | None
) -> _Evaluation | None:
    """The evaluation at ``t``, or None where the step went where floats cannot follow (a
    scale beyond float64, or scan points mapped beyond the ray engine's float32): such a step
    is rejected, as a step that raised the objective is."""
    if t is None:
        return None
    try:
        return _Evaluation(query, normals, pts, t)
    except QueryRangeError:
        return None


def _rounding_floor(scan_points: np.ndarray, n: int) -> float:
    """The objective (sum of squared distances) of ``n`` distances of about 1e-9 of the scan's
    size: below it nothing is left to fit but rounding, and both refinements stop."""
    extent = float(np.ptp(scan_points, axis=0).max()) or 1.0
    return n * (1e-9 * extent) ** 2


def refine_scan_to_mesh(
    scan_points: np.ndarray,
    mesh: Mesh,
    init: Similarity,
    *,
    fixed_scale: bool = False,
    max_iterations: int = 100,
    rel_tolerance: float = 1e-7,
    coarse_points: int = 6000,
    query: SurfaceQuery | None = None,
    seed: int = 0,
) -> RefineResult:
    """Minimise ``sum_i dist(p_i, T(mesh))^2`` over the similarity ``T`` (step 3 of NoW).

    Levenberg-Marquardt on the exact residuals ``d_i = |p_i - closest point of T(mesh)|``: the
    Jacobian of ``d_i`` is ``u_i . dT(m_i)`` with ``u_i`` the unit offset from the scan point to its
    closest point (the face normal when the offset vanishes), which is the point-to-plane model
    when the closest point lies inside a face. A step is kept only if the objective decreases;
    the iteration stops when the objective decreases, or the Gauss-Newton model predicts it to
    decrease, by less than ``rel_tolerance`` of itself. It first converges on ``coarse_points``
    random scan points, then on all of them.

    Parameters
    ----------
    scan_points : (N, 3) float, the cropped scan's vertices.
    mesh : the predicted mesh in its own frame.
    init : starting ``T_scan_from_prediction``.
    fixed_scale : keep ``init.scale`` (metrical variant).
    max_iterations : cap per phase.
    rel_tolerance : stop when the objective decreases by less than this fraction.
    coarse_points : size of the first phase's random subset (0: no coarse phase).
    query : a :class:`SurfaceQuery` of ``mesh`` to reuse.
    seed : seed of the random subset.

    Returns
    -------
    RefineResult with the distances of all ``scan_points`` at the final transform.
    """
    pts = np.asarray(scan_points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"refine_scan_to_mesh: expected (N, 3) scan points, got {pts.shape}")
    q = query if query is not None else SurfaceQuery(mesh)
    normals = mesh.face_normals
    t = init
    iterations = 0
    converged = False
    phases: list[np.ndarray] = []
    if 0 < coarse_points < len(pts):
        rng = np.random.default_rng(seed)
        phases.append(pts[rng.choice(len(pts), size=coarse_points, replace=False)])
    phases.append(pts)
    ev = None
    for sub in phases:
        floor = _rounding_floor(pts, len(sub))
        ev = _Evaluation(q, normals, sub, t)
        lam = 1e-6
        converged = False
        for _ in range(max_iterations):
            iterations += 1
            tol = rel_tolerance * ev.f + floor
            new_t, predicted = _step(ev, lam, fixed_scale)
            if predicted <= tol:
                converged = True
                break
            cand = _evaluation_or_none(q, normals, sub, new_t)
            if cand is not None and cand.f < ev.f:
                decrease = ev.f - cand.f
                ev = cand
                lam = max(lam / 4.0, 1e-9)
                if decrease <= tol:
                    converged = True
                    break
            else:
                lam *= 8.0
        t = ev.transform
    assert ev is not None
    return RefineResult(ev.transform, ev.d, iterations, converged)


def rotation_derivatives(rotvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation ``R`` of axis-angle ``rotvec`` (3,) and its derivatives ``dR / dr_k``
    (3, 3, 3), ``[k]`` for component ``k`` (Gallego and Yezzi's formula; ``[e_k]_x`` at 0)."""
    v = np.asarray(rotvec, dtype=np.float64)
    rot = rotation_from_axis_angle(v)
    theta2 = float(v @ v)
    eye = np.eye(3)
    if theta2 < 1e-24:
        return rot, np.stack([cross_matrix(eye[k]) for k in range(3)])
    vx = cross_matrix(v)
    return rot, np.stack(
        [
            (v[k] * vx + cross_matrix(np.cross(v, (eye - rot) @ eye[k]))) / theta2 @ rot
            for k in range(3)
        ]
    )


def refine_dogleg(
    scan_points: np.ndarray,
    mesh: Mesh,
    init: Similarity,
    *,
    fixed_scale: bool = False,
    max_iterations: int = 200,
    delta_0: float = 0.1,
    e_3: float = 1e-4,
    query: SurfaceQuery | None = None,
) -> RefineResult:
    """Step 3 of NoW as the official tool runs it: Powell's dogleg (chumpy's ``minimize``).

    The landmark-aligned mesh ``a = init(mesh)`` moves to ``s R(r) a + t``; the parameters
    ``p = (s, r, t)`` (``(r, t)`` with ``fixed_scale``) start at ``(1, 0, 0)``, ``r`` an
    axis-angle vector. The residuals are the distances ``d_i`` of the scan points to the moved
    surface (and, with the scale free, the official ``100 (|s| - s)``, 0 for a positive scale),
    their Jacobian ``-u_i · dc_i / dp`` with ``c_i`` the closest point (held at its
    barycentric place) and ``u_i`` the unit offset to it. Each iteration tries the dogleg step
    of the trust region (radius ``delta_0`` at first; the Gauss-Newton step solved by conjugate
    gradients, SciPy's defaults, as the official options ask) until one lowers the objective,
    growing the radius to 2.5 times the step where the gain beats 90% of the model's and
    quartering it below 5%. It stops after the first step that gains less than ``e_3`` of the
    objective (the official 1e-4), or after ``max_iterations`` iterations (chumpy's 200).
    It also stops, before the first step or after any, once the objective is rounding noise
    (distances of about 1e-9 of the scan's size: a prediction that coincides with the scan),
    where chumpy would go on stepping through that noise; :func:`refine_scan_to_mesh` stops at
    the same floor. A step may take the scale below 0, as the official one may; the penalty
    then applies and the mesh is mirrored: the transform is ``|s| (-R)``, a rotation with a
    reflection.

    Returns
    -------
    RefineResult with the distances of all ``scan_points`` at the final transform;
    ``iterations`` counts the objective's evaluations after the first.

    Raises
    ------
    DegenerateInputError
        A step lands on a scale of exactly 0 (the mesh shrunk to a point).
    """
    from scipy.sparse.linalg import cg

    pts = np.asarray(scan_points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"refine_dogleg: expected (N, 3) scan points, got {pts.shape}")
    q = query if query is not None else SurfaceQuery(mesh)
    fixed = bool(fixed_scale)

    def unpack(p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        return (1.0, p[0:3], p[3:6]) if fixed else (float(p[0]), p[1:4], p[4:7])

    def evaluate(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, Similarity]:
        """Residuals (the distances, then the official scale term), Jacobian, transform."""
        s, r, t = unpack(p)
        rot, d_rot = rotation_derivatives(r)
        if s == 0.0:
            raise DegenerateInputError(
                "the NoW refinement shrank the prediction to a point (scale 0)"
            )
        # a negative scale (the official objective penalises it but allows it) mirrors the
        # mesh: s R = |s| (-R), a rotation with a reflection
        moved = Similarity(abs(s), np.sign(s) * rot, t).compose(init)
        cp = q.closest(moved.inverse().apply(pts))
        ca = init.apply(cp.points)  # closest points on the landmark-aligned mesh
        # the products over the points by einsum, whose sums do not depend on the threads
        # (the path, and so the stopping step, would)
        offset = pts - (s * np.einsum("ij,kj->ik", ca, rot) + t)
        d = np.linalg.norm(offset, axis=1)
        u = offset / np.where(d > 0, d, 1.0)[:, None]
        cols = [-s * np.einsum("ij,kj,ik->i", ca, d_rot[k], u) for k in range(3)]
        if fixed:
            return d, np.column_stack([*cols, -u]), moved
        cols.insert(0, -np.einsum("ij,kj,ik->i", ca, rot, u))
        # the official objective's 100 (|s| - s): nothing while the scale stays positive
        reg_row = np.zeros((1, 7))
        reg_row[0, 0] = 100.0 * (np.sign(s) - 1.0)
        jac = np.vstack([np.column_stack([*cols, -u]), reg_row])
        return np.append(d, 100.0 * (abs(s) - s)), jac, moved

    def normal_equations(jac: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.einsum("ni,nj->ij", jac, jac), -np.einsum("ni,n->i", jac, r)

    p = np.zeros(6 if fixed else 7)
    if not fixed:
        p[0] = 1.0
    r, jac, moved = evaluate(p)
    a, g = normal_equations(jac, r)
    delta = float(delta_0)
    floor = _rounding_floor(pts, len(pts))
    f = np.einsum("n,n->", r, r)  # the objective at p
    evaluations, iteration = 0, 0
    done = not np.abs(g).max() >= 1e-15 or f <= floor
    converged = done
    while not done:
        iteration += 1
        jg = np.einsum("ni,i->n", jac, g)
        d_sd = (g @ g) / np.einsum("n,n->", jg, jg) * g
        d_gn = None
        while True:
            if np.linalg.norm(d_sd) >= delta:  # the Cauchy point lies outside: go to the edge
                step = delta / np.linalg.norm(d_sd) * d_sd
            else:
                if d_gn is None:
                    d_gn = cg(a, g, maxiter=2000)[0]
                if np.linalg.norm(d_gn) <= delta:
                    step = d_gn
                else:  # between the Cauchy point and the Gauss-Newton step, on the edge
                    diff = d_gn - d_sd
                    sq_sd = d_sd @ d_sd
                    disc = (diff @ diff) * delta**2 + (d_gn @ d_sd) ** 2 - (d_gn @ d_gn) * sq_sd
                    beta = (delta**2 - sq_sd) / (diff @ d_sd + np.sqrt(disc))
                    step = d_sd + beta * diff
            if np.linalg.norm(step) <= 1e-15 * np.linalg.norm(p):
                done = converged = True
                break
            r_new, jac_new, moved_new = evaluate(p + step)
            evaluations += 1
            f_new = np.einsum("n,n->", r_new, r_new)
            gain = f - f_new
            rho = gain
            if gain > 0:
                rho = gain / (2.0 * g @ step - step @ a @ step)
                p, moved, improvement = p + step, moved_new, gain / f
                r, jac, f = r_new, jac_new, f_new
                if improvement < e_3 or f_new <= floor:
                    done = converged = True
                else:
                    a, g = normal_equations(jac, r)
                    if not np.abs(g).max() >= 1e-15:
                        done = converged = True
            if rho > 0.9:
                delta = max(delta, 2.5 * float(np.linalg.norm(step)))
            elif rho < 0.05:
                delta *= 0.25
            if delta <= 1e-15 * np.linalg.norm(p):
                done = converged = True
            if done or gain > 0:
                break
        if iteration >= max_iterations:
            done = True
    return RefineResult(moved, r[: len(pts)], evaluations, converged)


def evaluate_now(
    scan: Mesh,
    scan_landmarks: np.ndarray,
    prediction: Mesh,
    predicted_landmarks: np.ndarray,
    config: NowConfig = NowConfig(),
) -> NowResult:
    """NoW distances of one prediction against its subject's scan (steps 1-4).

    Parameters
    ----------
    scan : the ground-truth scan (mm).
    scan_landmarks : (7, 3) float, the scan's landmarks.
    prediction : the predicted mesh (any frame and scale).
    predicted_landmarks : (7, 3) or (1, 7, 3) float, the prediction's landmarks.
    config : protocol settings.

    Returns
    -------
    NowResult
    """
    gt_lm = _lm7("scan landmarks", scan_landmarks)
    pred_lm = _lm7("predicted landmarks", predicted_landmarks)
    if config.drop_degenerate_faces:
        prediction = drop_degenerate_faces(prediction)
    if prediction.n_faces == 0:
        raise DegenerateInputError("the predicted mesh has no (non-degenerate) faces")
    cropped = crop_scan(scan, gt_lm, config.crop_factor)
    init = landmark_alignment(pred_lm, gt_lm, metrical=config.metrical, unit=config.unit)
    if config.solver == "official":
        res = refine_dogleg(cropped.vertices, prediction, init, fixed_scale=config.metrical)
    else:
        res = refine_scan_to_mesh(
            cropped.vertices,
            prediction,
            init,
            fixed_scale=config.metrical,
            max_iterations=config.max_iterations,
            rel_tolerance=config.rel_tolerance,
            coarse_points=config.coarse_points,
        )
    return NowResult(
        res.distances, res.transform, init, scan.n_vertices, res.iterations, res.converged
    )


def pooled_statistics(distances: list[np.ndarray]) -> NowStatistics:
    """Median, mean and std (ddof 0) of all distances of all images together.

    Parameters
    ----------
    distances : one (N_k,) array per image (empty list: NaN statistics).
    """
    arrays = [np.asarray(d, dtype=np.float64).ravel() for d in distances]
    if not arrays or sum(a.size for a in arrays) == 0:
        nan = float("nan")
        return NowStatistics(nan, nan, nan, len(arrays), 0)
    allv = np.concatenate(arrays)
    return NowStatistics(
        float(np.median(allv)), float(np.mean(allv)), float(np.std(allv)), len(arrays), allv.size
    )

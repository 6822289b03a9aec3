"""build-priors, the displacement stage and the fit region: each filter checked on scans made for
it, against closed forms and loops.

The model is facehd-synth's mean shape, standing for M1 in the identity pose. The scans are a
flat plane across the face (where a ray along M1's normal meets it, and at what angle, is known
in closed form) and copies of M1 moved along its vertex normals (a sheet in front, behind, or
both: a fold). Then the whole fit on synthetic scans: a spike on the skin that M2 cannot explain,
a noise-free scan for the floor of the error limit, half a face and an unreachable residual
limit for the fit's own failures.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from facehd.distances import SurfaceQuery
from facehd.mesh import Mesh, height_field_mesh
from facehd.morphable import load_model
from facehd.transforms import Similarity, rotation_from_axis_angle
from pipelines.fitting import (
    FitConfig,
    FitError,
    ModelFitData,
    _deformation_mask,
    _fit_displacement,
    _ScanSurface,
    face_region_points,
    fit_scan,
    prepare_model,
)
from pipelines.synth import SynthConfig, make_scan

CONFIG = FitConfig(deformation_size=16, displacement_size=128)
IDENTITY = Similarity(1.0, np.eye(3), np.zeros(3))


@pytest.fixture(scope="module")
def md() -> ModelFitData:
    return prepare_model(load_model("facehd-synth"), CONFIG)


def _sheets(md: ModelFitData, *offsets: float) -> Mesh:
    """One copy of the mean shape per offset, each moved that far (mm) along its normals."""
    v = md.mean_mm
    n = md.model.vertex_normals(v)
    f = md.model.faces
    verts = np.concatenate([v + d * n for d in offsets])
    faces = np.concatenate([f + i * len(v) for i in range(len(offsets))])
    return Mesh(verts, faces)


def _displace(
    md: ModelFitData,
    scan: Mesh,
    deformation_mask: np.ndarray | None = None,
    transform: Similarity = IDENTITY,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The displacement stage from the mean shape: (displacement, mask, positions, normals)."""
    if deformation_mask is None:
        deformation_mask = np.ones((CONFIG.deformation_size,) * 2, dtype=bool)
    return _fit_displacement(
        md, _ScanSurface(scan, 1), transform, md.mean_mm, deformation_mask, CONFIG
    )


def _on_fold(md: ModelFitData) -> np.ndarray:
    """(S2, S2) bool: displacement texels on a model triangle at a fold of the mean shape."""
    t = md.table
    fold = md.fold_faces(md.mean_mm, CONFIG.fold_angle_deg)
    out = np.zeros(t.size, dtype=bool)
    out[t.mask] = fold[t.face_ids[t.mask]]
    return out


@pytest.mark.parametrize(
    ("height", "flip", "moved"),
    [(10.0, False, False), (25.0, False, False), (25.0, True, False), (25.0, False, True)],
)
def test_displacement_against_a_plane_in_closed_form(
    md: ModelFitData, height: float, flip: bool, moved: bool
) -> None:
    """A plane ``z = c`` across the face: from texel point ``p`` along unit normal ``n`` the ray
    meets it at ``t = (c - p_z) / n_z`` (signed: in front of M1 or behind), at an angle whose
    cosine is ``|n_z|``. A texel is kept where ``|t|`` is within ``displacement_max_mm`` and the
    angle within ``displacement_max_angle_deg``; its displacement is ``t``. The plane's winding
    (which way its normals point, as a scan's may) changes nothing; nor does a scan in a frame of
    its own, given the rigid motion from it to the model."""
    xs = np.linspace(-200.0, 200.0, 41)
    plane = height_field_mesh(np.full((41, 41), height), xs, xs)
    if flip:
        plane = Mesh(plane.vertices, plane.faces[:, ::-1])
    transform = IDENTITY
    if moved:
        axis = np.array([0.3, -1.0, 0.4]) / np.linalg.norm([0.3, -1.0, 0.4])
        rotation = rotation_from_axis_angle(np.radians(35.0) * axis)
        transform = Similarity(1.0, rotation, np.array([40.0, -15.0, 120.0]))
        plane = Mesh(transform.inverse().apply(plane.vertices), plane.faces)
    disp, mask, pos, nmap = _displace(md, plane, transform=transform)
    nz = nmap[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (height - pos[..., 2]) / nz
    cos_limit = np.cos(np.radians(CONFIG.displacement_max_angle_deg))
    candidate = md.texel_fit & ~_on_fold(md)
    near = candidate & (np.abs(t) <= CONFIG.displacement_max_mm)
    expected = near & (np.abs(nz) >= cos_limit)
    steep = near & (np.abs(nz) < cos_limit)
    assert steep.sum() > 50 and expected.sum() > 300  # both filters have work to do here
    # texels within rounding of a limit may go either way
    sure = (np.abs(np.abs(t) - CONFIG.displacement_max_mm) > 1e-6) & (
        np.abs(np.abs(nz) - cos_limit) > 1e-6
    )
    np.testing.assert_array_equal(mask[sure], expected[sure])
    np.testing.assert_allclose(disp[mask], t[mask], atol=1e-6)
    assert (disp[mask] > 0).any() and (disp[mask] < 0).any()
    assert np.all(disp[~mask] == 0)


def test_displacement_sign_and_a_second_sheet(md: ModelFitData) -> None:
    """M1 moved 0.5 mm out reads +0.5 mm, moved in -0.5 mm. A second sheet within
    ``displacement_max_mm`` the other way makes the texel a fold (ambiguous: masked); one
    farther than that, or one on the same side behind the first, changes nothing."""
    out = _displace(md, _sheets(md, 0.5))
    inward = _displace(md, _sheets(md, -0.5))
    n_fit = md.texel_fit.sum()
    assert out[1].sum() > 0.97 * n_fit and inward[1].sum() > 0.97 * n_fit
    # the offset copy is 0.5 mm off M1 at its vertices, a little nearer between them
    assert np.median(out[0][out[1]]) == pytest.approx(0.5, abs=1e-3)
    assert np.median(inward[0][inward[1]]) == pytest.approx(-0.5, abs=1e-3)
    assert out[0][out[1]].min() > 0.3 and inward[0][inward[1]].max() < -0.3

    folded = _displace(md, _sheets(md, 0.5, -1.2))
    assert folded[1].sum() < 0.01 * n_fit
    folded_out = _displace(md, _sheets(md, -0.5, 1.2))
    assert folded_out[1].sum() < 0.01 * n_fit

    for offsets in [(0.5, -2.6), (0.5, 1.7), (0.5, 2.6)]:
        disp, mask, _, _ = _displace(md, _sheets(md, *offsets))
        # a ray grazing an edge of the offset copy may pick the other triangle (float32 hits)
        assert (mask != out[1]).sum() <= 0.001 * n_fit, offsets
        both = mask & out[1]
        np.testing.assert_allclose(disp[both], out[0][both], atol=1e-9)


def test_displacement_keeps_to_the_valid_deformation_texels(md: ModelFitData) -> None:
    """A displacement texel counts where the deformation mask, sampled bilinearly at its centre,
    is at least one half: with the mask's left half set, the texels left of u = 0.5."""
    s = CONFIG.deformation_size
    half = np.zeros((s, s), dtype=bool)
    half[:, : s // 2] = True
    scan = _sheets(md, 0.5)
    _, full_mask, _, _ = _displace(md, scan)
    disp, mask, _, _ = _displace(md, scan, half)
    u = md.texel_uvs_disp[:, 0].reshape(mask.shape)
    np.testing.assert_array_equal(mask, full_mask & (u < 0.5))
    assert mask.sum() > 0.4 * full_mask.sum()
    assert np.all(disp[~mask] == 0)


def test_fit_border_faces_match_a_loop_over_the_region_edges(md: ModelFitData) -> None:
    """A fit-region face is on the region's border when one of its edges is shared with no other
    fit-region face (the region stops there, or the mesh does)."""
    faces = md.model.faces
    fit_faces = md.fit[faces].all(axis=1)
    np.testing.assert_array_equal(md.fit_faces, fit_faces)
    uses: dict[tuple[int, int], int] = {}
    for f in faces[fit_faces]:
        for k in range(3):
            edge = tuple(sorted((int(f[k]), int(f[(k + 1) % 3]))))
            uses[edge] = uses.get(edge, 0) + 1
    border = np.zeros(len(faces), dtype=bool)
    for i in np.flatnonzero(fit_faces):
        f = faces[i]
        border[i] = any(
            uses[tuple(sorted((int(f[k]), int(f[(k + 1) % 3]))))] == 1 for k in range(3)
        )
    assert 0 < border.sum() < 0.1 * fit_faces.sum()
    np.testing.assert_array_equal(md.fit_border_faces, border)


def test_fold_faces_match_a_loop_over_neighbouring_faces(md: ModelFitData) -> None:
    """Faces meeting a neighbour (across a shared edge) at a dihedral angle above the limit."""
    v, faces = md.mean_mm, md.model.faces
    normals = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    owners: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(faces):
        for k in range(3):
            owners.setdefault(tuple(sorted((int(f[k]), int(f[(k + 1) % 3])))), []).append(i)
    for angle in (30.0, 60.0):
        expected = np.zeros(len(faces), dtype=bool)
        for pair in owners.values():
            if len(pair) == 2:
                a, b = pair
                if np.degrees(np.arccos(np.clip(normals[a] @ normals[b], -1, 1))) > angle:
                    expected[[a, b]] = True
        assert expected.sum() > 0, angle
        np.testing.assert_array_equal(md.fold_faces(v, angle), expected)


def test_face_region_points_leave_out_the_region_border_and_far_points(md: ModelFitData) -> None:
    """Scan points just off a model face count as face region when that face is an interior
    fit-region face; off a border face, or off the region, they do not; nor do points farther
    than ``residual_max_mm`` from M1. Reference: trimesh's closest triangle."""
    import trimesh

    v, faces = md.mean_mm, md.model.faces
    rng = np.random.default_rng(3)
    chosen = np.concatenate(
        [
            np.flatnonzero(md.fit_border_faces),
            rng.choice(np.flatnonzero(md.fit_faces & ~md.fit_border_faces), 600, replace=False),
            rng.choice(np.flatnonzero(~md.fit_faces), 300, replace=False),
        ]
    )
    tri = v[faces[chosen]]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    centre = tri.mean(axis=1)
    mesh = trimesh.Trimesh(v, faces, process=False)
    for offset in (0.2, CONFIG.residual_max_mm + 1.0):
        pts = centre + offset * normal
        near, dist, tid = trimesh.proximity.closest_point(mesh, pts)
        expected = md.fit_faces[tid] & ~md.fit_border_faces[tid] & (dist <= CONFIG.residual_max_mm)
        got = face_region_points(md, pts, v, CONFIG, threads=1)
        # a closest point on an edge or a corner is as close on the next face: compare the others
        bary = trimesh.triangles.points_to_barycentric(v[faces[tid]], near)
        inside = (bary > 1e-6).all(axis=1)
        assert inside.mean() > 0.75
        np.testing.assert_array_equal(got[inside], expected[inside])
        if offset < 1.0:
            assert (tid == chosen).mean() > 0.99
            assert not got[: md.fit_border_faces.sum()].any()
            assert got.sum() > 500
        else:  # most are as far off M1 as that, some came near another part of it
            interior = md.fit_faces[tid] & ~md.fit_border_faces[tid] & inside
            assert (interior & (dist > CONFIG.residual_max_mm)).sum() > 300
            assert not got[dist > CONFIG.residual_max_mm].any()


def test_texel_fit_is_the_texels_on_interior_fit_faces(md: ModelFitData) -> None:
    """``texel_fit``: the displacement texels whose centre lies, in UV, inside a fit-region face
    off the region's border. Reference: the UV triangles holding each texel centre, found by
    barycentric coordinates against every face (a centre on a shared edge may go to either)."""
    uvs, faces = md.model.uvs, md.model.faces
    corners = uvs[faces]  # (F, 3, 2)
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = md.fit_faces & ~md.fit_border_faces
    centres = md.texel_uvs_disp
    flat_fit = md.texel_fit.ravel()
    t = md.table
    on_border = np.zeros(t.size, dtype=bool)
    on_border[t.mask] = md.fit_border_faces[t.face_ids[t.mask]]
    rng = np.random.default_rng(5)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(flat_fit), 200, replace=False),
            rng.choice(np.flatnonzero(on_border.ravel()), 200, replace=False),
            rng.choice(np.flatnonzero(~flat_fit), 200, replace=False),
        ]
    )
    decided = {True: 0, False: 0}
    on_border_faces = 0
    for i in picked:
        d = centres[i] - corners[:, 0]
        b1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
        b2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
        holding = np.flatnonzero((np.stack([1.0 - b1 - b2, b1, b2], axis=1) >= -1e-9).all(axis=1))
        allowed = {bool(ok[f]) for f in holding} or {False}
        assert bool(flat_fit[i]) in allowed, i
        if len(allowed) == 1:
            decided[bool(flat_fit[i])] += 1
            on_border_faces += bool(len(holding)) and bool(md.fit_border_faces[holding].all())
    assert decided[True] > 150 and decided[False] > 250 and on_border_faces > 40


def test_deformation_mask_against_a_loop(md: ModelFitData) -> None:
    """A deformation texel is valid where its scan coverage is at least ``mask_coverage`` × the
    median covered texel's, and the bilinear weight the model's vertices put on it comes mostly
    (half or more) from fit-region vertices. Reference: the weights splatted vertex by vertex
    (texel centres at ``((j + 0.5) / S, 1 - (i + 0.5) / S)``, clamped at the edges)."""
    s = CONFIG.deformation_size
    total, on_fit = np.zeros((s, s)), np.zeros((s, s))
    for (u, v), in_fit in zip(md.model.uvs, md.fit, strict=True):
        x, y = u * s - 0.5, (1.0 - v) * s - 0.5
        j0, i0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - j0, y - i0
        taps = [(0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx)]
        taps += [(1, 0, fy * (1 - fx)), (1, 1, fy * fx)]
        for di, dj, w in taps:
            i, j = min(max(i0 + di, 0), s - 1), min(max(j0 + dj, 0), s - 1)
            total[i, j] += w
            on_fit[i, j] += w * in_fit
    mostly_fit = on_fit >= 0.5 * total
    rng = np.random.default_rng(2)
    coverage = rng.uniform(1.0, 3.0, (s, s))
    coverage[rng.random((s, s)) < 0.05] *= 30.0  # dense: lifts the mean, not the median
    coverage[rng.random((s, s)) < 0.2] = 0.0  # no scan there
    thin = (rng.random((s, s)) < 0.2) & (coverage > 0) & (coverage < 3.0)
    before = np.median(coverage[coverage > 0])
    # a little data: 0.15 or 0.35 of the median before, one below and one above a quarter of
    # the median after (lowered to about 0.87 of it by these)
    coverage[thin] = before * rng.choice([0.15, 0.35], thin.sum())
    median = np.median(coverage[coverage > 0])
    assert 0.8 * before < median < before
    expected = (coverage >= CONFIG.mask_coverage * median) & mostly_fit
    assert (thin & mostly_fit & expected).sum() > 5 and (thin & mostly_fit & ~expected).sum() > 5
    sure = np.abs(on_fit - 0.5 * total) > 1e-9 * np.maximum(total, 1.0)
    got = _deformation_mask(md, coverage.ravel(), CONFIG)
    np.testing.assert_array_equal(got[sure], expected[sure])
    # each condition leaves out texels the other keeps
    assert (mostly_fit & ~expected).sum() > 10 and ((coverage > 0) & ~mostly_fit).sum() > 10
    assert expected.sum() > 20
    np.testing.assert_array_equal(_deformation_mask(md, np.zeros(s * s), CONFIG), False)


# --------------------------------------------------------------------------------------------
# The whole fit on a synthetic scan: what is masked after the displacement, and when it fails
# --------------------------------------------------------------------------------------------
NO_ERROR_FILTER = {"displacement_error_factor": 1e9, "displacement_error_min_mm": 1e9}


@pytest.fixture(scope="module")
def md_default() -> ModelFitData:
    """The model prepared at build-priors' map sizes."""
    return prepare_model(load_model("facehd-synth"), FitConfig())


@pytest.fixture(scope="module")
def synthetic() -> tuple[Mesh, np.ndarray, Similarity]:
    """A synthetic scan (seed 0, subject 0, neutral), its 7 landmarks, and the motion from the
    model's frame to the scan's."""
    scan, gt, _, _, lm7 = make_scan(load_model("facehd-synth"), SynthConfig(seed=0), 0, 0)
    to_scan = Similarity(float(gt["scale"]), gt["rotation"], gt["translation"]).inverse()
    return scan, lm7, to_scan


def _with_spike(scan: Mesh, at: np.ndarray, height: float = 3.0) -> tuple[Mesh, np.ndarray]:
    """The scan with a thin spike (0.25 mm at its foot, ``height`` mm tall, 121 vertices) standing
    on its normal at the vertex nearest ``at``: clutter that rays along M1's normals miss."""
    i = int(np.argmin(np.linalg.norm(scan.vertices - at, axis=1)))
    foot, n = scan.vertices[i], scan.vertex_normals[i]
    a = np.cross(n, [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    rings = 40
    ring = [np.cos(2 * np.pi * m / 3) * a + np.sin(2 * np.pi * m / 3) * b for m in range(3)]
    verts = [
        foot + height * k / rings * n + 0.25 * (1 - k / rings) * r
        for k in range(rings)
        for r in ring
    ]
    verts.append(foot + height * n)
    faces = []
    for k in range(rings - 1):
        for m in range(3):
            p, q = 3 * k + m, 3 * k + (m + 1) % 3
            faces += [[p, q, q + 3], [p, q + 3, p + 3]]
    faces += [[3 * (rings - 1) + m, 3 * (rings - 1) + (m + 1) % 3, 3 * rings] for m in range(3)]
    spike = np.asarray(verts)
    joined = Mesh(
        np.concatenate([scan.vertices, spike]),
        np.concatenate([scan.faces, np.asarray(faces) + scan.n_vertices]),
    )
    return joined, spike


@pytest.mark.parametrize("at", [(40.0, -15.0, 20.0), (0.0, 60.0, 30.0)])
def test_texels_whose_scan_m2_does_not_explain_are_masked(
    md_default: ModelFitData, synthetic: tuple, at: tuple
) -> None:
    """A spike on the skin: the rays along M1's normals miss it, so M2 there is the skin, and the
    spike's points lie up to 3 mm from M2. Where they fall, the texel's mean scan-to-M2 distance
    is many times the median texel's: the texel is masked, as without the error limit it is
    not."""

    scan, lm7, to_scan = synthetic
    spiked, spike = _with_spike(scan, to_scan.apply(np.array([at]))[0])
    config = FitConfig()
    fit = fit_scan(spiked, lm7, md_default, config, threads=1)
    unlimited = fit_scan(spiked, lm7, md_default, replace(config, **NO_ERROR_FILTER), threads=1)
    s2 = config.displacement_size
    cp = SurfaceQuery(unlimited.m2).closest(unlimited.transform.apply(spike), neighbours=False)
    uv = np.einsum("nk,nkc->nc", cp.barycentrics, unlimited.m2.uvs[unlimited.m2.faces[cp.face_ids]])
    row = np.floor((1.0 - uv[:, 1]) * s2).astype(int)
    col = np.floor(uv[:, 0] * s2).astype(int)
    texels, counts = np.unique(row * s2 + col, return_counts=True)
    worst = np.unravel_index(texels[np.argmax(counts)], (s2, s2))  # where most spike points fall
    err = unlimited.error_map
    known = unlimited.displacement_mask & np.isfinite(err)
    assert err[worst] > 10 * config.displacement_error_factor * np.median(err[known])
    assert unlimited.displacement_mask[worst] and not fit.displacement_mask[worst]
    assert abs(unlimited.displacement[worst]) < 0.3  # the skin's detail, not the spike
    assert fit.displacement[worst] == 0.0
    # the limit masks only texels the unlimited fit kept, a small share of them
    dropped = unlimited.displacement_mask & ~fit.displacement_mask
    assert not (fit.displacement_mask & ~unlimited.displacement_mask).any()
    assert 0 < dropped.sum() < 0.02 * unlimited.displacement_mask.sum()


def test_the_error_limit_has_a_floor(md_default: ModelFitData) -> None:
    """On a noise-free scan the median texel error is about 8 µm; ``displacement_error_min_mm``
    keeps the limit from falling below 0.05 mm, so texels between 4 × the median and 0.05 mm stay
    (with no floor they are masked)."""
    model = md_default.model
    scan, _, _, _, lm7 = make_scan(model, SynthConfig(seed=0, noise_mm=0.0), 0, 0)
    config = FitConfig()
    floored = fit_scan(scan, lm7, md_default, config, threads=1)
    bare = fit_scan(
        scan, lm7, md_default, replace(config, displacement_error_min_mm=0.0), threads=1
    )
    unlimited = fit_scan(scan, lm7, md_default, replace(config, **NO_ERROR_FILTER), threads=1)
    err = unlimited.error_map
    known = unlimited.displacement_mask & np.isfinite(err)
    limit = config.displacement_error_factor * np.median(err[known])
    assert limit < config.displacement_error_min_mm  # measured: 0.033 mm
    between = known & (err > limit) & (err <= config.displacement_error_min_mm)
    assert between.sum() > 100
    assert floored.displacement_mask[between].all()
    assert not bare.displacement_mask[between].any()
    above = known & (err > config.displacement_error_min_mm)
    assert not floored.displacement_mask[above].any()


def test_a_fit_that_finds_too_little_of_the_face_fails(
    md_default: ModelFitData, synthetic: tuple
) -> None:
    """Half a face (the scan's vertices on one side of the model's midline) covers about half
    the fit region: fine at the default ``min_face_fraction`` (0.3), an error naming the share
    found above it; a median M1 residual above ``converged_median_mm`` is an error naming it."""

    scan, lm7, to_scan = synthetic
    x_model = to_scan.inverse().apply(scan.vertices)[:, 0]
    half, _ = scan.subset_vertices(x_model > -5.0)
    config = FitConfig()
    fit_scan(half, lm7, md_default, config, threads=1)
    with pytest.raises(
        FitError, match=r"only (\d+)% of the model's face region found scan data"
    ) as e:
        fit_scan(half, lm7, md_default, replace(config, min_face_fraction=0.8), threads=1)
    assert 35 <= int(e.value.args[0].split("%")[0].split()[-1]) <= 65
    full = fit_scan(scan, lm7, md_default, config, threads=1)
    limit = 0.5 * float(full.residuals.median[1])
    with pytest.raises(
        FitError, match=f"median scan-to-M1 distance {full.residuals.median[1]:.2f} mm"
    ):
        fit_scan(scan, lm7, md_default, replace(config, converged_median_mm=limit), threads=1)


def test_m2_drops_the_cells_that_span_a_seam() -> None:
    """M2's grid keeps a cell only where its edges are at most 8 × the median step between
    neighbouring texels: a UV layout whose halves lie 100 mm apart in space (a seam between
    them) loses the column of cells across, and only that column."""
    from types import SimpleNamespace

    from pipelines.fitting import _dense_mesh

    s = 16
    rows, cols = np.mgrid[0:s, 0:s].astype(np.float64)
    pos = np.stack([cols, rows, np.zeros((s, s))], axis=-1)  # 1 mm between texels
    pos[:, s // 2 :, 0] += 100.0
    nmap = np.zeros((s, s, 3))
    nmap[..., 2] = 1.0
    md = SimpleNamespace(table=SimpleNamespace(mask=np.ones((s, s), dtype=bool)))
    m2 = _dense_mesh(md, pos, nmap, np.zeros((s, s)))
    edges = m2.vertices[m2.faces] - m2.vertices[m2.faces[:, [1, 2, 0]]]
    assert np.linalg.norm(edges, axis=-1).max() < 2.0  # no face spans the seam
    assert m2.n_faces == 2 * (s - 1) * (s - 2)  # every other cell kept


def test_model_matches_against_a_loop_over_the_filters(md: ModelFitData) -> None:
    """Scan points scattered around the mean shape (off its normals by up to 70 degrees, up to
    6 mm away, with normals turned up to 90 degrees): each is accepted exactly when, with its
    closest point found by trimesh, the triangle is usable (fit region, not its border, not a
    fold), the distance is within the limit, the scan normal agrees with the triangle's within
    ``reject_angle_deg`` either way, and the offset runs along the triangle's normal within that
    angle (or is under 0.25 mm). The first three filters each reject points the others accept;
    the last decides none here (points beside the usable region's rim land on the border
    triangles around it, which the first rejects), and stands for meshes cut closer."""
    import trimesh

    from pipelines.fitting import _match_to_model

    rng = np.random.default_rng(4)
    v, f = md.mean_mm, md.model.faces
    mesh = Mesh(v, f)
    base = rng.integers(0, len(v), 3000)
    n = md.model.vertex_normals(v)[base]
    tangent = np.cross(n, rng.normal(size=(len(base), 3)))
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    tilt = np.radians(rng.uniform(0.0, 70.0, len(base)))[:, None]
    dist = rng.uniform(0.05, 6.0, len(base))[:, None]
    pts = v[base] + dist * (np.cos(tilt) * n + np.sin(tilt) * tangent)
    turn = np.radians(rng.uniform(0.0, 90.0, len(base)))[:, None]
    normals = np.cos(turn) * n + np.sin(turn) * tangent
    normals *= rng.choice([-1.0, 1.0], len(base))[:, None]  # either orientation
    # and points beside the rim of the usable region, out to the side of a rim vertex (whose
    # closest point is that vertex, shared by a usable triangle and one that is not)
    fn = mesh.face_normals
    usable = md.fit_faces & ~md.fit_border_faces & ~md.fold_faces(v, CONFIG.fold_angle_deg, fn)
    inside = np.zeros(len(v), dtype=bool)
    inside[f[usable].ravel()] = True
    outside = np.zeros(len(v), dtype=bool)
    outside[f[~usable].ravel()] = True
    rim = np.flatnonzero(inside & outside)
    away = v[rim] - v[f[usable].ravel()].mean(axis=0)  # from the region's middle
    rim_n = md.model.vertex_normals(v)[rim]
    away -= np.sum(away * rim_n, axis=1, keepdims=True) * rim_n
    away /= np.linalg.norm(away, axis=1, keepdims=True)
    pts = np.concatenate([pts, v[rim] + 2.0 * away + 0.3 * rim_n])
    normals = np.concatenate([normals, rim_n])
    limit = 4.0
    got = _match_to_model(md, pts, normals, v, limit, CONFIG, 1, CONFIG.fold_angle_deg)

    tm = trimesh.Trimesh(v, f, process=False)
    cp, d, fid = trimesh.proximity.closest_point(tm, pts)
    cos_max = np.cos(np.radians(CONFIG.reject_angle_deg))
    checks = {"usable": [], "near": [], "agree": [], "along": []}
    for i in range(len(pts)):
        nf = fn[fid[i]]
        checks["usable"].append(bool(usable[fid[i]]))
        checks["near"].append(d[i] <= limit)
        checks["agree"].append(abs(float(normals[i] @ nf)) >= cos_max)
        offset = pts[i] - cp[i]
        checks["along"].append(abs(float(offset @ nf)) >= cos_max * d[i] or d[i] < 0.25)
    table = {k: np.array(x) for k, x in checks.items()}
    expected = np.logical_and.reduce(list(table.values()))
    # the match takes the ray engine's (float32) triangle: where that is not trimesh's (a
    # closest point on an edge or corner, which several triangles share: 8% of these points),
    # the distances agree to float32 rounding (measured: 2e-6 mm), elsewhere to float64's
    same_face = got.face_ids == fid
    assert same_face.mean() > 0.85
    np.testing.assert_allclose(got.distances[same_face], d[same_face], atol=1e-9)
    np.testing.assert_allclose(got.distances, d, atol=1e-5)
    np.testing.assert_array_equal(got.ok[same_face], expected[same_face])
    for name in ("usable", "near", "agree"):  # each alone decides some points
        others = np.logical_and.reduce([x for k, x in table.items() if k != name])
        assert (others & ~table[name]).sum() >= 10, name
    assert expected.sum() > 300

"""Automatic scan landmarks: units, cameras, the renderer, frames, voting, and end to end on
synthetic scans with exact truth and on the real scan (when ../shared/data is present)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from facehd.detect import IBUG68_MIRROR, mediapipe_available
from facehd.distances import SurfaceQuery
from facehd.landmarks import NOW7_FROM_51, NOW7_FROM_68
from facehd.mesh import Mesh
from facehd.render.camera import PinholeCamera
from facehd.scan_landmarks import (
    HEAD_SIZE_MM,
    FaceFrame,
    ScanLandmarkConfig,
    ScanLandmarkError,
    ScanRenderer,
    ViewCamera,
    _nose_tip_forward,
    _onto_midline,
    _protrusion,
    _robust_affine,
    _vote,
    draw_overlay,
    fibonacci_directions,
    infer_unit_to_mm,
    rotate_image,
    rotated_to_image,
)

needs_mediapipe = pytest.mark.skipif(
    not mediapipe_available(), reason="needs the photo extra: pip install 'facehd[photo]'"
)
REAL_SCAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "flame-scan"


def _rotation(seed: int) -> np.ndarray:
    from pipelines.synth import random_rotation

    return random_rotation(np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------
# units


@pytest.mark.parametrize(("unit", "k"), [("mm", 1.0), ("cm", 10.0), ("m", 1000.0)])
def test_units_from_size(unit: str, k: float) -> None:
    box = trimesh.creation.box(extents=(180.0, 240.0, 200.0)).vertices / k  # a head, in `unit`
    assert infer_unit_to_mm(box) == unit
    assert infer_unit_to_mm(box, unit) == unit


def test_units_that_fit_nothing_or_contradict_the_size_are_errors() -> None:
    head_mm = trimesh.creation.box(extents=(180.0, 240.0, 200.0)).vertices
    for verts in (head_mm * 1000.0, head_mm / 1e5):  # micrometres; 2.4 µm: no unit fits
        with pytest.raises(ScanLandmarkError) as err:
            infer_unit_to_mm(verts, name="x.ply")
        assert err.value.reason == "units" and "x.ply" in str(err.value)
    with pytest.raises(ScanLandmarkError) as err:
        infer_unit_to_mm(head_mm / 1000.0, "mm")  # metres read as mm: 0.24 mm across
    assert err.value.reason == "units" and "wrong units" in str(err.value)
    with pytest.raises(ValueError, match="units"):
        infer_unit_to_mm(head_mm, "inch")
    # a face mask 150 mm tall in inches: too small for cm, and said to be inches
    with pytest.raises(ScanLandmarkError, match=r"in inches it is 150 mm: a scan in inches\?"):
        infer_unit_to_mm(head_mm * (150 / 240) / 25.4)
    with pytest.raises(ValueError, match="units"):
        ScanLandmarkConfig(units="furlong")


def test_unit_windows_are_disjoint() -> None:
    lo, hi = HEAD_SIZE_MM
    assert hi / lo <= 10.0  # at most one of mm, cm, m can put a size in the window
    assert infer_unit_to_mm(np.array([[0.0, 0, 0], [lo, 0, 0]])) == "mm"
    assert infer_unit_to_mm(np.array([[0.0, 0, 0], [hi * 0.999, 0, 0]])) == "mm"
    assert infer_unit_to_mm(np.array([[0.0, 0, 0], [0.999 * lo, 0, 0]])) == "cm"


# ------------------------------------------------------------------------------------------
# cameras and rendering


BAD_CONFIGS = [
    ({"units": "inch"}, "units must be 'auto' or one of"),
    ({"search_candidates": 0}, "search_candidates must be >= 1, got 0"),
    ({"search_views": 3}, "search_views must be >= 4, got 3"),
    ({"search_rolls": 0}, "search_rolls and search_supersample must be >= 1"),
    ({"search_supersample": 0}, "search_rolls and search_supersample must be >= 1"),
    ({"search_size": 63}, "search_size must be >= 64 and refine_size >= 128"),
    ({"refine_size": 127}, "search_size must be >= 64 and refine_size >= 128"),
    ({"attention_regions": ("nose",)}, "attention regions must be among"),
    ({"attention_regions_colour": ("lips", "ears")}, "attention regions must be among"),
    ({"vote_zooms": ()}, "vote_zooms must be positive"),
    ({"vote_zooms": (1.0, 0.0)}, "vote_zooms must be positive"),
    ({"nose_tip_reach_mm": float("nan")}, "nose_tip_reach_mm must be >= 0"),
    ({"nose_tip_reach_mm": -1.0}, "nose_tip_reach_mm must be >= 0"),
    ({"retry_smoothing_mm": (1.5, 0.0)}, "retry_smoothing_mm must be positive radii"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_CONFIGS, ids=[m[:24] for _, m in BAD_CONFIGS])
def test_a_config_out_of_range_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ScanLandmarkConfig(**changes)


def test_the_smallest_config_in_range_is_taken() -> None:
    ScanLandmarkConfig(
        units="m", search_candidates=1, search_views=4, search_rolls=1, search_supersample=1,
        search_size=64, refine_size=128, attention_regions=(), vote_zooms=(0.5,),
        nose_tip_reach_mm=0.0, retry_smoothing_mm=(),
    )  # fmt: skip


def test_fibonacci_directions_cover_the_sphere() -> None:
    d = fibonacci_directions(24)
    assert d.shape == (24, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    assert np.linalg.norm(d.mean(axis=0)) < 0.05
    # every direction of a dense sample is within 45 degrees of one of the 24
    probe = fibonacci_directions(2000)
    assert np.degrees(np.arccos(np.clip((probe @ d.T).max(axis=1), -1, 1))).max() < 45.0


def test_view_camera_agrees_with_the_render_camera() -> None:
    target = np.array([10.0, -20.0, 30.0])
    cam = ViewCamera.looking_at(target, np.array([1.0, 2.0, 3.0]), np.array([0, 1.0, 0]), 200, 128)
    np.testing.assert_allclose(cam.project(target[None])[0], [63.5, 63.5], atol=1e-9)
    # image up is the given up direction (made orthogonal): a point above the target is higher
    above = cam.project((target + [0, 10.0, 0])[None])[0]
    assert above[1] < 63.5
    # the square of side `width` around the target spans the image
    edge = target + 100.0 * cam.rotation[0]
    np.testing.assert_allclose(cam.project(edge[None])[0, 0], 63.5 + 64.0, atol=1e-6)
    # rays through pixels go back to those pixels; the facehd.render camera agrees
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 127, size=(20, 2))
    pts = cam.position + 500.0 * cam.rays(px)
    np.testing.assert_allclose(cam.project(pts), px, atol=1e-9)
    pin = cam.pinhole()
    assert isinstance(pin, PinholeCamera)
    ref = pin.project(torch.as_tensor(pts))[0].numpy()
    np.testing.assert_allclose(ref, px, atol=1e-9)


def _sphere(radius: float = 80.0, inside_out: bool = False) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    faces = s.faces[:, ::-1] if inside_out else s.faces
    return Mesh(np.asarray(s.vertices, float), np.asarray(faces, np.int64))


def test_renderer_silhouette_matches_analytic_rays() -> None:
    ren = ScanRenderer(_sphere())
    cam = ViewCamera.looking_at(
        np.zeros(3), np.array([0.3, 0.2, 1.0]), np.array([0, 1.0, 0]), 240, 96
    )
    img = ren.render(cam)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    ys, xs = np.mgrid[0:96, 0:96]
    d = cam.rays(np.stack([xs.ravel(), ys.ravel()], 1).astype(float))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    # ray-sphere: |o + t d|^2 = r^2 has a solution when (o.d)^2 - |o|^2 + r^2 >= 0
    o = cam.position
    disc = (d @ o) ** 2 - o @ o + 80.0**2
    covered = (img.sum(axis=2) > 0).ravel()
    sure = np.abs(disc) > 0.05 * 80.0**2  # pixels away from the (faceted) silhouette
    np.testing.assert_array_equal(covered[sure], disc[sure] > 0)
    # a Lambertian sphere lit from the camera is brightest where it faces the camera
    grey = img[..., 0].astype(float)
    centre = cam.project(np.zeros((1, 3)))[0]
    bright = np.unravel_index(np.argmax(grey), grey.shape)
    assert np.hypot(bright[1] - centre[0], bright[0] - centre[1]) < 20


def test_renderer_culls_the_hidden_side() -> None:
    cam = ViewCamera.looking_at(np.zeros(3), np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), 240, 64)
    inside_out = ScanRenderer(_sphere(inside_out=True))
    normal = ScanRenderer(_sphere())
    area = (normal.render(cam).sum(axis=2) > 0).sum()
    assert area > 500
    # wound inside out, the near side faces away: hidden, and rays stop at the first surface
    assert (inside_out.render(cam).sum(axis=2) > 0).sum() == 0
    inside_out.cull = "front"
    np.testing.assert_array_equal(inside_out.render(cam), normal.render(cam))
    inside_out.cull = "none"
    assert (inside_out.render(cam).sum(axis=2) > 0).sum() == area


def test_renderer_fills_enclosed_holes_only() -> None:
    """A hole cut in the near side of a sphere shows black (the far inside is a hidden back
    face); filled, it takes the colours around it, while the background and every hit pixel stay
    as they were."""
    sphere = _sphere()
    centres = sphere.vertices[sphere.faces].mean(axis=1)
    keep = np.linalg.norm(centres - np.array([0.0, 0.0, 80.0]), axis=1) > 20.0
    holed = Mesh(sphere.vertices, sphere.faces[keep])
    cam = ViewCamera.looking_at(np.zeros(3), np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), 240, 96)
    ren = ScanRenderer(holed)
    plain = ren.render(cam)
    ren.fill_holes = True
    filled = ren.render(cam)
    empty = plain.sum(axis=2) == 0
    ys, xs = np.mgrid[0:96, 0:96]
    centre = cam.project(np.zeros((1, 3)))[0]
    r_px = np.hypot(xs - centre[0], ys - centre[1])
    hole = empty & (r_px < 10)  # the hole: ~20 mm of 240 mm at 96 px is ~8 px in radius
    assert hole.sum() > 100
    # the hole is filled with the rim's shade (brightest facing the camera), never black
    assert (filled[hole].sum(axis=1) > 0).all()
    rim = ~empty & (r_px < 14)
    lo, hi = plain[rim].min(axis=0).astype(int), plain[rim].max(axis=0).astype(int)
    assert (filled[hole] >= lo - 2).all() and (filled[hole] <= hi + 2).all()
    # the background reaches the border: untouched; so is every pixel the surface covers
    np.testing.assert_array_equal(filled[~hole], plain[~hole])
    assert (filled[empty & (r_px > 60)] == 0).all()


def test_one_uniform_colour_renders_as_no_colour() -> None:
    sphere = _sphere()
    cam = ViewCamera.looking_at(np.zeros(3), np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), 240, 64)
    plain = ScanRenderer(sphere).render(cam)
    tinted = Mesh(
        sphere.vertices, sphere.faces, None, np.tile([0.9, 0.6, 0.5], (len(sphere.vertices), 1))
    )
    ren = ScanRenderer(tinted)
    assert not ren.shows_colour
    np.testing.assert_array_equal(ren.render(cam), plain)
    rng = np.random.default_rng(0)
    varied = Mesh(sphere.vertices, sphere.faces, None, rng.random((len(sphere.vertices), 3)))
    assert ScanRenderer(varied).shows_colour


def test_faces_on_open_edges_against_a_loop() -> None:
    """Faces with a vertex on an edge used by one face only, against a plain count of edges."""
    from facehd.scan_landmarks import _faces_on_open_edges

    sphere = _sphere()
    rng = np.random.default_rng(3)
    faces = sphere.faces[rng.random(len(sphere.faces)) > 0.1]  # holes
    count: dict[tuple[int, int], int] = {}
    for tri in faces.tolist():
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            key = (min(a, b), max(a, b))
            count[key] = count.get(key, 0) + 1
    on_edge = {v for (a, b), n in count.items() if n == 1 for v in (a, b)}
    expected = [any(v in on_edge for v in tri) for tri in faces.tolist()]
    got = _faces_on_open_edges(faces)
    assert got.shape == (len(faces) + 1,) and not got[-1]
    np.testing.assert_array_equal(got[:-1], expected)
    assert 0 < got.sum() < len(faces)
    assert not _faces_on_open_edges(sphere.faces)[:-1].any()  # closed: none


def test_a_cut_outline_gets_the_surface_tone_and_a_silhouette_stays_black() -> None:
    """A face cut from a scan must not show its crop line as a black outline: the front cap of
    a sphere, seen from the front, is outlined by its cut edge (the background takes the tone of
    the rim); the whole sphere's outline is its silhouette (the background stays black)."""
    sphere = _sphere()
    centres = sphere.vertices[sphere.faces].mean(axis=1)
    cap = Mesh(sphere.vertices, sphere.faces[centres[:, 2] > 40.0]).subset_vertices(
        np.isin(np.arange(len(sphere.vertices)), sphere.faces[centres[:, 2] > 40.0])
    )[0]
    cam = ViewCamera.looking_at(np.zeros(3), np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), 240, 96)
    for mesh, blended in ((cap, True), (sphere, False)):
        ren = ScanRenderer(mesh)
        plain = ren.render(cam)
        ren.blend_cut_edges = True
        shown = ren.render(cam)
        background = plain.sum(axis=2) == 0
        covered = ~background
        np.testing.assert_array_equal(shown[covered], plain[covered])
        if blended:
            tone = shown[background]
            assert (tone == tone[0]).all() and tone[0].sum() > 0
            rim = covered & _dilated(background)
            lo, hi = plain[rim].min(axis=0).astype(int), plain[rim].max(axis=0).astype(int)
            assert (tone[0] >= lo).all() and (tone[0] <= hi).all()
        else:
            assert (shown[background] == 0).all()


def _dilated(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask)


def test_smoothed_normals_bring_a_noisy_render_back_towards_the_clean_one() -> None:
    """Averaging the normals of a sphere with radial noise over a few edge lengths brings its
    render close to the clean sphere's; a clean sphere's render barely changes; radius 0 restores
    the scan's own normals exactly; the passes follow ``ceil((radius / median edge)²)``."""
    clean = _sphere()
    rng = np.random.default_rng(0)
    r = np.linalg.norm(clean.vertices, axis=1, keepdims=True)
    noisy = Mesh(clean.vertices * (1.0 + rng.normal(0.0, 0.8, r.shape) / r), clean.faces)
    cam = ViewCamera.looking_at(
        np.zeros(3), np.array([0.2, 0.1, 1.0]), np.array([0, 1.0, 0]), 240, 96
    )
    reference = ScanRenderer(clean).render(cam).astype(float)
    ren = ScanRenderer(noisy)
    own = ren.render(cam)
    edge = float(np.median(trimesh.Trimesh(noisy.vertices, noisy.faces).edges_unique_length))
    radius = 2.5 * edge  # (2.5)² = 6.25: 7 passes, away from a rounding edge
    assert ren.smooth_normals(radius) == 7
    smoothed = ren.render(cam)
    both = (reference.sum(axis=2) > 0) & (smoothed.sum(axis=2) > 0)
    err_own = np.abs(own.astype(float) - reference)[both].mean()
    err_smoothed = np.abs(smoothed.astype(float) - reference)[both].mean()
    assert err_smoothed < 0.4 * err_own, (err_own, err_smoothed)
    assert ren.smooth_normals(0.0) == 0
    np.testing.assert_array_equal(ren.render(cam), own)
    # a clean sphere's normals are already their neighbourhood's average
    plain = ScanRenderer(clean)
    plain.smooth_normals(radius)
    assert np.abs(plain.render(cam).astype(float) - reference).max() <= 3
    with pytest.raises(ValueError, match="radius"):
        ren.smooth_normals(-1.0)


def test_supersampled_render_averages_the_covered_part_of_each_pixel() -> None:
    """A flat, evenly lit square whose left edge runs down the middle of a pixel column: without
    supersampling that column is all surface or all background; with 2 x 2 rays per pixel it is
    half (the rays at a quarter and three quarters of the pixel), and with 4 x 4 also half, while
    fully covered pixels keep their value and pixel centres stay where they were."""
    size, width = 32, 64.0  # 2 mm per pixel
    cam = ViewCamera.looking_at(
        np.zeros(3), np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), width, size
    )
    # pixel column 10 spans x in [10 - 0.5, 10 + 0.5] px; its centre is at x = 10 px: put the
    # square's left edge there, and its other edges far outside the view
    d = cam.rays(np.array([[10.0, 15.5]]))[0]
    left = float(cam.position[0] - cam.position[2] / d[2] * d[0])  # where the ray meets z = 0
    verts = np.array([[left, -100, 0], [100, -100, 0], [100, 100, 0], [left, 100, 0]], float)
    square = Mesh(verts, np.array([[0, 1, 2], [0, 2, 3]], np.int64))
    ren = ScanRenderer(square)
    full = ren.render(cam)[16, 20].astype(float)
    assert full.min() > 50
    for k in (2, 4):
        img = ren.render(cam, supersample=k).astype(float)
        assert img.shape == (size, size, 3)
        np.testing.assert_allclose(img[:, 11:], np.broadcast_to(full, img[:, 11:].shape), atol=1)
        np.testing.assert_allclose(img[:, 10], np.broadcast_to(full / 2, (size, 3)), atol=1)
        assert (img[:, :10] == 0).all()
    with pytest.raises(ValueError, match="search_supersample"):
        ScanLandmarkConfig(search_supersample=0)
    with pytest.raises(ValueError, match="search_rolls"):
        ScanLandmarkConfig(search_rolls=0)


def test_rotated_search_image_maps_back_to_the_image() -> None:
    """A bright dot lands where the rotation says (clockwise on screen for positive degrees) and
    comes back to its pixel; a quarter turn agrees with numpy's exact rot90."""
    img = np.zeros((64, 64, 3), np.uint8)
    q = np.array([[40.0, 20.0]])  # x = column, y = row
    img[20, 40] = 255
    out = rotate_image(img, 45.0)
    peak = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    c, a = 31.5, np.deg2rad(45.0)
    expect = c + np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ (q[0] - c)
    assert np.hypot(peak[1] - expect[0], peak[0] - expect[1]) <= 1.0
    np.testing.assert_allclose(rotated_to_image(expect[None], 45.0, 64), q, atol=1e-9)
    # clockwise by 90 degrees on screen is numpy's rot90 with k = -1
    np.testing.assert_array_equal(rotate_image(img, 90.0), np.rot90(img, -1))


def test_renderer_shows_the_texture_where_its_uvs_say() -> None:
    """A square facing the camera, its texture four coloured quadrants: each quadrant of the
    render has its quadrant's colour (u right, v up, image row 0 at v = 1)."""
    xs = np.linspace(-50, 50, 11)
    gx, gy = np.meshgrid(xs, xs)
    verts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    i = (np.arange(10)[:, None] * 11 + np.arange(10)[None, :]).ravel()
    faces = np.concatenate([np.stack([i, i + 1, i + 12], 1), np.stack([i, i + 12, i + 11], 1)])
    uvs = (verts[:, :2] + 50.0) / 100.0
    square = Mesh(verts, faces.astype(np.int64), uvs)
    texture = np.zeros((64, 64, 3))
    texture[:32, :32] = [1, 0, 0]  # top left (v > 0.5, u < 0.5): red
    texture[:32, 32:] = [0, 1, 0]  # top right: green
    texture[32:, :32] = [0, 0, 1]  # bottom left: blue
    texture[32:, 32:] = [1, 1, 0]  # bottom right: yellow
    cam = ViewCamera.looking_at(np.zeros(3), np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), 120, 96)
    img = ScanRenderer(square, texture).render(cam).astype(float)
    quads = {"red": (24, 24), "green": (24, 72), "blue": (72, 24), "yellow": (72, 72)}
    expect = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1], "yellow": [1, 1, 0]}
    for name, (r, c) in quads.items():
        rgb = img[r - 4 : r + 4, c - 4 : c + 4].reshape(-1, 3).mean(axis=0)
        on = np.array(expect[name], bool)
        assert rgb[on].min() > 60 and (rgb[~on].max() if (~on).any() else 0) < 5, (name, rgb)
    with pytest.raises(ValueError, match="UVs"):
        ScanRenderer(Mesh(verts, faces.astype(np.int64)), texture)


def test_textured_render_matches_the_vertex_colour_render() -> None:
    """The model face with its albedo as vertex colours, and with the same albedo baked into a
    UV texture: the two renders agree (interpolation differences only)."""
    from facehd.morphable import load_model
    from facehd.uv import rasterize_uv

    model = load_model("facehd-synth")
    face = model.mesh(np.zeros(model.n_id), np.zeros(model.n_exp))
    albedo = np.clip(model.mean_albedo, 0, 1)
    table = rasterize_uv(model.uvs, model.faces, 512)
    texture = table.interpolate(albedo)
    # texels outside the layout take the nearest covered colour (no dark bleeding at seams)
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~table.mask, return_indices=True)
    texture = texture[iy, ix]
    coloured = Mesh(face.vertices, face.faces, None, albedo)
    textured = Mesh(face.vertices, face.faces, model.uvs)
    cam = ViewCamera.looking_at(
        face.vertices.mean(axis=0), np.array([0.2, 0.1, 1.0]), np.array([0, 1.0, 0]), 240, 160
    )
    a = ScanRenderer(coloured).render(cam).astype(float)
    b = ScanRenderer(textured, texture).render(cam).astype(float)
    on = (a.sum(axis=2) > 0) & (b.sum(axis=2) > 0)
    assert on.sum() > 5000
    diff = np.abs(a[on] - b[on])
    assert np.median(diff) < 1.0 and np.percentile(diff, 95) < 5.0
    # the texture's orientation matters: upside down, the eyes, brows and lips land elsewhere
    flipped = ScanRenderer(textured, texture[::-1]).render(cam).astype(float)
    assert np.percentile(np.abs(flipped[on] - a[on]), 95) > 50.0


def test_renderer_tells_colours_from_shading() -> None:
    """Colours count when they vary: none, or one uniform colour, show the shading alone."""
    sphere = _sphere(radius=100.0)
    n = sphere.n_vertices
    rng = np.random.default_rng(0)
    assert not ScanRenderer(sphere).shows_colour
    grey = Mesh(sphere.vertices, sphere.faces, None, np.full((n, 3), 0.7))
    assert not ScanRenderer(grey).shows_colour
    barely = Mesh(sphere.vertices, sphere.faces, None, 0.7 + rng.normal(0, 0.005, (n, 3)))
    assert not ScanRenderer(barely).shows_colour
    skin = Mesh(sphere.vertices, sphere.faces, None, rng.uniform(0.3, 0.9, (n, 3)))
    assert ScanRenderer(skin).shows_colour
    uvs = rng.uniform(0, 1, (n, 2))
    texture = np.zeros((8, 8, 3))
    texture[:4] = [0.8, 0.3, 0.3]
    assert ScanRenderer(Mesh(sphere.vertices, sphere.faces, uvs), texture).shows_colour
    flat = np.full((8, 8, 3), 0.5)
    assert not ScanRenderer(Mesh(sphere.vertices, sphere.faces, uvs), flat).shows_colour
    # the landmarks CSV says the same
    from pipelines.landmarks import _appearance

    assert _appearance(grey, None) == "shaded (uniform colours)"
    assert _appearance(skin, None) == "vertex colours" and _appearance(sphere, None) == "shaded"
    assert _appearance(sphere, flat) == "shaded (uniform texture)"


@pytest.mark.parametrize("field", ["attention_regions", "attention_regions_colour"])
def test_config_names_attention_regions(field: str) -> None:
    with pytest.raises(ValueError, match="attention regions"):
        ScanLandmarkConfig(**{field: ("eyes", "nose")})


# ------------------------------------------------------------------------------------------
# frames, voting, depth fit, midline


def test_face_frame_from_points_is_right_handed() -> None:
    f = FaceFrame.from_points(
        np.array([-31.0, 0, 0]), np.array([31.0, 0, 0]), np.array([0.0, -70.0, 5.0])
    )
    assert f is not None
    np.testing.assert_allclose(f.rotation() @ f.rotation().T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(f.left, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(np.cross(f.left, f.up), f.front, atol=1e-12)
    assert f.front[2] > 0.99 and f.eye_distance == pytest.approx(62.0)
    assert FaceFrame.from_points(np.zeros(3), np.zeros(3), np.ones(3)) is None  # eyes coincide
    assert FaceFrame.from_points(np.zeros(3), np.array([1.0, 0, 0]), np.array([2.0, 0, 0])) is None


def test_protrusion_tells_a_face_from_a_hollow() -> None:
    lm = np.zeros((68, 3))
    lm[[36, 39]] = [[-45, 0, 0], [-15, 0, 0]]
    lm[[42, 45]] = [[15, 0, 0], [45, 0, 0]]
    lm[[48, 54]] = [[-25, -70, 5], [25, -70, 5]]
    lm[30] = [0, -35, 25]
    f = FaceFrame.from_points(lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[[48, 54]].mean(0))
    assert _protrusion(lm, f) > 15.0
    # the base is the mean of the four eye corners and the two mouth corners, along the front
    deep = lm.copy()
    deep[[39, 42], 2] = -6.0
    fd = FaceFrame.from_points(
        deep[[36, 39]].mean(0), deep[[42, 45]].mean(0), deep[[48, 54]].mean(0)
    )
    base = (deep[36] + deep[39] + deep[42] + deep[45] + deep[48] + deep[54]) / 6.0
    assert _protrusion(deep, fd) == pytest.approx(float((deep[30] - base) @ fd.front), abs=1e-12)
    hollow = lm * [1, 1, -1]  # the same face seen from behind: labels stay, depth flips
    fh = FaceFrame.from_points(
        hollow[[36, 39]].mean(0), hollow[[42, 45]].mean(0), hollow[[48, 54]].mean(0)
    )
    assert _protrusion(hollow, fh) < -15.0


def test_robust_affine_ignores_outliers() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-30, 30, 50)
    y = 1.3 * x + 900.0 + rng.normal(0, 0.3, 50)
    y[:5] -= 25.0  # occluded points: far nearer than predicted
    y[5] = np.nan
    a, b = _robust_affine(x, y, 8.0)
    assert a == pytest.approx(1.3, abs=0.05) and b == pytest.approx(900.0, abs=0.5)
    assert _robust_affine(np.full(3, np.nan), np.full(3, np.nan), 8.0) == (1.0, 0.0)
    # outliers all at one end would tilt a fit that kept them: a quarter of the points
    y2 = 1.3 * x + 900.0 + rng.normal(0, 0.3, 50)
    y2[x > 15.0] -= 25.0
    assert (x > 15.0).sum() >= 10
    a, b = _robust_affine(x, y2, 8.0)
    assert a == pytest.approx(1.3, abs=0.05) and b == pytest.approx(900.0, abs=0.5)
    # the slope is kept within [0.5, 2]; with fewer than 6 points it stays 1
    a, b = _robust_affine(x, 3.0 * x + 10.0, 1e6)
    assert a == 2.0 and b == pytest.approx(float(np.median(x)) + 10.0)
    few = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert _robust_affine(few, 1.5 * few + 7.0, 8.0) == (1.0, pytest.approx(8.0))


def test_vote_is_the_median_moved_onto_the_surface() -> None:
    sphere = _sphere(radius=50.0)
    query = SurfaceQuery(sphere)
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(68, 3))
    truth = 50.0 * truth / np.linalg.norm(truth, axis=1, keepdims=True)
    stack = truth[None] + rng.normal(0, 1.0, size=(5, 68, 3))
    stack[0, 0] += 40.0  # one wild view
    quality = np.full((5, 68), 2)
    quality[:, 1] = [0, 0, 1, 0, 0]  # only view 2 is trustworthy for landmark 1
    stack[[0, 1, 3, 4], 1] += 30.0
    quality[:, 2] = 0  # landmark 2: guesses only, all of them vote
    quality[:, 3] = [2, 1, 1, 0, 0]  # landmark 3: the views of quality 1 vote beside the 2
    stack[3:, 3] += 30.0
    lm, spread = _vote(stack, quality, query)
    tm = trimesh.Trimesh(sphere.vertices, sphere.faces, process=False)
    med = np.median(stack, axis=0)
    med[1] = stack[2, 1]
    med[3] = np.median(stack[:3, 3], axis=0)
    ref, _, _ = trimesh.proximity.closest_point(tm, med)
    np.testing.assert_allclose(lm, ref, atol=1e-6)
    assert np.linalg.norm(lm[0] - truth[0]) < 3.0  # the wild view is outvoted
    assert spread.shape == (68,) and spread[1] == pytest.approx(np.linalg.norm(stack[2, 1] - lm[1]))
    # the spread is the median distance of the voters (the wild view does not lift it)
    assert spread[0] == pytest.approx(float(np.median(np.linalg.norm(stack[:, 0] - lm[0], axis=1))))


def test_median_landmarks_move_onto_the_plane_of_symmetry() -> None:
    # a mirror-symmetric bowl about x = 0; paired landmarks symmetric, median ones 3 mm aside
    xs = np.linspace(-80, 80, 81)
    ys = np.linspace(-100, 100, 101)
    from facehd.mesh import height_field_mesh

    x, y = np.meshgrid(xs, ys)
    bowl = height_field_mesh(60.0 - (x**2 + y**2) / 250.0, xs, ys)
    query = SurfaceQuery(bowl)
    rng = np.random.default_rng(3)
    mirror = np.asarray(IBUG68_MIRROR)
    xy = rng.uniform(-50, 50, size=(68, 2))
    for i in range(68):
        if mirror[i] < i:
            xy[i] = xy[mirror[i]] * [-1, 1]
        elif mirror[i] == i:
            xy[i, 0] = 3.0
    lm = query.closest(np.c_[xy, np.full(68, 100.0)]).points
    out = _onto_midline(lm, query)
    median = mirror == np.arange(68)
    np.testing.assert_allclose(out[median, 0], 0.0, atol=0.2)
    np.testing.assert_array_equal(out[~median], lm[~median])
    assert np.all(query.closest(out[median]).distances < 1e-6)
    # pairs placed unevenly (as detections are): the plane's normal is the mean of the right-to-
    # left differences, through the mean of the pairs' midpoints; checked pair by pair
    noisy = lm + rng.normal(0, 1.5, size=lm.shape)
    noisy[[19, 24]] += [6.0, 0.0, 0.0]  # one pair far to one side: mean and median differ
    pairs = [(i, int(mirror[i])) for i in range(17, 68) if mirror[i] > i]
    normal = sum(noisy[j] - noisy[i] for i, j in pairs) / len(pairs)
    normal /= np.linalg.norm(normal)
    offset = sum(0.5 * (noisy[i] + noisy[j]) @ normal for i, j in pairs) / len(pairs)
    out = _onto_midline(noisy, query)
    for k in np.flatnonzero(median):
        projected = noisy[k] - (noisy[k] @ normal - offset) * normal
        np.testing.assert_allclose(out[k], query.closest(projected[None]).points[0], atol=1e-9)


def test_overlay_draws_on_a_copy() -> None:
    img = np.zeros((128, 128, 3), np.uint8)
    pts = np.random.default_rng(4).uniform(10, 118, size=(68, 2))
    out = draw_overlay(img, pts, 0.5)
    assert out.shape == img.shape and out.dtype == np.uint8 and img.max() == 0
    x, y = np.round(pts[30]).astype(int)
    assert out[y, x].any()


# ------------------------------------------------------------------------------------------
# end to end (mediapipe)


def test_a_51_point_reference_takes_the_inner_68() -> None:
    """The accuracy check's 51-point references (iBUG-68 without the jaw line) are placed at
    points 17-67, so NoW's 7 read from them as from 68 are the ones NOW7_FROM_51 names."""
    from pipelines.landmarks_check import REGIONS, _as68

    ref51 = np.random.default_rng(0).normal(size=(51, 3))
    ref68 = _as68(ref51)
    assert np.isnan(ref68[:17]).all()
    np.testing.assert_array_equal(ref68[list(NOW7_FROM_68)], ref51[list(NOW7_FROM_51)])
    assert [lo for _, lo, _ in REGIONS] + [68] == [0] + [hi for _, _, hi in REGIONS]


def test_nose_tip_moves_to_the_most_prominent_point_near_it() -> None:
    """A nose-like bump on a plane, seen along +z and along a tilted front: point 30 goes to the
    bump's apex along that direction (found analytically by dense sampling), not to a lone spike
    or to vertices no face uses, and stays where nothing of the scan is within reach."""
    from facehd.mesh import height_field_mesh

    xs = np.arange(-40.0, 40.01, 0.5)
    ys = np.arange(-40.0, 40.01, 0.5)
    x, y = np.meshgrid(xs, ys)

    def bump(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 20.0 * np.exp(-((x - 3.0) ** 2 + (y + 2.0) ** 2) / (2 * 8.0**2))

    heights = bump(x, y)
    spike = (np.abs(xs - 6.0).argmin(), np.abs(ys - 2.0).argmin())  # 5 mm from the apex
    heights[spike[1], spike[0]] += 4.0  # a lone vertex 4 mm out of the skin
    grid = height_field_mesh(heights, xs, ys)
    # points no face uses (a point cloud's leftovers), in front of the tip
    stray = np.array([3.0, -2.0, 26.0]) + np.random.default_rng(5).uniform(-2, 2, (20, 3))
    scan = Mesh(np.concatenate([grid.vertices, stray]), grid.faces)
    query = SurfaceQuery(scan)
    lm = np.full((68, 3), np.nan)
    lm[30] = query.closest(np.array([[8.0, 4.0, 30.0]])).points[0]  # 7.8 mm off the apex
    for tilt in (0.0, 0.3):
        front = np.array([np.sin(tilt), 0.0, np.cos(tilt)])
        fine = np.arange(-20.0, 20.0, 0.02)
        fx, fy = np.meshgrid(fine + 3.0, fine - 2.0)
        h = fx * front[0] + bump(fx, fy) * front[2]
        best = np.unravel_index(np.argmax(h), h.shape)
        apex = np.array([fx[best], fy[best], bump(fx[best], fy[best])])
        out = _nose_tip_forward(lm, query, front, 10.0)
        assert np.linalg.norm(out[30] - apex) < 0.5, (tilt, out[30], apex)
        assert query.closest(out[30][None]).distances[0] < 1e-6
        np.testing.assert_array_equal(np.delete(out, 30, axis=0), np.delete(lm, 30, axis=0))
    # nothing of the scan within reach, or no tip at all: unchanged
    far = lm.copy()
    far[30] = [3.0, -2.0, 60.0]
    np.testing.assert_array_equal(_nose_tip_forward(far, query, [0, 0, 1], 10.0), far)
    none = np.full((68, 3), np.nan)
    np.testing.assert_array_equal(_nose_tip_forward(none, query, [0, 0, 1], 10.0), none)
    with pytest.raises(ValueError, match="nose_tip_reach_mm"):
        ScanLandmarkConfig(nose_tip_reach_mm=-1.0)


def _tip_on(
    heights: np.ndarray, xs: np.ndarray, start: tuple[float, float], stray: np.ndarray | None = None
) -> np.ndarray:
    """Point 30 after :func:`_nose_tip_forward` (front +z, reach 10 mm) on the height field
    ``heights`` over the grid ``xs`` × ``xs``, from the grid vertex nearest to ``start`` across;
    ``stray``: points no face uses, added to the scan."""
    from facehd.mesh import height_field_mesh

    grid = height_field_mesh(heights, xs, xs)
    if stray is not None:
        grid = Mesh(np.concatenate([grid.vertices, stray]), grid.faces)
    query = SurfaceQuery(grid)
    i, j = np.abs(xs - start[1]).argmin(), np.abs(xs - start[0]).argmin()
    lm = np.full((68, 3), np.nan)
    lm[30] = [xs[j], xs[i], heights[i, j]]
    return _nose_tip_forward(lm, query, np.array([0.0, 0.0, 1.0]), 10.0)[30]


@pytest.mark.parametrize("step", [0.5, 1.5])
def test_nose_tip_ignores_thin_ridges_but_not_broad_bumps(step: float) -> None:
    """On a nose-like bump, things higher than its apex 5 mm from it do not take the tip: a ridge
    two vertices wide and up to 4.5 mm long standing 5 mm out of the skin, on a fine grid and on a
    coarse one (where the filter's disc widens with the spacing); the same ridge at the edge of
    the search's reach (where the filter's disc still reaches past it); a tuft of 3 × 3 vertices
    15 mm out; points no face uses hovering 5 mm over the skin. A bump 3 mm wide (sigma) at the
    same place, as high as the ridge, does take it."""
    xs = np.arange(-30.0, 30.01, step)
    x, y = np.meshgrid(xs, xs)
    heights = 20.0 * np.exp(-(x**2 + y**2) / (2 * 8.0**2))  # apex (0, 0, 20)
    row, col = np.abs(xs - 4.0).argmin(), np.abs(xs - 3.0).argmin()  # 5 mm from the apex
    apex = np.array([0.0, 0.0, 20.0])
    for n in [n for n in (1, 3, 9) if n * step <= 4.5]:  # ridges up to 4.5 mm long
        ridge = heights.copy()
        ridge[row : row + 2, col - n // 2 : col + n // 2 + 1] += 5.0
        assert ridge.max() > 20.0
        for start in ((2.0, 2.0), (-1.8, -2.4)):  # the second 8-11 mm from the ridge
            tip = _tip_on(ridge, xs, start)
            assert np.linalg.norm(tip - apex) < 0.1 * step + 0.05, (n, start, tip)
    if step == 0.5:
        tuft = heights.copy()
        tuft[row - 2 : row + 1, col - 1 : col + 2] += 15.0
        assert np.linalg.norm(_tip_on(tuft, xs, (2.0, 2.0)) - apex) < 0.1
        hover = np.random.default_rng(3).uniform([2.0, 3.0, 0.0], [4.0, 5.0, 1.0], (200, 3))
        hover[:, 2] += 20.0 * np.exp(-(hover[:, 0] ** 2 + hover[:, 1] ** 2) / 128.0) + 5.0
        assert np.linalg.norm(_tip_on(heights, xs, (2.0, 2.0), hover) - apex) < 0.1

    def broad(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        bump = 5.0 * np.exp(-((x - xs[col]) ** 2 + (y - xs[row]) ** 2) / (2 * 3.0**2))
        return 20.0 * np.exp(-(x**2 + y**2) / (2 * 8.0**2)) + bump

    tip = _tip_on(broad(x, y), xs, (2.0, 2.0))
    fx, fy = np.meshgrid(np.arange(-10.0, 10.0, 0.02), np.arange(-10.0, 10.0, 0.02))
    best = np.unravel_index(np.argmax(broad(fx, fy)), fx.shape)  # its top, found densely
    assert np.hypot(fx[best], fy[best]) > 3.0
    assert np.hypot(tip[0] - fx[best], tip[1] - fy[best]) < max(1.0, step), tip


def test_nose_tip_on_a_slope_goes_to_the_uphill_edge_of_its_reach() -> None:
    """On an inclined plane nothing is more prominent than the reach's uphill edge: the tip is the
    median of the top 1% of the vertices within reach by their own heights (computed here by
    brute force), since the filter's discs there are whole and a plane's median is its centre."""
    xs = np.arange(-30.0, 30.01, 0.5)
    x, y = np.meshgrid(xs, xs)
    heights = 0.6137 * x + 0.2291 * y  # no two vertices within reach at one height
    tip = _tip_on(heights, xs, (0.0, 0.0))
    v = np.stack([x.ravel(), y.ravel(), heights.ravel()], axis=1)
    near = v[np.linalg.norm(v, axis=1) <= 10.0]
    k = max(5, int(np.ceil(0.01 * len(near))))
    expected = np.median(near[np.argsort(-near[:, 2])[:k]], axis=0)
    normal = np.array([-0.6137, -0.2291, 1.0]) / np.linalg.norm([-0.6137, -0.2291, 1.0])
    expected -= (expected @ normal) * normal  # onto the plane, as the tip is
    np.testing.assert_allclose(tip, expected, atol=1e-9)


@pytest.fixture(scope="module")
def landmarker():
    if not mediapipe_available():
        pytest.skip("needs the photo extra: pip install 'facehd[photo]'")
    from facehd.scan_landmarks import ScanLandmarker

    with ScanLandmarker() as lm:
        yield lm


def synthetic_face(seed: int, unit_to_mm: float) -> tuple[Mesh, np.ndarray, object]:
    """A facehd-synth face (random identity) in a random frame and units: (scan, true iBUG-68
    in the model frame (mm), T_model_from_scan)."""
    from facehd.morphable import load_model
    from facehd.transforms import Similarity

    model = load_model("facehd-synth")
    rng = np.random.default_rng(seed)
    face = model.mesh(rng.normal(size=model.n_id) * model.id_std, np.zeros(model.n_exp))
    t_model_from_scan = Similarity(unit_to_mm, _rotation(seed), rng.uniform(-200, 200, 3))
    scan = Mesh(t_model_from_scan.inverse().apply(face.vertices), face.faces)
    return scan, model.landmarks(face.vertices), t_model_from_scan


@needs_mediapipe
def test_a_face_in_inches_is_named_as_such(landmarker) -> None:  # noqa: ANN001
    """A head in inches is the size of one in cm, 2.54 times too small: its eye corners are too
    close, and the failure says the scan may be in inches (inches are not read)."""
    scan, _, _ = synthetic_face(3, unit_to_mm=25.4)
    with pytest.raises(ScanLandmarkError) as err:
        landmarker.detect(scan, name="s.obj")
    assert err.value.reason == "units", err.value
    assert "read as cm" in err.value.detail and "a scan in inches?" in err.value.detail


@needs_mediapipe
def test_synthetic_face_in_any_frame_and_inside_out(landmarker) -> None:  # noqa: ANN001
    scan, truth, t_model_from_scan = synthetic_face(3, unit_to_mm=10.0)  # in cm
    result = landmarker.detect(scan)
    assert result.units == "cm" and result.unit_to_mm == 10.0
    err = np.linalg.norm(t_model_from_scan.apply(result.landmarks68) - truth, axis=1)
    now7 = err[list(NOW7_FROM_68)]
    # mediapipe's landmark conventions differ from the model's by a few mm; a wrong face,
    # orientation or mirror image would be tens of mm off
    assert np.median(now7) < 3.0 and now7.max() < 8.0, now7
    np.testing.assert_array_equal(result.landmarks7, result.landmarks68[list(NOW7_FROM_68)])
    assert 0.0 < result.confidence <= 1.0 and result.views_fitted >= 3
    assert result.overlay is not None and result.overlay.shape == (384, 384, 3)
    # the face direction found is the model's +z, in the scan frame
    front_model = t_model_from_scan.rotation @ result.frame.front
    assert front_model[2] > 0.9
    # wound inside out, only a hollow face shows at first: the other side is used instead
    flipped = landmarker.detect(Mesh(scan.vertices, scan.faces[:, ::-1]))
    np.testing.assert_allclose(flipped.landmarks68, result.landmarks68, atol=0.05)
    assert result.rewound_faces == flipped.rewound_faces == 0
    # a third of the faces wound the other way (their vertex normals would cancel and shade
    # noise): turned back first, the same scan
    turn = np.random.default_rng(0).random(scan.n_faces) < 0.3
    mixed = scan.faces.copy()
    mixed[turn] = mixed[turn][:, ::-1]
    rewound = landmarker.detect(Mesh(scan.vertices, mixed))
    assert rewound.rewound_faces == turn.sum()
    np.testing.assert_allclose(rewound.landmarks68, result.landmarks68, atol=1e-9)
    # double-sided: every face stored again the other way round (their normals cancel to
    # nothing); the copies are left out, the same scan
    doubled = landmarker.detect(Mesh(scan.vertices, np.concatenate([scan.faces, mixed])))
    assert doubled.duplicate_faces == scan.n_faces and doubled.rewound_faces == 0
    np.testing.assert_allclose(doubled.landmarks68, result.landmarks68, atol=1e-9)


@needs_mediapipe
def test_a_view_takes_the_refined_points_from_the_attention_mesh(
    landmarker,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = {"plain": np.zeros((68, 3)), "attention": np.ones((68, 3))}
    monkeypatch.setattr(landmarker, "_mesh68", lambda image, model="plain": found[model])
    eyes = list(range(36, 48))
    pts = landmarker._meshes68(None, eyes)
    np.testing.assert_array_equal(pts[eyes], 1.0)
    np.testing.assert_array_equal(np.delete(pts, eyes, axis=0), 0.0)
    np.testing.assert_array_equal(landmarker._meshes68(None, []), 0.0)
    found["plain"] = None  # either mesh alone where the other finds no face
    np.testing.assert_array_equal(landmarker._meshes68(None, eyes), 1.0)
    found["plain"], found["attention"] = np.zeros((68, 3)), None
    np.testing.assert_array_equal(landmarker._meshes68(None, eyes), 0.0)


@needs_mediapipe
def test_the_mirror_view_cancels_a_left_right_bias(
    landmarker,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A face mesh that puts every point 3 px right of where it is: the mean of the view and its
    mirror image (mapped back) lands on the true points; without the mirror, the bias stays."""
    from dataclasses import replace

    w = 200
    truth = np.random.default_rng(0).uniform([20, 20, -5], [180, 180, 5], (68, 3))
    mirrored = truth[list(IBUG68_MIRROR)].copy()
    mirrored[:, 0] = (w - 1) - mirrored[:, 0]
    bias = np.array([3.0, 0.0, 0.0])
    image = np.zeros((w, w, 3), np.uint8)
    image[0, 0] = 255  # marks the unflipped image

    def biased(img: np.ndarray, refined: list[int]) -> np.ndarray:
        return (truth if img[0, 0].any() else mirrored) + bias

    monkeypatch.setattr(landmarker, "_meshes68", biased)
    np.testing.assert_allclose(landmarker._view68(image, []), truth, atol=1e-9)
    monkeypatch.setattr(landmarker, "config", replace(landmarker.config, mirror_views=False))
    np.testing.assert_allclose(landmarker._view68(image, []), truth + bias, atol=1e-9)
    # no face in the mirror image: the view's own points
    monkeypatch.setattr(landmarker, "config", replace(landmarker.config, mirror_views=True))
    monkeypatch.setattr(
        landmarker, "_meshes68", lambda img, r: truth + bias if img[0, 0].any() else None
    )
    np.testing.assert_allclose(landmarker._view68(image, []), truth + bias, atol=1e-9)


@needs_mediapipe
def test_coloured_scan_takes_eyes_and_lips_from_the_attention_mesh(
    landmarker,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model face with its mean albedo as vertex colours: eyes and lips come from the
    attention mesh (the shaded face: the lips alone), and the points land on the true ones."""
    from facehd.morphable import load_model

    model = load_model("facehd-synth")
    scan, truth, t_model_from_scan = synthetic_face(5, unit_to_mm=1.0)
    albedo = np.clip(model.mean_albedo, 0.0, 1.0)
    asked: list[list[int]] = []
    meshes68 = landmarker._meshes68

    def spy(image: np.ndarray, refined: list[int]) -> np.ndarray | None:
        asked.append(sorted(refined))
        return meshes68(image, refined)

    monkeypatch.setattr(landmarker, "_meshes68", spy)
    coloured = landmarker.detect(Mesh(scan.vertices, scan.faces, None, albedo))
    assert asked and all(r == list(range(36, 68)) for r in asked)
    err = np.linalg.norm(t_model_from_scan.apply(coloured.landmarks68) - truth, axis=1)
    now7 = err[list(NOW7_FROM_68)]
    assert np.median(now7) < 3.0 and now7.max() < 8.0, now7
    asked.clear()
    landmarker.detect(scan)
    assert asked and all(r == list(range(48, 68)) for r in asked)


@needs_mediapipe
@pytest.mark.parametrize("shape", ["sphere", "box"])
def test_no_face_is_an_error_not_landmarks(shape: str) -> None:
    from facehd.scan_landmarks import ScanLandmarker

    if shape == "sphere":
        mesh = _sphere(radius=100.0)
    else:
        b = trimesh.creation.box(extents=(200.0, 250.0, 180.0)).subdivide().subdivide()
        mesh = Mesh(np.asarray(b.vertices, float), np.asarray(b.faces, np.int64))
    with ScanLandmarker(ScanLandmarkConfig(search_views=12)) as lm:
        with pytest.raises(ScanLandmarkError) as err:
            lm.detect(mesh, name=f"{shape}.ply")
    assert err.value.reason == "no-face"


@needs_mediapipe
def test_stray_pieces_and_a_table_leave_the_landmarks_as_they_were(landmarker) -> None:  # noqa: ANN001
    scan, _, t_model_from_scan = synthetic_face(5, unit_to_mm=1000.0)  # in metres
    clean = landmarker.detect(scan)
    assert clean.ignored_faces == 0
    # a speck a metre away made the scan 1.1 m across (no unit fitted) and framed the search
    # around empty space; a table larger than the head, 1 mm under its chin, is the largest piece
    face_mm = t_model_from_scan.apply(scan.vertices)
    speck = trimesh.creation.box(extents=(3.0, 3.0, 3.0))
    # a scanned table is tessellated as finely as the head (triangles 800 mm across would be
    # left out as stretched before the pieces are counted)
    box = trimesh.creation.box(extents=(800.0, 20.0, 800.0))
    table = trimesh.Trimesh(*trimesh.remesh.subdivide_to_size(box.vertices, box.faces, 20.0))
    pieces = [
        (np.asarray(speck.vertices) + (1000.0, 0.0, 0.0), speck.faces),
        (np.asarray(table.vertices) + (0.0, face_mm[:, 1].min() - 11.0, 0.0), table.faces),
    ]
    vertices, faces = scan.vertices, scan.faces
    for v, f in pieces:
        faces = np.concatenate([faces, np.asarray(f) + len(vertices)])
        vertices = np.concatenate([vertices, t_model_from_scan.inverse().apply(v)])
    found = landmarker.detect(Mesh(vertices, faces), name="cluttered.ply")
    assert found.units == "m" and found.stretched_faces == 0
    assert found.ignored_faces == len(speck.faces) + len(table.faces)
    # the face's part is searched as the clean scan is: the same points
    np.testing.assert_allclose(found.landmarks68, clean.landmarks68, atol=1e-9)


@needs_mediapipe
def test_a_spike_leaves_the_units_and_the_landmarks_as_they_were(landmarker) -> None:  # noqa: ANN001
    """One vertex thrown 2 m off the head (a scanner's spike, still joined to its neighbours)
    made the scan 2 m across: no unit fitted, and the search was framed around empty space."""
    scan, _, _ = synthetic_face(6, unit_to_mm=1000.0)  # in metres
    clean = landmarker.detect(scan)
    vertices = scan.vertices.copy()
    top = int(np.argmax(np.linalg.norm(vertices - vertices.mean(axis=0), axis=1)))
    vertices[top] += (
        2.0
        * (vertices[top] - vertices.mean(axis=0))
        / np.linalg.norm(vertices[top] - vertices.mean(axis=0))
    )
    around = int(np.isin(scan.faces, top).any(axis=1).sum())
    found = landmarker.detect(Mesh(vertices, scan.faces), name="spiked.ply")
    assert found.units == "m" and found.stretched_faces == around
    # the spike's few triangles, far from the face, do not move the points
    err = np.linalg.norm(found.landmarks68 - clean.landmarks68, axis=1) * 1000.0
    assert np.median(err) < 0.5, err


@needs_mediapipe
def test_empty_mesh_is_an_error(landmarker) -> None:  # noqa: ANN001
    with pytest.raises(ScanLandmarkError) as err:
        landmarker.detect(Mesh(np.zeros((3, 3)), np.zeros((0, 3), np.int64)), name="e.ply")
    assert err.value.reason == "empty" and "e.ply" in str(err.value)


@needs_mediapipe
@pytest.mark.skipif(not REAL_SCAN.is_dir(), reason=f"real scan data not present ({REAL_SCAN})")
def test_real_scan_as_given_and_rotated(landmarker) -> None:  # noqa: ANN001
    """NoW's 7 against the scan's own annotation: median <= 3 mm, none over 8 mm, as given and
    in random frames (the full 20-rotation check: ``python -m pipelines.landmarks_check``)."""
    from facehd.mesh import load_mesh

    scan = load_mesh(REAL_SCAN / "scan.obj")  # metres
    ref = np.load(REAL_SCAN / "scan_lmks.npy")[list(NOW7_FROM_51)]
    for seed in (None, 0):
        r = np.eye(3) if seed is None else _rotation(seed)
        t = np.zeros(3) if seed is None else np.array([0.2, -0.1, 0.4])
        result = landmarker.detect(Mesh(scan.vertices @ r.T + t, scan.faces))
        assert result.units == "m"
        err_mm = 1000.0 * np.linalg.norm(result.landmarks7 - (ref @ r.T + t), axis=1)
        assert np.median(err_mm) <= 3.0, err_mm
        assert err_mm.max() <= 8.0, err_mm


@needs_mediapipe
def test_dense_noisy_scan_is_found_like_the_original(landmarker) -> None:  # noqa: ANN001
    """A noisy synthetic scan and the same surface subdivided once (4x the triangles, so its
    noise shades as fine grain): both are found, with landmarks within a few mm of the truth.
    Without supersampled search renders the grain hid the face from the search in every view."""
    from pipelines.landmarks_check import synthetic_cases

    name, scan, ref68 = next(iter(synthetic_cases(1, 5, colour=False)))
    ref7 = ref68[list(NOW7_FROM_68)]
    v, f = trimesh.remesh.subdivide(scan.vertices, scan.faces)
    for mesh in (scan, Mesh(v, f)):
        result = landmarker.detect(mesh, name=name)
        err = np.linalg.norm(result.landmarks7 - ref7, axis=1) * result.unit_to_mm
        assert np.median(err) < 3.0 and err.max() < 8.0, err


@needs_mediapipe
def test_noisy_scan_is_found_by_the_retry_with_smoothed_shading(landmarker) -> None:  # noqa: ANN001
    """0.4 mm of noise on a bare synthetic face: its renders are too grainy for the face mesh
    (rejected without retries); with smoothed shading the landmarks come out within a few mm of
    the truth, and the result says which smoothing found them."""
    from facehd.scan_landmarks import ScanLandmarker

    scan, truth, t_model_from_scan = synthetic_face(5, unit_to_mm=1.0)
    rng = np.random.default_rng(0)
    noisy = Mesh(scan.vertices + rng.normal(0.0, 0.4, scan.vertices.shape), scan.faces)
    with ScanLandmarker(ScanLandmarkConfig(retry_smoothing_mm=())) as plain:
        with pytest.raises(ScanLandmarkError):
            plain.detect(noisy, name="noisy.ply")
    result = landmarker.detect(noisy, name="noisy.ply")
    assert result.smoothing_mm == landmarker.config.retry_smoothing_mm[0]
    err = np.linalg.norm(t_model_from_scan.apply(result.landmarks68) - truth, axis=1)
    now7 = err[list(NOW7_FROM_68)]
    assert np.median(now7) < 3.0 and now7.max() < 8.0, now7
    # a scan found with its own shading says so
    assert landmarker.detect(scan).smoothing_mm == 0.0


@needs_mediapipe
def test_retries_smooth_in_turn_and_the_first_failure_speaks(landmarker, monkeypatch) -> None:  # noqa: ANN001
    """Each radius of ``retry_smoothing_mm`` is tried after a no-face, hollow or unsure failure;
    when all fail, the first failure is reported with the radii tried; units and empty-file
    failures are final."""
    scan, _, _ = synthetic_face(5, unit_to_mm=1.0)
    tried: list[float] = []
    errors = iter(["hollow", "no-face", "unsure"])

    def failing(renderer, query, name, units, smoothing):  # noqa: ANN001, ANN202
        tried.append(smoothing)
        raise ScanLandmarkError(next(errors), f"attempt {len(tried)}")

    monkeypatch.setattr(landmarker, "_detect", failing)
    with pytest.raises(ScanLandmarkError) as err:
        landmarker.detect(scan, name="s.ply")
    assert tried == [0.0, *landmarker.config.retry_smoothing_mm]
    assert err.value.reason == "hollow" and err.value.detail.startswith("attempt 1;")
    assert "smoothed over 1.5, 4 mm" in str(err.value)

    tried.clear()
    monkeypatch.setattr(
        landmarker,
        "_detect",
        lambda renderer, query, name, units, smoothing: (tried.append(smoothing), 1 / 0),
    )
    with pytest.raises(ZeroDivisionError):
        landmarker.detect(scan)
    assert tried == [0.0]

    def wrong_size(renderer, query, name, units, smoothing):  # noqa: ANN001, ANN202
        tried.append(smoothing)
        raise ScanLandmarkError("units", "the outer eye corners are 9 mm apart")

    tried.clear()
    monkeypatch.setattr(landmarker, "_detect", wrong_size)
    with pytest.raises(ScanLandmarkError) as err:
        landmarker.detect(scan)
    assert tried == [0.0] and err.value.reason == "units"


@needs_mediapipe
def test_weaker_candidates_are_tried_and_the_furthest_failure_is_reported(
    landmarker, monkeypatch
) -> None:  # noqa: ANN001
    """The strongest search hit that the face mesh does not confirm gives way to the next; when
    every candidate fails, the one that got furthest (a face found but unsure) is reported."""
    scan, _, _ = synthetic_face(5, unit_to_mm=1.0)
    real = landmarker._search(ScanRenderer(scan))[0]
    fake = type(real)(0.99, real.keypoints, real.camera)  # a stronger, wrong "face"
    monkeypatch.setattr(landmarker, "_search", lambda renderer: [fake, real])
    original = landmarker._locate
    calls = []

    def locate(renderer, query, frames, found):  # noqa: ANN001, ANN202
        calls.append(found.score)
        if found is fake:
            raise ScanLandmarkError("hollow", "a face-like pattern on the hair")
        return original(renderer, query, frames, found)

    monkeypatch.setattr(landmarker, "_locate", locate)
    result = landmarker.detect(scan)
    assert calls[:2] == [0.99, real.score]
    assert result.detection_score == pytest.approx(real.score)

    # both fail: the unsure one speaks, on every pass tried
    def unsure_or_hollow(renderer, query, frames, found):  # noqa: ANN001, ANN202
        if found is fake:
            raise ScanLandmarkError("hollow", "a face-like pattern on the hair")
        raise ScanLandmarkError("unsure", "the face mesh fitted 1 of 5 views")

    monkeypatch.setattr(landmarker, "_locate", unsure_or_hollow)
    with pytest.raises(ScanLandmarkError) as err:
        landmarker.detect(scan)
    assert err.value.reason == "unsure"


def test_holes_are_filled_from_the_surface_around_them() -> None:
    """Enclosed empty pixels (holes, even one pixel from the image's edge) take the colour of the
    nearest surface pixel, smoothed, as a brute-force nearest search over the whole image gives;
    the surface and the background that reaches the image's edge stay as they are."""
    from scipy import ndimage

    from facehd.scan_landmarks import _fill_enclosed

    rng = np.random.default_rng(4)
    s = 96
    yy, xx = np.mgrid[0:s, 0:s]
    hit = (yy - 48) ** 2 + (xx - 40) ** 2 < 40**2  # a disc cut by the image's left edge
    holes = [(48, 40, 6), (20, 30, 3), (50, 1, 0), (70, 60, 2)]
    for cy, cx, r in holes:
        hit &= (yy - cy) ** 2 + (xx - cx) ** 2 > r * r
    hit[50, 1] = False
    hit[50, 0] = hit[49, 1] = hit[51, 1] = hit[50, 2] = True
    # a smooth surface colour, so that equally near surface pixels give (nearly) one colour
    img = np.stack([xx, yy, (xx + yy) / 2], axis=-1) / (4 * s) * hit[..., None]
    img = img + 0.001 * rng.random(img.shape) * hit[..., None]
    out = _fill_enclosed(img, hit)
    labels, _ = ndimage.label(~hit)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    enclosed = (labels > 0) & ~np.isin(labels, edge)
    assert enclosed.sum() > 100 and enclosed[50, 1]
    np.testing.assert_array_equal(out[~enclosed], img[~enclosed])
    # brute force: each hole pixel's nearest surface pixel, then the 5 x 5 mean inside holes
    surface = np.argwhere(hit)
    near = img.copy()
    for y, x in np.argwhere(enclosed):
        d2 = ((surface - (y, x)) ** 2).sum(1)
        ties = surface[d2 == d2.min()]
        near[y, x] = img[ties[:, 0], ties[:, 1]].mean(0)
    want = np.stack([ndimage.uniform_filter(near[..., c], 5) for c in range(3)], axis=-1)
    np.testing.assert_allclose(out[enclosed], want[enclosed], atol=0.004)

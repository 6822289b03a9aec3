"""The depth alignment of FaceScape's lab protocol, on surfaces whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from facehd.depthmap import Perspective, render_depth, slide_to_depth
from facehd.errors import DegenerateInputError
from facehd.mesh import Mesh


def _plane(z: float, half: float = 60.0, n: int = 9) -> Mesh:
    """A square grid at depth ``z`` facing the camera (OpenCV: looking down +z)."""
    x, y = np.meshgrid(np.linspace(-half, half, n), np.linspace(-half, half, n))
    v = np.column_stack([x.ravel(), y.ravel(), np.full(n * n, z)])
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).ravel()
    faces = np.concatenate([np.c_[a, a + n, a + 1], np.c_[a + 1, a + n, a + n + 1]])
    return Mesh(v, faces)


def test_a_scaled_copy_slides_back_onto_the_truth_keeping_its_pixels() -> None:
    k = np.array([[500.0, 0, 32.0], [0, 500.0, 32.0], [0, 0, 1]])
    cam = Perspective(k)
    gt = _plane(300.0)
    near = Mesh(gt.vertices * 0.8, gt.faces)  # same pixels, 240 mm away
    depth = render_depth(gt, cam, 64)
    assert (depth > 0).mean() > 0.5
    np.testing.assert_allclose(depth[depth > 0], 300.0)
    slid, dz = slide_to_depth(gt, near, cam, 64)
    assert dz == pytest.approx(60.0, abs=1e-3)  # gt depth - prediction depth
    np.testing.assert_allclose(slid, gt.vertices, atol=1e-3)
    # every vertex keeps its pixel: the slide is a scale about the camera
    px = lambda v: (v @ k.T)[:, :2] / v[:, 2:]  # noqa: E731
    np.testing.assert_allclose(px(slid), px(near.vertices), atol=1e-9)
    # the ground truth's depth map given once for several predictions: the same slide
    again, dz_again = slide_to_depth(gt, near, cam, 64, gt_depth=depth)
    assert dz_again == dz and np.array_equal(again, slid)
    with pytest.raises(ValueError, match="gt_depth"):
        slide_to_depth(gt, near, cam, 64, gt_depth=depth[:32])


def test_no_common_pixel_is_a_clear_error() -> None:
    k = np.array([[500.0, 0, 32.0], [0, 500.0, 32.0], [0, 0, 1]])
    gt = _plane(300.0, half=10.0)
    aside = Mesh(gt.vertices + [200.0, 0.0, 0.0], gt.faces)
    with pytest.raises(DegenerateInputError, match="does not overlap"):
        slide_to_depth(gt, aside, Perspective(k), 64)


def test_a_vertex_no_face_uses_changes_no_depth_and_a_nan_corner_is_named() -> None:
    """A NaN vertex no face uses moved every ray into NaN: an empty map, silently."""
    k = np.array([[500.0, 0, 32.0], [0, 500.0, 32.0], [0, 0, 1]])
    cam = Perspective(k)
    gt = _plane(300.0)
    depth = render_depth(gt, cam, 64)
    for extra in ([np.nan, 0.0, 0.0], [0.0, 1e9, -1e9]):
        unused = Mesh(np.vstack([gt.vertices, [extra]]), gt.faces)
        np.testing.assert_allclose(render_depth(unused, cam, 64), depth, rtol=0, atol=1e-9)
    v = gt.vertices.copy()
    v[4, 2] = np.inf
    with pytest.raises(DegenerateInputError, match=r"vertices of faces have NaN or inf.*number 4"):
        render_depth(Mesh(v, gt.faces), cam, 64)


def test_a_tilted_plane_reads_the_depth_of_each_pixel_ray() -> None:
    """On a plane tilted about both axes, each pixel's depth is where its own ray meets the plane:
    the ray through the pixel's sample point (:data:`PYRENDER_SAMPLE_OFFSET`), with the focal
    lengths of its own axes (fx != fy here)."""
    from facehd.depthmap import PYRENDER_SAMPLE_OFFSET

    k = np.array([[400.0, 0, 30.0], [0, 250.0, 34.0], [0, 0, 1]])
    flat = _plane(0.0, half=200.0, n=5)
    gx, gy, z0 = 0.3, -0.4, 300.0  # z = z0 + gx x + gy y
    v = flat.vertices.copy()
    v[:, 2] = z0 + gx * v[:, 0] + gy * v[:, 1]
    depth = render_depth(Mesh(v, flat.faces), Perspective(k), 64)
    r, c = np.indices((64, 64))
    dx = (c + 0.5 + PYRENDER_SAMPLE_OFFSET[0] - k[0, 2]) / k[0, 0]
    dy = (r + 0.5 + PYRENDER_SAMPLE_OFFSET[1] - k[1, 2]) / k[1, 1]
    expected = z0 / (1.0 - gx * dx - gy * dy)  # z = z0 + gx z dx + gy z dy
    assert (depth > 0).all()
    np.testing.assert_allclose(depth, expected, rtol=1e-9)


def test_the_nearest_surface_within_the_clip_range_is_drawn() -> None:
    """Of two planes one behind the other the nearer is drawn; a surface nearer than ``znear``
    or farther than ``zfar`` is clipped, as pyrender clips it, and the one behind shows."""
    k = np.array([[500.0, 0, 32.0], [0, 500.0, 32.0], [0, 0, 1]])
    far, near = _plane(500.0, half=200.0), _plane(300.0, half=200.0)
    both = Mesh(
        np.vstack([far.vertices, near.vertices]),
        np.vstack([far.faces, near.faces + far.n_vertices]),
    )
    for mesh in (both, Mesh(both.vertices, both.faces[::-1])):  # in either order
        np.testing.assert_allclose(render_depth(mesh, Perspective(k), 64), 300.0)
    np.testing.assert_allclose(render_depth(both, Perspective(k, znear=400.0), 64), 500.0)
    assert np.all(render_depth(both, Perspective(k, zfar=250.0), 64) == 0)


def test_the_slide_takes_the_mean_depth_over_the_common_pixels_and_the_search_scale() -> None:
    """``mean_z`` is the ground truth's mean depth over the pixels both maps cover, not over all
    of the ground truth's; a search in other units (``depth_scale``) returns ``dz`` in them and
    slides the mesh by the same amount."""
    k = np.array([[500.0, 0, 32.0], [0, 500.0, 32.0], [0, 0, 1]])
    cam = Perspective(k)
    wide, small = _plane(0.0, half=60.0, n=9), _plane(250.0, half=5.0)
    small = Mesh(small.vertices + [10.0, 0.0, 0.0], small.faces)  # right of the centre
    v = wide.vertices.copy()
    v[:, 2] = 300.0 + 0.5 * v[:, 0]  # a tilted truth, wider than the prediction
    gt = Mesh(v, wide.faces)
    depth_gt = render_depth(gt, cam, 64)
    depth_pred = render_depth(small, cam, 64)
    mask = (depth_gt > 0) & (depth_pred > 0)
    assert mask.sum() < (depth_gt > 0).sum()
    slid, dz = slide_to_depth(gt, small, cam, 64)
    mean_z = depth_gt[mask].mean()
    assert mean_z != pytest.approx(depth_gt[depth_gt > 0].mean(), abs=1.0)
    np.testing.assert_allclose(slid, small.vertices * mean_z / (mean_z - dz), rtol=1e-12)
    # the search in tenths of a mm: dz in them, the same slide
    flat = _plane(300.0)
    near = Mesh(flat.vertices * 0.8, flat.faces)
    slid10, dz10 = slide_to_depth(flat, near, cam, 64, depth_scale=10.0)
    assert dz10 == pytest.approx(600.0, abs=1e-2)
    np.testing.assert_allclose(slid10, flat.vertices, atol=1e-3)

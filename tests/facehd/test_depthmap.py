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

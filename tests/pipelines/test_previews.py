"""Preview images of fitted scans: the colour maps at their anchors, and each panel's pixels
against its formula on a hand-made fit (a flat face whose displacement tilts it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from facehd.mesh import Mesh, height_field_mesh
from facehd.transforms import Similarity
from facehd.uv import rasterize_uv
from pipelines.fitting import Residuals, ScanFit
from pipelines.previews import diverging, heat, preview_image, write_preview

S, S2 = 8, 32  # deformation and displacement map sizes
PAD, CAP = 6, 16  # the layout's margins and caption height
GREY = [40, 40, 40]


def test_colour_maps_at_their_anchors() -> None:
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    assert diverging(x).tolist() == [
        [0, 0, 255],  # clipped
        [0, 0, 255],
        [128, 128, 255],
        [255, 255, 255],
        [255, 128, 128],
        [255, 0, 0],
        [255, 0, 0],
    ]
    y = np.array([-1.0, 0.0, 1 / 3, 0.5, 2 / 3, 1.0, 3.0])
    assert heat(y).tolist() == [
        [0, 0, 0],
        [0, 0, 0],
        [255, 0, 0],
        [255, 128, 0],
        [255, 255, 0],
        [255, 255, 255],
        [255, 255, 255],
    ]
    assert diverging(np.zeros((2, 3))).shape == (2, 3, 3)


def _flat_fit(slope: float, error_map: np.ndarray | None) -> ScanFit:
    """A flat face (z = 0, x and y in [-50, 50] mm) over the middle of the UV square, with a
    deformation map of known values and a displacement d = slope * x (M2: the plane z = slope x)."""
    xs = np.linspace(-50.0, 50.0, 9)
    grid = height_field_mesh(np.zeros((9, 9)), xs, xs)
    m1 = Mesh(grid.vertices, grid.faces, uvs=0.2 + 0.6 * grid.uvs)
    table = rasterize_uv(m1.uvs, m1.faces, S2)
    x_mm = table.interpolate(m1.vertices)[..., 0]
    displacement = np.where(table.mask, slope * x_mm, 0.0)
    deformation = np.linspace(-3.0, 1.5, S * S * 3).reshape(S, S, 3)
    dmask = np.zeros((S, S), dtype=bool)
    dmask[2:6, 1:7] = True
    distances = np.array([[1.0, 2.0, 3.0], [0.5, 0.6, 0.7], [0.1, 0.2, 0.3]])
    residuals = Residuals(
        np.median(distances, 1), distances.mean(1), 3, distances, np.zeros((3, 3))
    )
    return ScanFit(
        Similarity.identity(),
        np.zeros(3),
        np.zeros(2),
        deformation,
        dmask,
        displacement,
        table.mask.copy(),
        m1,
        m1,
        m1,
        residuals,
        0.0,
        error_map=error_map,
        normal_weighting="area",
    )


def _panel(img: np.ndarray, k: int) -> np.ndarray:
    x = PAD + k * (S2 + PAD)
    return img[PAD + CAP : PAD + CAP + S2, x : x + S2]


def test_each_panel_shows_its_map_by_its_formula() -> None:
    err = np.full((S2, S2), np.nan)
    err[:, :16] = np.linspace(0.0, 4.0, S2 * 16).reshape(S2, 16)
    fit = _flat_fit(0.2, err)
    img = np.asarray(preview_image(fit, "s000"))
    assert img.shape == (S2 + 2 * CAP + 2 * PAD, 4 * (S2 + PAD) + PAD, 3)

    # 1. deformation: mid grey at 0, scaled by the largest |offset| inside the mask; texels
    # drawn as 4 x 4 blocks (upsampled to the displacement map's size)
    d, dm = fit.deformation, fit.deformation_mask
    amp = np.abs(d[dm]).max()
    want = np.round(np.clip(0.5 + 0.5 * d / amp, 0, 1) * 255)
    want[~dm] = GREY
    got = _panel(img, 0)[::4, ::4]
    np.testing.assert_array_equal(got, want)
    assert np.ptp(_panel(img, 0)[:4, :4].reshape(-1, 3), axis=0).max() == 0  # one block

    # 2. displacement: ± its 99th percentile of |d|, blue inwards, red outwards (on values
    # of distinct sizes, whose 95th and 99th percentiles differ)
    mask = fit.displacement_mask
    rough = np.where(mask, np.random.default_rng(0).normal(0.0, 0.3, mask.shape), 0.0)
    top = np.percentile(np.abs(rough[mask]), 99)
    t = np.clip(rough / top, -1, 1)
    red = np.stack([np.ones_like(t), 1 - np.abs(t), 1 - np.abs(t)], -1)
    blue = red[..., ::-1]
    want = np.round(np.where(t[..., None] > 0, red, blue) * 255)
    want[~mask] = GREY
    shown = np.asarray(preview_image(replace(fit, displacement=rough)))
    np.testing.assert_array_equal(_panel(shown, 1), want)

    # 3. error: 0 to its 95th percentile, NaN drawn as masked
    known = np.isfinite(err)
    e = np.where(known, err, 0) / np.percentile(err[known], 95)
    want = np.round(np.clip(np.stack([3 * e, 3 * e - 1, 3 * e - 2], -1), 0, 1) * 255)
    want[~known] = GREY
    np.testing.assert_array_equal(_panel(img, 2), want)

    # 4. M2's normals, Lambert-shaded: the plane z = 0.2 x has normal (-0.2, 0, 1)/|.|
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    normal = np.array([-0.2, 0.0, 1.0]) / np.linalg.norm([-0.2, 0.0, 1.0])
    shade = np.round(np.clip(0.15 + 0.85 * abs(normal @ light), 0, 1) * 255)
    panel = _panel(img, 3)
    assert np.abs(panel[mask].astype(float) - shade).max() <= 1  # rounding of the normals
    assert (panel[~mask] == GREY).all()
    flat = np.asarray(preview_image(_flat_fit(0.0, err)))
    assert abs(float(_panel(flat, 3)[mask][:, 0].mean()) - shade) > 3  # the tilt is seen
    # lit from both sides: the same plane from a face wound the other way (normals towards -z,
    # so displaced by -d) looks the same
    m1 = fit.m1
    turned = Mesh(m1.vertices, m1.faces[:, ::-1].copy(), uvs=m1.uvs)
    back = np.asarray(preview_image(replace(fit, m1=turned, displacement=-fit.displacement)))
    np.testing.assert_array_equal(_panel(back, 3), panel)


def test_small_or_missing_errors_keep_a_floor_and_a_grey_panel() -> None:
    """Errors all below 0.1 mm are drawn against 0.1 mm (not stretched to full heat), and a
    fit with no error map draws that panel masked."""
    err = np.full((S2, S2), 0.05)
    img = np.asarray(preview_image(_flat_fit(0.2, err)))
    assert (_panel(img, 2) == heat(np.array(0.5))).all()
    img = np.asarray(preview_image(_flat_fit(0.2, None)))
    assert (_panel(img, 2) == GREY).all()


def test_a_preview_is_written_whole_into_new_folders(tmp_path: Path) -> None:
    path = write_preview(tmp_path / "a" / "b" / "s000.png", _flat_fit(0.2, None), "s000")
    assert path == tmp_path / "a" / "b" / "s000.png"
    assert [p.name for p in path.parent.iterdir()] == ["s000.png"]  # no temporary file left
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(
            np.asarray(im), np.asarray(preview_image(_flat_fit(0.2, None), "s000"))
        )

"""Preview images of fitted scans (``facehd build-priors --previews DIR``).

One PNG per scan, four UV-space panels of the displacement map's size, left to right:

1. the deformation map (x, y, z offsets as R, G, B; mid grey = 0; ± the largest |offset|);
2. the displacement map (blue = inwards, red = outwards; ± its 99th percentile of |d|);
3. the error heat-map: mean distance from the scan to M2 per texel (black → yellow, 0 to the
   95th percentile, at least 0.1 mm);
4. M2's detail normals, Lambert-shaded (what the maps add to the coarse face).

Masked texels are dark grey. A caption gives the residuals (median, mm) of M0, M1 and M2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facehd.mesh import vertex_normals
from facehd.uv import detail_normals, normal_map, rasterize_uv
from pipelines.fitting import ScanFit

__all__ = ["preview_image", "write_preview", "diverging", "heat"]

_MASKED = np.array([40, 40, 40], dtype=np.uint8)


def diverging(x: np.ndarray) -> np.ndarray:
    """Blue–white–red colours for values in [-1, 1]. ``x`` (...) → (..., 3) uint8."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    r = np.where(x < 0, 1.0 + x, 1.0)
    g = 1.0 - np.abs(x)
    b = np.where(x > 0, 1.0 - x, 1.0)
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def heat(x: np.ndarray) -> np.ndarray:
    """Black–red–yellow–white colours for values in [0, 1]. ``x`` (...) → (..., 3) uint8."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    r = np.clip(3 * x, 0, 1)
    g = np.clip(3 * x - 1, 0, 1)
    b = np.clip(3 * x - 2, 0, 1)
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def _upsample(img: np.ndarray, size: int) -> np.ndarray:
    k = max(1, size // img.shape[0])
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def preview_image(fit: ScanFit, title: str = "") -> Image.Image:
    """The preview of one fitted scan (see the module docstring)."""
    s2 = fit.displacement.shape[0]
    panels = []

    d = fit.deformation
    dm = fit.deformation_mask
    amp = float(np.abs(d[dm]).max()) if dm.any() else 1.0
    rgb = ((0.5 + 0.5 * d / max(amp, 1e-9)).clip(0, 1) * 255).round().astype(np.uint8)
    rgb[~dm] = _MASKED
    panels.append((_upsample(rgb, s2), f"deformation ±{amp:.2f} mm"))

    disp, mask = fit.displacement, fit.displacement_mask
    a = float(np.percentile(np.abs(disp[mask]), 99)) if mask.any() else 1.0
    img = diverging(disp / max(a, 1e-9))
    img[~mask] = _MASKED
    panels.append((img, f"displacement ±{a:.2f} mm"))

    err = fit.error_map if fit.error_map is not None else np.full((s2, s2), np.nan)
    known = np.isfinite(err)
    top = max(0.1, float(np.percentile(err[known], 95))) if known.any() else 1.0
    img = heat(np.where(known, err, 0) / top)
    img[~known] = _MASKED
    panels.append((img, f"|scan - M2| 0-{top:.2f} mm"))

    m1 = fit.m1
    table = rasterize_uv(m1.uvs, m1.faces, s2)
    pos = table.interpolate(m1.vertices)
    # the normals M2 was displaced along: M1's, weighted as the model weighs them
    nrm = normal_map(table, vertex_normals(m1.vertices, m1.faces, fit.normal_weighting))
    det = detail_normals(pos, nrm, fit.displacement, table.mask)
    light = np.array([0.3, 0.4, 1.0])
    light /= np.linalg.norm(light)
    view = np.abs(det @ light)
    shade = (np.clip(0.15 + 0.85 * view, 0, 1) * 255).round().astype(np.uint8)
    img = np.repeat(shade[..., None], 3, axis=-1)
    img[~table.mask] = _MASKED
    panels.append((img, "M2 detail normals"))

    pad, cap = 6, 16
    width = len(panels) * (s2 + pad) + pad
    height = s2 + 2 * cap + 2 * pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (arr, label) in enumerate(panels):
        x = pad + k * (s2 + pad)
        canvas.paste(Image.fromarray(arr), (x, pad + cap))
        draw.text((x, pad), label, fill=(0, 0, 0), font=font)
    r = fit.residuals
    caption = (
        f"{title}   median scan-to-surface (face): M0 {r.median[0]:.3f}  M1 {r.median[1]:.3f}  "
        f"M2 {r.median[2]:.3f} mm   ({r.n_points} scan points)"
    )
    draw.text((pad, pad + cap + s2 + 2), caption, fill=(0, 0, 0), font=font)
    return canvas


def write_preview(path: str | Path, fit: ScanFit, title: str = "") -> Path:
    """Write the preview PNG of ``fit`` to ``path`` (atomically)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    preview_image(fit, title).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path

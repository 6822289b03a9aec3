"""Differentiable rendering: cameras, SH shading, rasteriser backends and UV unwrapping.

- :mod:`facehd.render.camera`: :class:`PinholeCamera` and :func:`hrn_camera` (the base model's).
- :mod:`facehd.render.shading`: SH lighting exactly as the base model (:func:`sh_basis`,
  :func:`gamma_to_sh`, :func:`shade_sh`).
- :mod:`facehd.render.raster`: :class:`Fragments`, the backend interface and the CPU backend;
  :mod:`facehd.render.nvdiffrast_backend`: the GPU backend (``gpu`` extra).
- :mod:`facehd.render.renderer`: :class:`Renderer` and :class:`RenderResult`.
- :mod:`facehd.render.unwrap`: photo → UV texture with visibility and mirror fill, position maps,
  detail-normal shading.
"""

from facehd.render.camera import PinholeCamera, hrn_camera
from facehd.render.nvdiffrast_backend import NvdiffrastBackend, nvdiffrast_available
from facehd.render.raster import CpuBackend, Fragments, RasterBackend, get_backend
from facehd.render.renderer import Renderer, RenderResult
from facehd.render.shading import SH_AMBIENT_INIT, gamma_to_sh, sh_basis, sh_irradiance, shade_sh
from facehd.render.unwrap import (
    UnwrapResult,
    detail_normal_texels,
    mirror_fill,
    render_with_displacement,
    unwrap_texture,
)

__all__ = [
    "SH_AMBIENT_INIT",
    "CpuBackend",
    "Fragments",
    "NvdiffrastBackend",
    "PinholeCamera",
    "RasterBackend",
    "RenderResult",
    "Renderer",
    "UnwrapResult",
    "gamma_to_sh",
    "get_backend",
    "hrn_camera",
    "mirror_fill",
    "nvdiffrast_available",
    "render_with_displacement",
    "detail_normal_texels",
    "sh_basis",
    "sh_irradiance",
    "shade_sh",
    "unwrap_texture",
]

"""The differentiable renderer: rasterise, interpolate, texture and SH-shade a batch of meshes.

Images are channels-last, ``(B, H, W, 3)``, rows top to bottom as a photo (use
``image.permute(0, 3, 1, 2)`` for a network). Geometry (positions, normals) is reported in the
world frame of the vertices handed in, which is also the lighting frame of the SH coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from facehd.render.camera import PinholeCamera
from facehd.render.raster import Fragments, RasterBackend, check_mesh_batch, get_backend
from facehd.render.shading import shade_sh


@dataclass
class RenderResult:
    """One batched render.

    Attributes
    ----------
    image : (B, H, W, 3) float
        Shaded colour, ``background`` where ``mask`` is False.
    mask : (B, H, W) bool
        Pixels whose centre sees the mesh.
    depth : (B, H, W) float
        Camera-frame depth ``z_cam`` (0 outside ``mask``).
    normals : (B, H, W, 3) float
        Unit shading normals in the world frame (interpolated vertex normals, or the sampled
        ``normal_map``), 0 outside ``mask``.
    positions : (B, H, W, 3) float
        World-frame surface points, 0 outside ``mask``.
    albedo : (B, H, W, 3) float
        Unlit colour per pixel (texture or interpolated vertex colour), 0 outside ``mask``.
    uvs : (B, H, W, 2) float or None
        Interpolated texture coordinates when the mesh has UVs.
    fragments : Fragments
        The rasteriser output (triangle ids, barycentrics) for further interpolation.
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    positions: torch.Tensor
    albedo: torch.Tensor
    uvs: torch.Tensor | None
    fragments: Fragments


def _batched_attr(
    x: torch.Tensor | None, b: int, nv: int, c: int, name: str
) -> torch.Tensor | None:
    if x is None:
        return None
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[1:] != (nv, c) or x.shape[0] not in (1, b):
        raise ValueError(
            f"render: expected {name} ({b}, {nv}, {c}) or ({nv}, {c}), got {tuple(x.shape)}"
        )
    return x


class Renderer:
    """Differentiable renderer for one camera (batched or shared) and one backend.

    Parameters
    ----------
    camera : PinholeCamera
        See :func:`facehd.render.camera.hrn_camera` for the base model's camera.
    backend : str or RasterBackend
        ``"cpu"`` (default), ``"nvdiffrast"`` or ``"auto"``; see :func:`facehd.render.get_backend`.
    **backend_options
        Passed to the backend (CPU: ``visibility``, ``threads``, ``near``).
    """

    def __init__(
        self, camera: PinholeCamera, backend: str | RasterBackend = "cpu", **backend_options
    ) -> None:
        if not isinstance(camera, PinholeCamera):
            raise TypeError(
                f"Renderer: camera must be a PinholeCamera, got {type(camera).__name__}"
            )
        self.camera = camera
        self.backend = get_backend(backend, **backend_options)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.camera.image_size

    def rasterize(self, vertices: torch.Tensor, faces: torch.Tensor) -> Fragments:
        """``vertices (B, V, 3)|(V, 3)`` world frame, ``faces (F, 3)`` → :class:`Fragments`."""
        return self.backend.rasterize(vertices, faces, self.camera)

    def interpolate(self, fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
        """Per-vertex ``attributes (B, V, C)|(V, C)`` → per-pixel ``(B, H, W, C)``."""
        return self.backend.interpolate(fragments, attributes)

    def sample_texture(
        self, fragments: Fragments, uv: torch.Tensor, texture: torch.Tensor
    ) -> torch.Tensor:
        """``texture (B, C, Ht, Wt)`` at per-pixel ``uv (B, H, W, 2)`` → ``(B, H, W, C)``."""
        return self.backend.sample_texture(fragments, uv, texture)

    def render(
        self,
        vertices: torch.Tensor,
        faces: torch.Tensor,
        *,
        colors: torch.Tensor | None = None,
        uvs: torch.Tensor | None = None,
        texture: torch.Tensor | None = None,
        normals: torch.Tensor | None = None,
        normal_map: torch.Tensor | None = None,
        normal_map_mask: torch.Tensor | None = None,
        sh: torch.Tensor | None = None,
        shading: Literal["pixel", "vertex"] = "pixel",
        background: torch.Tensor | float = 0.0,
        fragments: Fragments | None = None,
    ) -> RenderResult:
        """Render a batch of meshes sharing one topology.

        Parameters
        ----------
        vertices : (B, V, 3) or (V, 3) float
            World-frame positions (any unit the camera was built for).
        faces : (F, 3) int
        colors : (B, V, 3) or (V, 3) float, optional
            Per-vertex albedo (used when no ``texture`` is given; default white).
        uvs : (B, V, 2) or (V, 2) float, optional
            Per-vertex texture coordinates (``u`` right, ``v`` up); needed by ``texture`` and
            ``normal_map``.
        texture : (B, 3, Ht, Wt) or (3, Ht, Wt) float, optional
            Albedo texture (:mod:`facehd.uv` convention).
        normals : (B, V, 3) or (V, 3) float, optional
            Unit vertex normals; default area-weighted normals of ``vertices``.
        normal_map : (B, 3, Hn, Wn) float, optional
            World-frame per-texel normals (e.g. detail normals from a displacement map); when given
            they replace the interpolated normals (after renormalisation).
        normal_map_mask : (Hn, Wn) or (B, Hn, Wn) bool, optional
            Texels of ``normal_map`` that hold a normal. The bilinear weight that falls on texels
            outside it is given to the interpolated vertex normal, so pixels near the border of
            the UV layout keep a sensible normal.
        sh : (B, 9, 3) or (9, 3) float, optional
            SH lighting (see :func:`facehd.render.shading.gamma_to_sh`); without it the image is
            the unlit albedo.
        shading : {"pixel", "vertex"}
            ``"pixel"`` shades each pixel with its interpolated normal; ``"vertex"`` shades the
            vertices and interpolates the colours (the base model's choice; needs vertex colours,
            no texture or normal map).
        background : float or tensor broadcastable to (B, H, W, 3)
        fragments : Fragments, optional
            Reuse an earlier rasterisation of the same vertices.
        """
        vertices, faces = check_mesh_batch(vertices, faces, "render")
        b, nv, _ = vertices.shape
        if shading not in ("pixel", "vertex"):
            raise ValueError(f"render: shading must be 'pixel' or 'vertex', got {shading!r}")
        if (texture is not None or normal_map is not None) and uvs is None:
            raise ValueError("render: texture and normal_map need per-vertex uvs")
        if shading == "vertex" and (texture is not None or normal_map is not None):
            raise ValueError(
                "render: shading='vertex' works on vertex colours; use 'pixel' for maps"
            )
        colors = _batched_attr(colors, b, nv, 3, "colors")
        uvs = _batched_attr(uvs, b, nv, 2, "uvs")
        if normals is None:
            from facehd.mesh import vertex_normals

            normals = vertex_normals(vertices, faces)
        normals = _batched_attr(normals, b, nv, 3, "normals")
        if fragments is None:
            fragments = self.rasterize(vertices, faces)
        mask = fragments.mask
        dtype = vertices.dtype

        # One interpolation pass over every per-vertex attribute.
        parts = [vertices, normals.to(dtype)]
        if uvs is not None:
            parts.append(uvs.to(dtype))
        vertex_albedo = colors.to(dtype) if colors is not None else None
        if shading == "vertex" and sh is not None:
            base = vertex_albedo if vertex_albedo is not None else torch.ones_like(vertices)
            n_unit = torch.nn.functional.normalize(normals.to(dtype), dim=-1)
            lit = shade_sh(n_unit.expand(b, -1, -1), base.expand(b, -1, -1), sh)
            parts.append(lit)
        if vertex_albedo is not None:
            parts.append(vertex_albedo)
        parts = [p.to(fragments.barycentrics.device).expand(b, -1, -1) for p in parts]
        sizes = [p.shape[-1] for p in parts]
        chunks = list(torch.split(self.interpolate(fragments, torch.cat(parts, dim=-1)), sizes, -1))
        positions = chunks.pop(0)
        pix_normals = chunks.pop(0)
        pix_uv = chunks.pop(0) if uvs is not None else None
        pix_lit = chunks.pop(0) if (shading == "vertex" and sh is not None) else None
        pix_albedo = chunks.pop(0) if vertex_albedo is not None else None

        if normal_map is not None:
            if normal_map_mask is None:
                pix_normals = self.sample_texture(fragments, pix_uv, normal_map)
            else:
                nm = normal_map if normal_map.dim() == 4 else normal_map[None]
                valid = torch.as_tensor(normal_map_mask, device=nm.device)
                valid = valid.reshape(-1, 1, *valid.shape[-2:]).to(nm.dtype)
                if valid.shape[-2:] != nm.shape[-2:]:
                    raise ValueError(
                        f"render: normal_map_mask {tuple(valid.shape[-2:])} does not match "
                        f"normal_map {tuple(nm.shape[-2:])}"
                    )
                nb = max(nm.shape[0], valid.shape[0])
                both = torch.cat(
                    [nm.expand(nb, -1, -1, -1) * valid, valid.expand(nb, -1, -1, -1)], dim=1
                )
                sampled = self.sample_texture(fragments, pix_uv, both)
                weight = sampled[..., 3:4]
                pix_normals = sampled[..., :3] + (1.0 - weight) * pix_normals
        fmask = mask[..., None].to(dtype)
        pix_normals = torch.nn.functional.normalize(pix_normals, dim=-1, eps=1e-12) * fmask
        if texture is not None:
            pix_albedo = self.sample_texture(fragments, pix_uv, texture)
        elif pix_albedo is None:
            pix_albedo = fmask.expand(-1, -1, -1, 3)
        if pix_lit is not None:
            color = pix_lit
        elif sh is not None:
            color = shade_sh(pix_normals, pix_albedo, sh.to(pix_normals.device))
        else:
            color = pix_albedo
        bg = torch.as_tensor(background, dtype=dtype, device=color.device)
        image = torch.where(mask[..., None], color, bg)
        return RenderResult(
            image=image,
            mask=mask,
            depth=fragments.depth,
            normals=pix_normals,
            positions=positions,
            albedo=pix_albedo,
            uvs=pix_uv,
            fragments=fragments,
        )

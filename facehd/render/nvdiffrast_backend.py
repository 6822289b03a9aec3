"""GPU rasteriser backend on nvdiffrast (optional: ``pip install 'facehd[gpu]'``).

nvdiffrast is imported only when this backend is created. Vertices are mapped to clip space so
that nvdiffrast's pixel ``(px, py)`` (centre at NDC ``((2 px + 1) / W - 1, (2 py + 1) / H - 1)``,
row ``py`` of the output tensor) is the pixel ``(row py, col px)`` of
:class:`facehd.render.camera.PinholeCamera`: with ``(x, y)`` the continuous pixel of a vertex and
``w = z_cam``, ``clip = ((2 x + 1) / W - 1) w, ((2 y + 1) / H - 1) w, z_clip, w)``, which is linear
in the camera-frame position, so nvdiffrast's perspective-correct barycentrics are the same as the
CPU backend's. Attributes go through ``dr.interpolate``, textures through ``dr.texture``
(``filter_mode='linear'``, ``boundary_mode='clamp'``, ``v`` flipped to nvdiffrast's
row-from-the-top convention), which equals :mod:`facehd.uv`'s sampler. nvdiffrast works in
float32 on CUDA tensors; inputs are moved to the backend's device and results stay there.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from facehd.render.camera import PinholeCamera
from facehd.render.raster import (
    Fragments,
    RasterBackend,
    _check_attributes,
    check_mesh_batch,
    check_texture,
)

_MISSING = (
    "the 'nvdiffrast' renderer backend needs nvdiffrast and a CUDA GPU; install the 'gpu' extra "
    "(pip install 'facehd[gpu]') or use backend='cpu'"
)


def nvdiffrast_available() -> bool:
    """Whether ``nvdiffrast`` can be imported (a CUDA device is still needed to use it)."""
    try:
        return importlib.util.find_spec("nvdiffrast") is not None
    except (ImportError, ValueError):
        return False


def _import_nvdiffrast():
    try:
        import nvdiffrast.torch as dr
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return dr


class NvdiffrastBackend(RasterBackend):
    """nvdiffrast rasterisation (CUDA or OpenGL context), interpolation and texturing.

    Parameters
    ----------
    context : {"cuda", "gl"}
        ``dr.RasterizeCudaContext`` (default, no display needed) or ``dr.RasterizeGLContext``.
    device : torch device or None
        CUDA device (default: the current one).
    """

    name = "nvdiffrast"

    def __init__(self, context: str = "cuda", device: torch.device | str | None = None) -> None:
        dr = _import_nvdiffrast()
        if not torch.cuda.is_available():
            raise RuntimeError(
                "the 'nvdiffrast' renderer backend needs a CUDA GPU; use backend='cpu'"
            )
        self._dr = dr
        self.device = torch.device(device) if device is not None else torch.device("cuda")
        if context == "cuda":
            self.ctx = dr.RasterizeCudaContext(device=self.device)
        elif context == "gl":
            self.ctx = dr.RasterizeGLContext(device=self.device)
        else:
            raise ValueError(f"NvdiffrastBackend: context must be 'cuda' or 'gl', got {context!r}")

    def clip_positions(self, verts_cam: torch.Tensor, camera: PinholeCamera) -> torch.Tensor:
        """Camera-frame ``verts_cam (B, V, 3)`` → nvdiffrast clip coordinates ``(B, V, 4)``."""
        h, w = camera.image_size
        K = camera.K.to(device=verts_cam.device, dtype=verts_cam.dtype)
        X, Y, Z = verts_cam.unbind(-1)
        xh = K[:, 0, 0, None] * X + K[:, 0, 1, None] * Y + K[:, 0, 2, None] * Z  # x * z_cam
        yh = K[:, 1, 1, None] * Y + K[:, 1, 2, None] * Z  # y * z_cam
        with torch.no_grad():
            zmax = Z.amax(dim=1, keepdim=True).clamp(min=1e-6)
            zmin = Z.amin(dim=1, keepdim=True)
            near = torch.where(zmin > 0, zmin * 0.5, zmax * 1e-4)
            far = zmax * 2.0
        zc = ((far + near) * Z - 2.0 * far * near) / (far - near)
        xc = (2.0 * xh + Z) / w - Z
        yc = (2.0 * yh + Z) / h - Z
        return torch.stack([xc, yc, zc, Z], dim=-1).float().contiguous()

    def rasterize(
        self, vertices: torch.Tensor, faces: torch.Tensor, camera: PinholeCamera
    ) -> Fragments:
        vertices, faces = check_mesh_batch(vertices, faces, "rasterize")
        vertices = vertices.to(self.device)
        faces = faces.to(self.device)
        b, nv, _ = vertices.shape
        if camera.batch_size not in (1, b):
            raise ValueError(
                f"rasterize: camera batch {camera.batch_size} does not match mesh batch {b}"
            )
        camera = camera.to(device=self.device)
        h, w = camera.image_size
        verts_cam = camera.world_to_camera(vertices)
        if verts_cam.shape[0] != b:
            verts_cam = verts_cam.expand(b, -1, -1)
        pos = self.clip_positions(verts_cam, camera)
        tri = faces.to(torch.int32).contiguous()
        rast, _ = self._dr.rasterize(self.ctx, pos, tri, resolution=[h, w], grad_db=False)
        face_ids = rast[..., 3].round().long() - 1
        mask = face_ids >= 0
        u, v = rast[..., 0], rast[..., 1]
        bary = torch.stack([u, v, 1.0 - u - v], dim=-1) * mask[..., None]
        depth, _ = self._dr.interpolate(verts_cam[..., 2:3].float().contiguous(), rast, tri)
        depth = depth[..., 0] * mask
        dtype = vertices.dtype
        bary, depth = bary.to(dtype), depth.to(dtype)
        pixels = torch.nonzero(mask.reshape(-1)).flatten()
        return Fragments(
            face_ids=face_ids,
            barycentrics=bary,
            depth=depth,
            mask=mask,
            pixels=pixels,
            packed_faces=face_ids.reshape(-1).index_select(0, pixels),
            packed_barycentrics=bary.reshape(-1, 3).index_select(0, pixels),
            packed_batch=torch.div(pixels, h * w, rounding_mode="floor"),
            faces=faces,
            n_vertices=nv,
            native=(rast, tri),
        )

    def interpolate(self, fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
        attributes = _check_attributes(fragments, attributes, "interpolate")
        rast, tri = _native(fragments)
        out, _ = self._dr.interpolate(attributes.to(self.device).float().contiguous(), rast, tri)
        return out.to(attributes.dtype)

    def sample_texture(
        self, fragments: Fragments, uv: torch.Tensor, texture: torch.Tensor
    ) -> torch.Tensor:
        texture = check_texture(uv, texture)
        b = uv.shape[0]
        tex = texture.to(self.device).float().permute(0, 2, 3, 1).expand(b, -1, -1, -1).contiguous()
        uv_dr = (
            torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1).to(self.device).float().contiguous()
        )
        out = self._dr.texture(tex, uv_dr, filter_mode="linear", boundary_mode="clamp")
        out = out * fragments.mask[..., None].to(out.dtype)
        return out.to(uv.dtype)


def _native(fragments: Fragments) -> Any:
    if fragments.native is None:
        raise ValueError("these fragments were not made by the nvdiffrast backend")
    return fragments.native

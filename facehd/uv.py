"""UV machinery: rasterisation tables, map <-> vertex sampling, position maps, detail normals.

UV convention (the only one in facehd)
--------------------------------------
``u`` points right and ``v`` points up, both in ``[0, 1]``. An ``H x W`` map is stored row-major
with row 0 at the top (``v = 1``). Texel ``(row i, col j)`` covers
``u in [j/W, (j+1)/W]``, ``v in [1-(i+1)/H, 1-i/H]``; its centre is::

    u = (j + 0.5) / W,        v = 1 - (i + 0.5) / H

Continuous pixel coordinates (``x`` = column, ``y`` = row, texel centres at integers) are::

    x = u * W - 0.5,          y = (1 - v) * H - 0.5

:func:`uv_to_pixel` and :func:`pixel_to_uv` are the only conversions. Sampling a map at a UV is
bilinear between the four nearest texel centres, with the pixel coordinate clamped to
``[0, W-1] x [0, H-1]`` (edge clamping). This equals
``torch.nn.functional.grid_sample(map, grid, mode="bilinear", padding_mode="border",
align_corners=False)`` with ``grid = (2u - 1, 1 - 2v)``.

The same convention is used both ways: rasterising a mesh into a map evaluates it at texel
centres (:func:`rasterize_uv`), and reading a map back at vertices uses the bilinear sampler
(:func:`sample_uv_map`, :func:`uv_sampling_matrix`). Ground-truth maps are fitted by inverting the
sampler (least squares through :func:`uv_sampling_matrix`), never by splatting.

Shapes
------
Maps handled in numpy are channels-last: ``(H, W)`` or ``(H, W, C)``. Maps handed to the torch
sampler are channels-first ``(B, C, H, W)`` (as networks produce them). Detail-normal inputs are
channels-last in both numpy and torch: position / normal maps ``(B, H, W, 3)`` or ``(H, W, 3)``,
displacement ``(B, H, W)`` or ``(H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from facehd.mesh import Mesh

__all__ = [
    "UVRasterTable",
    "detail_normals",
    "displaced_dense_mesh",
    "normal_map",
    "pixel_to_uv",
    "position_map",
    "rasterize_uv",
    "sample_uv_map",
    "texel_centers_uv",
    "uv_sampling_matrix",
    "uv_to_pixel",
]

#: Barycentric tolerance of the inside test of :func:`rasterize_uv` (texel centres lying on a
#: shared edge belong to a triangle; a tiny negative coordinate may remain).
INSIDE_TOLERANCE = 1e-10

# Largest number of (texel, triangle) candidates examined at once by the rasteriser.
_RASTER_CHUNK = 1 << 22

Array = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------
def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """Return ``(H, W)`` from an int (square) or a pair of positive ints."""
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"size must be an int or a pair (H, W) of ints, got {size!r}") from exc
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got (H, W) = ({h}, {w})")
    return h, w


def _check_last_dim(name: str, a: Array, n: int, layout: str) -> None:
    if a.ndim < 1 or a.shape[-1] != n:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(a.shape)}")


def uv_to_pixel(uv: Array, size: int | tuple[int, int]) -> Array:
    """Continuous pixel coordinates ``(x = column, y = row)`` of UVs in an ``H x W`` map.

    Parameters
    ----------
    uv : (..., 2) float, numpy or torch
        ``(u, v)`` with ``u`` right, ``v`` up.
    size : (H, W) or int

    Returns
    -------
    (..., 2) float, same type as ``uv``: ``x = u*W - 0.5``, ``y = (1-v)*H - 0.5`` (texel centres
    at integer coordinates).
    """
    h, w = _check_size(size)
    if not isinstance(uv, torch.Tensor):
        uv = np.asarray(uv, dtype=np.float64)
    _check_last_dim("uv", uv, 2, "(..., 2)")
    x = uv[..., 0] * w - 0.5
    y = (1.0 - uv[..., 1]) * h - 0.5
    if isinstance(uv, torch.Tensor):
        return torch.stack([x, y], dim=-1)
    return np.stack([x, y], axis=-1)


def pixel_to_uv(xy: Array, size: int | tuple[int, int]) -> Array:
    """Inverse of :func:`uv_to_pixel`.

    Parameters
    ----------
    xy : (..., 2) float, numpy or torch
        ``(x = column, y = row)`` continuous pixel coordinates.
    size : (H, W) or int

    Returns
    -------
    (..., 2) float ``(u, v)``: ``u = (x + 0.5)/W``, ``v = 1 - (y + 0.5)/H``.
    """
    h, w = _check_size(size)
    if not isinstance(xy, torch.Tensor):
        xy = np.asarray(xy, dtype=np.float64)
    _check_last_dim("xy", xy, 2, "(..., 2)")
    u = (xy[..., 0] + 0.5) / w
    v = 1.0 - (xy[..., 1] + 0.5) / h
    if isinstance(xy, torch.Tensor):
        return torch.stack([u, v], dim=-1)
    return np.stack([u, v], axis=-1)


def texel_centers_uv(size: int | tuple[int, int]) -> np.ndarray:
    """UVs of all texel centres of an ``H x W`` map.

    Returns
    -------
    (H, W, 2) float64: entry ``[i, j] = ((j + 0.5)/W, 1 - (i + 0.5)/H)``.
    """
    h, w = _check_size(size)
    rows, cols = np.meshgrid(
        np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
    )
    return pixel_to_uv(np.stack([cols, rows], axis=-1), (h, w))


# --------------------------------------------------------------------------------------------
# Bilinear sampling (numpy, torch, sparse matrix)
# --------------------------------------------------------------------------------------------
def _bilinear_taps(uv: Array, h: int, w: int) -> tuple[Array, Array]:
    """Flat texel indices and bilinear weights of the four taps of each UV.

    Returns ``(index (..., 4) int64, weight (..., 4) float)`` into the row-major flattened map,
    taps ordered (top-left, top-right, bottom-left, bottom-right); edge clamping.
    """
    xy = uv_to_pixel(uv, (h, w))
    if isinstance(xy, torch.Tensor):
        x = xy[..., 0].clamp(0.0, w - 1.0)
        y = xy[..., 1].clamp(0.0, h - 1.0)
        x0 = torch.floor(x).detach()
        y0 = torch.floor(y).detach()
        x0i, y0i = x0.long(), y0.long()
        x1i = torch.clamp(x0i + 1, max=w - 1)
        y1i = torch.clamp(y0i + 1, max=h - 1)
        stack = torch.stack
    else:
        x = np.clip(xy[..., 0], 0.0, w - 1.0)
        y = np.clip(xy[..., 1], 0.0, h - 1.0)
        x0 = np.floor(x)
        y0 = np.floor(y)
        x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
        x1i = np.minimum(x0i + 1, w - 1)
        y1i = np.minimum(y0i + 1, h - 1)

        def stack(seq: list, dim: int) -> np.ndarray:
            return np.stack(seq, axis=dim)

    wx = x - x0
    wy = y - y0
    index = stack([y0i * w + x0i, y0i * w + x1i, y1i * w + x0i, y1i * w + x1i], dim=-1)
    weight = stack(
        [(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx],
        dim=-1,
    )
    return index, weight


def _check_uvs_numpy(uvs: Any, name: str = "uvs") -> np.ndarray:
    uvs = np.asarray(uvs, dtype=np.float64)
    if uvs.ndim != 2 or uvs.shape[1] != 2:
        raise ValueError(f"{name} must have shape (V, 2), got {uvs.shape}")
    if not np.all(np.isfinite(uvs)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return uvs


def uv_sampling_matrix(uvs: np.ndarray, size: int | tuple[int, int]) -> sp.csr_matrix:
    """Sparse matrix of the bilinear sampler: ``values = A @ map.reshape(H*W, C)``.

    Row ``k`` holds the (at most four) bilinear weights of vertex ``k``'s UV over the row-major
    flattened ``H x W`` map; each row sums to 1. ``A @ m`` equals :func:`sample_uv_map`, and
    ``A.T`` is its adjoint (splatting with the same weights), so least-squares fitting of a map
    to vertex values goes through ``A`` (normal equations ``A.T A m = A.T y``).

    Parameters
    ----------
    uvs : (V, 2) float
    size : (H, W) or int

    Returns
    -------
    scipy.sparse.csr_matrix of shape (V, H*W), float64.
    """
    h, w = _check_size(size)
    uvs = _check_uvs_numpy(uvs)
    index, weight = _bilinear_taps(uvs, h, w)
    n = uvs.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), 4)
    mat = sp.coo_matrix((weight.ravel(), (rows, index.ravel())), shape=(n, h * w)).tocsr()
    mat.sum_duplicates()
    mat.eliminate_zeros()
    return mat


def sample_uv_map(uv_map: Array, uvs: Array) -> Array:
    """Sample a UV map bilinearly (edge clamping) at UVs.

    Parameters
    ----------
    uv_map : numpy (H, W) or (H, W, C); or torch (B, C, H, W)
    uvs : (V, 2) float for numpy; (V, 2) or (B, V, 2) for torch (numpy UVs are converted)

    Returns
    -------
    numpy: (V,) for an (H, W) map, (V, C) for an (H, W, C) map.
    torch: (B, V, C), differentiable w.r.t. the map and the UVs; equal to ``grid_sample``
    with ``align_corners=False, padding_mode="border"`` and grid ``(2u-1, 1-2v)``.
    """
    if isinstance(uv_map, torch.Tensor):
        return _sample_uv_map_torch(uv_map, uvs)
    m = np.asarray(uv_map)
    if m.ndim not in (2, 3):
        raise ValueError(f"uv_map must have shape (H, W) or (H, W, C), got {m.shape}")
    uvs = _check_uvs_numpy(uvs)
    h, w = m.shape[:2]
    flat = m.reshape(h * w, -1)
    index, weight = _bilinear_taps(uvs, h, w)
    out = np.einsum("vkc,vk->vc", flat[index], weight)
    return out[:, 0] if m.ndim == 2 else out


def _sample_uv_map_torch(uv_map: torch.Tensor, uvs: Array) -> torch.Tensor:
    if uv_map.ndim != 4:
        raise ValueError(f"torch uv_map must have shape (B, C, H, W), got {tuple(uv_map.shape)}")
    b, c, h, w = uv_map.shape
    if not isinstance(uvs, torch.Tensor):
        uvs = torch.as_tensor(np.asarray(uvs), dtype=uv_map.dtype, device=uv_map.device)
    if uvs.ndim == 2:
        uvs = uvs.unsqueeze(0).expand(b, -1, -1)
    if uvs.ndim != 3 or uvs.shape[0] != b or uvs.shape[2] != 2:
        raise ValueError(f"uvs must have shape (V, 2) or (B={b}, V, 2), got {tuple(uvs.shape)}")
    v = uvs.shape[1]
    index, weight = _bilinear_taps(uvs, h, w)  # (B, V, 4)
    flat = uv_map.reshape(b, c, h * w)
    taps = torch.gather(flat, 2, index.reshape(b, 1, v * 4).expand(b, c, v * 4))
    out = (taps.reshape(b, c, v, 4) * weight.unsqueeze(1).to(taps.dtype)).sum(-1)
    return out.permute(0, 2, 1)


# --------------------------------------------------------------------------------------------
# UV rasterisation
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class UVRasterTable:
    """Which triangle covers each texel centre of an ``H x W`` map, with barycentrics.

    Built once per topology (faces + UVs) and map size by :func:`rasterize_uv`; any per-vertex
    attribute is then turned into a map with :meth:`interpolate`.
    Compared by identity (it holds arrays).
    """

    size: tuple[int, int]
    """``(H, W)`` of the map."""
    face_ids: np.ndarray
    """(H, W) int64: triangle covering the texel centre, -1 where none does."""
    barycentrics: np.ndarray
    """(H, W, 3) float64: barycentric coordinates of the texel centre in that triangle's UV
    triangle (0 where empty)."""
    mask: np.ndarray
    """(H, W) bool: ``face_ids >= 0``."""
    faces: np.ndarray
    """(F, 3) int64: the topology's triangles (vertex indices)."""
    n_vertices: int
    """Number of vertices ``V`` of the topology."""
    _torch_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        h, w = self.size = _check_size(self.size)
        if self.face_ids.shape != (h, w) or self.mask.shape != (h, w):
            raise ValueError(f"face_ids and mask must have shape (H, W) = ({h}, {w})")
        if self.barycentrics.shape != (h, w, 3):
            raise ValueError(f"barycentrics must have shape ({h}, {w}, 3)")
        flat = np.flatnonzero(self.mask.ravel())
        self._flat_index = flat
        self._vertex_ids = np.asarray(self.faces, dtype=np.int64)[self.face_ids.ravel()[flat]]
        self._weights = self.barycentrics.reshape(-1, 3)[flat]

    @property
    def n_texels(self) -> int:
        """Number of covered texels."""
        return int(self._flat_index.size)

    def texel_uvs(self) -> np.ndarray:
        """(H, W, 2) UVs of the texel centres (the points this table was rasterised at)."""
        return texel_centers_uv(self.size)

    def interpolate(self, attr: Array) -> Array:
        """Interpolate a per-vertex attribute to every covered texel (0 elsewhere).

        Parameters
        ----------
        attr : numpy or torch, (V,), (V, C) or (B, V, C)

        Returns
        -------
        Same type: (H, W), (H, W, C) or (B, H, W, C). Linear in ``attr``; the torch path is
        differentiable.
        """
        h, w = self.size
        v = self.n_vertices
        if attr.ndim == 1:
            return self.interpolate(attr[:, None])[..., 0]
        if attr.ndim not in (2, 3) or attr.shape[-2] != v:
            raise ValueError(
                f"attr must have shape (V,), (V, C) or (B, V, C) with V = {v}, "
                f"got {tuple(attr.shape)}"
            )
        lead = attr.shape[:-2]
        c = attr.shape[-1]
        if isinstance(attr, torch.Tensor):
            idx, vids, wts = self._torch_arrays(attr.device, attr.dtype)
            vals = (attr[..., vids, :] * wts[..., None]).sum(-2)  # (..., N, C)
            out = attr.new_zeros(*lead, h * w, c).index_copy(len(lead), idx, vals)
            return out.reshape(*lead, h, w, c)
        attr = np.asarray(attr)
        dtype = np.result_type(attr.dtype, np.float64)
        vals = np.einsum("...nkc,nk->...nc", attr[..., self._vertex_ids, :], self._weights)
        out = np.zeros((*lead, h * w, c), dtype=dtype)
        out[..., self._flat_index, :] = vals
        return out.reshape(*lead, h, w, c)

    def _torch_arrays(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._torch_cache:
            self._torch_cache[key] = (
                torch.as_tensor(self._flat_index, device=device),
                torch.as_tensor(self._vertex_ids, device=device),
                torch.as_tensor(self._weights, device=device, dtype=dtype),
            )
        return self._torch_cache[key]


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int | tuple[int, int]) -> UVRasterTable:
    """Rasterise a topology's UV layout at the texel centres of an ``H x W`` map.

    A texel centre belongs to a triangle when all its barycentric coordinates are
    ``>= -INSIDE_TOLERANCE``; where several triangles contain it (shared edges, overlapping UV
    islands) the lowest face index wins. Triangles of zero UV area are skipped. Vectorised over
    the texels of each triangle's bounding box (no per-texel Python loop).

    Parameters
    ----------
    uvs : (V, 2) float, u right, v up
    faces : (F, 3) int, 0-based vertex indices
    size : (H, W) or int

    Returns
    -------
    UVRasterTable
    """
    h, w = _check_size(size)
    uvs = _check_uvs_numpy(uvs)
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must have shape (F, 3) and an integer dtype, got {faces.shape}")
    faces = faces.astype(np.int64)
    n_v = uvs.shape[0]
    if faces.size and (faces.min() < 0 or faces.max() >= n_v):
        raise ValueError(f"faces index vertices outside [0, {n_v}) (V = {n_v} UVs)")

    face_ids = np.full(h * w, -1, dtype=np.int64)
    bary = np.zeros((h * w, 3), dtype=np.float64)

    px = uv_to_pixel(uvs, (h, w))[faces]  # (F, 3, 2)
    x0, y0 = px[:, 0, 0], px[:, 0, 1]
    x1, y1 = px[:, 1, 0], px[:, 1, 1]
    x2, y2 = px[:, 2, 0], px[:, 2, 1]
    det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)

    # Integer bounding box of texel centres (integer pixel coordinates) inside the map.
    cmin = np.clip(np.ceil(px[..., 0].min(1) - 1e-9), 0, w)
    cmax = np.clip(np.floor(px[..., 0].max(1) + 1e-9), -1, w - 1)
    rmin = np.clip(np.ceil(px[..., 1].min(1) - 1e-9), 0, h)
    rmax = np.clip(np.floor(px[..., 1].max(1) + 1e-9), -1, h - 1)
    nx = np.maximum(cmax - cmin + 1, 0).astype(np.int64)
    ny = np.maximum(rmax - rmin + 1, 0).astype(np.int64)
    counts = nx * ny
    counts[np.abs(det) < 1e-12] = 0
    cmin, rmin = cmin.astype(np.int64), rmin.astype(np.int64)

    nz = np.flatnonzero(counts)
    ends = np.cumsum(counts[nz])
    start = 0
    while start < nz.size:
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + _RASTER_CHUNK, side="right")), start + 1)
        fid = nz[start:stop]
        cnt = counts[fid]
        rep = np.repeat(fid, cnt)
        offsets = np.cumsum(cnt) - cnt
        local = np.arange(rep.size, dtype=np.int64) - np.repeat(offsets, cnt)
        col = cmin[rep] + local % nx[rep]
        row = rmin[rep] + local // nx[rep]
        dx = col - x2[rep]
        dy = row - y2[rep]
        b0 = ((y1[rep] - y2[rep]) * dx + (x2[rep] - x1[rep]) * dy) / det[rep]
        b1 = ((y2[rep] - y0[rep]) * dx + (x0[rep] - x2[rep]) * dy) / det[rep]
        b2 = 1.0 - b0 - b1
        inside = (b0 >= -INSIDE_TOLERANCE) & (b1 >= -INSIDE_TOLERANCE) & (b2 >= -INSIDE_TOLERANCE)
        texel = (row * w + col)[inside]
        # Candidates are ordered by face index: the first hit of each texel is its lowest face.
        texel, first = np.unique(texel, return_index=True)
        fresh = face_ids[texel] < 0
        texel, first = texel[fresh], first[fresh]
        sel = np.flatnonzero(inside)[first]
        face_ids[texel] = rep[sel]
        bary[texel] = np.stack([b0[sel], b1[sel], b2[sel]], axis=1)
        start = stop

    face_ids = face_ids.reshape(h, w)
    return UVRasterTable(
        size=(h, w),
        face_ids=face_ids,
        barycentrics=bary.reshape(h, w, 3),
        mask=face_ids >= 0,
        faces=faces,
        n_vertices=n_v,
    )


def position_map(table: UVRasterTable, vertices: Array) -> Array:
    """Position map: vertex positions interpolated at the texel centres (0 outside the mask).

    Parameters
    ----------
    table : UVRasterTable of the topology
    vertices : (V, 3) or (B, V, 3), numpy or torch (differentiable)

    Returns
    -------
    (H, W, 3) or (B, H, W, 3), same type as ``vertices``.
    """
    if vertices.ndim not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(
            f"vertices must have shape (V, 3) or (B, V, 3), got {tuple(vertices.shape)}"
        )
    return table.interpolate(vertices)


def normal_map(table: UVRasterTable, vertex_normals: Array) -> Array:
    """Unit normal map: vertex normals interpolated at the texel centres, renormalised.

    Parameters
    ----------
    table : UVRasterTable of the topology
    vertex_normals : (V, 3) or (B, V, 3), numpy or torch

    Returns
    -------
    (H, W, 3) or (B, H, W, 3), unit length inside the mask, 0 outside.
    """
    if vertex_normals.ndim not in (2, 3) or vertex_normals.shape[-1] != 3:
        raise ValueError(
            f"vertex_normals must have shape (V, 3) or (B, V, 3), got {tuple(vertex_normals.shape)}"
        )
    n = table.interpolate(vertex_normals)
    if isinstance(n, torch.Tensor):
        return _normalize_torch(n)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


# --------------------------------------------------------------------------------------------
# Detail normals (HRN rule)
# --------------------------------------------------------------------------------------------
def _normalize_torch(v: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last axis; zero vectors stay zero (finite gradients)."""
    tiny = torch.finfo(v.dtype).tiny
    return v / torch.sqrt((v * v).sum(-1, keepdim=True).clamp_min(tiny))


def _grid_vertex_normals(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals of the dense grid mesh over a map, unit length.

    Each grid cell whose four corner texels are valid contributes its vector area
    ``0.5 * (d - b) x (c - a)`` (a = (i, j), b = (i, j+1), c = (i+1, j+1), d = (i+1, j); the same
    for both triangulations of the cell) to its four corners. Oriented so that a map with
    ``P(u, v) = (u, v, 0)`` gets ``+z``. Texels with no valid cell get 0.

    points : (B, H, W, 3); valid : (B, H, W) bool. Returns (B, H, W, 3).
    """
    a = points[:, :-1, :-1]
    b = points[:, :-1, 1:]
    c = points[:, 1:, 1:]
    d = points[:, 1:, :-1]
    cell_ok = valid[:, :-1, :-1] & valid[:, :-1, 1:] & valid[:, 1:, 1:] & valid[:, 1:, :-1]
    cell = 0.5 * torch.linalg.cross(d - b, c - a, dim=-1) * cell_ok.unsqueeze(-1).to(points.dtype)
    # F.pad on (B, H-1, W-1, 3): (chan_l, chan_r, col_l, col_r, row_l, row_r).
    acc = (
        F.pad(cell, (0, 0, 0, 1, 0, 1))  # corner a at (i, j)
        + F.pad(cell, (0, 0, 1, 0, 0, 1))  # corner b at (i, j+1)
        + F.pad(cell, (0, 0, 1, 0, 1, 0))  # corner c at (i+1, j+1)
        + F.pad(cell, (0, 0, 0, 1, 1, 0))  # corner d at (i+1, j)
    )
    return _normalize_torch(acc)


def detail_normals(
    position_map: Array,
    normal_map: Array,
    displacement: Array,
    mask: Array | None = None,
) -> Array:
    """Per-texel detail normals from a displacement map (HRN rule).

    Builds the dense grid mesh over the UV image from ``position_map + displacement * n`` (``n`` =
    the unit coarse normals), takes its area-weighted vertex normals ``N(P + d n)``, and adds back
    the difference between the coarse normals and the normals of the undisplaced grid::

        detail = normalize(n + s * (N(P + d n) - N(P)))

    so a zero displacement returns the coarse normals. ``s = +-1`` orients the grid normals like
    the coarse normals (per map, from the sign of ``sum(N(P) . n)`` over the mask), whatever the
    winding of the UV layout. Grid cells are used only where their four corners are in ``mask``.
    Texels with no valid cell, and texels outside the mask, keep the (unit) coarse normal.

    Parameters
    ----------
    position_map : (H, W, 3) or (B, H, W, 3) float, numpy or torch (channels last)
    normal_map : same shape, coarse normals (need not be unit length)
    displacement : (H, W) or (B, H, W), along the coarse normals, same units as positions
    mask : (H, W) or (B, H, W) bool, or None for "texels whose coarse normal is non-zero"

    Returns
    -------
    Same type and shape as ``position_map``: unit detail normals. The torch path is
    differentiable w.r.t. all three inputs (usable in a renderer); numpy inputs are computed in
    float64.
    """
    is_torch = isinstance(position_map, torch.Tensor)
    if is_torch:
        p = position_map
        n = torch.as_tensor(normal_map, dtype=p.dtype, device=p.device)
        d = torch.as_tensor(displacement, dtype=p.dtype, device=p.device)
    else:
        p = torch.from_numpy(np.ascontiguousarray(position_map, dtype=np.float64))
        n = torch.from_numpy(np.ascontiguousarray(normal_map, dtype=np.float64))
        d = torch.from_numpy(np.ascontiguousarray(displacement, dtype=np.float64))
    single = p.ndim == 3
    if p.ndim not in (3, 4) or p.shape[-1] != 3:
        raise ValueError(
            f"position_map must have shape (H, W, 3) or (B, H, W, 3), got {tuple(p.shape)}"
        )
    if single:
        p, n, d = p.unsqueeze(0), n.unsqueeze(0), d.unsqueeze(0)
    if n.shape != p.shape:
        raise ValueError(
            f"normal_map must have the shape of position_map {tuple(p.shape)[single:]}, "
            f"got {tuple(n.shape)[single:]}"
        )
    if d.shape != p.shape[:-1]:
        raise ValueError(
            f"displacement must have shape {tuple(p.shape[single:-1])}, "
            f"got {tuple(d.shape)[single:]}"
        )
    if mask is None:
        valid = (n * n).sum(-1).detach() > 0
    else:
        valid = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        valid = valid.to(device=p.device, dtype=torch.bool)
        given = tuple(valid.shape)
        if single and valid.ndim == 2:
            valid = valid.unsqueeze(0)
        if valid.ndim == 2:
            valid = valid.unsqueeze(0).expand(p.shape[0], -1, -1)
        if valid.shape != p.shape[:-1]:
            raise ValueError(f"mask must have shape {tuple(p.shape[single:-1])}, got {given}")

    unit = _normalize_torch(n)
    g0 = _grid_vertex_normals(p, valid)
    g1 = _grid_vertex_normals(p + d.unsqueeze(-1) * unit, valid)
    with torch.no_grad():
        agree = (g0 * unit * valid.unsqueeze(-1)).sum(dim=(1, 2, 3))
        sign = torch.where(agree < 0, -1.0, 1.0).to(p.dtype).view(-1, 1, 1, 1)
    out = _normalize_torch(unit + sign * (g1 - g0))
    if single:
        out = out[0]
    return out if is_torch else out.numpy()


# --------------------------------------------------------------------------------------------
# Dense displaced mesh
# --------------------------------------------------------------------------------------------
def _as_numpy(a: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def displaced_dense_mesh(
    position_map: np.ndarray,
    normal_map: np.ndarray,
    displacement: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    max_edge: float | None = None,
) -> Mesh:
    """Dense mesh with one vertex per valid texel, moved along the normal by the displacement.

    Vertex ``k`` is the ``k``-th valid texel in row-major order (``np.flatnonzero(mask)``), at
    ``P + d * normalize(n)``, with UV at its texel centre. Each grid cell whose four corners are
    valid gives two triangles; the faces are wound counter-clockwise in UV (u right, v up) and
    flipped as a whole when that disagrees with the normal map. Valid texels with no valid cell
    stay as unreferenced vertices (the texel <-> vertex mapping is kept).

    Parameters
    ----------
    position_map : (H, W, 3) float
    normal_map : (H, W, 3) float, coarse normals (normalised here)
    displacement : (H, W) float, along the normals, same units as positions
    mask : (H, W) bool, or None for "texels whose normal is non-zero"
    max_edge : drop triangles with an edge longer than this (same units; e.g. cells spanning
        a UV seam); None keeps every triangle.

    Returns
    -------
    facehd.mesh.Mesh with ``vertices (N, 3)``, ``faces (F, 3)``, ``uvs (N, 2)``.
    """
    from facehd.mesh import Mesh

    p = _as_numpy(position_map)
    n = _as_numpy(normal_map)
    d = _as_numpy(displacement)
    if p.ndim != 3 or p.shape[2] != 3:
        raise ValueError(f"position_map must have shape (H, W, 3), got {p.shape}")
    h, w = p.shape[:2]
    if n.shape != p.shape:
        raise ValueError(f"normal_map must have shape ({h}, {w}, 3), got {n.shape}")
    if d.shape == (h, w, 1):
        d = d[..., 0]
    if d.shape != (h, w):
        raise ValueError(f"displacement must have shape ({h}, {w}), got {d.shape}")
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    if mask is None:
        valid = norm[..., 0] > 0
    else:
        valid = _as_numpy(mask, dtype=bool)
        if valid.shape != (h, w):
            raise ValueError(f"mask must have shape ({h}, {w}), got {valid.shape}")
    if not np.all(np.isfinite(p[valid])) or not np.all(np.isfinite(d[valid])):
        raise ValueError("position_map or displacement holds NaN/inf inside the mask")
    unit = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)

    flat = np.flatnonzero(valid.ravel())
    index = np.full(h * w, -1, dtype=np.int64)
    index[flat] = np.arange(flat.size)
    index = index.reshape(h, w)
    verts = (p + d[..., None] * unit).reshape(-1, 3)[flat]
    uvs = texel_centers_uv((h, w)).reshape(-1, 2)[flat]

    a = index[:-1, :-1].ravel()
    b = index[:-1, 1:].ravel()
    c = index[1:, 1:].ravel()
    dd = index[1:, :-1].ravel()
    ok = (a >= 0) & (b >= 0) & (c >= 0) & (dd >= 0)
    a, b, c, dd = a[ok], b[ok], c[ok], dd[ok]
    # (d, c, b) and (d, b, a) are counter-clockwise in UV (d bottom-left, c bottom-right,
    # b top-right, a top-left).
    faces = np.concatenate([np.stack([dd, c, b], 1), np.stack([dd, b, a], 1)]).astype(np.int64)

    if max_edge is not None and faces.size:
        tri = verts[faces]
        edges = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1)
        faces = faces[edges.max(1) <= max_edge]
    if faces.size:
        tri = verts[faces]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        un = unit.reshape(-1, 3)[flat]
        if np.sum(fn * un[faces].sum(1)) < 0:
            faces = faces[:, [0, 2, 1]]
    return Mesh(vertices=verts, faces=faces.reshape(-1, 3), uvs=uvs)

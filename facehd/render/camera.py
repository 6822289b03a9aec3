"""Pinhole cameras for the renderer, including the base model's fixed perspective camera.

Frames and pixels
-----------------
A camera maps world points ``X`` (the frame of the mesh handed to the renderer) to the camera
frame by ``X_cam = R @ X + t`` (OpenCV convention: ``+z`` looks forward, ``+y`` points down the
image), then to continuous pixel coordinates ``(x, y) = (K @ X_cam)[:2] / z_cam`` where ``x`` is
the column and ``y`` the row. The centre of pixel ``(row i, col j)`` is at ``(x, y) = (j, i)``,
the same continuous-pixel convention as :func:`facehd.uv.uv_to_pixel`.

The base model's camera (Deep3DFaceRecon, used by HRN) is a special case: focal 1015 px,
principal point 112, a 224 x 224 image, the camera on the ``+z`` axis at 10 model units looking
down ``-z`` (``z_cam = 10 - z``) and the image ``y`` flipped (``row = H - 1 - y``). With
``R = diag(1, -1, -1)``, ``t = (0, 0, d)`` and ``K = [[f, 0, cx], [0, f, H - 1 - cy], [0, 0, 1]]``
a pinhole camera reproduces it exactly; :func:`hrn_camera` builds it for meshes in millimetres
(``unit_to_mm = 1``, ``d = 1000``) or in BFM units (``unit_to_mm = 100``, ``d = 10``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: The base model's focal length in pixels.
HRN_FOCAL = 1015.0
#: The base model's principal point (both axes, before the ``y`` flip) in pixels.
HRN_CENTER = 112.0
#: The base model's image size.
HRN_IMAGE_SIZE = 224
#: The base model's camera distance in millimetres (10 BFM units of 100 mm).
HRN_CAMERA_DISTANCE_MM = 1000.0


def _as_tensor(x: np.ndarray | torch.Tensor | float, dtype: torch.dtype | None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float64)


@dataclass
class PinholeCamera:
    """A (possibly batched) pinhole camera: ``X_cam = R X + t``, ``pixel = K X_cam / z_cam``.

    Attributes
    ----------
    K : (Bc, 3, 3) float tensor
        Intrinsics (pixels); ``Bc`` is 1 (shared by the batch) or the batch size.
    R : (Bc, 3, 3) float tensor
        Rotation from the world frame to the camera frame (OpenCV: ``+z`` forward, ``+y`` down).
    t : (Bc, 3) float tensor
        Translation of the world origin in the camera frame (world units).
    image_size : (int, int)
        ``(H, W)`` of the rendered image.

    All tensors may require gradients: projection is plain PyTorch.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        K, R, t = self.K, self.R, self.t
        if not all(isinstance(a, torch.Tensor) for a in (K, R, t)):
            raise TypeError("PinholeCamera: K, R and t must be torch tensors (use from_matrices)")
        if K.dim() == 2:
            K = K[None]
        if R.dim() == 2:
            R = R[None]
        if t.dim() == 1:
            t = t[None]
        if K.shape[-2:] != (3, 3) or K.dim() != 3:
            raise ValueError(f"PinholeCamera: K must be (3, 3) or (B, 3, 3), got {tuple(K.shape)}")
        if R.shape[-2:] != (3, 3) or R.dim() != 3:
            raise ValueError(f"PinholeCamera: R must be (3, 3) or (B, 3, 3), got {tuple(R.shape)}")
        if t.shape[-1] != 3 or t.dim() != 2:
            raise ValueError(f"PinholeCamera: t must be (3,) or (B, 3), got {tuple(t.shape)}")
        sizes = {K.shape[0], R.shape[0], t.shape[0]} - {1}
        if len(sizes) > 1:
            raise ValueError(
                f"PinholeCamera: batch sizes of K {K.shape[0]}, R {R.shape[0]}, t {t.shape[0]} "
                "differ (each must be 1 or the batch size)"
            )
        h, w = (int(s) for s in self.image_size)
        if h <= 0 or w <= 0:
            raise ValueError(
                f"PinholeCamera: image_size must be positive (H, W), got {self.image_size}"
            )
        self.K, self.R, self.t, self.image_size = K, R, t, (h, w)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_matrices(
        cls,
        K: np.ndarray | torch.Tensor,
        R: np.ndarray | torch.Tensor | None = None,
        t: np.ndarray | torch.Tensor | None = None,
        image_size: tuple[int, int] = (HRN_IMAGE_SIZE, HRN_IMAGE_SIZE),
        *,
        dtype: torch.dtype | None = None,
    ) -> PinholeCamera:
        """Camera from numpy/torch ``K (3,3)|(B,3,3)``, ``R`` (default identity), ``t`` (default 0).

        numpy inputs become float64 tensors unless ``dtype`` is given.
        """
        Kt = _as_tensor(K, dtype)
        Rt = torch.eye(3, dtype=Kt.dtype) if R is None else _as_tensor(R, dtype or Kt.dtype)
        tt = torch.zeros(3, dtype=Kt.dtype) if t is None else _as_tensor(t, dtype or Kt.dtype)
        return cls(Kt, Rt, tt, tuple(image_size))

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        """``Bc``: 1 when one camera is shared by the whole batch."""
        return max(self.K.shape[0], self.R.shape[0], self.t.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

    @property
    def device(self) -> torch.device:
        return self.K.device

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        """A copy with tensors moved to ``dtype`` / ``device``."""
        return PinholeCamera(
            self.K.to(device=device, dtype=dtype),
            self.R.to(device=device, dtype=dtype),
            self.t.to(device=device, dtype=dtype),
            self.image_size,
        )

    def centers(self) -> torch.Tensor:
        """Camera centres in the world frame, ``(Bc, 3)``: ``-R^T t``."""
        return -(self.R.transpose(1, 2) @ self.t[..., None])[..., 0]

    # ------------------------------------------------------------------ maps
    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """``points (B, N, 3)`` or ``(N, 3)`` world → ``(B, N, 3)`` camera frame."""
        points = _batched_points(points, "world_to_camera")
        R, t = self.R.to(points.dtype), self.t.to(points.dtype)
        return points @ R.transpose(1, 2) + t[:, None, :]

    def camera_to_pixels(self, points_cam: torch.Tensor) -> torch.Tensor:
        """``points_cam (B, N, 3)`` → continuous pixels ``(B, N, 2)`` as ``(x = col, y = row)``."""
        K = self.K.to(points_cam.dtype)
        h = points_cam @ K.transpose(1, 2)
        return h[..., :2] / h[..., 2:3]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """World ``points (B, N, 3)|(N, 3)`` → continuous pixels ``(B, N, 2)`` (x = col, y = row).

        Points at or behind the camera (``z_cam <= 0``) give meaningless pixels; check
        :meth:`world_to_camera` first where that can happen.
        """
        return self.camera_to_pixels(self.world_to_camera(points))

    def pixel_rays(self, pixels: torch.Tensor) -> torch.Tensor:
        """Camera-frame ray directions with ``z = 1`` through ``pixels (B, N, 2)`` (x, y)."""
        K = self.K.to(pixels.dtype)
        fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
        s, cx, cy = K[:, 0, 1, None], K[:, 0, 2, None], K[:, 1, 2, None]
        yy = (pixels[..., 1] - cy) / fy
        xx = (pixels[..., 0] - cx - s * yy) / fx
        return torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)


def _batched_points(points: torch.Tensor, where: str) -> torch.Tensor:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{where}: points must be a torch tensor, got {type(points).__name__}")
    if points.dim() == 2:
        points = points[None]
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{where}: expected points (B, N, 3) or (N, 3), got {tuple(points.shape)}")
    return points


def hrn_camera(
    unit_to_mm: float = 1.0,
    *,
    focal: float = HRN_FOCAL,
    center: float = HRN_CENTER,
    image_size: int = HRN_IMAGE_SIZE,
    distance_mm: float = HRN_CAMERA_DISTANCE_MM,
    dtype: torch.dtype = torch.float64,
) -> PinholeCamera:
    """The base model's perspective camera for meshes whose unit is ``unit_to_mm`` millimetres.

    ``unit_to_mm = 1`` for meshes in millimetres (facehd-synth, every mesh leaving a model),
    ``unit_to_mm = 100`` for raw BFM units (camera at ``z = 10``). The camera sits on the ``+z``
    axis at ``distance_mm / unit_to_mm`` and looks down ``-z``; a world point ``(X, Y, Z)`` lands on
    ``col = focal X / (d - Z) + center`` and ``row = H - 1 - (focal Y / (d - Z) + center)``.
    """
    if unit_to_mm <= 0:
        raise ValueError(f"hrn_camera: unit_to_mm must be positive, got {unit_to_mm}")
    d = distance_mm / unit_to_mm
    K = torch.tensor(
        [[focal, 0.0, center], [0.0, focal, image_size - 1 - center], [0.0, 0.0, 1.0]],
        dtype=dtype,
    )
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype))
    t = torch.tensor([0.0, 0.0, d], dtype=dtype)
    return PinholeCamera(K, R, t, (image_size, image_size))

"""Spherical-harmonics (SH) lighting, 9 bands per colour channel, as in the base model.

With ``a = [pi, 2 pi / sqrt(3), 2 pi / sqrt(8)]`` and
``c = [1 / sqrt(4 pi), sqrt(3) / sqrt(4 pi), 3 sqrt(5) / sqrt(12 pi)]`` the basis of a unit normal
``n = (nx, ny, nz)`` is::

    [a0 c0, -a1 c1 ny, a1 c1 nz, -a1 c1 nx, a2 c2 nx ny, -a2 c2 ny nz,
     0.5 a2 c2 / sqrt(3) (3 nz^2 - 1), -a2 c2 nx nz, 0.5 a2 c2 (nx^2 - ny^2)]

and the shaded colour is ``(basis . gamma) * albedo`` per channel. Normals are expressed in the
lighting frame, which is the world frame of the mesh (for the base model: the posed face, ``+z``
towards the camera).

The network's 27 lighting numbers are channel-major (``[R0..R8, G0..G8, B0..B8]``) and the base
model adds 0.8 to the first coefficient of each channel; :func:`gamma_to_sh` does both.
"""

from __future__ import annotations

import math

import torch

_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
_C = (
    1.0 / math.sqrt(4.0 * math.pi),
    math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
    3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi),
)
#: Value the base model adds to the first SH coefficient of each channel (ambient light).
SH_AMBIENT_INIT = 0.8


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """SH basis of unit normals: ``normals (..., 3)`` → ``(..., 9)``."""
    if normals.shape[-1] != 3:
        raise ValueError(f"sh_basis: expected normals (..., 3), got {tuple(normals.shape)}")
    nx, ny, nz = normals.unbind(-1)
    a0c0 = _A[0] * _C[0]
    a1c1 = _A[1] * _C[1]
    a2c2 = _A[2] * _C[2]
    return torch.stack(
        [
            torch.full_like(nx, a0c0),
            -a1c1 * ny,
            a1c1 * nz,
            -a1c1 * nx,
            a2c2 * nx * ny,
            -a2c2 * ny * nz,
            0.5 * a2c2 / math.sqrt(3.0) * (3.0 * nz * nz - 1.0),
            -a2c2 * nx * nz,
            0.5 * a2c2 * (nx * nx - ny * ny),
        ],
        dim=-1,
    )


def gamma_to_sh(gamma: torch.Tensor, *, add_ambient: bool = True) -> torch.Tensor:
    """The network's lighting ``gamma (B, 27)`` (channel-major) → SH coefficients ``(B, 9, 3)``.

    With ``add_ambient`` (default, as the base model does) 0.8 is added to the first coefficient
    of each channel.
    """
    if gamma.dim() != 2 or gamma.shape[1] != 27:
        raise ValueError(f"gamma_to_sh: expected gamma (B, 27), got {tuple(gamma.shape)}")
    sh = gamma.reshape(gamma.shape[0], 3, 9)
    if add_ambient:
        offset = torch.zeros(9, dtype=gamma.dtype, device=gamma.device)
        offset[0] = SH_AMBIENT_INIT
        sh = sh + offset
    return sh.transpose(1, 2)


def _check_sh(sh: torch.Tensor, batch: int, where: str) -> torch.Tensor:
    if sh.dim() == 2:
        sh = sh[None]
    if sh.dim() != 3 or sh.shape[1:] != (9, 3):
        raise ValueError(
            f"{where}: expected SH coefficients (B, 9, 3) or (9, 3), got {tuple(sh.shape)}"
        )
    if sh.shape[0] not in (1, batch):
        raise ValueError(f"{where}: SH batch {sh.shape[0]} does not match the batch {batch}")
    return sh


def sh_irradiance(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Irradiance ``basis(n) . sh`` per channel.

    Parameters
    ----------
    normals : (B, ..., 3) float
        Unit normals in the lighting frame.
    sh : (B, 9, 3) or (9, 3) float
        SH coefficients (after :func:`gamma_to_sh`).

    Returns
    -------
    (B, ..., 3) float
    """
    sh = _check_sh(sh, normals.shape[0], "sh_irradiance").to(normals.dtype)
    basis = sh_basis(normals)
    flat = basis.reshape(basis.shape[0], -1, 9)
    out = torch.bmm(flat, sh.expand(flat.shape[0], 9, 3))
    return out.reshape(*normals.shape[:-1], 3)


def shade_sh(normals: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Lambertian SH shading ``(basis(n) . sh) * albedo``.

    ``normals (B, ..., 3)`` unit, ``albedo`` broadcastable to ``(B, ..., 3)``, ``sh (B, 9, 3)``.
    """
    return sh_irradiance(normals, sh) * albedo

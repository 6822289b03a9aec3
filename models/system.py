"""HRN end to end: photo -> coefficients -> M0 -> texture -> detail maps -> M1, M2 -> renders.

:class:`FaceSystem` holds HRN's networks (:class:`models.hrn.HRN`: face analyzer, mid / high
generators, alpha, beta, de-retouching module) and the two discriminators, and runs each step of
the paper's Fig. 2 as one small method, shared by the trainer, reconstruction and evaluation.

Conventions
-----------
- Images are ``(B, 3, S, S)`` RGB in ``[0, 1]``, aligned crops at the training resolution ``S``
  (224 for the base model; smaller for tests). The camera is the base model's
  (:func:`facehd.render.hrn_camera`, millimetres, focal 1015 px at 224) with its intrinsics
  scaled to ``S`` (pixel centres: ``x_S = (x_224 + 0.5) S / 224 - 0.5``).
- Coefficients: the analyzer's identity, expression and albedo outputs are whitened: the model's
  coefficients are ``output * std`` (``id_std``, ``exp_std``, ``tex_std``; all 1 for the BFM, so
  the official ``net_recon`` reads unchanged). The regularisers act on the outputs. Angles are
  radians, ``R = Rz Ry Rx``, a point ``p`` of the canonical face goes to ``R p + t``; the
  translation output is in units of ``map_unit_mm`` (100 mm: BFM units, as in the official model).
  Lighting: the 27 outputs plus 0.8 ambient (:func:`facehd.render.gamma_to_sh`) in the posed
  frame (``+z`` towards the camera).
- Geometry is in millimetres: M0 and M1 canonical (before pose) ``(B, V, 3)``; posed
  ``R p + t``. The deformation map is added to the canonical M0 at each vertex's UV; the
  displacement map moves M1 along its normals (detail normals for rendering,
  :func:`facehd.uv.displaced_dense_mesh` for the dense mesh M2).
- UV maps follow :mod:`facehd.uv` (texel ``(i, j)`` centred at ``u = (j + 0.5)/W``,
  ``v = 1 - (i + 0.5)/H``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from facehd.morphable import MorphableModel
from facehd.render import PinholeCamera, Renderer, hrn_camera, render_with_displacement
from facehd.render.camera import HRN_IMAGE_SIZE
from facehd.transforms import rotation_matrix_from_euler
from facehd.uv import rasterize_uv, sample_uv_map, uv_sampling_matrix
from models.analyzer import CoefficientLayout, Coefficients
from models.config import ModelConfig
from models.discriminator import HRNDiscriminators
from models.hrn import HRN, HRNOutput

__all__ = [
    "CoarseFace",
    "continuous_uv",
    "DetailFace",
    "FaceSystem",
    "MapFitter",
    "rigid_align",
    "scaled_hrn_camera",
]


def scaled_hrn_camera(size: int, *, dtype: torch.dtype = torch.float32) -> PinholeCamera:
    """The base model's camera (mm) for crops of ``size`` pixels instead of 224."""
    cam = hrn_camera(1.0, dtype=dtype)
    if size == HRN_IMAGE_SIZE:
        return cam
    k = size / HRN_IMAGE_SIZE
    K = cam.K.clone()
    K[:, 0, 0] *= k
    K[:, 1, 1] *= k
    K[:, 0, 2] = (K[:, 0, 2] + 0.5) * k - 0.5
    K[:, 1, 2] = (K[:, 1, 2] + 0.5) * k - 0.5
    return PinholeCamera(K, cam.R, cam.t, (size, size))


def rigid_align(
    source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Move ``source`` rigidly onto ``target`` (weighted Kabsch, corresponding points).

    Parameters
    ----------
    source, target : (B, N, 3); weights : (N,) or (B, N) non-negative, or ``None``.

    Returns
    -------
    (B, N, 3) ``R source + t`` minimising ``sum w |R s + t - q|^2`` (proper rotation).
    """
    if source.shape != target.shape or source.dim() != 3 or source.shape[-1] != 3:
        raise ValueError(
            f"rigid_align: expected source and target (B, N, 3), got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )
    b, n, _ = source.shape
    w = torch.ones(b, n, dtype=source.dtype, device=source.device) if weights is None else weights
    w = w.to(source).expand(b, n)[..., None]
    wsum = w.sum(1, keepdim=True).clamp_min(1e-12)
    mu_s = (w * source).sum(1, keepdim=True) / wsum
    mu_t = (w * target).sum(1, keepdim=True) / wsum
    cov = ((target - mu_t) * w).transpose(1, 2) @ (source - mu_s)  # (B, 3, 3)
    u, _, vh = torch.linalg.svd(cov.double())
    d = torch.sign(torch.linalg.det(u @ vh))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = (u @ fix @ vh).to(source.dtype)
    return (source - mu_s) @ rot.transpose(1, 2) + mu_t


class MapFitter:
    """Least-squares UV map from per-vertex values through the bilinear sampler itself.

    Solves ``min_D |A D - y|^2 + lam |grad D|^2`` (``A``: :func:`facehd.uv.uv_sampling_matrix`
    of the vertex UVs at ``size``; ``grad``: forward differences on the texel grid) with one
    sparse LU factorisation made once. Texels no vertex reads are filled smoothly.

    Parameters
    ----------
    uvs : (V, 2) vertex UVs; size : map side; smoothness : ``lam``.
    """

    def __init__(self, uvs: np.ndarray, size: int, smoothness: float = 1e-3) -> None:
        import scipy.sparse.linalg as spla

        a = uv_sampling_matrix(np.asarray(uvs, dtype=np.float64), (size, size))
        idx = np.arange(size * size).reshape(size, size)
        pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])]
        i0 = np.concatenate([p[0].ravel() for p in pairs])
        i1 = np.concatenate([p[1].ravel() for p in pairs])
        m = i0.size
        g = sp.csr_matrix(
            (np.r_[-np.ones(m), np.ones(m)], (np.r_[np.arange(m), np.arange(m)], np.r_[i0, i1])),
            shape=(m, size * size),
        )
        normal = (a.T @ a + smoothness * (g.T @ g)).tocsc()
        self._lu = spla.splu(normal)
        self._at = a.T.tocsr()
        self.size = size

    def fit(self, values: torch.Tensor) -> torch.Tensor:
        """Per-vertex ``values (B, V, C)`` -> maps ``(B, C, size, size)`` (same dtype/device)."""
        b, v, c = values.shape
        y = values.detach().to("cpu", torch.float64).numpy()
        out = np.empty((b, c, self.size * self.size))
        for i in range(b):
            out[i] = self._lu.solve(np.asarray(self._at @ y[i])).T
        maps = torch.from_numpy(out).reshape(b, c, self.size, self.size)
        return maps.to(values.device, values.dtype)


@dataclass
class CoarseFace:
    """The base model's output for a batch (all tensors batched, ``B`` first).

    Attributes
    ----------
    coeffs : whitened analyzer outputs (:class:`models.analyzer.Coefficients`).
    shape : (B, V, 3) canonical M0, mm.
    rotation : (B, 3, 3); translation : (B, 3) mm; posed: ``shape @ R^T + t``.
    posed : (B, V, 3) posed M0, mm.
    albedo : (B, V, 3) per-vertex albedo A0 in ``[0, 1]`` (clamped).
    sh : (B, 9, 3) SH lighting (ambient included).
    """

    coeffs: Coefficients
    shape: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    posed: torch.Tensor
    albedo: torch.Tensor
    sh: torch.Tensor

    def pose(self, points: torch.Tensor) -> torch.Tensor:
        """Canonical ``(B, N, 3)`` -> posed ``(B, N, 3)``."""
        return points @ self.rotation.transpose(1, 2) + self.translation[:, None, :]


@dataclass
class DetailFace:
    """HRN's detail levels for a batch.

    Attributes
    ----------
    texture : (B, 3, S, S) UV texture from the photo; valid : (B, 1, S, S) valid texels (seen
        or mirror-filled); seen : (B, 1, S, S) texels whose M0 point the camera sees.
    position_map : (B, 3, S, S) canonical position map of M0, mm.
    maps : the networks' output (deformation, displacement in mm, re-aligned texture, flow).
    offsets : (B, V, 3) deformation sampled at the vertices, mm.
    shape : (B, V, 3) canonical M1; posed : (B, V, 3) posed M1.
    albedo_map : (B, 3, S, S) albedo texture used for rendering (de-retouched A' or A0).
    normals : (B, V, 3) M1's vertex normals (the model's weighting), computed once by
        :meth:`FaceSystem.mid_normals` for both renders; None until then.
    """

    texture: torch.Tensor
    valid: torch.Tensor
    position_map: torch.Tensor
    maps: HRNOutput
    offsets: torch.Tensor
    shape: torch.Tensor
    posed: torch.Tensor
    albedo_map: torch.Tensor
    seen: torch.Tensor
    normals: torch.Tensor | None = field(default=None, repr=False)
    _normals_of: torch.Tensor | None = field(default=None, repr=False)


class FaceSystem(nn.Module):
    """HRN's networks plus the morphable model, camera and renderer that tie them together.

    Parameters
    ----------
    config : networks (``config.network``) and losses.
    model : the morphable model (facehd-synth or the BFM).
    image_size : side ``S`` of the input crops and renders.
    backend : renderer backend (``cpu``, ``nvdiffrast``, ``auto``).
    """

    def __init__(
        self,
        config: ModelConfig,
        model: MorphableModel,
        image_size: int = HRN_IMAGE_SIZE,
        backend: str = "cpu",
    ) -> None:
        super().__init__()
        net = config.network
        self.config = config
        self.model = model
        self.image_size = int(image_size)
        self.hrn = HRN(net, CoefficientLayout.from_model(model))
        d = net.discriminator
        self.discriminators = HRNDiscriminators(filters=d.filters, n_layers=d.n_layers)
        self.backend_name = backend
        self.trained_stages: tuple[str, ...] | None = None
        """The training stages its weights went through, where the file they were loaded from
        says (a facehd ``model.pt``: :func:`models.reconstruct.load_system`); None: not known."""
        self._faces = torch.as_tensor(np.array(model.faces, dtype=np.int64))
        self._uvs = np.array(model.uvs, dtype=np.float64)
        self.table = rasterize_uv(self._uvs, np.array(model.faces), (net.high_size, net.high_size))
        self.fit_vertices = torch.as_tensor(np.array(model.regions.fit, dtype=bool))
        self.landmark_index = torch.as_tensor(np.array(model.landmarks68, dtype=np.int64))
        self.skin_vertices = self.fit_vertices.clone()
        self._stds = {
            k: torch.as_tensor(np.array(getattr(model, k), dtype=np.float32))
            for k in ("id_std", "exp_std", "tex_std")
        }
        self._renderers: dict[tuple, Renderer] = {}
        self._map_fitter: MapFitter | None = None

    # ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.hrn.alpha.device

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int64 triangles on this system's device (moved once, not on every call)."""
        if self._faces.device != self.device:
            self._faces = self._faces.to(self.device)
        return self._faces

    @property
    def uv_layout(self) -> np.ndarray:
        """(V, 2) float64 vertex UVs of the morphable model (a writable copy)."""
        return self._uvs

    def uvs(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(self._uvs, dtype=dtype, device=self.device)

    def camera(self, dtype: torch.dtype = torch.float32) -> PinholeCamera:
        return scaled_hrn_camera(self.image_size, dtype=dtype).to(device=self.device)

    def renderer(self, dtype: torch.dtype = torch.float32) -> Renderer:
        """The renderer at ``S`` on this system's device: ``auto`` takes nvdiffrast on a CUDA
        device where it is installed, and nvdiffrast rasterises on this device, not on the
        current CUDA device (a run on ``cuda:1`` would otherwise render on ``cuda:0``)."""
        key = (dtype, str(self.device))
        if key not in self._renderers:
            backend = self.backend_name
            options: dict[str, Any] = {}
            if backend == "auto":
                from facehd.render import nvdiffrast_available

                gpu = self.device.type == "cuda" and nvdiffrast_available()
                backend = "nvdiffrast" if gpu else "cpu"
            if backend == "nvdiffrast":
                options["device"] = self.device
            self._renderers[key] = Renderer(self.camera(dtype), backend, **options)
        return self._renderers[key]

    def map_fitter(self) -> MapFitter:
        if self._map_fitter is None:
            self._map_fitter = MapFitter(self._uvs, self.config.network.mid_size)
        return self._map_fitter

    def project(self, posed: torch.Tensor) -> torch.Tensor:
        """Posed points ``(B, N, 3)`` mm -> pixels ``(B, N, 2)`` at ``S``."""
        return self.camera(posed.dtype).project(posed)

    # ----------------------------------------------------------------------------------------
    def coarse(self, images: torch.Tensor, coeffs: Coefficients | None = None) -> CoarseFace:
        """Run the face analyzer (unless ``coeffs`` are given) and build M0, pose, albedo, light.

        images : (B, 3, S, S) in ``[0, 1]``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"coarse: expected images (B, 3, S, S), got {tuple(images.shape)}")
        if coeffs is None:
            coeffs = self.hrn.net_recon.predict(images)
        dev, dt = images.device, images.dtype
        std = {k: v.to(dev, dt) for k, v in self._stds.items()}
        shape = self.model.vertices(coeffs.id * std["id_std"], coeffs.exp * std["exp_std"])
        albedo = self.model.albedo(coeffs.tex * std["tex_std"]).clamp(0.0, 1.0)
        rotation = rotation_matrix_from_euler(coeffs.angle)
        translation = coeffs.trans * self.config.network.map_unit_mm
        posed = shape @ rotation.transpose(1, 2) + translation[:, None, :]
        from facehd.render import gamma_to_sh

        return CoarseFace(
            coeffs, shape, rotation, translation, posed, albedo, gamma_to_sh(coeffs.gamma)
        )

    def render_coarse(self, coarse: CoarseFace):
        """The base model's render of M0 (per-vertex SH shading), a RenderResult."""
        return self.renderer(coarse.posed.dtype).render(
            coarse.posed,
            self.faces,
            colors=coarse.albedo,
            sh=coarse.sh,
            shading="vertex",
            normals=self.model.vertex_normals(coarse.posed),
        )

    def landmarks2d(self, posed: torch.Tensor) -> torch.Tensor:
        """Projected iBUG-68 landmarks ``(B, 68, 2)`` of posed vertices."""
        return self.project(posed[:, self.landmark_index.to(posed.device)])

    # ----------------------------------------------------------------------------------------
    def unwrap(self, images: torch.Tensor, coarse: CoarseFace) -> tuple[torch.Tensor, ...]:
        """Photo -> UV texture at M0 (no gradient).

        Returns ``texture (B, 3, H, H)``, ``valid (B, 1, H, H)`` (seen or mirror-filled), the
        canonical ``position_map (B, 3, H, H)`` of M0, mm, and ``seen (B, 1, H, H)``.
        """
        from facehd.render import unwrap_texture

        with torch.no_grad():
            res = unwrap_texture(
                images.permute(0, 2, 3, 1),
                coarse.posed.detach(),
                self.faces,
                self._uvs,
                self.camera(images.dtype),
                table=self.table,
                normals=self.model.vertex_normals(coarse.posed.detach()),
                renderer=self.renderer(images.dtype),
            )
            valid = res.filled[:, None].to(images.dtype)
            seen = res.visible[:, None].to(images.dtype)
            pos = self.table.interpolate(coarse.shape.detach()).permute(0, 3, 1, 2)
        return res.texture * valid, valid, pos.contiguous(), seen

    def details(
        self,
        images: torch.Tensor,
        coarse: CoarseFace,
        *,
        hrn: nn.Module | None = None,
        deretouch: bool = True,
        autocast: bool = False,
    ) -> DetailFace:
        """Deformation and displacement maps, M1, and the rendering albedo.

        ``hrn`` is the module to call for the maps (a DistributedDataParallel wrapper of
        ``self.hrn`` during training). With ``deretouch`` the albedo texture is the de-retouched
        A' (paper Eq. 3-6) computed from the re-aligned texture; otherwise A0 in UV space.
        ``autocast`` runs the networks in bfloat16 on a GPU (mixed precision,
        :func:`models.precision.mixed_precision`); their outputs are returned in float32, and the
        geometry (the re-alignment's projections included) and rendering stay in float32.
        """
        texture, valid, pos, seen = self.unwrap(images, coarse)
        module = hrn if hrn is not None else self.hrn

        from models.precision import full_precision, mixed_precision

        def project(points: torch.Tensor) -> torch.Tensor:
            # the pose and the camera in float32 under mixed precision: the re-alignment's flow
            # is the difference of two projections about a pixel apart
            with full_precision(points.device):
                return self.project(coarse.pose(points.to(coarse.rotation.dtype)))

        ctx = mixed_precision(texture.device, autocast)
        with ctx:
            maps: HRNOutput = module(pos, texture, valid, project)
        if autocast:
            maps = HRNOutput(
                maps.deformation.float(),
                maps.displacement.float(),
                maps.realigned_texture.float(),
                None if maps.flow is None else maps.flow.float(),
            )
        offsets = sample_uv_map(maps.deformation, self.uvs(maps.deformation.dtype))
        shape = coarse.shape + offsets
        posed = coarse.pose(shape)
        a0 = self.table.interpolate(coarse.albedo).permute(0, 3, 1, 2)
        if deretouch:
            drm = self.hrn.deretouch
            trainable = any(p.requires_grad for p in drm.parameters())
            with torch.enable_grad() if trainable else torch.no_grad(), ctx:
                albedo_map = drm(maps.realigned_texture.detach(), a0).albedo.clamp(0.0, 1.0)
            albedo_map = albedo_map.float()
        else:
            albedo_map = a0
        return DetailFace(texture, valid, pos, maps, offsets, shape, posed, albedo_map, seen)

    def mid_normals(self, detail: DetailFace) -> torch.Tensor:
        """M1's vertex normals ``(B, V, 3)``, computed on first use and kept on ``detail``:
        R1 and R2 both shade with them, so one training step computes them once."""
        if detail.normals is None or detail._normals_of is not detail.posed:
            detail.normals = self.model.vertex_normals(detail.posed)
            detail._normals_of = detail.posed
        return detail.normals

    def render_mid(self, detail: DetailFace, coarse: CoarseFace):
        """R1: M1 with its interpolated vertex normals, SH-shaded albedo texture."""
        return self.renderer(detail.posed.dtype).render(
            detail.posed,
            self.faces,
            uvs=self.uvs(detail.posed.dtype),
            normals=self.mid_normals(detail),
            texture=detail.albedo_map,
            sh=coarse.sh,
        )

    def render_high(self, detail: DetailFace, coarse: CoarseFace):
        """R2: M1 shaded with the detail normals of the displacement map."""
        return render_with_displacement(
            self.renderer(detail.posed.dtype),
            detail.posed,
            self.faces,
            self._uvs,
            detail.maps.displacement,
            table=self.table,
            normals=self.mid_normals(detail),
            texture=detail.albedo_map,
            sh=coarse.sh,
        )

    # ----------------------------------------------------------------------------------------
    def target_deformation(
        self,
        coarse: CoarseFace,
        identity: torch.Tensor,
        expression: torch.Tensor,
        deformation: torch.Tensor,
        deformation_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth deformation map relative to the predicted M0 (supplementary Sec. 3.1).

        The priors hold M1 = model(identity, expression) + D, fitted to the scan. As the paper
        fits its maps to the base model's own M0, the scan's M1 is moved rigidly onto the
        predicted canonical M0 (Kabsch over the fit-region vertices whose deformation is
        valid) and the per-vertex differences are turned into a map at ``mid_size`` by least
        squares through the sampler (:class:`MapFitter`).

        Parameters
        ----------
        identity, expression : (B, K) model coefficients of the priors (not whitened).
        deformation : (B, 3, h, h) prior map, mm; deformation_mask : (B, 1, h, h).

        Returns
        -------
        ``(target (B, 3, m, m) mm, mask (B, 1, m, m))``.
        """
        with torch.no_grad():
            uvs = self.uvs(coarse.shape.dtype)
            m1 = self.model.vertices(identity.to(uvs), expression.to(uvs))
            m1 = m1 + sample_uv_map(deformation.to(uvs), uvs)
            vmask = sample_uv_map(deformation_mask.to(uvs), uvs)[..., 0] > 0.999
            w = (vmask & self.fit_vertices.to(vmask.device)).to(uvs.dtype)
            aligned = rigid_align(m1, coarse.shape.detach(), w)
            target = self.map_fitter().fit(aligned - coarse.shape.detach())
            from models.data import resize_map

            _, mask = resize_map(deformation.to(uvs), deformation_mask.to(uvs), target.shape[-1])
        return target, mask

    def detail_pixels(self, detail: DetailFace, coarse: CoarseFace) -> torch.Tensor:
        """Where each texel of the high-frequency maps is seen: ``(B, S, S, 2)`` pixels at the
        image size, through the points the displacement network's texture was sampled at (M1
        when the texture is re-aligned, M0 otherwise)."""
        pos = detail.position_map.detach()
        if self.config.network.realign_texture:
            d = detail.maps.deformation.detach()
            if d.shape[-2:] != pos.shape[-2:]:
                d = F.interpolate(d, pos.shape[-2:], mode="bilinear", align_corners=False)
            pos = pos + d
        b, _, h, w = pos.shape
        pts = coarse.pose(pos.permute(0, 2, 3, 1).reshape(b, h * w, 3))
        return self.project(pts).reshape(b, h, w, 2)

    def target_displacement(
        self,
        detail: DetailFace,
        coarse: CoarseFace,
        displacement: torch.Tensor,
        displacement_mask: torch.Tensor,
        priors_uv: torch.Tensor,
        priors_uv_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth displacement re-indexed per image to the network's own texels.

        The priors' displacement map is indexed by the priors' UV layout, but the network's
        texel ``u`` shows the photo at the projection of *its* predicted surface point
        (:meth:`detail_pixels`), which is a different skin point wherever the predicted
        correspondence differs from the priors' by millimetres: a wrinkle a few mm wide would
        be compared at a random phase. Like the paper's per-image ground truth, the target at
        ``u`` is the priors' displacement at the skin point the photo shows there:
        ``priors_uv`` (:func:`models.data.priors_uv_image`) names the priors' UV seen at each
        pixel. The map is first area-averaged to the network's size.

        Parameters
        ----------
        displacement : (B, 1, H, H) mm; displacement_mask : (B, 1, H, H).
        priors_uv : (B, 2, P, P); priors_uv_mask : (B, 1, P, P) (any crop resolution ``P``).

        Returns
        -------
        ``(target (B, 1, S, S) mm, mask (B, 1, S, S))``; the mask keeps texels whose predicted
        point the camera sees, whose pixel lies inside the priors' surface away from its
        occlusion edges (:func:`continuous_uv`), and whose priors' texel is valid.
        """
        from models.data import resize_map

        with torch.no_grad():
            size = detail.position_map.shape[-1]
            disp, dmask = resize_map(displacement, displacement_mask, size)
            px = self.detail_pixels(detail, coarse)
            b, h, w, _ = px.shape
            grid = (px + 0.5) / self.image_size * 2.0 - 1.0
            dt = px.dtype
            uv = F.grid_sample(priors_uv.to(dt), grid, align_corners=False)
            cont = priors_uv_mask.to(dt) * continuous_uv(priors_uv.to(dt))
            on = F.grid_sample(cont, grid, align_corners=False) > 0.999
            inside = (grid.abs() < 1.0).all(-1)[:, None]
            uv_flat = uv.permute(0, 2, 3, 1).reshape(b, h * w, 2)
            target = sample_uv_map(disp.to(dt), uv_flat).reshape(b, h, w, 1).permute(0, 3, 1, 2)
            ok = sample_uv_map(dmask.to(dt), uv_flat).reshape(b, h, w, 1).permute(0, 3, 1, 2)
            mask = (ok > 0.999) & on & inside & (detail.seen > 0.5)
            mask = mask.to(dt)
        return target * mask, mask

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Networks only: ``hrn`` (analyzer, generators, scales, de-retouching) and the
        discriminators."""
        return {"hrn": self.hrn.state_dict(), "discriminators": self.discriminators.state_dict()}


def continuous_uv(uv_image: torch.Tensor, jump: float = 0.02) -> torch.Tensor:
    """``(B, 1, H, W)`` float mask of the pixels of a UV image ``(B, 2, H, W)`` whose
    neighbours' UVs are close (within ``jump`` of the layout): interpolating the UV between
    pixels is only meaningful there, not across an occlusion edge (the nose's profile against
    the cheek) where the UV jumps from one surface to another."""
    dx = (uv_image[..., :, 1:] - uv_image[..., :, :-1]).abs().amax(1, keepdim=True) > jump
    dy = (uv_image[..., 1:, :] - uv_image[..., :-1, :]).abs().amax(1, keepdim=True) > jump
    edge = torch.zeros_like(uv_image[:, :1], dtype=torch.bool)
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return (~edge).to(uv_image.dtype)


def masked_downsample(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A ``(B, 1, H, W)`` mask at ``size`` (bilinear, as HRN downsamples its valid mask)."""
    if mask.shape[-1] == size:
        return mask
    return F.interpolate(mask, (size, size), mode="bilinear", align_corners=False)

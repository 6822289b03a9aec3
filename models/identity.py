"""Identity network of the perceptual loss: ArcFace's IResNet, loading, and face alignment.

The perceptual loss of the base model and of HRN (Deep3DFaceRecon's, HRN supplementary Eq. 1)
compares face-recognition features of the render and of the photo. The weights cannot ship with
the project; a user gives them by path (``identity_network`` in the training config), as either

- the state dict of an ArcFace IResNet (``backbone.pth`` of insightface's ``arcface_torch``
  models, the file Deep3DFaceRecon and HRN train with: ``ms1mv3_arcface_r50_fp16``), with or
  without a ``module.`` prefix (saved from DataParallel) or a ``state_dict`` wrapper; its depth
  (18, 34, 50, 100 or 200 layers, or any other block counts) is read from the keys; or
- another recognition network exported by its own code, mapping ``(B, 3, 112, 112)`` images in
  ``[-1, 1]`` to ``(B, D)`` features: a ``torch.export`` program (``torch.export.save``, with a
  dynamic batch dimension) or a TorchScript module (``torch.jit.save``; deprecated by PyTorch).

:class:`IResNet` is written here with ``arcface_torch``'s parameter names, so its state dicts load
unchanged: a 3x3 stem (conv1, bn1, prelu) at full resolution; four stages of
:class:`IBasicBlock` (BN, 3x3 conv, BN, PReLU, 3x3 conv with the stage's stride 2, BN, plus the
shortcut: a strided 1x1 conv and BN on each stage's first block), 64/128/256/512 channels, so a
112 x 112 input leaves 7 x 7; then BN (bn2), flatten, dropout, a linear layer to 512 features
(fc) and a 1D batch norm (features).

ArcFace expects faces aligned to its 112 x 112 template by 5 points (eye centres, nose tip, mouth
corners). :func:`align_faces` warps images by the similarity that maps their 5 landmarks onto
:data:`ARCFACE_TEMPLATE_112` (least squares), as Deep3DFaceRecon's perceptual loss does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facehd.errors import InputFileError

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "IRESNET_LAYERS",
    "IBasicBlock",
    "IResNet",
    "align_faces",
    "five_points",
    "iresnet_layers",
    "load_identity_network",
    "similarity_to_template",
]

ARCFACE_TEMPLATE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
"""The 5 alignment points of ArcFace's 112 x 112 input, pixels (x = column, y = row): the eye
on the image's left, the other eye, the nose tip, the mouth corner on the image's left, the other
(insightface's ``arcface_src``, used by ``arcface_torch`` and by Deep3DFaceRecon's
``estimate_norm``)."""

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
"""Blocks per stage of ``arcface_torch``'s IResNet depths."""

_WIDTHS = (64, 128, 256, 512)


class IBasicBlock(nn.Module):
    """IResNet's residual block: BN, conv 3x3, BN, PReLU, conv 3x3 (``stride``), BN, plus the
    shortcut (a strided 1x1 conv and BN when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                nn.BatchNorm2d(channels, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace's IResNet backbone: ``(B, 3, 112, 112)`` images in ``[-1, 1]`` -> ``(B, 512)``.

    Parameters
    ----------
    layers : blocks per stage, e.g. ``IRESNET_LAYERS["r50"]``.
    features : size of the output embedding.
    dropout : dropout before the linear layer (training only).
    """

    def __init__(
        self,
        layers: Sequence[int] = IRESNET_LAYERS["r50"],
        features: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"IResNet: expected 4 positive block counts, got {tuple(layers)}")
        self.layers = tuple(int(n) for n in layers)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_ch = 64
        for i, (n, ch) in enumerate(zip(self.layers, _WIDTHS, strict=True)):
            blocks = [IBasicBlock(in_ch, ch, 2)] + [IBasicBlock(ch, ch) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = ch
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * 7 * 7, features)
        self.features = nn.BatchNorm1d(features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (112, 112):
            raise ValueError(f"IResNet: expected (B, 3, 112, 112) images, got {tuple(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def iresnet_layers(state: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """Blocks per stage of an IResNet state dict, read from its ``layerS.K.`` keys.

    Raises ValueError when a stage has no blocks (not an IResNet state dict).
    """
    counts = [0, 0, 0, 0]
    for key in state:
        m = _BLOCK_KEY.match(key)
        if m:
            s = int(m.group(1)) - 1
            counts[s] = max(counts[s], int(m.group(2)) + 1)
    if min(counts) == 0:
        raise ValueError(f"no IResNet stages in the keys (blocks per stage found: {counts})")
    return counts[0], counts[1], counts[2], counts[3]


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: a state dict, under ``state_dict`` or ``model``,
    without a ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"expected a state dict of tensors, got {type(obj).__name__}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _archive_kind(path: Path) -> str:
    """``"torchscript"``, ``"export"`` (a ``torch.export`` program) or ``"other"``."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "other"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/models/model.json") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
        return "torchscript"
    return "other"


class _ExportedNetwork(nn.Module):
    """A ``torch.export`` program's module, frozen. It runs as it was exported (such modules
    cannot switch between training and evaluation mode), so it is held outside the module tree
    that ``train()`` and ``eval()`` walk."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.__dict__["program"] = module
        for p in module.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def load_identity_network(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, str]:
    """Load the perceptual loss's identity network (see the module docstring).

    Returns
    -------
    (network in eval mode, a description for logs: ``"IResNet (3, 4, 14, 3)"``,
    ``"torch.export program"`` or ``"TorchScript"``).

    Raises
    ------
    InputFileError
        A missing file, or one that is neither TorchScript nor an IResNet state dict (its layout
        and the mismatching keys are named).
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "identity network (identity_network) not found")
    kind = _archive_kind(p)
    if kind == "export":
        from torch.export.passes import move_to_device_pass

        try:
            program = move_to_device_pass(torch.export.load(str(p)), torch.device(device))
        except Exception as exc:
            raise InputFileError(p, f"unreadable torch.export identity network ({exc})") from exc
        return _ExportedNetwork(program.module()), "torch.export program"
    if kind == "torchscript":
        try:
            net = torch.jit.load(str(p), map_location=device)
        except Exception as exc:
            raise InputFileError(p, f"unreadable TorchScript identity network ({exc})") from exc
        return net.eval(), "TorchScript"
    from models.checkpoints import read_checkpoint

    try:
        state = _unwrap(read_checkpoint(p))
    except (InputFileError, ValueError) as exc:
        why = exc.problem if isinstance(exc, InputFileError) else str(exc)
        raise InputFileError(
            p,
            "not an identity network: expected an ArcFace IResNet state dict (arcface_torch's "
            f"backbone.pth), a torch.export program or a TorchScript module ({why})",
        ) from exc
    try:
        layers = iresnet_layers(state)
        features = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 512
        net = IResNet(layers, features)
        net.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError, KeyError) as exc:
        msg = str(exc).split("\n\t")
        raise InputFileError(
            p,
            "not an ArcFace IResNet state dict (arcface_torch's layout): " + "; ".join(msg[:4]),
        ) from exc
    return net.to(device).eval(), f"IResNet {layers}"


def five_points(landmarks68: torch.Tensor) -> torch.Tensor:
    """``(..., 68, 2)`` iBUG-68 points -> ``(..., 5, 2)`` alignment points: the eye centres (mean
    of each eye's two corners), the nose tip and the mouth corners
    (:data:`facehd.detect.FIVE_POINT_FROM_68`, as :func:`facehd.detect.landmarks5_from_68`)."""
    from facehd.detect import FIVE_POINT_FROM_68

    a, b = zip(*FIVE_POINT_FROM_68, strict=True)
    return 0.5 * (landmarks68[..., list(a), :] + landmarks68[..., list(b), :])


def similarity_to_template(points: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Least-squares 2D similarity (rotation, uniform scale, translation; no reflection) mapping
    ``points`` (B, N, 2) onto ``template`` (N, 2) (Umeyama). Returns ``(B, 2, 3)`` matrices ``A``
    with ``template ≈ A[:, :, :2] @ p + A[:, :, 2]``."""
    p = points.to(torch.float64)
    q = template.to(device=p.device, dtype=torch.float64).expand_as(p)
    mp, mq = p.mean(-2, keepdim=True), q.mean(-2, keepdim=True)
    pc, qc = p - mp, q - mq
    # for 2D, the optimal rotation+scale is [[a, -b], [b, a]] with
    # a = sum(pc . qc) / |pc|^2, b = sum(pc x qc) / |pc|^2
    var = (pc**2).sum((-2, -1))
    a = (pc * qc).sum((-2, -1)) / var
    b = (pc[..., 0] * qc[..., 1] - pc[..., 1] * qc[..., 0]).sum(-1) / var
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    t = mq[..., 0, :] - (rot @ mp[..., 0, :, None])[..., 0]
    return torch.cat([rot, t[..., None]], -1).to(points.dtype)


def align_faces(images: torch.Tensor, landmarks5: torch.Tensor, size: int = 112) -> torch.Tensor:
    """Warp ``images`` (B, C, H, W) so that their 5 points ``landmarks5`` (B, 5, 2) (pixels,
    x = column, y = row, pixel centres at integers) land on ArcFace's template, scaled to
    ``size`` (112: :data:`ARCFACE_TEMPLATE_112`). Bilinear, zeros outside; differentiable with
    respect to the images. Returns ``(B, C, size, size)``, float32 (float64 for float64 images)."""
    if images.ndim != 4 or landmarks5.shape != (images.shape[0], 5, 2):
        raise ValueError(
            f"align_faces: expected (B, C, H, W) images and (B, 5, 2) points, got "
            f"{tuple(images.shape)} and {tuple(landmarks5.shape)}"
        )
    b, _, h, w = images.shape
    f64 = {"device": images.device, "dtype": torch.float64}  # on the images' device (GPU)
    template = torch.tensor(ARCFACE_TEMPLATE_112, **f64) * (size / 112.0)
    a = similarity_to_template(landmarks5.detach().to(**f64), template)
    rot, t = a[..., :2], a[..., 2]
    inv = torch.linalg.inv(rot)
    ys, xs = torch.meshgrid(torch.arange(size, **f64), torch.arange(size, **f64), indexing="ij")
    out_px = torch.stack([xs, ys], -1).reshape(1, -1, 2)  # (1, size², 2)
    src = (out_px - t[:, None, :]) @ inv.transpose(-1, -2)  # (B, size², 2) source pixels
    # pixel centres -> grid_sample's [-1, 1] with align_corners=False
    gx = (2.0 * src[..., 0] + 1.0) / w - 1.0
    gy = (2.0 * src[..., 1] + 1.0) / h - 1.0
    # sampled in at least float32: a half-precision grid (mixed precision) would place the
    # samples a fifth of a pixel off
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    grid = torch.stack([gx, gy], -1).reshape(b, size, size, 2).to(dtype)
    return F.grid_sample(
        images.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )

"""Inference rewrites and reduced precision for the detail networks (``--precision``).

At the paper's sizes a reconstruction on a CPU is bound by the convolutions of three networks:
the de-retouching U-Net (512², 247 GFLOP), ``high_net`` (256², 101 GFLOP) and ``mid_net``
(64², 6 GFLOP); the face analyzer is 8 GFLOP. CPUs with AMX (Intel Sapphire Rapids and later)
run bfloat16 convolutions several times faster than float32 ones through oneDNN, and GPUs do too.

:func:`run_in_bfloat16` stores a network's weights in bfloat16 (channels-last on a CPU, the
layout oneDNN's bfloat16 kernels want) and casts its floating inputs to bfloat16 and its outputs
back to float32, so the code around it is unchanged. Only the detail generators and the
de-retouching U-Net are converted: the face analyzer stays in float32, so the coarse face M0, its
pose and light are exactly those of a float32 run. The maps carry bfloat16's 8-bit mantissa
through ~40 layers: ``facehd perf hrn-reconstruct`` prints how far M1 and the maps land from
the float32 run, and ``facehd evaluate --precision`` scores them against the exact truth.

:func:`fuse_for_inference`, which both precisions get, rewrites layers without changing what they
compute: batch norms folded into convolutions, ReLUs fused into them (:class:`ConvReLU`), instance
norms that take channels-last tensors without a copy (:class:`InstanceNormChannelsLast`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AUTOCAST_DEVICES",
    "PRECISIONS",
    "ConvReLU",
    "InstanceNormChannelsLast",
    "check_precision",
    "cpu_flags",
    "fast_bfloat16",
    "fuse_for_inference",
    "full_precision",
    "mixed_precision",
    "mixed_precision_runs",
    "onednn_bfloat16",
    "run_in_bfloat16",
]

PRECISIONS = ("float32", "bfloat16")
"""Inference precisions of the detail networks."""


AUTOCAST_DEVICES: tuple[str, ...] = ("cuda",)
"""Device types on which mixed-precision training (the trainer's ``amp``) runs the networks
under bfloat16 autocast; elsewhere ``amp`` has no effect (a CPU's bfloat16 autocast can be slower
than float32, see :func:`fast_bfloat16`). The tests add ``"cpu"`` to run the mixed-precision code
paths on a CPU, whose autocast also computes convolutions and matrix products in bfloat16."""


def mixed_precision(device: torch.device | str, enabled: bool = True) -> AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``enabled`` and its type is one of
    :data:`AUTOCAST_DEVICES` (a GPU: one with native bfloat16, :func:`fast_bfloat16`), else a
    context that changes nothing. For the networks only: geometry computed inside it must be
    wrapped in :func:`full_precision`."""
    if mixed_precision_runs(device, enabled):
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def mixed_precision_runs(device: torch.device | str, enabled: bool = True) -> bool:
    """Whether :func:`mixed_precision` autocasts on ``device``."""
    device = torch.device(device)
    if not enabled or device.type not in AUTOCAST_DEVICES:
        return False
    return device.type != "cuda" or fast_bfloat16(device)


def full_precision(device: torch.device | str) -> AbstractContextManager:
    """Autocast off on ``device`` (inside :func:`mixed_precision`): the camera and the pose
    in float32, since bfloat16's 8-bit mantissa puts a pixel coordinate near 200 up to half a
    pixel off, as much as the flow of a millimetre's deformation that it measures."""
    return torch.autocast(torch.device(device).type, enabled=False)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none: not Linux)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    return _read_cpu_flags("/proc/cpuinfo")


def _read_cpu_flags(path: str) -> frozenset[str]:
    """The words after ``flags:`` on the first such line of a ``/proc/cpuinfo`` file (empty
    where it cannot be read or has none)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def fast_bfloat16(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 convolutions are known to be fast on ``device``: a CUDA GPU with
    bfloat16 support, or a CPU with AMX tiles (``amx_bf16``). Elsewhere they may be no faster
    than float32 (without AMX, ``torch.autocast`` in bfloat16 was slower on an AVX-512 BF16 CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        # native support only: before Ampere bfloat16 is emulated, slower than float32
        return bool(
            torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        )
    return "amx_bf16" in cpu_flags()


def _cast(value: Any, dtype: torch.dtype, channels_last: bool) -> Any:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return value
        value = value.to(dtype)
        if channels_last and value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(_cast(v, dtype, channels_last) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype, channels_last) for v in value)
    if isinstance(value, dict):
        return {k: _cast(v, dtype, channels_last) for k, v in value.items()}
    return value


def _pointwise_conv_op() -> Any:
    """oneDNN's convolution with a fused ReLU (the kernel PyTorch's compiler emits), or None
    where this build of PyTorch lacks it."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        return None if mkldnn is None else mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


@functools.cache
def onednn_bfloat16() -> bool:
    """Whether this CPU's oneDNN computes bfloat16 convolutions (AVX-512 BW/VL/DQ or
    AVX-NE-CONVERT). Without them its kernels refuse bfloat16 ("bf16 path needs the cpu support
    ..."), while PyTorch's own convolution still computes it (slowly)."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(mkldnn is not None and mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class ConvReLU(nn.Module):
    """``relu(conv(x))`` for inference, with a BatchNorm in eval mode folded into the
    convolution's weights; on a CPU, one oneDNN call with the ReLU fused in (no pass over the
    output for the normalisation or the ReLU)."""

    def __init__(
        self, conv: nn.Conv2d, norm: nn.BatchNorm2d | None = None, *, relu: bool = True
    ) -> None:
        super().__init__()
        w = conv.weight.detach().double()
        b = (
            conv.bias.detach().double()
            if conv.bias is not None
            else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
        )
        if norm is not None:  # y = (conv - mean) / sqrt(var + eps) * gamma + beta
            scale = torch.rsqrt(norm.running_var.double() + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight.detach().double()
            shift = -norm.running_mean.double() * scale
            if norm.bias is not None:
                shift = shift + norm.bias.detach().double()
            w = w * scale[:, None, None, None]
            b = b * scale + shift
        dtype = conv.weight.dtype
        self.weight = nn.Parameter(w.to(dtype), requires_grad=False)
        self.bias = nn.Parameter(b.to(dtype), requires_grad=False)
        self.stride = list(conv.stride)
        self.padding = list(conv.padding)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.relu = relu
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("ConvReLU: only explicit zero padding is supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = _pointwise_conv_op()
        if (
            op is not None
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype
            and (x.dtype != torch.bfloat16 or onednn_bfloat16())
        ):
            attr = "relu" if self.relu else "none"
            return op(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                self.groups, attr, [], "",
            )  # fmt: skip
        y = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        return torch.relu_(y) if self.relu else y


class InstanceNormChannelsLast(nn.Module):
    """Instance normalisation without affine parameters or running statistics, computed per
    sample as a batch normalisation of that sample (the same statistics: one sample's channels
    over its pixels), which works on channels-last tensors without the copy to a contiguous
    layout that ``nn.InstanceNorm2d`` makes."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # one unbatched (C, H, W) sample, as nn.InstanceNorm2d takes it
            return self(x[None])[0]
        if x.dim() != 4:
            raise ValueError(f"InstanceNormChannelsLast: expected 3D or 4D input, got {x.dim()}D")
        parts = [
            F.batch_norm(x[i : i + 1], None, None, training=True, momentum=0.0, eps=self.eps)
            for i in range(x.shape[0])
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def fuse_for_inference(module: nn.Module) -> int:
    """Rewrite, in place, the layers of ``module`` for inference: in every ``nn.Sequential``,
    a ``Conv2d`` followed by an eval-mode ``BatchNorm2d`` and/or a ``ReLU`` becomes one
    :class:`ConvReLU` (the layers it absorbed become ``nn.Identity``, so the indices stay);
    every ``InstanceNorm2d`` without affine parameters or running statistics becomes
    :class:`InstanceNormChannelsLast`. Returns the number of layers rewritten."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, nn.InstanceNorm2d)
                and not child.affine
                and not child.track_running_stats
            ):
                setattr(parent, name, InstanceNormChannelsLast(child.eps))
                count += 1
        if not isinstance(parent, nn.Sequential):
            continue
        layers = list(parent)
        i = 0
        while i < len(layers):
            conv = layers[i]
            if (
                not isinstance(conv, nn.Conv2d)
                or conv.padding_mode != "zeros"
                or isinstance(conv.padding, str)
            ):
                i += 1
                continue
            j = i + 1
            norm = None
            if j < len(layers) and isinstance(layers[j], nn.BatchNorm2d):
                bn = layers[j]
                if bn.training or not bn.track_running_stats:
                    i += 1
                    continue
                norm, j = bn, j + 1
            relu = j < len(layers) and isinstance(layers[j], nn.ReLU)
            if norm is None and not relu:
                i += 1
                continue
            end = j + 1 if relu else j
            parent[i] = ConvReLU(conv, norm, relu=relu)
            for k in range(i + 1, end):
                parent[k] = nn.Identity()
            count += 1
            i = end
    return count


def run_in_bfloat16(modules: Iterable[nn.Module], *, channels_last: bool | None = None) -> None:
    """Convert each module, in place, to run in bfloat16 behind float32 inputs and outputs.

    The layers are rewritten for inference (:func:`fuse_for_inference`), the weights stored in
    bfloat16 (and channels-last when ``channels_last``; default on a CPU); a forward pre-hook
    casts the floating inputs to bfloat16 and a forward hook casts the floating outputs back to
    float32. Meant for inference: the module's layers and parameters are changed in place
    (load the checkpoint again for float32).
    """
    for module in modules:
        params = list(module.parameters())
        on_cpu = not params or params[0].device.type == "cpu"
        cl = on_cpu if channels_last is None else bool(channels_last)
        module.eval()
        fuse_for_inference(module)
        module.to(torch.bfloat16)
        if cl:
            module.to(memory_format=torch.channels_last)

        def cast_in(_m: nn.Module, args: tuple[Any, ...], cl: bool = cl) -> tuple[Any, ...]:
            return _cast(args, torch.bfloat16, cl)

        def cast_out(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
            return _cast(out, torch.float32, False)

        module.register_forward_pre_hook(cast_in)
        module.register_forward_hook(cast_out)

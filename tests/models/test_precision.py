"""Inference rewrites of the detail networks (models.precision): the same function as the
layers they replace, and bfloat16 behind float32 inputs and outputs."""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models.precision as precision
from models.deretouch import DeRetouchUNet
from models.pix2pix import ResnetGenerator
from models.precision import (
    ConvReLU,
    InstanceNormChannelsLast,
    check_precision,
    fuse_for_inference,
    run_in_bfloat16,
)


def _randomise_batch_norms(net: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters away from their initial 0 / 1, so that folding
    them into the convolutions has something to fold."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) * 2.0 + 0.2)
            m.weight.data.copy_(torch.randn(n, generator=gen) * 0.5 + 1.0)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)


@pytest.mark.parametrize("fused_op", [True, False])
@pytest.mark.parametrize(
    ("stride", "padding", "groups", "bias"), [(1, 1, 1, True), (2, 0, 1, False), (1, 2, 2, True)]
)
def test_conv_relu_matches_conv_batchnorm_relu(
    monkeypatch, fused_op, stride, padding, groups, bias
):
    """ConvReLU == relu(bn(conv(x))) (eval BN), through oneDNN's fused kernel and without it."""
    if not fused_op:
        monkeypatch.setattr(precision, "_pointwise_conv_op", lambda: None)
    elif precision._pointwise_conv_op() is None:
        pytest.skip("this PyTorch build has no fused oneDNN convolution")
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(6)
    seq = nn.Sequential(conv, bn, nn.ReLU()).eval()
    _randomise_batch_norms(seq, gen)
    x = torch.randn(2, 4, 13, 11, generator=gen)
    with torch.no_grad():
        ref = seq(x)
        got = ConvReLU(conv, bn)(x)
        got_plain = ConvReLU(conv, None, relu=False)(x)
    assert (ref == 0).any() and (ref > 0).any()  # the ReLU clipped something
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_plain, conv(x).detach(), rtol=1e-5, atol=1e-5)


def test_conv_relu_in_bfloat16_without_onednn_bfloat16_uses_torchs_convolution(monkeypatch):
    """On a CPU whose oneDNN has no bfloat16 kernels (no AVX-512 BW/VL/DQ nor AVX-NE-CONVERT:
    "mkldnn_convolution: bf16 path needs the cpu support ..."), ConvReLU computes bfloat16 with
    PyTorch's own convolution instead of calling the fused oneDNN kernel."""
    calls = []

    def refusing_op(x, *args):
        calls.append(x.dtype)
        if x.dtype == torch.bfloat16:
            raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx512bw")
        return torch.relu(F.conv2d(x, args[0], args[1], args[3], args[2], args[4], args[5]))

    monkeypatch.setattr(precision, "_pointwise_conv_op", lambda: refusing_op)
    monkeypatch.setattr(precision, "onednn_bfloat16", lambda: False)
    gen = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 9, 8, generator=gen)
    with torch.no_grad():
        got32 = ConvReLU(conv)(x)  # float32 keeps the fused kernel
        ref32 = torch.relu(conv(x))
        conv16 = copy.deepcopy(conv).to(torch.bfloat16)
        got16 = ConvReLU(conv16)(x.to(torch.bfloat16))
        ref16 = torch.relu(conv16(x.to(torch.bfloat16)))
    assert calls == [torch.float32] and got16.dtype == torch.bfloat16
    torch.testing.assert_close(got32, ref32, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got16, ref16)


def test_instance_norm_channels_last_matches_instance_norm():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 9, 7, generator=gen) * 3.0 + torch.arange(5.0)[:, None, None]
    ref = nn.InstanceNorm2d(5)(x)
    norm = InstanceNormChannelsLast()
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(norm(inp), ref, rtol=1e-5, atol=1e-5)
    # brute force: each sample's channel over its pixels, biased variance
    m = x.mean(dim=(2, 3), keepdim=True)
    v = ((x - m) ** 2).mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(norm(x), (x - m) / torch.sqrt(v + 1e-5), rtol=1e-5, atol=1e-5)


def _unet() -> nn.Module:
    torch.manual_seed(0)
    net = DeRetouchUNet(width=4).eval()
    _randomise_batch_norms(net, torch.Generator().manual_seed(2))
    return net


def test_fuse_for_inference_keeps_the_networks_function():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for net, inp, n_rewritten in (
        (_unet(), x, 18),  # 9 double convolutions: (conv, BN, ReLU) x 2
        (ResnetGenerator(9, 1, filters=4, n_blocks=2).eval(), torch.randn(2, 9, 32, 32), None),
    ):
        with torch.no_grad():
            ref = net(inp)
            fused = copy.deepcopy(net)
            count = fuse_for_inference(fused)
            got = fused(inp)
        kinds = {type(m) for m in fused.modules()}
        assert not kinds & {nn.BatchNorm2d, nn.InstanceNorm2d}
        assert count > 0 and (n_rewritten is None or count == n_rewritten)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_fuse_for_inference_leaves_training_batch_norms():
    net = _unet().train()
    count = fuse_for_inference(net)
    assert not any(isinstance(m, ConvReLU) for m in net.modules())
    assert count == 0


def test_run_in_bfloat16_float32_in_and_out():
    net = _unet()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = net(x)
        run_in_bfloat16([net])
        got = net(x)
    assert all(p.dtype == torch.bfloat16 for p in net.parameters())
    assert got.dtype == torch.float32 and got.shape == ref.shape
    err = (got - ref).abs()
    assert 0 < float(err.max()) < 0.05  # rounded (bfloat16: an 8-bit mantissa), not garbage
    assert float(err.mean()) < 0.01


def test_check_precision():
    assert check_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="float32, bfloat16"):
        check_precision("float16")


def test_reconstructor_bfloat16_keeps_the_coarse_face():
    from facehd.morphable import load_model
    from models.reconstruct import Reconstructor
    from models.system import FaceSystem
    from models.train import tiny_cpu_train_config

    cfg = tiny_cpu_train_config()
    model = load_model("facehd-synth")
    crop = np.random.default_rng(0).integers(60, 200, size=(1, 224, 224, 3), dtype=np.uint8)
    recs = {}
    for p in ("float32", "bfloat16"):
        torch.manual_seed(0)
        system = FaceSystem(cfg.model, model, cfg.image_size).eval()
        recon = Reconstructor(system, cfg, precision=p)
        assert recon.precision == p
        recs[p] = recon.run_crops(crop)[0]
    a, b = recs["float32"], recs["bfloat16"]
    np.testing.assert_array_equal(a.m0, b.m0)  # the analyzer stays float32
    np.testing.assert_array_equal(a.rotation, b.rotation)
    for name in ("deformation", "displacement", "texture"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and not np.array_equal(x, y)
        err, scale = np.abs(x - y), float(np.abs(x).max())
        # measured: largest 1.6% (deformation), 2.5% (displacement), 0.3% (texture) of the
        # map's range; mean ~0.3%
        assert float(err.max()) < 0.05 * scale and float(err.mean()) < 0.01 * scale
    assert 0 < float(np.abs(a.m1 - b.m1).max()) < 0.01  # mm


def test_fast_bfloat16_reads_the_cpu_flags_and_the_cli_says_when_it_is_not(monkeypatch, capsys):
    from types import SimpleNamespace

    import facehd.cli as cli

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert precision.fast_bfloat16("cpu")
    recon = SimpleNamespace(
        precision="bfloat16",
        system=SimpleNamespace(device=torch.device("cpu"), trained_stages=None),
    )
    cli._model_notes(recon, "model.pt")
    assert "bfloat16" not in capsys.readouterr().out
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr(precision, "onednn_bfloat16", lambda: True)
    assert not precision.fast_bfloat16("cpu")
    cli._model_notes(recon, "model.pt")
    said = " ".join(capsys.readouterr().out.split())
    assert "no bfloat16 matrix units" in said and "AMX" in said
    # AVX2 alone: oneDNN has no bfloat16 kernels, PyTorch's own are far slower than float32
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(precision, "onednn_bfloat16", lambda: False)
    cli._model_notes(recon, "model.pt")
    said = " ".join(capsys.readouterr().out.split())
    assert "no bfloat16 convolution kernels" in said and "tens of times slower" in said
    recon.precision = "float32"
    cli._model_notes(recon, "model.pt")
    assert capsys.readouterr().out == ""


def test_fuse_for_inference_leaves_convolutions_it_cannot_fold():
    """``padding="same"``, a reflect-padded convolution and one with nothing after it stay as
    they are; the rewritten network computes the same."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 2, 1),
    ).eval()
    _randomise_batch_norms(net, torch.Generator().manual_seed(4))
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        ref = net(x)
        assert fuse_for_inference(net) == 1  # conv 5 with its batch norm
        got = net(x)
    assert [type(m).__name__ for m in net] == [
        "Conv2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "ConvReLU", "Identity", "Conv2d",
    ]  # fmt: skip
    assert not net[5].relu
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_cpu_flags_read_the_flags_line_and_nothing_off_linux(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_bytes(
        b"processor\t: 0\nmodel name\t: Xeon\xae Gold\nvmx flags\t: ept vpid\n"
        b"flags\t\t: fpu sse2 avx512f amx_bf16\nbugs\t\t: spectre_v1\n"
        b"processor\t: 1\nflags\t\t: fpu\n"
    )
    # a non-ASCII model name does not stop the read; "vmx flags" is not the flags line
    assert precision._read_cpu_flags(str(info)) == {"fpu", "sse2", "avx512f", "amx_bf16"}
    assert precision._read_cpu_flags(str(tmp_path / "missing")) == frozenset()
    (tmp_path / "none").write_text("processor\t: 0\n")
    assert precision._read_cpu_flags(str(tmp_path / "none")) == frozenset()
    precision.cpu_flags.cache_clear()
    monkeypatch.setattr(precision.sys, "platform", "darwin")
    try:
        assert precision.cpu_flags() == frozenset()
    finally:
        precision.cpu_flags.cache_clear()


class _Out(NamedTuple):
    y: torch.Tensor
    index: torch.Tensor


class _Recorder(nn.Module):
    """A convolution whose forward takes a tensor, an integer index and a dict, and returns a
    NamedTuple and a dict; it records the inputs it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.seen: list = []

    def forward(self, x, index, extra):
        self.seen.append((x, index, extra))
        y = self.conv(x * extra["scale"])
        return _Out(y, index + 1), {"mean": y.mean(), "index": index}


@pytest.mark.parametrize("channels_last", [None, False, True])
def test_run_in_bfloat16_casts_floating_values_in_containers(channels_last):
    torch.manual_seed(0)
    net = _Recorder()
    x = torch.rand(2, 3, 5, 4)
    index = torch.tensor([1, 2])
    with torch.no_grad():
        ref, _ = net(x, index, {"scale": torch.tensor(2.0)})
        run_in_bfloat16([net], channels_last=channels_last)
        (y, idx), extra = net(x, index, {"scale": torch.tensor(2.0)})
    seen_x, seen_index, seen_extra = net.seen[-1]
    assert seen_x.dtype == torch.bfloat16 and seen_extra["scale"].dtype == torch.bfloat16
    assert seen_index.dtype == torch.int64 and idx.dtype == torch.int64
    torch.testing.assert_close(idx, index + 1)
    assert y.dtype == torch.float32 and extra["mean"].dtype == torch.float32
    assert extra["index"].dtype == torch.int64
    torch.testing.assert_close(y, ref.y, rtol=0.02, atol=0.02)
    cl = channels_last is not False  # default: channels-last on a CPU
    fmt = torch.channels_last
    assert seen_x.is_contiguous(memory_format=fmt) == cl
    assert net.conv.weight.is_contiguous(memory_format=fmt) == cl
    assert seen_x.is_contiguous() != cl


def test_run_in_bfloat16_puts_a_training_network_in_eval_mode():
    """The batch norms of a network left in training mode are folded with their running
    statistics (what eval mode computes), not left to normalise each batch."""
    net = _unet().train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = copy.deepcopy(net).eval()(x)
        run_in_bfloat16([net])
        got = net(x)
    assert not net.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert float((got - ref).abs().max()) < 0.05


def test_conv_relu_refuses_padding_it_cannot_express():
    for conv in (nn.Conv2d(3, 4, 3, padding="same"), nn.Conv2d(3, 4, 3, padding_mode="reflect")):
        with pytest.raises(ValueError, match="zero padding"):
            ConvReLU(conv)


def test_instance_norm_channels_last_keeps_its_eps_and_takes_unbatched_input():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 5, generator=gen) * 0.05  # variance near eps: eps matters
    norm = InstanceNormChannelsLast(eps=0.01)
    ref = F.instance_norm(x, eps=0.01)
    torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-5)
    assert float((F.instance_norm(x) - ref).abs().max()) > 0.1
    # one unbatched (C, H, W) sample, as nn.InstanceNorm2d takes it (not (N, C, L))
    torch.testing.assert_close(norm(x[0]), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm(x[0]), nn.InstanceNorm2d(3, eps=0.01)(x[0]))
    with pytest.raises(ValueError, match="3D or 4D"):
        norm(x[None])


def test_fuse_for_inference_leaves_norms_with_parameters_or_statistics():
    """An instance norm with affine parameters or running statistics, and a batch norm that
    normalises each batch (no running statistics), are not rewritten; the network computes
    the same."""
    torch.manual_seed(6)
    affine = nn.InstanceNorm2d(4, affine=True)
    affine.weight.data.uniform_(0.5, 2.0)
    affine.bias.data.uniform_(-1.0, 1.0)
    tracked = nn.InstanceNorm2d(4, track_running_stats=True)
    tracked.running_mean.uniform_(-1.0, 1.0)
    tracked.running_var.uniform_(0.5, 2.0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        affine,
        nn.Conv2d(4, 4, 3, padding=1),
        tracked,
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4, track_running_stats=False),
        nn.ReLU(),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = net(x)
        assert fuse_for_inference(net) == 0
        got = net(x)
    assert [type(m).__name__ for m in net] == [
        "Conv2d", "InstanceNorm2d", "Conv2d", "InstanceNorm2d", "Conv2d", "BatchNorm2d", "ReLU",
    ]  # fmt: skip
    torch.testing.assert_close(got, ref)

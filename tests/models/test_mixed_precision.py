"""Mixed-precision training (``amp``): the networks in bfloat16, the geometry in float32.

On a GPU the trainer runs its networks under bfloat16 autocast. The CPU's autocast also computes
convolutions and matrix products in bfloat16, so these tests run the same code on a CPU by adding
``"cpu"`` to :data:`models.precision.AUTOCAST_DEVICES`.
"""

from __future__ import annotations

import math

import pytest
import torch
from hrn_testdata import tiny_config

from facehd.morphable import load_model
from models.hrn import HRNOutput
from models.precision import full_precision, mixed_precision
from models.system import FaceSystem


@pytest.fixture()
def cpu_autocast(monkeypatch):
    monkeypatch.setattr("models.precision.AUTOCAST_DEVICES", ("cuda", "cpu"))


def test_mixed_precision_is_bfloat16_autocast_only_where_enabled(cpu_autocast):
    a = torch.randn(8, 8)
    with mixed_precision("cpu"):
        assert (a @ a).dtype == torch.bfloat16
        with full_precision("cpu"):
            assert (a @ a).dtype == torch.float32
    with mixed_precision("cpu", enabled=False):
        assert (a @ a).dtype == torch.float32


def test_amp_has_no_effect_on_a_cpu_by_default():
    a = torch.randn(8, 8)
    with mixed_precision("cpu"):
        assert (a @ a).dtype == torch.float32


class _Recorder(torch.nn.Module):
    """Stands in for the HRN module: projects the position map with the ``project`` it is
    given, as the texture re-alignment does, and returns zero maps."""

    def forward(self, pos, texture, valid, project):
        b, _, h, w = pos.shape
        self.autocast_on = torch.is_autocast_enabled("cpu")
        points = pos.permute(0, 2, 3, 1).reshape(b, h * w, 3)
        self.points = points
        self.pixels = project(points)
        zero = torch.zeros(b, 1, h, w)
        return HRNOutput(torch.zeros(b, 3, h, w), zero, texture, None)


def test_the_realignment_projects_in_float32_under_mixed_precision(cpu_autocast):
    """The re-alignment's flow is the difference of two projections a millimetre's deformation
    apart (about a pixel): computed in bfloat16, each pixel coordinate (up to 224) would be off
    by up to half a pixel. Under autocast they must equal the float32 projection."""
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.image_size = 224
    system = FaceSystem(cfg.model, load_model("facehd-synth"), cfg.image_size)
    images = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        coarse = system.coarse(images)
        rec = _Recorder()
        system.details(images, coarse, hrn=rec, deretouch=False, autocast=True)
        assert rec.autocast_on  # the module did run under autocast
        reference = system.project(coarse.pose(rec.points))
        with mixed_precision("cpu"):  # what the projection was before it turned autocast off
            rounded = system.project(coarse.pose(rec.points))
    inside = (reference >= 0).all(-1) & (reference < 224).all(-1)
    assert inside.float().mean() > 0.3
    assert rec.pixels.dtype == torch.float32
    assert (rec.pixels - reference).abs().max() < 1e-3
    # the check can fail: bfloat16 moves the same pixels by a sizable fraction of a pixel
    assert (rounded.float() - reference)[inside].abs().max() > 0.1


def test_every_stage_trains_under_mixed_precision(hrn_data, tmp_path, cpu_autocast, one_thread):
    """The three stages run with their networks in bfloat16 (the detail generators' and the
    analyzer's convolutions see bfloat16 inputs), every logged loss is finite, and the saved
    networks are float32."""
    cfg = tiny_config()
    assert cfg.amp
    seen: dict[str, set[torch.dtype]] = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, set()).add(output.dtype)

        return hook

    made = FaceSystem.__init__

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        hrn = self.hrn
        for name, net in (
            ("analyzer", hrn.net_recon),
            ("mid_net", hrn.mid_net),
            ("high_net", hrn.high_net),
            ("deretouch", hrn.deretouch.generator),
        ):
            conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
            conv.register_forward_hook(record(name))

    values: list[dict] = []

    def callback(stage, step, total, logged):
        values.append(dict(logged, stage=stage))

    import unittest.mock as mock

    from models.train import train

    with mock.patch.object(FaceSystem, "__init__", init):
        train(
            cfg, tmp_path / "run", photos=hrn_data.photos, priors=hrn_data.priors,
            pairs=hrn_data.pairs, callback=callback,
        )  # fmt: skip
    for name in ("analyzer", "mid_net", "high_net", "deretouch"):
        assert torch.bfloat16 in seen.get(name, set()), name
    assert {v["stage"] for v in values} == {"base", "deretouch", "hrn"}
    for v in values:
        for key, x in v.items():
            if isinstance(x, float):
                assert math.isfinite(x), (v["stage"], key, x)
    from models.checkpoints import read_checkpoint

    assert (
        "mixed precision: the networks in bfloat16 on cpu"
        in (tmp_path / "run" / "train.log").read_text()
    )
    state = read_checkpoint(tmp_path / "run" / "model.pt")["state"]
    dtypes = {t.dtype for part in state.values() for t in part.values() if t.is_floating_point()}
    assert dtypes == {torch.float32}


def test_the_paper_preset_trains_under_mixed_precision(hrn_data, tmp_path, cpu_autocast):
    """A step of each stage of the ``paper`` preset (its networks and sizes, as ``facehd perf
    hrn-train-paper`` runs them on a GPU) under bfloat16 autocast: every logged loss finite."""
    from models.perf_entries import paper_speed_config
    from models.precision import onednn_bfloat16
    from models.train import train

    if not onednn_bfloat16():
        # PyTorch's own bfloat16 convolutions: ~60x float32's time on an AVX2 CPU, so the paper's
        # networks take tens of minutes here (the tiny preset above runs the same code)
        pytest.skip("this CPU's oneDNN has no bfloat16 kernels (no AVX-512 / AVX-NE-CONVERT)")
    cfg = paper_speed_config("cpu", batch_size=1)
    assert cfg.amp
    for stage in ("base", "deretouch", "hrn"):
        getattr(cfg, stage).steps = 2
    values: list[tuple[str, dict]] = []
    train(
        cfg, tmp_path / "run", photos=hrn_data.photos, priors=hrn_data.priors,
        pairs=hrn_data.pairs, callback=lambda s, k, n, v: values.append((s, v)),
    )  # fmt: skip
    assert [s for s, _ in values] == ["base"] * 2 + ["deretouch"] * 2 + ["hrn"] * 2
    kinds = [v["kind"] for s, v in values if s == "hrn"]
    assert kinds == ["self", "sup"]
    for stage, v in values:
        for key, x in v.items():
            if isinstance(x, float):
                assert math.isfinite(x), (stage, key, x)


@pytest.mark.parametrize("native", [True, False])
def test_a_gpu_without_native_bfloat16_trains_in_float32(monkeypatch, native):
    """Before Ampere, CUDA's bfloat16 is emulated (slower than float32): ``amp`` autocasts only
    where the GPU has it natively, and says which."""
    from models import precision

    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert precision.mixed_precision_runs("cuda:0") is native
    assert asked and not any(asked)  # emulation never counts
    assert precision.mixed_precision_runs("cuda:0", enabled=False) is False
    assert precision.mixed_precision_runs("cpu") is False


def test_the_cuda_random_state_is_the_training_devices_alone(monkeypatch):
    """A checkpoint keeps the generator of the device the process trains on, and a resume sets
    that device's: not every visible GPU's, which a machine with fewer GPUs could not restore."""
    from models import train as train_module

    calls = []
    marker = torch.arange(4, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: calls.append(("get", d)) or marker)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: calls.append(("set", s, d)))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("all GPUs saved"))
    state = train_module._rng_state(torch.device("cuda", 3))
    assert state["cuda"] is marker and calls == [("get", torch.device("cuda", 3))]
    before = torch.get_rng_state()
    train_module._set_rng_state(state, torch.device("cuda", 1))
    assert calls[-1] == ("set", marker, torch.device("cuda", 1))
    assert torch.equal(torch.get_rng_state(), before)
    assert "cuda" not in train_module._rng_state(torch.device("cpu"))


def test_nvdiffrast_renders_on_the_systems_device(monkeypatch):
    """The system's nvdiffrast renderer is made for the system's device, not for the current
    CUDA device (a run on ``cuda:1`` rendered on ``cuda:0``)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "nvdiffrast_reference", Path(__file__).parents[1] / "facehd" / "nvdiffrast_reference.py"
    )
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    from types import SimpleNamespace

    from facehd.render import nvdiffrast_backend

    stand_in = SimpleNamespace(
        rasterize=reference.rasterize,
        interpolate=reference.interpolate,
        texture=reference.texture,
        RasterizeCudaContext=reference.RasterizeCudaContext,
    )
    monkeypatch.setattr(nvdiffrast_backend, "_import_nvdiffrast", lambda: stand_in)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = tiny_config()
    system = FaceSystem(cfg.model, load_model("facehd-synth"), cfg.image_size, "nvdiffrast")
    backend = system.renderer().backend
    assert backend.name == "nvdiffrast"
    assert backend.device == system.device == torch.device("cpu")
    assert backend.ctx.device == system.device
    # and it renders there: the base render of the mean face equals the CPU backend's
    with torch.no_grad():
        images = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
        coarse = system.coarse(images, None)
        cpu = FaceSystem(cfg.model, load_model("facehd-synth"), cfg.image_size)
        cpu.load_state_dict(system.state_dict())
        a = system.render_coarse(coarse)
        b = cpu.render_coarse(cpu.coarse(images, None))
    assert a.image.device == system.device
    inside = a.mask & b.mask
    assert inside.sum() > 100
    assert (a.image[inside] - b.image[inside]).abs().max() < 1e-3

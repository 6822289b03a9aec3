"""The model's render path (the base render, the texture unwrap, R1, R2 and a photometric loss's
gradient) on the nvdiffrast backend's own code, run on the CPU reference of nvdiffrast's
primitives, against the CPU backend: a GPU run renders and trains on what the CPU run does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from hrn_testdata import tiny_config

from facehd.morphable import load_model
from models.analyzer import Coefficients
from models.losses import photometric_loss
from models.system import FaceSystem

_spec = importlib.util.spec_from_file_location(
    "nvdiffrast_reference", Path(__file__).parents[1] / "facehd" / "nvdiffrast_reference.py"
)
nvdiffrast_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nvdiffrast_reference)


def test_the_systems_renders_and_gradients_match_the_cpu_backend() -> None:
    model = load_model("facehd-synth")
    cpu = FaceSystem(tiny_config().model, model, 224).eval()
    gpu = FaceSystem(tiny_config().model, model, 224, backend=nvdiffrast_reference.backend())
    gpu.load_state_dict(cpu.state_dict())
    gpu.eval()
    n_id, n_exp, n_tex, *_ = cpu.hrn.net_recon.layout.sizes
    g = torch.Generator().manual_seed(3)
    gamma = torch.zeros(1, 27)
    gamma[0, [2, 11, 20]] = 0.3
    truth = Coefficients(
        torch.randn(1, n_id, generator=g),
        0.5 * torch.randn(1, n_exp, generator=g),
        0.5 * torch.randn(1, n_tex, generator=g),
        torch.tensor([[0.1, -0.3, 0.05]]),
        gamma,
        torch.zeros(1, 3),
    )
    with torch.no_grad():
        coarse = cpu.coarse(torch.zeros(1, 3, 224, 224), truth)
        photo = cpu.render_coarse(coarse).image.permute(0, 3, 1, 2).float()
    out = {}
    for name, system in (("cpu", cpu), ("nvdiffrast", gpu)):
        exp = truth.exp.clone().requires_grad_(True)
        coarse = system.coarse(photo, truth._replace(exp=exp, angle=truth.angle + 0.03))
        r0 = system.render_coarse(coarse)
        detail = system.details(photo, coarse)
        r1 = system.render_mid(detail, coarse)
        r2 = system.render_high(detail, coarse)
        loss = sum(
            photometric_loss(r.image.permute(0, 3, 1, 2), photo, r.mask[:, None].float())
            for r in (r0, r2)
        )
        loss.backward()
        out[name] = (r0, r1, r2, detail, exp.grad.flatten())
    a, b = out["cpu"], out["nvdiffrast"]
    for ra, rb in zip(a[:3], b[:3], strict=True):
        assert int(ra.mask.sum()) > 20000
        assert int((ra.mask != rb.mask).sum()) <= 0.002 * int(ra.mask.sum())
        diff = (ra.image - rb.image).detach().abs()[ra.mask & rb.mask]
        assert float(diff.max()) < 5e-3 and float(diff.quantile(0.99)) < 1e-4
    da, db = a[3], b[3]
    assert int((da.valid != db.valid).sum()) <= 0.002 * int(da.valid.sum())
    assert float((da.texture - db.texture).detach().abs().max()) < 1e-3
    assert float((da.maps.displacement - db.maps.displacement).detach().abs().max()) < 1e-4
    ga, gb = a[4], b[4]
    assert float(ga.norm()) > 0
    assert float(ga @ gb / (ga.norm() * gb.norm())) > 0.999
    assert abs(float(gb.norm() / ga.norm()) - 1.0) < 0.01

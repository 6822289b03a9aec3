"""The training-speed and reconstruction-latency perf entries run (no timing assertions)."""

from __future__ import annotations

from facehd import perf


def test_training_and_reconstruction_entries_run_quick(one_thread):
    registry = perf.discover()
    rows = registry["hrn-train"].fn(True)
    assert [r.metric for r in rows] == ["base stage", "deretouch stage", "hrn stage"]
    assert all(r.unit == "it/s" and r.value > 0 for r in rows)
    rows = registry["hrn-reconstruct"].fn(True)
    assert rows and all(r.unit == "ms" and r.value > 0 and r.target for r in rows)
    assert [r.metric for r in rows] == [
        "tiny-cpu: M0, maps, M1 (+ M2 mesh)",
        "tiny-cpu: compute floor (GFLOP / one-core matmul peak)",
        "tiny-cpu, bfloat16: M0, maps, M1 (+ M2 mesh)",
        "tiny-cpu, bfloat16: compute floor (GFLOP / one-core matmul peak)",
    ]
    # the floor is arithmetic at the matmul peak: never above the measured run time
    assert rows[1].value <= rows[0].value
    # the bfloat16 run says how far it lands from float32's with the same weights, and counts
    # the same arithmetic (its fused layers are counted on the networks as trained)
    assert "vs float32 (same weights)" in rows[2].note and "M0 the same" in rows[2].note
    gflop = [r.note.split(" GFLOP of")[0].rsplit(" ", 1)[1] for r in (rows[0], rows[2])]
    assert gflop[0] == gflop[1] and float(gflop[0]) > 0


def test_count_gflop_matches_the_analytic_count_of_a_convolution_and_a_product():
    import torch

    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.rand(2, 4, 16, 20)
    # one multiply-add (2 FLOP) per output element, input channel and kernel tap
    expected = 2 * (2 * 8 * 16 * 20) * 4 * 9
    assert perf.count_gflop(lambda: conv(x)) * 1e9 == expected
    a, b = torch.rand(5, 7), torch.rand(7, 3)
    assert perf.count_gflop(lambda: a @ b) * 1e9 == 2 * 5 * 7 * 3
    assert perf.count_gflop(lambda: a + 1.0) == 0.0


def test_matmul_peak_is_positive_and_finite(one_thread):
    import math

    peak = perf.matmul_peak_gflops(n=128, repeat=1)
    assert peak > 0 and math.isfinite(peak)


def test_multiview_entry_runs_quick(one_thread):
    rows = perf.discover()["hrn-multiview"].fn(True)
    assert [r.metric for r in rows] == ["tiny-cpu: 3 views, 5 iterations"]
    assert rows[0].unit == "s" and rows[0].value > 0 and rows[0].passed is not None


def test_paper_training_entry_says_when_no_gpu_is_there(monkeypatch):
    import math

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rows = perf.discover()["hrn-train-paper"].fn(True)
    assert len(rows) == 1 and math.isnan(rows[0].value) and "no CUDA device" in rows[0].note


def test_paper_speed_config_keeps_the_paper_networks():
    from models.config import paper_model_config
    from models.perf_entries import paper_speed_config
    from models.train import paper_train_config

    cfg = paper_speed_config("cpu", batch_size=2)
    paper = paper_train_config()
    assert cfg.model == paper_model_config() == paper.model
    assert cfg.morphable.name == "facehd-synth" and paper.morphable.name == "bfm"
    assert (cfg.base.steps, cfg.hrn.steps) == (paper.base.steps, paper.hrn.steps)
    assert cfg.base.batch_size == cfg.hrn.batch_size == 2 and cfg.device == "cpu"

"""``facehd perf`` entries of the models package."""

from __future__ import annotations

import torch

from facehd.perf import PerfRow, register, single_thread, timeit

ENTRY = "hrn-forward"


def _hrn_inputs(size: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(batch, 3, size, size, generator=g) * 50.0
    tex = torch.rand(batch, 3, size, size, generator=g)
    mask = torch.ones(batch, 1, size, size)
    return pos, tex, mask


def _project(points: torch.Tensor) -> torch.Tensor:
    """A frontal orthographic stand-in camera (1 px per mm around the image centre)."""
    return points[..., :2] + 112.0


@register(ENTRY, "HRN forward (batch 1, one core): tiny config and paper-size networks")
def hrn_forward(quick: bool) -> list[PerfRow]:
    from models.analyzer import FaceAnalyzer
    from models.config import tiny_cpu_model_config
    from models.hrn import HRN
    from models.pix2pix import ResnetGenerator

    rows: list[PerfRow] = []
    repeat = 1 if quick else 3
    with single_thread(), torch.no_grad():
        cfg = tiny_cpu_model_config().network
        tiny = HRN(cfg).eval()
        pos, tex, mask = _hrn_inputs(cfg.high_size)
        t = timeit(lambda: tiny(pos, tex, mask, _project), repeat)
        note = (
            f"maps {cfg.mid_size}/{cfg.high_size}, "
            f"{cfg.mid.n_blocks} blocks, {cfg.mid.filters} filters"
        )
        rows.append(
            PerfRow(ENTRY, "tiny HRN detail forward (with re-alignment)", t * 1e3, "ms", note=note)
        )

        mid = ResnetGenerator(6, 3).eval()
        x_mid = torch.randn(1, 6, 64, 64)
        t = timeit(lambda: mid(x_mid), repeat)
        rows.append(PerfRow(ENTRY, "paper mid_net forward", t * 1e3, "ms", note="6->3, 64x64"))
        if not quick:
            high = ResnetGenerator(9, 1).eval()
            x_high = torch.randn(1, 9, 256, 256)
            t = timeit(lambda: high(x_high), repeat)
            rows.append(
                PerfRow(ENTRY, "paper high_net forward", t * 1e3, "ms", note="9->1, 256x256")
            )

            analyzer = FaceAnalyzer().eval()
            img = torch.rand(1, 3, 224, 224)
            t = timeit(lambda: analyzer(img), repeat)
            rows.append(
                PerfRow(ENTRY, "face analyzer (ResNet-50) forward", t * 1e3, "ms", note="224x224")
            )

            paper = HRN().eval()
            pos, tex, mask = _hrn_inputs(256)
            t = timeit(lambda: paper(pos, tex, mask, _project), repeat)
            rows.append(
                PerfRow(
                    ENTRY,
                    "paper HRN detail forward (with re-alignment)",
                    t * 1e3,
                    "ms",
                    note="64/256",
                )
            )
    return rows

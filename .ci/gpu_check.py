"""The GPU checks, as one short script for a machine with a CUDA GPU.

Runs from the repository root without installing facehd, on a Python that has CUDA PyTorch,
NumPy, SciPy, h5py, PyYAML, Pillow, typer, rich and TensorBoard (none of open3d, trimesh,
mediapipe is needed)::

    python3 .ci/gpu_check.py --out gpu-check

It writes, under ``--out``:

- ``perf-paper.csv``: ``facehd perf hrn-train-paper``, each training stage of the ``paper``
  preset on the GPU (its networks and sizes, mixed precision where the GPU has bfloat16);
- ``resume.txt``: a short ``tiny-cpu`` run of the three stages on the GPU with amp and
  ``deterministic: true``, killed in the detail stage and resumed, against the same run
  uninterrupted: the networks that differ, and by how much;
- ``check.txt``: the device, torch's version, and each step's result.

``--device cpu`` runs the same steps on the CPU (a check of the script itself).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "models")]


class _Killed(Exception):
    pass


def _resume_check(out: Path, device: str) -> str:
    import torch
    from hrn_testdata import make_scans, tiny_config, write_truth_photos, write_truth_priors

    from models.checkpoints import read_checkpoint
    from models.train import train

    data = out / "data"
    if not (data / "photos.h5").is_file():
        make_scans(data / "scans", subjects=2, expressions=1, views=2)
        write_truth_priors(data / "scans", data / "priors.h5")
        write_truth_photos(data / "scans", data / "photos.h5")
    cfg = tiny_config()
    cfg.device = device
    cfg.deterministic = True
    kw = {"photos": data / "photos.h5", "priors": data / "priors.h5"}

    def kill(stage: str, step: int, total: int, values: dict) -> None:
        if stage == "hrn" and step == 3:
            raise _Killed()

    t0 = time.perf_counter()
    train(cfg, out / "run-full", **kw)
    seconds = time.perf_counter() - t0
    try:
        train(cfg, out / "run-cut", callback=kill, **kw)
    except _Killed:
        pass
    train(cfg, out / "run-cut", resume=True, **kw)
    a = read_checkpoint(out / "run-full" / "model.pt")["state"]
    b = read_checkpoint(out / "run-cut" / "model.pt")["state"]
    lines = [f"uninterrupted run: {seconds:.1f} s on {device}"]
    worst = 0.0
    for part in a:
        for key, t in a[part].items():
            if not torch.equal(t, b[part][key]):
                d = float((t.double() - b[part][key].double()).abs().max())
                worst = max(worst, d)
                lines.append(f"differs: {part}.{key} by up to {d:.3g}")
    lines.append(f"networks equal bit for bit: {worst == 0.0}; largest difference {worst:.3g}")
    (out / "resume.txt").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    import torch

    report = [f"torch {torch.__version__}, python {sys.version.split()[0]}"]
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            report.append("no CUDA device: nothing checked (--device cpu checks the script)")
            (out / "check.txt").write_text("\n".join(report) + "\n")
            print("\n".join(report))
            return 2
        report.append(f"device {torch.cuda.get_device_name(0)}")
    failed = 0
    steps = [("resume", lambda: _resume_check(out, args.device))]
    if args.device.startswith("cuda"):
        from facehd.cli import app

        def perf() -> str:
            from typer.testing import CliRunner

            res = CliRunner().invoke(
                app, ["perf", "hrn-train-paper", "--out", str(out / "perf-paper.csv")]
            )
            if res.exit_code not in (0, 1):  # 1: a row missed its target
                raise RuntimeError(res.output)
            return res.output

        steps.insert(0, ("perf hrn-train-paper", perf))
    for name, step in steps:
        t0 = time.perf_counter()
        try:
            text = step()
            report.append(f"== {name}: done in {time.perf_counter() - t0:.0f} s\n{text}")
        except Exception:  # noqa: BLE001 - every step is tried; the report says what failed
            failed += 1
            report.append(f"== {name}: FAILED\n{traceback.format_exc()}")
        (out / "check.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

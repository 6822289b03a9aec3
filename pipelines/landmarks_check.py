"""Accuracy check of automatic scan landmarks against known landmarks.

Two sets, NoW's 7 points in mm:

- ``real``: a real scan with annotated landmarks (e.g. ``flame-scan/scan.obj`` and its 51 points
  ``scan_lmks.npy``), as given and under ``--rotations`` random rotations (and translations);
- ``synth``: synthetic scans of :mod:`pipelines.synth` (``--subjects`` × 2 expressions, seed
  ``--seed``, random frames, holes, neck and hair), against their true landmarks; ``--colour``
  also renders them with the model's mean albedo as vertex colours, ``--subject-colours`` with
  each subject's own albedo (``facehd synth --colours``).

Run::

    python -m pipelines.landmarks_check --real ../shared/data/flame-scan --rotations 20 \\
        --subjects 3 --seed 0 --overlays /tmp/lm-overlays

It prints one line per scan (the 7 errors, their median, the confidence) and a summary per set:
median over all points, the worst scan's median, the largest error, failures. Nothing is
asserted here; the test suite runs a few of these cases with thresholds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facehd.landmarks import NOW7_FROM_51, NOW7_FROM_68, load_landmarks
from facehd.mesh import Mesh, load_mesh

__all__ = ["main", "real_cases", "synthetic_cases"]


def real_cases(
    folder: Path, rotations: int, seed: int = 1000
) -> Iterator[tuple[str, Mesh, np.ndarray]]:
    """(name, scan, reference NoW-7 in the scan's frame) for the scan as given and rotated."""
    from pipelines.synth import random_rotation

    scan = load_mesh(folder / "scan.obj")
    lm_path = folder / "scan_lmks.npy"
    ref = load_landmarks(lm_path)
    ref7 = ref[list(NOW7_FROM_51)] if len(ref) == 51 else ref[list(NOW7_FROM_68)]
    yield "as-given", scan, ref7
    extent = float((scan.vertices.max(0) - scan.vertices.min(0)).max())
    for i in range(rotations):
        rng = np.random.default_rng(seed + i)
        r = random_rotation(rng)
        t = rng.uniform(-1.0, 1.0, 3) * extent
        yield f"rot{i:02d}", Mesh(scan.vertices @ r.T + t, scan.faces), ref7 @ r.T + t


def synthetic_cases(
    subjects: int, seed: int, colour: bool, *, subject_colours: bool = False
) -> Iterator[tuple[str, Mesh, np.ndarray]]:
    """(name, scan, true NoW-7 in the scan's frame) for synthetic scans: shaded, with the
    model's mean albedo as vertex colours (``colour``), or with each subject's own albedo as
    ``facehd synth --colours`` writes them (``subject_colours``)."""
    from facehd.morphable import load_model
    from facehd.transforms import Similarity
    from pipelines.synth import SynthConfig, colours_at_nearest, make_scan

    config = SynthConfig(subjects=subjects, expressions=2, seed=seed, colours=subject_colours)
    model = load_model(config.model)
    for s in range(subjects):
        for e in range(2):
            scan, truth, m1, _, _ = make_scan(model, config, s, e)
            t = Similarity(float(truth["scale"]), truth["rotation"], truth["translation"])
            ref7 = t.inverse().apply(truth["landmarks68"][list(NOW7_FROM_68)])
            name = f"s{s:03d}_e{e:02d}" + ("-subject" if subject_colours else "")
            if colour and not subject_colours:
                rgb = colours_at_nearest(m1, model.mean_albedo, t.apply(scan.vertices))
                scan = Mesh(scan.vertices, scan.faces, None, rgb)
                name += "-colour"
            yield name, scan, ref7


def _run(name: str, cases, landmarker, overlays: Path | None) -> dict[str, float]:  # noqa: ANN001
    from facehd.scan_landmarks import ScanLandmarkError

    errors, failures, seconds = [], 0, []
    for case, mesh, ref7 in cases:
        t0 = time.perf_counter()
        try:
            r = landmarker.detect(mesh, name=case)
        except ScanLandmarkError as exc:
            failures += 1
            print(f"{name:6s} {case:16s} FAILED {exc}")
            continue
        seconds.append(time.perf_counter() - t0)
        err = np.linalg.norm(r.landmarks7 - ref7, axis=1) * r.unit_to_mm
        errors.append(err)
        print(
            f"{name:6s} {case:16s} NoW-7 mm {np.array2string(err, precision=1)} "
            f"median {np.median(err):.2f} confidence {r.confidence:.2f} {seconds[-1]:.1f}s"
        )
        if overlays is not None and r.overlay is not None:
            from PIL import Image

            overlays.mkdir(parents=True, exist_ok=True)
            Image.fromarray(r.overlay).save(overlays / f"{name}-{case}.png")
    if not errors:
        print(f"{name}: every scan failed ({failures})")
        return {}
    e = np.array(errors)
    summary = {
        "median": float(np.median(e)),
        "worst_scan_median": float(np.median(e, axis=1).max()),
        "max": float(e.max()),
        "failures": failures,
        "scans": len(e),
    }
    per_point = np.array2string(np.median(e, axis=0), precision=1)
    print(
        f"== {name}: {len(e)} scans, {failures} failed; NoW-7 median {summary['median']:.2f} mm, "
        f"worst scan median {summary['worst_scan_median']:.2f} mm, max {summary['max']:.2f} mm; "
        f"per point {per_point}; {np.mean(seconds):.1f} s per scan"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, help="folder with scan.obj and scan_lmks.npy")
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--subjects", type=int, default=0, help="synthetic subjects (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colour", action="store_true", help="also with vertex colours")
    parser.add_argument(
        "--subject-colours", action="store_true", help="also with each subject's own albedo"
    )
    parser.add_argument("--overlays", type=Path)
    args = parser.parse_args(argv)

    from facehd.scan_landmarks import ScanLandmarker

    with ScanLandmarker() as landmarker:
        if args.real is not None:
            _run("real", real_cases(args.real, args.rotations), landmarker, args.overlays)
        if args.subjects:
            cases = synthetic_cases(args.subjects, args.seed, colour=False)
            _run("synth", cases, landmarker, args.overlays)
            if args.colour:
                cases = synthetic_cases(args.subjects, args.seed, colour=True)
                _run("colour", cases, landmarker, args.overlays)
            if args.subject_colours:
                cases = synthetic_cases(args.subjects, args.seed, False, subject_colours=True)
                _run("subject", cases, landmarker, args.overlays)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

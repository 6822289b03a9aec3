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

The landmarks are those ``facehd landmarks`` writes: with its morphable model check
(:mod:`pipelines.model_landmarks`; ``--model-check none`` for the detection alone). It prints one
line per scan (the 7 errors, their median, the confidence, where the points came from) and a
summary per set:
median over all points, the worst scan's median, the largest error, failures; then the median
error of all 68 points by region (:data:`REGIONS`), of the nose tip (iBUG 30) and of the inner 51
points (a reference of 51 points, the iBUG-68 without the jaw line, has no jaw). Nothing is
asserted here; the test suite runs a few of these cases with thresholds. ``--csv FILE`` also
writes one row per scan: its set and name, its 68 errors in mm (``e0`` .. ``e67``, NaN where the
reference has no point), the confidence and where the points came from. ``--m0-fold-angle``
sets the model check's M0 fold angle (``FitConfig.m0_fold_angle_deg``; 30 fits as before it
became 60).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facehd.landmarks import NOW7_FROM_68, load_landmarks
from facehd.mesh import Mesh, load_mesh

__all__ = ["REGIONS", "main", "real_cases", "synthetic_cases"]

#: iBUG-68 regions reported by the summary: (name, first index, end index).
REGIONS: tuple[tuple[str, int, int], ...] = (
    ("jaw", 0, 17),
    ("brows", 17, 27),
    ("nose bridge", 27, 31),
    ("nostrils", 31, 36),
    ("eyes", 36, 48),
    ("outer lips", 48, 60),
    ("inner lips", 60, 68),
)


def _as68(ref: np.ndarray) -> np.ndarray:
    """A reference of 68 points, or of 51 (iBUG-68 without the jaw line) with the jaw NaN."""
    if len(ref) == 68:
        return ref
    out = np.full((68, 3), np.nan)
    out[17:] = ref
    return out


def real_cases(
    folder: Path, rotations: int, seed: int = 1000
) -> Iterator[tuple[str, Mesh, np.ndarray]]:
    """(name, scan, reference iBUG-68 in the scan's frame, NaN where not annotated) for the scan
    as given and rotated. The reference file holds 68 points or 51 (no jaw line)."""
    from pipelines.synth import random_rotation

    scan = load_mesh(folder / "scan.obj")
    lm_path = folder / "scan_lmks.npy"
    ref = load_landmarks(lm_path)
    if len(ref) not in (51, 68):
        raise ValueError(f"{lm_path}: expected 51 or 68 landmarks, got {len(ref)}")
    ref68 = _as68(ref)
    yield "as-given", scan, ref68
    extent = float((scan.vertices.max(0) - scan.vertices.min(0)).max())
    for i in range(rotations):
        rng = np.random.default_rng(seed + i)
        r = random_rotation(rng)
        t = rng.uniform(-1.0, 1.0, 3) * extent
        yield f"rot{i:02d}", Mesh(scan.vertices @ r.T + t, scan.faces), ref68 @ r.T + t


def synthetic_cases(
    subjects: int, seed: int, colour: bool, *, subject_colours: bool = False
) -> Iterator[tuple[str, Mesh, np.ndarray]]:
    """(name, scan, true iBUG-68 in the scan's frame) for synthetic scans: shaded, with the
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
            ref68 = t.inverse().apply(truth["landmarks68"])
            name = f"s{s:03d}_e{e:02d}" + ("-subject" if subject_colours else "")
            if colour and not subject_colours:
                rgb = colours_at_nearest(m1, model.mean_albedo, t.apply(scan.vertices))
                scan = Mesh(scan.vertices, scan.faces, None, rgb)
                name += "-colour"
            yield name, scan, ref68


def _run(
    name: str,
    cases,  # noqa: ANN001
    landmarker,  # noqa: ANN001
    overlays: Path | None,
    rows: list[dict[str, object]] | None = None,
) -> dict[str, float]:
    from facehd.scan_landmarks import ScanLandmarkError

    errors, errors68, failures, seconds = [], [], 0, []
    for case, mesh, ref68 in cases:
        t0 = time.perf_counter()
        try:
            r = landmarker.detect(mesh, name=case)
        except ScanLandmarkError as exc:
            failures += 1
            print(f"{name:6s} {case:16s} FAILED {exc}")
            continue
        seconds.append(time.perf_counter() - t0)
        err68 = np.linalg.norm(r.landmarks68 - ref68, axis=1) * r.unit_to_mm
        err = err68[list(NOW7_FROM_68)]
        errors.append(err)
        errors68.append(err68)
        if rows is not None:
            row: dict[str, object] = {"set": name, "case": case}
            row.update({f"e{i}": f"{v:.4f}" for i, v in enumerate(err68)})
            row.update(confidence=f"{r.confidence:.4f}", source=r.source)
            rows.append(row)
        print(
            f"{name:6s} {case:16s} NoW-7 mm {np.array2string(err, precision=1)} "
            f"median {np.median(err):.2f} confidence {r.confidence:.2f} {r.source} "
            f"{seconds[-1]:.1f}s"
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
    e68 = np.array(errors68)
    parts = []
    for region, lo, hi in REGIONS:
        block = e68[:, lo:hi]
        value = float(np.median(block[np.isfinite(block)])) if np.isfinite(block).any() else None
        summary[region] = value if value is not None else float("nan")
        parts.append(f"{region} {'-' if value is None else f'{value:.1f}'}")
    inner = e68[:, 17:]
    summary["nose tip"] = float(np.median(e68[:, 30]))
    summary["inner 51"] = float(np.median(inner[np.isfinite(inner)]))
    print(
        f"== {name}: 68 points by region, median mm: {', '.join(parts)}; nose tip (30) "
        f"{summary['nose tip']:.1f}; inner 51 {summary['inner 51']:.1f}"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, help="folder with scan.obj and scan_lmks.npy")
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--subjects", type=int, default=0, help="synthetic subjects (0: none)")
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="synthetic seeds, pooled into one set"
    )
    parser.add_argument("--colour", action="store_true", help="also with vertex colours")
    parser.add_argument(
        "--subject-colours", action="store_true", help="also with each subject's own albedo"
    )
    parser.add_argument("--overlays", type=Path)
    parser.add_argument(
        "--csv", type=Path, help="write each scan's 68 errors (mm, NaN: no reference) here"
    )
    parser.add_argument(
        "--m0-fold-angle",
        type=float,
        help="FitConfig.m0_fold_angle_deg of the model check's fit (default: FitConfig's)",
    )
    parser.add_argument(
        "--model-check",
        default="facehd-synth",
        help="morphable model of facehd landmarks' check (pipelines.model_landmarks), or none",
    )
    args = parser.parse_args(argv)

    from facehd.scan_landmarks import ScanLandmarker
    from pipelines.model_landmarks import ModelCheckConfig, ModelLandmarkCheck

    rows: list[dict[str, object]] | None = None if args.csv is None else []
    check = None
    if args.model_check.lower() != "none":
        config = ModelCheckConfig(model=args.model_check)
        if args.m0_fold_angle is not None:
            fit = dataclasses.replace(config.fit, m0_fold_angle_deg=args.m0_fold_angle)
            config = dataclasses.replace(config, fit=fit)
        check = ModelLandmarkCheck(config)
    with ScanLandmarker(check=check) as landmarker:
        if args.real is not None:
            _run("real", real_cases(args.real, args.rotations), landmarker, args.overlays, rows)
        if args.subjects:

            def pooled(colour: bool, subject_colours: bool = False) -> Iterator:
                for seed in args.seed:
                    cases = synthetic_cases(
                        args.subjects, seed, colour, subject_colours=subject_colours
                    )
                    for case, mesh, ref in cases:
                        yield (f"seed{seed}-{case}" if len(args.seed) > 1 else case), mesh, ref

            _run("synth", pooled(False), landmarker, args.overlays, rows)
            if args.colour:
                _run("colour", pooled(True), landmarker, args.overlays, rows)
            if args.subject_colours:
                _run("subject", pooled(False, True), landmarker, args.overlays, rows)
    if rows is not None:
        from facehd.csvtext import write_table

        header = list(rows[0]) if rows else ["set", "case"]
        write_table(args.csv, header, [[str(row.get(k, "")) for k in header] for row in rows])
        print(f"wrote {len(rows)} rows to {args.csv}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

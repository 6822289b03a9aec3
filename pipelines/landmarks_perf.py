"""Speed benchmark of automatic scan landmarks (``facehd perf scan-landmarks``).

A synthetic raw scan of about 100,000 vertices (:func:`pipelines.synth.make_scan`: detailed face,
neck, hair cap, holes, a random rotation) is landmarked on one core by a warm
:class:`facehd.scan_landmarks.ScanLandmarker` with ``facehd landmarks``' morphable model check
(:mod:`pipelines.model_landmarks`); mediapipe's graphs are started and the model prepared once per
process, as in a batch run, and their start-up is reported on its own row. The main row times the
command's default (no overlay rendered); a second row, the same with the overlay (``--overlays``).
"""

from __future__ import annotations

import math
import time

from facehd.perf import PerfRow, register, single_thread

#: Grid side of the synthetic scan's dense surface: about 100k vertices with neck and hair.
_DENSE_RESOLUTION = 294


@register("scan-landmarks", "automatic 3D landmarks of a ~100k-vertex raw scan, one core")
def scan_landmarks_entry(quick: bool) -> list[PerfRow]:
    from facehd.detect import mediapipe_available
    from facehd.morphable import load_model
    from pipelines.synth import SynthConfig, make_scan

    if not mediapipe_available():
        return [
            PerfRow(
                "scan-landmarks",
                "seconds per 100k-vertex scan",
                math.nan,
                "s",
                "< 2 s",
                None,
                "not run: needs the photo extra (pip install 'facehd[photo]')",
            )
        ]
    from facehd.scan_landmarks import ScanLandmarkConfig, ScanLandmarker, ScanLandmarkError
    from pipelines.model_landmarks import ModelLandmarkCheck

    config = SynthConfig(dense_resolution=120 if quick else _DENSE_RESOLUTION, seed=3)
    scan = make_scan(load_model(config.model), config, 0, 0)[0]
    with single_thread():
        c0, w0 = time.process_time(), time.perf_counter()
        check = ModelLandmarkCheck()
        check.fit_data()  # the model prepared once per process, as in a batch run
        # `facehd landmarks` renders the overlay only with --overlays: timed both ways
        plain = ScanLandmarker(ScanLandmarkConfig(overlay_size=0), check=check)
        start_wall = time.perf_counter() - w0
        start_cpu = time.process_time() - c0
        drawn = ScanLandmarker(check=check)
        timings: dict[str, tuple[float, float]] = {}
        outcome = ""
        for name, landmarker in (("plain", plain), ("overlay", drawn)):
            walls, cpus = [], []
            for _ in range(1 if quick else 2):
                c0, w0 = time.process_time(), time.perf_counter()
                try:
                    found = landmarker.detect(scan)
                    outcome = f"confidence {found.confidence:.2f}, points {found.source}"
                except ScanLandmarkError as exc:  # still a timing, of a failing scan
                    outcome = f"FAILED ({exc.reason}): timing of a rejected scan"
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            landmarker.close()
            timings[name] = (min(walls), min(cpus))
    (wall, cpu), drawn_wall = timings["plain"], timings["overlay"][0]
    n = scan.n_vertices
    per_100k = wall * 100_000 / n
    size = f"{n} vertices, {scan.n_faces} triangles; {outcome}"
    return [
        PerfRow(
            "scan-landmarks",
            "seconds per 100k-vertex scan",
            per_100k,
            "s",
            "< 2 s",
            per_100k < 2.0,
            f"wall seconds of one scan scaled to 100k vertices, as `facehd landmarks` runs by "
            f"default (no overlay); {size}; torch and Open3D on one thread, mediapipe as "
            "configured",
        ),
        PerfRow(
            "scan-landmarks",
            "seconds per 100k-vertex scan, with the overlay",
            drawn_wall * 100_000 / n,
            "s",
            note="--overlays: the overlay rendered and drawn too",
        ),
        PerfRow("scan-landmarks", "wall seconds", wall, "s", note=size),
        PerfRow(
            "scan-landmarks",
            "CPU seconds",
            cpu,
            "s",
            note="process CPU time (all threads), robust to machine load",
        ),
        PerfRow(
            "scan-landmarks",
            "start-up seconds",
            start_wall,
            "s",
            note=f"mediapipe graphs and the check's model, once per process "
            f"({start_cpu:.2f} CPU s)",
        ),
    ]

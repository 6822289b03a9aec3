"""facehd benchmarks: the evaluation protocols of FaceScape, REALY, NoW and multi-view sets.

Each protocol follows its official evaluation code step by step (quirks included, deviations only
where the official code fails) and scores predictions from a folder of meshes in the benchmark's
layout, so any method can be compared; ``facehd bench`` writes per-image and summary CSVs and a
leaderboard row, ``facehd leaderboard`` shows it next to the numbers published in the HRN paper.

- ``benchmarks.now``: NoW scan-to-mesh (crop, landmark Procrustes, rigid scan-to-mesh fit, pooled
  statistics).
- ``benchmarks.multiview``: the NoW protocol on multi-view sets (FaceScape 3 views, ESRC 2 views).
- ``benchmarks.realy``: REALY region errors (L1-scale global fit, region ICP, SciPy non-rigid ICP).
- ``benchmarks.facescape``: FaceScape CD / MNE / CR (depth alignment, cylindrical maps).
- ``benchmarks.readers``: readers of the benchmarks' real on-disk layouts.
- ``benchmarks.runner``: :func:`~benchmarks.runner.run_benchmark`, the CSV outputs.
- ``benchmarks.leaderboard``: leaderboard CSV and the published HRN-paper rows.
- ``benchmarks.methods``: reconstruction methods registered in the ``facehd.methods`` entry points.
- ``benchmarks.synthetic``: small synthetic benchmarks in the real layouts.
- ``benchmarks.perf_entries``: ``facehd perf`` entries (seconds per image).
"""

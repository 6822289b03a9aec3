"""Multi-view evaluation: the NoW protocol on sets of views (HRN paper, Table 2).

The HRN paper scores multi-view reconstruction "as guided by the NoW benchmark": 7 landmarks
on each predicted mesh, a rigid alignment to the ground-truth scan, and scan-to-mesh distances,
reported as median / mean / std in mm on FaceScape (3 views per set) and ESRC (2 views per set).
``facehd bench --dataset multiview:<split>`` runs exactly :func:`benchmarks.now.evaluate_now` on
each set and pools the distances of all sets (:func:`benchmarks.now.pooled_statistics`), also
per view count (the ``<n>views`` level of each set's path).

No official layout exists for these sets; facehd reads the NoW layout with a list of sets
(see :mod:`benchmarks.readers`)::

    <root>/multiview_<split>.txt           one set per line: <subject>/<n>views/<set>
    <root>/scans/<subject>/*.obj            ground-truth scan (mm)
    <root>/scans_lmks_onlypp/<subject>/*    its 7 landmarks (.pp, .txt or .npy)
    <root>/images/<subject>/<n>views/<set>/ the set's photos (only to run a method)
    <pred>/<subject>/<n>views/<set>.obj     the prediction, with <set>.npy or <set>.txt landmarks

Splits: ``facescape`` (3-view sets) and ``esrc`` (2-view sets), the two rows of Table 2; any other
``multiview_<name>.txt`` in the root is a split too.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["view_images"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def view_images(folder: Path | None) -> list[Path]:
    """The photos of one set (sorted), or an empty list when the folder is absent."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)

"""A reconstruction method for the tests: it returns its subject's ground-truth scan."""

from __future__ import annotations

from pathlib import Path

from benchmarks.methods import MethodOutput


class ScanLookup:
    """Returns ``<root>/scans/<subject>/*.obj`` for ``<root>/iphone_pictures/<subject>/...``."""

    name = "scan-lookup"

    def reconstruct(self, images: list[Path]) -> MethodOutput:
        from benchmarks.readers import read_landmarks7
        from facehd.mesh import load_mesh

        image = Path(images[0])
        subject = image.parents[1].name
        root = image.parents[3]
        scan = next((root / "scans" / subject).glob("*.obj"))
        lms = next((root / "scans_lmks_onlypp" / subject).glob("*.pp"))
        return MethodOutput(load_mesh(scan), read_landmarks7(lms))


def make() -> ScanLookup:
    """Entry-point factory."""
    return ScanLookup()

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


class DescribedScanLookup(ScanLookup):
    """:class:`ScanLookup` that describes what its meshes depend on, as a method with a
    checkpoint does: here an environment variable stands for the checkpoint."""

    def describe(self) -> dict[str, str]:
        import os

        return {"checkpoint": os.environ.get("FAKE_METHOD_CHECKPOINT", "a")}


def make_described() -> DescribedScanLookup:
    """Entry-point factory."""
    return DescribedScanLookup()


class TruthInImage:
    """FaceScape: returns the ground truth of a photo's item in the image-aligned format (the
    wild split's ``data/wild_gt_mesh/<name>.obj``, normalised ``[-1, 1]`` -> pixels)."""

    name = "truth-in-image"

    def reconstruct(self, images: list[Path]) -> MethodOutput:
        raise AssertionError("FaceScape runs call reconstruct_image_aligned")

    def reconstruct_image_aligned(self, image: Path) -> MethodOutput:
        from facehd.mesh import Mesh, load_mesh

        image = Path(image)
        gt = load_mesh(image.parents[1] / "wild_gt_mesh" / f"{image.stem}.obj")
        return MethodOutput(Mesh((gt.vertices + [1.0, 1.0, 0.0]) * 128.0, gt.faces))


def make_truth() -> TruthInImage:
    """Entry-point factory."""
    return TruthInImage()


class SynthFitCopy:
    """REALY: returns the synthetic benchmark's own ``synth-fit`` prediction of a photo's
    subject (``<root>/predictions/synth-fit/<name>.obj`` for ``<root>/images/<set>/<name>.jpg``)
    as its template-topology mesh, with facehd-synth's topology files."""

    name = "synth-fit-copy"

    def reconstruct(self, images: list[Path]) -> MethodOutput:
        raise AssertionError("REALY runs call reconstruct_template")

    def reconstruct_template(self, image: Path) -> MethodOutput:
        from facehd.mesh import load_mesh

        image = Path(image)
        return MethodOutput(
            load_mesh(image.parents[2] / "predictions" / "synth-fit" / f"{image.stem}.obj")
        )

    def template_keypoints(self):  # noqa: ANN201
        from benchmarks.synthetic import synth_realy_topology
        from facehd.morphable import load_model

        entries, template = synth_realy_topology(load_model("facehd-synth"))
        return "facehd-synth", entries, template


def make_synth_fit_copy() -> SynthFitCopy:
    """Entry-point factory."""
    return SynthFitCopy()

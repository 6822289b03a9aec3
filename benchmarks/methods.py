"""Reconstruction methods that ``facehd bench`` can run itself, registered by name.

A method turns one benchmark image into a mesh. Any method can be scored from a folder of its
meshes (``facehd bench --predictions DIR``); a method that facehd should run in-process registers
a factory in the entry-point group ``facehd.methods`` of its package::

    [project.entry-points."facehd.methods"]
    mymethod = "mypkg.bench:make_method"   # () -> an object following ReconstructionMethod

``facehd bench --method mymethod`` without ``--predictions`` then reconstructs every image of the
benchmark into ``OUT/<dataset>-<split>/mymethod/predictions`` in the benchmark's layout
(:func:`write_prediction`) and scores that folder. FaceScape scores meshes placed in the photo
(image-aligned: see :class:`MethodOutput`); a method that can give them has a second method,
``reconstruct_image_aligned(image: Path) -> MethodOutput``, which FaceScape runs call instead.
REALY scores meshes of one template topology whose 85 keypoints one file locates: REALY runs
call ``reconstruct_template(image: Path) -> MethodOutput`` and, when the method has it,
``template_keypoints() -> (name, [[triangle, w0, w1]] * 85, template Mesh) | None``, written as
``<name>.txt`` / ``<name>.obj`` beside the meshes (else ``--topology`` names the file).
A method may also have ``describe() -> dict``: what its meshes depend on (a checkpoint's hash,
its settings; JSON values). The run writes it to ``predictions/method.json`` and refuses to add
predictions to a folder whose ``method.json`` describes another configuration.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from facehd.mesh import Mesh, save_mesh

__all__ = [
    "ENTRY_POINT_GROUP",
    "MethodOutput",
    "ReconstructionMethod",
    "available_methods",
    "load_method",
    "write_prediction",
]

#: Entry-point group of registered methods.
ENTRY_POINT_GROUP = "facehd.methods"


@dataclass(frozen=True)
class MethodOutput:
    """What a method returns for one image."""

    mesh: Mesh
    """The reconstruction. NoW / multi-view / REALY: any frame (mm, or the method's unit);
    FaceScape: image-aligned (``x``, ``y`` pixels of the image with ``y`` up, ``z`` towards the
    viewer in pixels)."""
    landmarks7: np.ndarray | None = None
    """(7, 3) NoW landmarks on the mesh (NoW and multi-view need them)."""


@runtime_checkable
class ReconstructionMethod(Protocol):
    """A reconstruction method facehd can run on benchmark images."""

    name: str
    """Short name (used in output paths and the leaderboard)."""

    def reconstruct(self, images: list[Path]) -> MethodOutput:
        """Reconstruct from one image (or the views of a multi-view set)."""
        ...


def available_methods() -> dict[str, EntryPoint]:
    """Registered methods by name (entry-point group ``facehd.methods``)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_method(name: str) -> ReconstructionMethod:
    """Instantiate the registered method ``name``.

    Raises
    ------
    ValueError
        No method of that name is registered, or its factory returns something that is not a
        :class:`ReconstructionMethod`.
    """
    eps = available_methods()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ValueError(
            f"no method {name!r} is registered in the entry-point group {ENTRY_POINT_GROUP!r} "
            f"(registered: {known}); score a folder of its meshes with --predictions DIR"
        )
    factory = eps[name].load()
    method = (
        factory()
        if callable(factory) and not isinstance(factory, ReconstructionMethod)
        else factory
    )
    if not isinstance(method, ReconstructionMethod):
        raise ValueError(f"method {name!r}: the entry point does not give a ReconstructionMethod")
    return method


def write_prediction(
    out: MethodOutput, mesh_path: Path, landmarks_path: Path | None = None
) -> None:
    """Save one prediction where the benchmark's layout expects it.

    Parameters
    ----------
    out : the method's output.
    mesh_path : ``.obj`` destination.
    landmarks_path : ``.txt`` destination of the 7 landmarks (NoW layouts), or None.
    """
    mesh_path.parent.mkdir(parents=True, exist_ok=True)
    if landmarks_path is not None and out.landmarks7 is None:
        raise ValueError(
            f"{mesh_path}: the method gave no 7 landmarks, which NoW-style evaluation needs"
        )
    # both writers are atomic: each file appears complete or not at all
    save_mesh(mesh_path, out.mesh)
    if landmarks_path is not None:
        lm = np.asarray(out.landmarks7, dtype=np.float64).reshape(7, 3)
        from facehd.landmarks import save_landmarks_txt

        save_landmarks_txt(landmarks_path, lm)


def copy_topology(keypoint_file: Path, folder: Path) -> None:
    """Copy a REALY topology (``<name>.txt`` and ``<name>.obj``) into a predictions folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in (keypoint_file, keypoint_file.with_suffix(".obj")):
        shutil.copyfile(p, folder / p.name)

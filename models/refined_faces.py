"""The refined base faces of a training set, made once and kept in the run folder.

With ``hrn_options.refine_steps`` > 0 the detail stage trains on the base model's coefficients
refined per photo (:func:`models.refine.refine_coefficients`, as ``facehd evaluate
--refine-steps`` and ``facehd reconstruct --refine-steps`` refine them) instead of the
analyzer's one-pass prediction. Refining takes seconds a photo, so each training photo is
refined once, before the stage's first step, and its coefficients are kept in
``<run>/refined/<name>.pt``:

* ``settings`` -- what the coefficients depend on besides the photo: the analyzer's weights
  (SHA-256 of its state), the refinement's settings, the base losses' weights, the image size
  and the crop template. A file with other settings is not used.
* ``entries`` -- per sample index: the SHA-256 of the sample's crop, mask and landmarks, the
  flat coefficients (``id, exp, tex, angle, gamma, trans``), and the objective before and after.
  An entry whose sample changed is made again.

While they are made, each process writes the entries of its share to
``<name>.rank<R>.pt`` after every photo (atomically), so a run stopped at any moment loses at
most the photo in flight; the next run (of any number of processes) takes every valid entry of
every file. Once all are made, the first process writes ``<name>.pt`` whole and removes the
share files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.analyzer import Coefficients

__all__ = [
    "REFINED_FORMAT",
    "RefinedFaces",
    "analyzer_digest",
    "read_entries",
    "sample_digest",
    "write_entries",
]

REFINED_FORMAT = "facehd.refined/1"


def analyzer_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names, shapes, dtypes and values, in name order)."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sample_digest(item: Mapping[str, Any]) -> str:
    """SHA-256 of what a training sample gives the refinement: its crop, mask and landmarks."""
    h = hashlib.sha256()
    for key in ("image", "mask", "landmarks"):
        a = np.ascontiguousarray(np.asarray(item[key]))
        h.update(f"{key}:{a.shape}:{a.dtype}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_entries(path: Path, settings: Mapping[str, Any]) -> tuple[dict[int, dict], str | None]:
    """The entries of a refined-faces file, with why none were taken (None: taken, or no file).

    A file that cannot be read, is of another format or was made with other ``settings`` gives
    no entries and the reason (it is then made again, not trusted)."""
    from facehd.errors import InputFileError
    from models.checkpoints import read_checkpoint

    if not path.is_file():
        return {}, None
    try:
        data = read_checkpoint(path)
    except InputFileError as exc:
        return {}, str(exc)
    if data.get("format") != REFINED_FORMAT:
        return {}, f"{path}: not a refined-faces file (format {data.get('format')!r})"
    if data.get("settings") != dict(settings):
        return {}, f"{path}: made with other settings (another analyzer or refinement)"
    entries = data.get("entries")
    if not isinstance(entries, Mapping):
        return {}, f"{path}: no entries"
    return {int(k): dict(v) for k, v in entries.items()}, None


def write_entries(path: Path, settings: Mapping[str, Any], entries: Mapping[int, dict]) -> None:
    """Write a refined-faces file atomically (:func:`models.checkpoints.save_checkpoint_atomic`)."""
    from models.checkpoints import save_checkpoint_atomic

    data = {
        "format": REFINED_FORMAT,
        "settings": dict(settings),
        "entries": {int(k): dict(v) for k, v in sorted(entries.items())},
    }
    save_checkpoint_atomic(path, data)


@dataclass
class RefinedFaces:
    """The refined coefficients of every sample of a dataset, as one table.

    flat : (N, D) float32, the layout's flat order; before, after : (N,) the base objective of
    each sample's analyzer prediction and of its refined coefficients.
    """

    flat: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor

    @classmethod
    def from_entries(cls, entries: Mapping[int, dict], n: int) -> RefinedFaces:
        missing = [i for i in range(n) if i not in entries]
        if missing:
            raise ValueError(f"RefinedFaces: no entry for samples {missing[:5]}")
        flat = torch.stack([torch.as_tensor(entries[i]["coeffs"]).float() for i in range(n)])
        before = torch.tensor([float(entries[i]["before"]) for i in range(n)])
        after = torch.tensor([float(entries[i]["after"]) for i in range(n)])
        return cls(flat, before, after)

    def coefficients(self, layout: Any, indices: Sequence[int], device: Any) -> Coefficients:
        """The coefficients of samples ``indices`` (``layout``: the analyzer's
        :class:`models.analyzer.CoefficientLayout`)."""
        rows = self.flat[torch.as_tensor(list(indices), dtype=torch.long)]
        return layout.split(rows.to(device))

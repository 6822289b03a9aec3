"""HRN as a benchmark method (``facehd bench --method hrn``).

:class:`HRNMethod` follows :class:`benchmarks.methods.ReconstructionMethod`: one image in, the
detailed mesh M2 out (dense, with UVs, canonical model frame, mm) with NoW's 7 landmarks taken
on M1 (the model's landmark vertices; M2 only adds sub-millimetre detail). With several images
(a multi-view set) the views are fitted jointly (MV-HRN, :mod:`models.multiview`) and the first
view's mesh is returned: it carries the shared identity and deformation map.

Registration: the factory :func:`make_method` is the entry point ``hrn`` of the group
``facehd.methods``; the checkpoint comes from the environment variable
``FACEHD_HRN_CHECKPOINT`` (and ``FACEHD_HRN_DERETOUCH``, ``FACEHD_BFM``, ``FACEHD_BFM_UV`` for
the official checkpoint), which ``facehd bench --checkpoint C`` sets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facehd.landmarks import NOW7_FROM_68

__all__ = ["ENV_CHECKPOINT", "HRNMethod", "make_method"]

ENV_CHECKPOINT = "FACEHD_HRN_CHECKPOINT"
ENV_DERETOUCH = "FACEHD_HRN_DERETOUCH"
ENV_BFM = "FACEHD_BFM"
ENV_BFM_UV = "FACEHD_BFM_UV"


class HRNMethod:
    """HRN reconstruction of benchmark images.

    Parameters
    ----------
    checkpoint : a facehd ``model.pt`` / training checkpoint, or the official HRN checkpoint.
    deretouch, bfm_path, uv_path : see :func:`models.reconstruct.load_system`.
    multiview : schedule and weights of MV-HRN for multi-view sets (default
        :class:`models.multiview.MultiViewConfig`).
    """

    name = "hrn"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        deretouch: str | Path | None = None,
        bfm_path: str | Path | None = None,
        uv_path: str | Path | None = None,
        multiview: Any = None,
    ) -> None:
        from models.multiview import MultiViewConfig
        from models.reconstruct import Reconstructor

        self.multiview = multiview or MultiViewConfig()
        self.recon = Reconstructor.load(
            checkpoint, deretouch=deretouch, bfm_path=bfm_path, uv_path=uv_path
        )

    def reconstruct(self, images: list[Path]):
        """One image, or the views of a multi-view set (see the module docstring) ->
        ``MethodOutput``."""
        from benchmarks.methods import MethodOutput

        if not images:
            raise ValueError("HRNMethod.reconstruct: no image given")
        if len(images) == 1:
            rec, _ = self.recon.run_photo(images[0])
        else:
            from models.multiview import fit_multiview

            views = [self.recon.prepare_view(path) for path in images]
            fitted = fit_multiview(
                self.recon,
                np.stack([aligned.image for aligned, _, _ in views]),
                np.stack([mask for _, mask, _ in views]),
                np.stack([lm for _, _, lm in views]),
                self.multiview,
            )
            rec = fitted.views[0]
        mesh = self.recon.detail_mesh(rec)
        lm68 = np.array(self.recon.model.landmarks68)
        landmarks7 = rec.m1[lm68[list(NOW7_FROM_68)]]
        return MethodOutput(mesh=mesh, landmarks7=landmarks7)


def make_method() -> HRNMethod:
    """Entry-point factory: an :class:`HRNMethod` on ``$FACEHD_HRN_CHECKPOINT``."""
    path = os.environ.get(ENV_CHECKPOINT)
    if not path:
        raise ValueError(
            f"the hrn method needs a checkpoint: pass --checkpoint to facehd bench or set "
            f"{ENV_CHECKPOINT}"
        )
    return HRNMethod(
        path,
        deretouch=os.environ.get(ENV_DERETOUCH) or None,
        bfm_path=os.environ.get(ENV_BFM) or None,
        uv_path=os.environ.get(ENV_BFM_UV) or None,
    )

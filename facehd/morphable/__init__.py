"""Morphable face models: one interface (:class:`MorphableModel`), several sources.

- :func:`facehd_synth`: the built-in procedural model (no files; the default everywhere).
- :func:`load_bfm`: the Basel Face Model as distributed with Deep3DFaceRecon
  (``BFM_model_front.mat``) plus a UV layout file.
- :func:`available_models` / :func:`load_model`: the registry by name.
"""

from facehd.morphable.bfm import load_bfm, load_uv_layout
from facehd.morphable.model import (
    MorphableModel,
    RegionMasks,
    project_out_similarity,
    regions_from_landmarks,
    similarity_motion_basis,
)
from facehd.morphable.registry import KNOWN_MODELS, ModelInfo, available_models, load_model
from facehd.morphable.synth import build_synth, facehd_synth

__all__ = [
    "KNOWN_MODELS",
    "ModelInfo",
    "MorphableModel",
    "RegionMasks",
    "available_models",
    "build_synth",
    "facehd_synth",
    "load_bfm",
    "load_model",
    "load_uv_layout",
    "project_out_similarity",
    "regions_from_landmarks",
    "similarity_motion_basis",
]

"""MorphableModel as a container: what it refuses, what its fingerprint tells apart, and the
dtypes and devices its torch evaluation takes (on a small model built for each test)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from facehd.morphable import MorphableModel, RegionMasks

V, K_ID, K_EXP, K_TEX = 70, 4, 3, 2


def _regions(v: int = V) -> RegionMasks:
    masks = np.zeros((6, v), dtype=bool)
    for i in range(6):
        masks[i, i::6] = True
    return RegionMasks(*masks)


def _parts(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "name": "tiny",
        "unit_to_mm": 1.0,
        "mean_shape": rng.normal(size=(V, 3)) * 50.0,
        "id_basis": rng.normal(size=(V, 3, K_ID)),
        "exp_basis": rng.normal(size=(V, 3, K_EXP)),
        "mean_albedo": rng.uniform(0.2, 0.8, size=(V, 3)),
        "albedo_basis": rng.normal(size=(V, 3, K_TEX)) * 0.1,
        "faces": np.array([[i, i + 1, i + 2] for i in range(V - 2)]),
        "uvs": rng.uniform(0.0, 1.0, size=(V, 2)),
        "landmarks68": np.arange(68),
        "regions": _regions(),
        "id_std": np.ones(K_ID),
        "exp_std": np.ones(K_EXP),
        "tex_std": np.ones(K_TEX),
    }


def _model(**changes) -> MorphableModel:
    return MorphableModel(**{**_parts(), **changes})


BAD = [
    ({"mean_shape": np.zeros((V, 2))}, r"mean_shape: expected \(V, 3\), got \(70, 2\)"),
    ({"id_basis": np.zeros((V + 1, 3, K_ID))}, r"id_basis: expected \(70, 3, K\)"),
    ({"exp_basis": np.zeros((V, 2, K_EXP))}, r"exp_basis: expected \(70, 3, K\)"),
    ({"id_std": np.ones(K_ID + 1)}, r"id_std: expected \(4,\), got \(5,\)"),
    ({"exp_std": np.array([1.0, np.inf, 1.0])}, "exp_std: must be finite and positive"),
    ({"tex_std": np.array([1.0, 0.0])}, "tex_std: must be finite and positive"),
    ({"id_names": ("a", "b")}, "id_names: expected 4 names or none, got 2"),
    ({"unit_to_mm": float("inf")}, "unit_to_mm must be positive"),
    ({"unit_to_mm": 0.0}, "unit_to_mm must be positive"),
    ({"mean_albedo": np.zeros((V, 4))}, r"mean_albedo: expected \(70, 3\)"),
    ({"faces": np.zeros((3, 3))}, r"faces: expected \(F, 3\) integers, got \(3, 3\) float64"),
    ({"faces": np.array([[0, 1, -1]])}, r"faces: indices must lie in \[0, 69\]"),
    ({"faces": np.array([[0, 1, V]])}, r"faces: indices must lie in \[0, 69\]"),
    ({"uvs": np.zeros((V, 3))}, r"uvs: expected \(70, 2\)"),
    ({"landmarks68": np.arange(68.0)}, r"landmarks68: expected \(68,\) integer indices"),
    ({"landmarks68": np.arange(68) - 1}, r"landmarks68: indices must lie in \[0, 69\]"),
    ({"regions": _regions(V + 1)}, "regions: expected RegionMasks over 70 vertices"),
    ({"normal_weighting": "angle"}, "normal_weighting must be one of"),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_a_model_refuses_malformed_parts(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _model(**changes)


def test_region_masks_are_checked_and_copied() -> None:
    masks = np.zeros((6, V), dtype=bool)
    with pytest.raises(ValueError, match=r"RegionMasks.eyes: expected a \(V,\) bool array"):
        RegionMasks(masks[:, None], *masks[1:])
    with pytest.raises(ValueError, match=r"RegionMasks.cheeks: expected \(70,\) like the other"):
        RegionMasks(*masks[:4], np.zeros(V + 1, dtype=bool), masks[5])
    source = np.zeros(V, dtype=bool)
    regions = RegionMasks(source, *masks[1:])
    source[0] = True  # the caller's array changes later: the mask does not
    assert not regions.eyes[0] and not regions.eyes.flags.writeable


def test_the_fingerprint_tells_apart_models_that_differ_anywhere_it_covers() -> None:
    base = _model()
    stored = base.fingerprint
    assert _model().matches_fingerprint(stored)
    exp = _parts()["exp_basis"].copy()
    exp[5, 1, 2] += 0.5
    uvs = _parts()["uvs"].copy()
    uvs[7] = 1.0 - uvs[7]
    for other in (
        _model(exp_basis=exp),
        _model(uvs=uvs),
        _model(mean_shape=_parts(1)["mean_shape"]),
    ):
        assert not other.matches_fingerprint(stored)
    faces = _parts()["faces"].copy()
    faces[3] = faces[3, ::-1]  # the same vertices, the other winding
    assert not _model(faces=faces).matches_fingerprint(stored)
    # a fingerprint of another length, or no fingerprint, is not this model's
    short = dict(stored, projections=stored["projections"][:-1])
    assert not base.matches_fingerprint(short)
    for junk in (None, "tiny", {"topology": stored["topology"]}, {**stored, "projections": "x"}):
        assert not base.matches_fingerprint(junk)
    # what the caller does to the dict it got does not reach the model
    stored["projections"].append(1.0)
    stored["topology"] = "changed"
    again = base.fingerprint
    assert len(again["projections"]) == 1 + K_ID + K_EXP + 1 and again["topology"] != "changed"


def test_component_and_normals_refuse_what_is_not_theirs() -> None:
    model = _model(exp_names=("smile", "blink", "jaw"))
    assert model.component("exp", "jaw") == 2
    with pytest.raises(ValueError, match="kind must be 'id', 'exp' or 'tex', got 'shape'"):
        model.component("shape", "jaw")
    with pytest.raises(ValueError, match=r"expected \(V, 3\) or \(B, V, 3\), got \(1, 2, 70, 3\)"):
        model.vertex_normals(np.zeros((1, 2, V, 3)))


def test_torch_evaluation_promotes_dtypes_and_checks_devices() -> None:
    model = _model()
    ident = torch.zeros(K_ID, dtype=torch.float32)
    expr = torch.ones(K_EXP, dtype=torch.float64)
    out = model.vertices(ident, expr)
    assert out.dtype == torch.float64  # float32 and float64: float64
    ref = model.vertices(np.zeros(K_ID), np.ones(K_EXP))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12)
    as_int = model.vertices(torch.zeros(K_ID, dtype=torch.int64))
    assert as_int.dtype == torch.get_default_dtype()  # integers: the default float type
    np.testing.assert_allclose(as_int.numpy(), model.mean_shape, rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match="coefficients on different devices: cpu and meta"):
        model.vertices(ident, torch.zeros(K_EXP, device="meta"))


def test_torch_evaluation_caches_copies_of_the_read_only_arrays() -> None:
    """The tensors the model keeps for torch evaluation are copies: a tensor sharing the
    model's read-only arrays would let an in-place operation on it write into the model."""
    model = _model()
    model.vertices(torch.zeros(K_ID, dtype=torch.float64), torch.zeros(K_EXP))
    model.albedo(torch.zeros(K_TEX, dtype=torch.float64))
    cached = [t for t in model._torch_cache.values() if isinstance(t, torch.Tensor)]
    assert len(cached) == 5  # shape mean, id, exp; albedo mean, basis (float64 on the CPU)
    arrays = [model.mean_shape, model.id_basis, model.exp_basis]
    arrays += [model.mean_albedo, model.albedo_basis]
    for t in cached:
        assert not any(np.shares_memory(t.numpy(), a) for a in arrays)


def test_a_model_is_what_it_was_given() -> None:
    parts = _parts()
    model = MorphableModel(**parts)
    for f in dataclasses.fields(MorphableModel):
        value = getattr(model, f.name)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, parts[f.name], err_msg=f.name)
            assert not value.flags.writeable, f.name

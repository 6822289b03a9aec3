"""Tests of the BFM loader on small files written here in Deep3DFaceRecon's format.

The test model is a coarse face (a subsampled facehd-synth grid, in decimetres like the BFM) with
random bases, stored exactly as ``BFM_model_front.mat`` stores its fields: row vectors (1, 3V),
bases (3V, K), 1-based triangles and keypoints, albedo in 0–255.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from facehd.errors import InputFileError
from facehd.morphable import available_models, facehd_synth, load_bfm, load_model, load_uv_layout
from facehd.morphable.synth import GRID, grid_faces

STEP = 8  # keep every 8th row and column of the synth grid: 17 x 17 = 289 vertices
K_ID, K_EXP, K_TEX = 5, 4, 3


def _small_bfm() -> dict[str, np.ndarray]:
    synth = facehd_synth()
    keep = np.arange(0, GRID, STEP)
    n = len(keep)
    rows, cols = np.meshgrid(keep, keep, indexing="ij")
    idx = (rows * GRID + cols).ravel()
    pts_mm = synth.mean_shape[idx]
    v = len(idx)
    rng = np.random.default_rng(7)
    lm_pos = synth.mean_shape[synth.landmarks68]
    keypoints = np.argmin(np.linalg.norm(pts_mm[None] - lm_pos[:, None], axis=2), axis=1)
    return {
        "meanshape": (pts_mm / 100.0 + np.array([0.1, -0.2, 0.3])).reshape(1, 3 * v),
        "idBase": rng.normal(size=(3 * v, K_ID)) * 0.01,
        "exBase": rng.normal(size=(3 * v, K_EXP)) * 0.01,
        "meantex": rng.uniform(60, 200, size=(1, 3 * v)),
        "texBase": rng.normal(size=(3 * v, K_TEX)) * 5.0,
        "tri": (grid_faces(n) + 1).astype(np.float64),  # MATLAB stores doubles
        "keypoints": (keypoints + 1).reshape(1, 68).astype(np.float64),
        "point_buf": np.ones((v, 8)),
    }


@pytest.fixture(scope="module")
def fields() -> dict[str, np.ndarray]:
    return _small_bfm()


def _write(tmp: Path, fields: dict[str, np.ndarray], name: str = "BFM_model_front.mat") -> Path:
    path = tmp / name
    scipy.io.savemat(str(path), fields)
    return path


def _uv(tmp: Path, v: int, name: str = "uv.npy") -> tuple[Path, np.ndarray]:
    uv = np.random.default_rng(8).uniform(0, 1, size=(v, 2))
    path = tmp / name
    if name.endswith(".npy"):
        np.save(path, uv)
    else:
        np.savetxt(path, uv)
    return path, uv


def _expected_vertices(fields: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = fields["meanshape"].reshape(-1, 3)
    mean = mean - mean.mean(0)
    flat = mean.reshape(-1) + fields["idBase"] @ a + fields["exBase"] @ b
    return flat.reshape(-1, 3) * 100.0


def test_round_trip(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    mat = _write(tmp_path, fields)
    v = fields["meanshape"].size // 3
    uv_path, uv = _uv(tmp_path, v)
    m = load_bfm(mat, uv_path)
    assert m.name == "bfm" and m.unit_to_mm == 100.0
    assert (m.n_vertices, m.n_id, m.n_exp, m.n_tex) == (v, K_ID, K_EXP, K_TEX)
    a = np.array([1.0, -0.5, 0.2, 0.0, 2.0])
    b = np.array([0.3, 0.0, -1.0, 0.5])
    np.testing.assert_allclose(m.vertices(a, b), _expected_vertices(fields, a, b), atol=1e-9)
    np.testing.assert_allclose(m.vertices(a, b, mm=False), _expected_vertices(fields, a, b) / 100)
    c = np.array([0.5, -1.0, 2.0])
    tex = (fields["meantex"].reshape(-1) + fields["texBase"] @ c) / 255.0
    np.testing.assert_allclose(m.albedo(c), tex.reshape(-1, 3), atol=1e-12)
    np.testing.assert_array_equal(m.faces, fields["tri"].astype(np.int64) - 1)
    np.testing.assert_array_equal(m.landmarks68, fields["keypoints"].reshape(-1).astype(int) - 1)
    np.testing.assert_allclose(m.uvs, uv)
    assert np.allclose(m.mean_shape.mean(0), 0.0)  # re-centred like Deep3DFaceRecon
    # batched and torch evaluation agree with the explicit sum
    batch = m.vertices(np.stack([a, 2 * a]), b)
    np.testing.assert_allclose(batch[1], _expected_vertices(fields, 2 * a, b), atol=1e-9)
    t = m.vertices(torch.tensor(a), torch.tensor(b))
    np.testing.assert_allclose(t.numpy(), _expected_vertices(fields, a, b), atol=1e-9)
    # regions come from the landmark geometry: eyes around the eye landmarks, fit without them
    assert m.regions.eyes[m.landmarks68[[37, 44]]].all()
    assert m.regions.fit.sum() > 0.2 * v and not np.any(m.regions.fit & m.regions.eyes)


def test_uv_text_file_and_flip(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    mat = _write(tmp_path, fields)
    v = fields["meanshape"].size // 3
    uv_path, uv = _uv(tmp_path, v, "uv.txt")
    m = load_bfm(mat, uv_path, flip_v=True)
    np.testing.assert_allclose(m.uvs[:, 0], uv[:, 0], atol=1e-12)
    np.testing.assert_allclose(m.uvs[:, 1], 1.0 - uv[:, 1], atol=1e-12)


def test_hdf5_v73_file(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bfm73.mat"
    with h5py.File(path, "w") as f:
        for k, val in fields.items():
            f.create_dataset(k, data=np.asarray(val).T)  # MATLAB v7.3 stores column-major
    uv_path, _ = _uv(tmp_path, fields["meanshape"].size // 3)
    m = load_bfm(path, uv_path)
    a = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(m.vertices(a), _expected_vertices(fields, a, np.zeros(K_EXP)))


def _broken(fields: dict[str, np.ndarray], **changes: np.ndarray | None) -> dict[str, np.ndarray]:
    out = dict(fields)
    for k, val in changes.items():
        if val is None:
            out.pop(k)
        else:
            out[k] = val
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"idBase": None}, "missing field 'idBase'"),
        ({"keypoints": None}, "missing field 'keypoints'"),
        ({"meanshape": np.zeros((1, 10))}, "multiple of 3"),
        ({"idBase": np.zeros((12, 5))}, r"field 'idBase': expected shape \(867, K\)"),
        ({"exBase": np.zeros((867,))}, "exBase"),
        ({"meantex": np.zeros((1, 5))}, "meantex"),
        ({"tri": np.zeros((4, 3))}, r"1-based indices must lie in \[1, 289\]"),
        ({"tri": np.ones((4, 2))}, r"expected shape \(F, 3\)"),
        ({"keypoints": np.ones((1, 67))}, "expected 68 values"),
        ({"keypoints": np.full((1, 68), 290.0)}, "keypoints"),
        ({"keypoints": np.full((1, 68), 1.5)}, "integer"),
        ({"meantex": np.zeros((3, 289))}, r"field 'meantex': expected a vector \(1, n\)"),
        ({"texBase": np.zeros((867, 0))}, r"field 'texBase': expected shape \(867, K\)"),
        ({"idBase": np.full((867, 5), np.nan)}, "field 'idBase' contains NaN or inf"),
        ({"meanshape": np.full((1, 867), np.inf)}, "field 'meanshape' contains NaN or inf"),
    ],
)
def test_bad_mat_files(
    tmp_path: Path, fields: dict[str, np.ndarray], change: dict, message: str
) -> None:
    mat = _write(tmp_path, _broken(fields, **change))
    uv_path, _ = _uv(tmp_path, fields["meanshape"].size // 3)
    with pytest.raises(InputFileError, match=message) as info:
        load_bfm(mat, uv_path)
    assert info.value.path == mat


def test_missing_and_unreadable_files(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    v = fields["meanshape"].size // 3
    uv_path, _ = _uv(tmp_path, v)
    with pytest.raises(InputFileError, match="file not found") as info:
        load_bfm(tmp_path / "nope.mat", uv_path)
    assert info.value.path == tmp_path / "nope.mat"
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(InputFileError, match="not a readable MATLAB"):
        load_bfm(junk, uv_path)
    mat = _write(tmp_path, fields)
    with pytest.raises(InputFileError, match="UV file not found"):
        load_bfm(mat, tmp_path / "missing.npy")


def test_bad_uv_files(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    mat = _write(tmp_path, fields)
    v = fields["meanshape"].size // 3
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((v + 1, 2)))
    with pytest.raises(InputFileError, match=rf"expected \({v}, 2\) UVs"):
        load_bfm(mat, wrong)
    out = tmp_path / "out.npy"
    np.save(out, np.full((v, 2), 1.5))
    with pytest.raises(InputFileError, match=r"\[0, 1\]"):
        load_bfm(mat, out)
    bad = tmp_path / "uv.obj"
    bad.write_text("vt 0 0\n")
    with pytest.raises(InputFileError, match="unsupported"):
        load_uv_layout(bad)
    three = tmp_path / "three.npy"
    np.save(three, np.zeros((v, 3)))
    with pytest.raises(InputFileError, match=r"\(V, 2\)"):
        load_uv_layout(three)
    words = tmp_path / "words.npy"
    np.save(words, np.full((v, 2), "a"))
    with pytest.raises(InputFileError, match="UVs must be numbers"):
        load_uv_layout(words)
    # rounding just past the edge is clipped onto it; 1e-3 past it is an error
    edge = np.full((v, 2), 0.5)
    edge[0] = [-5e-7, 1.0 + 5e-7]
    np.save(tmp_path / "edge.npy", edge)
    uv = load_uv_layout(tmp_path / "edge.npy")
    assert uv.min() == 0.0 and uv.max() == 1.0 and uv[0].tolist() == [0.0, 1.0]
    edge[0] = [0.5, 1.001]
    np.save(tmp_path / "past.npy", edge)
    with pytest.raises(InputFileError, match=r"\[0, 1\], got range \[0.5, 1.001\]"):
        load_uv_layout(tmp_path / "past.npy")


def test_bfm_sizes_from_the_header(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    from facehd.morphable.bfm import bfm_sizes

    mat = _write(tmp_path, fields)
    v = fields["meanshape"].size // 3
    sizes = bfm_sizes(mat)
    assert sizes.n_vertices == v
    assert (sizes.n_id, sizes.n_exp, sizes.n_tex) == tuple(
        fields[k].shape[1] for k in ("idBase", "exBase", "texBase")
    )
    flat = _write(tmp_path, _broken(fields, exBase=np.zeros((3 * v, 2, 2))), "flat.mat")
    with pytest.raises(InputFileError, match="must be 2-D"):
        bfm_sizes(flat)


def test_registry_with_bfm(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    mat = _write(tmp_path, fields)
    v = fields["meanshape"].size // 3
    uv_path, _ = _uv(tmp_path, v)
    info = {i.name: i for i in available_models(bfm_path=mat, uv_path=uv_path)}["bfm"]
    assert info.available and (info.n_vertices, info.n_id, info.n_exp, info.n_tex) == (
        v,
        K_ID,
        K_EXP,
        K_TEX,
    )
    m = load_model("bfm", bfm_path=mat, uv_path=uv_path)
    assert m.n_vertices == v and load_model("bfm", bfm_path=mat, uv_path=uv_path) is m
    missing = {i.name: i for i in available_models(bfm_path=mat)}["bfm"]
    assert not missing.available and "UV layout" in missing.note
    with pytest.raises(InputFileError, match="not found"):
        load_model("bfm", bfm_path=tmp_path / "none.mat", uv_path=uv_path)


def test_registry_names_and_notes(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    from facehd.morphable.registry import model_info

    mat = _write(tmp_path, fields)
    uv_path, _ = _uv(tmp_path, fields["meanshape"].size // 3)
    assert model_info(" BFM ", bfm_path=mat, uv_path=uv_path).available
    assert model_info("Facehd-Synth").name == "facehd-synth"
    with pytest.raises(ValueError, match="known models: facehd-synth, bfm"):
        model_info("flame")
    gone = model_info("bfm", bfm_path=tmp_path / "a.mat", uv_path=tmp_path / "b.npy")
    assert not gone.available
    assert gone.note == (
        f"missing: BFM_model_front.mat ({tmp_path / 'a.mat'}); UV layout ({tmp_path / 'b.npy'})"
    )
    with pytest.raises(ValueError, match="needs bfm_path"):
        load_model("bfm", bfm_path=mat)  # the file is there, the UV layout is not given


def test_a_changed_bfm_file_is_read_again(tmp_path: Path, fields: dict[str, np.ndarray]) -> None:
    mat = _write(tmp_path, fields)
    uv_path, _ = _uv(tmp_path, fields["meanshape"].size // 3)
    first = load_model("bfm", bfm_path=mat, uv_path=uv_path)
    assert load_model("bfm", bfm_path=mat, uv_path=uv_path) is first
    moved = dict(fields, meanshape=fields["meanshape"] * 1.1)
    _write(tmp_path, moved)
    later = mat.stat().st_mtime + 10.0
    os.utime(mat, (later, later))
    second = load_model("bfm", bfm_path=mat, uv_path=uv_path)
    assert second is not first
    np.testing.assert_allclose(second.mean_shape, 1.1 * first.mean_shape, rtol=1e-6, atol=1e-12)


def test_a_bfm_file_given_but_missing_is_named_before_the_other_is_asked_for(
    tmp_path: Path,
) -> None:
    with pytest.raises(InputFileError, match=r"nope\.mat: BFM model file not found"):
        load_model("bfm", bfm_path=tmp_path / "nope.mat")
    with pytest.raises(InputFileError, match=r"nope\.npy: BFM UV layout file not found"):
        load_model("bfm", uv_path=tmp_path / "nope.npy")
    with pytest.raises(ValueError, match="needs bfm_path"):
        load_model("bfm")
    with pytest.raises(ValueError, match="'facehd-synth' is built in and reads no files"):
        load_model("facehd-synth", uv_path=tmp_path / "nope.npy")


def test_bfm_files_that_do_not_read_are_not_available(
    tmp_path: Path, fields: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``facehd datasets`` says what ``facehd models`` says of the BFM's files: a ``.mat`` that
    is no MATLAB file, or a UV layout of another vertex count, is "no" with the file and the
    reason in both (``datasets`` said "yes" for any file that existed); good files are "yes"."""
    from typer.testing import CliRunner

    from facehd import cli
    from facehd.cli import app
    from facehd.datasets import load_registry

    monkeypatch.setattr(cli.console, "_width", 400)  # the table's cells unwrapped
    monkeypatch.delenv("FACEHD_BFM_ROOT", raising=False)
    reg = tmp_path / "datasets.yaml"
    reg.write_text(
        "version: 1\nmodels:\n  bfm:\n    description: d\n    root: bfm\n"
        "    env: FACEHD_BFM_ROOT\n    files: {model: BFM_model_front.mat, uv: uv.npy}\n"
    )
    (tmp_path / "bfm").mkdir()
    v = fields["meanshape"].size // 3
    mat = tmp_path / "bfm" / "BFM_model_front.mat"
    uv = tmp_path / "bfm" / "uv.npy"
    mat.write_bytes(b"this is not a MATLAB file at all" * 10)
    np.save(uv, np.full((v, 2), 0.5))

    def said() -> tuple[str, str]:
        a = CliRunner().invoke(app, ["datasets", "--registry", str(reg)])
        b = CliRunner().invoke(app, ["models", "--registry", str(reg)])
        assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
        row = next(line for line in a.output.splitlines() if "model:bfm" in line)
        return " ".join(row.split()), " ".join(b.output.split())

    row, models = said()
    assert f"no: {mat}: not a readable MATLAB" in row, row
    assert f"bfm: {mat}: not a readable MATLAB" in models
    assert not load_registry(reg).models["bfm"].found
    _write(tmp_path / "bfm", fields)
    np.save(uv, np.full((v + 1, 2), 0.5))  # a UV per vertex and one more
    row, models = said()
    assert f"no: {uv}: expected ({v}, 2) UVs" in row, row
    assert f"bfm: {uv}: expected ({v}, 2) UVs" in models
    np.save(uv, np.full((v, 2), 0.5))
    row, models = said()
    assert "model:bfm │ yes" in row and "bfm:" not in models.split("└")[-1], row + models
    assert load_registry(reg).models["bfm"].found

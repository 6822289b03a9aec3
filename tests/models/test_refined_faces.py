"""The refined-faces file: what its digests cover, which files are taken or refused and why,
and the table its entries make."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.analyzer import CoefficientLayout
from models.refined_faces import (
    REFINED_FORMAT,
    RefinedFaces,
    analyzer_digest,
    read_entries,
    sample_digest,
    write_entries,
)

SETTINGS = {"analyzer": "ab" * 32, "steps": 8, "size": 224}


def test_an_analyzer_digest_covers_names_shapes_dtypes_and_every_byte() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    # the reference: the state in name order, each entry's header then its raw bytes
    h = hashlib.sha256()
    for name in sorted(net.state_dict()):
        t = net.state_dict()[name]
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\0".encode())
        h.update(t.numpy().tobytes())
    digest = analyzer_digest(net)
    assert digest == h.hexdigest()

    with torch.no_grad():
        net[1].bias[0] += 1e-7  # one value, below float32's print precision
    assert analyzer_digest(net) != digest
    with torch.no_grad():
        net[1].bias[0] -= 1e-7
    renamed = nn.Sequential()
    renamed.add_module("first", net[0])
    renamed.add_module("second", net[1])
    assert analyzer_digest(renamed) != analyzer_digest(net)  # same values, other names
    assert analyzer_digest(net.double()) != analyzer_digest(net.float())  # other dtype
    wide = net.double()
    digest = analyzer_digest(wide)
    with torch.no_grad():
        wide[0].weight[0, 0] += 1e-12  # below float32's resolution: every bit counts
    assert analyzer_digest(wide) != digest


def _sample(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.random((4, 4, 3)).astype(np.float32),
        "mask": rng.random((4, 4)) > 0.5,
        "landmarks": rng.random((68, 2)).astype(np.float32),
        "name": np.array("ignored"),
    }


def test_a_sample_digest_covers_crop_mask_and_landmarks_with_their_shapes() -> None:
    item = _sample()
    digest = sample_digest(item)
    assert digest == sample_digest({**item, "name": np.array("other")})  # not refined on
    for key in ("image", "mask", "landmarks"):
        changed = dict(item)
        changed[key] = np.array(item[key], copy=True)
        changed[key].flat[0] = 0.25 if changed[key].dtype != bool else not changed[key].flat[0]
        assert sample_digest(changed) != digest, key
    # the same bytes in another shape or type are another sample
    assert sample_digest({**item, "image": item["image"].reshape(2, 8, 3)}) != digest
    as_int = item["landmarks"].view(np.int32)
    assert sample_digest({**item, "landmarks": as_int}) != digest


def _entry(value: float) -> dict:
    return {"digest": "d", "coeffs": torch.full((5,), value), "before": value, "after": value / 2}


def test_entries_are_written_and_read_back_by_sample_index(tmp_path: Path) -> None:
    path = tmp_path / "refined" / "photos.pt"
    assert read_entries(path, SETTINGS) == ({}, None)  # none made yet: nothing to say
    write_entries(path, SETTINGS, {2: _entry(2.0), 0: _entry(0.0)})
    assert [p.name for p in path.parent.iterdir()] == ["photos.pt"]
    got, why = read_entries(path, SETTINGS)
    assert why is None and sorted(got) == [0, 2]
    assert torch.equal(got[2]["coeffs"], torch.full((5,), 2.0)) and got[0]["after"] == 0.0
    assert list(torch.load(path, weights_only=True)["entries"]) == [0, 2]  # in index order

    # keys saved as text (a file written by hand, say) are read as indices
    torch.save({"format": REFINED_FORMAT, "settings": SETTINGS, "entries": {"1": {}}}, path)
    assert read_entries(path, SETTINGS) == ({1: {}}, None)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not a checkpoint", "not a readable PyTorch checkpoint"),
        ({"format": "facehd.model/1", "settings": SETTINGS}, "not a refined-faces file"),
        ({"format": REFINED_FORMAT, "settings": {**SETTINGS, "steps": 9}}, "other settings"),
        ({"format": REFINED_FORMAT, "settings": SETTINGS, "entries": [1, 2]}, "no entries"),
    ],
)
def test_a_file_that_cannot_be_trusted_gives_no_entries_and_says_why(
    tmp_path: Path, data: object, why: str
) -> None:
    path = tmp_path / "photos.pt"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        torch.save(data, path)
    got, reason = read_entries(path, SETTINGS)
    assert got == {} and reason is not None
    assert reason.startswith(str(path)) and why in reason


def test_the_table_takes_each_samples_refined_coefficients() -> None:
    layout = CoefficientLayout(2, 1, 1)  # id 2, exp 1, tex 1, angle 3, gamma 27, trans 3
    d = sum(layout.sizes)
    entries = {
        i: {"coeffs": np.arange(d) + 100.0 * i, "before": 10.0 + i, "after": float(i)}
        for i in range(3)
    }
    table = RefinedFaces.from_entries(entries, 3)
    assert table.flat.dtype == torch.float32 and table.flat.shape == (3, d)
    assert table.before.tolist() == [10.0, 11.0, 12.0] and table.after.tolist() == [0, 1, 2]
    coeffs = table.coefficients(layout, [2, 0], "cpu")
    assert coeffs.id.tolist() == [[200.0, 201.0], [0.0, 1.0]]
    assert coeffs.trans[0].tolist() == [200.0 + d - 3, 200.0 + d - 2, 200.0 + d - 1]
    with pytest.raises(ValueError, match=r"no entry for samples \[3, 4\]"):
        RefinedFaces.from_entries(entries, 5)

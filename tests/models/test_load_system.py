"""load_system: a model file is loaded only onto the morphable model and config it was made
with; each mismatch is an error naming the file and what differs (files laid out by the
trainer's own model_file_data, from an untrained tiny-cpu system)."""

from __future__ import annotations

import copy

import pytest

from facehd.errors import InputFileError
from facehd.morphable import load_model
from models.checkpoints import save_checkpoint_atomic
from models.reconstruct import load_system
from models.system import FaceSystem
from models.train import model_file_data, tiny_cpu_train_config


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> tuple:
    cfg = tiny_cpu_train_config()
    model = load_model("facehd-synth")
    data = model_file_data(cfg, model, FaceSystem(cfg.model, model, cfg.image_size), ["base"])
    path = save_checkpoint_atomic(tmp_path_factory.mktemp("model") / "model.pt", data)
    return path, data


def _variant(tmp_path, data: dict, change) -> object:
    changed = copy.deepcopy(data)
    change(changed)
    return save_checkpoint_atomic(tmp_path / "variant.pt", changed)


def test_the_file_as_written_loads_with_its_stages(model_file) -> None:
    path, _ = model_file
    system, cfg = load_system(path)
    assert system.trained_stages == ("base",) and cfg.morphable.name == "facehd-synth"


def test_a_model_file_refuses_what_does_not_match_it(model_file, tmp_path) -> None:
    path, data = model_file

    def other_model(d: dict) -> None:
        d["morphable"]["n_vertices"] += 1

    def other_version(d: dict) -> None:
        d["morphable"]["fingerprint"]["projections"][3] += 1.0

    def bad_config(d: dict) -> None:
        d["config"]["model"]["network"]["mid_size"] = "big"

    for change, message in (
        (other_model, "checkpoint is for the morphable model"),
        (other_version, "trained with another version of 'facehd-synth'"),
        (bad_config, "checkpoint config unreadable: .*mid_size"),
    ):
        with pytest.raises(InputFileError, match=message) as err:
            load_system(_variant(tmp_path, data, change))
        assert str(tmp_path / "variant.pt") in str(err.value)
    with pytest.raises(InputFileError, match="built-in 'facehd-synth' model, which reads no"):
        load_system(path, bfm_path=tmp_path / "BFM_model_front.mat")


def test_the_official_layout_needs_the_bfm_files(tmp_path) -> None:
    path = save_checkpoint_atomic(
        tmp_path / "hrn.pth", {"net_recon": {}, "mid_net": {}, "high_net": {}}
    )
    with pytest.raises(InputFileError, match="official HRN checkpoint works on the BFM: give"):
        load_system(path)

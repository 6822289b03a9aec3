"""The trainer: exact resume, run folder, clear errors, schedules, sampling, ground-truth maps."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hrn_testdata import one_torch_thread, states_equal, tiny_config

from facehd.errors import FacehdError, InputFileError
from models.checkpoints import read_checkpoint
from models.config import load_config
from models.data import EpochSampler, LabDataset, lab_photos_path, resize_map
from models.train import StageConfig, TrainConfig, load_train_config, train


class Killed(Exception):
    pass


def kill_at(stage: str, step: int):
    def callback(s: str, k: int, total: int, values: dict) -> None:
        if s == stage and k == step:
            raise Killed()

    return callback


@pytest.fixture(scope="module")
def full_run(hrn_data, tmp_path_factory):
    """An uninterrupted run of the three stages."""
    out = tmp_path_factory.mktemp("run") / "full"
    with one_torch_thread():
        result = train(tiny_config(), out, photos=hrn_data.photos, priors=hrn_data.priors)
    return out, result


def test_a_killed_run_resumes_exactly(hrn_data, full_run, tmp_path, one_thread):
    out_full, result = full_run
    assert result.stages == ["base", "deretouch", "hrn"]
    assert result.steps == {"base": 3, "deretouch": 2, "hrn": 5}
    out = tmp_path / "killed"
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    # killed in base step 2 (no checkpoint yet: the stage restarts), then in hrn step 4 (the
    # step-2 checkpoint exists, step 3 is lost): the resumed run redoes it identically
    with pytest.raises(Killed):
        train(tiny_config(), out, callback=kill_at("base", 1), **kw)
    assert not (out / "checkpoints" / "base.pt").exists()
    with pytest.raises(Killed):
        train(tiny_config(), out, resume=True, callback=kill_at("hrn", 3), **kw)
    ckpt = read_checkpoint(out / "checkpoints" / "hrn.pt")
    assert ckpt["step"] == 2 and not ckpt["done"]
    # what a run killed inside a save leaves (its pid in the name): cleared by the resume
    stale = [out / "model.pt.tmp4242", out / "checkpoints" / "hrn.pt.tmp4242", out / "x.csv.tmp"]
    for f in stale:
        f.write_bytes(b"partial")
    # and a log row cut short (a crash of the machine in the middle of its write): dropped
    with open(out / "log_hrn.csv", "a") as fh:
        fh.write("1")
    train(tiny_config(), out, resume=True, **kw)
    assert [f for f in stale if f.exists()] == []
    assert states_equal(out_full / "model.pt", out / "model.pt") == []
    # the logs are those of the uninterrupted run (rows after the last checkpoint dropped)
    for stage in ("base", "deretouch", "hrn"):
        a = (out_full / f"log_{stage}.csv").read_text()
        assert (out / f"log_{stage}.csv").read_text() == a


def test_a_signal_stops_after_the_step_with_its_checkpoint(
    hrn_data, full_run, tmp_path, one_thread
):
    import os
    import signal

    from models.train import TrainingInterrupted

    out_full, _ = full_run
    out = tmp_path / "stopped"
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}

    def terminate(stage: str, step: int, total: int, values: dict) -> None:
        if (stage, step) == ("hrn", 1):  # kill, as a scheduler does, during step 1's report
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="stopped at stage hrn, step 2") as info:
        train(tiny_config(), out, callback=terminate, **kw)
    ckpt = read_checkpoint(info.value.checkpoint)  # the step in flight finished and was saved
    assert (ckpt["stage"], ckpt["step"], ckpt["done"]) == ("hrn", 2, False)
    assert "stopped by a signal after step 2" in (out / "train.log").read_text()
    assert signal.getsignal(signal.SIGTERM) == before  # handlers given back
    train(tiny_config(), out, resume=True, **kw)
    assert states_equal(out_full / "model.pt", out / "model.pt") == []
    for stage in ("base", "deretouch", "hrn"):
        assert (out / f"log_{stage}.csv").read_text() == (out_full / f"log_{stage}.csv").read_text()

    # a signal at a stage's last step: the next stage does not run on (an ablation trains one
    # run after another, and would have carried on for minutes)
    def at_last_base_step(stage: str, step: int, total: int, values: dict) -> None:
        if (stage, step) == ("base", total):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="stopped at stage deretouch, step 1"):
        train(tiny_config(), tmp_path / "last", callback=at_last_base_step, **kw)


def test_stagewise_runs_equal_one_run(hrn_data, full_run, tmp_path, one_thread):
    """base, then deretouch, then hrn as three commands on one folder = one command."""
    out = tmp_path / "stagewise"
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    train(tiny_config(), out, stages=["base"], **kw)
    train(tiny_config(), out, stages=["deretouch"], resume=True, **kw)
    res = train(tiny_config(), out, stages=["hrn"], resume=True, **kw)
    assert res.stages == ["base", "deretouch", "hrn"]
    assert states_equal(full_run[0] / "model.pt", out / "model.pt") == []


def test_training_changes_exactly_the_stage_parameters(full_run):
    out, _ = full_run
    base = read_checkpoint(out / "checkpoints" / "base.pt")["state"]["hrn"]
    drm = read_checkpoint(out / "checkpoints" / "deretouch.pt")["state"]["hrn"]
    hrn = read_checkpoint(out / "checkpoints" / "hrn.pt")["state"]["hrn"]

    def changed(a, b, prefix):
        return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))

    # de-retouching stage: only the de-retouching network changes
    assert changed(base, drm, "deretouch.") and not changed(base, drm, "net_recon.")
    assert not changed(base, drm, "mid_net.")
    # detail stage: generators and scales change, analyzer and de-retouching frozen
    assert changed(drm, hrn, "mid_net.") and changed(drm, hrn, "high_net.")
    assert not changed(drm, hrn, "net_recon.") and not changed(drm, hrn, "deretouch.")
    assert not torch.equal(drm["alpha"], hrn["alpha"])


def test_run_folder(full_run):
    out, result = full_run
    cfg = load_config(out / "config.yaml", TrainConfig)
    assert cfg.image_size == 48 and cfg.template == "facehd-synth"  # resolved from photos.h5
    assert cfg.hrn.steps == 5
    assert result.model_path == out / "model.pt"
    model = read_checkpoint(out / "model.pt")
    assert model["format"] == "facehd.model/1" and model["stages"] == ["base", "deretouch", "hrn"]
    assert model["morphable"]["name"] == "facehd-synth"
    with open(out / "log_hrn.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    # self-supervised and supervised iterations alternate; only supervised ones have L1 terms
    assert [r["kind"] for r in rows] == ["self", "sup", "self", "sup", "self"]
    assert all(r["supervised_mid"] == "" for r in rows if r["kind"] == "self")
    assert all(float(r["supervised_mid"]) > 0 for r in rows if r["kind"] == "sup")
    text = (out / "train.log").read_text()
    assert "perceptual loss is off" in text
    # TensorBoard (a dependency): the event files hold the CSV's numbers, step by step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard" / "hrn"))
    events.Reload()
    for term in ("total", "supervised_mid"):
        logged = {e.step: e.value for e in events.Scalars(f"hrn/{term}")}
        in_csv = {int(r["step"]): float(r[term]) for r in rows if r[term] != ""}
        assert sorted(logged) == sorted(in_csv) and in_csv
        assert all(abs(logged[k] - v) <= 1e-6 * max(1.0, abs(v)) for k, v in in_csv.items())
    assert "tensorboard is not installed" not in text
    ck = read_checkpoint(out / "checkpoints" / "hrn.pt")
    assert set(ck["optimizers"]) == {"generators", "disc"}
    assert set(ck["data"]) == {"photos", "lab"} and len(ck["rng"]) == 1


def test_clear_errors(hrn_data, full_run, tmp_path, one_thread):
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    # an existing run is not overwritten
    with pytest.raises(FacehdError, match="--resume"):
        train(tiny_config(), full_run[0], **kw)
    # resuming with another configuration
    other = tiny_config()
    other.hrn.lr = 0.123
    with pytest.raises(FacehdError, match=r"hrn\.lr"):
        train(other, full_run[0], resume=True, **kw)
    # a corrupt checkpoint names the file
    out = tmp_path / "corrupt"
    cfg = tiny_config()
    cfg.base.steps = 2
    train(cfg, out, stages=["base"], **kw)
    ckpt = out / "checkpoints" / "base.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(InputFileError, match="base.pt"):
        train(cfg, out, stages=["base"], resume=True, **kw)
    # a config with an unknown key names the file and the key
    bad = tmp_path / "bad.yaml"
    bad.write_text("hrn:\n  steps: 3\n  lerning_rate: 0.1\n")
    with pytest.raises(InputFileError, match=r"bad\.yaml.*lerning_rate"):
        load_train_config(bad)
    with pytest.raises(InputFileError, match="preset"):
        load_train_config("tiny")
    # BFM files set beside the built-in model: the user meant the BFM
    from models.config import ConfigError

    wrong = tiny_config()
    wrong.base.steps = 1
    wrong.morphable.bfm_path = str(tmp_path / "BFM_model_front.mat")
    with pytest.raises(ConfigError, match=r"facehd-synth.*reads no files.*morphable\.name=bfm"):
        train(wrong, tmp_path / "wrong", stages=["base"], **kw)
    assert not (tmp_path / "wrong" / "checkpoints").exists()
    # a priors file of another morphable model
    with pytest.raises(InputFileError, match="bfm"):
        LabDataset(hrn_data.priors, model_name="bfm")
    # the photos given where the priors are expected
    with pytest.raises(InputFileError, match="priors dataset"):
        LabDataset(hrn_data.photos)
    # priors fitted with another version of the model (its bases changed since)
    from hrn_testdata import write_truth_priors

    from facehd.morphable import load_model

    model = load_model("facehd-synth")
    old_print = model.fingerprint
    old_print["projections"][5] += 1e-3 * (1 + abs(old_print["projections"][5]))
    stale = write_truth_priors(hrn_data.scans, tmp_path / "stale.h5", fingerprint=old_print)
    with pytest.raises(InputFileError, match=r"stale\.h5.*another version"):
        LabDataset(stale, model=model)
    assert len(LabDataset(hrn_data.priors, model=model)) == 4
    # a checkpoint trained with another version of the model
    from models.checkpoints import read_checkpoint, save_checkpoint_atomic
    from models.reconstruct import load_system

    data = read_checkpoint(full_run[0] / "model.pt")
    data["morphable"]["fingerprint"]["topology"] = "0" * 16
    save_checkpoint_atomic(tmp_path / "old.pt", data)
    with pytest.raises(InputFileError, match=r"old\.pt.*another version"):
        load_system(tmp_path / "old.pt")


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.pop("state"), "no 'state'"),
        (lambda d: d.update(state=[1, 2]), "'state' is a list"),
        (lambda d: d["state"].pop("discriminators"), "no 'state.discriminators'"),
        (lambda d: d.pop("config"), "no 'config'"),
        (lambda d: d.pop("rng"), "no 'rng'"),
        (lambda d: d.update(step="abc"), "'step' is a str"),
        (lambda d: d["optimizers"].pop("generators"), "cannot be resumed from .*generators"),
        (lambda d: d["data"]["photos"].update(n=999), "cannot be resumed from .*999 samples"),
        (lambda d: d["optimizers"]["disc"].update(param_groups=[]), "cannot be resumed from"),
    ],
)
def test_a_damaged_checkpoint_is_named(hrn_data, full_run, tmp_path, one_thread, edit, says):
    """A checkpoint with the right format tag but parts missing or of another kind (damaged,
    edited by hand) is refused naming the file and the part, by --resume, --init and
    reconstruct, instead of a KeyError or TypeError traceback."""
    import shutil

    from models.checkpoints import save_checkpoint_atomic
    from models.reconstruct import load_system

    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    ckpt = out / "checkpoints" / "hrn.pt"
    data = read_checkpoint(ckpt)
    data["done"] = False
    edit(data)
    save_checkpoint_atomic(ckpt, data)
    with pytest.raises(InputFileError, match=rf"hrn\.pt: .*{says}"):
        train(tiny_config(), out, resume=True, stages=["hrn"], **kw)
    if "resumed" not in says and "rng" not in says and "step" not in says:
        with pytest.raises(InputFileError, match=rf"hrn\.pt: .*{says}"):
            train(tiny_config(), tmp_path / "new", init=ckpt, stages=["hrn"], **kw)
        if "discriminators" not in says:
            with pytest.raises(InputFileError, match=rf"hrn\.pt: .*{says}"):
                load_system(ckpt)


def test_a_dict_that_is_no_checkpoint_is_named(hrn_data, tmp_path, one_thread):
    path = tmp_path / "weights.pt"
    torch.save({"encoder": {"w": torch.zeros(2)}}, path)
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "stages": ["hrn"]}
    with pytest.raises(InputFileError, match=r"weights\.pt: neither a facehd checkpoint"):
        train(tiny_config(), tmp_path / "run", init=path, **kw)
    # a format entry this version does not read: named, not said to be missing
    torch.save({"format": "facehd.model/9", "state": {}}, path)
    with pytest.raises(InputFileError, match=r"weights\.pt: a file of format 'facehd.model/9'"):
        train(tiny_config(), tmp_path / "run", init=path, **kw)


def test_a_run_resumes_only_on_its_own_data(hrn_data, full_run, tmp_path, one_thread):
    import json
    import shutil

    from hrn_testdata import write_truth_priors

    from models.train import dataset_fingerprint

    out = full_run[0]
    record = json.loads((out / "data.json").read_text())
    assert record["priors"]["sha256"] == dataset_fingerprint(hrn_data.priors)["sha256"]
    assert record["photos"]["samples"] > 0 and record["pairs"] is None
    # the same content elsewhere is the same data: the finished run resumes (nothing to do)
    moved = shutil.copy(hrn_data.priors, tmp_path / "moved.h5")
    assert dataset_fingerprint(moved)["sha256"] == record["priors"]["sha256"]
    res = train(tiny_config(), out, photos=hrn_data.photos, priors=moved, resume=True)
    assert res.stages == ["base", "deretouch", "hrn"]
    # other content (a scan fewer; the same scans under another model name) is refused
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for gt in sorted(Path(hrn_data.scans).glob("*.gt.npz"))[1:]:
        sid = gt.name[: -len(".gt.npz")]
        for f in Path(hrn_data.scans).glob(sid + ".*"):
            shutil.copy(f, fewer / f.name)
    for other in (
        write_truth_priors(fewer, tmp_path / "fewer.h5"),
        write_truth_priors(hrn_data.scans, tmp_path / "renamed.h5", model_name="renamed"),
    ):
        assert dataset_fingerprint(other)["sha256"] != record["priors"]["sha256"]
        with pytest.raises(FacehdError, match=r"other priors.*give the run's data"):
            train(tiny_config(), out, photos=hrn_data.photos, priors=other, resume=True)
    assert json.loads((out / "data.json").read_text()) == record  # unchanged by the refusals
    # the file trained on, edited in place since (one landmark moved): said as such
    import h5py

    from models.train import run_data_matches

    photos = Path(shutil.copy(hrn_data.photos, tmp_path / "photos.h5"))
    run = tmp_path / "run"
    run.mkdir()
    run_data_matches(run, photos=photos, priors=None, new_run=True)
    run_data_matches(run, photos=photos, priors=None)  # the same: accepted
    with h5py.File(photos, "r+") as f:
        f["landmarks68"][0] = f["landmarks68"][0] + 1.0
    with pytest.raises(FacehdError, match=r"other photos: .*photos\.h5 .* content changed since"):
        run_data_matches(run, photos=photos, priors=None)


def test_presets_load_and_differ():
    tiny, paper = load_train_config("tiny-cpu"), load_train_config("paper")
    assert paper.morphable.name == "bfm" and paper.hrn.steps == 800_000
    assert paper.hrn.batch_size == 4 and paper.hrn.lr == 1e-4
    assert paper.model.network.high_size == 256 and paper.model.network.mid.n_blocks == 9
    assert paper.model.hrn_losses.contour == 20.0 and paper.model.hrn_losses.tv == 5e3
    assert tiny.morphable.name == "facehd-synth" and tiny.model.network.mid.filters == 8
    # the paper's scales learn from the first step; tiny-cpu holds them for half the stage
    assert paper.hrn_options.scale_warmup == 0.0 and tiny.hrn_options.scale_warmup == 0.5
    # the paper's adversarial weight; tiny-cpu trains without the adversarial losses
    assert paper.model.hrn_losses.adversarial == 0.2 and tiny.model.hrn_losses.adversarial == 0.0


def test_scale_options_are_checked(tmp_path):
    from models.config import ConfigError

    cfg = tiny_config()
    cfg.hrn_options.scale_warmup = 1.5
    with pytest.raises(ConfigError, match="scale_warmup"):
        train(cfg, tmp_path / "bad")


def test_learning_rate_schedules():
    c = StageConfig(steps=100, lr=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert c.lr_at(5) == pytest.approx(0.5)
    assert c.lr_at(10) == pytest.approx(1.0)
    assert c.lr_at(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert c.lr_at(100) == pytest.approx(0.1)
    s = StageConfig(steps=100, lr=2.0, schedule="step", decay_every=30, decay_factor=0.5)
    assert [s.lr_at(k) for k in (1, 29, 30, 60, 95)] == [2.0, 2.0, 1.0, 0.5, 0.25]
    assert StageConfig(lr=3.0).lr_at(77) == 3.0


def test_sampler_epochs_ranks_and_resume():
    n = 10
    one = EpochSampler(n, 4, seed=3)
    drawn = [i for _ in range(5) for i in one.next_batch()]  # 20 = two epochs
    assert sorted(drawn[:10]) == list(range(n)) and sorted(drawn[10:]) == list(range(n))
    assert drawn[:10] != drawn[10:]
    # two ranks share each epoch without overlap
    r0 = EpochSampler(n, 5, seed=3, rank=0, world=2)
    r1 = EpochSampler(n, 5, seed=3, rank=1, world=2)
    a, b = r0.next_batch(), r1.next_batch()
    assert sorted(a + b) == list(range(n))
    # the state is the whole position
    s = EpochSampler(n, 3, seed=1)
    s.next_batch(), s.next_batch()
    t = EpochSampler(n, 3, seed=1)
    t.load_state_dict(s.state_dict())
    assert [s.next_batch() for _ in range(4)] == [t.next_batch() for _ in range(4)]
    with pytest.raises(ValueError, match="changed"):
        EpochSampler(11, 3, seed=1).load_state_dict(s.state_dict())


def test_resize_map_is_a_masked_area_average():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 8, 8, generator=g)
    m = (torch.rand(2, 1, 8, 8, generator=g) > 0.2).float()
    out, valid = resize_map(v, m, 4)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                blk = m[b, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                if blk.min() < 1:
                    assert valid[b, 0, i, j] == 0 and torch.all(out[b, :, i, j] == 0)
                else:
                    want = v[b, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean((1, 2))
                    assert valid[b, 0, i, j] == 1
                    torch.testing.assert_close(out[b, :, i, j], want)


def test_lab_photos_are_found_and_cropped(hrn_data):
    lab = LabDataset(hrn_data.priors, template="facehd-synth", model_name="facehd-synth")
    assert len(lab) == 4 and lab.without_photos == [] and lab.has_clean
    found = lab_photos_path("elsewhere/s000_e00.ply", "s000_e00", hrn_data.scans / "x.h5")
    assert found == hrn_data.scans / "s000_e00.photos.npz"
    assert lab_photos_path("/nope/zzz.ply", "zzz", hrn_data.priors) is None
    item = lab[0]
    assert item["image"].shape == (224, 224, 3) and item["mask"].shape == (224, 224)
    # the skin mask covers the inner-face landmarks (nose tip) in the crop
    x, y = np.round(item["landmarks"][30]).astype(int)
    assert item["mask"][y - 3 : y + 4, x - 3 : x + 4].any()
    assert item["deformation"].shape == (64, 64, 3) and item["displacement"].shape == (256, 256)


def test_a_run_says_once_that_perceptual_is_off(hrn_data, tmp_path, one_thread, caplog):
    """The trainer says it (console and train.log); the loss it builds says nothing more."""
    cfg = tiny_config()
    cfg.base.steps = 1
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        train(cfg, out, photos=hrn_data.photos, stages=["base"])
    said = [r for r in caplog.records if "perceptual loss is off" in r.getMessage()]
    assert [r.name for r in said] == ["facehd.train"]
    assert (out / "train.log").read_text().count("perceptual loss is off") == 1


def test_perceptual_loss_with_an_identity_network(hrn_data, tmp_path, one_thread):
    from models.identity import IResNet

    # an ArcFace IResNet state dict, as arcface_torch saves backbone.pth (a small depth here)
    torch.manual_seed(0)
    path = tmp_path / "backbone.pth"
    torch.save(IResNet((1, 1, 1, 1), features=32).state_dict(), path)
    cfg = tiny_config()
    cfg.base.steps = 1
    cfg.identity_network = str(path)
    out = tmp_path / "run"
    train(cfg, out, photos=hrn_data.photos, stages=["base"])
    with open(out / "log_base.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["perceptual"]) > 0
    log = (out / "train.log").read_text()
    assert "perceptual loss is off" not in log
    assert "identity network IResNet (1, 1, 1, 1)" in log
    cfg.identity_network = str(tmp_path / "missing.pt")
    with pytest.raises(InputFileError, match="identity network"):
        train(cfg, tmp_path / "run2", photos=hrn_data.photos, stages=["base"])


def test_photos_dataset_from_synthetic_truth(hrn_data):
    from facehd.align import crop_transform, named_template
    from facehd.detect import landmarks5_from_68
    from facehd.h5io import open_dataset

    with open_dataset(hrn_data.pairs) as ds:
        assert ds.sample_ids == ["s000_e00_v00", "s000_e00_v01", "s001_e00_v00", "s001_e00_v01"]
        lm = ds.read_field("landmarks68", 3)
        clean, image = ds.read_field("image_clean", 3), ds.read_field("image", 3)
    z = np.load(hrn_data.scans / "s001_e00.photos.npz")
    true = z["landmarks68"][1]
    t = crop_transform(landmarks5_from_68(true), template=named_template("facehd-synth"))
    np.testing.assert_allclose(lm, t.apply(true), atol=1e-3)
    # the clean twin differs from the photo only where blemishes are (a small part of the face)
    differs = np.abs(clean.astype(int) - image.astype(int)).max(-1) > 8
    assert 0 < differs.mean() < 0.05


def test_scales_are_held_during_their_warmup(hrn_data, full_run, tmp_path, one_thread):
    """tiny-cpu holds alpha and beta for the first half of the detail stage (2 of 5 steps here)
    while the generators learn; a warmup of the whole stage keeps them at their initial values;
    without warmup they move from the first step."""
    out_full, _ = full_run
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    init = out_full / "checkpoints" / "deretouch.pt"
    start = read_checkpoint(init)["state"]["hrn"]

    def scales(folder: Path) -> dict[int, tuple[float, float]]:
        with open(folder / "log_hrn.csv") as fh:
            return {
                int(r["step"]): (float(r["alpha"]), float(r["beta"])) for r in csv.DictReader(fh)
            }

    a0, b0 = float(start["alpha"]), float(start["beta"])
    full = scales(out_full)
    assert full[1] == pytest.approx((a0, b0)) and full[2] == pytest.approx((a0, b0))
    assert full[3][1] != pytest.approx(b0) and full[5][0] != pytest.approx(a0)
    for warmup, moves in ((1.0, False), (0.0, True)):
        cfg = tiny_config()
        cfg.hrn_options.scale_warmup = warmup
        out = tmp_path / f"w{warmup}"
        train(cfg, out, stages=["hrn"], init=init, **kw)
        log = scales(out)
        assert (log[1][1] != pytest.approx(b0)) is moves
        assert (log[5][1] != pytest.approx(b0)) is moves
        hrn = read_checkpoint(out / "checkpoints" / "hrn.pt")["state"]["hrn"]
        assert torch.equal(hrn["beta"], start["beta"]) is not moves
        assert not torch.equal(hrn["high_net.model.1.weight"], start["high_net.model.1.weight"])


def test_without_adversarial_losses_the_discriminators_are_not_run(
    hrn_data, full_run, tmp_path, one_thread
):
    """At lambda_7 = 0 the detail stage neither runs nor trains the discriminators: they keep
    their starting weights, no optimiser is kept for them and the log says so, and the
    generators learn as with a vanishing adversarial weight, where the discriminators run and
    train (1e-30: every gradient it adds rounds away), to float32 rounding."""
    out_full, _ = full_run
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "stages": ["hrn"]}
    init = out_full / "checkpoints" / "deretouch.pt"
    start = read_checkpoint(init)["state"]
    runs = {}
    for weight in (0.0, 1e-30):
        cfg = tiny_config()
        cfg.model.hrn_losses.adversarial = weight
        out = tmp_path / f"adv{weight}"
        train(cfg, out, init=init, **kw)
        runs[weight] = read_checkpoint(out / "checkpoints" / "hrn.pt")
    off, tiny = runs[0.0], runs[1e-30]
    assert set(off["optimizers"]) == {"generators"}
    assert set(tiny["optimizers"]) == {"generators", "disc"}
    discs = off["state"]["discriminators"]
    assert all(torch.equal(discs[k], start["discriminators"][k]) for k in discs)
    moved = tiny["state"]["discriminators"]
    assert any(not torch.equal(moved[k], start["discriminators"][k]) for k in moved)
    assert "adversarial losses off" in (tmp_path / "adv0.0" / "train.log").read_text()
    assert "adversarial losses off" not in (tmp_path / "adv1e-30" / "train.log").read_text()
    for k, v in off["state"]["hrn"].items():
        ref = tiny["state"]["hrn"][k]
        if v.is_floating_point():
            torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(v, ref), k
    assert not torch.equal(off["state"]["hrn"]["alpha"], start["hrn"]["alpha"])


def test_a_run_started_from_init_resumes_from_it(hrn_data, full_run, tmp_path, one_thread):
    """A run started with --init and killed before its first checkpoint resumes from the same
    checkpoint without --init (recorded in init.json), exactly as the uninterrupted run; another
    file, a changed one, or --init added to a run started without it are refused."""
    out_full, _ = full_run
    init = tmp_path / "start.pt"
    init.write_bytes((out_full / "checkpoints" / "deretouch.pt").read_bytes())
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "stages": ["hrn"]}
    train(tiny_config(), tmp_path / "whole", init=init, **kw)
    # the perceptual loss's state is said by every run with a stage that has it, not only base
    assert "perceptual loss is off" in (tmp_path / "whole" / "train.log").read_text()
    with pytest.raises(InputFileError, match=r"absent\.pt: checkpoint file \(--init\) not found"):
        train(tiny_config(), tmp_path / "never", init=tmp_path / "absent.pt", **kw)
    assert not (tmp_path / "never").exists()  # nothing made for a run that cannot start
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train(tiny_config(), out, init=init, callback=kill_at("hrn", 1), **kw)
    assert not (out / "checkpoints" / "hrn.pt").exists()
    train(tiny_config(), out, resume=True, **kw)
    assert states_equal(tmp_path / "whole" / "model.pt", out / "model.pt") == []
    # without the record, the stage would have started from untrained networks
    assert "taken from the run's init.json" in (out / "train.log").read_text()
    other = tmp_path / "other.pt"
    other.write_bytes((out_full / "model.pt").read_bytes())
    with pytest.raises(FacehdError, match=r"started with --init .*start\.pt; .*other\.pt"):
        train(tiny_config(), out, resume=True, init=other, **kw)
    train(tiny_config(), out, resume=True, init=init, **kw)  # the same file again: accepted
    init.write_bytes(other.read_bytes())
    with pytest.raises(InputFileError, match=r"start\.pt: changed since this run"):
        train(tiny_config(), out, resume=True, **kw)
    with pytest.raises(FacehdError, match="started without --init"):
        train(tiny_config(), out_full, resume=True, init=other, **kw)


def test_a_resume_without_stage_continues_the_stages_the_run_was_given(
    hrn_data, full_run, tmp_path, one_thread
):
    """A ``--stage hrn`` run from ``--init``, killed before its first checkpoint, resumed
    without ``--stage``: it trains the detail stage alone (recorded in stages.json), as the
    uninterrupted run, where all three stages would retrain the analyzer from the --init
    weights first; ``--stage`` given to the resume is taken, and recorded."""
    from models.train import STAGES_RECORD, recorded_stages

    out_full, _ = full_run
    init = tmp_path / "start.pt"
    init.write_bytes((out_full / "checkpoints" / "deretouch.pt").read_bytes())
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    train(tiny_config(), tmp_path / "whole", init=init, stages=["hrn"], **kw)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train(tiny_config(), out, init=init, stages=["hrn"], callback=kill_at("hrn", 1), **kw)
    assert recorded_stages(out) == ["hrn"]
    result = train(tiny_config(), out, resume=True, **kw)
    assert result.stages == ["hrn"] and result.steps == {"hrn": 5}
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["hrn.pt"]
    assert states_equal(tmp_path / "whole" / "model.pt", out / "model.pt") == []
    assert f"stages taken from the run's {STAGES_RECORD}: hrn" in (out / "train.log").read_text()
    # a run made before the record continues all three, as it did; a damaged record is named
    assert recorded_stages(tmp_path / "nowhere") == ["base", "deretouch", "hrn"]
    (out / STAGES_RECORD).write_text("{}")
    with pytest.raises(InputFileError, match=r"stages\.json: unreadable record"):
        train(tiny_config(), out, resume=True, **kw)
    train(tiny_config(), out, resume=True, stages=["hrn"], **kw)
    assert recorded_stages(out) == ["hrn"]


def test_a_run_whose_init_could_not_be_read_resumes_from_another(
    hrn_data, full_run, tmp_path, one_thread
):
    import json

    good = full_run[0] / "checkpoints" / "deretouch.pt"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "stages": ["hrn"]}
    out = tmp_path / "run"
    with pytest.raises(InputFileError, match=r"cut\.pt"):
        train(tiny_config(), out, init=cut, **kw)
    assert not out.exists()  # refused before the run folder is made
    # a run killed before its first checkpoint trained nothing that was saved from its --init:
    # --resume takes another --init, and records it
    other = full_run[0] / "checkpoints" / "base.pt"
    with pytest.raises(Killed):
        train(tiny_config(), out, init=other, callback=kill_at("hrn", 1), **kw)
    assert not (out / "checkpoints" / "hrn.pt").exists()
    train(tiny_config(), out, resume=True, init=good, **kw)
    assert json.loads((out / "init.json").read_text())["path"] == str(good.resolve())
    assert states_equal(full_run[0] / "model.pt", out / "model.pt") == []


def test_init_accepts_the_same_model_built_with_other_threads_only(
    hrn_data, full_run, tmp_path, one_thread
):
    """The procedural model's fingerprint floats differ in their last bits with the BLAS thread
    count: a checkpoint made on another machine still starts a run; another model version not."""
    from models.checkpoints import read_checkpoint, save_checkpoint_atomic

    out_full, _ = full_run
    data = read_checkpoint(out_full / "model.pt")
    proj = data["morphable"]["fingerprint"]["projections"]
    data["morphable"]["fingerprint"]["projections"] = [p * (1 + 1e-13) for p in proj]
    save_checkpoint_atomic(tmp_path / "other-threads.pt", data)
    cfg = tiny_config()
    cfg.hrn.steps = 1
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "stages": ["hrn"]}
    train(cfg, tmp_path / "run", init=tmp_path / "other-threads.pt", **kw)
    assert (tmp_path / "run" / "model.pt").is_file()
    data["morphable"]["fingerprint"]["projections"] = [p * (1 + 1e-3) + 1 for p in proj]
    save_checkpoint_atomic(tmp_path / "other-version.pt", data)
    with pytest.raises(InputFileError, match=r"other-version\.pt.*morphable model"):
        train(cfg, tmp_path / "run2", init=tmp_path / "other-version.pt", **kw)


def test_mistakes_are_refused_before_training_and_a_run_is_not_shared(
    hrn_data, full_run, tmp_path, one_thread
):
    import os
    import subprocess
    import sys

    from hrn_testdata import write_truth_priors

    from models.train import _run_lock

    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    calls: list[str] = []

    def count(stage, step, total, values):  # noqa: ANN001
        calls.append(stage)

    # priors of another model: refused before the base stage trains a step
    other = write_truth_priors(hrn_data.scans, tmp_path / "bfm.h5", model_name="bfm")
    with pytest.raises(InputFileError, match=r"bfm\.h5"):
        train(tiny_config(), tmp_path / "a", photos=hrn_data.photos, priors=other, callback=count)
    # a NaN in a photo's landmarks or in a prior's map (a file edited, or written before its
    # writer checked): named with the sample, before a step, not as a NaN loss or an SVD error
    import h5py

    for name, field, where in (
        ("photos", "landmarks68", (1, 30, 0)),
        ("priors", "deformation", (0, 5, 5, 1)),
    ):
        bad = tmp_path / f"nan-{name}.h5"
        bad.write_bytes(Path(kw[name]).read_bytes())
        with h5py.File(bad, "r+") as f:
            f[field][where] = np.nan
            sample = f["sample_id"][where[0]].decode()
        with pytest.raises(
            InputFileError, match=rf"nan-{name}\.h5: field '{field}' holds NaN .*'{sample}'"
        ):
            train(tiny_config(), tmp_path / f"n{name}", callback=count, **(kw | {name: bad}))
        assert not (tmp_path / f"n{name}").exists()
    # de-retouching pairs without clean twins (the photos given as --pairs): the same
    with pytest.raises(FacehdError, match="image_clean|clean"):
        train(tiny_config(), tmp_path / "b", pairs=hrn_data.photos, callback=count, **kw)
    assert calls == []
    # --out an existing file
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    with pytest.raises(FacehdError, match="not a folder"):
        train(tiny_config(), afile, **kw)
    # ... or one where a folder of --out should be: named, before the networks are built
    with pytest.raises(FacehdError, match=r"cannot make the run folder: .*afile\.txt is a file"):
        train(tiny_config(), afile / "runs" / "a", **kw)
    # photos cropped to another template than the config's: their framings would differ
    cfg = tiny_config()
    cfg.template = "deep3d"
    with pytest.raises(
        FacehdError, match="prepared with the '.+' template, the config says 'deep3d'"
    ):
        train(cfg, tmp_path / "t", **kw)
    # config values are checked by name
    for stage, key, value, rule in (
        ("base", "lr", -1.0, "> 0"),
        ("hrn", "batch_size", 0, ">= 1"),
        ("deretouch", "betas", (0.9, 1.5), r"a list with every item in \[0, 1\)"),
    ):
        cfg = tiny_config()
        setattr(getattr(cfg, stage), key, value)
        with pytest.raises(FacehdError, match=rf"{stage}\.{key} must be {rule}"):
            train(cfg, tmp_path / "c", **kw)
    cfg = tiny_config()
    cfg.model.hrn_losses.tv = math.nan
    with pytest.raises(FacehdError, match=r"model\.hrn_losses\.tv must be"):
        train(cfg, tmp_path / "c", **kw)
    if not torch.cuda.is_available():
        cfg = tiny_config()
        cfg.device = "cuda"
        with pytest.raises(FacehdError, match="no CUDA device"):
            train(cfg, tmp_path / "c", **kw)
    # a stage's checkpoint replaced by another stage's: named, not a KeyError
    import shutil

    run = tmp_path / "swapped"
    shutil.copytree(full_run[0], run)
    shutil.copy(run / "checkpoints" / "hrn.pt", run / "checkpoints" / "base.pt")
    with pytest.raises(InputFileError, match=r"base\.pt.*stage 'hrn'.*not stage 'base'"):
        train(tiny_config(), run, resume=True, **kw)
    # a checkpoint a killed run was writing is cleared when the folder is taken again
    shutil.copy(full_run[0] / "checkpoints" / "base.pt", run / "checkpoints" / "base.pt")
    partial = run / "checkpoints" / "hrn.pt.tmp4242"
    partial.write_bytes(b"half")
    train(tiny_config(), run, resume=True, **kw)
    assert not partial.exists()
    # --init with a file that is no checkpoint of either kind names the file
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(FacehdError, match=r"plain\.pt"):
        train(tiny_config(), tmp_path / "d", init=plain, **kw)
    # a loss that is not finite stops the run, naming the stage and step, checkpoints kept
    cfg = tiny_config()
    cfg.base.lr = 1e30
    with pytest.raises(FacehdError, match=r"stage base, step \d+: the loss is (nan|inf)"):
        train(cfg, tmp_path / "nan", stages=["base"], **kw)
    # a run folder held by a running training is refused to a second one
    held = tmp_path / "held"
    held.mkdir()
    code = (
        "import sys, time; sys.path[:0] = [p for p in sys.argv[1:]]; "
        "from models.train import _run_lock; from pathlib import Path; "
        f"lock = _run_lock(Path({str(held)!r})); print('held', flush=True); "
        "time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, os.getcwd()], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FacehdError, match=r"another facehd train is writing.*pid"):
            train(tiny_config(), held, **kw)
        with pytest.raises(FacehdError, match="another facehd train"), _run_lock(held):
            pass
    finally:
        proc.kill()
        proc.wait()
    with _run_lock(held):  # free again once that process is gone
        pass


def test_resume_tells_photos_cropped_from_other_landmarks(tmp_path):
    import h5py

    from facehd.h5io import ShardedDatasetWriter
    from models.train import dataset_fingerprint

    # a photos dataset as prepare-images writes it: crops, landmarks, the source files' hashes
    fields = {
        "image": ((8, 8, 3), "uint8"),
        "landmarks68": ((68, 2), "float32"),
        "source_sha256": ((), "str"),
    }
    photos = tmp_path / "photos.h5"
    rng = np.random.default_rng(0)
    with ShardedDatasetWriter(photos, "facehd.photos/1", {"crop": 224}, fields) as w:
        for k in range(3):
            w.add(
                f"p{k}",
                {
                    "image": rng.integers(0, 255, (8, 8, 3)).astype(np.uint8),
                    "landmarks68": rng.uniform(0, 224, (68, 2)).astype(np.float32),
                    "source_sha256": f"{k:064x}",
                },
            )
        w.finalize()
    before = dataset_fingerprint(photos)
    with h5py.File(photos, "r+") as f:  # one photo's landmarks moved (its .pts file edited)
        f["landmarks68"][0] = f["landmarks68"][0] + 1.0
    after = dataset_fingerprint(photos)
    assert after["sha256"] == before["sha256"]  # the source files are the same
    assert after["content_sha256"] != before["content_sha256"]


def test_progress_lines_say_the_step_loss_speed_and_time_left():
    from models.train import progress_lines

    now, lines = [0.0], []
    report = progress_lines(lines.append, every=10.0, clock=lambda: now[0])
    for step in range(1, 101):  # 2 steps a second
        now[0] = 0.5 * step
        report("base", step, 100, {"kind": "self", "total": 2.0})
    # every 10 s (20 steps), counted from the first report, and at the last step
    assert [line.split(",")[0] for line in lines] == [
        f"stage base: step {k}/100 ({k}%)" for k in (21, 41, 61, 81, 100)
    ]
    assert lines[0] == "stage base: step 21/100 (21%), loss 2, 2.00 it/s, 0:00:40 left"
    assert lines[-1].endswith("2.00 it/s, 0:00:00 left")


def test_the_module_entry_point_resumes_with_the_runs_config(
    hrn_data, tmp_path, one_thread, caplog, capsys
):
    import logging

    from models.config import save_config
    from models.train import main

    caplog.set_level(logging.INFO, logger="facehd.train")
    cfg = tiny_config()
    cfg.base.steps = 2
    out = tmp_path / "run"
    args = ["--out", str(out), "--photos", str(hrn_data.photos), "--stage", "base"]
    main(["--config", str(save_config(tmp_path / "cfg.yaml", cfg)), *args])
    assert "stage base: step 2/2 (100%), loss " in caplog.text  # progress, for torchrun
    # without --config, a resume takes the run's config.yaml (the tiny-cpu preset differs)
    main(["--resume", *args])
    assert "resumed from" in caplog.text
    # --set on a resumed run: the settings it was started with, or a refusal naming the change
    main(["--resume", "--set", f"base.steps={cfg.base.steps}", *args])
    with pytest.raises(SystemExit) as stopped:
        main(["--resume", "--set", "base.lr=0.5", *args])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "base.lr" in err
    # a mistake is one line naming it, not a traceback
    with pytest.raises(SystemExit) as stopped:
        main(["--resume", "--out", str(tmp_path / "none"), "--photos", str(hrn_data.photos)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no training run to resume" in err
    assert "Traceback" not in err


def test_a_resumed_stage_hides_the_tensorboard_events_after_its_checkpoint(
    hrn_data, tmp_path, one_thread, monkeypatch
):
    import sys
    import types

    writers: list[dict] = []

    class Writer:  # what the trainer asks of torch.utils.tensorboard.SummaryWriter
        def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
            self.record = {"dir": Path(log_dir), "purge_step": purge_step, "steps": []}
            writers.append(self.record)

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            if tag.endswith("/total"):
                self.record["steps"].append(step)

        def close(self) -> None:
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    out = tmp_path / "run"
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "stages": ["base", "hrn"]}
    cfg = tiny_config()
    cfg.hrn.steps = 6
    with pytest.raises(Killed):  # after step 4's checkpoint and step 5's events
        train(cfg, out, callback=kill_at("hrn", 5), **kw)
    train(cfg, out, resume=True, **kw)
    # one folder per stage (the steps of each count from 1) ...
    by_run = [(w["dir"].relative_to(out).as_posix(), w["purge_step"], w["steps"]) for w in writers]
    assert by_run == [
        ("tensorboard/base", 1, [1, 2, 3]),
        ("tensorboard/hrn", 1, [1, 2, 3, 4, 5]),
        # ... and the resumed stage hides what the killed run logged after its checkpoint
        ("tensorboard/hrn", 5, [5, 6]),
    ]


def test_a_checkpoint_reaches_the_disk_before_it_takes_its_name(tmp_path, monkeypatch):
    import os

    from models.checkpoints import save_checkpoint_atomic

    events: list[tuple[str, int]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def recording_replace(src, dst) -> None:  # noqa: ANN001
        events.append(("replace", os.stat(src).st_ino))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    path = save_checkpoint_atomic(tmp_path / "c.pt", {"step": 1, "w": torch.ones(3)})
    file, folder = path.stat().st_ino, tmp_path.stat().st_ino
    # after a power cut the name holds this checkpoint or the one before, not a file cut short
    assert events == [("fsync", file), ("replace", file), ("fsync", folder)]
    assert read_checkpoint(path)["step"] == 1


def test_a_dataset_a_later_stage_reads_is_asked_for_before_any_stage_trains(hrn_data, tmp_path):
    calls: list[str] = []

    def count(stage, step, total, values):  # noqa: ANN001
        calls.append(stage)

    out = tmp_path / "run"
    # the detail stage's priors missing: said before the base stage trains a step
    with pytest.raises(FacehdError, match=r"give --priors .*stage hrn reads it"):
        train(tiny_config(), out, photos=hrn_data.photos, stages=["base", "hrn"], callback=count)
    with pytest.raises(FacehdError, match=r"give --photos .*stages base, hrn read it"):
        train(tiny_config(), out, priors=hrn_data.priors, callback=count)
    assert calls == [] and not out.exists()
    # the detail stage without its supervised iterations reads no priors
    cfg = tiny_config()
    cfg.hrn_options.priors = False
    cfg.hrn.steps = 1
    train(cfg, out, photos=hrn_data.photos, stages=["hrn"], callback=count)
    assert calls == ["hrn"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{\n  "photos": {\n    "path": "/da', "unreadable record of the datasets"),
        ('{"photos": 5}', "not a record of the datasets"),
        ("[1]", "not a record of the datasets"),
    ],
)
def test_a_damaged_data_record_is_named(hrn_data, full_run, tmp_path, one_thread, text, says):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    (out / "data.json").write_text(text)
    with pytest.raises(InputFileError, match=rf"data\.json: {says}"):
        train(tiny_config(), out, resume=True, photos=hrn_data.photos, priors=hrn_data.priors)
    # a record missing its fields says what differs, without a KeyError
    (out / "data.json").write_text('{"photos": {}, "priors": null, "pairs": null}')
    with pytest.raises(FacehdError, match=r"other photos \(\? \(\? samples\)\)"):
        train(tiny_config(), out, resume=True, photos=hrn_data.photos, priors=hrn_data.priors)


def test_a_stage_started_from_an_unfinished_one_says_so(hrn_data, tmp_path, one_thread):
    """``--resume --stage hrn`` on a run killed inside its base stage trains the detail stage on
    the half-trained analyzer: the log says so (and how to finish the base stage first)."""
    out = tmp_path / "run"
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    with pytest.raises(Killed):
        train(tiny_config(), out, stages=["base"], callback=kill_at("base", 2), **kw)
    ckpt = read_checkpoint(out / "checkpoints" / "base.pt")
    assert not ckpt["done"] and ckpt["step"] < 3
    train(tiny_config(), out, stages=["hrn"], resume=True, **kw)
    said = " ".join((out / "train.log").read_text().split())
    assert "stage hrn starts from the base stage's checkpoint, which is unfinished" in said
    assert "--stage base --resume" in said
    # a finished base stage: nothing to say
    done = tmp_path / "done"
    train(tiny_config(), done, stages=["base"], **kw)
    train(tiny_config(), done, stages=["hrn"], resume=True, **kw)
    assert "unfinished" not in (done / "train.log").read_text()


def test_deterministic_kernels_are_on_during_the_run_only(hrn_data, full_run, tmp_path, one_thread):
    """``deterministic: true`` turns PyTorch's deterministic kernels on for the run (each step
    sees them) and restores the settings after it; on a CPU, whose kernels are deterministic
    either way, the model is the same bit for bit."""
    cfg = tiny_config()
    cfg.deterministic = True
    seen: list[bool] = []

    def callback(stage, step, total, values):
        seen.append(torch.are_deterministic_algorithms_enabled())

    assert not torch.are_deterministic_algorithms_enabled()
    out = tmp_path / "det"
    train(cfg, out, photos=hrn_data.photos, priors=hrn_data.priors, callback=callback)
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not states_equal(full_run[0] / "model.pt", out / "model.pt")


def test_a_stage_after_a_later_one_is_refused_and_model_pt_keeps_the_latest(
    hrn_data, tmp_path, one_thread
):
    """Training deretouch after hrn (each stage starts from the networks of the stages before
    it) gave a model.pt listing all three stages with hrn's networks untrained; a finished
    earlier stage run again (loaded, not trained) must not replace the later stage's networks."""
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors}
    cfg = tiny_config()
    cfg.base.steps, cfg.deretouch.steps, cfg.hrn.steps = 2, 1, 2
    out = tmp_path / "run"
    train(cfg, out, stages=["base"], **kw)
    train(cfg, out, stages=["hrn"], resume=True, **kw)
    hrn_ckpt = out / "checkpoints" / "hrn.pt"
    assert states_equal(out / "model.pt", hrn_ckpt) == []
    with pytest.raises(FacehdError, match=r"stage deretouch would be trained after stage hrn"):
        train(cfg, out, stages=["deretouch"], resume=True, **kw)
    assert not (out / "checkpoints" / "deretouch.pt").exists()
    train(cfg, out, stages=["base"], resume=True, **kw)  # finished: loaded again
    model = read_checkpoint(out / "model.pt")
    assert model["stages"] == ["base", "hrn"] and model["stages_from_init"] == []
    assert states_equal(out / "model.pt", hrn_ckpt) == []
    # the other way round: de-retouching first, then base from scratch
    other = tmp_path / "other"
    train(cfg, other, stages=["deretouch"], **kw)
    with pytest.raises(FacehdError, match=r"stage base would be trained after stage deretouch"):
        train(cfg, other, stages=["base"], resume=True, **kw)


def test_model_pt_lists_the_stages_its_init_checkpoint_trained(
    hrn_data, model_path, tmp_path, one_thread
):
    """A run started from a trained model (--init) holds that model's trained networks: its
    model.pt says so, where it listed only the run's own stages (and reconstruct then called
    the detail networks untrained)."""
    from models.reconstruct import load_system

    cfg = tiny_config()
    cfg.base.steps = 1
    out = tmp_path / "run"
    train(cfg, out, stages=["base"], init=model_path, photos=hrn_data.photos)
    model = read_checkpoint(out / "model.pt")
    assert model["stages"] == ["base", "deretouch", "hrn"]
    assert model["stages_from_init"] == ["base", "deretouch", "hrn"]
    init_state = read_checkpoint(model_path)["state"]["hrn"]
    mine = model["state"]["hrn"]
    detail = [k for k in mine if k.startswith(("mid", "high", "alpha", "beta"))]
    assert detail and all(torch.equal(mine[k], init_state[k]) for k in detail)
    assert load_system(out / "model.pt")[0].trained_stages == ("base", "deretouch", "hrn")


def test_a_config_yaml_edited_in_the_run_folder_is_refused_on_resume(
    hrn_data, tmp_path, one_thread
):
    """config.yaml is what a resume is compared with; edited by hand, the run would go on with
    other settings than its checkpoints were trained with, and say nothing."""
    cfg = tiny_config()
    cfg.base.steps = 4
    cfg.checkpoint_every = 2
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train(cfg, out, stages=["base"], photos=hrn_data.photos, callback=kill_at("base", 3))
    assert read_checkpoint(out / "checkpoints" / "base.pt")["step"] == 2
    text = (out / "config.yaml").read_text()
    lr = f"lr: {cfg.base.lr}"
    assert lr in text
    (out / "config.yaml").write_text(text.replace(lr, f"lr: {cfg.base.lr * 100}", 1))
    edited = load_train_config(out / "config.yaml")
    with pytest.raises(FacehdError, match=r"base\.pt: the run was trained with another config"):
        train(edited, out, stages=["base"], resume=True, photos=hrn_data.photos)
    (out / "config.yaml").write_text(text)
    train(cfg, out, stages=["base"], resume=True, photos=hrn_data.photos)


def test_init_from_deep3dfacerecons_checkpoint_loads_its_face_analyzer(tmp_path, one_thread):
    """Deep3DFaceRecon's ``epoch_20.pth`` holds ``net_recon`` (and its optimiser), no detail
    networks: --init takes its face analyzer and counts the base stage as done; a net_recon of
    another layout is refused naming the file and the keys."""
    from models.analyzer import FaceAnalyzer
    from models.checkpoints import CheckpointError
    from models.train import Trainer

    cfg = tiny_config()
    trainer = Trainer(cfg, tmp_path / "run")
    own = trainer.system.hrn.net_recon
    torch.manual_seed(3)
    source = FaceAnalyzer(own.layout, layers=own.backbone.layers_config, width=own.backbone.width)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0.0, 0.1)
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": source.state_dict(), "opt_00": {"state": {}}, "epoch": 20}, path)
    assert trainer.load_networks(path) == ["base"]
    for key, value in source.state_dict().items():
        assert torch.equal(own.state_dict()[key].cpu(), value), key
    other = FaceAnalyzer(own.layout, layers=(1, 1, 1, 1), width=own.backbone.width * 2)
    torch.save({"net_recon": other.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"(?s)epoch_20\.pth \[net_recon\].*shape mismatch"):
        trainer.load_networks(path)

"""The detail stage on refined base faces (``hrn_options.refine_steps``): what it trains on,
and the refined faces' file in the run folder (made once, kept through a stop, made again
where a photo or a setting changed)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from hrn_testdata import one_torch_thread, states_equal, tiny_config

from models.checkpoints import read_checkpoint
from models.data import LabDataset, PhotoDataset
from models.refine import RefineConfig
from models.train import TrainingInterrupted, train

STEPS = 4  # refinement steps of each phase: enough to move every photo's coefficients


def refined_config():
    cfg = tiny_config()
    cfg.hrn_options.refine_steps = STEPS
    return cfg


def entries(path: Path) -> dict[int, dict]:
    return {int(k): v for k, v in read_checkpoint(path)["entries"].items()}


@pytest.fixture(scope="module")
def start(hrn_data, tmp_path_factory):
    """The de-retouching checkpoint of a short run (its analyzer refines the faces)."""
    out = tmp_path_factory.mktemp("refined") / "pre"
    with one_torch_thread():
        train(
            tiny_config(),
            out,
            photos=hrn_data.photos,
            priors=hrn_data.priors,
            stages=["base", "deretouch"],
        )
    return out / "checkpoints" / "deretouch.pt"


@pytest.fixture(scope="module")
def refined_run(hrn_data, start, tmp_path_factory):
    """The detail stage on refined faces, uninterrupted, with every M0 it was given."""
    from models.system import FaceSystem

    given: list[torch.Tensor] = []  # the M0 coefficients each step's detail networks take
    details = FaceSystem.details

    def recording(self, images, coarse, **kwargs):
        given.append(torch.cat(list(coarse.coeffs), dim=1).detach().clone())
        return details(self, images, coarse, **kwargs)

    out = tmp_path_factory.mktemp("refined") / "whole"
    mp = pytest.MonkeyPatch()
    mp.setattr(FaceSystem, "details", recording)
    try:
        with one_torch_thread():
            train(
                refined_config(),
                out,
                photos=hrn_data.photos,
                priors=hrn_data.priors,
                stages=["hrn"],
                init=start,
            )
    finally:
        mp.undo()
    return out, given


def test_the_detail_stage_trains_on_the_refined_faces(hrn_data, refined_run, one_thread):
    """Each training photo's refined coefficients are those the reconstructor refines from the
    same crop (another path: uint8 crops, masks and landmarks at 224 scaled to the system's
    size), they lower the photo's objective, and every M0 of the stage is one of them."""
    from models.reconstruct import Reconstructor

    out, given = refined_run
    recon = Reconstructor.load(out / "model.pt")
    lab_ds = LabDataset(hrn_data.priors, template="facehd-synth", model=recon.model)
    tables = {}
    for name, dataset in (("photos", PhotoDataset(hrn_data.photos)), ("lab", lab_ds)):
        stored = entries(out / "refined" / f"{name}.pt")
        assert sorted(stored) == list(range(len(dataset)))
        items = [dataset[i] for i in range(len(dataset))]
        crops = np.stack([it["image"] for it in items])
        masks = np.stack([it["mask"] for it in items])
        landmarks = np.stack([it["landmarks"] for it in items])
        coeffs, before, after = recon.refined_coefficients(
            crops, masks, landmarks, RefineConfig(steps=STEPS)
        )
        expected = torch.cat(list(coeffs), dim=1)
        table = torch.stack([torch.as_tensor(stored[i]["coeffs"]) for i in sorted(stored)])
        # two float32 paths (other batching) through the same refinement steps: their rounding,
        # carried through the steps, reached 3e-5 on the synthetic photos
        torch.testing.assert_close(table, expected, rtol=1e-4, atol=1e-4)
        for i in sorted(stored):
            assert stored[i]["after"] < stored[i]["before"], (name, i)
            assert stored[i]["before"] == pytest.approx(before[i], rel=1e-4)
            assert stored[i]["after"] == pytest.approx(after[i], rel=1e-4)
        # the analyzer's own prediction is not what the stage trains on
        with torch.no_grad():
            images = recon._images(crops)
            predicted = torch.cat(list(recon.system.hrn.net_recon.predict(images)), 1)
        assert (table - predicted).abs().amax(dim=1).min() > 1e-3
        tables[name] = table
    # 5 steps, 2 photos each: 3 self-supervised batches, 2 supervised
    assert len(given) == 5
    rows = torch.cat(given)
    known = torch.cat([tables["photos"], tables["lab"]])
    for row in rows:
        assert (known == row).all(dim=1).any()
    log = (out / "train.log").read_text()
    assert "refining the base faces of 4 of 4 photos" in log
    assert "refining the base faces of 4 of 4 lab photos" in log
    assert not list((out / "refined").glob("*.rank*.pt"))  # the shares, merged, are gone


def test_without_refine_steps_the_analyzers_faces_are_trained_on(hrn_data, start, tmp_path):
    from models.system import FaceSystem

    given = []
    coarse = FaceSystem.coarse

    def recording(self, images, coeffs=None):
        given.append(coeffs)
        return coarse(self, images, coeffs)

    cfg = tiny_config()
    cfg.hrn.steps = 2
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FaceSystem, "coarse", recording)
        train(
            cfg,
            tmp_path / "run",
            photos=hrn_data.photos,
            priors=hrn_data.priors,
            stages=["hrn"],
            init=start,
        )
    assert given == [None, None]
    assert not (tmp_path / "run" / "refined").exists()


def test_refined_faces_survive_a_stop_and_are_made_only_where_needed(
    hrn_data, start, refined_run, tmp_path, one_thread
):
    whole, _ = refined_run
    kw = {"photos": hrn_data.photos, "priors": hrn_data.priors, "stages": ["hrn"], "init": start}

    # SIGTERM while the second photo is reported: the run stops with two photos refined
    def terminate(stage: str, step: int, total: int, values: dict) -> None:
        if (stage, step) == ("refine photos", 2):
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match=r"photos\.rank0\.pt saved"):
        train(refined_config(), out, callback=terminate, **kw)
    share = out / "refined" / "photos.rank0.pt"
    assert sorted(entries(share)) == [0, 1]
    assert not (out / "refined" / "photos.pt").exists()  # no file that looks complete
    (out / "refined" / "photos.rank0.pt.tmp999").write_bytes(b"cut short")  # a killed save
    train(refined_config(), out, resume=True, **kw)
    log = (out / "train.log").read_text()
    assert "refining the base faces of 2 of 4 photos" in log
    assert not list((out / "refined").glob("*.tmp*"))
    assert not share.exists()
    # the same coefficients, and the same networks, as the uninterrupted run
    for name in ("photos", "lab"):
        a, b = entries(whole / "refined" / f"{name}.pt"), entries(out / "refined" / f"{name}.pt")
        assert all(torch.equal(a[i]["coeffs"], b[i]["coeffs"]) for i in a)
    assert states_equal(whole / "model.pt", out / "model.pt") == []

    # a new run beside the kept faces: a photo whose crop changed is refined again, alone
    again = tmp_path / "again"
    shutil.copytree(whole / "refined", again / "refined")
    path = again / "refined" / "photos.pt"
    data = read_checkpoint(path)
    data["entries"][1]["digest"] = "0" * 64
    torch.save(data, path)
    train(refined_config(), again, **kw)
    log = (again / "train.log").read_text()
    assert "refining the base faces of 1 of 4 photos" in log
    assert "of 4 lab photos" not in log  # the lab photos' were all taken
    assert entries(path)[1]["digest"] == entries(whole / "refined" / "photos.pt")[1]["digest"]
    assert states_equal(whole / "model.pt", again / "model.pt") == []

    # other refinement settings: the kept faces are not used
    other = tmp_path / "other"
    shutil.copytree(whole / "refined", other / "refined")
    cfg = refined_config()
    cfg.hrn_options.refine_steps = STEPS + 1
    cfg.hrn.steps = 1
    train(cfg, other, **kw)
    log = (other / "train.log").read_text()
    assert "made with other settings" in log
    assert "refining the base faces of 4 of 4 photos" in log
    changed = entries(other / "refined" / "photos.pt")
    kept = entries(whole / "refined" / "photos.pt")
    assert not torch.equal(changed[0]["coeffs"], kept[0]["coeffs"])


def test_refine_settings_are_checked(tmp_path):
    from models.config import ConfigError, apply_overrides

    cfg = tiny_config()
    with pytest.raises(ConfigError, match="refine_steps must be"):
        apply_overrides(cfg, ["hrn_options.refine_steps=-1"])
    with pytest.raises(ConfigError, match="refine_lr must be"):
        apply_overrides(cfg, ["hrn_options.refine_lr=0"])
    with pytest.raises(ConfigError, match="refine_share must be"):
        apply_overrides(cfg, ["hrn_options.refine_share=1.5"])
    with pytest.raises(ConfigError, match="refine_start"):
        apply_overrides(cfg, ["hrn_options.refine_start=zero"])
    assert apply_overrides(cfg, ["hrn_options.refine_steps=30"]).hrn_options.refine_steps == 30


def test_the_cli_trains_on_refined_faces_and_says_how_to_run_such_a_model(
    hrn_data, start, refined_run, tmp_path, one_thread
):
    from typer.testing import CliRunner

    from facehd.cli import app
    from models.config import save_config

    runner = CliRunner()
    path = save_config(tmp_path / "cfg.yaml", tiny_config())
    out = tmp_path / "cli"
    res = runner.invoke(
        app, ["train", "--config", str(path), "--set", "hrn_options.refine_steps=2", "--init",
              str(start), "--stage", "hrn", "--steps", "1", "--photos", str(hrn_data.photos),
              "--priors", str(hrn_data.priors), "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "refined").iterdir()) == ["lab.pt", "photos.pt"]
    assert "refine_steps: 2" in (out / "config.yaml").read_text()
    # a model trained on refined faces, run on the analyzer's: the note names the option
    model = refined_run[0] / "model.pt"
    photo = str(hrn_data.scans / "photos" / "s000_e00_v00.png")
    note = f"trained on refined base faces (hrn_options.refine_steps {STEPS}): --refine-steps"
    for extra, said in (([], True), (["--refine-steps", str(STEPS)], False)):
        res = runner.invoke(
            app, ["reconstruct", photo, "--checkpoint", str(model), "--out", str(tmp_path / "r"),
                  "--redo", *extra],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert (note in " ".join(res.output.split())) is said, res.output


def test_a_share_of_the_iterations_takes_the_refined_faces(
    hrn_data, start, refined_run, tmp_path, one_thread
):
    from models.system import FaceSystem

    whole, _ = refined_run
    out = tmp_path / "mix"
    shutil.copytree(whole / "refined", out / "refined")  # the same analyzer: taken as they are
    given: list[torch.Tensor] = []
    details = FaceSystem.details

    def recording(self, images, coarse, **kwargs):
        given.append(torch.cat(list(coarse.coeffs), dim=1).detach().clone())
        return details(self, images, coarse, **kwargs)

    cfg = refined_config()
    cfg.hrn_options.refine_share = 0.5
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FaceSystem, "details", recording)
        train(cfg, out, photos=hrn_data.photos, priors=hrn_data.priors, stages=["hrn"], init=start)
    assert "refining the base faces" not in (out / "train.log").read_text()
    known = torch.cat([torch.stack([e["coeffs"] for e in entries(whole / "refined" / f"{n}.pt")
                                    .values()]) for n in ("photos", "lab")])  # fmt: skip
    took = [all((known == row).all(dim=1).any() for row in rows) for rows in given]
    # pairs of steps (self-supervised, supervised): the second pair of the first two refined
    assert took == [False, False, True, True, False]


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 0.75, 1.0])
def test_refined_pairs_are_spread_evenly(share):
    from models.train import _refined_pair

    flags = [_refined_pair(step, share) for step in range(1, 401)]
    assert flags[0::2] == flags[1::2]  # both steps of a pair alike
    pairs = flags[0::2]
    for p in range(1, 201):  # the first p pairs hold floor(p * share) refined ones
        assert sum(pairs[:p]) == int(p * share + 1e-9)

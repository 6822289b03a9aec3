"""``build-priors``'s output: a second build into a dataset being written is refused at once,
and --overwrite never replaces a file that is not a dataset."""

from __future__ import annotations

import os

import pytest

from facehd.errors import FacehdError, InputFileError


def test_a_second_build_into_the_same_output_is_refused_and_overwrite_keeps_other_files(
    tmp_path,
):
    from facehd.csvtext import locked
    from pipelines.build_priors import PriorsConfig, build_priors

    out = tmp_path / "p.h5"
    with locked(out):  # what a running build holds
        with pytest.raises(FacehdError, match=rf"another facehd build.*pid {os.getpid()}"):
            build_priors([], out, PriorsConfig(overwrite=True))
    assert not out.with_name("p.h5.shards").exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for overwrite in (False, True):
        with pytest.raises(InputFileError, match=r"notes\.txt: .*not a facehd dataset") as exc:
            build_priors([], notes, PriorsConfig(overwrite=overwrite))
        assert overwrite or "overwrite" not in str(exc.value).split(": ", 1)[1]
    assert notes.read_text() == "my notes"
    assert build_priors([], out, PriorsConfig()).n_samples == 0  # free again


def _priors(out, n: int):
    """A priors dataset of ``n`` plain samples (zeros; a rotation of identity, scale 1)."""
    import numpy as np

    from facehd.h5io import ShardedDatasetWriter
    from pipelines.build_priors import SCHEMA, fields_for
    from pipelines.fitting import FitConfig

    fields = fields_for(1, 1, FitConfig())
    with ShardedDatasetWriter(out, SCHEMA, {"units": "mm", "model": "m"}, fields) as w:
        for k in range(n):
            values = {}
            for name, spec in fields.items():
                if spec.dtype == "str":
                    values[name] = "0" * 64 if name == "source_sha256" else f"v{k}"
                else:
                    values[name] = np.zeros(spec.shape, spec.dtype)
            values["rotation"], values["scale"] = np.eye(3), 1.0
            w.add(f"s{k:03d}", values)
        w.finalize()
    return out


def test_inspect_an_empty_dataset_says_it_holds_no_samples(tmp_path):
    from typer.testing import CliRunner

    from facehd.cli import app

    out = _priors(tmp_path / "p.h5", 0)
    r = CliRunner().invoke(app, ["inspect", str(out)])
    assert r.exit_code == 0, r.output
    assert "it holds no samples" in r.output and "nan" not in r.output


def test_verify_names_the_sample_with_a_nan(tmp_path):
    import h5py
    import numpy as np
    from typer.testing import CliRunner

    from facehd.cli import app

    out = _priors(tmp_path / "p.h5", 3)
    with h5py.File(out, "r+") as f:
        f["deformation"][1, 5, 5, 0] = np.nan
    r = CliRunner().invoke(app, ["verify", str(out)])
    text = " ".join(r.output.split())
    assert r.exit_code == 1 and "'deformation': 1 NaN/inf" in text and "sample 1 ('s001')" in text
    (tmp_path / "plain").mkdir()
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "plain")])
    assert r.exit_code == 1 and "not a facehd dataset" in r.output and "shards" not in r.output


def test_the_ray_executor_without_ray_is_refused_before_any_folder_is_made(tmp_path):
    import importlib.util

    from typer.testing import CliRunner

    from facehd.cli import app

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here")
    scans = tmp_path / "scans"
    scans.mkdir()
    out = tmp_path / "e6" / "p.h5"
    args = ["build-priors", "--scans", str(scans), "--out", str(out), "--executor", "ray"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "the ray executor needs Ray" in res.output, res.output
    assert not (tmp_path / "e6").exists()

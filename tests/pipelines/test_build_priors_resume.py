"""build-priors at scale: a build killed mid-way then resumed in a process pool gives the
byte-identical file of an uninterrupted build; reruns; Ray (when installed)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facehd.cli import app
from facehd.h5io import open_dataset, read_failures
from pipelines.build_priors import PriorsConfig, build_priors
from pipelines.synth import SynthConfig, synth_scans


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small synthetic scans, one without landmarks (automatic landmarks off here)."""
    root = tmp_path_factory.mktemp("scans")
    synth_scans(root, SynthConfig(subjects=3, expressions=1, seed=2, dense_resolution=160))
    (root / "s001_e00.lm7.txt").rename(root / "s001_e00.lm7.txt.off")
    return root


@pytest.fixture(scope="module")
def reference(scans: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted build (in this process)."""
    out = tmp_path_factory.mktemp("ref") / "priors.h5"
    result = build_priors(scans, out, PriorsConfig(auto_landmarks=False))
    assert (result.n_samples, result.n_failed, result.n_written) == (2, 1, 2)
    return out


def test_build(reference: Path) -> None:
    with open_dataset(reference) as ds:
        assert ds.sample_ids == ["s000_e00", "s002_e00"]
        assert np.all(ds.read_field("residual")[:, 2] < 0.1)
    (failure,) = read_failures(reference.with_name("failures.csv"))
    assert failure.sample_id == "s001_e00" and "no landmark file" in failure.reason


def test_killed_build_resumed_in_a_pool_gives_the_identical_file(
    scans: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "priors.h5"
    args = ["build-priors", "--scans", str(scans), "--out", str(out), "--shard-size", "1"]
    args.append("--no-auto-landmarks")  # keep the scan without landmarks a failure
    proc = subprocess.Popen(
        [sys.executable, "-m", "facehd.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out.with_name("priors.h5.shards") / "shard-000000.h5"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-build: one scan written, the next one under way
    proc.wait()
    assert first.exists(), "the build wrote no shard before it was killed"
    assert not out.exists()  # the output appears only once complete
    # resume in a pool of two worker processes
    result = CliRunner().invoke(app, [*args, "--workers", "2"])
    assert result.exit_code == 1, result.output  # one scan has no landmarks
    assert "1 already done" in result.output
    assert out.read_bytes() == reference.read_bytes()
    assert read_failures(out.with_name("failures.csv")) == read_failures(
        reference.with_name("failures.csv")
    )
    assert not out.with_name("priors.h5.shards").exists()


def test_sigterm_keeps_the_finished_scans_and_says_so(scans: Path, tmp_path: Path) -> None:
    """`kill`, `timeout` and schedulers stop a job with SIGTERM: the scans fitted so far stay,
    the command says it was interrupted (status 130), and a rerun takes up from there."""
    out = tmp_path / "priors.h5"
    args = ["build-priors", "--scans", str(scans), "--out", str(out), "--shard-size", "1"]
    args.append("--no-auto-landmarks")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facehd.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = out.with_name("priors.h5.shards") / "shard-000000.h5"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted: what was finished is kept" in output
    assert first.exists() and not out.exists()
    result = CliRunner().invoke(app, args)
    assert "1 already done" in result.output or "2 already done" in result.output


def test_rerun_of_a_finished_build_does_nothing(
    scans: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "priors.h5"
    out.write_bytes(reference.read_bytes())
    result = build_priors(scans, out, PriorsConfig(auto_landmarks=False))
    # the two finished scans are skipped; the failed one is retried (and fails again)
    assert (result.n_skipped, result.n_written, result.n_failed) == (2, 0, 1)
    assert out.read_bytes() == reference.read_bytes()


def test_paths_are_stored_whole_whatever_spelling_a_run_was_given(
    scans: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build started with a relative path and resumed with another spelling (or from another
    folder) stores the same whole paths as one run given the absolute one."""
    monkeypatch.chdir(scans.parent)
    out = tmp_path / "priors.h5"
    result = build_priors(Path(scans.name), out, PriorsConfig(auto_landmarks=False))
    assert result.n_written == 2
    assert out.read_bytes() == reference.read_bytes()
    assert read_failures(out.with_name("failures.csv")) == read_failures(
        reference.with_name("failures.csv")
    )
    with open_dataset(out) as ds:
        assert all(Path(p).is_absolute() for p in ds.read_field("source"))


def test_resume_over_a_changed_scan_is_refused(
    scans: Path, reference: Path, tmp_path: Path
) -> None:
    import shutil

    from facehd.errors import FacehdError

    folder = tmp_path / "scans"
    shutil.copytree(scans, folder)
    out = tmp_path / "priors.h5"
    out.write_bytes(reference.read_bytes())
    # s002_e00 replaced after it was fitted (moved by 1 µm): its sample is of the old file
    from facehd.mesh import Mesh, load_mesh, save_mesh

    old = load_mesh(folder / "s002_e00.ply")
    save_mesh(folder / "s002_e00.ply", Mesh(old.vertices + 1e-3, old.faces, old.uvs, old.colors))
    with pytest.raises(FacehdError, match=r"1 scans changed.*s002_e00 \(.*s002_e00\.ply\)"):
        build_priors(folder, out, PriorsConfig(auto_landmarks=False))
    assert out.read_bytes() == reference.read_bytes()  # nothing lost
    # through the command: the error names the scan and the way out
    args = ["build-priors", "--scans", str(folder), "--out", str(out), "--no-auto-landmarks"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "s002_e00" in result.output and "--overwrite" in result.output
    # --overwrite rebuilds from the files as they are
    result = CliRunner().invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 1 and "2 new" in result.output, result.output
    # the file put back as it was: resumes (nothing to do for the two scans)
    (folder / "s002_e00.ply").write_bytes((scans / "s002_e00.ply").read_bytes())
    out.write_bytes(reference.read_bytes())
    result = build_priors(folder, out, PriorsConfig(auto_landmarks=False))
    assert (result.n_skipped, result.n_written) == (2, 0)
    # landmarks changed since: a file edited, or a MeshLab file now read before it
    from facehd.landmarks import load_landmarks, save_landmarks_pp

    lm_file = folder / "s000_e00.lm7.txt"
    given = lm_file.read_bytes()
    lm_file.write_text(given.decode().replace(" ", "  ", 1))  # same points, other bytes
    with pytest.raises(
        FacehdError, match=r"landmarks of 1 scans changed.*s000_e00\.lm7\.txt edited"
    ):
        build_priors(folder, out, PriorsConfig(auto_landmarks=False))
    lm_file.write_bytes(given)
    save_landmarks_pp(folder / "s000_e00_picked_points.pp", load_landmarks(lm_file) + 0.5, "x.ply")
    with pytest.raises(
        FacehdError, match=r"s000_e00_picked_points\.pp now, .*s000_e00\.lm7\.txt then"
    ):
        build_priors(folder, out, PriorsConfig(auto_landmarks=False))
    (folder / "s000_e00_picked_points.pp").unlink()
    assert out.read_bytes() == reference.read_bytes()
    # previews asked of a resumed build: the scans done before are said to keep their own
    result = CliRunner().invoke(app, [*args, "--previews", str(tmp_path / "png")])
    assert "2 done before" in " ".join(result.output.split()), result.output
    assert not (tmp_path / "png").exists() or not list((tmp_path / "png").glob("*.png"))


def test_a_damaged_shard_is_fitted_again_with_a_warning(
    scans: Path, reference: Path, tmp_path: Path
) -> None:
    """A build stopped before its merge, one of its shards then damaged on disk (a flipped byte
    in a chunk): verify of the unfinished output names the shard, and the rerun fits that
    shard's scan again, with a warning naming the shard, to the file of an uninterrupted build
    (no rerun that fails for ever, no --overwrite that throws the good shards away)."""
    import h5py

    from facehd.errors import InputFileWarning
    from facehd.h5io import verify

    out = tmp_path / "priors.h5"

    def stop_before_the_merge(done: int, total: int) -> None:
        if done == total and total:
            raise KeyboardInterrupt

    config = PriorsConfig(auto_landmarks=False, shard_size=1)
    with pytest.raises(KeyboardInterrupt):
        build_priors(scans, out, config, progress=stop_before_the_merge)
    shard = out.with_name("priors.h5.shards") / "shard-000000.h5"  # s000_e00
    with h5py.File(shard) as f:
        at = f["displacement"].id.get_chunk_info(0).byte_offset
    raw = bytearray(shard.read_bytes())
    raw[at + 8] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert any(
        "shard-000000.h5 is damaged, field 'displacement' cannot be read" in p
        for p in verify(out).problems
    )
    with pytest.warns(InputFileWarning, match=r"shard-000000\.h5: damaged shard"):
        result = build_priors(scans, out, config)
    assert (result.n_skipped, result.n_written, result.n_failed) == (1, 1, 1)
    assert out.read_bytes() == reference.read_bytes()


def test_ray_executor(
    scans: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_ray_at_a_time: None,
) -> None:
    pytest.importorskip("ray", reason="ray is not installed (optional extra facehd[ray])")
    # Ray keeps its session files under $RAY_TMPDIR/ray (by default /tmp/ray, left there); a
    # folder of the test's own, with a short path: its sockets' paths must fit in 107 characters
    ray_tmp = tempfile.mkdtemp(prefix="facehd-ray-")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    out = tmp_path / "priors.h5"
    try:
        result = build_priors(scans, out, PriorsConfig(executor="ray", auto_landmarks=False))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (result.n_samples, result.n_failed) == (2, 1)
    # the same bytes as the build in this process: the Ray tasks' model (built on one BLAS
    # thread) and fits are this process's, and the failure says the same
    assert out.read_bytes() == reference.read_bytes()
    assert read_failures(out.with_name("failures.csv")) == read_failures(
        reference.with_name("failures.csv")
    )


def test_a_fit_setting_added_later_keeps_older_files_resumable(
    scans: Path, reference: Path, tmp_path: Path
) -> None:
    """A fit setting added after datasets were written (``PriorsConfig.FIT_ADDED_WITH``) is left
    out of the stored config at the value that fits as before it existed: a file without it (as
    one written before it existed) resumes with that value, and a run with another (the
    default) is refused, naming the value to resume with, without touching the file."""
    from facehd.errors import FacehdError
    from pipelines.fitting import FitConfig

    with open_dataset(reference) as ds:  # built with the default
        assert ds.attrs["config"]["fit"]["m0_fold_angle_deg"] == FitConfig().m0_fold_angle_deg
    older = tmp_path / "older" / "priors.h5"
    older.parent.mkdir()
    build_priors(
        scans, older, PriorsConfig(auto_landmarks=False, fit=FitConfig(m0_fold_angle_deg=30))
    )
    with open_dataset(older) as ds:
        stored = dict(ds.attrs["config"]["fit"])
    assert "m0_fold_angle_deg" not in stored and "fold_angle_deg" in stored
    before = older.read_bytes()
    with pytest.raises(
        FacehdError, match=r"m0_fold_angle_deg=30 .*this run has 60.*--m0-fold-angle 30"
    ):
        build_priors(scans, older, PriorsConfig(auto_landmarks=False))
    assert older.read_bytes() == before
    args = ["build-priors", "--scans", str(scans), "--out", str(older), "--no-auto-landmarks"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--m0-fold-angle 30" in result.output, result.output
    # refused before any work: said alone, under no progress bar stopped at 0
    assert result.output.lstrip().startswith("error:"), result.output
    result = CliRunner().invoke(app, [*args, "--m0-fold-angle", "30"])
    assert result.exit_code == 1 and "2 already done" in result.output, result.output
    assert result.output.lstrip().startswith("scans"), result.output  # the bar, once working
    assert older.read_bytes() == before

    # a build at 30° interrupted after its first scan: refused from its shards' settings
    stopped = tmp_path / "stopped" / "priors.h5"
    stopped.parent.mkdir()

    def stop(done: int, todo: int) -> None:
        if done:
            raise KeyboardInterrupt

    at30 = PriorsConfig(auto_landmarks=False, shard_size=1, fit=FitConfig(m0_fold_angle_deg=30))
    with pytest.raises(KeyboardInterrupt):
        build_priors(scans, stopped, at30, progress=stop)
    assert not stopped.exists()
    with pytest.raises(FacehdError, match=r"manifest.json: holds fits with m0_fold_angle_deg=30"):
        build_priors(scans, stopped, PriorsConfig(auto_landmarks=False))
    assert build_priors(scans, stopped, at30).n_skipped == 1

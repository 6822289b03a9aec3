"""The dataset writer's output: one build at a time, checked before any work, never replacing
what is not a dataset, a full disk a clean error; verify's messages about unfinished builds."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import facehd.h5io as h5io
from facehd.errors import FacehdError, InputFileError
from facehd.h5io import OutputWriteError, ShardedDatasetWriter, WorkItem, process_items, verify

sys.path.insert(0, str(Path(__file__).parent))
from test_h5io import ATTRS, FIELDS, SCHEMA, build, sample, sid  # noqa: E402


def test_a_second_writer_of_the_same_output_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "d.h5"
    first = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2)
    first.add(sid(0), sample(0))
    with pytest.raises(FacehdError, match=rf"another facehd build.*pid {os.getpid()}"):
        ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS)
    with pytest.raises(FacehdError, match="another facehd build"):  # overwrite neither
        ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, overwrite=True)
    first.add(sid(1), sample(1))
    first.finalize()  # the refused writers took nothing away from it
    # finished (or closed): the output is free again and a rerun resumes
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as again:
        assert again.done_ids == {sid(0), sid(1)}
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS)
    w.close()
    ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS).close()


def test_a_writer_in_another_process_is_refused_while_it_runs(tmp_path):
    out = tmp_path / "d.h5"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_h5io import ShardedDatasetWriter, SCHEMA, ATTRS, FIELDS
        w = ShardedDatasetWriter({str(out)!r}, SCHEMA, ATTRS, FIELDS)
        print("open", flush=True)
        sys.stdin.readline()
        w.close()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "open"
        with pytest.raises(FacehdError, match=rf"{out}: another facehd build.*pid {proc.pid}"):
            ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS)
    finally:
        proc.communicate("\n", timeout=60)
    build(out, [1, 2])


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_cannot_be_written_is_one_clear_error_before_any_work(tmp_path, overwrite):
    (tmp_path / "file").write_text("notes")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    cases = [
        (folder, "is a folder"),
        (tmp_path / "file" / "sub.h5", "is a file, not a folder"),
        (tmp_path / "file" / "a" / "sub.h5", "is a file, not a folder"),
    ]
    for out, problem in cases:
        with pytest.raises(InputFileError, match=problem) as exc:
            ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, overwrite=overwrite)
        assert str(exc.value.path) in str(exc.value)
    assert (folder / "keep.txt").read_text() == "mine"
    assert (tmp_path / "file").read_text() == "notes"
    (tmp_path / "x.h5.shards").write_text("a file")
    with pytest.raises(InputFileError, match=r"x\.h5\.shards: is a file"):
        ShardedDatasetWriter(tmp_path / "x.h5", SCHEMA, ATTRS, FIELDS, overwrite=overwrite)


def test_an_output_in_a_folder_that_cannot_be_written_is_refused_up_front(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    # a read-only folder (root writes there anyway) and one no one can write in
    folders = [Path("/sys/fs")] + ([ro] if os.geteuid() != 0 else [])
    try:
        for folder in folders:
            with pytest.raises(InputFileError, match=rf"{folder}: cannot write the dataset here"):
                ShardedDatasetWriter(folder / "p.h5", SCHEMA, ATTRS, FIELDS, overwrite=True)
    finally:
        ro.chmod(0o755)
    assert not list(ro.iterdir())


def test_overwrite_replaces_only_a_dataset(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    other = tmp_path / "weights.h5"
    with h5py.File(other, "w") as f:
        f["w"] = np.arange(3)
    saved = other.read_bytes()
    for path, what in ((notes, "not an HDF5 file"), (other, "an HDF5 file of another program")):
        with pytest.raises(InputFileError, match=f"not a facehd dataset \\({what}\\)"):
            ShardedDatasetWriter(path, SCHEMA, ATTRS, FIELDS, overwrite=True)
        # without overwrite: named, and not advised to overwrite it
        with pytest.raises(InputFileError, match="not a facehd dataset") as exc:
            ShardedDatasetWriter(path, SCHEMA, ATTRS, FIELDS)
        assert "overwrite" not in str(exc.value).split(": ", 1)[1]
    assert notes.read_text() == "my notes" and other.read_bytes() == saved
    assert not (tmp_path / "notes.txt.shards").exists()
    # a dataset, and a damaged one, are replaced
    out = build(tmp_path / "d.h5", [1, 2])
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, overwrite=True) as w:
        assert not w.done_ids
        w.add(sid(3), sample(3))
        w.finalize()
    out.write_bytes(out.read_bytes()[:600])
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, overwrite=True) as w:
        w.finalize()
    assert verify(out).ok


def _disk_full(monkeypatch, after: int = 0):
    """Make dataset files fail with ENOSPC after ``after`` successful writes."""
    real = h5io._write_file
    calls = {"n": 0}

    def write(path, **kw):
        calls["n"] += 1
        if calls["n"] > after:
            Path(path).write_bytes(b"\x89HDF partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, **kw)

    monkeypatch.setattr(h5io, "_write_file", write)


def test_a_full_disk_stops_the_build_with_a_clean_error_and_a_rerun_resumes(tmp_path, monkeypatch):
    out = tmp_path / "d.h5"
    items = [WorkItem(sid(k), f"/in/{k}") for k in range(7)]
    _disk_full(monkeypatch, after=1)  # the first shard is written, the second is not
    with pytest.raises(OutputWriteError, match=r"shard-000001\.h5\.tmp: disk full.*free space"):
        with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2) as w:
            process_items(w, items, lambda it: sample(int(it.sample_id[-3:])))
    shards = out.with_name("d.h5.shards")
    assert not list(shards.glob("*.tmp")) and not out.exists()
    assert not (tmp_path / "failures.csv").exists()  # no input is blamed for the disk
    monkeypatch.undo()
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2) as w:
        assert w.done_ids == {sid(0), sid(1)}
        process_items(w, items, lambda it: sample(int(it.sample_id[-3:])))
        w.finalize()
    assert verify(out).ok


def test_a_full_disk_during_the_merge_leaves_no_output_and_the_lock_free(tmp_path, monkeypatch):
    out = tmp_path / "d.h5"
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2)
    for k in range(4):
        w.add(sid(k), sample(k))
    _disk_full(monkeypatch)
    with pytest.raises(OutputWriteError, match=r"d\.h5\.tmp: disk full writing this part of"):
        w.finalize()
    monkeypatch.undo()
    assert not out.exists() and not out.with_name("d.h5.tmp").exists()
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as again:
        assert again.done_ids == {sid(k) for k in range(4)}
        again.finalize()
    assert verify(out).ok


def test_verify_says_what_a_folder_or_a_missing_file_is(tmp_path):
    (tmp_path / "plain").mkdir()
    (problem,) = verify(tmp_path / "plain").problems
    assert "not a facehd dataset" in problem and "unfinished" not in problem
    out = tmp_path / "p.h5"
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=1)
    w.add(sid(0), sample(0))
    w.close()  # interrupted before the merge
    (problem,) = verify(out).problems
    assert "does not exist" in problem and "p.h5.shards/" in problem and "resume" in problem
    (problem,) = verify(tmp_path / "p.h5.shards").problems
    assert "unfinished build of p.h5" in problem
    (problem,) = verify(tmp_path / "nothing.h5").problems
    assert problem == "file does not exist"


def test_verify_names_the_samples_with_nan(tmp_path):
    good = build(tmp_path / "good.h5", list(range(12)))
    with h5py.File(good, "r+") as f:
        f["points"][3, 1, 0] = np.nan
    (problem,) = verify(good).problems
    assert "'points': 1 NaN/inf" in problem and f"sample 3 ('{sid(3)}')" in problem

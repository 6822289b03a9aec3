"""``facehd prepare-images``'s output: one run per dataset, an output that cannot be written
refused before any photo, --overwrite never replacing another file, a full disk a clean error.

The photo task is replaced by a fast stand-in: what is tested is the output handling."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facehd.detect import mediapipe_available

pytestmark = pytest.mark.skipif(
    not mediapipe_available(), reason="mediapipe (the optional 'photo' extra) is not installed"
)


def _fake_task(item, config):
    from pipelines.prepare_images import fields_spec

    out = {}
    for name, spec in fields_spec(config.hd_size).items():
        shape, dtype = spec[0], spec[1]
        out[name] = str(item.source) if dtype == "str" else np.zeros(shape, dtype)
    return out


@pytest.fixture
def photos(tmp_path, monkeypatch):
    import pipelines.prepare_images as prep

    calls: list[str] = []

    def task(item, config):
        calls.append(item.sample_id)
        return _fake_task(item, config)

    monkeypatch.setattr(prep, "_photo_task", task)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        (folder / f"p{k}.png").write_bytes(b"stand-in")
    return folder, calls


def _run(*args: str):
    from facehd.cli import app

    r = CliRunner().invoke(app, ["prepare-images", *args])
    return r, " ".join(r.output.split())


def test_a_second_run_into_the_same_dataset_is_refused_naming_the_holder(photos, tmp_path):
    from facehd.csvtext import locked

    folder, calls = photos
    out = tmp_path / "p.h5"
    with locked(out):  # what a running build holds
        r, text = _run("--images", str(folder), "--out", str(out))
    assert r.exit_code == 2 and r.exception is not None and "Traceback" not in r.output
    assert f"{out}: another facehd build is writing this dataset (pid {os.getpid()})" in text
    assert not calls and not out.exists() and not out.with_name("p.h5.shards").exists()
    r, text = _run("--images", str(folder), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert len(calls) == 3 and out.is_file()


def test_an_output_that_cannot_be_written_is_one_line_before_any_photo(photos, tmp_path):
    folder, calls = photos
    (tmp_path / "file").write_text("x")
    (tmp_path / "notes.txt").write_text("my notes")
    cases = [
        ([str(tmp_path / "file" / "sub.h5")], f"{tmp_path / 'file'}: is a file, not a folder"),
        (["/sys/fs/p.h5"], "/sys/fs: cannot write the dataset here"),
        ([str(folder)], f"{folder}: is a folder"),
        ([str(folder), "--overwrite"], f"{folder}: is a folder"),
        ([str(tmp_path / "notes.txt"), "--overwrite"], "not a facehd dataset (not an HDF5 file)"),
        ([str(tmp_path / "notes.txt")], "not a facehd dataset (not an HDF5 file)"),
    ]
    for out, says in cases:
        r, text = _run("--images", str(folder), "--out", *out)
        assert r.exit_code == 2, (out, r.output)
        assert says in text and "Traceback" not in r.output, (out, text)
        assert "remove it or overwrite" not in text
    assert not calls
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in folder.iterdir()) == ["p0.png", "p1.png", "p2.png"]


def test_a_full_disk_is_a_clean_error_and_a_rerun_resumes(photos, tmp_path, monkeypatch):
    import facehd.h5io as h5io

    folder, calls = photos
    out = tmp_path / "p.h5"
    real = h5io._write_file

    def full(path, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(h5io, "_write_file", full)
    r, text = _run("--images", str(folder), "--out", str(out))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "disk full writing this part of" in text and "free space and rerun" in text
    assert not out.exists() and not list(out.with_name("p.h5.shards").glob("*.tmp"))
    assert not (tmp_path / "failures.csv").exists()  # no photo is blamed for the disk
    monkeypatch.setattr(h5io, "_write_file", real)
    r, text = _run("--images", str(folder), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "3 faces" in text and out.is_file()


def test_a_missing_folder_of_photos_is_said_to_be_missing(tmp_path: Path):
    from facehd.errors import InputFileError
    from pipelines.prepare_images import find_photos

    with pytest.raises(InputFileError, match="none: does not exist"):
        find_photos(tmp_path / "none")


def test_photos_under_other_names_and_broken_links_are_listed(tmp_path: Path):
    """JPEG's other names, phone formats and links whose photo is gone are listed, so each is
    prepared or fails by name: none is passed over without a word."""
    import os

    from PIL import Image

    from pipelines.prepare_images import find_photos

    for name in ("a.jpg", "b.jfif", "c.heic"):
        Image.new("RGB", (40, 40)).save(tmp_path / name, "JPEG")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "d.jpg")
    (tmp_path / "e.txt").write_text("not a photo")
    assert [sid for sid, _ in find_photos(tmp_path)] == ["a.jpg", "b.jfif", "c.heic", "d.jpg"]


def test_a_rerun_from_another_folder_neither_stores_a_photo_twice_nor_blames_the_wrong_file(
    tmp_path, monkeypatch
):
    """Sample ids are paths relative to ``--images``: a rerun given the folder above (or below)
    the same photos would store them again under other ids, and one given a sibling folder with
    a photo of the same name would be told that photo "changed". Both are refused, naming the
    files and the earlier ids or sources; the same folder again resumes."""
    import pipelines.prepare_images as prep
    from facehd.h5io import file_sha256, open_dataset

    def task(item, config):
        out = _fake_task(item, config)
        out["source_sha256"] = file_sha256(item.source)
        return out

    monkeypatch.setattr(prep, "_photo_task", task)
    (tmp_path / "top" / "sub").mkdir(parents=True)
    (tmp_path / "top" / "sub" / "a.png").write_bytes(b"photo a")
    out = tmp_path / "p.h5"
    r, _ = _run("--images", str(tmp_path / "top"), "--out", str(out))
    assert r.exit_code == 0, r.output
    r, text = _run("--images", str(tmp_path / "top" / "sub"), "--out", str(out))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "1 photos were prepared by an earlier run under other sample ids" in text
    assert f"{tmp_path / 'top' / 'sub' / 'a.png'} (was 'sub/a.png', now 'a.png')" in text
    r, text = _run("--images", str(tmp_path / "top"), "--out", str(out))
    assert r.exit_code == 0 and "0 new, 1 already done" in text, text
    # a sibling folder: its a.png is another photo than the one prepared as 'a.png'
    for name, data in (("one", b"photo one"), ("two", b"photo two")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(data)
    out2 = tmp_path / "q.h5"
    assert _run("--images", str(tmp_path / "one"), "--out", str(out2))[0].exit_code == 0
    r, text = _run("--images", str(tmp_path / "two"), "--out", str(out2))
    assert r.exit_code == 2
    assert "1 photos have the sample id of another photo an earlier run prepared" in text
    assert f"('a.png', was {tmp_path / 'one' / 'a.png'})" in text
    assert "changed since" not in text
    with open_dataset(out) as ds:
        assert [s.sample_id for s in ds] == ["sub/a.png"]


def test_hidden_files_and_folders_are_skipped_and_recursion_can_be_turned_off(tmp_path: Path):
    from pipelines.prepare_images import find_photos

    for rel in ("b.png", "a/c.png", "a/.d.png", ".cache/e.png", "a/.thumbs/f.png", "Z.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"stand-in")
    assert [sid for sid, _ in find_photos(tmp_path)] == ["Z.png", "a/c.png", "b.png"]
    assert [sid for sid, _ in find_photos(tmp_path, recursive=False)] == ["Z.png", "b.png"]
    assert all(p.is_absolute() for _, p in find_photos(tmp_path))


def test_a_photo_changed_behind_a_linked_folder_is_said_to_have_changed(tmp_path, monkeypatch):
    """The same file reached through a link to its folder is the same photo: changed, it is
    named as changed, not as another photo holding an earlier one's sample id."""
    import pipelines.prepare_images as prep
    from facehd.h5io import file_sha256

    def task(item, config):
        out = _fake_task(item, config)
        out["source_sha256"] = file_sha256(item.source)
        return out

    monkeypatch.setattr(prep, "_photo_task", task)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.png").write_bytes(b"photo a")
    os.symlink(tmp_path / "real", tmp_path / "link")
    out = tmp_path / "p.h5"
    assert _run("--images", str(tmp_path / "real"), "--out", str(out))[0].exit_code == 0
    (tmp_path / "real" / "a.png").write_bytes(b"photo a, retouched")
    r, text = _run("--images", str(tmp_path / "link"), "--out", str(out))
    assert r.exit_code == 2
    assert "1 photos changed since an earlier run prepared them" in text, text
    assert "sample id of another photo" not in text

"""Tests of the resumable sharded HDF5 machinery (facehd.h5io)."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from facehd.cli import app
from facehd.errors import FacehdError, InputFileError, InputFileWarning
from facehd.h5io import (
    Failure,
    FieldSpec,
    SettingsDiffer,
    ShardedDatasetWriter,
    WorkItem,
    failure_reason,
    open_dataset,
    process_items,
    read_failures,
    verify,
)

SCHEMA = "facehd.test/1"
FIELDS = {
    "image": ((8, 6, 3), "uint8"),
    "points": ((5, 2), "float32"),
    "residual": FieldSpec((3,), "float64", nan_ok=True),
    "count": ((), "int32"),
    "source": ((), "str"),
}
ATTRS = {"units": "mm", "model": "facehd-synth", "config": {"a": 1, "b": [1.5, 2.0]}}


def sample(k: int) -> dict:
    """Deterministic values of sample ``k`` (independent of processing order)."""
    rng = np.random.default_rng(k)
    return {
        "image": rng.integers(0, 256, (8, 6, 3)).astype(np.uint8),
        "points": rng.normal(size=(5, 2)).astype(np.float32),
        "residual": rng.normal(size=3) if k % 5 else np.array([np.nan, 1.0, 2.0]),
        "count": k,
        "source": f"/data/scans/é{k}.obj",
    }


def sid(k: int) -> str:
    return f"subject{k:03d}"


def build(out: Path, ids: list[int], **kw) -> Path:
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, **kw) as w:
        for k in ids:
            w.add(sid(k), sample(k))
        w.finalize()
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_values(a: Path, b: Path) -> None:
    with open_dataset(a) as da, open_dataset(b) as db:
        assert da.sample_ids == db.sample_ids
        assert da.attrs == db.attrs and da.schema == db.schema and da.fields == db.fields
        for name in da.fields:
            va, vb = da.read_field(name), db.read_field(name)
            if isinstance(va, list):
                assert va == vb
            else:
                np.testing.assert_array_equal(va, vb)


def test_roundtrip_sorted_by_id_with_attrs(tmp_path):
    order = [7, 2, 11, 0, 5, 3, 9]
    out = build(tmp_path / "d.h5", order, shard_size=3)
    assert not (tmp_path / "d.h5.shards").exists()
    with open_dataset(out) as ds:
        assert len(ds) == len(order)
        assert ds.schema == SCHEMA
        assert ds.attrs == ATTRS | {"config": {"a": 1, "b": [1.5, 2.0]}}
        assert ds.sample_ids == [sid(k) for k in sorted(order)]
        assert set(ds.fields) == set(FIELDS)
        for i, k in enumerate(sorted(order)):
            s = ds.read(i)
            ref = sample(k)
            assert s.sample_id == sid(k)
            np.testing.assert_array_equal(s.image, ref["image"])
            np.testing.assert_array_equal(s.points, ref["points"])
            np.testing.assert_array_equal(s.residual, ref["residual"])
            assert s.count == k and s.source == ref["source"]
        # Unordered, repeated index lists come back in the asked order.
        got = ds.read_field("points", [4, 0, 4, 2])
        want = [sample(sorted(order)[i])["points"] for i in (4, 0, 4, 2)]
        np.testing.assert_array_equal(got, np.stack(want))
        first_two = sorted(order)[:2]
        assert ds.read_field("source", [1, 0]) == [sample(k)["source"] for k in first_two[::-1]]
        assert ds.index_of(sid(9)) == sorted(order).index(9)
        assert ds[-1].sample_id == sid(11)
        with pytest.raises(IndexError):
            ds.read(len(order))
    # Stored chunked along N, compressed and checksummed.
    with h5py.File(out) as f:
        d = f["image"]
        assert d.chunks[1:] == (8, 6, 3) and d.compression == "gzip" and d.fletcher32
    assert verify(out, expected_schema=SCHEMA).ok


def test_kill_and_resume_gives_identical_file(tmp_path):
    ids = list(range(20))
    ref = build(tmp_path / "ref" / "d.h5", ids, shard_size=4)

    out = tmp_path / "run" / "d.h5"
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=4)
    first = [13, 1, 17, 4, 8, 0, 19, 2, 11, 6]  # 2 shards written, 2 samples still buffered
    for k in first:
        w.add(sid(k), sample(k))
    # The process dies here: no close(), the buffer is lost, a shard was being written.
    del w
    shard_dir = out.with_name("d.h5.shards")
    assert len(list(shard_dir.glob("shard-*.h5"))) == 2
    (shard_dir / "shard-000002.h5.tmp").write_bytes(b"\x89HDF half-written")
    out.with_name("d.h5.tmp").write_bytes(b"partial output")
    assert not out.exists()

    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=4)
    assert w.done_ids == {sid(k) for k in first[:8]}
    # what the shards hold, by id: the values written, strings decoded
    assert w.done_values("source") == {sid(k): sample(k)["source"] for k in first[:8]}
    counts = w.done_values("count")
    assert {s: int(v) for s, v in counts.items()} == {sid(k): k for k in first[:8]}
    assert not list(shard_dir.glob("*.tmp")) and not out.with_name("d.h5.tmp").exists()
    todo = w.pending([sid(k) for k in reversed(ids)])
    assert sorted(todo) == sorted(sid(k) for k in ids if k not in first[:8])
    for s in todo:
        w.add(s, sample(int(s[-3:])))
    w.finalize()
    assert_same_values(ref, out)
    assert digest(ref) == digest(out)
    assert verify(out).ok
    # a finished output read back the same way
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as again:
        points = again.done_values("points")
    assert sorted(points) == [sid(k) for k in ids]
    np.testing.assert_array_equal(points[sid(7)], sample(7)["points"])


def test_real_sigkill_mid_build_then_resume(tmp_path):
    """A build process killed by SIGKILL resumes without loss or duplication."""
    out = tmp_path / "d.h5"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_h5io import ShardedDatasetWriter, SCHEMA, ATTRS, FIELDS, sample, sid
        w = ShardedDatasetWriter({str(out)!r}, SCHEMA, ATTRS, FIELDS, shard_size=3)
        for k in range(11):
            w.add(sid(k), sample(k))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not out.exists()
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=3)
    assert w.done_ids == {sid(k) for k in range(9)}  # 3 full shards; 2 buffered samples lost
    for s in w.pending([sid(k) for k in range(15)]):
        w.add(s, sample(int(s[-3:])))
    w.finalize()
    ref = build(tmp_path / "ref" / "d.h5", list(range(15)))
    assert digest(ref) == digest(out)


def test_failures_recorded_retried_and_kept_per_output(tmp_path):
    out = tmp_path / "d.h5"
    fcsv = tmp_path / "failures.csv"
    # Another dataset in the same folder has a failure of its own.
    with ShardedDatasetWriter(tmp_path / "other.h5", SCHEMA, ATTRS, FIELDS) as w:
        w.fail("x", "/in/x.obj", "no landmarks")
        w.add(sid(0), sample(0))
        w.finalize()
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2)
    w.add(sid(1), sample(1))
    w.fail(sid(2), "/in/2.obj", "unreadable:\n truncated file")
    w.fail(sid(3), "/in/3.obj", "NaN vertices")
    w.close()
    with open(fcsv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["output"], r["sample_id"]) for r in rows] == [
        ("d.h5", sid(2)),
        ("d.h5", sid(3)),
        ("other.h5", "x"),
    ]
    assert rows[0]["reason"] == "unreadable: truncated file" and rows[0]["source"] == "/in/2.obj"

    # Rerun: the failed ids are retried; one now succeeds, the other fails again.
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2)
    assert w.pending([sid(k) for k in (1, 2, 3)]) == [sid(2), sid(3)]
    w.add(sid(2), sample(2))
    w.fail(sid(3), "/in/3.obj", "NaN vertices again")
    res = w.finalize()
    assert res.n_samples == 2 and res.n_failed == 1 and res.failures_path == fcsv
    assert read_failures(fcsv, out) == [Failure(sid(3), "/in/3.obj", "NaN vertices again")]
    assert [f.sample_id for f in read_failures(fcsv, tmp_path / "other.h5")] == ["x"]
    # the file saved again by a spreadsheet (a byte-order mark) still reads; a damaged one is
    # an error naming it
    fcsv.write_bytes(b"\xef\xbb\xbf" + fcsv.read_bytes())
    assert read_failures(fcsv, out) == [Failure(sid(3), "/in/3.obj", "NaN vertices again")]
    saved = fcsv.read_bytes()
    fcsv.write_bytes(b"output,sample_id\n\xff\xfe,x\n")
    with pytest.raises(InputFileError, match="failures"):
        read_failures(fcsv, out)
    fcsv.write_bytes(saved)
    # Without retries, a rerun skips what failed before.
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, retry_failures=False)
    assert w.pending([sid(k) for k in range(5)]) == [sid(0), sid(4)]


def test_no_failures_leaves_no_file(tmp_path):
    build(tmp_path / "d.h5", [1, 2])
    assert not (tmp_path / "failures.csv").exists()


def test_verify_catches_corruption(tmp_path):
    good = build(tmp_path / "good.h5", list(range(12)))
    assert verify(good).ok

    # NaN in a field that does not allow it.
    nan = tmp_path / "nan.h5"
    nan.write_bytes(good.read_bytes())
    with h5py.File(nan, "r+") as f:
        f["points"][3, 1, 0] = np.nan
        f["points"][9, 4, 1] = np.inf
    rep = verify(nan)
    assert not rep.ok and any("points" in p and "NaN" in p for p in rep.problems)
    # the rows a reader refuses before using the data: the same as a loop over the samples
    with open_dataset(nan) as ds:
        loop = [k for k in range(len(ds)) if not np.isfinite(ds[k].points).all()]
        assert loop == [3, 9] and ds.nonfinite_rows() == {"points": loop}
    with open_dataset(good) as ds:
        assert ds.nonfinite_rows() == {}
    # ... but NaN in a nan_ok field is fine.
    ok_nan = tmp_path / "ok_nan.h5"
    ok_nan.write_bytes(good.read_bytes())
    with h5py.File(ok_nan, "r+") as f:
        f["residual"][3, 1] = np.nan
    assert verify(ok_nan).ok
    with open_dataset(ok_nan) as ds:
        assert ds.nonfinite_rows() == {}

    # Flipped bytes inside a compressed chunk: the checksum catches them.
    flip = tmp_path / "flip.h5"
    with h5py.File(good) as f:
        info = f["image"].id.get_chunk_info(0)
    raw = bytearray(good.read_bytes())
    for k in range(info.byte_offset + 10, info.byte_offset + 20):
        raw[k] ^= 0xFF
    flip.write_bytes(bytes(raw))
    rep = verify(flip)
    assert not rep.ok and any("image" in p and "corrupt" in p for p in rep.problems)

    # A truncated file, a file that is not HDF5, a missing file.
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert not verify(trunc).ok
    (tmp_path / "text.h5").write_text("hello")
    assert "not a readable HDF5" in verify(tmp_path / "text.h5").problems[0]
    assert not verify(tmp_path / "missing.h5").ok

    # Fields of unequal length, duplicate ids, wrong schema, missing attribute.
    bad = tmp_path / "bad.h5"
    bad.write_bytes(good.read_bytes())
    with h5py.File(bad, "r+") as f:
        del f["count"]
        f.create_dataset("count", data=np.arange(11, dtype=np.int32))
        ids = f["sample_id"][()]
        ids[5] = ids[4]
        f["sample_id"][...] = ids
        del f.attrs["schema"]
    problems = "\n".join(verify(bad, expected_schema=SCHEMA).problems)
    assert "'count' has (11,) rows, expected 12" in problems
    assert "duplicate sample ids" in problems
    assert "'schema' missing" in problems
    rep = verify(good, expected_schema="facehd.other/1")
    assert not rep.ok and "expected 'facehd.other/1'" in rep.problems[0]


def test_verify_names_each_problem_of_a_hand_damaged_file(tmp_path, monkeypatch):
    """One damage at a time, each named by verify in its own words (and nothing else found)."""
    import facehd.h5io as h5io

    good = build(tmp_path / "good.h5", list(range(12)))

    def replace(name: str, data: np.ndarray):  # noqa: ANN202
        return lambda f: (f.__delitem__(name), f.create_dataset(name, data=data))

    def set_ids(order: list[int], blank: int | None = None):  # noqa: ANN202
        def damage(f: h5py.File) -> None:
            ids = f["sample_id"][()][order]
            if blank is not None:
                ids[blank] = b""
            f["sample_id"][...] = ids

        return damage

    def nan_rows(rows: list[int]):  # noqa: ANN202
        def damage(f: h5py.File) -> None:
            for r in rows:
                f["points"][r, 0, 1] = np.nan

        return damage

    ids = [f"{k} ('{sid(k)}')" for k in range(12)]
    cases = [
        (replace("points", np.zeros((12, 5, 3), np.float32)),
         "field 'points' has sample shape (5, 3), expected (5, 2)"),
        (replace("source", np.arange(12)), "field 'source' has dtype int64, expected strings"),
        (replace("count", np.zeros(12)), "field 'count' has dtype float64, expected int32"),
        (lambda f: f.attrs.__setitem__("complete", False),
         "dataset is not complete (not finalized)"),
        (lambda f: f.attrs.__setitem__("shard", True),
         "file is a shard of an unfinished build, not a finalized dataset"),
        (lambda f: f.attrs.__setitem__("facehd_h5io", 99), "layout version 99, this facehd reads"),
        (lambda f: f.create_dataset("extra", data=np.zeros(12)), "undeclared datasets ['extra']"),
        (set_ids([0, 1, 2, 3, 4, 6, 5, 7, 8, 9, 10, 11]), "sample ids are not sorted"),
        (set_ids(list(range(12)), blank=0), "empty sample id"),
        (nan_rows([2, 4, 6, 7, 9, 10, 11]), "field 'points': 7 NaN/inf values where none are "
         f"allowed, in samples {', '.join(ids[r] for r in (2, 4, 6, 7, 9))} and 2 more"),
        (nan_rows([6]),
         f"field 'points': 1 NaN/inf values where none are allowed, in sample {ids[6]}"),
        (lambda f: [replace(k, f[k][()][:11])(f) for k in ("count", "residual")],
         "field 'count' has (11,) rows, expected 12\nfield 'residual' has (11,) rows, expected 12"),
        (lambda f: (f.__delitem__("count"), f.create_group("count")), "'count' is not a dataset"),
    ]  # fmt: skip
    for k, (damage, problem) in enumerate(cases):
        path = damaged_copy(good, tmp_path / f"damaged-{k}.h5", damage)
        got = "\n".join(verify(path).problems)
        assert got.startswith(problem), (k, got)
    # rows are counted from the start of the field however many blocks it is read in
    monkeypatch.setattr(h5io, "_MERGE_BLOCK_BYTES", 1)
    small = build(tmp_path / "small-chunks" / "d.h5", list(range(12)), chunk_bytes=40)
    with h5py.File(small) as f:
        assert f["points"].chunks[0] == 1 and f["image"].chunks[0] == 1  # 40 and 144 bytes a row
    path = damaged_copy(small, tmp_path / "small-nan.h5", nan_rows([3, 9]))
    assert verify(path).problems == (
        f"field 'points': 2 NaN/inf values where none are allowed, in samples {ids[3]}, {ids[9]}",
    )


def test_rows_are_named_by_id_where_the_ids_were_read():
    from facehd.h5io import name_rows

    ids = ["a", "b", "c", "d"]
    assert name_rows([3], ids) == "sample 3 ('d')"
    assert name_rows([1, 7], ids) == "samples 1 ('b'), 7"  # past the ids read: the index alone
    assert name_rows(list(range(8)), ids, limit=2) == "samples 0 ('a'), 1 ('b') and 6 more"


def test_partial_files_never_look_complete(tmp_path, monkeypatch):
    out = tmp_path / "d.h5"
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=4)
    for k in range(10):
        w.add(sid(k), sample(k))
    w.flush()
    shard = sorted(out.with_name("d.h5.shards").glob("shard-*.h5"))[0]
    # A shard is not a dataset.
    assert not verify(shard).ok
    with pytest.raises(InputFileError, match="shard"):
        open_dataset(shard)

    # The merge dies half-way: the output does not appear.
    import facehd.h5io as h5io

    real = h5io.FieldSpec.item_bytes

    def boom(self):
        if self.dtype == "int32":
            raise RuntimeError("disk full")
        return real.fget(self)

    monkeypatch.setattr(h5io.FieldSpec, "item_bytes", property(boom))
    with pytest.raises(RuntimeError, match="disk full"):
        w.finalize()
    monkeypatch.undo()
    assert not out.exists()
    tmp = out.with_name("d.h5.tmp")
    assert tmp.exists()
    assert not verify(tmp).ok
    with pytest.raises(InputFileError):
        open_dataset(tmp)

    # Rerun the same build: it resumes from the shards and completes.
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=4)
    assert w.pending([sid(k) for k in range(12)]) == [sid(10), sid(11)]
    for k in (10, 11):
        w.add(sid(k), sample(k))
    w.finalize()
    assert digest(out) == digest(build(tmp_path / "ref" / "d.h5", list(range(12))))


def test_rerun_adds_new_inputs_to_a_finished_output(tmp_path):
    out = build(tmp_path / "d.h5", [0, 2, 4, 6])
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS)
    assert w.pending([sid(k) for k in range(8)]) == [sid(k) for k in (1, 3, 5, 7)]
    for k in (7, 1, 5, 3):
        w.add(sid(k), sample(k))
    w.finalize()
    assert digest(out) == digest(build(tmp_path / "ref" / "d.h5", list(range(8))))


def test_refuses_to_mix_builds(tmp_path):
    out = tmp_path / "d.h5"
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS)
    w.add(sid(0), sample(0))
    w.close()
    other = ATTRS | {"config": {"a": 2, "b": [1.5, 2.0]}}
    # the message names the setting that differs, inside the record, not the whole record
    with pytest.raises(
        FacehdError, match=r"setting 'config\.a' differs \(1 there, 2 now\)"
    ) as refused:
        ShardedDatasetWriter(out, SCHEMA, other, FIELDS)
    # and says it to a caller that advises on it: which setting, of which file, whether held
    assert isinstance(refused.value, SettingsDiffer)
    manifest = out.with_name("d.h5.shards") / "manifest.json"  # an unfinished build
    assert (refused.value.path, refused.value.setting) == (manifest, "config.a")
    assert not refused.value.absent_there
    # a field the file lacks reads "absent", not None (which a setting can hold)
    absent = r"fields\.extra differs \(absent there, \{'dtype': 'float32'"
    with pytest.raises(FacehdError, match=absent) as refused:
        ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS | {"extra": ((2,), "float32")})
    assert refused.value.setting is None and refused.value.absent_there
    # overwrite starts afresh
    w = ShardedDatasetWriter(out, SCHEMA, other, FIELDS, overwrite=True)
    assert not w.done_ids


def test_floats_recomputed_to_their_last_bits_are_the_same_build(tmp_path):
    """A model fingerprint computed again with another BLAS thread count differs in its last
    bits: the same build. A real difference, however small, is another build, named briefly."""
    fp = {"topology": "abc", "projections": [-360.130082979538, 11.085479672273367, 0.0]}
    attrs = ATTRS | {"model_fingerprint": fp}
    out = tmp_path / "d.h5"
    w = ShardedDatasetWriter(out, SCHEMA, attrs, FIELDS)
    w.add(sid(0), sample(0))
    w.close()
    again = {"topology": "abc", "projections": [-360.130082979538, 11.0854796722733, 1e-15]}
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS | {"model_fingerprint": again}, FIELDS)
    assert w.done_ids == {sid(0)}
    w.close()
    for changed in (
        {"topology": "abc", "projections": [-360.130082979538, 11.0855, 0.0]},
        {"topology": "abd", "projections": fp["projections"]},
        {"topology": "abc", "projections": fp["projections"][:2]},
    ):
        with pytest.raises(FacehdError, match="setting 'model_fingerprint.*' differs") as exc:
            ShardedDatasetWriter(out, SCHEMA, ATTRS | {"model_fingerprint": changed}, FIELDS)
        assert len(str(exc.value)) < 400 + len(str(out))


def test_sample_validation(tmp_path):
    w = ShardedDatasetWriter(tmp_path / "d.h5", SCHEMA, ATTRS, FIELDS)
    good = sample(1)
    with pytest.raises(ValueError, match=r"'points': expected shape \(5, 2\), got \(5, 3\)"):
        w.add("a", good | {"points": np.zeros((5, 3))})
    with pytest.raises(ValueError, match="'points': NaN"):
        w.add("a", good | {"points": np.full((5, 2), np.nan)})
    with pytest.raises(ValueError, match="missing"):
        w.add("a", {k: v for k, v in good.items() if k != "count"})
    with pytest.raises(ValueError, match="range of uint8"):
        w.add("a", good | {"image": np.full((8, 6, 3), 300)})
    with pytest.raises(ValueError, match="sample id"):
        w.add("", good)
    w.add("a", good | {"residual": np.full(3, np.nan)})  # nan_ok field
    with pytest.raises(ValueError, match="already written"):
        w.add("a", good)
    with pytest.raises(ValueError, match="reserved"):
        ShardedDatasetWriter(tmp_path / "e.h5", SCHEMA, {"schema": "x"}, FIELDS)
    with pytest.raises(ValueError, match="added automatically"):
        ShardedDatasetWriter(tmp_path / "e.h5", SCHEMA, {}, {"sample_id": ((), "str")})


def test_empty_dataset(tmp_path):
    with ShardedDatasetWriter(tmp_path / "d.h5", SCHEMA, ATTRS, FIELDS) as w:
        w.fail("a", "/x", "no face")
        res = w.finalize()
    assert res.n_samples == 0 and res.n_failed == 1
    with open_dataset(res.path) as ds:
        assert len(ds) == 0 and ds.read_field("points").shape == (0, 5, 2)
    assert verify(res.path).ok


# -- process_items -----------------------------------------------------------------------------


def task(item: WorkItem) -> dict:
    """Worker task of the tests: fails on odd payloads, kills its process on payload -1."""
    if item.payload == -1:
        os._exit(3)
    if item.payload % 7 == 3:
        raise FacehdError(f"{item.source}: degenerate landmarks")
    if item.payload % 7 == 5:
        return sample(item.payload) | {"points": np.full((5, 2), np.nan, np.float32)}
    if item.payload % 7 == 6:  # an exception whose constructor is not (message,)
        raise InputFileError(item.source, "truncated file")
    return sample(item.payload)


@pytest.mark.parametrize("workers", [1, 2])
def test_process_items_records_failures_and_resumes(tmp_path, workers):
    items = [WorkItem(sid(k), f"/in/{k}.obj", k) for k in range(14)]
    out = tmp_path / "d.h5"
    seen = []
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=3) as w:
        summary = process_items(
            w, items[:9], task, workers=workers, progress=lambda d, t: seen.append((d, t))
        )
    assert (summary.n_written, summary.n_failed, summary.n_skipped) == (6, 3, 0)
    assert seen[-1] == (9, 9)
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=3) as w:
        summary = process_items(w, items, task, workers=workers)
        w.finalize()
    # The 3 failures are retried (and fail again); 5 new items: 2 written, 3 failed.
    assert (summary.n_skipped, summary.n_written, summary.n_failed) == (6, 2, 6)
    failures = {f.sample_id: f.reason for f in read_failures(tmp_path / "failures.csv", out)}
    assert set(failures) == {sid(k) for k in (3, 5, 6, 10, 12, 13)}
    assert failures[sid(3)] == "/in/3.obj: degenerate landmarks"
    assert "'points': NaN" in failures[sid(5)]
    assert failures[sid(6)] == "/in/6.obj: truncated file"
    expected = [k for k in range(14) if k % 7 not in (3, 5, 6)]
    assert digest(out) == digest(build(tmp_path / "ref" / "d.h5", expected))


def test_failure_reasons_say_what_happened() -> None:
    from facehd.errors import InputFileError

    assert (
        failure_reason(InputFileError("/in/a.obj", "truncated file")) == "/in/a.obj: truncated file"
    )
    assert failure_reason(ValueError("bad")) == "ValueError: bad"
    # a MemoryError's own message is empty: the reason still says what ran out
    assert failure_reason(MemoryError()) == "out of memory (MemoryError)"
    assert failure_reason(MemoryError(12)) == "out of memory (MemoryError: 12)"


def _interrupted_during_an_import(item: WorkItem) -> dict:
    """What an extension module's first import (pybind11) makes of Ctrl-C landing in it."""
    if item.payload == 1:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise ImportError("initialization failed") from exc
    return sample(item.payload)


def test_an_interrupt_inside_a_task_stops_the_build_and_is_no_failure(tmp_path):
    items = [WorkItem(sid(k), f"/in/{k}.obj", k) for k in range(3)]
    out = tmp_path / "d.h5"
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=1) as w:
        with pytest.raises(KeyboardInterrupt):
            process_items(w, items, _interrupted_during_an_import)
    # item 0 was written; item 1 is no failure, item 2 never ran: a rerun does both
    assert not (tmp_path / "failures.csv").exists()
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=1) as w:
        summary = process_items(w, items, task)
    assert (summary.n_skipped, summary.n_written, summary.n_failed) == (1, 2, 0)


def test_process_items_names_bad_file_names_and_forgets_inputs_that_are_gone(tmp_path):
    # a name with an edge space, one in another encoding (read with surrogate escapes): each
    # a failure naming its file, the others written; nothing aborts the run
    odd = ["a ", "caf\udce9"]
    items = [WorkItem(sid(k), f"/in/{k}.obj", k) for k in (0, 1, 3)]
    items += [WorkItem(name, f"/in/{name}.obj", 2) for name in odd]
    out = tmp_path / "d.h5"
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as w:
        summary = process_items(w, items, task)
        w.finalize()
    assert (summary.n_written, summary.n_failed) == (2, 3)
    failures = {f.sample_id: f for f in read_failures(tmp_path / "failures.csv", out)}
    # the byte on disk is said as \xNN, as reconstruct and landmarks say it
    assert set(failures) == {sid(3), "'a '", "'caf\\xe9'"}
    assert "edge spaces" in failures["'a '"].reason and "rename" in failures["'a '"].reason
    assert "not valid UTF-8" in failures["'caf\\xe9'"].reason
    assert failures["'caf\\xe9'"].source == "/in/caf\\xe9.obj"
    # the bad inputs deleted (or renamed): their failures go, and the exit is clean
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as w:
        summary = process_items(w, items[:2], task)
        res = w.finalize()
    assert (summary.n_skipped, summary.n_failed, res.n_failed) == (2, 0, 0)
    assert not (tmp_path / "failures.csv").exists()


def slow_task(item: WorkItem) -> dict:
    """Worker task that takes a while, so that others are in flight when payload -1 kills its
    process (a moment after it starts)."""
    time.sleep(0.3 if item.payload == -1 else 0.6)
    return task(item)


def test_a_dying_worker_fails_its_own_item_alone(tmp_path):
    """Python's pool fails every task in flight when one worker dies: the items that shared
    the pool with the one that killed it are run again, and only that one is recorded."""
    items = [WorkItem(sid(k), f"/in/{k}.obj", k) for k in (0, 1, 2, 4)]
    items.insert(1, WorkItem("crash", "/in/crash.obj", -1))
    out = tmp_path / "d.h5"
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as w:
        summary = process_items(w, items, slow_task, workers=2)
        res = w.finalize()
    assert (summary.n_written, summary.n_failed) == (4, 1)
    (failure,) = read_failures(res.failures_path)
    assert (failure.sample_id, failure.source) == ("crash", "/in/crash.obj")
    assert failure.reason.startswith("RuntimeError: worker process died while processing")
    assert digest(out) == digest(build(tmp_path / "ref" / "d.h5", [0, 1, 2, 4]))


def damaged_copy(good: Path, path: Path, damage) -> Path:  # noqa: ANN001
    """A copy of the dataset ``good`` at ``path``, changed by ``damage(h5py.File)``."""
    path.write_bytes(good.read_bytes())
    with h5py.File(path, "r+") as f:
        damage(f)
    return path


def test_a_hand_damaged_dataset_is_an_error_naming_the_file(tmp_path):
    good = build(tmp_path / "good" / "d.h5", [0, 1])
    for name, damage, problem in (
        ("no_ids.h5", lambda f: f.__delitem__("sample_id"), "no 'sample_id' table"),
        ("bad_json.h5", lambda f: f.attrs.__setitem__("fields", "{bad"), "JSONDecodeError"),
    ):
        path = damaged_copy(good, tmp_path / name, damage)
        with pytest.raises(InputFileError, match=rf"{name}: damaged dataset.*{problem}"):
            open_dataset(path)


def test_tables_that_disagree_with_the_attributes_are_an_error_naming_the_file(tmp_path):
    """The reader checks the tables the attributes declare before reading any (the checks of
    verify): a declared field deleted, or n_samples that is not the tables' number of rows, is
    an InputFileError naming the file and the problem, not a KeyError or IndexError later."""
    good = build(tmp_path / "good" / "d.h5", [0, 1, 2, 3])
    for name, damage, problem in (
        ("no_points.h5", lambda f: f.__delitem__("points"), "field 'points' missing"),
        (
            "n_samples.h5",
            lambda f: f.attrs.__setitem__("n_samples", 5),
            "attribute 'n_samples' is 5, the tables hold 4 rows",
        ),
        (
            "short_count.h5",
            lambda f: (
                f.__delitem__("count"),
                f.create_dataset("count", data=np.arange(3, dtype=np.int32)),
            ),
            r"field 'count' has \(3,\) rows, expected 4",
        ),
    ):
        path = damaged_copy(good, tmp_path / name, damage)
        with pytest.raises(InputFileError, match=rf"{name}: damaged dataset: {problem}"):
            open_dataset(path)
        # verify says the same, in the same words; inspect ends on that error, not a summary
        assert any(re.search(problem, p) for p in verify(path).problems)
        res = CliRunner().invoke(app, ["inspect", str(path)])
        assert res.exit_code == 2 and re.search(rf"{name}: damaged dataset: {problem}", res.output)


def flip_chunk(path: Path, field: str) -> None:
    """Flip bytes inside the first stored chunk of ``field``: its checksum fails on read."""
    with h5py.File(path) as f:
        info = f[field].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    for k in range(info.byte_offset + 2, info.byte_offset + 12):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_damaged_shard_is_set_aside_with_a_warning_and_its_samples_done_again(tmp_path):
    """A shard that cannot be read back (a flipped byte in a chunk, a truncated file) is no
    reason for every rerun to fail: verify of the unfinished output names it, and the rerun
    sets it aside with a warning naming it and why, and processes its samples again."""
    out = tmp_path / "d.h5"
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2)
    for k in range(6):
        w.add(sid(k), sample(k))
    w.close()  # interrupted before the merge: shards 0, 1, 2
    shards = out.with_name("d.h5.shards")
    flip_chunk(shards / "shard-000001.h5", "image")
    truncated = shards / "shard-000002.h5"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    problems = verify(out).problems
    assert len(problems) == 3 and "unfinished" in problems[0]
    assert "shard-000001.h5 is damaged, field 'image' cannot be read" in problems[1]
    assert "shard-000002.h5 is damaged, not a readable HDF5 file" in problems[2]
    assert "shard-000001.h5 is damaged" in verify(shards).problems[1]

    with pytest.warns(InputFileWarning) as said:
        w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2)
    lines = sorted(str(m.message) for m in said)
    assert len(lines) == 2
    assert f"{shards / 'shard-000001.h5'}: damaged shard, field 'image' cannot be read" in lines[0]
    assert "set aside as shard-000001.corrupt" in lines[0]
    assert f"{shards / 'shard-000002.h5'}: damaged shard" in lines[1]
    assert w.done_ids == {sid(0), sid(1)}
    for s in w.pending([sid(k) for k in range(6)]):
        w.add(s, sample(int(s[-3:])))
    w.finalize()
    assert digest(out) == digest(build(tmp_path / "ref" / "d.h5", list(range(6))))


def test_a_shard_damaged_during_the_merge_is_named_and_a_rerun_completes(tmp_path, monkeypatch):
    """A shard that reads back when the writer opens but not in the merge: the error is a read
    error naming the shard (not a failed write of the output), no output appears, and the rerun
    the message asks for processes that shard's samples again."""
    out = tmp_path / "d.h5"
    w = ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2)
    for k in range(4):
        w.add(sid(k), sample(k))
    shard = out.with_name("d.h5.shards") / "shard-000000.h5"
    flip_chunk(shard, "points")
    with pytest.raises(FacehdError) as caught:
        w.finalize()
    message = str(caught.value)
    assert message.startswith(f"{shard}: a shard of {out} cannot be read")
    assert "set aside as shard-000000.corrupt" in message and "rerun the same command" in message
    assert "cannot write" not in message
    assert not out.exists() and not out.with_name("d.h5.tmp").exists()
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS, shard_size=2) as w:
        assert w.done_ids == {sid(2), sid(3)}
        for k in (0, 1):
            w.add(sid(k), sample(k))
        w.finalize()
    assert digest(out) == digest(build(tmp_path / "ref" / "d.h5", list(range(4))))


def failing_initializer() -> None:
    raise OSError("cannot open the model file")


def test_workers_that_cannot_start_fail_the_build_not_its_items(tmp_path):
    """An initializer that fails in every worker is the build's problem: it stops with a clear
    error, and no item is recorded as failed (a rerun once it is fixed does them all)."""
    from facehd.pools import WorkersDieAtStart

    items = [WorkItem(sid(k), f"/in/{k}.obj", k) for k in (0, 1, 2, 4)]
    out = tmp_path / "d.h5"
    with pytest.raises(WorkersDieAtStart):
        with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as w:
            process_items(w, items, task, workers=2, initializer=failing_initializer)
    assert not (tmp_path / "failures.csv").exists()
    with ShardedDatasetWriter(out, SCHEMA, ATTRS, FIELDS) as w:
        assert process_items(w, items, task, workers=2).n_written == 4
        w.finalize()
    assert digest(out) == digest(build(tmp_path / "ref" / "d.h5", [0, 1, 2, 4]))

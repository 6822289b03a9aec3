"""Resumable, sharded HDF5 datasets: the writer, the reader and the checker.

Every facehd dataset (``facehd build-priors`` scans, ``facehd prepare-images`` photos) is one HDF5
file of stacked fixed-shape arrays, one row per sample, sorted by sample id::

    /sample_id        (N,)            str    unique, sorted
    /<field>          (N, *shape)     dtype  chunked along N, gzip + shuffle + fletcher32
    attrs: schema, n_samples, fields (JSON), complete, facehd_h5io, + the caller's attrs
           (units, model name, the resolved configuration as JSON ...)

How a build survives being killed
---------------------------------
Items are processed by id. Finished samples are buffered and written ``shard_size`` at a time to
``<out>.shards/shard-NNNNNN.h5``: each shard is written to a temporary file, flushed to disk and
renamed into place (``os.replace``), so a shard either exists whole or not at all. A rerun of the
same build opens the same folder, deletes temporary leftovers, reads the shards that exist back
whole (their checksums) and skips their ids; nothing is lost (but the unflushed buffer of the
killed run) and nothing is duplicated. A shard that cannot be read back (truncated, a flipped
byte) is renamed ``shard-NNNNNN.corrupt`` with a warning naming it and why, and its samples are
processed again; :func:`verify` of the unfinished output names such shards.
:meth:`ShardedDatasetWriter.finalize` merges the shards in sample-id order into
``<out>.tmp`` and renames it to ``<out>``: the output appears only when it is complete, and it is
value- and byte-identical to the output of an uninterrupted build (no timestamps are stored,
attributes are written in name order, chunking depends only on N and the field shapes). An existing
finalized output is a source too: rerunning with new inputs adds them to it.

One build writes an output at a time: the writer holds an advisory lock on it (``.<out>.lock``
beside it, naming the holder's pid) until it is closed, and a second writer of the same output is
refused at once with a message naming the holder. The output is checked before any work: not a
folder, in a folder that can be written; ``overwrite`` replaces only a facehd dataset, never
another file of that name. A shard or output that cannot be written (a full disk) stops the build
with :class:`OutputWriteError` naming the file; a rerun resumes.

Bad inputs go to ``failures.csv`` next to the output (columns ``output, sample_id, source,
reason``; the ``output`` column lets several datasets share one folder). The file is rewritten
whole and atomically at each change, under an advisory lock, so it is never half-written. A rerun
retries the ids that failed before (a failure may have been transient); one that succeeds leaves
the file.

The writer refuses to resume from shards made with a different schema, field set or attributes
(for example another configuration): it names the difference and asks for ``overwrite``.

Strings (``dtype="str"``) are stored UTF-8 encoded as fixed-length byte strings so that they can be
compressed and checksummed like the arrays; the reader decodes them.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facehd.csvtext import LockHeld, fsync_folder, locked
from facehd.errors import (
    FacehdError,
    InputFileError,
    InputFileWarning,
    check_output_folder,
    failure_reason,
    nearest_existing,
    printable,
    utf8_problem,
)
from facehd.pools import TaskFailed, run_tasks

FORMAT_VERSION = 1
"""Version of the layout written by this module (attribute ``facehd_h5io``)."""
ID_FIELD = "sample_id"
"""Name of the per-sample id dataset every file carries."""
STR = "str"
"""The dtype name of a string field."""
RESERVED_ATTRS = frozenset(
    {"facehd_h5io", "schema", "fields", "n_samples", "complete", "shard", "json_attrs"}
)
"""Attribute names the machinery owns; a caller's attrs may not use them."""
FAILURE_COLUMNS = ("output", "sample_id", "source", "reason")
"""Columns of ``failures.csv``."""

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHARD_NAME = re.compile(r"^shard-(\d{6,})\.h5$")
_DEFAULT_CHUNK_BYTES = 1 << 20
_MERGE_BLOCK_BYTES = 64 << 20


# --------------------------------------------------------------------------------------------
# Field specifications
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """Shape and type of one per-sample field.

    The dataset stored for the field has shape ``(N, *shape)``.
    """

    shape: tuple[int, ...]
    """Shape of one sample's value (``()`` for a scalar)."""
    dtype: str
    """numpy dtype name (``float32``, ``uint8``, ``int64``, ``bool`` ...) or ``"str"``."""
    nan_ok: bool = False
    """Whether NaN / inf values are allowed (checked by :meth:`ShardedDatasetWriter.add` and
    :func:`verify`)."""

    @staticmethod
    def of(value: FieldSpec | tuple) -> FieldSpec:
        """Normalise ``FieldSpec`` / ``(shape, dtype)`` / ``(shape, dtype, nan_ok)``."""
        if isinstance(value, FieldSpec):
            spec = value
        elif isinstance(value, tuple) and len(value) in (2, 3):
            spec = FieldSpec(tuple(value[0]), value[1], *(value[2:]))
        else:
            raise ValueError(
                f"field spec must be FieldSpec or (shape, dtype[, nan_ok]), got {value!r}"
            )
        shape = tuple(int(s) for s in spec.shape)
        if any(s <= 0 for s in shape):
            raise ValueError(f"field shape must be positive, got {shape}")
        dtype = STR if spec.dtype in (STR, str) else np.dtype(spec.dtype).name
        if dtype != STR and np.dtype(dtype).kind not in "biuf":
            raise ValueError(f"field dtype must be bool, integer, float or 'str', got {dtype!r}")
        if dtype == STR and shape:
            raise ValueError("string fields must be scalar (shape ())")
        return FieldSpec(shape, dtype, bool(spec.nan_ok))

    @property
    def is_float(self) -> bool:
        """Whether the field holds floating-point values."""
        return self.dtype != STR and np.dtype(self.dtype).kind == "f"

    @property
    def item_bytes(self) -> int:
        """Bytes of one sample's value (strings: an estimate of 64)."""
        if self.dtype == STR:
            return 64
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "nan_ok": self.nan_ok}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> FieldSpec:
        return FieldSpec.of((tuple(obj["shape"]), obj["dtype"], bool(obj.get("nan_ok", False))))


def _normalise_fields(fields: Mapping[str, FieldSpec | tuple]) -> dict[str, FieldSpec]:
    out: dict[str, FieldSpec] = {}
    for name, value in fields.items():
        if not _FIELD_NAME.match(name):
            raise ValueError(f"field name {name!r} must be an identifier")
        if name == ID_FIELD:
            raise ValueError(f"{ID_FIELD!r} is added automatically; do not declare it")
        out[name] = FieldSpec.of(value)
    if not out:
        raise ValueError("a dataset needs at least one field")
    return {k: out[k] for k in sorted(out)}


ATTR_FLOAT_RTOL = 1e-9
"""Relative tolerance of float attributes when a build is resumed: values computed again (a
procedural model's fingerprint, say) differ in their last bits with the BLAS thread count or
machine, which must not make the same build look like another."""


def _decoded(value: Any) -> Any:
    """A JSON attribute's value decoded (other values as they are)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _same_attr(a: Any, b: Any) -> bool:
    """Whether two attribute values are the same, floats within :data:`ATTR_FLOAT_RTOL` (JSON
    attributes are compared decoded, element by element)."""
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        da, db = _decoded(a), _decoded(b)  # JSON decodes to a list or dict, never a str
        if isinstance(da, str) or isinstance(db, str):
            return False
        return _same_attr(da, db)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or math.isclose(a, b, rel_tol=ATTR_FLOAT_RTOL, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_attr(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_attr(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class _Absent:
    """A setting one of two records does not hold (``absent`` in messages, not ``None``, which
    a record can hold)."""

    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


class SettingsDiffer(FacehdError):
    """An existing output (or its shards) was made with other settings than a writer's: it is
    not resumed.

    Attributes:
        path: the file holding the other settings (the output, or its shards' manifest).
        setting: dotted name of the first attribute that differs (``config.fit.x``), None when
            the format, schema or fields differ.
        absent_there: whether the output does not hold that setting at all.
    """

    def __init__(self, message: str, path: Path, setting: str | None, absent_there: bool) -> None:
        super().__init__(message)
        self.path = path
        self.setting = setting
        self.absent_there = absent_there


def _where_differ(a: Any, b: Any, path: str) -> tuple[str, Any, Any]:
    """``(dotted path, a's value, b's value)`` of the first place two different attribute
    values differ (inside JSON mappings, so that a message names the setting, not the whole
    record); a key one of them lacks reads :data:`_ABSENT` there (and is the same as one
    holding None, as records written before a setting defaulting to None existed)."""
    a, b = _decoded(a), _decoded(b)
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if not _same_attr(a.get(key), b.get(key)):
                return _where_differ(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path}.{key}")
    return path, a, b


def _brief(value: Any, limit: int = 120) -> str:
    """``repr`` of an attribute value, shortened for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _normalise_attrs(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Attribute values as stored: str/int/float/bool kept, dict/list/tuple as JSON strings."""
    out: dict[str, Any] = {}
    json_names: list[str] = []
    for key in sorted(attrs):
        if key in RESERVED_ATTRS:
            raise ValueError(f"attribute name {key!r} is reserved by facehd.h5io")
        value = attrs[key]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (dict, list, tuple)):
            out[key] = json.dumps(value, sort_keys=True, separators=(",", ":"))
            json_names.append(key)
        else:
            raise ValueError(
                f"attribute {key!r}: values must be str, int, float, bool, dict or list, "
                f"got {type(value).__name__}"
            )
    return out, json_names


def _check_id(sample_id: str) -> str:
    if not isinstance(sample_id, str) or not sample_id or "\x00" in sample_id:
        raise ValueError(f"sample id must be a non-empty string without NUL, got {sample_id!r}")
    if sample_id != sample_id.strip() or "\n" in sample_id or "\r" in sample_id:
        raise ValueError(f"sample id must not contain line breaks or edge spaces: {sample_id!r}")
    if utf8_problem(sample_id) is not None:  # a file name in another encoding
        raise ValueError(f"sample id is not valid UTF-8 text: {printable(sample_id)}")
    return sample_id


def id_problem(sample_id: str) -> str | None:
    """Why ``sample_id`` cannot name a sample (None when it can)."""
    try:
        _check_id(sample_id)
    except ValueError as exc:
        return str(exc)
    return None


def quoted_id(sample_id: str) -> str:
    """The id under which a sample that cannot be named (:func:`id_problem`) is recorded as
    failed: quoted, so that edge spaces show, with the bytes of another encoding as ``\\xNN``
    (:func:`facehd.errors.printable`)."""
    return f"'{printable(sample_id)}'"


def _encode_strings(values: Sequence[str]) -> np.ndarray:
    encoded = [v.encode("utf-8") for v in values]
    width = max([1, *(len(e) for e in encoded)])
    return np.array(encoded, dtype=f"S{width}")


def _decode_strings(raw: np.ndarray) -> list[str]:
    return [bytes(b).decode("utf-8") for b in np.asarray(raw).reshape(-1)]


# --------------------------------------------------------------------------------------------
# Low-level writing
# --------------------------------------------------------------------------------------------


def _chunk_rows(spec: FieldSpec, n: int, chunk_bytes: int) -> int:
    return max(1, min(n, chunk_bytes // max(1, spec.item_bytes)))


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _write_file(
    path: Path,
    *,
    schema: str,
    fields: Mapping[str, FieldSpec],
    attrs: Mapping[str, Any],
    json_attrs: Sequence[str],
    sample_ids: Sequence[str],
    columns: Callable[[str, int, int], np.ndarray],
    compression: str | None,
    compression_opts: int | None,
    chunk_bytes: int,
    shard: bool,
) -> None:
    """Write one dataset file. ``columns(name, start, stop)`` returns rows ``[start, stop)``.

    Datasets are created in name order with ``track_times=False`` and attributes in name order,
    the last one being ``complete``: identical inputs give identical bytes.
    """
    n = len(sample_ids)
    all_specs = {ID_FIELD: FieldSpec((), STR), **fields}
    with h5py.File(path, "w") as f:
        for name in sorted(all_specs):
            spec = all_specs[name]
            if spec.dtype == STR:
                values = sample_ids if name == ID_FIELD else None
                if values is None:
                    values = list(columns(name, 0, n)) if n else []
                data = _encode_strings(values)
                if n == 0:
                    f.create_dataset(name, shape=(0,), dtype="S1", track_times=False)
                    continue
                f.create_dataset(
                    name,
                    data=data,
                    chunks=(_chunk_rows(spec, n, chunk_bytes),),
                    compression=compression,
                    compression_opts=compression_opts,
                    shuffle=compression is not None,
                    fletcher32=True,
                    track_times=False,
                )
                continue
            shape = (n, *spec.shape)
            if n == 0:
                f.create_dataset(name, shape=shape, dtype=spec.dtype, track_times=False)
                continue
            rows = _chunk_rows(spec, n, chunk_bytes)
            ds = f.create_dataset(
                name,
                shape=shape,
                dtype=spec.dtype,
                chunks=(rows, *spec.shape),
                compression=compression,
                compression_opts=compression_opts,
                shuffle=compression is not None,
                fletcher32=True,
                track_times=False,
            )
            block = max(rows, (_MERGE_BLOCK_BYTES // max(1, spec.item_bytes)) // rows * rows)
            for start in range(0, n, block):
                stop = min(n, start + block)
                ds[start:stop] = columns(name, start, stop)
        stored: dict[str, Any] = dict(attrs)
        stored.update(
            {
                "facehd_h5io": FORMAT_VERSION,
                "schema": schema,
                "fields": json.dumps(
                    {k: v.to_json() for k, v in fields.items()},
                    sort_keys=True,
                    separators=(",", ":"),
                ),
                "json_attrs": json.dumps(sorted(json_attrs)),
                "n_samples": n,
                "shard": bool(shard),
            }
        )
        for key in sorted(stored):
            f.attrs[key] = stored[key]
        f.attrs["complete"] = True
    _fsync_file(path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class Sample:
    """One sample of a dataset: its values as attributes (``sample.image``), ``sample.sample_id``.

    ``sample.field_names`` lists the fields; ``sample.get(name)`` reads one by name.
    """

    __slots__ = ("_values", "index", "sample_id")

    def __init__(self, index: int, sample_id: str, values: dict[str, Any]) -> None:
        self.index = index
        self.sample_id = sample_id
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"sample has no field {name!r}") from None

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self._values)

    def get(self, name: str) -> Any:
        """The value of field ``name``."""
        return getattr(self, name)

    def __repr__(self) -> str:
        return f"Sample({self.index}, {self.sample_id!r}, fields={self.field_names})"


class H5Dataset:
    """Read access to a finalized dataset file (see :func:`open_dataset`).

    Attributes: ``path``, ``schema``, ``fields`` (name -> :class:`FieldSpec`, without
    ``sample_id``), ``attrs`` (the caller's attributes, JSON ones decoded), ``sample_ids``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputFileError(self.path, "is a folder: give the dataset's .h5 file")
        if not self.path.is_file():
            raise InputFileError(self.path, "no such dataset file")
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=16 << 20)
        except OSError as exc:
            raise InputFileError(self.path, f"not a readable HDF5 file ({exc})") from exc
        try:
            a = self._file.attrs
            missing = [k for k in ("facehd_h5io", "schema", "fields", "n_samples") if k not in a]
            if missing:
                raise InputFileError(self.path, f"not a facehd dataset ({missing} missing)")
            if not bool(a.get("complete", False)):
                raise InputFileError(self.path, "incomplete dataset (not finalized)")
            if bool(a.get("shard", False)):
                raise InputFileError(self.path, "a shard of an unfinished build, not a dataset")
            self.schema: str = str(a["schema"])
            self.fields: dict[str, FieldSpec] = {
                k: FieldSpec.from_json(v) for k, v in json.loads(a["fields"]).items()
            }
            json_names = set(json.loads(a.get("json_attrs", "[]")))
            self.attrs: dict[str, Any] = {}
            for key in sorted(a):
                if key in RESERVED_ATTRS:
                    continue
                value = a[key]
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                elif isinstance(value, np.generic):
                    value = value.item()
                self.attrs[key] = json.loads(value) if key in json_names else value
            self._n = int(a["n_samples"])
            if ID_FIELD not in self._file:
                raise InputFileError(self.path, f"damaged dataset: no {ID_FIELD!r} table")
            # the tables the attributes declare, before any is read (the checks of verify)
            problems = _layout_problems(self._file, self.fields, self._n)
            if problems:
                more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
                raise InputFileError(
                    self.path,
                    f"damaged dataset: {'; '.join(problems[:3])}{more}; facehd verify says more",
                )
            self.sample_ids: list[str] = _decode_strings(self._file[ID_FIELD][()])
        except (KeyError, ValueError, TypeError, OSError) as exc:  # hand-edited or damaged
            self._file.close()
            if isinstance(exc, InputFileError):
                raise
            raise InputFileError(
                self.path, f"damaged dataset ({type(exc).__name__}: {exc}); facehd verify says more"
            ) from None
        except BaseException:
            self._file.close()
            raise
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return self._n

    def __enter__(self) -> H5Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def index_of(self, sample_id: str) -> int:
        """Row of ``sample_id`` (KeyError when absent)."""
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.sample_ids)}
        return self._index[sample_id]

    def read_field(self, name: str, index: int | slice | Sequence[int] = slice(None)) -> Any:
        """Rows of one field: ``(*shape)`` for an int index, ``(n, *shape)`` otherwise.

        String fields give ``str`` / ``list[str]``. A list of indices may be in any order.
        """
        if name != ID_FIELD and name not in self.fields:
            raise KeyError(f"{self.path}: no field {name!r}; fields: {sorted(self.fields)}")
        try:
            return self._read_field(name, index)
        except OSError as exc:  # a damaged chunk (a flipped byte fails its checksum filter)
            raise InputFileError(
                self.path, f"field {name!r} cannot be read ({exc}): the file is damaged"
            ) from None

    def _read_field(self, name: str, index: int | slice | Sequence[int]) -> Any:
        ds = self._file[name]
        is_str = name == ID_FIELD or self.fields[name].dtype == STR
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -self._n <= i < self._n:
                raise IndexError(f"index {i} out of range for {self._n} samples")
            raw = ds[i % self._n]
            return bytes(raw).decode("utf-8") if is_str else raw
        if isinstance(index, slice):
            raw = ds[index]
        else:
            idx = np.asarray(index, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= self._n):
                raise IndexError(f"indices out of range for {self._n} samples")
            order = np.argsort(idx, kind="stable")
            uniq, inverse = np.unique(idx[order], return_inverse=True)
            got = ds[uniq] if uniq.size else ds[0:0]
            raw = np.empty((idx.size, *got.shape[1:]), dtype=got.dtype)
            raw[order] = got[inverse]
        return _decode_strings(raw) if is_str else raw

    def nonfinite_rows(self) -> dict[str, list[int]]:
        """Rows holding NaN or inf, per float field that may not (``nan_ok`` false): the fields
        a dataset written before its writer checked, or edited since, may have left them in.
        Reads those fields whole, in blocks (not the others)."""
        out: dict[str, list[int]] = {}
        for name, spec in self.fields.items():
            if not spec.is_float or spec.nan_ok:
                continue
            try:
                rows = [
                    start + r
                    for start, data in _value_blocks(self._file[name], spec)
                    for r in np.flatnonzero(~np.isfinite(data).reshape(len(data), -1).all(1))
                ]
            except OSError as exc:
                raise InputFileError(
                    self.path, f"field {name!r} cannot be read ({exc}): the file is damaged"
                ) from None
            if rows:
                out[name] = [int(r) for r in rows]
        return out

    def read(self, index: int) -> Sample:
        """All fields of sample ``index`` (negative indices count from the end)."""
        i = int(index)
        if not -self._n <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} samples")
        i %= self._n
        values = {name: self.read_field(name, i) for name in self.fields}
        return Sample(i, self.sample_ids[i], values)

    def __getitem__(self, index: int) -> Sample:
        return self.read(index)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self._n):
            yield self.read(i)


def _value_blocks(ds: h5py.Dataset, spec: FieldSpec) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of a stored field, whole chunks of about 64 MiB at a time."""
    rows = ds.chunks[0] if ds.chunks else max(1, ds.shape[0])
    block = max(rows, (_MERGE_BLOCK_BYTES // max(1, spec.item_bytes)) // rows * rows)
    for start in range(0, ds.shape[0], block):
        yield start, ds[start : start + block]


def _shard_ids(path: Path, specs: Mapping[str, FieldSpec] | None = None) -> list[str]:
    """The sample ids of the finished shard ``path``, once every value it stores has been read
    back (through its checksums): a resumed build merges only shards it can read.

    ``specs`` are the fields the shard must hold (default: those its attributes declare).

    Raises
    ------
    ValueError
        saying why the shard cannot be used: unfinished, truncated, or a table missing or
        damaged (a flipped byte fails its chunk's checksum).
    """
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if not bool(a.get("complete", False)):
                raise ValueError("not finished (its build stopped while writing it)")
            if specs is None:
                specs = {k: FieldSpec.from_json(v) for k, v in json.loads(a["fields"]).items()}
            problems = _layout_problems(f, specs, int(a["n_samples"]))
            if problems:
                raise ValueError("; ".join(problems[:3]))
            try:
                ids = _decode_strings(f[ID_FIELD][()])
            except OSError as exc:
                raise ValueError(f"its sample ids cannot be read ({exc})") from None
            for name, spec in specs.items():
                try:
                    for _ in _value_blocks(f[name], spec):
                        pass
                except OSError as exc:
                    raise ValueError(f"field {name!r} cannot be read ({exc})") from None
            return ids
    except OSError as exc:  # truncated, or its header damaged
        raise ValueError(f"not a readable HDF5 file ({exc})") from None
    except (KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"damaged ({type(exc).__name__}: {exc})") from None


def open_dataset(path: str | Path) -> H5Dataset:
    """Open a finalized dataset for reading (use as a context manager).

    Raises :class:`~facehd.errors.InputFileError` for a missing, unreadable, unfinished or
    non-facehd file, and for one whose tables are not those its attributes declare (a field
    missing, another number of rows than ``n_samples``, another shape or dtype): the file and
    the problem are named before any value is read.
    """
    return H5Dataset(path)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify`."""

    path: Path
    """The checked file."""
    ok: bool
    """Whether no problem was found."""
    schema: str | None
    """The ``schema`` attribute (None when absent)."""
    n_samples: int | None
    """Declared number of samples (None when unknown)."""
    fields: tuple[str, ...]
    """Declared field names (without ``sample_id``)."""
    problems: tuple[str, ...]
    """One line per problem found."""

    def summary(self) -> str:
        head = f"{self.path}: schema {self.schema}, {self.n_samples} samples"
        if self.ok:
            return head + ", OK"
        return head + f", {len(self.problems)} problem(s):\n  " + "\n  ".join(self.problems)


def name_rows(rows: Sequence[int], ids: Sequence[str], limit: int = 5) -> str:
    """``sample 3 ('s003')``, ``samples 3 ('s003'), 9 ('s009') and 4 more``: rows of a dataset
    by index and id (the id when it could be read)."""
    named = [f"{r} ({ids[r]!r})" if r < len(ids) else str(r) for r in map(int, rows[:limit])]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ("sample " if len(rows) == 1 else "samples ") + ", ".join(named) + more


def _layout_problems(f: h5py.File, specs: Mapping[str, FieldSpec], n: int | None) -> list[str]:
    """What is wrong with the tables of an open dataset file against its declared ``specs`` and
    ``n`` rows (``n`` None: unknown): a declared field missing or no table, another number of
    rows, sample shape or dtype. Reads the tables' metadata only, not their values."""
    problems: list[str] = []
    rows: dict[str, int] = {}
    for name, spec in {ID_FIELD: FieldSpec((), STR), **specs}.items():
        if name not in f:
            problems.append(f"field {name!r} missing")
            continue
        ds = f[name]
        if not isinstance(ds, h5py.Dataset):
            problems.append(f"{name!r} is not a dataset")
            continue
        rows[name] = int(ds.shape[0]) if ds.shape else 0
        if ds.shape[1:] != spec.shape:
            problems.append(
                f"field {name!r} has sample shape {ds.shape[1:]}, expected {spec.shape}"
            )
        if spec.dtype == STR:
            if ds.dtype.kind != "S":
                problems.append(f"field {name!r} has dtype {ds.dtype}, expected strings")
        elif ds.dtype != np.dtype(spec.dtype):
            problems.append(f"field {name!r} has dtype {ds.dtype}, expected {spec.dtype}")
    wrong = {name: m for name, m in rows.items() if n is not None and m != n}
    if len(wrong) > 1 and len(wrong) == len(rows) and len(set(wrong.values())) == 1:
        # every table agrees with the others, the attribute not with them
        (m,) = set(wrong.values())
        problems.insert(0, f"attribute 'n_samples' is {n}, the tables hold {m} rows")
    else:
        problems[:0] = [f"field {k!r} has ({m},) rows, expected {n}" for k, m in wrong.items()]
    return problems


def _damaged_shards(shard_dir: Path) -> list[str]:
    """One line per shard of an unfinished build that cannot be read back (:func:`_shard_ids`),
    naming it and why: a rerun sets it aside and processes its samples again."""
    out = []
    for shard in sorted(shard_dir.glob("shard-*.h5")):
        if not _SHARD_NAME.match(shard.name):
            continue
        try:
            _shard_ids(shard)
        except ValueError as exc:
            out.append(
                f"shard {shard_dir.name}/{shard.name} is damaged, {exc}: rerunning the same "
                "command sets it aside and processes its samples again"
            )
    return out


def verify(
    path: str | Path, *, expected_schema: str | None = None, check_values: bool = True
) -> VerifyReport:
    """Check a dataset file; never raises for a bad file (the problems are in the report).

    Checks: the file opens; the attributes of a finalized facehd dataset are present (schema,
    fields, n_samples, complete, not a shard); ``expected_schema`` when given; every declared
    field exists with shape ``(N, *shape)`` and a matching dtype; sample ids are non-empty, unique
    and sorted; and with ``check_values``, every stored chunk reads back (checksums) and float
    fields hold no NaN/inf unless declared ``nan_ok``.
    """
    path = Path(path)
    problems: list[str] = []
    schema: str | None = None
    n: int | None = None
    names: tuple[str, ...] = ()

    def report() -> VerifyReport:
        return VerifyReport(path, not problems, schema, n, names, tuple(problems))

    if path.is_dir():
        if path.name.endswith(".shards"):
            dataset = path.with_name(path.name[: -len(".shards")])
            problems.append(
                f"is the shards folder of an unfinished build of {dataset.name}, not a dataset: "
                "rerun the same command to resume that build, then verify the .h5 file"
            )
            problems.extend(_damaged_shards(path))
        else:
            problems.append("is a folder, not a facehd dataset (give the .h5 dataset file)")
        return report()
    if not path.is_file():
        shards = shards_dir(path)
        if shards.is_dir():
            problems.append(
                f"file does not exist: its build is unfinished (its shards are in {shards.name}/); "
                "rerun the same command to resume it and write the file"
            )
            problems.extend(_damaged_shards(shards))
        else:
            problems.append("file does not exist")
        return report()
    try:
        f = h5py.File(path, "r", rdcc_nbytes=16 << 20)
    except OSError as exc:
        problems.append(f"not a readable HDF5 file ({exc})")
        return report()
    with f:
        a = f.attrs
        for key in ("facehd_h5io", "schema", "fields", "n_samples", "complete"):
            if key not in a:
                problems.append(f"attribute {key!r} missing")
        if "facehd_h5io" in a and int(a["facehd_h5io"]) != FORMAT_VERSION:
            problems.append(
                f"layout version {int(a['facehd_h5io'])}, this facehd reads {FORMAT_VERSION}"
            )
        if "schema" in a:
            schema = str(a["schema"])
            if expected_schema is not None and schema != expected_schema:
                problems.append(f"schema is {schema!r}, expected {expected_schema!r}")
        if "complete" in a and not bool(a["complete"]):
            problems.append("dataset is not complete (not finalized)")
        if bool(a.get("shard", False)):
            problems.append("file is a shard of an unfinished build, not a finalized dataset")
        if "n_samples" in a:
            n = int(a["n_samples"])
        specs: dict[str, FieldSpec] = {}
        if "fields" in a:
            try:
                specs = {k: FieldSpec.from_json(v) for k, v in json.loads(a["fields"]).items()}
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"attribute 'fields' is not a valid field table ({exc})")
        names = tuple(specs)
        all_specs = {ID_FIELD: FieldSpec((), STR), **specs}
        problems.extend(_layout_problems(f, specs, n))
        ids: list[str] = []
        extra = sorted(set(f.keys()) - set(all_specs))
        if extra:
            problems.append(f"undeclared datasets {extra}")
        if ID_FIELD in f and isinstance(f[ID_FIELD], h5py.Dataset):
            try:
                ids = _decode_strings(f[ID_FIELD][()])
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"sample ids unreadable ({exc})")
                ids = []
            if any(not s for s in ids):
                problems.append("empty sample id")
            if len(set(ids)) != len(ids):
                dup = sorted({s for s in ids if ids.count(s) > 1})[:5]
                problems.append(f"duplicate sample ids, e.g. {dup}")
            elif ids != sorted(ids):
                problems.append("sample ids are not sorted")
        if check_values:
            for name, spec in specs.items():
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    continue
                ds = f[name]
                if ds.shape[0] == 0:
                    continue
                bad = 0
                bad_rows: list[int] = []
                try:
                    for start, data in _value_blocks(ds, spec):
                        if spec.is_float and not spec.nan_ok:
                            finite = np.isfinite(data).reshape(len(data), -1)
                            bad += int(np.count_nonzero(~finite))
                            bad_rows.extend(start + np.flatnonzero(~finite.all(axis=1)))
                except OSError as exc:
                    problems.append(f"field {name!r}: data unreadable, file corrupt ({exc})")
                    continue
                if bad:
                    problems.append(
                        f"field {name!r}: {bad} NaN/inf values where none are allowed, in "
                        f"{name_rows(bad_rows, ids)}"
                    )
    return report()


# --------------------------------------------------------------------------------------------
# failures.csv
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One input that could not be processed."""

    sample_id: str
    source: str
    """Path of the input file, as the caller gave it."""
    reason: str
    """What went wrong, in words."""


def read_failures(failures_csv: str | Path, output: str | Path | None = None) -> list[Failure]:
    """Rows of a ``failures.csv``, optionally only those of the dataset file ``output``."""
    path = Path(failures_csv)
    if not path.is_file():
        return []
    rows = _failure_rows(path)
    name = None if output is None else Path(output).name
    return [
        Failure(r["sample_id"], r["source"], r["reason"])
        for r in rows
        if name is None or r["output"] == name
    ]


def _failure_rows(path: Path) -> list[dict[str, str]]:
    """The rows of an existing ``failures.csv`` (every output's), checked; InputFileError naming
    it when it is not one."""
    # utf-8-sig: a file saved again by a spreadsheet starts with a byte-order mark
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or list(reader.fieldnames) != list(FAILURE_COLUMNS):
                raise InputFileError(
                    path, f"not a facehd failures file (columns {FAILURE_COLUMNS})"
                )
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"not a readable failures file ({exc})") from None


def _rewrite_failures(path: Path, output_name: str, failures: Iterable[Failure]) -> None:
    """Replace this output's rows of ``path`` (atomically, under a lock), keep the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        others: list[dict[str, str]] = []
        if path.is_file():
            others = [r for r in _failure_rows(path) if r.get("output") != output_name]
        mine = [
            {
                "output": output_name,
                "sample_id": f.sample_id,
                "source": f.source,
                "reason": f.reason,
            }
            for f in sorted(failures, key=lambda f: f.sample_id)
        ]
        rows = sorted(others + mine, key=lambda r: (r["output"], r["sample_id"]))
        if not rows:
            path.unlink(missing_ok=True)
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(FAILURE_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------------


class _SourceUnreadable(Exception):
    """A finished part of a build (a shard, or the output it adds to) could not be read back
    while merging: not an OSError, so that it is not taken for a failed write."""

    def __init__(self, source: Path, error: BaseException) -> None:
        super().__init__(f"{source}: {error}")
        self.source = source
        self.error = error


class OutputWriteError(FacehdError):
    """The dataset's own files could not be written (disk full, folder gone ...): the build
    stops, naming the file; what was written before is kept and a rerun resumes. Not a failure
    of the input being processed, so :func:`process_items` does not record it as one."""


def _is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or HDF5's wrapping of one) says the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left" in text or "errno = 28" in text or "Disk quota exceeded" in text


def _write_error(path: Path, out: Path, exc: OSError) -> OutputWriteError:
    """The error of a dataset file that could not be written (``exc``)."""
    if _is_disk_full(exc):
        return OutputWriteError(
            f"{path}: disk full writing this part of {out}; free space and rerun the same "
            "command to resume (what was written before is kept)"
        )
    return OutputWriteError(
        f"{path}: cannot write this part of {out} ({exc.strerror or exc}); rerun the same "
        "command to resume once it can be written"
    )


def _other_file(path: Path) -> str:
    """What an existing output file is when it is no facehd dataset (``not an HDF5 file``, ``an
    HDF5 file of another program``), which a build must not replace; empty for a dataset, or
    HDF5 that does not open (a damaged dataset)."""
    try:
        if not h5py.is_hdf5(path):
            return "not an HDF5 file"
        with h5py.File(path, "r") as f:
            return "" if "facehd_h5io" in f.attrs else "an HDF5 file of another program"
    except OSError:
        return ""


def shards_dir(path: str | Path) -> Path:
    """The folder beside the dataset ``path`` where its build keeps its shards
    (``<name>.shards``)."""
    path = Path(path)
    return path.with_name(path.name + ".shards")


def check_dataset_output(path: str | Path) -> Path:
    """Check, before any work, that the dataset ``path`` (and its ``.shards`` folder beside it)
    can be written: not a folder, not a file other than a facehd dataset, its folder a folder
    that can be made and written in.

    Raises
    ------
    InputFileError
        naming the path and the problem.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, "is a folder: the output is the .h5 dataset file to write")
    if not path.name or path.name in (".", ".."):
        raise InputFileError(path, "give the .h5 dataset file to write")
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        raise InputFileError(folder, f"is a file, not a folder: {path} cannot be written inside it")
    check_output_folder(path.parent, "dataset")
    other = _other_file(path) if path.is_file() else ""
    if other:  # no build replaces it (see ShardedDatasetWriter): said before the work
        raise InputFileError(
            path, f"exists and is not a facehd dataset ({other}); choose another output"
        )
    shards = shards_dir(path)
    if shards.exists() and not shards.is_dir():
        raise InputFileError(
            shards, f"is a file where the build of {path.name} keeps its shards; move it away"
        )
    return path


@dataclass(frozen=True)
class FinalizeResult:
    """Result of :meth:`ShardedDatasetWriter.finalize`."""

    path: Path
    """The dataset file written."""
    n_samples: int
    """Samples in it."""
    n_failed: int
    """Inputs recorded in ``failures.csv`` for this output."""
    failures_path: Path
    """Where failures are recorded (the file is absent when there are none)."""


class ShardedDatasetWriter:
    """Write a dataset sample by sample, resumably (see the module docstring).

    Parameters
    ----------
    out_path : the final ``.h5`` file. Shards go to ``<out_path>.shards/``.
    schema : schema name and version, e.g. ``"facehd.priors/1"``.
    attrs : the caller's attributes (units, model name, resolved config as dict ...). dict and
        list values are stored as JSON strings and decoded by the reader.
    fields : name -> :class:`FieldSpec` or ``(shape, dtype[, nan_ok])``; ``sample_id`` is implicit.
    shard_size : samples per shard (the most a killed build can lose).
    compression : ``"gzip"`` (default, level ``compression_opts``), ``"lzf"`` or None.
    failures_path : default ``failures.csv`` in the output's folder.
    overwrite : discard existing shards, output and failures of this output and start afresh.
    retry_failures : whether :meth:`pending` returns ids that failed in an earlier run.

    Usage::

        with ShardedDatasetWriter(out, "facehd.photos/1", attrs, fields) as w:
            for item in items:
                if w.is_done(item.id): continue
                try: w.add(item.id, compute(item))
                except FacehdError as e: w.fail(item.id, item.path, str(e))
            w.finalize()

    or let :func:`process_items` drive it, with a process pool.
    """

    def __init__(
        self,
        out_path: str | Path,
        schema: str,
        attrs: Mapping[str, Any],
        fields: Mapping[str, FieldSpec | tuple],
        *,
        shard_size: int = 64,
        compression: str | None = "gzip",
        compression_opts: int | None = 4,
        chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
        failures_path: str | Path | None = None,
        overwrite: bool = False,
        retry_failures: bool = True,
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        if compression not in ("gzip", "lzf", None):
            raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
        if not schema or not isinstance(schema, str):
            raise ValueError("schema must be a non-empty string, e.g. 'facehd.priors/1'")
        self.out_path = check_dataset_output(out_path)
        self.schema = schema
        self.fields = _normalise_fields(fields)
        self._attrs, self._json_attrs = _normalise_attrs(attrs)
        self.shard_size = int(shard_size)
        self.compression = compression
        self.compression_opts = compression_opts if compression == "gzip" else None
        self.chunk_bytes = int(chunk_bytes)
        self.retry_failures = retry_failures
        self.shard_dir = shards_dir(self.out_path)
        self.failures_path = (
            Path(failures_path) if failures_path else self.out_path.with_name("failures.csv")
        )
        self.problems: list[str] = []
        """Things found and repaired when opening (corrupt shards set aside ...)."""
        self._buffer: list[tuple[str, dict[str, Any]]] = []
        self._closed = False
        # the output is this writer's until it is closed: a second build into it would remove
        # the temporary shards of this one and merge over it
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(locked(self.out_path, wait=False))
        except LockHeld as held:
            raise FacehdError(
                f"{self.out_path}: another facehd build is writing this dataset "
                f"({held.holder}); wait for it to end (or stop it), or choose another output"
            ) from None
        try:
            self._open(overwrite)
        except BaseException:
            self._closed = True
            self._lock.close()
            raise

    def _open(self, overwrite: bool) -> None:
        """Clear the output for ``overwrite``, and read what earlier runs finished."""
        if overwrite:
            other = _other_file(self.out_path) if self.out_path.is_file() else None
            if other:
                raise InputFileError(
                    self.out_path,
                    f"is not a facehd dataset ({other}): overwrite replaces only a dataset; "
                    "move the file away or choose another output",
                )
            shutil.rmtree(self.shard_dir, ignore_errors=True)
            self.out_path.unlink(missing_ok=True)
            _rewrite_failures(self.failures_path, self.out_path.name, [])
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_out = self.out_path.with_name(self.out_path.name + ".tmp")
        self._tmp_out.unlink(missing_ok=True)
        self._manifest = {
            "facehd_h5io": FORMAT_VERSION,
            "schema": self.schema,
            "fields": {k: v.to_json() for k, v in self.fields.items()},
            "attrs": self._attrs,
        }
        # Sources of finished samples: the existing output first, then shards in order.
        self._sources: list[Path] = []
        self._done: set[str] = set()
        if self.out_path.exists():
            self._check_compatible(self.out_path)
            self._sources.append(self.out_path)
            with open_dataset(self.out_path) as existing:
                self._done.update(existing.sample_ids)
        self._open_shard_dir()
        self._failures: dict[str, Failure] = {
            f.sample_id: f
            for f in read_failures(self.failures_path, self.out_path)
            if f.sample_id not in self._done
        }

    # -- opening ---------------------------------------------------------------------------

    def _manifest_of_file(self, path: Path) -> dict[str, Any]:
        with h5py.File(path, "r") as f:
            a = f.attrs
            attrs = {}
            for key in sorted(a):
                if key in RESERVED_ATTRS:
                    continue
                v = a[key]
                attrs[key] = (
                    v.decode()
                    if isinstance(v, bytes)
                    else (v.item() if isinstance(v, np.generic) else v)
                )
            return {
                "facehd_h5io": int(a["facehd_h5io"]),
                "schema": str(a["schema"]),
                "fields": json.loads(a["fields"]),
                "attrs": attrs,
            }

    def _difference(self, other: Mapping[str, Any]) -> tuple[str, str | None, bool] | None:
        """The first difference of the manifest ``other`` from this writer's: its words, the
        dotted name of the attribute (None for the format, schema or fields) and whether
        ``other`` lacks it; None when they agree."""
        mine = json.loads(json.dumps(self._manifest, sort_keys=True))
        theirs = json.loads(json.dumps(other, sort_keys=True))
        for key in ("facehd_h5io", "schema", "fields"):
            if mine[key] != theirs.get(key):
                where, now, there = _where_differ(mine[key], theirs.get(key, _ABSENT), key)
                text = f"{where} differs ({_brief(there)} there, {_brief(now)} now)"
                return text, None, there is _ABSENT
        a, b = mine["attrs"], theirs.get("attrs", {})
        for key in sorted(set(a) | set(b)):
            if not _same_attr(a.get(key), b.get(key)):
                where, now, there = _where_differ(a.get(key, _ABSENT), b.get(key, _ABSENT), key)
                text = f"setting {where!r} differs ({_brief(there)} there, {_brief(now)} now)"
                return text, where, there is _ABSENT
        return None

    def _check_same_settings(self, other: Mapping[str, Any], path: Path, made: str) -> None:
        """Raise :class:`SettingsDiffer` when the manifest ``other`` (of ``path``) differs from
        this writer's, its message ``made`` followed by the difference."""
        diff = self._difference(other)
        if diff is not None:
            text, setting, absent_there = diff
            raise SettingsDiffer(
                f"{made} ({text}); write to another output, or start afresh with --overwrite",
                path,
                setting,
                absent_there,
            )

    def _check_compatible(self, path: Path) -> None:
        other = _other_file(path)
        if other:
            raise InputFileError(
                path, f"exists and is not a facehd dataset ({other}); choose another output"
            )
        try:
            other = self._manifest_of_file(path)
        except (OSError, KeyError, ValueError) as exc:
            raise InputFileError(
                path, f"exists but is not a readable facehd dataset ({exc}); remove it or overwrite"
            ) from exc
        self._check_same_settings(other, path, f"{path}: made with other settings")

    def _open_shard_dir(self) -> None:
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = self.shard_dir / "manifest.json"
        text = json.dumps(self._manifest, sort_keys=True, indent=1)
        if manifest_path.is_file():
            try:
                other = json.loads(manifest_path.read_text())
            except ValueError as exc:
                raise InputFileError(manifest_path, f"unreadable manifest ({exc})") from exc
            self._check_same_settings(
                other, manifest_path, f"{self.shard_dir}: shards made with other settings"
            )
        else:
            tmp = manifest_path.with_suffix(".json.tmp")
            tmp.write_text(text)
            os.replace(tmp, manifest_path)
        for leftover in self.shard_dir.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        self._next_shard = 0
        for shard in sorted(self.shard_dir.glob("shard-*.h5")):
            m = _SHARD_NAME.match(shard.name)
            if not m:
                continue
            self._next_shard = max(self._next_shard, int(m.group(1)) + 1)
            try:
                ids = _shard_ids(shard, self.fields)
            except ValueError as exc:  # its samples are not done: this build does them again
                self._set_aside(shard, str(exc))
                continue
            new = [s for s in ids if s not in self._done]
            if not new:
                # Left over from a build that was finalized before the shards were removed.
                shard.unlink()
                continue
            if len(new) != len(ids):
                raise FacehdError(
                    f"{shard}: holds samples that are already in {self.out_path} or another shard; "
                    "remove the shard folder or overwrite"
                )
            self._done.update(ids)
            self._sources.append(shard)

    def _set_aside(self, shard: Path, why: str) -> Path:
        """Rename a shard that cannot be read to ``shard-NNNNNN.corrupt`` (kept for a look, no
        longer merged), and say so in :attr:`problems` and an :class:`InputFileWarning`."""
        bad = shard.with_suffix(".corrupt")
        os.replace(shard, bad)
        problem = (
            f"{shard}: damaged shard, {why}; set aside as {bad.name}, its samples are "
            "processed again"
        )
        self.problems.append(problem)
        warnings.warn(InputFileWarning(problem), stacklevel=3)
        return bad

    # -- state -----------------------------------------------------------------------------

    @property
    def done_ids(self) -> frozenset[str]:
        """Ids already written (in the output, in shards or in the buffer)."""
        return frozenset(self._done)

    @property
    def failures(self) -> tuple[Failure, ...]:
        """This output's current failures, by id."""
        return tuple(self._failures[k] for k in sorted(self._failures))

    def is_done(self, sample_id: str) -> bool:
        """Whether ``sample_id`` is already written."""
        return sample_id in self._done

    def done_values(self, name: str) -> dict[str, Any]:
        """One field of the samples already written by an earlier run (the output and the
        shards), by sample id; string fields as ``str``. Samples added since are not included."""
        spec = self.fields[name]
        out: dict[str, Any] = {}
        for source in self._sources:
            try:
                with h5py.File(source, "r") as f:
                    ids = _decode_strings(f[ID_FIELD][()])
                    raw = f[name][()]
            except OSError as exc:
                raise self._unreadable_source(source, exc) from None
            values = _decode_strings(raw) if spec.dtype == STR else list(raw)
            out.update(zip(ids, values, strict=True))
        return out

    def pending(self, sample_ids: Iterable[str]) -> list[str]:
        """The ids still to process, in the given order (earlier failures included when
        ``retry_failures``)."""
        out = []
        for s in sample_ids:
            if s in self._done:
                continue
            if not self.retry_failures and s in self._failures:
                continue
            out.append(s)
        return out

    # -- writing ---------------------------------------------------------------------------

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check and convert one sample's values to the declared shapes and dtypes.

        Raises ValueError naming the field and the problem (missing/extra field, wrong shape,
        values that do not fit the dtype, NaN/inf where not allowed).
        """
        missing = sorted(set(self.fields) - set(values))
        extra = sorted(set(values) - set(self.fields))
        if missing or extra:
            raise ValueError(f"sample fields: missing {missing}, unexpected {extra}")
        out: dict[str, Any] = {}
        for name, spec in self.fields.items():
            v = values[name]
            if spec.dtype == STR:
                if not isinstance(v, str) or "\x00" in v:
                    raise ValueError(f"field {name!r}: expected a str without NUL, got {v!r}")
                out[name] = v
                continue
            arr = np.asarray(v)
            if arr.shape != spec.shape:
                raise ValueError(f"field {name!r}: expected shape {spec.shape}, got {arr.shape}")
            target = np.dtype(spec.dtype)
            if arr.dtype.kind == "f" and target.kind in "iub" and arr.size:
                if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
                    raise ValueError(f"field {name!r}: non-integer values for dtype {target}")
            if target.kind in "iu" and arr.size and arr.dtype.kind in "iuf":
                info = np.iinfo(target)
                if arr.min() < info.min or arr.max() > info.max:
                    raise ValueError(f"field {name!r}: values outside the range of {target}")
            conv = arr.astype(target, copy=True)
            if spec.is_float and not spec.nan_ok and not np.all(np.isfinite(conv)):
                raise ValueError(f"field {name!r}: NaN or inf values")
            out[name] = conv
        return out

    def add(self, sample_id: str, values: Mapping[str, Any]) -> None:
        """Add one finished sample (written with the next shard)."""
        self._check_open()
        _check_id(sample_id)
        if sample_id in self._done:
            raise ValueError(f"sample {sample_id!r} is already written")
        checked = self.validate(values)
        self._buffer.append((sample_id, checked))
        self._done.add(sample_id)
        if self._failures.pop(sample_id, None) is not None:
            _rewrite_failures(self.failures_path, self.out_path.name, self._failures.values())
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def fail(self, sample_id: str, source: str | Path, reason: str) -> None:
        """Record that ``sample_id`` (from file ``source``) could not be processed, and why."""
        self._check_open()
        _check_id(sample_id)
        if sample_id in self._done:
            raise ValueError(f"sample {sample_id!r} is already written; cannot mark it failed")
        reason = printable(" ".join(str(reason).split())) or "unknown error"
        self._failures[sample_id] = Failure(sample_id, printable(source), reason)
        _rewrite_failures(self.failures_path, self.out_path.name, self._failures.values())

    def forget_failures(self, keep: Iterable[str]) -> None:
        """Drop the recorded failures of ids not in ``keep`` (inputs no longer there: a bad
        file deleted is no longer a failure of this output)."""
        self._check_open()
        keep = set(keep)
        gone = [k for k in self._failures if k not in keep]
        for k in gone:
            del self._failures[k]
        if gone:
            _rewrite_failures(self.failures_path, self.out_path.name, self._failures.values())

    def flush(self) -> Path | None:
        """Write the buffered samples as one shard (atomically); returns its path."""
        if not self._buffer:
            return None
        buffer = self._buffer
        ids = [s for s, _ in buffer]
        path = self.shard_dir / f"shard-{self._next_shard:06d}.h5"
        tmp = path.with_name(path.name + ".tmp")

        def columns(name: str, start: int, stop: int) -> Any:
            rows = [values[name] for _, values in buffer[start:stop]]
            return rows if self.fields[name].dtype == STR else np.stack(rows)

        # shards: lzf (fast), the merge recompresses
        self._write(tmp, path, ids, columns, "lzf" if self.compression else None, None, True)
        fsync_folder(self.shard_dir)
        self._next_shard += 1
        self._sources.append(path)
        self._buffer = []
        return path

    def _write(
        self,
        tmp: Path,
        dest: Path,
        ids: list[str],
        columns: Any,
        compression: Any,
        compression_opts: Any,
        shard: bool,
    ) -> None:
        """Write a shard or the merged output to ``tmp`` (:func:`_write_file`) and move it to
        ``dest``; a file that cannot be written (a full disk) is removed and the build stops
        with :class:`OutputWriteError` naming it."""
        try:
            _write_file(
                tmp,
                schema=self.schema,
                fields=self.fields,
                attrs=self._attrs,
                json_attrs=self._json_attrs,
                sample_ids=ids,
                columns=columns,
                compression=compression,
                compression_opts=compression_opts,
                chunk_bytes=self.chunk_bytes,
                shard=shard,
            )
            os.replace(tmp, dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _write_error(tmp, self.out_path, exc) from exc

    def finalize(self, *, keep_shards: bool = False) -> FinalizeResult:
        """Merge everything written so far into ``out_path``, sorted by sample id.

        The output is written to ``<out>.tmp`` and renamed, so it appears only when complete.
        Afterwards the shard folder is removed (unless ``keep_shards``); the writer is closed.
        """
        self._check_open()
        try:
            return self._finalize(keep_shards)
        finally:  # the writer is done, merged or not: a rerun resumes from the shards
            self._closed = True
            self._lock.close()

    def _finalize(self, keep_shards: bool) -> FinalizeResult:
        self.flush()
        try:
            ids = self._merge()
        except _SourceUnreadable as bad:  # a read, not a write, failed: say which file
            self._tmp_out.unlink(missing_ok=True)
            raise self._unreadable_source(bad.source, bad.error) from None
        fsync_folder(self.out_path.parent)
        if not keep_shards:
            shutil.rmtree(self.shard_dir, ignore_errors=True)
        return FinalizeResult(self.out_path, len(ids), len(self._failures), self.failures_path)

    def _unreadable_source(self, source: Path, error: BaseException) -> FacehdError:
        """The error of a finished part of this build that cannot be read back: a shard
        (damaged since the writer opened) is set aside so that a rerun processes its samples
        again; the finished output this build adds to is named as damaged."""
        if source == self.out_path:
            return InputFileError(
                source,
                f"the finished dataset this build adds to cannot be read ({error}): it is "
                "damaged (facehd verify says more); rebuild it with --overwrite",
            )
        bad = source.with_suffix(".corrupt")
        with contextlib.suppress(OSError):
            os.replace(source, bad)
        return FacehdError(
            f"{source}: a shard of {self.out_path} cannot be read ({error}): it is damaged and "
            f"was set aside as {bad.name}; rerun the same command to process its samples again"
        )

    def _merge(self) -> list[str]:
        """Write the output from the sources (:meth:`finalize`); its sample ids. A source that
        cannot be read raises :class:`_SourceUnreadable`."""
        entries: list[tuple[str, int, int]] = []  # (id, source index, row)
        handles: list[h5py.File] = []

        def read(k: int, name: str, rows: Any) -> np.ndarray:
            try:
                return handles[k][name][rows]
            except OSError as exc:
                raise _SourceUnreadable(self._sources[k], exc) from None

        try:
            for k, src in enumerate(self._sources):
                try:
                    f = h5py.File(src, "r", rdcc_nbytes=64 << 20)
                except OSError as exc:
                    raise _SourceUnreadable(src, exc) from None
                handles.append(f)
                ids = _decode_strings(read(k, ID_FIELD, ()))
                entries.extend((s, k, r) for r, s in enumerate(ids))
            entries.sort()
            ids = [e[0] for e in entries]
            for a, b in zip(ids, ids[1:], strict=False):
                if a == b:
                    raise FacehdError(f"sample {a!r} appears twice in {self.shard_dir}")
            src_of = np.array([e[1] for e in entries], dtype=np.int64)
            row_of = np.array([e[2] for e in entries], dtype=np.int64)

            def columns(name: str, start: int, stop: int) -> Any:
                spec = self.fields[name]
                s, r = src_of[start:stop], row_of[start:stop]
                if spec.dtype == STR:
                    out_s: list[str] = [""] * (stop - start)
                    for k in np.unique(s):
                        sel = np.nonzero(s == k)[0]
                        vals = _decode_strings(read(k, name, np.sort(r[sel])))
                        for j, v in zip(sel[np.argsort(r[sel])], vals, strict=True):
                            out_s[j] = v
                    return out_s
                out = np.empty((stop - start, *spec.shape), dtype=spec.dtype)
                for k in np.unique(s):
                    sel = np.nonzero(s == k)[0]
                    order = np.argsort(r[sel])
                    out[sel[order]] = read(k, name, r[sel][order])
                return out

            self._tmp_out.unlink(missing_ok=True)
            self._write(
                self._tmp_out,
                self.out_path,
                ids,
                columns,
                self.compression,
                self.compression_opts,
                False,
            )
        finally:
            for f in handles:
                f.close()
        return ids

    def close(self) -> None:
        """Flush the buffer as a shard and stop accepting samples (no merge); the output is
        then free for another build."""
        if not self._closed:
            try:
                self.flush()
            finally:
                self._closed = True
                self._lock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"writer of {self.out_path} is closed")

    def __enter__(self) -> ShardedDatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Finished samples are kept even when the build stops on an error or Ctrl-C.
        if exc_type is None:
            self.close()
            return
        # already stopping: the buffer that cannot be written (a full disk) is lost like that
        # of a killed run, and the error that stopped the build is the one reported
        with contextlib.suppress(OutputWriteError):
            self.close()


# --------------------------------------------------------------------------------------------
# Driving a build
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkItem:
    """One input of a build: its sample id, source file and whatever the task needs."""

    sample_id: str
    source: str
    """The input's path (recorded in ``failures.csv``)."""
    payload: Any = None
    """Extra picklable data passed to the task."""


@dataclass(frozen=True)
class RunSummary:
    """Result of :func:`process_items`."""

    n_items: int
    """Items given."""
    n_skipped: int
    """Items already written by an earlier run."""
    n_written: int
    """Items written by this run."""
    n_failed: int
    """Items that failed in this run."""


def name_some(names: Sequence[str], limit: int = 5) -> str:
    """``a, b, c and N more``: at most ``limit`` of ``names``, for a message."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def changed_inputs(writer: ShardedDatasetWriter, items: Sequence[WorkItem]) -> list[WorkItem]:
    """The items done by an earlier run whose input file changed since (its SHA-256 differs
    from the stored ``source_sha256``): their samples are still those of the old file."""
    if not writer.done_ids or "source_sha256" not in writer.fields:
        return []
    stored = writer.done_values("source_sha256")
    return [
        it
        for it in items
        if it.sample_id in stored
        and Path(it.source).is_file()
        and file_sha256(it.source) != stored[it.sample_id]
    ]


def inputs_done_under_other_ids(
    writer: ShardedDatasetWriter, items: Sequence[WorkItem]
) -> list[tuple[WorkItem, str]]:
    """``(item, stored id)`` of the new items (ids not written yet) whose input file an earlier
    run wrote under another sample id (the same file by its real path, in the stored ``source``
    field): ids made relative to an input folder change when the run is given another folder
    above or below the same files, and the files would be stored twice."""
    if not writer.done_ids or "source" not in writer.fields:
        return []
    stored = {os.path.realpath(src): sid for sid, src in writer.done_values("source").items()}
    done = writer.done_ids
    out = []
    for it in items:
        if it.sample_id in done:
            continue
        sid = stored.get(os.path.realpath(str(it.source)))
        if sid is not None and sid != it.sample_id:
            out.append((it, sid))
    return out


def pending_items(
    writer: ShardedDatasetWriter, items: Sequence[WorkItem]
) -> tuple[list[WorkItem], int, int]:
    """``(todo, n_skipped, n_failed)`` of a run over ``items`` (all of its inputs).

    Failures recorded for inputs no longer among ``items`` are dropped (a bad file deleted is
    no longer a failure). An item whose id cannot name a sample (edge spaces, a file name in
    another encoding) is recorded as failed under its quoted form (:func:`quoted_id`), naming
    the file, and the others go on; ``n_failed`` counts those.
    """
    ids = [it.sample_id for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({s for s in ids if ids.count(s) > 1})[:5]
        raise ValueError(f"duplicate sample ids among the items, e.g. {dup}")
    unnamed = {s: why for s in ids if (why := id_problem(s)) is not None}
    named = [s for s in ids if s not in unnamed]
    writer.forget_failures(named + [quoted_id(s) for s in unnamed])
    for it in items:
        if it.sample_id in unnamed:
            why = f"{unnamed[it.sample_id]}; rename the file"
            writer.fail(quoted_id(it.sample_id), it.source, why)
    todo_ids = set(writer.pending(named))
    todo = [it for it in items if it.sample_id in todo_ids]
    return todo, len(named) - len(todo), len(unnamed)


def process_items(
    writer: ShardedDatasetWriter,
    items: Sequence[WorkItem],
    fn: Callable[[WorkItem], Mapping[str, Any]],
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    initializer: Callable[[], None] | None = None,
) -> RunSummary:
    """Run ``fn`` on every item not yet written and add its result (or failure) to ``writer``.

    ``fn(item)`` returns the sample's field values; any exception it raises is recorded as the
    item's failure and the build continues. The items run by :func:`facehd.pools.run_tasks`
    (``workers`` processes; ``initializer`` once in each): a worker that dies fails its own item
    alone (:data:`facehd.pools.DIED`), and :class:`facehd.pools.WorkersDieAtStart` is
    raised when none can start. ``progress(done, total)`` is called once before the first item
    and after each item of this run. The caller finalizes the
    writer.
    """
    todo, n_skipped, failed = pending_items(writer, items)
    written = count = 0
    if progress is not None:
        progress(0, len(todo))

    def record(i: int, outcome: Any) -> None:
        nonlocal written, failed, count
        item = todo[i]
        reason = outcome.reason if isinstance(outcome, TaskFailed) else None
        if reason is None:
            try:
                writer.add(item.sample_id, outcome)
                written += 1
            except OutputWriteError:
                raise  # the output's problem, not this item's: the build stops
            except ValueError as bad:
                reason = failure_reason(bad)
        if reason is not None:
            writer.fail(item.sample_id, item.source, reason)
            failed += 1
        count += 1
        if progress is not None:
            progress(count, len(todo))

    run_tasks(fn, todo, record, workers=workers, initializer=initializer)
    return RunSummary(len(items), n_skipped, written, failed)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content (recorded as the source hash of a sample)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()

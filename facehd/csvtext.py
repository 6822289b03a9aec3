"""How facehd writes CSV files: one cell format for every CSV the project writes, and files
written to a temporary sibling then renamed, so an interrupted run never leaves half a file.

:func:`atomic_write_bytes` is that one way of writing a file for the whole project (meshes,
landmarks, reports); :func:`atomic_write_text` writes text through it."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LockHeld",
    "atomic_write_bytes",
    "atomic_write_text",
    "format_value",
    "fsync_folder",
    "locked",
    "write_rows",
    "write_table",
]


def format_value(value: Any) -> str:
    """CSV text of a value: full-precision floats (``repr``), empty for None and NaN,
    ``true``/``false`` for booleans.

    NumPy scalars are written as the Python numbers they hold (``repr`` of ``np.float64`` would
    write ``np.float64(...)``)."""
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class LockHeld(Exception):
    """:func:`locked` without waiting found the lock held; ``holder`` says by whom."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def locked(path: str | Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock for changing ``path``, taken on a hidden ``.<name>.lock``
    beside it (no-op where ``fcntl`` is missing), which names the holder (``pid N``) while held.
    Without ``wait``, a lock held elsewhere raises :class:`LockHeld` instead of blocking. The lock
    file stays: removing it would let a process that opened it before the removal and one that
    creates it anew both hold a lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            raise LockHeld(fh.read().strip() or "another process") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a file renamed into it) to disk, where the system allows it:
    after a crash of the machine the new name is there, not only the file's bytes."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The bytes reach the disk (``fsync``) before the file takes its name, so readers never see a
    partially written file under the final name, and the folder is flushed after the rename
    (:func:`fsync_folder`), so the name survives a crash of the machine too. On any failure (an
    interrupt included) the temporary file is removed and the destination is untouched. The
    folder is made when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the failure that got here is the one to report
            tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, line ends as given, with :func:`atomic_write_bytes`.

    A text that cannot be encoded (a lone surrogate) raises ``UnicodeEncodeError`` before any
    file is touched.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_rows(path: str | Path, rows: Sequence[Any], row_type: type | None = None) -> Path:
    """Write dataclass instances as a CSV (header = the dataclass's fields), atomically.

    Parameters
    ----------
    path : destination.
    rows : instances of one dataclass.
    row_type : the dataclass (needed for the header when ``rows`` is empty).
    """
    cls = row_type or (type(rows[0]) if rows else None)
    if cls is None or not dataclasses.is_dataclass(cls):
        raise ValueError("write_rows: give dataclass rows or their row_type")
    names = [f.name for f in dataclasses.fields(cls)]
    return write_table(path, names, [[format_value(getattr(r, n)) for n in names] for r in rows])


def write_table(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    """Write a CSV of a ``header`` and ``rows`` of cells already formatted, atomically
    (``\n`` line ends)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())

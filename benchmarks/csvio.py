"""CSV and JSON output of benchmark runs, written atomically.

A file is written to a temporary sibling and renamed over its destination, so an interrupted or
failing run never leaves a half-written file behind and never damages results already there.
Read-modify-write updates (the leaderboard) hold an exclusive lock on a ``.lock`` sibling.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from facehd.csvtext import format_value

__all__ = [
    "atomic_write_text",
    "write_rows",
    "read_rows",
    "config_hash",
    "locked",
    "format_value",
]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for r in rows:
        w.writerow([format_value(getattr(r, n)) for n in names])
    return atomic_write_text(path, buf.getvalue())


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as ``{column: text}`` (empty list when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def config_hash(config: Any) -> str:
    """First 12 hex digits of the SHA-256 of a config's canonical JSON."""
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` (no-op where ``fcntl`` is missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

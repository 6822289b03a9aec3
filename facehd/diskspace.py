"""Room on the disk for a job's outputs, checked before the job writes anything.

A job asked for far more than a disk holds (``facehd synth --subjects 1000000``) is refused up
front with its estimated size and time, instead of filling the disk for days and failing there.
The estimates are the job's own (bytes and seconds per item, measured on this project's files
and its 2-core CI machine); :func:`check_room` compares their total with the free space.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from facehd.errors import InputFileError, nearest_existing

__all__ = ["check_room", "duration_text", "free_bytes", "size_text"]


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the disk of ``path``, or of the nearest folder above it that
    exists (for an output folder not made yet)."""
    return int(shutil.disk_usage(nearest_existing(os.path.abspath(path))).free)


def size_text(n_bytes: float) -> str:
    """``n_bytes`` in decimal units, two or three digits: ``17 MB``, ``1.6 TB``."""
    value = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 999.5 or unit == "PB":
            return f"{value:.2g} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1000.0
    raise AssertionError("unreachable")


def duration_text(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it at least 1: ``40 s``, ``12 min``,
    ``1 hour``, ``3.4 hours``, ``81 days``."""
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("min", 60.0)):
        if seconds >= size:
            value = seconds / size
            number = f"{value:.2g}" if value < 10 else f"{value:.0f}"
            return f"{number} {unit.rstrip('s') if number == '1' else unit}"
    return f"{seconds:.0f} s"


def check_room(
    path: str | Path,
    *,
    request: str,
    items: int,
    item: str,
    bytes_each: float,
    seconds_each: float,
) -> None:
    """Refuse a job whose outputs would not fit on the disk of ``path``.

    Parameters
    ----------
    path : the output folder (need not exist yet).
    request : what was asked, for the message (``--subjects 1000000 --expressions 2``).
    items : how many items the job would still write (those done before excluded).
    item : what one item is, singular (``scan``).
    bytes_each, seconds_each : the estimated size of one item's files, and the time to make it
        on one core.

    Raises
    ------
    InputFileError
        When ``items * bytes_each`` exceeds the free space; the message names ``path``, the
        estimated size and time, the free space and how many items fit.
    """
    need = items * bytes_each
    free = free_bytes(path)
    if need <= free:
        return
    fit = int(free // bytes_each) if bytes_each > 0 else 0
    raise InputFileError(
        path,
        f"{request}: {items:,} {item}s to write, about {size_text(need)} "
        f"({size_text(bytes_each)} a {item}) and {duration_text(items * seconds_each)} on one "
        f"core, but the disk has {size_text(free)} free (room for about {fit:,}): ask for "
        "fewer, or write to a disk with more room",
    )

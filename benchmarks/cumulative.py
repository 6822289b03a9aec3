"""Cumulative error curves of NoW-protocol runs (NoW and multi-view sets).

The NoW challenge compares methods by the share of scan vertices within each error: the official
``cumulative_errors.py`` pools every image's distances of a run and plots, from 0 to 8 mm, the
percentage of them below each error (read off a 100,000-bin histogram of the run's own range).
:func:`cumulative_percent` gives the same curve exactly at any errors: the percentage of the
pooled distances at or below each. :func:`write_cumulative` writes the curves of the runs a
leaderboard lists, one CSV (and a plot laid out as the official one, where Matplotlib is
installed) per benchmark split, beside the runs' folders.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.leaderboard import LeaderboardRow, load_leaderboard, ranked
from facehd.csvtext import atomic_write_bytes, write_table
from facehd.errors import InputFileError

__all__ = ["CUMULATIVE_ERRORS_MM", "CumulativeCurves", "cumulative_percent", "write_cumulative"]

#: Errors (mm) the curves are tabulated at: the official plot's 0-8 mm, every 0.05 mm.
CUMULATIVE_ERRORS_MM: np.ndarray = np.round(np.linspace(0.0, 8.0, 161), 2)

#: The datasets scored by the NoW protocol (distances per scan vertex).
_NOW_PROTOCOL = ("now", "multiview")


def cumulative_percent(distances: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Percentage of ``distances`` (any shape, pooled; NaN and inf left out) at or below each of
    ``errors`` (E,) mm: (E,) float in [0, 100].

    Raises
    ------
    ValueError
        No finite distance.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    d = np.sort(d[np.isfinite(d)])
    if d.size == 0:
        raise ValueError("cumulative_percent: no finite distance")
    e = np.asarray(errors, dtype=np.float64)
    return 100.0 * np.searchsorted(d, e, side="right") / d.size


@dataclass(frozen=True)
class CumulativeCurves:
    """The curves of one benchmark split's runs."""

    title: str
    """``dataset:split``, with the synthetic benchmark's settings where it is one."""
    labels: tuple[str, ...]
    """One per run, best first as the leaderboard ranks them; a run that left images unscored
    says how many it scored (``mine (6 of 8 images)``)."""
    errors_mm: np.ndarray
    """(E,) the errors tabulated (:data:`CUMULATIVE_ERRORS_MM`)."""
    percent: np.ndarray
    """(R, E) percentage of each run's pooled distances at or below each error."""
    csv: Path
    """``error_mm`` and one column per run."""
    plot: Path | None
    """The curves drawn as the official plot draws them (None without Matplotlib)."""
    skipped: tuple[str, ...]
    """Runs the leaderboard lists whose folder holds no ``distances.npz`` (moved or deleted)."""


def _file_stem(data: str) -> str:
    """``cumulative`` for a benchmark's own data; ``cumulative-synthetic-seed-0-2-subjects``
    for a synthetic benchmark's runs (two such benchmarks do not compare: each has its file)."""
    if not data:
        return "cumulative"
    return "cumulative-" + re.sub(r"[^a-z0-9]+", "-", data.lower()).strip("-")


def _pooled(path: Path) -> np.ndarray:
    """All images' distances of a run's ``distances.npz``, pooled."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = [np.asarray(npz[k], dtype=np.float64).ravel() for k in npz.files]
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(path, f"not a run's distances.npz ({exc})") from exc
    return np.concatenate(arrays) if arrays else np.empty(0)


def _label(row: LeaderboardRow) -> str:
    if row.complete or row.n_items is None:
        return row.method
    return f"{row.method} ({row.n_scored} of {row.n_items} images)"


def _draw(path: Path, title: str, labels: list[str], percent: np.ndarray) -> Path | None:
    """The curves in the official plot's layout (0-8 mm, 0-100 %, legend lower right). None
    without Matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = plt.figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot(111)
    for label, pct in zip(labels, percent, strict=True):
        ax.plot(CUMULATIVE_ERRORS_MM, pct, label=label)
    ax.set_xlim(0, 8)
    ax.set_xticks(np.arange(0, 8, 1.0))
    ax.set_ylim(0, 100)
    ax.set_yticks(np.arange(0, 101, 20.0))
    ax.set_xlabel("Error [mm]", fontsize=12)
    ax.set_ylabel("Percentage", fontsize=12)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_cumulative(out: str | Path, dataset: str | None = None) -> list[CumulativeCurves]:
    """Cumulative error curves of the NoW-protocol runs ``OUT/leaderboard.csv`` lists.

    Per benchmark split (and synthetic benchmark), ``OUT/<dataset>-<split>/cumulative.csv``
    (``cumulative-synthetic-….csv`` for a synthetic benchmark's runs): ``error_mm`` from 0 to
    8 mm every 0.05 mm and, per run, best first, the percentage of its pooled distances
    (``distances.npz``) at or below it; and ``cumulative.png`` beside it where Matplotlib is
    installed. ``dataset`` keeps one dataset or split, as :func:`benchmarks.leaderboard.ranked`.
    Published rows have no distances and are not drawn.

    Raises
    ------
    facehd.errors.InputFileError
        A malformed ``leaderboard.csv`` or ``distances.npz``.
    """
    from benchmarks.runner import BenchmarkSpec

    out = Path(out)
    rows = load_leaderboard(out / "leaderboard.csv", include_published=False)
    written: list[CumulativeCurves] = []
    for (ds, split, data), group in ranked(rows, dataset).items():
        if ds not in _NOW_PROTOCOL:
            continue
        folder = out / BenchmarkSpec(ds, split).slug  # where facehd bench wrote the runs
        labels, percent, skipped = [], [], []
        for row in group:
            path = folder / row.method / "distances.npz"
            if not path.is_file():
                skipped.append(row.method)
                continue
            pooled = _pooled(path)
            if not np.isfinite(pooled).any():
                skipped.append(row.method)
                continue
            labels.append(_label(row))
            percent.append(cumulative_percent(pooled, CUMULATIVE_ERRORS_MM))
        if not labels:
            continue
        title = f"{ds}:{split}" + (f" ({data})" if data else "")
        stem = _file_stem(data)
        table = np.stack(percent)
        cells = [
            [f"{e:.2f}", *(f"{p:.4f}" for p in table[:, j])]
            for j, e in enumerate(CUMULATIVE_ERRORS_MM)
        ]
        csv_path = write_table(folder / f"{stem}.csv", ["error_mm", *labels], cells)
        plot = _draw(folder / f"{stem}.png", title, labels, table)
        written.append(
            CumulativeCurves(
                title,
                tuple(labels),
                CUMULATIVE_ERRORS_MM.copy(),
                table,
                csv_path,
                plot,
                tuple(skipped),
            )
        )
    return written

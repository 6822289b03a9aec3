"""Leaderboards: facehd's own runs plus the numbers published in the HRN paper.

``OUT/leaderboard.csv`` holds one row per (method, dataset, split), replaced whenever that
benchmark is run again, with the facehd version, the date and a hash of the run's configuration.
:data:`PUBLISHED` holds the rows reported in

    Biwen Lei, Jianqiang Ren, Mengyang Feng, Miaomiao Cui, Xuansong Xie. *A Hierarchical
    Representation Network for Accurate and Detailed Face Reconstruction from In-The-Wild Images.*
    CVPR 2023. Table 1 (single view: FaceScape-wild / -lab CD and MNE, REALY-F / -S) and Table 2
    (multi-view: FaceScape 3 views and ESRC 2 views, median / mean / std).

They are marked ``source = reported`` and carry their table as ``reference``; the method names
are as printed (the paper's ``Ours`` row is listed as ``HRN``; ``MCGNet`` is printed so in Table 1).

Ranking: lower is better for every metric; the primary metric is CD on FaceScape, the mean error
(``nmse_mm``, the average of the four regions) on REALY and the median on NoW and multi-view sets.
Runs that left images unscored (no prediction, or a prediction that failed) are listed after the
complete ones, unranked. Runs on a synthetic benchmark (``facehd synth --benchmark``, ``data =
synthetic``) are ranked in groups of their own: the published numbers are on the real data.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from benchmarks.csvio import locked, read_rows, write_rows
from facehd.errors import InputFileError

__all__ = [
    "LeaderboardRow",
    "PUBLISHED",
    "PAPER",
    "PRIMARY_METRIC",
    "load_leaderboard",
    "update_leaderboard",
    "ranked",
]

#: Citation of the published rows.
PAPER = (
    "Lei et al., A Hierarchical Representation Network for Accurate and Detailed Face "
    "Reconstruction from In-The-Wild Images, CVPR 2023"
)

#: Dataset -> the column that ranks it.
PRIMARY_METRIC: dict[str, str] = {
    "facescape": "cd_mm",
    "realy": "nmse_mm",
    "now": "median_mm",
    "multiview": "median_mm",
}


@dataclass(frozen=True)
class LeaderboardRow:
    """One (method, dataset, split) result."""

    method: str
    """Method name."""
    dataset: str
    """``facescape``, ``realy``, ``now`` or ``multiview``."""
    split: str
    """Split (``wild``, ``lab``, ``frontal``, ``side``, ``validation``, a multi-view set ...)."""
    source: str = "facehd"
    """``facehd`` (computed by ``facehd bench``) or ``reported`` (published)."""
    reference: str = ""
    """Where a reported number comes from."""
    cd_mm: float | None = None
    """FaceScape Chamfer distance (mm)."""
    mne_rad: float | None = None
    """FaceScape mean normal error (rad)."""
    cr: float | None = None
    """FaceScape completeness rate."""
    nmse_mm: float | None = None
    """REALY mean of the four region errors (mm)."""
    median_mm: float | None = None
    """NoW / multi-view median distance (mm)."""
    mean_mm: float | None = None
    """NoW / multi-view mean distance (mm)."""
    std_mm: float | None = None
    """NoW / multi-view standard deviation (mm)."""
    n_items: int | None = None
    """Images evaluated."""
    n_missing: int | None = None
    """Images without a prediction."""
    n_failed: int | None = None
    """Images whose evaluation failed (bad input)."""
    facehd_version: str = ""
    """facehd version of the run."""
    date: str = ""
    """When the run finished (ISO 8601)."""
    config_hash: str = ""
    """Hash of the run's resolved configuration (``config.json`` beside its CSVs)."""
    data: str = ""
    """For a run on a benchmark ``facehd synth --benchmark`` wrote, ``synthetic`` and its
    settings (``synthetic seed 0, 2 subjects``; rows of earlier versions say ``synthetic``
    alone), else empty (the benchmark's own data, as the published rows)."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(source, method, dataset, split)."""
        return (self.source, self.method, self.dataset, self.split)

    @property
    def complete(self) -> bool:
        """Whether every image of the split was scored (published rows: as reported)."""
        return not (self.n_missing or self.n_failed)

    @property
    def n_scored(self) -> int | None:
        """Images scored (None when not recorded)."""
        if self.n_items is None:
            return None
        return self.n_items - (self.n_missing or 0) - (self.n_failed or 0)

    @property
    def primary(self) -> float:
        """The ranking metric's value (inf when absent)."""
        v = getattr(self, PRIMARY_METRIC.get(self.dataset, "median_mm"))
        return math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _published() -> tuple[LeaderboardRow, ...]:
    t1 = f"{PAPER}, Table 1"
    t2 = f"{PAPER}, Table 2"
    rows = []
    # Table 1: FaceScape-wild CD / MNE, FaceScape-lab CD / MNE, REALY-F, REALY-S
    table1 = {
        "Deep3D": (3.8, 0.092, 5.28, 0.118, 1.657, 1.691),
        "MCGNet": (3.22, 0.077, 4.00, 0.093, 1.774, 1.787),
        "PRNet": (3.47, 0.123, 3.56, 0.126, 2.013, 2.032),
        "SADRNet": (7.12, 0.123, 6.75, 0.133, 1.913, 1.958),
        "DECA": (3.31, 0.089, 4.69, 0.108, 2.210, 2.261),
        "3DDFA": (3.00, 0.080, 3.60, 0.096, 1.926, 1.943),
        "HRN": (2.91, 0.065, 3.67, 0.087, 1.537, 1.468),
    }
    for m, (wcd, wmne, lcd, lmne, rf, rs) in table1.items():
        rows.append(LeaderboardRow(m, "facescape", "wild", "reported", t1, cd_mm=wcd, mne_rad=wmne))
        rows.append(LeaderboardRow(m, "facescape", "lab", "reported", t1, cd_mm=lcd, mne_rad=lmne))
        rows.append(LeaderboardRow(m, "realy", "frontal", "reported", t1, nmse_mm=rf))
        rows.append(LeaderboardRow(m, "realy", "side", "reported", t1, nmse_mm=rs))
    # Table 2: FaceScape (3 views) and ESRC (2 views): median / mean / std (mm)
    table2 = {
        "MVFNet": ((1.76, 2.12, 1.66), None),
        "DFNRMVS": ((1.79, 2.41, 2.61), (1.59, 2.13, 2.29)),
        "HRN": ((1.13, 1.51, 1.79), (1.29, 1.69, 1.72)),
    }
    for m, (fs, esrc) in table2.items():
        for split, vals in (("facescape", fs), ("esrc", esrc)):
            if vals is None:  # N.A. in the paper
                continue
            rows.append(
                LeaderboardRow(
                    m,
                    "multiview",
                    split,
                    "reported",
                    t2,
                    median_mm=vals[0],
                    mean_mm=vals[1],
                    std_mm=vals[2],
                )
            )
    return tuple(rows)


#: The rows published in the HRN paper (Tables 1 and 2).
PUBLISHED: tuple[LeaderboardRow, ...] = _published()

_FLOATS = {"cd_mm", "mne_rad", "cr", "nmse_mm", "median_mm", "mean_mm", "std_mm"}
_INTS = {"n_items", "n_missing", "n_failed"}


#: Columns no row can do without.
_REQUIRED = ("method", "dataset", "split")


def _parse(raw: dict[str, str | None], path: Path, line: int) -> LeaderboardRow:
    """One row of ``path`` (its ``line``), checked; :class:`InputFileError` names what is wrong."""
    if None in raw or None in raw.values():  # more or fewer fields than the header
        raise InputFileError(
            path, f"line {line}: not as many fields as the header has columns (a cut file?)"
        )
    kw: dict[str, object] = {}
    for f in fields(LeaderboardRow):
        text = (raw.get(f.name) or "").strip()
        try:
            if f.name in _FLOATS:
                kw[f.name] = float(text) if text else None
            elif f.name in _INTS:
                kw[f.name] = int(text) if text else None
            else:
                kw[f.name] = text
        except ValueError:
            raise InputFileError(path, f"line {line}: {f.name} {text!r} is not a number") from None
        value = kw[f.name]
        if isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0):
            raise InputFileError(
                path, f"line {line}: {f.name} {text!r} must be a finite number >= 0"
            )
    counts = [kw[c] or 0 for c in ("n_items", "n_missing", "n_failed")]
    if kw["n_items"] is not None and counts[1] + counts[2] > counts[0]:
        raise InputFileError(
            path,
            f"line {line}: n_missing + n_failed ({counts[1]} + {counts[2]}) exceed n_items "
            f"({counts[0]})",
        )
    if not kw["source"]:
        kw["source"] = "facehd"
    absent = [c for c in _REQUIRED if not kw[c]]
    if absent:
        raise InputFileError(path, f"line {line}: no {', '.join(absent)}")
    if kw["dataset"] not in PRIMARY_METRIC:  # a name edited by hand would rank on its own
        raise InputFileError(
            path,
            f"line {line}: unknown dataset {kw['dataset']!r} (one of "
            f"{', '.join(sorted(PRIMARY_METRIC))}, as facehd bench writes them)",
        )
    if kw["n_items"] == 0:  # a run of no image has no score to rank
        raise InputFileError(path, f"line {line}: n_items 0: a run scores at least one image")
    return LeaderboardRow(**kw)


def _read(path: str | Path) -> list[LeaderboardRow]:
    """facehd's rows of ``leaderboard.csv`` (none when it does not exist), checked."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a leaderboard CSV file")
    try:
        raw = read_rows(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read it ({exc.strerror or exc})") from None
    if raw:
        # without its data column every row would read as scored on the benchmark's own data
        # and rank beside the published ones (synthetic runs rank in tables of their own)
        missing = [c for c in (*_REQUIRED, "data") if c not in raw[0]]
        if missing:
            raise InputFileError(
                path, f"not a facehd leaderboard: no column {', '.join(missing)} in its header"
            )
        # a column renamed by hand would be dropped, its values lost, by the next update
        known = {f.name for f in fields(LeaderboardRow)}
        unknown = [c for c in raw[0] if c is not None and c not in known]
        if unknown:
            raise InputFileError(
                path,
                f"unknown column(s) {', '.join(map(repr, unknown))} in its header (columns: "
                f"{', '.join(sorted(known))})",
            )
    rows = [_parse(r, path, i) for i, r in enumerate(raw, start=2)]
    seen: dict[tuple[str, str, str, str], int] = {}
    for i, r in enumerate(rows, start=2):
        if r.key in seen:
            raise InputFileError(
                path,
                f"line {i}: the same run (source, method, dataset, split) as line {seen[r.key]}",
            )
        seen[r.key] = i
    return [r for r in rows if r.source != "reported"]


def load_leaderboard(path: str | Path, *, include_published: bool = True) -> list[LeaderboardRow]:
    """Rows of ``leaderboard.csv`` (if it exists) plus, by default, the published rows.

    Raises
    ------
    InputFileError
        The file is not a leaderboard, or a row of it is malformed (the message names the line).
    """
    rows = _read(path)
    return (list(PUBLISHED) if include_published else []) + rows


def update_leaderboard(path: str | Path, row: LeaderboardRow) -> LeaderboardRow | None:
    """Insert or replace ``row`` (same method, dataset and split) in ``leaderboard.csv``;
    returns the row it replaced (None when it inserted).

    The file holds facehd's rows only (the published ones are added when read). The update is
    locked and atomic.
    """
    path = Path(path)
    row = replace(row, source="facehd")
    with locked(path):
        rows = _read(path)
        replaced = next((r for r in rows if r.key == row.key), None)
        rows = [r for r in rows if r.key != row.key]
        rows.append(row)
        rows.sort(key=lambda r: (r.dataset, r.split, r.method))
        write_rows(path, rows, LeaderboardRow)
    return replaced


def ranked(
    rows: list[LeaderboardRow], dataset: str | None = None
) -> dict[tuple[str, str, str], list[LeaderboardRow]]:
    """Group rows by (dataset, split, data), best first; runs that did not score every image of
    the split come after the complete ones (a metric over fewer images is not comparable), and
    runs on synthetic benchmarks (``data`` ``synthetic ...``) form groups of their own, one per
    synthetic benchmark.

    ``dataset`` keeps one dataset (``name``) or one split (``name:split``; any case, ``val`` for
    ``validation``).
    """
    want_ds, want_split = None, None
    if dataset:
        want_ds, _, want_split = dataset.strip().lower().partition(":")
        want_split = {"val": "validation"}.get(want_split, want_split) or None
    groups: dict[tuple[str, str, str], list[LeaderboardRow]] = {}
    for r in rows:
        if want_ds and r.dataset != want_ds:
            continue
        if want_split and r.split != want_split:
            continue
        groups.setdefault((r.dataset, r.split, r.data), []).append(r)
    return {
        k: sorted(v, key=lambda r: (not r.complete, r.primary, r.method))
        for k, v in sorted(groups.items())
    }

"""The paper's ablation (Table 3) on synthetic photos with exact truth: ``facehd ablation``.

Rows, each trained and measured (nothing is carried over from the paper):

==================  =============================================================================
``base``            the face analyzer alone: M0 (stage ``base``)
``+hierarchy``      + the deformation and displacement maps, self-supervised only (photometric
                    on R1 and R2, landmark, TV, L1 of the displacement); no contour loss, no
                    priors, A0 for rendering
``+contour``        + the contour-aware loss (paper Eq. 1-2)
``+detail priors``  + the supervised iterations (L1 to the ground-truth maps) and the
                    adversarial losses (at the config's weight; ``tiny-cpu`` has none)
``+de-retouching``  + rendering with the de-retouched albedo A' (the full HRN)
==================  =============================================================================

The base model and the de-retouching module are trained once (``OUT/shared``) and every HRN row
starts from them (``OUT/<row>``), with the same seed, data and schedule. Each row is scored by
:func:`models.evaluate.evaluate_synthetic` on held-out synthetic scans: ``cd_mm`` and ``mne_rad``
are FaceScape's CD and MNE (the metrics of the paper's Table 3; item 9 of
:mod:`models.evaluate`) of the row's final surface (M0 for ``base``, M2 otherwise); the per-level
numbers, by closest points and by FaceScape's protocol, are kept too. An interrupted ablation
resumes (finished rows are not retrained), and a rerun keeps the scores of a row whose model file,
held-out files, photos per scan and refinement are those it was scored with (``eval_<row>.json``
records them beside ``eval_<row>.csv``); any other row is scored again.

A config whose detail stage trains on refined base faces (``hrn_options.refine_steps``) gives
every row those faces: the training photos are refined once, by the first row that trains, and
the later rows take them (``<row>/refined``, the same analyzer); every row, the base row too, is
scored on the held-out photos refined the same way.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from facehd.csvtext import atomic_write_text
from models.evaluate import evaluate_synthetic, summarise, write_rows
from models.train import HRNOptions, TrainConfig, run_data_matches, train, training_refinement

__all__ = ["ABLATION_ROWS", "AblationRow", "run_ablation", "table_markdown"]

#: (row name, slug, options of the detail stage or None for the base model).
ABLATION_ROWS: tuple[tuple[str, str, HRNOptions | None], ...] = (
    ("base", "base", None),
    ("+hierarchy", "hierarchy", HRNOptions(contour=False, priors=False, deretouch=False)),
    ("+contour", "contour", HRNOptions(contour=True, priors=False, deretouch=False)),
    ("+detail priors", "priors", HRNOptions(contour=True, priors=True, deretouch=False)),
    ("+de-retouching", "deretouch", HRNOptions(contour=True, priors=True, deretouch=True)),
)


@dataclass
class AblationRow:
    """One measured row of the ablation."""

    row: str
    hierarchy: bool
    contour: bool
    priors: bool
    deretouch: bool
    cd_mm: float
    """FaceScape's Chamfer distance of the row's final surface to the truth, mm."""
    mne_rad: float
    """FaceScape's mean normal error of the row's final surface, radians."""
    dist_m0: float
    dist_m1: float
    dist_m2: float
    normal_m0: float
    normal_m1: float
    normal_m2: float
    disp_pearson: float
    """Correlation of the predicted and true displacement maps (UV correspondence)."""
    normal_uv_m1: float
    normal_uv_m2: float
    """Normal error of M1 / M2 against the true detailed normals, texel by texel (rad)."""
    disp_pearson_seen: float
    """Correlation of the displacement with the truth at the skin point each texel shows."""
    normal_seen_m1: float
    normal_seen_m2: float
    """Normal error of M1 / M2 at the skin point each texel shows (rad)."""
    normal_m2_oracle: float
    """M2's normal error with the true details of the skin each texel shows (rad): the ceiling
    of the detail level at the row's M1."""
    dist_mean_face: float
    normal_mean_face: float
    """Distance (mm) and normal error (rad) of the morphable model's mean face at the same
    points: the floor a base model must beat."""
    cd_fs_m0: float
    cd_fs_m1: float
    cd_fs_m2: float
    mne_fs_m0: float
    mne_fs_m1: float
    mne_fs_m2: float
    cd_fs_mean_face: float
    mne_fs_mean_face: float
    mne_fs_m2_oracle: float
    """FaceScape's CD (mm) and MNE (rad) of each level and of the mean face; the MNE of M2 with
    the true details of the skin each texel shows."""
    cd_cam_m0: float
    cd_cam_m1: float
    cd_cam_m2: float
    mne_cam_m0: float
    mne_cam_m1: float
    mne_cam_m2: float
    mne_cam_m2_oracle: float
    """The same for the levels and the oracle's M2 placed as FaceScape's protocol places a
    prediction (the photo's camera and its depth slide)."""
    photos: int
    m1_nearer: int
    m2_normals_better: int
    m2_seen_better: int
    seen_photos: int
    m2_mne_fs_better: int
    m2_mne_cam_better: int
    """Photos on which M1 is nearer the truth than M0, M2's normals are better than M1's (closest
    points; at the skin point each texel shows, out of ``seen_photos``; by FaceScape's MNE, the
    levels aligned rigidly and placed as the protocol places them)."""
    train_seconds: float


def _heldout_sha256(heldout: Path) -> dict[str, str]:
    """SHA-256 of each file of the held-out scans (``<id>.*``), by name: what a row is scored
    on."""
    from facehd.h5io import file_sha256
    from models.evaluate import heldout_ids

    mine = tuple(f"{i}." for i in heldout_ids(heldout))
    files = sorted(f for f in heldout.iterdir() if f.is_file() and f.name.startswith(mine))
    return {f.name: file_sha256(f) for f in files}


def _scores_key(model_path: Path, heldout: dict[str, str], views: int | None, refine: Any) -> dict:
    """What a row's scores depend on: the model file, the held-out scans' files
    (:func:`_heldout_sha256`), the photos per scan, the refinement and the scores' columns
    (recorded beside ``eval_<row>.csv``)."""
    import facehd
    from facehd.h5io import file_sha256
    from models.evaluate import EvalRow

    return {
        "facehd": facehd.__version__,
        "model_sha256": file_sha256(model_path),
        "heldout": heldout,
        "views": views,
        "refine": None if refine is None else asdict(refine),
        "columns": [f.name for f in fields(EvalRow)],
    }


def _kept_scores(out: Path, slug: str, key: dict) -> list | None:
    """The per-photo scores of ``eval_<slug>.csv`` when its record says they were made from
    what ``key`` holds (the same model, held-out files and settings), else None: the row is
    scored again (a record or CSV that cannot be read, or edited, counts as none)."""
    import csv

    from models.evaluate import EvalRow

    record, table = out / f"eval_{slug}.json", out / f"eval_{slug}.csv"
    try:
        if json.loads(record.read_text()) != json.loads(json.dumps(key)):  # tuples as lists
            return None
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        kinds = {f.name: f.type for f in fields(EvalRow)}
        if not rows or list(rows[0]) != list(kinds):
            return None
        return [EvalRow(**{k: _cell(r[k], kinds[k]) for k in kinds}) for r in rows]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _cell(text: str, kind: Any) -> Any:
    """A CSV cell as written by :func:`facehd.csvtext.format_value` back to its field's type."""
    kind = getattr(kind, "__name__", kind)
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    return float(text) if text != "" else float("nan")


def _done(folder: Path) -> bool:
    return (folder / "model.pt").is_file() and (folder / "checkpoints" / "hrn.pt").is_file()


def _earlier_seconds(path: Path) -> dict[str, float]:
    """``train_seconds`` by row of an earlier ``ablation.csv`` (none when there is none)."""
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        out = {}
        for r in csv.DictReader(fh):
            try:
                out[r["row"]] = float(r["train_seconds"])
            except (KeyError, TypeError, ValueError):
                continue
        return out


def run_ablation(
    config: TrainConfig,
    out: str | Path,
    *,
    photos: str | Path,
    priors: str | Path,
    heldout: str | Path,
    pairs: str | Path | None = None,
    views: int | None = None,
    callback: Callable | None = None,
    log: Callable[[str], None] = print,
) -> list[AblationRow]:
    """Train and score every row of :data:`ABLATION_ROWS`; writes ``OUT/ablation.csv`` and
    ``OUT/ablation.md``.

    Bad inputs (the held-out folder, the datasets, a detail stage of no steps, an output that
    cannot be written) are refused before anything trains, and a refused run leaves no ``out``
    folder that it made.

    Raises
    ------
    ValueError
        ``config.hrn.steps`` is below 1 (``facehd ablation --steps``).
    FacehdError
        A held-out folder, dataset or output folder that cannot be used (the message names it).
    """
    from facehd.errors import check_output_folder, nearest_existing
    from models.evaluate import heldout_ids

    steps = config.hrn.steps
    if steps < 1:
        raise ValueError(
            f"--steps (the detail stage's steps, hrn.steps) must be at least 1, got {steps}: "
            "the rows after base differ only in how that stage trains, so with no step they "
            "would all score the same untrained detail networks"
        )
    heldout_ids(heldout)  # a wrong folder stops the run now, not after the shared stages
    out = Path(out)
    # the outermost folder this run makes (``out``, or a folder above it), None when out exists
    target = out.absolute()
    there = nearest_existing(target)
    made = None if there == target else there / target.relative_to(there).parts[0]
    check_output_folder(out, "ablation runs")
    try:
        return _run_rows(config, out, photos, priors, heldout, pairs, views, callback, log)
    except BaseException:
        if made is not None:  # refused (or stopped) before it wrote anything: no folder left
            _remove_empty_folders(made)
        raise


def _remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and the folders under it that hold no file (deepest first); any folder
    holding a file stays, with its file."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True) + [root]:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): kept
            continue


def _run_rows(
    config: TrainConfig,
    out: Path,
    photos: str | Path,
    priors: str | Path,
    heldout: str | Path,
    pairs: str | Path | None,
    views: int | None,
    callback: Callable | None,
    log: Callable[[str], None],
) -> list[AblationRow]:
    """:func:`run_ablation` once its inputs are checked and ``out`` is made."""
    import shutil

    from models.checkpoints import read_checkpoint
    from models.reconstruct import Reconstructor

    refine = training_refinement(config.hrn_options)
    if refine is not None:
        log(
            f"ablation: the detail stage trains on refined faces (hrn_options.refine_steps "
            f"{refine.steps}); every row is scored on refined faces too"
        )
    refined_from: Path | None = None  # the latest row's folder of refined faces
    shared = out / "shared"
    kw = {"photos": photos, "priors": priors, "pairs": pairs, "callback": callback}
    resume = (shared / "checkpoints").is_dir()
    res = train(config, shared, stages=["base", "deretouch"], resume=resume, **kw)
    shared_seconds = sum(res.seconds.values())
    earlier = _earlier_seconds(out / "ablation.csv")  # of rows a rerun reuses untrained
    heldout_files = _heldout_sha256(Path(heldout))  # every row is scored on them
    rows: list[AblationRow] = []
    for name, slug, opts in ABLATION_ROWS:
        if opts is None:
            model_path, seconds = shared / "model.pt", shared_seconds
        else:
            cfg = copy.deepcopy(config)
            # the row's switches; every other detail-stage option is the config's
            cfg.hrn_options = replace(
                config.hrn_options,
                contour=opts.contour,
                priors=opts.priors,
                deretouch=opts.deretouch,
            )
            folder = out / slug
            seconds = 0.0
            if _done(folder):  # a finished row is reused: only on the data it was trained on
                run_data_matches(folder, photos=photos, priors=priors, pairs=pairs)
            else:
                log(f"ablation row {name}: training")
                if refined_from is not None and not (folder / "refined").exists():
                    # the faces an earlier row refined (the same analyzer: the shared one)
                    shutil.copytree(refined_from, folder / "refined")
                r = train(
                    cfg,
                    folder,
                    stages=["hrn"],
                    resume=(folder / "checkpoints").is_dir(),
                    init=shared / "model.pt",
                    **kw,
                )
                seconds = sum(r.seconds.values())
            model_path = folder / "model.pt"
            read_checkpoint(model_path)  # fails clearly on a corrupt file
            if (folder / "refined").is_dir():
                refined_from = folder / "refined"
        if seconds == 0.0:  # nothing trained now: the time the row took when it was trained
            seconds = earlier.get(name, seconds)
        scored = _scores_key(model_path, heldout_files, views, refine)
        per_photo = _kept_scores(out, slug, scored)
        if per_photo is None:
            log(f"ablation row {name}: scoring")
            (out / f"eval_{slug}.json").unlink(missing_ok=True)  # the CSV is about to change
            recon = Reconstructor.load(model_path)
            per_photo, _ = evaluate_synthetic(recon, heldout, views=views, refine=refine)
            write_rows(out / f"eval_{slug}.csv", per_photo)
            atomic_write_text(out / f"eval_{slug}.json", json.dumps(scored, indent=1))
        else:
            log(f"ablation row {name}: scores kept (eval_{slug}.csv: the same model and photos)")
        s = summarise(per_photo)
        final = (s.cd_fs_m0, s.mne_fs_m0) if opts is None else (s.cd_fs_m2, s.mne_fs_m2)
        rows.append(
            AblationRow(
                row=name,
                hierarchy=opts is not None,
                contour=bool(opts and opts.contour),
                priors=bool(opts and opts.priors),
                deretouch=bool(opts and opts.deretouch),
                cd_mm=final[0],
                mne_rad=final[1],
                train_seconds=seconds,
                **asdict(s),  # every score of the evaluation, under the same names
            )
        )
    write_rows(out / "ablation.csv", rows)
    md = out / "ablation.md"
    tmp = md.with_name(md.name + f".tmp{os.getpid()}")
    tmp.write_text(table_markdown(rows))
    os.replace(tmp, md)
    return rows


def table_markdown(rows: list[AblationRow]) -> str:
    """The ablation as a Markdown table (like the paper's Table 3)."""

    def tick(b: bool) -> str:
        return "✓" if b else ""

    lines = [
        "| row | base | HRM | L_con | detail priors | DRM | CD (mm) | MNE (rad) |"
        " M0 / M1 / M2 CD (mm) | M0 / M1 / M2 MNE (rad) |"
        " M0 / M1 / M2 placed CD (mm) | M0 / M1 / M2 placed MNE (rad) |"
        " M0 / M1 / M2 dist, closest points (mm) | M0 / M1 / M2 normal, closest points (rad) |"
        " displacement r | M1 / M2 normal by texel (rad) | displacement r, seen |"
        " M1 / M2 normal, seen (rad) | M2 normal, true details (rad) |",
        "|---" * 19 + "|",
    ]
    if rows:
        floor = rows[0]
        lines.append(
            f"| mean face (every coefficient zero; reference) | | | | | | "
            f"{floor.cd_fs_mean_face:.3f} | {floor.mne_fs_mean_face:.4f} | | | | | "
            f"{floor.dist_mean_face:.3f} | {floor.normal_mean_face:.4f} |" + " |" * 5
        )
    for r in rows:
        # the base row's model has not trained the detail networks: its M1 and M2 and its detail
        # scores are those of untrained networks, kept in ablation.csv and left out here
        t = r.hierarchy
        lines.append(
            f"| {r.row} | ✓ | {tick(r.hierarchy)} | {tick(r.contour)} | {tick(r.priors)} | "
            f"{tick(r.deretouch)} | {r.cd_mm:.3f} | {r.mne_rad:.4f} | "
            f"{_levels(t, 3, r.cd_fs_m0, r.cd_fs_m1, r.cd_fs_m2)} | "
            f"{_levels(t, 4, r.mne_fs_m0, r.mne_fs_m1, r.mne_fs_m2)} | "
            f"{_levels(t, 3, r.cd_cam_m0, r.cd_cam_m1, r.cd_cam_m2)} | "
            f"{_levels(t, 4, r.mne_cam_m0, r.mne_cam_m1, r.mne_cam_m2)} | "
            f"{_levels(t, 3, r.dist_m0, r.dist_m1, r.dist_m2)} | "
            f"{_levels(t, 4, r.normal_m0, r.normal_m1, r.normal_m2)} | "
            f"{_detail(t, f'{r.disp_pearson:.3f}')} | "
            f"{_detail(t, f'{r.normal_uv_m1:.4f} / {r.normal_uv_m2:.4f}')} | "
            f"{_detail(t, f'{r.disp_pearson_seen:.3f}')} | "
            f"{_detail(t, f'{r.normal_seen_m1:.4f} / {r.normal_seen_m2:.4f}')} | "
            f"{_detail(t, f'{r.normal_m2_oracle:.4f}')} |"
        )
    return "\n".join(lines) + "\n"


def _levels(trained: bool, digits: int, *values: float) -> str:
    """``M0 / M1 / M2`` to ``digits`` decimals; M0 alone (``M0 / – / –``) for a model whose
    detail networks are untrained."""
    shown = [f"{v:.{digits}f}" for v in values]
    return " / ".join(shown if trained else shown[:1] + ["–"] * (len(shown) - 1))


def _detail(trained: bool, text: str) -> str:
    return text if trained else "–"

"""The runner's summary rows and official-tool files, from hand-made item rows, against the
statistics recomputed here by loops over the rows."""

from __future__ import annotations

import io
import math

import numpy as np

from benchmarks.runner import (
    FaceScapeItemRow,
    NowItemRow,
    RealyItemRow,
    _facescape_summary,
    _now_summary,
    _realy_summary,
    facescape_full_texts,
    now_computed_distances,
)


def _now_rows() -> tuple[list[NowItemRow], dict[str, np.ndarray]]:
    """Rows of two challenges, scored, missing and failed, and the scored ones' distances (of
    several lengths, so that pooling differs from averaging the images)."""
    rng = np.random.default_rng(4)
    rows, dist = [], {}
    plan = [
        ("neutral", "ok"),
        ("neutral", "ok"),
        ("neutral", "missing"),
        ("selfie", "ok"),
        ("selfie", "error"),
        ("selfie", "error"),
        ("selfie", "ok"),
    ]
    for k, (challenge, status) in enumerate(plan):
        name = f"s{k}/{challenge}/img{k}"
        rows.append(NowItemRow(name, f"s{k}", challenge, f"img{k}", status))
        if status == "ok":
            dist[name] = rng.gamma(2.0, 0.5, size=50 + 40 * k)
    return rows, dist


def test_now_summary_pools_each_challenges_distances_and_counts_the_rest() -> None:
    rows, dist = _now_rows()
    summary = _now_summary(rows, dist, ["neutral", "selfie"])
    assert [s.group for s in summary] == ["neutral", "selfie", "all"]
    for s in summary:
        mine = [r for r in rows if s.group in ("all", r.challenge)]
        pooled = np.concatenate([dist[r.name] for r in mine if r.status == "ok"])
        assert s.n_images == sum(r.status == "ok" for r in mine)
        assert s.n_missing == sum(r.status == "missing" for r in mine)
        assert s.n_failed == sum(r.status == "error" for r in mine)
        assert s.n_points == pooled.size
        assert s.median_mm == np.median(pooled)
        np.testing.assert_allclose([s.mean_mm, s.std_mm], [pooled.mean(), pooled.std()])
    assert [(s.n_missing, s.n_failed) for s in summary] == [(1, 0), (0, 2), (1, 2)]


def test_now_computed_distances_count_failures_as_missing() -> None:
    """The official tool's file: the scored images' arrays in the list's order, and every image
    without one (missing or failed) counted as missing."""
    rows, dist = _now_rows()
    got = np.load(io.BytesIO(now_computed_distances(rows, dist)), allow_pickle=True).item()
    assert got["num_missing_files"] == 3
    scored = [r.name for r in rows if r.status == "ok"]
    assert len(got["computed_distances"]) == len(scored)
    for array, name in zip(got["computed_distances"], scored, strict=True):
        np.testing.assert_array_equal(array, dist[name])


def _nanmean_loop(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _check_facescape(summary: list, groups: dict[str, list[FaceScapeItemRow]]) -> None:
    assert [s.group for s in summary] == list(groups)
    for s in summary:
        mine = groups[s.group]
        for field in ("cd_mm", "mne_rad", "cr"):
            np.testing.assert_allclose(
                getattr(s, field), _nanmean_loop([getattr(r, field) for r in mine]), rtol=1e-12
            )
        done = [r for r in mine if r.cd_mm is not None and not math.isnan(r.cd_mm)]
        assert s.done_rate == len(done) / len(mine)
        assert s.n_images == len(mine)
        assert s.n_missing == sum(r.status == "missing" for r in mine)
        assert s.n_failed == sum(r.status == "error" for r in mine)


def _facescape_row(k: int, group: str, focal: str, status: str) -> FaceScapeItemRow:
    """Scored rows get distinct values; a scored row may still lack its CD (no overlap: NaN)."""
    if status != "ok":
        return FaceScapeItemRow(f"r{k}", group, focal, status, "why")
    cd = math.nan if k == 3 else 1.0 + 0.37 * k
    return FaceScapeItemRow(f"r{k}", group, focal, status, cd_mm=cd, mne_rad=0.05 * k, cr=0.9)


def test_facescape_wild_summary_by_pose_with_empty_groups_left_out() -> None:
    plan = [("0-5", "ok"), ("0-5", "ok"), ("0-5", "missing"), ("5-30", "ok"), ("5-30", "error")]
    plan += [("60-90", "ok"), ("60-90", "error"), ("60-90", "error")]  # and none at 30-60
    rows = [_facescape_row(k, g, "", status) for k, (g, status) in enumerate(plan)]
    summary = _facescape_summary(rows, "wild")
    groups = {g: [r for r in rows if r.group == g] for g in ("0-5", "5-30", "60-90")}
    _check_facescape(summary, {**groups, "all": rows})
    assert summary[1].done_rate == 0.0 < summary[0].done_rate  # row 3 (5-30): a NaN CD


def test_facescape_lab_summary_by_angle_and_by_focal_length() -> None:
    plan = [("0", "f1200", "ok"), ("0", "f600", "ok"), ("30", "f1200", "error")]
    plan += [("30", "f300", "ok"), ("60", "f600", "missing"), ("60", "f300", "ok")]
    plan += [("0", "f300", "ok")]
    rows = [_facescape_row(k, g, f, status) for k, (g, f, status) in enumerate(plan)]
    summary = _facescape_summary(rows, "lab")
    groups = {f"angle {g}": [r for r in rows if r.group == g] for g in ("0", "30", "60")}
    groups |= {f: [r for r in rows if r.focal_group == f] for f in ("f1200", "f600", "f300")}
    _check_facescape(summary, {**groups, "all": rows})


def test_realy_summary_counts_missing_and_failed_images() -> None:
    rows = [
        RealyItemRow(
            f"{k}.obj", k, "ok", nose_mm=1.0 + k, mouth_mm=2.0, forehead_mm=1.5, cheek_mm=k
        )
        for k in range(3)
    ]
    rows += [RealyItemRow("7.obj", 7, "missing"), RealyItemRow("8.obj", 8, "error", "bad")]
    rows += [RealyItemRow("9.obj", 9, "error", "bad")]
    summary = _realy_summary(rows)
    assert [s.region for s in summary] == ["nose", "mouth", "forehead", "cheek", "all"]
    assert {(s.n_images, s.n_missing, s.n_failed) for s in summary} == {(3, 1, 2)}
    assert summary[0].mean_mm == 2.0 and summary[3].median_mm == 1.0


def test_facescape_full_texts_put_other_names_last_and_failures_as_nan() -> None:
    """Names of the evaluator's digits first in its order (numerically: 2 before 10), other
    names after; a row that failed is NaN even where it holds a value."""
    rows = [
        FaceScapeItemRow("10_0_0", "0", "f1200", "ok", cd_mm=1.0, mne_rad=0.1, cr=0.5),
        FaceScapeItemRow("extra", "0", "f1200", "ok", cd_mm=2.0, mne_rad=0.2, cr=0.6),
        FaceScapeItemRow("2_0_0", "0", "f1200", "ok", cd_mm=3.0, mne_rad=0.3, cr=0.7),
        FaceScapeItemRow("2_0_1", "0", "f1200", "error", "late", cd_mm=4.0, mne_rad=0.4, cr=0.8),
    ]
    texts = facescape_full_texts(rows)
    for name, values in (
        ("CD_full.txt", [3.0, np.nan, 1.0, 2.0]),
        ("MNE_full.txt", [0.3, np.nan, 0.1, 0.2]),
        ("CR_full.txt", [0.7, np.nan, 0.5, 0.6]),
    ):
        np.testing.assert_array_equal(np.loadtxt(io.StringIO(texts[name])), values)

"""MV-HRN: the shared canonical space, its starting point and the joint fit."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hrn_testdata import one_torch_thread

from models.multiview import (
    MultiViewConfig,
    fit_multiview,
    shared_initial_state,
    shared_turntable,
)


def test_views_of_the_wrong_shape_are_refused_before_any_fit():
    from types import SimpleNamespace

    from models.multiview import fit_multiview

    recon = SimpleNamespace(base_texture=True)  # nothing of it is used before the check
    crops = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    masks = np.ones((2, 224, 224), dtype=bool)
    lms = np.zeros((2, 68, 2))
    nan_lms = lms.copy()
    nan_lms[1, 30, 0] = np.nan
    for args, message in (
        ((crops.astype(np.float32), masks, lms), r"crops must be \(V, 224, 224, 3\) uint8"),
        ((crops[:, :112], masks, lms), r"crops must be \(V, 224, 224, 3\) uint8"),
        ((crops[:0], masks[:0], lms[:0]), "no views"),
        ((crops, masks[:1], lms), r"masks must be \(2, 224, 224\), got \(1, 224, 224\)"),
        ((crops, masks, lms[:, :51]), r"landmarks must be \(2, 68, 2\), got \(2, 51, 2\)"),
        ((crops, masks, nan_lms), "landmarks hold NaN or infinite values"),
    ):
        with pytest.raises(ValueError, match=message):
            fit_multiview(recon, *args)


def test_shared_initial_state_is_the_seen_weighted_mean_per_texel():
    g = torch.Generator().manual_seed(0)
    v, m = 3, 4
    identity = torch.randn(v, 5, generator=g)
    deformation = torch.randn(v, 3, m, m, generator=g)
    seen = torch.zeros(v, 1, m, m)
    seen[0, 0, 0, 0] = 1.0  # seen by view 0 only
    seen[:, 0, 1, 1] = torch.tensor([1.0, 0.5, 0.0])  # by two views, one half
    seen[:, 0, 2, 2] = 1.0  # by all
    # (3, 3) and the rest: by none
    ident, shared = shared_initial_state(identity, deformation, seen)
    assert torch.allclose(ident, identity.mean(0, keepdim=True))
    for i in range(m):
        for j in range(m):
            w = seen[:, 0, i, j]
            if w.sum() > 0:
                want = (deformation[:, :, i, j] * w[:, None]).sum(0) / w.sum()
            else:
                want = deformation[:, :, i, j].mean(0)
            assert torch.allclose(shared[0, :, i, j], want, atol=1e-6), (i, j)
    assert torch.allclose(shared[0, :, 0, 0], deformation[0, :, 0, 0])  # not a third of it
    with pytest.raises(ValueError, match="shared_initial_state"):
        shared_initial_state(identity[0], deformation, seen)


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="iterations"):
        MultiViewConfig(iterations=-1)
    with pytest.raises(ValueError, match="lr"):
        MultiViewConfig(lr=0.0)
    with pytest.raises(ValueError, match="contour"):
        MultiViewConfig(contour=-1.0)
    with pytest.raises(ValueError, match="map_scale_mm"):
        MultiViewConfig(map_scale_mm=0.0)
    with pytest.raises(ValueError, match="deformation_start must be one of network, zero"):
        MultiViewConfig(deformation_start="mean")


def test_single_view_config_weights_the_deformation_as_hrn_does_for_one_image():
    from models.config import paper_model_config
    from models.multiview import single_view_config

    cfg = single_view_config(7, "zero")
    assert cfg.iterations == 7 and cfg.deformation_start == "zero"
    # HRN's own total-variation weight of the deformation map (lambda_4) ...
    assert cfg.tv_deformation == paper_model_config().hrn_losses.tv == 5e3
    # ... where the multi-view fit keeps the public code's; nothing else differs
    mv = MultiViewConfig(iterations=7, deformation_start="zero")
    assert mv.tv_deformation == 1e3
    assert replace(cfg, tv_deformation=mv.tv_deformation) == mv


def _views(hrn_data, recon, sample: str):
    from models.data import align_lab_photo

    with np.load(hrn_data.scans / f"{sample}.photos.npz") as z:
        photos = {k: z[k] for k in ("images", "landmarks68", "masks")}
    crops = [align_lab_photo(photos, v, recon.template) for v in range(len(photos["images"]))]
    return (
        np.stack([c["image"] for c in crops]),
        np.stack([c["mask"] for c in crops]),
        np.stack([c["landmarks"] for c in crops]),
    )


@pytest.fixture(scope="module")
def fitted(hrn_data, model_path):
    """Two lab photos of one synthetic scan fitted jointly (and the reconstructor)."""
    from models.reconstruct import Reconstructor

    with one_torch_thread():
        recon = Reconstructor.load(model_path)
        first = sorted(hrn_data.scans.glob("*.photos.npz"))[0]
        sample = first.name[: -len(".photos.npz")]
        crops, masks, lms = _views(hrn_data, recon, sample)
        # per-view starting points that disagree on the identity, as single-view estimates do
        # (the barely trained analyzer of the fixture gives nearly the same for every photo)
        with torch.no_grad():
            start = recon.system.hrn.net_recon.predict(recon._images(crops))
        g = torch.Generator().manual_seed(3)
        start = start._replace(id=start.id + 0.5 * torch.randn(start.id.shape, generator=g))
        cfg = MultiViewConfig(iterations=15, lr=1e-2)
        calls: list[tuple[int, int]] = []
        res = fit_multiview(
            recon,
            crops,
            masks,
            lms,
            cfg,
            coefficients=start,
            progress=lambda i, n: calls.append((i, n)),
        )
        assert calls == [(i, 15) for i in range(1, 16)]
    return recon, res, (crops, masks, lms, start)


def _expression_residual(recon, a: np.ndarray, b: np.ndarray) -> float:
    """Largest part of ``a - b`` (canonical vertices) outside the expression basis, mm."""
    model = recon.model
    basis = np.asarray(model.exp_basis, dtype=np.float64).reshape(-1, model.n_exp)
    d = (a - b).reshape(-1)
    coef, *_ = np.linalg.lstsq(basis, d, rcond=None)
    return float(np.abs(d - basis @ coef).max())


def test_views_share_identity_and_deformation(fitted):
    recon, res, _ = fitted
    assert len(res.views) == len(res.single) == len(res.naive) == 2
    a, b = res.views
    # the same deformation map: M1 - M0 is the same vertex offset in both views
    np.testing.assert_allclose(a.m1 - a.m0, b.m1 - b.m0, atol=1e-5)
    np.testing.assert_allclose(a.deformation, b.deformation, atol=1e-6)
    # the same identity: M0 differs between the views only along the expression basis ...
    assert _expression_residual(recon, a.m0, b.m0) < 1e-3
    # ... while the independent single-view results differ outside it
    s0, s1 = res.single
    assert _expression_residual(recon, s0.m0, s1.m0) > 0.5
    # each view keeps its own displacement map and pose
    assert not np.allclose(a.rotation, b.rotation)
    # the shared face: the identity with a neutral expression plus the deformation
    exp_zero = _expression_residual(recon, res.shared - (a.m1 - a.m0), a.m0)
    assert exp_zero < 1e-3


def test_naive_state_averages_identity_and_keeps_each_expression(fitted):
    _, res, _ = fitted
    # the model is linear: mean over views of M0 is unchanged by averaging the identity alone
    single = np.mean([r.m0 for r in res.single], axis=0)
    naive = np.mean([r.m0 for r in res.naive], axis=0)
    np.testing.assert_allclose(naive, single, atol=1e-4)
    assert not np.allclose(res.naive[0].m0, res.single[0].m0, atol=1e-3)


def test_fit_lowers_its_objective_and_its_landmark_error(fitted):
    _, res, _ = fitted
    first, last = res.history[0], res.history[-1]
    assert len(res.history) == 15 + 2
    assert last["total"] < first["total"]
    assert last["landmark"] < first["landmark"]


def _tv(x: np.ndarray) -> float:
    """Squared total variation of ``(B, C, H, W)`` maps, written out: twice the sum of the mean
    squared steps down the rows and along the columns."""
    return 2.0 * (np.mean(np.diff(x, axis=2) ** 2) + np.mean(np.diff(x, axis=3) ** 2))


def test_the_objective_is_the_weighted_sum_of_its_terms_on_the_maps_it_returns(fitted):
    """In every entry of the history the total is the sum of the nine terms, each weighted as
    the config says (the photometric weight on R1 and on R2 alike), and every term takes part;
    at the start (the naive state) and at the end (the fitted views) the map terms are those of
    the maps returned, in the model's units: the shared deformation's and the displacements'
    total variation, and the displacements' mean absolute value over the valid texels."""
    recon, res, _ = fitted
    cfg = MultiViewConfig(iterations=15, lr=1e-2)  # the fixture's
    # each term is weighted by the config's field of its name; both renders by photometric
    named = ("landmark", "tv_deformation", "tv_displacement", "displacement_l1", "contour")
    weights = {name: getattr(cfg, name) for name in (*named, "coefficient", "gamma")}
    weights["photo_mid"] = weights["photo_high"] = cfg.photometric
    for entry in res.history:
        assert set(entry) == {*weights, "total"}
        want = sum(w * entry[k] for k, w in weights.items())
        assert entry["total"] == pytest.approx(want, rel=1e-5)
    assert all(res.history[0][k] > 0 for k in weights), res.history[0]
    unit = recon.system.config.network.map_unit_mm
    for entry, recs in ((res.history[0], res.naive), (res.history[-1], res.views)):
        deformation = recs[0].deformation.transpose(2, 0, 1)[None] / unit
        displacement = np.stack([r.displacement for r in recs])[:, None] / unit
        valid = np.stack([r.valid for r in recs])[:, None]
        assert entry["tv_deformation"] == pytest.approx(_tv(deformation), rel=1e-4)
        assert entry["tv_displacement"] == pytest.approx(_tv(displacement), rel=1e-4)
        l1 = np.abs(displacement[valid]).sum() / valid.sum()
        assert entry["displacement_l1"] == pytest.approx(l1, rel=1e-4)


def test_each_view_keeps_its_de_retouched_albedo(fitted, model_path):
    """The views are rendered with their de-retouched albedo: the naive state, whose albedo
    coefficients are each view's own, has each view's single-view texture, which de-retouching
    changed; a reconstructor that writes the base texture fits with the base texture, as it
    reconstructs a photo alone."""
    from models.reconstruct import Reconstructor

    recon, res, (crops, masks, lms, _) = fitted
    for n, s in zip(res.naive, res.single, strict=True):
        np.testing.assert_allclose(n.texture, s.texture, atol=1e-5)
    base = Reconstructor.load(model_path, base_texture=True)
    with one_torch_thread():
        plain = fit_multiview(base, crops, masks, lms, MultiViewConfig(iterations=0))
        alone = base.run_crops(crops)
        retouched = recon.run_crops(crops)
    for p, a, r in zip(plain.single, alone, retouched, strict=True):
        np.testing.assert_allclose(p.texture, a.texture, atol=1e-6)
        # the fixture's barely trained de-retouching moves the texture by about 1e-3
        assert np.abs(r.texture - a.texture).max() > 1e-4


def test_view_means_and_summaries_leave_out_what_could_not_be_scored():
    """A view that cannot place a level scores NaN (or inf) there: the set's mean is over the
    other views, NaN where none scored; the summary's mean over the sets likewise (loops)."""
    from models.multiview import (
        MULTIVIEW_SCORES,
        MultiViewEvalRow,
        _mean_of_finite,
        summarise_multiview,
    )

    scores = np.array([[1.0, np.nan, np.nan, 4.0], [3.0, 2.0, np.nan, np.inf]])
    got = _mean_of_finite(scores)
    for j in range(scores.shape[1]):
        finite = [x for x in scores[:, j] if np.isfinite(x)]
        want = sum(finite) / len(finite) if finite else np.nan
        np.testing.assert_equal(got[j], want)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        values = rng.uniform(0.1, 2.0, len(MULTIVIEW_SCORES))
        values[i] = np.nan  # the first three scores each miss one set
        rows.append(MultiViewEvalRow(f"s{i}", "naive", 2, *values))
        rows[-1].normal_m2 = float("nan")  # and no set has this one
    summary = summarise_multiview(rows)
    assert list(summary) == ["naive"]
    for name in MULTIVIEW_SCORES:
        finite = [getattr(r, name) for r in rows if np.isfinite(getattr(r, name))]
        want = sum(finite) / len(finite) if finite else np.nan
        np.testing.assert_allclose(summary["naive"][name], want, rtol=1e-12)
    assert np.isnan(summary["naive"]["normal_m2"]) and np.isfinite(summary["naive"]["dist_m0"])


def test_the_earlier_fits_folders_replaced_are_only_its_views(tmp_path):
    """A new fit into a folder replaces the earlier fit's view folders that it does not redo,
    and only those that hold a reconstruction: a folder of that name that holds none (made by
    hand since) is left alone."""
    from models.multiview import _earlier_set

    out = tmp_path / "out"
    for name in ("a", "b", "c"):
        (out / name).mkdir(parents=True)
    for name in ("a", "c"):
        (out / name / "reconstruction.json").write_text("{}")
    views = [{"photo": f"/p/{n}.jpg", "folder": n} for n in ("a", "b", "c")]
    (out / "multiview.json").write_text(json.dumps({"views": views, "failed": []}))
    stale, gone = _earlier_set(out, {"c"}, [])
    assert stale == set()  # no photos.csv: no rows to forget
    assert gone == [out / "a"]
    (out / "multiview.json").write_text("{not json")
    assert _earlier_set(out, {"c"}, []) == (set(), [])


def test_the_lighting_regulariser_pulls_each_view_towards_monochrome_light(fitted):
    recon, res, (crops, masks, lms, start) = fitted
    assert res.history[0]["gamma"] > 0.0  # part of the default objective, as in the public code
    off = dict.fromkeys(
        ("photometric", "landmark", "tv_deformation", "tv_displacement", "displacement_l1"), 0.0
    )
    cfg = MultiViewConfig(iterations=5, lr=1e-2, contour=0.0, coefficient=0.0, gamma=10.0, **off)
    # coloured light: the red channel's SH bands 0.1 above the others
    tint = torch.zeros_like(start.gamma).reshape(-1, 3, 9)
    tint[:, 0] += 0.1
    coloured = start._replace(gamma=start.gamma + tint.reshape(start.gamma.shape))
    only = fit_multiview(recon, crops, masks, lms, cfg, coefficients=coloured)
    assert only.history[0]["gamma"] > 1e-3
    assert only.history[-1]["gamma"] < 0.5 * only.history[0]["gamma"]


def test_zero_iterations_returns_the_naive_state(fitted):
    recon, res, (crops, masks, lms, start) = fitted
    zero = fit_multiview(
        recon, crops, masks, lms, MultiViewConfig(iterations=0), coefficients=start
    )
    for z, n in zip(zero.views, res.naive, strict=True):
        np.testing.assert_allclose(z.m0, n.m0, atol=1e-5)
        np.testing.assert_allclose(z.m1, n.m1, atol=1e-5)


def test_the_deformation_map_can_start_at_zero(fitted):
    """``deformation_start="zero"``: M1 starts as M0 while the naive state keeps the views'
    averaged map, the fit then draws a deformation from the photos and lowers its objective; the
    networks' displacement maps are the start either way."""
    recon, res, (crops, masks, lms, start) = fitted
    cfg = MultiViewConfig(iterations=0, deformation_start="zero")
    zero = fit_multiview(recon, crops, masks, lms, cfg, coefficients=start)
    for z, n in zip(zero.views, res.naive, strict=True):
        assert np.abs(z.deformation).max() == 0.0
        np.testing.assert_allclose(z.m1, z.m0, atol=1e-6)
        np.testing.assert_allclose(z.m0, n.m0, atol=1e-5)  # the coefficients' start is the same
        np.testing.assert_allclose(z.displacement, n.displacement, atol=1e-6)
        assert np.abs(n.m1 - n.m0).max() > 1e-3  # the networks' start had a deformation
    for z, n in zip(zero.naive, res.naive, strict=True):  # the naive baseline stays the average
        np.testing.assert_allclose(z.m1, n.m1, atol=1e-5)
    moved = fit_multiview(recon, crops, masks, lms, replace(cfg, iterations=3), coefficients=start)
    assert moved.history[-1]["total"] < moved.history[0]["total"]
    assert np.abs(moved.views[0].deformation).max() > 0.0


def test_identical_views_stay_identical(fitted):
    recon, _, (crops, masks, lms, _) = fitted
    same = fit_multiview(
        recon, crops[[0, 0]], masks[[0, 0]], lms[[0, 0]], MultiViewConfig(iterations=3)
    )
    np.testing.assert_allclose(same.naive[0].m0, same.single[0].m0, atol=1e-5)
    np.testing.assert_allclose(same.views[0].m1, same.views[1].m1, atol=1e-5)
    np.testing.assert_allclose(same.views[0].displacement, same.views[1].displacement, atol=1e-6)


def test_bad_inputs_are_clear_errors(fitted):
    recon, _, (crops, masks, lms, start) = fitted
    with pytest.raises(ValueError, match="rows of coefficients"):
        fit_multiview(recon, crops[:1], masks[:1], lms[:1], coefficients=start)
    with pytest.raises(ValueError, match="crops"):
        fit_multiview(recon, crops[:, :100], masks, lms)
    with pytest.raises(ValueError, match="masks"):
        fit_multiview(recon, crops, masks[:1], lms)
    with pytest.raises(ValueError, match="landmarks"):
        fit_multiview(recon, crops, masks, lms[:, :5])
    bad = lms.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_multiview(recon, crops, masks, bad)


def test_reconstruct_multiview_writes_views_shared_face_and_report(
    model_path, tmp_path, monkeypatch
):
    pytest.importorskip("mediapipe")
    from PIL import Image
    from typer.testing import CliRunner

    import models.reconstruct as reconstruct_mod
    from benchmarks.synthetic import make_synthetic_benchmark
    from facehd.cli import app
    from facehd.mesh import load_mesh
    from models.reconstruct import RESERVED_NAMES

    named = []  # the folder names are worked out once per run
    real_output_names = reconstruct_mod.output_names
    # the shared texture, one known colour here, so that its preview can be checked
    colour = np.array([0.2, 0.5, 0.8])
    monkeypatch.setattr(
        reconstruct_mod, "blend_textures", lambda t, w, **k: np.broadcast_to(colour, t[0].shape)
    )
    monkeypatch.setattr(
        reconstruct_mod,
        "output_names",
        lambda *a, **k: named.append(a) or real_output_names(*a, **k),
    )

    root = make_synthetic_benchmark("multiview", tmp_path / "mv", seed=1, n_subjects=1)
    views = sorted((root / "images").rglob("view*.jpg"))
    assert len(views) == 3
    faceless = tmp_path / "faceless.png"
    Image.new("RGB", (320, 240), (90, 120, 150)).save(faceless)
    out = tmp_path / "rec"
    gone = tmp_path / "typo.jpg"
    args = ["reconstruct", *map(str, views), str(faceless), str(gone), "--multiview"]
    res = CliRunner().invoke(
        app, [*args, "--iterations", "2", "--checkpoint", str(model_path), "--out", str(out)]
    )
    assert res.exit_code == 1, res.output  # two inputs failed, the others were fitted
    assert "MV-HRN: 3 views" in res.output
    assert len(named) == 1
    for v in views:
        assert (out / v.stem / "detail.obj").is_file()
        # each view says it is one of a joint fit, of which views, and where the fit lies
        meta = json.loads((out / v.stem / "reconstruction.json").read_text())
        joint = meta["multiview"]
        assert joint["views"] == [w.stem for w in views] and joint["iterations"] == 2
        # each view is scored against its photo's landmarks, as a single photo is
        assert 0 < meta["landmark_nme"]["value"] < 1
        assert (out / v.stem / joint["shared_mesh"]).resolve() == (out / "shared.obj").resolve()
        assert (out / v.stem / joint["record"]).resolve() == (out / "multiview.json").resolve()
    assert (out / "shared.obj").is_file()
    # every file the run writes beside the views' folders is a name no photo's folder takes
    beside = {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert "shared_texture.png" in beside and beside <= RESERVED_NAMES
    # the shared face's preview: grey above, wearing the shared texture (drawn unlit) below,
    # five yaws on white
    preview = np.asarray(Image.open(out / "shared_turntable.png")).astype(float) / 255.0
    assert preview.shape == (512, 1280, 3)
    grey, worn = preview[:256], preview[256:]
    face = np.any(worn < 0.99, axis=-1)  # the same face in both rows
    assert 0.1 < face.mean() < 0.6
    assert (face & np.any(grey < 0.99, axis=-1)).sum() > 0.95 * face.sum()
    inner = face & np.roll(face, 2, 0) & np.roll(face, -2, 0)
    inner &= np.roll(face, 2, 1) & np.roll(face, -2, 1)
    assert np.abs(worn[inner] - colour).max() < 0.01
    assert np.ptp(grey[inner].mean(-1)) > 0.2  # the grey row is shaded
    # and its geometry is shared.obj's (shared_turntable, tested on its own below)
    recon = reconstruct_mod.Reconstructor.load(model_path)
    template = recon.run_crops(np.full((1, 224, 224, 3), 128, np.uint8))[0]
    shared = load_mesh(out / "shared.obj").vertices
    want = shared_turntable(recon, template, shared, np.broadcast_to(colour, (64, 64, 3)))
    # to the 8-bit rounding of the PNG: a view's own mid-level vertices, 0.07 mm from the shared
    # ones, move a few hundred pixels by more
    assert np.abs(preview - want).max() < 1.5 / 255
    report = json.loads((out / "multiview.json").read_text())
    assert [v["folder"] for v in report["views"]] == [v.stem for v in views]
    assert [f["photo"] for f in report["failed"]] == [str(gone), str(faceless)]
    assert "no such photo or folder" in report["failed"][0]["error"]
    assert report["config"]["iterations"] == 2
    assert report["precision"] == "float32" and report["checkpoint"].endswith(".pt")
    assert not list(out.glob("*.tmp*"))
    assert "one view only" not in res.output
    # one usable view: fitted, and said to be a single-view fit
    args = ["reconstruct", str(views[0]), str(faceless), "--multiview", "--iterations", "2"]
    res = CliRunner().invoke(app, [*args, "--checkpoint", str(model_path), "--out", str(out)])
    assert res.exit_code == 1 and "MV-HRN: 1 view," in res.output, res.output
    assert "one view only" in res.output
    # the earlier fit's other views belonged to the shared face just replaced: they are gone
    # from the folder and its index, and no failure of that fit is listed still
    import csv

    assert not (out / views[1].stem).exists() and not (out / views[2].stem).exists()
    with open(out / "photos.csv", newline="") as fh:
        rows = {r["photo"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {str(views[0].resolve()), str(faceless.resolve())}
    assert rows[str(views[0].resolve())]["output"] == views[0].stem
    report = json.loads((out / "multiview.json").read_text())
    assert [v["folder"] for v in report["views"]] == [views[0].stem]

    # a single-photo run into the fit's folder is refused before it writes anything: it would
    # put a face of its own where multiview.json lists a view of the shared one
    def files() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".reconstruct.lock"}

    before = files()
    args = ["reconstruct", str(views[0]), "--checkpoint", str(model_path), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--redo"])
    assert res.exit_code == 2 and "holds a multi-view fit" in res.output, res.output
    assert "--multiview" in res.output
    assert files() == before


def test_evaluate_multiview_scores_the_three_variants(hrn_data, model_path, tmp_path):
    import csv

    from typer.testing import CliRunner

    from facehd.cli import app
    from models.multiview import VARIANTS

    out = tmp_path / "mv.csv"
    args = ["evaluate", "--multiview", "--iterations", "2", "--checkpoint", str(model_path)]
    res = CliRunner().invoke(app, [*args, "--scans", str(hrn_data.scans), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    samples = {p.name[: -len(".photos.npz")] for p in hrn_data.scans.glob("*.photos.npz")}
    assert {(r["sample_id"], r["variant"]) for r in rows} == {
        (s, v) for s in samples for v in VARIANTS
    }
    for r in rows:
        assert r["views"] == "2"
        values = [float(r[k]) for k in ("dist_m0", "dist_m1", "normal_m1", "normal_m2")]
        assert all(0 < x < 50 for x in values)
        seen = [float(r[k]) for k in ("normal_seen_m1", "normal_seen_m2", "normal_m2_oracle")]
        assert all(0 < x < 3.2 for x in seen) and -1 <= float(r["disp_pearson_seen"]) <= 1
    assert all(v in res.output for v in VARIANTS)
    said = " ".join(res.output.split())
    assert "details at the skin point each texel shows" in said
    # FaceScape's scores: the table's cells are the CSV's means over the sets
    assert "FaceScape's CD and MNE: the levels aligned rigidly" in said
    table_rows = [line.replace("│", " ").split() for line in res.output.splitlines()]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        for k in range(3):
            cells = [variant, f"M{k}"] + [
                f"{np.mean([float(r[f'{score}_m{k}']) for r in mine]):.{digits}f}"
                for score, digits in (("cd_fs", 3), ("mne_fs", 4), ("cd_cam", 3), ("mne_cam", 4))
            ]
            assert cells in table_rows, (variant, k)
    # one view is no set; a folder without photo sets is a clear error
    res = CliRunner().invoke(app, [*args, "--scans", str(hrn_data.scans), "--views", "1"])
    assert res.exit_code != 0 and "views must be >= 2" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(app, [*args, "--scans", str(empty)])
    assert res.exit_code != 0 and "photos.npz" in res.output


def test_each_variant_is_scored_on_its_own_views(hrn_data, model_path, monkeypatch):
    """The single, naive and mv-hrn rows are the scores of the fit's single, naive and fitted
    reconstructions, each view's in its own place: the scoring is replaced by one that says
    which list and which view it was given (10 x list + view), so each row's mean over its two
    views is 10 x list + 0.5."""
    import models.multiview as mv
    from models.reconstruct import Reconstructor

    fits = []
    real_fit = mv.fit_multiview

    def fit(*args, **kwargs):
        fits.append(real_fit(*args, **kwargs))
        return fits[-1]

    def scores(recon, rec, truth, camera, gt_depth, view, max_points):
        lists = (fits[-1].single, fits[-1].naive, fits[-1].views)
        which = [k for k, recs in enumerate(lists) if recs[view] is rec]
        assert len(which) == 1
        return np.full(len(mv.MULTIVIEW_SCORES), 10.0 * which[0] + view)

    monkeypatch.setattr(mv, "fit_multiview", fit)
    monkeypatch.setattr(mv, "_view_scores", scores)
    with one_torch_thread():
        recon = Reconstructor.load(model_path)
        rows = mv.evaluate_multiview_synthetic(recon, hrn_data.scans, MultiViewConfig(iterations=0))
    assert len(rows) == 3 * len(fits) > 0
    for r in rows:
        assert r.views == 2
        assert r.dist_m0 == r.mne_cam_m2 == 10.0 * mv.VARIANTS.index(r.variant) + 0.5, r


def test_multiview_and_single_view_evaluation_take_the_same_scans(hrn_data, model_path, tmp_path):
    """Both list the held-out scans with models.evaluate.heldout_ids: a folder not there, a
    file, or a scan without its true surface are refused alike (the multi-view evaluation said
    there was no photos.npz with two photos, or fitted the other scans)."""
    import shutil

    from facehd.errors import InputFileError
    from models.evaluate import evaluate_synthetic
    from models.multiview import evaluate_multiview_synthetic
    from models.reconstruct import Reconstructor

    recon = Reconstructor.load(model_path)
    scans = tmp_path / "scans"
    shutil.copytree(hrn_data.scans, scans)
    ids = sorted(p.name[: -len(".photos.npz")] for p in scans.glob("*.photos.npz"))
    (scans / f"{ids[0]}.gt_m2.ply").unlink()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for where, said in (
        (tmp_path / "gone", "held-out folder does not exist"),
        (a_file, "is a file"),
        (scans, rf"{ids[0]}\.gt_m2\.ply: missing"),
    ):
        with pytest.raises(InputFileError, match=said):
            evaluate_synthetic(recon, where, failed=[])
        with pytest.raises(InputFileError, match=said):
            evaluate_multiview_synthetic(recon, where, MultiViewConfig(iterations=0), failed=[])


def test_output_names_number_repeated_stems():
    from pathlib import Path

    from models.reconstruct import output_names

    photos = [Path("a/x.jpg"), Path("b/x.png"), Path("y.jpg"), Path("c/x.jpg")]
    assert output_names(photos) == ["x", "x_2", "y", "x_3"]


def test_scans_that_cannot_be_scored_are_named(hrn_data, model_path, tmp_path):
    """A held-out scan without its photos (or, for sets of views, with one photo) is said to be
    left out, where the table used to cover the others without a word."""
    import shutil

    from typer.testing import CliRunner

    from facehd.cli import app

    scans = tmp_path / "scans"
    shutil.copytree(hrn_data.scans, scans)
    ids = sorted(p.name[: -len(".photos.npz")] for p in scans.glob("*.photos.npz"))
    assert len(ids) >= 2
    one = scans / f"{ids[1]}.photos.npz"
    with np.load(one) as z:
        arrays = {k: z[k] for k in z.files}
    per_view = {k: v[:1] for k, v in arrays.items() if v.ndim and v.shape[0] == 2}
    np.savez(one, **{**arrays, **per_view})
    args = ["evaluate", "--iterations", "2", "--checkpoint", str(model_path), "--scans", str(scans)]
    args.append("--no-facescape")  # the scans scored or not are the point here, not the scores
    res = CliRunner().invoke(app, [*args, "--multiview"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert f"not scored: {one}: one photo only, no set of views" in said
    assert "1 sets of views" in said
    # a scan whose photos file is damaged is named, the others fitted, and the exit says so
    for f in list(scans.glob(f"{ids[0]}.*")):
        shutil.copy(f, scans / f.name.replace(ids[0], "zz_damaged", 1))
    damaged = scans / "zz_damaged.photos.npz"
    damaged.write_bytes(damaged.read_bytes()[:300])
    res = CliRunner().invoke(app, [*args, "--multiview"])
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and f"not scored, unreadable: {damaged}" in said, res.output
    assert "1 sets of views" in said
    for f in scans.glob("zz_damaged.*"):
        f.unlink()
    one.unlink()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert f"not scored: {ids[1]} has no {ids[1]}.photos.npz in {scans}" in said


def test_sets_of_views_start_from_refined_coefficients(one_scan, model_path, one_thread):
    """With ``refine``, every variant starts from the views' coefficients refined with one shared
    identity: with no iterations of the joint fit, the single-view variant scores the
    reconstructions of Reconstructor.run_crops_refined(shared_identity=True), not the
    analyzer's."""
    from models.data import align_lab_photo
    from models.evaluate import (
        _photo_camera,
        camera_levels,
        heldout_ids,
        level_mesh,
        read_heldout_scans,
        score_levels,
        score_seed,
    )
    from models.multiview import evaluate_multiview_synthetic
    from models.reconstruct import Reconstructor
    from models.refine import RefineConfig

    recon = Reconstructor.load(model_path)
    cfg = RefineConfig(steps=3)
    none = MultiViewConfig(iterations=0)
    rows = evaluate_multiview_synthetic(recon, one_scan, none, views=2, refine=cfg)
    plain = evaluate_multiview_synthetic(recon, one_scan, none, views=2, facescape=False)
    truth, photos = read_heldout_scans(one_scan, heldout_ids(one_scan))[0]
    crops = [align_lab_photo(photos, v, recon.template) for v in range(2)]
    recs = recon.run_crops_refined(
        np.stack([c["image"] for c in crops]),
        np.stack([c["mask"] for c in crops]),
        np.stack([c["landmarks"] for c in crops]),
        cfg,
        shared_identity=True,
    )[0]
    seeds = [score_seed(truth.sample_id, v) for v in range(2)]
    scores = [score_levels(recon, r, truth, seed=s)[1] for s, r in zip(seeds, recs, strict=True)]
    expected = np.mean(scores, 0)
    (single,) = [r for r in rows if r.sample_id == truth.sample_id and r.variant == "single"]
    (unrefined,) = [r for r in plain if r.sample_id == truth.sample_id and r.variant == "single"]
    got = np.array([single.dist_m0, single.dist_m1, single.dist_m2])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # and they are not the analyzer's: far beyond the tolerance above
    assert abs(single.dist_m0 - unrefined.dist_m0) > 1e-4
    # placed in each photo's camera by the refined pose too: M0 of each refined view placed
    # by the protocol, the mean over the views
    placed = [
        camera_levels(
            recon, r, truth, _photo_camera(photos, v, crops[v]), [level_mesh(recon, r, r.m0)]
        )
        for v, r in enumerate(recs)
    ]
    assert single.cd_cam_m0 == pytest.approx(np.mean([p[0] for p in placed]), rel=1e-5)
    assert single.mne_cam_m0 == pytest.approx(np.mean([p[1] for p in placed]), rel=1e-5)


def test_sets_are_scored_at_the_skin_points_seen_as_single_photos_are(
    one_scan, model_path, one_thread
):
    """The multi-view rows' detail scores at the skin points seen and the oracle: with no
    iterations, the ``single`` variant's are the mean of the single-view evaluation's over the
    set's photos (another code path: one photo at a time through evaluate_synthetic)."""
    from models.evaluate import evaluate_synthetic, heldout_ids
    from models.multiview import evaluate_multiview_synthetic
    from models.reconstruct import Reconstructor

    recon = Reconstructor.load(model_path)
    (first,) = heldout_ids(one_scan)
    rows = evaluate_multiview_synthetic(recon, one_scan, MultiViewConfig(iterations=0), views=2)
    (single,) = [r for r in rows if r.sample_id == first and r.variant == "single"]
    photos, _ = evaluate_synthetic(recon, one_scan, views=2)
    mine = [p for p in photos if p.sample_id == first]
    assert [p.view for p in mine] == [0, 1]  # the first scan's photos: the same point seeds
    for name in ("disp_pearson_seen", "normal_seen_m1", "normal_seen_m2", "normal_m2_oracle"):
        want = np.mean([getattr(p, name) for p in mine])
        assert np.isfinite(want)
        assert getattr(single, name) == pytest.approx(want, rel=1e-3, abs=1e-4), name
    # FaceScape's CD and MNE, the levels aligned rigidly and placed in each photo's camera
    for score in ("cd_fs", "mne_fs", "cd_cam", "mne_cam"):
        for k in range(3):
            name = f"{score}_m{k}"
            want = np.mean([getattr(p, name) for p in mine])
            assert np.isfinite(want) and want > 0, name
            assert getattr(single, name) == pytest.approx(want, rel=1e-3, abs=1e-5), name
    # without FaceScape's scores (evaluate --no-facescape): those NaN, every other the same
    quick, _ = evaluate_synthetic(recon, one_scan, views=2, facescape=False)
    quick_sets = evaluate_multiview_synthetic(
        recon, one_scan, MultiViewConfig(iterations=0), views=2, facescape=False
    )
    for full_rows, quick_rows in ((photos, quick), (rows, quick_sets)):
        assert len(quick_rows) == len(full_rows)
        for a, b in zip(full_rows, quick_rows, strict=True):
            for f in fields(a):
                x, y = getattr(a, f.name), getattr(b, f.name)
                if f.name.startswith(("cd_", "mne_")):
                    assert np.isfinite(x) and np.isnan(y), f.name
                elif isinstance(x, float):
                    assert y == pytest.approx(x, rel=1e-9, abs=1e-12, nan_ok=True), f.name
                else:
                    assert x == y, f.name


def test_shared_turntable_draws_the_shared_vertices_without_displacement(model_path):
    from models.reconstruct import Reconstructor

    recon = Reconstructor.load(model_path)
    crop = np.full((1, 224, 224, 3), 128, np.uint8)
    like = recon.run_crops(crop)[0]
    rows, cols = np.mgrid[: like.displacement.shape[0], : like.displacement.shape[1]]
    like = replace(like, displacement=3.0 * np.sin(rows / 3.0) * np.cos(cols / 4.0))
    wide = like.m1 * np.array([1.25, 1.0, 1.0])  # another face: a quarter wider
    colour = np.array([0.9, 0.3, 0.1])
    out = shared_turntable(recon, like, wide, np.broadcast_to(colour, (32, 32, 3)))
    s = 256
    assert out.shape == (2 * s, 5 * s, 3)
    grey, worn = out[:s], out[s:]
    # the grey row: the wide face, smooth (not the view's face, not displaced)
    flat = np.zeros_like(like.displacement)
    np.testing.assert_allclose(grey, recon.turntable(replace(like, m1=wide, displacement=flat)))
    face = np.any(grey < 1.0, axis=-1)
    narrow = np.any(recon.turntable(replace(like, displacement=flat)) < 1.0, axis=-1)
    assert face.sum() > 1.1 * narrow.sum()
    bumpy = recon.turntable(replace(like, m1=wide))
    assert np.abs(bumpy - grey)[face].mean() > 0.02
    # the lower row wears the texture unlit: its colour, on the same pixels
    assert np.all(np.any(worn < 1.0, axis=-1) == face)
    inner = face & np.roll(face, 2, 0) & np.roll(face, -2, 0)
    inner &= np.roll(face, 2, 1) & np.roll(face, -2, 1)
    np.testing.assert_allclose(worn[inner], np.broadcast_to(colour, worn[inner].shape), atol=1e-3)

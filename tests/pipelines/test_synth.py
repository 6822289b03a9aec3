"""Synthetic scans: files, exact ground truth, determinism, units."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from facehd.distances import point_to_surface
from facehd.landmarks import NOW7_FROM_68, load_landmarks
from facehd.mesh import load_mesh
from facehd.morphable import facehd_synth
from facehd.transforms import Similarity, procrustes
from facehd.uv import sample_uv_map
from pipelines.synth import SynthConfig, synth_scans

SMALL = {"dense_resolution": 160}


def _truth(path: Path, sid: str) -> tuple[dict, Similarity]:
    gt = dict(np.load(path / f"{sid}.gt.npz"))
    return gt, Similarity(float(gt["scale"]), gt["rotation"], gt["translation"])


@pytest.fixture(scope="module")
def default_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth_scans(out, SynthConfig(subjects=1, expressions=2, seed=3))
    return out


def test_files_and_density(default_scan: Path) -> None:
    for sid in ("s000_e00", "s000_e01"):
        for suffix in (".ply", ".lm7.txt", ".gt.npz", ".gt_m1.ply", ".gt_m2.ply"):
            assert (default_scan / f"{sid}{suffix}").is_file()
        scan = load_mesh(default_scan / f"{sid}.ply")
        assert len(scan.vertices) >= 100_000
    assert not list(default_scan.glob("*.tmp"))


def test_scan_lies_on_the_true_detailed_surface(default_scan: Path) -> None:
    gt, t_model_from_scan = _truth(default_scan, "s000_e01")
    scan = load_mesh(default_scan / "s000_e01.ply")
    m2 = load_mesh(default_scan / "s000_e01.gt_m2.ply")
    pts = t_model_from_scan.apply(scan.vertices)
    d = point_to_surface(pts, m2).distances
    # most of the scan is the face surface plus ~0.05 mm noise; neck and hair are far from it
    face = d < 1.0
    assert face.mean() > 0.6
    assert 0.02 < np.median(d[face]) < 0.08
    # isotropic noise of SynthConfig.noise_mm per axis: its part along the normal has that RMS
    assert np.sqrt(np.mean(d[face] ** 2)) == pytest.approx(SynthConfig().noise_mm, rel=0.05)
    assert (d > 5.0).mean() > 0.05  # the extra geometry exists


def test_true_m1_is_model_plus_sampled_deformation(default_scan: Path) -> None:
    model = facehd_synth()
    gt, _ = _truth(default_scan, "s000_e01")
    m1 = load_mesh(default_scan / "s000_e01.gt_m1.ply")
    m0 = model.vertices(gt["identity"], gt["expression"])
    expected = m0 + sample_uv_map(gt["deformation"], model.uvs)
    np.testing.assert_allclose(m1.vertices, expected, atol=1e-9)
    np.testing.assert_allclose(m1.uvs, model.uvs, atol=1e-12)
    assert gt["deformation"].shape == (64, 64, 3) and gt["displacement"].shape == (256, 256)
    rms = np.sqrt(np.mean(np.sum((m1.vertices - m0) ** 2, axis=1)))
    assert rms == pytest.approx(SynthConfig().deformation_mm, rel=1e-9)
    # no pose change explains any of it: the best similarity from M0 onto M1 barely moves M0
    # (a smooth random field has ~1 mm of rigid motion in it before it is projected out)
    t = procrustes(m0, m1.vertices)
    assert np.sqrt(np.mean(np.sum((t.apply(m0) - m0) ** 2, axis=1))) < 0.01
    amp = np.abs(gt["displacement"])
    assert 0.05 < amp.max() < 1.0 and np.percentile(amp, 50) < 0.2
    # neutral first, then an expression, same identity
    gt0, _ = _truth(default_scan, "s000_e00")
    assert not gt0["expression"].any() and gt["expression"].any()
    # an expression activates 2 to 4 components, each positively (negative values fold lips)
    assert 2 <= np.count_nonzero(gt["expression"]) <= 4 and gt["expression"].min() >= 0
    np.testing.assert_array_equal(gt0["identity"], gt["identity"])


def test_landmarks_are_the_true_ones_with_noise(default_scan: Path) -> None:
    gt, t_model_from_scan = _truth(default_scan, "s000_e01")
    lm = t_model_from_scan.apply(load_landmarks(default_scan / "s000_e01.lm7.txt"))
    err = np.linalg.norm(lm - gt["landmarks68"][list(NOW7_FROM_68)], axis=1)
    assert err.max() < 4.0 and 0.1 < err.mean() < 2.5
    iod = np.linalg.norm(gt["landmarks68"][36] - gt["landmarks68"][45])
    assert 80 < iod < 110  # outer eye corners of an adult face


def test_rotation_is_proper_and_random(default_scan: Path) -> None:
    _, a = _truth(default_scan, "s000_e00")
    _, b = _truth(default_scan, "s000_e01")
    for t in (a, b):
        np.testing.assert_allclose(t.rotation @ t.rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(t.rotation) == pytest.approx(1.0)
    assert np.abs(a.rotation - b.rotation).max() > 0.1


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    cfg = SynthConfig(subjects=1, expressions=1, seed=11, **SMALL)
    synth_scans(tmp_path / "a", cfg)
    synth_scans(tmp_path / "b", cfg)
    synth_scans(tmp_path / "c", SynthConfig(subjects=1, expressions=1, seed=12, **SMALL))
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_units_in_metres(tmp_path: Path) -> None:
    synth_scans(tmp_path, SynthConfig(subjects=1, expressions=1, seed=5, units="m", **SMALL))
    gt, t = _truth(tmp_path, "s000_e00")
    assert t.scale == 1000.0
    lm = load_landmarks(tmp_path / "s000_e00.lm7.txt")
    width = np.linalg.norm(lm[0] - lm[3])  # outer eye corners, metres
    assert 0.07 < width < 0.12
    scan = load_mesh(tmp_path / "s000_e00.ply")
    assert np.ptp(scan.vertices, axis=0).max() < 1.0


def test_bad_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="units"):
        synth_scans(tmp_path, SynthConfig(units="inch"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        synth_scans(tmp_path, SynthConfig(subjects=0))


def test_smooth_fields_have_unit_rms_per_channel() -> None:
    from pipelines.synth import smooth_field

    field = smooth_field(np.random.default_rng(2), 32, 3)
    np.testing.assert_allclose(np.sqrt(np.mean(field**2, axis=(0, 1))), 1.0, rtol=1e-9)


def test_expressions_activate_two_to_four_components_positively() -> None:
    from pipelines.synth import _sample_coefficients

    model = facehd_synth()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        _, expression = _sample_coefficients(model, rng, neutral=False)
        assert 2 <= np.count_nonzero(expression) <= 4 and expression.min() >= 0
        scaled = expression / model.exp_std
        assert scaled[expression > 0].min() >= 0.4 and scaled.max() <= 1.2
        assert not _sample_coefficients(model, rng, neutral=True)[1].any()


def test_the_hair_cap_stays_behind_the_face() -> None:
    """5 mm behind the face's backmost vertex, so that it never covers the face in a render."""
    from pipelines.synth import _hair_cap

    model = facehd_synth()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        v = model.vertices(rng.normal(size=model.n_id) * model.id_std, np.zeros(model.n_exp))
        cap = _hair_cap(v, rng)
        assert cap.vertices[:, 2].max() <= v[:, 2].min() - 5.0
        assert np.ptp(cap.vertices[:, 1]) > 50.0  # and it is a cap, not a sliver


def test_neck_and_hair_face_outwards() -> None:
    """A scanner's normals point out of the head: so must the extras' windings (renders cull
    back faces)."""
    from pipelines.synth import _hair_cap, _neck

    model = facehd_synth()
    verts = model.vertices()
    rng = np.random.default_rng(0)
    for part, axis_only in (
        (_neck(verts, verts[model.landmarks68], rng), True),
        (_hair_cap(verts, rng), False),
    ):
        tri = part.vertices[part.faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        centroid = tri.mean(axis=1)
        outward = centroid - part.vertices.mean(axis=0)
        if axis_only:  # a vertical tube: away from its axis
            outward[:, 1] = 0.0
        big = np.linalg.norm(normal, axis=1) > 1e-9
        assert np.all(np.sum(normal[big] * outward[big], axis=1) > 0)


def test_a_folder_keeps_one_set_of_settings(tmp_path: Path) -> None:
    """Another seed or other units into a finished folder are refused, naming the difference;
    the same settings resume, and more subjects extend the folder."""
    from facehd.errors import InputFileError

    cfg = SynthConfig(subjects=1, expressions=1, seed=11, **SMALL)
    synth_scans(tmp_path, cfg)
    before = _digest(tmp_path)
    with pytest.raises(InputFileError, match=r"seed 11 there, 12 now"):
        synth_scans(tmp_path, SynthConfig(subjects=1, expressions=1, seed=12, **SMALL))
    with pytest.raises(InputFileError, match=r"units 'mm' there, 'm' now"):
        synth_scans(tmp_path, SynthConfig(subjects=1, expressions=1, seed=11, units="m", **SMALL))
    assert _digest(tmp_path) == before  # nothing written by the refused runs
    synth_scans(tmp_path, SynthConfig(subjects=2, expressions=1, seed=11, **SMALL))
    after = _digest(tmp_path)
    assert {k: after[k] for k in before} == before
    # the second subject is the one a fresh folder gets
    synth_scans(tmp_path / "fresh", SynthConfig(subjects=2, expressions=1, seed=11, **SMALL))
    fresh = _digest(tmp_path / "fresh")
    assert all(after[k] == fresh[k] for k in fresh if k.startswith("s001"))
    (tmp_path / "synth.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputFileError, match="synth.json.*not a facehd synth settings record"):
        synth_scans(tmp_path, cfg)


def test_scans_and_benchmarks_refuse_each_others_folders_by_name(tmp_path: Path) -> None:
    """A synthetic benchmark's folder given to synth without --benchmark, and the reverse, are
    refused saying what the folder holds (its record was called no synth record at all)."""
    from benchmarks.synthetic import make_synthetic_benchmark
    from facehd.errors import InputFileError

    bench = make_synthetic_benchmark("now", tmp_path / "bench", n_subjects=1)
    with pytest.raises(InputFileError, match=r"bench: holds a synthetic now benchmark"):
        synth_scans(bench, SynthConfig(subjects=1, expressions=1, **SMALL))
    scans = tmp_path / "scans"
    synth_scans(scans, SynthConfig(subjects=1, expressions=1, **SMALL))
    with pytest.raises(InputFileError, match=r"scans: holds synthetic scans \(facehd synth"):
        make_synthetic_benchmark("now", scans, n_subjects=1)


def test_synth_cli_refuses_other_settings(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facehd.cli import app
    from pipelines.synth import record_settings

    record_settings(tmp_path, SynthConfig(seed=4))
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--seed", "5"])
    assert result.exit_code == 2
    assert "seed 4 there, 5 now" in " ".join(result.output.split())
    assert not list(tmp_path.glob("s000_e00*"))


def test_synth_cli_says_when_the_folder_holds_more_scans_than_asked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facehd.cli import app

    args = ["synth", "--out", str(tmp_path), "--expressions", "1", "--subjects"]
    assert CliRunner().invoke(app, [*args, "2"]).exit_code == 0
    result = CliRunner().invoke(app, [*args, "1"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "1 scans in" in text
    assert "holds 2 scans, 1 more than asked" in text
    result = CliRunner().invoke(app, [*args, "2"])
    assert "more than asked" not in result.output


def test_photos_per_scan_are_fixed_once_made(tmp_path: Path) -> None:
    from facehd.errors import InputFileError
    from pipelines.synth import record_settings

    record_settings(tmp_path, SynthConfig(photos=0))
    record_settings(tmp_path, SynthConfig(photos=2))  # photos added to a folder without them
    record_settings(tmp_path, SynthConfig(photos=0))  # a run that adds none keeps them
    assert '"photos": 2' in (tmp_path / "synth.json").read_text()
    with pytest.raises(InputFileError, match="photos 2 there, 3 now"):
        record_settings(tmp_path, SynthConfig(photos=3))


def test_colours_are_the_subjects_albedo_on_the_same_geometry(tmp_path: Path) -> None:
    """--colours adds vertex colours and changes nothing else: the same vertices, faces and
    truth; each colour is the subject's albedo near the point (checked against the albedo of
    the nearest model vertex, by brute force); both expressions share the subject's skin."""
    import json

    from typer.testing import CliRunner

    from facehd.cli import app
    from pipelines.synth import _rng

    plain, coloured = tmp_path / "plain", tmp_path / "coloured"
    synth_scans(plain, SynthConfig(subjects=1, expressions=2, seed=6, **SMALL))
    synth_scans(coloured, SynthConfig(subjects=1, expressions=2, seed=6, colours=True, **SMALL))
    a, b = _digest(plain), _digest(coloured)
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == {"s000_e00.ply", "s000_e01.ply", "synth.json"}
    model = facehd_synth()
    coeffs = _rng(6, 0, 3).normal(size=model.n_tex) * model.tex_std
    albedo = np.clip(model.albedo(coeffs), 0.0, 1.0)
    for sid in ("s000_e00", "s000_e01"):
        s0, s1 = load_mesh(plain / f"{sid}.ply"), load_mesh(coloured / f"{sid}.ply")
        np.testing.assert_array_equal(s0.vertices, s1.vertices)
        np.testing.assert_array_equal(s0.faces, s1.faces)
        assert s0.colors is None and s1.colors is not None
        assert s1.colors.min() >= 0.0 and s1.colors.max() <= 1.0 and s1.colors.std(0).min() > 0.05
        gt, t = _truth(coloured, sid)
        m1 = load_mesh(coloured / f"{sid}.gt_m1.ply")
        idx = np.random.default_rng(0).choice(s1.n_vertices, 300, replace=False)
        pts = t.apply(s1.vertices[idx])
        d2 = ((pts[:, None, :] - m1.vertices[None, :, :]) ** 2).sum(-1)
        face = np.sqrt(d2.min(axis=1)) < 1.0  # on the face (not the neck or the hair cap)
        nearest = albedo[d2.argmin(axis=1)]
        diff = np.abs(s1.colors[idx] - nearest).max(axis=1)[face]
        assert face.sum() > 100 and np.median(diff) < 0.02 and diff.max() < 0.15, diff.max()
    # the setting is part of the folder's record; a record from before it existed means off
    from facehd.errors import InputFileError

    with pytest.raises(InputFileError, match=r"colours False there, True now"):
        synth_scans(plain, SynthConfig(subjects=1, expressions=2, seed=6, colours=True, **SMALL))
    record = json.loads((plain / "synth.json").read_text())
    del record["settings"]["colours"]
    (plain / "synth.json").write_text(json.dumps(record))
    synth_scans(plain, SynthConfig(subjects=1, expressions=2, seed=6, **SMALL))
    assert _digest(plain) == a
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "cli"), "--subjects", "1",
                                   "--expressions", "1", "--colours"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert load_mesh(tmp_path / "cli" / "s000_e00.ply").colors is not None
    said = " ".join(res.output.split())  # Rich wraps long paths
    assert "1 scans in" in said and "(made now)" in said
    # a second run that adds a scan says which one it made and which it kept
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "cli"), "--subjects", "1",
                                   "--expressions", "2", "--colours"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "(1 made now, 1 by an earlier run)" in " ".join(res.output.split())


def test_files_synth_did_not_make_and_a_file_as_out_are_refused(tmp_path: Path) -> None:
    """A folder without synth's record holding a scan of the same name (someone's) is refused,
    the file untouched, where it was replaced (or kept and reported as made now); files of
    other names do not matter. A file as --out is one clear line (synth, its benchmarks,
    quickstart), not an OS error."""
    from typer.testing import CliRunner

    from facehd.cli import app

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (other / "s000_e00.ply").write_text("my own scan")
    args = ["synth", "--out", str(other), "--subjects", "1", "--expressions", "1"]
    res = CliRunner().invoke(app, args)
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "holds files named as facehd synth's (s000_e00.ply)" in said
    assert (other / "s000_e00.ply").read_text() == "my own scan"
    (other / "s000_e00.ply").unlink()
    assert CliRunner().invoke(app, args).exit_code == 0  # notes.txt is no scan of its
    assert (other / "notes.txt").read_text() == "mine"
    assert CliRunner().invoke(app, args).exit_code == 0  # its own files, with its record
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    for cmd in (
        ["synth", "--out", str(a_file)],
        ["synth", "--benchmark", "now", "--out", str(a_file)],
        ["quickstart", "--out", str(a_file)],
    ):
        res = CliRunner().invoke(app, cmd)
        said = " ".join(res.output.split())
        assert res.exit_code == 2 and "must be a folder, and this is a file" in said, cmd
    assert a_file.read_text() == "x"
    # quickstart: what is in the way of a later step is said before the first step works
    for inside, said_there in (
        ("now/readme.txt", "holds files that facehd synth --benchmark did not write"),
        ("priors.h5", "exists and is not a facehd dataset (not an HDF5 file)"),
    ):
        out = tmp_path / f"qs-{inside.split('/')[0]}"
        (out / inside).parent.mkdir(parents=True)
        (out / inside).write_text("someone's")
        res = CliRunner().invoke(app, ["quickstart", "--out", str(out)])
        assert res.exit_code == 2 and said_there in " ".join(res.output.split()), res.output
        assert sorted(p.name for p in out.iterdir()) == [inside.split("/")[0]]
        assert (out / inside).read_text() == "someone's"
    # a quickstart of another seed there: its scans, benchmark and priors named at once, before
    # anything is written (each step stopped on its own, one rerun after another, the last
    # after writing new scans)
    from benchmarks.synthetic import make_synthetic_benchmark

    out = tmp_path / "qs-seed"
    synth_scans(out / "synth", SynthConfig(subjects=1, expressions=1, seed=0, **SMALL))
    make_synthetic_benchmark("now", out / "now", seed=0)
    (out / "priors.h5.shards").mkdir()  # the priors build of those scans, part way

    def files() -> list:  # the folders' own times move with a check of their writability
        return sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())

    before = files()
    res = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--seed", "1"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "holds what this quickstart cannot continue" in said, said
    assert "synth: holds synthetic scans made with other settings (seed 0 there, 1 now" in said
    assert "now: holds a synthetic benchmark made with other settings" in said
    assert "priors.h5: fitted from the scans of the other settings" in said
    assert files() == before


def test_more_than_asked_counts_only_synths_own_scans(tmp_path: Path) -> None:
    """The note on scans beyond the ones asked counts this command's own scans (``sNNN_eKK.ply``
    at the top of --out) and names them; meshes in sub-folders (the user's, named like a scan
    or not) are none of its own."""
    from typer.testing import CliRunner

    from facehd.cli import app

    args = ["synth", "--out", str(tmp_path), "--expressions", "1", "--subjects", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("head.ply", "s004_e00.ply", "other.obj"):
        (mine / name).write_bytes((tmp_path / "s000_e00.ply").read_bytes())
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "more than asked" not in result.output, result.output
    for sid in ("s001_e00", "s1000_e00"):  # the command's own, beyond the asked ones
        for suffix in (".ply", ".gt_m1.ply", ".gt_m2.ply"):
            (tmp_path / f"{sid}{suffix}").write_bytes(b"")
    text = " ".join(CliRunner().invoke(app, args).output.split())
    assert "holds 3 scans, 2 more than asked (s001_e00, s1000_e00, made by an earlier" in text


def test_requests_the_disk_cannot_hold_are_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_scan: Path
) -> None:
    """A count whose estimated size exceeds the free space is refused up front with the size
    and time, for scans and benchmarks, and no folder is made; scans finished before are not
    counted. The estimate is the size of real scans to within 10%, at two resolutions."""
    from typer.testing import CliRunner

    import facehd.diskspace
    from facehd.cli import app
    from facehd.errors import InputFileError
    from pipelines.synth import check_scans_room, scan_estimate

    written = sorted(p for p in default_scan.iterdir() if p.name.startswith("s000_e0"))
    size, seconds = scan_estimate(SynthConfig())
    assert abs(sum(p.stat().st_size for p in written) / 2 - size) < 0.1 * size
    assert seconds > 0
    # --subjects 1000000 on the real disk: 2,000,000 scans of 17 MB
    huge = tmp_path / "huge"
    res = CliRunner().invoke(app, ["synth", "--out", str(huge), "--subjects", "1000000"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "2,000,000 scans to write, about 34 TB (17 MB a scan)" in said
    assert "days on one core" in said and not huge.exists()
    res = CliRunner().invoke(app, ["synth", "--benchmark", "now", "--out", str(huge),
                                   "--subjects", "1000000"])  # fmt: skip
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "1,000,000 subjects to write, about 8.7 TB" in said, said
    assert not huge.exists()
    # a disk with room for two scans and a half
    monkeypatch.setattr(facehd.diskspace, "free_bytes", lambda path: int(2.5 * size))
    res = CliRunner().invoke(app, ["synth", "--out", str(huge), "--subjects", "3"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "6 scans to write" in said and "(room for about 2)" in said
    assert not huge.exists()
    # scans finished before need no room: 1 of 3 there, 2 to write fit; 3 of 4 do not
    small = SynthConfig(subjects=1, expressions=1, seed=2, **SMALL)
    synth_scans(tmp_path / "s", small)
    small_size, _ = scan_estimate(small)  # the dense surface's share follows its resolution
    made = sum(p.stat().st_size for p in (tmp_path / "s").iterdir() if p.name.startswith("s0"))
    assert abs(made - small_size) < 0.1 * small_size, (made, small_size)
    monkeypatch.setattr(facehd.diskspace, "free_bytes", lambda path: int(2.5 * small_size))
    check_scans_room(tmp_path / "s", SynthConfig(subjects=3, expressions=1, seed=2, **SMALL))
    with pytest.raises(InputFileError, match="3 scans to write"):
        check_scans_room(tmp_path / "s", SynthConfig(subjects=4, expressions=1, seed=2, **SMALL))


def test_npz_writer_is_deterministic_and_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    import io
    import zipfile

    from facehd import csvtext
    from pipelines.synth import save_npz_deterministic

    a, b = np.arange(12.0).reshape(3, 4), np.array([1, 2, 3], dtype=np.int32)
    first = save_npz_deterministic(tmp_path / "x.npz", b=b, a=a).read_bytes()
    second = save_npz_deterministic(tmp_path / "y.npz", a=a, b=b).read_bytes()
    assert first == second  # the bytes depend on the arrays alone (no dates, no order)
    with np.load(tmp_path / "x.npz") as z:
        np.testing.assert_array_equal(z["a"], a)
        np.testing.assert_array_equal(z["b"], b)
    assert [i.date_time for i in zipfile.ZipFile(io.BytesIO(first)).infolist()] == [
        (1980, 1, 1, 0, 0, 0)
    ] * 2

    def cut(src, dst):  # the rename never happens: an interrupt just before it
        raise KeyboardInterrupt

    monkeypatch.setattr(csvtext.os, "replace", cut)
    with pytest.raises(KeyboardInterrupt):
        save_npz_deterministic(tmp_path / "z.npz", a=a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz", "y.npz"]


def test_cli_says_photos_were_added_to_an_earlier_runs_scans(tmp_path: Path) -> None:
    """Photos asked of a folder made without them are added to its scans (whose other files
    stay the same bytes), and the summary says so rather than calling those scans made now."""
    from typer.testing import CliRunner

    from facehd.cli import app

    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--expressions", "1"]
    res = CliRunner().invoke(app, [*args, "--subjects", "1"])
    assert res.exit_code == 0, res.output
    before = {p.name: p.read_bytes() for p in out.glob("s000_e00.*")}
    res = CliRunner().invoke(app, [*args, "--subjects", "2", "--photos", "1"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "2 scans in" in said and "(1 made now, photos added to 1 made by an earlier run)" in said
    assert (out / "s000_e00.photos.npz").is_file() and (out / "s001_e00.photos.npz").is_file()
    assert {n: (out / n).read_bytes() for n in before} == before
    res = CliRunner().invoke(app, [*args, "--subjects", "2", "--photos", "1"])
    assert res.exit_code == 0, res.output
    assert "(2 by an earlier run)" in " ".join(res.output.split())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subjects": 0}, "subjects and expressions must be >= 1"),
        ({"expressions": 0}, "subjects and expressions must be >= 1"),
        ({"units": "inch"}, r"units must be one of \['cm', 'm', 'mm'\], got 'inch'"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
    ],
)
def test_settings_out_of_range_are_refused_before_any_scan(tmp_path, changes, message) -> None:
    out = tmp_path / "scans"
    with pytest.raises(ValueError, match=message):
        synth_scans(out, SynthConfig(**{"subjects": 1, "expressions": 1, **changes}))
    assert not any(out.glob("*.ply")) and not (out / "synth.json").exists()

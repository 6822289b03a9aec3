"""``facehd landmarks``: scan discovery, destinations, resuming, the CSV, and a run over a folder
with a synthetic face, a sphere, an empty file and a scan in no plausible unit."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from facehd.cli import app
from facehd.detect import mediapipe_available
from facehd.errors import InputFileError
from facehd.landmarks import NOW7_FROM_68, load_landmarks, written_by_facehd
from facehd.mesh import Mesh, load_mesh, save_mesh
from pipelines.landmarks import (
    CSV_NAME,
    LandmarkRow,
    LandmarksConfig,
    _write_csv,
    detect_landmarks7,
    find_scans,
    landmark_scan,
    landmark_scans,
    read_rows,
)

runner = CliRunner()


def _touch_mesh(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    box = trimesh.creation.box(extents=(200.0, 200.0, 200.0))
    return save_mesh(path, Mesh(np.asarray(box.vertices, float), np.asarray(box.faces, np.int64)))


def test_find_scans_skips_tool_outputs(tmp_path: Path) -> None:
    for name in ("a.ply", "b/c.obj", "s000_e00.ply", "s000_e00.gt_m1.ply", "x.m0.ply", "d.ply"):
        _touch_mesh(tmp_path / name)
    _touch_mesh(tmp_path / "d.obj")  # d.ply and d.obj side by side keep their suffixes
    (tmp_path / "notes.txt").write_text("not a mesh")
    for name in ("e.stl", "f.off", "g.wrl"):  # the other scan formats are found too
        (tmp_path / name).write_text("any content: read later, failing there if bad")
    # files put aside by an appended suffix are not scans
    for name in ("a.lm7.txt.off", "old.obj.off", "b/c.ply.stl"):
        (tmp_path / name).write_text("put aside")
    ids = [sid for sid, _ in find_scans(tmp_path)]
    assert ids == ["a", "b/c", "d.obj", "d.ply", "e", "f", "g", "s000_e00"]
    with pytest.raises(InputFileError, match="does not exist"):
        find_scans(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no scan found"):
        find_scans(tmp_path / "empty")


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = [
        LandmarkRow(
            "a",
            "a.ply",
            "ok",
            confidence=0.5,
            now7_spread_max_mm=1.25,
            views="5/5",
            smoothing_mm=1.5,
        ),
        LandmarkRow("b", "b.ply", "failed", "no-face", "nothing found, anywhere"),
    ]
    path = _write_csv(tmp_path / CSV_NAME, rows)
    back = read_rows(path)
    assert back == {"a": rows[0], "b": rows[1]}
    assert read_rows(tmp_path / "none.csv") == {}


def test_given_landmarks_that_cannot_be_read_fail_the_scan(tmp_path: Path) -> None:
    """A scan skipped for landmarks someone gave, which build-priors then refuses (10 points,
    NaN), said 'skipped' and the run exited 0: it now fails naming the file and its problem, and
    the file is kept."""
    scans = tmp_path / "scans"
    for name in ("count", "nan", "fine"):
        _touch_mesh(scans / f"{name}.ply")
    np.save(scans / "count_lmks.npy", np.ones((10, 3)))
    (scans / "nan.lm7.txt").write_text("1 2 nan\n" + "1 2 3\n" * 6)
    np.save(scans / "fine_lmks.npy", np.arange(21.0).reshape(7, 3))
    result = landmark_scans(scans, LandmarksConfig())
    by_id = {r.scan_id: r for r in result.rows}
    assert by_id["fine"].status == "skipped" and by_id["fine"].reason == "given"
    for sid, problem in (("count", "found 10"), ("nan", "NaN")):
        row = by_id[sid]
        assert row.status == "failed" and row.reason == "given", row
        assert "cannot be read" in row.detail and problem in row.detail
    assert result.n_failed == 2 and (scans / "nan.lm7.txt").read_text().startswith("1 2 nan")


def test_existing_landmarks_are_kept_without_running_the_detector(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    _touch_mesh(scans / "done.ply")
    _touch_mesh(scans / "given.ply")
    (scans / "done.lm68.txt").write_text("0 0 0\n" * 68)
    (scans / "done.lm7.txt").write_text("0 0 0\n" * 7)
    (scans / "given.lm7.txt").write_text("1 1 1\n" * 7)
    result = landmark_scans(scans, LandmarksConfig())
    by_id = {r.scan_id: r for r in result.rows}
    assert by_id["done"].status == "skipped" and by_id["done"].reason == "done"
    assert by_id["given"].status == "skipped" and by_id["given"].reason == "given"
    assert (scans / "given.lm7.txt").read_text() == "1 1 1\n" * 7  # never replaced
    assert result.csv_path == scans / CSV_NAME and result.n_skipped == 2
    assert set(read_rows(result.csv_path)) == {"done", "given"}
    # --meshlab on a folder done before: MeshLab's file from the points found then, no detection
    result = landmark_scans(scans, LandmarksConfig(meshlab=True))
    assert result.n_skipped == 2
    np.testing.assert_array_equal(
        load_landmarks(scans / "done_picked_points.pp"), np.zeros((68, 3))
    )
    assert not (scans / "given_picked_points.pp").exists()
    # a damaged .lm68.txt of a scan done before: no MeshLab file, said in its row, the rest goes on
    _touch_mesh(scans / "broken.ply")
    (scans / "broken.lm68.txt").write_text("not numbers\n")
    result = landmark_scans(scans, LandmarksConfig(meshlab=True))
    by_id = {r.scan_id: r for r in result.rows}
    assert result.n_skipped == 3 and "no MeshLab file written" in by_id["broken"].detail
    assert "broken.lm68.txt" in by_id["broken"].detail
    assert not (scans / "broken_picked_points.pp").exists()
    # a scan done before whose .lm7.txt was deleted gets it back from its 68 points, and one
    # asked for an overlay it never had says how to get it; neither is detected again
    lm68 = np.arange(204.0).reshape(68, 3)
    (scans / "done.lm68.txt").write_text("".join(f"{x} {y} {z}\n" for x, y, z in lm68))
    (scans / "done.lm7.txt").unlink()
    result = landmark_scans(scans, LandmarksConfig(overlays=str(tmp_path / "png")))
    by_id = {r.scan_id: r for r in result.rows}
    np.testing.assert_array_equal(load_landmarks(scans / "done.lm7.txt"), lm68[list(NOW7_FROM_68)])
    assert "done.lm7.txt written again from done.lm68.txt" in by_id["done"].detail
    assert "no overlay: found by an earlier run" in by_id["done"].detail


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path: Path) -> None:
    from facehd.errors import check_output_folder

    scans = tmp_path / "scans"
    _touch_mesh(scans / "a.ply")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputFileError, match="must be a folder, and this is a file"):
        landmark_scans(scans, LandmarksConfig(out=str(blocker)))
    with pytest.raises(InputFileError, match="cannot write the overlays here"):
        landmark_scans(scans, LandmarksConfig(overlays=str(blocker / "png")))
    assert not (scans / CSV_NAME).exists()
    assert check_output_folder(tmp_path / "new" / "deep", "x").is_dir()


class _CentroidLandmarker:
    """Stands in for the detector: 68 points around the scan's centroid (a scan moved by d has
    its points moved by d), counting its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.no_face: set[str] = set()
        """File names it finds no face on."""
        self.overlay: np.ndarray | None = None
        """The overlay image it draws (None: none)."""

    def detect(self, mesh: Mesh, *, name: str = "", texture: object = None) -> object:
        from facehd.scan_landmarks import FaceFrame, ScanLandmarkError, ScanLandmarks

        self.calls.append(Path(name).name)
        if Path(name).name in self.no_face:
            raise ScanLandmarkError("no-face", "the face detector found nothing")
        lm = mesh.vertices.mean(0) + np.arange(68)[:, None] * np.array([1.0, 0.0, 0.0])
        eye = np.eye(3)
        return ScanLandmarks(
            landmarks68=lm,
            landmarks7=lm[list(NOW7_FROM_68)],
            spread_mm=np.zeros(68),
            confidence=0.9,
            detection_score=0.9,
            views_fitted=5,
            views_tried=5,
            units="mm",
            unit_to_mm=1.0,
            frame=FaceFrame(eye[0], eye[1], eye[2], lm.mean(0)),
            overlay=self.overlay,
        )


@pytest.fixture
def centroid_landmarker(monkeypatch: pytest.MonkeyPatch) -> _CentroidLandmarker:
    import pipelines.landmarks as mod

    fake = _CentroidLandmarker()
    monkeypatch.setattr(mod, "_landmarker", lambda config, check=None: fake)
    return fake


def test_scans_of_one_stem_get_their_own_files(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    from pipelines.build_priors import discover_scans

    scans = tmp_path / "scans"
    a = _touch_mesh(scans / "head.obj")
    b = save_mesh(scans / "head.ply", Mesh(load_mesh(a).vertices + 500.0, load_mesh(a).faces))
    result = landmark_scans(scans, LandmarksConfig(meshlab=True))
    assert result.n_ok == 2 and result.n_earlier == 0
    for path in (a, b):
        lm7 = scans / f"{path.name}.lm7.txt"
        assert lm7.is_file() and (scans / f"{path.name}_picked_points.pp").is_file()
        np.testing.assert_allclose(
            load_landmarks(lm7)[0], load_mesh(path).vertices.mean(0) + [NOW7_FROM_68[0], 0, 0]
        )
    assert not (scans / "head.lm7.txt").exists()
    # build-priors reads each scan's own files
    found = {s.sample_id: s.landmarks_path for s in discover_scans(scans)}
    assert found == {
        "head.obj": str(scans / "head.obj_picked_points.pp"),
        "head.ply": str(scans / "head.ply_picked_points.pp"),
    }
    # landmarks someone gave for both (head.lm7.txt) are theirs: kept, not found again
    for p in scans.glob("head.*.*"):
        if p.suffix in (".txt", ".pp"):
            p.unlink()
    (scans / "head.lm7.txt").write_text("1 1 1\n" * 7)
    centroid_landmarker.calls.clear()
    result = landmark_scans(scans, LandmarksConfig())
    assert [r.reason for r in result.rows] == ["given", "given"] and not centroid_landmarker.calls
    assert {s.landmarks_path for s in discover_scans(scans)} == {str(scans / "head.lm7.txt")}


def test_the_detail_column_lists_every_note_of_a_scan(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = _touch_mesh(tmp_path / "scans" / "face.ply")
    config = LandmarksConfig(meshlab=True)
    assert landmark_scan("face", scan, config).detail == ""  # nothing to say
    pp = tmp_path / "scans" / "face_picked_points.pp"
    pp.write_text(pp.read_text().replace('name="facehd landmarks"', 'name="annotator"'))
    found = centroid_landmarker.detect

    def noted(mesh: Mesh, **kwargs: object) -> object:
        result = found(mesh, **kwargs)
        result.ignored_faces, result.rewound_faces = 24, 7
        return result

    monkeypatch.setattr(centroid_landmarker, "detect", noted)
    row = landmark_scan("face", scan, config)
    assert row.status == "ok"
    assert row.detail == (
        f"{pp} was edited by hand: kept; 24 faces of stray pieces apart from the scan ignored; "
        "7 faces wound against their neighbours turned over"
    )


def test_a_scan_changed_since_is_found_again(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    scans, out = tmp_path / "scans", tmp_path / "out"
    first = _touch_mesh(scans / "a.ply")
    _touch_mesh(scans / "b.ply")
    config = LandmarksConfig(out=str(out))
    result = landmark_scans(scans, config)
    assert result.n_ok == 2 and result.n_earlier == 0 and len(centroid_landmarker.calls) == 2
    rows = read_rows(result.csv_path)
    assert len(rows["a"].source_sha256) == 64
    # a rerun: nothing found again, and the summary says both came from the earlier run
    result = landmark_scans(scans, config)
    assert result.n_ok == 2 and result.n_earlier == 2 and len(centroid_landmarker.calls) == 2
    # a.ply replaced by a moved scan: found again, its files follow the new file
    moved = load_mesh(first)
    save_mesh(first, Mesh(moved.vertices + 100.0, moved.faces))
    result = landmark_scans(scans, config)
    by_id = {r.scan_id: r for r in result.rows}
    assert centroid_landmarker.calls[2:] == ["a.ply"] and result.n_earlier == 1
    assert "changed since" in by_id["a"].detail and by_id["a"].status == "ok"
    np.testing.assert_allclose(
        load_landmarks(out / "a.lm68.txt")[0], moved.vertices.mean(0) + 100.0
    )
    assert read_rows(result.csv_path)["a"].source_sha256 != rows["a"].source_sha256


def _textured_copy(path: Path, scan: Mesh, model: object) -> Path:
    """``scan`` (the model's topology) as an OBJ with the model's UVs and a material whose
    ``map_Kd`` is the mean albedo baked into a 512² PNG."""
    from PIL import Image
    from scipy import ndimage

    from facehd.uv import rasterize_uv

    table = rasterize_uv(model.uvs, model.faces, 512)
    texture = table.interpolate(np.clip(model.mean_albedo, 0.0, 1.0))
    _, (iy, ix) = ndimage.distance_transform_edt(~table.mask, return_indices=True)
    Image.fromarray((texture[iy, ix] * 255 + 0.5).astype(np.uint8)).save(path.with_suffix(".png"))
    path.with_suffix(".mtl").write_text(f"newmtl skin\nmap_Kd {path.with_suffix('.png').name}\n")
    save_mesh(path, Mesh(scan.vertices, scan.faces, model.uvs))
    path.write_text(f"mtllib {path.with_suffix('.mtl').name}\nusemtl skin\n" + path.read_text())
    return path


@pytest.mark.skipif(not mediapipe_available(), reason="needs the photo extra (mediapipe)")
def test_landmarks_command_over_a_folder(tmp_path: Path) -> None:
    from facehd.morphable import load_model
    from facehd.transforms import Similarity
    from pipelines.synth import random_rotation

    scans = tmp_path / "scans"
    scans.mkdir()
    # a facehd-synth face in a random frame, in metres, with its true landmarks
    model = load_model("facehd-synth")
    rng = np.random.default_rng(3)
    face = model.mesh(rng.normal(size=model.n_id) * model.id_std, np.zeros(model.n_exp))
    truth = model.landmarks(face.vertices)
    t = Similarity(1000.0, random_rotation(rng), rng.uniform(-200, 200, 3))
    scan = Mesh(t.inverse().apply(face.vertices), face.faces)
    save_mesh(scans / "face.ply", scan)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.1)  # metres, no face
    save_mesh(scans / "sphere.ply", Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces)))
    (scans / "empty.ply").write_bytes(b"")
    save_mesh(scans / "tiny.ply", Mesh(scan.vertices * 1e-3, scan.faces))  # a 0.3 mm head in m
    # the same face as a textured OBJ: its albedo baked into a PNG its material names
    textured = _textured_copy(scans / "textured.obj", scan, model)
    out, png = tmp_path / "out", tmp_path / "png"
    args = ["landmarks", "--scans", str(scans), "--out", str(out), "--overlays", str(png)]
    result = runner.invoke(app, [*args, "--meshlab"])
    assert result.exit_code == 1, result.output  # some scans failed
    with open(out / CSV_NAME, newline="") as fh:
        rows = {r["scan_id"]: r for r in csv.DictReader(fh)}
    assert rows["face"]["status"] == "ok" and rows["face"]["units"] == "m"
    assert rows["face"]["appearance"] == "shaded"
    assert rows["textured"]["status"] == "ok" and rows["textured"]["appearance"] == "texture"
    err_tex = np.linalg.norm(
        t.apply(load_landmarks(out / "textured.lm7.txt")) - truth[list(NOW7_FROM_68)], axis=1
    )
    assert np.median(err_tex) < 3.0 and err_tex.max() < 8.0, err_tex
    # build-priors' helper shows the texture too: the same points as the batch run
    lm_tex, _, source_tex = detect_landmarks7(load_mesh(textured), textured)
    assert source_tex == rows["textured"]["source"]
    np.testing.assert_allclose(lm_tex, load_landmarks(out / "textured.lm7.txt"), atol=1e-9)
    assert 0.0 < float(rows["face"]["confidence"]) <= 1.0
    assert float(rows["face"]["smoothing_mm"]) == 0.0  # found with its own shading
    assert {k: rows[k]["reason"] for k in ("sphere", "empty", "tiny")} == {
        "sphere": "no-face",
        "empty": "empty",
        "tiny": "units",
    }
    for k in ("sphere", "empty", "tiny"):
        assert rows[k]["status"] == "failed" and rows[k]["detail"] and not rows[k]["lm68"]
        assert not (out / f"{k}.lm68.txt").exists() and not (out / f"{k}.lm7.txt").exists()
    lm68 = load_landmarks(out / "face.lm68.txt")
    lm7 = load_landmarks(out / "face.lm7.txt")
    assert lm68.shape == (68, 3) and lm7.shape == (7, 3)
    np.testing.assert_array_equal(lm7, lm68[list(NOW7_FROM_68)])
    err = np.linalg.norm(t.apply(lm7) - truth[list(NOW7_FROM_68)], axis=1)
    # written in the scan's frame and units (m); the face is facehd-synth's own M0, which the
    # model check fits exactly: its landmark vertices, not the face mesh's detection
    assert rows["face"]["source"] == "model (facehd-synth)", rows["face"]["model_note"]
    assert float(rows["face"]["model_residual_mm"]) < 0.05
    assert np.median(err) < 0.5 and err.max() < 1.0, err
    # without the check: the face mesh's own points, a couple of millimetres off
    alone = landmark_scan(
        "face", scans / "face.ply", LandmarksConfig(out=str(tmp_path / "alone"), model_check=None)
    )
    assert alone.status == "ok" and alone.source == "detected" and not alone.model_note
    err_alone = np.linalg.norm(
        t.apply(load_landmarks(alone.lm7)) - truth[list(NOW7_FROM_68)], axis=1
    )
    assert np.median(err) < np.median(err_alone) < 3.0, err_alone
    assert (png / "face.png").is_file() and not (png / "sphere.png").exists()
    assert not (scans / "face.lm68.txt").exists()  # --out keeps the scans folder clean
    # --meshlab: MeshLab's picked-points file holds the same 68 points, bit for bit
    pp = out / "face_picked_points.pp"
    np.testing.assert_array_equal(load_landmarks(pp), lm68)
    assert written_by_facehd(pp) and not (out / "sphere_picked_points.pp").exists()
    # points moved and saved again in MeshLab (another user name) are never replaced
    edited = pp.read_text().replace('name="facehd landmarks"', 'name="annotator"')
    edited = edited.replace('name="0"/>', 'name="0"/>\n', 1)
    pp.write_text(edited)
    again = landmark_scan("face", scans / "face.ply", LandmarksConfig(out=str(out), meshlab=True))
    assert again.status == "ok" and "edited by hand" in again.detail
    assert pp.read_text() == edited and not written_by_facehd(pp)

    # the helper other jobs call for scans without a landmark file gives the same points
    lm, confidence, source = detect_landmarks7(scan, scans / "face.ply")
    np.testing.assert_allclose(lm, lm7, atol=1e-9)
    assert source == "model (facehd-synth)"
    assert detect_landmarks7(scan, scans / "face.ply", model_check=None)[2] == "detected"
    assert confidence == pytest.approx(float(rows["face"]["confidence"]), abs=1e-4)
    with pytest.raises(InputFileError, match="automatic landmarks failed.*units") as err:
        detect_landmarks7(Mesh(scan.vertices * 1e-3, scan.faces), scans / "tiny.ply")
    assert err.value.path == scans / "tiny.ply"


def test_an_unknown_check_model_is_refused_before_any_scan(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    _touch_mesh(scans / "head.obj")
    result = runner.invoke(
        app, ["landmarks", "--scans", str(scans), "--model-check", "nosuch-model"]
    )
    assert result.exit_code != 0 and "nosuch-model" in result.output
    assert not (scans / "landmarks.csv").exists() and not (scans / "head.lm7.txt").exists()


@pytest.mark.skipif(not mediapipe_available(), reason="needs the photo extra (mediapipe)")
def test_perf_entry_runs_quick() -> None:
    from facehd import perf

    registry = perf.discover()
    assert "scan-landmarks" in registry
    rows = registry["scan-landmarks"].fn(True)
    assert [r.metric for r in rows][0] == "seconds per 100k-vertex scan"
    assert all(r.entry == "scan-landmarks" and r.unit == "s" and r.value > 0 for r in rows)


def _moved(path: Path, by: float) -> Path:
    """Replace a scan by itself moved by ``by`` (another file content)."""
    mesh = load_mesh(path)
    return save_mesh(path, Mesh(mesh.vertices + by, mesh.faces))


def test_a_failed_redetection_removes_the_files_found_before(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    from pipelines.build_priors import discover_scans

    scans = tmp_path / "scans"
    face = _touch_mesh(scans / "face.ply")
    _touch_mesh(scans / "other.ply")
    result = landmark_scans(scans, LandmarksConfig(meshlab=True))
    assert result.n_ok == 2
    # the written files say which scan content they were found on; readers skip the line
    head = (scans / "face.lm7.txt").read_text().splitlines()[0]
    assert head.startswith("# facehd landmarks: scan sha256 ")
    assert read_rows(result.csv_path)["face"].source_sha256 in head
    assert load_landmarks(scans / "face.lm7.txt").shape == (7, 3)
    # the scan replaced by one with no face: its old points must not be used
    _moved(face, 50.0)
    centroid_landmarker.no_face = {"face.ply"}
    result = landmark_scans(scans, LandmarksConfig(meshlab=True))
    row = {r.scan_id: r for r in result.rows}["face"]
    assert row.status == "failed" and row.reason == "no-face"
    for name in ("face.lm68.txt", "face.lm7.txt", "face_picked_points.pp"):
        assert not (scans / name).exists()
        assert str(scans / name) in row.detail and "removed" in row.detail
    assert (scans / "other.lm7.txt").is_file()  # the other scan keeps its points
    assert {s.sample_id: s.landmarks_path for s in discover_scans(scans)}["face"] is None
    # files of an earlier version (no header) beside that version's failure row: put aside
    # (they may have been edited), never used
    (scans / "face.lm68.txt").write_text("0 0 0\n" * 68)
    (scans / "face.lm7.txt").write_text("0 0 0\n" * 7)
    result = landmark_scans(scans, LandmarksConfig())
    row = {r.scan_id: r for r in result.rows}["face"]
    assert row.status == "failed" and "put aside" in row.detail
    assert (scans / "face.lm7.txt.stale").read_text() == "0 0 0\n" * 7
    assert not (scans / "face.lm7.txt").exists() and not (scans / "face.lm68.txt").exists()


def test_a_scan_that_fails_now_loses_the_overlay_drawn_before(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    """A scan found before and replaced by one with no face loses its overlay PNG with its
    landmark files, so no earlier result stands for it (the command's own run); the overlay of
    an earlier version (no text field) is put aside, one whose pixels were changed since is
    kept, and other scans' overlays stay as they were."""
    from PIL import Image, PngImagePlugin

    scans, out, png = tmp_path / "scans", tmp_path / "out", tmp_path / "png"
    face = _touch_mesh(scans / "face.ply")
    _touch_mesh(scans / "other.ply")
    centroid_landmarker.overlay = np.full((24, 32, 3), 90, np.uint8)
    args = ["landmarks", "--scans", str(scans), "--out", str(out), "--overlays", str(png)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = read_rows(out / CSV_NAME)
    drawn = Image.open(png / "face.png")
    assert rows["face"].overlay == str(png / "face.png")
    assert f"scan sha256 {rows['face'].source_sha256}" in drawn.text["facehd landmarks"]
    np.testing.assert_array_equal(np.asarray(drawn), centroid_landmarker.overlay)
    other = (png / "other.png").read_bytes()
    # the scan replaced by one with no face: found again, failed, nothing of it left drawn
    _moved(face, 50.0)
    centroid_landmarker.no_face = {"face.ply"}
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    row = read_rows(out / CSV_NAME)["face"]
    assert row.status == "failed" and row.reason == "no-face" and not row.overlay
    assert not (png / "face.png").exists() and not (out / "face.lm68.txt").exists()
    assert f"overlay drawn before removed: {png / 'face.png'}" in row.detail
    assert (png / "other.png").read_bytes() == other
    # an overlay of a version before the text field: put aside, not deleted
    Image.fromarray(centroid_landmarker.overlay).save(png / "face.png")
    legacy = (png / "face.png").read_bytes()
    row = landmark_scan("face", face, LandmarksConfig(out=str(out), overlays=str(png)))
    assert row.status == "failed" and "overlay of an earlier version put aside" in row.detail
    assert not (png / "face.png").exists() and (png / "face.png.stale").read_bytes() == legacy
    # the tool's overlay drawn on since (its field no longer names its pixels): kept, said
    field = drawn.text["facehd landmarks"]
    info = PngImagePlugin.PngInfo()
    info.add_text("facehd landmarks", field)
    marked = centroid_landmarker.overlay.copy()
    marked[:4] = 255
    Image.fromarray(marked).save(png / "face.png", pnginfo=info)
    edited = (png / "face.png").read_bytes()
    row = landmark_scan("face", face, LandmarksConfig(out=str(out), overlays=str(png)))
    assert (png / "face.png").read_bytes() == edited and "kept" in row.detail


def test_given_landmarks_win_over_detected_ones(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    from pipelines.build_priors import discover_scans

    scans = tmp_path / "scans"
    _touch_mesh(scans / "real.ply")
    _touch_mesh(scans / "auto.ply")
    hand = np.arange(21.0).reshape(7, 3)
    np.save(scans / "real_lmks.npy", hand)
    result = landmark_scans(scans, LandmarksConfig(overwrite=True))
    by_id = {r.scan_id: r for r in result.rows}
    assert by_id["real"].status == "skipped" and by_id["real"].reason == "given"
    assert str(scans / "real_lmks.npy") in by_id["real"].detail
    assert centroid_landmarker.calls == ["auto.ply"] and not (scans / "real.lm7.txt").exists()
    # detected files beside the hand points (an earlier run, before the points were given):
    # build-priors still reads the hand points
    landmark_scan("real", scans / "real.ply", LandmarksConfig(meshlab=True))
    assert (scans / "real.lm7.txt").is_file() and (scans / "real_picked_points.pp").is_file()
    found = {s.sample_id: s.landmarks_path for s in discover_scans(scans)}
    assert found == {"auto": str(scans / "auto.lm7.txt"), "real": str(scans / "real_lmks.npy")}
    # so does an earlier version's pair (no header), while a .lm7.txt alone is someone's
    (scans / "real_picked_points.pp").unlink()
    (scans / "real.lm68.txt").write_text("0 0 0\n" * 68)
    (scans / "real.lm7.txt").write_text("0 0 0\n" * 7)
    assert discover_scans(scans)[1].landmarks_path == str(scans / "real_lmks.npy")
    (scans / "real.lm68.txt").unlink()
    assert discover_scans(scans)[1].landmarks_path == str(scans / "real.lm7.txt")
    # a detected .lm7.txt whose points were edited by hand is someone's too: never replaced
    lm7 = scans / "auto.lm7.txt"
    edited = lm7.read_text().replace("\n", " \n", 1)
    edited = edited.splitlines(keepends=True)
    edited[1] = "1.0 2.0 3.0\n"
    lm7.write_text("".join(edited))
    result = landmark_scans(scans, LandmarksConfig(overwrite=True))
    by_id = {r.scan_id: r for r in result.rows}
    assert by_id["auto"].reason == "given" and str(lm7) in by_id["auto"].detail
    assert lm7.read_text() == "".join(edited) and centroid_landmarker.calls == [
        "auto.ply",
        "real.ply",
    ]


def test_the_command_names_every_scan_whole_on_a_narrow_terminal(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    """Off a terminal the console is 80 columns wide: each scan's name is shown whole in the
    table (not cut to ``subject_0…``), and the scans skipped for their given landmarks are
    explained once below it rather than in a long note on every row."""
    scans = tmp_path / "scans"
    names = ("subject_0042_neutral", "subject_0042_smile", "subject_0043_neutral")
    for name in names:
        _touch_mesh(scans / f"{name}.ply")
    for name in names[1:]:
        np.save(scans / f"{name}_lmks.npy", np.arange(21.0).reshape(7, 3))
    result = runner.invoke(app, ["landmarks", "--scans", str(scans)])
    assert result.exit_code == 0, result.output
    table = result.output.split("2 scans skipped")[0]
    assert "…" not in result.output and all(f" {n} " in table for n in names), result.output
    # a short note on each skipped row: not the CSV's detail (the file, who made it, ...)
    assert table.count("kept") == 2 and "hand" not in table and len(table.splitlines()) < 20
    assert "landmarks.csv names each file" in result.output
    rows = read_rows(scans / CSV_NAME)
    assert str(scans / f"{names[1]}_lmks.npy") in rows[names[1]].detail  # the file, by name
    # a name too long for one line is folded over several, and the other columns stay
    import re

    long_name = "capture_rig_2026_subject_0042_neutral_take_3"
    _touch_mesh(tmp_path / "long" / f"{long_name}.ply")
    result = runner.invoke(app, ["landmarks", "--scans", str(tmp_path / "long")])
    assert result.exit_code == 0, result.output
    pieces = re.findall(r"^│ (\S+)\s+│", result.output, re.MULTILINE)
    assert "".join(pieces) == long_name and "status" in result.output, result.output


def test_the_csv_keeps_the_rows_of_other_folders(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    out = tmp_path / "out"
    for name in ("h2/a.ply", "h2/b.ply", "base/c.ply", "dup/a.ply"):
        _touch_mesh(tmp_path / name)
    assert landmark_scans(tmp_path / "h2", LandmarksConfig(out=str(out))).n_ok == 2
    result = landmark_scans(tmp_path / "base", LandmarksConfig(out=str(out)))
    assert [r.scan_id for r in result.rows] == ["c"]  # this run's scans only
    with open(out / CSV_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["scan_id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok"), ("c", "ok")]
    # another folder's scan of the same id would take h2/a's file names: refused, h2/a kept
    before = (out / "a.lm68.txt").read_bytes()
    result = landmark_scans(tmp_path / "dup", LandmarksConfig(out=str(out)))
    assert result.rows[0].status == "failed" and result.rows[0].reason == "clash"
    assert str(tmp_path / "h2" / "a.ply") in result.rows[0].detail
    assert (out / "a.lm68.txt").read_bytes() == before
    # a scan of the folder deleted since loses its row; the other folders' rows stay
    (tmp_path / "h2" / "b.ply").unlink()
    landmark_scans(tmp_path / "h2", LandmarksConfig(out=str(out)))
    with open(out / CSV_NAME, newline="") as fh:
        kept = [(r["scan_id"], Path(r["mesh"]).parent.name) for r in csv.DictReader(fh)]
    assert kept == [("a", "dup"), ("a", "h2"), ("c", "base")]


def test_a_scan_without_its_row_is_judged_by_its_files(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    import os

    scans = tmp_path / "scans"
    face = _touch_mesh(scans / "face.ply")
    # a file name in another encoding: a failure telling to rename it, first run and rerun
    odd = scans / os.fsdecode(b"lat\xe9.ply")
    _touch_mesh(odd)
    for _ in range(2):
        result = landmark_scans(scans, LandmarksConfig())
        row = next(r for r in result.rows if r.mesh == str(odd))
        assert (row.status, row.reason) == ("failed", "name") and "rename" in row.detail
        assert len(read_rows(result.csv_path)) == 2
    # the CSV names the file with its byte as \xNN, as reconstruct and build-priors say it
    text = result.csv_path.read_text(encoding="utf-8")
    assert "lat\\xe9.ply" in text and "udce9" not in text
    assert not (scans / os.fsdecode(b"lat\xe9.lm7.txt")).exists()
    odd.unlink()
    # killed between writing a scan's files and its row: the files say which content they
    # belong to, so a rerun keeps them for the same scan (recording its SHA-256) ...
    result.csv_path.unlink()
    result = landmark_scans(scans, LandmarksConfig())
    (row,) = result.rows
    assert (row.status, row.reason) == ("skipped", "done") and len(row.source_sha256) == 64
    assert centroid_landmarker.calls == ["face.ply"]
    # ... and finds them again once the scan changed
    result.csv_path.unlink()
    _moved(face, 100.0)
    result = landmark_scans(scans, LandmarksConfig())
    assert result.rows[0].status == "ok" and centroid_landmarker.calls == ["face.ply"] * 2
    np.testing.assert_allclose(
        load_landmarks(scans / "face.lm68.txt")[0], load_mesh(face).vertices.mean(0)
    )


def test_a_file_that_cannot_be_written_fails_its_scan_only(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    scans, out = tmp_path / "k4", tmp_path / "imm"
    for name in ("r1", "r2", "r3"):
        _touch_mesh(scans / f"{name}.ply")
    (out / "r2.lm68.txt").mkdir(parents=True)
    result = runner.invoke(app, ["landmarks", "--scans", str(scans), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    rows = read_rows(out / CSV_NAME)
    assert [rows[k].status for k in ("r1", "r2", "r3")] == ["ok", "failed", "ok"]
    assert rows["r2"].reason == "unwritable"
    assert rows["r2"].detail == f"cannot write {out / 'r2.lm68.txt'}: Is a directory"
    # the .lm7.txt goes with it (a file in the way of the second file: the first is removed)
    (out / "r3.lm7.txt").unlink()
    (out / "r3.lm7.txt").mkdir()
    row = landmark_scan("r3", scans / "r3.ply", LandmarksConfig(out=str(out)))
    assert row.status == "failed" and str(out / "r3.lm7.txt") in row.detail
    assert not (out / "r3.lm68.txt").exists() and (out / "r3.lm7.txt").is_dir()


def test_build_priors_reads_the_files_of_landmarks_out(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    from pipelines.build_priors import discover_scans

    scans, out = tmp_path / "scans", tmp_path / "lm"
    _touch_mesh(scans / "sub" / "a.ply")
    _touch_mesh(scans / "b.ply")
    landmark_scans(scans, LandmarksConfig(out=str(out)))
    found = {s.sample_id: s.landmarks_path for s in discover_scans(scans, out)}
    assert found == {"b": str(out / "b.lm7.txt"), "sub/a": str(out / "sub" / "a.lm7.txt")}
    assert {s.landmarks_path for s in discover_scans(scans)} == {None}
    np.save(scans / "b.npy", np.zeros((7, 3)))  # given beside the scan: first
    assert discover_scans(scans, out)[0].landmarks_path == str(scans / "b.npy")
    with pytest.raises(InputFileError, match="landmarks folder does not exist"):
        discover_scans(scans, tmp_path / "none")
    result = runner.invoke(
        app, ["build-priors", "--scans", str(scans), "--landmarks", str(tmp_path / "none")]
    )
    assert result.exit_code != 0 and "landmarks folder does not exist" in result.output


def test_detected_landmarks_of_a_replaced_scan_are_passed_over(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    """build-priors does not fit a scan with the points found on the scan it replaced (their
    header records that scan's SHA-256): it has no landmark file then, and detects anew."""
    from pipelines.build_priors import discover_scans
    from pipelines.landmarks import detected_scan_sha256

    scans = tmp_path / "scans"
    _touch_mesh(scans / "face.ply")
    landmark_scans(scans, LandmarksConfig())
    lm7 = scans / "face.lm7.txt"
    assert detected_scan_sha256(lm7) is not None
    assert discover_scans(scans)[0].landmarks_path == str(lm7)
    # another scan under the same name
    box = load_mesh(scans / "face.ply")
    save_mesh(scans / "face.ply", Mesh(box.vertices * 1.1, box.faces))
    assert discover_scans(scans)[0].landmarks_path is None
    # a hand-made file carries no such record: it is taken as it is
    lm7.write_text("0 0 0\n" * 7)
    assert detected_scan_sha256(lm7) is None
    assert discover_scans(scans)[0].landmarks_path == str(lm7)


def test_a_texture_the_scan_names_but_lacks_is_said_in_its_row(
    tmp_path: Path, centroid_landmarker: _CentroidLandmarker
) -> None:
    """The scan is found on its shaded geometry, and the row says why it was not coloured."""
    scans = tmp_path / "scans"
    _touch_mesh(scans / "face.obj")
    obj = scans / "face.obj"
    obj.write_text("mtllib gone.mtl\n" + obj.read_text())
    result = landmark_scans(scans, LandmarksConfig())
    row = result.rows[0]
    assert row.status == "ok" and row.appearance == "shaded"
    assert f"{obj}: " in row.detail and "gone.mtl not found" in row.detail


def landmark_or_die(args: tuple[str, str, LandmarksConfig]) -> LandmarkRow:
    """The landmarks task, but scan ``crash`` kills its worker process (as a crash in compiled
    code would) and scan ``bug`` raises an error the task does not foresee."""
    import os
    import time

    from pipelines import landmarks

    time.sleep(0.3)  # the others are in flight when one dies
    if args[0] == "crash":
        os._exit(3)
    if args[0] == "bug":
        raise ZeroDivisionError("division by zero")
    return landmarks.landmark_scan(*args)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_scan_that_breaks_its_task_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """An error the task does not foresee, and (in a pool) a worker process that dies on a
    scan, fail that scan's row: the other scans are done and the table is written. Both
    stopped the run before, with a traceback (a BrokenProcessPool for the worker)."""
    from pipelines import landmarks

    monkeypatch.setattr(landmarks, "_task", landmark_or_die)
    scans = tmp_path / "scans"
    scans.mkdir()
    names = ["a", "b", "bug", "c", "d"] + (["crash"] if workers > 1 else [])
    for name in names:
        (scans / f"{name}.ply").write_bytes(b"")  # empty: a quick row of their own
    result = landmark_scans(scans, LandmarksConfig(workers=workers, model_check=None))
    rows = {r.scan_id: r for r in result.rows}
    assert sorted(rows) == sorted(names)
    for name in names:
        row = rows[name]
        if name == "bug":
            assert (row.status, row.reason) == ("failed", "error")
            assert row.detail == "ZeroDivisionError: division by zero"
        elif name == "crash":
            assert (row.status, row.reason) == ("failed", "error")
            assert row.detail.startswith("RuntimeError: worker process died while processing")
        else:
            assert (row.status, row.reason) == ("failed", "empty"), row
    assert read_rows(scans / CSV_NAME) == rows


def die_as_a_worker_starts(parent: int, initializer: object) -> None:
    """Stands for the pool's worker start-up: the process dies (a library that cannot load in
    it, the memory limit of the job)."""
    import os

    os._exit(1)


def test_workers_that_cannot_start_are_an_error_not_a_failure_of_each_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command says so in one line (exit 2, no traceback), and no scan gets a row: a run
    once it is fixed does them all."""
    from facehd import pools

    monkeypatch.setattr(pools, "_start_worker", die_as_a_worker_starts)
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in "abc":
        (scans / f"{name}.ply").write_bytes(b"")
    args = ["landmarks", "--scans", str(scans), "--workers", "2", "--model-check", "none"]
    result = runner.invoke(app, args)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "error: the worker processes die as they start" in output
    assert "Traceback" not in output
    assert read_rows(scans / CSV_NAME) == {}

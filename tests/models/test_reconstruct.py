"""Reconstruction: files of one photo, checkpoint loading (facehd and official layouts), errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch
from hrn_testdata import tiny_config
from PIL import Image

from facehd.errors import InputFileError
from facehd.mesh import Mesh, load_mesh
from models.data import align_lab_photo
from models.export import read_png16, write_png16
from models.reconstruct import (
    Reconstructor,
    find_photos,
    load_system,
    reconstruct_photos,
    write_reconstruction,
)


def crop_of(hrn_data, sample="s000_e00", view=0) -> np.ndarray:
    z = dict(np.load(hrn_data.scans / f"{sample}.photos.npz"))
    return align_lab_photo(z, view, "facehd-synth")["image"]


def test_files_of_one_reconstruction(hrn_data, model_path, tmp_path, one_thread):
    recon = Reconstructor.load(model_path)
    assert recon.template == "facehd-synth"
    rec = recon.run_crops(crop_of(hrn_data)[None])[0]
    model = recon.model
    s = recon.system.config.network.high_size
    m = recon.system.config.network.mid_size
    assert rec.m0.shape == rec.m1.shape == (model.n_vertices, 3)
    assert rec.deformation.shape == (m, m, 3) and rec.displacement.shape == (s, s)
    assert rec.valid.shape == (s, s) and 0.2 < rec.valid.mean() < 1.0
    # M1 is M0 plus the deformation map sampled at the vertex UVs
    from facehd.uv import sample_uv_map

    np.testing.assert_allclose(
        rec.m1 - rec.m0, sample_uv_map(rec.deformation.astype(np.float64), model.uvs), atol=1e-4
    )
    out = tmp_path / "rec"
    written = write_reconstruction(recon, rec, out, photo_region=crop_of(hrn_data))
    # the files a rerun checks before it keeps a folder are the ones written
    from models.reconstruct import RESULT_FILES

    assert sorted(p.name for p in written) == sorted(RESULT_FILES)
    names = {p.name for p in out.iterdir()}
    for want in (
        "coarse.obj mid.obj mid.mtl detail.obj texture.png deformation.npy deformation.png "
        "displacement.npy displacement.png overlay.png turntable.png reconstruction.json"
    ).split():
        assert want in names
    mid = load_mesh(out / "mid.obj")
    assert len(mid.vertices) == model.n_vertices and mid.uvs is not None
    np.testing.assert_allclose(mid.vertices, rec.m1, atol=1e-5)
    text = (out / "mid.obj").read_text()
    assert text.count("\nvn ") == model.n_vertices and "mtllib mid.mtl" in text
    assert "map_Kd texture.png" in (out / "mid.mtl").read_text()
    # the detailed mesh has one vertex per texel of the UV layout, with UVs
    detail = load_mesh(out / "detail.obj")
    assert len(detail.vertices) == int(recon.system.table.mask.sum()) and detail.uvs is not None
    # maps: .npy exact, 16-bit PNG within its quantisation step
    disp = np.load(out / "displacement.npy")
    np.testing.assert_array_equal(disp, rec.displacement.astype(np.float32))
    meta = json.loads((out / "reconstruction.json").read_text())
    r = meta["displacement_png_range_mm"]
    np.testing.assert_allclose(read_png16(out / "displacement.png"), disp, atol=r / 65535 + 1e-9)
    assert read_png16(out / "deformation.png").shape == (m, m, 3)
    assert np.asarray(Image.open(out / "overlay.png")).shape == (224, 3 * 224, 3)
    assert np.asarray(Image.open(out / "turntable.png")).shape == (256, 5 * 256, 3)


def test_landmark_nme_scores_m1_against_the_photo_landmarks_in_the_crop(hrn_data, one_thread):
    """M1's landmarks projected by hand with the 224 crop's pinhole (col = f X / (d - Z) + c,
    row = 223 - (f Y / (d - Z) + c)) from a system that runs its crops at 48 px: the score is 0
    against them, the shift's length over the eye-corner distance against them moved, and the
    jaw's points do not count."""
    from dataclasses import replace

    from facehd.morphable import load_model
    from facehd.render.camera import HRN_CAMERA_DISTANCE_MM, HRN_CENTER, HRN_FOCAL
    from models.system import FaceSystem

    cfg = tiny_config()
    torch.manual_seed(0)
    model = load_model("facehd-synth")
    recon = Reconstructor(FaceSystem(cfg.model, model, cfg.image_size), cfg)
    assert recon.system.image_size == 48
    rec = recon.run_crops(crop_of(hrn_data)[None])[0]
    assert rec.landmarks68 is None and recon.landmark_nme(rec) is None  # a bare crop
    posed = (rec.m1 @ rec.rotation.T + rec.translation)[np.array(model.landmarks68)]
    depth = HRN_CAMERA_DISTANCE_MM - posed[:, 2]
    col = HRN_FOCAL * posed[:, 0] / depth + HRN_CENTER
    row = 223.0 - (HRN_FOCAL * posed[:, 1] / depth + HRN_CENTER)
    exact = np.stack([col, row], axis=1)
    eyes = np.linalg.norm(exact[36] - exact[45])
    assert 20.0 < eyes < 120.0  # a face in the crop
    assert recon.landmark_nme(replace(rec, landmarks68=exact)) == pytest.approx(0.0, abs=1e-9)
    moved = exact + np.array([3.0, -4.0])  # 5 px
    moved[:17] += np.array([40.0, 25.0])  # the jaw's contour far off: left out
    assert recon.landmark_nme(replace(rec, landmarks68=moved)) == pytest.approx(5.0 / eyes)
    # one point 51 px off among the 51 scored: 1 px on average
    one = exact.copy()
    one[30, 0] += 51.0
    assert recon.landmark_nme(replace(rec, landmarks68=one)) == pytest.approx(1.0 / eyes)
    # landmarks whose outer eye corners coincide have no scale to measure by: no score
    flat = exact.copy()
    flat[45] = flat[36]
    assert recon.landmark_nme(replace(rec, landmarks68=flat)) is None


def test_textured_obj_is_savetxt_text_and_reads_back(tmp_path):
    """The OBJ's lines are np.savetxt's for the same formats (a second writer), and trimesh reads
    back its vertices, UVs and faces."""
    import io

    import trimesh

    from models.export import write_textured_obj

    rng = np.random.default_rng(4)
    v = rng.normal(0.0, 60.0, (50, 3))
    v[0] = [-0.0, np.nan, 1e-9]  # signs, NaN and rounding as savetxt writes them
    uv = rng.uniform(0.0, 1.0, (50, 2))
    n = rng.normal(size=(50, 3))
    f = rng.integers(0, 50, (80, 3))
    path = write_textured_obj(tmp_path / "m.obj", Mesh(v, f, uvs=uv), normals=n, texture="t.png")
    ref = io.StringIO()
    np.savetxt(ref, v, fmt="v %.6f %.6f %.6f")
    np.savetxt(ref, uv, fmt="vt %.7f %.7f")
    np.savetxt(ref, n, fmt="vn %.6f %.6f %.6f")
    np.savetxt(ref, np.repeat(f + 1, 3, axis=1), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    head = "# facehd reconstruction (millimetres)\nmtllib m.mtl\nusemtl face\n"
    assert path.read_text() == head + ref.getvalue()
    v[0] = 0.0
    path = write_textured_obj(tmp_path / "m.obj", Mesh(v, f, uvs=uv), normals=n)
    back = trimesh.load(path, process=False, maintain_order=True)
    np.testing.assert_allclose(back.vertices, v, atol=5e-7)
    np.testing.assert_array_equal(back.faces, f)
    np.testing.assert_allclose(back.visual.uv, uv, atol=5e-8)


def test_png16_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7, 3))
    write_png16(tmp_path / "a.png", a)
    back = read_png16(tmp_path / "a.png")
    np.testing.assert_allclose(back, a, atol=np.abs(a).max() / 65535 * 1.01)
    # Pillow reads the greyscale variant as 16-bit too
    write_png16(tmp_path / "g.png", a[..., 0], value_range=4.0)
    img = np.asarray(Image.open(tmp_path / "g.png")).astype(np.float64)
    np.testing.assert_allclose((img / 65535 * 2 - 1) * 4.0, a[..., 0], atol=4.0 / 65535)


def _refiltered_png(src: Path, dst: Path) -> None:
    """``src`` (a facehd 16-bit PNG) saved again as another program might: each row with
    another of the five PNG filters (computed forward, from the raw bytes), the image data in
    two chunks, the text chunk after them."""
    import struct
    import zlib

    from models.export import _png_chunk as chunk

    data = src.read_bytes()
    pos, parts = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        parts.setdefault(data[pos + 4 : pos + 8], []).append(data[pos + 8 : pos + 8 + n])
        pos += 12 + n
    w, h, _, colour = struct.unpack(">IIBB", parts[b"IHDR"][0][:10])
    bpp = (1 if colour == 0 else 3) * 2
    raw = zlib.decompress(b"".join(parts[b"IDAT"]))
    rows = [list(raw[i * (w * bpp + 1) + 1 : (i + 1) * (w * bpp + 1)]) for i in range(h)]
    out = bytearray()
    for i, row in enumerate(rows):
        kind = i % 5
        above = rows[i - 1] if i else [0] * len(row)
        out.append(kind)
        for j, x in enumerate(row):
            a = row[j - bpp] if j >= bpp else 0
            b = above[j]
            c = above[j - bpp] if j >= bpp else 0
            if kind == 0:
                guess = 0
            elif kind == 1:
                guess = a
            elif kind == 2:
                guess = b
            elif kind == 3:
                guess = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                guess = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out.append((x - guess) % 256)
    body = zlib.compress(bytes(out))
    text = chunk(b"tEXt", parts[b"tEXt"][0])
    idat = chunk(b"IDAT", body[:7]) + chunk(b"IDAT", body[7:])
    dst.write_bytes(
        data[:8] + chunk(b"IHDR", parts[b"IHDR"][0]) + idat + text + chunk(b"IEND", b"")
    )


def test_png16_read_back_after_another_program_saved_it(tmp_path):
    """Row filters of every kind (a forward encoder here, the reader undoes them), split image
    data and the text after it read back the same values; files facehd cannot scale back, or
    that are no 16-bit map, are refused by name."""
    import struct

    from models.export import _png_chunk

    rng = np.random.default_rng(1)
    for shape in ((11, 9, 3), (13, 6)):
        a = rng.normal(size=shape) * 3.0
        write_png16(tmp_path / "a.png", a)
        _refiltered_png(tmp_path / "a.png", tmp_path / "b.png")
        np.testing.assert_array_equal(
            read_png16(tmp_path / "b.png"), read_png16(tmp_path / "a.png")
        )
        np.testing.assert_allclose(read_png16(tmp_path / "b.png"), a, atol=3.0 * 5 / 65535)
    # Pillow's own 16-bit greyscale PNG, with the range text added: the same values
    grey = rng.integers(0, 65536, size=(17, 23)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "p.png", pnginfo=_range_text(2.0))
    np.testing.assert_allclose(read_png16(tmp_path / "p.png"), (grey / 65535 * 2 - 1) * 2.0)

    Image.fromarray(grey).save(tmp_path / "plain.png")  # no range text
    with pytest.raises(ValueError, match=r"plain\.png: no 'facehd-range' text"):
        read_png16(tmp_path / "plain.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb8.png")
    with pytest.raises(ValueError, match="rgb8.png: not a 16-bit greyscale or RGB PNG"):
        read_png16(tmp_path / "rgb8.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="text.png: not a PNG file"):
        read_png16(tmp_path / "text.png")
    whole = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut.png: the PNG is cut short"):
        read_png16(tmp_path / "cut.png")
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, 0, 0, 0, 1))  # Adam7 interlaced
    (tmp_path / "adam7.png").write_bytes(whole[:8] + ihdr + whole[8 + 25 :])
    with pytest.raises(ValueError, match="adam7.png: an interlaced PNG"):
        read_png16(tmp_path / "adam7.png")


def _range_text(r: float):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("facehd-range", repr(r))
    return info


def test_photos_with_and_without_a_face(hrn_data, model_path, tmp_path, one_thread):
    pytest.importorskip("mediapipe")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    photo = hrn_data.scans / "photos" / "s000_e00_v00.png"
    files = find_photos([photo, blank])
    results = reconstruct_photos(files, model_path, tmp_path / "out", landmarks="detect")
    assert results[0].error is None and (results[0].folder / "detail.obj").is_file()
    assert results[1].folder is None and "no face" in results[1].error
    with pytest.raises(InputFileError, match="no such photo"):
        find_photos([tmp_path / "missing.jpg"])


def _draw_face(size: int, seed: int) -> np.ndarray:
    """The tests' drawn face (``tests/facehd/drawn_face.py``), ``size`` px square."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "drawn_face", Path(__file__).parents[1] / "facehd" / "drawn_face.py"
    )
    drawn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drawn)
    return drawn.draw_face(size, seed=seed)


def test_a_photo_with_two_faces_says_which_was_reconstructed(model_path, tmp_path, one_thread):
    """The largest, most central face is reconstructed, and the result says how many faces there
    were and where the one reconstructed lies (``photo_frame.face_box``)."""
    pytest.importorskip("mediapipe")
    img = np.full((420, 700, 3), (70, 90, 110), np.uint8)
    img[10:410, 280:680] = _draw_face(400, seed=1)  # the large face, right
    img[150:350, 20:220] = _draw_face(200, seed=2)  # a small one, left
    Image.fromarray(img).save(tmp_path / "two.png")
    (result,) = reconstruct_photos([tmp_path / "two.png"], model_path, tmp_path / "out")
    assert result.error is None and result.faces_found == 2
    frame = json.loads((result.folder / "reconstruction.json").read_text())["photo_frame"]
    assert frame["faces_found"] == 2
    x0, y0, x1, y1 = frame["face_box"]
    assert 280 <= x0 < x1 <= 680 and 10 <= y0 < y1 <= 410 and x1 - x0 > 150
    # the face mesh holds the landmarks of the face it found (facehd.detect.landmark_spread)
    assert frame["landmark_spread"] == f"{result.landmark_spread:.4f}"
    assert 0.0 < result.landmark_spread < 0.05


def test_a_photo_whose_landmarks_are_unsure_is_reconstructed_and_named(
    model_path, tmp_path, one_thread, monkeypatch
):
    """Detected landmarks that spread above the limit (forced here) do not stop reconstruct: the
    photo is done, its spread recorded in reconstruction.json and photos.csv, and the command
    names it; a photo whose landmarks hold is not named."""
    pytest.importorskip("mediapipe")
    import csv

    from typer.testing import CliRunner

    from facehd.cli import app
    from facehd.detect import FaceDetector

    (tmp_path / "in").mkdir()
    Image.fromarray(_draw_face(320, seed=1)).save(tmp_path / "in" / "face.png")
    out = tmp_path / "out"
    args = ["reconstruct", str(tmp_path / "in"), "--checkpoint", str(model_path), "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "landmarks are unsure" not in res.output, res.output
    monkeypatch.setattr(FaceDetector, "landmark_spread", lambda self, image, face: 0.5)
    res = CliRunner().invoke(app, [*args, "--redo"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    named = "the detected landmarks are unsure (landmark_spread above 0.12 in photos.csv: face.png"
    assert f"1 of 1 photos: {named} 0.50)" in said, said
    frame = json.loads((out / "face" / "reconstruction.json").read_text())["photo_frame"]
    assert frame["landmark_spread"] == "0.5000" and frame["turn"] == 0
    with open(out / "photos.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["landmark_spread"] == "0.5000"


def test_a_small_face_is_named_with_how_much_its_crop_enlarges_it(
    hrn_data, model_path, tmp_path, one_thread
):
    """``crop_transform.scale`` is the 224 crop's pixels per photo pixel: four times as many
    for the same photo at a quarter of its resolution. Above 1.5 (a face too small for skin
    detail) the command says so; the same face photographed four times as sharp is not named,
    and a rerun that keeps the folders names it again from its record."""
    pytest.importorskip("mediapipe")
    from typer.testing import CliRunner

    from facehd.cli import app

    photo = Image.open(hrn_data.scans / "photos" / "s000_e00_v00.png").convert("RGB")
    (tmp_path / "in").mkdir()
    photo.save(tmp_path / "in" / "small.png")
    sharp = photo.resize((photo.width * 4, photo.height * 4), Image.LANCZOS)
    sharp.save(tmp_path / "in" / "sharp.png")
    out = tmp_path / "out"
    args = ["reconstruct", str(tmp_path / "in"), "--checkpoint", str(model_path), "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    scale = {}
    for name in ("small", "sharp"):
        meta = json.loads((out / name / "reconstruction.json").read_text())
        scale[name] = meta["crop_transform"]["scale"]
    assert scale["small"] / scale["sharp"] == pytest.approx(4.0, rel=0.1)
    assert scale["small"] > 1.5 > scale["sharp"]
    said = " ".join(res.output.split())
    assert "small.png: a small face: the networks' 224 px crop enlarges it" in said, said
    assert "sharp.png: a small face" not in said
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "2 of them kept" in res.output, res.output
    assert "small.png: a small face" in " ".join(res.output.split())


def test_landmarks_beside_a_photo_replace_the_detector(hrn_data, model_path, tmp_path, one_thread):
    import shutil

    from facehd.landmarks import load_photo_landmarks

    photo = hrn_data.scans / "photos" / "s000_e00_v00.png"
    pts = photo.with_suffix(".pts")
    assert pts.is_file()  # facehd synth wrote the exact landmarks beside the photo
    recon = Reconstructor.load(model_path)
    aligned, mask, lm = recon.prepare_view(photo)
    np.testing.assert_allclose(lm, aligned.transform.apply(load_photo_landmarks(pts)), atol=1e-9)
    # the crop the true landmarks align, as the evaluation makes it from the .photos.npz
    np.testing.assert_array_equal(aligned.image, crop_of(hrn_data))
    x, y = np.round(lm[30]).astype(int)
    assert mask[y, x] == 1 and mask[:8, :8].sum() == 0
    # given: a photo without its file is an error naming the file it looked for
    bare = tmp_path / "bare.png"
    shutil.copy(photo, bare)
    recon.landmarks = "given"
    with pytest.raises(InputFileError, match="no landmark file bare.pts"):
        recon.run_photo(bare)
    results = reconstruct_photos([bare, photo], model_path, tmp_path / "out", landmarks="given")
    assert "no landmark file bare.pts" in results[0].error and results[1].error is None


def test_photo_turned_without_an_orientation_tag(hrn_data, model_path, tmp_path, one_thread):
    """A photo stored turned by quarter turns (no EXIF tag) is reconstructed as the upright
    photo: its crop shows the face upright (the crop only scales and shifts)."""
    photo = np.asarray(Image.open(hrn_data.scans / "photos" / "s000_e00_v00.png").convert("RGB"))
    recon = Reconstructor.load(model_path)
    recon.landmarks = "detect"
    results = {}
    import json

    from facehd.align import warp
    from models.reconstruct import write_photo_result

    for k in (0, 1, 2):
        path = tmp_path / f"turned{k}.png"
        Image.fromarray(np.ascontiguousarray(np.rot90(photo, -k))).save(path)
        results[k] = recon.run_photo_framed(path)
    (rec0, aligned0, _) = results[0]
    for k in (1, 2):
        rec, aligned, frame = results[k]
        diff = np.abs(aligned.image.astype(float) - aligned0.image.astype(float)).mean()
        assert diff < 6.0, (k, diff)
        np.testing.assert_allclose(rec.rotation, rec0.rotation, atol=0.05)
        assert np.abs(rec.m0 - rec0.m0).max() < 1.0  # mm
        # reconstruction.json says how the file was turned: the file's pixels, turned so,
        # then cropped by its crop_transform, give the crop the networks saw
        assert (frame.exif_orientation, frame.turn) == (1, k)
        path = tmp_path / f"turned{k}.png"
        write_photo_result(recon, rec, aligned, path, tmp_path / f"out{k}", frame)
        meta = json.loads((tmp_path / f"out{k}" / "reconstruction.json").read_text())
        assert meta["photo_frame"]["turn"] == k and meta["photo_frame"]["exif_orientation"] == 1
        stored = np.asarray(Image.open(path).convert("RGB"))
        upright = np.ascontiguousarray(np.rot90(stored, meta["photo_frame"]["turn"]))
        assert upright.shape == photo.shape
        crop = warp(upright, aligned.transform)
        assert np.abs(crop.astype(float) - aligned.image.astype(float)).mean() < 1.0


def test_checkpoint_errors(tmp_path, model_path):
    bad = tmp_path / "bad.pt"
    whole = model_path.read_bytes()
    # cut anywhere (torch.load's own error at some cuts was a bare "Invalid argument")
    for size in (10, 500, 5000, len(whole) // 2, len(whole) - 1):
        bad.write_bytes(whole[:size])
        with pytest.raises(InputFileError, match=r"bad\.pt.*cut short or damaged"):
            load_system(bad)
    bad.write_text("junk\n")
    with pytest.raises(InputFileError, match="neither a zip archive nor a pickle"):
        load_system(bad)
    with pytest.raises(InputFileError, match="is a folder: give the checkpoint file"):
        load_system(tmp_path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(InputFileError, match="not a facehd or HRN checkpoint"):
        load_system(other)
    official = tmp_path / "official.pt"
    torch.save({"net_recon": {}, "mid_net": {}, "high_net": {}}, official)
    with pytest.raises(InputFileError, match="--bfm"):
        load_system(official)
    # BFM files given with a facehd-synth model are refused, not silently left unused
    with pytest.raises(InputFileError, match=r"built-in 'facehd-synth'.*--bfm and --uv go with"):
        load_system(model_path, bfm_path=tmp_path / "BFM_model_front.mat")
    bad.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"bad\.pt: empty file \(0 bytes\)"):
        load_system(bad)
    # a weight with a NaN is named, where every photo used to fail with the maps' NaN
    data = torch.load(model_path, map_location="cpu", weights_only=True)
    name = next(k for k, v in data["state"]["hrn"].items() if v.is_floating_point())
    data["state"]["hrn"][name].view(-1)[0] = float("nan")
    torch.save(data, bad)
    with pytest.raises(InputFileError, match=rf"bad\.pt: state\.hrn\.{name} holds NaN"):
        load_system(bad)
    # a model of another morphable model: both named by their sizes, in a line one can read
    # (not the fingerprint's 90 numbers)
    data = torch.load(model_path, map_location="cpu", weights_only=True)
    data["morphable"].update(name="bfm", n_vertices=35709, n_id=80)
    torch.save(data, bad)
    with pytest.raises(InputFileError, match=r"bad\.pt: .*'bfm'.*35709.*'facehd-synth'") as err:
        load_system(bad)
    assert "projections" not in str(err.value) and len(str(err.value)) < 400


def _small_bfm(tmp: Path) -> tuple[Path, Path]:
    """A coarse BFM-format model (subsampled facehd-synth grid, decimetres) and its UV file."""
    from facehd.morphable import facehd_synth
    from facehd.morphable.synth import GRID, grid_faces

    synth = facehd_synth()
    keep = np.arange(0, GRID, 4)
    rows, cols = np.meshgrid(keep, keep, indexing="ij")
    idx = (rows * GRID + cols).ravel()
    v = len(idx)
    rng = np.random.default_rng(3)
    lm = synth.mean_shape[synth.landmarks68]
    keypoints = np.argmin(np.linalg.norm(synth.mean_shape[idx][None] - lm[:, None], axis=2), 1)
    fields = {
        "meanshape": (synth.mean_shape[idx] / 100.0).reshape(1, 3 * v),
        "idBase": rng.normal(size=(3 * v, 6)) * 0.01,
        "exBase": rng.normal(size=(3 * v, 5)) * 0.01,
        "meantex": rng.uniform(90, 200, size=(1, 3 * v)),
        "texBase": rng.normal(size=(3 * v, 4)) * 5.0,
        "tri": (grid_faces(len(keep)) + 1).astype(np.float64),
        "keypoints": (keypoints + 1).reshape(1, 68).astype(np.float64),
        "point_buf": np.ones((v, 8)),
    }
    mat = tmp / "BFM_model_front.mat"
    scipy.io.savemat(str(mat), fields)
    uv = tmp / "uv.npy"
    np.save(uv, synth.uvs[idx])
    return mat, uv


def _official_bfm_system(tmp: Path) -> tuple[Any, Any, Any]:
    """``(source, loaded, config)``: a tiny system on a coarse BFM with non-trivial scales and
    analyzer head (so outputs depend on the load), saved in HRN's official layout and loaded
    back with the BFM."""
    from facehd.morphable import load_model
    from models.system import FaceSystem

    mat, uv = _small_bfm(tmp)
    cfg = tiny_config()
    torch.manual_seed(5)
    source = FaceSystem(cfg.model, load_model("bfm", bfm_path=mat, uv_path=uv), 224)
    with torch.no_grad():
        source.hrn.alpha.fill_(0.3)
        source.hrn.beta.fill_(0.2)
        for layer in source.hrn.net_recon.final_layers:
            layer.bias.normal_(0.0, 0.01)
    hrn_ckpt, drm_ckpt = source.hrn.official_state()
    torch.save(hrn_ckpt, tmp / "hrn.pth")
    torch.save(drm_ckpt, tmp / "deretouch.pth")
    system, loaded_cfg = load_system(
        tmp / "hrn.pth",
        deretouch=tmp / "deretouch.pth",
        bfm_path=mat,
        uv_path=uv,
        network=cfg.model.network,
    )
    return source, system, loaded_cfg


def test_official_checkpoint_layout_with_a_bfm(hrn_data, tmp_path, one_thread):
    source, system, loaded_cfg = _official_bfm_system(tmp_path)
    assert loaded_cfg.morphable.name == "bfm"
    # photos are aligned the way these networks were trained: Deep3DFaceRecon's template
    assert loaded_cfg.template == "deep3d"
    assert Reconstructor(system, loaded_cfg).template == "deep3d"
    crop = crop_of(hrn_data)
    source.eval()
    a = Reconstructor(source, loaded_cfg).run_crops(crop[None])[0]
    b = Reconstructor(system, loaded_cfg).run_crops(crop[None])[0]
    np.testing.assert_array_equal(a.m1, b.m1)
    np.testing.assert_array_equal(a.displacement, b.displacement)
    assert np.abs(a.m1 - a.m0).max() > 0


def test_official_checkpoint_without_its_deretouching_file_keeps_the_base_albedo(
    hrn_data, tmp_path, one_thread
):
    """HRN's de-retouching network is in a second file: loaded without it, the texture is the
    base albedo A0 (what --base-texture writes), not the paint of a U-Net at its random
    initialisation; the system says which stages it holds."""
    from facehd.uv import rasterize_uv

    source, with_drm, cfg = _official_bfm_system(tmp_path)
    assert with_drm.trained_stages == ("base", "deretouch", "hrn")
    mat, uv = tmp_path / "BFM_model_front.mat", tmp_path / "uv.npy"

    def load() -> Any:
        return load_system(
            tmp_path / "hrn.pth", bfm_path=mat, uv_path=uv, network=cfg.model.network
        )[0]

    system = load()
    assert system.trained_stages == ("base", "hrn")
    crop = crop_of(hrn_data)[None]
    recon = Reconstructor(system, cfg)
    got = recon.run_crops(crop)[0]
    base = Reconstructor(load(), cfg, base_texture=True).run_crops(crop)[0]
    # A0 made here: the clamped per-vertex albedo of M0's coefficients, interpolated into UV
    with torch.no_grad():
        coarse = system.coarse(recon._images(crop))
    table = rasterize_uv(system.uv_layout, np.array(system.model.faces), got.texture.shape[:2])
    a0 = table.interpolate(coarse.albedo)[0].numpy()
    np.testing.assert_allclose(got.texture, base.texture, atol=1e-6)
    np.testing.assert_allclose(got.texture, a0, atol=1e-5)
    np.testing.assert_array_equal(got.m1, base.m1)
    # with the file, the de-retouched albedo differs from A0
    drm = Reconstructor(with_drm, cfg).run_crops(crop)[0]
    assert np.abs(drm.texture - a0).max() > 1e-3


def test_refine_and_fit_with_the_official_layout_and_a_bfm(hrn_data, tmp_path, one_thread):
    """``--refine-steps`` and ``--fit-iterations`` on an official checkpoint with the BFM: both
    objectives drop, and the fitted face stays in millimetres (the BFM is in decimetres): its M1 is
    its M0 plus its deformation map, and its size is the networks' face's."""
    from facehd.uv import sample_uv_map
    from models.multiview import single_view_config
    from models.refine import RefineConfig

    _, system, loaded_cfg = _official_bfm_system(tmp_path)
    recon = Reconstructor(system, loaded_cfg)
    z = dict(np.load(hrn_data.scans / "s000_e00.photos.npz"))
    crop = align_lab_photo(z, 0, "deep3d")
    c, m, lm = crop["image"][None], crop["mask"][None], crop["landmarks"][None]
    net = recon.run_crops(c)[0]
    fitted = recon.run_crops_fitted(c, m, lm, single_view_config(8), RefineConfig(steps=10))[0]
    assert fitted.refine_objective[1] < fitted.refine_objective[0]
    assert fitted.fit_objective[1] < fitted.fit_objective[0]
    np.testing.assert_allclose(
        fitted.m1 - fitted.m0,
        sample_uv_map(fitted.deformation.astype(np.float64), recon.model.uvs),
        atol=1e-4,
    )
    ratio = np.ptp(fitted.m0, axis=0) / np.ptp(net.m0, axis=0)
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
    assert np.abs(fitted.m1 - fitted.m0).max() > 0


def test_channels_last_weights_change_no_number(hrn_data, model_path, one_thread):
    """The reconstructor stores the detail networks' weights channels-last and folds the
    U-Net's batch norms and ReLUs into its convolutions (faster on CPU); a system loaded
    without those rewrites gives the same reconstruction to float32 rounding."""
    from models.precision import ConvReLU

    recon = Reconstructor.load(model_path)
    unet = recon.system.hrn.deretouch.generator
    weight = next(unet.parameters())
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert sum(isinstance(m, ConvReLU) for m in unet.modules()) == 18
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in unet.modules())
    system, _ = load_system(model_path)
    # the model file's stages (all three in this run) come with the loaded system
    assert system.trained_stages == ("base", "deretouch", "hrn")
    images = recon._images(crop_of(hrn_data)[None])
    with torch.no_grad():
        coarse = system.coarse(images)
        plain = system.details(images, coarse, deretouch=True)
        fast = recon.system.details(images, coarse, deretouch=True)
        bare = system.details(images, coarse, deretouch=False).albedo_map
    assert not next(system.hrn.deretouch.generator.parameters()).is_contiguous(
        memory_format=torch.channels_last
    )
    for a, b in (
        (plain.albedo_map, fast.albedo_map),
        (plain.maps.deformation, fast.maps.deformation),
        (plain.maps.displacement, fast.maps.displacement),
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the de-retouched albedo is not the plain one: the U-Net is in the comparison
    assert not torch.allclose(bare, plain.albedo_map)


def test_base_texture_skips_the_deretouching_network_and_keeps_the_geometry(
    hrn_data, model_path, tmp_path, one_thread
):
    crop = crop_of(hrn_data)[None]
    full = Reconstructor.load(model_path).run_crops(crop)[0]
    fast = Reconstructor.load(model_path, base_texture=True)
    calls = []
    fast.system.hrn.deretouch.generator.register_forward_hook(lambda *a: calls.append(1))
    rec = fast.run_crops(crop)[0]
    assert calls == []  # the de-retouching network never ran
    for name in ("m0", "m1", "deformation", "displacement", "rotation", "translation"):
        np.testing.assert_allclose(getattr(rec, name), getattr(full, name), rtol=1e-5, atol=1e-6)
    # the texture is the base albedo A0 in UV space
    system = fast.system
    with torch.no_grad():
        coarse = system.coarse(fast._images(crop))
        a0 = system.table.interpolate(coarse.albedo).permute(0, 3, 1, 2)[0].permute(1, 2, 0)
    np.testing.assert_allclose(rec.texture, a0.clamp(0, 1).numpy(), atol=1e-6)
    assert not np.allclose(rec.texture, full.texture, atol=1e-3)
    # the CLI flag: the written texture is the base albedo of that photo
    pytest.importorskip("mediapipe")
    from typer.testing import CliRunner

    from facehd.cli import app

    photo = hrn_data.scans / "photos" / "s000_e00_v00.png"
    outs = {}
    for flag in ([], ["--base-texture"]):
        out = tmp_path / ("base" if flag else "full")
        args = ["reconstruct", str(photo), "--checkpoint", str(model_path), "--out", str(out)]
        res = CliRunner().invoke(app, [*args, *flag])
        assert res.exit_code == 0, res.output
        outs[bool(flag)] = np.asarray(Image.open(out / photo.stem / "texture.png"))
        assert (out / photo.stem / "detail.obj").is_file()
    assert not np.array_equal(outs[True], outs[False])


def test_batch_records_each_photo_its_folder_or_its_failure(
    hrn_data, model_path, tmp_path, one_thread, monkeypatch
):
    import csv
    import json
    import shutil

    from typer.testing import CliRunner

    import models.reconstruct as reconstruct_mod
    from facehd.cli import app

    named = []  # the folder names are worked out once per run, shown and used alike
    real_output_names = reconstruct_mod.output_names
    monkeypatch.setattr(
        reconstruct_mod,
        "output_names",
        lambda *a, **k: named.append(a) or real_output_names(*a, **k),
    )

    photo = hrn_data.scans / "photos" / "s000_e00_v00.png"
    other = tmp_path / "other"
    other.mkdir()
    twin = other / photo.name  # another photo of the same name, with its landmarks
    shutil.copy(photo, twin)
    shutil.copy(photo.with_suffix(".pts"), twin.with_suffix(".pts"))
    empty = other / "empty.png"
    empty.write_bytes(b"")
    out = tmp_path / "rec"
    args = ["reconstruct", str(photo), str(twin), str(empty), str(photo)]
    res = CliRunner().invoke(app, [*args, "--checkpoint", str(model_path), "--out", str(out)])
    assert res.exit_code == 1, res.output  # the empty file failed; the others were done
    text = " ".join(res.output.split())
    assert f"given again, done once: {photo}" in text
    assert f"{twin} -> {out / (photo.stem + '_2')}" in text
    assert len(named) == 1
    with open(out / "photos.csv", newline="") as fh:
        rows = {r["photo"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {str(p.resolve()) for p in (photo, twin, empty)}
    assert rows[str(photo.resolve())]["output"] == photo.stem
    assert rows[str(twin.resolve())]["output"] == f"{photo.stem}_2"
    assert (
        rows[str(empty.resolve())]["output"] == ""
        and "empty.png" in rows[str(empty.resolve())]["error"]
    )
    for p, folder in ((photo, photo.stem), (twin, f"{photo.stem}_2")):
        meta = json.loads((out / folder / "reconstruction.json").read_text())
        assert meta["photo"] == str(p.resolve())
        assert meta["checkpoint"] == str(model_path.resolve())
    # how far M1 lies from the photo's landmarks, from the written files alone: mid.obj posed
    # by the pose, projected by the 224 crop's pinhole, against the .pts points in the crop
    from facehd.landmarks import load_photo_landmarks
    from facehd.render.camera import HRN_CAMERA_DISTANCE_MM, HRN_CENTER, HRN_FOCAL

    meta = json.loads((out / photo.stem / "reconstruction.json").read_text())
    pose, crop = meta["pose"], meta["crop_transform"]
    index = np.array(Reconstructor.load(model_path).model.landmarks68)
    m1 = load_mesh(out / photo.stem / "mid.obj").vertices[index]
    posed = m1 @ np.array(pose["R"]).T + np.array(pose["t"])
    depth = HRN_CAMERA_DISTANCE_MM - posed[:, 2]
    projected = np.stack(
        [
            HRN_FOCAL * posed[:, 0] / depth + HRN_CENTER,
            223.0 - (HRN_FOCAL * posed[:, 1] / depth + HRN_CENTER),
        ],
        axis=1,
    )
    given = crop["scale"] * load_photo_landmarks(photo.with_suffix(".pts"))
    given += np.array(crop["translation"])
    errors = np.linalg.norm(projected - given, axis=1)[17:]
    want = errors.mean() / np.linalg.norm(given[36] - given[45])
    assert meta["landmark_nme"]["value"] == pytest.approx(want, rel=1e-4)
    assert float(rows[str(photo.resolve())]["landmark_nme"]) == pytest.approx(want, abs=1e-4)
    assert rows[str(empty.resolve())]["landmark_nme"] == ""
    # the command names the photos whose M1 lies off their landmarks
    assert ("M1 lies off the photo's landmarks" in text) == (want > 0.1), (want, text)
    first = (out / photo.stem / "detail.obj").read_bytes()
    # a later run of the twin alone: its own folder again, the first photo's left alone
    res = CliRunner().invoke(
        app, ["reconstruct", str(twin), "--checkpoint", str(model_path), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    with open(out / "photos.csv", newline="") as fh:
        again = {r["photo"]: r for r in csv.DictReader(fh)}
    assert set(again) == {str(p.resolve()) for p in (photo, twin, empty)}
    assert again[str(twin.resolve())]["output"] == f"{photo.stem}_2"
    for p in (photo, twin):  # kept, or done again from the same inputs: the same score
        assert again[str(p.resolve())]["landmark_nme"] == rows[str(p.resolve())]["landmark_nme"]
    assert (out / photo.stem / "detail.obj").read_bytes() == first
    # a third photo of that name, and something else lying where a name would go
    third = tmp_path / "third" / photo.name
    third.parent.mkdir()
    shutil.copy(photo, third)
    shutil.copy(photo.with_suffix(".pts"), third.with_suffix(".pts"))
    (out / f"{photo.stem}_3").write_text("a note of the user's")
    res = CliRunner().invoke(
        app, ["reconstruct", str(third), "--checkpoint", str(model_path), "--out", str(out)]
    )
    assert res.exit_code == 0 and f"{third} -> {out / (photo.stem + '_4')}" in " ".join(
        res.output.split()
    )
    assert (out / f"{photo.stem}_3").read_text() == "a note of the user's"
    # the twin now fails (its file replaced by an empty one): its earlier folder goes, no
    # older file's reconstruction stays under its name
    twin.write_bytes(b"")
    res = CliRunner().invoke(
        app, ["reconstruct", str(twin), "--checkpoint", str(model_path), "--out", str(out)]
    )
    assert res.exit_code == 1 and not (out / f"{photo.stem}_2").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and "tmp" in p.name]
    # an output that is a file: an error before any photo
    res = CliRunner().invoke(
        app, ["reconstruct", str(photo), "--checkpoint", str(model_path), "--out", str(empty)]
    )
    assert res.exit_code == 2 and "must be a folder" in res.output


def test_a_path_not_there_is_listed_as_failed_and_the_batch_goes_on(
    hrn_data, model_path, tmp_path, one_thread
):
    import csv
    import shutil

    from typer.testing import CliRunner

    from facehd.cli import app

    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    src = hrn_data.scans / "photos" / "s000_e00_v00.png"
    shutil.copy(src, photo)
    shutil.copy(src.with_suffix(".pts"), photo.with_suffix(".pts"))
    gone, empty = tmp_path / "typo.png", tmp_path / "empty-folder"
    empty.mkdir()
    out = tmp_path / "rec"
    ckpt = ["--checkpoint", str(model_path), "--out", str(out)]
    res = CliRunner().invoke(app, ["reconstruct", str(gone), str(photo), str(empty), *ckpt])
    assert res.exit_code == 1, res.output  # two inputs failed; the photo between was done
    text = " ".join(res.output.split())
    assert f"skipped: {gone}: no such photo or folder" in text
    assert f"skipped: {empty}: folder holds no photo" in text
    assert "1 of 3 photos reconstructed" in text
    with open(out / "photos.csv", newline="") as fh:
        rows = {r["photo"]: r for r in csv.DictReader(fh)}
    assert rows[str(photo.resolve())]["output"] == "a"
    assert "no such photo or folder" in rows[str(gone.resolve())]["error"]
    assert "folder holds no photo" in rows[str(empty.resolve())]["error"]
    assert (out / "a" / "detail.obj").is_file()
    # the photo moved away, the old command run again: its reconstruction stays, indexed
    before = (out / "a" / "detail.obj").read_bytes()
    photo.rename(tmp_path / "moved.png")
    res = CliRunner().invoke(app, ["reconstruct", str(photo), str(photo.parent), *ckpt])
    assert res.exit_code == 2 and "no such photo or folder" in res.output  # nothing to do
    other = tmp_path / "b.png"
    shutil.copy(src, other)
    shutil.copy(src.with_suffix(".pts"), other.with_suffix(".pts"))
    res = CliRunner().invoke(app, ["reconstruct", str(photo), str(other), *ckpt])
    assert res.exit_code == 1, res.output
    assert (out / "a" / "detail.obj").read_bytes() == before
    with open(out / "photos.csv", newline="") as fh:
        rows = {r["photo"]: r for r in csv.DictReader(fh)}
    assert rows[str(photo.resolve())]["output"] == "a"
    assert rows[str(other.resolve())]["output"] == "b"


def test_photos_under_other_names_and_broken_links_are_listed(tmp_path, no_heif_decoder):
    """A folder's .jfif photos are found; its HEIC photos (no decoder: pillow-heif not installed)
    and broken links are listed as failed, naming why, not passed over, and take no output
    folder name from a photo of the same name (an iPhone's IMG_0001.HEIC beside its
    IMG_0001.JPG)."""
    import os

    from models.reconstruct import find_photo_inputs, output_names

    for name in ("IMG_0001.HEIC", "IMG_0001.JPG", "b.jfif"):
        Image.new("RGB", (40, 40)).save(tmp_path / name, "JPEG")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "d.jpg")
    (tmp_path / "e.pts").write_text("not a photo")
    found = find_photo_inputs([tmp_path])
    assert found.photos == [tmp_path / "IMG_0001.JPG", tmp_path / "b.jfif"]
    assert output_names(found.photos) == ["IMG_0001", "b"]
    why = dict(found.missing)
    assert set(why) == {tmp_path / "IMG_0001.HEIC", tmp_path / "d.jpg"}
    assert "no HEIC decoder; install pillow-heif" in why[tmp_path / "IMG_0001.HEIC"]
    assert why[tmp_path / "d.jpg"] == f"broken link: {tmp_path / 'gone.jpg'} is not there"
    given = find_photo_inputs([tmp_path / "d.jpg", tmp_path / "missing.jpg"])
    assert given.photos == [] and dict(given.missing) == {
        tmp_path / "d.jpg": f"broken link: {tmp_path / 'gone.jpg'} is not there",
        tmp_path / "missing.jpg": "no such photo or folder",
    }


def test_output_folders_are_not_read_back_as_photos(tmp_path):
    from models.reconstruct import find_photo_inputs, output_names

    photos = tmp_path / "photos"
    (photos / "rec" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photos / "a.png")
    for name in ("overlay.png", "texture.png"):  # what a run into photos/rec wrote
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photos / "rec" / "a" / name)
    (photos / "rec" / "a" / "reconstruction.json").write_text("{}")
    assert find_photo_inputs([photos], out=photos / "rec").photos == [photos / "a.png"]
    # an earlier run's folder elsewhere among the photos: its files are results, not photos
    assert find_photo_inputs([photos], out=tmp_path / "elsewhere").photos == [photos / "a.png"]
    # given by name, a file is taken as it is
    given = photos / "rec" / "a" / "overlay.png"
    assert find_photo_inputs([given]).photos == [given]
    # the output folder is the photos' own, or above them: the photos are still found, and
    # the reconstructions in it are not
    assert find_photo_inputs([photos], out=photos).photos == [photos / "a.png"]
    assert find_photo_inputs([photos], out=tmp_path).photos == [photos / "a.png"]
    # a multi-view run's shared texture and preview beside its views are not photos: in the
    # output folder (even before its multiview.json is written), or in an earlier run's
    for name in ("shared_texture.png", "shared_turntable.png"):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photos / "rec" / name)
    assert find_photo_inputs([photos], out=photos / "rec").photos == [photos / "a.png"]
    (photos / "rec" / "multiview.json").write_text("{}")
    assert find_photo_inputs([photos], out=tmp_path / "elsewhere").photos == [photos / "a.png"]
    # elsewhere, a photo of that name is a photo
    (photos / "rec" / "multiview.json").unlink()
    assert find_photo_inputs([photos], out=tmp_path / "elsewhere").photos == [
        photos / "a.png",
        photos / "rec" / "shared_texture.png",
        photos / "rec" / "shared_turntable.png",
    ]
    # a photo named like the run's own files gets another folder name
    odd = [
        Path("x/photos.csv.png"),
        Path("y/shared.obj.jpg"),
        Path("z/multiview.json.png"),
        Path("w/shared_texture.png.jpg"),
        Path("v/Shared.MTL.png"),
    ]
    assert output_names(odd, tmp_path / "out") == [
        "photos.csv_2",
        "shared.obj_2",
        "multiview.json_2",
        "shared_texture.png_2",
        "Shared.MTL_2",
    ]


def test_a_second_run_into_one_folder_is_refused(hrn_data, model_path, tmp_path, one_thread):
    from typer.testing import CliRunner

    from facehd.cli import app
    from facehd.csvtext import locked

    photo = hrn_data.scans / "photos" / "s000_e00_v00.png"
    out = tmp_path / "rec"
    args = ["reconstruct", str(photo), "--checkpoint", str(model_path), "--out", str(out)]
    with locked(out / "reconstruct"):  # another run holds the folder
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    said = " ".join(res.output.split())
    assert f"{out}: another facehd reconstruct is writing into this folder (pid " in said
    assert not (out / photo.stem).exists() and not (out / "photos.csv").exists()
    res = CliRunner().invoke(app, args)  # once it has ended
    assert res.exit_code == 0, res.output


def test_a_file_name_in_another_encoding_fails_alone(hrn_data, model_path, tmp_path, one_thread):
    import csv
    import os
    import shutil

    from typer.testing import CliRunner

    from facehd.cli import app

    src = hrn_data.scans / "photos" / "s000_e00_v00.png"
    folder = tmp_path / "photos"
    folder.mkdir()
    latin = folder / os.fsdecode(b"lat\xe9.png")  # a Latin-1 byte: not UTF-8
    shutil.copy(src, latin)
    good = folder / "good.png"
    shutil.copy(src, good)
    shutil.copy(src.with_suffix(".pts"), good.with_suffix(".pts"))
    out = tmp_path / "rec"
    res = CliRunner().invoke(
        app, ["reconstruct", str(folder), "--checkpoint", str(model_path), "--out", str(out)]
    )
    assert res.exit_code == 1, res.output
    said = " ".join(res.output.split())
    assert "lat\\xe9.png: file name is not valid UTF-8 text: rename the file" in said
    with open(out / "photos.csv", newline="", encoding="utf-8") as fh:
        rows = {r["photo"]: r for r in csv.DictReader(fh)}
    assert rows[str(good.resolve())]["output"] == "good"
    escaped = str(folder.resolve() / "lat\\xe9.png")
    assert "not valid UTF-8" in rows[escaped]["error"] and rows[escaped]["output"] == ""
    # a rerun finds its row again: one row, not a second
    res = CliRunner().invoke(
        app, ["reconstruct", str(folder), "--checkpoint", str(model_path), "--out", str(out)]
    )
    with open(out / "photos.csv", newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_a_killed_write_is_tidied_by_the_next_run(tmp_path):
    """The hidden folders of a killed process (named with its pid) go; an earlier result moved
    aside by an unfinished swap is put back; a running process's folders are left."""
    import os
    import subprocess
    import sys

    from models.reconstruct import clear_interrupted_writes

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    for name in (f".a.tmp{dead}", f".b.old{dead}", f".c.old{dead}", "c", f".d.tmp{alive}", "e"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mesh.obj").write_text(name)
    (tmp_path / f".f.tmp{dead}").write_text("a file, not a result folder")
    done = clear_interrupted_writes(tmp_path)
    assert sorted(p.name for p in done) == sorted(
        [f".a.tmp{dead}", f".b.old{dead}", f".c.old{dead}"]
    )
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["b", "c", f".d.tmp{alive}", "e", f".f.tmp{dead}"])
    assert (tmp_path / "b" / "mesh.obj").read_text() == f".b.old{dead}"
    assert (tmp_path / "c" / "mesh.obj").read_text() == "c"


def test_reconstruct_refines_the_base_coefficients_when_asked(
    hrn_data, model_path, tmp_path, one_thread
):
    import json

    from typer.testing import CliRunner

    from facehd.cli import app
    from facehd.mesh import load_mesh
    from models.refine import RefineConfig

    photo = hrn_data.scans / "photos" / "s000_e00_v00.png"  # with its .pts landmarks
    recon = Reconstructor.load(model_path)
    aligned, mask, landmarks, _ = recon.prepare_view_framed(photo)
    cfg = RefineConfig(steps=3)
    recs, before, after = recon.run_crops_refined(
        aligned.image[None], mask[None], landmarks[None], cfg
    )
    assert after[0] < before[0]
    plain = recon.run_crops(aligned.image[None])[0]
    assert not np.allclose(recs[0].m0, plain.m0, atol=1e-3)
    with pytest.raises(ValueError, match="masks"):
        recon.run_crops_refined(aligned.image[None], mask, landmarks[None], cfg)
    out = tmp_path / "rec"
    args = ["reconstruct", str(photo), "--checkpoint", str(model_path), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--refine-steps", "3"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / photo.stem / "reconstruction.json").read_text())
    said = meta["refine"]
    settings = {k: said[k] for k in ("steps", "lr", "start")}
    assert settings == {"steps": 3, "lr": 0.01, "start": "mean"}
    assert recs[0].refine_objective == (before[0], after[0]) and plain.refine_objective is None
    assert said["objective_before"] == pytest.approx(before[0], rel=1e-6)
    assert said["objective_after"] == pytest.approx(after[0], rel=1e-6)
    # the command's M0 is the library's refined one (obj text: 6 significant digits)
    written = load_mesh(out / photo.stem / "coarse.obj").vertices
    np.testing.assert_allclose(written, recs[0].m0, rtol=1e-4, atol=1e-3)
    # --multiview starts the joint fit from the refined coefficients: with no iterations of
    # the fit, the view is the single-view refined reconstruction
    mv = tmp_path / "rec-mv"
    res = CliRunner().invoke(
        app, ["reconstruct", str(photo), "--checkpoint", str(model_path), "--out", str(mv),
              "--multiview", "--iterations", "0", "--refine-steps", "3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    said = json.loads((mv / "multiview.json").read_text())["refine"]
    assert {k: said[k] for k in ("steps", "lr", "start")} == settings
    assert said["objective_before"] == pytest.approx(before, rel=1e-6)
    assert said["objective_after"] == pytest.approx(after, rel=1e-6)
    written = load_mesh(mv / photo.stem / "coarse.obj").vertices
    np.testing.assert_allclose(written, recs[0].m0, rtol=1e-4, atol=1e-3)
    assert not np.allclose(written, plain.m0, atol=1e-2)
    res = CliRunner().invoke(
        app, ["reconstruct", str(photo), "--checkpoint", str(model_path), "--out", str(mv),
              "--multiview", "--iterations", "0"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((mv / "multiview.json").read_text())["refine"] is None


def test_photos_are_fitted_alone_when_asked(hrn_data, model_path, tmp_path, one_thread):
    """--fit-iterations: each photo's coefficients and maps fitted on MV-HRN's objective with the
    photo as its one view. The batch's crops are fitted apart (each as fit_multiview on it
    alone), with no iterations the start is kept (the networks', or the refined one), the fit
    lowers its objective, and the command writes the fitted face and what the fit did."""
    import json

    from typer.testing import CliRunner

    from facehd.cli import app
    from facehd.mesh import load_mesh
    from models.multiview import (
        SINGLE_VIEW_TV_DEFORMATION,
        MultiViewConfig,
        fit_multiview,
        single_view_config,
    )
    from models.refine import RefineConfig

    photos = [hrn_data.scans / "photos" / f"s000_e00_v0{v}.png" for v in (0, 1)]
    recon = Reconstructor.load(model_path)
    views = [recon.prepare_view_framed(p)[:3] for p in photos]
    crops = np.stack([a.image for a, _, _ in views])
    masks = np.stack([m for _, m, _ in views])
    lms = np.stack([lm for _, _, lm in views])
    # no iterations: the networks' reconstruction, or the refined one
    kept = recon.run_crops_fitted(crops, masks, lms, MultiViewConfig(iterations=0))
    for got, want in zip(kept, recon.run_crops(crops), strict=True):
        np.testing.assert_allclose(got.m1, want.m1, atol=1e-4)
        np.testing.assert_allclose(got.displacement, want.displacement, atol=1e-6)
    refine = RefineConfig(steps=2)
    refined, before, after = recon.run_crops_refined(crops, masks, lms, refine)
    kept = recon.run_crops_fitted(crops, masks, lms, MultiViewConfig(iterations=0), refine)
    for i, (got, want) in enumerate(zip(kept, refined, strict=True)):
        np.testing.assert_allclose(got.m0, want.m0, atol=1e-4)
        assert got.refine_objective == pytest.approx((before[i], after[i]), rel=1e-6)
    # fitted: each crop as if it were the only one, its objective lower after
    cfg = MultiViewConfig(iterations=4, lr=1e-2)
    fitted = recon.run_crops_fitted(crops, masks, lms, cfg)
    for i, rec in enumerate(fitted):
        alone = fit_multiview(recon, crops[i : i + 1], masks[i : i + 1], lms[i : i + 1], cfg)
        np.testing.assert_allclose(rec.m1, alone.views[0].m1, atol=1e-4)
        start, end = rec.fit_objective
        assert start == pytest.approx(alone.history[0]["total"], rel=1e-6) and end < start
        assert not np.allclose(rec.m1, kept[i].m1, atol=1e-3)
    # the command: the fitted face, and what the fit did in reconstruction.json
    out = tmp_path / "rec"
    args = ["reconstruct", str(photos[0]), "--checkpoint", str(model_path), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--fit-iterations", "4"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / photos[0].stem / "reconstruction.json").read_text())
    assert meta["fit"]["iterations"] == 4 and meta["refine"] is None
    assert meta["fit"]["objective_after"] < meta["fit"]["objective_before"]
    # one photo's fit weights its deformation's total variation as HRN does for one image
    assert meta["fit"]["tv_deformation"] == SINGLE_VIEW_TV_DEFORMATION
    assert meta["fit"]["deformation_start"] == "network"
    recon.fit = single_view_config(4)
    want = recon.run_photo(photos[0])[0]
    # a photo already loaded (bench's FaceScape path reads it once) gives the same face
    from facehd.align import load_photo

    again = recon.run_photo_framed(photos[0], load_photo(photos[0]))[0]
    np.testing.assert_allclose(again.m1, want.m1, atol=1e-6)
    written = load_mesh(out / photos[0].stem / "mid.obj").vertices
    np.testing.assert_allclose(written, want.m1, rtol=1e-4, atol=1e-3)
    assert meta["fit"]["objective_after"] == pytest.approx(want.fit_objective[1], rel=1e-5)
    # the deformation map from zero: M1 starts as M0, and the fit says so
    zero = tmp_path / "rec-zero"
    res = CliRunner().invoke(
        app, [*args[:-1], str(zero), "--fit-iterations", "4", "--fit-deformation-start", "zero"]
    )
    assert res.exit_code == 0, res.output
    meta_zero = json.loads((zero / photos[0].stem / "reconstruction.json").read_text())
    assert meta_zero["fit"]["deformation_start"] == "zero"
    recon.fit = single_view_config(4, "zero")
    from_zero = recon.run_photo(photos[0])[0]
    written = load_mesh(zero / photos[0].stem / "mid.obj").vertices
    np.testing.assert_allclose(written, from_zero.m1, rtol=1e-4, atol=1e-3)
    assert not np.allclose(from_zero.m1, want.m1, atol=1e-3)
    for extra, said in (
        (["--fit-deformation-start", "zero"], "give --fit-iterations"),
        (["--fit-iterations", "4", "--fit-deformation-start", "mean"], "must be one of"),
    ):
        refused = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "no"), *extra])
        assert refused.exit_code == 2 and said in " ".join(refused.output.split())
        assert not (tmp_path / "no").exists()
    res = CliRunner().invoke(app, args)
    assert (
        res.exit_code == 0
        and json.loads((out / photos[0].stem / "reconstruction.json").read_text())["fit"] is None
    )
    # the joint fit has its own iterations
    refused = CliRunner().invoke(
        app, [*args[:-2], "--out", str(tmp_path / "mv"), "--multiview", "--fit-iterations", "4"]
    )
    assert refused.exit_code == 2 and "--multiview fits the views with --iterations" in (
        " ".join(refused.output.split())
    )
    assert not (tmp_path / "mv").exists()


def test_an_interrupted_run_continues_where_it_stopped(
    hrn_data, model_path, tmp_path, monkeypatch, one_thread
):
    """A rerun keeps the photos whose folders hold their reconstruction from the same photo,
    landmark file, model files and settings, and makes the others; a change to any of these,
    a folder missing a file, or ``redo`` makes a photo again."""
    import shutil

    from facehd.landmarks import load_photo_landmarks, save_photo_landmarks

    src = hrn_data.scans / "photos" / "s000_e00_v00.png"
    photos = []
    for name in ("a", "b"):
        photos.append(tmp_path / "photos" / f"{name}.png")
        photos[-1].parent.mkdir(exist_ok=True)
        shutil.copy(src, photos[-1])
        shutil.copy(src.with_suffix(".pts"), photos[-1].with_suffix(".pts"))
    out = tmp_path / "rec"
    made: list[str] = []
    real = Reconstructor.run_photo_framed
    monkeypatch.setattr(
        Reconstructor,
        "run_photo_framed",
        lambda self, path: made.append(Path(path).stem) or real(self, path),
    )

    def stop_after_first(_path):  # noqa: ANN001
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_photos(photos, model_path, out, progress=stop_after_first)
    assert made == ["a"] and (out / "a" / "reconstruction.json").is_file()
    assert not (out / "b").exists()
    first = (out / "a" / "detail.obj").read_bytes()
    stamp = (out / "a" / "reconstruction.json").stat().st_mtime_ns

    def run(**kw):  # noqa: ANN003
        made.clear()
        results = reconstruct_photos(photos, model_path, out, **kw)
        assert all(r.error is None for r in results)
        return {r.photo.stem: r.kept for r in results}

    assert run() == {"a": True, "b": False} and made == ["b"]
    assert (out / "a" / "detail.obj").read_bytes() == first
    assert (out / "a" / "reconstruction.json").stat().st_mtime_ns == stamp
    assert run() == {"a": True, "b": True} and made == []
    # the photo's landmark file edited: that photo is made again
    lm = load_photo_landmarks(photos[0].with_suffix(".pts"))
    save_photo_landmarks(photos[0].with_suffix(".pts"), lm + 0.5)
    assert run() == {"a": False, "b": True} and made == ["a"]
    # the photo itself replaced (the same name, other pixels)
    Image.fromarray(np.asarray(Image.open(src))[:, ::-1].copy()).save(photos[1])
    shutil.copy(photos[0].with_suffix(".pts"), photos[1].with_suffix(".pts"))
    assert run() == {"a": True, "b": False} and made == ["b"]
    # other settings, then a folder that lost a file, then redo
    assert run(base_texture=True) == {"a": False, "b": False}
    (out / "b" / "turntable.png").unlink()
    assert run(base_texture=True) == {"a": True, "b": False} and made == ["b"]
    assert run(base_texture=True, redo=True) == {"a": False, "b": False}
    assert made == ["a", "b"]


def test_photos_whose_names_print_alike_keep_their_own_folders(tmp_path):
    """A name with a line break and one with a backslash and ``n`` in its place print alike in
    messages; ``photos.csv`` names them apart, so each gets its own row and, run after run, its
    own folder (never the other's)."""
    from models.reconstruct import (
        PhotoResult,
        _read_index,
        output_names,
        photo_key,
        write_photo_index,
    )

    photos = [tmp_path / "new\nline.png", tmp_path / "new\\nline.png", tmp_path / "plain.png"]
    keys = [photo_key(p) for p in photos]
    assert len(set(keys)) == 3 and keys[2] == str(tmp_path.resolve() / "plain.png")
    out = tmp_path / "out"
    names = output_names(photos, out)
    assert len(set(names)) == 3
    for name in names:
        (out / name).mkdir(parents=True)
    write_photo_index(
        out, [PhotoResult(p, out / n, None) for p, n in zip(photos, names, strict=True)]
    )
    index = _read_index(out)
    assert {k: row.output for k, row in index.items()} == dict(zip(keys, names, strict=True))
    # a rerun, in the other order: each photo gets its folder again
    again = output_names(photos[::-1], out)
    assert again == names[::-1]


def _posed_m1(recon: Reconstructor, rec: Any, size: int) -> tuple[Any, ...]:
    """A renderer with the base camera at ``size`` and M1 posed for it: ``(renderer, vertices,
    faces, uvs, vertex normals)``."""
    from facehd.render import Renderer
    from models.system import scaled_hrn_camera

    v = torch.as_tensor(rec.m1 @ rec.rotation.T + rec.translation, dtype=torch.float32)[None]
    uvs = torch.as_tensor(np.array(recon.system.uv_layout), dtype=torch.float32)
    renderer = Renderer(scaled_hrn_camera(size), "cpu")
    return renderer, v, recon.system.faces.cpu(), uvs, recon.model.vertex_normals(v)


def test_shaded_texture_is_the_renders_shading_per_texel(hrn_data, model_path, one_thread):
    """M1 drawn unlit with the texel-shaded texture looks as the lit render of the albedo
    through the detail normals does (each shades per texel / per pixel: they differ by the
    interpolation alone)."""
    from facehd.render import render_with_displacement

    recon = Reconstructor.load(model_path)
    rec = recon.run_crops(crop_of(hrn_data)[None])[0]
    # a relief the shading shows, lit from the side and from above: the normals matter
    sh = np.zeros((9, 3), np.float32)
    sh[0], sh[1], sh[3] = 0.9, 0.35, 0.5
    rec = replace(rec, displacement=rec.displacement * 20.0, sh=sh)
    shaded = recon.shaded_texture(rec)
    size = 224
    r, v, faces, uvs, normals = _posed_m1(recon, rec, size)
    unlit = r.render(v, faces, uvs=uvs, normals=normals, texture=shaded)
    lit = render_with_displacement(
        r, v, faces, recon.system.uv_layout,
        torch.as_tensor(rec.displacement, dtype=torch.float32)[None, None],
        table=recon.system.table, normals=normals,
        texture=torch.as_tensor(rec.texture).permute(2, 0, 1)[None].float(),
        sh=torch.as_tensor(rec.sh, dtype=torch.float32)[None],
    )  # fmt: skip
    m = unlit.mask[0].numpy()
    a, b = unlit.image[0].numpy()[m], lit.image[0].numpy()[m]
    assert np.median(np.abs(a - b)) < 0.01 and np.abs(a - b).mean() < 0.02
    # and the shading matters: the unshaded albedo is further off
    plain = r.render(v, faces, uvs=uvs, normals=normals, texture=shaded * 0 + torch.as_tensor(
        rec.texture).permute(2, 0, 1)[None].float()).image[0].numpy()[m]  # fmt: skip
    assert np.abs(plain - b).mean() > 3 * np.abs(a - b).mean()


def test_texture_fit_recovers_the_colours_of_a_photo(hrn_data, model_path, one_thread):
    from models.reconstruct import TextureFitConfig

    recon = Reconstructor.load(model_path)
    rec = recon.run_crops(crop_of(hrn_data)[None])[0]
    size = 224
    r, v, faces, uvs, normals = _posed_m1(recon, rec, size)

    def draw(texture: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        res = r.render(v, faces, uvs=uvs, normals=normals, texture=texture)
        return res.image[0].numpy(), res.mask[0].numpy()

    shaded = recon.shaded_texture(rec)
    # a photo drawn with the shaded texture itself: the fit has nothing to change
    photo, covered = draw(shaded)
    mask = np.ones((size, size), np.uint8)
    same = recon.fit_texture(rec, photo, mask, TextureFitConfig(steps=20))
    np.testing.assert_allclose(same.texture_fitted, shaded[0].permute(1, 2, 0).numpy(), atol=2e-3)
    # its objective starts at the photometric loss of a perfect match: 1.92 sqrt(1e-6)
    assert same.texture_fit_objective[0] == pytest.approx(1.92e-3, rel=1e-3)
    # a photo of other, smooth colours (a known texture): the fit finds them where M1 is seen
    u = torch.linspace(0, 1, shaded.shape[-1])
    known = torch.stack(
        [0.3 + 0.4 * u[None, :].expand(len(u), -1), 0.6 - 0.3 * u[:, None].expand(-1, len(u)),
         torch.full((len(u), len(u)), 0.45)]
    )[None]  # fmt: skip
    photo, covered = draw(known)
    half = np.zeros((size, size), np.uint8)
    half[:, : size // 2] = 1  # the face mask: the photo's left half only
    fit = recon.fit_texture(rec, photo, half, TextureFitConfig(steps=300, lr=0.02))
    before, after = fit.texture_fit_objective
    assert after < 0.5 * before
    drawn, _ = draw(torch.as_tensor(fit.texture_fitted).permute(2, 0, 1)[None])
    start, _ = draw(shaded)
    left = covered & (half > 0)
    right = covered & (half == 0)
    err = np.abs(drawn - photo)[left].mean()
    assert err < 0.25 * np.abs(start - photo)[left].mean() and err < 0.02
    # outside the mask the texture stays near its start, not the photo (TV carries some of
    # the fit across the middle: 0.59 of the way there measured, 0.92 with the mask ignored)
    assert np.abs(drawn - start)[right].mean() < 0.75 * np.abs(photo - start)[right].mean()
    with pytest.raises(ValueError, match="square crop"):
        recon.fit_texture(rec, photo[:100], half, TextureFitConfig(steps=1))

    # the offset's total variation is weighed: a heavier weight fits a smoother offset
    def roughness(tv: float) -> float:
        got = recon.fit_texture(rec, photo, half, TextureFitConfig(steps=60, lr=0.02, tv=tv))
        offset = got.texture_fitted - shaded[0].permute(1, 2, 0).numpy()
        return float(np.abs(np.diff(offset, axis=0)).sum() + np.abs(np.diff(offset, axis=1)).sum())

    assert roughness(100.0) < 0.5 * roughness(0.0)
    # a fitted texture is a colour: clipped to [0, 1] (the shaded start, brightly lit, is not)
    bright = replace(rec, sh=rec.sh * 3.0)
    start = recon.shaded_texture(bright)[0].permute(1, 2, 0).numpy()
    assert start.max() > 1.05
    clipped = recon.fit_texture(bright, photo, half, TextureFitConfig(steps=0)).texture_fitted
    np.testing.assert_allclose(clipped, np.clip(start, 0.0, 1.0), atol=1e-6)
    # a crop of 8-bit pixels is read as 0-255: it fits as the same crop in [0, 1] does
    u8 = (photo * 255).round().astype(np.uint8)
    a, b = (recon.fit_texture(rec, x, half, TextureFitConfig(steps=5)) for x in (u8, u8 / 255.0))
    np.testing.assert_allclose(a.texture_fitted, b.texture_fitted, atol=1e-5)
    assert a.texture_fit_objective == pytest.approx(b.texture_fit_objective, rel=1e-5)
    for bad, match in (
        ({"steps": -1}, "steps must be >= 0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"photometric": -1.0}, "weights >= 0"),
        ({"tv": -0.5}, "weights >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            TextureFitConfig(**bad)


def test_reconstruct_writes_the_fitted_texture_when_asked(
    hrn_data, model_path, tmp_path, one_thread
):
    from typer.testing import CliRunner

    from facehd.cli import app

    photo = hrn_data.scans / "photos" / "s000_e00_v00.png"  # with its .pts landmarks
    out = tmp_path / "rec"
    args = ["reconstruct", str(photo), "--checkpoint", str(model_path), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--texture-fit-steps", "10"])
    assert res.exit_code == 0, res.output
    folder = out / photo.stem
    meta = json.loads((folder / "reconstruction.json").read_text())
    said = meta["texture_fit"]
    assert said["steps"] == 10 and said["objective_after"] < said["objective_before"]
    for mtl in ("coarse.mtl", "mid.mtl", "detail.mtl"):
        assert "map_Kd texture_fitted.png" in (folder / mtl).read_text()
    fitted = np.asarray(Image.open(folder / "texture_fitted.png"))
    albedo = np.asarray(Image.open(folder / "texture.png"))
    assert fitted.shape == albedo.shape and not np.array_equal(fitted, albedo)
    # the same settings keep the folder; without the fit it is made again, without the file
    res = CliRunner().invoke(app, [*args, "--texture-fit-steps", "10"])
    assert res.exit_code == 0 and "1 of them kept" in res.output, res.output
    (folder / "texture_fitted.png").unlink()  # a kept folder must hold it: made again
    res = CliRunner().invoke(app, [*args, "--texture-fit-steps", "10"])
    assert res.exit_code == 0 and "kept" not in res.output, res.output
    assert (folder / "texture_fitted.png").is_file()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert not (folder / "texture_fitted.png").exists()
    assert json.loads((folder / "reconstruction.json").read_text())["texture_fit"] is None
    assert "map_Kd texture.png" in (folder / "mid.mtl").read_text()
    # each view of a joint fit gets its own
    mv = tmp_path / "mv"
    twin = hrn_data.scans / "photos" / "s000_e00_v01.png"
    res = CliRunner().invoke(
        app, ["reconstruct", str(photo), str(twin), "--checkpoint", str(model_path), "--out",
              str(mv), "--multiview", "--iterations", "0", "--texture-fit-steps", "5"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((mv / "multiview.json").read_text())["texture_fit"]["steps"] == 5
    views = []
    for view in (photo, twin):
        said = json.loads((mv / view.stem / "reconstruction.json").read_text())["texture_fit"]
        assert said["steps"] == 5 and said["objective_after"] < said["objective_before"]
        assert "map_Kd texture_fitted.png" in (mv / view.stem / "mid.mtl").read_text()
        views.append(np.asarray(Image.open(mv / view.stem / "texture_fitted.png")).astype(int))
    # the shared face wears a blend of the views' textures: per texel between theirs
    assert "map_Kd shared_texture.png" in (mv / "shared.mtl").read_text()
    shared = np.asarray(Image.open(mv / "shared_texture.png")).astype(int)
    low, high = np.minimum(*views), np.maximum(*views)
    assert np.all(shared >= low - 1) and np.all(shared <= high + 1)
    assert np.mean(shared != views[0]) > 0.05 and np.mean(shared != views[1]) > 0.05


def test_blend_textures_weighs_each_view_per_texel():
    from models.reconstruct import blend_textures

    red = np.zeros((4, 4, 3))
    red[..., 0] = 1.0
    blue = np.zeros((4, 4, 3))
    blue[..., 2] = 1.0
    w_red = np.array([[1.0, 0.75, 0.0, 0.0]] * 4)
    w_blue = np.array([[0.0, 0.25, 1.0, 0.0]] * 4)
    out = blend_textures([red, blue], [w_red, w_blue])
    np.testing.assert_allclose(out[:, 0], red[:, 0])
    np.testing.assert_allclose(out[:, 1], 0.75 * red[:, 1] + 0.25 * blue[:, 1])
    np.testing.assert_allclose(out[:, 2], blue[:, 2])
    np.testing.assert_allclose(out[:, 3], 0.5 * (red[:, 3] + blue[:, 3]))  # no view: the mean
    # the plain mean at weight `prior` on top: where the views weigh little, the blend fades
    # into it, and where they weigh much, it hardly moves
    faded = blend_textures([red, blue], [w_red * 0.1, w_blue * 0.1], prior=0.5)
    plain = 0.5 * (red + blue)
    want = (0.075 * red[:, 1] + 0.025 * blue[:, 1] + 0.5 * plain[:, 1]) / 0.6
    np.testing.assert_allclose(faded[:, 1], want)
    np.testing.assert_allclose(faded[:, 3], plain[:, 3])
    heavy = blend_textures([red, blue], [w_red * 100, w_blue * 100], prior=0.5)
    np.testing.assert_allclose(heavy[:, 0], red[:, 0], atol=0.01)
    with pytest.raises(ValueError, match="prior"):
        blend_textures([red, blue], [w_red, w_blue], prior=-1.0)
    with pytest.raises(ValueError, match="blend_textures"):
        blend_textures([red, blue], [w_red[:2], w_blue])
    with pytest.raises(ValueError, match="blend_textures"):
        blend_textures([red, blue[..., :2]], [w_red, w_blue])  # 3 channels and 2


def test_view_weights_favour_the_texels_facing_the_camera(hrn_data, model_path, one_thread):
    recon = Reconstructor.load(model_path)
    rec = recon.run_crops(crop_of(hrn_data)[None])[0]
    rec = replace(rec, rotation=np.eye(3))  # frontal
    w = recon.view_weights(rec)
    assert w.shape == rec.displacement.shape and w.min() >= 0 and w.max() <= 1
    assert np.all(w[~rec.seen] == 0) and w[rec.seen].max() > 0.95
    # turned about the vertical axis, the side that comes to face the camera weighs more
    from facehd.transforms import rotation_from_axis_angle

    def about_y(degrees: float) -> np.ndarray:
        return rotation_from_axis_angle(np.array([0.0, np.radians(degrees), 0.0]))

    turn = about_y(35.0)
    both = np.ones_like(rec.seen)
    front = recon.view_weights(replace(rec, seen=both))
    turned = recon.view_weights(replace(rec, rotation=turn, seen=both))
    half = w.shape[1] // 2
    gain = turned - front
    cols = np.array(recon.system.table.mask)
    left = gain[:, :half][cols[:, :half]].mean()
    right = gain[:, half:][cols[:, half:]].mean()
    assert abs(left - right) > 0.05 and np.sign(left) != np.sign(right)
    # the weight is the squared cosine: texels facing the camera (weight near 1) turned 60
    # degrees away from it weigh about cos(60)^2 = 1/4 (their normals are within 15 degrees
    # of the view: 0.2 measured), not the cosine's 1/2
    facing = front > np.cos(np.radians(15.0)) ** 2
    far = recon.view_weights(replace(rec, rotation=about_y(60.0), seen=both))[facing]
    assert facing.sum() > 20 and 0.12 < np.median(far) < 0.3
    # turned 120 degrees, they face away: weight 0 even where counted as seen
    behind = recon.view_weights(replace(rec, rotation=about_y(120.0), seen=both))
    assert np.all(behind[facing] == 0)


def test_view_weights_follow_the_face_mask_and_fade_at_a_views_edge(
    hrn_data, model_path, one_thread
):
    from models.system import scaled_hrn_camera

    recon = Reconstructor.load(model_path)
    rec = recon.run_crops(crop_of(hrn_data)[None])[0]
    layout = np.array(recon.system.table.mask)
    full = recon.view_weights(rec, feather=0)
    # the face mask: texels that project onto its left half keep their weight, the rest get 0;
    # the projection redone here with the pinhole matrices (pixel centres at integers)
    size = 224
    mask = np.zeros((size, size), np.uint8)
    mask[:, : size // 2] = 1
    halved = recon.view_weights(rec, mask, feather=0)
    cam = scaled_hrn_camera(size, dtype=torch.float64)
    K, R, t = (np.asarray(x[0], dtype=np.float64) for x in (cam.K, cam.R, cam.t))
    posed = torch.as_tensor(rec.m1 @ rec.rotation.T + rec.translation)[None]
    points = recon.system.table.interpolate(posed)[0].numpy()
    h = (points @ R.T + t) @ K.T
    x = h[..., 0] / h[..., 2]
    left, right = layout & (x < size / 2 - 1.5), layout & (x > size / 2 + 0.5)
    assert left.sum() > 100 and right.sum() > 100 and full[left].max() > 0.5
    np.testing.assert_allclose(halved[left], full[left], atol=1e-12)
    assert np.all(halved[right] == 0) and full[right].max() > 0.5
    # the mask is read bilinearly: with every other column of it set, a texel keeps the
    # fraction 1 - (x mod 2) or (x mod 2) - 1 of its weight, by where it projects
    stripes = np.zeros((size, size), np.uint8)
    stripes[:, ::2] = 1
    striped = recon.view_weights(rec, stripes, feather=0)
    some = layout & (full > 0.05)
    want = np.abs(1.0 - np.mod(x[some], 2.0))
    np.testing.assert_allclose(striped[some] / full[some], want, atol=1e-6)
    assert np.mean((want > 0.1) & (want < 0.9)) > 0.5  # most between two pixels
    # a hole in what the view sees: the weights fall off linearly over `feather` texels from
    # it, by the distance to its nearest texel (brute force), and not at the layout's own edge
    seen = layout.copy()
    rows, cols = np.nonzero(layout)
    r0, c0 = int(np.median(rows)), int(np.median(cols))
    seen[r0 - 5 : r0 + 5, c0 - 5 : c0 + 5] = False
    base = recon.view_weights(replace(rec, seen=seen), feather=0)
    fade = recon.view_weights(replace(rec, seen=seen), feather=6.0)
    assert np.all(base[layout & ~seen] == 0)
    near = np.full(seen.shape, np.inf)  # to the nearest texel of the layout left at 0
    rr, cc = np.mgrid[: seen.shape[0], : seen.shape[1]]
    for i, j in np.argwhere(layout & (base == 0)):
        near = np.minimum(near, np.hypot(rr - i, cc - j))
    np.testing.assert_allclose(fade, base * np.clip(near / 6.0, 0.0, 1.0), atol=1e-12)
    assert np.any((near > 0) & (near < 6) & (base > 0.1))  # some texels are faded
    # by default over S / 32 texels (1 here: each texel next to the hole keeps its weight; 2
    # would halve it)
    np.testing.assert_array_equal(
        recon.view_weights(replace(rec, seen=seen)),
        recon.view_weights(replace(rec, seen=seen), feather=seen.shape[0] / 32.0),
    )
    # texels outside the UV layout (a layout with a gap, as the BFM's has) fade nothing
    texel_normals = recon._texel_normals

    def with_gap(r, dtype):  # noqa: ANN001, ANN202
        v, normals, inside = texel_normals(r, dtype)
        inside = inside.clone()
        inside[r0 - 5 : r0 + 5, c0 - 5 : c0 + 5] = False
        return v, normals, inside

    whole = recon.view_weights(replace(rec, seen=layout), feather=6.0)
    recon._texel_normals = with_gap
    gap = recon.view_weights(replace(rec, seen=seen), feather=6.0)  # unseen in the gap
    np.testing.assert_array_equal(gap[seen], whole[seen])
    with pytest.raises(ValueError, match="view_weights"):
        recon.view_weights(rec, mask[:, :100])


def test_the_photo_index_keeps_drops_and_forgets_earlier_rows(tmp_path):
    """photos.csv after a second run: a row of this run replaces the photo's earlier one; an
    earlier row stays unless this run wrote over its folder or was told to forget it; a photo no
    longer there keeps the folder an earlier run made of it (its failure is written only where
    it is forgotten); a failure carries no landmark score."""
    from models.reconstruct import PhotoResult, _read_index, photo_key, write_photo_index

    out = tmp_path / "out"
    out.mkdir()
    p = {k: tmp_path / f"{k}.png" for k in ("kept", "over", "forgot", "gone", "new", "gone2")}
    for k in ("kept", "over", "forgot", "new"):
        p[k].write_bytes(b"photo")
    first = {"kept": "a", "over": "b", "forgot": "c", "gone": "d", "gone2": "e"}
    write_photo_index(out, [PhotoResult(p[k], out / f, None) for k, f in first.items()])
    write_photo_index(
        out,
        [
            PhotoResult(p["new"], out / "b", None, landmark_nme=0.0312, landmark_spread=0.0234),
            PhotoResult(
                p["gone"], None, "gone.png: no such photo", landmark_nme=0.5, landmark_spread=0.1
            ),
            PhotoResult(p["gone2"], None, "gone2.png: no such photo", landmark_nme=0.5),
        ],
        forget={photo_key(p["forgot"]), photo_key(p["gone2"])},
    )
    rows = _read_index(out)
    got = {
        k: (row.output, row.error, row.landmark_nme, row.landmark_spread)
        for k, f in p.items()
        if (row := rows.get(photo_key(f))) is not None
    }
    assert got == {
        "kept": ("a", "", "", ""),
        "gone": ("d", "", "", ""),
        "new": ("b", "", "0.0312", "0.0234"),
        "gone2": ("", "gone2.png: no such photo", "", ""),
    }
    # an index (edited by hand) giving two photos one folder: the first keeps it, the second
    # gets a folder of its own
    from models.reconstruct import output_names

    write_photo_index(out, [PhotoResult(p[k], out / "a", None) for k in ("kept", "over")])
    assert output_names([p["kept"], p["over"]], out) == ["a", "over"]


def test_a_kept_folder_holds_this_photos_reconstruction_and_says_what_it_found(tmp_path):
    """done_before keeps a folder only for the photo its reconstruction.json names, made from
    the same inputs, with every file; the kept result reports the faces found, the crop's scale
    and the landmark score recorded there."""
    import shutil

    from models.reconstruct import RESULT_FILES, done_before

    photo = tmp_path / "a" / "face.png"
    photo.parent.mkdir()
    photo.write_bytes(b"photo")
    twin = tmp_path / "b" / "face.png"  # the same bytes elsewhere
    twin.parent.mkdir()
    shutil.copy(photo, twin)
    folder = tmp_path / "out" / "face"
    folder.mkdir(parents=True)
    for name in RESULT_FILES:
        (folder / name).write_bytes(b"")
    meta = {
        "inputs_sha256": "abc",
        "photo": str(photo.resolve()),
        "photo_frame": {"faces_found": 2, "landmark_spread": "0.0213"},
        "crop_transform": {"scale": 0.5},
        "landmark_nme": {"value": 0.031},
    }
    (folder / "reconstruction.json").write_text(json.dumps(meta))
    kept = done_before(photo, folder, "abc")
    assert kept is not None and kept.kept and kept.folder == folder and kept.error is None
    assert (kept.faces_found, kept.crop_scale, kept.landmark_nme) == (2, 0.5, 0.031)
    assert kept.landmark_spread == 0.0213
    assert done_before(twin, folder, "abc") is None  # another photo's folder
    assert done_before(photo, folder, "abd") is None  # other inputs
    meta["photo_frame"] = {"faces_found": "two", "landmark_spread": "inf"}  # unreadable: not known
    (folder / "reconstruction.json").write_text(json.dumps(meta))
    assert done_before(photo, folder, "abc").faces_found is None
    assert done_before(photo, folder, "abc").landmark_spread == np.inf  # no face in most crops
    from models.reconstruct import spread_text

    assert (spread_text(np.inf), spread_text(0.01234)) == ("inf", "0.0123")
    for unreadable in ("wide", -1.0, None):
        meta["photo_frame"]["landmark_spread"] = unreadable
        (folder / "reconstruction.json").write_text(json.dumps(meta))
        assert done_before(photo, folder, "abc").landmark_spread is None


def test_tidying_leaves_the_writes_of_processes_it_may_not_signal(tmp_path, monkeypatch):
    """A hidden folder of an interrupted write is left when its process is another user's
    (os.kill refused: it may still be running), and removed when no such process is."""
    import os

    from models.reconstruct import clear_interrupted_writes

    partial = tmp_path / ".face.tmp4242"
    partial.mkdir()

    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    def no_such(pid: int, sig: int) -> None:
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(os, "kill", refused)
    assert clear_interrupted_writes(tmp_path) == [] and partial.is_dir()
    monkeypatch.setattr(os, "kill", no_such)
    assert clear_interrupted_writes(tmp_path) == [partial] and not partial.exists()


def test_photos_in_hidden_folders_are_not_searched(tmp_path):
    """A folder search skips hidden names at any depth (a viewer's thumbnail cache, the hidden
    folder an interrupted write left with its overlay PNGs), not only hidden files."""
    from models.reconstruct import find_photo_inputs

    pixels = Image.new("RGB", (8, 8), (90, 120, 150))
    for rel in ("face.png", "sub/other.png", ".cache/thumb.png", ".face.tmp77/overlay.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels.save(tmp_path / rel)
    found = find_photo_inputs([tmp_path])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found.photos) == [
        "face.png",
        "sub/other.png",
    ]


def test_a_failure_names_its_photo_once_and_says_when_writing_failed(tmp_path):
    from models.reconstruct import _said, remove_earlier_result

    photo = tmp_path / "face.png"
    said = _said(InputFileError(photo, "no face found"), photo)
    assert said.count(str(photo)) == 1 and said.endswith("no face found")
    said = _said(ValueError("the crop is empty"), photo)
    assert said == f"{photo}: the crop is empty"
    full = OSError(28, "No space left on device", str(tmp_path / "out" / "overlay.png"))
    said = _said(full, photo)
    assert said.startswith(f"{photo}: writing its results: ") and "No space left" in said
    # a failed photo's earlier reconstruction goes; a folder that holds none stays
    for name, files in (("old", ["reconstruction.json", "overlay.png"]), ("mine", ["notes.txt"])):
        (tmp_path / "out" / name).mkdir(parents=True)
        for f in files:
            (tmp_path / "out" / name / f).write_text("x")
        remove_earlier_result(tmp_path / "out", name)
    assert not (tmp_path / "out" / "old").exists()
    assert (tmp_path / "out" / "mine" / "notes.txt").is_file()


def test_a_write_stopped_between_its_two_renames_loses_no_result(tmp_path, monkeypatch):
    """write_photo_result moves the earlier folder aside before the new one takes its place: a
    run stopped between the two renames leaves the earlier result hidden beside it, and the next
    run's tidying puts it back."""
    import os
    from types import SimpleNamespace

    import models.reconstruct as rc

    folder = tmp_path / "face"
    folder.mkdir()
    (folder / "reconstruction.json").write_text("earlier")

    def write(recon, rec, out, **kwargs):  # noqa: ANN001, ANN202
        out.mkdir()
        (out / "reconstruction.json").write_text("new")

    real_replace = os.replace

    def replace_then_stop(src, dst):  # noqa: ANN001, ANN202
        if Path(src).name.startswith(".face.tmp"):
            raise KeyboardInterrupt  # Ctrl-C after the earlier folder went aside
        real_replace(src, dst)

    monkeypatch.setattr(rc, "write_reconstruction", write)
    monkeypatch.setattr(rc.os, "replace", replace_then_stop)
    aligned = SimpleNamespace(image_hd=None, transform=None)
    with pytest.raises(KeyboardInterrupt):
        rc.write_photo_result(None, None, aligned, tmp_path / "face.png", folder)
    monkeypatch.setattr(rc.os, "replace", real_replace)
    (aside,) = tmp_path.iterdir()
    assert aside.name == f".face.old{os.getpid()}"
    assert (aside / "reconstruction.json").read_text() == "earlier"
    monkeypatch.setattr(rc, "_pid_alive", lambda pid: False)  # the next run: that process ended
    assert rc.clear_interrupted_writes(tmp_path) == [aside]
    assert (folder / "reconstruction.json").read_text() == "earlier"

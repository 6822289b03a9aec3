"""Tests of photo loading, 5-point alignment and cropping (facehd.align)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facehd.align import (
    CROP_SIZE,
    PX_PER_MM,
    TEMPLATE_5P_MM,
    CropTransform,
    align_face,
    crop_transform,
    fit_template,
    load_photo,
    warp,
)
from facehd.detect import mediapipe_available
from facehd.errors import DegenerateInputError, InputFileError


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch), degrees."""
    a, b, c = np.deg2rad([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def project(points_mm: np.ndarray, px_per_mm: float, origin, R=np.eye(3)) -> np.ndarray:
    """Scaled orthographic photo of model points: x right, rows down (y flipped)."""
    q = points_mm @ R.T
    return np.stack([q[:, 0], -q[:, 1]], 1) * px_per_mm + np.asarray(origin)


# -- the transform ----------------------------------------------------------------------------


def test_crop_transform_apply_invert_matrix_and_resize():
    t = CropTransform(0.3, (-50.0, 20.0), 224)
    p = np.random.default_rng(0).uniform(0, 1000, (10, 2))
    np.testing.assert_allclose(t.invert(t.apply(p)), p)
    np.testing.assert_allclose((np.c_[p, np.ones(10)] @ t.matrix().T)[:, :2], t.apply(p))
    hd = t.resized(512)
    np.testing.assert_allclose(hd.photo_box(), t.photo_box())  # the same region
    k = 512 / 224
    np.testing.assert_allclose(hd.apply(p) + 0.5, k * (t.apply(p) + 0.5))
    x0, y0, x1, y1 = t.photo_box()
    # The crop's outer pixel edges map to the box edges.
    np.testing.assert_allclose(t.invert(np.array([[-0.5, -0.5], [223.5, 223.5]])) + 0.5,
                               [[x0, y0], [x1, y1]])  # fmt: skip
    with pytest.raises(ValueError, match="scale"):
        CropTransform(0.0, (0.0, 0.0), 224)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        t.apply(np.zeros((3, 3)))


# -- alignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, -10, 8), (-40, 15, -20)])
def test_fit_template_recovers_scale_and_origin_of_an_affine_photo(angles):
    R = rotation(*angles)
    s, origin = 4.37, (612.3, 401.9)
    lm5 = project(TEMPLATE_5P_MM, s, origin, R)
    fit = fit_template(lm5)
    assert fit.px_per_mm == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(fit.origin, origin, atol=1e-9)
    assert fit.rms < 1e-9
    # landmarks off the affine image: rms is the root of the mean squared residual per point,
    # the residual sum of an ordinary least-squares solve over the 5 points
    off = lm5 + np.random.default_rng(abs(int(angles[0]))).normal(0, 2.0, lm5.shape)
    a = np.concatenate([TEMPLATE_5P_MM, np.ones((5, 1))], axis=1)
    residual = np.linalg.lstsq(a, off, rcond=None)[1].sum()
    assert fit_template(off).rms == pytest.approx(np.sqrt(residual / 5), rel=1e-9)


def test_crop_puts_the_template_where_the_base_camera_does():
    lm5 = project(TEMPLATE_5P_MM, 3.1, (500.0, 480.0))
    t = crop_transform(lm5)
    assert t.size == CROP_SIZE
    assert t.scale == pytest.approx(PX_PER_MM / 3.1)
    # Origin -> (112, 111) and 1 mm -> 1.02 px, rows down: the base camera's projection at scale.
    expected = project(TEMPLATE_5P_MM, PX_PER_MM, (112.0, 111.0))
    np.testing.assert_allclose(t.apply(lm5), expected, atol=1e-9)
    # Inter-ocular distance in the crop: 61 mm.
    d = np.linalg.norm(t.apply(lm5)[1] - t.apply(lm5)[0])
    assert d == pytest.approx(61.0 * PX_PER_MM)


def _official_crop_landmarks(lm5: np.ndarray, template_dm: np.ndarray, w0: int, h0: int):
    """Landmarks (5, 2) of the 224 crop, rows down, as Deep3DFaceRecon's preprocessing computes
    them (util/preprocess.py written out: the POS fit of the template's x, y to the landmarks
    with image y flipped up, rescale factor 102, the resized image's integer size and offset)."""
    xp = np.stack([lm5[:, 0], h0 - 1 - lm5[:, 1]], 1)
    a = np.zeros((10, 8))
    a[0::2, 0:3], a[0::2, 3] = template_dm, 1.0
    a[1::2, 4:7], a[1::2, 7] = template_dm, 1.0
    k = np.linalg.lstsq(a, xp.reshape(-1), rcond=None)[0]
    s = 102.0 / ((np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2)
    t = np.array([k[3], k[7]])
    w, h = int(w0 * s), int(h0 * s)
    crop = np.stack([xp[:, 0] - t[0] + w0 / 2, xp[:, 1] - t[1] + h0 / 2], 1) * s
    crop -= np.array([w / 2 - 112.0, h / 2 - 112.0])
    return np.stack([crop[:, 0], 223.0 - crop[:, 1]], 1)  # rows down, as drawn on the crop


def test_deep3d_template_crops_photos_as_the_official_preprocessing():
    from facehd.align import TEMPLATE_DEEP3D_MM, named_template

    assert np.array_equal(named_template("deep3d"), TEMPLATE_DEEP3D_MM)
    template_dm = TEMPLATE_DEEP3D_MM / 100.0
    rng = np.random.default_rng(0)
    worst = {"deep3d": 0.0, "anthropometric": 0.0}
    for _ in range(20):
        face = TEMPLATE_DEEP3D_MM + rng.normal(0.0, 2.0, (5, 3))  # a face, not the template
        lm5 = project(
            face,
            rng.uniform(2.0, 6.0),
            rng.uniform(300, 700, 2),
            rotation(*rng.uniform(-20, 20, 3)),
        )
        official = _official_crop_landmarks(lm5, template_dm, 1024, 1024)
        for name in worst:
            ours = crop_transform(lm5, template=named_template(name)).apply(lm5)
            worst[name] = max(worst[name], float(np.abs(ours - official).max()))
    # the official code truncates the resized image's size and offset to whole pixels
    assert worst["deep3d"] < 1.0, worst
    assert worst["anthropometric"] > 5.0, worst  # another framing altogether


def test_crop_is_invariant_to_a_similarity_of_the_photo():
    """Scaling and shifting the photo changes the transform, not the crop's landmarks."""
    rng = np.random.default_rng(3)
    lm5 = project(TEMPLATE_5P_MM, 2.0, (300.0, 260.0), rotation(15, 5, 3))
    lm5 += rng.normal(0, 1.5, lm5.shape)  # detector noise
    a, b = 1.7, np.array([-120.0, 45.0])
    t1, t2 = crop_transform(lm5), crop_transform(a * lm5 + b)
    np.testing.assert_allclose(t2.apply(a * lm5 + b), t1.apply(lm5), atol=1e-9)
    assert t2.scale == pytest.approx(t1.scale / a)


def test_model_template_crops_overlay_base_camera_renders():
    """With a model's own template, its mean face seen by the base camera (perspective, focal
    1015 px, 1 m away) in any photo framing is cropped back onto the base camera's image."""
    morphable = pytest.importorskip("facehd.morphable")
    from facehd.align import named_template, template_from_model

    model = morphable.facehd_synth()
    template = named_template("facehd-synth")
    np.testing.assert_allclose(template, template_from_model(model))
    assert np.linalg.norm(template[1] - template[0]) == pytest.approx(61.0, abs=6.0)
    X = template
    col = 1015.0 * X[:, 0] / (1000.0 - X[:, 2]) + 112.0
    row = 223.0 - (1015.0 * X[:, 1] / (1000.0 - X[:, 2]) + 112.0)
    render = np.stack([col, row], 1)
    photo = 2.7 * render + np.array([310.0, 95.0])  # the same view, framed in a larger photo
    t = crop_transform(photo, template=template, px_per_mm=1.015)
    np.testing.assert_allclose(t.apply(photo), render, atol=1.0)
    with pytest.raises(ValueError, match="template"):
        named_template("no-such-model")


def test_degenerate_landmarks_raise():
    with pytest.raises(DegenerateInputError, match="collinear"):
        fit_template(np.array([[0, 0], [1, 1], [2, 2], [3, 3], [4, 4.0]]))
    with pytest.raises(DegenerateInputError, match="NaN"):
        fit_template(np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        fit_template(np.zeros((68, 2)))


# -- warping -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.37, 1.0, 2.6])
def test_warp_samples_the_photo_at_the_transformed_positions(scale):
    """A linear ramp image I(x, y) = x (and = y) comes back as the photo coordinate of each crop
    pixel (bicubic reproduces linear functions away from the borders)."""
    h, w = 700, 900
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = CropTransform(scale, (-scale * 300.0 + 5.3, -scale * 250.0 - 2.7), 96)
    j, i = np.meshgrid(np.arange(96), np.arange(96))
    src = t.invert(np.stack([j, i], -1).astype(float))
    inside = (src[..., 0] > 5) & (src[..., 0] < w - 6) & (src[..., 1] > 5) & (src[..., 1] < h - 6)
    assert inside.mean() > 0.5
    for k, ramp in enumerate((xs, ys)):
        out = warp(ramp, t)
        assert out.shape == (96, 96) and out.dtype == np.float32
        np.testing.assert_allclose(out[inside], src[..., k][inside], atol=0.02)


def test_warp_is_black_outside_the_photo_and_keeps_dtype():
    img = np.full((50, 60, 3), 200, np.uint8)
    t = CropTransform(1.0, (100.0, 100.0), 224)  # the photo lands at rows/cols 100..160
    out = warp(img, t)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert (out[:90, :90] == 0).all() and (out[105:145, 105:155] == 200).all()
    assert warp(img[..., 0], t).shape == (224, 224)
    with pytest.raises(ValueError, match="expected"):
        warp(img.astype(np.int16), t)


def test_align_face_crops_and_hd_agree():
    ys, xs = np.mgrid[0:800, 0:1000]
    smooth = [np.sin(xs / 37.0) * np.cos(ys / 23.0), np.sin((xs + ys) / 51.0), np.cos(ys / 29.0)]
    img = np.clip(np.round(127.5 + 120 * np.stack(smooth, -1)), 0, 255).astype(np.uint8)
    lm5 = project(TEMPLATE_5P_MM, 3.0, (520.0, 390.0))
    a = align_face(img, lm5, hd_size=448)
    assert a.image.shape == (224, 224, 3) and a.image_hd.shape == (448, 448, 3)
    np.testing.assert_allclose(a.landmarks5, a.transform.apply(lm5))
    # The HD crop downsampled 2x is the 224 crop (same region), up to resampling differences.
    down = np.asarray(Image.fromarray(a.image_hd).resize((224, 224), Image.Resampling.BOX))
    diff = np.abs(down.astype(int) - a.image.astype(int))
    assert np.median(diff) <= 1 and np.percentile(diff, 99) <= 4


# -- loading photos ------------------------------------------------------------------------------


def _png16(path, arr: np.ndarray) -> None:
    """Write a 16-bit PNG (grey (H, W) or RGB (H, W, 3)) by hand."""
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def test_load_grey_rgba_and_16_bit(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    p = load_photo(tmp_path / "grey.png")
    assert p.mode == "L" and p.image.shape == (40, 64, 3) and p.image.dtype == np.uint8
    np.testing.assert_array_equal(p.image[..., 0], grey)
    np.testing.assert_array_equal(p.image[..., 2], grey)

    g16 = np.tile(np.array([0, 257, 32896, 65535], np.uint16), (40, 10))
    _png16(tmp_path / "g16.png", g16)
    p = load_photo(tmp_path / "g16.png")
    assert p.mode.startswith("I;16")
    np.testing.assert_array_equal(p.image[0, :4, 0], [0, 1, 128, 255])

    rgb16 = np.zeros((40, 40, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 257
    _png16(tmp_path / "rgb16.png", rgb16)
    np.testing.assert_array_equal(load_photo(tmp_path / "rgb16.png").image[5, 5], [255, 128, 1])

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :20, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    img = load_photo(tmp_path / "rgba.png").image
    np.testing.assert_array_equal(img[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(img[0, 39], [255, 255, 255])


def test_load_cmyk(tmp_path):
    cmyk = Image.new("CMYK", (48, 40), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    cmyk.paste((0, 0, 0, 255), (24, 0, 48, 40))  # full black on the right
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    p = load_photo(tmp_path / "cmyk.jpg")
    assert p.mode == "CMYK"
    r, g, b = p.image[20, 5].astype(int)
    assert r > 200 and g < 60 and b < 60
    assert p.image[20, 40].max() < 60


def test_load_applies_exif_orientation(tmp_path):
    img = np.zeros((60, 100, 3), np.uint8)
    img[2:10, 2:10] = 255  # a marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(img).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    p = load_photo(tmp_path / "rot.jpg")
    assert p.orientation == 6 and p.image.shape == (100, 60, 3)
    # Turned clockwise, the stored top-left corner is now at the top-right.
    assert p.image[3:9, -9:-3].mean() > 200 and p.image[-9:-3, 3:9].mean() < 30
    Image.fromarray(img).save(tmp_path / "plain.jpg", quality=95)
    assert load_photo(tmp_path / "plain.jpg").orientation == 1


def test_unreadable_photos_raise_input_file_error(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(InputFileError, match="junk.jpg: unreadable image"):
        load_photo(tmp_path / "junk.jpg")
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputFileError, match=r"trunc\.jpg: truncated: the file ends before"):
        load_photo(tmp_path / "trunc.jpg")
    (tmp_path / "no_end.jpg").write_bytes(data[:-2])  # all of it but its end marker
    with pytest.raises(InputFileError, match=r"no_end\.jpg: truncated.*only its end marker"):
        load_photo(tmp_path / "no_end.jpg")
    with pytest.raises(InputFileError, match="no such file"):
        load_photo(tmp_path / "missing.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputFileError, match=r"empty.jpg: empty file \(0 bytes\)"):
        load_photo(tmp_path / "empty.jpg")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(InputFileError, match="too small"):
        load_photo(tmp_path / "tiny.png")


def test_photo_size_limit_is_facehds_not_pillows(tmp_path, monkeypatch):
    """Pillow warns from 89 MP and refuses from 179 MP; facehd reads up to its own limit without
    a word and refuses beyond it naming the file and the size (scaled down here: the limits are
    module settings)."""
    import warnings

    from PIL import Image

    import facehd.align as align

    path = tmp_path / "big.png"
    Image.fromarray(np.full((120, 100, 3), 90, np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would refuse 12000 px
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_photo(path).image.shape == (120, 100, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's setting is left as it was
    monkeypatch.setattr(align, "MAX_PHOTO_PIXELS", 10_000)
    with pytest.raises(InputFileError, match=r"big\.png: image too large to read: 100 x 120 px"):
        load_photo(path)
    assert Image.MAX_IMAGE_PIXELS == 1000


@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".png", ".heic"])
def test_exif_orientation_is_recorded_for_every_format(tmp_path, suffix):
    """Pillow's TIFF reader, and pillow-heif's (from the file's rotation box), turn the pixels
    upright themselves and set the tag to 1 as they load them: the orientation applied is
    recorded all the same (the crop's frame depends on it)."""
    if suffix == ".heic":
        pytest.importorskip("pillow_heif")
        from facehd.align import register_photo_decoders

        register_photo_decoders()
    img = np.zeros((60, 100, 3), np.uint8)
    img[2:10, 2:10] = 255  # a marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rot{suffix}"
    Image.fromarray(img).save(path, exif=exif if suffix == ".tif" else exif.tobytes())
    p = load_photo(path)
    assert p.orientation == 6 and p.image.shape == (100, 60, 3)
    assert p.image[3:9, -9:-3].mean() > 200 and p.image[-9:-3, 3:9].mean() < 30


def test_heic_photos_are_read_with_pillow_heif(tmp_path):
    """iPhone photos (HEIC) are read like any other: their pixels (within HEVC's loss), their
    embedded profile to sRGB, their orientation. A damaged one fails naming the file; one whose
    content is JPEG under a .heic name is read by its content."""
    pytest.importorskip("pillow_heif")
    from facehd.align import register_photo_decoders

    assert set(register_photo_decoders()) == {".heic", ".heif"}
    yy, xx = np.mgrid[0:96, 0:128]
    img = np.stack([xx * 2, yy * 2, np.full_like(xx, 120)], -1).astype(np.uint8)
    img[:, 100:] = (200, 140, 120)  # skin
    Image.fromarray(img).save(tmp_path / "IMG_0001.HEIC", quality=95)
    read = load_photo(tmp_path / "IMG_0001.HEIC")
    assert read.orientation == 1 and read.image.shape == img.shape
    assert np.abs(read.image.astype(int) - img).mean() < 2.0

    adobe = _icc_profile(b"RGB ", 2.2, ADOBE_RGB_COLORANTS)
    Image.fromarray(img).save(tmp_path / "adobe.heif", icc_profile=adobe, quality=-1)
    Image.fromarray(img).save(tmp_path / "adobe.png", icc_profile=adobe)
    as_png = load_photo(tmp_path / "adobe.png").image.astype(int)
    heif = load_photo(tmp_path / "adobe.heif").image.astype(int)
    assert as_png[5, 110, 0] > 212  # the profile was applied to the PNG ...
    assert np.abs(heif[:, 100:] - as_png[:, 100:]).max() <= 3  # ... and to the HEIF alike

    data = (tmp_path / "IMG_0001.HEIC").read_bytes()
    (tmp_path / "cut.heic").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"cut\.heic: unreadable image"):
        load_photo(tmp_path / "cut.heic")
    Image.fromarray(img).save(tmp_path / "named.heic", "JPEG", quality=95)
    assert load_photo(tmp_path / "named.heic").image.shape == img.shape


def _icc_profile(space: bytes, gamma: float, colorants=None) -> bytes:
    """A small ICC v2 display profile: one gamma for every channel and, for ``space`` ``RGB ``,
    the colorants' D50 XYZ (a matrix profile, as Adobe RGB, Display P3 and ProPhoto are)."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(s15(c) for c in v)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    name = b"facehd test"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(name) + 1) + name + bytes(1 + 8 + 3 + 67)
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249)))]
    if space == b"RGB ":
        tags += [(b"rXYZ", xyz(colorants[0])), (b"gXYZ", xyz(colorants[1]))]
        tags += [(b"bXYZ", xyz(colorants[2]))]
        tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    else:
        tags += [(b"kTRC", curve)]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", start + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntr"
        + space
        + b"XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + table + body


SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
ADOBE_RGB_COLORANTS = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))


def test_photos_with_an_icc_profile_are_read_in_srgb(tmp_path):
    """A photo's numbers mean what its embedded profile says: an Adobe RGB or a linear photo read
    as if it were sRGB has the wrong colours (a linear mid grey shows dark, an Adobe RGB skin tone
    too pale). sRGB profiles, and damaged ones, leave the pixels as stored."""
    from PIL import ImageCms

    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = 128  # mid grey
    img[:, 20:] = (200, 140, 120)  # skin
    photo = Image.fromarray(img)

    photo.save(tmp_path / "linear.png", icc_profile=_icc_profile(b"RGB ", 1.0, SRGB_COLORANTS))
    linear = load_photo(tmp_path / "linear.png").image.astype(int)
    assert np.abs(linear[5, 5] - 188).max() <= 2  # 128 / 255 linear is sRGB level 188

    photo.save(tmp_path / "adobe.jpg", icc_profile=_icc_profile(b"RGB ", 2.2, ADOBE_RGB_COLORANTS))
    adobe = load_photo(tmp_path / "adobe.jpg").image.astype(int)
    assert abs(adobe[5, 5, 0] - 128) <= 3  # grey stays grey
    assert adobe[5, 30, 0] > 212 and abs(adobe[5, 30, 1] - 140) < 6  # the red is stronger

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo.save(tmp_path / "srgb.png", icc_profile=srgb)
    np.testing.assert_array_equal(load_photo(tmp_path / "srgb.png").image, img)
    photo.save(tmp_path / "damaged.png", icc_profile=b"not a profile at all")
    np.testing.assert_array_equal(load_photo(tmp_path / "damaged.png").image, img)

    grey = Image.fromarray(img[..., 0])
    grey.save(tmp_path / "grey.png", icc_profile=_icc_profile(b"GRAY", 1.0))
    out = load_photo(tmp_path / "grey.png").image.astype(int)
    assert np.abs(out[5, 5] - 188).max() <= 2 and (out[..., 0] == out[..., 2]).all()


def test_bilevel_photos_are_read_as_the_greys_their_dots_stand_for(tmp_path):
    """A 1-bit photo (dithered: each pixel black or white) is read as the grey its dots make."""
    ramp = np.tile(np.linspace(40, 215, 200).astype(np.uint8), (120, 1))
    Image.fromarray(ramp).convert("1").save(tmp_path / "dots.png")  # Floyd-Steinberg dither
    img = load_photo(tmp_path / "dots.png").image.astype(float)
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(img[inner][..., 0] - ramp[inner]).mean() < 20  # the ramp, not 0 / 255
    assert img[inner].std(axis=0).mean() < 25  # rows agree: no salt and pepper left


@pytest.mark.skipif(not mediapipe_available(), reason="the optional 'photo' extra is missing")
def test_a_bilevel_photo_shows_its_face_to_the_detector(tmp_path):
    from drawn_face import draw_face

    from facehd.detect import FaceDetector

    Image.fromarray(draw_face(512, seed=1)).convert("1").save(tmp_path / "fax.png")
    photo = load_photo(tmp_path / "fax.png")
    assert photo.mode == "1"
    with FaceDetector(segmentation=False) as detector:
        assert len(detector.detect_all(photo.image)) == 1


def test_integer_grey_photos_are_scaled_by_the_range_their_values_use(tmp_path):
    """8-bit values in a 16-bit file (an integer numpy array saved with Pillow) are not scaled
    down to black, nor 32-bit values clipped to white; 16-bit photos are scaled as before."""
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint16), (40, 1))
    _png16(tmp_path / "eight.png", ramp)
    p = load_photo(tmp_path / "eight.png")
    assert p.mode.startswith("I;16")
    np.testing.assert_array_equal(p.image[..., 1], ramp)
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "eight.tif")
    np.testing.assert_array_equal(load_photo(tmp_path / "eight.tif").image[..., 0], ramp)

    wide = ramp.astype(np.int64) * (2**31 - 1) // 252
    Image.fromarray(wide.astype(np.int32)).save(tmp_path / "wide.tif")
    p = load_photo(tmp_path / "wide.tif")
    assert p.mode == "I"
    assert np.abs(p.image[..., 0].astype(int) - ramp * 255 / 252).max() <= 1

    sixteen = np.tile(np.array([0, 257, 32896, 65535, 300], np.uint16), (40, 8))
    _png16(tmp_path / "sixteen.png", sixteen)
    np.testing.assert_array_equal(
        load_photo(tmp_path / "sixteen.png").image[0, :5, 0], [0, 1, 128, 255, 1]
    )


def test_photos_of_other_names_and_broken_links_are_found_and_fail_by_name(
    tmp_path, no_heif_decoder
):
    """A folder search passes over no photo without a word: JPEG's other names and AVIF are
    read, a HEIC photo (no decoder: pillow-heif not installed) and a link whose target is gone
    fail by name."""
    import os

    from facehd.align import is_photo_file

    img = np.full((40, 40, 3), 90, np.uint8)
    for name in ("a.jfif", "b.JPE"):
        Image.fromarray(img).save(tmp_path / name, "JPEG")
        assert (
            is_photo_file(tmp_path / name) and load_photo(tmp_path / name).image.shape == img.shape
        )
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))
    assert is_photo_file(tmp_path / "IMG_0001.HEIC")
    with pytest.raises(
        InputFileError, match=r"IMG_0001\.HEIC: .*no HEIC decoder; install pillow-heif .* convert"
    ):
        load_photo(tmp_path / "IMG_0001.HEIC")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "link.jpg")
    assert is_photo_file(tmp_path / "link.jpg")
    with pytest.raises(InputFileError, match=r"link\.jpg: broken link: .*gone\.jpg is not there"):
        load_photo(tmp_path / "link.jpg")
    (tmp_path / "notes.txt").write_text("x")
    assert not is_photo_file(tmp_path / "notes.txt") and not is_photo_file(tmp_path / "none.jpg")


def test_a_damaged_exif_block_is_said_with_the_photo_and_the_photo_kept(tmp_path):
    """Pillow's warning about a damaged EXIF entry comes back as an InputFileWarning naming
    the photo; the photo is read, turned by the orientation tag the block still holds."""
    import io
    import warnings

    from PIL import Image

    from facehd.align import load_photo
    from facehd.errors import InputFileWarning

    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter: stored 64 wide, 48 high, shown 48 wide, 64 high
    exif[0x010F] = "a camera maker"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    entry = data.index(bytes.fromhex("010f0002"))  # the maker's entry: tag, type ASCII
    data[entry + 4 : entry + 8] = (1 << 14).to_bytes(4, "big")  # its count past the file
    (tmp_path / "bad exif.jpg").write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        photo = load_photo(tmp_path / "bad exif.jpg")
    said = [str(w.message) for w in caught if issubclass(w.category, InputFileWarning)]
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'bad exif.jpg'}: ")
    assert photo.orientation == 6 and photo.image.shape == (64, 48, 3)

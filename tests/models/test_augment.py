"""The base stage's photo augmentation: image, mask and landmarks moved by one similarity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hrn_testdata import states_equal, tiny_config
from scipy import ndimage

from facehd.detect import IBUG68_MIRROR
from models.augment import AugmentConfig, augment_batch, deep3d_augment, random_similarities
from models.data import PhotoBatch


def _batch(b: int = 4, size: int = 224, seed: int = 0) -> PhotoBatch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, size, size, generator=g)
    images = torch.as_tensor(ndimage.gaussian_filter(images.numpy(), (0, 0, 2, 2)))
    masks = (torch.rand(b, 1, size, size, generator=g) > 0.5).float()
    lm = 40 + torch.rand(b, 68, 2, generator=g) * (size - 80)
    return PhotoBatch(images=images, masks=masks, landmarks=lm)


def test_the_photo_is_resampled_where_the_similarity_sends_each_pixel():
    """Each output pixel q holds the photo at M^-1 q (bilinear, SciPy's map_coordinates as
    the reference), and the landmarks are M applied to the points."""
    batch = _batch()
    cfg = deep3d_augment()
    g = torch.Generator().manual_seed(5)
    out = augment_batch(batch, cfg, torch.Generator().manual_seed(5))
    matrices, flipped = random_similarities(4, cfg, 224, g)
    assert flipped.any() and not flipped.all()
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float64)
    for i in range(4):
        m = matrices[i].numpy()
        inv = np.linalg.inv(m[:, :2])
        q = np.stack([xs.ravel(), ys.ravel()]) - m[:, 2:]
        px, py = inv @ q
        inside = (px > 0) & (px < 223) & (py > 0) & (py < 223)
        for c in range(3):
            ref = ndimage.map_coordinates(batch.images[i, c].numpy(), [py, px], order=1)
            got = out.images[i, c].numpy().ravel()
            assert np.abs(got[inside] - ref[inside]).max() < 1e-5
        far = (px < -1) | (px > 224) | (py < -1) | (py > 224)  # read from outside: black
        assert far.any() and np.abs(out.images[i].numpy().reshape(3, -1)[:, far]).max() == 0.0
        assert out.masks[i, 0].numpy().ravel()[far].max() == 0.0  # and off the face mask
        moved = batch.landmarks[i].numpy() @ m[:, :2].T + m[:, 2]
        if flipped[i]:
            moved = moved[list(IBUG68_MIRROR)]
        assert np.abs(out.landmarks[i].numpy() - moved).max() < 1e-4
        assert set(np.unique(out.masks[i].numpy())) <= {0.0, 1.0}


def test_a_mirrored_photos_points_are_renumbered():
    """Mirroring a photo of a face gives a face whose left eye is the old right eye: point 36
    (the outer corner of the eye on the image's left) is where old point 45 went."""
    batch = _batch(b=1)
    cfg = AugmentConfig(flip=True)
    for seed in range(20):  # a draw that mirrors
        m, flipped = random_similarities(1, cfg, 224, torch.Generator().manual_seed(seed))
        if flipped[0]:
            break
    out = augment_batch(batch, cfg, torch.Generator().manual_seed(seed))
    lm = batch.landmarks[0]
    assert torch.allclose(out.landmarks[0, 36, 0], 223 - lm[45, 0], atol=1e-4)
    assert torch.allclose(out.landmarks[0, 36, 1], lm[45, 1], atol=1e-4)
    # a mirror flips the image exactly: column x goes to 223 - x
    assert torch.allclose(out.images[0], batch.images[0].flip(-1), atol=1e-6)


def test_the_draws_stay_within_their_limits():
    cfg = deep3d_augment()
    m, flipped = random_similarities(4000, cfg, 448, torch.Generator().manual_seed(1))
    linear = m[:, :, :2]
    scale = torch.sqrt(torch.abs(torch.linalg.det(linear)))
    assert scale.min() >= 0.9 - 1e-9 and scale.max() <= 1.1 + 1e-9
    assert scale.max() > 1.09 and scale.min() < 0.91
    det_sign = torch.sign(torch.linalg.det(linear))
    assert torch.equal(det_sign < 0, flipped)
    assert 0.45 < flipped.double().mean() < 0.55
    unmirrored = linear.clone()
    unmirrored[flipped, :, 0] *= -1
    angle = torch.rad2deg(torch.atan2(unmirrored[:, 1, 0], unmirrored[:, 0, 0]))
    assert angle.abs().max() <= 10 + 1e-9 and angle.abs().max() > 9.9
    centre = torch.full((2,), 447 / 2.0, dtype=torch.float64)
    shift = (linear @ centre + m[:, :, 2]) - centre  # where the centre goes
    assert shift.abs().max() <= 20 + 1e-9 and shift.abs().max() > 19.8  # 10 px at 224


def test_no_jitter_changes_nothing():
    batch = _batch(b=2)
    assert not AugmentConfig().active
    for one in ({"shift": 1.0}, {"scale": 0.1}, {"rotation": 2.0}, {"flip": True}):
        assert AugmentConfig(**one).active, one  # any one kind of jitter turns it on
    m, flipped = random_similarities(2, AugmentConfig(), 224)
    assert torch.allclose(m[:, :, :2], torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
    assert torch.allclose(m[:, :, 2], torch.zeros(2, 2, dtype=torch.float64))
    out = augment_batch(batch, AugmentConfig())
    assert torch.allclose(out.images, batch.images, atol=1e-6)
    assert torch.equal(out.masks, batch.masks)


@pytest.mark.parametrize("key,value", [("shift", -1.0), ("scale", 1.0), ("rotation", 200.0)])
def test_jitter_limits_are_checked(key, value):
    from models.config import ConfigError, check_config

    cfg = tiny_config()
    setattr(cfg.base_augment, key, value)
    with pytest.raises(ConfigError, match=f"base_augment.{key}"):
        check_config(cfg)


def test_the_paper_preset_augments_as_deep3dfacerecon():
    from models.train import paper_train_config, tiny_cpu_train_config

    assert paper_train_config().base_augment == deep3d_augment()
    assert not tiny_cpu_train_config().base_augment.active


def test_an_augmented_base_stage_resumes_exactly(hrn_data, tmp_path, one_thread):
    """The draws come from the run's saved random state: a base stage killed after its second
    step and resumed equals the uninterrupted one, and differs from the run without jitter."""
    from models.train import train

    class Killed(Exception):
        pass

    def kill(stage, step, total, values):
        if step == 2:
            raise Killed()

    cfg = tiny_config()
    cfg.base.steps = 4
    cfg.base_augment = deep3d_augment()
    kw = {"photos": hrn_data.photos, "stages": ("base",)}
    train(cfg, tmp_path / "full", **kw)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", callback=kill, **kw)
    train(cfg, tmp_path / "cut", resume=True, **kw)
    assert not states_equal(tmp_path / "full" / "model.pt", tmp_path / "cut" / "model.pt")
    plain = tiny_config()
    plain.base.steps = 4
    train(plain, tmp_path / "plain", **kw)
    assert states_equal(tmp_path / "full" / "model.pt", tmp_path / "plain" / "model.pt")

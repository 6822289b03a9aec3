"""models.data's sampler, batch collation and map resizing, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.data import CROP, EpochSampler, collate, resize_map


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 2, 0), "the dataset is empty"),
        ((5, 0, 0), "batch_size must be >= 1, got 0"),
        ((5, 2, 0, 2, 2), r"rank 2 outside \[0, 2\)"),
        ((5, 2, 0, -1, 2), r"rank -1 outside \[0, 2\)"),
        ((3, 1, 0, 0, 4), "3 samples cannot be shared by 4 processes"),
    ],
)
def test_sampler_refuses_what_it_cannot_draw(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EpochSampler(*args)


@pytest.mark.parametrize(("n", "batch", "world"), [(7, 3, 1), (3, 7, 1), (10, 4, 3), (4, 1, 4)])
def test_sampler_draws_each_ranks_share_of_each_epochs_permutation(n, batch, world) -> None:
    """Rank r of w takes every w-th index of ``default_rng([seed, e]).permutation(n)``, epoch
    after epoch, batches running on across epoch ends (also when a batch is longer than an
    epoch's share)."""
    seed = 11
    for rank in range(world):
        sampler = EpochSampler(n, batch, seed, rank, world)
        drawn = [i for _ in range(6) for i in sampler.next_batch()]
        expected = []
        epoch = 0
        while len(expected) < len(drawn):
            share = np.random.default_rng([seed, epoch]).permutation(n)[rank::world]
            expected += [int(i) for i in share]
            epoch += 1
        assert drawn == expected[: len(drawn)]
        assert sampler.epoch == len(drawn) // len(np.arange(n)[rank::world])


def _items(rng: np.random.Generator, n: int) -> list[dict]:
    items = []
    for k in range(n):
        items.append(
            {
                "id": f"s{k}",
                "image": rng.integers(0, 256, size=(CROP, CROP, 3), dtype=np.uint8),
                "mask": rng.random((CROP, CROP)) > 0.3,
                "landmarks": rng.uniform(0, CROP - 1, size=(68, 2)),
                "deformation": rng.normal(size=(64, 64, 3)),
                "deformation_mask": np.ones((64, 64)),
                "displacement": rng.normal(size=(256, 256)),
            }
        )
    return items


def test_collate_resizes_images_masks_and_landmarks_to_the_training_size() -> None:
    rng = np.random.default_rng(0)
    items = _items(rng, 2)
    batch = collate(items, 56)
    # images: area average of 4 x 4 blocks, in [0, 1]
    img = np.stack([it["image"] for it in items]).astype(np.float64) / 255.0
    blocks = img.reshape(2, 56, 4, 56, 4, 3).mean((2, 4)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(batch.images.numpy(), blocks, atol=1e-6)
    # masks: a 4 x 4 block is in when more than half of it is (the area average above 0.5)
    m = np.stack([it["mask"] for it in items]).astype(np.float64)
    np.testing.assert_array_equal(
        batch.masks[:, 0].numpy(), (m.reshape(2, 56, 4, 56, 4).mean((2, 4)) > 0.5)
    )
    # landmarks: pixel centres map to pixel centres, x_S = (x + 0.5) S / 224 - 0.5
    lm = np.stack([it["landmarks"] for it in items])
    np.testing.assert_allclose(batch.landmarks.numpy(), (lm + 0.5) / 4.0 - 0.5, atol=1e-5)
    # ground truth: channels first, one channel added to the single-channel maps
    assert batch.deformation.shape == (2, 3, 64, 64)
    deformation = np.stack([it["deformation"] for it in items]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(batch.deformation.numpy(), deformation, atol=1e-6)
    assert batch.deformation_mask.shape == (2, 1, 64, 64)
    assert batch.displacement.shape == (2, 1, 256, 256) and batch.supervised
    # a field some item lacks is left out
    del items[1]["displacement"]
    assert collate(items, 56).displacement is None
    assert batch.ids == ("s0", "s1") and batch.images_clean is None and batch.identity is None
    with pytest.raises(ValueError, match="no items"):
        collate([], 56)


def test_collate_upsamples_bilinearly_and_keeps_224_as_is() -> None:
    items = _items(np.random.default_rng(1), 1)
    same = collate(items, CROP)
    np.testing.assert_allclose(same.images[0].permute(1, 2, 0).numpy() * 255, items[0]["image"])
    np.testing.assert_allclose(same.landmarks[0].numpy(), items[0]["landmarks"], atol=1e-4)
    big = collate(items, 448)
    ref = torch.nn.functional.interpolate(
        same.images, (448, 448), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(big.images, ref)


def test_resize_map_up_keeps_only_texels_away_from_the_holes() -> None:
    """Upsampling: bilinear inside the mask, a texel valid only where the bilinear mask is
    (nearly) 1, so texels touching a hole are dropped and zeroed."""
    values = torch.arange(2 * 4 * 4, dtype=torch.float64).reshape(1, 2, 4, 4)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    up, valid = resize_map(values, mask, 8)
    ref = torch.nn.functional.interpolate(values, (8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, ref)
    assert bool((valid == 1).all())
    mask[0, 0, 1, 2] = 0.0
    up, valid = resize_map(values, mask, 8)
    touching = torch.zeros(8, 8, dtype=torch.bool)
    touching[1:5, 3:7] = True  # output texels whose bilinear taps include input (1, 2)
    assert bool((valid[0, 0][touching] == 0).all()) and bool((valid[0, 0][~touching] == 1).all())
    assert bool((up[0, :, touching] == 0).all())
    torch.testing.assert_close(up[0, :, ~touching], ref[0, :, ~touching])
    same_v, same_m = resize_map(values, mask, 4)
    assert same_v is values and same_m is mask
    with pytest.raises(ValueError, match=r"mask \(B, 1, H, W\)"):
        resize_map(values, mask.expand(1, 2, 4, 4), 8)

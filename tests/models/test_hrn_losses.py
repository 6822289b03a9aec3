"""Losses of HRN and its base model on analytic cases, brute force and gradient checks."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from models.analyzer import CoefficientLayout
from models.config import BaseLossWeights, HRNLossWeights
from models.losses import (
    BaseLossTerms,
    HRNLossTerms,
    PerceptualLoss,
    base_landmark_weights,
    base_total_loss,
    coefficient_regulariser,
    contour_cost,
    contour_loss,
    displacement_l1,
    face_mask_row_extents,
    gamma_regulariser,
    gan_discriminator_loss,
    gan_generator_loss,
    hrn_total_loss,
    landmark_loss,
    masked_l1,
    photometric_loss,
    reflectance_loss,
    skin_mask,
    total_variation,
)


# --------------------------------------------------------------------------------------------
# photometric / perceptual / landmark
# --------------------------------------------------------------------------------------------
def test_photometric_of_identical_images_is_sqrt_eps():
    img = torch.rand(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    assert photometric_loss(img, img, mask).item() == pytest.approx(math.sqrt(1e-6), rel=1e-5)


def test_photometric_is_the_colour_distance_averaged_over_the_mask():
    target = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    rendered = target.clone()
    rendered[:, 0, :2] = 0.3  # colour difference (0.3, 0.4, 0) -> distance 0.5 in the top half
    rendered[:, 1, :2] = 0.4
    rendered[:, :, 3, 3] = 9.0  # outside the mask: ignored
    mask = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    mask[:, :, 3, 3] = 0
    eps = 1e-6
    want = (8 * math.sqrt(eps + 0.25) + 7 * math.sqrt(eps)) / 15
    assert photometric_loss(rendered, target, mask).item() == pytest.approx(want, rel=1e-12)
    empty = torch.zeros_like(mask)
    assert photometric_loss(rendered, target, empty).item() == 0.0


def test_perceptual_loss_is_off_without_a_network(caplog):
    # the trainer tells the user (test_train's test_a_run_says_once_that_perceptual_is_off)
    with caplog.at_level(logging.INFO):
        loss = PerceptualLoss(None)
    assert "perceptual loss is off" not in caplog.text
    assert not loss.enabled
    rendered = torch.rand(2, 3, 16, 16, requires_grad=True)
    value = loss(rendered, torch.rand(2, 3, 16, 16))
    assert value.item() == 0.0
    value.backward()  # connected to the graph, zero gradient
    assert torch.count_nonzero(rendered.grad) == 0


def test_perceptual_loss_with_a_supplied_identity_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    loss = PerceptualLoss(net, input_size=8)
    assert loss.enabled and not any(p.requires_grad for p in net.parameters())
    a = torch.rand(2, 3, 16, 16)
    assert loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-6)
    rendered = torch.rand(2, 3, 16, 16, requires_grad=True)
    value = loss(rendered, a)
    # independent: 1 - cosine of the features of the resized, [-1, 1]-scaled images
    resize = torch.nn.functional.interpolate
    fa = net(resize(rendered, (8, 8), mode="bilinear") * 2 - 1)
    fb = net(resize(a, (8, 8), mode="bilinear") * 2 - 1)
    cos = (fa * fb).sum(-1) / (fa.norm(dim=-1) * fb.norm(dim=-1))
    assert value.item() == pytest.approx((1 - cos).mean().item(), rel=1e-5)
    value.backward()
    assert rendered.grad.abs().sum() > 0


def test_base_landmark_weights_emphasise_nose_and_inner_mouth():
    w = base_landmark_weights()
    assert w.shape == (68,)
    heavy = {28, 29, 30, *range(60, 68)}
    assert all(w[i] == (20.0 if i in heavy else 1.0) for i in range(68))


def test_landmark_loss_hand_values():
    pred = torch.zeros(2, 68, 2, dtype=torch.float64)
    target = pred.clone()
    target[0, 0] = torch.tensor([3.0, 4.0])  # |d|^2 = 25, weight 1
    assert landmark_loss(pred, target).item() == pytest.approx(25 / (2 * 68))
    target[1, 29] = torch.tensor([1.0, 0.0])  # nose: weight 20
    assert landmark_loss(pred, target).item() == pytest.approx((25 + 20) / (2 * 68))
    assert landmark_loss(pred, target, torch.ones(68)).item() == pytest.approx(26 / (2 * 68))
    with pytest.raises(ValueError, match=r"\(68,\)"):
        landmark_loss(pred, target, torch.ones(5))


# --------------------------------------------------------------------------------------------
# regularisers
# --------------------------------------------------------------------------------------------
def test_coefficient_and_gamma_regularisers():
    layout = CoefficientLayout()
    vec = torch.zeros(2, 257, dtype=torch.float64)
    vec[0, 0] = 1.0  # id
    vec[1, 80] = 2.0  # exp
    vec[1, 144] = 3.0  # tex
    c = layout.split(vec)
    want = (1.0 * 1 + 0.8 * 4 + 1.7e-2 * 9) / 2
    assert coefficient_regulariser(c).item() == pytest.approx(want)
    # monochromatic light costs nothing; one channel off by 3 in one band
    gamma = torch.zeros(1, 27, dtype=torch.float64)
    gamma[0, [0, 9, 18]] = 0.5
    assert gamma_regulariser(gamma).item() == 0.0
    gamma[0, 9 + 4] = 3.0  # green, band 4: mean 1, deviations (-1, 2, -1)
    assert gamma_regulariser(gamma).item() == pytest.approx(6.0 / 27)


def test_reflectance_loss():
    albedo = torch.full((2, 4, 3), 0.5, dtype=torch.float64)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    assert reflectance_loss(albedo, mask).item() == 0.0
    albedo[:, 2] = 9.0  # outside the skin mask: ignored
    assert reflectance_loss(albedo, mask).item() == 0.0
    albedo[0, 0] = torch.tensor([0.8, 0.5, 0.5])  # skin red of sample 0: 0.8, 0.5, 0.5
    # mean 0.6 -> squared deviations 0.04 + 0.01 + 0.01; divided by B * |skin| = 6
    assert reflectance_loss(albedo, mask).item() == pytest.approx(0.06 / 6)


def test_total_variation_of_a_checkerboard_is_4():
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = ((i + j) % 2).to(torch.float64).expand(2, 3, 8, 8)
    assert total_variation(board).item() == pytest.approx(4.0)
    assert total_variation(torch.full((1, 3, 5, 5), 7.0)).item() == 0.0
    ramp = (0.25 * j).to(torch.float64)[None, None]  # steps of 0.25 along columns only
    assert total_variation(ramp).item() == pytest.approx(2 * 0.25**2)


def test_l1_terms():
    disp = torch.zeros(1, 1, 2, 2)
    disp[0, 0, 0] = torch.tensor([-1.0, 3.0])
    assert displacement_l1(disp).item() == pytest.approx(1.0)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert displacement_l1(disp, mask).item() == pytest.approx(1.0 / 3)
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.ones(1, 3, 2, 2)
    target[..., 0, 1] = 100.0  # masked out
    assert masked_l1(pred, target, mask).item() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# contour-aware loss
# --------------------------------------------------------------------------------------------
def face_mask(h: int = 224, w: int = 224) -> torch.Tensor:
    m = torch.zeros(1, h, w, dtype=torch.bool)
    m[0, 20:200, 50:151] = True  # rows 20..199: columns 50..150
    return m


def test_row_extents():
    ext = face_mask_row_extents(face_mask()[:, None].float())
    assert ext.valid[0, 20:200].all() and not ext.valid[0, :20].any()
    assert ext.left[0, 100] == 50 and ext.right[0, 100] == 150


def test_contour_loss_hand_values():
    lam, w = 0.01, 224.0
    mask = face_mask()
    cases = [
        # (x, y, cost)
        (100.0, 150.0, lam),  # deep inside: the constant margin, no gradient
        (160.0, 150.0, 10 / w),  # 10 px right of the right edge: l.r / max = |r| = 10/224
        (30.0, 120.0, 20 / w),  # 20 px left of the left edge
        (149.0, 110.0, 1 / w),  # 1 px inside (within the margin): |-1/224 + lam - lam|
    ]
    for x, y, cost in cases:
        pts = torch.tensor([[[x, y]]], dtype=torch.float64)
        assert contour_loss(pts, mask).item() == pytest.approx(cost, rel=1e-12), (x, y)
    pts = torch.tensor([[[c[0], c[1]] for c in cases]], dtype=torch.float64)
    assert contour_loss(pts, mask).item() == pytest.approx(sum(c[2] for c in cases) / 4)
    # points above delta, below the image or on rows without mask do not count
    extra = torch.tensor([[[500.0, 50.0], [500.0, 210.0], [500.0, 300.0]]], dtype=torch.float64)
    assert contour_loss(torch.cat([pts, extra], 1), mask).item() == pytest.approx(
        sum(c[2] for c in cases) / 4
    )
    assert contour_loss(extra, mask).item() == 0.0


def test_contour_loss_inside_costs_the_constant_margin_without_gradient():
    pts = torch.tensor([[[100.0, 150.0], [90.0, 180.0]]], dtype=torch.float64, requires_grad=True)
    loss = contour_loss(pts, face_mask())
    loss.backward()
    assert loss.item() == pytest.approx(0.01)
    assert torch.count_nonzero(pts.grad) == 0
    out = torch.tensor([[[170.0, 150.0]]], dtype=torch.float64, requires_grad=True)
    contour_loss(out, face_mask()).backward()
    assert out.grad[0, 0, 0] == pytest.approx(1 / 224) and out.grad[0, 0, 1] == 0  # pulled left


def brute_force_contour(points, mask, delta=100.0, lam=0.01):
    """Eq. 1-2 literally, one point at a time, in Python floats."""
    h, w = mask.shape[-2:]
    total, count = 0.0, 0
    for x, y in points[0].tolist():
        row = round(y)
        if not (0 <= row < h) or y <= delta:
            continue
        cols = [c for c in range(w) if mask[0, row, c]]
        if not cols:
            continue
        lx, rx = (cols[0] - x) / w, (cols[-1] - x) / w
        v = lx * rx / max(abs(lx), abs(rx))
        total += abs(max(v + lam, 0.0) - lam)
        count += 1
    return total / count


def test_contour_loss_matches_brute_force_on_an_irregular_mask():
    g = torch.Generator().manual_seed(0)
    h = w = 64
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = (((xx - 32) / 20.0) ** 2 + ((yy - 28) / 30.0) ** 2 < 1)[None]
    pts = torch.rand(1, 300, 2, generator=g, dtype=torch.float64) * torch.tensor([64.0, 70.0])
    got = contour_loss(pts, mask, delta=20.0).item()
    assert got == pytest.approx(brute_force_contour(pts, mask, delta=20.0), rel=1e-12)


def test_contour_loss_leaves_out_points_below_the_image_and_on_the_delta_row():
    """A mask on every row down to the last: a point below the image does not read the last
    row's edges, and a point exactly on row ``delta`` is not below it (Eq. 1: ``y > delta``)."""
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:6] = True
    inside = torch.tensor([[[3.0, 6.0]]], dtype=torch.float64)
    alone = contour_loss(inside, mask, delta=5.0).item()
    assert alone == pytest.approx(0.01)
    for y in (5.0, 8.0, 9.4, 20.0):
        far = torch.tensor([[[40.0, y]]], dtype=torch.float64)  # far right of the mask
        assert contour_loss(torch.cat([inside, far], 1), mask, delta=5.0).item() == alone, y
    counted = torch.tensor([[[40.0, 7.4]]], dtype=torch.float64)  # the last row: it counts
    assert contour_loss(torch.cat([inside, counted], 1), mask, delta=5.0).item() > alone


def test_gradcheck_contour_loss():
    # points away from the kinks (edges +- margin, midpoints, row boundaries)
    pts = torch.tensor(
        [[[160.3, 150.1], [30.7, 120.2], [149.2, 110.3], [100.4, 140.0], [57.9, 190.2]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    mask = face_mask()
    assert torch.autograd.gradcheck(lambda p: contour_loss(p, mask), (pts,))
    x = torch.tensor([5.3, -2.1, 0.7], dtype=torch.float64, requires_grad=True)
    left, right = torch.tensor([0.0, 0.0, 0.0]).double(), torch.tensor([3.0, 3.0, 3.0]).double()
    assert torch.autograd.gradcheck(lambda v: contour_cost(v, left, right, scale=4.0), (x,))


# --------------------------------------------------------------------------------------------
# adversarial
# --------------------------------------------------------------------------------------------
def test_gan_losses():
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert gan_generator_loss(ones).item() == 0.0  # LSGAN: D(G) = 1 fools D
    assert gan_generator_loss(zeros).item() == 1.0
    assert gan_discriminator_loss(ones, zeros).item() == 0.0
    assert gan_discriminator_loss(zeros, ones).item() == 1.0
    log2 = math.log(2.0)
    assert gan_generator_loss(zeros, "vanilla").item() == pytest.approx(log2)
    assert gan_discriminator_loss(zeros, zeros, "vanilla").item() == pytest.approx(log2)
    with pytest.raises(ValueError, match="lsgan"):
        gan_generator_loss(ones, "wgan")


# --------------------------------------------------------------------------------------------
# totals with the config's weights
# --------------------------------------------------------------------------------------------
def test_hrn_total_is_supplementary_eq_1_and_2():
    one = torch.tensor(1.0)
    terms = HRNLossTerms(*([one] * 10))
    w = HRNLossWeights()
    eq1 = 2 * 1.9 + 2 * 0.2 + 1.6e-4 + 5e3 + 10 + 20 + 2 * 0.2
    assert hrn_total_loss(terms, w).item() == pytest.approx(eq1)
    terms.supervised_mid = terms.supervised_high = torch.tensor(2.0)
    assert hrn_total_loss(terms, w).item() == pytest.approx(eq1 + 1.0 * 4)
    terms.supervised_high = None
    with pytest.raises(ValueError, match="both supervised"):
        hrn_total_loss(terms, w)


def test_base_total_uses_the_base_weights():
    terms = BaseLossTerms(*(torch.tensor(float(k + 1)) for k in range(6)))
    want = 1.92 * 1 + 0.2 * 2 + 1.6e-3 * 3 + 3e-4 * 4 + 10 * 5 + 5 * 6
    assert base_total_loss(terms, BaseLossWeights()).item() == pytest.approx(want)


def test_pixels_at_224_keeps_the_image_edges():
    from models.losses import pixels_at_224

    p = torch.tensor([[-0.5, 447.5], [223.5, 100.0]])
    expected = torch.tensor([[-0.5, 223.5], [111.5, 49.75]])
    assert torch.allclose(pixels_at_224(p, 448), expected)
    assert torch.equal(pixels_at_224(p, 224), p)


def _face_layout(rng: torch.Generator | None = None) -> torch.Tensor:
    """iBUG-68 points of a frontal face in a 64-pixel image (eyes 24 px apart, an open mouth),
    jittered by up to a pixel with ``rng``."""
    lm = torch.zeros(68, 2)
    lm[:17] = torch.stack([torch.linspace(8, 56, 17), torch.full((17,), 50.0)], -1)  # jaw
    for k, cx in ((17, 20.0), (22, 44.0)):  # brows: 5 points on a line 6 px above the eyes
        lm[k : k + 5] = torch.stack([cx + torch.linspace(-6, 6, 5), torch.full((5,), 18.0)], -1)
    for k, cx in ((36, 20.0), (42, 44.0)):  # eyes: hexagons 10 px wide, 4 px high
        dx = torch.tensor([-5.0, -2.0, 2.0, 5.0, 2.0, -2.0])
        dy = torch.tensor([0.0, -2.0, -2.0, 0.0, 2.0, 2.0])
        lm[k : k + 6] = torch.stack([cx + dx, 24.0 + dy], -1)
    lm[27:36] = torch.tensor([[32.0, 20.0 + 2 * i] for i in range(9)])  # nose
    lm[48:60] = torch.tensor([[32.0 + 9 * math.cos(a), 42.0 + 4 * math.sin(a)] for a in
                              torch.linspace(0, 2 * math.pi, 13)[:12].tolist()])  # fmt: skip
    inner = [(-6, 0), (-3, -2), (0, -2), (3, -2), (6, 0), (3, 2), (0, 2), (-3, 2)]
    lm[60:68] = torch.tensor([[32.0 + x, 42.0 + y] for x, y in inner])
    if rng is not None:
        lm = lm + torch.rand(68, 2, generator=rng) * 2 - 1
    return lm


def _skin_brute_force(face: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """The skin mask pixel by pixel in plain Python: ray casting and segment distances."""

    def inside(x: float, y: float, poly: list[tuple[float, float]]) -> bool:
        hit = False
        for (ax, ay), (bx, by) in zip(poly, poly[1:] + poly[:1], strict=True):
            if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
                hit = not hit
        return hit

    def dist(x: float, y: float, a: tuple[float, float], b: tuple[float, float]) -> float:
        ex, ey = b[0] - a[0], b[1] - a[1]
        t = max(0.0, min(1.0, ((x - a[0]) * ex + (y - a[1]) * ey) / (ex * ex + ey * ey)))
        return math.hypot(x - a[0] - t * ex, y - a[1] - t * ey)

    p = [(float(u), float(v)) for u, v in lm.tolist()]
    eye_c = [tuple(sum(c) / 6 for c in zip(*p[k : k + 6], strict=True)) for k in (36, 42)]
    iod = math.dist(eye_c[0], eye_c[1])
    eyes, brows, mouth = [p[36:42], p[42:48]], [p[17:22], p[22:27]], p[60:68]
    out = face.clone()
    for y in range(face.shape[0]):
        for x in range(face.shape[1]):
            gone = inside(x, y, mouth)
            for e in eyes:
                near = min(dist(x, y, a, b) for a, b in zip(e, e[1:] + e[:1], strict=True))
                gone |= inside(x, y, e) or near <= 0.08 * iod
            for br in brows:
                gone |= (
                    min(dist(x, y, a, b) for a, b in zip(br[:-1], br[1:], strict=True))
                    <= 0.07 * iod
                )
            if gone:
                out[y, x] = 0.0
    return out


def test_skin_mask_matches_a_pixel_by_pixel_reference():
    g = torch.Generator().manual_seed(3)
    face = torch.rand(64, 64, generator=g)  # weights, to see they are kept where skin
    lms = torch.stack([_face_layout(g) for _ in range(3)])
    got = skin_mask(face.expand(3, 1, 64, 64), lms)
    for b in range(3):
        want = _skin_brute_force(face, lms[b])
        assert torch.equal(got[b, 0], want), int((got[b, 0] != want).sum())


def test_skin_mask_removes_eyes_brows_and_the_open_mouth_only():
    lm = _face_layout()
    face = torch.ones(1, 1, 64, 64)
    skin = skin_mask(face, lm[None])[0, 0]
    iod = 24.0
    assert skin[24, 20] == 0 and skin[24, 44] == 0  # the eyes' centres
    # the margin round an eye: 0.08 of the eye distance (1.92 px) beyond its corner (15, 24)
    assert skin[24, 15 - 1] == 0 and skin[24, 15 - 2] == 1 and 0.08 * iod < 2
    assert skin[18, 20] == 0 and skin[18 - 1, 20] == 0 and skin[18 - 2, 20] == 1  # brow, 1.68 px
    assert skin[42, 32] == 0 and skin[42, 23] == 1  # inside the inner mouth; the lip corner
    assert skin[34, 14] == 1 and skin[10, 32] == 1 and skin[30, 32] == 1  # cheek, forehead, nose
    # closed lips: the inner mouth's polygon has no area, and the mouth stays
    closed = lm.clone()
    closed[60:68, 1] = 42.0
    assert skin_mask(face, closed[None])[0, 0, 42, 32] == 1
    # a photo whose landmarks are not all known keeps its face mask; the others are still cut
    lost = torch.stack([lm, lm])
    lost[1, 40] = float("nan")
    both = skin_mask(face.expand(2, 1, 64, 64), lost)
    assert both[0, 0, 24, 20] == 0 and torch.equal(both[1], face[0])
    with pytest.raises(ValueError, match="landmarks"):
        skin_mask(face, lm[None, :51])


def test_each_loss_names_the_shapes_it_refuses():
    import models.losses as L

    img = torch.zeros(2, 3, 8, 8)
    cases = [
        (lambda: L.photometric_loss(img, img, torch.ones(2, 3, 8, 8)), r"mask must have shape"),
        (lambda: L.photometric_loss(img, img[:, :, :4], torch.ones(2, 1, 8, 8)), "target"),
        (lambda: L.base_landmark_weights(51), "defined for the 68-point scheme, got n=51"),
        (
            lambda: L.landmark_loss(torch.zeros(2, 68, 3), torch.zeros(2, 68, 3)),
            r"landmarks must both be \(B, K, 2\)",
        ),
        (lambda: L.gamma_regulariser(torch.zeros(2, 26)), r"gamma must have shape \(B, 27\)"),
        (
            lambda: L.reflectance_loss(torch.zeros(2, 10, 3), torch.ones(3, 10)),
            r"mask must be \(10,\) or \(2, 10\), got \(3, 10\)",
        ),
        (lambda: L.total_variation(torch.zeros(1, 3, 1, 8)), "needs H, W >= 2"),
        (
            lambda: L.displacement_l1(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 4, 4)),
            r"mask \(2, 1, 4, 4\) must match",
        ),
        (lambda: L.masked_l1(img, img[:1], torch.ones(2, 1, 8, 8)), "target .* must match pred"),
        (lambda: L.masked_l1(img, img, torch.ones(2, 3, 8, 8)), r"mask must be \(2, 1, 8, 8\)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()

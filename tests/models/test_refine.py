"""Per-photo refinement of the base coefficients, on photos the system renders from known ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hrn_testdata import tiny_config

from facehd.morphable import load_model
from models.analyzer import Coefficients
from models.config import BaseLossWeights
from models.refine import RefineConfig, refine_coefficients
from models.system import FaceSystem


def _blank(system: FaceSystem, n: int) -> torch.Tensor:
    """``n`` empty images of the system's size (the coefficients are given, not predicted)."""
    return torch.zeros(n, 3, system.image_size, system.image_size)


def _photos(system: FaceSystem, c: Coefficients) -> tuple[torch.Tensor, ...]:
    """``(images, masks, landmarks)`` of the faces ``c`` as the system renders them."""
    with torch.no_grad():
        coarse = system.coarse(_blank(system, c.id.shape[0]), c)
        render = system.render_coarse(coarse)
        images = render.image.permute(0, 3, 1, 2).float()
        masks = render.mask[:, None].float()
        landmarks = system.landmarks2d(coarse.posed).float()
    return images, masks, landmarks


@pytest.fixture(scope="module")
def scene():
    """A tiny system, a known face (identity one standard deviation off the mean, turned, lit
    from the front) rendered by it, with its skin mask and landmarks, and a start that is off in
    identity, pose, albedo and light."""
    model = load_model("facehd-synth")
    system = FaceSystem(tiny_config().model, model, 224)
    n_id, n_exp, n_tex, *_ = system.hrn.net_recon.layout.sizes
    g = torch.Generator().manual_seed(1)
    gamma = torch.zeros(1, 27)
    gamma[0, [2, 11, 20]] = 0.3
    truth = Coefficients(
        id=torch.randn(1, n_id, generator=g),
        exp=torch.zeros(1, n_exp),
        tex=0.5 * torch.randn(1, n_tex, generator=g),
        angle=torch.tensor([[0.1, -0.25, 0.05]]),
        gamma=gamma,
        trans=torch.zeros(1, 3),
    )
    images, masks, landmarks = _photos(system, truth)
    start = truth._replace(
        id=0.7 * torch.randn(1, n_id, generator=g),
        tex=torch.zeros(1, n_tex),
        gamma=torch.zeros(1, 27),
        angle=truth.angle + torch.tensor([[0.05, 0.08, -0.03]]),
        trans=torch.tensor([[0.02, -0.02, 0.1]]),
    )
    return system, truth, start, images, masks, landmarks


def _shape(system, c: Coefficients) -> np.ndarray:
    fit = np.asarray(system.model.regions.fit, dtype=bool)
    with torch.no_grad():
        return system.coarse(_blank(system, 1), c).shape[0].numpy()[fit]


def test_refinement_recovers_a_known_face(scene):
    system, truth, start, images, masks, landmarks = scene
    before_params = [p.detach().clone() for p in system.parameters()]
    flags = [p.requires_grad for p in system.parameters()]
    c, before, after = refine_coefficients(
        system, images, masks, landmarks, start, BaseLossWeights(), RefineConfig(steps=100)
    )
    assert after < 0.2 * before
    true_shape = _shape(system, truth)

    def rms(s: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.sum((s - true_shape) ** 2, axis=1))))

    mean_face = rms(_shape(system, truth._replace(id=torch.zeros_like(truth.id))))
    # closer to the true shape than the mean face it started from, and than the start's identity
    assert rms(_shape(system, c)) < 0.8 * mean_face < rms(_shape(system, start))
    np.testing.assert_allclose(c.angle.numpy(), truth.angle.numpy(), atol=0.06)
    # the system is left as it was: weights and their gradient flags
    for p, q, flag in zip(system.parameters(), before_params, flags, strict=True):
        assert torch.equal(p.detach(), q) and p.requires_grad == flag and p.grad is None


def test_start_from_the_mean_ignores_the_analyzers_identity(scene):
    system, _, start, images, masks, landmarks = scene
    w, cfg = BaseLossWeights(), RefineConfig(steps=10)
    other = start._replace(id=-start.id, exp=start.exp + 0.5)
    a = refine_coefficients(system, images, masks, landmarks, start, w, cfg)[0]
    b = refine_coefficients(system, images, masks, landmarks, other, w, cfg)[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # from the analyzer's start the identity it gave matters
    keep = RefineConfig(steps=10, start="network")
    c = refine_coefficients(system, images, masks, landmarks, start, w, keep)[0]
    d = refine_coefficients(system, images, masks, landmarks, other, w, keep)[0]
    assert not torch.equal(c.id, d.id)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": float("inf")}, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"start": "zero"}, "start must be 'mean' or 'network'"),
    ],
)
def test_bad_refine_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RefineConfig(**kwargs)


def test_a_fit_that_ends_worse_keeps_the_analyzers_prediction(scene):
    system, _, start, images, masks, landmarks = scene
    wild = RefineConfig(steps=5, lr=1e3)  # Adam's steps of 1000 standard deviations
    c, before, after = refine_coefficients(
        system, images, masks, landmarks, start, BaseLossWeights(), wild
    )
    assert after == before
    assert all(torch.equal(x, y.float()) for x, y in zip(c, start, strict=True))


def test_views_of_one_face_share_one_identity(scene):
    """Three views of the known face (turned left, frontal, right), each started from another
    wrong identity: a shared identity is one row for all views and lands nearer the true shape
    than the views' own identities fitted apart do on average."""
    big, truth, start, _, _, _ = scene
    # rendered at 112 px: the same property, in two thirds of the time of the 224 px system
    system = FaceSystem(tiny_config().model, big.model, 112)
    g = torch.Generator().manual_seed(7)
    yaws = torch.tensor([-0.5, 0.0, 0.5])
    views = Coefficients(*(t.repeat(3, 1) for t in truth))._replace(
        angle=torch.stack([torch.tensor([0.1, y, 0.0]) for y in yaws])
    )
    images, masks, landmarks = _photos(system, views)
    starts = views._replace(
        id=0.7 * torch.randn(3, truth.id.shape[1], generator=g),
        tex=torch.zeros_like(views.tex),
        gamma=torch.zeros_like(views.gamma),
    )
    cfg = RefineConfig(steps=100)
    shared, before, after = refine_coefficients(
        system, images, masks, landmarks, starts, BaseLossWeights(), cfg, shared_identity=True
    )
    assert after < 0.2 * before
    assert shared.id.shape == truth.id.repeat(3, 1).shape
    torch.testing.assert_close(shared.id, shared.id[:1].expand(3, -1), rtol=0, atol=0)
    true_shape = _shape(system, truth)

    def rms(c: Coefficients) -> float:
        s = _shape(system, truth._replace(id=c.id[:1]))
        return float(np.sqrt(np.mean(np.sum((s - true_shape) ** 2, axis=1))))

    apart = []
    for v in range(3):
        one = Coefficients(*(t[v : v + 1] for t in starts))
        c, _, _ = refine_coefficients(
            system, images[v : v + 1], masks[v : v + 1], landmarks[v : v + 1], one,
            BaseLossWeights(), cfg,
        )  # fmt: skip
        apart.append(rms(c))
    assert rms(shared) < np.mean(apart), (rms(shared), apart)


def test_the_photometric_term_compares_skin_not_the_eyes_or_mouth(scene):
    from models.losses import skin_mask
    from models.refine import base_terms

    system, truth, start, images, masks, landmarks = scene
    w = BaseLossWeights()

    def photo(img: torch.Tensor) -> float:
        with torch.no_grad():
            return float(base_terms(system, start, img, masks, landmarks, w).photo)

    skin = skin_mask(masks, landmarks)
    cut = (masks > 0) & (skin == 0)  # the eyes and brows of the face in the photo
    assert int(cut.sum()) > 100
    # a photo changed only there (another eye colour, a shadow on the brows) scores the same
    recoloured = torch.where(cut, 1.0 - images, images)
    assert photo(recoloured) == pytest.approx(photo(images), rel=1e-6)
    # changed on the skin, it does not
    assert photo(torch.where(skin > 0, 1.0 - images, images)) > 1.2 * photo(images)
    # the skin mask a fit computes once gives the term computed at each step (within the render)
    with torch.no_grad():
        given = base_terms(system, start, images, masks, landmarks, w, skin=skin).photo
    assert float(given) == photo(images)


def test_a_fit_that_cannot_be_scored_keeps_the_analyzers_prediction(scene):
    """A photo with an undefined pixel on the skin: the objective is NaN before and after, and
    the prediction comes back rather than whatever the steps made of it."""
    system, _, start, images, masks, landmarks = scene
    broken = images.clone()
    rows, cols = torch.nonzero(masks[0, 0] > 0, as_tuple=True)
    broken[0, :, rows[len(rows) // 2], cols[len(cols) // 2]] = float("nan")
    c, before, after = refine_coefficients(
        system, broken, masks, landmarks, start, BaseLossWeights(), RefineConfig(steps=2)
    )
    assert np.isnan(before) and np.isnan(after)
    assert all(torch.equal(x, y.float()) for x, y in zip(c, start, strict=True))


def test_the_warm_up_holds_the_shape_and_the_fit_frees_it(scene, monkeypatch):
    """The optimiser of the first phase moves texture, pose and light only; the second every
    coefficient. Read off the tensors each Adam is given and how often each steps."""
    system, _, start, images, masks, landmarks = scene
    made = []

    class Recording(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            params = list(params)
            super().__init__(params, **kwargs)
            made.append({"shapes": [tuple(p.shape) for p in params], "steps": 0})

        def step(self, closure=None):
            made[-1]["steps"] += 1
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", Recording)
    refine_coefficients(
        system, images, masks, landmarks, start, BaseLossWeights(), RefineConfig(steps=3)
    )
    layout = [tuple(t.shape) for t in start]  # id, exp, tex, angle, gamma, trans
    assert made == [
        {"shapes": [layout[2], layout[3], layout[4], layout[5]], "steps": 3},
        {"shapes": layout, "steps": 3},
    ]


def test_the_systems_gradient_flags_are_put_back_as_they_were(scene):
    """A system with some weights frozen (as a trainer's stage leaves it) gets those flags back,
    not all of them switched on."""
    system, _, start, images, masks, landmarks = scene
    params = list(system.parameters())
    old = [p.requires_grad for p in params]
    try:
        for k, p in enumerate(params):
            p.requires_grad_(k % 2 == 0)
        refine_coefficients(
            system, images, masks, landmarks, start, BaseLossWeights(), RefineConfig(steps=1)
        )
        assert [p.requires_grad for p in params] == [k % 2 == 0 for k in range(len(params))]
    finally:
        for p, flag in zip(params, old, strict=True):
            p.requires_grad_(flag)


def test_a_shared_identity_starts_from_the_mean_of_the_analyzers(scene):
    """Views of one face started from the analyzer (``start="network"``): the identity starts at
    the mean of the views' identities, so a few small steps leave it there; a fit that ends
    worse than that start falls back to it, still one identity for every view."""
    big, truth, _, _, _, _ = scene
    system = FaceSystem(tiny_config().model, big.model, 112)
    views = Coefficients(*(t.repeat(2, 1) for t in truth))._replace(
        angle=torch.tensor([[0.1, -0.3, 0.0], [0.1, 0.3, 0.0]])
    )
    images, masks, landmarks = _photos(system, views)
    g = torch.Generator().manual_seed(3)
    starts = views._replace(id=truth.id + 0.5 * torch.randn(2, truth.id.shape[1], generator=g))
    mean = starts.id.mean(0, keepdim=True).expand(2, -1)
    w = BaseLossWeights()
    small = RefineConfig(steps=2, lr=1e-4, start="network")  # Adam moves <= ~lr a step
    c, before, after = refine_coefficients(
        system, images, masks, landmarks, starts, w, small, shared_identity=True
    )
    assert after < before  # a fit, not the fallback
    torch.testing.assert_close(c.id, mean, rtol=0, atol=1e-3)
    assert float((starts.id - mean).abs().max()) > 0.1  # (the views' own identities differ)
    # the objective before is the one at that shared start
    with torch.no_grad():
        from models.losses import base_total_loss
        from models.refine import base_terms

        shared_start = starts._replace(id=mean)
        expected = float(base_total_loss(base_terms(system, shared_start, images, masks,
                                                    landmarks, w), w))  # fmt: skip
    assert before == pytest.approx(expected, rel=1e-5)
    wild = RefineConfig(steps=3, lr=1e3, start="network")
    c, before, after = refine_coefficients(
        system, images, masks, landmarks, starts, w, wild, shared_identity=True
    )
    assert after == before
    assert torch.equal(c.id, mean)
    for name in ("exp", "tex", "angle", "gamma", "trans"):
        assert torch.equal(getattr(c, name), getattr(starts, name))


def test_base_terms_against_a_per_pixel_and_per_point_reference(scene):
    """Each term of the base objective recomputed in NumPy from the rendered face: the
    photometric distance over skin pixels the face covers, the perceptual term's mask, the
    landmark distance in 224-pixel units with the configured emphasis, the lighting and
    reflectance regularisers."""
    from models.losses import BaseLossTerms
    from models.refine import base_terms

    big, truth, start, _, _, _ = scene
    system = FaceSystem(tiny_config().model, big.model, 112)  # landmarks scaled to 224 units
    images, masks, landmarks = _photos(system, truth)
    gamma = start.gamma.clone()
    gamma[0, 3] = 0.4  # a red-only band: coloured light
    coeffs = start._replace(gamma=gamma, tex=0.3 * torch.ones_like(start.tex))
    w = BaseLossWeights(landmark_emphasis=5.0, id=0.5, exp=0.25, tex=0.1)
    seen = {}

    def perceptual(rendered, photo, mask, lms):
        seen["mask"] = mask.numpy().copy()
        return torch.tensor(0.125)

    everywhere = torch.ones_like(masks)  # the skin, taken where the render covers it
    with torch.no_grad():
        terms = base_terms(system, coeffs, images, masks, landmarks, w, perceptual, everywhere)
        coarse = system.coarse(images, coeffs)
        render = system.render_coarse(coarse)
        predicted = system.landmarks2d(coarse.posed)[0].numpy().astype(np.float64)
        albedo = coarse.albedo[0].numpy().astype(np.float64)
    assert isinstance(terms, BaseLossTerms)
    covered = render.mask[0].numpy() > 0
    assert 0 < covered.sum() < covered.size
    rendered = render.image[0].numpy().astype(np.float64)
    photo = images[0].permute(1, 2, 0).numpy().astype(np.float64)
    dist = [np.sqrt(1e-6 + np.sum((rendered[i, j] - photo[i, j]) ** 2))
            for i, j in zip(*np.nonzero(covered), strict=True)]  # fmt: skip
    assert float(terms.photo) == pytest.approx(np.mean(dist), rel=1e-5)
    np.testing.assert_array_equal(seen["mask"][0, 0], masks[0, 0].numpy() * covered)
    assert float(terms.perceptual) == 0.125
    k = np.ones(68)
    k[[28, 29, 30, 60, 61, 62, 63, 64, 65, 66, 67]] = 5.0
    at224 = lambda p: (p + 0.5) * 2.0 - 0.5  # noqa: E731
    d2 = np.sum((at224(predicted) - at224(landmarks[0].numpy())) ** 2, axis=1)
    assert float(terms.landmark) == pytest.approx(np.sum(k * d2) / 68, rel=1e-4)
    g = coeffs.gamma.numpy().reshape(3, 9)
    assert float(terms.gamma) == pytest.approx(np.mean((g - g.mean(0)) ** 2), rel=1e-6)
    assert float(terms.gamma) > 0
    skin = np.asarray(system.skin_vertices.cpu().numpy(), dtype=bool)
    a = albedo[skin]
    assert float(terms.reflectance) == pytest.approx(np.sum((a - a.mean(0)) ** 2) / skin.sum(),
                                                      rel=1e-4)  # fmt: skip
    c = {n: t.numpy().astype(np.float64) for n, t in coeffs._asdict().items()}
    expected = (
        0.5 * np.sum(c["id"] ** 2) + 0.25 * np.sum(c["exp"] ** 2) + 0.1 * np.sum(c["tex"] ** 2)
    )
    assert float(terms.coefficient) == pytest.approx(expected, rel=1e-5)

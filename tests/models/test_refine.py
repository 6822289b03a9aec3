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
        ({"lr": 0.0}, "lr must be > 0"),
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

"""M1's vertex normals: computed once per forward for both renders, with the same gradients."""

from __future__ import annotations

import torch
from hrn_testdata import tiny_system_on_random_crop


def _loss_and_grads(system, coarse, images, *, shared: bool):
    system.zero_grad(set_to_none=True)
    detail = system.details(images, coarse, deretouch=False)
    r1 = system.render_mid(detail, coarse)
    if not shared:  # the reference: R2 computes its own normals
        detail.normals = None
    r2 = system.render_high(detail, coarse)
    loss = r1.image.square().mean() + r2.image.square().mean()
    loss.backward()
    grads = {
        n: p.grad.clone()
        for n, p in system.hrn.named_parameters()
        if p.grad is not None and "mid_net" in n
    }
    return loss.detach(), grads


def test_both_renders_share_one_computation_of_the_normals(one_thread, monkeypatch):
    system, coarse, images = tiny_system_on_random_crop()
    calls = []
    original = system.model.vertex_normals

    def counted(v):
        calls.append(v)
        return original(v)

    monkeypatch.setattr(system.model, "vertex_normals", counted)
    detail = system.details(images, coarse, deretouch=False)
    before = len(calls)
    system.render_mid(detail, coarse)
    system.render_high(detail, coarse)
    assert len(calls) == before + 1
    assert calls[-1] is detail.posed
    want = original(detail.posed)
    assert torch.equal(system.mid_normals(detail), want)
    # a new M1 on the same object gets its own normals, not the stale ones
    detail.posed = detail.posed + torch.tensor([0.0, 0.0, 1.0]) * detail.posed[..., :1] * 0.1
    assert not torch.allclose(system.mid_normals(detail), want, atol=1e-4)
    assert torch.equal(system.mid_normals(detail), original(detail.posed))


def test_shared_normals_give_the_same_loss_and_gradients(one_thread):
    system, coarse, images = tiny_system_on_random_crop()
    loss_a, grads_a = _loss_and_grads(system, coarse, images, shared=True)
    loss_b, grads_b = _loss_and_grads(system, coarse, images, shared=False)
    assert torch.equal(loss_a, loss_b)
    assert grads_a and grads_a.keys() == grads_b.keys()
    assert any(g.abs().max() > 0 for g in grads_a.values())
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], rtol=1e-5, atol=1e-9)

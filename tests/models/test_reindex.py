"""Per-image re-indexing of the supervised displacement (lab photos with their cameras)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hrn_testdata import tiny_config, tiny_system_on_random_crop

from facehd.morphable import load_model
from models.data import LabDataset, collate
from models.system import scaled_hrn_camera


def test_priors_uv_image_names_the_uv_seen_at_the_true_landmarks(hrn_data):
    """With the true maps as priors, the UV seen at the pixel of a visible landmark in the crop
    (the true 3D landmark projected by the photo's own camera) is that landmark vertex's UV."""
    model = load_model("facehd-synth")
    lab = LabDataset(hrn_data.priors, template="facehd-synth", model=model)
    assert lab.has_cameras
    lm_uv = np.asarray(model.uvs)[np.asarray(model.landmarks68)]
    checked = 0
    for i in range(len(lab)):
        item = lab[i]
        uv, mask = item["priors_uv"], item["priors_uv_mask"]
        assert uv.shape == (224, 224, 2) and mask.shape == (224, 224)
        # the surface covers most of the skin mask of the photo
        skin = item["mask"] > 0
        assert mask[skin].mean() > 0.95
        for k in (30, 51, 57):  # nose tip, outer lips (no other surface hides them)
            x, y = item["landmarks"][k]
            xi, yi = int(np.floor(x)), int(np.floor(y))
            if not mask[yi : yi + 2, xi : xi + 2].all():
                continue
            taps = uv[yi : yi + 2, xi : xi + 2].reshape(-1, 2)
            if np.ptp(taps, axis=0).max() > 0.02:  # an occlusion edge (the nose's profile)
                continue
            fx, fy = x - xi, y - yi
            got = (
                uv[yi, xi] * (1 - fx) * (1 - fy)
                + uv[yi, xi + 1] * fx * (1 - fy)
                + uv[yi + 1, xi] * (1 - fx) * fy
                + uv[yi + 1, xi + 1] * fx * fy
            )
            assert np.abs(got - lm_uv[k]).max() < 0.01, (i, k, got, lm_uv[k])
            checked += 1
    assert checked >= 6


def test_lab_items_without_the_model_have_no_uv_image(hrn_data):
    lab = LabDataset(hrn_data.priors, template="facehd-synth", model_name="facehd-synth")
    assert "priors_uv" not in lab[0]


def _pattern(uv: torch.Tensor) -> torch.Tensor:
    """A smooth displacement field of the UV coordinates, mm."""
    return torch.sin(2 * np.pi * 2 * uv[..., 0]) * torch.cos(2 * np.pi * 1.5 * uv[..., 1])


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.03, -0.02)])
def test_target_displacement_follows_the_skin_point_each_texel_sees(shift, one_thread):
    """Render the network's own predicted surface as the 'priors' (its UVs shifted by ``shift``):
    the target at texel ``u`` must be the priors' map at ``u + shift``, the UV that pixel shows,
    not at ``u`` (the texel-by-texel comparison)."""
    system, coarse, images = tiny_system_on_random_crop()
    with torch.no_grad():
        detail = system.details(images, coarse, deretouch=False)
        # the surface the texels were sampled from: M0 + the upsampled deformation per vertex
        d = F.interpolate(detail.maps.deformation, detail.position_map.shape[-2:], mode="bilinear")
        from facehd.uv import sample_uv_map

        verts = coarse.shape + sample_uv_map(d, system.uvs())
        cam = scaled_hrn_camera(224)
        from facehd.render import Renderer

        shifted = system.uvs() + torch.tensor(shift)
        res = Renderer(cam).render(coarse.pose(verts), system.faces, uvs=shifted)
        priors_uv = res.uvs.permute(0, 3, 1, 2)
        priors_mask = res.mask[:, None].float()
        n = 256
        centres = (torch.arange(n) + 0.5) / n
        grid_u = centres[None, :].expand(n, n)
        grid_v = 1.0 - centres[:, None].expand(n, n)
        disp = _pattern(torch.stack([grid_u, grid_v], -1))[None, None]
        target, mask = system.target_displacement(
            detail, coarse, disp, torch.ones_like(disp), priors_uv, priors_mask
        )
    s = target.shape[-1]
    c = (torch.arange(s) + 0.5) / s
    u = c[None, :].expand(s, s) + shift[0]
    v = 1.0 - c[:, None].expand(s, s) + shift[1]
    want = _pattern(torch.stack([u, v], -1))
    m = mask[0, 0] > 0.5
    assert m.float().mean() > 0.25  # a good part of the face is seen and kept
    assert torch.all(mask[0, 0][detail.seen[0, 0] < 0.5] == 0)  # unseen texels are never kept
    err = (target[0, 0] - want).abs()[m]
    # the texel-by-texel answer differs by the shift; the re-indexed one by sub-texel error
    assert err.median() < 0.03 and err.quantile(0.95) < 0.12, (err.median(), err.max())
    if shift != (0.0, 0.0):
        naive = _pattern(torch.stack([u - shift[0], v - shift[1]], -1))
        assert (target[0, 0] - naive).abs()[m].median() > 5 * err.median()


def test_continuous_uv_marks_occlusion_edges_only():
    from models.system import continuous_uv

    # a smooth ramp with a jump between columns 4 and 5 (one surface in front of another)
    u = torch.linspace(0.0, 0.1, 10)[None, :].expand(8, 10).clone()
    u[:, 5:] += 0.3
    v = torch.linspace(0.5, 0.55, 8)[:, None].expand(8, 10)
    mask = continuous_uv(torch.stack([u, v])[None])[0, 0]
    assert torch.all(mask[:, [4, 5]] == 0)
    assert torch.all(mask[:, :4] == 1) and torch.all(mask[:, 6:] == 1)


def test_collate_carries_the_uv_images(hrn_data):
    model = load_model("facehd-synth")
    lab = LabDataset(hrn_data.priors, template="facehd-synth", model=model)
    batch = collate([lab[0], lab[1]], 48)
    assert batch.priors_uv.shape == (2, 2, 224, 224)
    assert batch.priors_uv_mask.shape == (2, 1, 224, 224)
    np.testing.assert_array_equal(batch.priors_uv[1].permute(1, 2, 0).numpy(), lab[1]["priors_uv"])


def test_lab_photos_without_cameras_train_texel_by_texel(hrn_data, tmp_path, one_thread):
    """Lab photos from a rig without a scan-frame camera still train (the displacement compared
    in the priors' layout), and the log says so."""
    import shutil

    from hrn_testdata import write_truth_priors

    from models.train import train

    scans = tmp_path / "scans"
    shutil.copytree(hrn_data.scans, scans)
    for path in scans.glob("*.photos.npz"):
        z = dict(np.load(path))
        del z["scan_R"], z["scan_t"]
        np.savez(path, **z)
    priors = write_truth_priors(scans, tmp_path / "priors.h5")
    model = load_model("facehd-synth")
    lab = LabDataset(priors, template="facehd-synth", model=model)
    assert not lab.has_cameras and "priors_uv" not in lab[0]
    assert collate([lab[0]], 48).priors_uv is None
    cfg = tiny_config()
    cfg.hrn.steps = 2
    out = tmp_path / "run"
    train(cfg, out, stages=["hrn"], photos=hrn_data.photos, priors=priors)
    log = (out / "train.log").read_text()
    assert "no scan-frame camera" in log and "re-indexed" not in log
    rows = (out / "log_hrn.csv").read_text().splitlines()
    assert any(",sup," in r for r in rows[1:])

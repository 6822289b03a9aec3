"""Face analyzer: Deep3DFaceRecon net_recon state-dict layout, coefficient split, loading."""

from __future__ import annotations

import pytest
import torch

from facehd.errors import InputFileError
from models.analyzer import CoefficientLayout, Coefficients, FaceAnalyzer, load_face_analyzer
from models.checkpoints import CheckpointError

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_net_recon_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of Deep3DFaceRecon's net_recon (ResNet-50 without fc + 7 1x1 heads),
    written out from the architecture: stem 7x7/64, stages (3, 4, 6, 3) of bottlenecks with
    inner widths 64, 128, 256, 512 (x4 out), projection shortcut on each stage's first block."""
    out: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in BN:
            out[f"{prefix}.{name}"] = () if name == "num_batches_tracked" else (c,)

    out["backbone.conv1.weight"] = (64, 3, 7, 7)
    bn("backbone.bn1", 64)
    cin = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for i in range(blocks):
            p = f"backbone.layer{stage + 1}.{i}"
            out[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
            bn(f"{p}.bn1", planes)
            out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            out[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            bn(f"{p}.bn3", 4 * planes)
            if i == 0:
                out[f"{p}.downsample.0.weight"] = (4 * planes, cin, 1, 1)
                bn(f"{p}.downsample.1", 4 * planes)
            cin = 4 * planes
    for k, n in enumerate((80, 64, 80, 3, 27, 2, 1)):  # id exp tex angle gamma (tx,ty) tz
        out[f"final_layers.{k}.weight"] = (n, 2048, 1, 1)
        out[f"final_layers.{k}.bias"] = (n,)
    return out


@pytest.fixture(scope="module")
def resnet50_analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


def tiny_analyzer(layout: CoefficientLayout | None = None, seed: int = 0) -> FaceAnalyzer:
    torch.manual_seed(seed)
    model = FaceAnalyzer(layout, layers=(1, 1, 1, 1), width=4)
    with torch.no_grad():  # non-trivial weights everywhere (heads start at zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
    return model


def test_state_dict_matches_deep3dfacerecon_net_recon_layout(resnet50_analyzer):
    expected = expected_net_recon_layout()
    state = resnet50_analyzer.state_dict()
    assert list(state) == list(expected)  # same names, same order
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert not any(".fc." in k for k in state)


def test_parameter_count_is_resnet50_without_fc_plus_heads(resnet50_analyzer):
    # torchvision's resnet50 has 25,557,032 parameters, of which the fc holds 2048*1000 + 1000.
    backbone = sum(p.numel() for p in resnet50_analyzer.backbone.parameters())
    assert backbone == 25_557_032 - (2048 * 1000 + 1000)
    heads = sum(p.numel() for p in resnet50_analyzer.final_layers.parameters())
    assert heads == 2048 * 257 + 257


def test_bfm_layout_slices_are_the_257_vector_of_the_base_model():
    layout = CoefficientLayout()
    assert layout.total == 257
    s = layout.slices()
    assert [(s[k].start, s[k].stop) for k in Coefficients._fields] == [
        (0, 80),
        (80, 144),
        (144, 224),
        (224, 227),
        (227, 254),
        (254, 257),
    ]
    vec = torch.arange(2 * 257, dtype=torch.float64).reshape(2, 257)
    c = layout.split(vec)
    assert c.trans[1].tolist() == [257 + 254.0, 257 + 255.0, 257 + 256.0]
    assert c.gamma.shape == (2, 27) and c.angle[0, 0] == 224
    assert torch.equal(layout.join(c), vec)
    with pytest.raises(ValueError, match=r"\(B, 257\)"):
        layout.split(vec[:, :200])


def test_layout_from_a_model_sets_the_head_sizes():
    class Synth:
        n_id, n_exp, n_tex = 40, 20, 30

    layout = CoefficientLayout.from_model(Synth())
    assert layout.total == 40 + 20 + 30 + 3 + 27 + 3
    model = FaceAnalyzer(layout, layers=(1, 1, 1, 1), width=4)
    assert [m.out_channels for m in model.final_layers] == [40, 20, 30, 3, 27, 2, 1]
    with pytest.raises(ValueError, match="n_id"):
        CoefficientLayout(0, 1, 1)


def test_forward_shape_and_zero_initial_heads():
    model = FaceAnalyzer(layers=(1, 1, 1, 1), width=4).eval()
    images = torch.rand(3, 3, 64, 64)
    out = model(images)
    assert out.shape == (3, 257)
    assert torch.count_nonzero(out) == 0  # heads start at zero: the mean face
    coeffs = model.predict(images)
    assert isinstance(coeffs, Coefficients)
    assert [t.shape[1] for t in coeffs] == [80, 64, 80, 3, 27, 3]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got \(2, 1, 64, 64\)"):
        model(torch.rand(2, 1, 64, 64))  # grey images


def test_coefficients_detach_join_and_refuse():
    layout = CoefficientLayout(4, 3, 2)
    vec = torch.randn(5, layout.total, requires_grad=True)
    coeffs = layout.split(vec * 2.0)
    assert coeffs.batch_size == 5
    detached = coeffs.detach()
    assert isinstance(detached, Coefficients)
    assert all(t.requires_grad for t in coeffs) and not any(t.requires_grad for t in detached)
    torch.testing.assert_close(layout.join(detached), (vec * 2.0).detach())
    bad = detached._replace(exp=torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"coefficients.exp must be \(B, 3\), got \(5, 4\)"):
        layout.join(bad)
    for value in (2.5, "80", None):
        with pytest.raises(ValueError, match="n_exp must be a positive int"):
            CoefficientLayout(4, value, 2)


def test_load_face_analyzer_refuses_a_source_of_another_kind():
    with pytest.raises(TypeError, match="a path or a dict, got <class 'int'>"):
        load_face_analyzer(tiny_analyzer(), 42)


def test_checkpoint_round_trip_through_a_file(tmp_path):
    source = tiny_analyzer(seed=1).eval()
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": source.state_dict(), "opt_00": {"state": {}}, "epoch": 20}, path)
    target = tiny_analyzer(seed=2).eval()
    images = torch.rand(2, 3, 64, 64)
    assert not torch.allclose(source(images), target(images))
    report = load_face_analyzer(target, path)
    assert report.ok and report.loaded == len(source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    assert torch.equal(source(images), target(images))


def test_loading_a_bare_state_dict_with_a_wrapper_prefix():
    source = tiny_analyzer(seed=3)
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    target = tiny_analyzer(seed=4)
    assert load_face_analyzer(target, wrapped).ok
    assert torch.equal(target.final_layers[0].weight, source.final_layers[0].weight)


def test_loader_reports_missing_unexpected_and_mismatched_keys():
    source = tiny_analyzer(seed=5).state_dict()
    state = dict(source)
    state["backbone.fc.weight"] = torch.zeros(10, 128)
    del state["backbone.layer1.0.conv1.weight"]
    # an analyzer for a model with other group sizes: the identity head does not fit
    target = tiny_analyzer(CoefficientLayout(40, 64, 80), seed=6)
    with pytest.raises(CheckpointError) as err:
        load_face_analyzer(target, {"net_recon": state})
    msg = str(err.value)
    assert "backbone.fc.weight" in msg and "unexpected" in msg
    assert "backbone.layer1.0.conv1.weight" in msg and "missing" in msg
    assert "final_layers.0.weight expected (40, 128, 1, 1) found (80, 128, 1, 1)" in msg
    before = target.final_layers[0].weight.clone()
    report = load_face_analyzer(target, {"net_recon": state}, strict=False)
    assert report.unexpected == ["backbone.fc.weight"]
    assert report.missing == ["backbone.layer1.0.conv1.weight"]
    assert {k for k, _, _ in report.mismatched} == {"final_layers.0.weight", "final_layers.0.bias"}
    assert torch.equal(target.final_layers[0].weight, before)  # mismatched left alone
    assert torch.equal(target.final_layers[1].weight, source["final_layers.1.weight"])


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    model = tiny_analyzer()
    with pytest.raises(InputFileError, match="broken.pth: not a readable PyTorch checkpoint"):
        load_face_analyzer(model, bad)
    with pytest.raises(InputFileError, match="not found"):
        load_face_analyzer(model, tmp_path / "absent.pth")


def test_a_flipped_byte_in_a_checkpoint_is_found(tmp_path):
    """torch.load does not check the zip archive's CRC-32s: a checkpoint damaged on disk or in a
    copy loaded with wrong weights. read_checkpoint checks them and names the file."""
    import pickle
    import warnings

    from models.checkpoints import read_checkpoint

    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(50000.0)}, good)
    data = good.read_bytes()
    for frac in (0.3, 0.5, 0.8):
        bad = tmp_path / f"flip{frac}.pt"
        i = int(len(data) * frac)
        bad.write_bytes(data[:i] + bytes(b ^ 0xFF for b in data[i : i + 16]) + data[i + 16 :])
        with pytest.raises(InputFileError, match=rf"flip{frac}\.pt: .*fails its checksum"):
            read_checkpoint(bad)
    assert torch.equal(read_checkpoint(good)["w"], torch.arange(50000.0))
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"w": 1}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reason is in the error, not a warning before it
        with pytest.raises(InputFileError, match="plain.pt: not a readable PyTorch checkpoint"):
            read_checkpoint(plain)

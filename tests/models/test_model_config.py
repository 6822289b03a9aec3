"""Typed model config: the paper's defaults, YAML/JSON round trips, clear errors, field docs."""

from __future__ import annotations

import ast
import inspect
import json
from dataclasses import fields, is_dataclass

import pytest
import torch

import models.config as mc
from facehd.errors import InputFileError
from models.config import (
    ConfigError,
    HRNLossWeights,
    ModelConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    paper_model_config,
    save_config,
    tiny_cpu_model_config,
)
from models.hrn import HRN


def test_defaults_are_the_papers():
    w = HRNLossWeights()
    assert (w.photometric, w.perceptual, w.landmark, w.tv) == (1.9, 0.2, 1.6e-4, 5e3)
    assert (w.displacement_l1, w.contour, w.adversarial, w.supervised) == (10.0, 20.0, 0.2, 1.0)
    cfg = paper_model_config()
    b = cfg.base_losses
    assert (b.photometric, b.perceptual, b.coefficient, b.gamma) == (1.92, 0.2, 3e-4, 10.0)
    assert (b.id, b.exp, b.tex, b.landmark, b.reflectance) == (1.0, 0.8, 1.7e-2, 1.6e-3, 5.0)
    assert b.landmark_emphasis == 20.0
    assert (cfg.contour.delta, cfg.contour.margin, cfg.contour.image_size) == (100.0, 0.01, 224)
    assert cfg.contour.delta_at(448) == 200.0
    n = cfg.network
    assert (n.mid.n_blocks, n.mid.filters, n.high.n_blocks, n.high.filters) == (9, 64, 9, 64)
    assert (n.mid_size, n.high_size, n.alpha_init, n.beta_init) == (64, 256, 0.01, 0.01)
    assert n.analyzer.layers == (3, 4, 6, 3) and n.map_unit_mm == 100.0


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_through_a_file(tmp_path, suffix):
    cfg = tiny_cpu_model_config()
    cfg.hrn_losses.contour = 7.5
    cfg.network.deretouch.input_size = None
    path = save_config(tmp_path / f"model{suffix}", cfg)
    assert load_config(path, ModelConfig) == cfg
    assert load_config(path, ModelConfig).network.analyzer.layers == (1, 1, 1, 1)  # tuple back


def test_partial_config_keeps_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("hrn_losses:\n  contour: 3\nnetwork:\n  mid:\n    filters: 16\n")
    cfg = load_config(path, ModelConfig)
    assert cfg.hrn_losses.contour == 3.0 and isinstance(cfg.hrn_losses.contour, float)
    assert cfg.network.mid.filters == 16 and cfg.network.mid.n_blocks == 9
    assert cfg.hrn_losses.tv == 5e3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hrn_losses:\n  contuor: 3\n", "unknown key 'contuor' in section 'hrn_losses'"),
        ("learning_rate: 0.1\n", "unknown key 'learning_rate'; known keys: network"),
        ("network:\n  mid:\n    fliters: 3\n", "section 'network.mid'"),
        ("network:\n  mid_size: 64.5\n", "network.mid_size: expected an integer"),
        ("hrn_losses:\n  tv: big\n", "hrn_losses.tv: expected a number"),
        ("network:\n  analyzer:\n    layers: [1, 2]\n", "expected 4 items"),
        ("network:\n  discriminator:\n    gan_mode: wgan\n", "not one of ['lsgan', 'vanilla']"),
        ("network:\n  realign_texture: 1\n", "expected true/false"),
        ("network: 3\n", "expected a mapping"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputFileError) as err:
        load_config(path, ModelConfig)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_config(tmp_path / "none.yaml", ModelConfig)
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="cannot parse config"):
        load_config(bad, ModelConfig)
    other = tmp_path / "x.toml"
    other.write_text("a = 1")
    with pytest.raises(InputFileError, match="unknown config format"):
        load_config(other, ModelConfig)


def test_config_from_dict_and_to_dict():
    data = config_to_dict(paper_model_config())
    json.dumps(data)  # plain data only
    assert data["network"]["analyzer"]["layers"] == [3, 4, 6, 3]
    assert config_from_dict(ModelConfig, data) == paper_model_config()
    with pytest.raises(ConfigError, match="src.yaml: unknown key 'x'"):
        config_from_dict(ModelConfig, {"x": 1}, source="src.yaml")


def _all_config_classes():
    return [
        obj
        for _, obj in inspect.getmembers(mc, inspect.isclass)
        if is_dataclass(obj) and obj.__module__ == mc.__name__
    ]


def test_every_field_has_a_docstring():
    tree = ast.parse(inspect.getsource(mc))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    checked = 0
    for cls in _all_config_classes():
        body = classes[cls.__name__].body
        documented = set()
        for a, b in zip(body, body[1:], strict=False):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr):
                if isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                    documented.add(a.target.id)
        missing = {f.name for f in fields(cls)} - documented
        assert not missing, f"{cls.__name__}: fields without a docstring: {missing}"
        checked += len(fields(cls))
    assert checked >= 40


def test_tiny_config_builds_a_working_model():
    cfg = tiny_cpu_model_config().network
    model = HRN(cfg).eval()
    s = cfg.high_size
    out = model(torch.rand(1, 3, s, s), torch.rand(1, 3, s, s), torch.ones(1, 1, s, s))
    assert out.deformation.shape == (1, 3, cfg.mid_size, cfg.mid_size)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 1_000_000  # laptop-CPU size (the paper-size model has ~60 M)

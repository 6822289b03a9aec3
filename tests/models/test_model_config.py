"""Typed model config: the paper's defaults, YAML/JSON round trips, clear errors, field docs."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import torch
from hrn_testdata import tiny_config

import models.config as mc
from facehd.errors import InputFileError
from models.config import (
    ConfigError,
    HRNLossWeights,
    ModelConfig,
    check_config,
    config_from_dict,
    config_to_dict,
    load_config,
    paper_model_config,
    save_config,
    tiny_cpu_model_config,
)
from models.hrn import HRN
from models.train import PRESETS, TrainConfig, load_train_config, tiny_cpu_train_config


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


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    # written as learning rates usually are: YAML 1.1 (PyYAML) would read 1e-4 and 5e3 as strings
    path = tmp_path / "c.yaml"
    path.write_text("base:\n  lr: 1e-4\nhrn:\n  lr: 2.5E-4\nmodel:\n  hrn_losses:\n    tv: 5e3\n")
    cfg = load_train_config(path)
    assert (cfg.base.lr, cfg.hrn.lr, cfg.model.hrn_losses.tv) == (1e-4, 2.5e-4, 5000.0)
    # a number quoted is still a string where a number is expected
    path.write_text('base:\n  lr: "1e-4"\n')
    with pytest.raises(InputFileError, match=r"base\.lr: expected a number, got '1e-4'"):
        load_train_config(path)
    # and a string of that form is written quoted, so it reads back as the string it was
    cfg = tiny_cpu_train_config()
    cfg.identity_network = "1e5"
    assert load_config(save_config(tmp_path / "s.yaml", cfg), TrainConfig) == cfg


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
    # a YAML syntax error: one line, saying where in the file (PyYAML's own text spans lines)
    bad = tmp_path / "x.yaml"
    bad.write_text("base:\n  lr: 1\n  betas: [0.5, 0.9\n")
    with pytest.raises(InputFileError) as err:
        load_config(bad, ModelConfig)
    said = str(err.value)
    assert said.startswith(f"{bad}: cannot parse config (") and "\n" not in said
    assert "at line 4, column 1" in said and "unicode string" not in said
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


# --------------------------------------------------------------------------------------------
# value ranges: refused when the file is loaded, naming the file, the dotted key and the range
# --------------------------------------------------------------------------------------------
_OUT_OF_RANGE = [  # (YAML, dotted key the error names, the allowed range it states)
    ("model: {hrn_losses: {tv: .nan}}", "model.hrn_losses.tv", "finite and >= 0"),
    ("model: {hrn_losses: {adversarial: -0.2}}", "model.hrn_losses.adversarial", ">= 0"),
    (
        "model: {base_losses: {landmark_emphasis: -1}}",
        "model.base_losses.landmark_emphasis",
        ">= 0",
    ),
    ("model: {base_losses: {gamma: .inf}}", "model.base_losses.gamma", "finite and >= 0"),
    ("model: {contour: {delta: -1}}", "model.contour.delta", "in [0, 224)"),
    ("model: {contour: {delta: 224}}", "model.contour.delta", "in [0, 224)"),
    ("model: {contour: {margin: -0.01}}", "model.contour.margin", "in [0, 1)"),
    ("model: {contour: {image_size: 0}}", "model.contour.image_size", ">= 1"),
    (
        "model: {network: {analyzer: {layers: [1, 0, 1, 1]}}}",
        "model.network.analyzer.layers",
        "every item >= 1",
    ),
    ("model: {network: {analyzer: {width: 0}}}", "model.network.analyzer.width", ">= 1"),
    ("model: {network: {mid: {n_blocks: -1}}}", "model.network.mid.n_blocks", ">= 0"),
    ("model: {network: {high: {filters: 0}}}", "model.network.high.filters", ">= 1"),
    ("model: {network: {mid: {dropout: 1.0}}}", "model.network.mid.dropout", "in [0, 1)"),
    (
        "model: {network: {discriminator: {filters: 0}}}",
        "model.network.discriminator.filters",
        ">= 1",
    ),
    (
        "model: {network: {discriminator: {n_layers: 0}}}",
        "model.network.discriminator.n_layers",
        ">= 1",
    ),
    ("model: {network: {deretouch: {width: 0}}}", "model.network.deretouch.width", ">= 1"),
    (
        "model: {network: {deretouch: {input_size: 8}}}",
        "model.network.deretouch.input_size",
        "in [16, 4096]",
    ),
    ("model: {network: {deretouch: {eps: 0}}}", "model.network.deretouch.eps", "> 0"),
    ("model: {network: {mid_size: 0}}", "model.network.mid_size", "a multiple of 4 in [8, 256]"),
    ("model: {network: {mid_size: 30}}", "model.network.mid_size", "a multiple of 4 in [8, 256]"),
    ("model: {network: {mid_size: 512}}", "model.network.mid_size", "at most high_size"),
    ("model: {network: {mid_size: 16}}", "model.network.mid_size", ">= 24 (3 * 2**discriminator"),
    (
        "model: {network: {high_size: 254}}",
        "model.network.high_size",
        "a multiple of 4 in [8, 2048]",
    ),
    (
        "model: {network: {high_size: 8, mid_size: 8, deretouch: {input_size: null}}}",
        "model.network.high_size",
        "a multiple of 4 in [16, 2048]",
    ),
    ("model: {network: {alpha_init: -0.01}}", "model.network.alpha_init", ">= 0"),
    ("model: {network: {beta_init: .nan}}", "model.network.beta_init", "finite and >= 0"),
    ("model: {network: {map_unit_mm: 0}}", "model.network.map_unit_mm", "> 0"),
    ("morphable: {name: flame}", "morphable.name", "one of facehd-synth, bfm"),
    ("image_size: 8", "image_size", "in [16, 2048]"),
    ("image_size: 1000000", "image_size", "in [16, 2048]"),
    ("model: {network: {high_size: 4096}}", "model.network.high_size", "in [8, 2048]"),
    (
        "model: {network: {deretouch: {input_size: 8192}}}",
        "model.network.deretouch.input_size",
        "in [16, 4096]",
    ),
    ("template: foo", "template", "unknown 5-point template 'foo'"),
    ("template: bfm", "template", "5-point template"),
    ("seed: -1", "seed", "in [0, 4294967296)"),
    ("seed: 4294967296", "seed", "in [0, 4294967296)"),
    ("checkpoint_every: 0", "checkpoint_every", ">= 1"),
    ("log_every: 0", "log_every", ">= 1"),
    ("device: tpu", "device", "auto, cpu, cuda or cuda:N"),
    ("device: 'cuda:x'", "device", "auto, cpu, cuda or cuda:N"),
    ("backend: opengl", "backend", "one of auto, cpu, nvdiffrast"),
    ("threads: -3", "threads", ">= 0"),
    ("base: {steps: -1}", "base.steps", ">= 0"),
    ("base: {batch_size: 0}", "base.batch_size", ">= 1"),
    ("base: {lr: 0}", "base.lr", "> 0"),
    ("hrn: {lr: .inf}", "hrn.lr", "finite and > 0"),
    ("deretouch: {warmup_steps: -1}", "deretouch.warmup_steps", ">= 0"),
    ("hrn: {min_lr_ratio: 2.0}", "hrn.min_lr_ratio", "in [0, 1]"),
    ("base: {decay_every: -1}", "base.decay_every", ">= 0"),
    (
        "base: {schedule: step, decay_every: 1, decay_factor: -3}",
        "base.decay_factor",
        "in (0, 1]",
    ),
    ("deretouch: {decay_factor: 1.5}", "deretouch.decay_factor", "in (0, 1]"),
    ("hrn: {betas: [0.9, 1.0]}", "hrn.betas", "every item in [0, 1)"),
    ("hrn_options: {discriminator_lr: -1}", "hrn_options.discriminator_lr", "> 0"),
    ("hrn_options: {discriminator_lr: 0}", "hrn_options.discriminator_lr", "> 0"),
    ("hrn_options: {scale_lr: -1}", "hrn_options.scale_lr", ">= 0"),
    ("hrn_options: {scale_warmup: 1.5}", "hrn_options.scale_warmup", "in [0, 1]"),
]


@pytest.mark.parametrize(("text", "key", "allowed"), _OUT_OF_RANGE)
def test_values_out_of_range_are_named_errors(tmp_path, text, key, allowed):
    path = tmp_path / "run.yaml"
    path.write_text(text + "\n")
    with pytest.raises(InputFileError) as err:
        load_train_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key} must be "), message
    assert allowed in message, message


@pytest.mark.parametrize(
    "text",
    [
        "hrn_options: {priors: false}\nmodel: {network: {mid_size: 16}}",  # no discriminators
        "model: {network: {mid_size: 24, high_size: 100}}",  # multiples of 4, not powers of 2
        "model: {network: {alpha_init: 0, beta_init: 0, deretouch: {input_size: null}}}",
        "model: {contour: {delta: 0, margin: 0}}",
        "base: {steps: 0, warmup_steps: 0, min_lr_ratio: 1, decay_factor: 1, decay_every: 0}",
        "hrn_options: {scale_lr: 0, scale_warmup: 1}\nthreads: 0\nseed: 4294967295",
        "template: FaceHD-Synth\ndevice: 'cuda:1'",
        "template: deep3d\ndevice: cuda\nbackend: nvdiffrast",
        "template: anthropometric\ndevice: auto\nmorphable: {name: bfm}",
        "template: null\ndevice: cpu",
        "{}",  # every default, said explicitly
    ],
)
def test_values_at_the_edges_of_their_ranges_load(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text + "\n")
    check_config(load_train_config(path))


@pytest.mark.parametrize(
    ("name", "text"), [("a.yaml", ""), ("b.yaml", "# nothing\n"), ("c.json", "null")]
)
def test_an_empty_config_file_is_an_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputFileError) as err:
        load_train_config(path)
    assert str(err.value).startswith(f"{path}: empty config file")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shipped_presets_are_in_range_and_load_back(tmp_path, preset):
    cfg = load_train_config(preset)
    check_config(cfg)
    assert load_config(save_config(tmp_path / "config.yaml", cfg), TrainConfig) == cfg


def test_the_tests_tiny_trainer_config_is_in_range():
    check_config(tiny_config())


def test_check_config_catches_a_config_changed_in_code():
    cfg = tiny_cpu_train_config()
    cfg.hrn.lr = -1.0
    with pytest.raises(ConfigError, match=r"^hrn\.lr must be > 0, got -1\.0$"):
        check_config(cfg)


def _leaf_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name])
        else:
            yield cls, f.name, hints[f.name]


def test_every_numeric_and_enumerated_field_has_a_range():
    free_text = {"bfm_path", "uv_path", "identity_network"}  # paths, checked when opened
    unchecked = [
        f"{cls.__name__}.{name}"
        for cls, name, tp in _leaf_fields(TrainConfig)
        if tp is not bool
        and typing.get_origin(tp) is not typing.Literal  # checked by its type
        and name not in free_text
        and name not in mc._RULES.get(cls.__name__, {})
    ]
    assert not unchecked, f"fields without a range check: {unchecked}"


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        (
            "twice.yaml",
            "seed: 1\nhrn:\n  steps: 12\n  steps: 13\n",
            "line 4: key 'steps' is given twice (first on line 3)",
        ),
        ("twice.yaml", "seed: 1\nseed: 1\n", "line 2: key 'seed' is given twice (first on line 1)"),
        ("twice.json", '{"hrn": {"lr": 0.1}, "hrn": {"steps": 2}}', "key 'hrn' is given twice"),
    ],
)
def test_a_key_given_twice_is_an_error(tmp_path, name, text, said):
    """YAML and JSON loaders keep the last of two equal keys silently: a config that sets a
    value twice (a copy-paste slip) is refused, naming the line."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputFileError) as err:
        load_train_config(path)
    assert str(path) in str(err.value) and said in str(err.value)


def test_overrides_set_dotted_keys_and_refuse_what_the_config_lacks():
    """``--set KEY=VALUE``: each dotted key of the resolved YAML takes its value (checked as a
    config file's is), every other setting stays, the original is not touched; a key the config
    lacks, a section, a wrong type, a value out of range and a malformed item are named."""
    from models.config import apply_overrides

    cfg = tiny_cpu_train_config()
    before = config_to_dict(cfg)
    new = apply_overrides(
        cfg,
        [
            "model.hrn_losses.adversarial=0.5",
            "hrn.steps=5",
            "model.network.analyzer.layers=[2, 1, 1, 1]",
            "identity_network=null",
            "hrn.lr = 2e-4",
        ],
    )
    assert config_to_dict(cfg) == before  # a new config
    want = config_to_dict(cfg)
    want["model"]["hrn_losses"]["adversarial"] = 0.5
    want["hrn"]["steps"] = 5
    want["hrn"]["lr"] = 2e-4
    want["model"]["network"]["analyzer"]["layers"] = [2, 1, 1, 1]
    assert config_to_dict(new) == want
    assert new.model.network.analyzer.layers == (2, 1, 1, 1)  # a tuple, as typed
    assert isinstance(new.model.hrn_losses.adversarial, float)
    assert isinstance(
        apply_overrides(cfg, ["model.hrn_losses.adversarial=1"]).model.hrn_losses.adversarial, float
    )
    with pytest.raises(ConfigError, match=r"'adversarail'.*keys: .*adversarial"):
        apply_overrides(cfg, ["model.hrn_losses.adversarail=0"])
    with pytest.raises(ConfigError, match=r"no key 'x' in hrn\.steps"):
        apply_overrides(cfg, ["hrn.steps.x=1"])
    with pytest.raises(ConfigError, match="a section"):
        apply_overrides(cfg, ["model.hrn_losses=0"])
    with pytest.raises(ConfigError, match=r"hrn\.steps: expected an integer"):
        apply_overrides(cfg, ["hrn.steps=many"])
    with pytest.raises(ConfigError, match="adversarial"):
        apply_overrides(cfg, ["model.hrn_losses.adversarial=-1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(cfg, ["hrn.steps"])
    with pytest.raises(ConfigError, match="cannot read the value"):
        apply_overrides(cfg, ["hrn.steps=[1"])


def test_a_config_path_that_is_no_file_says_what_it_is(tmp_path) -> None:
    from facehd.errors import InputFileError
    from models.config import load_config
    from models.train import TrainConfig

    with pytest.raises(InputFileError, match="is a folder: give the config file"):
        load_config(tmp_path, TrainConfig)
    with pytest.raises(InputFileError, match="config file not found"):
        load_config(tmp_path / "missing.yaml", TrainConfig)
    with pytest.raises(InputFileError, match="not a regular file"):
        load_config("/dev/null", TrainConfig)


@dataclasses.dataclass
class _Toy:
    """A config of every field type the reader converts (not a facehd config: no ranges)."""

    count: int
    size: int | None = 3
    rate: float = 0.5
    flag: bool = False
    name: str = "a"
    where: Path = Path("x")
    sizes: tuple[int, ...] = (1,)
    either: int | str = 0

    def __post_init__(self) -> None:
        if self.rate > 1.0:
            raise ValueError("rate must be at most 1")


def test_the_reader_converts_and_refuses_each_field_type():
    from models.config import ConfigError, _from_mapping

    toy = _from_mapping(
        _Toy, {"count": 2, "size": None, "rate": 1, "where": "a/b", "sizes": [4]}, ""
    )
    assert toy == _Toy(2, None, 1.0, False, "a", Path("a/b"), (4,))
    assert isinstance(toy.rate, float) and isinstance(toy.where, Path)
    for data, message in (
        ({"count": True}, "count: expected an integer, got True"),
        ({"count": 1, "rate": False}, "rate: expected a number, got False"),
        ({"count": 1, "size": True}, "size: True is not a valid int | None"),
        ({"count": 1, "either": None}, "either: None is not a valid int | str"),
        ({"count": 1, "name": 5}, "name: expected a string, got 5"),
        ({"count": 1, "where": 5}, "where: expected a path string, got 5"),
        ({"count": 1, "sizes": 4}, "sizes: expected a list, got int"),
        ({"count": 1, "nmae": "b", "szie": 2}, "unknown keys 'nmae', 'szie'; known keys: count"),
        ({"size": 2}, "missing required key 'count'"),
        ({"count": 1, "rate": 2.0}, "_Toy: rate must be at most 1"),
    ):
        with pytest.raises(ConfigError) as err:
            _from_mapping(_Toy, data, "")
        assert message in str(err.value), (data, str(err.value))


def test_a_config_name_that_is_neither_preset_nor_file_lists_the_presets(tmp_path):
    with pytest.raises(
        InputFileError, match=r"tiny-gpu: no such config file or preset \(presets: "
    ):
        load_train_config(tmp_path / "tiny-gpu")
    with pytest.raises(InputFileError, match="not found"):
        load_train_config(tmp_path / "tiny.yaml")  # a file name: said missing as a file


def test_devices_that_cannot_run_are_refused_by_name(monkeypatch):
    from models.config import ConfigError
    from models.train import _resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _resolve_device("auto", 0) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"device: 'cuda:1', but this PyTorch sees no CUDA"):
        _resolve_device("cuda:1", 0)
    with pytest.raises(ConfigError, match="device: "):
        _resolve_device("gpu0", 0)


def test_a_stage_record_naming_an_unknown_stage_is_refused(tmp_path):
    from models.train import STAGES_RECORD, recorded_stages

    record = tmp_path / STAGES_RECORD
    for text in ('{"stages": ["hrn", "detail"]}', '{"stages": []}'):
        record.write_text(text)
        with pytest.raises(InputFileError, match="stages must be among"):
            recorded_stages(tmp_path)
    record.write_text('{"stages": ["deretouch", "hrn"]}')
    assert recorded_stages(tmp_path) == ["deretouch", "hrn"]

"""Typed configuration of HRN's networks and losses, with the paper's defaults.

Every setting is a field of a dataclass with a docstring under it. Configs are read from YAML or
JSON with :func:`load_config`, which rejects unknown keys, wrong types, values out of range and
empty files with an error naming the file and the dotted key (and the allowed range), and written
back with :func:`save_config` (the resolved config is saved next to every checkpoint).

Ranges are table-driven (``_RULES``, by dataclass name, so that the training config's classes in
:mod:`models.train` are covered too); :func:`check_config` applies them to a config built in code.

Defaults are the paper's (``paper``): loss weights of supplementary Eq. 1-2 (``HRNLossWeights``),
Deep3DFaceRecon's base-model weights (``BaseLossWeights``), the contour loss of paper Eq. 1-2, and
the official network sizes. :func:`tiny_cpu_model_config` shrinks the networks for CPU training.
"""

from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from facehd.errors import FacehdError, InputFileError

__all__ = [
    "AnalyzerConfig",
    "BaseLossWeights",
    "ConfigError",
    "ContourLossConfig",
    "DeRetouchConfig",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "HRNLossWeights",
    "ModelConfig",
    "NetworkConfig",
    "apply_overrides",
    "check_config",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "paper_model_config",
    "save_config",
    "tiny_cpu_model_config",
]

T = TypeVar("T")


class ConfigError(FacehdError):
    """A configuration has an unknown key, a missing required key, a value of the wrong type or a
    value out of its allowed range."""


# --------------------------------------------------------------------------------------------
# loss weights
# --------------------------------------------------------------------------------------------
@dataclass
class HRNLossWeights:
    """Weights of HRN's objective (supplementary Eq. 1-2)."""

    photometric: float = 1.9
    """lambda_1: photometric loss on R1 and on R2 (each)."""
    perceptual: float = 0.2
    """lambda_2: identity-network perceptual loss on R1 and on R2 (each)."""
    landmark: float = 1.6e-4
    """lambda_3: landmark loss (between the input and R2)."""
    tv: float = 5e3
    """lambda_4: total variation of the deformation map."""
    displacement_l1: float = 10.0
    """lambda_5: L1 regulariser of the displacement map."""
    contour: float = 20.0
    """lambda_6: contour-aware loss on M1."""
    adversarial: float = 0.2
    """lambda_7: adversarial losses on the deformation and displacement maps (each)."""
    supervised: float = 1.0
    """lambda_8: L1 to the ground-truth maps, supervised batches only (each map)."""


@dataclass
class BaseLossWeights:
    """Weights of the base model's objective (Deep3DFaceRecon's defaults)."""

    photometric: float = 1.92
    """Photometric loss on the skin mask."""
    perceptual: float = 0.2
    """Identity-network perceptual loss (off when no identity network is given)."""
    landmark: float = 1.6e-3
    """Weighted landmark loss (pixels^2 at 224)."""
    landmark_emphasis: float = 20.0
    """Per-landmark weight of the nose (28-30) and inner-mouth (60-67) points; others have 1."""
    coefficient: float = 3e-4
    """Coefficient regulariser (the group weights below are applied inside it)."""
    id: float = 1.0
    """Weight of the identity coefficients inside the coefficient regulariser."""
    exp: float = 0.8
    """Weight of the expression coefficients inside the coefficient regulariser."""
    tex: float = 1.7e-2
    """Weight of the albedo coefficients inside the coefficient regulariser."""
    gamma: float = 10.0
    """Lighting regulariser (SH bands close to monochromatic)."""
    reflectance: float = 5.0
    """Reflectance loss (uniform skin albedo)."""


@dataclass
class ContourLossConfig:
    """The contour-aware loss (paper Eq. 1-2)."""

    delta: float = 100.0
    """Only projected vertices below this row (pixels, at ``image_size``) count: the lower face."""
    margin: float = 0.01
    """Soft margin lambda of Eq. 2, in image widths."""
    image_size: int = 224
    """Image side at which ``delta`` is given; other sizes scale it proportionally."""

    def delta_at(self, size: int) -> float:
        """``delta`` in pixels for an image of side ``size``."""
        return self.delta * size / self.image_size


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------
@dataclass
class AnalyzerConfig:
    """The face analyzer (base model): a bottleneck ResNet regressor of coefficients."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    """Bottleneck blocks per stage; ``(3, 4, 6, 3)`` is ResNet-50 (Deep3DFaceRecon's net_recon)."""
    width: int = 64
    """Channels of the stem; 64 for ResNet-50 (output features = 32 x width)."""


@dataclass
class GeneratorConfig:
    """A pix2pix ResNet generator (mid_net or high_net)."""

    n_blocks: int = 9
    """Residual blocks at the bottleneck (9 in the paper)."""
    filters: int = 64
    """Channels after the stem (64 in the paper)."""
    dropout: float = 0.5
    """Dropout inside the residual blocks during training (0.5 in the official nets)."""


@dataclass
class DiscriminatorConfig:
    """The PatchGAN discriminators on the two maps."""

    filters: int = 64
    """Channels of the first layer (64 in pix2pix)."""
    n_layers: int = 3
    """Stride-2 layers (3: 70 x 70 patches)."""
    gan_mode: Literal["lsgan", "vanilla"] = "lsgan"
    """Adversarial objective: least squares (the official pix2pix option) or logistic."""


@dataclass
class DeRetouchConfig:
    """The de-retouching module (paper Sec. 3.4)."""

    width: int = 64
    """Channels of the U-Net's first level (64 for the official checkpoint)."""
    input_size: int | None = 512
    """Side the texture is resized to before the network (512 officially); null: no resize."""
    eps: float = 1e-6
    """Epsilon of paper Eq. 6."""


@dataclass
class NetworkConfig:
    """HRN's networks and map sizes."""

    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    """The face analyzer."""
    mid: GeneratorConfig = field(default_factory=GeneratorConfig)
    """The mid-frequency generator (position map + texture -> deformation map)."""
    high: GeneratorConfig = field(default_factory=GeneratorConfig)
    """The high-frequency generator (position, re-aligned texture, deformation -> displacement)."""
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """The discriminators on both maps."""
    deretouch: DeRetouchConfig = field(default_factory=DeRetouchConfig)
    """The de-retouching module."""
    mid_size: int = 64
    """Side of the deformation map (64 in the paper)."""
    high_size: int = 256
    """Side of the displacement map, the texture and the position map (256 in the paper)."""
    alpha_init: float = 0.01
    """Initial value of the learnt scale alpha of the deformation map."""
    beta_init: float = 0.01
    """Initial value of the learnt scale beta of the displacement map."""
    map_unit_mm: float = 100.0
    """Millimetres per unit of the networks' position input and map outputs (100: BFM units,
    as in the official checkpoint)."""
    realign_texture: bool = True
    """Re-align the texture through the deformation's reversal flow before the high net."""


@dataclass
class ModelConfig:
    """Everything that defines HRN's networks and objectives."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    """Network sizes."""
    hrn_losses: HRNLossWeights = field(default_factory=HRNLossWeights)
    """Weights of HRN's objective."""
    base_losses: BaseLossWeights = field(default_factory=BaseLossWeights)
    """Weights of the base model's objective."""
    contour: ContourLossConfig = field(default_factory=ContourLossConfig)
    """The contour-aware loss."""


def paper_model_config() -> ModelConfig:
    """The paper's sizes and weights (the defaults)."""
    return ModelConfig()


def tiny_cpu_model_config() -> ModelConfig:
    """Small networks for laptop-CPU training on facehd-synth (same losses and weights)."""
    return ModelConfig(
        network=NetworkConfig(
            analyzer=AnalyzerConfig(layers=(1, 1, 1, 1), width=8),
            mid=GeneratorConfig(n_blocks=2, filters=8, dropout=0.0),
            high=GeneratorConfig(n_blocks=2, filters=8, dropout=0.0),
            discriminator=DiscriminatorConfig(filters=8, n_layers=2),
            deretouch=DeRetouchConfig(width=8, input_size=None),
            mid_size=32,
            high_size=64,
        )
    )


# --------------------------------------------------------------------------------------------
# reading and writing
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check / convert a plain value against annotation ``tp``; raise ConfigError otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping (section), got {type(value).__name__}")
        return _from_mapping(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = [k for k in data if k not in known]
    if unknown:
        section = f" in section '{where}'" if where else ""
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f"{section}; known keys: {', '.join(known)}"
        )
    kwargs = {}
    for name, f in known.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"missing required key '{key}'")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# value ranges
# --------------------------------------------------------------------------------------------
Check = Callable[[Any, Any], str | None]
"""``check(value, section)``: None when ``value`` (a field of dataclass ``section``) is allowed,
else the allowed range in words (``"> 0"``)."""


def _range(
    lo: float,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    multiple: int = 1,
    note: str = "",
) -> Check:
    """Finite numbers in ``lo .. hi`` (open or closed ends), multiples of ``multiple``; every item
    of a tuple is checked and None passes (an optional field left off)."""
    if hi is not None:
        text = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    else:
        text = f"{'>' if lo_open else '>='} {lo}"
    if multiple > 1:
        text = f"a multiple of {multiple} {text if hi is not None else 'and ' + text}"
    text += note

    def check(value: Any, _section: Any) -> str | None:
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            if v is None:
                continue
            if not math.isfinite(v):
                return f"finite and {text}"
            if (
                (v <= lo if lo_open else v < lo)
                or (hi is not None and (v >= hi if hi_open else v > hi))
                or (multiple > 1 and v % multiple)
            ):
                return f"a list with every item {text}" if isinstance(value, tuple) else text
        return None

    return check


def _one_of(*choices: str) -> Check:
    return lambda v, _s: None if v in choices else f"one of {', '.join(choices)}"


def _device(value: str, _section: Any) -> str | None:
    ok = re.fullmatch(r"auto|cpu|cuda(:\d+)?", value)  # what models.train._resolve_device takes
    return None if ok else "auto, cpu, cuda or cuda:N (N a GPU index)"


def _morphable_name(value: str, _section: Any) -> str | None:
    from facehd.morphable.registry import KNOWN_MODELS

    known = value.strip().lower() in KNOWN_MODELS  # load_model's own normalisation
    return None if known else f"one of {', '.join(KNOWN_MODELS)}"


def _template(value: str | None, _section: Any) -> str | None:
    """null or a name :func:`facehd.align.named_template` takes (checked by calling it, except for
    a morphable model that loads without files, taken without building it)."""
    if value is None:
        return None
    from facehd.morphable.registry import available_models

    key = value.strip().lower()
    if any(m.available and m.name == key for m in available_models()):
        return None
    from facehd.align import named_template

    try:
        named_template(value)
    except ValueError as exc:
        return f"null or a 5-point template name ({exc})"
    return None


def _high_size(value: int, net: Any) -> str | None:
    if net.deretouch.input_size is None:  # the de-retouching U-Net then runs at high_size
        note = " (the de-retouching U-Net runs at high_size when deretouch.input_size is null)"
        return _range(16, 2048, multiple=4, note=note)(value, net)
    note = " (the pix2pix generators need a multiple of 4; a larger one, more memory)"
    return _range(8, 2048, multiple=4, note=note)(value, net)


def _mid_size(value: int, net: Any) -> str | None:
    return _range(8, net.high_size, multiple=4, note=" (at most high_size)")(value, net)


def _mid_size_for_discriminators(value: int, cfg: Any) -> str | None:
    if not cfg.hrn_options.priors:  # the discriminators judge the maps only with the priors
        return None
    n = cfg.model.network.discriminator.n_layers
    note = " (3 * 2**discriminator.n_layers: the discriminators' patches, with the priors on)"
    return _range(3 * 2**n, note=note)(value, cfg)


def _contour_delta(value: float, contour: Any) -> str | None:
    note = " (a row of the image_size crop; none below it would count)"
    return _range(0, contour.image_size, hi_open=True, note=note)(value, contour)


_MEMORY = " (a larger one needs more memory than a machine holds)"
_WEIGHT = _range(0)  # loss weights, counts, factors that may be 0 (off)
_POSITIVE = _range(0, lo_open=True)  # learning rates, units, epsilons
_SIZE = _range(1)  # channels, blocks per stage, periods
_FRACTION = _range(0, 1)  # ratios and fractions of a stage
_PROBABILITY = _range(0, 1, hi_open=True)  # dropout, Adam's betas

_RULES: dict[str, dict[str, Check]] = {
    "HRNLossWeights": dict.fromkeys((f.name for f in fields(HRNLossWeights)), _WEIGHT),
    "BaseLossWeights": dict.fromkeys((f.name for f in fields(BaseLossWeights)), _WEIGHT),
    "ContourLossConfig": {"image_size": _SIZE, "delta": _contour_delta, "margin": _PROBABILITY},
    "AnalyzerConfig": {"layers": _SIZE, "width": _SIZE},
    "GeneratorConfig": {"n_blocks": _WEIGHT, "filters": _SIZE, "dropout": _PROBABILITY},
    "DiscriminatorConfig": {"filters": _SIZE, "n_layers": _SIZE},
    "DeRetouchConfig": {
        "width": _SIZE,
        "input_size": _range(16, 4096, note=_MEMORY),
        "eps": _POSITIVE,
    },
    "NetworkConfig": {
        "high_size": _high_size,
        "mid_size": _mid_size,
        "alpha_init": _WEIGHT,
        "beta_init": _WEIGHT,
        "map_unit_mm": _POSITIVE,
    },
    # models.train's classes, by name (it imports this module, not the other way round)
    "MorphableConfig": {"name": _morphable_name},
    "StageConfig": {
        "steps": _WEIGHT,
        "batch_size": _SIZE,
        "lr": _POSITIVE,
        "warmup_steps": _WEIGHT,
        "min_lr_ratio": _FRACTION,
        "decay_every": _WEIGHT,
        "decay_factor": _range(0, 1, lo_open=True),
        "betas": _PROBABILITY,
    },
    "HRNOptions": {
        "discriminator_lr": _POSITIVE,
        "scale_lr": _WEIGHT,
        "scale_warmup": _FRACTION,
        "refine_steps": _WEIGHT,
        "refine_share": _FRACTION,
        "refine_lr": _POSITIVE,
    },
    "AugmentConfig": {
        "shift": _range(0, 112),
        "scale": _range(0, 1, hi_open=True),
        "rotation": _range(0, 180),
    },
    "TrainConfig": {
        "model.network.mid_size": _mid_size_for_discriminators,
        "image_size": _range(16, 2048, note=_MEMORY),
        "template": _template,
        "seed": _range(0, 2**32, hi_open=True),
        "checkpoint_every": _SIZE,
        "log_every": _SIZE,
        "device": _device,
        "backend": _one_of("auto", "cpu", "nvdiffrast"),
        "threads": _WEIGHT,
    },
}
"""Allowed values per dataclass name and (dotted) field: every numeric and enumerated field.
``Literal`` fields (``schedule``, ``gan_mode``) are checked by their type already."""


def check_config(config: Any, where: str = "") -> None:
    """Check every value of dataclass ``config`` (nested sections first) against its range.

    Raises :class:`ConfigError` ``"<dotted key> must be <range>, got <value>"`` for the first
    value out of range. :func:`config_from_dict` and :func:`load_config` call it; call it on a
    config built or changed in code.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            check_config(value, f"{where}{f.name}.")
    for key, check in _RULES.get(type(config).__name__, {}).items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        problem = check(value, config)
        if problem:
            raise ConfigError(f"{where}{key} must be {problem}, got {value!r}")


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "") -> T:
    """Build dataclass ``cls`` from nested plain data, checking every key, type and range.

    Missing keys take their defaults. Raises :class:`ConfigError` naming ``source`` and the dotted
    key for unknown keys, wrong types, missing required keys and values out of range
    (:func:`check_config`).
    """
    if not is_dataclass(cls):
        raise TypeError(f"config_from_dict: {cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'config'}: top level must be a mapping")
    try:
        config = _from_mapping(cls, data, "")
        check_config(config)
        return config
    except ConfigError as exc:
        if source:
            raise ConfigError(f"{source}: {exc}") from None
        raise


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """``config`` with settings changed on the command line: each ``"a.b.c=VALUE"`` sets the
    dotted key (as it reads in the resolved YAML) to ``VALUE``, read as a YAML scalar or list
    (``0``, ``2e-4``, ``true``, ``[1, 1, 1, 1]``, ``null``; ``a.b=`` is an empty string).

    Returns a new config, checked as a config file is (:func:`config_from_dict`).

    Raises
    ------
    ConfigError
        An override without ``=``, a key the config does not have (naming the keys it has
        there), a section given a plain value, an unreadable value, or a value of the wrong type
        or out of range; the message names the override.
    """
    from facehd.yamlio import safe_load_unique

    data = config_to_dict(config)
    for item in overrides:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. hrn.steps=200)")
        try:
            value = safe_load_unique(text) if text.strip() else ""
        except Exception as exc:
            raise ConfigError(f"--set {item!r}: cannot read the value ({exc})") from None
        node = data
        parts = key.split(".")
        for depth, name in enumerate(parts):
            where = ".".join(parts[:depth]) or "the top level"
            if not isinstance(node, dict) or name not in node:
                known = ", ".join(node) if isinstance(node, dict) else "none"
                raise ConfigError(f"--set {key}: no key {name!r} in {where} (keys: {known})")
            if depth == len(parts) - 1:
                if isinstance(node[name], dict):
                    raise ConfigError(
                        f"--set {key}: a section (keys: {', '.join(node[name])}); set one of its "
                        f"keys"
                    )
                node[name] = value
            else:
                node = node[name]
    try:
        return config_from_dict(type(config), data)
    except ConfigError as exc:
        raise ConfigError(f"--set {', '.join(overrides)}: {exc}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> nested plain dict (tuples become lists, paths strings) for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(asdict(config))


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused where it gives a key twice (json keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice; give it once")
        out[key] = value
    return out


def _parse_error(exc: Exception) -> str:
    """A YAML or JSON syntax error in one line, with where it is in the file (PyYAML's own
    text runs over several lines and names ``<unicode string>``, not the file)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) config file into ``cls``.

    Raises
    ------
    InputFileError
        Missing, unparsable or empty file, or content that does not fit ``cls`` (unknown key,
        wrong type, value out of range); the message names the file and the dotted key.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, "is a folder: give the config file (.yaml, .yml or .json)")
    if not path.exists():
        raise InputFileError(path, "config file not found")
    if not path.is_file():  # /dev/null, a pipe
        raise InputFileError(path, "not a regular file: give the config file")
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
        if suffix in (".yaml", ".yml"):
            from facehd.yamlio import safe_load_unique

            data = safe_load_unique(text)
        elif suffix == ".json":
            data = json.loads(text, object_pairs_hook=_unique_json_object)
        else:
            raise InputFileError(path, f"unknown config format '{suffix}' (use .yaml, .yml, .json)")
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(path, f"cannot parse config ({_parse_error(exc)})") from exc
    if data is None:  # an empty file (or only comments) would silently mean every default
        raise InputFileError(
            path,
            "empty config file: write the settings to change ('{}' takes every default), or name "
            "a preset (e.g. --config tiny-cpu or --config paper) instead of a file",
        )
    try:
        return config_from_dict(cls, data)
    except ConfigError as exc:
        raise InputFileError(path, str(exc)) from None


def save_config(path: str | Path, config: Any) -> Path:
    """Write ``config`` as YAML (or JSON for a ``.json`` path), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config_to_dict(config)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        from facehd.yamlio import safe_dump_text

        text = safe_dump_text(data, sort_keys=False)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path

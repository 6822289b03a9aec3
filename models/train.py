"""HRN's trainer: the base model, the de-retouching module and the detail networks.

``facehd train`` runs up to three stages into one run folder (paper Sec. 4.1):

1. ``base`` -- the face analyzer (Deep3DFaceRecon's losses, self-supervised on the photos):
   photometric on the face mask, landmark (weights 20 on the nose and inner mouth), coefficient,
   lighting and reflectance regularisers; the perceptual loss only with an identity network
   (``identity_network``: ArcFace's ``backbone.pth`` or an exported face-recognition network,
   :mod:`models.identity`), otherwise off and the log says so.
2. ``deretouch`` -- the de-retouching network on texture pairs (the photo with and without skin
   blemishes, unwrapped onto the base model's M0): ``T0 = (1 - 2B) T^2 + 2B T`` is pulled to the
   clean texture by a masked L1.
3. ``hrn`` -- the mid and high generators, alpha and beta, and the two discriminators, with the
   analyzer and de-retouching module frozen. One self-supervised iteration (in-the-wild photos,
   supplementary Eq. 1) and one supervised iteration (lab photos of the priors with their
   ground-truth maps, Eq. 2) alternate. Losses: photometric on R1 and R2, landmark, TV of the
   deformation, L1 of the displacement, contour (paper Eq. 1-2), adversarial on both maps, and
   L1 to the ground-truth maps (at ``model.hrn_losses.adversarial`` = 0 the discriminators are
   neither run nor trained). Maps enter the losses in the networks' units (``map_unit_mm``, 100
   mm), the unit the paper's weights were set in. The ground-truth deformation map is re-fitted
   to the predicted M0 (:meth:`models.system.FaceSystem.target_deformation`), as the paper fits
   its maps to the base model's own coarse mesh. With ``hrn_options.refine_steps`` M0 is each
   photo's face refined on its own objective instead of the analyzer's prediction
   (:mod:`models.refined_faces`; ``refine_share`` of the iterations).

A later stage starts from the networks of the earlier ones in the same run folder (or from
``--init``). Run folder::

    config.yaml                 the resolved TrainConfig
    train.log                   messages (perceptual off, TensorBoard missing, resumes ...)
    log_<stage>.csv             one row per logged step: step, kind, lr, total, every loss term
    checkpoints/<stage>.pt      latest checkpoint of the stage (atomic: temp file + os.replace)
    refined/<name>.pt           the refined base faces of the training photos (only with
                                hrn_options.refine_steps > 0; :mod:`models.refined_faces`)
    model.pt                    the networks after the last finished stage (for reconstruct)
    init.json                   the ``--init`` checkpoint (path, SHA-256) a resume starts from
    stages.json                 the stages the run was last given, which a resume continues
    tensorboard/<stage>/        event files (when the ``tensorboard`` package imports: a dependency)

Exact resume
------------
A checkpoint holds the networks, every optimiser, the learning-rate schedule position, the
random states (python, numpy, torch) and the data position of every sampler, one set of both
per process. ``--resume`` restores all of them and continues after the checkpoint's step: a run of
N steps and a run of k steps resumed for N - k give identical parameters (on the same device
and thread count). A run killed between checkpoints loses only the steps after the last one,
which are redone identically.

Scale
-----
``torchrun --nproc_per_node=G -m models.train ...`` (or ``torchrun -m facehd.cli train ...``)
trains with DistributedDataParallel: NCCL on GPUs (with gloo for the CPU tensors), gloo on CPUs.
Each process draws its own share of every batch order; rank 0 takes and checks the run folder,
writes logs and checkpoints and speaks for the run (progress lines, :func:`progress_lines`, and
errors). Mixed precision (bfloat16 autocast) is used on GPUs with native bfloat16 only.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from facehd.errors import FacehdError, InputFileError, nearest_existing
from models.augment import AugmentConfig, deep3d_augment
from models.checkpoints import (
    MORPHABLE_SIZES,
    check_parts,
    load_state_into,
    morphable_brief,
    morphable_record,
    read_checkpoint,
    save_checkpoint_atomic,
)
from models.config import (
    ConfigError,
    ModelConfig,
    apply_overrides,
    check_config,
    config_from_dict,
    config_to_dict,
    load_config,
    paper_model_config,
    save_config,
    tiny_cpu_model_config,
)

if TYPE_CHECKING:
    from facehd.morphable import MorphableModel
    from models.refine import RefineConfig
    from models.system import FaceSystem

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_FORMAT",
    "STAGES",
    "HRNOptions",
    "MorphableConfig",
    "StageConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "deterministic_kernels",
    "load_train_config",
    "model_file_data",
    "paper_train_config",
    "process_group_backend",
    "progress_lines",
    "tiny_cpu_train_config",
    "train",
    "training_refinement",
]

log = logging.getLogger("facehd.train")

CHECKPOINT_FORMAT = "facehd.train/1"
MODEL_FORMAT = "facehd.model/1"
STAGES: tuple[str, ...] = ("base", "deretouch", "hrn")
Stage = Literal["base", "deretouch", "hrn"]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass
class MorphableConfig:
    """The morphable model trained on."""

    name: str = "facehd-synth"
    """``facehd-synth`` (built in) or ``bfm``."""
    bfm_path: str | None = None
    """``BFM_model_front.mat`` (``bfm`` only)."""
    uv_path: str | None = None
    """The BFM's UV layout file (``bfm`` only)."""


@dataclass
class StageConfig:
    """Optimisation schedule of one stage (Adam)."""

    steps: int = 1000
    """Optimiser steps (iterations) of the stage."""
    batch_size: int = 4
    """Images per iteration and process."""
    lr: float = 1e-4
    """Initial learning rate."""
    schedule: Literal["constant", "cosine", "step"] = "constant"
    """Learning-rate schedule after the warm-up: constant, cosine to ``min_lr_ratio * lr``, or
    multiplied by ``decay_factor`` every ``decay_every`` steps."""
    warmup_steps: int = 0
    """Linear warm-up from 0 over this many steps."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine schedule, relative to ``lr``."""
    decay_every: int = 0
    """Period of the step schedule (0: never)."""
    decay_factor: float = 0.5
    """Factor of the step schedule."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas."""

    def lr_at(self, step: int) -> float:
        """Learning rate of (1-based) ``step``."""
        if self.warmup_steps > 0 and step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        t = step - self.warmup_steps
        if self.schedule == "cosine":
            span = max(self.steps - self.warmup_steps, 1)
            c = 0.5 * (1.0 + math.cos(math.pi * min(t / span, 1.0)))
            return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * c)
        if self.schedule == "step" and self.decay_every > 0:
            return self.lr * self.decay_factor ** (t // self.decay_every)
        return self.lr


@dataclass
class HRNOptions:
    """Parts of HRN's training that can be switched off (the paper's ablation, Table 3)."""

    contour: bool = True
    """The contour-aware loss (paper Eq. 1-2)."""
    priors: bool = True
    """3D detail priors: the supervised iterations (L1 to the ground-truth maps) and the
    adversarial losses (those at the weight ``model.hrn_losses.adversarial``; at 0 the
    discriminators are neither run nor trained). Off: every iteration is self-supervised."""
    deretouch: bool = True
    """Render with the de-retouched albedo A' (paper Eq. 5) instead of A0."""
    discriminator_lr: float = 1e-4
    """Learning rate of the discriminators (Adam, betas 0.5 / 0.999)."""
    scale_lr: float = 1.0
    """Learning-rate factor of the learnt scales alpha and beta (1: the generators' rate)."""
    scale_warmup: float = 0.0
    """Fraction of the detail stage's steps during which alpha and beta stay at their initial
    values (0: they learn from the first step, as in the paper). Adam moves
    a scalar by about the learning rate every step whatever its gradient's size, so the L1
    regulariser alone can drive beta to zero in a few dozen steps, and with it every gradient
    into the high-frequency generator (whose output is multiplied by beta); holding the scales
    lets the generators learn from the supervised maps first."""
    refine_steps: int = 0
    """Train on refined base faces: before the first step, the base model's coefficients of every
    training photo (the photos and the priors' lab photos) are refined on the photo's own
    self-supervised objective, ``refine_steps`` Adam iterations in each of the two phases, as
    ``facehd evaluate`` and ``facehd reconstruct --refine-steps`` refine them
    (:mod:`models.refine`), and M0 of every iteration is the refined face instead of the
    analyzer's. They are made once and kept in the run folder (``refined/``,
    :mod:`models.refined_faces`). 0: the analyzer's faces, as the paper trains."""
    refine_share: float = 1.0
    """With ``refine_steps``: the share of the iterations whose M0 is the refined face; the
    others take the analyzer's, so that one detail stage serves both (iterations go by pairs,
    one self-supervised and one supervised, spread evenly: 0.5 alternates the pairs)."""
    refine_lr: float = 1e-2
    """Adam's learning rate of that refinement (that of ``facehd evaluate --refine-steps``)."""
    refine_start: Literal["mean", "network"] = "mean"
    """Identity and expression the refinement starts from: the mean face or the analyzer's."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.yaml`` in the run folder).

    The defaults are the paper's networks, loss weights and schedule; the morphable model
    defaults to facehd-synth (the BFM needs its files: see :func:`paper_train_config`).
    """

    model: ModelConfig = field(default_factory=paper_model_config)
    """Networks and loss weights."""
    morphable: MorphableConfig = field(default_factory=MorphableConfig)
    """The morphable model."""
    image_size: int = 224
    """Side of the crops given to the analyzer and of the renders (224: the base model)."""
    template: str | None = None
    """5-point alignment template of the lab crops and of reconstruction; null: the one the
    photos dataset was prepared with."""
    base: StageConfig = field(
        default_factory=lambda: StageConfig(steps=190_000, batch_size=32, lr=1e-4)
    )
    """The base model (Deep3DFaceRecon: batch 32, lr 1e-4, 20 epochs of ~300K images)."""
    deretouch: StageConfig = field(
        default_factory=lambda: StageConfig(steps=100_000, batch_size=4, lr=1e-4)
    )
    """The de-retouching module (the paper gives no schedule; pix2pix-like defaults)."""
    hrn: StageConfig = field(
        default_factory=lambda: StageConfig(steps=800_000, batch_size=4, lr=1e-4)
    )
    """The detail networks (paper Sec. 4.1: Adam, batch 4, lr 1e-4, 800K iterations)."""
    hrn_options: HRNOptions = field(default_factory=HRNOptions)
    """Switches of the detail stage."""
    base_augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Random jitter of the base stage's photos (:mod:`models.augment`): off by default;
    :func:`paper_train_config` takes Deep3DFaceRecon's (shift 10 px, scale 10 %, 10 degrees,
    mirrored half of the time)."""
    seed: int = 0
    """Seed of the initialisation, the batch orders and every random draw."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (and the last step of each stage)."""
    log_every: int = 50
    """Log window: the last two steps of every window of this many steps are written (one
    self-supervised and one supervised row in the detail stage)."""
    device: str = "auto"
    """``auto`` (cuda when available), ``cpu``, ``cuda``, ``cuda:N``."""
    backend: str = "auto"
    """Renderer backend: ``auto`` (nvdiffrast on GPU when installed, else the CPU rasteriser),
    ``cpu``, ``nvdiffrast``."""
    amp: bool = True
    """Mixed precision: the networks under bfloat16 autocast on a GPU with native bfloat16
    (:func:`models.precision.mixed_precision`); float32 on older GPUs and on CPUs."""
    deterministic: bool = False
    """Deterministic kernels where PyTorch has them (:func:`deterministic_kernels`): on a GPU,
    where some kernels sum in a varying order, a resumed run then repeats the uninterrupted one
    step for step (slower; an op without a deterministic kernel is named in a warning). On a CPU
    the kernels this trainer runs are deterministic either way."""
    threads: int = 0
    """torch CPU threads per process (0: torch's default)."""
    identity_network: str | None = None
    """Face-recognition network of the perceptual loss, by path: an ArcFace IResNet state dict
    (``arcface_torch``'s ``backbone.pth``, as HRN and Deep3DFaceRecon train with), or a
    ``torch.export`` program or TorchScript module (``(B, 3, 112, 112)`` in ``[-1, 1]`` ->
    features ``(B, D)``); faces are aligned to ArcFace's 112 x 112 template by their 5 points
    (:mod:`models.identity`). null: the perceptual loss is off."""


def paper_train_config() -> TrainConfig:
    """The paper's sizes, weights and schedule on the BFM (give ``bfm_path`` / ``uv_path``),
    with Deep3DFaceRecon's augmentation of the base stage's photos."""
    return TrainConfig(
        morphable=MorphableConfig(name="bfm"), checkpoint_every=5000, base_augment=deep3d_augment()
    )


def tiny_cpu_train_config() -> TrainConfig:
    """Small networks and short stages that train on facehd-synth data on a laptop CPU.

    The networks are those of :func:`models.config.tiny_cpu_model_config` with 128-texel
    textures and displacement maps. The loss weights are the paper's but two. The supervised L1
    to the ground-truth maps has weight 100 instead of 1 (the same as an L1 in millimetres rather
    than in the networks' 100 mm units), because 1000 iterations are 800 times fewer than the
    paper's and the unit-scale L1 leaves the detail maps almost unsupervised in that time. The
    adversarial losses are off (lambda_7 = 0 instead of 0.2): with these small discriminators
    they make the detail network draw texel-wide texture as strong as the truth's but not in its
    place, and M2's normals end further from the truth than M1's (README, the adversarial
    losses); the discriminators are then not run. And
    the learnt scales alpha and beta are held for the first half of the detail stage
    (``hrn_options.scale_warmup``): otherwise the L1 regulariser drives beta to zero within a
    few dozen steps and the high-frequency generator gets no gradient for hundreds of them.
    """
    model = tiny_cpu_model_config()
    model.network.high_size = 128
    model.network.mid_size = 32
    model.hrn_losses.supervised = 100.0
    model.hrn_losses.adversarial = 0.0
    return TrainConfig(
        model=model,
        morphable=MorphableConfig(name="facehd-synth"),
        image_size=224,
        base=StageConfig(steps=1000, batch_size=6, lr=1e-3, schedule="cosine", min_lr_ratio=0.1),
        deretouch=StageConfig(steps=200, batch_size=4, lr=1e-3),
        hrn=StageConfig(steps=1000, batch_size=2, lr=5e-4, schedule="cosine", min_lr_ratio=0.1),
        hrn_options=HRNOptions(discriminator_lr=2e-4, scale_warmup=0.5),
        checkpoint_every=100,
        log_every=10,
        device="cpu",
        backend="cpu",
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "tiny-cpu": tiny_cpu_train_config,
    "paper": paper_train_config,
}


def model_file_data(
    config: TrainConfig,
    morphable: MorphableModel,
    system: FaceSystem,
    stages: Sequence[str],
    stages_from_init: Sequence[str] = (),
) -> dict[str, Any]:
    """What a run's ``model.pt`` holds (:data:`MODEL_FORMAT`, read by
    :func:`models.reconstruct.load_system`): the resolved config, the morphable model's record,
    the networks of ``system``, ``stages`` they hold trained and, of those, the ones an
    ``--init`` checkpoint had finished."""
    return {
        "format": MODEL_FORMAT,
        "config": config_to_dict(config),
        "morphable": morphable_record(morphable),
        "stages": list(stages),
        "stages_from_init": [s for s in STAGES if s in stages_from_init],
        "state": system.state_for_checkpoint(),
    }


def load_train_config(spec: str | Path) -> TrainConfig:
    """A preset name (``tiny-cpu``, ``paper``) or a YAML / JSON file (unknown keys refused).

    Raises
    ------
    InputFileError
        A missing or unparsable file, an unknown key or a wrong type (the message names the file
        and the dotted key).
    """
    key = str(spec)
    if key in PRESETS:
        return PRESETS[key]()
    path = Path(spec)
    if not path.exists() and path.suffix == "":
        raise InputFileError(
            path, f"no such config file or preset (presets: {', '.join(sorted(PRESETS))})"
        )
    return load_config(path, TrainConfig)


# --------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def process_group_backend(device: torch.device) -> str:
    """The ``torch.distributed`` backends of a run on ``device``: gloo on CPUs; on GPUs NCCL for
    the CUDA tensors (the gradients) and gloo for the CPU tensors every run also exchanges (the
    finite-loss flag of each step, the random states and data positions of a checkpoint), which
    NCCL alone refuses ("No backend type associated with device type cpu")."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if device.type == "cuda":  # each process on its own GPU (NCCL's communicators follow it)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(device))
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _resolve_device(name: str, dist_info_local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name!r}, but this PyTorch sees no CUDA device (built for the CPU, or no "
            "GPU here); use device: auto or cpu"
        )
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dev = torch.device("cuda", dist_info_local_rank)
    return dev


def _wrap(module: nn.Module, d: _Dist, device: torch.device) -> nn.Module:
    if not d.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    # the weights in the channels-last layout: the photos reach the networks channels-last (a
    # permuted (B, H, W, 3) stack, the faster layout for the CPU's convolutions), and a
    # convolution's weight gradient then comes channels-last too, whose strides differ from a
    # contiguous weight's wherever the kernel is 1 x 1; DistributedDataParallel then copies
    # those gradients into its buckets and warns on every process ("Grad strides do not match
    # bucket view strides")
    module.to(memory_format=torch.channels_last)
    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def _gather(obj: Any, d: _Dist) -> list[Any]:
    if not d.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def _all_finite(value: float, d: _Dist) -> bool:
    """Whether ``value`` is finite on every process (all stop together, none waits forever)."""
    bad = 0.0 if math.isfinite(value) else 1.0
    if d.active:
        import torch.distributed as dist

        t = torch.tensor([bad])
        dist.all_reduce(t)
        bad = float(t.item())
    return bad == 0.0


def _barrier(d: _Dist) -> None:
    if d.active:
        import torch.distributed as dist

        dist.barrier()


# --------------------------------------------------------------------------------------------
# random states
# --------------------------------------------------------------------------------------------
def _rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Python, numpy and torch random states as checkpoint-safe values (tensors, lists, ints),
    with the CUDA generator of ``device`` when it is a GPU (that one alone: a run resumed where
    another number of GPUs is visible, or under another index, restores it all the same)."""
    # the legacy global numpy stream is saved because user code and libraries may draw from it
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    version, internal, gauss_py = random.getstate()
    state = {
        "python": {"version": version, "state": list(internal), "gauss": gauss_py},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def deterministic_kernels(enabled: bool = True) -> Iterator[None]:
    """While open, PyTorch's deterministic kernels (``torch.use_deterministic_algorithms``, with
    a warning for an op that has none rather than an error; cuDNN without benchmarking; cuBLAS's
    fixed workspace, which its deterministic mode requires); the settings before are restored
    on leaving. Not ``enabled``: changes nothing."""
    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# run folder: logs
# --------------------------------------------------------------------------------------------
class _RunLog:
    """CSV rows per stage, a text log, and TensorBoard when it is installed (rank 0 only)."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self._writer: Any = None  # SummaryWriter's class, once found importable
        self._tb: dict[str, Any] = {}  # stage -> its SummaryWriter
        self._tb_checked = False
        self._purge: dict[str, int] = {}  # stage -> first step this run logs again

    def message(self, text: str) -> None:
        log.info(text)
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.out / "train.log", "a") as fh:
            fh.write(f"{stamp} {text}\n")

    def tensorboard(self, stage: str) -> Any:
        """The stage's SummaryWriter (``tensorboard/<stage>``), None without tensorboard. Each
        stage has its own folder, as its steps count from 1: a resumed stage's writer purges
        the events a killed run logged after the checkpoint (TensorBoard's ``purge_step``),
        as :meth:`truncate` drops its CSV rows, which would otherwise be shown twice."""
        if not self._tb_checked and self.enabled:
            self._tb_checked = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:
                self.message(
                    "tensorboard is not installed: logging to CSV only "
                    "(pip install tensorboard to get event files)"
                )
            else:
                self._writer = SummaryWriter
        if self._writer is not None and stage not in self._tb:
            folder = self.out / "tensorboard" / stage
            self._tb[stage] = self._writer(str(folder), purge_step=self._purge.get(stage))
        return self._tb.get(stage)

    def csv_path(self, stage: str) -> Path:
        return self.out / f"log_{stage}.csv"

    def truncate(self, stage: str, last_step: int) -> None:
        """Drop rows after ``last_step`` (written by a run killed after its last checkpoint),
        and the TensorBoard events after it."""
        self._purge[stage] = last_step + 1
        path = self.csv_path(stage)
        if not self.enabled or not path.is_file():
            return
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return

        def before(row: list[str]) -> bool:
            # a whole row of a step up to the checkpoint's; not a line cut short (a crash of
            # the machine mid-write), whose few fields would be read as a row of their own
            return len(row) == len(rows[0]) and row[0].isdigit() and int(row[0]) <= last_step

        kept = [rows[0]] + [r for r in rows[1:] if before(r)]
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)
        os.replace(tmp, path)

    def row(self, stage: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.csv_path(stage)
        header = ["step", *values]
        exists = path.is_file()
        if exists:
            with open(path, newline="") as fh:
                first = next(csv.reader(fh), None)
            if first is not None and any(h not in first for h in header):
                # a new column appeared (e.g. the supervised terms): rewrite with the union
                with open(path, newline="") as fh:
                    old = list(csv.DictReader(fh))
                header = first + [h for h in header if h not in first]
                tmp = path.with_name(path.name + ".tmp")
                with open(tmp, "w", newline="") as fh:
                    w = csv.DictWriter(fh, header)
                    w.writeheader()
                    w.writerows(old)
                os.replace(tmp, path)
            elif first is not None:
                header = first
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, header, restval="")
            if not exists:
                w.writeheader()
            w.writerow({"step": step, **values})
        tb = self.tensorboard(stage)
        if tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    tb.add_scalar(f"{stage}/{k}", v, step)

    def close(self) -> None:
        for writer in self._tb.values():
            writer.close()


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------
def _floats(terms: Any) -> dict[str, float]:
    """Loss terms (a dataclass of scalar tensors, some None) -> name -> float, for the logs."""
    from dataclasses import fields as dc_fields

    out = {}
    for f in dc_fields(terms):
        v = getattr(terms, f.name)
        if v is not None:
            out[f.name] = float(v.detach())
    return out


class TrainingInterrupted(Exception):
    """Training stopped on a signal (Ctrl-C, ``kill``) after finishing a step, whose
    checkpoint was saved: ``--resume`` continues from it, losing nothing."""

    def __init__(self, stage: str, step: int, checkpoint: Path) -> None:
        super().__init__(
            f"stopped at stage {stage}, step {step}; checkpoint {checkpoint} saved: --resume "
            "continues from it"
        )
        self.stage, self.step, self.checkpoint = stage, step, checkpoint


class _StopRequest:
    """While entered (in the main thread of a single-process run), SIGINT and SIGTERM ask the
    step loop to stop after the current step instead of killing it mid-step; a second SIGINT
    interrupts at once, as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass
class TrainResult:
    """What :func:`train` did."""

    out: Path
    """The run folder."""
    stages: list[str]
    """Stages finished (including ones finished by earlier runs)."""
    steps: dict[str, int]
    """Steps run by this call, per stage."""
    seconds: dict[str, float]
    """Wall time of this call, per stage."""
    model_path: Path | None
    """``model.pt`` (None when no stage finished)."""


StepCallback = Callable[[str, int, int, dict[str, float]], None]


def _clock(seconds: float) -> str:
    """``h:mm:ss`` of a duration."""
    if not math.isfinite(seconds):
        return "?"
    s = round(max(seconds, 0.0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_lines(
    say: Callable[[str], None] = log.info,
    every: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> StepCallback:
    """A step callback (:func:`train`'s ``callback``) that says where a stage is, for a run
    without a progress bar (``python -m models.train`` under ``torchrun``): at most every
    ``every`` seconds and at the stage's last step, one line with the step, the loss, the speed
    and the time left, e.g. ``stage base: step 120/1000 (12%), loss 1.234, 2.41 it/s, 0:06:05
    left``. The speed counts the steps since the stage's first report in this run."""
    first: dict[str, tuple[float, int]] = {}
    said: dict[str, float] = {}

    def callback(stage: str, step: int, total: int, values: dict[str, float]) -> None:
        now = clock()
        t0, step0 = first.setdefault(stage, (now, step))
        if step < total and now - said.get(stage, t0) < every:
            return
        said[stage] = now
        rate = (step - step0) / (now - t0) if now > t0 and step > step0 else math.nan
        left = 0.0 if step >= total else (total - step) / rate if rate > 0 else math.nan
        loss = values.get("total")
        text = f"stage {stage}: step {step}/{total} ({100 * step / max(total, 1):.0f}%)"
        if isinstance(loss, float):
            text += f", loss {loss:.4g}"
        if math.isfinite(rate):
            text += f", {rate:.2f} it/s"
        say(f"{text}, {_clock(left)} left")

    return callback


class Trainer:
    """Runs the stages of :func:`train` (see the module docstring); one per process.

    Parameters
    ----------
    config : the resolved configuration.
    out : run folder.
    photos, priors, pairs : datasets (paths); which ones a stage needs is checked at its start.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path,
        *,
        photos: str | Path | None = None,
        priors: str | Path | None = None,
        pairs: str | Path | None = None,
    ) -> None:
        from facehd.morphable import load_model
        from models.data import PhotoDataset
        from models.system import FaceSystem

        # every value in range, also the presets and --steps overrides, before any work
        check_config(config)
        self.config = config
        self.out = Path(out)
        self.device = _resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = _init_distributed(self.device)
        if self.device.type == "cuda" and self.device.index is not None:
            # the current device too, for code that takes it (nvdiffrast's contexts, streams)
            torch.cuda.set_device(self.device)
        self.stop = _StopRequest()
        """Set by a signal: the step loop saves and stops (single-process runs)."""
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.log = _RunLog(self.out, self.dist.main)
        self.photos_path = Path(photos) if photos is not None else None
        self.priors_path = Path(priors) if priors is not None else None
        self.pairs_path = Path(pairs) if pairs is not None else None
        self._photos = PhotoDataset(self.photos_path) if self.photos_path else None
        if config.template is None:
            config.template = self._photos.template if self._photos else "anthropometric"
        elif self._photos is not None and self._photos.template != config.template:
            # the photos' crops and the lab crops / reconstructions would be framed apart
            raise FacehdError(
                f"{self.photos_path}: prepared with the {self._photos.template!r} template, "
                f"the config says {config.template!r}: leave template unset (it follows the "
                "photos), or prepare them again with --template " + config.template
            )
        m = config.morphable
        kwargs = {k: v for k, v in (("bfm_path", m.bfm_path), ("uv_path", m.uv_path)) if v}
        try:
            self.morphable = load_model(m.name, **kwargs)
        except ValueError as exc:
            hint = ""
            if kwargs and m.name.strip().lower() != "bfm":
                hint = " (to train on the BFM, set morphable.name=bfm)"
            raise ConfigError(f"morphable: {exc}{hint}") from exc
        _seed_everything(config.seed)
        # the system resolves "auto" by the device it renders on (FaceSystem.renderer)
        self.system = FaceSystem(config.model, self.morphable, config.image_size, config.backend)
        # the de-retouching network starts from "no retouching": its output layer at zero gives
        # the blend layer 0.5 everywhere, T0 = T (Eq. 3) and A' = A0 (Eq. 5)
        out_layer = self.system.hrn.deretouch.generator.outc.conv
        nn.init.zeros_(out_layer.weight)
        nn.init.zeros_(out_layer.bias)
        self.system.to(self.device)
        self._lab = None
        self._lab_said = False
        self._callback: StepCallback | None = None
        self._aside = 0.0
        """Seconds of the current stage spent outside its steps' own work (the refinement of
        the training faces), left out of the stage's time and speed."""
        self._pairs = None
        self.perceptual, self._identity_kind = self._perceptual_loss(config.identity_network)

    def _perceptual_loss(self, path: str | None):
        """``(PerceptualLoss, what its network is, for the log: "" when off)``."""
        from models.identity import load_identity_network
        from models.losses import PerceptualLoss

        if path is None:
            return PerceptualLoss(None), ""
        net, kind = load_identity_network(path, self.device)
        return PerceptualLoss(net).to(self.device), f"{kind} from {path}"

    def _perceptual(
        self,
        rendered: torch.Tensor,
        images: torch.Tensor,
        mask: torch.Tensor,
        landmarks: torch.Tensor,
    ):
        """Perceptual loss of the render composited over the photo, both aligned to the identity
        network's template by the photo's landmarks (B, 68, 2) (0 when off)."""
        from models.identity import five_points

        if not self.perceptual.enabled:
            return rendered.sum() * 0.0
        composite = rendered * mask + images * (1.0 - mask)
        return self.perceptual(composite, images, five_points(landmarks))

    # ------------------------------------------------------------------ data
    def photos(self):
        if self._photos is None:
            raise FacehdError("this stage needs the in-the-wild photos: give --photos photos.h5")
        return self._photos

    def open_data(self, stages: Sequence[str]) -> None:
        """Open the datasets ``stages`` will read besides the photos (the priors' lab photos,
        the de-retouching pairs), so that a missing or foreign one (a priors file of another
        model, pairs without clean twins) is refused before the run folder is made or any stage
        runs; what they hold is logged when a stage first takes them (:meth:`lab`)."""
        if self.priors_path is not None:
            self._open_lab()
        if "deretouch" in stages:
            self.pairs()

    def _open_lab(self):
        if self._lab is None:
            from models.data import LabDataset

            if self.priors_path is None:
                raise FacehdError("this stage needs the priors: give --priors priors.h5")
            self._lab = LabDataset(
                self.priors_path, template=self.config.template, model=self.morphable
            )
        return self._lab

    def lab(self):
        self._open_lab()
        if not self._lab_said:
            self._lab_said = True
            if self._lab.has_cameras:
                self.log.message(
                    "lab photos carry their cameras: the supervised displacement is re-indexed "
                    "per image to the skin point each texel sees"
                )
            else:
                self.log.message(
                    "lab photos carry no scan-frame camera (K, scan_R, scan_t): the supervised "
                    "displacement is compared texel by texel in the priors' UV layout"
                )
            if self._lab.without_photos:
                self.log.message(
                    f"{len(self._lab.without_photos)} priors samples have no lab photos and are "
                    f"not used (first: {self._lab.without_photos[0]})"
                )
        return self._lab

    def pairs(self):
        if self._pairs is None:
            from models.data import PairDataset

            if self.pairs_path is not None:
                self._pairs = PairDataset(self.pairs_path)
            else:
                lab = self._open_lab()
                if not lab.has_clean:
                    raise FacehdError(
                        f"{lab.path}: the lab photos carry no clean twin (images_clean); give "
                        "--pairs with a photos dataset that has an image_clean field"
                    )
                self._pairs = lab
        return self._pairs

    def _batch(self, dataset, sampler):
        return self._indexed_batch(dataset, sampler)[1]

    def _indexed_batch(self, dataset, sampler):
        """``(sample indices, PhotoBatch)`` of the sampler's next batch."""
        from models.data import collate

        idx = sampler.next_batch()
        return idx, collate([dataset[i] for i in idx], self.config.image_size).to(self.device)

    def _sampler(self, n: int, batch_size: int, stream: int):
        from models.data import EpochSampler

        return EpochSampler(
            n, batch_size, self.config.seed * 1000 + stream, self.dist.rank, self.dist.world
        )

    def _autocast(self):
        from models.precision import mixed_precision

        return mixed_precision(self.device, self.config.amp)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, stage: str) -> Path:
        return self.out / "checkpoints" / f"{stage}.pt"

    def _morphable_info(self) -> dict[str, Any]:
        return morphable_record(self.morphable)

    def _save(self, stage: str, step: int, done: bool, optim: dict, samplers: dict) -> None:
        # every process's random state and data position: a dataset that the processes do not
        # share evenly (5 photos, 2 processes) puts each at its own epoch and cursor
        mine = (_rng_state(self.device), {k: s.state_dict() for k, s in samplers.items()})
        states = _gather(mine, self.dist)
        if not self.dist.main:
            return
        rngs = [rng for rng, _ in states]
        positions = [position for _, position in states]
        data = {
            "format": CHECKPOINT_FORMAT,
            "stage": stage,
            "step": step,
            "done": done,
            "world_size": self.dist.world,
            "config": config_to_dict(self.config),
            "morphable": self._morphable_info(),
            "state": self.system.state_for_checkpoint(),
            "optimizers": {k: o.state_dict() for k, o in optim.items()},
            "schedule": {"kind": getattr(self.config, stage).schedule, "step": step},
            "rng": rngs,
            "data": positions[0],
            "data_ranks": positions,
        }
        save_checkpoint_atomic(self.checkpoint_path(stage), data)

    def _save_model(self, stages_done: list[str], from_init: Sequence[str] = ()) -> Path | None:
        """Write ``model.pt``: the networks now, ``stages`` the stages they hold trained
        (``stages_from_init``: those the ``--init`` checkpoint had finished)."""
        if not self.dist.main:
            return None
        data = model_file_data(self.config, self.morphable, self.system, stages_done, from_init)
        return save_checkpoint_atomic(self.out / "model.pt", data)

    def _read_own_checkpoint(self, path: Path) -> dict[str, Any]:
        return self._check_own_checkpoint(path, read_checkpoint(path))

    def _check_own_checkpoint(self, path: Path, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` (read from ``path``) if it is a facehd checkpoint of this run's morphable
        model; InputFileError otherwise."""
        if data.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
            raise InputFileError(
                path, f"not a facehd training checkpoint (format {data.get('format')!r})"
            )
        parts: dict[str, type | tuple[type, ...]] = {
            "config": Mapping,
            "morphable": Mapping,
            "state.hrn": Mapping,
            "state.discriminators": Mapping,
        }
        if data["format"] == CHECKPOINT_FORMAT:
            parts.update(stage=str, step=int, optimizers=Mapping, data=Mapping, rng=list)
        check_parts(path, data, parts)
        info = data.get("morphable", {})
        mine = self._morphable_info()
        # the fingerprint's floats with a tolerance: a procedural model built with another
        # thread count differs in the last bits
        same = isinstance(info, dict) and all(info.get(k) == mine[k] for k in MORPHABLE_SIZES)
        if not (same and self.morphable.matches_fingerprint(info.get("fingerprint"))):
            raise InputFileError(
                path,
                f"checkpoint is for the morphable model {morphable_brief(info)}, this run uses "
                f"{morphable_brief(mine)} (or the same sizes with other bases)",
            )
        return data

    def _load_network_state(self, state: dict[str, Any], path: Path) -> None:
        """The networks and discriminators from a facehd checkpoint's ``state``."""
        from models.checkpoints import load_state_into

        load_state_into(self.system.hrn, state["hrn"], part="hrn", source=str(path))
        load_state_into(
            self.system.discriminators,
            state["discriminators"],
            part="discriminators",
            source=str(path),
        )

    def load_networks(self, source: str | Path) -> list[str]:
        """Initialise the networks from a facehd checkpoint / model file, the official HRN
        checkpoint (then the de-retouching module keeps its initialisation) or Deep3DFaceRecon's
        (``net_recon`` alone: the face analyzer). Returns the stages the source had finished."""
        path = Path(source)
        data = read_checkpoint(path)
        if data.get("format") in (CHECKPOINT_FORMAT, MODEL_FORMAT):
            data = self._check_own_checkpoint(path, data)
            self._load_network_state(data["state"], path)
            if data["format"] == MODEL_FORMAT:
                return list(data.get("stages", []))
            return [data["stage"]] if data.get("done") else []
        official = ("net_recon", "mid_net", "high_net")
        if not any(k in data for k in official):
            if "format" in data:
                raise InputFileError(
                    path,
                    f"a file of format {str(data['format'])[:60]!r}, which this facehd does not "
                    f"read (it reads {CHECKPOINT_FORMAT!r} and {MODEL_FORMAT!r}, and HRN's "
                    "official checkpoint)",
                )
            raise InputFileError(
                path,
                "neither a facehd checkpoint (no 'format' entry) nor HRN's official one (none of "
                f"{', '.join(official)}); entries: {', '.join(map(str, list(data)[:8]))}",
            )
        if "net_recon" in data and not any(k in data for k in official[1:]):
            # Deep3DFaceRecon's checkpoint: HRN's base model, the face analyzer alone
            load_state_into(
                self.system.hrn.net_recon, data["net_recon"], part="net_recon", source=str(path)
            )
            return ["base"]
        self.system.hrn.load_official(data, name=str(path))
        # its face analyzer and detail networks are trained; de-retouching is not in it
        return ["base", "hrn"]

    # ------------------------------------------------------------------ stage loop
    def run_stage(
        self,
        stage: str,
        *,
        resume: bool = False,
        callback: StepCallback | None = None,
    ) -> tuple[int, float]:
        """Run (or resume) one stage. Returns (steps run, seconds of the steps: a refinement of
        the training faces before them, timed in the log, not counted)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        cfg: StageConfig = getattr(self.config, stage)
        self._callback = callback
        self._aside = 0.0
        optim, samplers, step_fn = getattr(self, f"_setup_{stage}")()
        start = 0
        ckpt = self.checkpoint_path(stage)
        if resume and ckpt.is_file():
            data = self._read_own_checkpoint(ckpt)
            if data.get("format") != CHECKPOINT_FORMAT or data.get("stage") != stage:
                what = (
                    "a model file"
                    if data.get("format") == MODEL_FORMAT
                    else (f"stage {data.get('stage')!r}'s checkpoint")
                )
                raise InputFileError(
                    ckpt, f"is {what}, not stage {stage!r}'s; move it away to restart the stage"
                )
            self._load_network_state(data["state"], ckpt)
            rngs = data["rng"]
            # this process's own data position; a checkpoint of another number of processes
            # (or one from before the positions were saved per process) gives the first's
            ranks = data.get("data_ranks")
            same_world = isinstance(ranks, list) and len(ranks) == self.dist.world
            position = ranks[self.dist.rank] if same_world else data["data"]
            try:
                for k, o in optim.items():
                    o.load_state_dict(data["optimizers"][k])
                for k, s in samplers.items():
                    s.load_state_dict(position[k])
                if len(rngs) == self.dist.world:
                    _set_rng_state(rngs[self.dist.rank], self.device)
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
                what = f"no entry {exc}" if isinstance(exc, KeyError) else str(exc)
                raise InputFileError(
                    ckpt, f"stage {stage!r}'s checkpoint cannot be resumed from ({what})"
                ) from exc
            if len(rngs) != self.dist.world:
                self.log.message(
                    f"{ckpt}: saved by {len(rngs)} processes, resumed by {self.dist.world}; "
                    "random states re-seeded (the run is no longer bit-identical)"
                )
                _seed_everything(self.config.seed + 7919 * int(data["step"]) + self.dist.rank)
            start = int(data["step"])
            self.log.truncate(stage, start)
            self.log.message(f"stage {stage}: resumed from {ckpt} at step {start}")
            if data.get("done"):
                return 0, 0.0
        else:
            _seed_everything(self.config.seed + 1 + STAGES.index(stage) + 101 * self.dist.rank)
            self.log.truncate(stage, 0)  # rows of an attempt killed before its first checkpoint
            self.log.message(f"stage {stage}: starting ({cfg.steps} steps)")
        t0 = time.perf_counter()
        steps_run = 0
        for step in range(start + 1, cfg.steps + 1):
            lr = cfg.lr_at(step)
            for name, o in optim.items():
                base = self.config.hrn_options.discriminator_lr if name == "disc" else cfg.lr
                for g in o.param_groups:
                    held = step <= g.get("warmup", 0)
                    g["lr"] = 0.0 if held else lr * base / cfg.lr * g.get("lr_factor", 1.0)
            values = step_fn(step)
            values = {"lr": lr, **values}
            if not _all_finite(values.get("total", 0.0), self.dist):
                raise FacehdError(
                    f"stage {stage}, step {step}: the loss is {values['total']} ("
                    + ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float))
                    + "); check the config's loss weights and learning rates. Checkpoints so far "
                    "are kept; --resume continues from the last one"
                )
            steps_run += 1
            # the last two steps of each window: one self-supervised and one supervised row
            if step % self.config.log_every in (0, self.config.log_every - 1) or (
                step == cfg.steps
            ):
                self.log.row(stage, step, values)
            done = step == cfg.steps
            # a stop asked during the last step too: the next stage (or run) must not start
            # (asked only in a single-process run: no other process waits on this one)
            stop = self.stop.requested
            if step % self.config.checkpoint_every == 0 or done or stop:
                self._save(stage, step, done, optim, samplers)
            if stop:
                self.log.message(f"stage {stage}: stopped by a signal after step {step}")
                raise TrainingInterrupted(stage, step, self.checkpoint_path(stage))
            if callback is not None:
                callback(stage, step, cfg.steps, values)
        if cfg.steps == 0 or start >= cfg.steps:
            self._save(stage, cfg.steps, True, optim, samplers)
        _barrier(self.dist)
        return steps_run, time.perf_counter() - t0 - self._aside

    # ------------------------------------------------------------------ refined faces
    def _refine_settings(self) -> dict[str, Any]:
        """What the refined coefficients of a photo depend on besides the photo itself."""
        from dataclasses import asdict

        from models.refined_faces import analyzer_digest

        opts = self.config.hrn_options
        return {
            "analyzer_sha256": analyzer_digest(self.system.hrn.net_recon),
            "steps": int(opts.refine_steps),
            "lr": float(opts.refine_lr),
            "start": str(opts.refine_start),
            "base_losses": {k: float(v) for k, v in asdict(self.config.model.base_losses).items()},
            "image_size": int(self.config.image_size),
            "template": str(self.config.template),
        }

    def refined_faces(self, dataset, name: str):
        """The refined base coefficients of every sample of ``dataset``
        (:class:`models.refined_faces.RefinedFaces`), made once per run folder and kept in
        ``refined/<name>.pt`` (see :mod:`models.refined_faces`): each process refines its
        share of the samples not already there, saving after each, and all processes get the
        whole table. A stop asked meanwhile (single process) raises
        :class:`TrainingInterrupted` after the photo in flight, with everything before it kept.
        The analyzer refines in evaluation mode (as the frozen analyzer of the detail stage).
        """
        analyzer = self.system.hrn.net_recon
        training = analyzer.training
        analyzer.eval()  # its prediction, the refinement's start, must not move its statistics
        t0 = time.perf_counter()
        try:
            return self._refined_faces(dataset, name)
        finally:
            analyzer.train(training)
            self._aside += time.perf_counter() - t0

    def _refined_faces(self, dataset, name: str):
        from models.data import collate
        from models.refine import refine_coefficients
        from models.refined_faces import (
            RefinedFaces,
            read_entries,
            sample_digest,
            write_entries,
        )

        folder = self.out / "refined"
        whole = folder / f"{name}.pt"
        settings = self._refine_settings()
        n = len(dataset)
        what = {"lab": "lab photos"}.get(name, name)
        found: dict[int, dict] = {}
        in_whole: dict[int, str] = {}
        for path in [whole, *sorted(folder.glob(f"{name}.rank*.pt"))]:
            entries, why = read_entries(path, settings)
            if why is not None:
                self.log.message(f"refined faces: {why}; not used")
            if path == whole:
                in_whole = {i: str(e.get("digest")) for i, e in entries.items()}
            for i, entry in entries.items():
                found.setdefault(i, entry)
        opts = self.config.hrn_options
        cfg = training_refinement(opts)
        weights = self.config.model.base_losses
        mine = range(self.dist.rank, n, self.dist.world)
        part = folder / f"{name}.rank{self.dist.rank}.pt"
        kept: dict[int, dict] = {}
        todo: list[tuple[int, dict, str]] = []
        for i in mine:
            item = dataset[i]
            digest = sample_digest(item)
            entry = found.get(i)
            if entry is not None and entry.get("digest") == digest:
                kept[i] = entry
            else:
                todo.append((i, item, digest))
        made = _gather(len(todo), self.dist)
        if sum(made):
            self.log.message(
                f"refined faces: refining the base faces of {sum(made)} of {n} {what} "
                f"({opts.refine_steps} + {opts.refine_steps} steps each; {n - sum(made)} "
                f"already in {folder})"
            )
        # the refinement draws nothing; the stage's random state is kept
        rng = _rng_state(self.device)
        t0 = time.perf_counter()
        hrn = self.system.hrn
        for k, (i, item, digest) in enumerate(todo, 1):
            batch = collate([item], self.config.image_size).to(self.device)
            with torch.no_grad():
                start = hrn.net_recon.predict(batch.images)
            coeffs, before, after = refine_coefficients(
                self.system, batch.images, batch.masks, batch.landmarks, start, weights, cfg
            )
            kept[i] = {
                "digest": digest,
                "coeffs": torch.cat(list(coeffs), dim=1)[0].detach().float().cpu(),
                "before": float(before),
                "after": float(after),
            }
            write_entries(part, settings, kept)
            if self._callback is not None and self.dist.main:
                self._callback(f"refine {name}", k, len(todo), {})
            if self.stop.requested:
                self.log.message(f"refined faces: stopped by a signal after {k} of {len(todo)}")
                raise TrainingInterrupted("hrn", 0, part)
        _set_rng_state(rng, self.device)
        entries: dict[int, dict] = {}
        for share in _gather(kept, self.dist):
            entries.update(share)
        faces = RefinedFaces.from_entries(entries, n)
        current = {i: str(e["digest"]) for i, e in entries.items()}
        if self.dist.main and current != in_whole:
            write_entries(whole, settings, entries)
        _barrier(self.dist)
        if self.dist.main:
            for leftover in folder.glob(f"{name}.rank*.pt"):
                leftover.unlink()
        if todo or sum(made):
            seconds = time.perf_counter() - t0
            self.log.message(
                f"refined faces: {what} done in {seconds:.1f} s; base objective "
                f"{float(faces.before.mean()):.4g} -> {float(faces.after.mean()):.4g} (mean)"
            )
        return faces

    # ------------------------------------------------------------------ base stage
    def _setup_base(self):
        hrn = self.system.hrn
        self._freeze_all()
        for p in hrn.net_recon.parameters():
            p.requires_grad_(True)
        hrn.net_recon.train()
        cfg = self.config.base
        analyzer = _wrap(hrn.net_recon, self.dist, self.device)
        params = [p for p in hrn.net_recon.parameters() if p.requires_grad]
        optim = {"analyzer": torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)}
        photos = self.photos()
        samplers = {"photos": self._sampler(len(photos), cfg.batch_size, 1)}

        def step(_step: int) -> dict[str, float]:
            from models.losses import base_total_loss
            from models.refine import base_terms

            w = self.config.model.base_losses
            batch = self._batch(photos, samplers["photos"])
            if self.config.base_augment.active:
                from models.augment import augment_batch

                batch = augment_batch(batch, self.config.base_augment)
            with self._autocast():
                coeffs = hrn.net_recon.layout.split(analyzer(batch.images).float())
            terms = base_terms(
                self.system,
                coeffs,
                batch.images,
                batch.masks,
                batch.landmarks,
                w,
                perceptual=self._perceptual,
            )
            total = base_total_loss(terms, w)
            optim["analyzer"].zero_grad(set_to_none=True)
            total.backward()
            optim["analyzer"].step()
            return {"kind": "self", "total": float(total.detach()), **_floats(terms)}

        return optim, samplers, step

    def say_precision(self) -> None:
        """Log the precision the networks train in (``amp``: bfloat16 on a GPU that has it)."""
        from models.precision import mixed_precision_runs

        if mixed_precision_runs(self.device, self.config.amp):
            self.log.message(f"mixed precision: the networks in bfloat16 on {self.device}")
        elif self.config.amp and self.device.type == "cuda":
            self.log.message(
                f"mixed precision is off: {self.device} has no native bfloat16 (it came with "
                "NVIDIA's Ampere GPUs); the networks train in float32"
            )

    def say_perceptual(self) -> None:
        """Log whether the perceptual loss runs (and on which identity network) or is off."""
        if not self.perceptual.enabled:
            self.log.message(
                "perceptual loss is off: no identity-network weights were given "
                "(set identity_network; until then base_losses.perceptual and "
                "hrn_losses.perceptual have no effect)"
            )
        else:
            self.log.message(f"perceptual loss: identity network {self._identity_kind}")

    def _to224(self, pts: torch.Tensor) -> torch.Tensor:
        """Pixels at the training size -> pixels at 224 (the landmark weights' unit)."""
        from models.losses import pixels_at_224

        return pixels_at_224(pts, self.config.image_size)

    def _freeze_all(self) -> None:
        for p in self.system.parameters():
            p.requires_grad_(False)
        self.system.eval()

    # ------------------------------------------------------------------ de-retouching stage
    def _setup_deretouch(self):
        from models.losses import masked_l1

        hrn = self.system.hrn
        self._freeze_all()
        drm = hrn.deretouch
        for name, p in drm.named_parameters():
            p.requires_grad_(not name.startswith("generator.dsoutc"))
        drm.train()
        cfg = self.config.deretouch
        wrapped = _wrap(drm, self.dist, self.device)
        params = [p for p in drm.parameters() if p.requires_grad]
        optim = {"deretouch": torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)}
        pairs = self.pairs()
        samplers = {"pairs": self._sampler(len(pairs), cfg.batch_size, 2)}

        def step(_step: int) -> dict[str, float]:
            batch = self._batch(pairs, samplers["pairs"])
            with torch.no_grad():
                coarse = self.system.coarse(batch.images)
                tex, valid, _, _ = self.system.unwrap(batch.images, coarse)
                clean, valid_c, _, _ = self.system.unwrap(batch.images_clean, coarse)
                m = valid * valid_c
            with self._autocast():
                out = wrapped(tex, torch.ones_like(tex))
            loss = masked_l1(out.retouched.float(), clean, m)
            optim["deretouch"].zero_grad(set_to_none=True)
            loss.backward()
            optim["deretouch"].step()
            with torch.no_grad():
                before = masked_l1(tex, clean, m)
            return {"kind": "pairs", "total": float(loss.detach()), "l1_before": float(before)}

        return optim, samplers, step

    # ------------------------------------------------------------------ detail stage
    def _setup_hrn(self):
        from models.losses import (
            HRNLossTerms,
            contour_loss,
            displacement_l1,
            gan_discriminator_loss,
            gan_generator_loss,
            hrn_total_loss,
            landmark_loss,
            masked_l1,
            photometric_loss,
            skin_mask,
            total_variation,
        )
        from models.system import masked_downsample

        hrn, system = self.system.hrn, self.system
        opts = self.config.hrn_options
        self._freeze_all()
        params = hrn.detail_parameters()
        for p in params:
            p.requires_grad_(True)
        hrn.mid_net.train()
        hrn.high_net.train()
        discs = system.discriminators
        weights = self.config.model.hrn_losses
        # at lambda_7 = 0 the adversarial terms move nothing: the discriminators are not run
        adversarial = opts.priors and weights.adversarial > 0
        if opts.priors and not adversarial:
            self.log.message(
                "adversarial losses off (model.hrn_losses.adversarial = 0): the discriminators "
                "are not trained"
            )
        if adversarial:
            for p in discs.parameters():
                p.requires_grad_(True)
            discs.train()
        cfg = self.config.hrn
        wrapped = _wrap(hrn, self.dist, self.device)
        scales = [hrn.alpha, hrn.beta]
        groups = [
            {"params": [p for p in params if all(p is not q for q in scales)]},
            {
                "params": scales,
                "lr_factor": opts.scale_lr,
                "warmup": round(opts.scale_warmup * cfg.steps),
            },
        ]
        optim = {"generators": torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)}
        d_mid = d_high = None
        if adversarial:
            d_mid = _wrap(discs.mid, self.dist, self.device)
            d_high = _wrap(discs.high, self.dist, self.device)
            optim["disc"] = torch.optim.Adam(
                discs.parameters(), lr=opts.discriminator_lr, betas=(0.5, 0.999)
            )
        photos = self.photos()
        samplers = {"photos": self._sampler(len(photos), cfg.batch_size, 3)}
        lab = None
        if opts.priors:
            lab = self.lab()
            samplers["lab"] = self._sampler(len(lab), cfg.batch_size, 4)
        net = self.config.model.network
        unit = net.map_unit_mm
        contour_cfg = self.config.model.contour
        gan_mode = net.discriminator.gan_mode
        size = self.config.image_size
        fit_vertices = system.fit_vertices.to(self.device)

        refined: dict[str, Any] = {}  # name -> RefinedFaces, made at the first step

        def step(step: int) -> dict[str, float]:
            if opts.refine_steps > 0 and not refined:
                # made here, after a resumed stage has loaded its networks: the analyzer that
                # refines is the stage's (frozen) one
                refined["photos"] = self.refined_faces(photos, "photos")
                if lab is not None:
                    refined["lab"] = self.refined_faces(lab, "lab")
            supervised = opts.priors and step % 2 == 0
            name, dataset = ("lab", lab) if supervised else ("photos", photos)
            idx, batch = self._indexed_batch(dataset, samplers[name])
            with torch.no_grad():
                start = None
                if refined and _refined_pair(step, opts.refine_share):
                    start = refined[name].coefficients(hrn.net_recon.layout, idx, self.device)
                coarse = system.coarse(batch.images, start)
            detail = system.details(
                batch.images,
                coarse,
                hrn=wrapped,
                deretouch=opts.deretouch,
                autocast=self.config.amp,
            )
            d_units = detail.maps.deformation.float() / unit
            h_units = detail.maps.displacement.float() / unit
            r1 = system.render_mid(detail, coarse)
            r2 = system.render_high(detail, coarse)
            m1 = batch.masks * r1.mask[:, None].to(batch.masks)
            m2 = batch.masks * r2.mask[:, None].to(batch.masks)
            skin = skin_mask(batch.masks, batch.landmarks)
            zero = d_units.sum() * 0.0
            img1, img2 = r1.image.permute(0, 3, 1, 2), r2.image.permute(0, 3, 1, 2)
            lm_pred = self._to224(system.landmarks2d(detail.posed))
            if opts.contour:
                con = contour_loss(
                    system.project(detail.posed),
                    batch.masks,
                    delta=contour_cfg.delta_at(size),
                    margin=contour_cfg.margin,
                    vertex_mask=fit_vertices,
                )
            else:
                con = zero
            sup_mid = sup_high = None
            mask_mid = masked_downsample(detail.valid, net.mid_size)
            mask_high = detail.valid
            if supervised:
                target, tmask = system.target_deformation(
                    coarse,
                    batch.identity,
                    batch.expression,
                    batch.deformation,
                    batch.deformation_mask,
                )
                if batch.priors_uv is not None:
                    disp_gt, disp_mask = system.target_displacement(
                        detail,
                        coarse,
                        batch.displacement,
                        batch.displacement_mask,
                        batch.priors_uv,
                        batch.priors_uv_mask,
                    )
                else:
                    from models.data import resize_map

                    disp_gt, disp_mask = resize_map(
                        batch.displacement, batch.displacement_mask, net.high_size
                    )
                mask_mid = tmask * (mask_mid > 0.5).to(tmask)
                mask_high = disp_mask * detail.valid
                sup_mid = masked_l1(d_units, target / unit, mask_mid)
                sup_high = masked_l1(h_units, disp_gt / unit, mask_high)
            if adversarial:
                for p in discs.parameters():
                    p.requires_grad_(False)
                adv_mid = gan_generator_loss(discs.mid(d_units * mask_mid), gan_mode)
                adv_high = gan_generator_loss(discs.high(h_units * mask_high), gan_mode)
            else:
                adv_mid = adv_high = zero
            terms = HRNLossTerms(
                photo_mid=photometric_loss(img1, batch.images, skin * m1),
                photo_high=photometric_loss(img2, batch.images, skin * m2),
                perceptual_mid=self._perceptual(img1, batch.images, m1, batch.landmarks),
                perceptual_high=self._perceptual(img2, batch.images, m2, batch.landmarks),
                landmark=landmark_loss(lm_pred, self._to224(batch.landmarks)),
                tv=total_variation(d_units),
                displacement_l1=displacement_l1(h_units, detail.valid),
                contour=con,
                adv_mid=adv_mid,
                adv_high=adv_high,
                supervised_mid=sup_mid,
                supervised_high=sup_high,
            )
            total = hrn_total_loss(terms, weights)
            optim["generators"].zero_grad(set_to_none=True)
            total.backward()
            optim["generators"].step()
            values: dict[str, Any] = {
                "kind": "sup" if supervised else "self",
                "total": float(total.detach()),
                **_floats(terms),
                "alpha": float(hrn.alpha.detach()),
                "beta": float(hrn.beta.detach()),
            }
            if supervised and adversarial:
                for p in discs.parameters():
                    p.requires_grad_(True)
                with torch.no_grad():
                    real_mid = (target / unit) * mask_mid
                    real_high = (disp_gt / unit) * mask_high
                pm = d_mid(torch.cat([real_mid, (d_units * mask_mid).detach()]))
                ph = d_high(torch.cat([real_high, (h_units * mask_high).detach()]))
                b = real_mid.shape[0]
                d_loss = gan_discriminator_loss(pm[:b], pm[b:], gan_mode) + gan_discriminator_loss(
                    ph[:b], ph[b:], gan_mode
                )
                optim["disc"].zero_grad(set_to_none=True)
                d_loss.backward()
                optim["disc"].step()
                values["disc"] = float(d_loss.detach())
            return values

        return optim, samplers, step


def training_refinement(options: HRNOptions) -> RefineConfig | None:
    """The :class:`models.refine.RefineConfig` the detail stage refines its training faces with
    (``hrn_options.refine_steps``, ``refine_lr``, ``refine_start``); None at 0 steps."""
    from models.refine import RefineConfig

    if options.refine_steps <= 0:
        return None
    return RefineConfig(
        steps=options.refine_steps, lr=options.refine_lr, start=options.refine_start
    )


def _refined_pair(step: int, share: float) -> bool:
    """Whether detail-stage ``step`` (1-based) takes the refined M0 at ``refine_share``
    ``share``: steps go by pairs (self-supervised, supervised), and pair ``p`` does when
    ``floor((p + 1) share) > floor(p share)``, which spreads ``share`` of them evenly."""
    p = (step - 1) // 2
    return math.floor((p + 1) * share + 1e-9) > math.floor(p * share + 1e-9)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def _saved_config_matches(out: Path, config: TrainConfig) -> None:
    path = out / "config.yaml"
    if not path.is_file():
        return
    saved = config_to_dict(load_config(path, TrainConfig))
    mine = config_to_dict(config)
    if saved != mine:
        diffs = _diff(saved, mine)
        raise FacehdError(
            f"{out}: the run was started with another configuration ({'; '.join(diffs[:5])}); "
            "resume with the same config or start a new --out"
        )


def _checkpoint_config_matches(trainer: Trainer, existing: Sequence[Path]) -> None:
    """Refuse a resume whose configuration is not the one the run's newest checkpoint was
    trained with: ``config.yaml`` edited in the run folder would otherwise be taken as the
    run's (the resume is compared with that file)."""
    if not existing:
        return
    newest = max(existing, key=lambda p: p.stat().st_mtime_ns)
    data = trainer._read_own_checkpoint(newest)
    try:
        theirs = config_to_dict(config_from_dict(TrainConfig, data["config"], source=str(newest)))
    except (ConfigError, KeyError) as exc:
        raise InputFileError(newest, f"checkpoint config unreadable: {exc}") from exc
    mine = config_to_dict(trainer.config)
    if theirs != mine:
        diffs = _diff(theirs, mine)
        raise FacehdError(
            f"{newest}: the run was trained with another configuration than its config.yaml "
            f"says ({'; '.join(diffs[:5])}): config.yaml was changed after the run saved this "
            "checkpoint; put the run's settings back, or start a new --out"
        )


_DATA_RECORD = "data.json"
"""Run-folder file naming the datasets a run trains on (:func:`dataset_fingerprint`)."""


def dataset_fingerprint(path: str | Path) -> dict[str, Any]:
    """What identifies a dataset's content, cheaply: its schema, samples and build attributes,
    and the SHA-256 of each sample's source file (``source_sha256``, as ``facehd prepare-images``
    and ``facehd build-priors`` store it); a dataset without that field is hashed whole.
    ``content_sha256`` also covers every field of at most 4 KiB per sample (landmarks, crop
    transforms, poses ...): a photo's crop follows from its source file, its landmarks (a
    ``.pts`` file beside it, not in the source hash) and the build attributes.

    Returns ``{"path", "schema", "samples", "sha256", "content_sha256"}``: equal hashes mean the
    same content, wherever the file lies.
    """
    import hashlib
    import json

    from facehd.h5io import file_sha256, open_dataset

    h = hashlib.sha256()
    with open_dataset(path) as ds:
        h.update(ds.schema.encode())
        h.update(json.dumps(ds.attrs, sort_keys=True, default=str).encode())
        for sid in ds.sample_ids:
            h.update(sid.encode() + b"\0")
        if "source_sha256" in ds.fields:
            for digest in ds.read_field("source_sha256"):
                h.update(digest.encode() + b"\0")
        else:
            h.update(file_sha256(path).encode())
        content = h.copy()
        for name in sorted(ds.fields):
            spec = ds.fields[name]
            if name == "source_sha256" or spec.item_bytes > 4096:
                continue
            values = ds.read_field(name) if len(ds) else []
            content.update(name.encode() + b"\0")
            if spec.dtype == "str":
                content.update("\0".join(values).encode())
            else:
                content.update(np.ascontiguousarray(values).tobytes())
        schema, n = ds.schema, len(ds)
    return {
        "path": str(Path(path).resolve()),
        "schema": schema,
        "samples": n,
        "sha256": h.hexdigest(),
        "content_sha256": content.hexdigest(),
    }


def _named(fingerprint: dict | None) -> str:
    """A dataset of :func:`dataset_fingerprint` in words: its path and size, or none."""
    if fingerprint is None:
        return "none"
    return f"{fingerprint.get('path', '?')} ({fingerprint.get('samples', '?')} samples)"


def run_data_matches(
    out: str | Path,
    *,
    photos: str | Path | None,
    priors: str | Path | None,
    pairs: str | Path | None = None,
    new_run: bool = False,
) -> None:
    """Check that the run in ``out`` was trained on these datasets (its ``data.json``): a run
    resumed, or reused, on other data would mix them silently. The record is written for a
    ``new_run`` (replacing one left by a start that saved no checkpoint), and where a run has
    none (one from before the record existed).

    Raises
    ------
    FacehdError
        The run's record names other content for one of the datasets (the message says which).
    """
    import json

    from facehd.mesh import atomic_write_bytes

    out = Path(out)
    given = {"photos": photos, "priors": priors, "pairs": pairs}
    mine = {k: None if v is None else dataset_fingerprint(v) for k, v in given.items()}
    path = out / _DATA_RECORD
    if path.is_file() and not new_run:
        saved = _read_data_record(path)
        for key, now in mine.items():
            was = saved.get(key)
            # a record from before content_sha256 existed is compared by its sha256
            which = "content_sha256" if "content_sha256" in (was or {}) else "sha256"
            if (was or {}).get(which) != (now or {}).get(which):
                if was and now and _named(was) == _named(now):  # the same file, edited
                    raise FacehdError(
                        f"{out}: the run was trained on other {key}: {_named(now)} is the file it "
                        "was trained on, but its content changed since (its hash differs); give "
                        "the run's data or start a new --out"
                    )
                raise FacehdError(
                    f"{out}: the run was trained on other {key} ({_named(was)}) than given now "
                    f"({_named(now)}); give the run's data or start a new --out"
                )
    else:
        atomic_write_bytes(path, (json.dumps(mine, indent=2) + "\n").encode())


def _read_data_record(path: Path) -> dict[str, Any]:
    """A run's ``data.json``: dataset role -> its fingerprint (a mapping) or null."""
    import json

    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(
            path, f"unreadable record of the datasets the run trained on ({exc})"
        ) from exc
    if not isinstance(saved, dict) or not all(
        v is None or isinstance(v, dict) for v in saved.values()
    ):
        raise InputFileError(
            path,
            "not a record of the datasets the run trained on (a mapping of photos, priors, "
            "pairs to their fingerprints)",
        )
    return saved


def _diff(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if a == b else [f"{where}: {a!r} in the run, {b!r} now"]


def _run_lock(out: Path) -> ExitStack:
    """Take the run folder (``OUT/.train.lock``, :func:`facehd.csvtext.locked`) for this run, or
    refuse: a second ``facehd train`` into the same folder (or a resume beside a run still going)
    would interleave its checkpoints and logs. Held until the returned stack closes."""
    from facehd.csvtext import LockHeld, locked

    stack = ExitStack()
    try:
        stack.enter_context(locked(out / "train", wait=False))
    except LockHeld as held:
        raise FacehdError(
            f"{out}: another facehd train is writing to this run ({held.holder}); wait for it "
            "to end (or stop it), or choose another --out"
        ) from None
    return stack


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    photos: str | Path | None = None,
    priors: str | Path | None = None,
    pairs: str | Path | None = None,
    stages: Sequence[str] | None = None,
    resume: bool = False,
    init: str | Path | None = None,
    callback: StepCallback | None = None,
) -> TrainResult:
    """Train the stages ``stages`` (in order) into the run folder ``out``.

    Parameters
    ----------
    config : the configuration (resolved here: the photos' template, saved as config.yaml).
    out : run folder; an existing run is refused unless ``resume``.
    photos : ``facehd prepare-images`` dataset (base and hrn stages).
    priors : ``facehd build-priors`` dataset with lab photos (hrn stage with priors; the
        de-retouching pairs when ``pairs`` is not given).
    pairs : photos dataset with an ``image_clean`` field (de-retouching pairs).
    stages : subset of ``base``, ``deretouch``, ``hrn``; None: all three for a new run, and for
        ``resume`` the stages the run was last given (its ``stages.json``).
    resume : continue the stages of an existing run exactly where its checkpoints are (a
        run killed before its first checkpoint, which holds only its ``config.yaml``, starts
        over); a folder without a run is refused.
    init : initialise the networks from this checkpoint (a facehd run's ``model.pt`` /
        checkpoint, or the official HRN checkpoint) instead of from the run's earlier stages.
    callback : called after every step as ``callback(stage, step, total, values)``.

    Raises
    ------
    FacehdError
        Existing run without ``resume``, ``resume`` without a run, another configuration
        than the run's, a missing dataset, a priors file of another model;
        :class:`~facehd.errors.InputFileError` for unreadable or foreign files.
    """
    out = Path(out)
    given = stages is not None
    if stages is None:
        stages = recorded_stages(out) if resume else list(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"stages must be among {STAGES}, got {list(stages)}")
    stages = [s for s in STAGES if s in set(stages)]
    if out.exists() and not out.is_dir():
        raise FacehdError(f"{out}: exists and is not a folder; give a run folder as --out")
    _check_run_folder_can_be_made(out)
    if init is not None and not Path(init).is_file():  # before the run folder is made
        why = "is a folder: give the checkpoint file" if Path(init).is_dir() else "not found"
        raise InputFileError(init, f"checkpoint file (--init) {why}")
    ckpt_dir = out / "checkpoints"
    existing = sorted(ckpt_dir.glob("*.pt")) if ckpt_dir.is_dir() else []
    if resume and not existing and not (out / "config.yaml").is_file():
        # a mistyped --out would otherwise start a new run, on the default preset when no
        # --config is given, where the user meant to continue one
        raise FacehdError(
            f"{out}: no training run to resume (no checkpoints, no config.yaml); check --out, "
            "or start the run without --resume"
        )
    trainer = Trainer(config, out, photos=photos, priors=priors, pairs=pairs)
    _check_datasets_given(config, stages, photos=photos, priors=priors, pairs=pairs)
    init_stages = None  # the stages the --init checkpoint had finished, once it is loaded
    if not existing:  # a new run: a bad dataset or --init is refused before its folder is made
        trainer.open_data(stages)
        if init is not None:
            init_stages = trainer.load_networks(init)
    with ExitStack() as held:
        problem = None
        if trainer.dist.main:  # the first process takes the run folder and checks it
            try:
                try:
                    out.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    why = exc.strerror or exc
                    raise FacehdError(f"{out}: cannot make the run folder ({why})") from None
                held.enter_context(_run_lock(out))
                _prepare_run_folder(trainer, out, existing, resume, init)
                _record_stages(out, stages)
            except ValueError as exc:  # FacehdError, InputFileError
                problem = exc
        _raise_everywhere(problem, trainer.dist)
        stop = trainer.stop if trainer.dist.world == 1 else nullcontext()
        if resume and not given and trainer.dist.main:
            trainer.log.message(f"stages taken from the run's {STAGES_RECORD}: {', '.join(stages)}")
        with stop, deterministic_kernels(config.deterministic):
            return _train_stages(trainer, out, stages, resume, init, init_stages, callback)


#: The run folder's record of the stages it was last given (``--stage``), which a ``--resume``
#: without ``--stage`` continues.
STAGES_RECORD = "stages.json"


def recorded_stages(out: str | Path) -> list[str]:
    """The stages run folder ``out`` was last given (its ``stages.json``); all three for a run
    without the record (made before it was kept).

    Raises
    ------
    InputFileError
        An unreadable record.
    """
    record = Path(out) / STAGES_RECORD
    if not record.is_file():
        return list(STAGES)
    try:
        stages = [str(x) for x in json.loads(record.read_text())["stages"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(record, f"unreadable record of the run's stages ({exc})") from exc
    if not stages or any(x not in STAGES for x in stages):
        raise InputFileError(record, f"stages must be among {STAGES}, got {stages}")
    return stages


def _record_stages(out: Path, stages: Sequence[str]) -> None:
    from facehd.csvtext import atomic_write_text

    atomic_write_text(out / STAGES_RECORD, json.dumps({"stages": list(stages)}) + "\n")


def _check_run_folder_can_be_made(out: Path) -> None:
    """A FacehdError, before any work, where ``out`` cannot be made or written in: a file
    where one of its folders should be, or a folder that is not writable."""
    there = nearest_existing(out)
    if not there.is_dir():
        raise FacehdError(f"{out}: cannot make the run folder: {there} is a file, not a folder")
    if not os.access(there, os.W_OK | os.X_OK):
        what = "the run folder" if there == out else f"{there}, where it would be made,"
        raise FacehdError(f"{out}: cannot write in {what} (no permission, or read-only)")


def _check_datasets_given(
    config: TrainConfig,
    stages: Sequence[str],
    *,
    photos: str | Path | None,
    priors: str | Path | None,
    pairs: str | Path | None,
) -> None:
    """Every dataset the selected stages read is given, or a FacehdError naming the stage and
    the option, before anything is made or trained (a later stage would otherwise find it
    missing only once the stages before it had trained)."""
    needed: dict[str, tuple[str, list[str]]] = {}  # option -> what it gives, the stages

    def need(option: str, what: str, stage: str) -> None:
        needed.setdefault(option, (what, []))[1].append(stage)

    for stage in stages:
        if stage in ("base", "hrn") and photos is None:
            need("--photos", "the in-the-wild photos, a prepare-images dataset", stage)
        if stage == "hrn" and config.hrn_options.priors and priors is None:
            need("--priors", "the ground-truth maps and lab photos of build-priors", stage)
        if stage == "deretouch" and pairs is None and priors is None:
            need("--priors or --pairs", "the de-retouching pairs, photos with clean twins", stage)
    if needed:
        raise FacehdError(
            "; ".join(
                f"give {option} ({what}): stage{'s' if len(names) > 1 else ''} "
                f"{', '.join(names)} read{'' if len(names) > 1 else 's'} it"
                for option, (what, names) in needed.items()
            )
        )


def _raise_everywhere(problem: ValueError | None, d: _Dist) -> None:
    """Raise ``problem``, found by the first process, on every process. The others, waiting for
    it at the next collective call, would otherwise fail there with a connection error and a
    traceback of their own; they raise a :class:`FacehdError` saying the first one stopped the
    run (whose error says why). A collective call: every process syncs here."""
    failed = problem is not None
    if d.active:
        import torch.distributed as dist

        flag = torch.tensor([1.0 if failed else 0.0])
        dist.all_reduce(flag)
        failed = bool(flag.item() > 0)
    if problem is not None:
        raise problem
    if failed:
        raise FacehdError("the first process stopped the run (its error says why)")


def _prepare_run_folder(
    trainer: Trainer,
    out: Path,
    existing: list[Path],
    resume: bool,
    init: str | Path | None,
) -> None:
    """The first process's checks and records of the run folder it holds: no run there unless
    ``resume``; the same config, data and ``--init`` as the run's; files a killed run was
    writing removed; ``config.yaml`` written."""
    config = trainer.config
    photos, priors, pairs = trainer.photos_path, trainer.priors_path, trainer.pairs_path
    if existing and not resume:
        raise FacehdError(
            f"{out} already holds a training run ({existing[0].name}); "
            "use --resume to continue it or choose another --out"
        )
    # files a killed run was writing (checkpoints, model.pt, logs, config: never complete,
    # saves go through os.replace); this run holds the folder, so none is being written now
    # '*' matches hidden names too
    for pattern in ("checkpoints/*.pt.tmp*", "refined/*.pt.tmp*", "*.tmp*"):
        for partial in out.glob(pattern):
            if partial.is_file():
                partial.unlink(missing_ok=True)
    if resume:
        _saved_config_matches(out, config)
        _checkpoint_config_matches(trainer, existing)
    run_data_matches(out, photos=photos, priors=priors, pairs=pairs, new_run=not resume)
    _run_init_matches(out, init, resume)
    save_config(out / "config.yaml", config)


def _train_stages(
    trainer: Trainer,
    out: Path,
    stages: list[str],
    resume: bool,
    init: str | Path | None,
    init_stages: list[str] | None,
    callback: StepCallback | None,
) -> TrainResult:
    """:func:`train` once the trainer is made and the run folder is taken and checked;
    ``init_stages``: what :meth:`Trainer.load_networks` returned for ``init`` when :func:`train`
    already loaded it (None: not loaded yet)."""
    priors = trainer.priors_path
    if init is None and resume and (out / INIT_RECORD).is_file():
        init = _recorded_init(out)
        trainer.log.message(f"--init taken from the run's {INIT_RECORD}: {init}")
    # the datasets the stages will read, opened now (a new run's, before its folder was made;
    # a run's own are compared with its record first): a priors file of another model, or pairs
    # without clean twins, would otherwise stop the run only after the stages before them
    trainer.open_data(stages)
    if priors is not None:
        trainer.lab()  # what the lab photos hold, in the run's log

    # the stages whose checkpoint in the run is finished (each checkpoint read once)
    finished = {
        s
        for s in STAGES
        if trainer.checkpoint_path(s).is_file()
        and trainer._read_own_checkpoint(trainer.checkpoint_path(s)).get("done")
    }
    done = [s for s in STAGES if s in finished and s not in stages]
    _refuse_stages_out_of_order(trainer, stages, finished if resume else set())
    steps: dict[str, int] = {}
    seconds: dict[str, float] = {}
    if any(s in ("base", "hrn") for s in stages):  # the stages with a perceptual loss
        trainer.say_perceptual()
    trainer.say_precision()
    done_init: list[str] = []
    if init is not None:
        done_init = trainer.load_networks(init) if init_stages is None else init_stages
        trainer.log.message(f"networks initialised from {init} (stages {done_init})")
    saved = False
    for s in stages:
        ckpt = trainer.checkpoint_path(s)
        if not (resume and ckpt.is_file()) and init is None:
            earlier = [e for e in STAGES[: STAGES.index(s)] if trainer.checkpoint_path(e).is_file()]
            if earlier and not trainer.load_networks(trainer.checkpoint_path(earlier[-1])):
                trainer.log.message(
                    f"stage {s} starts from the {earlier[-1]} stage's checkpoint, which is "
                    f"unfinished (stopped before its last step): to finish that stage first, "
                    f"run it with --stage {earlier[-1]} --resume"
                )
            if s == "hrn" and "base" not in earlier:
                trainer.log.message(
                    "stage hrn starts without a trained face analyzer (no base stage in this run "
                    "and no --init): M0 is the mean face"
                )
        n, t = trainer.run_stage(s, resume=resume, callback=callback)
        steps[s], seconds[s] = n, t
        trainer.log.message(
            f"stage {s}: {n} steps in {t:.1f} s ({n / t if t > 0 else 0.0:.2f} it/s)"
        )
        done.append(s)
        # model.pt holds the networks of the latest stage in the pipeline's order: a stage done
        # before and loaded again (no steps) does not replace a later stage's networks
        if STAGES.index(s) == max(STAGES.index(x) for x in done):
            trainer._save_model(_model_stages(done, done_init), done_init)
            saved = True
    if not saved and done and not (out / "model.pt").is_file():
        latest = trainer.checkpoint_path(max(done, key=STAGES.index))
        trainer._load_network_state(trainer._read_own_checkpoint(latest)["state"], latest)
        trainer._save_model(_model_stages(done, done_init), done_init)
    trainer.log.close()
    model_path = out / "model.pt" if (out / "model.pt").is_file() else None
    return TrainResult(out, [x for x in STAGES if x in done], steps, seconds, model_path)


def _model_stages(done: Sequence[str], from_init: Sequence[str]) -> list[str]:
    """The stages ``model.pt``'s networks hold trained: those of the run and of its ``--init``
    checkpoint, in the pipeline's order."""
    return [s for s in STAGES if s in done or s in from_init]


def _refuse_stages_out_of_order(
    trainer: Trainer, stages: Sequence[str], finished: set[str]
) -> None:
    """Refuse to train a stage after a later stage of the pipeline (base, deretouch, hrn) has
    been trained in the run: that stage learnt on networks without this one's training, and
    each stage starts from the networks of the stages before it, so the run's model would
    hold one of the two from before the other. ``finished``: the stages this run resumes as
    finished (loaded, not trained)."""
    for k, s in enumerate(STAGES):
        if s not in stages or s in finished:
            continue
        later = [e for e in STAGES[k + 1 :] if trainer.checkpoint_path(e).is_file()]
        if later:
            path = trainer.checkpoint_path(later[0])
            raise FacehdError(
                f"{trainer.out}: stage {s} would be trained after stage {later[0]}, which this "
                f"run has trained already ({path.parent.name}/{path.name}) on networks without "
                f"{s}'s training: the run's model would hold one of them from before the other. "
                f"Train {s} in a new run (another --out, --init this run's model.pt), or move "
                f"{path.parent.name}/{path.name} away to train {later[0]} again after it"
            )


#: The run folder's record of the checkpoint ``--init`` started it from.
INIT_RECORD = "init.json"


def _recorded_init(out: Path) -> Path:
    """The checkpoint a run was started from (its ``init.json``), checked unchanged."""
    from facehd.h5io import file_sha256

    record = out / INIT_RECORD
    entry = _recorded_init_entry(record)
    path = Path(entry["path"])
    if not path.is_file():
        raise InputFileError(
            path,
            f"this run was started with --init {path} (recorded in {record}), which is gone; "
            "give the same checkpoint with --init to resume",
        )
    if file_sha256(path) != entry["sha256"]:
        raise InputFileError(
            path,
            f"changed since this run was started from it (recorded in {record}); give the "
            "checkpoint the run started from with --init, or start a new run",
        )
    return path


def _run_init_matches(out: Path, init: str | Path | None, resume: bool) -> None:
    """Record a new run's ``--init`` (path and content hash) in ``init.json``; a resumed run
    must start from the same checkpoint: without ``--init`` it takes the recorded one, with
    another file (other content) it is refused, as is ``--init`` for a run started without,
    once a checkpoint has been saved."""
    from facehd.csvtext import atomic_write_text
    from facehd.h5io import file_sha256

    record = out / INIT_RECORD
    saved = any((out / "checkpoints").glob("*.pt"))  # a stage has progressed
    # (a run that saved nothing yet, one whose --init could not be read, say, trained nothing
    # from its recorded checkpoint: another --init starts it afresh)
    if resume and record.is_file() and (saved or init is None):
        if init is not None:
            recorded = _recorded_init_entry(record)
            if file_sha256(init) != recorded["sha256"]:
                raise FacehdError(
                    f"{out}: this run was started with --init {recorded['path']}; "
                    f"{init} holds other weights (resume with the same checkpoint, or "
                    "without --init to take the recorded one)"
                )
        return
    if resume and saved:
        if init is not None:
            raise FacehdError(
                f"{out}: this run was started without --init; resuming it from {init} would "
                "change it (resume without --init, or start a new run with it)"
            )
        return
    if init is None:
        record.unlink(missing_ok=True)
        return
    text = json.dumps({"path": str(Path(init).resolve()), "sha256": file_sha256(init)}, indent=2)
    atomic_write_text(record, text + "\n")


def _recorded_init_entry(record: Path) -> dict[str, str]:
    """``{"path", "sha256"}`` of a run's ``init.json``."""
    try:
        data = json.loads(record.read_text())
        return {"path": str(data["path"]), "sha256": str(data["sha256"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(record, f"unreadable record of the run's --init ({exc})") from exc


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m models.train`` (for ``torchrun``): the same options as ``facehd train``."""
    import argparse
    import inspect

    p = argparse.ArgumentParser(
        prog="python -m models.train",
        description=inspect.cleandoc(train.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the docstring's own layout
    )
    p.add_argument(
        "--config",
        help="preset (tiny-cpu, paper) or a YAML/JSON file (default: tiny-cpu; with --resume, "
        "the run's own config.yaml)",
    )
    p.add_argument("--photos")
    p.add_argument("--priors")
    p.add_argument("--pairs")
    p.add_argument("--out", required=True)
    p.add_argument("--stage", action="append", choices=[*STAGES, "all"])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init")
    p.add_argument("--steps", type=int, help="override the steps of every selected stage")
    p.add_argument("--identity-network", help="the perceptual loss's identity network weights")
    p.add_argument(
        "--set",
        action="append",
        dest="overrides",
        metavar="KEY=VALUE",
        help="change one setting of the config (dotted key, as in its YAML); repeat for more",
    )
    a = p.parse_args(argv)
    # one process speaks for the run (the others would print every line again)
    quiet = int(os.environ.get("RANK", "0")) != 0
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    own = Path(a.out) / "config.yaml"
    config = a.config or (str(own) if a.resume and own.is_file() else "tiny-cpu")
    try:
        cfg = load_train_config(config)
        if a.overrides:
            cfg = apply_overrides(cfg, a.overrides)
        stages = None if not a.stage else STAGES if "all" in a.stage else a.stage
        if a.steps is not None:
            for s in stages or STAGES:
                getattr(cfg, s).steps = a.steps
        if a.identity_network is not None:
            cfg.identity_network = a.identity_network
        train(
            cfg,
            a.out,
            photos=a.photos,
            priors=a.priors,
            pairs=a.pairs,
            stages=stages,
            resume=a.resume,
            init=a.init,
            callback=None if quiet else progress_lines(),
        )
    except (FacehdError, ValueError) as exc:  # what the user can mend: the message, no traceback
        if not quiet:
            print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    main()

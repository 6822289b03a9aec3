"""Small training datasets with exact truth and a tiny trainer config for the models tests.

- :func:`make_scans`: synthetic scans with lab photos (``facehd synth --photos V``).
- :func:`write_truth_priors`: a ``facehd.priors/1`` file holding the TRUE maps and coefficients of
  the scans (what ``facehd build-priors`` estimates), pointing at the scans as sources.
- :func:`write_truth_photos`: a ``facehd.photos/1`` file of the photos' aligned crops with their
  true landmarks and skin masks (what ``facehd prepare-images`` detects), optionally with the
  clean twin ``image_clean`` (a de-retouching pairs file).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from facehd.h5io import ShardedDatasetWriter, file_sha256
from facehd.morphable import load_model
from models.data import photos_dataset_from_synthetic
from pipelines.build_priors import SCHEMA as PRIORS_SCHEMA
from pipelines.build_priors import fields_for
from pipelines.fitting import FitConfig
from pipelines.synth import SynthConfig, synth_scans


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Single-threaded torch while open (the test machine is small and shared; results do not
    depend on it, but a run and its resumed twin must use the same thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_scans(out: Path, subjects: int, expressions: int = 1, views: int = 2, seed: int = 0):
    cfg = SynthConfig(
        subjects=subjects,
        expressions=expressions,
        seed=seed,
        photos=views,
        photo_size=160,
        dense_resolution=96,
        holes=0,
        extras=(),
    )
    return synth_scans(out, cfg)


_KNOWN = (
    "deformation deformation_mask displacement displacement_mask identity expression scale "
    "rotation translation residual residual_mean landmark_rms face_points units source "
    "source_sha256 subject expression_name"
).split()


def _defaults(fields: dict, known: list[str]) -> dict:
    """Neutral values for schema fields this helper does not know (strings empty, numbers 0)."""
    out = {}
    for name, spec in fields.items():
        if name in known:
            continue
        out[name] = "" if spec.dtype == "str" else np.zeros(spec.shape, dtype=spec.dtype)
    return out


def write_truth_priors(
    scans_dir: Path, out: Path, model_name: str = "facehd-synth", fingerprint: dict | None = None
) -> Path:
    from facehd.uv import rasterize_uv

    model = load_model("facehd-synth")
    fields = fields_for(model.n_id, model.n_exp, FitConfig())
    fit = model.regions.fit.astype(np.float64)
    dmask = rasterize_uv(model.uvs, model.faces, (64, 64)).interpolate(fit) > 0.99
    hmask = rasterize_uv(model.uvs, model.faces, (256, 256)).interpolate(fit) > 0.99
    attrs = {
        "units": "mm",
        "model": model_name,
        "model_fingerprint": fingerprint or model.fingerprint,
        "deformation_size": 64,
        "displacement_size": 256,
    }
    with ShardedDatasetWriter(out, PRIORS_SCHEMA, attrs, fields, overwrite=True) as w:
        for gt_path in sorted(Path(scans_dir).glob("*.gt.npz")):
            sid = gt_path.name[: -len(".gt.npz")]
            gt = np.load(gt_path)
            scan = gt_path.with_name(sid + ".ply")
            w.add(
                sid,
                {
                    "deformation": gt["deformation"].astype(np.float32),
                    "deformation_mask": dmask,
                    "displacement": (gt["displacement"] * hmask).astype(np.float32),
                    "displacement_mask": hmask,
                    "identity": gt["identity"].astype(np.float32),
                    "expression": gt["expression"].astype(np.float32),
                    "scale": np.float64(gt["scale"]),
                    "rotation": gt["rotation"],
                    "translation": gt["translation"],
                    "residual": np.zeros(3, np.float32),
                    "residual_mean": np.zeros(3, np.float32),
                    "landmark_rms": np.float32(0),
                    "face_points": np.int64(1),
                    "units": "mm",
                    "source": str(scan),
                    "source_sha256": file_sha256(scan),
                    "subject": sid.split("_")[0],
                    "expression_name": sid.split("_")[1],
                    **_defaults(fields, known=_KNOWN),
                },
            )
        w.finalize()
    return out


def write_truth_photos(
    scans_dir: Path, out: Path, *, clean: bool = False, template: str = "facehd-synth"
) -> Path:
    return photos_dataset_from_synthetic(scans_dir, out, clean=clean, template=template)


def tiny_config():
    """A trainer config small enough for tests: 48 px crops, 32-texel maps, a few steps."""
    from models.train import tiny_cpu_train_config

    c = tiny_cpu_train_config()
    c.image_size = 48
    c.model.network.high_size = 32
    c.model.network.mid_size = 16
    for stage, steps in (("base", 3), ("deretouch", 2), ("hrn", 5)):
        getattr(c, stage).steps = steps
        getattr(c, stage).batch_size = 2
    c.checkpoint_every = 2
    c.log_every = 1
    # the paper's adversarial weight (tiny-cpu's is 0), so that the tests train, save and
    # resume the discriminators too
    c.model.hrn_losses.adversarial = 0.2
    return c


def tiny_system_on_random_crop():
    """``(system, coarse, images)``: a :func:`tiny_config` system on facehd-synth (seed 0) with
    its deformation scale ``alpha`` at 0.5, so that M1 moves visibly off M0, a random crop and
    the base model's face of it (computed without gradients)."""
    import torch

    from models.system import FaceSystem

    torch.manual_seed(0)
    cfg = tiny_config()
    system = FaceSystem(cfg.model, load_model("facehd-synth"), cfg.image_size)
    with torch.no_grad():
        system.hrn.alpha.fill_(0.5)
        images = torch.rand(1, 3, cfg.image_size, cfg.image_size)
        coarse = system.coarse(images)
    return system, coarse, images


def states_equal(a: Path, b: Path) -> list[str]:
    """The network tensors of checkpoints / model files ``a`` and ``b`` that differ (empty: the
    same networks, bit for bit)."""
    import torch

    from models.checkpoints import read_checkpoint

    sa, sb = read_checkpoint(a)["state"], read_checkpoint(b)["state"]
    return [f"{p}.{k}" for p in sa for k in sa[p] if not torch.equal(sa[p][k], sb[p][k])]

"""Worker of test_ddp.py, started by torchrun (2 CPU processes, gloo): trains the tiny config
with DistributedDataParallel and writes what this rank holds afterwards.

``ddp_worker.py PHOTOS PRIORS OUT``: the base and detail stages, once.
``ddp_worker.py --resume PHOTOS OUT``: the base stage twice, uninterrupted into ``OUT/whole`` and
stopped after a checkpoint then resumed into ``OUT/resumed``.
``ddp_worker.py --refine PHOTOS OUT``: the photos' refined base faces (``refine_steps`` 2) of the
untrained analyzer, each rank's table saved as ``OUT/faces<rank>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from hrn_testdata import tiny_config  # noqa: E402

from models.train import Trainer  # noqa: E402


def main() -> None:
    photos, priors, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    torch.set_num_threads(1)
    cfg = tiny_config()
    cfg.base.steps, cfg.hrn.steps = 1, 2
    cfg.base.batch_size = cfg.hrn.batch_size = 1
    # the crops at the base model's own size, as users train: the photos then reach the
    # analyzer as they are stacked (channels-last), unresized
    cfg.image_size = 224
    trainer = Trainer(cfg, out, photos=photos, priors=priors)
    rank = trainer.dist.rank
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    initial = {k: v.clone() for k, v in trainer.system.hrn.state_dict().items()}
    losses: list[float] = []
    trainer.run_stage("base", callback=lambda s, k, n, v: losses.append(v["total"]))
    trainer.run_stage("hrn", callback=lambda s, k, n, v: losses.append(v["total"]))
    state = {k: v.detach().clone() for k, v in trainer.system.hrn.state_dict().items()}
    torch.save(
        {"world": trainer.dist.world, "initial": initial, "state": state, "losses": losses},
        out / f"rank{rank}.pt",
    )
    dist.barrier()
    dist.destroy_process_group()


class _Stop(Exception):
    pass


def resume_main() -> None:
    photos, out = sys.argv[2], Path(sys.argv[3])
    torch.set_num_threads(1)
    cfg = tiny_config()
    cfg.base.steps, cfg.base.batch_size, cfg.checkpoint_every = 6, 1, 3
    params: dict[str, dict[str, torch.Tensor]] = {}

    def stop_at(stage: str, step: int, total: int, values: dict) -> None:
        if step == 4:  # after step 3's checkpoint, as a run killed then
            raise _Stop

    for name in ("whole", "resumed"):
        trainer = Trainer(cfg, out / name, photos=photos)
        if trainer.dist.rank == 0:
            (out / name).mkdir(parents=True, exist_ok=True)
        dist.barrier()
        if name == "resumed":
            try:
                trainer.run_stage("base", callback=stop_at)
            except _Stop:
                pass
            dist.barrier()  # rank 0 has written the checkpoint
            trainer = Trainer(cfg, out / name, photos=photos)
        trainer.run_stage("base", resume=name == "resumed")
        net = trainer.system.hrn.net_recon
        params[name] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.save(params, out / f"rank{dist.get_rank()}.pt")
    dist.barrier()
    dist.destroy_process_group()


def refine_main() -> None:
    photos, out = sys.argv[2], Path(sys.argv[3])
    torch.set_num_threads(1)
    cfg = tiny_config()
    cfg.hrn_options.refine_steps = 2
    trainer = Trainer(cfg, out, photos=photos)
    rank = trainer.dist.rank
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    faces = trainer.refined_faces(trainer.photos(), "photos")
    torch.save({"flat": faces.flat}, out / f"faces{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    {"--resume": resume_main, "--refine": refine_main}.get(sys.argv[1], main)()

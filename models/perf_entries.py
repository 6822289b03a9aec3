"""``facehd perf`` entries of the models package."""

from __future__ import annotations

import torch

from facehd.perf import (
    PerfRow,
    count_gflop,
    matmul_peak_gflops,
    register,
    single_thread,
    timeit,
)

ENTRY = "hrn-forward"


def _hrn_inputs(size: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(batch, 3, size, size, generator=g) * 50.0
    tex = torch.rand(batch, 3, size, size, generator=g)
    mask = torch.ones(batch, 1, size, size)
    return pos, tex, mask


def _project(points: torch.Tensor) -> torch.Tensor:
    """A frontal orthographic stand-in camera (1 px per mm around the image centre)."""
    return points[..., :2] + 112.0


@register(ENTRY, "HRN forward (batch 1, one core): tiny config and paper-size networks")
def hrn_forward(quick: bool) -> list[PerfRow]:
    from models.analyzer import FaceAnalyzer
    from models.config import tiny_cpu_model_config
    from models.hrn import HRN
    from models.pix2pix import ResnetGenerator

    rows: list[PerfRow] = []
    repeat = 1 if quick else 3
    with single_thread(), torch.no_grad():
        cfg = tiny_cpu_model_config().network
        tiny = HRN(cfg).eval()
        pos, tex, mask = _hrn_inputs(cfg.high_size)
        t = timeit(lambda: tiny(pos, tex, mask, _project), repeat)
        note = (
            f"maps {cfg.mid_size}/{cfg.high_size}, "
            f"{cfg.mid.n_blocks} blocks, {cfg.mid.filters} filters"
        )
        rows.append(
            PerfRow(ENTRY, "tiny HRN detail forward (with re-alignment)", t * 1e3, "ms", note=note)
        )

        mid = ResnetGenerator(6, 3).eval()
        x_mid = torch.randn(1, 6, 64, 64)
        t = timeit(lambda: mid(x_mid), repeat)
        rows.append(PerfRow(ENTRY, "paper mid_net forward", t * 1e3, "ms", note="6->3, 64x64"))
        if not quick:
            high = ResnetGenerator(9, 1).eval()
            x_high = torch.randn(1, 9, 256, 256)
            t = timeit(lambda: high(x_high), repeat)
            rows.append(
                PerfRow(ENTRY, "paper high_net forward", t * 1e3, "ms", note="9->1, 256x256")
            )

            analyzer = FaceAnalyzer().eval()
            img = torch.rand(1, 3, 224, 224)
            t = timeit(lambda: analyzer(img), repeat)
            rows.append(
                PerfRow(ENTRY, "face analyzer (ResNet-50) forward", t * 1e3, "ms", note="224x224")
            )

            from models.identity import IRESNET_LAYERS, IResNet
            from models.losses import PerceptualLoss

            # the perceptual loss as training runs it (render and photo aligned, ArcFace on
            # both, the gradient back to the render; random weights: the cost does not depend
            # on them)
            loss = PerceptualLoss(IResNet(IRESNET_LAYERS["r50"]))
            photo = torch.rand(1, 3, 224, 224)
            lm5 = torch.tensor([[[80.0, 100], [144, 100], [112, 130], [86, 160], [138, 160]]])

            def perceptual() -> None:
                with torch.enable_grad():
                    loss(photo.clone().requires_grad_(True), photo, lm5).backward()

            t = timeit(perceptual, repeat)
            rows.append(
                PerfRow(
                    ENTRY,
                    "perceptual loss, ArcFace IResNet-50 (render and photo, with backward)",
                    t * 1e3,
                    "ms",
                    note="one image pair, 224 crop aligned to 112x112",
                )
            )

            paper = HRN().eval()
            pos, tex, mask = _hrn_inputs(256)
            t = timeit(lambda: paper(pos, tex, mask, _project), repeat)
            rows.append(
                PerfRow(
                    ENTRY,
                    "paper HRN detail forward (with re-alignment)",
                    t * 1e3,
                    "ms",
                    note="64/256",
                )
            )
    return rows


# --------------------------------------------------------------------------------------------
# training speed and reconstruction latency
# --------------------------------------------------------------------------------------------
TRAIN_ENTRY = "hrn-train"
RECONSTRUCT_ENTRY = "hrn-reconstruct"


def _render_faces(folder, n: int, size: int = 224):
    """Faces of facehd-synth rendered straight into the base camera's 224 crop, with their truth.

    Writes ``photos.h5`` (facehd.photos/1: image, mask, landmarks68), one lab-photo file
    ``<id>.photos.npz`` per face and ``priors.h5`` (the fields the trainer reads, with the true
    coefficients and small random maps). Returns (photos, priors) paths.
    """
    import numpy as np

    from facehd.h5io import ShardedDatasetWriter
    from facehd.morphable import load_model
    from facehd.render import Renderer, gamma_to_sh
    from models.system import scaled_hrn_camera

    model = load_model("facehd-synth")
    rng = np.random.default_rng(0)
    cam = scaled_hrn_camera(size, dtype=torch.float64)
    renderer = Renderer(cam)
    faces_t = torch.as_tensor(np.array(model.faces))
    photo_fields = {
        "image": ((size, size, 3), "uint8"),
        "mask": ((size, size), "uint8"),
        "landmarks68": ((68, 2), "float32"),
    }
    prior_fields = {
        "identity": ((model.n_id,), "float32"),
        "expression": ((model.n_exp,), "float32"),
        "deformation": ((64, 64, 3), "float32"),
        "deformation_mask": ((64, 64), "bool"),
        "displacement": ((256, 256), "float32"),
        "displacement_mask": ((256, 256), "bool"),
        "source": ((), "str"),
    }
    photos = ShardedDatasetWriter(
        folder / "photos.h5", "facehd.photos/1", {"config": {"template": "facehd-synth"}},
        photo_fields, overwrite=True,
    )  # fmt: skip
    priors = ShardedDatasetWriter(
        folder / "priors.h5", "facehd.priors/1", {"model": model.name}, prior_fields,
        overwrite=True,
    )  # fmt: skip
    with photos, priors:
        for k in range(n):
            ident = rng.normal(size=model.n_id) * model.id_std
            expr = np.zeros(model.n_exp)
            v = torch.as_tensor(model.vertices(ident, expr))
            a = np.radians(rng.uniform(-20, 20))
            rot = torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
            v = v @ rot.T
            albedo = torch.as_tensor(model.albedo(rng.normal(size=model.n_tex) * model.tex_std))
            gamma = torch.as_tensor(rng.normal(scale=0.1, size=(1, 27)))
            res = renderer.render(v, faces_t, colors=albedo.clamp(0, 1), sh=gamma_to_sh(gamma))
            image = np.round(res.image[0].clamp(0, 1).numpy() * 255).astype(np.uint8)
            mask = res.mask[0].numpy()
            lm = cam.project(v[np.array(model.landmarks68)])[0].numpy()
            sid = f"face{k:03d}"
            photos.add(sid, {"image": image, "mask": mask.astype(np.uint8), "landmarks68": lm})
            np.savez(
                folder / f"{sid}.photos.npz",
                images=image[None], images_clean=image[None], landmarks68=lm[None],
                masks=mask[None],
            )  # fmt: skip
            priors.add(
                sid,
                {
                    "identity": ident, "expression": expr,
                    "deformation": rng.normal(scale=0.3, size=(64, 64, 3)),
                    "deformation_mask": np.ones((64, 64), bool),
                    "displacement": np.zeros((256, 256)),
                    "displacement_mask": np.ones((256, 256), bool),
                    "source": str(folder / f"{sid}.ply"),
                },
            )  # fmt: skip
        photos.finalize()
        priors.finalize()
    return folder / "photos.h5", folder / "priors.h5"


def _stage_speeds(cfg, folder, faces: int, steps: int, entry: str) -> list[PerfRow]:  # noqa: ANN001
    """Iterations per second of each training stage of ``cfg`` on rendered faces."""
    import time

    from models.train import Trainer

    photos, priors = _render_faces(folder, faces)
    trainer = Trainer(cfg, folder / "run", photos=photos, priors=priors)
    (folder / "run").mkdir()
    cuda = trainer.device.type == "cuda"
    rows = []
    for stage in ("base", "deretouch", "hrn"):
        st = getattr(cfg, stage)
        _, _, step = getattr(trainer, f"_setup_{stage}")()
        step(1)  # warm-up (first-call caches, kernel selection)
        if cuda:
            torch.cuda.synchronize(trainer.device)
        t0 = time.perf_counter()
        for k in range(2, 2 + steps):
            step(k)
        if cuda:
            torch.cuda.synchronize(trainer.device)
        dt = (time.perf_counter() - t0) / steps
        from models.precision import mixed_precision_runs

        renderer = trainer.system.renderer().backend.name
        precision = "bfloat16" if mixed_precision_runs(trainer.device, cfg.amp) else "float32"
        note = (
            f"{trainer.device.type}, {renderer} renderer, {precision} networks, "
            f"batch {st.batch_size}, {cfg.image_size} px crops, maps "
            f"{cfg.model.network.mid_size}/{cfg.model.network.high_size}; "
            f"{st.steps} steps -> {st.steps * dt / 60:.1f} min"
        )
        rows.append(PerfRow(entry, f"{stage} stage", 1.0 / dt, "it/s", note=note))
    return rows


@register(TRAIN_ENTRY, "Training iterations per second, tiny-cpu config, one core (each stage)")
def hrn_train(quick: bool) -> list[PerfRow]:
    import tempfile
    from pathlib import Path

    from models.train import tiny_cpu_train_config

    cfg = tiny_cpu_train_config()
    if quick:
        cfg.image_size = 64
        cfg.model.network.high_size = 64
    with tempfile.TemporaryDirectory() as tmp, single_thread():
        return _stage_speeds(cfg, Path(tmp), 2 if quick else 8, 1 if quick else 10, TRAIN_ENTRY)


TRAIN_PAPER_ENTRY = "hrn-train-paper"


def paper_speed_config(device: str = "cuda", batch_size: int | None = None):  # noqa: ANN201
    """The ``paper`` preset's networks, sizes, losses and mixed precision on facehd-synth (the
    preset names the BFM, which is not shipped; the networks and costs are the same)."""
    from models.train import MorphableConfig, paper_train_config

    cfg = paper_train_config()
    cfg.morphable = MorphableConfig(name="facehd-synth")
    cfg.device = device
    if batch_size is not None:
        for stage in ("base", "deretouch", "hrn"):
            getattr(cfg, stage).batch_size = batch_size
    return cfg


@register(TRAIN_PAPER_ENTRY, "Training iterations per second, paper config, CUDA GPU (each stage)")
def hrn_train_paper(quick: bool) -> list[PerfRow]:
    import tempfile
    from pathlib import Path

    if not torch.cuda.is_available():
        return [
            PerfRow(
                TRAIN_PAPER_ENTRY,
                "paper config",
                float("nan"),
                "it/s",
                note="not run: no CUDA device here (run `facehd perf hrn-train-paper` on a GPU)",
            )
        ]
    cfg = paper_speed_config("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        rows = _stage_speeds(cfg, Path(tmp), 8, 3 if quick else 20, TRAIN_PAPER_ENTRY)
    name = torch.cuda.get_device_name(0)
    for r in rows:
        r.note = f"{name}; {r.note}"
    return rows


@register(RECONSTRUCT_ENTRY, "Reconstruction of one aligned crop on one core, detection excluded")
def hrn_reconstruct(quick: bool) -> list[PerfRow]:
    import numpy as np

    from facehd.morphable import load_model
    from models.config import paper_model_config
    from models.precision import fast_bfloat16
    from models.reconstruct import Reconstructor
    from models.system import FaceSystem
    from models.train import tiny_cpu_train_config

    rows: list[PerfRow] = []
    model = load_model("facehd-synth")
    rng = np.random.default_rng(0)
    crop = rng.integers(60, 200, size=(1, 224, 224, 3), dtype=np.uint8)
    tiny = tiny_cpu_train_config()
    configs = [
        ("tiny-cpu", tiny, False, "float32"),
        ("tiny-cpu, bfloat16", tiny, False, "bfloat16"),
    ]
    if not quick:
        paper = tiny_cpu_train_config()
        paper.model = paper_model_config()
        configs.append(("paper networks", paper, False, "float32"))
        configs.append(("paper networks, --base-texture", paper, True, "float32"))
        configs.append(("paper networks, --precision bfloat16", paper, False, "bfloat16"))
    amx = fast_bfloat16("cpu")

    def system_for(cfg):  # noqa: ANN001, ANN202 - the same weights for every run of a config
        torch.manual_seed(0)
        return FaceSystem(cfg.model, model, cfg.image_size).eval()

    with single_thread():
        peaks = {"float32": matmul_peak_gflops()}
        peaks["bfloat16"] = matmul_peak_gflops(dtype=torch.bfloat16)
        gflops: dict[tuple[int, bool], float] = {}
        float32_runs: dict[int, object] = {}
        for name, cfg, base, precision in configs:
            recon = Reconstructor(system_for(cfg), cfg, base_texture=base, precision=precision)
            recon.run_crops(crop)  # warm-up
            t = timeit(lambda r=recon: r.run_crops(crop), 1 if quick else 3)
            rec = recon.run_crops(crop)[0]
            t_mesh = timeit(lambda r=recon, x=rec: r.detail_mesh(x), 1 if quick else 3)
            key = (id(cfg), base)
            if key not in gflops:  # counted on the networks as trained (fused layers are not seen)
                plain = system_for(cfg)
                images = recon._images(crop)

                def forward(s=plain, x=images, b=base):  # noqa: ANN001, ANN202
                    with torch.no_grad():
                        s.details(x, s.coarse(x), deretouch=not b)

                gflops[key] = count_gflop(forward)
            gflop = gflops[key]
            net = cfg.model.network
            note = f"facehd-synth, maps {net.mid_size}/{net.high_size}"
            if precision == "bfloat16":
                note += f"; {'AMX' if amx else 'no AMX'}"
                ref = float32_runs.get(id(cfg))
                if ref is not None:  # how far the maps and M1 land from float32's
                    dev = {
                        k: float(np.abs(getattr(rec, k) - getattr(ref, k)).max())
                        for k in ("m1", "displacement", "deformation")
                    }
                    span = max(float(np.abs(ref.displacement).max()), 1e-12)
                    mean = float(np.abs(rec.displacement - ref.displacement).mean())
                    note += (
                        f"; vs float32 (same weights): M1 {dev['m1']:.4f} mm, displacement "
                        f"{dev['displacement']:.4f} mm ({100 * dev['displacement'] / span:.1f}% "
                        f"of its range; mean {100 * mean / span:.2f}%), deformation "
                        f"{dev['deformation']:.4f} mm at most; M0 the same"
                    )
            elif not base:
                float32_runs[id(cfg)] = rec
            ok = t + t_mesh < 1.0
            rows.append(
                PerfRow(
                    RECONSTRUCT_ENTRY,
                    f"{name}: M0, maps, M1 (+ M2 mesh)",
                    (t + t_mesh) * 1e3,
                    "ms",
                    target="< 1000 ms",
                    passed=ok,
                    note=f"{note}; M2 mesh {t_mesh * 1e3:.0f} ms; "
                    f"{gflop:.1f} GFLOP of conv/matmul, run at {gflop / t:.0f} GFLOP/s",
                )
            )
            # the least time the networks' arithmetic takes on this core, even at its matrix
            # product peak: when this floor is above the target, no scheduling can reach it
            peak = peaks[precision]
            floor = gflop / peak
            rows.append(
                PerfRow(
                    RECONSTRUCT_ENTRY,
                    f"{name}: compute floor (GFLOP / one-core matmul peak)",
                    floor * 1e3,
                    "ms",
                    target="< 1000 ms",
                    passed=floor < 1.0,
                    note=f"{gflop:.1f} GFLOP at {peak:.0f} GFLOP/s ({precision} 1024^2 matmul)",
                )
            )
    return rows


MULTIVIEW_ENTRY = "hrn-multiview"


@register(MULTIVIEW_ENTRY, "MV-HRN: one joint fit of 3 aligned crops (50 iterations) on one core")
def hrn_multiview(quick: bool) -> list[PerfRow]:
    import numpy as np

    from facehd.morphable import load_model
    from models.config import paper_model_config
    from models.multiview import MultiViewConfig, fit_multiview
    from models.reconstruct import Reconstructor
    from models.system import FaceSystem
    from models.train import tiny_cpu_train_config

    model = load_model("facehd-synth")
    rng = np.random.default_rng(0)
    views = 3
    crops = rng.integers(60, 200, size=(views, 224, 224, 3), dtype=np.uint8)
    masks = np.zeros((views, 224, 224), dtype=np.uint8)
    masks[:, 40:200, 50:174] = 1
    configs = [("tiny-cpu", tiny_cpu_train_config())]
    if not quick:
        paper = tiny_cpu_train_config()
        paper.model = paper_model_config()
        configs.append(("paper networks", paper))
    iterations = 5 if quick else 50
    rows = []
    with single_thread():
        for name, cfg in configs:
            recon = Reconstructor(FaceSystem(cfg.model, model, cfg.image_size).eval(), cfg)
            system = recon.system
            with torch.no_grad():
                coarse = system.coarse(recon._images(crops))
                lms = system.landmarks2d(coarse.posed).numpy() * 224.0 / system.image_size
            mv = MultiViewConfig(iterations=iterations)
            t = timeit(lambda r=recon, x=lms, c=mv: fit_multiview(r, crops, masks, x, c), 1)
            rows.append(
                PerfRow(
                    MULTIVIEW_ENTRY,
                    f"{name}: {views} views, {iterations} iterations",
                    t,
                    "s",
                    target="< 60 s (the paper: under a minute for 2-5 views)",
                    passed=t < 60.0,
                    note=f"{t / iterations * 1e3:.0f} ms per iteration incl. the single-view pass",
                )
            )
    return rows


REFINE_ENTRY = "hrn-refine"


@register(
    REFINE_ENTRY,
    "Per-photo refinement of the base coefficients (--refine-steps), per-photo fit "
    "(--fit-iterations) and texture fit (--texture-fit-steps), one core",
)
def hrn_refine(quick: bool) -> list[PerfRow]:
    import numpy as np

    from facehd.morphable import load_model
    from models.multiview import single_view_config
    from models.reconstruct import Reconstructor, TextureFitConfig
    from models.refine import RefineConfig
    from models.system import FaceSystem
    from models.train import tiny_cpu_train_config

    model = load_model("facehd-synth")
    cfg = tiny_cpu_train_config()
    recon = Reconstructor(FaceSystem(cfg.model, model, cfg.image_size).eval(), cfg)
    # a crop the system renders itself (a face, its mask and landmarks), so the fit has a face
    system = recon.system
    with torch.no_grad():
        coarse = system.coarse(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
        render = system.render_coarse(coarse)
        crop = (render.image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        mask = render.mask[0].numpy().astype(np.uint8)
        lms = system.landmarks2d(coarse.posed)[0].numpy() * 224.0 / system.image_size
    if crop.shape[0] != 224:
        raise ValueError("hrn-refine: the tiny-cpu config renders at 224 pixels")
    steps = 10 if quick else 300
    refine = RefineConfig(steps=steps)
    iterations = 3 if quick else 50
    fit = single_view_config(iterations)
    tex_steps = 10 if quick else 100
    texture_fit = TextureFitConfig(steps=tex_steps)
    # the texture fit's cost is set by the texture's size: the tiny maps' and the paper's 256²
    sized = [recon]
    if not quick:
        paper_maps = tiny_cpu_train_config()
        paper_maps.model.network.high_size = 256
        sized.append(
            Reconstructor(FaceSystem(paper_maps.model, model, cfg.image_size).eval(), paper_maps)
        )
    with single_thread():
        t = timeit(lambda: recon.run_crops_refined(crop[None], mask[None], lms[None], refine), 1)
        t_fit = timeit(lambda: recon.run_crops_fitted(crop[None], mask[None], lms[None], fit), 1)
        t_tex = {}
        for r in sized:
            rec = r.run_crops(crop[None])[0]
            size = rec.texture.shape[0]
            t_tex[size] = timeit(lambda r=r, x=rec: r.fit_texture(x, crop, mask, texture_fit), 1)
    tex_rows = [
        PerfRow(
            REFINE_ENTRY,
            f"one 224-pixel crop, its {size}² texture fitted, {tex_steps} steps "
            "(--texture-fit-steps)",
            seconds,
            "s",
            note=f"{seconds / tex_steps * 1e3:.0f} ms per step (a render at 224 px, unlit, and "
            f"its backward to the texture; the paper's maps are 256²)",
        )
        for size, seconds in t_tex.items()
    ]
    return [
        PerfRow(
            REFINE_ENTRY,
            f"one 224-pixel crop, {steps} + {steps} steps",
            t,
            "s",
            note=f"{t / (2 * steps) * 1e3:.0f} ms per step (render and losses at 224 px; the "
            "networks' size matters only for their one pass)",
        ),
        PerfRow(
            REFINE_ENTRY,
            f"one 224-pixel crop fitted alone, {iterations} iterations (--fit-iterations)",
            t_fit,
            "s",
            note=f"{t_fit / iterations * 1e3:.0f} ms per iteration (renders R1 and R2, and the "
            "losses, at the networks' image size: 224 px for tiny-cpu)",
        ),
    ] + tex_rows

"""Train the embedded default generator: a small StyleGAN2 that reproduces the procedural face renderer from z.

The renderer (:mod:`pti.synthetic.faces`) is a deterministic function of z, so the generator is trained supervised —
L1 + LPIPS(AlexNet) + an edge (image-gradient) L1 between ``G(z)`` and ``render_from_z(z)`` — which converges in far
fewer images than an adversarial game and gives every generated image exact ground-truth attributes. Noise inputs
stay at strength 0 (the targets carry no per-pixel randomness). An exponential moving average of the weights is
what gets exported.

``--adversarial`` continues a supervised state as a GAN fine-tune for texture: StyleGAN2's residual
discriminator, non-saturating logistic loss, lazy R1 on reals, EMA, with the supervised L1 kept (weight
``--l1-weight``) so ``G(z)`` still shows the attributes of ``z``. Real images are renders of independent z.

The run is time-boxed (``--minutes`` of wall time, cosine learning-rate decay over that budget) and resumable: a
state file is written every ``--checkpoint-minutes`` and ``--resume`` continues from it. ``--export`` turns the
state file into the shipped ``generator.safetensors`` (fp16) with ``w_avg`` measured over 10,000 z.

``--arch stylegan3-r`` (or ``stylegan3-t``) trains the embedded StyleGAN3 the same way (``--num-layers``,
``--margin-size``, ``--filter-size`` size it); the training pass updates each layer's input magnitude EMA and the
EMA generator copies those buffers. Exporting to a file not named ``generator.safetensors`` writes the record and
samples next to it as ``<stem>_training.json`` and ``<stem>_samples.png`` (docs/stylegan3.md has the command).

``--init STATE`` starts a new stage (fresh optimiser and schedule) from the EMA weights of an earlier state, for
example after a change to the renderer; with a larger ``--channel-base``/``--channel-max`` than that state's, the
generator is widened without changing its images (:func:`load_widened`). Each state carries the stages it was built
on, and the export records all of them.

    nohup nice -n 10 python tools/train_default_model.py --state /work/runs/default/state.pt --minutes 65 \\
        > /work/runs/default/train.log 2>&1 &
    python tools/train_default_model.py --state /work/runs/default/state.pt \\
        --export pti/default_model/generator.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

if __name__ == "__main__":  # run as a script: pti/ is importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti import stylegan3  # noqa: E402
from pti.networks import Generator, clone_generator  # noqa: E402
from pti.synthetic import faces  # noqa: E402
from tools.provenance import portable  # noqa: E402

log = logging.getLogger("train_default_model")

W_AVG_SAMPLES = 10_000


ARCHITECTURES = ("stylegan2", "stylegan3-r", "stylegan3-t")


def build_generator(args: argparse.Namespace) -> Generator | stylegan3.Generator:
    """The default model's architecture, NVIDIA's StyleGAN2 (skip generator), or with ``--arch stylegan3-r``/``-t``
    NVIDIA's StyleGAN3 (config R: 1x1 convolutions and radial filters; config T: 3x3), sized for CPU training."""
    if getattr(args, "arch", "stylegan2") != "stylegan2":
        config = dict(conv_kernel=1, use_radial_filters=True) if args.arch == "stylegan3-r" else {}
        return stylegan3.Generator(
            z_dim=faces.NUM_PARAMETERS,
            c_dim=0,
            w_dim=args.w_dim,
            img_resolution=args.resolution,
            img_channels=3,
            mapping_kwargs=dict(num_layers=args.mapping_layers, lr_multiplier=args.mapping_lr_multiplier),
            channel_base=args.channel_base,
            channel_max=args.channel_max,
            num_layers=args.num_layers,
            num_critical=2,
            margin_size=args.margin_size,
            filter_size=args.filter_size,
            **config,
        )
    G = Generator(
        z_dim=faces.NUM_PARAMETERS,
        c_dim=0,
        w_dim=args.w_dim,
        img_resolution=args.resolution,
        img_channels=3,
        mapping_kwargs=dict(num_layers=args.mapping_layers, lr_multiplier=args.mapping_lr_multiplier),
        synthesis_kwargs=dict(channel_base=args.channel_base, channel_max=args.channel_max, architecture="skip"),
    )
    for name, param in G.named_parameters():
        if name.endswith("noise_strength"):
            param.requires_grad_(False)  # targets are deterministic from z: per-pixel noise stays off
    return G


FACIAL_FEATURES = ("smile", "mouth_width", "jaw", "eye_openness", "iris_color")


def feature_loss(fake: torch.Tensor, target: torch.Tensor, z: torch.Tensor, resolution: int) -> torch.Tensor:
    """L1 restricted to the pixels the small facial features decide: where the target differs from the same face
    with smile, mouth width, jaw, eye openness and iris colour set to neutral. These regions are a few percent of
    the image, so the whole-image losses hardly see them."""
    with torch.no_grad():
        params = faces.params_from_z(z)
        for name in FACIAL_FEATURES:
            params[:, faces.ATTRIBUTE_NAMES.index(name)] = 0.5
        mask = ((target - faces.render(params, resolution)).abs().amax(dim=1, keepdim=True) * 10).clamp(max=1)
    return ((fake - target).abs() * mask).sum() / (mask.sum() * fake.shape[1] + 1.0)


def edge_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical image gradients: a cheap push towards sharp edges."""
    dx = (fake[..., :, 1:] - fake[..., :, :-1]) - (real[..., :, 1:] - real[..., :, :-1])
    dy = (fake[..., 1:, :] - fake[..., :-1, :]) - (real[..., 1:, :] - real[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def load_perceptual(enabled: bool) -> torch.nn.Module | None:
    """LPIPS(AlexNet) when the project's perceptual module and its weights are available, else None (logged)."""
    if not enabled:
        return None
    try:
        from pti.perceptual import load_lpips

        return load_lpips("alex")
    except (ImportError, RuntimeError) as exc:
        log.warning("LPIPS unavailable (%s); training with L1 + edge loss only", exc)
        return None


WARMUP_ITERATIONS = 250


def learning_rate(args: argparse.Namespace, wall_seconds: float, iteration: int) -> float:
    """Linear warm-up over the first iterations, then cosine decay to 5% of the peak over the wall-time budget."""
    frac = min(1.0, wall_seconds / (args.minutes * 60.0))
    warmup = min(1.0, (iteration + 1) / WARMUP_ITERATIONS)
    return args.lr * max(0.05, warmup) * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """Move every EMA weight a ``1 - beta`` step towards the trained weight; buffers (StyleGAN3's input magnitudes,
    which the training pass updates) are copied, as NVIDIA does."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def training_kwargs(G: torch.nn.Module) -> dict:
    """Extra arguments of a training forward pass: StyleGAN3 keeps each layer's input magnitude up to date."""
    return dict(update_emas=True) if isinstance(G, stylegan3.Generator) else {}


def update_running(running: dict[str, float], losses: dict[str, torch.Tensor]) -> None:
    """Exponential running means of the logged losses (what the progress lines print)."""
    for key, value in losses.items():
        running[key] = 0.9 * running.get(key, value.item()) + 0.1 * value.item()


def format_running(running: dict[str, float]) -> str:
    return "  ".join(f"{key} {value:.4f}" for key, value in running.items())


def checkpoint_due(args: argparse.Namespace, last_checkpoint: float, wall_seconds: float, iteration: int) -> bool:
    """A periodic checkpoint is due (the final one is written after the loop)."""
    overdue = time.time() - last_checkpoint > args.checkpoint_minutes * 60.0
    return overdue and not finished(args, wall_seconds, iteration)


def finished(args: argparse.Namespace, wall_seconds: float, iteration: int) -> bool:
    """The run has used its wall-time budget or its iteration cap (the last iteration writes a checkpoint)."""
    return wall_seconds >= args.minutes * 60.0 or iteration >= args.max_iterations


def state_settings(state: dict) -> dict:
    """The command-line settings a state was trained with (states older than the option used StyleGAN's 0.01)."""
    return {"mapping_lr_multiplier": 0.01, "arch": "stylegan2", **json.loads(state["settings"])}


@torch.no_grad()
def load_widened(G: Generator, narrow: dict[str, torch.Tensor]) -> list[str]:
    """Load the weights of a generator with fewer channels per layer into ``G`` so that ``G`` computes the same
    images, and return the names of the widened tensors. ``G``'s own (seeded) initialisation stays in every new slice
    except the connections from a new input channel into an old output, which start at zero: the old channels see
    exactly what they saw before (demodulation included) and the new ones can learn from the first step. ToRGB
    layers scale their styles by 1/sqrt(in_channels), so their old weights are rescaled to keep the same output."""
    widened = []
    for name, target in G.state_dict().items():
        source = narrow[name]
        if source.shape == target.shape:
            target.copy_(source)
            continue
        if source.ndim != target.ndim or any(s > t for s, t in zip(source.shape, target.shape)):
            raise ValueError(f"cannot widen {name}: {tuple(source.shape)} does not fit in {tuple(target.shape)}")
        old = tuple(slice(0, size) for size in source.shape)
        if ".torgb." in name and name.endswith(".weight") and target.ndim == 4:
            source = source * math.sqrt(target.shape[1] / source.shape[1])
        target[old] = source
        if target.ndim == 4:  # conv weights [out, in, k, k]: new inputs do not reach old outputs
            target[: source.shape[0], source.shape[1] :] = 0
        widened.append(name)
    return widened


def stage_record(state: dict) -> dict:
    """What one training stage did: its settings and its own iterations, images and wall time."""
    return dict(
        settings=state_settings(state),
        iterations=state["iteration"],
        images_seen_at_end=state["images_seen"],
        wall_minutes=round(state["wall_seconds"] / 60.0, 1),
    )


def earlier_stages(state: dict) -> list[dict]:
    """The stages a state was built on (``--init`` chains). States written before stages were recorded name their
    ``--init`` file only; it is read when it is still on disk."""
    if "earlier_stages" in state:
        return json.loads(state["earlier_stages"])
    settings = state_settings(state)
    init = settings.get("init")
    if not init or settings.get("adversarial") or not Path(init).exists():
        return []
    source = read_state(init)
    return earlier_stages(source) + [stage_record(source)]


def read_state(path: str | Path) -> dict:
    """A state file written by ``save_state``, read by the project's restricted unpickler (no code can run)."""
    from pti.checkpoints import read_torch_file

    return read_torch_file(path)


def save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def save_comparison_grid(G: Generator, path: Path, resolution: int, pairs: int = 1, seed: int = 123_456_789) -> None:
    """``pairs`` row pairs of eight held-out z: generated images above, the renderer's targets below."""
    from PIL import Image

    z = faces.sample_z(8 * pairs, seed=seed)
    with torch.no_grad():
        fake = G(z, noise_mode="const").clamp(-1, 1)
    real = faces.render_from_z(z, resolution)
    rows = torch.stack(
        [fake.view(pairs, 8, 3, resolution, resolution), real.view(pairs, 8, 3, resolution, resolution)], 1
    )
    grid = rows.add(1).div(2).permute(0, 1, 4, 2, 5, 3).reshape(2 * pairs * resolution, 8 * resolution, 3)
    Image.fromarray((grid * 255).round().byte().numpy()).save(path)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # initial weights
    state_path = Path(args.state)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    G = build_generator(args)
    G_ema = clone_generator(G).eval().requires_grad_(False)
    trainable = [p for p in G.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=args.lr, betas=(0.9, 0.99))
    iteration, images_seen, wall_seconds = 0, 0, 0.0
    stages: list[dict] = []
    if args.resume and state_path.exists():
        state = read_state(state_path)
        G.load_state_dict(state["G"])
        G_ema.load_state_dict(state["G_ema"])
        optimizer.load_state_dict(state["optimizer"])
        iteration, images_seen, wall_seconds = state["iteration"], state["images_seen"], state["wall_seconds"]
        stages = earlier_stages(state)
        log.info(
            "resumed from %s at iteration %d (%d images, %.1f min)",
            state_path,
            iteration,
            images_seen,
            wall_seconds / 60,
        )
    elif args.init:  # a second stage: the weights of another state, a fresh optimiser and schedule
        state = read_state(args.init)
        widened = load_widened(G, state["G_ema"])
        if widened:
            log.info("widened %d tensors of %s to channel_base %d", len(widened), args.init, args.channel_base)
        G_ema.load_state_dict(G.state_dict())
        images_seen = state["images_seen"]
        stages = earlier_stages(state) + [stage_record(state)]
        log.info("starting from the EMA weights of %s (%d images seen)", args.init, images_seen)
    lpips_model = load_perceptual(args.lpips_weight > 0)
    log.info(
        "generator: %.2f M parameters, %d ws; LPIPS %s",
        G.num_parameters() / 1e6,
        G.num_ws,
        "on" if lpips_model is not None else "off",
    )

    def checkpoint() -> None:
        state = dict(
            G=G.state_dict(),
            G_ema=G_ema.state_dict(),
            optimizer=optimizer.state_dict(),
            iteration=iteration,
            images_seen=images_seen,
            wall_seconds=wall_seconds,
            settings=json.dumps(vars(args)),
            earlier_stages=json.dumps(stages),
        )
        save_state(state_path, state)
        save_comparison_grid(G_ema, state_path.with_name("preview.png"), args.resolution)
        log.info("checkpoint written to %s", state_path)

    G.train()
    forward_kwargs = training_kwargs(G)
    started = time.time() - wall_seconds
    last_checkpoint = time.time()
    running: dict[str, float] = {}
    while not finished(args, wall_seconds, iteration):
        lr = learning_rate(args, wall_seconds, iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        z = torch.randn(
            [args.batch, faces.NUM_PARAMETERS],
            generator=torch.Generator().manual_seed(args.seed * 1_000_003 + iteration),
        )
        with torch.no_grad():
            target = faces.render_from_z(z, args.resolution)
        fake = G(z, noise_mode="const", **forward_kwargs)
        losses = {"l1": F.l1_loss(fake, target), "edge": edge_loss(fake, target)}
        total = args.l1_weight * losses["l1"] + args.edge_weight * losses["edge"]
        if args.feature_weight > 0:
            losses["features"] = feature_loss(fake, target, z, args.resolution)
            total = total + args.feature_weight * losses["features"]
        if lpips_model is not None and iteration % args.lpips_every == 0:
            losses["lpips"] = lpips_model(fake, target).mean()
            total = total + args.lpips_weight * losses["lpips"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        update_ema(G_ema, G, min(args.ema_beta, (1.0 + iteration) / (10.0 + iteration)))
        iteration += 1
        images_seen += args.batch
        wall_seconds = time.time() - started
        update_running(running, losses)
        if iteration % args.log_every == 0:
            log.info(
                "it %6d  img %7d  %5.1f min  lr %.2e  %s",
                iteration,
                images_seen,
                wall_seconds / 60,
                lr,
                format_running(running),
            )
        if checkpoint_due(args, last_checkpoint, wall_seconds, iteration):
            checkpoint()
            last_checkpoint = time.time()
    checkpoint()
    log.info("done: %d iterations, %d images, %.1f min", iteration, images_seen, wall_seconds / 60)


def r1_penalty(D: torch.nn.Module, real: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient norm of D's real logits with respect to the real images."""
    real = real.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    return gradient.square().sum(dim=[1, 2, 3]).mean()


def train_adversarial(args: argparse.Namespace) -> None:
    """GAN fine-tune of a supervised state (``--init``), written to ``--state`` (resumable like ``train``)."""
    from pti.networks import Discriminator

    torch.set_num_threads(args.threads)
    state_path = Path(args.state)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    resume = args.resume and state_path.exists()
    source = read_state(state_path if resume else args.init)
    settings = state_settings(source)
    G = build_generator(argparse.Namespace(**settings))
    G.load_state_dict(source["G_ema"] if not resume else source["G"])
    G_ema = clone_generator(G).eval().requires_grad_(False)
    if resume:
        G_ema.load_state_dict(source["G_ema"])
    torch.manual_seed(args.seed)  # initial D weights
    D = Discriminator(args.resolution, channel_base=args.channel_base, channel_max=args.channel_max)
    g_params = [p for p in G.parameters() if p.requires_grad]
    g_opt = torch.optim.Adam(g_params, lr=args.gan_lr, betas=(0.0, 0.99))
    # Lazy regularisation: R1 every k steps, with lr and betas adjusted as in StyleGAN2.
    ratio = args.r1_every / (args.r1_every + 1)
    d_opt = torch.optim.Adam(D.parameters(), lr=args.gan_lr * ratio, betas=(0.0, 0.99**ratio))
    iteration, images_seen, wall_seconds = 0, source.get("images_seen", 0), 0.0
    if resume:
        D.load_state_dict(source["D"])
        g_opt.load_state_dict(source["g_optimizer"])
        d_opt.load_state_dict(source["d_optimizer"])
        iteration, wall_seconds = source["adversarial_iteration"], source["adversarial_seconds"]
    log.info(
        "adversarial fine-tune: D %.2f M parameters, R1 gamma %g every %d",
        sum(p.numel() for p in D.parameters()) / 1e6,
        args.r1_gamma,
        args.r1_every,
    )

    def checkpoint() -> None:
        state = dict(
            G=G.state_dict(),
            G_ema=G_ema.state_dict(),
            D=D.state_dict(),
            g_optimizer=g_opt.state_dict(),
            d_optimizer=d_opt.state_dict(),
            iteration=source["iteration"],  # the supervised phase's count and time, carried along
            images_seen=images_seen,
            wall_seconds=source["wall_seconds"],
            adversarial_iteration=iteration,
            adversarial_seconds=wall_seconds,
            settings=json.dumps({**settings, "adversarial": vars(args)}),
        )
        save_state(state_path, state)
        save_comparison_grid(G_ema, state_path.with_name("preview.png"), args.resolution)
        log.info("checkpoint written to %s", state_path)

    started, last_checkpoint = time.time() - wall_seconds, time.time()
    running: dict[str, float] = {}
    noise = torch.Generator().manual_seed(args.seed * 7_919 + iteration)
    while not finished(args, wall_seconds, iteration):
        z_fake = torch.randn([args.batch, faces.NUM_PARAMETERS], generator=noise)
        z_real = torch.randn([args.batch, faces.NUM_PARAMETERS], generator=noise)
        with torch.no_grad():
            real = faces.render_from_z(z_real, args.resolution)
            target = faces.render_from_z(z_fake, args.resolution)
        # Generator: fool D, keep reproducing the renderer.
        D.requires_grad_(False)
        fake = G(z_fake, noise_mode="const")
        losses = {"g_gan": F.softplus(-D(fake)).mean(), "l1": F.l1_loss(fake, target)}
        g_opt.zero_grad(set_to_none=True)
        (losses["g_gan"] + args.l1_weight * losses["l1"]).backward()
        g_opt.step()
        # Discriminator: logistic loss, lazy R1 on reals.
        D.requires_grad_(True)
        d_loss = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
        losses["d"] = d_loss
        if iteration % args.r1_every == 0:
            losses["r1"] = r1_penalty(D, real)
            d_loss = d_loss + losses["r1"] * (args.r1_gamma / 2) * args.r1_every
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        update_ema(G_ema, G, args.ema_beta)
        iteration += 1
        images_seen += args.batch
        wall_seconds = time.time() - started
        update_running(running, losses)
        if iteration % args.log_every == 0:
            log.info(
                "adv it %5d  %5.1f min  %s",
                iteration,
                wall_seconds / 60,
                format_running(running),
            )
        if checkpoint_due(args, last_checkpoint, wall_seconds, iteration):
            checkpoint()
            last_checkpoint = time.time()
    checkpoint()
    log.info("adversarial fine-tune done: %d iterations, %.1f min", iteration, wall_seconds / 60)


@torch.no_grad()
def measure_w_avg(G: Generator, samples: int = W_AVG_SAMPLES, seed: int = 2024) -> torch.Tensor:
    """Mean of mapping(z) over ``samples`` seeded z: the start point for truncation and projection."""
    z = torch.randn([samples, G.z_dim], generator=torch.Generator().manual_seed(seed))
    return G.mapping(z, None, truncation_psi=1.0)[:, 0].mean(0)


def companion(out: Path, name: str) -> Path:
    """A file written next to an exported generator: ``training.json`` beside the default ``generator.safetensors``,
    ``<stem>_training.json`` beside any other (so a second shipped model keeps its own record)."""
    return out.with_name(name if out.stem == "generator" else f"{out.stem}_{name}")


def export(args: argparse.Namespace) -> None:
    from pti.atomic import write_atomically
    from pti.checkpoints import save_generator

    state = read_state(args.state)
    settings = state_settings(state)
    G = build_generator(argparse.Namespace(**settings))
    G.load_state_dict(state["G_ema"])
    G.eval().requires_grad_(False)
    G.mapping.w_avg.copy_(measure_w_avg(G))
    method = "supervised reproduction of pti.synthetic.faces.render_from_z(z): L1 + LPIPS(alex) + edge L1, EMA weights"
    if settings["arch"] != "stylegan2":
        method = f"{settings['arch']}: {method}"
    if "adversarial_iteration" in state:
        method += (
            f"; then an adversarial fine-tune ({state['adversarial_iteration']} iterations, "
            f"{state['adversarial_seconds'] / 60:.1f} min): StyleGAN2 D, non-saturating loss, lazy R1, L1 kept"
        )
    stages = earlier_stages(state) + [stage_record(state)]
    # Settings carry the paths the states were written to: recorded relative to the repository, never absolute.
    provenance = portable(
        dict(
            trained_by="tools/train_default_model.py",
            method=method,
            iterations=sum(stage["iterations"] for stage in stages),
            images_seen=state["images_seen"],
            wall_minutes=round(sum(stage["wall_minutes"] for stage in stages), 1),
            settings=settings,
            stages=stages,
            attributes=list(faces.ATTRIBUTE_NAMES),
            w_avg_samples=W_AVG_SAMPLES,
            note=args.note,
        )
    )
    out = Path(args.export)
    save_generator(G, out, fp16=True, provenance=provenance)
    save_comparison_grid(G, companion(out, "samples.png"), settings["resolution"], pairs=3)
    record = dict(provenance, parameters=G.num_parameters(), file_mb=round(out.stat().st_size / 2**20, 2))
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(companion(out, "training.json"), lambda tmp: tmp.write_text(text))
    log.info("exported %s (%d iterations, %d images)", out, state["iteration"], state["images_seen"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", default="/work/runs/default/state.pt", help="resumable training state file")
    p.add_argument("--resume", action="store_true", help="continue from --state if it exists")
    p.add_argument("--export", help="write the EMA generator of --state to this .safetensors path and exit")
    p.add_argument("--note", default="", help="free text recorded in the exported provenance (e.g. run history)")
    p.add_argument("--minutes", type=float, default=65.0, help="wall-time budget (sets the learning-rate schedule)")
    p.add_argument("--max-iterations", type=int, default=10**9, help="stop after this many iterations as well")
    p.add_argument("--checkpoint-minutes", type=float, default=4.0)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--w-dim", type=int, default=128)
    p.add_argument("--mapping-layers", type=int, default=4)
    p.add_argument(
        "--mapping-lr-multiplier",
        type=float,
        default=1.0,
        help="StyleGAN's 0.01 keeps the mapping network nearly frozen over a short supervised run; 1 lets it learn",
    )
    p.add_argument("--arch", choices=ARCHITECTURES, default="stylegan2", help="generator family and config")
    p.add_argument("--num-layers", type=int, default=6, help="StyleGAN3 synthesis layers (ToRGB not counted)")
    p.add_argument("--margin-size", type=int, default=4, help="StyleGAN3 border pixels computed outside the image")
    p.add_argument("--filter-size", type=int, default=4, help="StyleGAN3 low-pass taps per (lower) sample")
    p.add_argument("--channel-base", type=int, default=1024)
    p.add_argument("--channel-max", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema-beta", type=float, default=0.998)
    p.add_argument("--l1-weight", type=float, default=1.0)
    p.add_argument("--edge-weight", type=float, default=1.0)
    p.add_argument("--lpips-weight", type=float, default=1.0)
    p.add_argument("--feature-weight", type=float, default=0.0, help="weight of the facial-feature L1 (0 = off)")
    p.add_argument("--lpips-every", type=int, default=2, help="apply the LPIPS term on every k-th iteration")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared, busy CPU)")
    p.add_argument("--adversarial", action="store_true", help="GAN fine-tune of the supervised state --init")
    p.add_argument(
        "--init", help="state whose EMA weights a new stage starts from (supervised: fresh schedule; --adversarial)"
    )
    p.add_argument("--gan-lr", type=float, default=1e-3, help="Adam lr of G and D in the adversarial fine-tune")
    p.add_argument("--r1-gamma", type=float, default=0.05, help="R1 weight (StyleGAN2's 2e-4 * res^2 / batch at 64 px)")
    p.add_argument("--r1-every", type=int, default=16, help="lazy R1: apply the penalty every k-th D step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    if args.export:
        export(args)
    elif args.adversarial:
        if not (args.init or (args.resume and Path(args.state).exists())):
            raise SystemExit("--adversarial needs --init SUPERVISED_STATE (or --resume with an adversarial --state)")
        train_adversarial(args)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

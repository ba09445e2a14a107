"""Train the encoder shipped for the embedded model as ``pti/default_model/encoder.safetensors``.

An e4e-style encoder (``pti.encoder``, scaled down: see ``SMALL_CONFIG``) learns to invert the generator on its own
samples: z -> w -> G(w) (random noise), and the encoder must give back w. Loss per batch: MSE of the predicted ws to
the true ws (in units of w_std^2) + MSE of G(predicted ws) to the sample (pixels in [-1, 1]) + LPIPS(alex) of the
same pair. Adam with a cosine learning-rate decay over a wall-time budget; single-threaded by default so it can run
beside other work. Validation on held-out samples (another seed) every few minutes; the best state is saved as
fp16 with the training record in the file's metadata.

    nice -n 5 python tools/train_encoder.py --minutes 30 --out pti/default_model/encoder.safetensors
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import load_generator  # noqa: E402
from pti.encoder import Encoder, EncoderConfig, save_encoder  # noqa: E402
from pti.metrics import psnr  # noqa: E402
from pti.perceptual import load_lpips, lpips_available  # noqa: E402

log = logging.getLogger("train_encoder")

VALIDATION_SEED = 987_654


def small_config(num_ws: int, w_dim: int, resolution: int) -> EncoderConfig:
    """The e4e design at a size that fits the embedded model (64 px, w_dim 128): ~5 M parameters, ~10 MB fp16."""
    return EncoderConfig(
        arch="e4e",
        num_ws=num_ws,
        w_dim=w_dim,
        stage_units=(2, 2, 3, 2),
        stage_channels=(32, 64, 96, 128),
        squeeze_excite=True,
        input_resolution=resolution,
    )


def sample_batch(G, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` generator samples: images ``[n, 3, R, R]`` (random noise) and their ws ``[n, num_ws, w_dim]``."""
    z = torch.randn(n, G.z_dim, generator=generator)
    with torch.no_grad():
        ws = G.mapping(z, None)
        images = G.synthesis(ws, noise_mode="random")
    return images.clamp(-1, 1), ws


def w_statistics(G, count: int = 10_000, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Mean w ``[1, w_dim]`` and RMS distance of mapped samples to it."""
    z = torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
    w_avg = w.mean(0, keepdim=True)
    return w_avg, float((w - w_avg).square().sum(1).mean().sqrt())


def evaluate(encoder: Encoder, G, images: torch.Tensor, ws: torch.Tensor, w_std: float) -> dict[str, float]:
    """Latent error (units of w_std^2 per value x w_dim) and PSNR of G(E(x)) on a held-out set."""
    encoder.eval()
    with torch.no_grad():
        predicted = torch.cat([encoder(chunk) for chunk in images.split(64)])
        rendered = torch.cat([G.synthesis(chunk, noise_mode="const") for chunk in predicted.split(64)])
    encoder.train()
    latent = float((predicted - ws).square().sum(-1).mean() / w_std**2)
    return {"latent_error": latent, "psnr": float(psnr(rendered.clamp(-1, 1), images).mean())}


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    G = load_generator(args.generator).eval().requires_grad_(False)
    w_avg, w_std = w_statistics(G)
    config = small_config(G.num_ws, G.w_dim, G.img_resolution)
    torch.manual_seed(args.seed)
    encoder = Encoder(config, latent_avg=w_avg).train()
    parameters = sum(p.numel() for p in encoder.parameters())
    log.info("encoder %s: %d parameters", config, parameters)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=args.lr, betas=(0.9, 0.999))
    lpips_model = load_lpips("alex") if args.lpips and lpips_available("alex") else None
    val_images, val_ws = sample_batch(G, args.validation, torch.Generator().manual_seed(VALIDATION_SEED))
    rng = torch.Generator().manual_seed(args.seed)

    started = time.perf_counter()
    budget = args.minutes * 60
    best, best_state, history, step = None, None, [], 0
    next_eval = 0.0
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= next_eval or elapsed >= budget or step >= args.max_steps:
            scores = {"step": step, "minutes": round(elapsed / 60, 2)}
            scores.update(evaluate(encoder, G, val_images, val_ws, w_std))
            history.append(scores)
            log.info("%s", scores)
            if best is None or scores["psnr"] > best["psnr"]:
                best, best_state = scores, copy.deepcopy(encoder.state_dict())
            next_eval = elapsed + args.eval_minutes * 60
            if elapsed >= budget or step >= args.max_steps:
                break
        t = min(1.0, elapsed / budget)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (0.5 + 0.5 * math.cos(math.pi * t)) * min(1.0, (step + 1) / args.warmup)
        images, ws = sample_batch(G, args.batch, rng)
        predicted = encoder(images)
        latent_loss = (predicted - ws).square().sum(-1).mean() / w_std**2
        rendered = G.synthesis(predicted, noise_mode="const")
        loss = args.latent_weight * latent_loss + F.mse_loss(rendered, images)
        if lpips_model is not None:
            loss = loss + args.lpips * lpips_model(rendered, images).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1

    encoder.load_state_dict(best_state)
    encoder.eval()
    record = {
        "tool": "tools/train_encoder.py",
        "generator": "embedded default" if args.generator is None else Path(args.generator).name,
        "config": config.to_json(),
        "parameters": parameters,
        "steps": step,
        "minutes": args.minutes,
        "threads": args.threads,
        "batch": args.batch,
        "lr": args.lr,
        "warmup": args.warmup,
        "latent_weight": args.latent_weight,
        "lpips_weight": args.lpips if lpips_model is not None else 0.0,
        "seed": args.seed,
        "best": best,
        "history": history,
    }
    if args.out:
        save_encoder(encoder, args.out, fp16=True, provenance=record)
        log.info("saved %s (%.1f MB)", args.out, Path(args.out).stat().st_size / 2**20)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default=None, help="checkpoint to invert (default: the embedded model)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-time budget for training")
    p.add_argument("--max-steps", type=int, default=10**9, help="stop after this many steps even within budget")
    p.add_argument("--warmup", type=int, default=100, help="steps of linear learning-rate warm-up")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-weight", type=float, default=1.0, help="weight of the w-space MSE (units of w_std^2)")
    p.add_argument("--lpips", type=float, default=0.5, help="weight of LPIPS(alex) on G(E(x)) vs x (0 = off)")
    p.add_argument("--validation", type=int, default=256, help="held-out samples scored during training")
    p.add_argument("--eval-minutes", type=float, default=3.0, help="minutes between validations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="where to save the best encoder (.safetensors, fp16)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Inversion benchmark: projection only (W, W+), PTI with the paper's settings and PTI with the fast defaults,
side by side on held-out rendered faces (in-domain) and the two example photos (out-of-domain), with the default
model. Every method runs to its own end (its step budget or its own stopping rule): a comparison at convergence.

Columns, measured against the photo at model resolution: wall seconds, steps, PSNR, SSIM, LPIPS(alex); seconds until
the reconstruction first reached 27 dB PSNR (time-to-quality; "-" = never); bytes to store the result (latent +
delta); editability: the change of the yaw attribute (attribute regressor) under +3 units of the shipped direction,
relative to the W-projection row, and the mean absolute pixel change that edit makes. A picture grid (target, then
each method's reconstruction, then each method's edit) is written beside the table. Also the per-step cost of
projection and tuning for an FFHQ-config generator.

    python benchmarks/bench_inversion.py            # 2 faces + 2 photos, per-step cost at 256 and 1024 px
    python benchmarks/bench_inversion.py --quick    # 1 face + 2 photos, per-step cost at 256 px only

Results go to ``benchmarks/results/`` (JSON + markdown + PNG grid); the markdown table is also printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import load_generator  # noqa: E402
from pti.delta import save_delta  # noqa: E402
from pti.directions import default_directions  # noqa: E402
from pti.edit import apply_direction  # noqa: E402
from pti.image import GeneratorImages, make_comparison, prepare_target, save_image  # noqa: E402
from pti.latent import Latent, synthesize  # noqa: E402
from pti.metrics import psnr, summarize  # noqa: E402
from pti.networks import Generator  # noqa: E402
from pti.perceptual import load_lpips  # noqa: E402
from pti.projection import project  # noqa: E402
from pti.runtime import ProgressFn  # noqa: E402
from pti.synthetic import faces  # noqa: E402
from pti.synthetic.attributes import predict_attributes  # noqa: E402
from pti.tune import pivotal_tune  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
EDIT_DIRECTION, EDIT_STRENGTH = "yaw", 3.0  # a direction the default model draws (smile it does not)


SHORT_NAMES = ("W", "W+", "PTI ref", "PTI fast")  # picture-grid labels, in the order of run_methods' methods
QUALITY_DB = 27.0  # time-to-quality: seconds until a method's reconstruction first reaches this PSNR
PHOTOS = ("pti_example_face.png", "pti_example_photo.jpg")


def targets(count: int, resolution: int) -> dict[str, torch.Tensor]:
    """Held-out rendered faces (seeds the default model never trained on) and the example photos, in [-1, 1]."""
    rendered = faces.render_from_z(faces.sample_z(count, seed=987_654), resolution).clamp(-1, 1)
    photos = torch.cat([prepare_target(REPO / "workflows" / name, resolution) for name in PHOTOS])
    return {"rendered faces (in-domain)": rendered, "real photos (out-of-domain)": photos}


def stored_bytes(latent: Latent, tuned: Generator | None, base: Generator) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        size = latent.save(Path(tmp) / "pivot.safetensors").stat().st_size
        if tuned is not None:
            size += save_delta(tuned, base, Path(tmp) / "delta.safetensors").stat().st_size
        return size


def edited(G: Generator, latent: Latent) -> torch.Tensor:
    """The reconstruction moved by ``EDIT_STRENGTH`` along the shipped ``EDIT_DIRECTION``."""
    return synthesize(G, apply_direction(latent, default_directions()[EDIT_DIRECTION], EDIT_STRENGTH))


def attribute_change(reconstruction: torch.Tensor, edit: torch.Tensor) -> float:
    """Change of the edited attribute (shipped regressor) from the reconstruction to its edit."""
    index = faces.ATTRIBUTE_NAMES.index(EDIT_DIRECTION)
    return float((predict_attributes(edit)[:, index] - predict_attributes(reconstruction)[:, index]).mean())


def quality_clock(started: float, target: torch.Tensor, decoder: Generator | None = None) -> tuple[list, ProgressFn]:
    """A progress callback that records the seconds since ``started`` when the reconstruction first reaches
    ``QUALITY_DB`` (tuning reports its PSNR; projection previews are rendered by ``decoder`` and measured)."""
    reached: list[float | None] = [None]

    def progress(step: int, total: int, losses: dict[str, float], preview: torch.Tensor | None) -> None:
        if reached[0] is not None:
            return
        value = losses.get("psnr")
        if value is None and preview is not None:
            value = float(psnr(preview[None] * 2 - 1, target))
        if value is not None and value >= QUALITY_DB:
            reached[0] = time.perf_counter() - started

    return reached, progress


def run_methods(G: Generator, batch: torch.Tensor) -> tuple[list[dict], list[torch.Tensor]]:
    """Each image on its own (as a user would run it); sums of times/steps/bytes, means of the metrics. Also returns
    the picture grid's rows: per image, the target, each method's reconstruction, then each method's edit."""
    methods = ["W projection (reference, 450 steps)", "W+ projection (fast)", "PTI reference (paper)", "PTI fast"]
    totals = {
        m: {"wall_s": 0.0, "steps": 0, "bytes": 0, "metrics": [], "edit": [], "pixels": [], "to_q": []} for m in methods
    }
    grid_rows = []
    for image in batch.split(1):
        target = GeneratorImages(image)
        runs = {}
        started = time.perf_counter()
        reached, clock = quality_clock(started, image)
        pivot_ref = project(G, target, space="w", preset="reference", progress=clock, preview_every=10)
        proj_ref_s = time.perf_counter() - started
        runs[methods[0]] = (G, pivot_ref, None, proj_ref_s, reached[0])
        tuned_ref = pivotal_tune(G, target, pivot_ref, preset="reference", progress=clock)
        runs[methods[2]] = (tuned_ref, pivot_ref, tuned_ref, time.perf_counter() - started, reached[0])
        started = time.perf_counter()
        reached, clock = quality_clock(started, image)
        pivot_wplus = project(G, target, space="w+", preset="fast", progress=clock, preview_every=10)
        runs[methods[1]] = (G, pivot_wplus, None, time.perf_counter() - started, reached[0])
        started = time.perf_counter()
        reached, clock = quality_clock(started, image)
        pivot_fast = project(G, target, space="w", preset="fast")
        tuned_fast = pivotal_tune(G, target, pivot_fast, preset="fast", progress=clock)
        runs[methods[3]] = (tuned_fast, pivot_fast, tuned_fast, time.perf_counter() - started, reached[0])
        reconstructions, edits = [], []
        for name in methods:
            decoder, latent, tuned, seconds, to_quality = runs[name]
            row = totals[name]
            row["wall_s"] += seconds
            row["steps"] += latent.meta["steps"] + (tuned.tuning_info["steps"] if tuned is not None else 0)
            row["bytes"] += stored_bytes(latent, tuned, G)
            reconstruction = synthesize(decoder, latent)
            edit = edited(decoder, latent)
            row["metrics"].append(summarize(reconstruction, image))
            row["edit"].append(attribute_change(reconstruction, edit))
            row["pixels"].append(float((edit - reconstruction).abs().mean()))
            row["to_q"].append(to_quality)
            reconstructions.append(reconstruction[0])
            edits.append(edit[0])
        labels = ["target", *SHORT_NAMES, *(f"{n} {EDIT_DIRECTION}+{EDIT_STRENGTH:g}" for n in SHORT_NAMES)]
        grid_rows.append(make_comparison([image[0], *reconstructions, *edits], labels=labels, height=96))
    rows = []
    baseline = None
    for name in methods:
        row = totals[name]
        count = len(row["metrics"])
        metrics = {k: sum(m[k] for m in row["metrics"]) / count for k in row["metrics"][0]}
        edit = sum(row["edit"]) / count
        baseline = edit if baseline is None else baseline
        to_quality = None if None in row["to_q"] else sum(row["to_q"]) / count
        rows.append(
            {"method": name, "wall_s": row["wall_s"] / count, "steps": row["steps"] / count,
             "bytes": row["bytes"] / count, **metrics, "seconds_to_quality": to_quality,
             "reached_quality": sum(v is not None for v in row["to_q"]), "edit_change": edit,
             "editability": edit / baseline if baseline else None, "edit_pixels": sum(row["pixels"]) / count}
        )  # fmt: skip
    return rows, grid_rows


def step_cost(resolution: int, repeats: int = 2) -> dict[str, float]:
    """Seconds per projection step (grad w.r.t. w, VGG LPIPS at <=256 px) and per tuning step (grad w.r.t. all
    synthesis weights, AlexNet LPIPS at full resolution) for an FFHQ-config generator (untrained weights)."""
    torch.manual_seed(0)
    G = Generator(512, 0, 512, resolution, 3, synthesis_kwargs=dict(channel_base=32768, channel_max=512)).eval()
    G.requires_grad_(False)
    vgg, alex = load_lpips("vgg"), load_lpips("alex")
    target = torch.rand(1, 3, resolution, resolution) * 2 - 1
    small = torch.nn.functional.interpolate(target, size=(256, 256), mode="area") if resolution > 256 else target
    w = torch.zeros(1, G.num_ws, 512, requires_grad=True)

    def projection_step():
        image = G.synthesis(w, noise_mode="const")
        if resolution > 256:
            image = torch.nn.functional.interpolate(image, size=(256, 256), mode="area")
        torch.autograd.grad(vgg(image, small).sum(), [w])

    params = list(G.synthesis.parameters())
    for p in params:
        p.requires_grad_(True)

    def tuning_step():
        image = G.synthesis(w.detach(), noise_mode="const")
        loss = alex(image, target).sum() + (image - target).square().mean()
        torch.autograd.grad(loss, params)

    result = {}
    for name, fn in (("projection_step_s", projection_step), ("tuning_step_s", tuning_step)):
        fn()  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        result[name] = (time.perf_counter() - started) / repeats
    return result


def markdown(results: dict) -> str:
    lines = []
    for domain, rows in results["domains"].items():
        lines += [
            f"\n**{domain}** ({results['images'][domain]} image(s), mean per image; grid: {results['grids'][domain]})\n"
        ]
        lines += [
            f"| method | wall s | steps | PSNR dB | SSIM | LPIPS | s to {QUALITY_DB:g} dB (reached) | stored bytes | "
            "yaw editability | edit pixel change |"
        ]
        lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            edit = "n/a" if r["editability"] is None else f"{r['editability']:.2f}"
            to_quality = "-" if r["seconds_to_quality"] is None else f"{r['seconds_to_quality']:.1f}"
            lines.append(
                f"| {r['method']} | {r['wall_s']:.1f} | {r['steps']:.0f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                f"{r['lpips_alex']:.4f} | {to_quality} ({r['reached_quality']}/{results['images'][domain]}) | "
                f"{r['bytes']:,.0f} | {edit} | {r['edit_pixels']:.3f} |"
            )
    lines += ["\n**Per-step cost, FFHQ-config generator (channel_base 32768, channel_max 512, w_dim 512)**\n"]
    lines += ["| resolution | projection step s | tuning step s |", "|---:|---:|---:|"]
    for res, cost in results["step_cost"].items():
        lines.append(f"| {res} | {cost['projection_step_s']:.2f} | {cost['tuning_step_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 image per domain; step cost at 256 px only")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    count = 1 if args.quick else 2
    G = load_generator(device=args.device)
    results = {
        "device": args.device,
        "threads": args.threads,
        "images": {},
        "grids": {},
        "model_hash": G.source_info["hash"],
        "domains": {},
        "step_cost": {},
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for domain, batch in targets(count, G.img_resolution).items():
        results["domains"][domain], grid_rows = run_methods(G, batch.to(args.device))
        results["images"][domain] = batch.shape[0]
        grid = RESULTS / f"bench_inversion_{stamp}_{domain.split()[0]}.png"
        save_image(torch.cat([row[..., : grid_rows[0].shape[-1]] for row in grid_rows], dim=-2), grid)
        results["grids"][domain] = grid.name
        print(f"done: {domain}", flush=True)
    for resolution in (256,) if args.quick else (256, 1024):
        results["step_cost"][resolution] = step_cost(resolution)
    table = markdown(results)
    (RESULTS / f"bench_inversion_{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"bench_inversion_{stamp}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

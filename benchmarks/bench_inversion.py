"""Inversion benchmark: projection only (W, W+), PTI with the reference defaults and PTI with the fast defaults,
side by side on held-out rendered faces (in-domain) and real photos (out-of-domain), with the default model.

Columns: wall seconds, steps, MSE/PSNR/LPIPS(alex)/MS-SSIM against the target, bytes to store the result (latent +
delta), and editability: the change of the edited attribute (attribute regressor) under a shipped direction,
relative to the W-projection row. Also the per-step cost of projection and tuning for an FFHQ-config generator.

    python benchmarks/bench_inversion.py            # 2 faces + 2 photos, per-step cost at 256 and 1024 px
    python benchmarks/bench_inversion.py --quick    # 1 face + 1 photo, per-step cost at 256 px only

Results go to ``benchmarks/results/`` (JSON + markdown); the markdown table is also printed.
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
from pti.image import load_image, prepare_target  # noqa: E402
from pti.latent import Latent, synthesize  # noqa: E402
from pti.metrics import summarize  # noqa: E402
from pti.networks import Generator  # noqa: E402
from pti.perceptual import load_lpips  # noqa: E402
from pti.projection import project  # noqa: E402
from pti.synthetic import faces  # noqa: E402
from pti.tune import pivotal_tune  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
EDIT_DIRECTION, EDIT_STRENGTH = "yaw", 3.0  # a direction the default model draws (smile it does not)


def targets(count: int, resolution: int) -> dict[str, torch.Tensor]:
    """Held-out rendered faces (seeds the default model never trained on) and real photo crops."""
    rendered = faces.render_from_z(faces.sample_z(count, seed=987_654), resolution).clamp(-1, 1)
    photo = load_image(REPO / "workflows" / "pti_example_face.png")
    photos = [prepare_target(photo, resolution), prepare_target(torch.flip(photo, dims=[2])[:, 8:, 4:-4], resolution)]
    return {"rendered faces (in-domain)": rendered, "real photos (out-of-domain)": torch.cat(photos[:count])}


def stored_bytes(latent: Latent, tuned: Generator | None, base: Generator) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        size = latent.save(Path(tmp) / "pivot.safetensors").stat().st_size
        if tuned is not None:
            size += save_delta(tuned, base, Path(tmp) / "delta.safetensors").stat().st_size
        return size


def attribute_change(G: Generator, latent: Latent) -> float | None:
    """Mean change of the edited attribute when the pivot is moved along the shipped direction, or None."""
    try:
        from pti.directions import default_directions
        from pti.edit import apply_direction
        from pti.synthetic.attributes import predict_attributes

        direction = default_directions()[EDIT_DIRECTION]
        index = faces.ATTRIBUTE_NAMES.index(EDIT_DIRECTION)
        before = predict_attributes(synthesize(G, latent))[:, index]
        after = predict_attributes(synthesize(G, apply_direction(latent, direction, EDIT_STRENGTH)))[:, index]
        return float((after - before).mean())
    except (FileNotFoundError, KeyError, ImportError, ValueError) as exc:
        print(f"(editability skipped: {exc})")
        return None


def run_methods(G: Generator, batch: torch.Tensor) -> list[dict]:
    """Each image on its own (as a user would run it); sums of times/steps/bytes, means of the metrics."""
    methods = ["W projection (reference 450 steps)", "W+ projection (fast settings)", "PTI reference", "PTI fast"]
    totals = {m: {"wall_s": 0.0, "steps": 0, "bytes": 0, "metrics": [], "edit": []} for m in methods}
    for image in batch.split(1):
        started = time.perf_counter()
        pivot_ref = project(G, image, space="w", preset="reference")
        proj_ref_s = time.perf_counter() - started
        started = time.perf_counter()
        tuned_ref = pivotal_tune(G, image, pivot_ref, preset="reference")
        tune_ref_s = time.perf_counter() - started
        started = time.perf_counter()
        pivot_wplus = project(G, image, space="w+", preset="fast")
        wplus_s = time.perf_counter() - started
        started = time.perf_counter()
        pivot_fast = project(G, image, space="w", preset="fast")
        tuned_fast = pivotal_tune(G, image, pivot_fast, preset="fast")
        fast_s = time.perf_counter() - started
        runs = {
            methods[0]: (G, pivot_ref, None, proj_ref_s, pivot_ref.meta["steps"]),
            methods[1]: (G, pivot_wplus, None, wplus_s, pivot_wplus.meta["steps"]),
            methods[2]: (tuned_ref, pivot_ref, tuned_ref, proj_ref_s + tune_ref_s, None),
            methods[3]: (tuned_fast, pivot_fast, tuned_fast, fast_s, None),
        }
        for name, (decoder, latent, tuned, seconds, steps) in runs.items():
            row = totals[name]
            if steps is None:
                steps = latent.meta["steps"] + tuned.tuning_info["steps"]
            row["wall_s"] += seconds
            row["steps"] += steps
            row["bytes"] += stored_bytes(latent, tuned, G)
            row["metrics"].append(summarize(synthesize(decoder, latent), image))
            row["edit"].append(attribute_change(decoder, latent))
    rows = []
    baseline = None
    for name in methods:
        row = totals[name]
        count = len(row["metrics"])
        metrics = {k: sum(m[k] for m in row["metrics"]) / count for k in row["metrics"][0]}
        edit = None if None in row["edit"] else sum(row["edit"]) / count
        baseline = edit if baseline is None else baseline
        editability = edit / baseline if edit is not None and baseline else None
        rows.append(
            {"method": name, "wall_s": row["wall_s"] / count, "steps": row["steps"] / count,
             "bytes": row["bytes"] / count, **metrics, "edit_change": edit, "editability": editability}
        )  # fmt: skip
    return rows


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
        lines += [f"\n**{domain}** ({results['images_per_domain']} image(s), mean per image)\n"]
        lines += ["| method | wall s | steps | MSE | PSNR dB | LPIPS | MS-SSIM | stored bytes | editability |"]
        lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            edit = "n/a" if r["editability"] is None else f"{r['editability']:.2f}"
            lines.append(
                f"| {r['method']} | {r['wall_s']:.1f} | {r['steps']:.0f} | {r['mse']:.4f} | {r['psnr']:.2f} | "
                f"{r['lpips_alex']:.4f} | {r['ms_ssim']:.3f} | {r['bytes']:,.0f} | {edit} |"
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
        "images_per_domain": count,
        "model_hash": G.source_info["hash"],
        "domains": {},
        "step_cost": {},
    }
    for domain, batch in targets(count, G.img_resolution).items():
        results["domains"][domain] = run_methods(G, batch.to(args.device))
        print(f"done: {domain}", flush=True)
    for resolution in (256,) if args.quick else (256, 1024):
        results["step_cost"][resolution] = step_cost(resolution)
    table = markdown(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench_inversion_{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"bench_inversion_{stamp}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

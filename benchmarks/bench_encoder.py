"""Encoder benchmark: encoder only, encoder + refinement, optimisation only — the pivot alone and the whole main
job (pivot + tuning) — on the embedded model, with held-out rendered faces (in-domain) and the two example photos.

Every method runs on every image in turn inside one process, so the timings are comparable as ratios even on a
shared machine. Columns, measured against the image at model resolution: wall seconds (mean per image), projection
+ tuning steps, PSNR, SSIM, LPIPS(alex), and editability: the change of the yaw attribute (shipped regressor) under
+3 units of the shipped yaw direction, relative to the optimisation-only row (as ``bench_inversion.py``).

    python benchmarks/bench_encoder.py                 # 2 faces + 2 photos
    python benchmarks/bench_encoder.py --quick         # 1 face + 2 photos, fewer variants
    python benchmarks/bench_encoder.py --encoder e4e_ffhq_encode.pt --checkpoint ffhq.pkl   # a 1024 px model

Results go to ``benchmarks/results/`` (JSON + markdown); the markdown table is also printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inversion import attribute_change, edited, targets  # noqa: E402

from pti.checkpoints import load_generator  # noqa: E402
from pti.encoder import load_encoder  # noqa: E402
from pti.image import GeneratorImages, prepare_target  # noqa: E402
from pti.latent import synthesize  # noqa: E402
from pti.metrics import summarize  # noqa: E402
from pti.pipeline import encode, invert  # noqa: E402
from pti.projection import project  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def pivot_methods(refine_steps: list[int]) -> dict[str, dict]:
    """name -> keyword arguments: ``encoder`` (use it), ``steps`` and ``space`` of the projection."""
    methods = {"encoder only (0 steps, W+)": {"encoder": True, "steps": 0, "space": "w"}}
    for steps in refine_steps:
        methods[f"encoder + {steps} steps (W)"] = {"encoder": True, "steps": steps, "space": "w"}
    methods["optimisation only (fast preset, W)"] = {"encoder": False, "steps": None, "space": "w"}
    return methods


def run_pivots(G, encoder, batch: torch.Tensor, methods: dict[str, dict]) -> list[dict]:
    rows: dict[str, dict] = {name: {"wall_s": [], "steps": [], "metrics": [], "edit": []} for name in methods}
    for image in batch.split(1):
        for name, method in methods.items():
            started = time.perf_counter()
            init = encode(encoder, image) if method["encoder"] else None
            pivot = project(G, GeneratorImages(image), space=method["space"], steps=method["steps"], init=init)
            seconds = time.perf_counter() - started
            reconstruction = synthesize(G, pivot)
            row = rows[name]
            row["wall_s"].append(seconds)
            row["steps"].append(pivot.meta["steps"])
            row["metrics"].append(summarize(reconstruction, image))
            row["edit"].append(attribute_change(reconstruction, edited(G, pivot)))
    return _summaries(rows, baseline=list(methods)[-1])


def run_jobs(G, encoder, batch: torch.Tensor, jobs: dict[str, dict]) -> list[dict]:
    """The main job (``pipeline.invert``, fast preset) with and without the encoder."""
    rows: dict[str, dict] = {name: {"wall_s": [], "steps": [], "metrics": [], "edit": [], "pivot": []} for name in jobs}
    for image in batch.split(1):
        for name, job in jobs.items():
            started = time.perf_counter()
            result = invert(
                G, GeneratorImages(image), init=encoder if job["encoder"] else None, steps_pivot=job["steps"]
            )
            seconds = time.perf_counter() - started
            row = rows[name]
            row["wall_s"].append(seconds)
            row["steps"].append(result.metrics["projection_steps"] + result.metrics["tuning_steps"])
            row["metrics"].append(result.metrics["tuned"])
            row["pivot"].append(result.metrics["pivot"]["psnr"])
            row["edit"].append(attribute_change(result.tuned_image, edited(result.tuned, result.pivot)))
    return _summaries(rows, baseline=list(jobs)[-1])


def _summaries(rows: dict[str, dict], baseline: str) -> list[dict]:
    def mean(values):
        return sum(values) / len(values)

    base_edit = mean(rows[baseline]["edit"])
    out = []
    for name, row in rows.items():
        metrics = {key: mean([m[key] for m in row["metrics"]]) for key in ("psnr", "ssim", "lpips_alex")}
        summary = {"method": name, "wall_s": mean(row["wall_s"]), "steps": mean(row["steps"]), **metrics}
        summary["editability"] = mean(row["edit"]) / base_edit if base_edit else None
        if row.get("pivot"):
            summary["pivot_psnr"] = mean(row["pivot"])
        out.append(summary)
    return out


def markdown(results: dict) -> str:
    lines = [f"threads {results['threads']}, device {results['device']}, encoder {results['encoder']}"]
    for section, domains in (("pivot only", results["pivots"]), ("main job: pivot + tuning", results["jobs"])):
        for domain, rows in domains.items():
            lines += [f"\n**{section} — {domain}** ({results['images'][domain]} image(s), mean per image)\n"]
            extra = " pivot PSNR |" if section.startswith("main") else ""
            lines += [f"| method | wall s | steps | PSNR dB | SSIM | LPIPS | yaw editability |{extra}"]
            lines += ["|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if extra else "")]
            for r in rows:
                edit = "n/a" if r["editability"] is None else f"{r['editability']:.2f}"
                tail = f" {r['pivot_psnr']:.2f} |" if extra else ""
                lines.append(
                    f"| {r['method']} | {r['wall_s']:.2f} | {r['steps']:.0f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                    f"{r['lpips_alex']:.4f} | {edit} |{tail}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 rendered face + the 2 photos; fewer variants")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="generator (default: the embedded model)")
    parser.add_argument("--encoder", default=None, help="encoder for it (default: the shipped one)")
    parser.add_argument("--photos", nargs="*", default=None, help="photos to use instead of the default targets")
    parser.add_argument("--refine", type=int, nargs="+", default=None, help="refinement step counts to compare")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator(args.checkpoint, device=args.device)
    encoder = load_encoder(args.encoder, device=args.device)
    if args.photos:
        domains = {"photos": torch.cat([prepare_target(p, G.img_resolution) for p in args.photos])}
    else:
        domains = targets(1 if args.quick else 2, G.img_resolution)
    refine = args.refine or ([25] if args.quick else [10, 25, 50])
    jobs = {
        "encoder only + tuning": {"encoder": True, "steps": 0},
        **{f"encoder + {n} steps + tuning": {"encoder": True, "steps": n} for n in refine},
        "no encoder (fast preset: best of 64 + 100 steps) + tuning": {"encoder": False, "steps": None},
    }
    results = {"device": args.device, "threads": args.threads, "encoder": encoder.meta.get("source"), "images": {}}
    results["pivots"], results["jobs"] = {}, {}
    for domain, batch in domains.items():
        batch = batch.to(args.device)
        results["images"][domain] = batch.shape[0]
        results["pivots"][domain] = run_pivots(G, encoder, batch, pivot_methods(refine))
        results["jobs"][domain] = run_jobs(G, encoder, batch, jobs)
        print(f"done: {domain}", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (RESULTS / f"bench_encoder_{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"bench_encoder_{stamp}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

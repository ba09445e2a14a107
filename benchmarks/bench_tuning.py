"""Tuning-variant benchmark: why the fast preset tunes every weight at lr 1e-3 with LPIPS + 10·MSE.

Each example photo is projected once (fast W projection, 100 steps, seed 0); from that same pivot every variant runs
``pti.tune.pivotal_tune`` (all but ``first-fast`` for the whole step budget, early stop off), and the tuned
generator's rendering of the pivot, G'(pivot), is measured against the photo at model resolution: PSNR, SSIM and
LPIPS(alex) (``pti.metrics``), plus the wall and CPU seconds of the ``pivotal_tune`` call (no evaluation inside it;
CPU seconds, summed over threads, are the steadier figure on a shared machine). Variants (``--variants`` takes the
keys):

    first-fast   preset="reference", rank=4, lr=3e-3, steps=150, lpips_threshold=0.06
                                                             (the first fast preset, with its LPIPS early stop)
    paper        preset="reference", lpips_threshold=0       (official settings: lr 3e-4, LPIPS + MSE)
    lr1e-3       preset="reference", lr=1e-3, lpips_threshold=0
    rank4        preset="reference", rank=4, lr=3e-3, lpips_threshold=0
    rank16       preset="reference", rank=16, lr=3e-3, lpips_threshold=0
    lr1e-3-mse10 preset="reference", lr=1e-3, mse_weight=10, lpips_threshold=0
    fast         preset="fast", target_psnr=0                 (the default: lr 1e-3, LPIPS + 10·MSE)
    rank16-fast  preset="fast", rank=16, target_psnr=0

every one but ``first-fast`` with ``steps=--steps`` (600). Prints a markdown table per photo; writes JSON and, per
photo, a picture strip (the photo, G(pivot), then each variant's G'(pivot)) to ``benchmarks/results/``.

    python benchmarks/bench_tuning.py                       # both example photos, all variants, 600 steps
    python benchmarks/bench_tuning.py --photos workflows/pti_example_face.png --variants fast rank16-fast
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import load_generator  # noqa: E402
from pti.image import GeneratorImages, make_comparison, prepare_target, save_image  # noqa: E402
from pti.latent import synthesize  # noqa: E402
from pti.metrics import lpips_distance, psnr, ssim  # noqa: E402
from pti.projection import project  # noqa: E402
from pti.tune import pivotal_tune  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PHOTOS = ("workflows/pti_example_face.png", "workflows/pti_example_photo.jpg")
PROJECTION_STEPS = 100
SEED = 0

# key -> (table label, pivotal_tune keyword arguments; ``steps`` defaults to --steps)
VARIANTS: dict[str, tuple[str, dict]] = {
    "first-fast": (
        "first fast preset: rank-4 lr 3e-3, ≤ 150 steps, stop at LPIPS ≤ 0.06",
        {"preset": "reference", "rank": 4, "lr": 3e-3, "steps": 150, "lpips_threshold": 0.06},
    ),
    "paper": ("paper (reference preset, no early stop)", {"preset": "reference", "lpips_threshold": 0}),
    "lr1e-3": ("all weights lr 1e-3, LPIPS+MSE", {"preset": "reference", "lr": 1e-3, "lpips_threshold": 0}),
    "rank4": ("rank-4 lr 3e-3", {"preset": "reference", "rank": 4, "lr": 3e-3, "lpips_threshold": 0}),
    "rank16": ("rank-16 lr 3e-3", {"preset": "reference", "rank": 16, "lr": 3e-3, "lpips_threshold": 0}),
    "lr1e-3-mse10": (
        "all weights lr 1e-3, LPIPS+10·MSE",
        {"preset": "reference", "lr": 1e-3, "mse_weight": 10, "lpips_threshold": 0},
    ),
    "fast": ("fast (default)", {"preset": "fast", "target_psnr": 0}),
    "rank16-fast": ("rank-16, fast settings", {"preset": "fast", "rank": 16, "target_psnr": 0}),
}


@torch.no_grad()
def fidelity(image: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    return {
        "psnr": float(psnr(image, target)[0]),
        "ssim": float(ssim(image, target)[0]),
        "lpips": float(lpips_distance(image, target)[0]),
    }


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, dict[str, float]]:
    """``fn(*args, **kwargs)`` and its wall and CPU (this process, all threads) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def run_photo(G, path: Path, variants: list[str], steps: int) -> tuple[list[dict], torch.Tensor]:
    """Project ``path`` once, tune every variant from that pivot; the table rows and the picture strip."""
    target = prepare_target(path, G.img_resolution)
    pivot, clock = timed(project, G, GeneratorImages(target), steps=PROJECTION_STEPS, seed=SEED)
    pivot_image = synthesize(G, pivot)
    label = f"pivot only: G(pivot), {PROJECTION_STEPS}-step fast projection"
    rows = [{"key": "pivot", "variant": label, "steps": 0, **clock, **fidelity(pivot_image, target)}]
    images, labels = [target[0], pivot_image[0]], ["photo", "pivot"]
    for key in variants:
        label, options = VARIANTS[key]
        torch.manual_seed(SEED)
        tuned, clock = timed(pivotal_tune, G, GeneratorImages(target), pivot, seed=SEED, **{"steps": steps, **options})
        image = synthesize(tuned, pivot)
        info = tuned.tuning_info
        rows.append({"key": key, "variant": label, "options": options, "steps": info["steps"], **clock,
                     **fidelity(image, target), "settings": info["settings"]})  # fmt: skip
        images.append(image[0])
        labels.append(key)
        print(f"  {path.name}: {key} {rows[-1]['psnr']:.2f} dB, {clock['seconds']:.1f} s", flush=True)
    return rows, make_comparison(images, labels=labels, height=128)


def markdown(photo: str, rows: list[dict], strip: str) -> str:
    lines = [
        f"\n**{photo}** (picture strip: {strip})\n",
        "| variant | steps | PSNR dB | SSIM | LPIPS | wall s | CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} | "
            f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="photos, relative to the repository root")
    parser.add_argument("--steps", type=int, default=600, help="tuning steps of the variants without an early stop")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared, busy CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    G = load_generator()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"threads": args.threads, "steps": args.steps, "model_hash": G.source_info["hash"], "photos": {}}
    tables = []
    for photo in args.photos:
        path = Path(photo) if Path(photo).is_absolute() else REPO / photo
        rows, strip = run_photo(G, path, args.variants, args.steps)
        strip_path = save_image(strip, RESULTS / f"bench_tuning_{stamp}_{path.stem}.png")
        results["photos"][photo] = {"rows": rows, "strip": strip_path.name}
        tables.append(markdown(photo, rows, strip_path.name))
    (RESULTS / f"bench_tuning_{stamp}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\nthreads {args.threads}, seed {SEED}, --steps {args.steps}")
    print("\n".join(tables))


if __name__ == "__main__":
    main()

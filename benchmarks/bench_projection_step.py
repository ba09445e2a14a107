"""Per-step cost of the reference projection (the paper's projector: VGG LPIPS, 450 steps) on the embedded model.

Side by side in one run, alternating: the photo's LPIPS features computed once (``pti.perceptual.LpipsToTargets``,
what ``project`` does) against recomputing them every step (what the pack did before, and what the official PTI
projector's LPIPS call does for the generated image only). One thread by default, as the official figure was taken.

    python benchmarks/bench_projection_step.py [--threads 1] [--steps 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import pti.projection as projection  # noqa: E402
from pti.checkpoints import load_generator  # noqa: E402
from pti.image import GeneratorImages, prepare_target  # noqa: E402


class FeaturesEveryStep(torch.nn.Module):
    """The same distance as ``LpipsToTargets``, recomputing the photo's backbone features on every call."""

    def __init__(self, model: torch.nn.Module, targets: torch.Tensor):
        super().__init__()
        self.model, self.targets = model, targets

    def forward(self, images: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        targets = self.targets[rows]
        return self.model(images, targets.expand_as(images) if targets.shape[0] == 1 else targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator()
    target = GeneratorImages(prepare_target(REPO_ROOT / "workflows" / "pti_example_face.png", G.img_resolution))
    projection.project(G, target, preset="reference", steps=5, num_w_samples=64)  # warm-up, loads VGG
    variants = {"features once (current)": projection.LpipsToTargets, "features every step": FeaturesEveryStep}
    timings: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(args.repeats):
            for name, distance in variants.items():
                projection.LpipsToTargets = distance
                started = time.perf_counter()
                projection.project(G, target, preset="reference", steps=args.steps)
                timings[name].append((time.perf_counter() - started) / args.steps)
    finally:
        projection.LpipsToTargets = variants["features once (current)"]
    print(f"reference projection, embedded {G.img_resolution} px model, {args.threads} thread(s), {args.steps} steps")
    print("| variant | ms per step (each run) | best |\n|---|---|---:|")
    for name, values in timings.items():
        runs = ", ".join(f"{1000 * v:.1f}" for v in values)
        print(f"| {name} | {runs} | {1000 * min(values):.1f} |")


if __name__ == "__main__":
    main()

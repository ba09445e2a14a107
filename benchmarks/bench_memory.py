"""Peak memory of PTI (projection + pivotal tuning) at 64, 256 and 1024 px, one fresh process per configuration.

Each child builds a generator with the FFHQ config-f widths (z/w 512, 8 mapping layers, channel_base 32768,
channel_max 512) at the given resolution with random weights (memory does not depend on the values), projects one
image for a few steps and tunes for a few steps, and reports:

- ``model MB``: peak RSS once the generator and the LPIPS backbones are loaded (the baseline of a ComfyUI process);
- ``projection MB`` / ``tuning MB``: peak RSS after each stage (``resource.getrusage``, monotonic, so each column
  includes the previous ones);
- on CUDA (``--device cuda``), ``torch.cuda.max_memory_allocated`` per stage instead of the process RSS;
- ``estimate MB``: what ``pti.memory`` says projection (VGG LPIPS) and tuning (AlexNet LPIPS) need beyond the
  weights, the figure the ComfyUI nodes ask ComfyUI's model management to free before they start.

Usage: ``nice -n 5 python benchmarks/bench_memory.py [--resolutions 64 256 1024] [--steps 2] [--device cpu]``;
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(resolution: int, steps: int, device: str) -> dict:
    """Run in the child process: build, project, tune; peak memory after each stage."""
    sys.path.insert(0, str(REPO_ROOT))
    import torch

    from pti.image import GeneratorImages
    from pti.memory import optimisation_bytes
    from pti.networks import Generator
    from pti.perceptual import load_lpips
    from pti.projection import project
    from pti.tune import pivotal_tune

    torch.manual_seed(0)
    G = (
        Generator(
            z_dim=512,
            c_dim=0,
            w_dim=512,
            img_resolution=resolution,
            img_channels=3,
            mapping_kwargs=dict(num_layers=8),
            synthesis_kwargs=dict(channel_base=32768, channel_max=512, architecture="skip"),
        )
        .eval()
        .to(device)
    )
    load_lpips("vgg", device)
    load_lpips("alex", device)
    with torch.no_grad():
        rendering = G.synthesis(G.mapping(torch.randn(1, 512, device=device), None), noise_mode="const").clamp(-1, 1)
    image = GeneratorImages(rendering)
    row = {"resolution": resolution, "device": device, "parameters": G.num_parameters(), "model": _peak_mb(device)}
    row["estimate_projection"] = optimisation_bytes(G, 1, "vgg", tunes_weights=False) / 2**20
    row["estimate_tuning"] = optimisation_bytes(G, 1, "alex", tunes_weights=True) / 2**20
    start = time.perf_counter()
    latent = project(G, image, steps=steps, preset="reference", num_w_samples=64)
    row["projection"], row["projection_s"] = _peak_mb(device), time.perf_counter() - start
    start = time.perf_counter()
    pivotal_tune(G, image, latent, steps=steps, lpips_threshold=0.0)
    row["tuning"], row["tuning_s"] = _peak_mb(device), time.perf_counter() - start
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=2, help="projection and tuning steps (memory does not grow)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.device)))
        return 0
    unit = "peak CUDA allocated MB" if args.device.startswith("cuda") else "peak RSS MB"
    print(f"| resolution | parameters | model loaded ({unit}) | + projection | + tuning | estimate MB: projection / "
          "tuning | s/projection step | s/tuning step |\n|---|---|---|---|---|---|---|---|", flush=True)  # fmt: skip
    for resolution in args.resolutions:
        command = [sys.executable, __file__, "--child", str(resolution), "--steps", str(args.steps)]
        child = subprocess.run([*command, "--device", args.device], capture_output=True, text=True)
        if child.returncode:
            print(f"| {resolution} | failed: {child.stderr.strip().splitlines()[-1]} |||||")
            continue
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"| {resolution} | {row['parameters'] / 1e6:.1f} M | {row['model']:.0f} | {row['projection']:.0f} | "
            f"{row['tuning']:.0f} | {row['estimate_projection']:.0f} / {row['estimate_tuning']:.0f} | "
            f"{row['projection_s'] / args.steps:.1f} | {row['tuning_s'] / args.steps:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

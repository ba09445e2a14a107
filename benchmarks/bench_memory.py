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
prints a markdown table. ``--saved-tensors [--resolutions 64 256]`` prints what autograd keeps per image instead.
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


def saved_tensor_table(resolutions: list[int]) -> None:
    """What autograd keeps for one image (saved-tensor hooks: exact, unlike RSS peaks) beside ``pti.memory``'s
    per-image terms, for the synthesis network and both LPIPS backbones at 256 px."""
    sys.path.insert(0, str(REPO_ROOT))
    import torch

    from pti import memory
    from pti.networks import Generator
    from pti.perceptual import load_lpips

    def saved_bytes(run, *args, **kwargs) -> int:
        seen: set[tuple[int, tuple[int, ...]]] = set()

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            seen.add((tensor.untyped_storage().data_ptr(), tuple(tensor.shape), tensor.numel() * tensor.element_size()))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            run(*args, **kwargs)
        return sum(size for *_, size in seen)

    print("| what | saved by autograd MB | feature maps MB | synthesis weights MB |\n|---|---|---|---|")
    for resolution in resolutions:
        G = Generator(512, 0, 512, resolution, 3, mapping_kwargs=dict(num_layers=8),
                      synthesis_kwargs=dict(channel_base=32768, channel_max=512, architecture="skip"))  # fmt: skip
        ws = torch.randn(1, G.num_ws, 512)
        saved = saved_bytes(G.synthesis, ws, noise_mode="const")
        features = memory.feature_map_floats(G) * memory.FLOAT_BYTES
        print(f"| synthesis {resolution} px | {saved / 2**20:.0f} | {features / 2**20:.0f} | "
              f"{memory.parameter_bytes(G.synthesis) / 2**20:.0f} |")  # fmt: skip
    for net in ("alex", "vgg"):
        model = load_lpips(net)
        image = (torch.rand(1, 3, 256, 256) * 2 - 1).requires_grad_(True)
        saved = saved_bytes(model, image, torch.rand(1, 3, 256, 256) * 2 - 1)
        print(f"| LPIPS {net} 256 px | {saved / 2**20:.0f} ({saved / 256**2:.0f} bytes/pixel) | | |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=2, help="projection and tuning steps (memory does not grow)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--saved-tensors", action="store_true", help="what autograd keeps, beside the estimate terms")
    args = parser.parse_args(argv)
    if args.saved_tensors:
        saved_tensor_table(args.resolutions)
        return 0
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

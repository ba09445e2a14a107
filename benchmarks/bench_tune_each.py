"""Batched independent tuning against one photo at a time: throughput and peak memory vs N.

For each model and each N, two ways to give N photos their own tuned generator, for ``--steps`` steps each (no early
stop, so both do the same work):

    sequential  ``pivotal_tune`` N times, one photo each (what ``invert-many`` does today)
    batched     ``pivotal_tune_each`` once: N stacked weight copies in one vmapped forward/backward per step

Models: the embedded 64 px generator, and 256 px and 1024 px generators with the FFHQ config-f widths (z/w 512, 8
mapping layers, channel_base 32768, channel_max 512; untrained weights: speed and memory do not depend on the values).
Targets are noise photos and pivots mapped samples: the cost does not depend on the content either.

Every measurement runs in a fresh child process (``--child``) with ``--threads`` torch threads, after an untimed
warm-up (one rendering per photo: LPIPS loaded, kernels chosen); peak memory is the child's peak RSS (Linux
``VmHWM``, reset before the timed call) above its RSS just before, or with ``--device cuda`` the peak of
``torch.cuda.max_memory_allocated`` above the allocation before. The two modes alternate ``--repeat`` times and
the fastest of each counts (the steadiest figure on a shared machine). Prints a markdown table and writes
``benchmarks/results/tune_each_<models>.json``.

    python benchmarks/bench_tune_each.py                              # both models, default N lists
    python benchmarks/bench_tune_each.py --models embedded --counts 1 2 4 8 --steps 5
    python benchmarks/bench_tune_each.py --device cuda --models ffhq1024 --counts 1 2 4 8 --steps 20 --threads 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import load_generator  # noqa: E402
from pti.image import GeneratorImages  # noqa: E402
from pti.latent import Latent  # noqa: E402
from pti.networks import Generator  # noqa: E402
from pti.tune import pivotal_tune, pivotal_tune_each  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
COUNTS = {"embedded": [1, 2, 4, 8], "ffhq256": [1, 2, 4], "ffhq1024": [1, 2, 4, 8]}
FULL_RUN_STEPS = 600  # the fast preset's step budget, for the images/hour column


def build(model: str, device: str) -> Generator:
    if model == "embedded":
        return load_generator(device=device)
    torch.manual_seed(0)
    synthesis = dict(channel_base=32768, channel_max=512)
    resolution = int(model.removeprefix("ffhq"))
    G = Generator(512, 0, 512, resolution, 3, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=synthesis)
    return G.eval().to(device)


def _memory_mark(device: str) -> int:
    """Bytes in use now, and the peak counter reset (CUDA), or the resident set with its peak reset (CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") * 1024


def _memory_peak(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(model: str, count: int, mode: str, steps: int, device: str) -> dict:
    """One measurement, in this (fresh) process."""
    G = build(model, device)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ws = G.mapping(torch.randn(count, G.z_dim, generator=generator).to(device), None)
    targets = (torch.rand(count, 3, G.img_resolution, G.img_resolution, generator=generator) * 2 - 1).to(device)
    options = {"target_psnr": 0.0, "lpips_threshold": 0.0}

    def run(step_count: int) -> None:
        if mode == "batched":
            pivotal_tune_each(G, GeneratorImages(targets), Latent(ws), steps=step_count, **options)
        else:
            for i in range(count):
                pivotal_tune(G, GeneratorImages(targets[i : i + 1]), Latent(ws[i : i + 1]), steps=step_count, **options)

    run(0)  # warm-up: one rendering per photo, no update
    before = _memory_mark(device)
    started = time.perf_counter()
    run(steps)
    peak_mib = (_memory_peak(device) - before) / 2**20  # synchronises CUDA before the clock stops
    seconds = time.perf_counter() - started
    per_image_step = seconds / (count * steps)
    return {
        "model": model,
        "resolution": G.img_resolution,
        "count": count,
        "mode": mode,
        "steps": steps,
        "seconds": round(seconds, 3),
        "seconds_per_image_step": round(per_image_step, 4),
        "images_per_hour_at_600_steps": round(3600 / (per_image_step * FULL_RUN_STEPS), 2),
        "peak_extra_mib": round(peak_mib, 1),
        "threads": torch.get_num_threads(),
        "device": device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(COUNTS), choices=list(COUNTS))
    parser.add_argument("--counts", nargs="+", type=int, help="N values (default: per model, see COUNTS)")
    parser.add_argument("--steps", type=int, default=3, help="timed tuning steps per photo")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child process")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per mode; the fastest counts")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        model, count, mode = args.child
        print(json.dumps(child(model, int(count), mode, args.steps, args.device)))
        return

    rows = []
    for model in args.models:
        for count in args.counts or COUNTS[model]:
            best: dict[str, dict] = {}
            for _ in range(args.repeat):
                for mode in ("sequential", "batched"):
                    command = [sys.executable, __file__, "--child", model, str(count), mode]
                    command += ["--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
                    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                    row = json.loads(output.strip().splitlines()[-1])
                    print(row, flush=True)
                    if mode not in best or row["seconds"] < best[mode]["seconds"]:
                        best[mode] = row
            rows += best.values()
    lines = [
        f"\n{args.steps} timed steps per photo, {args.threads} thread(s), fastest of {args.repeat}, {args.device}\n",
        "| model | N | sequential s/image-step | batched s/image-step | speed-up | images/h @600 steps (seq → batched) "
        "| peak extra MiB (seq → batched) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        for count in args.counts or COUNTS[model]:
            seq, bat = (next(r for r in rows if (r["model"], r["count"], r["mode"]) == (model, count, m)) for m in
                        ("sequential", "batched"))  # fmt: skip
            lines.append(
                f"| {model} {seq['resolution']} px | {count} | {seq['seconds_per_image_step']:.4f} | "
                f"{bat['seconds_per_image_step']:.4f} | {seq['seconds'] / bat['seconds']:.2f}× | "
                f"{seq['images_per_hour_at_600_steps']:.1f} → {bat['images_per_hour_at_600_steps']:.1f} | "
                f"{seq['peak_extra_mib']:.0f} → {bat['peak_extra_mib']:.0f} |"
            )
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"tune_each_{'_'.join(args.models)}.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Compact tuned results: how many bytes each way of storing a tuned generator takes, and how faithfully it reloads.

The example face is projected once (fast W projection, 100 steps, seed 0) and tuned from that pivot twice with the
fast preset (its own stopping rule): every weight (``rank=0``, the default) and rank-4 updates (``rank=4``). Each
tuned generator is stored with ``pti.save_delta`` in the modes below and with ``pti.delta.export_full`` (fp32 and
fp16); every file is reloaded onto the base (``load_delta`` / ``load_generator``) and its rendering of the pivot is
compared with the in-memory fp32 tuned generator's (PSNR, ``inf`` = identical) and with the photo.

    python benchmarks/bench_delta.py
    python benchmarks/bench_delta.py --photo workflows/pti_example_photo.jpg --ranks 4 16 64

Prints a markdown table; writes JSON to ``benchmarks/results/``.
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
from pti.delta import export_full, load_delta, save_delta  # noqa: E402
from pti.image import GeneratorImages, prepare_target  # noqa: E402
from pti.latent import synthesize  # noqa: E402
from pti.metrics import psnr  # noqa: E402
from pti.projection import project  # noqa: E402
from pti.tune import pivotal_tune  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SEED = 0


def stored_variants(tuned, tuning_rank: int, svd_ranks: list[int]) -> list[tuple[str, dict]]:
    """(label, how) pairs: ``how`` is ``{"full": fp16}`` for whole-model exports, else ``save_delta`` arguments."""
    if tuning_rank:
        return [(f"rank-{tuning_rank} delta (default for a rank-{tuning_rank} tuning; exact)", {"mode": "auto"})]
    return [
        ("whole generator, fp32 (`export_full`)", {"full": False}),
        ("whole generator, fp16 (`export_full(fp16=True)`)", {"full": True}),
        ("fp16 delta (default for a full-rank tuning)", {"mode": "auto"}),
        *[(f"rank-{r} SVD delta (`mode='lowrank', rank={r}`)", {"mode": "lowrank", "rank": r}) for r in svd_ranks],
    ]


def store_and_reload(G, tuned, how: dict, folder: Path) -> tuple[int, object]:
    if "full" in how:
        path = export_full(tuned, folder / "full.safetensors", fp16=how["full"])
        return path.stat().st_size, load_generator(path)
    path = save_delta(tuned, G, folder / "delta.safetensors", **how)
    return path.stat().st_size, load_delta(path, G)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photo", default="workflows/pti_example_face.png", help="relative to the repository root")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 16], help="SVD ranks for the full-rank tuning")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared, busy CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    G = load_generator()
    target = prepare_target(REPO / args.photo, G.img_resolution)
    pivot = project(G, GeneratorImages(target), steps=100, seed=SEED)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32_bytes = export_full(G, Path(tmp) / "base.safetensors").stat().st_size
        for tuning_rank in (0, 4):
            tuned = pivotal_tune(G, GeneratorImages(target), pivot, rank=tuning_rank, seed=SEED)
            reference = synthesize(tuned, pivot)
            tuning = f"{'full-rank' if not tuning_rank else f'rank-{tuning_rank}'} ({tuned.tuning_info['steps']} steps)"
            for label, how in stored_variants(tuned, tuning_rank, args.ranks):
                size, reloaded = store_and_reload(G, tuned, how, Path(tmp))
                image = synthesize(reloaded, pivot)
                rows.append(
                    {"tuning": tuning, "stored": label, "bytes": size, "share": fp32_bytes / size,
                     "psnr_vs_tuned": float(psnr(image, reference)[0]), "psnr_vs_photo": float(psnr(image, target)[0])}
                )  # fmt: skip
    lines = [
        f"{args.photo}, fast preset, default model (whole fp32 generator file: {fp32_bytes:,} B)\n",
        "| tuning | what is stored | bytes | share of the fp32 file | reloaded vs fp32 tuned, PSNR dB "
        "| vs photo, PSNR dB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tuning']} | {r['stored']} | {r['bytes']:,} | 1/{r['share']:.1f} | {r['psnr_vs_tuned']:.1f} | "
            f"{r['psnr_vs_photo']:.2f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_delta_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"photo": args.photo, "fp32_bytes": fp32_bytes, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

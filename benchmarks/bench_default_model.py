"""Acceptance numbers of the embedded default generator against the procedural renderer it was trained on.

Prints one table:
- renderer throughput (images/s at 64 px, 1 and 2 threads);
- fidelity of the supervised reproduction: PSNR and LPIPS(alex) between G(z) and render(z) on held-out z;
- realism / diversity: per-attribute two-sample KS statistic between the regressor's predictions on generated and on
  rendered samples (independent seeds), and a "domain FID" on the regressor's penultimate features, beside the value
  for the untrained generator (same architecture, random weights) and the noise floor (two rendered sets);
- directions: +2 units along each shipped direction — share of samples whose target attribute rises, mean target
  change, and the mean absolute change of the other attributes relative to it;
- determinism: the same seed gives bit-identical images.

    nice -n 5 python benchmarks/bench_default_model.py [--samples 1000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import DEFAULT_MODEL_DIR, load_generator  # noqa: E402
from pti.metrics import lpips_distance, psnr  # noqa: E402
from pti.networks import Generator  # noqa: E402
from pti.synthetic import faces  # noqa: E402
from pti.synthetic.attributes import (  # noqa: E402
    direction_effect,
    frechet_distance,
    load_regressor,
    predict_attributes,
    predict_generated,
    regressor_features,
)

HELDOUT_SEED = 555_000  # never used in training (training z come from torch.Generator seeds 0..iterations)
RENDER_SEED = 777_000
DIRECTION_SEED = 999_000
DIRECTION_STRENGTH = 2.0


@torch.no_grad()
def generate(G: Generator, z: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat([G(z[i : i + batch], noise_mode="const") for i in range(0, len(z), batch)]).clamp(-1, 1)


def render_throughput(threads: int, n: int = 256) -> tuple[float, float]:
    """Images/s of the renderer at 64 px: per wall-clock second and per CPU second of this process."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    params = faces.params_from_z(faces.sample_z(n, 0))
    faces.render(params[:16])
    wall, cpu = time.perf_counter(), time.process_time()
    faces.render(params)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    torch.set_num_threads(previous)
    return n / wall, n / cpu


def untrained_like(G: Generator) -> Generator:
    torch.manual_seed(0)
    U = Generator(**G.init_kwargs).eval().requires_grad_(False)
    z = torch.randn([2000, U.z_dim])
    U.mapping.w_avg.copy_(U.mapping(z, None)[:, 0].mean(0))
    return U


def ks_statistics(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    from scipy.stats import ks_2samp

    return [float(ks_2samp(a[:, i].numpy(), b[:, i].numpy()).statistic) for i in range(a.shape[1])]


def measure(
    samples: int,
    direction_samples: int,
    generator: str | None = None,
    directions_file: Path | None = DEFAULT_MODEL_DIR / "directions.safetensors",
    throughput: bool = True,
    regressor_file: str | None = None,
) -> dict:
    """The acceptance numbers of ``generator`` (default: the embedded model); ``directions_file=None`` skips the
    direction check (directions belong to one generator), ``throughput=False`` the renderer timing."""
    G = load_generator(generator)
    regressor = load_regressor(regressor_file)
    results: dict = {"generator_hash": G.source_info.get("hash"), "samples": samples}

    if throughput:
        results["render_images_per_s"] = {t: [round(v, 1) for v in render_throughput(t)] for t in (1, 2)}

    z = faces.sample_z(samples, HELDOUT_SEED)
    fake = generate(G, z)
    real_same_z = faces.render_from_z(z)
    lpips = torch.cat([lpips_distance(fake[i : i + 250], real_same_z[i : i + 250]) for i in range(0, samples, 250)])
    results["fidelity"] = {"psnr_db": psnr(fake, real_same_z).mean().item(), "lpips_alex": lpips.mean().item()}

    real = faces.render_from_z(faces.sample_z(samples, RENDER_SEED))
    real_again = faces.render_from_z(faces.sample_z(samples, RENDER_SEED + 1))
    untrained = generate(untrained_like(G), z)
    fake_attr, real_attr = predict_attributes(fake, regressor), predict_attributes(real, regressor)
    results["ks"] = dict(zip(faces.ATTRIBUTE_NAMES, ks_statistics(fake_attr, real_attr)))
    results["ks_untrained_mean"] = sum(ks_statistics(predict_attributes(untrained, regressor), real_attr)) / len(
        faces.ATTRIBUTE_NAMES
    )
    real_features = regressor_features(real, regressor)
    results["domain_fid"] = {
        "trained": frechet_distance(regressor_features(fake, regressor), real_features),
        "untrained": frechet_distance(regressor_features(untrained, regressor), real_features),
        "render_vs_render": frechet_distance(regressor_features(real_again, regressor), real_features),
    }

    first, second = generate(G, faces.sample_z(8, 42)), generate(G, faces.sample_z(8, 42))
    results["deterministic"] = bool(torch.equal(first, second))
    results["directions"] = {}
    if directions_file is not None:
        results["directions"] = measure_directions(G, regressor, directions_file, direction_samples)
    return results


def measure_directions(G: Generator, regressor, directions_file: Path, direction_samples: int) -> dict:
    """Per shipped direction: share of samples whose attribute rises at +2 units, mean change, side effects."""
    from safetensors import safe_open

    with safe_open(str(directions_file), framework="pt") as f:
        directions = {name: f.get_tensor(name) for name in f.keys()}
    with torch.no_grad():
        ws = G.mapping(faces.sample_z(direction_samples, DIRECTION_SEED), None)
    effects = {}
    baseline = predict_generated(G, ws, regressor)
    for name, vector in directions.items():
        index = faces.ATTRIBUTE_NAMES.index(name)
        delta = direction_effect(G, ws, vector, DIRECTION_STRENGTH, regressor, baseline)
        target = delta[:, index]
        others = torch.cat([delta[:, :index], delta[:, index + 1 :]], 1).abs().mean()
        effects[name] = {
            "right_direction": (target > 0).float().mean().item(),
            "target_change": target.mean().item(),
            "others_over_target": (others / target.abs().mean()).item(),
        }
    return effects


def print_table(r: dict) -> None:
    print(f"default generator {r['generator_hash']}  ({r['samples']} samples per set)")
    if "render_images_per_s" in r:
        rate = r["render_images_per_s"]
        print(
            f"renderer throughput (64 px), wall / per CPU-second: 1 thread {rate[1][0]:.0f} / {rate[1][1]:.0f} "
            f"img/s, 2 threads {rate[2][0]:.0f} / {rate[2][1]:.0f} img/s"
        )
    fid = r["fidelity"]
    print(f"fidelity G(z) vs render(z), held-out z: PSNR {fid['psnr_db']:.2f} dB, LPIPS(alex) {fid['lpips_alex']:.4f}")
    d = r["domain_fid"]
    print(
        f"domain FID (regressor features): trained {d['trained']:.3f}  untrained {d['untrained']:.3f}  "
        f"render-vs-render floor {d['render_vs_render']:.3f}"
    )
    print(f"KS statistic, untrained generator (mean over attributes): {r['ks_untrained_mean']:.3f}")
    print(f"{'attribute':<22} {'KS':>6} {'dir ok':>7} {'Δtarget':>8} {'others/target':>14}")
    for name in faces.ATTRIBUTE_NAMES:
        ks = r["ks"][name]
        e = r["directions"].get(name)
        tail = f"{e['right_direction']:>7.1%} {e['target_change']:>8.3f} {e['others_over_target']:>14.3f}" if e else ""
        print(f"{name:<22} {ks:>6.3f} {tail}")
    print(f"deterministic (same seed, same image): {r['deterministic']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--direction-samples", type=int, default=200)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads for the measurements (1 is best on a busy CPU)"
    )
    p.add_argument("--generator", help="generator file to measure (default: the embedded model)")
    p.add_argument(
        "--directions",
        default=str(DEFAULT_MODEL_DIR / "directions.safetensors"),
        help="directions file fitted for that generator; 'none' skips the direction check",
    )
    p.add_argument("--regressor", help="attribute regressor file (default: the shipped one)")
    p.add_argument("--no-throughput", action="store_true", help="skip the renderer timing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    directions = None if args.directions == "none" else Path(args.directions)
    results = measure(
        args.samples, args.direction_samples, args.generator, directions, not args.no_throughput, args.regressor
    )
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

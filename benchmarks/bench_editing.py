"""Do the shipped edit directions still work after pivotal tuning? (issue 7 acceptance, on the default model)

For held-out procedural face photos (the default model's domain, rendered by ``pti.synthetic.faces`` from seeds the
model never saw), plus any real photos given with ``--photo``, this runs a W-only inversion (the pivot) and then PTI
(the pivot + a tuned generator G'). For every shipped attribute direction ``d`` and strength ``s`` it measures, with
the attribute regressor ``a(.)``:

- ``change_w(s)   = a_k(G (w + s d)) - a_k(G (w))``   target attribute k, W-only inversion
- ``change_pti(s) = a_k(G'(w + s d)) - a_k(G'(w))``   the same edit decoded by the tuned generator
- ``retained = sum_s s * change_pti(s) / sum_s s * change_w(s)``  (ratio of the least-squares slopes; 1 = the edit
  moves the attribute as much after PTI as before; acceptance: >= 0.7)
- ``LPIPS(G'(w + s d), G'(w))`` per strength: how much of the image the edit changes (identity kept when small).
- per image, without the regressor (which was trained on renders and reads a tuned, photo-like reconstruction less
  reliably): the cosine between the edit's pixel change after and before PTI, ``G'(w + s d) - G'(w)`` against
  ``G(w + s d) - G(w)``, and the ratio of their sizes.

Usage: ``python benchmarks/bench_editing.py [--images 4] [--device cuda] [--out benchmarks/results/editing.json]``
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pti.checkpoints import load_generator  # noqa: E402
from pti.directions import default_directions  # noqa: E402
from pti.edit import parse_strengths, strength_sweep  # noqa: E402
from pti.image import GeneratorImages, prepare_target  # noqa: E402
from pti.latent import synthesize  # noqa: E402
from pti.perceptual import load_lpips  # noqa: E402
from pti.projection import project  # noqa: E402
from pti.synthetic import faces  # noqa: E402
from pti.synthetic.attributes import load_regressor, predict_attributes  # noqa: E402
from pti.tune import pivotal_tune  # noqa: E402

log = logging.getLogger("bench_editing")


def retention(num: float, den: float) -> float:
    """Ratio of the after-PTI slope to the W-only slope (NaN when the edit did not move the attribute at all)."""
    return num / den if den else float("nan")


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    G = load_generator(args.checkpoint, device=device)
    regressor = load_regressor(device=device)
    lpips = load_lpips("alex", device=device)
    directions = default_directions()
    if args.attributes:
        directions = {name: directions[name] for name in args.attributes.split(",")}
    strengths = parse_strengths(args.strengths)
    photos, _ = faces.sample(args.images, args.seed, G.img_resolution)
    if args.photo:
        real = [prepare_target(path, G.img_resolution) for path in args.photo]
        photos = torch.cat([photos, *real])
    photos = photos.to(device)

    per_attribute = {
        name: {"num": 0.0, "den": 0.0, "lpips": [0.0] * len(strengths), "per_image": []} for name in directions
    }
    inversions = []
    for index, photo in enumerate(photos):
        started = time.perf_counter()
        target = GeneratorImages(photo[None])
        pivot = project(G, target, space="w", steps=args.project_steps, seed=index)
        projected = time.perf_counter()
        tuned = pivotal_tune(
            G,
            target,
            pivot,
            steps=args.tune_steps,
            lpips_threshold=args.tune_threshold,
            locality=args.locality,
            seed=index,
            preset=args.tune_preset,
        )
        tuned_at = time.perf_counter()
        with torch.no_grad():
            rec_w, rec_pti = synthesize(G, pivot), synthesize(tuned, pivot)
            inversions.append(
                {
                    "lpips_w": float(lpips(rec_w, photo[None]).mean()),
                    "lpips_pti": float(lpips(rec_pti, photo[None]).mean()),
                    "tune_steps": tuned.tuning_info["steps"],
                    "project_s": projected - started,
                    "tune_s": tuned_at - projected,
                }
            )
        for name, direction in directions.items():
            k = faces.ATTRIBUTE_NAMES.index(name)
            sweep = strength_sweep(pivot, direction, strengths)
            with torch.no_grad():
                images_w, images_pti = synthesize(G, sweep), synthesize(tuned, sweep)
                change_w = predict_attributes(images_w, regressor)[:, k] - predict_attributes(rec_w, regressor)[0, k]
                change_pti = (
                    predict_attributes(images_pti, regressor)[:, k] - predict_attributes(rec_pti, regressor)[0, k]
                )
                distances = lpips(images_pti, rec_pti.expand_as(images_pti)).flatten()
                pixels_w, pixels_pti = (images_w - rec_w).flatten(1), (images_pti - rec_pti).flatten(1)
                size_w = pixels_w.norm(dim=1)
                moved = size_w > 0  # strength 0 changes nothing
                agreement = torch.nn.functional.cosine_similarity(pixels_pti[moved], pixels_w[moved]).mean()
                magnitude = (pixels_pti[moved].norm(dim=1) / size_w[moved]).mean()
            s = torch.tensor(strengths, device=device)
            entry = per_attribute[name]
            num, den = float((s * change_pti).sum()), float((s * change_w).sum())
            entry["num"] += num
            entry["den"] += den
            entry["per_image"].append(
                {
                    "retained": retention(num, den),
                    "slope_w_per_unit": den / float((s * s).sum()),
                    "pixel_agreement": float(agreement),  # cosine of the edit's pixel change after vs before PTI
                    "pixel_magnitude": float(magnitude),  # its size after PTI relative to before
                }
            )
            entry["lpips"] = [a + float(b) / len(photos) for a, b in zip(entry["lpips"], distances)]
        log.info("image %d/%d: %s", index + 1, len(photos), inversions[-1])

    rows = {}
    for name, entry in per_attribute.items():
        slope_w = entry["den"] / (len(photos) * sum(v * v for v in strengths))
        rows[name] = {
            "retained": retention(entry["num"], entry["den"]),
            "slope_w_per_unit": slope_w,
            "lpips_by_strength": dict(zip([f"{v:+g}" for v in strengths], entry["lpips"])),
            "per_image": entry["per_image"],  # same order as "inversions": where the effect is kept or lost
        }
    return {
        "settings": vars(args),
        "device": str(device),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "generator_hash": G.source_info["hash"],
        "inversions": inversions,
        "attributes": rows,
    }


def markdown(result: dict) -> str:
    strengths = list(next(iter(result["attributes"].values()))["lpips_by_strength"])
    header = " | ".join(f"LPIPS {s}" for s in strengths)
    lines = [
        f"| direction | retained after PTI | attr. change / unit (W) | {header} |",
        "|---|---|---|" + "---|" * len(strengths),
    ]
    for name, row in result["attributes"].items():
        cells = " | ".join(f"{v:.3f}" for v in row["lpips_by_strength"].values())
        lines.append(f"| {name} | {row['retained']:.2f} | {row['slope_w_per_unit']:+.3f} | {cells} |")
    inv = result["inversions"]
    n = len(inv)
    lines.append("")
    lines.append(
        f"Reconstruction LPIPS (alex), mean of {n}: W-only {sum(r['lpips_w'] for r in inv) / n:.3f}, "
        f"PTI {sum(r['lpips_pti'] for r in inv) / n:.3f}; time per image: projection "
        f"{sum(r['project_s'] for r in inv) / n:.1f} s, tuning {sum(r['tune_s'] for r in inv) / n:.1f} s "
        f"({sum(r['tune_steps'] for r in inv) / n:.0f} steps) "
        f"({result['device']}; early-stop threshold {result['settings']['tune_threshold']}, "
        f"locality {'on' if result['settings']['locality'] else 'off'})."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="generator (default: the embedded model)")
    parser.add_argument("--images", type=int, default=4, help="held-out procedural face photos to invert")
    parser.add_argument("--photo", action="append", default=[], help="also invert this photo (repeatable)")
    parser.add_argument("--seed", type=int, default=900_001, help="seed of the held-out photos")
    parser.add_argument("--strengths", default="-3:3:7", help="edit strengths (start:stop:count)")
    parser.add_argument("--attributes", default="", help="comma list of shipped directions (default: all)")
    parser.add_argument("--project-steps", type=int, default=None, help="projection steps (default: fast preset)")
    parser.add_argument("--tune-steps", type=int, default=None, help="tuning steps (default: fast preset)")
    parser.add_argument(
        "--tune-threshold",
        type=float,
        default=None,
        help="LPIPS early-stop threshold of tuning (default: the preset's 0.06, what users get); 0 runs every step, "
        "so G' moves as far from G as the step budget allows (a stress test)",
    )
    parser.add_argument(
        "--tune-preset",
        default="fast",
        choices=["fast", "reference"],
        help="tuning preset after the (fast) projection: fast = rank-4 updates (default), reference = every weight",
    )
    parser.add_argument(
        "--locality", action="store_true", help="tune with the locality regulariser (keeps G' like G off the pivot)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "editing.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = measure(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()

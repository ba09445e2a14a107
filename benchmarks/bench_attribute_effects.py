"""Per attribute of the synthetic face domain: how much the renderer's image changes with it, how well the shipped
regressor reads it, and how one shipped direction of the default model moves every reading.

Columns (one row per attribute in ``pti.synthetic.faces.ATTRIBUTE_NAMES``):

- renderer change: mean absolute pixel change (0..1 scale, whole 64 px image) when that parameter of each of
  ``--samples`` sampled faces takes the value of another sampled face, the others kept (wrap-around hues included);
- regressor error: mean absolute error of the shipped regressor on ``--regressor-samples`` held-out renders, beside
  the chance level (the mean absolute difference between two random faces' values);
- +2 ``--direction``: mean change of each regressor reading when ``--samples`` sampled w of the default model move
  +2 units along the shipped direction (``others / target`` is the acceptance's side-effect ratio).

The generator's own mean absolute error against the renderer (same z, same scale) is printed above the table.

    python benchmarks/bench_attribute_effects.py
    python benchmarks/bench_attribute_effects.py --direction smile --samples 500

Prints a markdown table; writes JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import load_generator  # noqa: E402
from pti.directions import default_directions  # noqa: E402
from pti.synthetic import faces  # noqa: E402
from pti.synthetic.attributes import direction_effect, load_regressor, predict_attributes  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# Seeds no training script and no other benchmark uses (training z come from seeds 0..iterations).
SAMPLE_SEED = 424_242
REGRESSOR_SEED = 434_343
STRENGTH = 2.0


@torch.no_grad()
def renderer_change(params: torch.Tensor) -> list[float]:
    """Per attribute: mean |render(params) - render(params with that column from another face)|, 0..1 scale."""
    base = faces.render(params)
    changes = []
    for index in range(faces.NUM_PARAMETERS):
        moved = params.clone()
        moved[:, index] = params[:, index].roll(1)
        changes.append(float((faces.render(moved) - base).abs().mean() / 2))
    return changes


@torch.no_grad()
def regressor_error(count: int) -> tuple[list[float], list[float]]:
    """Per attribute: the regressor's mean absolute error on held-out renders, and the chance level."""
    images, truth = faces.sample(count, REGRESSOR_SEED)
    predicted = torch.cat([predict_attributes(chunk) for chunk in images.split(250)])
    chance = (truth - truth.roll(1, dims=0)).abs().mean(0)
    return (predicted - truth).abs().mean(0).tolist(), chance.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="sampled z/w for the renderer and direction columns")
    parser.add_argument("--regressor-samples", type=int, default=2000, help="held-out renders for the regressor")
    parser.add_argument("--direction", default="mouth_width", choices=faces.ATTRIBUTE_NAMES)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared, busy CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator()
    z = faces.sample_z(args.samples, SAMPLE_SEED)
    with torch.no_grad():
        generator_error = float((G(z, noise_mode="const").clamp(-1, 1) - faces.render_from_z(z)).abs().mean() / 2)
        ws = G.mapping(z, None)
    change = renderer_change(faces.params_from_z(z))
    error, chance = regressor_error(args.regressor_samples)
    delta = direction_effect(G, ws, default_directions()[args.direction].vector, STRENGTH, load_regressor())
    effect, size = delta.mean(0), delta.abs().mean(0)
    target = faces.ATTRIBUTE_NAMES.index(args.direction)
    others = float(torch.cat([delta[:, :target], delta[:, target + 1 :]], 1).abs().mean() / size[target])

    lines = [
        f"default generator's mean absolute error against the renderer (same z, 0..1): {generator_error:.4f}; "
        f"+{STRENGTH:g} {args.direction}: others / target {others:.3f}\n",
        f"| attribute | renderer change | regressor error | chance | +{STRENGTH:g} {args.direction}: "
        "mean change | mean abs. change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    columns = {"renderer_change": change, "regressor_error": error, "chance": chance,
               "direction_change": effect.tolist(), "direction_abs_change": size.tolist()}  # fmt: skip
    for i, name in enumerate(faces.ATTRIBUTE_NAMES):
        a, b, c, d, e = (values[i] for values in columns.values())
        lines.append(f"| {name} | {a:.4f} | {b:.3f} | {c:.3f} | {d:+.3f} | {e:.3f} |")
    lines.append(f"| mean | {sum(change) / len(change):.4f} | {sum(error) / len(error):.3f} | "
                 f"{sum(chance) / len(chance):.3f} | | |")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_attribute_effects_{time.strftime('%Y%m%d-%H%M%S')}.json"
    record = {"args": vars(args), "generator_error": generator_error, "others_over_target": others, **columns}
    out.write_text(json.dumps(record, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

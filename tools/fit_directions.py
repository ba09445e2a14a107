"""Fit InterFaceGAN-style edit directions in W for the default generator, one per face attribute.

For seeded ``z`` the default generator reproduces ``pti.synthetic.faces.render_from_z(z)``, so every sampled
``w = mapping(z)`` carries exact ground-truth attributes (the renderer's parameters of the same ``z``). Two linear
fits per attribute:

- ``mean-shift`` (shipped): ``d ∝ Cov(w, attribute)``, the direction in which w moves as the attribute grows — the
  normal of the boundary between the attribute's high and low halves under a nearest-class-mean classifier.
- ``boundary``: the least-squares / LDA normal (``attribute ≈ n · w + b`` on standardised w), InterFaceGAN's SVM
  normal for a continuous label. It is the sharper classifier but is precision-weighted: on this model's very
  anisotropic W it points along directions in which w hardly varies (spread of ``n · w`` ~0.05 against ~1.2 for the
  mean shift, |w - w_avg| ~9), so +2 units leaves the distribution — measured: yaw right on 80 % of samples vs 99 %,
  side effects 0.44 vs 0.25 of the target change.

Both are unit-normalised; ``w + k·d`` raises the attribute for ``k > 0``. The file records the hash of the
generator, as loaded, that the directions belong to.

    python tools/fit_directions.py --generator pti/default_model/generator.safetensors \\
        --out pti/default_model/directions.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

if __name__ == "__main__":  # run as a script: pti/ is importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.checkpoints import load_generator, write_safetensors  # noqa: E402
from pti.hashing import state_dict_hash  # noqa: E402
from pti.synthetic import faces  # noqa: E402

log = logging.getLogger("fit_directions")

DIRECTIONS_FORMAT = "pti-directions"
FIT_SEED = 31_337


@torch.no_grad()
def sample_labelled_w(G: torch.nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded ``w [n, w_dim]`` (truncation off) and their ground-truth attributes ``[n, P]``."""
    z = faces.sample_z(n, seed)
    w = torch.cat([G.mapping(z[i : i + 2000], None)[:, 0] for i in range(0, n, 2000)])
    return w, faces.attributes_from_params(faces.params_from_z(z))


def fit_boundaries(w: torch.Tensor, attributes: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit boundary normals ``[P, w_dim]`` in W and the linear fit's R² per attribute ``[P]``."""
    mean, std = w.mean(0), w.std(0).clamp(min=1e-8)
    x = (w - mean) / std
    y = attributes - attributes.mean(0)
    gram = x.T @ x / len(x) + ridge * torch.eye(x.shape[1])
    coef = torch.linalg.solve(gram, x.T @ y / len(x))  # [w_dim, P] in standardised coordinates
    r2 = 1 - ((y - x @ coef) ** 2).mean(0) / y.var(0)
    normals = (coef / std[:, None]).T  # back to W coordinates: d(attribute)/dw
    return normals / normals.norm(dim=1, keepdim=True), r2


def fit_mean_shifts(w: torch.Tensor, attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit directions ``[P, w_dim]`` along ``Cov(w, attribute)`` and, per attribute, the R² of predicting the
    attribute from the projection of w on its direction ``[P]``."""
    w_centred, attributes_centred = w - w.mean(0), attributes - attributes.mean(0)
    directions = (w_centred.T @ attributes_centred / len(w)).T
    directions = directions / directions.norm(dim=1, keepdim=True)
    projections = w_centred @ directions.T  # [n, P]
    correlation = (projections * attributes_centred).mean(0) / (projections.std(0) * attributes_centred.std(0))
    return directions, correlation.square()


METHODS = {"mean-shift": fit_mean_shifts, "boundary": fit_boundaries}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="pti/default_model/generator.safetensors")
    p.add_argument("--out", default="pti/default_model/directions.safetensors")
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=FIT_SEED)
    p.add_argument("--method", choices=sorted(METHODS), default="mean-shift", help="see the module docstring")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)

    G = load_generator(args.generator)
    generator_hash = state_dict_hash(G)
    w, attributes = sample_labelled_w(G, args.samples, args.seed)
    normals, r2 = METHODS[args.method](w, attributes)
    for name, value in zip(faces.ATTRIBUTE_NAMES, r2.tolist()):
        log.info("  %-22s %s fit R² %.3f", name, args.method, value)
    names = list(faces.ATTRIBUTE_NAMES)
    tensors = {name: normals[i].contiguous() for i, name in enumerate(names)}
    method = {
        "mean-shift": "Cov(w, attribute), unit-normalised; ground-truth renderer attributes",
        "boundary": "ridge least squares on standardised w (LDA normal); ground-truth renderer attributes",
    }[args.method]
    fit = dict(
        method=method,
        samples=args.samples,
        seed=args.seed,
    )
    info = {name: {"layers": None, "meta": {**fit, "r2": round(float(r2[i]), 4)}} for i, name in enumerate(names)}
    metadata = {
        "format": DIRECTIONS_FORMAT,
        "generator_hash": generator_hash,
        "attributes": json.dumps(names),
        "order": json.dumps(names),
        "directions": json.dumps(info),
    }
    write_safetensors(args.out, tensors, metadata)
    log.info("wrote %d directions for generator %s to %s", len(names), generator_hash, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

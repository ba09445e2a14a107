"""Fit InterFaceGAN-style edit directions in W for the default generator, one per face attribute.

For seeded ``z`` the default generator reproduces ``pti.faces.render_from_z(z)``, so every sampled ``w = mapping(z)``
carries exact ground-truth attributes (the renderer's parameters of the same ``z``). Per attribute a linear boundary
``attribute ≈ n · w + b`` is fitted by ridge-regularised least squares on standardised ``w`` (the LDA / linear-SVM
normal for a continuous label), mapped back to W coordinates and unit-normalised; ``w + k·n`` then raises the
attribute for ``k > 0``. The file records the hash of the generator, as loaded, that the directions belong to.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti import faces  # noqa: E402
from pti.checkpoints import load_generator, write_safetensors  # noqa: E402
from pti.hashing import state_dict_hash  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="pti/default_model/generator.safetensors")
    p.add_argument("--out", default="pti/default_model/directions.safetensors")
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=FIT_SEED)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)

    G = load_generator(args.generator)
    generator_hash = state_dict_hash(G)
    w, attributes = sample_labelled_w(G, args.samples, args.seed)
    normals, r2 = fit_boundaries(w, attributes)
    for name, value in zip(faces.ATTRIBUTE_NAMES, r2.tolist()):
        log.info("  %-22s linear fit R² %.3f", name, value)
    names = list(faces.ATTRIBUTE_NAMES)
    tensors = {name: normals[i].contiguous() for i, name in enumerate(names)}
    fit = dict(
        method="ridge least squares on standardised w, ground-truth renderer attributes",
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

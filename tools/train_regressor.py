"""Train the attribute regressor shipped as ``pti/default_model/regressor.safetensors``.

Renders a seeded training set once (``pti.synthetic.faces.sample``), trains
:class:`pti.synthetic.attributes.AttributeRegressor` with MSE on the recorded attributes for a wall-time budget,
reports per-attribute mean absolute error on held-out renders (another seed), and saves fp16 weights with the
training record as metadata.

    nice -n 5 python tools/train_regressor.py --minutes 8 --out pti/default_model/regressor.safetensors
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pti.synthetic import faces  # noqa: E402
from pti.synthetic.attributes import AttributeRegressor, load_regressor, save_regressor  # noqa: E402
from tools.provenance import portable_path  # noqa: E402

log = logging.getLogger("train_regressor")

VALIDATION_SEED = 987_654


def render_set(n: int, seed: int, chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` renders and attributes from one seed, produced in chunks to bound memory."""
    z = faces.sample_z(n, seed)
    images, attributes = [], []
    for start in range(0, n, chunk):
        params = faces.params_from_z(z[start : start + chunk])
        images.append(faces.render(params))
        attributes.append(faces.attributes_from_params(params))
    return torch.cat(images), torch.cat(attributes)


def soften(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blend each image with a blurred copy by a random amount (0 to 1): generated faces are softer than renders,
    and the regressor has to read both the same way."""
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    amount = torch.rand([len(images), 1, 1, 1], generator=generator)
    return images.lerp(blurred, amount)


@torch.no_grad()
def evaluate(model: AttributeRegressor, images: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per attribute on a held-out set."""
    model.eval()
    predictions = torch.cat([model(images[i : i + 500]) for i in range(0, len(images), 500)])
    model.train()
    return (predictions - attributes).abs().mean(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="pti/default_model/regressor.safetensors")
    p.add_argument("--train-size", type=int, default=24_000)
    p.add_argument("--val-size", type=int, default=2_000)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-soften", action="store_true", help="train on the sharp renders only")
    p.add_argument("--init", help="continue from this regressor file instead of random weights")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    started = time.time()
    train_images, train_attributes = render_set(args.train_size, args.seed)
    val_images, val_attributes = render_set(args.val_size, VALIDATION_SEED)
    log.info("rendered %d + %d images in %.0f s", len(train_images), len(val_images), time.time() - started)

    model = AttributeRegressor() if args.init is None else copy.deepcopy(load_regressor(args.init)).requires_grad_(True)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    budget = args.minutes * 60.0
    train_started = time.time()
    step = 0
    augment_rng = torch.Generator().manual_seed(args.seed)
    while (elapsed := time.time() - train_started) < budget:
        lr = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(0, len(train_images), [args.batch])
        batch = train_images[index]
        if not args.no_soften:
            batch = soften(batch, augment_rng)
        loss = F.mse_loss(model(batch), train_attributes[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 200 == 0:
            mae = evaluate(model, val_images, val_attributes)
            log.info("step %5d  %.1f min  loss %.5f  val MAE %.4f", step, elapsed / 60, loss.item(), mae.mean())
    mae = evaluate(model, val_images, val_attributes)
    for name, value in zip(faces.ATTRIBUTE_NAMES, mae.tolist()):
        log.info("  %-22s MAE %.4f", name, value)
    provenance = dict(
        trained_by="tools/train_regressor.py",
        steps=step,
        batch=args.batch,
        train_size=args.train_size,
        continued_from=portable_path(args.init) if args.init else None,
        softened=not args.no_soften,
        wall_minutes=round((time.time() - started) / 60, 1),
        val_mae={name: round(v, 4) for name, v in zip(faces.ATTRIBUTE_NAMES, mae.tolist())},
    )
    save_regressor(model, args.out, provenance)
    log.info("saved %s (mean val MAE %.4f)", args.out, mae.mean())
    return 0


if __name__ == "__main__":
    sys.exit(main())

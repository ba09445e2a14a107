"""Deterministic stand-ins for published e4e / pSp checkpoints, shared by the tests and the script that made
``tests/data/encoder_reference.safetensors`` (which ran the original encoder4editing / pixel2style2pixel code on
the same weights, outside this repository).

A real e4e checkpoint holds ~270 M encoder parameters (1.1 GB). Here every tensor of one kind (BatchNorm
statistics, biases, convolutions of one fan-in, ...) is a window at its own offset into one shared random buffer,
so ``torch.save`` writes each buffer once: the whole file is ~20 MB, yet no two layers carry the same numbers
(a loader that swapped two layers of equal shape would be caught).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

SEED = 2024


def _kind(name: str, shape: tuple[int, ...]) -> tuple:
    if name.endswith("running_var"):
        return ("var",)
    if name.endswith("running_mean"):
        return ("mean",)
    if len(shape) == 1:
        return ("scale",) if name.endswith("weight") else ("bias",)
    if len(shape) == 2:
        return ("linear",)  # EqualLinear: its 1/sqrt(fan_in) is applied in forward
    return ("conv", math.prod(shape[1:]))


def _buffer(kind: tuple, length: int, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(length, generator=generator)
    if kind[0] == "var":
        return 1.0 + 0.5 * torch.rand(length, generator=generator)
    if kind[0] == "mean":
        return 0.1 * noise
    if kind[0] == "scale":
        return 1.0 + 0.1 * noise
    if kind[0] == "bias":
        return 0.05 * noise
    if kind[0] == "linear":
        return noise
    return noise * kind[1] ** -0.5


def synthetic_weights(shapes: list[tuple[str, list[int]]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """Well-scaled weights for a state dict with these names and shapes; tensors of one kind share a storage."""
    generator = torch.Generator().manual_seed(seed)
    kinds: dict[tuple, int] = {}
    for name, shape in shapes:
        if not name.endswith("num_batches_tracked"):
            key = _kind(name, tuple(shape))
            kinds[key] = max(kinds.get(key, 0), math.prod(shape))
    pad = 100_003
    buffers = {key: _buffer(key, numel + pad, generator) for key, numel in sorted(kinds.items(), key=str)}
    state: dict[str, torch.Tensor] = {}
    for index, (name, shape) in enumerate(shapes):
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0, dtype=torch.long)
            continue
        numel = math.prod(shape)
        offset = (index * 7919) % pad
        state[name] = buffers[_kind(name, tuple(shape))][offset : offset + numel].view(shape)
    return state


def reference_images(count: int = 2, size: int = 256) -> torch.Tensor:
    """Smooth, distinct test images ``[count, 3, size, size]`` in ``[-1, 1]`` (no RNG involved)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = [
        torch.stack(
            [
                torch.sin(3 * x + k) * torch.cos(2 * y - k),
                torch.tanh(4 * x * y + k),
                0.8 * torch.cos(5 * (x + y) + k),
            ]
        )
        for k in range(count)
    ]
    return torch.stack(images)


def latent_avg(num_ws: int, w_dim: int = 512, seed: int = SEED + 1) -> torch.Tensor:
    """A distinct row per layer, so a loader that added the wrong row would be caught."""
    return torch.randn(num_ws, w_dim, generator=torch.Generator().manual_seed(seed))


def write_checkpoint(
    path: Path, encoder_shapes: list[tuple[str, list[int]]], opts: dict, num_ws: int, seed: int = SEED
) -> Path:
    """An e4e/pSp-style ``torch.save`` file: ``state_dict`` (encoder.*, decoder.*), ``opts`` and ``latent_avg``."""
    encoder = synthetic_weights(encoder_shapes, seed)
    state = {f"encoder.{name}": value for name, value in encoder.items()}
    state["decoder.dummy"] = torch.zeros(3)  # the StyleGAN decoder; a loader of the encoder must not need it
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg(num_ws)}, path)
    return path

"""Memory a generator's work will need beyond its weights: what a host (ComfyUI's model management) should free
before projection, tuning or decoding starts.

Estimates, not measurements: activations are counted from the synthesis network's own layer sizes (every feature
map of every layer, times how many copies autograd keeps), parameters from the module. ``benchmarks/bench_memory.py``
prints them beside the measured peaks.
"""

from __future__ import annotations

import torch

FLOAT_BYTES = 4
# Feature-map copies alive per synthesis layer: a forward pass keeps its input and output (plus the up-sampling
# intermediate, 4x the input, in up layers); training keeps every intermediate of modulation, convolution, noise,
# bias and activation for the backward pass, and their gradients.
COPIES_INFERENCE = 3
COPIES_TRAINING = 14
# Bytes per input pixel that one LPIPS evaluation with its backward pass keeps (feature maps of the backbone,
# their normalised copies and gradients), measured on the CPU at 256 px.
LPIPS_BYTES_PER_PIXEL = {"alex": 600, "vgg": 4800}
LPIPS_MAX_SIDE = 256  # images are compared at most at this size


def feature_map_floats(G: torch.nn.Module) -> int:
    """Floats in one image's feature maps across the synthesis network (one value per channel and pixel)."""
    total = 0
    for module in G.synthesis.children():
        resolution = int(getattr(module, "resolution", 0))
        convs = [m for n, m in module.named_children() if n.startswith("conv")]
        channels = max((m.weight.shape[0] for m in convs if hasattr(m, "weight")), default=0)
        total += channels * resolution * resolution * max(len(convs), 1)
    return total


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def inference_bytes(G: torch.nn.Module, batch: int = 1) -> int:
    """Activations of a no-grad synthesis pass over ``batch`` images."""
    return feature_map_floats(G) * COPIES_INFERENCE * FLOAT_BYTES * batch


def optimisation_bytes(
    G: torch.nn.Module, batch: int = 1, lpips_net: str | None = "vgg", tunes_weights: bool = True
) -> int:
    """Activations and optimiser state of projection (``tunes_weights=False``) or tuning, beyond the weights.

    Tuning also holds a copy of the generator, its gradients and Adam's two moments (4x the parameters).
    """
    total = feature_map_floats(G) * COPIES_TRAINING * FLOAT_BYTES * batch
    if lpips_net is not None:
        side = min(int(G.img_resolution), LPIPS_MAX_SIDE)
        total += LPIPS_BYTES_PER_PIXEL[lpips_net] * side * side * batch
    if tunes_weights:
        total += 4 * parameter_bytes(G.synthesis)
    return total

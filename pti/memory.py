"""Memory a generator's work will need beyond its weights: what a host (ComfyUI's model management) should free
before projection, tuning or decoding starts.

Estimates, not measurements: activations are counted from the synthesis network's own layer sizes (every feature
map of every layer, times how many copies autograd keeps), weights from the module. ``benchmarks/bench_memory.py``
prints them beside the measured peaks, and with ``--saved-tensors`` beside what autograd actually keeps.
"""

from __future__ import annotations

import torch

FLOAT_BYTES = 4
# Measured with autograd's saved-tensor hooks on FFHQ-width generators at 64 and 256 px (benchmarks/bench_memory.py
# --saved-tensors): a training pass keeps about 4.7 copies of every feature map and 2.5 per-sample copies of the
# synthesis weights (modulated convolution builds one weight per image); the backward pass adds the gradients of the
# feature maps on top, while it runs. A no-grad pass holds a layer's input, output and up-sampled intermediate.
COPIES_TRAINING = 6.5
WEIGHT_COPIES_TRAINING = 3
COPIES_INFERENCE = 3
WEIGHT_COPIES_INFERENCE = 1
# Bytes per input pixel one LPIPS evaluation keeps for its backward pass (saved tensors 300 / 3340 at 256 px,
# measured the same way), with half again for the gradients while the backward pass runs.
LPIPS_BYTES_PER_PIXEL = {"alex": 450, "vgg": 5000}
LPIPS_MAX_SIDE = 256  # images are compared at most at this size


def feature_map_floats(G: torch.nn.Module) -> int:
    """Floats in one image's feature maps across the synthesis network (one value per channel and pixel).

    StyleGAN3 has no resolution blocks: its Fourier input, then every layer's output and its up-sampled intermediate
    (the filtered leaky ReLU's working size, the largest map of a layer) are counted.
    """
    if hasattr(G.synthesis, "layer_names"):
        synthesis = G.synthesis
        total = synthesis.input.channels * synthesis.input.size[0] * synthesis.input.size[1]
        for layer in synthesis.layers():
            up_width, up_height = (size * layer.up_factor for size in layer.in_size)
            total += layer.out_channels * (layer.out_size[0] * layer.out_size[1] + up_width * up_height)
        return total
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
    per_image = feature_map_floats(G) * COPIES_INFERENCE * FLOAT_BYTES
    return int(batch * (per_image + WEIGHT_COPIES_INFERENCE * parameter_bytes(G.synthesis)))


def optimisation_bytes(
    G: torch.nn.Module, batch: int = 1, lpips_net: str | None = "vgg", tunes_weights: bool = True
) -> int:
    """Activations and optimiser state of projection (``tunes_weights=False``) or tuning, beyond the weights.

    Tuning also holds the tuned copy of the generator, its gradients and Adam's two moments (4x the parameters).
    """
    per_image = feature_map_floats(G) * COPIES_TRAINING * FLOAT_BYTES
    per_image += WEIGHT_COPIES_TRAINING * parameter_bytes(G.synthesis)
    if lpips_net is not None:
        side = min(int(G.img_resolution), LPIPS_MAX_SIDE)
        per_image += LPIPS_BYTES_PER_PIXEL[lpips_net] * side * side
    total = batch * per_image
    if tunes_weights:
        total += 4 * parameter_bytes(G.synthesis)
    return int(total)

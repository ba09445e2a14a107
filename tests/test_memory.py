"""The memory estimates the ComfyUI nodes hand to ComfyUI cover what autograd really keeps."""

from __future__ import annotations

import torch
from conftest import make_generator

from pti import memory


def _saved_bytes(run, *args, **kwargs) -> int:
    seen: set[tuple[int, tuple[int, ...], int]] = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        seen.add((tensor.untyped_storage().data_ptr(), tuple(tensor.shape), tensor.numel() * tensor.element_size()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run(*args, **kwargs)
    return sum(size for *_, size in seen)


def test_the_training_estimate_covers_what_autograd_saves_and_grows_with_the_batch():
    G = make_generator(resolution=32)
    for batch in (1, 3):
        ws = torch.randn(batch, G.num_ws, G.w_dim)
        saved = _saved_bytes(G.synthesis, ws, noise_mode="const")
        estimate = memory.optimisation_bytes(G, batch, lpips_net=None, tunes_weights=False)
        assert saved <= estimate <= 3 * saved, (batch, saved, estimate)
    tuning = memory.optimisation_bytes(G, 1, lpips_net=None, tunes_weights=True)
    assert tuning - memory.optimisation_bytes(G, 1, lpips_net=None, tunes_weights=False) == 4 * memory.parameter_bytes(
        G.synthesis
    )
    assert memory.inference_bytes(G, 2) == 2 * memory.inference_bytes(G, 1) > 0

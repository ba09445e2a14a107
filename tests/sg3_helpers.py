"""StyleGAN3 test data: the reference tensors made with NVIDIA's code, the training snapshot their training loop
pickled, and (from ``hostile_files``) a re-spelling of that pickle as numpy 1.x writes it.

``tests/data/stylegan3_reference.safetensors`` was made by running NVIDIA's ``training/networks_stylegan3.py``
(NVlabs/stylegan3, CPU reference ops) on small generators with fixed seeds: for each config in ``CONFIGS`` the
state dict (biases, ``magnitude_ema`` and ``w_avg`` randomised so that each one matters), z, c, ws and images;
the magnitude EMAs after one ``update_emas=True`` pass; filtered-leaky-ReLU cases (``fl0``..``fl3``: input, bias,
filters, output of ``_filtered_lrelu_ref``) and designed filters (``filter0``..``filter3``).
``tests/data/stylegan3_snapshot.pkl`` is ``pickle.dumps`` of a training-loop snapshot dict (G, D, G_ema,
augment_pipe, training_set_kwargs) of a 16 px config-R generator, with numpy 2 (``numpy._core`` names); the
module source NVIDIA embeds was replaced by a one-line comment afterwards (their code is not redistributed here),
every other byte is as written. ``stylegan3_snapshot_outputs.safetensors`` holds G_ema's z, ws and images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hostile_files import numpy1_spelling  # noqa: F401 (re-exported for the StyleGAN3 tests)

from pti.checkpoints import read_safetensors

DATA = Path(__file__).parent / "data"
REFERENCE_FILE = DATA / "stylegan3_reference.safetensors"
SNAPSHOT_PKL = DATA / "stylegan3_snapshot.pkl"
SNAPSHOT_OUTPUTS = DATA / "stylegan3_snapshot_outputs.safetensors"

_SMALL = dict(num_layers=6, num_critical=2, channel_max=16)
#: Generator kwargs of each reference config (z_dim = w_dim = 8, 2 mapping layers, magnitude_ema_beta 0.99).
CONFIGS = {
    "t": dict(c_dim=0, img_resolution=32, channel_base=256, margin_size=4, **_SMALL),
    "t_cond": dict(c_dim=3, img_resolution=16, channel_base=256, margin_size=10, **_SMALL),
    "r": dict(
        c_dim=0, img_resolution=32, channel_base=512, margin_size=4, conv_kernel=1, use_radial_filters=True, **_SMALL
    ),
    "r_cond": dict(
        c_dim=3, img_resolution=16, channel_base=512, margin_size=10, conv_kernel=1, use_radial_filters=True, **_SMALL
    ),
}
#: The user transform NVIDIA's code rendered t_cond and r with: rotate 17 degrees, translate (0.13, -0.07).
REFERENCE_TRANSFORM = dict(rotate=17.0, translate=(0.13, -0.07))


def reference() -> dict[str, torch.Tensor]:
    return read_safetensors(REFERENCE_FILE)[0]


def generator_kwargs(name: str) -> dict:
    return dict(z_dim=8, w_dim=8, img_channels=3, mapping_kwargs=dict(num_layers=2), magnitude_ema_beta=0.99,
                **CONFIGS[name])  # fmt: skip


def reference_state(ref: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}/state/"
    return {k[len(prefix) :]: v for k, v in ref.items() if k.startswith(prefix)}

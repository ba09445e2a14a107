"""PTI core: Pivotal Tuning Inversion for StyleGAN2 and StyleGAN3 (``pti.stylegan3``) in plain PyTorch.

The core imports nothing from ComfyUI. Public names are imported lazily, so ``import pti`` stays fast and a
missing optional dependency only matters to the feature that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module (relative to this package) that defines it.
_EXPORTS = {
    "Generator": "networks",
    "clone_generator": "networks",
    "state_dict_hash": "hashing",
    "CheckpointError": "checkpoints",
    "load_generator": "checkpoints",
    "save_generator": "checkpoints",
    "Cancelled": "errors",
    "OutOfMemory": "errors",
    "Latent": "latent",
    "project": "projection",
    "Encoder": "encoder",
    "load_encoder": "encoder",
    "save_encoder": "encoder",
    "pivotal_tune": "tune",
    "pivotal_tune_each": "tune",
    "invert_many": "many",
    "save_delta": "delta",
    "load_delta": "delta",
    "Direction": "directions",
    "load_direction": "directions",
    "default_directions": "directions",
    "apply_direction": "edit",
    "strength_sweep": "edit",
    "ganspace": "discovery",
    "sefa": "discovery",
    "Alignment": "align",
    "NoFaceFoundError": "align",
    "align_face": "align",
    "paste_back": "align",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, name)


def __dir__() -> list[str]:
    return __all__

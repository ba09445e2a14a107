"""The pack's modules under ComfyUI's model management, as core does for upscale models.

Every generator (loaded, tuned or rebuilt from a saved result) and every LPIPS model gets a ``ModelPatcher``, created
on first use and kept on the module. Before a node computes with modules it calls :func:`use`, which asks
``comfy.model_management.load_models_gpu`` to load them with the memory the work needs: ComfyUI then offloads or
unloads its other models (a diffusion model before a 1024 px tune, say), honours its low-VRAM modes, and can itself
unload these modules ("Unload models", or when another model needs the room). A tuned generator is released with
its patcher when ComfyUI's cache drops the node output that holds it.

The patcher is not copied with its module (``copy.deepcopy`` of a generator gives a module without one, which gets its
own on first use), so two generators never share a patcher.
"""

from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import torch

PATCHER_ATTRIBUTE = "_pti_comfy_patcher"
# Attributes ModelPatcher writes on the module it manages; stale copies on a deep-copied module are dropped.
_PATCHER_BOOKKEEPING = (
    "device",
    "model_loaded_weight_memory",
    "model_lowvram",
    "lowvram_patch_counter",
    "current_weight_patches_uuid",
)


class _Patcher(comfy.model_patcher.ModelPatcher):
    """A ModelPatcher that a deep copy of its module does not inherit."""

    def __deepcopy__(self, memo: dict) -> None:
        return None


def offload_device() -> torch.device:
    """Where modules rest while ComfyUI does not need them on the compute device (usually the CPU)."""
    return comfy.model_management.unet_offload_device()


def patcher_of(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """The module's patcher, created on first use (load device: ComfyUI's compute device)."""
    patcher = module.__dict__.get(PATCHER_ATTRIBUTE)
    if patcher is None:
        for name in _PATCHER_BOOKKEEPING:
            module.__dict__.pop(name, None)
        patcher = _Patcher(module, comfy.model_management.get_torch_device(), offload_device())
        module.__dict__[PATCHER_ATTRIBUTE] = patcher
    return patcher


def use(*modules: torch.nn.Module, memory_required: int = 0) -> torch.device:
    """Load ``modules`` onto the compute device through ComfyUI (freeing ``memory_required`` bytes beyond their
    weights) and return that device. Every module is moved there whole: ComfyUI streams only its own layer types,
    so a partial load would leave plain layers behind."""
    # Outside inference mode: a module moved inside it would get inference tensors, unusable for gradients.
    with torch.inference_mode(False):
        patchers = [patcher_of(module) for module in modules]
        comfy.model_management.load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=True)
        for module, patcher in zip(modules, patchers):
            module.to(patcher.load_device)
    return patchers[0].load_device

"""Test double of ``comfy.model_management``: devices, the interrupt flag and the loaded-model list, with ComfyUI's
semantics (a list of weak references to patchers; ``load_models_gpu`` records each request for the tests)."""

from __future__ import annotations

import threading
import weakref

import torch


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


current_loaded_models: list[weakref.ref] = []  # patchers, newest first, as ComfyUI's LoadedModel entries
LOAD_REQUESTS: list[tuple[list[weakref.ref], int]] = []  # (patchers, memory_required) of every load_models_gpu


def load_models_gpu(
    models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, force_full_load=False
) -> None:
    LOAD_REQUESTS.append(([weakref.ref(m) for m in models], memory_required))
    for patcher in models:
        current_loaded_models[:] = [r for r in current_loaded_models if r() is not None and r() is not patcher]
        patcher.load(patcher.load_device, full_load=force_full_load)
        current_loaded_models.insert(0, weakref.ref(patcher))


def unload_all_models() -> None:
    for ref in current_loaded_models:
        if ref() is not None:
            ref().detach()
    current_loaded_models.clear()


def interrupt_current_processing(value: bool = True) -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted() -> bool:
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    """Raise (and clear the flag) when the user pressed Cancel, exactly like ComfyUI."""
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()

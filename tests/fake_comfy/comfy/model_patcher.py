"""Test double of ``comfy.model_patcher``: a ``ModelPatcher`` with ComfyUI's constructor, bookkeeping attributes
and load/detach semantics for plain modules (no weight patches, no partial loads)."""

from __future__ import annotations


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        if getattr(model, "device", None) is None:
            model.device = offload_device
        if not hasattr(model, "model_loaded_weight_memory"):
            model.model_loaded_weight_memory = 0
        self.model_size()

    def model_size(self) -> int:
        if self.size == 0:
            self.size = sum(t.nbytes for t in self.model.state_dict().values())
        return self.size

    def is_clone(self, other) -> bool:
        return getattr(other, "model", None) is self.model

    def model_patches_models(self) -> list:
        return []

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False) -> None:
        self.model.to(device_to)
        self.model.device = device_to
        self.model.model_loaded_weight_memory = self.model_size()

    def detach(self, unpatch_all=True) -> None:
        self.model.to(self.offload_device)
        self.model.device = self.offload_device
        self.model.model_loaded_weight_memory = 0


CoreModelPatcher = ModelPatcher

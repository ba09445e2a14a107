"""What every PTI node shares: custom type names, widget specs, IMAGE conversions, progress and input checks.

Nothing here implements PTI itself; the algorithms live in ``pti/`` and the nodes only adapt ComfyUI's values to it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import comfy.model_management
import comfy.utils
import folder_paths
import torch

from ..pti.downloads import WeightStore
from ..pti.image import GeneratorImages, bchw_to_comfy, prepare_target, to_pil
from ..pti.perceptual import load_lpips

log = logging.getLogger("pti.nodes")

# Pack-unique custom types (other StyleGAN packs already use STYLEGAN / STYLEGAN_LATENT for other objects).
GENERATOR = "PTI_GENERATOR"
LATENT = "PTI_LATENT"
DIRECTION = "PTI_DIRECTION"

CATEGORY = "PTI"
PREVIEW_MAX_SIZE = 512

# Model folders under ComfyUI's models directory. Saved PTI results and direction files get their own sub-folders,
# which the checkpoint list leaves out.
STYLEGAN_FOLDER = "stylegan"
PTI_FOLDER = "stylegan_pti"
DIRECTIONS_FOLDER = "stylegan_directions"
WEIGHTS_FOLDER = "pti_weights"  # models/pti_weights: the face detector and LPIPS backbones, fetched on first use
CHECKPOINT_EXTENSIONS = frozenset({".pkl", ".pt", ".pth", ".safetensors"})
DIRECTION_EXTENSIONS = frozenset({".npy", ".pt", ".pth", ".safetensors"})
PTI_EXTENSIONS = frozenset({".safetensors"})
WEIGHT_EXTENSIONS = frozenset({".pth", ".safetensors"})


# ----------------------------------------------------------------------------------------------- widget specs


def int_input(default: int, minimum: int, maximum: int, tooltip: str, step: int = 1) -> tuple[str, dict]:
    return ("INT", {"default": default, "min": minimum, "max": maximum, "step": step, "tooltip": tooltip})


def float_input(default: float, minimum: float, maximum: float, step: float, tooltip: str) -> tuple[str, dict]:
    return ("FLOAT", {"default": default, "min": minimum, "max": maximum, "step": step, "tooltip": tooltip})


def bool_input(default: bool, tooltip: str, label_on: str = "on", label_off: str = "off") -> tuple[str, dict]:
    return ("BOOLEAN", {"default": default, "label_on": label_on, "label_off": label_off, "tooltip": tooltip})


def string_input(default: str, tooltip: str, multiline: bool = False) -> tuple[str, dict]:
    return ("STRING", {"default": default, "multiline": multiline, "tooltip": tooltip})


def combo_input(options: Iterable[str], tooltip: str, default: str | None = None) -> tuple[list[str], dict]:
    options = list(options)
    spec: dict[str, Any] = {"tooltip": tooltip}
    if default is not None:
        spec["default"] = default
    return (options, spec)


def link_input(type_name: str, tooltip: str) -> tuple[str, dict]:
    return (type_name, {"tooltip": tooltip})


GENERATOR_INPUT = link_input(GENERATOR, "A StyleGAN2/3 generator: from Load StyleGAN (PTI), Pivotal Tune or Load PTI.")
LATENT_INPUT = link_input(LATENT, "Latent code(s) w / w+ of a generator: from Project Pivot, Sample Latent or edits.")
IMAGE_INPUT = link_input("IMAGE", "Photo(s) to invert; a batch inverts each image. Centre-cropped to a square.")
DIRECTION_INPUT = link_input(DIRECTION, "An edit direction in w space: from Load Direction (PTI).")
SEED_INPUT = int_input(0, 0, 2**32 - 1, "Random seed; the same seed and settings give the same result.")
TRUNCATION_INPUT = float_input(
    1.0, 0.0, 2.0, 0.05, "Truncation psi: 1 = as is, below 1 pulls toward the average face (cleaner, less varied)."
)
NOISE_MODE_INPUT = combo_input(
    ["const", "random", "none"],
    "Per-pixel noise: const = the model's fixed noise (reproducible), random = fresh noise, none = no noise.",
    default="const",
)


# ------------------------------------------------------------------------------------------------ model folders


def _register_folder(name: str, path: str, extensions: Iterable[str]) -> None:
    """Add ``path`` under ``name`` in ComfyUI's model registry and make sure ``extensions`` are listed."""
    folder_paths.add_model_folder_path(name, path)
    paths, known = folder_paths.folder_names_and_paths[name]
    if not set(extensions) <= set(known):
        # A new set, so a collection shared with other folders (supported_pt_extensions) is never modified.
        folder_paths.folder_names_and_paths[name] = (paths, set(known) | set(extensions))


def register_model_folders() -> None:
    """Register models/stylegan (checkpoints), models/stylegan/pti (saved results), models/stylegan/directions and
    models/pti_weights (detector and LPIPS weights)."""
    root = os.path.join(folder_paths.models_dir, "stylegan")
    _register_folder(STYLEGAN_FOLDER, root, CHECKPOINT_EXTENSIONS)
    _register_folder(PTI_FOLDER, os.path.join(root, "pti"), PTI_EXTENSIONS)
    _register_folder(DIRECTIONS_FOLDER, os.path.join(root, "directions"), DIRECTION_EXTENSIONS)
    _register_folder(WEIGHTS_FOLDER, os.path.join(folder_paths.models_dir, "pti_weights"), WEIGHT_EXTENSIONS)


def weight_store() -> WeightStore:
    """Weights go to (and are found in) ComfyUI's models/pti_weights folders first, with download progress on the
    running node's progress bar; torchvision's cache is searched after them."""
    return WeightStore.at(folder_paths.get_folder_paths(WEIGHTS_FOLDER), progress=DownloadProgress())


def ensure_lpips(net: str | None, device: torch.device) -> list[torch.nn.Module]:
    """LPIPS ``net`` on ``device`` (its backbone fetched into models/pti_weights on first use), built before a core
    function asks for it; as a list for :func:`managed_models.use`. ``None`` (an unknown preset) gives ``[]``: the
    core function then names the problem."""
    if net is None:
        return []
    with torch.inference_mode(False):  # built here, used for gradients later: no inference tensors
        return [load_lpips(net, device, weight_store())]


def file_signature(path: str | os.PathLike) -> str:
    """Cheap change marker for ``IS_CHANGED``: path, size and modification time (nanoseconds)."""
    try:
        stat = os.stat(path)
    except OSError:
        return f"missing:{path}"
    return f"{os.fspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


# --------------------------------------------------------------------------------------------------- devices


def compute_device() -> torch.device:
    return comfy.model_management.get_torch_device()


# ---------------------------------------------------------------------------------------------------- images


def comfy_to_targets(image: torch.Tensor, resolution: int) -> GeneratorImages:
    """ComfyUI IMAGE ``[B, H, W, C]`` 0..1 -> generator targets ``[B, 3, R, R]`` in ``[-1, 1]`` (CPU), marked as such.

    Raises a ValueError naming the problem for a non-IMAGE value, an empty batch or an unusable channel count.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an IMAGE batch [B, H, W, C], got {shape}; connect a Load Image node's IMAGE")
    if image.shape[0] == 0:
        raise ValueError("the IMAGE batch is empty: connect at least one image")
    channels = image.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise ValueError(
            f"the IMAGE has {channels} channels in its last axis; expected 3 (RGB), or 1/4 (grey/RGBA, converted). "
            "It may be a mask or a latent: connect an IMAGE output"
        )
    pixels = image.detach().to("cpu", torch.float32)
    if not torch.isfinite(pixels).all():
        raise ValueError("the IMAGE contains NaN or infinite values; check the node that produced it")
    return GeneratorImages(prepare_target(pixels, resolution))


def generated_to_comfy(images: torch.Tensor) -> torch.Tensor:
    """Generator output ``[B, 3, H, W]`` in ``[-1, 1]`` -> ComfyUI IMAGE on ComfyUI's intermediate device."""
    return bchw_to_comfy(images.detach()).to(comfy.model_management.intermediate_device())


# -------------------------------------------------------------------------------------------------- progress


class NodeProgress:
    """Progress callback for ``pti`` functions that drives ComfyUI's progress bar and live preview.

    Call signature as in ``pti``: ``(step, total, losses, preview)`` with ``preview`` a ``[3, H, W]`` 0..1 tensor or
    None. Each call first honours ComfyUI's Cancel button; the InterruptProcessingException it raises propagates
    out of the ``pti`` function unchanged. ``stage``/``stages`` map several runs (one per image) onto one bar.
    """

    def __init__(self, stages: int = 1):
        self.stages = max(1, stages)
        self.stage = 0
        self.bar: comfy.utils.ProgressBar | None = None

    def __call__(self, step: int, total: int, losses: dict[str, float] | None, preview: torch.Tensor | None) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        overall = total * self.stages
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(overall)
        payload = None
        if preview is not None:
            payload = ("JPEG", to_pil(preview.detach().float() * 2 - 1), PREVIEW_MAX_SIZE)
        self.bar.update_absolute(self.stage * total + step, overall, payload)

    def next_stage(self) -> None:
        self.stage += 1


class DownloadProgress:
    """Download progress ``(done_bytes, total_bytes)`` on the node's progress bar; Cancel stops the download."""

    def __init__(self) -> None:
        self.bar: comfy.utils.ProgressBar | None = None

    def __call__(self, done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        total = total or max(done, 1)
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(min(done, total), total)


def check_interrupted() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


register_model_folders()

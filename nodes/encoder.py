"""Encoder nodes: load an e4e / pSp encoder and turn photos into latents in one forward pass (a pivot to keep, or
the start of Project Pivot's refinement)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import folder_paths
import torch

from ..pti.encoder import DEFAULT_ENCODER, Encoder, load_encoder
from ..pti.hashing import state_dict_hash
from ..pti.latent import Latent
from ..pti.lineage import generator_lineage
from ..pti.memory import inference_bytes
from . import common, managed_models
from .model import decode_latent

ENCODER = "PTI_ENCODER"
ENCODERS_FOLDER = "stylegan_encoders"
ENCODER_EXTENSIONS = frozenset({".pt", ".pth", ".safetensors"})
EMBEDDED_ENCODER = "(embedded default model's encoder)"

common._register_folder(
    ENCODERS_FOLDER, os.path.join(folder_paths.models_dir, "stylegan", "encoders"), ENCODER_EXTENSIONS
)


def encoder_names() -> list[str]:
    """The COMBO choices: the encoder shipped for the embedded model, then files under models/stylegan/encoders."""
    return [EMBEDDED_ENCODER, *folder_paths.get_filename_list(ENCODERS_FOLDER)]


def resolve_encoder(name: str) -> Path | None:
    if name == EMBEDDED_ENCODER:
        return DEFAULT_ENCODER if DEFAULT_ENCODER.is_file() else None
    path = folder_paths.get_full_path(ENCODERS_FOLDER, name)
    return Path(path) if path else None


class _EncoderCache:
    """The last loaded encoder(s), keyed by file signature; shared read-only. ComfyUI's model management moves them
    between its offload and compute devices."""

    def __init__(self, capacity: int = 1):
        self.capacity = capacity
        self._entries: OrderedDict[str, Encoder] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Encoder:
        key = common.file_signature(path)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        encoder = load_encoder(path, managed_models.offload_device())
        with self._lock:
            self._entries[key] = encoder
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return encoder


_encoders = _EncoderCache()


class LoadEncoder:
    DESCRIPTION = (
        "Loads an image encoder that predicts a latent in one forward pass: the encoder shipped for the embedded "
        "model, or an e4e / pSp checkpoint (.pt as published; read without running code) from "
        "models/stylegan/encoders. Use it with the generator it was trained for."
    )
    SEARCH_ALIASES = ["e4e", "psp", "encoder loader", "restyle"]
    CATEGORY = f"{common.CATEGORY}/inversion"
    RETURN_TYPES = (ENCODER,)
    RETURN_NAMES = ("encoder",)
    OUTPUT_TOOLTIPS = ("The encoder, loaded by ComfyUI's model management when used. Shared: never modified.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder_name": common.combo_input(
                    encoder_names(),
                    "An e4e (e4e_ffhq_encode.pt) or pSp checkpoint from models/stylegan/encoders, or the encoder "
                    "shipped for the embedded 64 px model.",
                    default=EMBEDDED_ENCODER,
                )
            }
        }

    @classmethod
    def IS_CHANGED(cls, encoder_name):
        path = resolve_encoder(encoder_name)
        return common.file_signature(path) if path else f"missing:{encoder_name}"

    def load(self, encoder_name):
        path = resolve_encoder(encoder_name)
        if path is None:
            raise ValueError(f"encoder {encoder_name!r} not found; put e4e/pSp .pt files in models/stylegan/encoders")
        return (_encoders.get(path),)


class EncodeImage:
    DESCRIPTION = (
        "Predicts each photo's latent (W+) with an encoder in one forward pass: a pivot on its own (as PTI's "
        "use_e4e) or the initial latent of Project Pivot, which then needs far fewer steps."
    )
    SEARCH_ALIASES = ["e4e", "encode photo", "image to latent", "warm start", "inversion encoder"]
    CATEGORY = f"{common.CATEGORY}/inversion"
    RETURN_TYPES = (common.LATENT, "IMAGE")
    RETURN_NAMES = ("latent", "reconstruction")
    OUTPUT_TOOLTIPS = (
        "One W+ latent per image, tied to this generator.",
        "What the generator makes of each latent: compare it with the photo.",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": common.GENERATOR_INPUT,
                "encoder": common.link_input(ENCODER, "From Load Encoder (PTI); trained for this generator."),
                "image": common.IMAGE_INPUT,
            }
        }

    def encode(self, generator, encoder, image):
        G = generator
        if (encoder.num_ws, encoder.w_dim) != (G.num_ws, G.w_dim):
            raise ValueError(
                f"the encoder predicts [{encoder.num_ws}, {encoder.w_dim}] latents but the generator needs "
                f"[{G.num_ws}, {G.w_dim}]: load the encoder trained for this generator"
            )
        targets = common.comfy_to_targets(image, encoder.config.input_resolution)
        common.check_interrupted()
        device = managed_models.use(encoder, G, memory_required=inference_bytes(G, min(len(targets.pixels), 8)))
        with torch.no_grad():
            ws = torch.cat([encoder(chunk.to(device)) for chunk in targets.pixels.split(8)])
        source = f"encoder:{encoder.meta.get('source', 'encoder')}"
        meta = {"stage": "encoder", "source": source, "generator_lineage": generator_lineage(G)}
        latent = Latent(ws.to(next(G.parameters()).device), space="w+", generator_hash=state_dict_hash(G), meta=meta)
        return (latent, decode_latent(G, latent))


NODE_CLASS_MAPPINGS = {
    "PTI_LoadEncoder": LoadEncoder,
    "PTI_EncodeImage": EncodeImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_LoadEncoder": "Load Encoder (PTI)",
    "PTI_EncodeImage": "Encode Image (PTI)",
}

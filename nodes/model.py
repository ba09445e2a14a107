"""Model nodes: load a StyleGAN2/StyleGAN3 generator, sample latents from it, render latents to images, and move or
turn a StyleGAN3 picture through its input transform."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import folder_paths
import torch

from ..pti import catalogue
from ..pti.checkpoints import DEFAULT_GENERATOR_FILE, STYLEGAN3_GENERATOR_FILE, load_generator
from ..pti.downloads import WeightStore
from ..pti.hashing import generator_hash
from ..pti.latent import Latent, check_latent_fits, synthesize
from ..pti.lineage import generator_lineage
from ..pti.memory import inference_bytes
from ..pti.stylegan3 import Generator as StyleGAN3Generator
from ..pti.stylegan3 import set_transform
from . import common, managed_models

log = logging.getLogger("pti.nodes")

EMBEDDED_DEFAULT = "(embedded default)"
EMBEDDED_STYLEGAN3 = "(embedded StyleGAN3)"
_HIDDEN_SUBFOLDERS = ("pti", "directions", "encoders")  # results, directions and encoders, not generators
DECODE_CHUNK = 8


def checkpoint_names() -> list[str]:
    """The COMBO choices: the embedded models (StyleGAN2 default, StyleGAN3), every checkpoint under
    models/stylegan, then the published checkpoints of the catalogue (downloaded into models/stylegan when first
    used; their labels give size and licence)."""
    names = folder_paths.get_filename_list(common.STYLEGAN_FOLDER)
    visible = [n for n in names if Path(n).parts[0] not in _HIDDEN_SUBFOLDERS]
    published = [item.label for item in catalogue.CATALOGUE.values()]
    return [EMBEDDED_DEFAULT, EMBEDDED_STYLEGAN3, *visible, *published]


def model_store() -> WeightStore:
    """Published checkpoints are found in (and downloaded into) models/stylegan, with progress and Cancel on the
    node's progress bar."""
    folders = folder_paths.get_folder_paths(common.STYLEGAN_FOLDER)
    return WeightStore.at(folders, progress=common.DownloadProgress())


def embedded_files() -> dict[str, Path]:
    """The COMBO choices of the models shipped with the pack, and their files."""
    return {EMBEDDED_DEFAULT: DEFAULT_GENERATOR_FILE, EMBEDDED_STYLEGAN3: STYLEGAN3_GENERATOR_FILE}


def resolve_checkpoint(model_name: str) -> Path | None:
    """File behind a COMBO choice, or None when it does not exist (yet, for a published checkpoint)."""
    embedded = embedded_files()
    if model_name in embedded:
        return embedded[model_name] if embedded[model_name].is_file() else None
    published = catalogue.lookup(model_name)
    if published is not None:
        return WeightStore.at(folder_paths.get_folder_paths(common.STYLEGAN_FOLDER), download=False).find(
            published.filename
        )
    path = folder_paths.get_full_path(common.STYLEGAN_FOLDER, model_name)
    return Path(path) if path else None


class _GeneratorCache:
    """The last few loaded generators, keyed by file signature. Entries are shared read-only; ComfyUI's model
    management moves them between its offload and compute devices."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._entries: OrderedDict[str, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> torch.nn.Module:
        key = common.file_signature(path)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        return self._add(key, load_generator(str(path), device=managed_models.offload_device()))

    def download(self, name: str) -> torch.nn.Module:
        """A published checkpoint that is not on disk yet: downloaded into models/stylegan, read, cached."""
        G = load_generator(name, device=managed_models.offload_device(), store=model_store())
        return self._add(common.file_signature(Path(G.source_info["path"])), G)

    def _add(self, key: str, G: torch.nn.Module) -> torch.nn.Module:
        with self._lock:
            self._entries[key] = G.eval()
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return G


_generators = _GeneratorCache()


class LoadStyleGAN:
    DESCRIPTION = (
        "Loads a StyleGAN2 or StyleGAN3 generator: one of the small embedded face models (StyleGAN2, or StyleGAN3 "
        "config R, whose pictures StyleGAN3 Transform can move and turn), or a checkpoint from "
        "models/stylegan (NVIDIA StyleGAN2-ADA/StyleGAN3 .pkl, rosinality .pt/.pth, or this pack's .safetensors; "
        "pickles are read without running code), or one of NVIDIA's published checkpoints (FFHQ, MetFaces, AFHQ), "
        "downloaded into models/stylegan on first use (PTI_MODEL_MIRROR replaces the host)."
    )
    SEARCH_ALIASES = ["stylegan2", "stylegan3", "gan loader", "load gan", "ffhq"]
    CATEGORY = f"{common.CATEGORY}/model"
    RETURN_TYPES = (common.GENERATOR,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("The generator, on ComfyUI's compute device. Shared: nodes never modify it.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": common.combo_input(
                    checkpoint_names(),
                    "Checkpoint file in models/stylegan, an embedded face model (StyleGAN2 default, StyleGAN3), or a "
                    "published checkpoint (name, size, licence), downloaded into models/stylegan when first run.",
                    default=EMBEDDED_DEFAULT,
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        if resolve_checkpoint(model_name) is not None or catalogue.lookup(model_name) is not None:
            return True
        if model_name in embedded_files():
            return f"the embedded model {embedded_files()[model_name]} is missing; reinstall the PTI pack"
        folders = ", ".join(folder_paths.get_folder_paths(common.STYLEGAN_FOLDER))
        return f"StyleGAN checkpoint '{model_name}' not found in {folders}; put the file there and refresh (R)"

    @classmethod
    def IS_CHANGED(cls, model_name):
        path = resolve_checkpoint(model_name)
        return common.file_signature(path) if path else f"missing:{model_name}"

    def load(self, model_name):
        path = resolve_checkpoint(model_name)
        published = catalogue.lookup(model_name)
        if path is None and published is None:
            raise FileNotFoundError(self.VALIDATE_INPUTS(model_name))
        if published is None:
            G = _generators.get(path)
        elif path is not None:  # on disk: its download record is checked
            G = _generators.get(catalogue.fetch(published.name, model_store()))
        else:
            G = _generators.download(published.name)
        log.info("StyleGAN generator %s: %d px, %d w layers", model_name, G.img_resolution, G.num_ws)
        return (G,)


class SampleLatent:
    DESCRIPTION = "Random latent codes from a seed, through the generator's mapping network (pure generation)."
    SEARCH_ALIASES = ["random latent", "seed", "generate face", "z to w"]
    CATEGORY = f"{common.CATEGORY}/model"
    RETURN_TYPES = (common.LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("batch_size latent codes (w space), tied to this generator.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": common.GENERATOR_INPUT,
                "seed": common.SEED_INPUT,
                "batch_size": common.int_input(1, 1, 64, "How many latents to draw (seeds seed, seed+1, ...)."),
                "truncation_psi": common.TRUNCATION_INPUT,
            }
        }

    def sample(self, generator, seed, batch_size, truncation_psi):
        G = generator
        if G.c_dim:
            raise ValueError(
                "this generator is class-conditional (c_dim > 0); Sample Latent needs an unconditional one"
            )
        z = torch.stack(
            [torch.randn(G.z_dim, generator=torch.Generator().manual_seed(seed + i)) for i in range(batch_size)]
        )
        device = managed_models.use(G)
        with torch.no_grad():
            ws = G.mapping(z.to(device), None, truncation_psi=truncation_psi)
        meta = {
            "stage": "sample",
            "truncation_psi": truncation_psi,
            "rows": [{"seed": seed + i} for i in range(batch_size)],
            "generator_lineage": generator_lineage(G),
        }
        return (Latent(ws.detach().clone(), {}, "w", generator_hash(G), meta),)


class Decode:
    DESCRIPTION = "Renders latent codes to images with a generator (the tuned one for PTI results)."
    SEARCH_ALIASES = ["render latent", "synthesize", "generate image", "stylegan decode"]
    CATEGORY = f"{common.CATEGORY}/model"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("One RGB image per latent, [B, H, W, 3] in 0..1.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": common.GENERATOR_INPUT,
                "latent": common.LATENT_INPUT,
                "truncation_psi": common.TRUNCATION_INPUT,
                "noise_mode": common.NOISE_MODE_INPUT,
            }
        }

    def decode(self, generator, latent, truncation_psi, noise_mode):
        return (decode_latent(generator, latent, truncation_psi, noise_mode),)


def decode_latent(G: torch.nn.Module, latent: Latent, truncation_psi: float = 1.0, noise_mode: str = "const"):
    """Render ``latent`` with ``G`` in chunks -> ComfyUI IMAGE. Truncation pulls each w toward ``G``'s w_avg."""
    check_latent_fits(latent, G)
    device = managed_models.use(G, memory_required=inference_bytes(G, min(len(latent), DECODE_CHUNK)))
    ws = latent.ws.to(device)
    if truncation_psi != 1.0:
        w_avg = G.mapping.w_avg.to(device)
        ws = w_avg.lerp(ws, truncation_psi)
    images = []
    for start in range(0, len(latent), DECODE_CHUNK):
        common.check_interrupted()
        chunk = Latent(ws[start : start + DECODE_CHUNK], {}, latent.space, latent.generator_hash, {})
        images.append(synthesize(G, chunk, noise_mode=noise_mode))
    return common.generated_to_comfy(torch.cat(images))


STYLEGAN3_INPUT = common.link_input(
    common.GENERATOR, "A StyleGAN3 generator: from Load StyleGAN (PTI), Pivotal Tune or Load PTI."
)


class StyleGAN3Transform:
    DESCRIPTION = (
        "Moves and turns the pictures of a StyleGAN3 generator through its input transform: a new generator whose "
        "images are translated and rotated, with the same latents, pivots, edits and tuning (wire it between Load "
        "StyleGAN or Pivotal Tune and Decode). StyleGAN2 generators have no such input and are refused."
    )
    SEARCH_ALIASES = ["translate", "rotate", "shift image", "stylegan3", "input transform"]
    CATEGORY = f"{common.CATEGORY}/model"
    RETURN_TYPES = (common.GENERATOR,)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("A copy of the generator rendering translated/rotated pictures; the input is not changed.",)
    FUNCTION = "transform"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": STYLEGAN3_INPUT,
                "translate_x": common.float_input(
                    0.0, -2.0, 2.0, 0.01, "Shift right, in image widths (0.25 = a quarter of the width)."
                ),
                "translate_y": common.float_input(0.0, -2.0, 2.0, 0.01, "Shift down, in image heights."),
                "rotate": common.float_input(
                    0.0, -360.0, 360.0, 1.0, "Turn counter-clockwise, in degrees (config R turns cleanly; T less so)."
                ),
            }
        }

    def transform(self, generator, translate_x, translate_y, rotate):
        if not isinstance(generator, StyleGAN3Generator):
            raise ValueError(
                "StyleGAN3 Transform needs a StyleGAN3 generator (a stylegan3-t/-r checkpoint); this one is StyleGAN2, "
                "which has no input transform"
            )
        return (set_transform(generator, translate=(translate_x, translate_y), rotate=rotate),)


NODE_CLASS_MAPPINGS = {
    "PTI_LoadStyleGAN": LoadStyleGAN,
    "PTI_SampleLatent": SampleLatent,
    "PTI_Decode": Decode,
    "PTI_StyleGAN3Transform": StyleGAN3Transform,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_LoadStyleGAN": "Load StyleGAN (PTI)",
    "PTI_SampleLatent": "Sample Latent (PTI)",
    "PTI_Decode": "Decode Latent (PTI)",
    "PTI_StyleGAN3Transform": "StyleGAN3 Transform (PTI)",
}

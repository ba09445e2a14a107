"""File nodes: save/load a PTI result (pivot + tuned delta), save images with their recipe, read a recipe back."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import folder_paths
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..pti.atomic import write_atomically
from ..pti.delta import DELTA_MODES
from ..pti.image import image_grid
from ..pti.recipe import RECIPE_KEY, decode_recipe, encode_recipe, recipe_summary
from ..pti.saved_result import check_result_name, find_result, load_result, result_files, save_result, saved_results
from . import common, managed_models

log = logging.getLogger("pti.nodes")

OUTPUT_SUFFIX = " [output]"
DESTINATIONS = ("models/stylegan/pti", "output/pti")


# ------------------------------------------------------------------------------------------------ saved results


def _models_pti_dir() -> Path:
    return Path(folder_paths.get_folder_paths(common.PTI_FOLDER)[0])


def _output_pti_dir() -> Path:
    return Path(folder_paths.get_output_directory()) / "pti"


def saved_result_names() -> list[str]:
    """Saved results: models/stylegan/pti/<name>, then output/pti/<name> [output]."""
    roots = ((_models_pti_dir(), ""), (_output_pti_dir(), OUTPUT_SUFFIX))
    return [name + suffix for root, suffix in roots for name in saved_results(root)]


def resolve_result(name: str) -> Path:
    """Folder of a saved result name as listed by ``saved_result_names``."""
    if name.endswith(OUTPUT_SUFFIX):
        return _output_pti_dir() / name[: -len(OUTPUT_SUFFIX)]
    return _models_pti_dir() / name


class SavePTI:
    DESCRIPTION = (
        "Saves a PTI result: the pivot latent(s) and the tuned generator as a small delta against its base model, "
        "in a folder named after 'name' (replaced atomically). Load it again with Load PTI (PTI)."
    )
    SEARCH_ALIASES = ["save inversion", "save latent", "export pti"]
    CATEGORY = f"{common.CATEGORY}/io"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "base_generator": common.link_input(common.GENERATOR, "The generator that was tuned (the delta base)."),
                "tuned_generator": common.link_input(common.GENERATOR, "The tuned generator from Pivotal Tune (PTI)."),
                "latent": common.link_input(common.LATENT, "The pivot latent(s) the generator was tuned on."),
                "name": common.string_input("my_pti", "Folder name for this result (letters, digits, _ - . space)."),
                "destination": common.combo_input(
                    DESTINATIONS, "Where to save: the models folder (listed by Load PTI) or the output folder."
                ),
                "delta": common.combo_input(
                    DELTA_MODES,
                    "How the weight changes are stored. auto: exact and small for Pivotal Tune results (it tunes "
                    "low-rank updates), else fp16. lowrank: smallest, lossy for full-rank tuning. fp16: dense "
                    "half-precision changes (about half the model's size, near-exact).",
                    default="auto",
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, name):
        try:
            check_result_name(name)
        except ValueError as exc:
            return str(exc)
        return True

    def save(self, base_generator, tuned_generator, latent, name, destination, delta):
        root = _models_pti_dir() if destination == DESTINATIONS[0] else _output_pti_dir()
        managed_models.use(base_generator, tuned_generator)  # the delta is their difference: one device
        folder = save_result(root, name, latent, tuned_generator, base_generator, delta)
        log.info("saved PTI result to %s", folder)
        return {"ui": {"text": [str(folder)]}}


class LoadPTI:
    DESCRIPTION = (
        "Loads a result saved by Save PTI (PTI): rebuilds the tuned generator from its base model plus the saved "
        "delta, and returns the pivot latent(s). The base must be the very model that was tuned."
    )
    SEARCH_ALIASES = ["load inversion", "load latent", "import pti"]
    CATEGORY = f"{common.CATEGORY}/io"
    RETURN_TYPES = (common.GENERATOR, common.LATENT)
    RETURN_NAMES = ("tuned_generator", "latent")
    OUTPUT_TOOLTIPS = ("The tuned generator, rebuilt from the base.", "The saved pivot latent(s).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "base_generator": common.link_input(
                    common.GENERATOR, "The base model the result was tuned from (checked by weight hash)."
                ),
                "name": common.combo_input(saved_result_names(), "A saved result (models/stylegan/pti or output/pti)."),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, name):
        try:
            find_result(resolve_result(name))
        except FileNotFoundError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, name):
        return "|".join(common.file_signature(path) for path in result_files(resolve_result(name)))

    def load(self, base_generator, name):
        managed_models.use(base_generator)
        tuned, latent = load_result(resolve_result(name), base_generator)
        managed_models.use(tuned)
        return (tuned, latent)


# ------------------------------------------------------------------------------------------- images + recipes


class SaveImage:
    DESCRIPTION = (
        "Saves images as PNG in ComfyUI's output folder, like Save Image, with the workflow and, when a latent is "
        "connected, the PTI recipe (each image's latent code and how it was made) in a 'pti_recipe' text chunk. "
        "Read PTI Recipe (PTI) turns such a PNG back into the latent."
    )
    SEARCH_ALIASES = ["save png", "recipe", "metadata"]
    CATEGORY = f"{common.CATEGORY}/io"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": common.link_input("IMAGE", "The images to save."),
                "filename_prefix": common.string_input("PTI", "File name prefix; may contain a sub-folder."),
                "layout": common.combo_input(
                    ["separate", "grid"], "separate: one PNG per image; grid: all images tiled in one PNG."
                ),
                "grid_columns": common.int_input(0, 0, 64, "Columns of the grid (0 = about square)."),
            },
            "optional": {
                "latent": common.link_input(
                    common.LATENT, "The latent(s) the images were decoded from, one per image: stored as the recipe."
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, filename_prefix, layout, grid_columns, latent=None, prompt=None, extra_pnginfo=None):
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"expected a non-empty IMAGE batch [B, H, W, C], got {list(images.shape)}")
        if latent is not None and len(latent) != images.shape[0]:
            raise ValueError(
                f"{images.shape[0]} image(s) but {len(latent)} latent(s): connect the latent these images were "
                "decoded from, or leave the latent input empty"
            )
        if layout == "separate":
            groups = [(images[i : i + 1], [i]) for i in range(len(images))]
        else:
            grid = image_grid(images.permute(0, 3, 1, 2), grid_columns).permute(1, 2, 0)
            groups = [(grid.unsqueeze(0), list(range(len(images))))]
        output_dir = folder_paths.get_output_directory()
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, output_dir, images.shape[2], images.shape[1]
        )
        results = []
        for offset, (image, indices) in enumerate(groups):
            pixels = (image[0].detach().cpu().float().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            metadata = PngInfo()
            if prompt is not None:
                metadata.add_text("prompt", json.dumps(prompt))
            for key, value in (extra_pnginfo or {}).items():
                metadata.add_text(key, json.dumps(value))
            if latent is not None:  # uncompressed tEXt: Pillow caps compressed text chunks at 1 MB when reading
                metadata.add_text(RECIPE_KEY, encode_recipe(latent, indices))
            file = f"{filename}_{counter + offset:05}_.png"
            png = Image.fromarray(pixels)
            write_atomically(
                Path(folder) / file,
                lambda path, png=png, metadata=metadata: png.save(
                    path, format="PNG", pnginfo=metadata, compress_level=4
                ),
            )
            results.append(_display_entry(png, file, subfolder))
        return {"ui": {"images": results}}


DISPLAY_MIN_SIDE = 256  # saved images smaller than this are shown through an enlarged copy


def _display_entry(png: Image.Image, file: str, subfolder: str) -> dict[str, str]:
    """What the node shows for one saved PNG: the file itself, or, when it is small (a 64 px face would be a speck in
    the node), a copy enlarged by a whole factor with nearest-neighbour pixels, under the same name in temp/."""
    entry = {"filename": file, "subfolder": subfolder, "type": "output"}
    factor = math.ceil(DISPLAY_MIN_SIDE / max(png.size))
    if factor <= 1:
        return entry
    enlarged = png.resize((png.width * factor, png.height * factor), Image.Resampling.NEAREST)
    write_atomically(
        Path(folder_paths.get_temp_directory()) / subfolder / file, lambda path: enlarged.save(path, "PNG")
    )
    return {**entry, "type": "temp"}


class ReadRecipe:
    DESCRIPTION = (
        "Reads the PTI recipe from a PNG saved by Save Image (PTI): the exact latent code(s) of the picture, "
        "ready for Decode or further edits with the same (tuned) generator."
    )
    SEARCH_ALIASES = ["load recipe", "png metadata", "latent from image"]
    CATEGORY = f"{common.CATEGORY}/io"
    RETURN_TYPES = (common.LATENT, "STRING")
    RETURN_NAMES = ("latent", "recipe")
    OUTPUT_TOOLTIPS = ("The latent(s) stored in the PNG.", "The recipe as JSON text (provenance of each latent).")
    FUNCTION = "read"

    @classmethod
    def INPUT_TYPES(cls):
        input_dir = folder_paths.get_input_directory()
        files = sorted(f for f in os.listdir(input_dir) if f.lower().endswith(".png"))
        return {
            "required": {
                "image": (files, {"image_upload": True, "tooltip": "A PNG saved by Save Image (PTI), in input/."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        if not folder_paths.exists_annotated_filepath(image):
            return f"image file not found: {image}"
        return True

    @classmethod
    def IS_CHANGED(cls, image):
        path = folder_paths.get_annotated_filepath(image)
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()

    def read(self, image):
        path = folder_paths.get_annotated_filepath(image)
        with Image.open(path) as picture:
            text = getattr(picture, "text", {}).get(RECIPE_KEY)
        if text is None:
            raise ValueError(f"{image} has no PTI recipe: save images with Save Image (PTI) and a latent connected")
        return (decode_recipe(text), json.dumps(recipe_summary(text), indent=1))


NODE_CLASS_MAPPINGS = {
    "PTI_SavePTI": SavePTI,
    "PTI_LoadPTI": LoadPTI,
    "PTI_SaveImage": SaveImage,
    "PTI_ReadRecipe": ReadRecipe,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_SavePTI": "Save PTI (PTI)",
    "PTI_LoadPTI": "Load PTI (PTI)",
    "PTI_SaveImage": "Save Image with Recipe (PTI)",
    "PTI_ReadRecipe": "Read PTI Recipe (PTI)",
}

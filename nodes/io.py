"""File nodes: save/load a PTI result (pivot + tuned delta), save images with their recipe, read a recipe back."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import folder_paths
import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..pti.delta import DELTA_MODES, load_delta, save_delta
from ..pti.projection import Latent
from . import common

log = logging.getLogger("pti.nodes")

PIVOT_FILE = "pivot.safetensors"
DELTA_FILE = "delta.safetensors"
OUTPUT_SUFFIX = " [output]"
RECIPE_KEY = "pti_recipe"
RECIPE_FORMAT = "pti-recipe"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")
DESTINATIONS = ("models/stylegan/pti", "output/pti")


# ------------------------------------------------------------------------------------------------ saved results


def _models_pti_dir() -> Path:
    return Path(folder_paths.get_folder_paths(common.PTI_FOLDER)[0])


def _output_pti_dir() -> Path:
    return Path(folder_paths.get_output_directory()) / "pti"


def saved_result_names() -> list[str]:
    """Folders holding both a pivot and a delta: models/stylegan/pti/<name>, then output/pti/<name> [output]."""
    names = []
    for root, suffix in ((_models_pti_dir(), ""), (_output_pti_dir(), OUTPUT_SUFFIX)):
        if root.is_dir():
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                if (folder / PIVOT_FILE).is_file() and (folder / DELTA_FILE).is_file():
                    names.append(folder.name + suffix)
    return names


def resolve_result(name: str) -> Path:
    """Folder of a saved result name as listed by ``saved_result_names``."""
    if name.endswith(OUTPUT_SUFFIX):
        return _output_pti_dir() / name[: -len(OUTPUT_SUFFIX)]
    return _models_pti_dir() / name


def _replace_atomically(writers: dict[Path, Callable[[Path], object]]) -> None:
    """Write every file through ``write(temp_path)`` beside its final path, and rename only once all succeeded.

    Readers never see a partial file, and a failure leaves the previous set (e.g. pivot + delta) untouched.
    """
    temps = {final: final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.tmp{final.suffix}") for final in writers}
    try:
        for final, write in writers.items():
            write(temps[final])
        for final, temp in temps.items():
            os.replace(temp, final)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def _json_safe(value):
    """``value`` with anything JSON cannot hold turned into text (provenance must never block a save)."""
    return json.loads(json.dumps(value, default=str))


class SavePTI:
    DESCRIPTION = (
        "Saves a PTI result: the pivot latent(s) and the tuned generator as a small delta against its base model, "
        "in a folder named after 'name' (replaced atomically). Load it again with Load PTI (PTI)."
    )
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
        if not _SAFE_NAME.match(name or ""):
            return f"invalid name {name!r}: use 1-100 letters, digits, spaces, '_', '-' or '.', not starting with '.'"
        return True

    def save(self, base_generator, tuned_generator, latent, name, destination, delta):
        valid = self.VALIDATE_INPUTS(name)
        if valid is not True:
            raise ValueError(valid)
        common.check_latent_fits(latent, tuned_generator)
        if common.generator_hash(base_generator) not in common.generator_lineage(tuned_generator):
            raise ValueError(
                "tuned_generator was not tuned from base_generator: connect the generator that went into Pivotal Tune"
            )
        root = _models_pti_dir() if destination == DESTINATIONS[0] else _output_pti_dir()
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        provenance = _json_safe({"tuning": getattr(tuned_generator, "tuning_info", {}), "name": name})
        _replace_atomically(
            {
                folder / PIVOT_FILE: latent.save,
                folder / DELTA_FILE: lambda path: save_delta(
                    tuned_generator, base_generator, path, mode=delta, provenance=provenance
                ),
            }
        )
        log.info("saved PTI result to %s", folder)
        return {"ui": {"text": [str(folder)]}}


class LoadPTI:
    DESCRIPTION = (
        "Loads a result saved by Save PTI (PTI): rebuilds the tuned generator from its base model plus the saved "
        "delta, and returns the pivot latent(s). The base must be the very model that was tuned."
    )
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
        folder = resolve_result(name)
        if not ((folder / PIVOT_FILE).is_file() and (folder / DELTA_FILE).is_file()):
            return f"saved PTI result '{name}' not found: expected {folder / PIVOT_FILE} and {folder / DELTA_FILE}"
        return True

    @classmethod
    def IS_CHANGED(cls, name):
        folder = resolve_result(name)
        return common.file_signature(folder / PIVOT_FILE) + "|" + common.file_signature(folder / DELTA_FILE)

    def load(self, base_generator, name):
        valid = self.VALIDATE_INPUTS(name)
        if valid is not True:
            raise FileNotFoundError(valid)
        folder = resolve_result(name)
        tuned = common.mark_derived(load_delta(folder / DELTA_FILE, base_generator).eval(), base_generator)
        latent = Latent.load(folder / PIVOT_FILE).to(common.generator_device(tuned))
        common.check_latent_fits(latent, tuned)
        return (tuned, latent)


# ------------------------------------------------------------------------------------------- images + recipes


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def encode_recipe(latent: Latent, indices: list[int]) -> str:
    """JSON for a PNG text chunk: the chosen rows' w (float32, base64) and provenance, and the generator identity."""
    ws = latent.ws.detach().to("cpu", torch.float32).contiguous()
    rows = [
        {"ws": base64.b64encode(ws[i].numpy().tobytes()).decode("ascii"), "meta": common.latent_row_meta(latent, i)}
        for i in indices
    ]
    return json.dumps(
        {
            "format": RECIPE_FORMAT,
            "version": 1,
            "generator_hash": latent.generator_hash,
            "generator_lineage": sorted(common.latent_lineage(latent)),
            "space": latent.space,
            "shape": list(ws.shape[1:]),
            "rows": rows,
        }
    )


def decode_recipe(text: str) -> Latent:
    """Inverse of ``encode_recipe``; a ValueError says what is wrong with a damaged or foreign chunk."""
    try:
        recipe = json.loads(text)
        if recipe.get("format") != RECIPE_FORMAT:
            raise ValueError(f"format {recipe.get('format')!r} is not {RECIPE_FORMAT!r}")
        num_ws, w_dim = (int(v) for v in recipe["shape"])
        rows = recipe["rows"]
        if not rows:
            raise ValueError("it holds no latent")
        ws = []
        for row in rows:
            values = np.frombuffer(base64.b64decode(row["ws"], validate=True), dtype=np.float32)
            ws.append(torch.from_numpy(values.copy()).reshape(num_ws, w_dim))
        meta = {"rows": [row.get("meta", {}) for row in rows], "generator_lineage": recipe.get("generator_lineage", [])}
        return Latent(torch.stack(ws), {}, recipe.get("space", "w+"), recipe.get("generator_hash", ""), meta)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"the image's PTI recipe cannot be read ({exc})") from exc


def _grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> one ``[1, H*rows, W*columns, C]`` tile image (white where the grid is not full)."""
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = images.new_ones(rows * height, columns * width, channels)
    for index, image in enumerate(images):
        top, left = (index // columns) * height, (index % columns) * width
        canvas[top : top + height, left : left + width] = image
    return canvas.unsqueeze(0)


class SaveImage:
    DESCRIPTION = (
        "Saves images as PNG in ComfyUI's output folder, like Save Image, with the workflow and, when a latent is "
        "connected, the PTI recipe (each image's latent code and how it was made) in a 'pti_recipe' text chunk. "
        "Read PTI Recipe (PTI) turns such a PNG back into the latent."
    )
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
            groups = [(_grid(images, grid_columns), list(range(len(images))))]
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
            _replace_atomically(
                {
                    Path(folder) / file: lambda path, png=png, metadata=metadata: png.save(
                        path, format="PNG", pnginfo=metadata, compress_level=4
                    )
                }
            )
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
        return {"ui": {"images": results}}


class ReadRecipe:
    DESCRIPTION = (
        "Reads the PTI recipe from a PNG saved by Save Image (PTI): the exact latent code(s) of the picture, "
        "ready for Decode or further edits with the same (tuned) generator."
    )
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
        latent = decode_recipe(text)
        summary = {k: v for k, v in json.loads(text).items() if k != "rows"} | {"rows": latent.meta["rows"]}
        return (latent, json.dumps(summary, indent=1))


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

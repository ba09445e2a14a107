"""Editing nodes: load an edit direction, move latents along it (one strength or a sweep for grids/animations), and
blend two latents (lerp, slerp, per-layer style mixing)."""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths

from ..pti.directions import load_direction, shipped_directions
from ..pti.edit import apply_direction, interpolate, parse_strengths, strength_sweep, style_mix
from ..pti.latent import latent_lineage, latent_row_meta
from . import common

log = logging.getLogger("pti.nodes")

EDIT_MODES = ("single", "sweep")
BLEND_MODES = ("lerp", "slerp", "style mix")
_missing_reported: list[bool] = []


def shipped_direction_names() -> list[str]:
    """Names of the shipped directions: the embedded model's and FFHQ's ([] when the files are missing)."""
    try:
        return sorted(shipped_directions())
    except (FileNotFoundError, ValueError) as exc:
        if not _missing_reported:
            log.warning("PTI: shipped directions unavailable (%s)", exc)
            _missing_reported.append(True)
        return []


def direction_file_names() -> list[str]:
    return folder_paths.get_filename_list(common.DIRECTIONS_FOLDER)


class LoadDirection:
    DESCRIPTION = (
        "Loads an edit direction: a shipped one (the embedded face model's attributes, or FFHQ StyleGAN2's age, smile "
        "and pose; connect the generator to get the one that fits it) or a file from models/stylegan/directions "
        "(InterFaceGAN .npy boundaries, GANSpace/SeFa exports, .pt or .safetensors; read without running code)."
    )
    SEARCH_ALIASES = ["interfacegan", "edit direction", "smile", "age", "pose"]
    CATEGORY = f"{common.CATEGORY}/editing"
    RETURN_TYPES = (common.DIRECTION,)
    RETURN_NAMES = ("direction",)
    OUTPUT_TOOLTIPS = ("The direction, for Apply Latent Edit (PTI).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "direction": common.combo_input(
                    shipped_direction_names() + direction_file_names(),
                    "An attribute of the embedded model, or a direction file in models/stylegan/directions.",
                ),
                "entry": common.string_input(
                    "", "For files holding several directions: which one (e.g. pc3 or smile). Empty otherwise."
                ),
            },
            "optional": {
                "generator": common.link_input(
                    common.GENERATOR, "Optional: pick the shipped direction that fits this generator (e.g. FFHQ smile)."
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, direction):
        if direction in shipped_direction_names() or folder_paths.get_full_path(common.DIRECTIONS_FOLDER, direction):
            return True
        folders = ", ".join(folder_paths.get_folder_paths(common.DIRECTIONS_FOLDER))
        return f"direction '{direction}' is neither a shipped attribute nor a file in {folders}"

    @classmethod
    def IS_CHANGED(cls, direction, entry, generator=None):
        path = folder_paths.get_full_path(common.DIRECTIONS_FOLDER, direction)
        return f"{common.file_signature(path) if path else direction}#{entry}"

    def load(self, direction, entry, generator=None):
        path = folder_paths.get_full_path(common.DIRECTIONS_FOLDER, direction)
        source = Path(path) if path else direction
        return (load_direction(source, generator, name=entry.strip() or None),)


class ApplyLatentEdit:
    DESCRIPTION = (
        "Moves latents along a direction: w + strength x d, optionally only on a range of w layers (coarse layers "
        "change pose/shape, fine ones colour). Sweep mode makes one latent per strength, for grids and animations."
    )
    SEARCH_ALIASES = ["latent edit", "attribute edit", "interfacegan", "edit sweep"]
    CATEGORY = f"{common.CATEGORY}/editing"
    RETURN_TYPES = (common.LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The edited latents: N rows, or N x (number of strengths) rows in sweep mode.",)
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": common.LATENT_INPUT,
                "direction": common.DIRECTION_INPUT,
                "mode": common.combo_input(
                    EDIT_MODES, "single: one edit of strength 'strength'; sweep: one edit per value in 'strengths'."
                ),
                "strength": common.float_input(
                    2.0, -50.0, 50.0, 0.1, "How far to move (unit directions: distance in w; GANSpace: std devs)."
                ),
                "strengths": common.string_input(
                    "-3:3:5", "Sweep mode: 'start:stop:count' (inclusive, evenly spaced) or a list like '-2, 0, 2'."
                ),
                "layer_start": common.int_input(
                    -1, -1, 63, "First w layer to edit (0 = coarsest). Both -1: the direction's own layers (or all)."
                ),
                "layer_end": common.int_input(
                    -1, -1, 64, "Stop before this w layer (exclusive); -1 = through the last layer."
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, mode, strengths, layer_start, layer_end):
        if mode == "sweep":
            try:
                parse_strengths(strengths)
            except ValueError as exc:
                return str(exc)
        if layer_start >= 0 and layer_end >= 0 and layer_end <= layer_start:
            return f"layer_end ({layer_end}) must be greater than layer_start ({layer_start})"
        return True

    def edit(self, latent, direction, mode, strength, strengths, layer_start, layer_end):
        if len(latent) == 0:
            raise ValueError("the latent batch is empty")
        num_ws = latent.ws.shape[1]
        direction.check_compatible(latent.ws.shape[2], num_ws)
        model_hash = direction.meta.get("generator_hash")
        if model_hash and latent_lineage(latent) and model_hash not in latent_lineage(latent):
            log.warning("PTI: direction %r was made for another generator (%s)", direction.name, model_hash)
        layers = layer_range(num_ws, layer_start, layer_end)
        values = parse_strengths(strengths) if mode == "sweep" else [strength]
        if not values:
            raise ValueError("no strengths given: write e.g. '-3:3:5' or '-2, 0, 2'")
        if mode == "sweep":
            edited = strength_sweep(latent, direction, values, layers)
        else:
            edited = apply_direction(latent, direction, strength, layers)
        applied = list(layers or direction.layers or (0, num_ws))
        rows = [
            _with_edit(latent_row_meta(latent, i), direction.name, value, applied)
            for i in range(len(latent))
            for value in values
        ]
        edited.meta = {"rows": rows, "generator_lineage": sorted(latent_lineage(latent))}
        return (edited,)


class BlendLatents:
    DESCRIPTION = (
        "Blends two latents: lerp or slerp between them per w layer (t = 0 gives A, 1 gives B), or style mixing, "
        "which copies a range of w layers from B into A (coarse layers carry pose and face shape, fine ones colour). "
        "B may have one row, used for every row of A. Both must come from the same generator (or its tunings)."
    )
    CATEGORY = f"{common.CATEGORY}/editing"
    RETURN_TYPES = (common.LATENT,)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The blended latents, one row per row of A.",)
    FUNCTION = "blend"
    SEARCH_ALIASES = ["mix latents", "interpolate", "lerp", "slerp", "style mixing"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent_a": common.link_input(common.LATENT, "The latents to start from (t = 0)."),
                "latent_b": common.link_input(common.LATENT, "The latents to blend in (t = 1), or one latent for all."),
                "mode": common.combo_input(
                    BLEND_MODES,
                    "lerp: straight line in w. slerp: along the great circle (keeps the latent's norm). "
                    "style mix: layers layer_start..layer_end-1 from B, the rest from A.",
                ),
                "t": common.float_input(0.5, -1.0, 2.0, 0.05, "lerp/slerp: how far from A towards B."),
                "layer_start": common.int_input(0, 0, 63, "Style mix: first w layer taken from B (0 = coarsest)."),
                "layer_end": common.int_input(
                    4, -1, 64, "Style mix: stop before this w layer (exclusive); -1 = through the last layer."
                ),
            }
        }

    def blend(self, latent_a, latent_b, mode, t, layer_start, layer_end):
        if len(latent_a) == 0 or len(latent_b) == 0:
            raise ValueError("a latent batch is empty: connect latents with at least one row")
        lineage_a, lineage_b = latent_lineage(latent_a), latent_lineage(latent_b)
        if lineage_a and lineage_b and not lineage_a & lineage_b:
            raise ValueError("the two latents come from unrelated generators: blend latents made with the same model")
        if mode == "style mix":
            layers = layer_range(latent_a.ws.shape[1], layer_start, layer_end)
            blended = style_mix(latent_a, latent_b, layers)
            step = {"blend": "style mix", "layers": list(layers)}
        else:
            blended = interpolate(latent_a, latent_b, t, mode)
            step = {"blend": mode, "t": t}
        rows = [{**latent_row_meta(latent_a, i), "blends": [step]} for i in range(len(latent_a))]
        blended.meta = {"rows": rows, "generator_lineage": sorted(lineage_a | lineage_b)}
        return (blended,)


def layer_range(num_ws: int, layer_start: int, layer_end: int) -> tuple[int, int] | None:
    """Half-open layer range to edit: None (the direction's own) when both are -1, else start..end with -1 = open."""
    if layer_start < 0 and layer_end < 0:
        return None
    start = max(layer_start, 0)
    end = num_ws if layer_end < 0 else min(layer_end, num_ws)
    if not start < end:
        raise ValueError(
            f"layer range {start}..{end - 1} is empty: this generator has {num_ws} w layers (0..{num_ws - 1})"
        )
    return (start, end)


def _with_edit(meta: dict, name: str, strength: float, layers: list[int]) -> dict:
    edits = [*meta.get("edits", []), {"direction": name, "strength": strength, "layers": layers}]
    return {**meta, "edits": edits}


NODE_CLASS_MAPPINGS = {
    "PTI_LoadDirection": LoadDirection,
    "PTI_ApplyLatentEdit": ApplyLatentEdit,
    "PTI_BlendLatents": BlendLatents,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_LoadDirection": "Load Direction (PTI)",
    "PTI_ApplyLatentEdit": "Apply Latent Edit (PTI)",
    "PTI_BlendLatents": "Blend Latents (PTI)",
}

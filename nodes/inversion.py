"""Inversion nodes: the two PTI stages, projection to a pivot latent and pivotal tuning of the generator."""

from __future__ import annotations

import dataclasses

import torch

from ..pti.latent import check_latent_fits
from ..pti.lineage import generator_lineage
from ..pti.memory import optimisation_bytes
from ..pti.projection import PROJECTION_PRESETS, project
from ..pti.tune import TUNING_PRESETS, pivotal_tune
from . import common, managed_models
from .model import decode_latent

SPACES = {"W": "w", "W+": "w+"}
PRESETS = ("fast", "reference")
FAST_PROJECTION, REFERENCE_PROJECTION = PROJECTION_PRESETS["fast"], PROJECTION_PRESETS["reference"]
FAST_TUNING, REFERENCE_TUNING = TUNING_PRESETS["fast"], TUNING_PRESETS["reference"]
RECONSTRUCTION_TOOLTIP = "What the generator makes of each latent: compare it with the photo."


def _preview_every(steps: int) -> int:
    """About ten live previews per image, at most every 10 steps."""
    return max(1, min(10, steps // 10))


class ProjectPivot:
    DESCRIPTION = (
        "PTI stage 1: finds the latent code (the pivot) whose image best matches each photo, by optimisation "
        "(LPIPS loss). Faces work best centred and aligned like the model's training data. An initial latent (from "
        "Encode Image, a saved pivot or the previous frame) makes it refine from there; 0 steps keeps it as is."
    )
    SEARCH_ALIASES = ["gan inversion", "invert image", "projector", "encode photo", "stylegan projection"]
    CATEGORY = f"{common.CATEGORY}/inversion"
    RETURN_TYPES = (common.LATENT, "IMAGE")
    RETURN_NAMES = ("latent", "reconstruction")
    OUTPUT_TOOLTIPS = ("One pivot latent per input image, tied to this generator.", RECONSTRUCTION_TOOLTIP)
    FUNCTION = "project"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": common.GENERATOR_INPUT,
                "image": common.IMAGE_INPUT,
                "steps": common.int_input(
                    FAST_PROJECTION.steps,
                    0,
                    5000,
                    f"Optimisation steps per image (fast: {FAST_PROJECTION.steps}; reference, as in the paper: "
                    f"{REFERENCE_PROJECTION.steps}). With an initial latent far fewer are needed; 0 returns it.",
                ),
                "space": common.combo_input(
                    list(SPACES),
                    "W: one code for all layers (the PTI choice, edits best). W+: one per layer (closer, edits worse).",
                    default="W",
                ),
                "seed": common.SEED_INPUT,
                "preset": common.combo_input(
                    PRESETS,
                    f"fast: start from the best of {FAST_PROJECTION.init_candidates} random faces, AlexNet LPIPS. "
                    "reference: the StyleGAN2-ADA projector PTI uses (average face start, VGG LPIPS).",
                    default="fast",
                ),
            },
            "optional": {
                "initial_latent": common.link_input(
                    common.LATENT,
                    "Start here instead of searching: Encode Image (PTI), a loaded pivot or the previous frame's "
                    "pivot; one latent per image, or one for all.",
                ),
            },
        }

    def project(self, generator, image, steps, space, seed, preset="fast", initial_latent=None):
        G = generator
        targets = common.comfy_to_targets(image, G.img_resolution)
        if initial_latent is not None:
            check_latent_fits(initial_latent, G)
        elif steps == 0:
            raise ValueError("steps=0 keeps the initial latent as the pivot: connect one, or set steps above 0")
        net = getattr(PROJECTION_PRESETS.get(preset), "lpips_net", None)
        lpips = common.ensure_lpips(net, common.compute_device())
        needed = optimisation_bytes(G, len(targets.pixels), net, tunes_weights=False)
        managed_models.use(G, *lpips, memory_required=needed)
        progress = common.NodeProgress()
        with torch.inference_mode(False), torch.enable_grad():
            latent = project(
                G,
                targets,
                space=SPACES[space],
                steps=steps,
                seed=seed,
                progress=progress,
                preset=preset,
                preview_every=_preview_every(steps),
                init=initial_latent,
            )
        latent = dataclasses.replace(latent, meta={**latent.meta, "generator_lineage": generator_lineage(G)})
        return (latent, decode_latent(G, latent))


class PivotalTune:
    DESCRIPTION = (
        "PTI stage 2: fine-tunes a copy of the generator so each pivot latent reproduces its photo exactly, while "
        "edits keep working. Returns a NEW generator; the input generator is left untouched."
    )
    SEARCH_ALIASES = ["pti", "fine-tune generator", "gan inversion", "reconstruct photo"]
    CATEGORY = f"{common.CATEGORY}/inversion"
    RETURN_TYPES = (common.GENERATOR, "IMAGE")
    RETURN_NAMES = ("tuned_generator", "reconstruction")
    OUTPUT_TOOLTIPS = (
        "The tuned generator: decode the pivot (and its edits) with it.",
        "The pivots rendered by the tuned generator: should match the photos.",
    )
    FUNCTION = "tune"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": common.GENERATOR_INPUT,
                "image": common.link_input("IMAGE", "The same photo(s) that were projected, in the same order."),
                "latent": common.link_input(common.LATENT, "The pivots from Project Pivot (PTI), one per image."),
                "steps": common.int_input(
                    FAST_TUNING.steps,
                    1,
                    5000,
                    f"Most tuning steps (fast: {FAST_TUNING.steps}; reference, as in the paper: "
                    f"{REFERENCE_TUNING.steps}); stops earlier once every photo is reproduced.",
                ),
                "stop_at_psnr": common.float_input(
                    FAST_TUNING.target_psnr,
                    0.0,
                    60.0,
                    0.5,
                    "Stop once every reconstruction is this close to its photo, in dB PSNR (0: run every step). "
                    f"The reference preset also stops at LPIPS {REFERENCE_TUNING.lpips_threshold}.",
                ),
                "locality": common.bool_input(
                    False,
                    "Locality regularisation: keeps the rest of latent space unchanged (slower, safer for big edits).",
                ),
                "seed": common.SEED_INPUT,
                "preset": common.combo_input(
                    PRESETS,
                    f"fast: every weight at lr {FAST_TUNING.lr:g}, MSE weight "
                    f"{FAST_TUNING.mse_weight:g}, reproduces the photo. reference: the paper's settings (lr "
                    f"{REFERENCE_TUNING.lr:g}, LPIPS stop {REFERENCE_TUNING.lpips_threshold}).",
                    default="fast",
                ),
            }
        }

    def tune(self, generator, image, latent, steps, stop_at_psnr, locality, seed, preset="fast"):
        G = generator
        targets = common.comfy_to_targets(image, G.img_resolution)
        check_latent_fits(latent, G)
        if len(latent) != len(targets.pixels):
            raise ValueError(
                f"got {len(targets.pixels)} image(s) but {len(latent)} pivot latent(s): connect the latent that "
                "Project Pivot made from these same images"
            )
        net = getattr(TUNING_PRESETS.get(preset), "lpips_net", None)
        lpips = common.ensure_lpips(net, common.compute_device())
        managed_models.use(G, *lpips, memory_required=optimisation_bytes(G, len(latent), net, tunes_weights=True))
        progress = common.NodeProgress()
        with torch.inference_mode(False), torch.enable_grad():
            tuned = pivotal_tune(
                G,
                targets,
                latent,
                steps=steps,
                target_psnr=stop_at_psnr,
                preset=preset,
                locality=locality,
                seed=seed,
                progress=progress,
                preview_every=_preview_every(steps),
            )
        tuned = tuned.eval()
        managed_models.use(tuned)  # ComfyUI now manages (and can unload) the new generator too
        return (tuned, decode_latent(tuned, latent))


NODE_CLASS_MAPPINGS = {
    "PTI_ProjectPivot": ProjectPivot,
    "PTI_PivotalTune": PivotalTune,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_ProjectPivot": "Project Pivot (PTI)",
    "PTI_PivotalTune": "Pivotal Tune (PTI)",
}

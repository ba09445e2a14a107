"""Direction discovery node: unsupervised edit directions (SeFa, GANSpace) computed from any generator."""

from __future__ import annotations

import torch

from ..pti.discovery import SEFA_LAYER_GROUPS, ganspace, layer_group_range, sefa
from ..pti.image import render_sweep_grid
from ..pti.runtime import device_of
from . import common

METHODS = ("sefa", "ganspace")


class ComputeDirections:
    DESCRIPTION = (
        "Finds edit directions of a generator without labels. SeFa: closed form, from the style weights of the "
        "chosen layers (instant). GANSpace: principal components of sampled w codes (strength in std devs). "
        "Results are cached per model, so the second run is instant. The preview shows the first components."
    )
    SEARCH_ALIASES = ["sefa", "ganspace", "latent directions", "pca"]
    CATEGORY = f"{common.CATEGORY}/editing"
    RETURN_TYPES = (common.DIRECTION, common.DIRECTION, "IMAGE")
    RETURN_NAMES = ("direction", "directions", "preview")
    OUTPUT_IS_LIST = (False, True, False)
    OUTPUT_TOOLTIPS = (
        "The component chosen by 'component', for Apply Latent Edit (PTI).",
        "Every computed component as a list (nodes downstream run once per direction).",
        "Grid: one row per leading component, columns = -strength, 0, +strength from the average face.",
    )
    FUNCTION = "compute"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": common.GENERATOR_INPUT,
                "method": common.combo_input(
                    METHODS, "sefa: factorises the style weights (no sampling). ganspace: PCA of sampled w."
                ),
                "num_components": common.int_input(10, 1, 512, "How many directions to compute (largest first)."),
                "component": common.int_input(0, 0, 511, "Which component to output as 'direction' (0 = largest)."),
                "layers": common.combo_input(
                    SEFA_LAYER_GROUPS,
                    "Layers to edit: coarse = 4-8 px (pose, shape), middle = 16-32 px (features, expression), "
                    "fine = 64 px+ (colour, texture). SeFa also factorises only these layers.",
                    default="all",
                ),
                "num_samples": common.int_input(
                    10000, 100, 1000000, "GANSpace: how many w samples the PCA uses (more = more stable).", step=100
                ),
                "seed": common.SEED_INPUT,
                "preview_components": common.int_input(5, 0, 32, "Rows in the preview grid (0 = no preview)."),
                "preview_strength": common.float_input(
                    3.0, 0.0, 50.0, 0.5, "Strength of the preview edits (SeFa: distance in w; GANSpace: std devs)."
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, num_components, component):
        if component >= num_components:
            return f"component ({component}) must be below num_components ({num_components})"
        return True

    def compute(
        self,
        generator,
        method,
        num_components,
        component,
        layers,
        num_samples,
        seed,
        preview_components,
        preview_strength,
    ):
        G = generator
        if num_components > G.w_dim:
            raise ValueError(f"num_components ({num_components}) cannot exceed the generator's w_dim ({G.w_dim})")
        if component >= num_components:
            raise ValueError(f"component ({component}) must be below num_components ({num_components})")
        if method == "sefa":
            directions = sefa(G, num_components, layers)
        else:
            directions = ganspace(G, num_components, num_samples, seed, layers=layer_group_range(G, layers))
        return (directions[component], directions, self._preview(G, directions[:preview_components], preview_strength))

    @staticmethod
    def _preview(G, directions, strength: float) -> torch.Tensor:
        if not directions:
            return torch.zeros(1, 64, 64, 3)
        device = device_of(G)
        ws = G.mapping.w_avg.detach().to(device).reshape(1, 1, -1).repeat(1, G.num_ws, 1)
        grid = render_sweep_grid(G, ws, directions, (-strength, 0.0, strength))
        return common.generated_to_comfy(grid.unsqueeze(0))


NODE_CLASS_MAPPINGS = {"PTI_ComputeDirections": ComputeDirections}
NODE_DISPLAY_NAME_MAPPINGS = {"PTI_ComputeDirections": "Compute Directions (PTI)"}

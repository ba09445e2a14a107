"""Edit Live (PTI): latent edits with strength sliders whose effect shows on the node while they are dragged.

The node runs like any other (IMAGE + edited latent out, widgets saved in the workflow). After it runs it leaves a
:class:`~pti.live.LiveScene` in :data:`STORE` and returns its token through its ``ui`` output; the pack's web
extension (``web/live_edit.js``) sends slider values with that token to ``POST /pti/live/render``
(``live_routes.py``) and draws the answer on the node. Without the extension the node is a plain edit node.
"""

from __future__ import annotations

import logging
import sys

from ..pti.live import LiveScene, LiveSessionStore, SliderRange
from ..pti.memory import inference_bytes
from . import common, managed_models
from .editing import layer_range

log = logging.getLogger("pti.nodes")

MAX_DIRECTIONS = 4
STRENGTH_MIN, STRENGTH_MAX, STRENGTH_STEP = -10.0, 10.0, 0.05
UI_KEY = "pti_live"  # the ui output entry the web extension reads
STORE = LiveSessionStore(capacity=2)


def strength_key(index: int) -> str:
    return f"strength_{index}"


def direction_key(index: int) -> str:
    return f"direction_{index}"


def _strength_input(index: int) -> tuple[str, dict]:
    spec = common.float_input(
        0.0 if index > 1 else 1.0,
        STRENGTH_MIN,
        STRENGTH_MAX,
        STRENGTH_STEP,
        f"Strength of direction {index}; drag it to see the face change on the node without queueing.",
    )
    spec[1]["display"] = "slider"
    return spec


def current_client_id() -> str | None:
    """The browser tab (client id) whose prompt is running, when ComfyUI's server is up; None elsewhere."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    return getattr(instance, "client_id", None)


class EditLive:
    DESCRIPTION = (
        "Moves a latent along up to four directions and decodes it. In the browser, dragging a strength slider "
        "after one run shows the edited face on the node at once, without queueing; the next queue re-runs only "
        "this node and outputs exactly the last preview. Without the pack's web extension it is a plain edit node."
    )
    SEARCH_ALIASES = ["live edit", "slider edit", "interactive edit", "realtime edit"]
    CATEGORY = f"{common.CATEGORY}/editing"
    RETURN_TYPES = ("IMAGE", common.LATENT)
    RETURN_NAMES = ("image", "latent")
    OUTPUT_TOOLTIPS = ("The edited face(s), one per latent row.", "The edited latent(s).")
    FUNCTION = "edit"
    OUTPUT_NODE = True  # runs (and offers its preview) even when nothing is connected downstream

    @classmethod
    def INPUT_TYPES(cls):
        required = {
            "generator": common.GENERATOR_INPUT,
            "latent": common.LATENT_INPUT,
            direction_key(1): common.DIRECTION_INPUT,
            strength_key(1): _strength_input(1),
        }
        optional = {}
        for index in range(2, MAX_DIRECTIONS + 1):
            optional[direction_key(index)] = common.link_input(common.DIRECTION, f"Optional direction {index}.")
            optional[strength_key(index)] = _strength_input(index)
        # Optional (with defaults) only so that they are drawn below the sliders.
        optional["layer_start"] = common.int_input(
            -1, -1, 63, "First w layer to edit (0 = coarsest). Both -1: each direction's own layers (or all)."
        )
        optional["layer_end"] = common.int_input(-1, -1, 64, "Stop before this w layer (exclusive); -1 = the last.")
        return {"required": required, "optional": optional, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        # Every queue re-runs this (cheap) node, so each browser tab gets a session of its own: a cached result
        # would hand the tab that queued second the first tab's session.
        return float("nan")

    @classmethod
    def VALIDATE_INPUTS(cls, layer_start=-1, layer_end=-1):
        if layer_start >= 0 and layer_end >= 0 and layer_end <= layer_start:
            return f"layer_end ({layer_end}) must be greater than layer_start ({layer_start})"
        return True

    def edit(self, generator, latent, layer_start=-1, layer_end=-1, unique_id=None, **sliders):
        if len(latent) == 0:
            raise ValueError("the latent batch is empty")
        directions, values = {}, {}
        for index in range(1, MAX_DIRECTIONS + 1):
            direction = sliders.get(direction_key(index))
            if direction is not None:
                directions[strength_key(index)] = direction
                values[strength_key(index)] = float(sliders.get(strength_key(index), 0.0))
        ranges = {key: SliderRange(STRENGTH_MIN, STRENGTH_MAX) for key in directions}
        layers = layer_range(latent.ws.shape[1], layer_start, layer_end)
        with STORE.lock:  # no live render of this node's generator while it runs
            managed_models.use(generator, memory_required=inference_bytes(generator, 1))
            scene = LiveScene(generator, latent, directions, ranges, values, layers)
            common.check_interrupted()
            images = scene.render(scene.values)
            edited = scene.edited_latent(scene.values)
            token = STORE.open(scene, current_client_id(), None if unique_id is None else str(unique_id))
        edited.meta = {**latent.meta, "live_edit": {"values": scene.values, "layers": list(layers or [])}}
        ui = {UI_KEY: [{"session": token, "values": scene.values}]}
        return {"ui": ui, "result": (common.generated_to_comfy(images), edited)}


NODE_CLASS_MAPPINGS = {"PTI_EditLive": EditLive}
NODE_DISPLAY_NAME_MAPPINGS = {"PTI_EditLive": "Edit Live (PTI)"}

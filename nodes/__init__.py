"""ComfyUI nodes of the PTI pack: thin adapters over ``pti/``. Each family module exports its own mappings."""

from . import alignment, directions, editing, encoder, inversion, io, live, live_routes, model, video

_FAMILIES = (model, inversion, editing, live, directions, alignment, io, encoder, video)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _family in _FAMILIES:
    NODE_CLASS_MAPPINGS.update(_family.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_family.NODE_DISPLAY_NAME_MAPPINGS)

live_routes.install_into_comfyui()  # POST /pti/live/render for Edit Live's sliders (no server: nothing to do)

"""ComfyUI nodes of the PTI pack: thin adapters over ``pti/``. Each family module exports its own mappings."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

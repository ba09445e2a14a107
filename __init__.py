"""ComfyUI entry point of the PTI node pack: collects the node mappings and names the web extension folder.

Outside ComfyUI (a test runner collecting the repository, a script importing the core) there is no
``folder_paths`` module; the pack then exposes empty mappings instead of failing, and the core stays importable.
"""

import importlib.util

# ``__package__`` is empty when a test runner imports this file as a plain module (a checkout folder whose name is
# not a Python identifier, e.g. ComfyUI-PTI): there is no package to import the nodes relative to, and none needed.
if __package__ and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}

# Served by ComfyUI at /extensions/<pack>/: the Edit Live (PTI) slider preview (web/live_edit.js).
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

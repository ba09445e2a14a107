"""ComfyUI entry point of the PTI node pack: collects the node mappings, nothing else."""

try:  # Imported as a package (ComfyUI, or tests that load the pack by path).
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:  # Imported as a plain module (e.g. by a test runner collecting the repo root).
    if __package__:
        raise
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
    _IMPORT_ERROR = exc

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

"""Import the repository root as a ComfyUI pack would be imported, against the fakes in ``tests/fake_comfy``.

ComfyUI loads ``custom_nodes/<pack>/__init__.py`` with ``importlib`` under a module name of its choosing, so the
pack must only use relative imports. ``load_pack()`` does the same under an unusual name, which catches any
absolute ``import nodes``/``import pti`` that would break inside ComfyUI.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_COMFY_DIR = Path(__file__).resolve().parent / "fake_comfy"
PACK_MODULE_NAME = "custom_nodes_x_comfyui_pti_under_test"


def install_fakes() -> None:
    """Put the fake ``comfy`` and ``folder_paths`` modules first on ``sys.path`` (idempotent)."""
    if str(FAKE_COMFY_DIR) not in sys.path:
        sys.path.insert(0, str(FAKE_COMFY_DIR))
    import folder_paths

    if not Path(folder_paths.__file__).resolve().is_relative_to(FAKE_COMFY_DIR):
        raise RuntimeError(f"a real folder_paths ({folder_paths.__file__}) shadows the test fake; run tests apart")


def load_pack() -> ModuleType:
    """Return the pack module (cached after the first import), imported from ``REPO_ROOT/__init__.py``."""
    if PACK_MODULE_NAME in sys.modules:
        return sys.modules[PACK_MODULE_NAME]
    install_fakes()
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_MODULE_NAME]
        raise
    return module


def pack_module(relative_name: str) -> ModuleType:
    """A submodule of the loaded pack, e.g. ``pack_module("pti.latent")`` (the pack's own copy, as in ComfyUI)."""
    load_pack()
    return importlib.import_module(f"{PACK_MODULE_NAME}.{relative_name}")

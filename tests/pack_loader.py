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
# The modules a running ComfyUI provides, faked here: top-level name -> the file that defines it.
FAKE_MODULES = {"folder_paths": FAKE_COMFY_DIR / "folder_paths.py", "comfy": FAKE_COMFY_DIR / "comfy" / "__init__.py"}


def _import_file(name: str, path: Path) -> ModuleType:
    """Import ``path`` as module ``name`` (a package when it is an ``__init__.py``), registered in ``sys.modules``."""
    package_dir = [str(path.parent)] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=package_dir)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def install_fakes() -> None:
    """Make the fake ``comfy`` and ``folder_paths`` the ones ``import`` finds (idempotent).

    They are imported from their files into ``sys.modules`` (``comfy`` as a package, so ``comfy.utils`` and
    ``comfy.model_management`` import from it) rather than by putting their folder on ``sys.path``: the tests and
    ``tools/build_workflows.py`` leave the import path alone.
    """
    for name, path in FAKE_MODULES.items():
        module = sys.modules.get(name) or _import_file(name, path)
        if not Path(module.__file__).resolve().is_relative_to(FAKE_COMFY_DIR):
            raise RuntimeError(f"a real {name} ({module.__file__}) shadows the test fake; run tests apart")


def load_pack() -> ModuleType:
    """Return the pack module (cached after the first import), imported from ``REPO_ROOT/__init__.py``."""
    if PACK_MODULE_NAME in sys.modules:
        return sys.modules[PACK_MODULE_NAME]
    install_fakes()
    return _import_file(PACK_MODULE_NAME, REPO_ROOT / "__init__.py")


def pack_module(relative_name: str) -> ModuleType:
    """A submodule of the loaded pack, e.g. ``pack_module("pti.latent")`` (the pack's own copy, as in ComfyUI)."""
    load_pack()
    return importlib.import_module(f"{PACK_MODULE_NAME}.{relative_name}")

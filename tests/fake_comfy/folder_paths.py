"""Test double of ComfyUI's ``folder_paths`` with the same function signatures and lookup rules.

The base directory is ``$PTI_FAKE_COMFY_BASE`` when set, else a fresh temporary directory, so tests never touch a
real ComfyUI install. ``models/``, ``input/`` and ``output/`` live under it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Collection

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}

base_path = os.environ.get("PTI_FAKE_COMFY_BASE") or tempfile.mkdtemp(prefix="fake_comfy_")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths["checkpoints"] = ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions)
folder_names_and_paths["custom_nodes"] = ([os.path.join(base_path, "custom_nodes")], set())

output_directory = os.path.join(base_path, "output")
temp_directory = os.path.join(base_path, "temp")
input_directory = os.path.join(base_path, "input")
for _directory in (output_directory, input_directory):
    os.makedirs(_directory, exist_ok=True)


def map_legacy(folder_name: str) -> str:
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder_name, folder_name)


def set_output_directory(output_dir: str) -> None:
    global output_directory
    output_directory = output_dir


def set_input_directory(input_dir: str) -> None:
    global input_directory
    input_directory = input_dir


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def annotated_filepath(name: str) -> tuple[str, str | None]:
    for suffix, directory in (("[output]", output_directory), ("[input]", input_directory), ("[temp]", temp_directory)):
        if name.endswith(suffix):
            return name[: -len(suffix) - 1], directory
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = default_dir if default_dir is not None else get_input_directory()
    return os.path.join(base_dir, name)


def exists_annotated_filepath(name) -> bool:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = get_input_directory()
    return os.path.exists(os.path.join(base_dir, name))


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folder_name = map_legacy(folder_name)
    if folder_name in folder_names_and_paths:
        paths, _extensions = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[map_legacy(folder_name)][0][:]


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    if not os.path.isdir(directory):
        return [], {}
    excluded = excluded_dir_names or []
    result: list[str] = []
    dirs = {directory: os.path.getmtime(directory)}
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        result.extend(os.path.relpath(os.path.join(dirpath, f), directory) for f in filenames)
        for d in subdirs:
            dirs[os.path.join(dirpath, d)] = os.path.getmtime(os.path.join(dirpath, d))
    return result, dirs


def filter_files_extensions(files: Collection[str], extensions: Collection[str]) -> list[str]:
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def get_full_path(folder_name: str, filename: str) -> str | None:
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for folder in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(folder, filename)
        if os.path.isfile(full_path):
            return full_path
        if os.path.islink(full_path):
            logging.warning("WARNING path %s exists but doesn't link anywhere, skipping.", full_path)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_filename_list(folder_name: str) -> list[str]:
    """Uncached (ComfyUI caches by directory mtime; the result is the same)."""
    folders, extensions = folder_names_and_paths[map_legacy(folder_name)]
    found: set[str] = set()
    for folder in folders:
        files, _dirs = recursive_search(folder, excluded_dir_names=[".git"])
        found.update(filter_files_extensions(files, extensions))
    return sorted(found)


def get_save_image_path(
    filename_prefix: str, output_dir: str, image_width=0, image_height=0
) -> tuple[str, str, int, str, str]:
    """Same contract as ComfyUI's (folder, name, next counter, subfolder, prefix); no %date% expansion."""
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
    os.makedirs(full_output_folder, exist_ok=True)
    counters = [0]
    for existing in os.listdir(full_output_folder):
        if existing.startswith(filename + "_"):
            head = existing[len(filename) + 1 :].split("_")[0]
            if head.isdigit():
                counters.append(int(head))
    return full_output_folder, filename, max(counters) + 1, subfolder, filename_prefix

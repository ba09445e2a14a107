"""Provenance that can ship: a path recorded in a shipped file is relative to the repository, never absolute.

A training record is written on one machine and read on every other one, where an absolute path such as
``/home/me/runs/v4/state.pt`` only tells where the trainer kept their files. :func:`portable` rewrites every
absolute path in a JSON-able record relative to the repository root (``../runs/v4/state.pt``), which still says
which file it was; the tools apply it to what they export.

    python tools/provenance.py        # rewrite the records already shipped in pti/default_model (tensors untouched)
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path, PureWindowsPath
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pti.atomic import write_atomically  # noqa: E402
from pti.checkpoints import DEFAULT_MODEL_DIR, read_safetensors, write_safetensors  # noqa: E402
from pti.hashing import state_dict_hash  # noqa: E402

log = logging.getLogger("provenance")

_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def is_absolute_path(text: str) -> bool:
    """True for a POSIX absolute path, a Windows drive path (``C:\\...``) or a UNC path (``\\\\server\\...``)."""
    return text.startswith("/") or bool(_WINDOWS_ABSOLUTE.match(text))


def portable_path(path: str | os.PathLike, root: Path = REPO_ROOT) -> str:
    """``path`` relative to ``root`` with ``/`` separators (``..`` where it lies outside); a relative path is kept,
    and a Windows path that ``root`` cannot reach (another drive, or read on another system) keeps its file name."""
    text = os.fspath(path)
    if not is_absolute_path(text):
        return text
    if _WINDOWS_ABSOLUTE.match(text) and os.name != "nt":
        return PureWindowsPath(text).name
    try:
        return Path(os.path.relpath(text, root)).as_posix()
    except ValueError:  # on Windows: another drive than the repository's
        return PureWindowsPath(text).name


def portable(value: Any, root: Path = REPO_ROOT) -> Any:
    """A copy of a JSON-able ``value`` with every absolute path string made relative to ``root``."""
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, root) for item in value]
    if isinstance(value, str):
        return portable_path(value, root)
    return value


def _portable_metadata_value(text: str) -> str:
    """A safetensors metadata string with its paths made portable; JSON is re-serialised (key order kept) only when
    a path in it changed."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return portable_path(text)
    rewritten = portable(parsed)
    return text if rewritten == parsed else json.dumps(rewritten)


def rewrite_shipped(folder: Path = DEFAULT_MODEL_DIR) -> list[Path]:
    """Make the records in ``folder`` (safetensors metadata, JSON files) portable; returns the files rewritten.

    Tensors are copied as stored and checked unchanged by weight hash; files without absolute paths are left alone.
    """
    rewritten = []
    for path in sorted(folder.glob("*.safetensors")):
        tensors, metadata = read_safetensors(path)
        portable_metadata = {key: _portable_metadata_value(value) for key, value in metadata.items()}
        if portable_metadata == metadata:
            continue
        before = state_dict_hash(tensors)
        write_safetensors(path, tensors, portable_metadata)
        after, kept = read_safetensors(path)
        if state_dict_hash(after) != before or kept != portable_metadata:
            raise RuntimeError(f"{path}: rewriting the metadata changed the tensors")
        rewritten.append(path)
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if portable(record) != record:
            text = json.dumps(portable(record), indent=2) + "\n"
            rewritten.append(write_atomically(path, lambda tmp, text=text: tmp.write_text(text)))
    return rewritten


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in rewrite_shipped():
        log.info("made the paths in %s relative to the repository", path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

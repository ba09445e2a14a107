"""Atomic file writes: every file the project saves is written beside its final path, then renamed into place.

Readers never see a partial file, and a failure (a crash, a full disk, a cancelled save) leaves the previous
file — or the previous *set* of files, such as a saved result's pivot and delta — as it was, with no temporary file
left behind. Temporary files are named ``.<final name>.<random>.tmp`` in the final folder: hidden, never taken for
a model file by their extension, and on the same filesystem, so the rename is atomic. Written files are 0644
(readable like any saved image; ``safetensors`` and ``mkstemp`` would leave them 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

Writer = Callable[[Path], object]

FILE_MODE = 0o644


def _temporary_beside(final: Path) -> Path:
    """A new empty file next to ``final`` (created exclusively, so two writers never share one)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(name)


def replace_atomically(writers: Mapping[Path, Writer]) -> None:
    """Write every file through ``write(temp_path)`` and rename them into place only once all of them succeeded."""
    temps: dict[Path, Path] = {}
    try:
        for final, write in writers.items():
            temps[final] = _temporary_beside(final)
            write(temps[final])
            os.chmod(temps[final], FILE_MODE)
        for final, temp in temps.items():
            os.replace(temp, final)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, write: Writer) -> Path:
    """Write one file through ``write(temp_path)``, then rename it to ``path`` (folders created); returns ``path``."""
    path = Path(path).expanduser()
    replace_atomically({path: write})
    return path

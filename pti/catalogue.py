"""Published StyleGAN checkpoints the pack knows by name, and fetching one on first use.

A :class:`CatalogueEntry` names a file NVIDIA publishes (StyleGAN2-ADA, StyleGAN2 and StyleGAN3 pickles of FFHQ,
FFHQ-U, MetFaces and AFHQ), where it is hosted, its size, licence, resolution and architecture, and which shipped
companions fit it. :func:`fetch` finds the file on a :class:`~pti.downloads.WeightStore`'s search path or
downloads it into the store's first folder (Range resume, size and disk-space checks, atomic rename; see
:func:`pti.downloads.download_file`); the file is then read by the allow-list reader like any file a user brought.

NVIDIA publishes no checksums, so the SHA-256 and size of each download are recorded beside the file
(``.<file>.download.json``) at first download, checked (size) on every later use and shown by ``pti info``. A file
with a catalogue file name that the pack did not download is the user's: it is read as it is and never replaced.

``PTI_MODEL_MIRROR=URL`` replaces the hosts: the file is fetched from ``URL/<published file name>`` (company
mirrors, air-gapped caches).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_atomically
from .downloads import DownloadError, WeightStore, download_file, partial_path

MIRROR_VARIABLE = "PTI_MODEL_MIRROR"
FETCH_COMMAND = "python -m pti fetch-model"
RECORD_SUFFIX = ".download.json"

NVIDIA_NC = "NVIDIA licence, non-commercial research use only (the NVlabs StyleGAN2-ADA / StyleGAN3 licence)"
NVIDIA_NC_URL = "https://nvlabs.github.io/stylegan3/license.html"
ADA_HOST = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained"
NGC_STYLEGAN2 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files"
NGC_STYLEGAN3 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files"


class CatalogueError(ValueError):
    """An unknown catalogue name, or a file on disk that is not the catalogued one."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One published checkpoint. ``approx_mb`` is for display and planning; the server's announced size is what a
    download is checked against (and then recorded)."""

    name: str
    filename: str
    url: str
    dataset: str
    resolution: int
    architecture: str  # "stylegan2", "stylegan3-t" or "stylegan3-r"
    approx_mb: int
    publisher: str = "NVIDIA"
    licence: str = NVIDIA_NC
    licence_url: str = NVIDIA_NC_URL
    sha256: str | None = None  # pinned only where the publisher gives one
    directions: str | None = None  # shipped directions that fit: "ffhq" (pti/ffhq) or None (use SeFa / GANSpace)
    encoder: str | None = None  # how to get a matching encoder, when one exists

    @property
    def label(self) -> str:
        """What Load StyleGAN shows: name, what it is, size, licence and that it downloads on first use."""
        arch = {"stylegan2": "StyleGAN2", "stylegan3-t": "StyleGAN3-T", "stylegan3-r": "StyleGAN3-R"}
        return (
            f"{self.name} ({self.dataset} {self.resolution}, {arch[self.architecture]}, {self.publisher}, "
            f"~{self.approx_mb} MB, non-commercial licence, downloads on first use)"
        )

    def source_url(self) -> str:
        """The URL to fetch from: ``$PTI_MODEL_MIRROR/<filename>`` when a mirror is set, else the publisher's."""
        mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url


E4E_FFHQ = (
    "the e4e FFHQ encoder (e4e_ffhq_encode.pt, omertov/encoder4editing) is published on Google Drive only, without a "
    "direct URL: download it by hand and pass it as --init e4e:PATH or put it in models/stylegan/encoders"
)


def _stylegan2(name: str, dataset: str, resolution: int, mb: int, directions: str | None = None) -> CatalogueEntry:
    stem = name.replace(f"-{resolution}", "")
    filename = f"stylegan2-{stem}-{resolution}x{resolution}.pkl"
    return CatalogueEntry(
        name, filename, f"{NGC_STYLEGAN2}/{filename}", dataset, resolution, "stylegan2", mb, directions=directions
    )


def _stylegan3(config: str, dataset_key: str, dataset: str, resolution: int, mb: int) -> CatalogueEntry:
    filename = f"stylegan3-{config}-{dataset_key}-{resolution}x{resolution}.pkl"
    name = f"stylegan3-{config}-{dataset_key}-{resolution}"
    return CatalogueEntry(name, filename, f"{NGC_STYLEGAN3}/{filename}", dataset, resolution, f"stylegan3-{config}", mb)


CATALOGUE: dict[str, CatalogueEntry] = {
    entry.name: entry
    for entry in (
        # The generator of the PTI paper and its official code (StyleGAN2-ADA, FFHQ 1024).
        CatalogueEntry(
            "ffhq-1024",
            "ffhq.pkl",
            f"{ADA_HOST}/ffhq.pkl",
            "FFHQ",
            1024,
            "stylegan2",
            364,
            directions="ffhq",
            encoder=E4E_FFHQ,
        ),
        _stylegan2("ffhq-512", "FFHQ", 512, 364, directions="ffhq"),
        _stylegan2("ffhq-256", "FFHQ", 256, 280, directions="ffhq"),
        _stylegan2("ffhqu-1024", "FFHQ-U", 1024, 364),
        _stylegan2("ffhqu-256", "FFHQ-U", 256, 280),
        _stylegan2("metfaces-1024", "MetFaces", 1024, 364),
        _stylegan2("metfacesu-1024", "MetFaces-U", 1024, 364),
        _stylegan2("afhqv2-512", "AFHQv2", 512, 364),
        _stylegan2("afhqcat-512", "AFHQ cat", 512, 364),
        _stylegan2("afhqdog-512", "AFHQ dog", 512, 364),
        _stylegan2("afhqwild-512", "AFHQ wild", 512, 364),
        _stylegan3("t", "ffhq", "FFHQ", 1024, 282),
        _stylegan3("r", "ffhq", "FFHQ", 1024, 290),
        _stylegan3("t", "ffhqu", "FFHQ-U", 1024, 282),
        _stylegan3("r", "ffhqu", "FFHQ-U", 1024, 290),
        _stylegan3("t", "ffhqu", "FFHQ-U", 256, 270),
        _stylegan3("r", "ffhqu", "FFHQ-U", 256, 280),
        _stylegan3("t", "metfaces", "MetFaces", 1024, 282),
        _stylegan3("r", "metfaces", "MetFaces", 1024, 290),
        _stylegan3("t", "metfacesu", "MetFaces-U", 1024, 282),
        _stylegan3("r", "metfacesu", "MetFaces-U", 1024, 290),
        _stylegan3("t", "afhqv2", "AFHQv2", 512, 282),
        _stylegan3("r", "afhqv2", "AFHQv2", 512, 290),
    )
}


def lookup(name: str) -> CatalogueEntry | None:
    """The entry named ``name`` (its catalogue name or its Load StyleGAN label), or None."""
    key = name.strip()
    if key in CATALOGUE:
        return CATALOGUE[key]
    return next((entry for entry in CATALOGUE.values() if entry.label == key), None)


def entry(name: str) -> CatalogueEntry:
    """The entry named ``name``, or a :class:`CatalogueError` listing every name."""
    found = lookup(name)
    if found is None:
        raise CatalogueError(f"unknown catalogue model {name!r}; known names: {', '.join(CATALOGUE)}")
    return found


def record_path(path: Path) -> Path:
    """The download record kept beside a catalogue file."""
    return path.with_name(f".{path.name}{RECORD_SUFFIX}")


def read_record(path: str | os.PathLike) -> dict | None:
    """The download record of ``path`` (name, url, size, sha256, downloaded), or None for a file the pack did not
    download."""
    record = record_path(Path(path))
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def _check_existing(found: Path, item: CatalogueEntry) -> Path:
    """A file on disk under the entry's file name: the catalogued file when its record says so, the user's own when
    it has none; a recorded file whose size changed since is refused (never replaced)."""
    record = read_record(found)
    if record is not None and record.get("size") != found.stat().st_size:
        raise CatalogueError(
            f"{found} is not the file downloaded as {item.name} ({found.stat().st_size} bytes, {record.get('size')} "
            f"recorded); it was not replaced: move it away to download {item.name} again, or load it by path"
        )
    return found


def offline_route(item: CatalogueEntry, folder: Path) -> str:
    """How to get the file onto a machine without internet."""
    return (
        f"on a machine with internet run `{FETCH_COMMAND} {item.name} --to DIR` (or download {item.url}) and copy "
        f"{item.filename} to {folder}; or set {MIRROR_VARIABLE} to a mirror holding {item.filename}"
    )


def fetch(name: str, store: WeightStore | None = None, timeout: float = 60.0) -> Path:
    """The local file of catalogue entry ``name``: found on ``store``'s search path, or downloaded into its first
    folder (``store.download`` False: a :class:`DownloadError` saying how to get it)."""
    item = entry(name)
    store = store or WeightStore()
    found = store.find(item.filename)
    if found is not None:
        return _check_existing(found, item)
    target = store.target_dir / item.filename
    if not store.download:
        raise DownloadError(f"{item.name} is not downloaded yet; {offline_route(item, store.target_dir)}")
    url = item.source_url()
    try:
        digest = download_file(url, target, sha256=item.sha256, timeout=timeout, progress=store.progress)
    except DownloadError as exc:
        resumable = " (the partial download is kept and resumes next time)" if partial_path(target).exists() else ""
        raise DownloadError(
            f"could not download {item.name}: {exc}{resumable}. Offline: {offline_route(item, target.parent)}"
        ) from exc
    record = dict(
        name=item.name,
        url=url,
        size=target.stat().st_size,
        sha256=digest,
        downloaded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    write_atomically(record_path(target), lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    return target


def forget_download(path: Path) -> None:
    """Delete a downloaded file and its record (a download the reader refused)."""
    path.unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)


def describe(item: CatalogueEntry) -> dict[str, str | int | None]:
    """The entry as ``fetch-model --list`` prints it."""
    return dict(
        name=item.name,
        file=item.filename,
        dataset=item.dataset,
        resolution=item.resolution,
        architecture=item.architecture,
        size=f"~{item.approx_mb} MB",
        licence=item.licence,
        url=item.url,
        directions=item.directions,
    )
